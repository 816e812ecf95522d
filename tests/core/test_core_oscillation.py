"""Core tier: Oscillation Inversion and group inversion on the paper's toy (a far-apart Gaussian mixture, flow)."""
import math

import pytest
import torch

from inversion_suite.core import cluster_centres, detect_period, oscillation_iterates, pairwise_distances
from inversion_suite.core.toy import GaussianMixtureDenoiser

SIGMA, ITERATIONS, BURN_IN = 0.4, 300, 100


@pytest.fixture(scope="module")
def toy():
    """Four modes on a circle of radius 4, spread 0.125 (the research notes' 2-D toy, noise scaled to 1)."""
    angles = torch.arange(4, dtype=torch.float64) * math.pi / 2
    means = 4 * torch.stack([angles.cos(), angles.sin()], -1)
    return GaussianMixtureDenoiser(means, torch.full((4,), 0.125), flow=True), means


def run(model, targets, schedule=(0,)):
    history = oscillation_iterates(model, targets, SIGMA, ITERATIONS, schedule)
    period, errors = detect_period(history[BURN_IN:])
    centres, labels = cluster_centres(history[BURN_IN:], period, offset=BURN_IN)
    return history, period, errors, centres, labels


def predict(model, z):
    return model(z, torch.full((z.shape[0],), SIGMA, dtype=torch.float64))


def test_on_manifold_target_converges(toy):
    model, means = toy
    y = means[:1] + 0.05
    history, period, errors, _, _ = run(model, [y])
    spread = (history[-10:] - history[-10:].mean(0)).norm(dim=-1).max()
    assert float(spread) < 1e-3 * float((means[0] - means[1]).norm())
    assert period == 1 and errors[0] < 1e-3


def test_midpoint_oscillates_with_period_2_and_the_mean_inverts_it(toy):
    model, means = toy
    y = (means[:1] + means[1:2]) / 2
    history, period, errors, centres, labels = run(model, [y])
    assert period == 2 and errors[0] > 0.1 and errors[1] < 1e-3
    assert labels == ["k%2=0", "k%2=1", "all"]
    landed = predict(model, centres[:2, 0])
    # the two centres' one-step predictions land on the two modes (one each)
    nearest = torch.cdist(landed, means).argmin(1)
    assert sorted(nearest.tolist()) == [0, 1]
    assert float(torch.cdist(landed, means).min(1).values.max()) < 0.1 * float((means[0] - means[1]).norm())
    # the mean of the two centres inverts the off-manifold target (Theorem 2)
    assert float((predict(model, centres[2]) - y).norm() / y.norm()) < 1e-2


def test_group_schedule_aab_has_period_3(toy):
    model, means = toy
    a, b = means[:1] + 0.1, means[1:2] - 0.1
    _, period, errors, centres, labels = run(model, [a, b], schedule=(0, 0, 1))
    assert period == 3 and errors[2] < 1e-2 and min(errors[0], errors[1]) > 0.1
    assert len(labels) == len(centres) == 3 + 3 + 1


def test_period_is_detected_not_assumed():
    """A synthetic orbit of period 4 with small noise is reported as 4, a constant one as 1."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 1, 8, generator=g, dtype=torch.float64)
    orbit = base.repeat(10, 1, 1) + 1e-6 * torch.randn(40, 1, 8, generator=g, dtype=torch.float64)
    assert detect_period(orbit)[0] == 4
    assert detect_period(base[:1].repeat(20, 1, 1))[0] == 1


def test_cluster_groups_follow_absolute_iteration_index():
    history = torch.arange(12, dtype=torch.float64).reshape(12, 1, 1)
    centres, _ = cluster_centres(history[3:], 2, offset=3)
    # group 0 = even iterations 4, 6, 8, 10 ; group 1 = odd 3, 5, 7, 9, 11
    assert centres[:2, 0, 0].tolist() == [7.0, 7.0]
    assert cluster_centres(history, 3)[0][0, 0, 0].item() == 4.5  # iterations 0, 3, 6, 9


def test_pairwise_distances_show_the_chequer_of_period_2(toy):
    model, means = toy
    history, *_ = run(model, [(means[:1] + means[1:2]) / 2])
    d = pairwise_distances(history[BURN_IN:BURN_IN + 10])
    assert d.shape == (10, 10)
    assert float(d[0, 2]) < 1e-2 * float(d[0, 1])  # same parity close, other parity far


def test_one_model_call_per_iteration(toy):
    model, means = toy
    model.calls = 0
    history = oscillation_iterates(model, [means[:1]], SIGMA, 7)
    assert model.calls == 7 and history.shape == (8, 1, 2)
