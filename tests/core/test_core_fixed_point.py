"""Core tier: fixed-point inversion on the analytic Gaussian-mixture model (no ComfyUI)."""
import pytest
import torch

from inversion_suite.core import invert_fixed_point, rel_rms, sample_euler
from inversion_suite.core.toy import TinyConvDenoiser, flow_sigmas, make_mixture, ve_sigmas

STEPS = 20


def round_trip(flow, **options):
    model = make_mixture(flow=flow)
    sigmas = flow_sigmas(STEPS) if flow else ve_sigmas(STEPS)
    x0 = model.sample(2, generator=torch.Generator().manual_seed(1))
    x_top, info = invert_fixed_point(model, x0, sigmas.flip(0), disable=True, return_info=True,
                                     generator=torch.Generator().manual_seed(0), **options)
    diagnostics = info["steps"]
    calls = model.calls
    return float(rel_rms(sample_euler(model, x_top, sigmas, disable=True), x0).max()), calls / STEPS, diagnostics


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("criterion", ["intra-path", "inter-path"])
def test_anderson_reaches_1e5_within_5_calls_per_step_on_average(flow, criterion):
    err, calls, _ = round_trip(flow, max_iterations=10, tolerance=1e-6, anderson_window=3, criterion=criterion)
    naive, _, _ = round_trip(flow, max_iterations=1, warm_start="none")
    print(f"flow={flow} {criterion}: error {err:.2e} at {calls:.2f} calls/step; naive {naive:.2e}")
    assert err <= 1e-5 and calls <= 5
    assert naive > 100 * err


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_anderson_reaches_1e8_within_10_calls_per_step_on_average(flow):
    err, calls, _ = round_trip(flow, max_iterations=20, tolerance=1e-9, anderson_window=3, criterion="inter-path")
    assert err <= 1e-8 and calls <= 10


def test_naive_is_one_call_per_step():
    err, calls, diagnostics = round_trip(False, max_iterations=1, warm_start="none")
    assert calls == 1 and all(d["model_calls"] == 1 for d in diagnostics)
    assert err > 1e-3  # naive DDIM inversion drifts


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_one_evaluation_per_step_from_the_predicted_start(flow):
    """max_iterations=1 costs what naive DDIM inversion costs, one evaluation per step, and starts each step from the
    prediction made from the steps before (all of them: none is checked). 28 steps, draws 0–3, measured: round trips
    3.6e-5–6.8e-3 (ε) and 3.9e-3–6.5e-3 (flow) against 1.2e-1–1.5e-1 and 4.4e-2–4.9e-2 from x (naive)."""
    for draw in range(4):
        cost, err, diagnostics = inversion(flow, 28, draw=draw, max_iterations=1)
        naive_cost, naive_err, _ = inversion(flow, 28, draw=draw, max_iterations=1, warm_start="none")
        print(f"flow={flow}, draw {draw}: round trip {err:.1e} against {naive_err:.1e} naive")
        assert cost == naive_cost == 1.0 and all(d["model_calls"] == 1 for d in diagnostics)
        assert err < naive_err / 5
        assert all(start != "none" for d in diagnostics[2:] for start in d["start"])


def test_picard_stalls_on_flow_where_anderson_converges():
    """The map is not a contraction where the posterior is multi-modal (the oscillation paper): measured, not hidden."""
    picard, _, diag = round_trip(True, max_iterations=50, tolerance=1e-9, anderson_window=0, criterion="intra-path")
    anderson, _, _ = round_trip(True, max_iterations=50, tolerance=1e-9, anderson_window=3, criterion="intra-path")
    assert picard > 1e-4 > 1e-8 > anderson
    assert max(d["model_calls"] for d in diag) == 50  # some step never met the tolerance


def test_diagnostics_report_every_step():
    _, _, diagnostics = round_trip(False, max_iterations=10, tolerance=1e-6, anderson_window=3, criterion="inter-path")
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
    invert_fixed_point(spy, model.sample(3), ve_sigmas(4).flip(0), max_iterations=3, tolerance=0.0, criterion="inter-path", disable=True)
    assert seen == [6] * 12


def test_unknown_criterion_is_rejected():
    with pytest.raises(ValueError, match="criterion"):
        invert_fixed_point(make_mixture(), torch.zeros(1, 4, 8, 8), ve_sigmas(2).flip(0), criterion="both")


# ---------------------------------------------------------------- issue 9: Anderson NaN, per-image stopping, cost
def linear_half(x, sigma, **_):
    return 0.5 * x


