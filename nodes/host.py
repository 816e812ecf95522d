"""Every difference between the ComfyUI versions the pack runs on, in one module.

Run by the test suite on two real hosts, ComfyUI 0.3.64 (2025-10) and 0.30.0 (mid-2026); 0.38.x/0.39.x only read from
source (the README's "ComfyUI versions"). Each entry names the versions it serves; the next ComfyUI release is this
file to read. The second half is what every node uses to open its model (``open_model``).

==========================================  ====================================  ===================================
difference                                  versions                              here
==========================================  ====================================  ===================================
node API module                             ``comfy_api.v0_0_2`` 0.3.64–0.38,     ``io``, ``ComfyExtension``
                                            ``comfy_api.latest`` where it is gone
``control_after_generate`` of a seed        enum ``ControlAfterGenerate`` 0.30+;  ``seed_control(io)``
                                            a boolean in 0.3.64
``comfy.model_management.in_training``      0.30+ (model code takes its           ``training()``
                                            plain-torch branch while it is set);
                                            absent in 0.3.64
fused comfy-kitchen kernels, no autograd    0.30+; Cosmos Predict2 and Anima      ``training()`` runs them through
                                            call ``rms_rope_split_half`` whatever comfy-kitchen's eager backend
                                            ``in_training`` says (0.30, 0.38)
Dynamic VRAM (``ModelPatcherDynamic``)      0.30+ (default on GPUs in 0.38;       ``non_dynamic(patcher)``
                                            off with ``--cpu``)
params dataclasses with new fields          0.30+: Flux ``txt_ids_dims``, Chroma  ``complete_params(cls, config)``
without defaults                            ``vec_in_dim``, HunyuanVideo          (tiny models of the tests and the
                                            ``use_cond_type_embedding``, …        benchmark)
single attention-override slot              0.38 ``set_model_optimized_attention`` ``nodes/attention.py`` refuses a
                                            replaces the slot without chaining    replaced override
==========================================  ====================================  ===================================
"""
import contextlib
import dataclasses
import inspect
import math

import torch
from torch.overrides import TorchFunctionMode

import comfy.model_management
import comfy.samplers
import comfy.utils
import latent_preview

from ..core.frame import precise_dtype
from .common import (check_finite_output, check_latent, checked_callback, fail, latent_weight, model_family,
                     refuse_packed, sigma_tensor)

try:
    from comfy_api.v0_0_2 import ComfyExtension, io
except ImportError:  # pragma: no cover - exercised by a test that hides v0_0_2
    from comfy_api.latest import ComfyExtension, io

__all__ = ["ComfyExtension", "io", "seed_input", "seed_control", "training", "non_dynamic", "complete_params",
           "DYNAMIC_VRAM_FLAG", "open_model", "Opened", "Ran", "BATCH_ROWS", "CoreSampler", "InvertedNoise"]

DYNAMIC_VRAM_FLAG = "--disable-dynamic-vram"
_ABSENT = object()


# ---------------------------------------------------------------- node API
def seed_input(io_module, tooltip):
    """An INT `seed` whose control_after_generate widget is declared and starts at `fixed` where the API can say so
    (``seed_control``): the frontend gives every INT named `seed` that control, defaulting to randomize, which
    makes a saved workflow irreproducible and re-runs the node on every queue."""
    return io_module.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, control_after_generate=seed_control(io_module),
                               tooltip=tooltip + " Keep the control after generate at 'fixed' for reproducible results.")


def seed_control(io_module=None):
    """The ``control_after_generate`` a seed declares: ``fixed`` where the API has the ControlAfterGenerate enum
    (0.30+), else ``True`` (0.3.64 takes only a boolean; the bundled workflows then store ``fixed``)."""
    modes = getattr(io_module or io, "ControlAfterGenerate", None)
    return modes.fixed if modes is not None else True


