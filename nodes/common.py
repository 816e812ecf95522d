"""What every node checks, said once: a model's facts (its frame, layout and family signature), the inputs
(latents, sigmas, widgets against their own declarations, finite results) and the schema pieces nodes share.
Opening a model and running inside its guider is ``host.py``; no mathematics lives here (that is ``..core``).
"""
import math
import numbers

import torch

import comfy.model_sampling

from ..core.fixed_point import PLAUSIBLE
from ..core.frame import schedule_fault

CATEGORY = "sampling/inversion suite"


def fail(node, name, expected, got=None):
    """A ValueError that names the node, the input and what was expected."""
    tail = "" if got is None else f", got {got}"
    raise ValueError(f"{node}: input '{name}' {expected}{tail}")


# ---------------------------------------------------------------- model facts
def sampling_type(model_sampling):
    """A model sampling's type as ComfyUI composes it (``ModelSampling(schedule, parameterisation)``)."""
    return "/".join(b.__name__ for b in type(model_sampling).__bases__)


def _probe_weights(model_sampling, sigma):
    """(latent weight, noise weight) of ``noise_scaling(σ, noise, latent)``, probed with unit tensors."""
    s, zero, one = torch.tensor([sigma]), torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    latent = float(model_sampling.noise_scaling(s, zero.clone(), one.clone()).flatten()[0])
    noise = float(model_sampling.noise_scaling(s, one.clone(), zero.clone()).flatten()[0])
    return latent, noise


def model_family(node, model_sampling):
    """'ve' or 'flow', decided by what the model sampling does with unit tensors, not by its class; else a clear error.

    've': ``noise_scaling`` adds σ·noise to the latent (ε and v models, EDM, Cosmos Predict2's RFlow). 'flow':
    (1 − σ)·latent + σ·s·noise for a constant noise scale s > 0 (SD3, Flux, 0.38's HiDream-O1 with s = 8). Refused,
    each with the reason: samplings whose unit noise scales to 0 (image-to-image samplings that add no noise), models
    whose denoised output ignores their input (x0 predictors such as Lotus), Stable Cascade's stages, anything else.
    """
    def refuse(reason):
        fail(node, "model", "must be an ε-, v-prediction or rectified-flow model",
             f"a model sampling of type {sampling_type(model_sampling)} ({reason})")
    if isinstance(model_sampling, getattr(comfy.model_sampling, "StableCascadeSampling", ())):
        refuse("Stable Cascade's stages: a prior over a compressed latent and a decoder conditioned on it, "
               "not an image model to invert")
    probes = [(sigma, *_probe_weights(model_sampling, sigma)) for sigma in (0.25, 0.5)]
    if all(abs(noise) < 1e-6 for _, _, noise in probes):
        refuse("its noise_scaling scales unit noise to 0: an image-to-image sampling that adds no noise, so there "
               "are no noisy states to invert")
    with torch.no_grad():
        x0 = model_sampling.calculate_denoised(torch.tensor([0.5]), torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1))
    if abs(float(x0.flatten()[0])) < 1e-6:
        refuse("it outputs the clean latent directly, ignoring its noisy input, as Lotus does: there is no "
               "trajectory to invert")

    def close(a, b):
        return abs(a - b) <= 1e-5 * max(1.0, abs(b))
    if all(close(latent, 1.0) and close(noise, sigma) for sigma, latent, noise in probes):
        return "ve"
    scale = probes[0][2] / probes[0][0]
    if scale > 0 and all(close(latent, 1.0 - sigma) and close(noise, sigma * scale) for sigma, latent, noise in probes):
        return "flow"
    refuse("its noise_scaling gives " + ", ".join(f"{latent:.4g}·latent + {noise:.4g}·noise at σ={sigma}"
                                                  for sigma, latent, noise in probes)
           + "; expected latent + σ·noise or (1 − σ)·latent + σ·s·noise")


def model_shape(node, name, samples, model):
    """A latent in the layout the model takes, as stock SamplerCustomAdvanced makes it: a 4-D [B, C, H, W] latent on a
    model with 3-D latents (video families, Qwen-Image) gets its time axis, [B, C, 1, H, W]
    (``comfy.sample.fix_empty_latent_channels``). Other layouts are refused before, by ``check_samples``."""
    dims = getattr(model.get_model_object("latent_format"), "latent_dimensions", 2)
    return samples.unsqueeze(2) if dims == 3 and samples.ndim == 4 else samples


def family_signature(model):
    """What identifies a model family for a stored inversion state (of a ModelPatcher, patch-aware, or a BaseModel)."""
    return f"{type(model_object(model, 'latent_format')).__name__}/{model_family('', model_object(model, 'model_sampling'))}"


