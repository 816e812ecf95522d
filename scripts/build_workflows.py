"""Write the bundled example workflows (UI format) and their thumbnails into workflows/, laid out from the live
node definitions.

Runs a headless ComfyUI (COMFYUI_PATH) with the pack loaded, reads /object_info so widget order and socket
types are ComfyUI's own, and checks every workflow (scripts/workflow_tools.check_workflow) before writing it:

    COMFYUI_PATH=~/ComfyUI python scripts/build_workflows.py

Adding a workflow: write one function `def my_workflow(g):` that opens stages with `with g.stage("…"):` and
adds nodes with `g.node(...)` (values by input name; a connection is `other_node[slot]`), then list it in
WORKFLOWS with its file name (the title the template browser shows; the number sets the order).

Each workflow is laid out from the node definitions of the oldest ComfyUI it runs on (REQUIRES; 0.3.64 unless
listed), so a run writes the workflows of the ComfyUI it runs on and leaves the others as they are: run it once
with each (0.3.64 for 01-17, 0.30.0 for 18-19). The run on the newer ComfyUI also records that ComfyUI's
definitions of the stock nodes its workflows use (tests/newer_stock_nodes.json), so the tests can check those
workflows on a ComfyUI that lacks some of those nodes.
"""
import contextlib
import json
import pathlib
import sys
import textwrap

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

from workflow_tools import (CONTROL, IMAGE_NODES, MIN_IMAGE_NODE_HEIGHT, NEWER_STOCK, SCREEN,  # noqa: E402
                            TITLE_HEIGHT, UI_ONLY, UPLOAD, check_workflow, input_specs, is_widget, stock_schema,
                            widget_slots)

PACK_ID, VERSION = "inversion-suite", "0.1.0"
EXAMPLE = "inversion_suite_"  # example_inputs/ file prefix (scripts/make_examples.py)

# Model files the workflows load, with the download entry the frontend (1.58+) offers as a Download button.
MODELS = {
    "v1-5-pruned-emaonly-fp16.safetensors": (
        "checkpoints", "https://huggingface.co/Comfy-Org/stable-diffusion-v1-5-archive/resolve/main/"
                       "v1-5-pruned-emaonly-fp16.safetensors"),
    "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors": (
        "checkpoints", "https://huggingface.co/Comfy-Org/stable-diffusion-3.5-fp8/resolve/main/"
                       "sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors"),
    "flux1-dev.safetensors": (
        "diffusion_models", "https://huggingface.co/black-forest-labs/FLUX.1-dev/resolve/main/flux1-dev.safetensors"),
    "t5xxl_fp16.safetensors": (
        "text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/t5xxl_fp16.safetensors"),
    "clip_l.safetensors": (
        "text_encoders", "https://huggingface.co/comfyanonymous/flux_text_encoders/resolve/main/clip_l.safetensors"),
    "ae.safetensors": (
        "vae", "https://huggingface.co/Comfy-Org/Lumina_Image_2.0_Repackaged/resolve/main/split_files/vae/"
               "ae.safetensors"),
    "wan2.1_t2v_1.3B_fp16.safetensors": (
        "diffusion_models", "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
                            "diffusion_models/wan2.1_t2v_1.3B_fp16.safetensors"),
    "umt5_xxl_fp8_e4m3fn_scaled.safetensors": (
        "text_encoders", "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/"
                         "text_encoders/umt5_xxl_fp8_e4m3fn_scaled.safetensors"),
    "wan_2.1_vae.safetensors": (
        "vae", "https://huggingface.co/Comfy-Org/Wan_2.1_ComfyUI_repackaged/resolve/main/split_files/vae/"
               "wan_2.1_vae.safetensors"),
    # Flux.2 Klein 4B (Apache 2.0): the base model (the step-distilled flux-2-klein-4b sits beside it)
    "flux-2-klein-base-4b.safetensors": (
        "diffusion_models", "https://huggingface.co/Comfy-Org/Flux-2-Klein-4B/resolve/main/split_files/"
                            "diffusion_models/flux-2-klein-base-4b.safetensors"),
    "qwen_3_4b.safetensors": (
        "text_encoders", "https://huggingface.co/Comfy-Org/Flux-2-Klein-4B/resolve/main/split_files/text_encoders/"
                         "qwen_3_4b.safetensors"),
    "flux2-vae.safetensors": (
        "vae", "https://huggingface.co/Comfy-Org/Flux-2-Klein-4B/resolve/main/split_files/vae/flux2-vae.safetensors"),
    # HunyuanVideo 1.5, 480p text-to-video, CFG-distilled (one model call per step at cfg 1)
    "hunyuanvideo1.5_480p_t2v_cfg_distilled_fp16.safetensors": (
        "diffusion_models", "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/"
                            "diffusion_models/hunyuanvideo1.5_480p_t2v_cfg_distilled_fp16.safetensors"),
    "qwen_2.5_vl_7b_fp8_scaled.safetensors": (
        "text_encoders", "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/"
                         "text_encoders/qwen_2.5_vl_7b_fp8_scaled.safetensors"),
    "byt5_small_glyphxl_fp16.safetensors": (
        "text_encoders", "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/"
                         "text_encoders/byt5_small_glyphxl_fp16.safetensors"),
    "hunyuanvideo15_vae_fp16.safetensors": (
        "vae", "https://huggingface.co/Comfy-Org/HunyuanVideo_1.5_repackaged/resolve/main/split_files/vae/"
               "hunyuanvideo15_vae_fp16.safetensors"),
}

# layout (canvas units)
NODE_W, COLUMN_GAP, ROW_GAP, GROUP_PAD, GROUP_TITLE = 340, 70, 40, 16, 46
NOTE_W = 400
STAGE_GAP = 40
STAGE_COLOURS = ["#3f789e", "#8A8", "#a1309b", "#b06634", "#88A", "#444"]