# ---------------------------------------------------------------- gradients through model code
def _eager_twin(func):
    """comfy-kitchen's plain-torch implementation of one of its fused ops (``torch.ops.comfy_kitchen.*``), or None."""
    packet = getattr(func, "overloadpacket", func)
    name = getattr(packet, "_qualified_op_name", "")
    if not name.startswith("comfy_kitchen::"):
        return None
    try:
        import comfy_kitchen.backends.eager as eager
    except ImportError:  # pragma: no cover - the op exists only where comfy-kitchen is installed
        return None
    return getattr(eager, name.split("::", 1)[1], None)


class _UnfusedKernels(TorchFunctionMode):
    """Sends every call of a comfy-kitchen fused op to the same op of comfy-kitchen's eager backend (plain torch,
    the same formula), through which autograd differentiates; every other call passes unchanged. Active only inside
    ``training()``: a plain forward anywhere else computes what ComfyUI computes."""

    def __torch_function__(self, func, types_, args=(), kwargs=None):
        kwargs = kwargs or {}
        twin = _eager_twin(func)
        return (twin or func)(*args, **kwargs)


@contextlib.contextmanager
def training():
    """Forward and backward passes the pack differentiates through, on every host.

    * ``comfy.model_management.in_training = True`` (0.30+), then the previous value again, also on errors; 0.3.64
      has no such flag, so there it is absent again afterwards. Flux, Chroma, Lumina 2, HiDream, Qwen-Image, Wan and
      LTX-Video then skip their fused kernels.
    * comfy-kitchen's fused ops (no autograd formula) that model code calls whatever the flag says (Cosmos
      Predict2's and Anima's ``rms_rope_split_half``, 0.30 and 0.38) run through comfy-kitchen's eager backend.
    """
    mm = comfy.model_management
    previous = getattr(mm, "in_training", _ABSENT)
    mm.in_training = True
    try:
        with _UnfusedKernels():
            yield
    finally:
        if previous is _ABSENT:
            del mm.in_training
        else:
            mm.in_training = previous


def _is_dynamic(patcher):
    return bool(getattr(patcher, "is_dynamic", lambda: False)())


def non_dynamic(patcher, fail):
    """A clone of ``patcher`` that is not a Dynamic VRAM patcher (gradients need weights cast to fresh copies).

    * 0.30+, dynamic: ``get_non_dynamic_delegate()``, which loads the non-dynamic copy once and caches it on the
      patcher (0.38 loads it from disk otherwise, on every run); else ``clone(disable_dynamic=True)``;
    * otherwise (0.3.64, ``--cpu``, a non-dynamic patcher): a plain ``clone()``.
    A model that stays dynamic is refused through ``fail(expected, got)`` naming ComfyUI's flag to turn Dynamic VRAM
    off."""
    hint = (f"is a Dynamic VRAM model that could not be cloned without Dynamic VRAM for gradients: start ComfyUI "
            f"with {DYNAMIC_VRAM_FLAG}")
    if not _is_dynamic(patcher):
        p = patcher.clone()
    else:
        try:
            if callable(getattr(patcher, "get_non_dynamic_delegate", None)):
                p = patcher.get_non_dynamic_delegate()
            elif "disable_dynamic" in inspect.signature(patcher.clone).parameters:
                p = patcher.clone(disable_dynamic=True)
            else:
                p = patcher.clone()
        except RuntimeError as error:
            fail(hint, f"'{error}'")
    if _is_dynamic(p):
        fail(hint, None)
    return p


# ---------------------------------------------------------------- model construction (tests, benchmark)
def _plain_value(annotation):
    """The value ComfyUI's model detection gives a plain checkpoint for a field an older ComfyUI did not have (0.30's
    model_detection.py: ``vec_in_dim``/``vision_in_dim`` None, ``use_cond_type_embedding``/``meanflow_sum`` False,
    ``txt_ids_dims`` []): off for a flag, empty for a list, absent (None) for anything else."""
    name = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", "")
    return False if name == "bool" else [] if name.lower().startswith("list") else None


