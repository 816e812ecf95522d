"""The three Attention Edit nodes (Record, Inject, Report): declarations, conversions and reports."""
from ..host import io
from ...core import attention as A
from ..common import CATEGORY, check_range, fail, family_signature, model_family
from .constants import AttentionRecordType, INJECT, MODES, RECORD, REPORT, STORAGE
from .layers import architecture, layer_name, select_layers
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
