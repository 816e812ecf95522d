"""The hooks Record and Inject install on a clone of the MODEL: UNet attn1/attn2 replacements, DiT block stamps and the
attention override, the post-CFG source prediction and local blend, the sampling-level wrappers that check and begin
each run."""
import math

import comfy.ldm.modules.attention as comfy_attention
import comfy.patcher_extension
import torch

from ...core import attention as A
from ...core import mask as M
from ..common import fail
from .constants import CONFIG, FORWARD, IMAGE_LENGTH, INJECT, RECORD, STAMP, TEXT_LENGTH, WRAPPER
from .families import IMAGE_FIRST, IMAGE_ONLY, TEXT_FIRST, declared_patch
from .layers import dit_layout, layer_name
from .record import CallState


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
        keys = values = False
        if what == "self":
            keys, values = state.backgrounds("self", layer), state.backgrounds("self_v", layer)
            record_values = state.records("self_v", layer)
            if not (inject or record or keys or values or record_values):
                return plain(q, k, v, extra)
        elif not (inject or record or blend):
            return plain(q, k, v, extra)
        rows, images = state.rows(q.shape[0])
        if what == "self":
            source = None if state.config.inject is None else state.config.inject.source
            if inject:
                q, k = q.clone(), k.clone()
                pair = source.fetch(("self", layer, state.step), state.sigma, torch.stack([q[rows], k[rows]], 1),
                                    images)
                q[rows], k[rows] = pair[:, 0], pair[:, 1]
            if keys or values:  # masked edit: the background's keys and values from the source (KV-Edit)
                plan = state.config.inject
                m = plan.layer_mask(layer_size(extra, q.shape[1], plan.run_mask.shape[-2:]), q[rows], images)
                if keys and not inject:
                    pair = source.fetch(("self", layer, state.step), state.sigma,
                                        torch.stack([q[rows], k[rows]], 1), images)
                    k = k.clone()
                    k[rows] = M.blend(pair[:, 1], k[rows], m)
                if values:
                    v = v.clone()
                    v[rows] = M.blend(source.fetch(("self_v", layer, state.step), state.sigma, v[rows], images),
                                      v[rows], m)
            if record or record_values:
                rows, images = state.rows(q.shape[0], used_only=True)
                if record:
                    state.config.record.put(("self", layer, state.step), torch.stack([q[rows], k[rows]], 1), images)
                if record_values:
                    state.config.record.put(("self_v", layer, state.step), v[rows], images)
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