class Graph:
    """Nodes in stages (one group each, laid out as columns left to right), links, and one note."""

    def __init__(self, info, core_version):
        self.info, self.nodes, self.links, self.stages, self.current, self.text = info, [], [], [], None, ""
        self.core_version = core_version  # the ComfyUI the stock nodes' definitions come from

    @contextlib.contextmanager
    def stage(self, title):
        self.stages.append((title, []))
        self.current = self.stages[-1][1]
        yield
        self.current = None

    def node(self, kind, title=None, **values):
        if self.current is None:
            raise RuntimeError(f"{kind}: open a stage first (with g.stage(...))")
        if kind not in self.info:
            raise RuntimeError(f"{kind}: ComfyUI {self.core_version} has no such node")
        node_def = self.info[kind]
        nid = len(self.nodes) + 1
        sources = {k: v for k, v in values.items() if isinstance(v, tuple)}
        inputs = []
        for name, k, options, _ in input_specs(node_def):
            if name in sources or not is_widget(k, options):
                link = None
                if name in sources:
                    src, slot = sources[name]
                    link = len(self.links) + 1
                    kind_out = self.info[self.nodes[src - 1]["type"]]["output"][slot]
                    self.links.append([link, src, slot, nid, len(inputs), kind_out])
                    self.nodes[src - 1]["outputs"][slot]["links"].append(link)
                inputs.append({"name": name, "type": k, "link": link})
        specs = {n: o for n, _, o, _ in input_specs(node_def)}
        widgets, multiline = [], 0
        for name in widget_slots(node_def):
            if name == CONTROL:
                widgets.append("fixed")
            elif name == UPLOAD:
                widgets.append("image")
            elif name not in sources:
                spec = specs[name]
                multiline += bool(spec.get("multiline"))
                widgets.append(values.get(name, spec.get("default", (spec.get("options") or [None])[0])))
        outputs = [{"name": name, "type": t, "links": [], "slot_index": i}
                   for i, (name, t) in enumerate(zip(node_def["output_name"], node_def["output"]))]
        height = 26 * max(len(inputs), len(outputs)) + 28 * len(widgets) + 90 * multiline + 20
        if kind in IMAGE_NODES | {"SaveAnimatedWEBP"}:  # a square photo at the node's width, or a wide chart
            # (or the saved video's frames), below the widgets
            height = max(height, NODE_W + 110 if kind in ("LoadImage", "LoadImageMask", "SaveImage")
                         else MIN_IMAGE_NODE_HEIGHT + 20)
        cnr = PACK_ID if kind.startswith("InversionSuite_") else "comfy-core"
        properties = {"Node name for S&R": kind, "cnr_id": cnr, "ver": VERSION if cnr == PACK_ID else self.core_version}
        files = [v for v in widgets if isinstance(v, str) and v in MODELS]
        if files:
            properties["models"] = [{"name": f, "url": MODELS[f][1], "directory": MODELS[f][0]} for f in files]
        node = {"id": nid, "type": kind, "pos": [0, 0], "size": [NODE_W, height], "flags": {}, "order": nid - 1,
                "mode": 0, "inputs": inputs, "outputs": outputs, "properties": properties, "widgets_values": widgets}
        if title:
            node["title"] = title
        self.nodes.append(node)
        self.current.append(node)
        return Ref(nid)

    def note(self, text):
        """The read-me note at the left of the graph (markdown)."""
        self.text = textwrap.dedent(text).strip()

    def layout(self, max_column_h):
        """Stages left to right, each in its own group: a stage goes below the previous one when the column has
        room, else starts a new column; a stage taller than a column wraps into several."""
        groups, x, column_bottom, column_w = [], 0, None, 0
        self.nodes = [n for n in self.nodes if n["type"] != "MarkdownNote"]
        if self.text:
            lines = sum(1 + len(line) // 44 for line in self.text.splitlines())
            note = {"id": len(self.nodes) + 1, "type": "MarkdownNote", "pos": [0, TITLE_HEIGHT],
                    "size": [NOTE_W, 60 + 24 * lines], "flags": {}, "order": len(self.nodes), "mode": 0,
                    "inputs": [], "outputs": [], "properties": {}, "widgets_values": [self.text],
                    "title": "Read me", "color": "#432", "bgcolor": "#653"}
            self.nodes.append(note)
            column_bottom, column_w = TITLE_HEIGHT + note["size"][1], NOTE_W
        for index, (title, members) in enumerate(self.stages):
            height = GROUP_TITLE + sum(n["size"][1] + TITLE_HEIGHT + ROW_GAP for n in members) - ROW_GAP + GROUP_PAD
            if column_bottom is not None and column_bottom + STAGE_GAP + height <= max_column_h:
                group_top = column_bottom + STAGE_GAP  # room below the previous stage: stack
                left = x + GROUP_PAD
            else:
                left = x + (column_w + COLUMN_GAP if column_bottom is not None else GROUP_PAD)
                group_top = 0
            top = group_top + GROUP_TITLE + TITLE_HEIGHT
            runs = split_evenly([n["size"][1] + TITLE_HEIGHT + ROW_GAP for n in members], max_column_h - top + ROW_GAP)
            nx, y, bottom = left, top, top
            for i, node in enumerate(members):
                if i in runs:
                    nx, y = nx + NODE_W + COLUMN_GAP // 2, top
                node["pos"] = [nx, y]
                y += node["size"][1] + TITLE_HEIGHT + ROW_GAP
                bottom = max(bottom, y - ROW_GAP)
            right = nx + NODE_W
            groups.append({"title": title, "bounding": [left - GROUP_PAD, group_top, right - left + 2 * GROUP_PAD,
                                                        bottom + GROUP_PAD - group_top],
                           "color": STAGE_COLOURS[index % len(STAGE_COLOURS)], "font_size": 24, "flags": {}})
            if group_top == 0:
                x, column_w = left - GROUP_PAD, right - left + 2 * GROUP_PAD
            else:  # stacked: the column is as wide as its widest stage
                column_w = max(column_w, right + GROUP_PAD - x)
            column_bottom = bottom + GROUP_PAD if right - left == NODE_W else max_column_h  # wrapped: column full
        return groups

    def fit(self, max_column_h):
        """Lay out with this column height; return the zoom and offset that show the whole graph on the screen."""
        groups = self.layout(max_column_h)
        boxes = [(n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])
                 for n in self.nodes] + [(g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                                          g["bounding"][1] + g["bounding"][3]) for g in groups]
        x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
        x1, y1 = max(b[2] for b in boxes), max(b[3] for b in boxes)
        margin_x, margin_top, margin_bottom = 30, 90, 60  # leave the menu bar and the bottom panel free
        scale = min(1.0, (SCREEN[0] - 2 * margin_x) / (x1 - x0), (SCREEN[1] - margin_top - margin_bottom) / (y1 - y0))
        scale = int(scale * 100) / 100
        offset = [margin_x / scale - x0, margin_top / scale - y0]
        return scale, offset, groups

    def workflow(self):
        """The UI workflow, laid out with the column height that gives the largest zoom at load."""
        best = max(range(800, 1801, 50), key=lambda h: (self.fit(h)[0], -h))
        scale, offset, groups = self.fit(best)
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": groups, "config": {},
                "extra": {"ds": {"scale": scale, "offset": offset}}, "version": 0.4}


def split_evenly(heights, room):
    """Indices where a stage taller than ``room`` starts a new column: the fewest columns, of similar heights,
    each run of nodes kept in order (so Load Image and its VAE Encode stay together when they can)."""
    total = sum(heights)
    columns = 1
    while True:
        target, starts, used = total / columns, set(), 0.0
        for i, h in enumerate(heights):
            if used > 0 and (used + h / 2 > target or used + h > room):
                starts.add(i)
                used = 0.0
            used += h
        if len(starts) < columns or columns >= len(heights):
            return starts
        columns += 1


class Ref(int):
    def __getitem__(self, slot):
        return (int(self), slot)


# ---------------------------------------------------------------- shared pieces
def sd15(g):
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="v1-5-pruned-emaonly-fp16.safetensors")
    return ckpt[0], ckpt[1], ckpt[2]


def sd35(g):
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="sd3.5_medium_incl_clips_t5xxlfp8scaled.safetensors")
    return ckpt[0], ckpt[1], ckpt[2]


