"""Attention Edit: Record → Inject. Attention control for editing through ComfyUI's own hooks.

Record patches a clone of the MODEL so that a sampling run (an exact inversion: BDIA Invert, Fixed-Point
Invert; or a plain regeneration with the source prompt) stores the source's attention; Inject patches a clone
so that the edited regeneration uses it. The hooks, all on clones, never on the input MODEL:

* UNets (SD1.x/SDXL): ``patches_replace["attn1"/"attn2"]`` per transformer layer. attn1: the source's q, k
  (self-attention maps, P2P §3.2 / Plug-and-Play). attn2: the source's cross-attention probabilities (P2P word
  swap, refinement, reweighting).
* Flow DiTs (Flux, SD3): ``transformer_options["optimized_attention_override"]`` chained with any override
  already installed (declining calls go to the previous override or to ComfyUI's attention function), plus a
  ``patches_replace["dit"]`` per chosen block that stamps block kind, index and text length into a copy of
  ``transformer_options`` (Flux and SD3 do not stamp them on 0.3.64). Token order is ``[txt; img]``; the
  image rows of V (and K) are recorded and injected (RF-Edit / KV-Edit). The override sees post-RoPE q, k;
  record and inject use the same positions, so that is the same injection as the pre-RoPE ``attn1_patch``
  of 0.38, and it is one mechanism on both versions.

The mathematics is in ``..core.attention``. What is stored is keyed by (layer, step), where a step is the
position of σ in the descending schedule: the inversion's ascending run and the regeneration agree on it.
Per image, the last call at a σ wins, which after a fixed-point inversion is the converged iterate. The
fixed-point inversion drops converged images from later calls; it names the images each call holds
(``transformer_options[BATCH_ROWS]``) and the record scatters their rows into storage for the whole batch.

The DiT edit lives in ComfyUI's single override slot. A node placed after Record/Inject that fills the slot
without chaining (ComfyUI 0.38's Model Attention Backend, ``ModelPatcher.set_model_optimized_attention``) would
make the edit a silent plain regeneration; sampling refuses it before the first model call, and every model
call checks that the override saw the blocks it stamped.
"""
import math
import weakref

import comfy.ldm.modules.attention as comfy_attention
import comfy.patcher_extension
import torch

from .host import io

from ..core import attention as A
from .common import CATEGORY, check_range, fail, family_signature, model_family
from .fixed_point import BATCH_ROWS

CONFIG = "inversion_suite_attention_edit"  # transformer_options key holding the EditConfig
STAMP = "inversion_suite_attention_block"  # transformer_options key holding the current DiT block
TEXT_LENGTH = "inversion_suite_text_tokens"
WRAPPER = "inversion_suite_attention_edit"
RECORD, INJECT, REPORT = "AttentionEditRecord", "AttentionEditInject", "AttentionEditReport"
STORAGE = ["auto", "offload device", "compute device"]
AUTO_DEVICE_BYTES = 512 * 2 ** 20  # 'auto' keeps this much on the compute device, the rest on the offload device
MODES = ["word swap", "refine"]
AttentionRecordType = io.Custom("ATTENTION_RECORD")


# ---------------------------------------------------------------- layers
def architecture(node, patcher):
    """('unet', layers) or ('dit', layers); layers are UNet (group, id, transformer_index) or DiT (kind, i)."""
    dm = patcher.model.diffusion_model
    if hasattr(dm, "input_blocks"):
        layers = []
        groups = (("input", list(dm.input_blocks)), ("middle", [dm.middle_block]), ("output", list(dm.output_blocks)))
        for group, blocks in groups:
            for i, block in enumerate(blocks):
                for m in block.modules():
                    if isinstance(m, comfy_attention.SpatialTransformer):
                        layers += [(group, i, t) for t, b in enumerate(m.transformer_blocks) if b.attn2 is not None]
        return "unet", layers
    layers = []
    for attr, kind in (("double_blocks", "double"), ("joint_blocks", "double"), ("single_blocks", "single")):
        blocks = getattr(dm, attr, None)
        if isinstance(blocks, torch.nn.ModuleList):
            if any(getattr(b, "flipped_img_txt", False) for b in blocks):
                fail(node, "model", "must lay out joint attention as [text; image] (this model puts image first)")
            layers += [(kind, i) for i in range(len(blocks))]
    if not layers:
        fail(node, "model", "must be an SD1.x/SDXL UNet or a Flux/SD3-style DiT (double/joint/single blocks)",
             type(dm).__name__)
    return "dit", layers


def layer_name(layer):
    return f"{layer[0]}.{layer[1]}" + (f".{layer[2]}" if len(layer) > 2 and layer[2] else "")


