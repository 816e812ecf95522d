"""Host tier: BDIA Invert + BDIA Sampler (and O-BELM) through stock SamplerCustomAdvanced."""
import pytest
import torch

import hostlib
from hostlib import rel

hostlib.require_comfyui()

from inversion_suite.nodes.bdia import BDIAInvert, BDIASampler  # noqa: E402


def invert(model, guider, latent, sigmas, method="bdia", gamma=0.96):
    with torch.inference_mode():
        return BDIAInvert.execute(model=model, latent=latent, sigmas=sigmas, method=method, gamma=gamma,
                                  guider=guider).args


def regenerate(guider, noise, inversion, sigmas, latent, method="bdia", gamma=0.96):
    with torch.inference_mode():
        sampler = BDIASampler.execute(method=method, gamma=gamma, inversion=inversion).args[0]
        return hostlib.stock_sample(noise, guider, sampler, sigmas, hostlib.empty_like(latent))


@pytest.mark.parametrize("method", ["bdia", "o-belm"])
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_exact_round_trip_and_edit(family, model, method, cfg):
    latent = hostlib.image_latent(family)
    sigmas = hostlib.sigmas(model, 8)
    guider = hostlib.guider(model, family, cfg)
    noise, inversion, inverted, report = invert(model, guider, latent, sigmas, method)
    rec = regenerate(guider, noise, inversion, sigmas, latent, method)
    err = rel(rec, latent["samples"])
    edited = regenerate(hostlib.guider(model, family, cfg, seed=7), noise, inversion, sigmas, latent, method)
    change = rel(edited, latent["samples"])
    print(f"{family} {method} cfg={cfg}: round trip {err:.2e}, edit moves {change:.2e}")
    assert err <= 1e-4
    assert torch.isfinite(edited).all() and change > 100 * err
    assert inverted["samples"].shape == latent["samples"].shape


def test_one_model_call_per_step_each_way(family, model):
    patched, calls = hostlib.counting(model)
    latent = hostlib.image_latent(family)
    sigmas = hostlib.sigmas(model, 8)
    guider = hostlib.guider(patched, family)
    noise, inversion, _, report = invert(patched, guider, latent, sigmas)
    assert len(calls) == 8 and "8 model calls" in report
    calls.clear()
    regenerate(guider, noise, inversion, sigmas, latent)
    assert len(calls) == 7  # the inverted pair already holds the first step
    calls.clear()
    with torch.inference_mode():
        sampler = BDIASampler.execute(method="bdia", gamma=1.0).args[0]
        image = hostlib.stock_sample(_seeded(), guider, sampler, sigmas,
                                     hostlib.empty_like(latent))
    assert len(calls) == 8 and torch.isfinite(image).all()


def _seeded():
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise
    return Noise_RandomNoise(5)


def test_text_to_image_then_exact_inversion(family, model):
    """A BDIA sample (γ = 1) inverted and regenerated matches itself."""
    latent = hostlib.image_latent(family)
    sigmas = hostlib.sigmas(model, 8)
    guider = hostlib.guider(model, family)
    with torch.inference_mode():
        image = hostlib.stock_sample(_seeded(), guider, BDIASampler.execute(method="bdia", gamma=1.0).args[0], sigmas,
                                     hostlib.empty_like(latent))
    noise, inversion, _, _ = invert(model, guider, {"samples": image}, sigmas, gamma=1.0)
    assert rel(regenerate(guider, noise, inversion, sigmas, latent, gamma=1.0), image) <= 1e-4


def test_state_misuse_is_a_clear_error():
    sd15, flux = hostlib.tiny_model("sd15"), hostlib.tiny_model("flux")
    latent = hostlib.image_latent("sd15")
    sigmas = hostlib.sigmas(sd15, 8)
    guider = hostlib.guider(sd15, "sd15")
    noise, inversion, _, _ = invert(sd15, guider, latent, sigmas)
    with pytest.raises(ValueError, match="BDIASampler: input 'inversion' must be used with the sigmas"):
        regenerate(guider, noise, inversion, hostlib.sigmas(sd15, 6), latent)
    with pytest.raises(ValueError, match="BDIASampler: input 'inversion' holds latents of shape"):
        regenerate(guider, _seeded(), inversion, sigmas, hostlib.image_latent("sd15", batch=1))
    with pytest.raises(ValueError, match="BDIASampler: input 'gamma/method' must match the inversion"):
        regenerate(guider, noise, inversion, sigmas, latent, gamma=0.9)
    with pytest.raises(ValueError, match="BDIASampler: input 'noise' must be the NOISE output"):
        regenerate(guider, _seeded(), inversion, sigmas, latent)
    flux_latent = hostlib.image_latent("flux")
    with pytest.raises(ValueError, match="BDIASampler: input 'inversion' was made with a SD15/ve model"):
        regenerate(hostlib.guider(flux, "flux"), _seeded(), inversion, hostlib.sigmas(flux, 8), flux_latent)


@pytest.mark.parametrize("gamma", [0.0, 1.2, -0.5])
def test_gamma_out_of_range_when_inverting(gamma):
    model = hostlib.tiny_model("sd15")
    with pytest.raises(ValueError, match=r"BDIAInvert: input 'gamma' must be in \[0.01, 1.0\]"):
        invert(model, hostlib.guider(model, "sd15"), hostlib.image_latent("sd15"), hostlib.sigmas(model, 4),
               gamma=gamma)


def test_sampler_rejects_gamma_out_of_range():
    with pytest.raises(ValueError, match=r"BDIASampler: input 'gamma' must be in \[0.0, 1.0\]"):
        BDIASampler.execute(method="bdia", gamma=1.5)


def test_cancel_stops_within_one_model_call(family, model):
    import comfy.model_management as mm
    patched, calls = hostlib.counting(model, interrupt_at=4)
    with pytest.raises(mm.InterruptProcessingException):
        invert(patched, hostlib.guider(patched, family), hostlib.image_latent(family), hostlib.sigmas(model, 8))
    mm.interrupt_current_processing(False)
    assert len(calls) == 4


@pytest.mark.parametrize("gamma", [0.7, 0.96])
def test_a_device_without_float64_hands_the_pair_over_whole(family, model, gamma):
    """On Apple MPS or DirectML (emulated: the CPU declared float64-less) the recurrence runs in double-float pairs.
    The inversion hands its pair to the sampler whole (kept as their float64 sum on the CPU, split again on the
    device), so the round trip is as exact as on a float64 device, at any γ (measured 2.6–6.8e-8 against 2.9–5.5e-8).
    Handed over rounded to float32, as before, γ 0.7 over 30 steps came back with 0.9–1.6e-6, 20–50 times the float64
    round trip (the inverse amplifies the rounding by about 1/γ per step)."""
    from inversion_suite.core import frame
    latent = hostlib.image_latent(family)
    sigmas = hostlib.sigmas(model, 30)
    guider = hostlib.guider(model, family)
    noise, inversion, _, _ = invert(model, guider, latent, sigmas, gamma=gamma)
    reference = rel(regenerate(guider, noise, inversion, sigmas, latent, gamma=gamma), latent["samples"])
    frame.FLOAT64_LESS.add("cpu")
    try:
        noise, inversion, _, _ = invert(model, guider, latent, sigmas, gamma=gamma)
        err = rel(regenerate(guider, noise, inversion, sigmas, latent, gamma=gamma), latent["samples"])
    finally:
        frame.FLOAT64_LESS.discard("cpu")
    print(f"{family} γ={gamma}: round trip float64 {reference:.2e}, without float64 {err:.2e}")
    assert err <= 2 * reference + 1e-8