def flux(g):
    unet = g.node("UNETLoader", unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = g.node("DualCLIPLoader", clip_name1="t5xxl_fp16.safetensors", clip_name2="clip_l.safetensors", type="flux")
    vae = g.node("VAELoader", vae_name="ae.safetensors")
    return unet[0], clip[0], vae[0]


def encode_image(g, vae, name, title="photo"):
    """Load Image → VAE Encode: the pack's nodes take LATENTs."""
    image = g.node("LoadImage", title=f"Load {title}", image=EXAMPLE + name)
    return g.node("VAEEncode", title=f"VAE Encode {title} → LATENT", pixels=image[0], vae=vae)[0]


def flux_prompt(g, clip, text, title=None):
    """Flux conditioning: CLIPTextEncode → FluxGuidance 3.5."""
    cond = g.node("CLIPTextEncode", title=title, text=text, clip=clip)
    return g.node("FluxGuidance", conditioning=cond[0], guidance=3.5)[0]


def flux_guider(g, model, clip, text, title=None):
    """A GUIDER for Flux (BasicGuider over flux_prompt)."""
    return g.node("BasicGuider", model=model, conditioning=flux_prompt(g, clip, text, title))[0]


def decode_and_save(g, vae, latent, prefix, title="result"):
    g.node("SaveImage", title=f"Save {title}", images=g.node("VAEDecode", samples=latent, vae=vae)[0],
           filename_prefix=prefix)


def preview(g, image, title):
    g.node("PreviewImage", title=title, images=image)


def sd15_photo_and_prompts(g, edit):
    """The SD1.5 photo-edit opening: stage 1 loads the model and VAE-encodes the photo, stage 2 writes the source
    prompt, the edited prompt (the source's scene followed by ``edit``) and a negative."""
    with g.stage("1 · Load model and photo"):
        model, clip, vae = sd15(g)
        latent = encode_image(g, vae, "photo.png")
    with g.stage("2 · Prompts"):
        scene = "a photo of a house with a tree and a blue car"
        src = g.node("CLIPTextEncode", title="Source prompt (describes the photo)", text=f"{scene}, sunny day",
                     clip=clip)
        edit = g.node("CLIPTextEncode", title="Edited prompt", text=scene + edit, clip=clip)
        neg = g.node("CLIPTextEncode", title="Negative prompt", text="blurry, low quality", clip=clip)
    return model, clip, vae, latent, src, edit, neg


# ---------------------------------------------------------------- one function per workflow
def fixed_point_sd15(g):
    g.note("""
        ## Fixed-Point Invert: edit a photo (SD1.5/SDXL)
        1. **Load**: the photo is VAE-encoded to a LATENT.
        2. **Invert**: Fixed-Point Invert finds the noise that regenerates the photo under the *source* prompt.
        3. **Edit**: SamplerCustomAdvanced regenerates from that NOISE with the *edited* prompt on the same sigmas.

        Keep the prompts alike except for the edit; cfg 1 inverts best. The convergence picture shows each step's
        residual against the tolerance; the report is shown on the node.""")
    model, clip, vae, latent, src, edit, neg = sd15_photo_and_prompts(g, ", snowy winter day")
    with g.stage("3 · Invert"):
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=30, denoise=1.0)
        inv = g.node("InversionSuite_FixedPointInvert", model=model, positive=src[0], latent=latent, sigmas=sigmas[0])
        preview(g, inv[3], "Convergence per step")
    with g.stage("4 · Regenerate with the edit"):
        guider = g.node("CFGGuider", model=model, positive=edit[0], negative=neg[0], cfg=3.0)
        sampler = g.node("KSamplerSelect", sampler_name="euler")
        out = g.node("SamplerCustomAdvanced", noise=inv[1], guider=guider[0], sampler=sampler[0], sigmas=sigmas[0],
                     latent_image=latent)
    with g.stage("5 · Decode and save"):
        decode_and_save(g, vae, out[0], "inversion_suite/fixed_point_edit")


def fixed_point_flux(g):
    g.note("""
        ## Fixed-Point Invert: edit a photo (Flux)
        Stock FlipSigmas unsampling returns inf on flow models. Fixed-Point Invert's NOISE output starts any stock
        sampler exactly at the inverted state.
        1. **Load** and VAE-encode the photo. 2. **Invert** with the source prompt.
        3. **Regenerate** with the edited prompt on the same sigmas. 4. **Decode**.""")
    with g.stage("1 · Load models and photo"):
        model, clip, vae = flux(g)
        latent = encode_image(g, vae, "photo.png")
    with g.stage("2 · Prompts"):
        src = flux_prompt(g, clip, "a photo of a house with a tree and a blue car, sunny day",
                             "Source prompt (describes the photo)")
        edit_guider = flux_guider(g, model, clip, "a photo of a house with a tree and a blue car, snowy winter "
                                                     "day", "Edited prompt")
    with g.stage("3 · Invert"):
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=28, denoise=1.0)
        inv = g.node("InversionSuite_FixedPointInvert", model=model, positive=src, latent=latent, sigmas=sigmas[0])
        preview(g, inv[3], "Convergence per step")
    with g.stage("4 · Regenerate with the edit"):
        sampler = g.node("KSamplerSelect", sampler_name="euler")
        out = g.node("SamplerCustomAdvanced", noise=inv[1], guider=edit_guider, sampler=sampler[0], sigmas=sigmas[0],
                     latent_image=latent)
    with g.stage("5 · Decode and save"):
        decode_and_save(g, vae, out[0], "inversion_suite/fixed_point_flux_edit")


def fixed_point_sampler_sd15(g):
    g.note("""
        ## Fixed-Point Inversion Sampler (SD1.5/SDXL)
        The sampler form of fixed-point inversion, for graphs built around SamplerCustomAdvanced:
        1. **Invert**: FlipSigmas makes the schedule ascend; DisableNoise; the sampler inverts the photo's LATENT.
        2. **Regenerate**: the inverted LATENT is sampled down the original sigmas with DisableNoise and the
           edited prompt. (ε/v models only; for Flux/SD3 use Fixed-Point Invert's NOISE output.)""")
    model, clip, vae, latent, src, edit, neg = sd15_photo_and_prompts(g, " at sunset")
    with g.stage("3 · Invert (flipped sigmas)"):
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=30, denoise=1.0)
        flipped = g.node("FlipSigmas", sigmas=sigmas[0])
        inv_guider = g.node("CFGGuider", title="Source guider (cfg 1)", model=model, positive=src[0],
                            negative=neg[0], cfg=1.0)
        sampler = g.node("InversionSuite_FixedPointInversionSampler")
        off = g.node("DisableNoise")
        inverted = g.node("SamplerCustomAdvanced", title="Invert", noise=off[0], guider=inv_guider[0],
                          sampler=sampler[0], sigmas=flipped[0], latent_image=latent)
    with g.stage("4 · Regenerate with the edit"):
        guider = g.node("CFGGuider", title="Edited guider", model=model, positive=edit[0], negative=neg[0], cfg=3.0)
        euler = g.node("KSamplerSelect", sampler_name="euler")
        out = g.node("SamplerCustomAdvanced", title="Regenerate", noise=off[0], guider=guider[0], sampler=euler[0],
                     sigmas=sigmas[0], latent_image=inverted[0])
    with g.stage("5 · Decode and save"):
        decode_and_save(g, vae, out[0], "inversion_suite/fixed_point_sampler_edit")


