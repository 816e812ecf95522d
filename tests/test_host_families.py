"""Host tier: every node on tiny random-weight models of every family ComfyUI 0.3.64 ships that inversion applies
to (ComfyUI's own supported_models classes, 8×8 latents, 2 frames for video), through stock SamplerCustomAdvanced;
the families inversion cannot apply to are refused by name.

Each measurement is also written to test_out/support_matrix.json (git-ignored); scripts/support_matrix.py renders
it into the README's support matrix, so the matrix is what this module measured.
"""
import json
import os
import pathlib
import re
import sys

import pytest
import torch

import hostlib
from hostlib import rel

hostlib.require_comfyui()
torch.set_num_threads(1)

from inversion_suite.nodes import grad  # noqa: E402
from inversion_suite.nodes.bdia import BDIAInvert, BDIASampler  # noqa: E402
from inversion_suite.nodes.common import model_family  # noqa: E402
from inversion_suite.nodes.fixed_point import MAX_ITERATIONS, TOLERANCE, FixedPointInvert  # noqa: E402
from inversion_suite.nodes.optimize import FineTuneInversion, PostInversionOptimize  # noqa: E402
from inversion_suite.nodes.oscillation import GroupInversion, OscillationInvert  # noqa: E402

MATRIX = pathlib.Path(os.environ.get("SUPPORT_MATRIX_OUT",
                                     pathlib.Path(__file__).resolve().parents[1] / "test_out" / "support_matrix.json"))
RESULTS = {}
SOLVER = dict(max_iterations=MAX_ITERATIONS, tolerance=TOLERANCE / 10, criterion="intra-path", anderson_window=3,
              perturbation=1.0, seed=0)  # the node defaults, a tighter tolerance (1e-4 leaves PixArt at 1.2e-2)
FIXED = dict(sigma=0.4, sigma_mode="fraction of schedule")
OSCILLATION = dict(FIXED, iterations=6, burn_in=2, max_period=2, decode="one-step", decode_steps=4)


def record(family, column, value, ok=True):
    """One cell of the support matrix: the measured value and whether the test's threshold held."""
    RESULTS.setdefault(family, {})[column] = {"value": value, "ok": bool(ok)}
    return ok


@pytest.fixture(scope="module", autouse=True)
def support_matrix():
    """Writes what this module measured (family × node) when it ends."""
    yield
    if RESULTS:
        MATRIX.parent.mkdir(parents=True, exist_ok=True)
        MATRIX.write_text(json.dumps({"comfyui": _comfyui_version(), "families": RESULTS}, indent=1,
                                     ensure_ascii=False) + "\n")


def _comfyui_version():
    try:
        import comfyui_version
        return comfyui_version.__version__
    except ImportError:
        return "unknown"


@pytest.fixture(scope="module", params=hostlib.ALL_FAMILIES)
def family(request):
    return request.param


@pytest.fixture(scope="module")
def model(family):
    """A tiny model of ``family`` whose weights are inference tensors, as a loader node in the server makes them."""
    m = hostlib.tiny_model(family)
    with torch.inference_mode():
        m.model.load_state_dict({k: v.clone() for k, v in m.model.state_dict().items()})
    ms = m.get_model_object("model_sampling")
    record(family, "sampling", "/".join(b.__name__ for b in type(ms).__bases__))
    record(family, "frame", model_family("test", ms))
    record(family, "latent", "×".join(str(d) for d in latent(family)["samples"].shape[1:]))
    return m


def latent(family, batch=1, seed=2):
    return hostlib.image_latent(family, batch=batch, size=hostlib.MIN_SIZE.get(family, 8), seed=seed)


def test_fixed_point_round_trip(family, model):
    lat = latent(family)
    sigmas = hostlib.sigmas(model, 4)
    guider = hostlib.guider(model, family)
    with torch.inference_mode():
        inverted, noise, report = FixedPointInvert.execute(model=model, latent=lat, sigmas=sigmas, guider=guider,
                                                           **SOLVER).args[:3]
        rec = hostlib.stock_sample(noise, guider, hostlib.euler(), sigmas, hostlib.empty_like(lat))
    err = rel(rec, lat["samples"])
    print(f"{family}: fixed point {err:.2e}")
    assert rec.shape == lat["samples"].shape == inverted["samples"].shape
    assert record(family, "fixed_point", err, err <= 1e-2)


