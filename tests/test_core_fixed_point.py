"""Core tier: fixed-point inversion on the analytic Gaussian-mixture model (no ComfyUI)."""
import pytest
import torch

from inversion_suite.core import invert_fixed_point, rel_rms, sample_euler
from inversion_suite.core.toy import flow_sigmas, make_mixture, ve_sigmas

STEPS = 20


def round_trip(flow, **options):
    model = make_mixture(flow=flow)
    sigmas = flow_sigmas(STEPS) if flow else ve_sigmas(STEPS)
    x0 = model.sample(2, generator=torch.Generator().manual_seed(1))
    diagnostics = []
    x_top = invert_fixed_point(model, x0, sigmas.flip(0), disable=True, diagnostics=diagnostics,
                               generator=torch.Generator().manual_seed(0), **options)
    calls = model.calls
    return float(rel_rms(sample_euler(model, x_top, sigmas, disable=True), x0).max()), calls / STEPS, diagnostics


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("criterion", ["intra", "inter"])
def test_anderson_reaches_1e5_within_5_calls_per_step_on_average(flow, criterion):
    err, calls, _ = round_trip(flow, max_iter=10, tol=1e-6, anderson=3, criterion=criterion)
    naive, _, _ = round_trip(flow, max_iter=1)
    print(f"flow={flow} {criterion}: error {err:.2e} at {calls:.2f} calls/step; naive {naive:.2e}")
    assert err <= 1e-5 and calls <= 5
    assert naive > 100 * err


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_anderson_reaches_1e8_within_10_calls_per_step_on_average(flow):
    err, calls, _ = round_trip(flow, max_iter=20, tol=1e-9, anderson=3, criterion="inter")
    assert err <= 1e-8 and calls <= 10


def test_naive_is_one_call_per_step():
    err, calls, diagnostics = round_trip(False, max_iter=1)
    assert calls == 1 and all(d["model_calls"] == 1 for d in diagnostics)
    assert err > 1e-3  # naive DDIM inversion drifts


def test_picard_stalls_on_flow_where_anderson_converges():
    """The map is not a contraction where the posterior is multi-modal (the oscillation paper): measured, not hidden."""
    picard, _, diag = round_trip(True, max_iter=50, tol=1e-9, anderson=0, criterion="intra")
    anderson, _, _ = round_trip(True, max_iter=50, tol=1e-9, anderson=3, criterion="intra")
    assert picard > 1e-4 > 1e-8 > anderson
    assert max(d["model_calls"] for d in diag) == 50  # some step never met the tolerance


def test_diagnostics_report_every_step():
    _, _, diagnostics = round_trip(False, max_iter=10, tol=1e-6, anderson=3, criterion="inter")
    assert [d["step"] for d in diagnostics] == list(range(STEPS))
    assert all(d["inter"] < 1e-6 or d["model_calls"] == 10 for d in diagnostics)
    assert all(1 <= d["model_calls"] <= 10 for d in diagnostics)


def test_inter_path_batches_both_paths_in_one_call():
    model = make_mixture()
    seen = []
    original = model.__call__

    def spy(x, sigma, **kw):
        seen.append(x.shape[0])
        return original(x, sigma, **kw)
    invert_fixed_point(spy, model.sample(3), ve_sigmas(4).flip(0), max_iter=3, tol=0.0, criterion="inter", disable=True)
    assert seen == [6] * 12


def test_unknown_criterion_is_rejected():
    with pytest.raises(ValueError, match="criterion"):
        invert_fixed_point(make_mixture(), torch.zeros(1, 4, 8, 8), ve_sigmas(2).flip(0), criterion="both")