def bdia_edit(g, family):
    g.note(f"""
        ## BDIA exact inversion: edit a photo ({family})
        BDIA Invert runs the sampler backwards (one model call per step) and hands its NOISE and the pair of latents
        to BDIA Sampler. With the source prompt the photo comes back to float precision; with the edited prompt
        the edit is applied. Use the same sigmas, method and γ on both sides.""")
    with g.stage("1 · Load models and photo"):
        if family == "Flux":
            model, clip, vae = flux(g)
        else:
            model, clip, vae = sd15(g)
        latent = encode_image(g, vae, "portrait.png", "portrait")
    with g.stage("2 · Prompts"):
        if family == "Flux":
            src_guider = flux_guider(g, model, clip, "a portrait of a man with brown hair", "Source prompt")
            edit_guider = flux_guider(g, model, clip, "a portrait of a man with red hair", "Edited prompt")
            steps = 28
        else:
            neg = g.node("CLIPTextEncode", title="Negative prompt", text="", clip=clip)
            src = g.node("CLIPTextEncode", title="Source prompt", text="a portrait of a man with brown hair",
                         clip=clip)
            edit = g.node("CLIPTextEncode", title="Edited prompt", text="a portrait of a man with a mustache",
                          clip=clip)
            src_guider = g.node("CFGGuider", model=model, positive=src[0], negative=neg[0], cfg=3.0)[0]
            edit_guider = g.node("CFGGuider", model=model, positive=edit[0], negative=neg[0], cfg=3.0)[0]
            steps = 50
    with g.stage("3 · Invert exactly"):
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=0.8)
        inv = g.node("InversionSuite_BDIAInvert", model=model, guider=src_guider, latent=latent, sigmas=sigmas[0],
                     method="bdia", gamma=0.96)
    with g.stage("4 · Regenerate with the edit"):
        sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
        out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider, sampler=sampler[0], sigmas=sigmas[0],
                     latent_image=latent)
    with g.stage("5 · Decode and save"):
        decode_and_save(g, vae, out[0], f"inversion_suite/bdia_{family.lower().replace('.', '')}_edit")


def bdia_text_to_image(g):
    g.note("""
        ## BDIA Sampler: text to image (SD1.5/SDXL)
        BDIA Sampler as a drop-in SAMPLER: γ = 1 is the leapfrog rule (the paper's choice at 40+ steps), smaller γ
        damps more at few steps. The result can later be inverted exactly with BDIA Invert on the same sigmas.""")
    with g.stage("1 · Load model"):
        model, clip, vae = sd15(g)
    with g.stage("2 · Prompts"):
        pos = g.node("CLIPTextEncode", title="Prompt", text="a watercolour painting of a lighthouse at dawn", clip=clip)
        neg = g.node("CLIPTextEncode", title="Negative prompt", text="blurry", clip=clip)
    with g.stage("3 · Sample with BDIA"):
        guider = g.node("CFGGuider", model=model, positive=pos[0], negative=neg[0], cfg=5.0)
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=40, denoise=1.0)
        sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=1.0)
        noise = g.node("RandomNoise", noise_seed=42)
        empty = g.node("EmptyLatentImage", width=512, height=512, batch_size=1)
        out = g.node("SamplerCustomAdvanced", noise=noise[0], guider=guider[0], sampler=sampler[0], sigmas=sigmas[0],
                     latent_image=empty[0])
    with g.stage("4 · Decode and save"):
        decode_and_save(g, vae, out[0], "inversion_suite/bdia_t2i")


def group_inversion(g, note, a_name, b_name, schedule, prompt, titles):
    g.note(note)
    with g.stage("1 · Load models"):
        model, clip, vae = flux(g)
    with g.stage("2 · Load images (VAE Encode → LATENT)"):
        a = encode_image(g, vae, a_name, titles[0])
        b = encode_image(g, vae, b_name, titles[1])
    with g.stage("3 · Prompt"):
        cond = flux_prompt(g, clip, prompt, "Prompt describing the image")
    with g.stage("4 · Group inversion"):
        inv = g.node("InversionSuite_GroupInversion", model=model, positive=cond, image_a=a, image_b=b,
                     schedule=schedule, sigma=0.4, iterations=24, burn_in=4)
        preview(g, inv[3], "Iterate distances (clusters)")
    with g.stage("5 · Decode every centre"):
        preview(g, g.node("VAEDecode", samples=inv[0], vae=vae)[0], "Every cluster centre: pick one")


def group_enhance(g):
    group_inversion(g, """
        ## Group Inversion: enhance a degraded photo (Flux)
        Image A is the degraded photo, image B a lightly enhanced copy (e.g. sharpened); schedule A,A,B.
        Every cluster centre is decoded: pick the cleanest from the batch (the paper picks one centre per task by
        eye). The distance map shows the clusters: a chequer of period p means p clusters.""",
                    "portrait_degraded.png", "portrait_lightly_enhanced.png", "A,A,B",
                    "a portrait photo of a man, high quality", ("image A: degraded", "image B: lightly enhanced"))


def group_recolour(g):
    group_inversion(g, """
        ## Group Inversion: recolour with strokes (Flux)
        Image A is the photo, image B the same photo with colour strokes painted where the new colour should go;
        schedule A,B,B. The centres blend the strokes into a natural recolouring.""",
                    "photo.png", "photo_with_strokes.png", "A,B,B", "a photo of a house and a red car",
                    ("image A: photo", "image B: with strokes"))


def group_makeup(g):
    group_inversion(g, """
        ## Group Inversion: makeup transfer from strokes (Flux)
        Image A is the face, image B the face with makeup strokes (eye shadow, lipstick); schedule A,B,B.""",
                    "portrait.png", "portrait_with_makeup_strokes.png", "A,B,B",
                    "a portrait of a man wearing purple eye shadow and red lipstick, high quality",
                    ("image A: face", "image B: makeup strokes"))


def visual_prompt(g):
    g.note("""
        ## Post-Inversion Optimize: visual-prompt edit (Flux)
        Image A is the photo, image B the same photo with the edit pasted in (a balloon). Group Inversion (A,B,B)
        finds the states; one centre (LatentFromBatch) is refined by Post-Inversion Optimize toward B, with a
        little weight on A to keep the rest of the photo. The loss curve should fall and level off.""")
    with g.stage("1 · Load models"):
        model, clip, vae = flux(g)
    with g.stage("2 · Load images (VAE Encode → LATENT)"):
        a = encode_image(g, vae, "photo.png", "image A: photo")
        b = encode_image(g, vae, "photo_with_pasted_edit.png", "image B: pasted edit")
    with g.stage("3 · Prompt"):
        cond = flux_prompt(g, clip, "a photo of a house, a tree, a blue car and a red hot-air balloon",
                              "Prompt describing the edit")
    with g.stage("4 · Invert and pick a centre"):
        inv = g.node("InversionSuite_GroupInversion", model=model, positive=cond, image_a=a, image_b=b,
                     schedule="A,B,B", sigma=0.4, iterations=24, burn_in=4)
        pick = g.node("LatentFromBatch", title="Pick a centre (state)", samples=inv[1], batch_index=0, length=1)
    with g.stage("5 · Optimise"):
        opt = g.node("InversionSuite_PostInversionOptimize", model=model, positive=cond, latent=pick[0], target_1=b,
                     weight_1=1.0, target_2=a, weight_2=0.2, sigma=0.4)
        preview(g, opt[2], "Loss curve")
    with g.stage("6 · Decode and save"):
        decode_and_save(g, vae, opt[0], "inversion_suite/visual_prompt_edit")


