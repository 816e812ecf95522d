"""Core tier: BDIA and O-BELM exactness, cost and the γ trade-off on the analytic model."""
import pytest
import torch

from inversion_suite.core import invert_bdia, invert_obelm, rel_rms, sample_bdia, sample_obelm
from inversion_suite.core.toy import flow_sigmas, make_mixture, ve_sigmas

STEPS = 50


def setup(flow, steps=STEPS):
    model = make_mixture(flow=flow)
    return model, flow_sigmas(steps) if flow else ve_sigmas(steps)


def float32_outputs(model):
    """The analytic model with its outputs rounded to float32, as a real network's are."""
    return lambda x, sigma, **kw: model(x, sigma).float().double()


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_generated_image_round_trips_to_1e10(flow):
    model, sigmas = setup(flow)
    noise = torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
    x_T = noise * (sigmas[0] if not flow else 1.0)
    image = sample_bdia(model, x_T, sigmas, gamma=1.0, flow=flow, disable=True)
    top, below = invert_bdia(model, image, sigmas.flip(0), gamma=1.0, flow=flow, disable=True)
    again = sample_bdia(model, top, sigmas, gamma=1.0, flow=flow, x_below=below, disable=True)
    assert float(rel_rms(again, image).max()) <= 1e-10


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
@pytest.mark.parametrize("method", ["bdia", "obelm"])
def test_real_latent_round_trips_to_1e6_with_float32_model(flow, method):
    model, sigmas = setup(flow)
    real = model.sample(2, generator=torch.Generator().manual_seed(4)) + 0.05 * torch.randn(
        2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)  # off the model's manifold
    f32 = float32_outputs(model)
    if method == "bdia":
        top, below = invert_bdia(f32, real, sigmas.flip(0), gamma=0.96, flow=flow, disable=True)
        again = sample_bdia(f32, top, sigmas, gamma=0.96, flow=flow, x_below=below, disable=True)
    else:
        top, below = invert_obelm(f32, real, sigmas.flip(0), disable=True)
        again = sample_obelm(f32, top, sigmas, x_below=below, disable=True)
    err = float(rel_rms(again, real).max())
    print(f"{method} flow={flow}: round trip {err:.2e}")
    assert err <= 1e-6


def test_one_model_call_per_step_each_way():
    model, sigmas = setup(False, steps=10)
    top, below = invert_bdia(model, model.sample(1), sigmas.flip(0), gamma=0.96, flow=False, disable=True)
    assert model.calls == 10
    model.calls = 0
    sample_bdia(model, top, sigmas, gamma=0.96, flow=False, x_below=below, disable=True)
    assert model.calls == 9  # the pair already holds the first step
    model.calls = 0
    sample_bdia(model, top, sigmas, gamma=0.96, flow=False, disable=True)
    assert model.calls == 10


def test_gamma_zero_is_plain_ddim():
    from inversion_suite.core import sample_euler
    model, sigmas = setup(False, steps=10)
    x_T = torch.randn(1, 4, 8, 8, dtype=torch.float64) * sigmas[0]
    assert torch.allclose(sample_bdia(model, x_T, sigmas, gamma=0.0, flow=False, disable=True),
                          sample_euler(model, x_T, sigmas, disable=True), atol=1e-12)


def test_inverse_amplifies_float32_rounding_as_gamma_falls():
    """The alternating mode grows like (1/γ)^N when inverting: float32 state at small γ fails."""
    model, sigmas = setup(True)
    real = model.sample(1, generator=torch.Generator().manual_seed(6))
    errors = {}
    for gamma in (1.0, 0.5):
        top, below = invert_bdia(model, real.float(), sigmas.flip(0), gamma=gamma, flow=True, disable=True)
        # float32 hand-over of the pair, as a float32 pipeline would store it
        again = sample_bdia(model, top.float(), sigmas, gamma=gamma, flow=True, x_below=below.float(), disable=True)
        errors[gamma] = float(rel_rms(again.double(), real).max())
    assert errors[1.0] < 1e-5 and errors[0.5] > 1e3 * errors[1.0]


def test_vp_gamma_rule_beats_constant_gamma_on_eps():
    """γ_i = γ√((1+σ_{i−1}²)/(1+σ_{i+1}²)) is the paper's rule; the sampled image is closer to the ODE solution."""
    from inversion_suite.core import sample_euler
    model, sigmas = setup(False, steps=10)
    x_T = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7), dtype=torch.float64) * sigmas[0]
    reference = sample_euler(model, x_T, torch.cat([torch.exp(torch.linspace(sigmas[0].log(), sigmas[-2].log(), 400,
                                                                              dtype=torch.float64)), sigmas[-1:]]),
                             disable=True)
    paper = rel_rms(sample_bdia(model, x_T, sigmas, gamma=1.0, flow=False, disable=True), reference)
    naive = rel_rms(sample_bdia(model, x_T, sigmas, gamma=1.0, flow=True, disable=True), reference)
    assert float(paper) < float(naive)


def test_inverting_with_gamma_outside_range_is_rejected():
    model, sigmas = setup(False, steps=4)
    for gamma in (0.0, 1.5, -0.1):
        with pytest.raises(ValueError, match="gamma"):
            invert_bdia(model, model.sample(1), sigmas.flip(0), gamma=gamma)