def test_issue_reproduction_zero_row_with_random_row_float64():
    """A row that converges at once (all zero) beside one that iterates: no NaN, and the exact fixed point."""
    x = torch.cat([torch.zeros(1, 4, 8, 8, dtype=torch.float64),
                   torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)])
    out = invert_fixed_point(linear_half, x, torch.tensor([0., 1., 2.], dtype=torch.float64), max_iterations=20, tolerance=1e-12,
                             disable=True)
    assert torch.isfinite(out).all()
    # f(z) = x_i + c·z/2 is linear: z* = x_i / (1 − c/2), c = 1 then 1/2, so z_top = x · 2 · 4/3
    assert float((out - x * 8 / 3).abs().max()) < 1e-10


@pytest.mark.parametrize("criterion", ["intra-path", "inter-path"])
def test_issue_reproduction_black_image_float32_defaults(criterion):
    """A float32 batch holding an all-zero latent at the node-era defaults (max_iter 10, tol 1e-5)."""
    model = make_mixture()
    f32 = lambda x, s, **kw: model(x, s).float()  # noqa: E731
    x = torch.cat([torch.zeros(1, 4, 8, 8), model.sample(1, generator=torch.Generator().manual_seed(1)).float()])
    out = invert_fixed_point(f32, x, ve_sigmas(8).flip(0), max_iterations=10, tolerance=1e-5, criterion=criterion,
                             anderson_window=3, generator=torch.Generator().manual_seed(0), disable=True)
    assert torch.isfinite(out).all()
    back = sample_euler(f32, out, ve_sigmas(8), disable=True)
    assert float(rel_rms(back[1:], x[1:])) < 1e-3
    # images are solved independently: each row equals its inversion alone (the black image is off the model's
    # range, so it does not round-trip; it must still be finite and unaffected by its batch mate). The inter-path
    # noise depends on the batch, so only the intra-path result is comparable row by row.
    for r in range(2 if criterion == "intra-path" else 0):
        alone = invert_fixed_point(f32, x[r:r + 1], ve_sigmas(8).flip(0), max_iterations=10, tolerance=1e-5, criterion=criterion,
                                   anderson_window=3, generator=torch.Generator().manual_seed(0), disable=True)
        assert float((alone - out[r:r + 1]).abs().max()) <= 1e-4 * float(out[r].abs().max())


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64])
def test_anderson_is_finite_in_every_precision(dtype):
    """Iterating far below each precision's floor (tol 1e-12) never produces NaN, and still inverts."""
    model = make_mixture()
    low = lambda x, s, **kw: model(x.double(), s).to(dtype)  # noqa: E731
    x = torch.cat([torch.zeros(1, 4, 8, 8), model.sample(2, generator=torch.Generator().manual_seed(1)).float()])
    out = invert_fixed_point(low, x.to(dtype), ve_sigmas(6).flip(0), max_iterations=15, tolerance=1e-12, anderson_window=3,
                             disable=True)
    assert torch.isfinite(out).all()
    back = sample_euler(model, out.double(), ve_sigmas(6), disable=True)
    bound = {torch.float16: 3e-2, torch.bfloat16: 1e-1, torch.float32: 1e-4, torch.float64: 1e-8}[dtype]
    assert float(rel_rms(back[1:], x[1:].double()).max()) < bound


def test_converged_images_are_not_evaluated_again():
    """An image that meets the tolerance leaves the batch: later calls carry only the images still iterating."""
    model = make_mixture()
    seen = []

    def spy(x, sigma, **kw):
        seen.append(x.shape[0])
        return model(x, sigma)
    x = torch.cat([torch.zeros(1, 4, 8, 8, dtype=torch.float64), model.sample(2, generator=torch.Generator().manual_seed(1))])
    frozen = lambda z, s, **kw: torch.where(  # noqa: E731  image 0 is a fixed point at once (D(z) = z)
        (torch.arange(z.shape[0]) == 0).reshape(-1, 1, 1, 1) & (z.flatten(1).abs().sum(1) == 0).reshape(-1, 1, 1, 1),
        z, spy(z, s))
    _, info = invert_fixed_point(frozen, x, ve_sigmas(3).flip(0), max_iterations=10, tolerance=1e-9, disable=True,
                                 return_info=True)
    diagnostics = info["steps"]
    first = diagnostics[0]
    assert seen[0] == 3 and all(n <= 2 for n in seen[1:first["model_calls"]])
    assert first["evaluations"] == sum(seen[:first["model_calls"]])
    assert first["evaluations_per_image"] == pytest.approx(first["evaluations"] / 3)
    assert sum(d["evaluations"] for d in diagnostics) == sum(seen)