def enhance_chain(g):
    g.note("""
        ## Oscillation Invert → Post-Inversion Optimize: enhance (Flux)
        The degraded photo's oscillation clusters are decoded; pick the cleanest centre (LatentFromBatch index,
        same index on both pickers) and refine its state toward that centre, keeping a small weight on the photo
        for fidelity.""")
    with g.stage("1 · Load models and photo"):
        model, clip, vae = flux(g)
        photo = encode_image(g, vae, "portrait_degraded.png", "degraded photo")
    with g.stage("2 · Prompt"):
        cond = flux_prompt(g, clip, "a portrait photo of a man, high quality", "Prompt describing the image")
    with g.stage("3 · Oscillation inversion"):
        inv = g.node("InversionSuite_OscillationInvert", model=model, positive=cond, latent=photo, sigma=0.4,
                     iterations=24, burn_in=4)
        preview(g, inv[3], "Iterate distances (clusters)")
    with g.stage("4 · See the centres and pick one"):
        preview(g, g.node("VAEDecode", samples=inv[0], vae=vae)[0], "All centres")
        state = g.node("LatentFromBatch", title="Chosen centre (state)", samples=inv[1], batch_index=2, length=1)
        clean = g.node("LatentFromBatch", title="Chosen centre (decoded)", samples=inv[0], batch_index=2, length=1)
    with g.stage("5 · Optimise"):
        opt = g.node("InversionSuite_PostInversionOptimize", model=model, positive=cond, latent=state[0],
                     target_1=clean[0], weight_1=1.0, target_2=photo, weight_2=0.2, sigma=0.4)
        preview(g, opt[2], "Loss curve")
    with g.stage("6 · Decode and save"):
        decode_and_save(g, vae, opt[0], "inversion_suite/enhanced")


def fine_tune_sd35(g):
    g.note("""
        ## Fine-Tune Inversion: reconstruct a photo (SD3.5)
        1. **Invert**: Oscillation Invert at 40 % of the schedule gives a state of the photo.
        2. **Fine-tune**: small adapters on the attention projections are trained so the model's prediction from
           that state matches the photo (the loss curve should fall).
        3. **Regenerate** from the state with the tuned MODEL down the last 40 % of the schedule (denoise 0.4,
           DisableNoise). The loaded weights are never changed.""")
    with g.stage("1 · Load model and photo"):
        model, clip, vae = sd35(g)
        photo = encode_image(g, vae, "portrait.png", "portrait")
    with g.stage("2 · Prompt"):
        cond = g.node("CLIPTextEncode", title="Prompt describing the photo", text="a portrait of a man", clip=clip)
    with g.stage("3 · Invert to a state"):
        inv = g.node("InversionSuite_OscillationInvert", model=model, positive=cond[0], latent=photo, sigma=0.4,
                     sigma_mode="fraction of schedule", iterations=20, burn_in=4)
        state = g.node("LatentFromBatch", title="State (first centre)", samples=inv[1], batch_index=0, length=1)
    with g.stage("4 · Fine-tune"):
        tuned = g.node("InversionSuite_FineTuneInversion", model=model, positive=cond[0], latent=state[0],
                       target=photo, steps=100, sigma=0.4, sigma_mode="fraction of schedule")
        preview(g, tuned[1], "Loss curve")
    with g.stage("5 · Regenerate with the tuned model"):
        guider = g.node("BasicGuider", model=tuned[0], conditioning=cond[0])
        sigmas = g.node("BasicScheduler", model=tuned[0], scheduler="simple", steps=20, denoise=0.4)
        euler = g.node("KSamplerSelect", sampler_name="euler")
        off = g.node("DisableNoise")
        out = g.node("SamplerCustomAdvanced", noise=off[0], guider=guider[0], sampler=euler[0], sigmas=sigmas[0],
                     latent_image=state[0])
    with g.stage("6 · Decode and save"):
        decode_and_save(g, vae, out[0], "inversion_suite/fine_tuned")


def attention_edit_sd15(g):
    g.note("""
        ## Attention Edit: Prompt-to-Prompt word swap on a photo (SD1.5/SDXL)
        1. **Record**: Attention Edit: Record gives the MODEL that BDIA Invert inverts with; it records the source's
           cross-attention maps and self-attention on the way, at no extra model call.
        2. **Inject**: Attention Edit: Inject gives the MODEL that regenerates with the edited prompt: its first 80 %
           of steps use the source's word maps (word swap: both prompts must have the same number of tokens; connect
           a CLIP to check it, or use refine), its first 40 % the source's self-attention.
        3. The report shows what was stored and the model evaluations of both runs.""")
    with g.stage("1 · Load model and photo"):
        model, clip, vae = sd15(g)
        latent = encode_image(g, vae, "photo.png", "photo")
    with g.stage("2 · Prompts"):
        src_text, edit_text = "a photo of a house with a tree and a red car", "a photo of a house with a tree and a blue car"
        neg = g.node("CLIPTextEncode", title="Negative prompt", text="", clip=clip)
        src = g.node("CLIPTextEncode", title="Source prompt", text=src_text, clip=clip)
        edit = g.node("CLIPTextEncode", title="Edited prompt", text=edit_text, clip=clip)
    with g.stage("3 · Record while inverting exactly"):
        rec = g.node("InversionSuite_AttentionEditRecord", model=model, blocks="auto", steps=0.8)
        src_guider = g.node("CFGGuider", model=rec[0], positive=src[0], negative=neg[0], cfg=3.0)
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=50, denoise=1.0)
        inv = g.node("InversionSuite_BDIAInvert", model=rec[0], guider=src_guider[0], latent=latent,
                     sigmas=sigmas[0], method="bdia", gamma=0.96)
    with g.stage("4 · Regenerate with the edit, injecting the source's attention"):
        edit_model = g.node("InversionSuite_AttentionEditInject", model=model, record=rec[1], self_steps=0.4,
                            cross_steps=0.8, cross_mode="word swap", source_text=src_text, edit_text=edit_text)
        edit_guider = g.node("CFGGuider", model=edit_model[0], positive=edit[0], negative=neg[0], cfg=3.0)
        sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
        out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider[0], sampler=sampler[0],
                     sigmas=sigmas[0], latent_image=latent)
        g.node("PreviewAny", title="Attention report",
               source=g.node("InversionSuite_AttentionEditReport", record=rec[1], latent=out[0])[0])
    with g.stage("5 · Decode and save"):
        decode_and_save(g, vae, out[0], "inversion_suite/attention_edit_sd15")


