"""What Record stores and Inject reads: the attention record, the inject plan, the per-run edit configuration and the
per-call state."""
import weakref

import torch

from ...core import attention as A
from ...core import mask as M
from ..common import fail, family_signature
from ..host import BATCH_ROWS
from .constants import CONFIG, INJECT, RECORD
from .layers import layer_name

AUTO_DEVICE_BYTES = 512 * 2 ** 20  # 'auto' keeps this much on the compute device, the rest on the offload device


class AttentionRecord:
    """The source's attention, filled by a run of the Record node's MODEL and read by the Inject node's.

    Entries are keyed ``(what, layer, step)`` with ``what`` in 'self' (UNet attn1 (q, k)), 'self_v' (UNet attn1 v,
    for the background of a masked edit), 'cross' (UNet attn2 maps), 'v', 'k' (DiT image rows), 'denoised' (the
    source's prediction, every step). ``source_latent`` is the source's clean latent: the input of a recording
    inversion (which starts at σ = 0), or the output of a recording regeneration that ends at σ = 0. Shared by
    reference: ``deepcopy`` (ModelPatcher.clone) keeps it.
    """

    def __init__(self, patcher, arch, layers, fraction, cross, self_attention, keys, storage):
        self.model = weakref.ref(patcher.model)
        self.signature = family_signature(patcher.model)
        self.arch, self.layers, self.fraction, self.storage = arch, layers, fraction, storage
        self.cross, self.self_attention, self.keys = cross and arch == "unet", self_attention, keys and arch == "dit"
        self.values = keys and arch == "unet"  # UNet attn1 values: with the keys, the background of a masked edit
        self.offload_device = patcher.offload_device
        self.data, self.schedule, self.shape, self.on_device = {}, None, None, 0
        self.source_latent = None  # the source's clean latent (CPU float32), for a masked edit's final paste
        self.masked = None  # what the last masked edit with this record did (Report)
        self.missing = {}  # key → bool [B]: images not yet written at that key (entries filled call by call)
        self.evaluations = {"record": 0, "inject": 0}

    def __deepcopy__(self, memo):
        return self

    def begin(self, sigmas, shape):
        self.data.clear()
        self.missing.clear()
        self.on_device = 0
        self.schedule, self.shape = [float(s) for s in sigmas], tuple(shape)
        self.evaluations["record"] = 0
        self.source_latent, self.masked = None, None

    def wants(self, what):
        return {"self": self.self_attention and self.arch == "unet", "cross": self.cross, "self_v": self.values,
                "v": self.self_attention and self.arch == "dit", "k": self.keys}[what]

    def put(self, key, tensor, images=None):
        """Store ``tensor``, the rows of every image of the run in order, under ``key``; with ``images`` (indices
        into the run's batch, one per row of ``tensor``) write those images' rows only and keep the others."""
        t = tensor.detach()
        batch = self.shape[0] if self.shape else None
        if images is not None and batch is not None:
            full = self.data.get(key)
            if full is None or full.shape[0] != batch or full.shape[1:] != t.shape[1:]:
                self.missing[key] = torch.ones(batch, dtype=torch.bool)
                self.keep(key, t.new_zeros((batch,) + tuple(t.shape[1:])))
                full = self.data[key]
            elif full.is_inference() and not torch.is_inference_mode_enabled():
                full = self.data[key] = full.clone()  # written in place below
            full.index_copy_(0, images.to(full.device), t.to(full))
            missing = self.missing.get(key)
            if missing is not None:
                missing[images.cpu()] = False
                if not bool(missing.any()):
                    del self.missing[key]
            return
        self.missing.pop(key, None)
        self.keep(key, t)

    def keep(self, key, t):
        size = t.numel() * t.element_size()
        old = self.data.pop(key, None)
        if old is not None and old.device == t.device:
            self.on_device -= old.numel() * old.element_size()
        offload = self.storage == "offload device" or (self.storage == "auto" and
                                                       self.on_device + size > AUTO_DEVICE_BYTES)
        if offload and t.device != torch.device(self.offload_device):
            self.data[key] = t.to(self.offload_device, copy=True)
        else:
            self.data[key] = t.clone()
            self.on_device += size

    def fetch(self, key, sigma, like, images=None):
        """The stored tensor at ``key``, cast like ``like``; with ``images`` only those images' rows."""
        t = self.data.get(key)
        missing = self.missing.get(key)
        what = describe(key)
        if missing is not None and bool(missing[slice(None) if images is None else images.cpu()].any()):
            fail(INJECT, "record", f"holds {what} at step {key[2]} (σ={sigma:.4g}) for some images only (missing: "
                                   f"{missing.nonzero().flatten().tolist()})")
        if t is not None and images is not None:
            t = t[images.to(t.device)]
        if t is None:
            fail(INJECT, "record", f"holds no {what} at step {key[2]} (σ={sigma:.4g}): the recorded run never "
                                   f"evaluated the model there (regenerate with the sampler that matches the "
                                   f"inversion, e.g. BDIA Invert → BDIA Sampler)")
        if tuple(t.shape) != tuple(like.shape):
            fail(INJECT, "record", f"holds {what} of shape {list(t.shape)}",
                 f"the edit needs {list(like.shape)} (source and edit need the same latent shape and, for "
                 f"cross-attention maps, the same number of text tokens)")
        return t.to(device=like.device, dtype=like.dtype)

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in self.data.values())

    def nbytes_of(self, what):
        return sum(t.numel() * t.element_size() for key, t in self.data.items() if key[0] == what)

    def devices(self):
        return sorted({str(t.device) for t in self.data.values()})


