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
    losses = []
    z_opt, pred = post_inversion_optimize(model, z, SIGMA[flow], [target], flow=flow, losses=losses)
    print(f"flow={flow}: loss {losses[0]:.3e} -> {losses[-1]:.3e}")
    assert len(losses) == 6 * 20
    assert losses[-1] <= 0.1 * losses[0]
    assert z_opt.shape == z.shape and torch.isfinite(z_opt).all()


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_two_weighted_targets(flow):
    model = make_mixture(flow=flow, spread=0.5)
    start = model.sample(1, generator=torch.Generator().manual_seed(3), component=2)
    a = model.sample(1, generator=torch.Generator().manual_seed(4), component=0)
    b = a + 0.1 * torch.randn(a.shape, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    z = (1 - SIGMA[flow] if flow else 1.0) * start + SIGMA[flow] * torch.randn(start.shape, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    losses = []
    _, pred = post_inversion_optimize(model, z, SIGMA[flow], [a, b], weights=[0.7, 0.3], flow=flow, losses=losses)
    assert losses[-1] <= 0.1 * losses[0]
    # the prediction moves to the weighted mean of the targets
    blend = 0.7 * a + 0.3 * b
    print(f"flow={flow}: loss {losses[0]:.3e} -> {losses[-1]:.3e}, |pred-blend| {float((pred - blend).norm()):.3e}, "
          f"|a-b| {float((a - b).norm()):.3e}")
    assert float((pred - blend).norm()) < 0.5 * float((a - b).norm())