def attention_edit_flux(g):
    g.note("""
        ## Attention Edit: RF-Edit value injection on a photo (Flux)
        1. **Record**: Attention Edit: Record on the single blocks records the image tokens' attention values while
           BDIA Invert inverts the photo (no extra model call).
        2. **Inject**: Attention Edit: Inject regenerates with the edited prompt using the source's values for the
           first 25 % of steps. Raise self_steps to keep more of the photo; record keys too and switch inject_keys
           on for KV-Edit.""")
    with g.stage("1 · Load models and photo"):
        model, clip, vae = flux(g)
        latent = encode_image(g, vae, "portrait.png", "portrait")
    with g.stage("2 · Record while inverting exactly"):
        rec = g.node("InversionSuite_AttentionEditRecord", model=model, blocks="auto", steps=0.25)
        src_guider = flux_guider(g, rec[0], clip, "a portrait of a man with brown hair", "Source prompt")
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=28, denoise=1.0)
        inv = g.node("InversionSuite_BDIAInvert", model=rec[0], guider=src_guider, latent=latent, sigmas=sigmas[0],
                     method="bdia", gamma=0.96)
    with g.stage("3 · Regenerate with the edit, injecting the source's values"):
        edit_model = g.node("InversionSuite_AttentionEditInject", model=model, record=rec[1], self_steps=0.25)
        edit_guider = flux_guider(g, edit_model[0], clip, "a portrait of a man with red hair", "Edited prompt")
        sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
        out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider, sampler=sampler[0], sigmas=sigmas[0],
                     latent_image=latent)
        g.node("PreviewAny", title="Attention report",
               source=g.node("InversionSuite_AttentionEditReport", record=rec[1], latent=out[0])[0])
    with g.stage("4 · Decode and save"):
        decode_and_save(g, vae, out[0], "inversion_suite/attention_edit_flux")


def video_edit(g, model, clip, vae, latent, cfg, fps, prefix):
    """Stages 2–5 of the video edits: the shipped clip's source and edited prompts, BDIA Invert, BDIA Sampler through
    SamplerCustomAdvanced, decode and save as an animated WEBP."""
    with g.stage("2 · Prompts"):
        neg = g.node("CLIPTextEncode", title="Negative prompt", text="blurry, static, distorted, low quality",
                     clip=clip)
        src = g.node("CLIPTextEncode", title="Source prompt (describes the clip)",
                     text="a red car driving along a road past a tree on a sunny day, cartoon style", clip=clip)
        edit = g.node("CLIPTextEncode", title="Edited prompt",
                      text="a red car driving along a road past a tree on a snowy winter day, cartoon style",
                      clip=clip)
        src_guider = g.node("CFGGuider", model=model, positive=src[0], negative=neg[0], cfg=cfg)
        edit_guider = g.node("CFGGuider", model=model, positive=edit[0], negative=neg[0], cfg=cfg)
    with g.stage("3 · Invert exactly"):
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=30, denoise=0.8)
        inv = g.node("InversionSuite_BDIAInvert", model=model, guider=src_guider[0], latent=latent,
                     sigmas=sigmas[0], method="bdia", gamma=0.96)
    with g.stage("4 · Regenerate with the edit"):
        sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
        out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider[0], sampler=sampler[0],
                     sigmas=sigmas[0], latent_image=latent)
    with g.stage("5 · Decode and save the video"):
        frames = g.node("VAEDecode", samples=out[0], vae=vae)
        g.node("SaveAnimatedWEBP", title="Save video", images=frames[0], filename_prefix=prefix, fps=fps,
               lossless=False, quality=90)


def bdia_video_wan21(g):
    g.note("""
        ## BDIA exact inversion: edit a video (Wan 2.1)
        1. **Load**: Load Image reads every frame of the animated PNG (17 frames; Wan needs 4k + 1) and the Wan VAE
           encodes them as one video LATENT (5 latent frames).
        2. **Invert exactly**: BDIA Invert runs the sampler backwards with the source prompt, one model call per
           step; with that prompt the clip comes back to float precision.
        3. **Regenerate** with the edited prompt on the same sigmas, method and γ; the motion of the clip is kept.
        4. **Decode** the frames and save them as an animated WEBP (16 fps).""")
    with g.stage("1 · Load models and clip"):
        unet = g.node("UNETLoader", unet_name="wan2.1_t2v_1.3B_fp16.safetensors", weight_dtype="default")
        model = g.node("ModelSamplingSD3", model=unet[0], shift=8.0)[0]
        clip = g.node("CLIPLoader", clip_name="umt5_xxl_fp8_e4m3fn_scaled.safetensors", type="wan")[0]
        vae = g.node("VAELoader", vae_name="wan_2.1_vae.safetensors")[0]
        latent = encode_image(g, vae, "clip.png", "clip (17 frames)")
    video_edit(g, model, clip, vae, latent, cfg=5.0, fps=16.0, prefix="inversion_suite/bdia_wan_edit")


def masked_edit(g, family):
    """Masked editing with a shipped mask: only the painted car changes; the rest of the photo is the source latent
    exactly, then the original pixels are pasted back outside the mask with stock nodes."""
    g.note(f"""
        ## Masked edit: change only what you paint ({family})
        1. **Load** the photo and its mask (white = edit; here the car, painted as in the mask editor). To paint your
           own: right-click Load Image → Open in MaskEditor, and connect its MASK output instead.
        2. **Record while inverting exactly**: BDIA Invert inverts with the Record MODEL, which stores the source's
           prediction at every step (and its attention) at no extra model call.
        3. **Regenerate with the mask**: Inject with the mask regenerates with the edited prompt. Outside the mask the
           latent is the source latent *exactly*; inside, the edit sees the source's background at every step (its
           attention keys and values too). mask_grow / mask_feather are in latent pixels (8 image pixels).
        4. **Decode and paste the original pixels back** (stock nodes): decoded, the background is the VAE round
           trip of the photo; GrowMask by (grow + feather + 1) × 8 px with square corners covers everything the
           edit touched (measured: a tapered 16 px grow leaves 29 % of it out), and Image
           Composite Masked puts the decoded edit there and the photo's own pixels everywhere else.""")
    with g.stage("1 · Load models, photo and mask"):
        model, clip, vae = flux(g) if family == "Flux" else sd15(g)
        photo = g.node("LoadImage", title="Load photo", image=EXAMPLE + "photo.png")
        latent = g.node("VAEEncode", title="VAE Encode photo → LATENT", pixels=photo[0], vae=vae)[0]
        mask = g.node("LoadImageMask", title="Load mask (the car)", image=EXAMPLE + "photo_car_mask.png",
                      channel="red")
    scene = "a photo of a house with a tree and a {} car, sunny day"
    with g.stage("2 · Record while inverting exactly"):
        rec = g.node("InversionSuite_AttentionEditRecord", model=model, blocks="auto", steps=0.5, keys=True)
        if family == "Flux":
            src_guider = flux_guider(g, rec[0], clip, scene.format("blue"), "Source prompt (describes the photo)")
            steps, cfg = 28, None
        else:
            neg = g.node("CLIPTextEncode", title="Negative prompt", text="blurry, low quality", clip=clip)
            src = g.node("CLIPTextEncode", title="Source prompt (describes the photo)", text=scene.format("blue"),
                         clip=clip)
            src_guider = g.node("CFGGuider", model=rec[0], positive=src[0], negative=neg[0], cfg=3.0)[0]
            steps, cfg = 50, 3.0
        sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=0.8)
        inv = g.node("InversionSuite_BDIAInvert", model=rec[0], guider=src_guider, latent=latent, sigmas=sigmas[0],
                     method="bdia", gamma=0.96)
    with g.stage("3 · Regenerate with the mask"):
        edit_model = g.node("InversionSuite_AttentionEditInject", model=model, record=rec[1], self_steps=0.25,
                            cross_steps=0.5, inject_keys=False, mask=mask[0], mask_grow=1, mask_feather=1,
                            mask_mode="soft", background="source attention")
        if family == "Flux":
            edit_guider = flux_guider(g, edit_model[0], clip, scene.format("red"), "Edited prompt")
        else:
            edit = g.node("CLIPTextEncode", title="Edited prompt", text=scene.format("red"), clip=clip)
            edit_guider = g.node("CFGGuider", model=edit_model[0], positive=edit[0], negative=neg[0], cfg=cfg)[0]
        sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
        out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider, sampler=sampler[0], sigmas=sigmas[0],
                     latent_image=latent)
        g.node("PreviewAny", title="Masked edit report",
               source=g.node("InversionSuite_AttentionEditReport", record=rec[1], latent=out[0])[0])
    prefix = f"inversion_suite/masked_edit_{family.lower().replace('.', '')}"
    with g.stage("4 · Decode, paste the original pixels outside the mask"):
        decoded = g.node("VAEDecode", samples=out[0], vae=vae)[0]
        grown = g.node("GrowMask", title="Grow by (grow + feather + 1) × 8 px, square corners", mask=mask[0],
                       expand=24, tapered_corners=False)
        pasted = g.node("ImageCompositeMasked", title="Edit inside, the photo's pixels outside", destination=photo[0],
                        source=decoded, x=0, y=0, resize_source=False, mask=grown[0])
        g.node("SaveImage", title="Save result", images=pasted[0], filename_prefix=prefix)


