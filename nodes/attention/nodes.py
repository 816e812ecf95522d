"""The three Attention Edit nodes (Record, Inject, Report): declarations, conversions and reports."""
import torch

from ..host import io
from ...core import attention as A
from ..common import CATEGORY, fail, family_signature, model_family, widgets
from .constants import AttentionRecordType, BACKGROUND, INJECT, MASK_MODES, MODES, RECORD, REPORT, STORAGE
from .layers import classify, dit_layout, layer_name, select_layers
from .record import AttentionRecord, EditConfig, InjectPlan
from .hooks import existing_config, install
from .tokens import parse_reweight, token_ids, word_ids


class AttentionEditRecord(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_AttentionEditRecord", display_name="Attention Edit: Record (source)",
            category=CATEGORY,
            description="First half of an edit that keeps the photo. Returns a MODEL that records the source's "
                        "attention while it samples: use it for the exact inversion (BDIA Invert, Fixed-Point "
                        "Invert) and the source branch costs no extra model call. UNets (SD1.x/SDXL): "
                        "cross-attention maps and self-attention q, k (Prompt-to-Prompt). DiTs (SD3, Flux, Flux.2, "
                        "Chroma, Qwen-Image, HiDream, Z-Image, Lumina 2, Wan, HunyuanVideo, LTX-Video, Kandinsky 5, "
                        "Cosmos, …; the plan names the family and its token order): image-token values (and keys) "
                        "of the attention (RF-Edit, KV-Edit). Always: the source's prediction at every step and its "
                        "clean latent, for a masked edit (on any model, attention editable or not; the plan says "
                        "when a model's attention is out of reach). Then connect the record to Attention Edit: "
                        "Inject.",
            inputs=[
                io.Model.Input("model", tooltip="The diffusion model (a UNet or a DiT of a family the README lists). "
                                                "It is not changed."),
                io.String.Input("blocks", default="auto",
                                tooltip="Layers to record: 'all', or groups with optional index ranges, comma-"
                                        "separated. UNet groups input/middle/output (e.g. 'output.3-8'); DiTs "
                                        "double/single (dual- and single-stream blocks, e.g. Flux 'single.20-37') "
                                        "or block (Wan, LTX-Video, Kandinsky 5, Cosmos). auto = all UNet layers, "
                                        "the single blocks where a DiT has them, else all blocks."),
                io.Float.Input("steps", default=0.8, min=0.0, max=1.0, step=0.05,
                               tooltip="Fraction of the sampling steps, from the first (highest σ), to record. "
                                       "Memory grows with it; inject fractions cannot exceed it."),
                io.Boolean.Input("cross_attention", default=True,
                                 tooltip="UNets: record cross-attention maps (Prompt-to-Prompt). DiTs: unused."),
                io.Boolean.Input("self_attention", default=True,
                                 tooltip="UNets: record self-attention q, k (their maps). DiTs: record the image "
                                         "tokens' values (RF-Edit)."),
                io.Boolean.Input("keys", default=False,
                                 tooltip="KV-Edit: DiTs also record image-token keys (values come with "
                                         "self_attention); UNets also record self-attention values (keys come with "
                                         "self_attention). Key injection, and a masked edit's background with the "
                                         "source's keys and values, need them."),
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
        widgets(cls, locals())
        model_family(node, model.get_model_object("model_sampling"))
        arch, layers, unsupported = classify(model)
        if arch == "latent":  # attention not editable here: the source's trajectory only, for a masked edit
            record = AttentionRecord(model, arch, frozenset(), 0.0, False, False, False, storage)
            previous = existing_config(model)
            patched = install(model, EditConfig(record, previous.inject if previous else None), arch, frozenset(),
                              node)
            plan = (f"{node}: this model's attention cannot be edited (it {unsupported}); records the source's "
                    f"prediction at every step and its clean latent only, for a masked edit (Attention Edit: Inject "
                    f"with a mask). Recording adds no model call to the run that records.")
            return io.NodeOutput(patched, record, plan)
        if not (self_attention or (cross_attention and arch == "unet") or keys):
            fail(node, "self_attention", "or another record switch must be on (nothing would be recorded)")
        default = {"unet": "all", "dit": "single" if any(x[0] == "single" for x in layers) else "all"}[arch]
        chosen = select_layers(node, "blocks", blocks, layers, default)
        record = AttentionRecord(model, arch, chosen, steps, cross_attention, self_attention, keys, storage)
        previous = existing_config(model)
        patched = install(model, EditConfig(record, previous.inject if previous else None), arch, chosen, node)
        what = ({"unet": [w for w, on in (("cross-attention maps", record.cross), ("self-attention q,k",
                                                                                 record.self_attention),
                                          ("self-attention values", record.values)) if on],
                 "dit": [w for w, on in (("image values", record.self_attention), ("image keys", record.keys)) if on]}
                [arch])
        per_step = len(chosen) * ((record.cross + record.self_attention + record.values) if arch == "unet"
                                  else (record.self_attention + record.keys))
        family = "" if arch == "unet" else f" ({dit_layout(model).describe(model.model.diffusion_model)})"
        plan = (f"{node}: {' and '.join(what)} of {len(chosen)} layers{family} "
                f"({', '.join(layer_name(layer) for layer in sorted(chosen))}), first {steps:.0%} of the steps; "
                f"at most {per_step} tensors per step (positive rows only), the source's prediction at every step "
                f"and its clean latent, storage {storage}. Recording adds no "
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
                        "reweighting; self-attention maps). DiTs: image-token values (and keys) from the source "
                        "(RF-Edit, KV-Edit). Same prompt → same image as the plain regeneration. With a "
                        "mask (any model): only the masked region changes; outside it the result is the source "
                        "latent exactly, and the edit sees the source's background at every step, at no extra "
                        "model call.",
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
                io.Mask.Input("mask", optional=True,
                              tooltip="Optional: where to edit (1 = edit, 0 = keep), e.g. from the mask editor, "
                                      "Load Image's alpha or a segmentation node; any resolution (averaged onto the "
                                      "latent grid), soft or binary; one mask, one per image, or for video one per "
                                      "frame. Outside it the result is the source latent exactly."),
                io.Int.Input("mask_grow", default=0, min=-64, max=64,
                             tooltip="Grow (> 0) or shrink (< 0) the region to edit by this many latent pixels "
                                     "(8 image pixels each on SD/Flux)."),
                io.Int.Input("mask_feather", default=0, min=0, max=64,
                             tooltip="Soften the mask's edge over this many latent pixels (the edited region "
                                     "spreads this far outward and fades as far inward)."),
                io.Boolean.Input("mask_invert", default=False,
                                 tooltip="Edit where the mask is 0 instead (applied before grow and feather)."),
                io.Combo.Input("mask_mode", options=MASK_MODES, default="soft",
                               tooltip="soft: a latent pixel partly covered is edited partly. binary: a latent "
                                       "pixel is edited when the mask covers at least half of it."),
                io.Combo.Input("background", options=BACKGROUND, default="source attention",
                               tooltip="With a mask: source attention = the background's attention keys and values "
                                       "come from the source in the recorded layers and steps (KV-Edit: the edit "
                                       "sees the source's background, for coherent seams; needs Record's "
                                       "self_attention, and keys for both). latent only = the background is kept "
                                       "in the latent alone."),
            ],
            outputs=[
                io.Model.Output(display_name="edit_model", tooltip="Regenerate the inversion with this."),
                io.String.Output(display_name="plan", tooltip="What is injected where."),
            ])

    @classmethod
    def execute(cls, model, record, blocks, self_steps, cross_steps, cross_mode, inject_keys, clip=None,
                source_text="", edit_text="", reweight="", blend_words="", blend_threshold=0.3, mask=None,
                mask_grow=0, mask_feather=0, mask_invert=False, mask_mode="soft",
                background="source attention") -> io.NodeOutput:
        node = INJECT
        if not isinstance(record, AttentionRecord):
            fail(node, "record", "must come from Attention Edit: Record")
        if record.model() is not model.model:
            fail(node, "model", f"must be the model the record was made from (a {record.signature} model); "
                                f"this is another model", family_signature(model.model))
        options = widgets(cls, locals())
        mask, mask_options = check_mask(node, mask, options)
        arch, layers, unsupported = classify(model)
        previous = existing_config(model)
        if arch == "latent":
            if mask is None:
                fail(node, "mask", f"is required on this model: its attention cannot be edited (it {unsupported}); "
                                   f"with a mask the edit changes the masked region only")
            plan = InjectPlan(record, frozenset(), 0.0, 0.0, "word swap", None, None, False, mask=mask,
                              mask_options=mask_options, background=False)
            patched = install(model, EditConfig(previous.record if previous else None, plan), arch, frozenset(), node)
            return io.NodeOutput(patched, f"{node}: masked edit ({mask_text(mask, mask_options)}); attention not "
                                          f"edited on this model. One model evaluation per image per step; the mask "
                                          f"adds none.")
        cross_steps = cross_steps if arch == "unet" else 0.0
        check_steps(node, record, arch, options, cross_steps)
        chosen = chosen_layers(node, record, blocks, layers)
        alignment, scales = token_plan(node, clip, arch, options, cross_steps)
        blend = local_blend(node, record, arch, clip, options)
        use_background = mask is not None and background == BACKGROUND[0]
        plan = InjectPlan(record, chosen, self_steps, cross_steps, cross_mode, alignment, scales, inject_keys, blend,
                          mask=mask, mask_options=mask_options, background=use_background)
        patched = install(model, EditConfig(previous.record if previous else None, plan), arch, chosen, node)
        return io.NodeOutput(patched, plan_text(node, record, plan, arch, options, mask_options))


def check_steps(node, record, arch, options, cross_steps):
    """The step fractions and switches against what the record holds."""
    if options["self_steps"] > 0 and not record.self_attention:
        fail(node, "self_steps", "must be 0: the record holds no self-attention/values (turn them on in Record)")
    if options["inject_keys"] and not record.keys:
        fail(node, "inject_keys", "needs keys in the record (Record's keys switch, DiTs only)")
    if arch == "unet" and cross_steps > 0 and not record.cross:
        fail(node, "cross_steps", "must be 0: the record holds no cross-attention maps")
    for name, value in (("self_steps", options["self_steps"]), ("cross_steps", cross_steps)):
        if value > record.fraction:
            fail(node, name, f"must not exceed the recorded fraction of steps ({record.fraction})", value)


def chosen_layers(node, record, blocks, layers):
    """The layers the ``blocks`` widget names ('all': every recorded one), which must all be recorded."""
    spec = (blocks or "").strip()
    chosen = record.layers if spec in ("", "all") else select_layers(node, "blocks", spec, layers, "all")
    if not chosen <= record.layers:
        missing = ", ".join(layer_name(x) for x in sorted(chosen - record.layers))
        fail(node, "blocks", "must be recorded layers", f"{missing} not recorded")
    return chosen


def _texts(options):
    return bool(options["source_text"].strip()) and bool(options["edit_text"].strip())


def token_plan(node, clip, arch, options, cross_steps):
    """Prompt-to-Prompt's token work on UNets: (alignment for refine, scales for reweight), each None if unused; a
    word swap's prompts must have as many tokens."""
    if arch != "unet" or cross_steps <= 0:
        return None, None
    mode, reweight = options["cross_mode"], options["reweight"].strip()
    if (mode == "refine" or reweight) and (clip is None or not _texts(options)):
        fail(node, "clip", "is required, with source_text and edit_text, for "
                           f"{'refine' if mode == 'refine' else 'reweight'}")
    if clip is None or not _texts(options):
        return None, None
    src, edit = token_ids(clip, options["source_text"]), token_ids(clip, options["edit_text"])
    if mode == "word swap" and A.content_length(src) != A.content_length(edit):
        fail(node, "edit_text", "must have as many tokens as source_text for a word swap (use refine for prompts of "
                                "different lengths)", f"{A.content_length(edit)} vs {A.content_length(src)}")
    alignment = A.token_alignment(src, edit) if mode == "refine" else None
    return alignment, parse_reweight(node, clip, reweight, edit) if reweight else None


def local_blend(node, record, arch, clip, options):
    """P2P's local blend: (source token positions, edit token positions, threshold) of ``blend_words``, or None."""
    words = options["blend_words"].strip()
    if not words:
        return None
    if arch != "unet" or not record.cross:
        fail(node, "blend_words", "needs a UNet record with cross-attention maps (local blend is P2P's, SD1.x/SDXL)")
    if clip is None or not _texts(options):
        fail(node, "clip", "is required, with source_text and edit_text, for a local blend")
    src, edit = token_ids(clip, options["source_text"]), token_ids(clip, options["edit_text"])
    positions = ([], [])
    for word in (w.strip() for w in words.split(",")):
        if word:
            found = A.find_tokens(src, word_ids(clip, word)), A.find_tokens(edit, word_ids(clip, word))
            if not (found[0] or found[1]):
                fail(node, "blend_words", f"names '{word}', which is in neither source_text nor edit_text")
            positions[0].extend(found[0])
            positions[1].extend(found[1])
    return positions[0], positions[1], options["blend_threshold"]


def plan_text(node, record, plan, arch, options, mask_options):
    """The plan output: what is injected where, and the cost."""
    mask = plan.mask
    self_steps, cross_steps = options["self_steps"], options["cross_steps"]
    what = (f"self-attention maps for the first {self_steps:.0%} of steps, cross-attention ({options['cross_mode']}"
            f"{', reweighted' if plan.scales is not None else ''}) for the first {cross_steps:.0%}"
            if arch == "unet" else
            f"image {'values and keys' if options['inject_keys'] else 'values'} for the first {self_steps:.0%} of "
            f"steps")
    if plan.blend is not None:
        what += f"; local blend on '{options['blend_words'].strip()}' (threshold {options['blend_threshold']})"
    if mask is not None:
        kinds = {"unet": [n for n, k in (("keys", "self"), ("values", "self_v")) if record.wants(k)],
                 "dit": [n for n, k in (("keys", "k"), ("values", "v")) if record.wants(k)]}[arch]
        what += f"; masked ({mask_text(mask, mask_options)}), background " + (
            f"{' and '.join(kinds)} from the source in the recorded layers and first {record.fraction:.0%} of "
            f"steps" if plan.background and kinds else "in the latent only" if not plan.background else
            "in the latent only (the record holds no keys or values)")
    return (f"{node}: {what}, in {len(plan.layers)} layers; one model evaluation per image per step (the source "
            f"branch was recorded, not recomputed).")


def check_mask(node, mask, widget_values):
    """The MASK input (a CPU float tensor, or None) and the ``core.mask.latent_mask`` options of the mask widgets
    (``widget_values``, already checked against their declarations)."""
    options = dict(grow_by=widget_values["mask_grow"], feather_by=widget_values["mask_feather"],
                   invert=widget_values["mask_invert"], binary=widget_values["mask_mode"] == "binary")
    if mask is None:
        return None, options
    if not torch.is_tensor(mask) or mask.ndim not in (2, 3) or mask.numel() == 0:
        fail(node, "mask", "must be a MASK ([masks, height, width])",
             f"shape {list(mask.shape)}" if torch.is_tensor(mask) else type(mask).__name__)
    mask = mask.detach().to("cpu", torch.float32)
    if not bool(torch.isfinite(mask).all()):
        fail(node, "mask", "must hold finite values in [0, 1]", "NaN or inf")
    return mask.clamp(0.0, 1.0), options


def mask_text(mask, options):
    parts = [f"{mask.shape[0] if mask.ndim == 3 else 1} mask(s) of {mask.shape[-2]}×{mask.shape[-1]}"]
    parts += [f"grow {options['grow_by']}"] if options["grow_by"] else []
    parts += [f"feather {options['feather_by']}"] if options["feather_by"] else []
    parts += ["inverted"] if options["invert"] else []
    parts += ["binary"] if options["binary"] else []
    return ", ".join(parts)


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
            f"{record.evaluations['inject']} model evaluations." + video_report(record) + masked_report(record))


def video_report(record):
    """Video records: the attention tensors' memory per latent frame (they grow linearly with the frames)."""
    if record.shape is None or len(record.shape) != 5 or record.shape[2] < 2:
        return ""
    attention = sum(record.nbytes_of(what) for what in ("v", "k"))
    frames = record.shape[0] * record.shape[2]
    return (f" Video: {attention / frames / 2 ** 20:.3f} MiB per latent frame of attention ({record.shape[2]} latent "
            f"frames × {record.shape[0]} video{'s' * (record.shape[0] != 1)}).")


def masked_report(record):
    m = record.masked
    if not m:
        return ""
    drift = "" if m["drift"] is None else (
        f"; before the paste the kept background differed from the source by {m['drift']:.1e} relative (how closely "
        f"it followed the source's trajectory)")
    return (f" Masked edit: {m['mean']:.0%} of the latent edited (mask mean), {m['kept']:.0%} kept exactly (the "
            f"source latent){drift}; the mask added 0 model evaluations and "
            f"{(m['bytes'] + record.nbytes_of('denoised')) / 2 ** 20:.2f} MiB (the source's clean latent and its "
            f"prediction per step).")
