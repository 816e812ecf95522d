"""BDIASampler and BDIAInvert: thin adapters over core.sample_bdia / invert_bdia (and O-BELM)."""
import comfy.samplers

from .. import core
from .common import (CATEGORY, check_finite_output, check_samples, check_sigmas, checked_callback,
                     conditioning_inputs, fail, family_signature, model_family, widgets)
from .host import io, open_model, wrap_denoiser
from .plot import report_ui

METHODS = ["bdia", "o-belm"]
BDIAState = io.Custom("BDIA_INVERSION")


class BDIAInversion:
    """The pair of consecutive latents an exact inversion hands to the sampler, with what it was made for."""

    def __init__(self, method, gamma, signature, sigmas, x_top, x_below):
        self.method, self.gamma, self.signature, self.sigmas = method, gamma, signature, sigmas
        self.x_top, self.x_below = x_top.cpu().double(), x_below.cpu().double()


GAMMA_MIN_INVERT = 0.01  # the inverse divides by γ: BDIA Invert's γ widget starts here


def method_inputs(invert=False):
    return [
        io.Combo.Input("method", options=METHODS, default="bdia",
                       tooltip="bdia: BDIA (ECCV 2024) with γ. o-belm: O-BELM (NeurIPS 2024), second order, no γ. "
                               "Both take one model call per step and invert exactly."),
        io.Float.Input("gamma", default=0.96, min=GAMMA_MIN_INVERT if invert else 0.0, max=1.0, step=0.01,
                       tooltip="BDIA's γ: 0 = plain DDIM, 1 = leapfrog. Inversion needs γ in [0.01, 1]; the inverse "
                               "amplifies rounding by about 1/γ per step, so keep 0.9–1 for editing."),
    ]


def _run_core(sample, model, x, sigmas, extra_args, callback, disable, method, gamma, flow, **kw):
    fn = {"bdia": (core.sample_bdia, core.invert_bdia), "o-belm": (core.sample_obelm, core.invert_obelm)}[method]
    options = {"gamma": gamma, "flow": flow} if method == "bdia" else {}
    return fn[0 if sample else 1](model, x, sigmas, extra_args, callback, disable, **options, **kw)


def check_inversion(node, inversion, signature, sigmas, x, method, gamma):
    if inversion.signature != signature:
        fail(node, "inversion", f"was made with a {inversion.signature} model; this model is {signature}")
    if len(sigmas) != len(inversion.sigmas) or not bool(
            (sigmas.cpu().double() - inversion.sigmas).abs().le(1e-5 * inversion.sigmas.abs() + 1e-7).all()):
        fail(node, "inversion", "must be used with the sigmas it was inverted on",
             f"{len(sigmas) - 1} steps from σ={float(sigmas[0]):.4g} vs {len(inversion.sigmas) - 1} from "
             f"σ={float(inversion.sigmas[0]):.4g}")
    if tuple(x.shape) != tuple(inversion.x_top.shape):
        fail(node, "inversion", f"holds latents of shape {list(inversion.x_top.shape)}", f"a latent of {list(x.shape)}")
    if method != inversion.method or (method == "bdia" and gamma != inversion.gamma):
        fail(node, "gamma/method", f"must match the inversion ({inversion.method}, γ={inversion.gamma})",
             f"{method}, γ={gamma}")
    if float(core.rel_rms(x, inversion.x_top.to(x.device, core.frame.precise_dtype(x.device))).max()) > 1e-3:
        fail(node, "noise", "must be the NOISE output of the same BDIAInvert (the start state differs from the "
                            "inverted one)")


def sample_fn(model, x, sigmas, extra_args=None, callback=None, disable=None, method="bdia", gamma=0.96,
              inversion=None):
    """KSAMPLER function: BDIA / O-BELM sampling, starting from an inversion's pair when one is connected."""
    node = "BDIASampler"
    base = model.inner_model.inner_model
    # the same checks as BDIA Invert, on what SamplerCustomAdvanced hands over, before any model call
    flow = model_family(node, base.model_sampling) == "flow"
    check_sigmas(node, sigmas, direction="descending")
    # with an inversion connected its pair replaces x (check_inversion: x is its top state, which the model never
    # evaluates); O-BELM's top state on a zero-SNR model (CogVideoX) is ~σ_max² ≈ 3e7, past check_samples' VAE bound
    if inversion is None:
        check_samples(node, "latent_image (of SamplerCustomAdvanced)", x, base)
    # the recurrence's state: float64, or a double-float pair on a device without it (MPS, DirectML)
    start, x_below = core.bdia.precise_state(x), None
    if inversion is not None:
        check_inversion(node, inversion, family_signature(base), sigmas, x, method, gamma)
        start = core.bdia.state_on(inversion.x_top, x.device)
        x_below = core.bdia.state_on(inversion.x_below, x.device)
    preview = None if callback is None else (
        lambda d: callback({**d, "x": d["x"].float(), "denoised": d["denoised"].float()}))
    cb = checked_callback(node, preview, len(sigmas) - 1, "'gamma' and SamplerCustomAdvanced's 'sigmas' and latent")
    precise = core.frame.precise_dtype(x.device)
    out = core.bdia.rounded(_run_core(True, wrap_denoiser(model), start, sigmas.to(precise), extra_args, cb, disable,
                                      method, gamma, flow, x_below=x_below))
    check_finite_output(node, "the final state", out, "'gamma' and SamplerCustomAdvanced's 'sigmas' and latent")
    return out


class BDIASampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_BDIASampler", display_name="BDIA Sampler", category=CATEGORY,
            description="An exactly invertible SAMPLER (one model call per step) for SamplerCustomAdvanced with any "
                        "guider. Alone it generates (text-to-image, img2img). With a BDIA Invert connected it starts "
                        "from the inverted pair of latents and regenerates the image exactly with the same prompt, "
                        "or edits it with another.",
            inputs=method_inputs() + [
                BDIAState.Input("inversion", optional=True,
                                tooltip="From BDIA Invert: connect its NOISE to SamplerCustomAdvanced and use the "
                                        "same sigmas, method and γ."),
            ],
            outputs=[io.Sampler.Output()])

    @classmethod
    def execute(cls, method, gamma, inversion=None) -> io.NodeOutput:
        options = widgets(cls, locals())
        if inversion is not None and not isinstance(inversion, BDIAInversion):
            fail("BDIASampler", "inversion", "must be the 'inversion' output of BDIA Invert", type(inversion).__name__)
        return io.NodeOutput(comfy.samplers.KSAMPLER(sample_fn, extra_options={**options, "inversion": inversion}))


class BDIAInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_BDIAInvert", display_name="BDIA Invert", category=CATEGORY,
            description="Exact inversion for the BDIA Sampler: runs BDIA (or O-BELM) backwards from the image latent, "
                        "one model call per step, and hands over the pair of latents the sampler needs. Regenerate "
                        "with SamplerCustomAdvanced(noise = this NOISE, sampler = BDIA Sampler with this inversion, "
                        "the same sigmas).",
            inputs=conditioning_inputs(io) + [
                io.Latent.Input("latent", tooltip="The image latent to invert (batches allowed)."),
                io.Sigmas.Input("sigmas", tooltip="The schedule you will regenerate with (any stock scheduler, "
                                                  "descending; a partial schedule inverts partially)."),
            ] + method_inputs(invert=True),
            outputs=[
                io.Noise.Output(display_name="noise", tooltip="Starts SamplerCustomAdvanced at the inverted state."),
                BDIAState.Output(display_name="inversion", tooltip="Connect to BDIA Sampler's inversion input."),
                io.Latent.Output(display_name="inverted_latent", tooltip="The inverted state as a LATENT (for "
                                                                          "inspection or DisableNoise workflows)."),
                io.String.Output(display_name="report", tooltip="Model calls used."),
            ])

    @classmethod
    def execute(cls, model, latent, sigmas, method, gamma, cfg=1.0, positive=None, negative=None,
                guider=None) -> io.NodeOutput:
        options = widgets(cls, locals())
        method, gamma = options["method"], options["gamma"]
        opened = open_model("BDIAInvert", model, positive, negative, options["cfg"], guider)
        samples, descending = opened.latent("latent", latent), check_sigmas("BDIAInvert", sigmas)

        def run(model_fn, x, s, extra_args, callback):
            # from the precise state, so that a device without float64 hands its double-float pair back whole
            top, below = _run_core(False, model_fn, core.bdia.precise_state(x), s, extra_args, callback, True, method,
                                   gamma, opened.flow)
            return core.bdia.rounded(top, x.dtype), (core.bdia.state_value(top), core.bdia.state_value(below))
        ran = opened.run(run, samples, descending.flip(0))
        top, below = ran.info
        check_finite_output("BDIAInvert", "the inverted pair", below)
        sigma_top = float(descending[0])
        inversion = BDIAInversion(method, gamma, family_signature(opened.patcher), descending, top, below)
        text = (f"BDIAInvert: {method}{'' if method != 'bdia' else f' γ={gamma}'}, {len(descending) - 1} steps, "
                f"{ran.calls} model calls")
        return io.NodeOutput(opened.noise(ran.state, sigma_top), inversion, opened.noisy(latent, ran.state, sigma_top),
                             text, ui=report_ui(text))