def describe(key):
    """What a record key holds, for messages: 'v attention for layer single.3', 'the source's prediction'."""
    if key[0] == "denoised":
        return "the source's prediction"
    return f"{key[0]} attention for layer {layer_name(key[1])}"


class InjectPlan:
    """What the Inject node's MODEL does with a record (immutable once made, but for the per-run state ``begin`` sets).

    A masked edit (``mask``: a MASK tensor, ``mask_options``: ``core.mask.latent_mask``'s grow_by, feather_by, invert,
    binary) keeps the source outside the mask: each step's prediction, the run's output and, with ``background``,
    the background's attention keys and values (the record's, in its layers and steps)."""

    def __init__(self, source, layers, self_fraction, cross_fraction, mode, alignment, scales, keys, blend=None,
                 mask=None, mask_options=None, background=True):
        self.source, self.layers, self.mode, self.alignment, self.scales = source, layers, mode, alignment, scales
        self.fractions = {"self": self_fraction, "v": self_fraction, "k": self_fraction if keys else 0.0,
                          "cross": cross_fraction}
        self.blend = blend  # None or (source token positions, edit token positions, threshold)
        self.mask, self.mask_options, self.background = mask, dict(mask_options or {}), background
        self.begin()

    def begin(self, run_mask=None, patch=None):
        """A new run: ``run_mask`` is the mask on this run's latent grid ([B or 1, 1, (T,) H, W], CPU), ``patch``
        the DiT's patch size."""
        self.scratch, self.masks = {}, []  # per run: the edit's word maps of the current step; the masks used
        self.run_mask, self.patch, self._cache = run_mask, patch, {}

    def masking(self):
        return self.run_mask is not None

    def _rows_of(self, m, images, n):
        """The mask rows of ``n`` images of the run (``images``: their indices, None: the first ``n``)."""
        if m.shape[0] == 1:
            return m
        return m[images.to(m.device)] if images is not None else m[:n]

    def latent_mask(self, like, images=None):
        """The run's mask for the rows of ``like`` (a prediction or latent of ``n`` images), on its device/dtype."""
        key = ("latent", like.device, like.dtype)
        if key not in self._cache:
            self._cache[key] = self.run_mask.to(like.device, like.dtype)
        return self._rows_of(self._cache[key], images, like.shape[0])

    def token_mask(self, tokens, dim, like, images=None):
        """The run's mask on a DiT's ``tokens`` image tokens, shaped to broadcast over ``like`` whose token axis is
        ``dim`` ([B, L, C] or [B, L, H, D]: 1; [B, H, L, D]: 2)."""
        key = ("tokens", tokens, dim, like.ndim, like.device, like.dtype)
        if key not in self._cache:
            try:
                m = M.token_mask(self.run_mask, tokens, self.patch or 1)
            except ValueError as e:
                fail(INJECT, "mask", f"cannot be put on the model's image tokens: {e}")
            shape = [m.shape[0]] + [1] * (like.ndim - 1)
            shape[dim] = tokens
            self._cache[key] = m.reshape(shape).to(like.device, like.dtype)
        return self._rows_of(self._cache[key], images, like.shape[0])

    def layer_mask(self, size, like, images=None):
        """The run's mask on a UNet layer's ``size`` = (h, w) grid, [B or 1, h·w, 1] like ``like``."""
        key = ("layer", tuple(size), like.device, like.dtype)
        if key not in self._cache:
            m = M.layer_mask(self.run_mask, tuple(size))[:, :, None]
            self._cache[key] = m.to(like.device, like.dtype)
        return self._rows_of(self._cache[key], images, like.shape[0])

    def __deepcopy__(self, memo):
        return self