# ---------------------------------------------------------------- validation
# One mechanism for every node: each widget, latent, schedule and model is checked here before any model call,
# and every state a node computes is checked for NaN/inf as it is produced (``check_finite_output``).

MAX_LATENT = 1e6  # VAE latents are O(1–10), states at σ_max up to a few σ_max (4096 for zero-SNR models); 1e30 overflows float32 inside the model


def model_object(model, name):
    """``name`` (latent_format, model_sampling…) of a ModelPatcher (patch-aware) or of a BaseModel."""
    getter = getattr(model, "get_model_object", None)
    return getter(name) if getter is not None else getattr(model, name)


def min_latent_size(model):
    """Smallest latent height/width the model runs on: a UNet halves it len(channel_mult) − 1 times and its
    GroupNorms need more than one value per channel at the deepest level (so at least 2×2 there); DiTs pad."""
    base = getattr(model, "model", model) if hasattr(model, "get_model_object") else model
    unet_config = getattr(getattr(base, "model_config", None), "unet_config", None) or {}
    mult = unet_config.get("channel_mult")
    return 2 ** (len(mult) - 1) + 1 if mult else 1


def check_samples(node, name, samples, model):
    """A latent tensor the model can run on: float, its dimensionality and channels, batch ≥ 1, large enough,
    finite and of VAE scale. Returned as float32 when it was float16/bfloat16."""
    if not torch.is_tensor(samples) or not samples.is_floating_point():
        fail(node, name, "must be a LATENT whose 'samples' is a floating-point tensor",
             f"dtype {samples.dtype}" if torch.is_tensor(samples) else type(samples).__name__)
    latent_format = model_object(model, "latent_format")
    channels, dims = latent_format.latent_channels, getattr(latent_format, "latent_dimensions", 2)
    layout = {1: "[B, C, L]", 2: "[B, C, H, W]", 3: "[B, C, T, H, W]"}.get(dims, f"{dims + 2}-D")
    ndims = (4, 5) if dims == 3 else (dims + 2,)  # video models also take an image latent, as stock samplers do
    if samples.ndim not in ndims or samples.shape[1] != channels:
        fail(node, name, f"must have {channels} channels and the layout {layout} for this model",
             f"shape {list(samples.shape)}")
    if samples.shape[0] < 1:
        fail(node, name, "must hold at least one image (batch ≥ 1)", f"shape {list(samples.shape)}")
    smallest = min_latent_size(model)
    if dims >= 2 and min(samples.shape[-2:]) < smallest:
        fail(node, name, f"must be at least {smallest}×{smallest} for this model (its UNet halves the latent "
                         f"{int(math.log2(smallest - 1))} times)", f"shape {list(samples.shape)}")
    if not torch.isfinite(samples).all():
        fail(node, name, "must be finite", "NaN or inf values")
    peak = float(samples.abs().max()) if samples.numel() else 0.0
    if peak > MAX_LATENT:
        fail(node, name, f"must hold VAE-scale values (|x| ≤ {MAX_LATENT:g})", f"max |x| = {peak:.3g}")
    return samples.float() if samples.dtype in (torch.float16, torch.bfloat16) else samples


def refuse_packed(node, name, samples):
    """Refuse a packed audio+video LATENT (ComfyUI 0.30+: Concat AV Latent makes its 'samples' a NestedTensor of the
    video and audio latents, for LTX-2 and MiniMax H3), which no node inverts yet, naming its parts."""
    if getattr(samples, "is_nested", False) and not torch.is_tensor(samples):
        parts = " and ".join(str(list(part.shape)) for part in samples.unbind())
        fail(node, name, "must be a single latent, not a packed audio+video latent (Concat AV Latent): the inversion "
                         "nodes do not take one yet; connect its video part (Separate AV Latent → video_latent) to "
                         "invert the video alone", f"a packed latent of parts {parts}")


def check_latent(node, name, latent, model):
    """A LATENT dict with a 'samples' tensor that ``check_samples`` accepts, and on which the model's own
    ``noise_scaling`` runs (what every node hands its result back through), before any model call; returns the
    samples."""
    samples = latent["samples"] if isinstance(latent, dict) and "samples" in latent else None
    refuse_packed(node, name, samples)
    if not torch.is_tensor(samples):
        fail(node, name, "must be a LATENT with a 'samples' tensor")
    samples = model_shape(node, name, check_samples(node, name, samples, model), model)
    model_sampling = model_object(model, "model_sampling")
    try:
        latent_weight(model_sampling, 0.5, samples.shape)
    except (IndexError, RuntimeError, TypeError, ValueError) as error:
        fail(node, name, f"must be a latent this model's sampling ({sampling_type(model_sampling)}) can noise",
             f"shape {list(samples.shape)}, on which its noise_scaling fails: {error}")
    return samples