def select_layers(node, name, spec, layers, default):
    """Parse 'all', 'input', 'output.3-8', 'single.10-37', … (comma-separated) into a set of layers."""
    spec = ",".join(default if item.strip() in ("", "auto") else item for item in (spec or "").split(","))
    groups = sorted({layer[0] for layer in layers})
    chosen = set()
    for item in spec.split(","):
        item = item.strip()
        if item == "all":
            chosen |= set(layers)
            continue
        group, _, span = item.partition(".")
        try:
            lo, _, hi = span.partition("-")
            lo, hi = (int(lo), int(hi or lo)) if span else (0, 10 ** 9)
        except ValueError:
            lo = None
        if group not in groups or lo is None:
            fail(node, name, f"must list layers as 'all' or <group>[.<i>[-<j>]] with groups {groups}", repr(item))
        chosen |= {layer for layer in layers if layer[0] == group and lo <= layer[1] <= hi}
    if not chosen:
        fail(node, name, f"selects no layer (this model has {len(layers)}: groups {groups})", repr(spec))
    return frozenset(chosen)


# ---------------------------------------------------------------- what is stored
class AttentionRecord:
    """The source's attention, filled by a run of the Record node's MODEL and read by the Inject node's.

    Entries are keyed ``(what, layer, step)`` with ``what`` in 'self' (UNet attn1 (q, k)), 'cross' (UNet attn2
    maps), 'v', 'k' (DiT image rows). Shared by reference: ``deepcopy`` (ModelPatcher.clone) keeps it.
    """

    def __init__(self, patcher, arch, layers, fraction, cross, self_attention, keys, storage):
        self.model = weakref.ref(patcher.model)
        self.signature = family_signature(patcher.model)
        self.arch, self.layers, self.fraction, self.storage = arch, layers, fraction, storage
        self.cross, self.self_attention, self.keys = cross and arch == "unet", self_attention, keys and arch == "dit"
        self.offload_device = patcher.offload_device
        self.data, self.schedule, self.shape, self.on_device = {}, None, None, 0
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

    def wants(self, what):
        return {"self": self.self_attention and self.arch == "unet", "cross": self.cross,
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
        if missing is not None and bool(missing[slice(None) if images is None else images.cpu()].any()):
            fail(INJECT, "record", f"holds {key[0]} attention for layer {layer_name(key[1])} at step {key[2]} "
                                   f"(σ={sigma:.4g}) for some images only (missing: "
                                   f"{missing.nonzero().flatten().tolist()})")
        if t is not None and images is not None:
            t = t[images.to(t.device)]
        if t is None:
            fail(INJECT, "record", f"holds no {key[0]} attention for layer {layer_name(key[1])} at step {key[2]} "
                                   f"(σ={sigma:.4g}): the recorded run never evaluated the model there (regenerate "
                                   f"with the sampler that matches the inversion, e.g. BDIA Invert → BDIA Sampler)")
        if tuple(t.shape) != tuple(like.shape):
            fail(INJECT, "record", f"holds {key[0]} attention of shape {list(t.shape)} for layer "
                                   f"{layer_name(key[1])}", f"the edit needs {list(like.shape)} (source and edit "
                                                            f"need the same latent shape and, for cross-attention "
                                                            f"maps, the same number of text tokens)")
        return t.to(device=like.device, dtype=like.dtype)

    def nbytes(self):
        return sum(t.numel() * t.element_size() for t in self.data.values())

    def devices(self):
        return sorted({str(t.device) for t in self.data.values()})


class InjectPlan:
    """What the Inject node's MODEL does with a record (immutable once made)."""

    def __init__(self, source, layers, self_fraction, cross_fraction, mode, alignment, scales, keys, blend=None):
        self.source, self.layers, self.mode, self.alignment, self.scales = source, layers, mode, alignment, scales
        self.fractions = {"self": self_fraction, "v": self_fraction, "k": self_fraction if keys else 0.0,
                          "cross": cross_fraction}
        self.blend = blend  # None or (source token positions, edit token positions, threshold)
        self.scratch, self.masks = {}, []  # per run: the edit's word maps of the current step; the masks used

    def begin(self):
        self.scratch, self.masks = {}, []

    def __deepcopy__(self, memo):
        return self


class EditConfig:
    """Lives in ``transformer_options[CONFIG]``: the record being filled and/or the injection to make."""

    def __init__(self, record=None, inject=None):
        self.record, self.inject = record, inject
        self.batch = None  # images in the current run's latent (set when it starts)
        self.node, self.arch = None, None  # the node that made this MODEL, 'unet'/'dit' (set by install)
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

    def injects(self, what, layer):
        plan = self.config.inject
        return (plan is not None and self.step is not None and self.chunk is not None and layer in plan.layers
                and self.step < A.injected_steps(self.steps, plan.fractions[what]))

    def records(self, what, layer):
        rec = self.config.record
        return (rec is not None and self.step is not None and self.chunk is not None and layer in rec.layers
                and rec.wants(what) and self.step < A.injected_steps(self.steps, rec.fraction))


# ---------------------------------------------------------------- UNet hooks (attn1/attn2 replace)
def unet_hook(what, layer, previous):
    """An attn1 ('self') or attn2 ('cross') replace patch for one transformer layer."""
    def plain(q, k, v, extra):
        if previous is not None:
            return previous(q, k, v, extra)
        return comfy_attention.optimized_attention(q, k, v, extra["n_heads"],
                                                   attn_precision=extra.get("attn_precision"), transformer_options=extra)

    def hook(q, k, v, extra):
        state = CallState(extra)
        inject, record = state.injects(what, layer), state.records(what, layer)
        blend = what == "cross" and state.blends(layer)
        if not (inject or record or blend):
            return plain(q, k, v, extra)
        rows, images = state.rows(q.shape[0])
        if what == "self":
            if inject:
                source = state.config.inject.source
                q, k = q.clone(), k.clone()
                pair = source.fetch(("self", layer, state.step), state.sigma, torch.stack([q[rows], k[rows]], 1),
                                    images)
                q[rows], k[rows] = pair[:, 0], pair[:, 1]
            if record:
                rows, images = state.rows(q.shape[0], used_only=True)
                state.config.record.put(("self", layer, state.step), torch.stack([q[rows], k[rows]], 1), images)
            return plain(q, k, v, extra)
        heads = extra["n_heads"]
        probs = A.attention_probs(q, k, heads)
        if inject:
            plan = state.config.inject
            edit = probs[rows]
            source = plan.source.fetch(("cross", layer, state.step), state.sigma, edit, images)
            if plan.alignment is not None and plan.alignment.numel() != edit.shape[-1]:
                fail(INJECT, "clip", f"tokenizes the prompts to {plan.alignment.numel()} tokens; the model's text "
                                     f"context has {edit.shape[-1]}")
            scales = None if plan.scales is None else plan.scales.to(edit.device)
            probs = probs.clone()
            probs[rows] = A.p2p_cross(source, edit, plan.mode, None if plan.alignment is None else
                                      plan.alignment.to(edit.device), scales)
        if record:
            taken, recorded = state.rows(q.shape[0], used_only=True)
            state.config.record.put(("cross", layer, state.step), probs[taken].to(q.dtype), recorded)
        if blend:
            plan = state.config.inject
            words = plan.scratch.setdefault(state.step, [])
            words.append(("edit", probs[rows][..., plan.blend[1]]))
            source = plan.source.data.get(("cross", layer, state.step))
            if source is not None and images is not None:
                source = source[images.to(source.device)]
            if source is not None and source.shape[:3] == probs[rows].shape[:3]:
                words.append(("source", source[..., plan.blend[0]].to(probs)))
        return A.attend(probs, v, heads)
    hook.inversion_suite_hook = True
    return hook


# ---------------------------------------------------------------- DiT hooks (override + block stamps)
class BlockStamp:
    def __init__(self, kind, index, text):
        self.layer, self.text, self.calls = (kind, index), text, 0


def dit_stamp(kind, index, previous):
    """A patches_replace['dit'] entry that stamps the block into a copy of transformer_options, then runs
    the previous replacement or the original block."""
    def stamp(args, extra):
        options = args.get("transformer_options")
        if options is not None and CONFIG in options:
            if "txt" in args:
                text = args["txt"].shape[1]
                options[TEXT_LENGTH] = text  # the same dict reaches the single blocks of this forward
            elif "img_slice" in options:
                text = options["img_slice"][0]
            else:
                text = options.get(TEXT_LENGTH, 0)
            options[CONFIG].stamped += 1
            options = dict(options)
            options[STAMP] = BlockStamp(kind, index, text)
            args = dict(args)
            args["transformer_options"] = options
        return previous(args, extra) if previous is not None else extra["original_block"](args)
    stamp.inversion_suite_hook = True
    return stamp


def dit_override(previous):
    """optimized_attention_override: record/inject the image rows of V (and K) in stamped blocks."""
    def override(func, q, k, v, heads=None, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        def run(q, k, v):
            if previous is not None:
                return previous(func, q, k, v, heads, mask=mask, attn_precision=attn_precision,
                                skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape, **kwargs)
            return func(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                        skip_output_reshape=skip_output_reshape, **kwargs)
        options = kwargs.get("transformer_options") or {}
        stamp = options.get(STAMP)
        if stamp is None:
            return run(q, k, v)
        stamp.calls += 1
        if stamp.calls > 1:  # only the block's joint attention (SD3.5's extra image self-attention declines)
            return run(q, k, v)
        state, layer = CallState(options), stamp.layer
        if state.config is not None:
            state.config.seen += 1
        dim = 2 if skip_reshape else 1
        tensors = {"v": v, "k": k}
        for what in ("v", "k"):
            t = tensors[what]
            if state.injects(what, layer):
                rows, images = state.rows(t.shape[0])
                image = t[rows].narrow(dim, stamp.text, t.shape[dim] - stamp.text)
                source = state.config.inject.source.fetch((what, layer, state.step), state.sigma, image, images)
                t = t.clone()
                t[rows] = A.replace_tokens(t[rows], source, stamp.text, dim)
                tensors[what] = t
            if state.records(what, layer):
                rows, images = state.rows(t.shape[0], used_only=True)
                state.config.record.put((what, layer, state.step),
                                        t[rows].narrow(dim, stamp.text, t.shape[dim] - stamp.text), images)
        return run(q, tensors["k"], tensors["v"])
    override.inversion_suite_hook = True
    return override


# ---------------------------------------------------------------- sampler-level: source prediction, local blend
LATENT_KEY = ("latent", 0)


def post_cfg(args):
    """Records the source's denoised prediction at every step; in an edit with local blend returns
    ``D_src + m ⊙ (D_edit − D_src)`` (P2P local blend; with the linear samplers of the pack this keeps every
    pixel outside the mask on the source's trajectory)."""
    denoised = args["denoised"]
    options = args["model_options"].get("transformer_options", {})
    config, schedule = options.get(CONFIG), options.get("sample_sigmas")
    if config is None or schedule is None:
        return denoised
    sigma, _, step = config.position(args["sigma"], schedule)
    if step is None:
        return denoised
    plan = config.inject
    if plan is not None and plan.blend is not None:
        maps = plan.scratch.pop(step, [])
        masks = [A.local_blend_mask([m for who, m in maps if who == side], None, tuple(denoised.shape[-2:]),
                                    plan.blend[2]) for side in ("source", "edit") if any(w == side for w, _ in maps)]
        if masks:
            mask = torch.stack(masks).amax(0)
            plan.masks.append(mask)
            rows, images = config.rows(options, denoised.shape[0])
            edit = denoised[rows]
            source = plan.source.fetch(("denoised", LATENT_KEY, step), sigma, edit, images)
            denoised = denoised.clone()
            denoised[rows] = A.blend(source, edit, mask)
    if config.record is not None:  # the run's images (not the fixed-point inversion's second path)
        rows, images = config.rows(options, denoised.shape[0], used_only=True)
        config.record.put(("denoised", LATENT_KEY, step), denoised[rows], images)
    return denoised


post_cfg.inversion_suite_hook = True


# ---------------------------------------------------------------- the DiT override slot
TITLES = {RECORD: "Attention Edit: Record", INJECT: "Attention Edit: Inject"}


def holds_pack_override(fn):
    """Whether the installed ``optimized_attention_override`` is the pack's, or a foreign one that holds it (in its
    closure, a functools.partial, ``__wrapped__``, a bound object, attributes) and so can chain to it."""
    stack, seen = [(fn, 0)], set()
    while stack and len(seen) < 4096:
        obj, depth = stack.pop()
        if obj is None or id(obj) in seen or depth > 8:
            continue
        seen.add(id(obj))
        if getattr(obj, "inversion_suite_hook", False) is True:
            return True
        if isinstance(obj, (str, bytes, int, float, torch.Tensor, type, type(math))):
            continue
        if isinstance(obj, dict):
            children = list(obj.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            children = list(obj)
        else:
            children = []
            for cell in getattr(obj, "__closure__", None) or ():
                try:
                    children.append(cell.cell_contents)
                except ValueError:  # an empty cell
                    pass
            children += [getattr(obj, a, None) for a in ("__wrapped__", "__func__", "__self__", "func", "args",
                                                         "keywords")]
            attributes = getattr(obj, "__dict__", None)
            children += list(attributes.values()) if isinstance(attributes, dict) else []
        stack.extend((child, depth + 1) for child in children)
    return False


def check_override(config, override, ran=True):
    """Refuse a DiT edit whose override was replaced after Record/Inject (``ran``: the override was called for the
    blocks the stamps marked; False when a model call's stamped blocks never reached it)."""
    if config.arch != "dit":
        return
    if ran and (override is config.checked or holds_pack_override(override)):
        config.checked = override
        return
    node = config.node or (INJECT if config.inject is not None else RECORD)
    title = TITLES[node]
    lost = "nothing would be recorded" if node == RECORD else "the edit would silently be a plain regeneration"
    name = getattr(override, "__qualname__", None) or type(override).__name__
    if ran:
        fail(node, "model", f"has its attention override replaced by a node placed after {title} (ComfyUI's "
                            f"Model Attention Backend, or any node calling set_model_optimized_attention): {lost}. "
                            f"Put the attention backend node before {title} in the MODEL chain (the edit chains "
                            f"to it)", f"optimized_attention_override = {name}")
    fail(node, "model", f"ran a model call whose attention never reached {title}'s override (a node after it "
                        f"replaced transformer_options['optimized_attention_override'], e.g. ComfyUI's Model "
                        f"Attention Backend, or this model's attention ignores the override): {lost}. Put the "
                        f"attention backend node before {title} in the MODEL chain",
         f"optimized_attention_override = {name}")


# ---------------------------------------------------------------- sampling-level wrappers
def outer_sample(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
    """Start of a sampling run: check an injection against its record and the override slot, clear a record being
    filled."""
    guider = executor.class_obj
    options = guider.model_options.get("transformer_options", {})
    config = options.get(CONFIG)
    if config is not None:
        check_override(config, options.get("optimized_attention_override"))
        config.batch = noise.shape[0]
        plan, record = config.inject, config.record
        if plan is not None:
            source = plan.source
            if source.schedule is None or not source.data:
                fail(INJECT, "record", "is empty: sample (invert) with the Attention Edit: Record MODEL first, "
                                       "then regenerate with this MODEL")
            if source.model() is not guider.model_patcher.model:
                fail(INJECT, "model", "must be the model the attention was recorded with")
            if tuple(noise.shape) != source.shape:
                fail(INJECT, "record", f"was recorded on latents of shape {list(source.shape)}",
                     f"the edit samples {list(noise.shape)} (source and edit latents must have the same shape)")
            if not A.same_schedule([float(s) for s in sigmas], source.schedule):
                n, m = len(sigmas) - 1, len(source.schedule) - 1
                fail(INJECT, "record", "must be used with the sigmas it was recorded on",
                     f"{n} steps from σ={max(float(s) for s in sigmas):.4g} vs {m} from "
                     f"σ={max(source.schedule):.4g}")
            source.evaluations["inject"] = 0
            plan.begin()
        if record is not None:
            record.begin(sigmas, noise.shape)
    return executor(noise, latent_image, sampler, sigmas, *args, **kwargs)


def apply_model(executor, x, t, *args, **kwargs):
    """Counts model evaluations (batch elements) of recording and injecting runs; on DiTs checks, before and after
    the call, that the attention reaches the pack's override."""
    options = kwargs.get("transformer_options", args[3] if len(args) > 3 else {}) or {}
    config = options.get(CONFIG)
    if config is None:
        return executor(x, t, *args, **kwargs)
    if config.record is not None:
        config.record.evaluations["record"] += x.shape[0]
    if config.inject is not None:
        config.inject.source.evaluations["inject"] += x.shape[0]
    override = options.get("optimized_attention_override")
    check_override(config, override)
    stamped, seen = config.stamped, config.seen
    out = executor(x, t, *args, **kwargs)
    if config.stamped > stamped and config.seen == seen:
        check_override(config, override, ran=False)
    return out


def install(patcher, config, arch, layers, node):
    """A clone of ``patcher`` carrying ``config`` (made by ``node``) and the hooks for ``layers`` (chained with
    foreign ones)."""
    config.node, config.arch = node, arch
    m = patcher.clone()
    options = m.model_options.setdefault("transformer_options", {})
    options[CONFIG] = config
    replace = options.get("patches_replace", {})
    if arch == "unet":
        for layer in sorted(layers):
            for what, name in (("self", "attn1"), ("cross", "attn2")):
                table = replace.get(name, {})
                previous = table.get(layer, table.get(layer[:2]))
                if not getattr(previous, "inversion_suite_hook", False):
                    m.set_model_patch_replace(unet_hook(what, layer, previous), name, layer[0], layer[1], layer[2])
    else:
        previous = options.get("optimized_attention_override")
        if not getattr(previous, "inversion_suite_hook", False):
            options["optimized_attention_override"] = dit_override(previous)
        for kind, i in architecture("", patcher)[1]:  # every block: single blocks learn the text length from
            previous = replace.get("dit", {}).get((f"{kind}_block", i))  # the double blocks' stamps
            if not getattr(previous, "inversion_suite_hook", False):
                m.set_model_patch_replace(dit_stamp(kind, i, previous), "dit", f"{kind}_block", i)
    post = m.model_options.get("sampler_post_cfg_function", [])
    if not any(getattr(fn, "inversion_suite_hook", False) for fn in post):
        m.set_model_sampler_post_cfg_function(post_cfg)
    wrappers = comfy.patcher_extension.WrappersMP
    for kind, fn in ((wrappers.OUTER_SAMPLE, outer_sample), (wrappers.APPLY_MODEL, apply_model)):
        m.remove_wrappers_with_key(kind, WRAPPER)
        m.add_wrapper_with_key(kind, WRAPPER, fn)
    return m


def existing_config(patcher):
    return patcher.model_options.get("transformer_options", {}).get(CONFIG)


# ---------------------------------------------------------------- tokens (P2P needs the prompts' tokens)
def token_ids(clip, text):
    """Token ids of ``text`` as the CLIP encoder lays them out (all 77-token chunks of the 'l' tokenizer)."""
    tokens = clip.tokenize(text)
    key = "l" if "l" in tokens else sorted(tokens)[0]
    ids = []
    for chunk in tokens[key]:
        for item in chunk:
            token = item[0]
            ids.append(int(token) if isinstance(token, int) or (torch.is_tensor(token) and token.numel() == 1)
                       else -1 - len(ids))
    return ids


def word_ids(clip, word):
    """The ids of a word alone: its tokenization without the start token and the end/padding."""
    ids = token_ids(clip, word)
    return ids[1:A.content_length(ids) - 1]


def parse_reweight(node, clip, text, ids):
    """'word:scale, word2:scale' → a [T] scale vector over the edit prompt's tokens."""
    scales = torch.ones(len(ids))
    for item in text.split(","):
        if not item.strip():
            continue
        word, _, value = item.rpartition(":")
        try:
            value = float(value)
        except ValueError:
            word = ""
        if not word.strip() or not math.isfinite(value):
            fail(node, "reweight", "must read 'word:scale, word:scale' with finite scales", repr(item.strip()))
        positions = A.find_tokens(ids, word_ids(clip, word.strip()))
        if not positions:
            fail(node, "reweight", f"names '{word.strip()}', which is not in edit_text")
        scales[positions] = value
    return scales


# ---------------------------------------------------------------- nodes
class AttentionEditRecord(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_AttentionEditRecord", display_name="Attention Edit: Record (source)",
            category=CATEGORY,
            description="First half of an edit that keeps the photo. Returns a MODEL that records the source's "
                        "attention while it samples: use it for the exact inversion (BDIA Invert, Fixed-Point "
                        "Invert) and the source branch costs no extra model call. UNets (SD1.x/SDXL): "
                        "cross-attention maps and self-attention q, k (Prompt-to-Prompt). Flux/SD3: image-token "
                        "values (and keys) of the joint attention (RF-Edit, KV-Edit). Then connect the record "
                        "to Attention Edit: Inject.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (SD1.x/SDXL, SD3, Flux). It is not changed."),
                io.String.Input("blocks", default="auto",
                                tooltip="Layers to record: 'all', or groups with optional index ranges, comma-"
                                        "separated. UNet groups input/middle/output (e.g. 'output.3-8'); Flux "
                                        "double/single (e.g. 'single.20-37'), SD3 double. auto = all UNet layers, "
                                        "Flux single blocks, SD3 all blocks."),
                io.Float.Input("steps", default=0.8, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of the sampling steps, from the first (highest σ), to record. "
                                       "Memory grows with it; inject fractions cannot exceed it."),
                io.Boolean.Input("cross_attention", default=True,
                                 tooltip="UNets: record cross-attention maps (Prompt-to-Prompt). DiTs: unused."),
                io.Boolean.Input("self_attention", default=True,
                                 tooltip="UNets: record self-attention q, k (their maps). DiTs: record the image "
                                         "tokens' values (RF-Edit)."),
                io.Boolean.Input("keys", default=False, tooltip="DiTs: also record image-token keys (KV-Edit)."),
                io.Combo.Input("storage", options=STORAGE, default="auto",
                               tooltip="Where recorded tensors live: auto = the first 512 MiB on the compute "
                                       "device, the rest on the offload device (CPU)."),
            ],
            outputs=[
                io.Model.Output(display_name="record_model", tooltip="Sample (invert) with this to record."),
                AttentionRecordType.Output(display_name="record", tooltip="Connect to Attention Edit: Inject."),
                io.String.Output(display_name="plan", tooltip="What is recorded and the bound on its size."),
            ])

    @classmethod
    def execute(cls, model, blocks, steps, cross_attention, self_attention, keys, storage) -> io.NodeOutput:
        node = RECORD
        model_family(node, model.get_model_object("model_sampling"))
        arch, layers = architecture(node, model)
        check_range(node, "steps", steps, 0.0, 1.0)
        if storage not in STORAGE:
            fail(node, "storage", f"must be one of {STORAGE}", storage)
        if not (self_attention or (cross_attention and arch == "unet") or (keys and arch == "dit")):
            fail(node, "self_attention", "or another record switch must be on (nothing would be recorded)")
        default = {"unet": "all", "dit": "single" if any(x[0] == "single" for x in layers) else "all"}[arch]
        chosen = select_layers(node, "blocks", blocks, layers, default)
        record = AttentionRecord(model, arch, chosen, steps, cross_attention, self_attention, keys, storage)
        previous = existing_config(model)
        patched = install(model, EditConfig(record, previous.inject if previous else None), arch, chosen, node)
        what = ({"unet": [w for w, on in (("cross-attention maps", record.cross), ("self-attention q,k",
                                                                                 record.self_attention)) if on],
                 "dit": [w for w, on in (("image values", record.self_attention), ("image keys", record.keys)) if on]}
                [arch])
        per_step = len(chosen) * ((record.cross + record.self_attention) if arch == "unet"
                                  else (record.self_attention + record.keys))
        plan = (f"{node}: {' and '.join(what)} of {len(chosen)} layers "
                f"({', '.join(layer_name(layer) for layer in sorted(chosen))}), first {steps:.0%} of the steps; "
                f"at most {per_step} tensors per step (positive rows only) and the source's denoised latent, "
                f"storage {storage}. Recording adds no "
                f"model call to the run that records.")
        return io.NodeOutput(patched, record, plan)


class AttentionEditInject(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_AttentionEditInject", display_name="Attention Edit: Inject (edit)",
            category=CATEGORY,
            description="Second half of an edit that keeps the photo. Returns a MODEL that regenerates with the "
                        "source's recorded attention: use it in the guider that regenerates the inversion with the "
                        "edited prompt, on the same sigmas. UNets: Prompt-to-Prompt (word swap, refinement, "
                        "reweighting; self-attention maps). Flux/SD3: image-token values (and keys) from the "
                        "source (RF-Edit, KV-Edit). Same prompt → same image as the plain regeneration.",
            inputs=[
                io.Model.Input("model", tooltip="The same model the record was made from (not changed)."),
                AttentionRecordType.Input("record", tooltip="From Attention Edit: Record."),
                io.String.Input("blocks", default="all",
                                tooltip="Layers to inject, a subset of the recorded ones ('all' = all recorded)."),
                io.Float.Input("self_steps", default=0.4, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of steps, from the first, with the source's self-attention maps "
                                       "(UNets) or image values/keys (DiTs). More keeps more of the layout."),
                io.Float.Input("cross_steps", default=0.8, min=0.0, max=1.0, step=0.05,
                               tooltip="UNets: fraction of steps with the source's cross-attention maps "
                                       "(Prompt-to-Prompt τ). DiTs: unused."),
                io.Combo.Input("cross_mode", options=MODES, default="word swap",
                               tooltip="word swap: the edit uses the source's maps (prompts with the same number of "
                                       "tokens). refine: edit tokens aligned to source tokens take their maps, new "
                                       "tokens keep their own (needs clip and both texts)."),
                io.Boolean.Input("inject_keys", default=False,
                                 tooltip="DiTs: inject keys as well as values (KV-Edit; record them with keys on)."),
                io.Clip.Input("clip", optional=True,
                              tooltip="The text encoder, to tokenize source_text/edit_text (for refine, reweight and "
                                      "the word-swap token check)."),
                io.String.Input("source_text", default="", multiline=True, tooltip="The source prompt's text."),
                io.String.Input("edit_text", default="", multiline=True, tooltip="The edited prompt's text."),
                io.String.Input("reweight", default="",
                                tooltip="Optional 'word:scale, word:scale' on edit_text's words: scales their "
                                        "cross-attention columns in injected steps (needs clip)."),
                io.String.Input("blend_words", default="",
                                tooltip="Optional local blend (UNets): comma-separated words of source_text and/or "
                                        "edit_text; only where their cross-attention is strong does the edit change "
                                        "the image, elsewhere it stays the source (needs clip)."),
                io.Float.Input("blend_threshold", default=0.3, min=0.0, max=1.0, step=0.05,
                               tooltip="Local blend: pixels whose normalised word attention exceeds this are edited."),
            ],
            outputs=[
                io.Model.Output(display_name="edit_model", tooltip="Regenerate the inversion with this."),
                io.String.Output(display_name="plan", tooltip="What is injected where."),
            ])

    @classmethod
    def execute(cls, model, record, blocks, self_steps, cross_steps, cross_mode, inject_keys, clip=None,
                source_text="", edit_text="", reweight="", blend_words="", blend_threshold=0.3) -> io.NodeOutput:
        node = INJECT
        if not isinstance(record, AttentionRecord):
            fail(node, "record", "must come from Attention Edit: Record")
        if record.model() is not model.model:
            fail(node, "model", f"must be the model the record was made from (a {record.signature} model); "
                                f"this is another model", family_signature(model.model))
        arch, layers = architecture(node, model)
        check_range(node, "self_steps", self_steps, 0.0, 1.0)
        check_range(node, "cross_steps", cross_steps, 0.0, 1.0)
        if cross_mode not in MODES:
            fail(node, "cross_mode", f"must be one of {MODES}", cross_mode)
        if self_steps > 0 and not record.self_attention:
            fail(node, "self_steps", "must be 0: the record holds no self-attention/values (turn them on in Record)")
        if inject_keys and not record.keys:
            fail(node, "inject_keys", "needs keys in the record (Record's keys switch, DiTs only)")
        if arch == "unet" and cross_steps > 0 and not record.cross:
            fail(node, "cross_steps", "must be 0: the record holds no cross-attention maps")
        for name, value in (("self_steps", self_steps), ("cross_steps", cross_steps if arch == "unet" else 0.0)):
            if value > record.fraction:
                fail(node, name, f"must not exceed the recorded fraction of steps ({record.fraction})", value)
        spec = (blocks or "").strip()
        chosen = record.layers if spec in ("", "all") else select_layers(node, "blocks", spec, layers, "all")
        if not chosen <= record.layers:
            missing = ", ".join(layer_name(x) for x in sorted(chosen - record.layers))
            fail(node, "blocks", "must be recorded layers", f"{missing} not recorded")
        alignment = scales = None
        texts = bool(source_text.strip()) and bool(edit_text.strip())
        if arch == "unet" and cross_steps > 0:
            if (cross_mode == "refine" or reweight.strip()) and (clip is None or not texts):
                fail(node, "clip", f"is required, with source_text and edit_text, for "
                                   f"{'refine' if cross_mode == 'refine' else 'reweight'}")
            if clip is not None and texts:
                src, edit = token_ids(clip, source_text), token_ids(clip, edit_text)
                if cross_mode == "word swap" and A.content_length(src) != A.content_length(edit):
                    fail(node, "edit_text", "must have as many tokens as source_text for a word swap (use refine "
                                            "for prompts of different lengths)",
                         f"{A.content_length(edit)} vs {A.content_length(src)}")
                if cross_mode == "refine":
                    alignment = A.token_alignment(src, edit)
                if reweight.strip():
                    scales = parse_reweight(node, clip, reweight, edit)
        check_range(node, "blend_threshold", blend_threshold, 0.0, 1.0)
        blend = None
        if blend_words.strip():
            if arch != "unet" or not record.cross:
                fail(node, "blend_words", "needs a UNet record with cross-attention maps (local blend is P2P's, "
                                          "SD1.x/SDXL)")
            if clip is None or not texts:
                fail(node, "clip", "is required, with source_text and edit_text, for a local blend")
            src, edit = token_ids(clip, source_text), token_ids(clip, edit_text)
            positions = ([], [])
            for word in (w.strip() for w in blend_words.split(",")):
                if word:
                    found = A.find_tokens(src, word_ids(clip, word)), A.find_tokens(edit, word_ids(clip, word))
                    if not (found[0] or found[1]):
                        fail(node, "blend_words", f"names '{word}', which is in neither source_text nor edit_text")
                    positions[0].extend(found[0])
                    positions[1].extend(found[1])
            blend = (positions[0], positions[1], blend_threshold)
        plan = InjectPlan(record, chosen, self_steps, cross_steps if arch == "unet" else 0.0, cross_mode, alignment,
                          scales, inject_keys, blend)
        previous = existing_config(model)
        patched = install(model, EditConfig(previous.record if previous else None, plan), arch, chosen, node)
        what = (f"self-attention maps for the first {self_steps:.0%} of steps, cross-attention ({cross_mode}"
                f"{', reweighted' if scales is not None else ''}) for the first {cross_steps:.0%}"
                if arch == "unet" else
                f"image {'values and keys' if inject_keys else 'values'} for the first {self_steps:.0%} of steps")
        if blend is not None:
            what += f"; local blend on '{blend_words.strip()}' (threshold {blend_threshold})"
        text = (f"{node}: {what}, in {len(chosen)} layers; one model evaluation per image per step (the source "
                f"branch was recorded, not recomputed).")
        return io.NodeOutput(patched, text)


class AttentionEditReport(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_AttentionEditReport", display_name="Attention Edit: Report",
            category=CATEGORY,
            description="What an attention edit stored and spent: recorded tensors and their memory, model "
                        "evaluations of the recording run and of the edit. Connect the edit's output LATENT so it "
                        "runs after the edit.",
            inputs=[
                AttentionRecordType.Input("record", tooltip="From Attention Edit: Record."),
                io.Latent.Input("latent", optional=True,
                                tooltip="The edited LATENT (orders this node after the edit)."),
            ],
            outputs=[io.String.Output(display_name="report")])

    @classmethod
    def execute(cls, record, latent=None) -> io.NodeOutput:
        if not isinstance(record, AttentionRecord):
            fail(REPORT, "record", "must come from Attention Edit: Record")
        return io.NodeOutput(report(record))


def report(record):
    steps = len(record.schedule) - 1 if record.schedule else 0
    recorded = sorted({key[2] for key in record.data})
    return (f"{REPORT}: {len(record.data)} tensors over {len(recorded)} of {steps} steps, "
            f"{record.nbytes() / 2 ** 20:.2f} MiB on {', '.join(record.devices()) or '-'}; recording run "
            f"{record.evaluations['record']} model evaluations (the inversion's own, no extra); edit "
            f"{record.evaluations['inject']} model evaluations.")