@pytest.mark.parametrize("method", ["bdia", "o-belm"])
def test_bdia_round_trip(family, model, method):
    lat = latent(family)
    sigmas = hostlib.sigmas(model, 6)
    guider = hostlib.guider(model, family)
    with torch.inference_mode():
        noise, inversion, inverted, _ = BDIAInvert.execute(model=model, latent=lat, sigmas=sigmas, method=method,
                                                           gamma=0.96, guider=guider).args
        sampler = BDIASampler.execute(method=method, gamma=0.96, inversion=inversion).args[0]
        rec = hostlib.stock_sample(noise, guider, sampler, sigmas, hostlib.empty_like(lat))
    err = rel(rec, lat["samples"])
    print(f"{family}: {method} {err:.2e}")
    assert rec.shape == lat["samples"].shape
    assert record(family, method, err, err <= 1e-4)


def test_bdia_with_cfg_and_a_batch(family, model):
    """CFG batches cond and uncond through each model (and its masks); a batch of two images on top."""
    lat = latent(family, batch=2)
    sigmas = hostlib.sigmas(model, 4)
    guider = hostlib.guider(model, family, cfg=3.0)
    with torch.inference_mode():
        noise, inversion, _, _ = BDIAInvert.execute(model=model, latent=lat, sigmas=sigmas, method="bdia",
                                                    gamma=0.96, guider=guider).args
        sampler = BDIASampler.execute(method="bdia", gamma=0.96, inversion=inversion).args[0]
        rec = hostlib.stock_sample(noise, guider, sampler, sigmas, hostlib.empty_like(lat))
    err = rel(rec, lat["samples"])
    assert rec.shape == lat["samples"].shape
    assert record(family, "bdia_cfg", err, err <= 1e-4)


def test_oscillation_and_group_inversion(family, model):
    a, b = latent(family, seed=3), latent(family, seed=4)
    guider = hostlib.guider(model, family)
    with torch.inference_mode():
        single = OscillationInvert.execute(model=model, latent=a, guider=guider, **OSCILLATION).args
        group = GroupInversion.execute(model=model, image_a=a, image_b=b, schedule="A,A,B", guider=guider,
                                       **OSCILLATION).args
    for column, (centres, states, iterates, distances, report) in (("oscillation", single), ("group", group)):
        ok = (centres["samples"].shape[1:] == a["samples"].shape[1:] == states["samples"].shape[1:]
              and iterates["samples"].shape[0] == OSCILLATION["iterations"] + 1
              and all(bool(torch.isfinite(t["samples"]).all()) for t in (centres, states, iterates)))
        found = report.split("detected ")[1].split(" (")[0]  # "period 2" or "aperiodic orbit, … period 2"
        assert record(family, column, ("aperiodic, p=" if "aperiodic" in found else "period ") + found.split()[-1], ok)


