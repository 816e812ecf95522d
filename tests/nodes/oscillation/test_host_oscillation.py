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


def ksampler_common(model, family, latent, seed=7, steps=2):
    """What KSampler does with a LATENT (nodes.common_ksampler): noise by batch_index, noise_mask, comfy.sample."""
    import comfy.sample
    samples = comfy.sample.fix_empty_latent_channels(model, latent["samples"])
    noise = comfy.sample.prepare_noise(samples, seed, latent.get("batch_index"))
    return comfy.sample.sample(model, noise, steps, 1.0, "euler", "simple", hostlib.tiny_cond(family), [],
                               samples, denoise=0.5, noise_mask=latent.get("noise_mask"), disable_pbar=True,
                               seed=seed)


def custom_advanced(model, family, latent, seed=7):
    """SamplerCustomAdvanced with RandomNoise (which also reads batch_index)."""
    from comfy_extras.nodes_custom_sampler import Noise_RandomNoise
    return hostlib.stock_sample(Noise_RandomNoise(seed), hostlib.guider(model, family), hostlib.euler(),
                                hostlib.sigmas(model, steps=2), latent)


@pytest.mark.parametrize("node", ["OscillationInvert", "GroupInversion"])
def test_latent_outputs_carry_only_keys_valid_for_their_batch(family, model, node):
    """Issue 14: an input LATENT from a batch (batch_index) with a noise_mask. centres, centre_states and iterates
    have another batch size, so batch_index and noise_mask must not reach them; plain values survive. A stock
    KSampler and SamplerCustomAdvanced run downstream of each."""
    def marked(seed):
        latent = hostlib.image_latent(family, size=8, seed=seed)
        latent.update(batch_index=[5, 6], noise_mask=torch.ones(2, 1, 8, 8), note="kept")
        return latent
    options = {**OPTIONS, "iterations": 6, "burn_in": 0, "max_period": 2}
    with torch.inference_mode():
        if node == "OscillationInvert":
            out = OscillationInvert.execute(model=model, latent=marked(2), guider=hostlib.guider(model, family),
                                            **options)
        else:
            out = GroupInversion.execute(model=model, image_a=marked(3), image_b=marked(4), schedule="A,B",
                                         guider=hostlib.guider(model, family), **options)
    centres, states, iterates = out.args[:3]
    assert iterates["samples"].shape[0] == 7 * 2 and centres["samples"].shape[0] >= 2
    for latent in (centres, states, iterates):
        batch = latent["samples"].shape[0]
        assert "noise_mask" not in latent
        if batch != 2:
            assert sorted(latent) == ["note", "samples"]
        with torch.inference_mode():
            for sample in (ksampler_common, custom_advanced):
                result = sample(model, family, latent)
                assert result.shape[0] == batch and torch.isfinite(result).all()


def test_history_is_kept_in_the_models_precision(monkeypatch):
    """Issue 14: the iterate history is kept in the model's compute precision (bf16 here: 2 bytes per value instead
    of float64's 8), while the iteration itself runs in float64 (the stored iterates are its rounded values)."""
    import inversion_suite.core.oscillation as core
    model = hostlib.tiny_model("sd3").clone()
    model.set_model_compute_dtype(torch.bfloat16)
    kept = []

    def spy(*args, **kwargs):
        history = original(*args, **kwargs)
        kept.append(history)
        return history
    original = core.oscillation_iterates
    monkeypatch.setattr(core, "oscillation_iterates", spy)
    latent = hostlib.image_latent("sd3", size=8)
    with torch.inference_mode():
        out = OscillationInvert.execute(model=model, latent=latent, guider=hostlib.guider(model, "sd3"),
                                        **{**OPTIONS, "iterations": 6, "burn_in": 0, "max_period": 2})
    history = kept[0]
    assert history.dtype == torch.bfloat16 and history.shape == (7, 2, 16, 8, 8)
    assert history.element_size() * history[0, 0].numel() == 2 * 16 * 8 * 8
    assert out.args[2]["samples"].dtype == torch.float32 and torch.isfinite(out.args[2]["samples"]).all()


def test_core_history_dtype_is_storage_only():
    """The iteration runs in the targets' precision; only the stored copies are cast (z_k exactly rounded)."""
    import inversion_suite.core as core
    g = torch.Generator().manual_seed(0)
    y = torch.randn(2, 4, 8, 8, generator=g, dtype=torch.float64)
    weight = torch.randn(4, 4, generator=g, dtype=torch.float64) * 0.3

    def denoiser(z, sigma):
        return torch.einsum("oc,bchw->bohw", weight, torch.tanh(z)) + 0.5 * z
    full = core.oscillation_iterates(denoiser, [y], 0.4, 9)
    kept = core.oscillation_iterates(denoiser, [y], 0.4, 9, history_dtype=torch.bfloat16)
    assert full.dtype == torch.float64 and kept.dtype == torch.bfloat16
    assert torch.equal(kept, full.to(torch.bfloat16))


def test_pairwise_distances_by_blocks_match_the_full_matrix():
    """The distance map is computed block by block (bounded memory for long runs): same matrix as the float64
    cdist of the whole history, for every block size that divides it or not."""
    import inversion_suite.core as core
    g = torch.Generator().manual_seed(0)
    history = torch.randn(23, 3, 4, 8, 8, generator=g).to(torch.bfloat16)
    h = history.flatten(2).double()
    full = torch.stack([torch.cdist(h[:, b], h[:, b], compute_mode="donot_use_mm_for_euclid_dist")
                        for b in range(3)]).mean(0)
    for block in (1, 4, 23, 64):
        d = core.pairwise_distances(history, block=block)
        assert d.shape == (23, 23) and d.dtype == torch.float64
        assert float((d - full).abs().max()) <= 1e-9 * float(full.max())