def complete_params(params_class, config):
    """``config`` plus every field the running ComfyUI's params dataclass requires (no default) that ``config``
    lacks, with the value a plain checkpoint's detected config gives it (``_plain_value``); nothing is added where
    the class is not a dataclass or already has the field."""
    if not dataclasses.is_dataclass(params_class):
        return dict(config)
    missing = {f.name: _plain_value(f.type) for f in dataclasses.fields(params_class)
               if f.name not in config and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING}
    return {**config, **missing}


# ---------------------------------------------------------------- opening an inversion (every node)
# transformer_options key: (held, used) of the current model call (core.invert_fixed_point's on_call), so that hooks
# (Attention Edit: Record) know which images a shrunk call holds
BATCH_ROWS = "inversion_suite_batch_rows"


def make_guider(node, model, positive=None, negative=None, cfg=1.0, guider=None):
    """The connected GUIDER, or a stock CFGGuider (plain positive-only guider when there is no negative)."""
    if guider is not None:
        if not (hasattr(guider, "model_patcher") and callable(getattr(guider, "sample", None))):
            fail(node, "guider", "must be a GUIDER (CFGGuider, BasicGuider…)", type(guider).__name__)
        return guider
    if model is None:
        fail(node, "model", "is required when no guider is connected")
    if not hasattr(model, "get_model_object"):
        fail(node, "model", "must be a MODEL (a loader's output)", type(model).__name__)
    for name, cond in (("positive", positive), ("negative", negative)):
        if cond is not None and not (isinstance(cond, list) and cond and all(
                isinstance(c, (list, tuple)) and len(c) == 2 and torch.is_tensor(c[0]) and isinstance(c[1], dict)
                for c in cond)):
            fail(node, name, "must be a CONDITIONING (a text encoder's output)", type(cond).__name__)
    if positive is None:
        fail(node, "positive", "is required when no guider is connected")
    g = comfy.samplers.CFGGuider(model)
    if negative is None:
        if cfg != 1.0:
            fail(node, "negative", f"is required for cfg {cfg} (cfg above 1 mixes positive and negative)")
        g.inner_set_conds({"positive": positive})
    else:
        g.set_conds(positive, negative)
    g.set_cfg(cfg)
    return g


def unit_roundoff(model):
    """The unit roundoff of the arithmetic the comfy BaseModel inside ``model`` (reached through ``inner_model``: a
    guider, a sampler's model wrapper) computes in: its manual-cast dtype where its weights are stored in another
    (fp8), else its weights' dtype. 2⁻²⁴ for float32, 2⁻¹¹ float16, 2⁻⁸ bfloat16; 0 where there is no BaseModel."""
    while not hasattr(model, "get_dtype") and hasattr(model, "inner_model"):
        model = model.inner_model
    if not hasattr(model, "get_dtype"):
        return 0.0
    dtype = getattr(model, "manual_cast_dtype", None) or model.get_dtype()
    return torch.finfo(dtype).eps / 2 if dtype.is_floating_point else 0.0


def wrap_denoiser(model_wrap, dtype=torch.float32, counter=None):
    """The guider as a core ``model(x, sigma)``: casts to the model's dtype, counts calls, honours Cancel. Its
    ``precision`` is the unit roundoff of the model's arithmetic (``unit_roundoff``)."""
    def model(x, sigma, **extra_args):
        comfy.model_management.throw_exception_if_processing_interrupted()
        if counter is not None:
            counter["calls"] += 1
        return model_wrap(x.to(dtype), sigma.to(dtype), **extra_args).to(x.dtype)
    model.precision = unit_roundoff(model_wrap)
    return model


def core_callback(callback, total, node=None):
    """Core callbacks ({'i', 'x', 'denoised'}) to ComfyUI's (step, x0, x, total) preview callback; with ``node``
    every step's state is first checked for NaN/inf (``checked_callback``)."""
    preview = None if callback is None else (lambda d: callback(d["i"], d["denoised"].float(), d["x"].float(), total))
    return preview if node is None else checked_callback(node, preview, total)