def test_post_inversion_optimize(family, model):
    """Gradients through the architecture inside inference mode; checkpointed where it offers a block patch point."""
    before = {k: v.clone() for k, v in model.model.state_dict().items()}
    with torch.inference_mode():
        optimized, state, _, report = PostInversionOptimize.execute(
            model=model, latent=latent(family, seed=2), target_1=latent(family, seed=3), weight_1=1.0, weight_2=0.0,
            steps=3, rounds=2, lr_noise=0.05, lr_image=0.01, gradient_checkpointing=True,
            guider=hostlib.guider(model, family), **FIXED).args
    first, last = (float(v) for v in report.split("loss ")[1].split(" (")[0].split(" → "))
    blocks = grad.dit_blocks(model)
    record(family, "checkpointing", sum(n for _, n in blocks))
    print(f"{family}: {report}")
    assert record(family, "optimize", last / first, last < first and bool(torch.isfinite(optimized["samples"]).all())
                  and bool(torch.isfinite(state["samples"]).all()))
    assert optimized["samples"].shape == latent(family)["samples"].shape
    assert ("gradient checkpointing on" in report) == bool(blocks)
    after = model.model.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_gradients_match_finite_differences(family, model):
    """Autograd through the differentiable clone (checkpointed blocks where offered) against a central difference;
    without checkpointing, backward fails exactly on the families the nodes require checkpointing for."""
    import comfy.samplers
    x = latent(family)["samples"]
    sigma = float(model.get_model_object("model_sampling").percent_to_sigma(0.6))

    class Backward(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            with torch.inference_mode(False), torch.enable_grad():
                z = latent_image.clone().requires_grad_(True)
                try:
                    model_wrap(z, sigmas[:1].expand(z.shape[0]), **extra_args).square().mean().backward()
                except RuntimeError as error:
                    assert "modified by an inplace operation" in str(error)
                    found["in_place"] = True
            return latent_image
    found = {"in_place": False}
    with torch.inference_mode():
        hostlib.guider(grad.differentiable(model, checkpointing=False), family).sample(
            torch.zeros_like(x), x, Backward(), torch.tensor([sigma, 0.0]))
    assert found["in_place"] == grad.needs_checkpointing(model)
    if found["in_place"]:
        with torch.inference_mode(), pytest.raises(
                ValueError, match="PostInversionOptimize: input 'gradient_checkpointing' must be on for this model"):
            PostInversionOptimize.execute(model=model, latent=latent(family), target_1=latent(family), weight_1=1.0,
                                          weight_2=0.0, steps=1, rounds=1, lr_noise=0.05, lr_image=0.01,
                                          gradient_checkpointing=False, guider=hostlib.guider(model, family), **FIXED)
    grad_model = grad.differentiable(model, checkpointing=True)
    found = hostlib.autograd_against_difference(hostlib.guider(grad_model, family), x, sigma, eps=1e-2)
    err = abs(found["grad"] - found["fd"]) / max(abs(found["fd"]), 1e-6)
    assert record(family, "gradient", err, err <= 2e-2)


def one_step(model, family, x, sigma):
    """The model's clean prediction D(x, σ) through a stock guider."""
    import comfy.samplers
    found = {}

    class OneStep(comfy.samplers.Sampler):
        def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
                   disable_pbar=False):
            found["d"] = model_wrap(latent_image, sigmas[:1].expand(latent_image.shape[0]), **extra_args)
            return latent_image
    with torch.inference_mode():
        hostlib.guider(model, family).sample(torch.zeros_like(x), x, OneStep(), torch.tensor([sigma, 0.0]))
    return found["d"]


def test_fine_tune_inversion(family, model):
    """Low-rank adapters on the attention query/key projections, where the architecture has them: the returned
    MODEL predicts differently, the input MODEL does not."""
    sigma = float(model.get_model_object("model_sampling").percent_to_sigma(0.6))
    x = latent(family, seed=2)["samples"]
    before = one_step(model, family, x, sigma)
    with torch.inference_mode():
        tuned, _, report = FineTuneInversion.execute(
            model=model, latent=latent(family, seed=2), target=latent(family, seed=3), steps=4, learning_rate=0.05,
            rank=2, seed=0, gradient_checkpointing=True, guider=hostlib.guider(model, family), **FIXED).args
    adapted = int(report.split(": ")[1].split(" projections")[0])
    first, last = (float(v) for v in report.split("loss ")[1].split(" → "))
    moved = rel(one_step(tuned, family, x, sigma), before)
    print(f"{family}: {report}; prediction moved {moved:.2e}")
    assert record(family, "fine_tune", adapted, adapted > 0 and last <= first and moved > 1e-7)
    assert torch.equal(one_step(model, family, x, sigma), before)


# ---------------------------------------------------------------- the model sampling, by behaviour
def _patched(model, sampling):
    patched = model.clone()
    patched.add_object_patch("model_sampling", sampling)
    return patched


