"""Core tier: devices without float64 (Apple MPS, DirectML), emulated on the CPU.

The CPU is declared float64-less (``frame.FLOAT64_LESS``) and a TorchDispatchMode records every float64 tensor an op
creates while a method runs. The analytic model stands in for a float32 network: it sees float32 states and answers in
float32, and its own (float64) arithmetic is not watched; TinyConvDenoiser, a float32 network, is watched throughout.
"""
import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from inversion_suite.core import (detect_period, frame, invert_bdia, invert_fixed_point, invert_obelm,
                                  oscillation_iterates, pairwise_distances, rel_rms, sample_bdia, sample_euler,
                                  sample_obelm)
from inversion_suite.core.toy import TinyConvDenoiser, flow_sigmas, make_mixture, ve_sigmas

STEPS = 50


class Float64Watch(TorchDispatchMode):
    """Records the op of every float64 result on a device ``frame.has_float64`` denies, except while ``paused``."""

    def __init__(self):
        super().__init__()
        self.created, self.paused = [], False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not self.paused:
            self.created += [str(func) for t in tree_leaves(out) if isinstance(t, torch.Tensor)
                             and t.dtype == torch.float64 and not frame.has_float64(t.device)]
        return out


@pytest.fixture
def float64_less():
    """The CPU declared float64-less for the test, and a watch to run the methods under."""
    frame.FLOAT64_LESS.add("cpu")
    try:
        yield Float64Watch()
    finally:
        frame.FLOAT64_LESS.discard("cpu")


def float32_network(model, watch):
    """The analytic model as a float32 network: float32 in and out, its float64 insides not watched."""
    def call(x, sigma, **_):
        assert x.dtype == torch.float32 and sigma.dtype == torch.float32
        watch.paused = True
        try:
            return model(x, sigma).float()
        finally:
            watch.paused = False
    return call


def test_mps_and_directml_have_no_float64_and_the_set_is_extensible():
    assert not frame.has_float64("mps") and not frame.has_float64(torch.device("privateuseone", 0))
    assert frame.has_float64("cpu") and frame.has_float64("cuda:1") and frame.has_float64("meta")
    assert frame.precise_dtype("cpu") == torch.float64 and frame.precise_dtype("mps") == torch.float32
    frame.FLOAT64_LESS.add("cpu")
    try:
        assert not frame.has_float64("cpu") and frame.precise_dtype(torch.device("cpu")) == torch.float32
    finally:
        frame.FLOAT64_LESS.discard("cpu")


def test_the_watch_sees_float64_made_on_a_float64_less_device(float64_less):
    """What today's BDIA does first (``x.double()``) is caught; float32 work and float64 made while paused are not."""
    x = torch.ones(2, 4)
    with float64_less:
        (x * 2).sum()
        float64_less.paused = True
        x.double()
        float64_less.paused = False
        assert not float64_less.created
        x.double()
    assert float64_less.created == ["aten._to_copy.default"]


# ---------------------------------------------------------------- BDIA and O-BELM in double-float
def round_trip(method, flow, model, x, sigmas, pair):
    """Invert ``x`` and sample back from the pair; with ``pair`` the state goes in and out as (hi, lo)."""
    start = (x, torch.zeros_like(x)) if pair else x
    if method == "bdia":
        top, below = invert_bdia(model, start, sigmas.flip(0), gamma=0.96, flow=flow, disable=True)
        return sample_bdia(model, top, sigmas, gamma=0.96, flow=flow, x_below=below, disable=True)
    top, below = invert_obelm(model, start, sigmas.flip(0), disable=True)
    return sample_obelm(model, top, sigmas, x_below=below, disable=True)


def watched_round_trip(watch, method, flow, pair):
    """The float32 round trip of ``setup(flow)``'s latent on the float64-less CPU under ``watch`` (which must see no
    float64 made); the CPU has float64 again afterwards. Returns (model, sigmas, x, the latent back)."""
    model, sigmas, x = setup(flow)
    with watch:
        again = round_trip(method, flow, float32_network(model, watch), x, sigmas.float(), pair=pair)
    assert watch.created == []
    frame.FLOAT64_LESS.discard("cpu")
    return model, sigmas, x, again


