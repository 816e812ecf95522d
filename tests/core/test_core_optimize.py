"""Core tier: post-inversion optimisation through the analytic model, with the paper's default budget."""
import pytest
import torch

from inversion_suite.core import post_inversion_optimize
from inversion_suite.core.toy import make_mixture

SIGMA = {False: 1.0, True: 0.4}


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_one_target_loss_falls_below_10_percent(flow):
    model = make_mixture(flow=flow, spread=0.5)
    start = model.sample(2, generator=torch.Generator().manual_seed(1), component=0)
    target = model.sample(2, generator=torch.Generator().manual_seed(2), component=1)
    z = (1 - SIGMA[flow] if flow else 1.0) * start + SIGMA[flow] * torch.randn(start.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    z_opt, pred, info = post_inversion_optimize(model, z, SIGMA[flow], [target], flow=flow, return_info=True)
    losses = info["losses"]
    print(f"flow={flow}: loss {losses[0]:.3e} -> {losses[-1]:.3e}")
    assert len(losses) == 6 * 20 + 1  # every state evaluated, the input's first and the returned one's last
    assert losses[-1] <= 0.1 * losses[0]
    assert z_opt.shape == z.shape and torch.isfinite(z_opt).all()


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_two_weighted_targets(flow):
    model = make_mixture(flow=flow, spread=0.5)
    start = model.sample(1, generator=torch.Generator().manual_seed(3), component=2)
    a = model.sample(1, generator=torch.Generator().manual_seed(4), component=0)
    b = a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = (1 - SIGMA[flow] if flow else 1.0) * start + SIGMA[flow] * torch.randn(start.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    _, pred, info = post_inversion_optimize(model, z, SIGMA[flow], [a, b], weights=[0.7, 0.3], flow=flow,
                                            return_info=True)
    losses = info["losses"]
    assert losses[-1] <= 0.1 * losses[0]
    # the prediction moves to the weighted mean of the targets
    blend = 0.7 * a + 0.3 * b
    print(f"flow={flow}: loss {losses[0]:.3e} -> {losses[-1]:.3e}, |pred-blend| {float((pred - blend).norm()):.3e}, "
          f"|a-b| {float((a - b).norm()):.3e}")
    assert float((pred - blend).norm()) < 0.5 * float((a - b).norm())


# ---------------------------------------------------------------- issue 9: consistent rounds, never worse
def off_manifold_case(flow, seed):
    """A target between two modes (off the model's manifold), started from its oscillation centre."""
    from inversion_suite.core import oscillation_iterates
    model = make_mixture(flow=flow, spread=0.5)
    a = model.sample(1, generator=torch.Generator().manual_seed(seed), component=0)
    b = model.sample(1, generator=torch.Generator().manual_seed(seed + 10), component=1)
    y = (a + b) / 2
    z = oscillation_iterates(model, [y], SIGMA[flow], 20)[10:].mean(0)
    return model, z, y


def mse(model, z, y, sigma):
    return float((model(z, torch.full((z.shape[0],), sigma, dtype=torch.float64)) - y).square().mean())


@pytest.mark.parametrize("split", ["velocity", "noise"])
@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_returned_state_is_no_worse_and_prediction_is_its_own(flow, split):
    """Off the manifold the old rounds ended above the start (1.2–2.5×); the returned state must be no worse than
    the input, and ``prediction`` must be D(state) exactly."""
    for seed in range(2):
        model, z, y = off_manifold_case(flow, seed)
        state, prediction, info = post_inversion_optimize(model, z, SIGMA[flow], [y], flow=flow, split=split,
                                                          return_info=True)
        losses = info["losses"]
        sigma_in = torch.full((1,), SIGMA[flow], dtype=torch.float64)
        assert torch.equal(model(state, sigma_in), prediction)
        before, after = mse(model, z, y, SIGMA[flow]), mse(model, state, y, SIGMA[flow])
        print(f"flow={flow} split={split} seed={seed}: loss {before:.3e} -> {after:.3e}")
        assert after <= before and after == pytest.approx(min(losses))
        assert losses[0] == pytest.approx(before)


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_round_boundaries_do_not_move_the_state(flow):
    """At each boundary x̂ ← D(z), ε ← (z − αx̂)/σ: the first call of a round sees the state the last step left."""
    model, z, y = off_manifold_case(flow, 0)
    seen = []

    def spy(x, s, **kw):
        seen.append(x.detach().clone())
        return model(x, s)
    post_inversion_optimize(spy, z, SIGMA[flow], [y], flow=flow, steps=3, rounds=3, split="noise")
    assert len(seen) == 3 * 3 + 1 and torch.equal(seen[0], z)


def test_a_state_that_turns_non_finite_is_not_returned():
    model = make_mixture(flow=True, spread=0.5)
    z = model.sample(1, generator=torch.Generator().manual_seed(1))
    calls = []

    def breaks(x, s, **kw):
        calls.append(1)
        out = model(x, s)
        return out * float("nan") if len(calls) > 4 else out
    state, prediction = post_inversion_optimize(breaks, z, 0.4, [z + 0.3], flow=True)
    assert torch.isfinite(state).all() and torch.isfinite(prediction).all() and len(calls) == 5


def test_weighted_targets_blend_under_the_squared_loss_not_under_the_norm():
    """Why the pack keeps the squared loss: with two weighted targets its minimiser is the weighted mean (a blend);
    the official unsquared norm pulls toward the heavier target instead."""
    model = make_mixture(flow=True, spread=0.5)
    a = model.sample(1, generator=torch.Generator().manual_seed(4), component=0)
    b = a + 0.3 * torch.randn(a.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = 0.6 * a + 0.4 * torch.randn(a.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    blend = 0.7 * a + 0.3 * b
    _, squared = post_inversion_optimize(model, z, 0.4, [a, b], weights=[0.7, 0.3], flow=True)
    _, norm = post_inversion_optimize(model, z, 0.4, [a, b], weights=[0.7, 0.3], flow=True, loss="norm")
    d_sq, d_norm = float((squared - blend).norm()), float((norm - blend).norm())
    print(f"distance to the weighted mean: squared {d_sq:.3e}, norm {d_norm:.3e}; to a: {float((norm - a).norm()):.3e}")
    assert d_sq < d_norm and float((norm - a).norm()) < float((squared - a).norm())


def test_bad_options_are_rejected():
    model = make_mixture(flow=True)
    z = model.sample(1)
    with pytest.raises(ValueError, match="loss"):
        post_inversion_optimize(model, z, 0.4, [z], loss="l1")
    with pytest.raises(ValueError, match="split"):
        post_inversion_optimize(model, z, 0.4, [z], split="x")