class CoreSampler(comfy.samplers.Sampler):
    """A comfy Sampler that hands the guider to ``run(model, x, sigmas, extra_args, callback)``.

    It starts from the (process_latent_in'd) latent as it is and returns the model-space state as it is:
    no noise_scaling, no inverse_noise_scaling (which is inf for flow models at σ = 1). Extra results
    of ``run`` are left in the caller's closure.
    """

    def __init__(self, run, total=None, node=None):
        self.run, self.total, self.counter, self.node = run, total, {"calls": 0}, node

    def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None, denoise_mask=None,
               disable_pbar=False):
        self.guider, self.base_model = model_wrap, model_wrap.inner_model
        model = wrap_denoiser(model_wrap, counter=self.counter)
        precise = precise_dtype(latent_image.device)  # float64, or float32 on a device without it (MPS, DirectML)
        x = self.run(model, latent_image.to(precise), sigmas.to(precise), extra_args,
                     core_callback(callback, self.total or len(sigmas) - 1, self.node))
        if self.node is not None:
            check_finite_output(self.node, "the final state", x)
        self.state = x
        return x.float()


def run_in_guider(guider, samples, sigmas, run, total=None, node=None):
    """Run ``run`` through ``guider.sample`` (model loading, conds, CFG, patches) on a copy of ``samples``.

    Returns ``(latent_out, sampler)``: ``process_latent_out`` of the final state, and the CoreSampler
    holding the model-space state (``.state``) and the model-call count. ``total`` is the progress-bar length
    (default: the number of steps). With ``node`` every step's state and the result are checked for NaN/inf.
    """
    sampler = CoreSampler(run, total, node)
    callback = latent_preview.prepare_callback(guider.model_patcher, total or len(sigmas) - 1)
    out = guider.sample(torch.zeros_like(samples), samples.clone(), sampler, sigmas.float(), callback=callback,
                        disable_pbar=not comfy.utils.PROGRESS_BAR_ENABLED, seed=0)
    return out.to(comfy.model_management.intermediate_device()), sampler



def state_to_latent(model_sampling, process_out, x, sigma):
    """A LATENT that stock samplers with DisableNoise start from at ``sigma`` (solves noise_scaling(σ, 0, L) = x).

    Where that is impossible (flow models at σ = 1, where the latent's weight is 0) the raw state is returned;
    use the NOISE output there.
    """
    return process_out(x.float().cpu() / latent_weight(model_sampling, sigma, x.shape))


class InvertedNoise:
    """A NOISE that makes any stock sampler start exactly at an inverted state ``x`` at level ``sigma``.

    ``generate_noise`` solves ``noise_scaling(σ, n, L_in) = x`` for ``n`` given the LATENT that is
    connected at regeneration time (an empty latent is fine), with KSAMPLER's max_denoise rule.
    """

    def __init__(self, node, x, sigma, model_sampling, process_in, seed=0):
        self.node, self.x, self.sigma = node, x.float().cpu(), float(sigma)
        self.model_sampling, self.process_in, self.seed = model_sampling, process_in, seed

    def generate_noise(self, input_latent):
        latent = input_latent["samples"]
        refuse_packed(self.node, "latent_image (of the sampler using this NOISE)", latent)
        if tuple(latent.shape) != tuple(self.x.shape):
            fail(self.node, "latent_image (of the sampler using this NOISE)",
                 f"must have the inverted shape {list(self.x.shape)}", f"shape {list(latent.shape)}")
        ms, s = self.model_sampling, sigma_tensor(self.sigma)
        latent_in = self.process_in(latent.float()) if torch.count_nonzero(latent) > 0 else torch.zeros_like(self.x)
        smax = float(ms.sigma_max)
        max_denoise = math.isclose(smax, self.sigma, rel_tol=1e-5) or self.sigma > smax
        offset = ms.noise_scaling(s, torch.zeros_like(self.x), latent_in.clone(), max_denoise)
        unit = ms.noise_scaling(s, torch.ones_like(self.x), torch.zeros_like(self.x), max_denoise)
        return (self.x - offset) / unit



def output_latent(latent, samples):
    """Copy a LATENT dict and replace its samples, so unknown keys survive."""
    out = latent.copy()
    out["samples"] = samples
    out.pop("noise_mask", None)
    return out