def _every_entry_node(model, family):
    """Each node that takes a MODEL, run on ``model``: all must refuse it with the same message."""
    lat, sigmas, guider = latent(family), hostlib.sigmas(model, 4), hostlib.guider(model, family)
    yield lambda: FixedPointInvert.execute(model=model, latent=lat, sigmas=sigmas, guider=guider, **SOLVER)
    yield lambda: BDIAInvert.execute(model=model, latent=lat, sigmas=sigmas, method="bdia", gamma=0.96, guider=guider)
    yield lambda: OscillationInvert.execute(model=model, latent=lat, guider=guider, **OSCILLATION)
    yield lambda: PostInversionOptimize.execute(model=model, latent=lat, target_1=lat, weight_1=1.0, weight_2=0.0,
                                                steps=1, rounds=1, lr_noise=0.05, lr_image=0.01,
                                                gradient_checkpointing=True, guider=guider, **FIXED)


def _no_noise_flow(base):
    """ComfyUI 0.38's IMG_TO_IMG_FLOW as 0.3.64 lets us build it: a CONST subclass whose noise_scaling ignores the
    noise, composed with a flow schedule the way comfy.model_base.model_sampling composes them."""
    import comfy.model_sampling as cms

    class ImgToImgFlow(cms.CONST):
        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            return latent_image

    class ModelSampling(cms.ModelSamplingDiscreteFlow, ImgToImgFlow):
        pass
    return ModelSampling(base.model.model_config)


def _scaled_noise_flow(base, scale=8.0):
    """ComfyUI 0.38's HiDream-O1 sampling as 0.3.64 lets us build it: a CONST subclass whose noise_scaling multiplies
    the noise by ``noise_scale`` = 8."""
    import comfy.model_sampling as cms

    class ScaledNoiseFlow(cms.CONST):
        noise_scale = scale

        def noise_scaling(self, sigma, noise, latent_image, max_denoise=False):
            return super().noise_scaling(sigma, noise * self.noise_scale, latent_image, max_denoise)

    class ModelSampling(cms.ModelSamplingFlux, ScaledNoiseFlow):
        pass
    return ModelSampling(base.model.model_config)


REFUSED = {
    "lotus": ("ModelSamplingDiscrete/IMG_TO_IMG", "outputs the clean latent directly"),
    "img_to_img_flow": ("ModelSamplingDiscreteFlow/ImgToImgFlow", "scales unit noise to 0"),
    "stable_cascade": ("StableCascadeSampling/EPS", "Stable Cascade's stages"),
}


@pytest.mark.parametrize("case", list(REFUSED))
def test_refused_families_name_the_model_type(case):
    import comfy.model_base
    import comfy.supported_models as sm
    if case == "lotus":
        model, family = hostlib.tiny_model("lotus"), "sd15"
    elif case == "img_to_img_flow":
        base, family = hostlib.tiny_model("sd3"), "sd3"
        model = _patched(base, _no_noise_flow(base))
    else:
        base, family = hostlib.tiny_model("sd15"), "sd15"
        config = sm.Stable_Cascade_C({})
        model = _patched(base, comfy.model_base.model_sampling(config, comfy.model_base.ModelType.STABLE_CASCADE))
    kind, reason = REFUSED[case]
    record(case, "refused", f"{kind}: {reason}", False)
    for run in _every_entry_node(model, family):
        with torch.inference_mode(), pytest.raises(ValueError) as error:
            run()
        message = str(error.value)
        assert message.split(": ")[0] in ("FixedPointInvert", "BDIAInvert", "OscillationInvert",
                                          "PostInversionOptimize")
        assert "input 'model' must be an ε-, v-prediction or rectified-flow model" in message
        assert f"got a model sampling of type {kind}" in message and reason in message
    record(case, "refused", f"{kind}: {reason}")