def bdia_edit_flux2_klein(g):
    g.note("""
        ## BDIA exact inversion: edit a photo (Flux.2 Klein, ComfyUI 0.30+)
        1. **Load** Flux.2 Klein 4B (the base model), its Qwen3 4B text encoder and the Flux.2 VAE; the photo is
           VAE-encoded to a LATENT.
        2. **Invert exactly**: BDIA Invert runs the sampler backwards with the *source* prompt over the last 80 % of
           Flux.2's own schedule (Flux2Scheduler → Split Sigmas Denoise), one model call per step and prompt.
        3. **Regenerate** with the *edited* prompt on the same sigmas, method and γ. With the source prompt the
           photo comes back to float precision; with the edited prompt the edit is applied.

        Flux2Scheduler's width and height shape the schedule: set them to your photo's size. With the step-distilled
        flux-2-klein-4b instead, use its own settings (cfg 1, 4–8 steps).""")
    with g.stage("1 · Load models and photo"):
        model = g.node("UNETLoader", unet_name="flux-2-klein-base-4b.safetensors", weight_dtype="default")[0]
        clip = g.node("CLIPLoader", clip_name="qwen_3_4b.safetensors", type="flux2")[0]
        vae = g.node("VAELoader", vae_name="flux2-vae.safetensors")[0]
        latent = encode_image(g, vae, "portrait.png", "portrait")
    with g.stage("2 · Prompts"):
        neg = g.node("CLIPTextEncode", title="Negative prompt", text="", clip=clip)
        src = g.node("CLIPTextEncode", title="Source prompt (describes the photo)",
                     text="a portrait of a man with brown hair", clip=clip)
        edit = g.node("CLIPTextEncode", title="Edited prompt", text="a portrait of a man with red hair", clip=clip)
        src_guider = g.node("CFGGuider", model=model, positive=src[0], negative=neg[0], cfg=4.0)
        edit_guider = g.node("CFGGuider", model=model, positive=edit[0], negative=neg[0], cfg=4.0)
    with g.stage("3 · Invert exactly"):
        schedule = g.node("Flux2Scheduler", title="Flux2Scheduler (width, height = the photo's)", steps=50, width=512,
                          height=512)
        sigmas = g.node("SplitSigmasDenoise", title="Last 80 % of the schedule", sigmas=schedule[0], denoise=0.8)
        inv = g.node("InversionSuite_BDIAInvert", model=model, guider=src_guider[0], latent=latent, sigmas=sigmas[1],
                     method="bdia", gamma=0.96)
    with g.stage("4 · Regenerate with the edit"):
        sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
        out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider[0], sampler=sampler[0],
                     sigmas=sigmas[1], latent_image=latent)
    with g.stage("5 · Decode and save"):
        decode_and_save(g, vae, out[0], "inversion_suite/bdia_flux2_klein_edit")


def bdia_video_hunyuan15(g):
    g.note("""
        ## BDIA exact inversion: edit a video (HunyuanVideo 1.5, ComfyUI 0.30+)
        1. **Load**: Load Image reads every frame of the animated PNG (17 frames, 4k + 1 as the VAE needs) and the
           HunyuanVideo 1.5 VAE encodes them as one video LATENT (5 latent frames, 16× smaller in width and height).
        2. **Invert exactly**: BDIA Invert runs the sampler backwards with the source prompt, one model call per
           step; with that prompt the clip comes back to float precision.
        3. **Regenerate** with the edited prompt on the same sigmas, method and γ; the motion of the clip is kept.
        4. **Decode** the frames and save them as an animated WEBP (24 fps).

        The 480p text-to-video model here is CFG-distilled: cfg 1, one model call per step (the negative prompt is
        then unused). With the plain hunyuanvideo1.5_480p_t2v_fp16 set both guiders' cfg to 6.""")
    with g.stage("1 · Load models and clip"):
        model = g.node("UNETLoader", unet_name="hunyuanvideo1.5_480p_t2v_cfg_distilled_fp16.safetensors",
                       weight_dtype="default")[0]
        clip = g.node("DualCLIPLoader", clip_name1="qwen_2.5_vl_7b_fp8_scaled.safetensors",
                      clip_name2="byt5_small_glyphxl_fp16.safetensors", type="hunyuan_video_15")[0]
        vae = g.node("VAELoader", vae_name="hunyuanvideo15_vae_fp16.safetensors")[0]
        latent = encode_image(g, vae, "clip.png", "clip (17 frames)")
    video_edit(g, model, clip, vae, latent, cfg=1.0, fps=24.0, prefix="inversion_suite/bdia_hunyuan_video15_edit")