def setup(flow):
    model = make_mixture(flow=flow)
    sigmas = flow_sigmas(STEPS) if flow else ve_sigmas(STEPS)
    real = model.sample(2, generator=torch.Generator().manual_seed(4)) + 0.05 * torch.randn(
        2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # off the model's manifold
    return model, sigmas, real.float()


# Round trip (worst relative RMS) of a float32 latent with a float32 model, 50 steps, BDIA γ = 0.96, on this CPU:
#                  float64 state   double-float pair   float32 hand-over   plain float32 state (not kept)
#   bdia   eps     4.0e-15         1.7e-13             3.5e-08             2.1e-07
#   bdia   flow    1.4e-15         8.1e-14             4.4e-08             1.5e-07
#   o-belm eps     5.9e-15         1.8e-13             2.1e-07             2.1e-06
#   o-belm flow    2.2e-13         1.2e-11             4.6e-06             1.3e-05
# The double-float pair keeps about 48 bits (2^-48 = 3.6e-15 against float64's 1.1e-16 per operation), and the
# float32 latent comes back bit for bit; a float32 hand-over of the pair costs exactness, most where γ is small.
@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("method", ["bdia", "obelm"])
def test_round_trip_creates_no_float64_and_keeps_48_bits(float64_less, method, flow):
    model, sigmas, x, again = watched_round_trip(float64_less, method, flow, pair=True)
    assert isinstance(again, tuple) and all(t.dtype == torch.float32 for t in again)
    # measured in float64; and the same round trip in float64, for the report
    err = float(rel_rms(again[0].double() + again[1].double(), x.double()).max())
    exact = round_trip(method, flow, lambda z, s, **kw: model(z, s).float().double(), x.double(), sigmas, pair=False)
    reference = float(rel_rms(exact, x.double()).max())
    print(f"{method} flow={flow}: round trip float64 {reference:.2e}, double-float {err:.2e}")
    assert err <= 1e-10 and reference <= 1e-12
    assert torch.equal(again[0], x)  # the float32 latent comes back bit for bit


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("method", ["bdia", "obelm"])
def test_plain_tensor_hand_over_rounds_the_pair_to_float32(float64_less, method, flow):
    """A tensor in is a tensor out: the inverted pair comes back as its float32 ``hi``, which costs exactness."""
    _, _, x, again = watched_round_trip(float64_less, method, flow, pair=False)
    assert again.dtype == torch.float32
    err = float(rel_rms(again, x).max())
    print(f"{method} flow={flow}: round trip with a float32 hand-over {err:.2e}")
    assert 0 < err <= 1e-5


def test_float32_network_is_watched_throughout(float64_less):
    """A float32 network end to end (no pause): no float64 anywhere, and the image comes back bit for bit."""
    net = TinyConvDenoiser(flow=True)
    sigmas = flow_sigmas(12).float()
    x = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with float64_less:
        top, below = invert_bdia(net, (x, torch.zeros_like(x)), sigmas.flip(0), gamma=0.9, flow=True, disable=True)
        again = sample_bdia(net, top, sigmas, gamma=0.9, flow=True, x_below=below, disable=True)
        first = sample_bdia(net, x, sigmas, gamma=0.9, flow=True, disable=True)  # from noise: a plain first step
    assert float64_less.created == [] and first.dtype == torch.float32 and torch.isfinite(first).all()
    assert torch.equal(again[0], x)


def test_pair_form_on_a_float64_device_runs_in_float64():
    """On the CPU proper a (hi, lo) pair runs in float64: hi is the float64 result rounded to float32, and hi + lo
    holds it to the pair's 48 bits."""
    model, sigmas, x = setup(False)
    f32 = lambda z, s, **kw: model(z, s).float().to(z.dtype)  # noqa: E731
    top, below = invert_bdia(f32, (x, torch.zeros_like(x)), sigmas.flip(0), gamma=0.96, flow=False, disable=True)
    reference = invert_bdia(f32, x.double(), sigmas.flip(0), gamma=0.96, flow=False, disable=True)
    for (hi, lo), exact in zip((top, below), reference):
        assert hi.dtype == lo.dtype == torch.float32 and torch.equal(hi, exact.float())
        assert float(rel_rms(hi.double() + lo.double(), exact).max()) <= 2 ** -47


# ---------------------------------------------------------------- fixed-point inversion with Anderson
@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("criterion", ["intra-path", "inter-path"])
def test_fixed_point_with_anderson_creates_no_float64_and_meets_its_tolerance(float64_less, flow, criterion):
    """Anderson's least squares in float32 (ridge 1e-6) converges as the float64 one does: every step of every image
    meets tol = 1e-6 within about 5 calls per step, and the latent round-trips to the float32 model's level."""
    model = make_mixture(flow=flow)
    sigmas = (flow_sigmas(20) if flow else ve_sigmas(20)).float()
    x = model.sample(2, generator=torch.Generator().manual_seed(1)).float()
    with float64_less:
        top, info = invert_fixed_point(float32_network(model, float64_less), x, sigmas.flip(0), max_iterations=10,
                                       tolerance=1e-6, criterion=criterion, anderson_window=3, flow=flow,
                                       generator=torch.Generator().manual_seed(0), return_info=True, disable=True)
    diagnostics = info["steps"]
    assert float64_less.created == [] and top.dtype == torch.float32
    assert all(d["converged"] == 2 for d in diagnostics)
    assert sum(d["model_calls"] for d in diagnostics) / len(diagnostics) <= 6
    frame.FLOAT64_LESS.discard("cpu")
    err = float(rel_rms(sample_euler(model, top.double(), sigmas.double(), disable=True), x.double()).max())
    print(f"flow={flow} {criterion}: float32 Anderson round trip {err:.2e}")
    assert err <= 5e-6


# ---------------------------------------------------------------- oscillation: period and distance map
def test_oscillation_distance_map_creates_no_float64(float64_less):
    model = make_mixture(shape=(4, 8, 8), flow=True)
    target = (model.means[:1] + model.means[1:2]).float() / 2
    net = float32_network(model, float64_less)
    with float64_less:
        history = oscillation_iterates(net, [target], 0.4, 40)
        period, errors = detect_period(history[10:])
        distances = pairwise_distances(history, block=16)
    assert float64_less.created == [] and distances.dtype == torch.float32
    frame.FLOAT64_LESS.discard("cpu")
    reference = pairwise_distances(history, block=16)
    period64, errors64 = detect_period(history[10:])
    assert period == period64 and errors == pytest.approx(errors64, rel=1e-4, abs=1e-7)
    # float32's matrix-product distances: the nearest iterates' off by 4.4e-4 of the largest distance (measured)
    assert float((distances.double() - reference).abs().max()) <= 2e-3 * float(reference.max())