class Ran:
    """What a core run inside the guider gave: the final model-space ``state``, the run's ``info`` (what the core
    function returned beside the state) and the number of model ``calls``."""

    def __init__(self, state, info, calls):
        self.state, self.info, self.calls = state, info, calls


class Opened:
    """A node's connection to its model: the guider (the connected GUIDER, or a stock CFGGuider built from model,
    positive, negative and cfg), the model's facts (``model_sampling``; ``frame``, 've' or 'flow') and the checks,
    conversions and hand-overs every node shares. Made by :func:`open_model`; nothing here is method-specific."""

    def __init__(self, node, guider):
        self.node, self.guider = node, guider
        self.patcher = guider.model_patcher
        self.model_sampling = self.patcher.get_model_object("model_sampling")
        self.frame = model_family(node, self.model_sampling)
        self.flow = self.frame == "flow"

    def latent(self, name, latent, like=None, like_name="the latent"):
        """The checked samples of a LATENT input in the model's layout; with ``like``, also of that shape."""
        samples = check_latent(self.node, name, latent, self.patcher)
        if like is not None and tuple(samples.shape) != tuple(like.shape):
            fail(self.node, name, f"must have the same shape as {like_name} {list(like.shape)}", list(samples.shape))
        return samples

    def run(self, fn, start, sigmas, total=None, guider=None):
        """``fn(model, x, sigmas, extra_args, callback)`` inside the guider (model loading, conds, CFG, patches,
        previews, Cancel), from ``start`` (LATENT space) along ``sigmas``. ``fn`` returns the final state, or
        ``(state, info)``. Every step's state and the final state are checked for NaN/inf."""
        found = {}

        def run(model, x, s, extra_args, callback):
            result = fn(model, x, s, extra_args, callback)
            state, found["info"] = result if isinstance(result, tuple) else (result, None)
            return state
        _, sampler = run_in_guider(guider or self.guider, start, sigmas, run, total=total, node=self.node)
        return Ran(sampler.state, found["info"], sampler.counter["calls"])

    def fixed_sigma(self, sigma, sigma_mode):
        """The absolute σ of a σ widget (its declared range already checked), in (0, σ_max] of this model; in
        'fraction of schedule' mode at most 1, and 1 is σ_max."""
        smax = float(self.model_sampling.sigma_max)
        if sigma_mode == "fraction of schedule":
            if sigma > 1.0:
                fail(self.node, "sigma", "must be at most 1 in 'fraction of schedule' mode", sigma)
            sigma = min(float(self.model_sampling.percent_to_sigma(1.0 - sigma)), smax)
        if not 0 < sigma <= smax:
            fail(self.node, "sigma", f"must be at most σ_max = {smax:.4g} for this model", sigma)
        return sigma

    def process_in(self, samples):
        return self.patcher.get_model_object("process_latent_in")(samples)

    def clean(self, like, x):
        """A LATENT like the input ``like`` (its other keys kept) holding the clean model-space latent ``x``."""
        return output_latent(like, self.patcher.get_model_object("process_latent_out")(x.float().cpu()))

    def noisy(self, like, state, sigma):
        """A LATENT like ``like`` holding ``state``, as a stock sampler with DisableNoise starts from it at σ."""
        return output_latent(like, state_to_latent(self.model_sampling,
                                                   self.patcher.get_model_object("process_latent_out"), state, sigma))

    def noise(self, state, sigma, seed=0):
        """A NOISE that starts any stock sampler exactly at ``state`` at level ``sigma``."""
        return InvertedNoise(self.node, state, sigma, self.model_sampling,
                             self.patcher.get_model_object("process_latent_in"), seed=seed)


def open_model(node, model=None, positive=None, negative=None, cfg=1.0, guider=None):
    """What every node that drives a model starts with: the guider (checked) and the model's facts; a model the
    pack cannot invert is refused here, before any model call."""
    return Opened(node, make_guider(node, model, positive, negative, cfg, guider))