@pytest.mark.parametrize("method", ["fixed point", "bdia"])
def test_flow_with_scaled_noise_hands_off_exactly(method):
    """A flow sampling whose noise_scaling multiplies the noise by 8 (0.38 HiDream-O1): still 'flow', and the NOISE
    hand-off to stock SamplerCustomAdvanced stays exact."""
    base = hostlib.tiny_model("flux")
    model = _patched(base, _scaled_noise_flow(base))
    lat, sigmas, guider = latent("flux"), hostlib.sigmas(model, 6), hostlib.guider(model, "flux")
    with torch.inference_mode():
        if method == "bdia":
            noise, inversion, _, _ = BDIAInvert.execute(model=model, latent=lat, sigmas=sigmas, method="bdia",
                                                        gamma=0.96, guider=guider).args
            sampler = BDIASampler.execute(method="bdia", gamma=0.96, inversion=inversion).args[0]
        else:
            _, noise, _ = FixedPointInvert.execute(model=model, latent=lat, sigmas=sigmas, guider=guider,
                                                   **SOLVER).args[:3]
            sampler = hostlib.euler()
        x_top = noise.x
        n = noise.generate_noise(hostlib.empty_like(lat))
        rec = hostlib.stock_sample(noise, guider, sampler, sigmas, hostlib.empty_like(lat))
    # the stock sampler starts from σ·8·n: the NOISE is the inverted state over 8σ
    assert rel(n * 8 * float(sigmas[0]), x_top) <= 1e-6
    assert rel(rec, lat["samples"]) <= (1e-4 if method == "bdia" else 1e-2)


# ---------------------------------------------------------------- video latents
@pytest.mark.parametrize("family", ["wan21", "qwen_image"], indirect=True)
def test_image_latent_on_a_video_family_gets_the_time_axis(family, model):
    """A 4-D [1, C, H, W] latent (EmptyLatentImage's shape) on a 5-D family: the nodes add the time axis as stock
    SamplerCustomAdvanced does, and the round trip holds through stock nodes given the same 4-D latent."""
    flat = {"samples": latent(family)["samples"][:, :, 0]}
    sigmas, guider = hostlib.sigmas(model, 4), hostlib.guider(model, family)
    with torch.inference_mode():
        inverted, noise, _ = FixedPointInvert.execute(model=model, latent=flat, sigmas=sigmas, guider=guider,
                                                      **SOLVER).args[:3]
        rec = hostlib.stock_sample(noise, guider, hostlib.euler(), sigmas, hostlib.empty_like(flat))
        bnoise, inversion, binverted, _ = BDIAInvert.execute(model=model, latent=flat, sigmas=sigmas, method="bdia",
                                                             gamma=0.96, guider=guider).args
        brec = hostlib.stock_sample(bnoise, guider, BDIASampler.execute(method="bdia", gamma=0.96,
                                                                        inversion=inversion).args[0],
                                    sigmas, hostlib.empty_like(flat))
        centres = OscillationInvert.execute(model=model, latent=flat, guider=guider, **OSCILLATION).args[0]
    video = flat["samples"].unsqueeze(2)
    assert inverted["samples"].shape == binverted["samples"].shape == rec.shape == brec.shape == video.shape
    assert centres["samples"].shape[1:] == video.shape[1:]
    assert rel(rec, video) <= 1e-2 and rel(brec, video) <= 1e-4


def test_video_latent_on_an_image_family_is_refused():
    model = hostlib.tiny_model("sd15")
    video = {"samples": torch.randn(1, 4, 2, 8, 8)}
    with torch.inference_mode(), pytest.raises(
                ValueError, match=r"FixedPointInvert: input 'latent' must have 4 channels and the layout \[B, C, H, W\] "
                                  r"for this model, got shape \[1, 4, 2, 8, 8\]"):
        FixedPointInvert.execute(model=model, latent=video, sigmas=hostlib.sigmas(model, 4),
                                 guider=hostlib.guider(model, "sd15"), **SOLVER)