def check_sigmas(node, sigmas, name="sigmas", direction=None):
    """Monotonic, finite, non-negative sigmas with at least one step; returned as float64 descending.

    ``direction`` ("descending"/"ascending") also requires that order.
    Integer sigmas are converted; bool and complex ones refused."""
    if not torch.is_tensor(sigmas) or sigmas.ndim != 1 or sigmas.numel() < 2:
        fail(node, name, "must hold at least two noise levels (one step) in a 1-D SIGMAS tensor",
             (f"{sigmas.numel()} level(s)" if sigmas.ndim == 1 else f"shape {list(sigmas.shape)}")
             if torch.is_tensor(sigmas) else type(sigmas).__name__)
    if sigmas.dtype == torch.bool or sigmas.is_complex():
        fail(node, name, "must hold real noise levels", f"dtype {sigmas.dtype}")
    s = sigmas.detach().cpu().double()  # (on the CPU first: MPS and DirectML have no float64)
    fault = schedule_fault(s.tolist(), None if direction is None else direction == "descending")
    hints = {"finite": ("must be finite and non-negative", s.tolist()),
             "monotonic": ("must be strictly monotonic (a scheduler's output, or FlipSigmas of one)", s.tolist()),
             "descending": ("must descend (a scheduler's output, not FlipSigmas of one)",
                            [round(float(v), 4) for v in s]),
             "ascending": ("must ascend (connect FlipSigmas between the scheduler and SamplerCustomAdvanced)",
                           [round(float(v), 4) for v in s])}
    if fault is not None:
        fail(node, name, *hints[fault])
    return s if s[0] > s[-1] else s.flip(0)


def check_range(node, name, value, lo, hi, lo_open=False, integer=False):
    """A finite number within [lo, hi] ((lo, hi] with ``lo_open``), a whole one for INT widgets; returned as
    int or float. bool, None, strings, NaN, ±inf and fractional ints are refused."""
    kind = "a whole number" if integer else "a number"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        fail(node, name, f"must be {kind}", repr(value))
    v = float(value)
    if not math.isfinite(v):
        fail(node, name, f"must be {kind} (finite)", value)
    if integer:
        if v != math.floor(v):
            fail(node, name, "must be a whole number", value)
        value = int(value) if isinstance(value, numbers.Integral) else int(v)
    else:
        value = v
    ok = (value > lo if lo_open else value >= lo) and value <= hi
    if not ok:
        fail(node, name, f"must be in {'(' if lo_open else '['}{lo}, {hi}]", value)
    return value


def check_choice(node, name, value, options):
    """One of a COMBO's options."""
    if not isinstance(value, str) or value not in options:
        fail(node, name, f"must be one of {list(options)}", repr(value))
    return value


def check_bool(node, name, value):
    if not isinstance(value, bool):
        fail(node, name, "must be true or false", repr(value))
    return value


def widgets(node_class, values):
    """The widget values among ``values`` (a node's ``execute`` arguments), each checked against its own declaration
    in the node's schema (one rule, said once): INT and FLOAT within their declared min/max (INT whole), COMBO one of
    its options, BOOLEAN a bool, STRING a str. Returned converted (INT widgets as int), keyed by input name."""
    schema = node_class.define_schema()
    node = schema.node_id.replace("InversionSuite_", "")
    out = {}
    for widget in schema.inputs:
        name = widget.id
        if name not in values or (values[name] is None and getattr(widget, "optional", False)):
            continue
        value, kind = values[name], str(widget.get_io_type())
        if kind in ("INT", "FLOAT"):
            out[name] = check_range(node, name, value, widget.min, widget.max, integer=kind == "INT")
        elif kind == "COMBO":
            out[name] = check_choice(node, name, value, widget.options)
        elif kind == "BOOLEAN":
            out[name] = check_bool(node, name, value)
        elif kind == "STRING":
            if not isinstance(value, str):
                fail(node, name, "must be a string", type(value).__name__)
            out[name] = value
    return out


def check_finite_output(node, step, x, culprits="'latent', 'cfg' and 'sigmas'"):
    """Raise a ValueError naming the node and the step when ``x`` holds NaN or inf: never hand one downstream."""
    if torch.is_tensor(x) and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{node}: {step} is not finite (NaN or inf): the model diverged on these inputs; "
                         f"check the inputs {culprits}")
    return x


