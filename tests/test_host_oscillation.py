"""Host tier: Oscillation Invert and Group Inversion on tiny Flux, SD3 and the ε model (same frame)."""
import pytest
import torch

import hostlib

hostlib.require_comfyui()

from inversion_suite.nodes.oscillation import GroupInversion, OscillationInvert  # noqa: E402

OPTIONS = dict(sigma=0.4, sigma_mode="absolute", iterations=12, burn_in=2, max_period=4, decode="one-step",
               decode_steps=10)


def check_outputs(out, batch, iterations, family):
    centres, states, iterates, distances, report = out.args
    n = centres["samples"].shape[0] // batch
    assert centres["samples"].shape == (n * batch,) + tuple(hostlib.image_latent(family)["samples"].shape[1:])
    assert states["samples"].shape == centres["samples"].shape
    assert iterates["samples"].shape[0] == (iterations + 1) * batch
    assert distances.shape[0] == 1 and distances.shape[-1] == 3 and 0 <= float(distances.min()) <= float(distances.max()) <= 1
    for t in (centres["samples"], states["samples"], iterates["samples"]):
        assert torch.isfinite(t).all()
    return report


@pytest.mark.parametrize("decode", ["one-step", "sample"])
def test_oscillation_invert_runs_in_inference_mode(family, model, decode):
    patched, calls = hostlib.counting(model)
    latent = hostlib.image_latent(family)
    with torch.inference_mode():
        out = OscillationInvert.execute(model=patched, latent=latent, guider=hostlib.guider(patched, family),
                                        **{**OPTIONS, "decode": decode})
    report = check_outputs(out, 2, OPTIONS["iterations"], family)
    expected_decode = 1 if decode == "one-step" else None
    if expected_decode:
        assert len(calls) == OPTIONS["iterations"] + 1
    else:
        assert len(calls) > OPTIONS["iterations"] + 1
    assert f"{len(calls)} model calls" in report and "periodicity errors p=1:" in report


def test_group_inversion_aab(family, model):
    patched, calls = hostlib.counting(model)
    a, b = hostlib.image_latent(family, seed=3), hostlib.image_latent(family, seed=4)
    with torch.inference_mode():
        out = GroupInversion.execute(model=patched, image_a=a, image_b=b, schedule="A,A,B",
                                     guider=hostlib.guider(patched, family), **OPTIONS)
    check_outputs(out, 2, OPTIONS["iterations"], family)
    assert len(calls) == OPTIONS["iterations"] + 1


def test_fraction_of_schedule_sigma(family, model):
    with torch.inference_mode():
        out = OscillationInvert.execute(model=model, latent=hostlib.image_latent(family),
                                        guider=hostlib.guider(model, family),
                                        **{**OPTIONS, "sigma": 0.5, "sigma_mode": "fraction of schedule"})
    ms = model.get_model_object("model_sampling")
    assert f"σ={float(ms.percent_to_sigma(0.5)):.4g}" in out.args[4]


def test_cancel_stops_within_one_model_call(family, model):
    import comfy.model_management as mm
    patched, calls = hostlib.counting(model, interrupt_at=3)
    with torch.inference_mode(), pytest.raises(mm.InterruptProcessingException):
        OscillationInvert.execute(model=patched, latent=hostlib.image_latent(family),
                                  guider=hostlib.guider(patched, family), **OPTIONS)
    mm.interrupt_current_processing(False)
    assert len(calls) == 3


def bad_group(**change):
    model = hostlib.tiny_model("flux")
    args = dict(model=model, image_a=hostlib.image_latent("flux"), image_b=hostlib.image_latent("flux", seed=5),
                schedule="A,A,B", guider=hostlib.guider(model, "flux"), **OPTIONS)
    args.update(change)
    with torch.inference_mode():
        GroupInversion.execute(**args)


def test_group_images_of_different_sizes():
    with pytest.raises(ValueError, match=r"GroupInversion: input 'image_b' must have the same shape as image_a"):
        bad_group(image_b=hostlib.image_latent("flux", size=8))


def test_schedule_naming_an_unconnected_image():
    with pytest.raises(ValueError, match=r"GroupInversion: input 'schedule' may only name connected images "
                                         r"\(image_a, image_b\), got 'C'"):
        bad_group(schedule="A,B,C")


@pytest.mark.parametrize("sigma, message", [(0.0, r"must be in \[0.01, 14.6\]"),
                                            (1.5, r"must be at most σ_max = 1 for this model")])
def test_sigma_outside_range(sigma, message):
    with pytest.raises(ValueError, match=r"GroupInversion: input 'sigma' " + message):
        bad_group(sigma=sigma)


def test_iterations_below_two():
    with pytest.raises(ValueError, match=r"GroupInversion: input 'iterations' must be in \[2, 1000\]"):
        bad_group(iterations=1, burn_in=0)