def test_inter_path_perturbation_is_unit_noise_in_the_model_latent():
    """VE state = √(1+σ²)·model latent, so the second path starts √(1+σ²)·N(0, I) away; flow: N(0, I) away."""
    for flow, sigma in [(False, 9.0), (True, 0.8)]:
        starts = []

        def spy(x, s, **kw):
            starts.append(x.clone())
            return torch.zeros_like(x)
        x = torch.zeros(2, 4, 16, 16, dtype=torch.float64)
        invert_fixed_point(spy, x, torch.tensor([0.0, sigma], dtype=torch.float64), max_iterations=2, tolerance=0.0,
                           criterion="inter-path", anderson_window=0, flow=flow, disable=True,
                           generator=torch.Generator().manual_seed(0))
        gap = (starts[0][2:] - starts[0][:2]).std()
        expected = 1.0 if flow else (1 + sigma ** 2) ** 0.5
        assert float(gap) == pytest.approx(expected, rel=0.05)


# ---------------------------------------------------------------- issue 21: warm starts, two evaluations per step
NODE_DEFAULTS = dict(max_iterations=10, tolerance=1e-4, anderson_window=3, criterion="intra-path")  # nodes/fixed_point.py


def inversion(flow, steps, draw=0, **options):
    """The analytic model at the node defaults, batch 2: evaluations per image per step, round trip, diagnostics.
    ``draw``: the mixture's seed, the images' is ``draw + 1`` (as scripts/benchmark.py draws them)."""
    model = make_mixture(flow=flow, seed=draw)
    sigmas = flow_sigmas(steps) if flow else ve_sigmas(steps)
    x0 = model.sample(2, generator=torch.Generator().manual_seed(draw + 1))
    top, info = invert_fixed_point(model, x0, sigmas.flip(0), disable=True, flow=flow, return_info=True,
                                   generator=torch.Generator().manual_seed(0), **{**NODE_DEFAULTS, **options})
    diagnostics = info["steps"]
    cost = sum(d["evaluations_per_image"] for d in diagnostics) / steps
    return cost, float(rel_rms(sample_euler(model, top, sigmas, disable=True), x0).max()), diagnostics


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_warm_start_needs_at_most_two_evaluations_per_step_at_28_steps(flow):
    """Measured 1.45 (ε) and 1.54 (flow) for a round trip of 9.3e-6 and 2.6e-5 (1.48 and 1.62 before the first step's
    own Gaussian fit); the naive start spent 3.02 and 3.20."""
    cost, err, diagnostics = inversion(flow, 28)
    before, before_err, _ = inversion(flow, 28, warm_start="none")
    print(f"flow={flow}: {cost:.2f} evaluations per image per step, round trip {err:.1e} "
          f"(naive start {before:.2f}, {before_err:.1e})")
    assert cost <= 2.0 and err <= 1e-4
    assert before >= 3.0
    # where the evaluations go: after the first step (2 evaluations for ε, 3 for flow) most image-steps meet the
    # tolerance at their first check (measured 38 of 54 for both, 36 without the first step's Gaussian fit; the rest
    # are where the mixture's modes separate)
    later = diagnostics[1:]
    assert sum(d["first_check"] for d in later) >= 0.65 * sum(d["images"] for d in later)
    assert all(d["converged"] == d["images"] for d in diagnostics)


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_warm_start_at_8_and_50_steps(flow):
    """8 steps: 2.69 (ε, the issue's bound of 3.0 met) and 3.62 (flow), against 3.75 and 4.31 from the naive start
    (2.94 and 3.88 before the first step's own Gaussian fit): the mixture's modes separate within one or two of those
    large steps, where no prediction from the steps before helps and Anderson needs 5–10 evaluations. 50 steps: 1.23
    and 1.21, against 2.90 and 2.88."""
    for steps, bound in [(8, 3.0 if not flow else 3.7), (50, 1.25)]:
        cost, _, _ = inversion(flow, steps)
        before, _, _ = inversion(flow, steps, warm_start="none")
        print(f"flow={flow}, {steps} steps: {cost:.2f} evaluations per image per step (naive start {before:.2f})")
        assert cost <= bound and cost < before


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_cost_and_round_trip_over_eight_draws(flow):
    """The figures above are one mixture and one pair of images; over eight draws (the benchmark's table), measured:
    28 steps 1.09–1.45 (ε) and 1.27–1.55 (flow) evaluations per image per step, round trip within 1e-4 in 8 and 7 of
    8 draws (worst 6.2e-5, 1.4e-4: an image where the modes separate, whose sampler multiplies the residual a step
    hands on by ~12); 8 steps 2.02 and 2.60 on average, all 8 (ε) and 6 (flow) draws within 3.0 (2.27 and 2.85, 8 and
    4, before the first step's own Gaussian fit), worst round trip 2.1e-2 and 1.4e-2 where a step runs out of
    iterations (1.2 and 4.6e-2 when such a step handed on f(z) of its last iterate whatever its residual)."""
    for steps in (8, 28):
        runs = [inversion(flow, steps, draw=draw)[:2] for draw in range(8)]
        costs, errors = [c for c, _ in runs], [e for _, e in runs]
        print(f"flow={flow}, {steps} steps: {sum(costs) / 8:.2f} ({min(costs):.2f}–{max(costs):.2f}) evaluations per "
              f"image per step, round trips {' '.join(f'{e:.0e}' for e in errors)}")
        if steps == 28:
            assert max(costs) <= 2.0
            assert sum(e <= 1e-4 for e in errors) >= 7 and max(errors) <= 2e-4
        else:
            assert sum(costs) / 8 <= 3.0 and sum(c <= 3.0 for c in costs) >= (8 if not flow else 6)
            assert max(errors) <= 3e-2