def all_finite(*tensors):
    """Whether the tensors given (anything else is skipped) hold only finite values, from their sum, read by the host
    once for all (a NaN or inf anywhere makes it NaN or inf; a sum that overflows only sends the caller to its exact
    check)."""
    sums = [t.sum() for t in tensors if torch.is_tensor(t)]
    return not sums or math.isfinite(float(sum(sums)))


def checked_callback(node, callback, total, culprits="'latent', 'cfg' and 'sigmas'"):
    """A core callback that first checks the step's state and prediction (``check_finite_output``; one read by the
    host per step while they are finite, none where the core already knows them ``finite``) and stops where a
    fixed-point step ran away (``runaway``, core.invert_fixed_point)."""
    def cb(d):
        if d.get("runaway") or not (d.get("finite") or all_finite(d.get("x"), d.get("denoised"))):
            where = f"the state at step {d['i'] + 1} of {total}"
            if d.get("sigma") is not None:
                where += f" (σ={float(d['sigma']):.4g})"
            check_finite_output(node, where, d.get("x"), culprits)
            check_finite_output(node, where.replace("the state", "the model's prediction"), d.get("denoised"), culprits)
            if d.get("runaway"):
                raise ValueError(f"{node}: {where} ran away on image(s) {d['runaway']}: beyond {PLAUSIBLE:g} times the "
                                 f"scale of a state at that σ, a state no sampler regenerates from. The model's fixed "
                                 f"point is not a state of natural scale (a model whose prediction barely depends on its "
                                 f"input, such as an untrained x̂₀ predictor); BDIA Invert inverts exactly without a "
                                 f"fixed point")
        if callback is not None:
            callback(d)
    return cb


def sigma_tensor(s):
    """σ as the float32 scalar tensor ComfyUI's model_sampling methods take."""
    return torch.tensor(float(s), dtype=torch.float32)


def latent_weight(model_sampling, sigma, shape=(1, 1, 1, 1)):
    """The weight of the latent in ``noise_scaling(σ, 0, L)`` (1 for ε/v models, 1 − σ for flow); 1 where it
    vanishes (flow at σ = 1), where the raw state is stored instead. Probed on one image of the latent's ``shape``:
    a sampling may read the latent's size (0.38's SenseNova scales its noise by the resolution)."""
    one = (1,) + tuple(shape[1:])
    weight = float(model_sampling.noise_scaling(sigma_tensor(sigma), torch.zeros(one), torch.ones(one)).flatten()[0])
    return weight if weight > 1e-6 else 1.0


# ---------------------------------------------------------------- schema pieces shared by nodes
def conditioning_inputs(io):
    """model, positive, negative, cfg and an optional GUIDER that overrides them."""
    return [
        io.Model.Input("model", tooltip="The diffusion model (SD1.x/SDXL ε or v prediction, SD3, Flux)."),
        io.Conditioning.Input("positive", optional=True,
                              tooltip="Prompt conditioning the model is driven with (the source prompt when inverting)."),
        io.Conditioning.Input("negative", optional=True, tooltip="Negative conditioning; needed only for cfg above 1."),
        io.Float.Input("cfg", default=1.0, min=0.0, max=100.0, step=0.1, round=0.01,
                       tooltip="Classifier-free guidance scale. 1 = no CFG (one pass per model call; Flux guidance "
                               "comes from the conditioning)."),
        io.Guider.Input("guider", optional=True,
                        tooltip="Optional stock GUIDER (CFGGuider, BasicGuider, DualCFGGuider…); when connected it "
                                "replaces positive/negative/cfg and its model is used."),
    ]


SIGMA_MIN, SIGMA_MAX = 0.01, 14.6  # the σ widget's range: up to SD1.x/SDXL's σ_max (14.61); flow models stop at 1
SIGMA_MODES = ["absolute", "fraction of schedule"]


def sigma_inputs(io, tooltip):
    """A fixed noise level σ and how it is given (absolute, or as a fraction of the model's schedule)."""
    return [
        io.Float.Input("sigma", default=0.40, min=SIGMA_MIN, max=SIGMA_MAX, step=0.01,
                       tooltip=tooltip + " At most the model's σ_max: 1 for flow models (SD3, Flux), about 14.6 for "
                                         "SD1.x/SDXL. In 'fraction of schedule' mode at most 1."),
        io.Combo.Input("sigma_mode", options=SIGMA_MODES, default="absolute",
                       tooltip="absolute: σ as given. fraction of schedule: σ is the noise level that far along the "
                               "model's own schedule from clean (0) to pure noise (1), shift included."),
    ]


def tolerance_input(io, default):
    return io.Float.Input("tolerance", default=default, min=1e-12, max=1.0, step=1e-7, round=False,
                          tooltip="Stop a step's iteration when the convergence criterion (relative RMS) falls below this.")