class EditConfig:
    """Lives in ``transformer_options[CONFIG]``: the record being filled and/or the injection to make."""

    def __init__(self, record=None, inject=None):
        self.record, self.inject = record, inject
        self.batch = None  # images in the current run's latent (set when it starts)
        self.node, self.arch = None, None  # the node that made this MODEL, 'unet'/'dit' (set by install)
        self.layout = self.order = self.plan = None  # DiTs: the families.Layout, its token order, its call plan
        self.stamped = self.seen = 0  # DiT blocks stamped; stamped blocks whose attention reached the override
        self.checked = None  # the last optimized_attention_override found to be (or to hold) the pack's
        self._position = (None, None, None)
        self._rows = (None, {})

    def __deepcopy__(self, memo):
        return self

    def position(self, sigmas, schedule):
        """(σ, schedule values, step) of a model call, converted once per call rather than once per layer."""
        if self._position[0] is not sigmas or self._position[1] is not schedule:
            sigma, values = float(sigmas.flatten()[0]), [float(s) for s in schedule]
            self._position = (sigmas, schedule, (sigma, values, A.step_index(sigma, values)))
        return self._position[2]

    def rows(self, options, batch, start=0, used_only=False):
        """The rows of one chunk of a model call (``batch`` rows from ``start``) that are the run's images:
        ``(take, images)``, ``take`` indexing the call's batch and ``images`` the images of the run they are (None:
        images 0, 1, … in order, ``take`` a slice).

        Stock samplers call the model on every image in order; a call that batches more (the fixed-point
        inversion's second, perturbed path) holds them first. The fixed-point inversion names the images each of
        its calls holds (``options[BATCH_ROWS]`` = (held, used), ``b + i`` for image i's second path), since it
        drops converged images; ``used_only`` keeps the rows whose result it uses."""
        n = self.batch or batch
        named = options.get(BATCH_ROWS)
        if named is None:
            return slice(start, start + min(batch, n)), None
        if self._rows[0] is not named:
            self._rows = (named, {})
        cache = self._rows[1]
        key = (batch, start, used_only)
        if key not in cache:
            held, used = (r.cpu() for r in named)
            if held.numel() != batch:
                fail(self.node or RECORD, "model", f"got a model call of {batch} rows per chunk where the inversion "
                                                   f"evaluates {held.numel()} (a node between them changed the "
                                                   f"batch)")
            keep = held < n
            if used_only:
                keep &= torch.isin(held, used)
            take = keep.nonzero().flatten()
            images = held[take]
            if images.numel() == n and bool((take == torch.arange(n)).all()) and bool((images == take).all()):
                cache[key] = slice(start, start + n), None
            else:
                cache[key] = take + start, images
        return cache[key]


class CallState:
    """Per model call: σ's step, the number of steps and the batch rows of the (first) positive chunk."""

    def __init__(self, options):
        self.config, self.options = options.get(CONFIG), options
        sigmas, schedule = options.get("sigmas"), options.get("sample_sigmas")
        self.step = None
        if self.config is None or sigmas is None or schedule is None:
            return
        self.sigma, values, self.step = self.config.position(sigmas, schedule)
        self.steps = len(values) - 1
        chunks = list(options.get("cond_or_uncond", [0]))
        self.chunk = chunks.index(0) if 0 in chunks else None
        self.chunks = len(chunks)

    def rows(self, batch, used_only=False):
        """The positive chunk's rows that are the run's images: ``(take, images)`` (``EditConfig.rows``)."""
        b = batch // self.chunks
        return self.config.rows(self.options, b, self.chunk * b, used_only)

    def blends(self, layer):
        plan = self.config.inject
        return (plan is not None and plan.blend is not None and self.step is not None and self.chunk is not None
                and layer in plan.layers)

    def backgrounds(self, what, layer):
        """Whether this call gives the background (outside the mask) the source's ``what`` ('k', 'v': DiT image keys
        and values; 'self': UNet attn1 keys, 'self_v': values) in ``layer``: a masked edit with background attention,
        wherever the record holds it (its layers, its first ``steps`` fraction)."""
        plan = self.config.inject
        return (plan is not None and plan.background and plan.masking() and self.step is not None
                and self.chunk is not None and layer in plan.layers and plan.source.wants(what)
                and self.step < A.injected_steps(self.steps, plan.source.fraction))

    def injects(self, what, layer):
        plan = self.config.inject
        return (plan is not None and self.step is not None and self.chunk is not None and layer in plan.layers
                and self.step < A.injected_steps(self.steps, plan.fractions[what]))

    def records(self, what, layer):
        rec = self.config.record
        return (rec is not None and self.step is not None and self.chunk is not None and layer in rec.layers
                and rec.wants(what) and self.step < A.injected_steps(self.steps, rec.fraction))