# File name = the title the template browser shows; the number sets the order.
WORKFLOWS = {
    "01 Fixed-Point Invert - photo edit (SD1.5)": fixed_point_sd15,
    "02 Fixed-Point Invert - photo edit (Flux)": fixed_point_flux,
    "03 Fixed-Point Inversion Sampler - invert and edit (SD1.5)": fixed_point_sampler_sd15,
    "04 BDIA - exact inversion edit (SD1.5)": lambda g: bdia_edit(g, "SD1.5"),
    "05 BDIA - exact inversion edit (Flux)": lambda g: bdia_edit(g, "Flux"),
    "06 BDIA Sampler - text to image (SD1.5)": bdia_text_to_image,
    "07 Group Inversion - enhance a degraded photo (Flux)": group_enhance,
    "08 Group Inversion - recolour with strokes (Flux)": group_recolour,
    "09 Group Inversion - makeup transfer (Flux)": group_makeup,
    "10 Oscillation Invert - enhance and optimise (Flux)": enhance_chain,
    "11 Post-Inversion Optimize - visual-prompt edit (Flux)": visual_prompt,
    "12 Fine-Tune Inversion - reconstruct a photo (SD3.5)": fine_tune_sd35,
    "13 Attention Edit - word swap keeping the photo (SD1.5)": attention_edit_sd15,
    "14 Attention Edit - value injection keeping the photo (Flux)": attention_edit_flux,
    "15 BDIA - exact video inversion edit (Wan 2.1)": bdia_video_wan21,
    "16 Attention Edit - masked edit, background kept exactly (SD1.5)": lambda g: masked_edit(g, "SD1.5"),
    "17 Attention Edit - masked edit, background kept exactly (Flux)": lambda g: masked_edit(g, "Flux"),
    "18 BDIA - exact inversion edit (Flux.2 Klein)": bdia_edit_flux2_klein,
    "19 BDIA - exact video inversion edit (HunyuanVideo 1.5)": bdia_video_hunyuan15,
}
# The oldest ComfyUI each workflow runs on, whose node definitions it is laid out from (the rest: OLDEST). 18 and 19
# need 0.30's model classes (Flux2, HunyuanVideo15) and nodes (Flux2Scheduler, the flux2 and hunyuan_video_15 text
# encoder types).
OLDEST = "0.3.64"
REQUIRES = {"18 BDIA - exact inversion edit (Flux.2 Klein)": "0.30.0",
            "19 BDIA - exact video inversion edit (HunyuanVideo 1.5)": "0.30.0"}


def thumbnail(workflow, title, path, size=(640, 400)):
    """A schematic of the graph (stages, nodes, links) with the workflow's title, for the template browser."""
    from PIL import Image, ImageDraw, ImageFont
    try:
        font, small = ImageFont.load_default(size=26), ImageFont.load_default(size=13)
    except TypeError:
        font = small = ImageFont.load_default()
    img = Image.new("RGB", size, (32, 34, 38))
    d = ImageDraw.Draw(img)
    nodes = workflow["nodes"]
    boxes = [g["bounding"] for g in workflow["groups"]] + [
        [n["pos"][0], n["pos"][1] - TITLE_HEIGHT, n["size"][0], n["size"][1] + TITLE_HEIGHT] for n in nodes]
    x0, y0 = min(b[0] for b in boxes), min(b[1] for b in boxes)
    x1, y1 = max(b[0] + b[2] for b in boxes), max(b[1] + b[3] for b in boxes)
    top = 80
    s = min((size[0] - 30) / (x1 - x0), (size[1] - top - 15) / (y1 - y0))

    def p(x, y):
        return 15 + (x - x0) * s, top + (y - y0) * s
    for g in workflow["groups"]:
        gx, gy, gw, gh = g["bounding"]
        colour = tuple(int(g["color"].lstrip("#")[i:i + 2], 16) if len(g["color"]) == 7 else
                       int(g["color"].lstrip("#")[i // 2] * 2, 16) for i in (0, 2, 4))
        d.rectangle((*p(gx, gy), *p(gx + gw, gy + gh)), fill=tuple(c // 2 for c in colour), outline=colour)
    by_id = {n["id"]: n for n in nodes}
    for _, src, slot, dst, dslot, _ in workflow["links"]:
        a, b = by_id[src], by_id[dst]
        d.line((*p(a["pos"][0] + a["size"][0], a["pos"][1] + 10 + 20 * slot), *p(b["pos"][0], b["pos"][1] + 10 + 20 * dslot)),
               fill=(150, 160, 170), width=1)
    for n in nodes:
        ours = n["type"].startswith("InversionSuite_")
        fill = (200, 120, 40) if ours else (70, 74, 82)
        d.rectangle((*p(n["pos"][0], n["pos"][1] - TITLE_HEIGHT), *p(n["pos"][0] + n["size"][0], n["pos"][1] + n["size"][1])),
                    fill=fill, outline=(20, 20, 20))
    inputs = [n["widgets_values"][0] for n in nodes if n["type"] == "LoadImage"]
    for i, name in enumerate(inputs[:2]):  # the example inputs it starts from, top right
        tile = Image.open(ROOT / "example_inputs" / name).convert("RGB").resize((62, 62))
        img.paste(tile, (size[0] - 15 - 68 * (len(inputs[:2]) - i), 8))
    heading, _, detail = title[3:].partition(" - ")
    d.text((15, 14), heading, fill=(255, 255, 255), font=font)
    d.text((15, 48), detail + "   (orange: Inversion Suite nodes)", fill=(200, 200, 200), font=small)
    img.save(path, quality=88)


def main():
    import comfyui_server as server
    s = server.Server()
    try:
        info = s.get("/object_info")
        version = s.get("/system_stats")["system"]["comfyui_version"]
    finally:
        s.stop()
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    mine = [name for name in WORKFLOWS if REQUIRES.get(name, OLDEST) == version]
    if not mine:
        raise SystemExit(f"ComfyUI {version}: no workflow is laid out from this version; run with COMFYUI_PATH set "
                         f"to ComfyUI {' or '.join(sorted({OLDEST, *REQUIRES.values()}))}")
    for old in list(out.glob("*.json")) + list(out.glob("*.jpg")):
        if old.stem not in WORKFLOWS or old.stem in mine:
            old.unlink()
    for name in mine:
        g = Graph(info, version)
        WORKFLOWS[name](g)
        workflow = g.workflow()
        problems = check_workflow(workflow, info)
        if problems:
            raise SystemExit(f"{name}: " + "; ".join(problems))
        (out / f"{name}.json").write_text(json.dumps(workflow, indent=1, ensure_ascii=False) + "\n")
        thumbnail(workflow, name, out / f"{name}.jpg")
        print(f"wrote workflows/{name}.json and .jpg ({len(workflow['nodes'])} nodes, zoom "
              f"{workflow['extra']['ds']['scale']})")
    newer = sorted(name for name in mine if name in REQUIRES)
    if newer:  # the stock nodes these use, as this ComfyUI declares them (the tests check them on older hosts)
        kinds = sorted({n["type"] for name in newer for n in json.loads((out / f"{name}.json").read_text())["nodes"]
                        if n["type"] not in UI_ONLY and not n["type"].startswith("InversionSuite_")})
        NEWER_STOCK.write_text(json.dumps({"comfyui": version, "workflows": newer,
                                           "nodes": {k: stock_schema(info[k]) for k in kinds}}, indent=1) + "\n")
        print(f"wrote {NEWER_STOCK.relative_to(ROOT)} ({len(kinds)} stock nodes of ComfyUI {version})")
    others = [name for name in WORKFLOWS if name not in mine]
    if others:
        print(f"left as they are ({len(others)}, laid out from ComfyUI "
              f"{', '.join(sorted({REQUIRES.get(n, OLDEST) for n in others}))}: run again with that COMFYUI_PATH): "
              + "; ".join(n[:2] for n in others))


if __name__ == "__main__":
    main()