# ---------------------------------------------------------------- reference-image conditioning
@pytest.mark.parametrize("family", ["flux", "qwen_image"], indirect=True)
def test_reference_latent_conditioning_round_trips(family, model):
    """Flux Kontext / Qwen-Image-Edit conditioning (ReferenceLatent's reference_latents: extra image tokens) is
    used unchanged by inversion and regeneration: the round trips hold with it, and it changes the prediction."""
    import comfy.samplers
    lat = latent(family)
    (context, extra), = hostlib.tiny_cond(family)
    reference = latent(family, seed=9)["samples"]
    cond = [[context, {**extra, "reference_latents": [reference]}]]
    guider = comfy.samplers.CFGGuider(model)
    guider.inner_set_conds({"positive": cond})
    guider.set_cfg(1.0)
    sigmas = hostlib.sigmas(model, 4)
    with torch.inference_mode():
        _, noise, _ = FixedPointInvert.execute(model=model, latent=lat, sigmas=sigmas, guider=guider, **SOLVER).args[:3]
        rec = hostlib.stock_sample(noise, guider, hostlib.euler(), sigmas, hostlib.empty_like(lat))
        bnoise, inversion, _, _ = BDIAInvert.execute(model=model, latent=lat, sigmas=sigmas, method="bdia",
                                                     gamma=0.96, guider=guider).args
        brec = hostlib.stock_sample(bnoise, guider, BDIASampler.execute(method="bdia", gamma=0.96,
                                                                        inversion=inversion).args[0],
                                    sigmas, hostlib.empty_like(lat))
        plain = hostlib.stock_sample(noise, hostlib.guider(model, family), hostlib.euler(), sigmas,
                                     hostlib.empty_like(lat))
    print(f"{family} with a reference latent: fixed point {rel(rec, lat['samples']):.2e}, "
          f"BDIA {rel(brec, lat['samples']):.2e}; without it {rel(plain, lat['samples']):.2e}")
    assert rel(rec, lat["samples"]) <= 1e-2 and rel(brec, lat["samples"]) <= 1e-4
    assert rel(plain, lat["samples"]) > 100 * rel(rec, lat["samples"])


def test_tiny_flux_config_gains_the_fields_newer_flux_params_require():
    """ComfyUI 0.38's FluxParams requires txt_ids_dims: the tiny Flux config passes it only where the dataclass has
    it (0.3.64's rejects unknown keywords)."""
    import dataclasses

    import comfy.ldm.flux.model as flux

    @dataclasses.dataclass
    class NewerFluxParams(flux.FluxParams):
        txt_ids_dims: list

    config = {k: v for k, v in hostlib.UNET_CONFIGS["flux"].items() if k != "image_model"}
    newer = hostlib._with_new_fields(NewerFluxParams, config, {"txt_ids_dims": []})
    assert NewerFluxParams(**newer).txt_ids_dims == []
    current = hostlib._with_new_fields(flux.FluxParams, config, {"txt_ids_dims": []})
    assert ("txt_ids_dims" in current) == ("txt_ids_dims" in {f.name for f in dataclasses.fields(flux.FluxParams)})
    flux.FluxParams(**current)


# ---------------------------------------------------------------- the README's support matrix (runs last here)
def test_readme_support_matrix_is_what_this_run_measured():
    """The README's matrix (scripts/support_matrix.py --write) has this run's rows, every cell with the pass mark
    this run gave it, and no cell failed. Digits are not compared: the last one may differ on another CPU."""
    sys.path.insert(0, str(hostlib.ROOT / "scripts"))
    import support_matrix
    if set(support_matrix.FAMILIES) - set(RESULTS):
        pytest.skip("part of this module was deselected: the matrix is checked on a full run of the module")
    data = {"comfyui": _comfyui_version(), "families": RESULTS}
    assert support_matrix.failed(data) == []
    readme = (hostlib.ROOT / "README.md").read_text()
    shown = readme.split(support_matrix.BEGIN, 1)[1].split(support_matrix.END, 1)[0]

    def marks(text):
        return [(line.split(" | ")[0], re.sub(r"[^✓✗—]", "", line)) for line in text.splitlines()
                if line.startswith(("| ", "- "))]
    assert marks(shown) == marks(support_matrix.render(data))