def layer_size(extra, tokens, latent_size):
    """(h, w) of a UNet layer's token grid: ComfyUI's ``activations_shape`` ([B, C, h, w] of the spatial transformer),
    else from the latent's aspect (each level halves the size, rounding up)."""
    shape = extra.get("activations_shape")
    if shape is not None and len(shape) == 4 and shape[-2] * shape[-1] == tokens:
        return tuple(shape[-2:])
    h, w = (int(s) for s in latent_size)
    while h * w > tokens and h > 1 and w > 1:
        h, w = -(-h // 2), -(-w // 2)
    if h * w != tokens:
        fail(INJECT, "mask", f"cannot be put on a UNet layer of {tokens} tokens (latent {latent_size[0]}×"
                             f"{latent_size[1]})")
    return h, w


# ---------------------------------------------------------------- DiT hooks (override + block placement)
class BlockStamp:
    """A DiT block being run: its layer, the rows of its image tokens (``count`` None: to the end) and which of its
    attention calls is the image attention."""

    def __init__(self, layer, start, count, call):
        self.layer, self.start, self.count, self.call, self.calls = layer, start, count, call, 0


def fail_layout(options, why):
    config = options[CONFIG]
    fail(config.node or RECORD, "model", f"cannot place this model call's image tokens: {why} (the "
                                         f"{config.layout.family} layout Attention Edit knows does not fit this model)")


def block_rows(order, args, options):
    """(start, count) of a stamped block's image tokens in its attention (count None: to the end), from the block's
    own arguments: its text stream's length (text first), its image stream's (image first)."""
    if order == IMAGE_ONLY:
        return 0, None
    if order == TEXT_FIRST:
        if "txt" in args:
            options[TEXT_LENGTH] = args["txt"].shape[1]  # the same dict reaches the single blocks of this forward
            return args["txt"].shape[1], None
        if "img_slice" in options:
            return options["img_slice"][0], None
        if TEXT_LENGTH in options:
            return options[TEXT_LENGTH], None
        fail_layout(options, "a single-stream block ran before any block told the text's length")
    if "txt" in args:
        options[IMAGE_LENGTH] = args["img"].shape[1]
        return 0, args["img"].shape[1]
    if IMAGE_LENGTH in options:
        return 0, options[IMAGE_LENGTH]
    fail_layout(options, "a single-stream block ran before any block told the image's length")


def dit_stamp(layout, order, kind, index, previous):
    """A patches_replace['dit'] entry that stamps the block (layer, image rows) into a copy of transformer_options,
    then runs the previous replacement or the original block."""
    def stamp(args, extra):
        options = args.get("transformer_options")
        if options is not None and CONFIG in options:
            start, count = block_rows(order, args, options)
            options[CONFIG].stamped += 1
            options = dict(options)
            options[STAMP] = BlockStamp((kind, index), start, count, layout.call)
            args = dict(args)
            args["transformer_options"] = options
        return previous(args, extra) if previous is not None else extra["original_block"](args)
    stamp.inversion_suite_hook = True
    return stamp


class Forward:
    """One model call of a ``count`` or ``native`` family: the attention calls seen so far and the latent's image
    tokens."""

    def __init__(self, layout, order, plan, tokens):
        self.layout, self.order, self.plan, self.tokens = layout, order, plan, tokens
        self.calls, self.block, self.in_block = 0, None, 0

    def place(self, options, n):
        """(layer, start, count) of this attention call, or None when it is not a block's image attention."""
        if self.layout.placement == "count":
            j, self.calls = self.calls, self.calls + 1
            layer = self.plan[j] if j < len(self.plan) else None
        else:
            index = options.get("block_index")
            kind = self.layout.kind(options.get("block_type"))
            if index is None or kind is None:
                return None
            if (kind, index) != self.block:
                self.block, self.in_block = (kind, index), 0
            self.in_block += 1
            layer = (kind, index) if self.in_block == self.layout.call else None
        if layer is None:
            return None
        if self.order == IMAGE_ONLY:
            return layer, 0, None
        if self.order == TEXT_FIRST and "img_slice" in options:
            return layer, options["img_slice"][0], None
        if n < self.tokens:
            fail_layout(options, f"an attention call of {n} tokens in block {layer_name(layer)}, fewer than the "
                                 f"latent's {self.tokens} image tokens")
        return layer, (0 if self.order == IMAGE_FIRST else n - self.tokens), self.tokens


def place(options, n):
    """(layer, start, count) of a DiT attention call of ``n`` tokens, from the block stamp or the model call's
    ``Forward``; None for calls outside the layout's image attention."""
    stamp = options.get(STAMP)
    if stamp is not None:
        stamp.calls += 1
        return (stamp.layer, stamp.start, stamp.count) if stamp.calls == stamp.call else None
    forward = options.get(FORWARD)
    return forward.place(options, n) if forward is not None else None


def dit_override(previous):
    """optimized_attention_override: record/inject the image rows of V (and K) in the placed blocks."""
    def override(func, q, k, v, heads=None, mask=None, attn_precision=None, skip_reshape=False,
                 skip_output_reshape=False, **kwargs):
        def run(q, k, v):
            if previous is not None:
                return previous(func, q, k, v, heads, mask=mask, attn_precision=attn_precision,
                                skip_reshape=skip_reshape, skip_output_reshape=skip_output_reshape, **kwargs)
            return func(q, k, v, heads, mask=mask, attn_precision=attn_precision, skip_reshape=skip_reshape,
                        skip_output_reshape=skip_output_reshape, **kwargs)
        options = kwargs.get("transformer_options") or {}
        if CONFIG not in options:
            return run(q, k, v)
        dim = 2 if skip_reshape else 1  # [B, H, N, D] or [B, N, H·D]
        site = place(options, q.shape[dim])
        if site is None:
            return run(q, k, v)
        layer, start, count = site
        if k.shape[dim] != q.shape[dim]:
            fail_layout(options, f"block {layer_name(layer)}'s image attention is a cross-attention ({q.shape[dim]} "
                                 f"queries, {k.shape[dim]} keys)")
        state = CallState(options)
        if state.config is not None:
            state.config.seen += 1
        tensors = {"v": v, "k": k}
        for what in ("v", "k"):
            t = tensors[what]
            n = t.shape[dim] - start if count is None else count
            inject = state.injects(what, layer)
            if inject or state.backgrounds(what, layer):
                rows, images = state.rows(t.shape[0])
                image = t[rows].narrow(dim, start, n)
                plan = state.config.inject
                source = plan.source.fetch((what, layer, state.step), state.sigma, image, images)
                if not inject:  # masked edit: the background tokens' keys/values from the source (KV-Edit)
                    source = M.blend(source, image, plan.token_mask(image.shape[dim], dim, image, images))
                t = t.clone()
                t[rows] = A.replace_tokens(t[rows], source, start, dim, n)
                tensors[what] = t
            if state.records(what, layer):
                rows, images = state.rows(t.shape[0], used_only=True)
                state.config.record.put((what, layer, state.step), t[rows].narrow(dim, start, n), images)
        return run(q, tensors["k"], tensors["v"])
    override.inversion_suite_hook = True
    return override


# ---------------------------------------------------------------- sampler-level: source prediction, local blend
LATENT_KEY = ("latent", 0)


def post_cfg(args):
    """Records the source's denoised prediction at every step; in a masked edit, and in an edit with local blend,
    returns ``D_src + m ⊙ (D_edit − D_src)`` (the user's mask, then P2P's word mask: their product; every sampler of
    the pack updates a pixel from its own state and prediction, so this keeps every pixel outside the mask on the
    source's trajectory)."""
    denoised = args["denoised"]
    options = args["model_options"].get("transformer_options", {})
    config, schedule = options.get(CONFIG), options.get("sample_sigmas")
    if config is None or schedule is None:
        return denoised
    sigma, _, step = config.position(args["sigma"], schedule)
    if step is None:
        return denoised
    plan = config.inject
    if plan is not None and plan.masking():  # D* = D_src + m ⊙ (D_edit − D_src): the background on the source's path
        rows, images = config.rows(options, denoised.shape[0])
        edit = denoised[rows]
        source = plan.source.fetch(("denoised", LATENT_KEY, step), sigma, edit, images)
        denoised = denoised.clone()
        denoised[rows] = M.blend(source, edit, plan.latent_mask(edit, images))
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
CLEAN = 1e-3  # a run whose lowest σ is at most this starts (inversion) or ends (regeneration) at the clean latent


def patch_size(patcher):
    """The DiT's patch size (int or per-axis tuple): its layout's (``families``), else as its diffusion model declares
    it; 1 when it declares none."""
    dm = patcher.model.diffusion_model
    layout = dit_layout(patcher)
    return layout.patch(dm) if layout is not None else declared_patch(dm)


def begin_mask(plan, guider, noise, kwargs):
    """The mask of a masked edit on this run's latent grid, or a ValueError naming the input, before any model call."""
    source = plan.source
    shapes = kwargs.get("latent_shapes")
    if shapes is not None and len(shapes) > 1:
        fail(INJECT, "mask", "cannot mask a packed latent (several latents sampled as one, e.g. video with audio)",
             f"{len(shapes)} latents")
    try:
        run_mask = M.latent_mask(plan.mask, tuple(noise.shape), **plan.mask_options)
    except ValueError as e:
        fail(INJECT, "mask", str(e))
    if source.source_latent is None or tuple(source.source_latent.shape) != tuple(noise.shape):
        fail(INJECT, "record", f"holds no clean source latent for the mask's paste: record during an inversion that "
                               f"starts from the image latent (σ ≤ {CLEAN}), or during a regeneration that ends at "
                               f"σ ≤ {CLEAN}")
    plan.begin(run_mask, patch_size(guider.model_patcher) if guider.model_patcher is not None else 1)


def paste(plan, out):
    """The masked edit's output ``L_src + m ⊙ (out − L_src)``; notes how far the unpasted background had drifted from
    the source (relative, over the pixels the mask keeps) in ``record.masked``."""
    source = plan.source
    latent = source.source_latent.to(out.device, out.dtype)
    m = plan.run_mask.to(out.device, out.dtype)
    keep = M.outside(m).expand_as(out)
    kept = int(keep.sum())
    drift = None
    if kept:
        diff, base = (out - latent)[keep].double(), latent[keep].double()
        drift = float(diff.norm() / base.norm().clamp_min(1e-30))
    source.masked = {"kept": kept / out.numel(), "drift": drift, "mean": float(m.mean()),
                     "bytes": latent.numel() * 4}
    return M.blend(latent, out, m)


def outer_sample(executor, noise, latent_image, sampler, sigmas, *args, **kwargs):
    """Start of a sampling run: check an injection against its record and the override slot, put a masked edit's mask
    on the latent grid, clear a record being filled; at the end, paste a masked edit onto the source's clean latent
    and keep the clean latent of a recording run."""
    guider = executor.class_obj
    options = guider.model_options.get("transformer_options", {})
    config = options.get(CONFIG)
    plan = record = None
    ascending = len(sigmas) > 1 and float(sigmas[0]) < float(sigmas[-1])
    clean = len(sigmas) > 0 and float(min(float(sigmas[0]), float(sigmas[-1]))) <= CLEAN
    if config is not None:
        check_override(config, options.get("optimized_attention_override"))
        config.batch = noise.shape[0]
        plan, record = config.inject, config.record
        if plan is not None:
            source = plan.source
            if source.schedule is None or (not source.data and source.source_latent is None):
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
            if plan.mask is not None:
                begin_mask(plan, guider, noise, kwargs)
            else:
                plan.begin()
        if record is not None:
            record.begin(sigmas, noise.shape)
            if ascending and clean:  # an inversion from the image: its input is the source's clean latent
                record.source_latent = latent_image.detach().to("cpu", torch.float32, copy=True)
    out = executor(noise, latent_image, sampler, sigmas, *args, **kwargs)
    if plan is not None and plan.masking():
        out = paste(plan, out)
    if record is not None and not ascending and clean and tuple(out.shape) == record.shape:
        record.source_latent = out.detach().to("cpu", torch.float32, copy=True)
    return out


def apply_model(executor, x, t, *args, **kwargs):
    """Counts model evaluations (batch elements) of recording and injecting runs; on DiTs checks, before and after
    the call, that the attention reaches the pack's override, refuses model inputs that change the family's token
    layout and, for families placed by their calls' order or ComfyUI's own stamps, hands the call a ``Forward``
    (checking afterwards that the call ran the attention calls its layout has)."""
    options = kwargs.get("transformer_options", args[3] if len(args) > 3 else {}) or {}
    config = options.get(CONFIG)
    if config is None:
        return executor(x, t, *args, **kwargs)
    forward = None
    if config.arch == "dit":
        layout = config.layout
        for name in layout.unsupported:
            value = kwargs.get(name)
            if value is not None and not (isinstance(value, (list, tuple)) and not value):
                fail(config.node or RECORD, "model", f"gets '{name}' (a conditioning input that adds tokens to the "
                                                     f"{layout.family} attention the pack does not place): edit "
                                                     f"without it, or edit with a mask alone on a model without it")
        if layout.placement != "dit":
            dm = executor.class_obj.diffusion_model
            forward = options[FORWARD] = Forward(layout, config.order, config.plan, layout.tokens(dm, x.shape))
            config.stamped += 1
    if config.record is not None:
        config.record.evaluations["record"] += x.shape[0]
    if config.inject is not None:
        config.inject.source.evaluations["inject"] += x.shape[0]
    override = options.get("optimized_attention_override")
    check_override(config, override)
    stamped, seen = config.stamped - (forward is not None), config.seen
    out = executor(x, t, *args, **kwargs)
    if config.stamped > stamped and config.seen == seen:
        check_override(config, override, ran=False)
    if forward is not None and config.layout.placement == "count" and forward.calls != len(config.plan):
        fail_layout(options, f"the model call ran {forward.calls} attention calls where the layout has "
                             f"{len(config.plan)}")
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
    elif arch == "dit":
        dm = patcher.model.diffusion_model
        layout = config.layout = dit_layout(patcher)
        config.order = layout.order(dm)
        config.plan = layout.plan(dm) if layout.placement == "count" else None
        previous = options.get("optimized_attention_override")
        if not getattr(previous, "inversion_suite_hook", False):
            options["optimized_attention_override"] = dit_override(previous)
        if layout.placement == "dit":  # every block: single blocks learn the text length from the double blocks
            for kind, i in layout.layers(dm):
                key = layout.key(kind)
                previous = replace.get("dit", {}).get((key, i))
                if not getattr(previous, "inversion_suite_hook", False):
                    m.set_model_patch_replace(dit_stamp(layout, config.order, kind, i, previous), "dit", key, i)
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