@pytest.mark.parametrize("criterion", ["intra-path", "inter-path"])
@pytest.mark.parametrize("shrink", [True, False], ids=["shrink", "every-image"])
def test_an_image_out_of_iterations_hands_on_the_iterate_that_missed_least(criterion, shrink):
    """Plain Picard on f(z) = x + c(z − D(z)) with a linear D(z) = λz multiplies the error by m = c(1 − λ) each
    iteration; the step back from an iterate z misses x by exactly ‖f(z) − z‖. Four images, each its own m, three
    iterations from z = x:
    - m = −2 diverges in sign: misses 2, 4, 8 ‖x‖; the image hands on its first iterate x and reports its residual 2
      (f of the last, −5x, would miss by 16);
    - m = 1.3 diverges steadily: misses 1.3, 1.69, 2.2 ‖x‖ while the residual relative to ‖z‖ falls (1.3, 0.73,
      0.55), so the miss, not the relative residual, picks x (f of the last would miss by 2.9);
    - m = 10⁻³ meets the tolerance at its second evaluation and leaves the batch;
    - m = 0.9 converges too slowly: its last iterate missed least, and it hands on f of that, x(1 + m + m² + m³), as a
      converging image does (missing by m⁴ = 0.66, where the last iterate itself would miss by m³ = 0.73)."""
    multipliers = [-2.0, 1.3, 1e-3, 0.9]
    x = torch.randn(4, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sigmas = torch.tensor([1.0, 2.0], dtype=torch.float64)  # c = (σ' − σ)/σ' = 1/2, so λ = 1 − 2m
    held = []

    def linear(z, sigma, **_):  # the rows of the call, as the solver names them (b + i: image i's second path)
        lam = torch.tensor([1 - 2 * multipliers[int(r) % 4] for r in held[-1]], dtype=z.dtype)
        return lam.view(-1, 1, 1, 1) * z
    top, info = invert_fixed_point(linear, x, sigmas, max_iterations=3, tolerance=1e-4, anderson_window=0,
                                   criterion=criterion, warm_start="none", shrink=shrink, return_info=True,
                                   on_call=lambda rows, used: held.append(rows), disable=True,
                                   generator=torch.Generator().manual_seed(0))
    step = info["steps"][0]
    assert step["converged"] == 1 and step["earlier"] == [0, 1]
    assert torch.equal(top[:2], x[:2])
    m = multipliers[3]
    assert float(rel_rms(top[3:], x[3:] * (1 + m + m ** 2 + m ** 3))) < 1e-14
    assert float(rel_rms(top[2:3], x[2:3] / (1 - multipliers[2]))) < 1e-5  # its fixed point x/(1 − m)
    held.append(torch.arange(4))
    back = linear(top, None) + 0.5 * (top - linear(top, None))  # the plain step back σ' → σ, every image
    misses = rel_rms(back, x).tolist()  # it misses x by the miss of the state handed on
    assert misses[:2] == pytest.approx([2.0, 1.3]) and misses[3] == pytest.approx(m ** 4)
    assert step["intra"] == pytest.approx(2.0)  # the worst image's: the residual of x, the iterate handed on


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_gaussian_start_is_the_fixed_point_for_gaussian_data(flow):
    """For one Gaussian the fit is exact, both the one from the first step's own iterations (the gain its pairs of
    iterates measured) and, from the third step, the Tweedie line through two solved steps: the Gaussian is tried at
    the first step it can be made, the second, before any measurement of it, and from there on every step starts at
    its fixed point and costs one evaluation, even on 8 steps (without the first step's fit the second cost three)."""
    model = make_mixture(k=1, flow=flow)
    sigmas = flow_sigmas(8) if flow else ve_sigmas(8)
    _, info = invert_fixed_point(model, model.sample(2, generator=torch.Generator().manual_seed(1)), sigmas.flip(0),
                                 disable=True, flow=flow, return_info=True, **NODE_DEFAULTS)
    diagnostics = info["steps"]
    assert diagnostics[0]["model_calls"] >= 2  # the first step from x: pairs of iterates to measure the gain from
    for d in diagnostics[1:]:
        assert d["start"] == ["Gaussian", "Gaussian"] and d["model_calls"] == 1 and d["first_check"] == 2
        assert d["trace"][0][0] < 1e-11  # float64 rounding: measured up to 1.7e-12 (flow, second step)


def test_the_first_steps_gaussian_is_fitted_only_to_a_gaussian_response():
    """After the first step the Gaussian's s² comes from the gain A = 1 − Σ⟨ΔF, Δz⟩ / (c Σ‖Δz‖²) that the step's
    pairs of iterates measured, s² = A σ'² / (α' (1 − α' A)): the s² of the data where the response is a Gaussian's.
    A response mostly across its input (cos² < ½ between the stacked ΔF and Δz, as on a random-weight network) or
    one no Gaussian gives (α' A outside (0, 1)) fits none."""
    from inversion_suite.core.fixed_point import WarmStart
    sigma, sigma_next, s2 = 0.5, 0.8, 0.3
    for flow in (False, True):
        a = 1 - sigma_next if flow else 1.0
        gain = a * s2 / (a * a * s2 + sigma_next ** 2)
        c = (sigma_next - sigma) / sigma_next
        dz = torch.randn(2, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        df = c * (1 - gain) * dz  # ΔF = c (Δz − ΔD), ΔD = A Δz
        warm = WarmStart("predicted", flow=flow)
        response = (float((df * dz).sum()), float((dz * dz).sum()), float((df * df).sum()))
        assert warm._secant(sigma, sigma_next, response) == pytest.approx(s2, rel=1e-12)
        across = torch.randn(2, 64, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
        across -= (across * dz).sum() / (dz * dz).sum() * dz  # orthogonal to the stacked Δz
        skew = df + 1.01 * across * df.norm() / across.norm()  # cos² just under ½
        response = (float((skew * dz).sum()), float((dz * dz).sum()), float((skew * skew).sum()))
        assert response[0] ** 2 < 0.5 * response[1] * response[2]
        assert warm._secant(sigma, sigma_next, response) != warm._secant(sigma, sigma_next, response)  # NaN
        for wrong in (-1.0, 1.5 / a):  # a gain with α' A ≤ 0 or ≥ 1: ΔF = c (1 − A) Δz along Δz, but no Gaussian's
            aligned = c * (1 - wrong) * dz
            response = (float((aligned * dz).sum()), float((dz * dz).sum()), float((aligned * aligned).sum()))
            assert warm._secant(sigma, sigma_next, response) != warm._secant(sigma, sigma_next, response)
    model = TinyConvDenoiser(flow=True)  # a random network: the second step starts from the previous step's D
    x0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    with torch.no_grad():
        _, info = invert_fixed_point(model, x0, flow_sigmas(8).flip(0), disable=True, flow=True, return_info=True,
                                     **NODE_DEFAULTS)
    assert info["steps"][0]["model_calls"] >= 2 and info["steps"][1]["start"] == ["previous D", "previous D"]


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_a_batched_image_is_inverted_as_it_is_alone(flow):
    """Every decision is per image (the start each image's iteration takes, when it stops, what it hands on): a batch
    of three returns what each image returns alone (to the last bit on this machine). (Until the Gaussian's first
    try was decided per image, one image's measurement of it withheld it from the others: 2.9e-7 (ε) and 1.5e-6
    (flow) apart.)"""
    for draw in range(4):
        model = make_mixture(flow=flow, seed=draw)
        sigmas = (flow_sigmas(20) if flow else ve_sigmas(20)).flip(0)
        x0 = model.sample(3, generator=torch.Generator().manual_seed(draw + 1))
        batched = invert_fixed_point(model, x0, sigmas, disable=True, flow=flow, **NODE_DEFAULTS)
        for j in range(3):
            alone = invert_fixed_point(model, x0[j:j + 1], sigmas, disable=True, flow=flow, **NODE_DEFAULTS)
            assert float(rel_rms(batched[j:j + 1], alone)) <= 1e-12, (draw, j)  # (bit for bit here; 1e-12 allows
            # a batched product that rounds differently from a single one on another CPU)


def test_starts_are_the_formulas():
    """none: each step's first call is at x_i (the naive start, as before); reuse: at D_i + (σ'/σ)(x_i − D_i) with the
    previous step's D_i = x_i − σ_i ε_i, ε_i = (x_i − x_{i−1})/(σ_i − σ_{i−1}), also with one evaluation per step
    (max_iterations=1, where it is the only call of a step); max_iterations=1 with none is naive DDIM inversion."""
    model = make_mixture()
    sigmas = ve_sigmas(6).flip(0)
    x0 = model.sample(2, generator=torch.Generator().manual_seed(1))
    for mode, options in [("none", NODE_DEFAULTS), ("previous D", NODE_DEFAULTS),
                          ("previous D", {**NODE_DEFAULTS, "max_iterations": 1})]:
        first, states = {}, [x0]

        def spy(z, s, **kw):
            first.setdefault(float(s[0]), z.clone())
            return model(z, s)
        invert_fixed_point(spy, x0, sigmas, disable=True, warm_start=mode, callback=lambda info: states.append(
            info["x"].clone()), **options)
        for i in range(1, len(sigmas) - 1):
            s_prev, s, s_next = (float(sigmas[j]) for j in (i - 1, i, i + 1))
            expected = states[i]
            if mode == "previous D":
                d = states[i] - s * (states[i] - states[i - 1]) / (s - s_prev)
                expected = d + (s_next / s) * (states[i] - d)
            assert float((first[s_next] - expected).abs().max()) <= 1e-12 * float(expected.abs().max())
    calls, x = [], x0
    naive = invert_fixed_point(lambda z, s, **kw: calls.append(z.clone()) or model(z, s), x0, sigmas, disable=True,
                               max_iterations=1, warm_start="none")
    assert len(calls) == len(sigmas) - 1
    for i, z in enumerate(calls):  # every call at x_i, and x_{i+1} the plain step's f(x_i)
        assert torch.equal(z, x)
        x = x + (float(sigmas[i + 1]) - float(sigmas[i])) / float(sigmas[i + 1]) * (x - model(x, sigmas[i + 1:i + 2]))
    assert float((naive - x).abs().max()) <= 1e-12 * float(x.abs().max())


def test_unknown_warm_start_is_rejected():
    with pytest.raises(ValueError, match="warm_start"):
        invert_fixed_point(make_mixture(), torch.zeros(1, 4, 8, 8), ve_sigmas(2).flip(0), warm_start="guess")


def test_no_prediction_from_a_step_that_missed_the_tolerance():
    """An unconverged state is not on the path: where no step meets the tolerance, every step starts at x_i and the
    result is the naive-start solver's, bit for bit."""
    model = make_mixture(flow=True)
    x0 = model.sample(2, generator=torch.Generator().manual_seed(1))
    runs = {}
    for mode in ("predicted", "none"):
        runs[mode], info = invert_fixed_point(model, x0, flow_sigmas(6).flip(0), disable=True, flow=True,
                                              max_iterations=3, tolerance=0.0, warm_start=mode, return_info=True)
        assert all(d["start"] == ["none", "none"] for d in info["steps"])
    assert torch.equal(runs["predicted"], runs["none"])


def test_the_gaussian_is_drawn_only_from_steps_that_met_the_tolerance():
    """The Gaussian's line runs through the last two solved steps: an image starts from it only where it met the
    tolerance at both (review of the first step's own fit, which needs one step, found an image starting from a line
    through a step it had missed). With 3 iterations per step the flow mixture's images miss the tolerance at some
    steps; each image alone, so that a step's ``converged`` is that image's."""
    model = make_mixture(flow=True)
    x0 = model.sample(2, generator=torch.Generator().manual_seed(1))
    missed = 0
    for j in range(2):
        _, info = invert_fixed_point(model, x0[j:j + 1], flow_sigmas(28).flip(0), disable=True, flow=True,
                                     return_info=True, **{**NODE_DEFAULTS, "max_iterations": 3})
        met = [d["converged"] == 1 for d in info["steps"]]
        missed += met.count(False)
        for i, d in enumerate(info["steps"]):
            if d["start"] == ["Gaussian"]:
                assert all(met[max(i - 2, 0):i]), (j, i)
    assert missed >= 2


def test_a_runaway_iterate_is_not_reported_converged():
    """An x̂₀ predictor whose prediction barely depends on its input (D(z) = 1e-8·z, in float32 as a model computes)
    puts the first step's fixed point at |z| ~ 1e8·|x₀|. Relative to the iterate's own norm its float32 residual is
    ~6e-8 (below any tolerance: reported converged before); relative to the plausible scale of a state at σ' (the
    divisor is capped at PLAUSIBLE·√(‖x‖² + σ'²·numel)) it is not, and the report says so."""
    from inversion_suite.core.fixed_point import PLAUSIBLE
    x0 = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(0), dtype=torch.float64)

    def barely(z, sigma, **kwargs):
        return (1e-8 * z).float().double()
    top, info = invert_fixed_point(barely, x0, torch.tensor([0.0, 0.5], dtype=torch.float64), max_iterations=10,
                                   tolerance=1e-4, return_info=True, disable=True)
    step = info["steps"][0]
    assert step["trace"][-1][0] > 1e3  # the iteration reached the runaway fixed point: its residual against the cap
    assert step["converged"] == 0 and step["iterations"] == 10 and step["intra"] > 1e-4
    assert step["runaway"] == [0]  # named in the info and in the callback, where the nodes stop (nodes.common)
    # what it hands on is its iterate with the least residual, the second (z = x₀ + (z₀ − D(z₀)) ≈ 2·x₀, residual
    # 0.5), not the runaway last one (the solver's rule for an image that runs out of iterations)
    assert float(rel_rms(top, 2 * x0)) < 1e-7 and step["intra"] == pytest.approx(0.5)
    assert float(top.norm()) < PLAUSIBLE * float(x0.norm())
    seen = []
    invert_fixed_point(barely, x0, torch.tensor([0.0, 0.5], dtype=torch.float64), max_iterations=10, disable=True,
                       callback=lambda d: seen.append(d["runaway"]))
    assert seen == [[0]]
    healthy, info = invert_fixed_point(lambda z, s, **kw: 0.5 * z, x0, torch.tensor([0.0, 0.5], dtype=torch.float64),
                                       max_iterations=10, tolerance=1e-4, return_info=True, disable=True)
    assert info["steps"][0]["converged"] == 1  # a state of natural scale is unaffected by the cap
    assert info["steps"][0]["runaway"] == []


# ---------------------------------------------------------------- the floor a model's rounding sets
def rough(model, u=2.0 ** -8):
    """``model`` as a low-precision network evaluates it: its raw output (z − D)/σ off by a relative u that jumps
    with every change of z (a bfloat16 network's rounding), so no iteration gets its residual below ~u·(σ'−σ)/σ'."""
    def evaluate(z, sigma, **kwargs):
        s = sigma.view(-1, *[1] * (z.dim() - 1)).to(z.dtype)
        raw = (z - model(z, sigma, **kwargs)) / s
        return z - s * raw * (1 + u * torch.sin(1e7 * z))
    return evaluate


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_an_image_stops_at_the_rounding_floor(flow):
    """On a model that rounds like bfloat16 the node's tolerance of 1e-4 is out of reach on most steps: told nothing,
    the solver spends its 10 evaluations there (measured 7.9 and 7.0 per image per step over 28 steps). Told the
    model's unit roundoff it stops where the residual is below the floor and no longer falling: 2.1 and 2.3 per image
    per step, for the same round trip up to the rounding's own spread (9.8e-4 → 1.08e-3, 6.7e-4 → 7.1e-4; over the
    warm start's revisions the told round trip has moved within 9.8e-4–1.08e-3 and 6.4e-4–7.1e-4 with the path the
    rounding takes, so the bound is 1.2 times the blind run's)."""
    model = make_mixture(flow=flow)
    sigmas = flow_sigmas(28) if flow else ve_sigmas(28)
    x0 = model.sample(2, generator=torch.Generator().manual_seed(1))
    runs = {}
    for precision in (0.0, 2.0 ** -8):
        top, info = invert_fixed_point(rough(model), x0, sigmas.flip(0), disable=True, flow=flow, return_info=True,
                                       precision=precision, **NODE_DEFAULTS)
        steps = info["steps"]
        runs[precision] = (sum(d["evaluations_per_image"] for d in steps) / 28,
                           float(rel_rms(sample_euler(rough(model), top, sigmas, disable=True), x0).max()), steps)
    (blind, blind_err, blind_steps), (told, told_err, told_steps) = runs.values()
    assert blind >= 6.5 and told <= 2.5 and told_err <= 1.2 * blind_err
    assert all(d["at_floor"] == 0 and d["floor"] == 0 for d in blind_steps)
    assert sum(d["at_floor"] for d in told_steps) >= 30 and all(d["converged"] == 2 for d in told_steps)
    assert all(d["first_check"] <= d["converged"] - d["at_floor"] for d in told_steps)  # a first check has no fall


# ---------------------------------------------------------------- what a step costs besides the model (issue 21, item 4)
@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("options", [{}, {"criterion": "inter-path", "anderson_window": 0}], ids=["defaults", "paper"])
def test_one_host_read_per_iteration(flow, options):
    """On a GPU every read of a tensor's value by the host waits for the device, and every op is a kernel launch; both
    are counted outside the model (scripts/benchmark.py DeviceWork). Each iteration reads its per-image figures once,
    each step once more for the warm start's measurements, the run once for ‖x‖: measured calls + 29 reads over 28
    steps at batch 3 (before, a read per figure: 1011 and 1075 reads for 37 and 45 calls). Ops per model call:
    measured 26.8 and 25.7 at the node defaults (200 and 182 before: every warm-start candidate formed op by op, the
    Anderson least squares on the device), 15.7 and 17.8 for the paper's Picard iteration (95 and 106 before)."""
    import benchmark
    model = make_mixture(flow=flow)
    sigmas = flow_sigmas(28) if flow else ve_sigmas(28)
    spent = {"inside": False}

    def counted(z, sigma, **kwargs):
        spent["inside"] = True
        try:
            return model(z, sigma)
        finally:
            spent["inside"] = False
    x0 = model.sample(3, generator=torch.Generator().manual_seed(1))  # three images: they stop at different iterations
    with benchmark.DeviceWork(spent) as work:
        _, info = invert_fixed_point(counted, x0, sigmas.flip(0), disable=True, flow=flow, return_info=True,
                                     generator=torch.Generator().manual_seed(0), **{**NODE_DEFAULTS, **options})
    calls = sum(d["model_calls"] for d in info["steps"])
    shrunk = sum(d["model_calls"] > 1 and d["evaluations"] < d["model_calls"] * 3 * (2 if options else 1)
                 for d in info["steps"])
    print(f"flow={flow} {options}: {calls} calls, {work.reads} reads, {work.ops / calls:.1f} ops per call, "
          f"{shrunk} steps where the batch shrank")
    assert shrunk >= 1  # the sub-batch path ran
    assert work.reads <= calls + 28 + 2
    assert work.ops <= (32 if not options else 22) * calls


def test_a_start_that_is_not_finite_is_x():
    """A candidate start that is not finite (here a solved ε that overflowed) is replaced by x on the device, and the
    flag that says so is read with the first iteration's figures (the report then names the start "none")."""
    from inversion_suite.core.fixed_point import WarmStart
    warm = WarmStart("predicted")
    x = torch.ones(2, 3, 4, dtype=torch.float64)
    eps = torch.zeros_like(x)
    eps[0, 1, 2] = float("inf")
    warm.solved = [(0.5, x, eps, [True, True])]
    z, chosen, finite = warm.start(x, 0.5, 0.7)
    assert chosen == ["previous D", "previous D"] and finite.tolist() == [False, True]
    assert torch.equal(z[0], x[0]) and torch.equal(z[1], x[1])  # image 1: x + 0.2·0
    warm.solved = [(0.5, x, torch.full_like(x, 2.0), [True, False])]  # image 1 missed the tolerance there
    z, chosen, finite = warm.start(x, 0.5, 0.7)
    assert chosen == ["previous D", "none"] and torch.allclose(z[0], x[0] + 0.4) and torch.equal(z[1], x[1])
