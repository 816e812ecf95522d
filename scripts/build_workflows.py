"""Write the bundled example workflows (UI format) into workflows/, laid out from the live node definitions.

Runs a headless ComfyUI (COMFYUI_PATH) with the pack loaded, reads /object_info so widget order and socket
types are ComfyUI's own, and checks every workflow before writing it:

    COMFYUI_PATH=~/ComfyUI python scripts/build_workflows.py
"""
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

import hostlib  # noqa: E402
from workflow_tools import check_workflow, input_specs, is_widget, widget_slots  # noqa: E402

PACK_ID, VERSION = "inversion-suite", "0.1.0"


class Graph:
    def __init__(self, info):
        self.info, self.nodes, self.links, self.columns = info, [], [], {}

    def node(self, kind, title=None, **values):
        node_def = self.info[kind]
        nid = len(self.nodes) + 1
        sources = {k: v for k, v in values.items() if isinstance(v, tuple)}
        column = 1 + max([self.nodes[src - 1]["_col"] for src, _ in sources.values()], default=-1)
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
        widgets = []
        for name in widget_slots(node_def):
            if name is None:
                widgets.append("fixed" if widgets and isinstance(widgets[-1], int) else "image")
            elif name not in sources:
                spec = dict((n, o) for n, _, o, _ in input_specs(node_def))[name]
                default = spec.get("default", (spec.get("options") or [None])[0])
                widgets.append(values.get(name, default))
        outputs = [{"name": name, "type": t, "links": [], "slot_index": i}
                   for i, (name, t) in enumerate(zip(node_def["output_name"], node_def["output"]))]
        y = self.columns.get(column, 40)
        height = 60 + 26 * (len(widgets) + max(len(inputs), len(outputs)))
        self.columns[column] = y + height + 50
        cnr = PACK_ID if kind.startswith("InversionSuite_") else "comfy-core"
        node = {"id": nid, "type": kind, "pos": [40 + 400 * column, y], "size": [360, height], "flags": {},
                "order": nid - 1, "mode": 0, "inputs": inputs, "outputs": outputs,
                "properties": {"Node name for S&R": kind, "cnr_id": cnr, "ver": VERSION if cnr == PACK_ID else "0.3.64"},
                "widgets_values": widgets, "_col": column}
        if title:
            node["title"] = title
        self.nodes.append(node)
        return Ref(nid)

    def note(self, text):
        nid = len(self.nodes) + 1
        self.nodes.append({"id": nid, "type": "MarkdownNote", "pos": [40, -260], "size": [760, 220], "flags": {},
                           "order": nid - 1, "mode": 0, "inputs": [], "outputs": [], "properties": {},
                           "widgets_values": [text], "_col": 0})

    def workflow(self):
        nodes = [{k: v for k, v in n.items() if k != "_col"} for n in self.nodes]
        return {"last_node_id": len(nodes), "last_link_id": len(self.links), "nodes": nodes, "links": self.links,
                "groups": [], "config": {}, "extra": {"ds": {"scale": 0.7, "offset": [0, 300]}}, "version": 0.4}


class Ref(int):
    def __getitem__(self, slot):
        return (int(self), slot)


def sd15(g):
    ckpt = g.node("CheckpointLoaderSimple", ckpt_name="v1-5-pruned-emaonly.safetensors")
    return ckpt[0], ckpt[1], ckpt[2]


def flux(g):
    unet = g.node("UNETLoader", unet_name="flux1-dev.safetensors", weight_dtype="default")
    clip = g.node("DualCLIPLoader", clip_name1="t5xxl_fp16.safetensors", clip_name2="clip_l.safetensors", type="flux")
    vae = g.node("VAELoader", vae_name="ae.safetensors")
    return unet[0], clip[0], vae[0]


def encode_image(g, vae, name="example.png", title=None):
    image = g.node("LoadImage", title=title, image=name)
    return g.node("VAEEncode", pixels=image[0], vae=vae)[0]


def flux_guider(g, model, clip, text, title=None):
    cond = g.node("CLIPTextEncode", title=title, text=text, clip=clip)
    guided = g.node("FluxGuidance", conditioning=cond[0], guidance=3.5)
    return g.node("BasicGuider", model=model, conditioning=guided[0])[0], guided[0]


def save(g, vae, latent, prefix):
    g.node("SaveImage", images=g.node("VAEDecode", samples=latent, vae=vae)[0], filename_prefix=prefix)


def fixed_point_sd15(g):
    g.note("**Fixed-point inversion, SD1.5/SDXL edit.** Fixed-Point Invert turns the photo into the noise that "
           "regenerates it under the *source* prompt; SamplerCustomAdvanced regenerates from that NOISE with the "
           "*edited* prompt on the same sigmas. Keep the prompts alike except for the edit; cfg 1 inverts best.")
    model, clip, vae = sd15(g)
    latent = encode_image(g, vae)
    src = g.node("CLIPTextEncode", title="source prompt", text="a photo of a cat sitting on a sofa", clip=clip)
    neg = g.node("CLIPTextEncode", title="negative", text="blurry, low quality", clip=clip)
    edit = g.node("CLIPTextEncode", title="edited prompt", text="a photo of a dog sitting on a sofa", clip=clip)
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=30, denoise=1.0)
    inv = g.node("InversionSuite_FixedPointInvert", model=model, positive=src[0], latent=latent, sigmas=sigmas[0])
    g.node("PreviewAny", source=inv[2])
    guider = g.node("CFGGuider", model=model, positive=edit[0], negative=neg[0], cfg=3.0)
    out = g.node("SamplerCustomAdvanced", noise=inv[1], guider=guider[0],
                 sampler=g.node("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas[0], latent_image=latent)
    save(g, vae, out[0], "fixed_point_edit")


def fixed_point_flux(g):
    g.note("**Fixed-point inversion, Flux edit.** Stock FlipSigmas unsampling returns inf on flow models; "
           "Fixed-Point Invert's NOISE output starts any stock sampler exactly at the inverted state.")
    model, clip, vae = flux(g)
    latent = encode_image(g, vae)
    _, src = flux_guider(g, model, clip, "a photo of a cat sitting on a sofa", "source prompt")
    edit_guider, _ = flux_guider(g, model, clip, "a photo of a dog sitting on a sofa", "edited prompt")
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=28, denoise=1.0)
    inv = g.node("InversionSuite_FixedPointInvert", model=model, positive=src, latent=latent, sigmas=sigmas[0])
    g.node("PreviewAny", source=inv[2])
    out = g.node("SamplerCustomAdvanced", noise=inv[1], guider=edit_guider,
                 sampler=g.node("KSamplerSelect", sampler_name="euler")[0], sigmas=sigmas[0], latent_image=latent)
    save(g, vae, out[0], "fixed_point_flux_edit")


def bdia_edit(g, family):
    g.note(f"**BDIA exact inversion, {family} edit.** BDIA Invert runs the sampler backwards (one model call per "
           "step) and hands its NOISE and the pair of latents to BDIA Sampler. With the source prompt the photo comes "
           "back to float precision; with the edited prompt the edit is applied. Same sigmas, method and γ on both.")
    if family == "Flux":
        model, clip, vae = flux(g)
        latent = encode_image(g, vae)
        src_guider, _ = flux_guider(g, model, clip, "a photo of a woman with brown hair", "source prompt")
        edit_guider, _ = flux_guider(g, model, clip, "a photo of a woman with red hair", "edited prompt")
        steps = 28
    else:
        model, clip, vae = sd15(g)
        latent = encode_image(g, vae)
        neg = g.node("CLIPTextEncode", title="negative", text="", clip=clip)
        src = g.node("CLIPTextEncode", title="source prompt", text="a photo of a man", clip=clip)
        edit = g.node("CLIPTextEncode", title="edited prompt", text="a photo of a man with a mustache", clip=clip)
        src_guider = g.node("CFGGuider", model=model, positive=src[0], negative=neg[0], cfg=3.0)[0]
        edit_guider = g.node("CFGGuider", model=model, positive=edit[0], negative=neg[0], cfg=3.0)[0]
        steps = 50
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=steps, denoise=0.8)
    inv = g.node("InversionSuite_BDIAInvert", model=model, guider=src_guider, latent=latent, sigmas=sigmas[0],
                 method="bdia", gamma=0.96)
    sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
    out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider, sampler=sampler[0], sigmas=sigmas[0],
                 latent_image=latent)
    save(g, vae, out[0], f"bdia_{family.lower()}_edit")


def bdia_text_to_image(g):
    g.note("**BDIA text-to-image.** BDIA Sampler as a drop-in SAMPLER: γ = 1 is the leapfrog rule (the paper's "
           "choice at 40+ steps), smaller γ damps more at few steps. The result can be inverted exactly later.")
    model, clip, vae = sd15(g)
    pos = g.node("CLIPTextEncode", title="prompt", text="a watercolour painting of a lighthouse at dawn", clip=clip)
    neg = g.node("CLIPTextEncode", title="negative", text="blurry", clip=clip)
    guider = g.node("CFGGuider", model=model, positive=pos[0], negative=neg[0], cfg=5.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=40, denoise=1.0)
    sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=1.0)
    out = g.node("SamplerCustomAdvanced", noise=g.node("RandomNoise", noise_seed=42)[0], guider=guider[0],
                 sampler=sampler[0], sigmas=sigmas[0],
                 latent_image=g.node("EmptyLatentImage", width=512, height=512, batch_size=1)[0])
    save(g, vae, out[0], "bdia_t2i")


def oscillation(g, note, a_name, b_name, schedule, prompt):
    g.note(note)
    model, clip, vae = flux(g)
    _, cond = flux_guider(g, model, clip, prompt, "prompt describing the image")
    a = encode_image(g, vae, a_name, "image A")
    b = encode_image(g, vae, b_name, "image B")
    inv = g.node("InversionSuite_GroupInversion", model=model, positive=cond, image_a=a, image_b=b,
                 schedule=schedule, sigma=0.4, iterations=24, burn_in=4)
    g.node("PreviewImage", images=g.node("VAEDecode", samples=inv[0], vae=vae)[0])
    g.node("PreviewImage", title="iterate distances", images=inv[3])
    g.node("PreviewAny", source=inv[4])
    return inv


def visual_prompt(g):
    g.note("**Visual-prompt editing (Flux).** Image A is the photo, image B the same photo with the edit pasted or "
           "painted in. Group Inversion (A,B,B) finds the states; one centre (LatentFromBatch) is refined by "
           "Post-Inversion Optimize toward B, with a little weight on A to keep the rest of the photo.")
    model, clip, vae = flux(g)
    _, cond = flux_guider(g, model, clip, "a photo of a living room with a red armchair", "prompt describing the edit")
    a = encode_image(g, vae, "photo.png", "image A: photo")
    b = encode_image(g, vae, "photo_with_pasted_edit.png", "image B: edited")
    inv = g.node("InversionSuite_GroupInversion", model=model, positive=cond, image_a=a, image_b=b,
                 schedule="A,B,B", sigma=0.4, iterations=24, burn_in=4)
    pick = g.node("LatentFromBatch", title="pick a centre", samples=inv[1], batch_index=0, length=1)
    opt = g.node("InversionSuite_PostInversionOptimize", model=model, positive=cond, latent=pick[0], target_1=b,
                 weight_1=1.0, target_2=a, weight_2=0.2, sigma=0.4)
    g.node("PreviewImage", title="loss", images=opt[2])
    g.node("PreviewAny", source=opt[3])
    save(g, vae, opt[0], "visual_prompt_edit")


def enhance_chain(g):
    g.note("**Enhancement chain (Flux): Oscillation Invert → Post-Inversion Optimize.** The degraded photo's "
           "oscillation clusters are decoded; pick the cleanest centre (LatentFromBatch index) and refine its state "
           "toward that centre, keeping a small weight on the photo for fidelity.")
    model, clip, vae = flux(g)
    _, cond = flux_guider(g, model, clip, "a portrait photo of a person, high quality", "prompt describing the image")
    photo = encode_image(g, vae, "degraded.png", "degraded photo")
    inv = g.node("InversionSuite_OscillationInvert", model=model, positive=cond, latent=photo, sigma=0.4,
                 iterations=24, burn_in=4)
    g.node("PreviewImage", title="all centres", images=g.node("VAEDecode", samples=inv[0], vae=vae)[0])
    index = 2
    state = g.node("LatentFromBatch", title="chosen centre (state)", samples=inv[1], batch_index=index, length=1)
    clean = g.node("LatentFromBatch", title="chosen centre (decoded)", samples=inv[0], batch_index=index, length=1)
    opt = g.node("InversionSuite_PostInversionOptimize", model=model, positive=cond, latent=state[0],
                 target_1=clean[0], weight_1=1.0, target_2=photo, weight_2=0.2, sigma=0.4)
    g.node("PreviewImage", title="loss", images=opt[2])
    save(g, vae, opt[0], "enhanced")


def attention_edit_sd15(g):
    g.note("**Prompt-to-Prompt word swap on a photo (SD1.5/SDXL).** Attention Edit: Record gives the MODEL that "
           "BDIA Invert inverts with: it records the source's cross-attention maps and self-attention on the way, "
           "at no extra model call. Attention Edit: Inject gives the MODEL that regenerates with the edited prompt: "
           "its first 80% of steps use the source's word maps (word swap: the prompts must have the same number of "
           "tokens; connect a CLIP to check it, or use refine), its first 40% the source's self-attention.")
    model, clip, vae = sd15(g)
    latent = encode_image(g, vae)
    src_text, edit_text = "a photo of a cat sitting on a sofa", "a photo of a dog sitting on a sofa"
    neg = g.node("CLIPTextEncode", title="negative", text="", clip=clip)
    src = g.node("CLIPTextEncode", title="source prompt", text=src_text, clip=clip)
    edit = g.node("CLIPTextEncode", title="edited prompt", text=edit_text, clip=clip)
    rec = g.node("InversionSuite_AttentionEditRecord", model=model, blocks="auto", steps=0.8)
    src_guider = g.node("CFGGuider", model=rec[0], positive=src[0], negative=neg[0], cfg=3.0)
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=50, denoise=1.0)
    inv = g.node("InversionSuite_BDIAInvert", model=rec[0], guider=src_guider[0], latent=latent, sigmas=sigmas[0],
                 method="bdia", gamma=0.96)
    edit_model = g.node("InversionSuite_AttentionEditInject", model=model, record=rec[1], self_steps=0.4,
                        cross_steps=0.8, cross_mode="word swap", source_text=src_text, edit_text=edit_text)
    edit_guider = g.node("CFGGuider", model=edit_model[0], positive=edit[0], negative=neg[0], cfg=3.0)
    sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
    out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider[0], sampler=sampler[0], sigmas=sigmas[0],
                 latent_image=latent)
    g.node("PreviewAny", source=g.node("InversionSuite_AttentionEditReport", record=rec[1], latent=out[0])[0])
    save(g, vae, out[0], "attention_edit_sd15")


def attention_edit_flux(g):
    g.note("**RF-Edit value injection on a photo (Flux).** Attention Edit: Record on the single blocks records the "
           "image tokens' attention values while BDIA Invert inverts the photo (no extra model call); Attention "
           "Edit: Inject regenerates with the edited prompt using the source's values for the first 25% of steps. "
           "Raise self_steps to keep more of the photo; record keys too and switch inject_keys on for KV-Edit.")
    model, clip, vae = flux(g)
    latent = encode_image(g, vae)
    rec = g.node("InversionSuite_AttentionEditRecord", model=model, blocks="auto", steps=0.25)
    src_guider, _ = flux_guider(g, rec[0], clip, "a photo of a woman with brown hair", "source prompt")
    sigmas = g.node("BasicScheduler", model=model, scheduler="simple", steps=28, denoise=1.0)
    inv = g.node("InversionSuite_BDIAInvert", model=rec[0], guider=src_guider, latent=latent, sigmas=sigmas[0],
                 method="bdia", gamma=0.96)
    edit_model = g.node("InversionSuite_AttentionEditInject", model=model, record=rec[1], self_steps=0.25)
    edit_guider, _ = flux_guider(g, edit_model[0], clip, "a photo of a woman with red hair", "edited prompt")
    sampler = g.node("InversionSuite_BDIASampler", method="bdia", gamma=0.96, inversion=inv[1])
    out = g.node("SamplerCustomAdvanced", noise=inv[0], guider=edit_guider, sampler=sampler[0], sigmas=sigmas[0],
                 latent_image=latent)
    g.node("PreviewAny", source=g.node("InversionSuite_AttentionEditReport", record=rec[1], latent=out[0])[0])
    save(g, vae, out[0], "attention_edit_flux")


WORKFLOWS = {
    "post_inversion_visual_prompt_flux": visual_prompt,
    "oscillation_enhance_optimize_flux": enhance_chain,
    "fixed_point_edit_sd15": fixed_point_sd15,
    "fixed_point_edit_flux": fixed_point_flux,
    "bdia_edit_sd15": lambda g: bdia_edit(g, "SD1.5"),
    "bdia_edit_flux": lambda g: bdia_edit(g, "Flux"),
    "bdia_text_to_image_sd15": bdia_text_to_image,
    "attention_edit_word_swap_sd15": attention_edit_sd15,
    "attention_edit_values_flux": attention_edit_flux,
    "oscillation_enhance_flux": lambda g: oscillation(
        g, "**Oscillation enhancement (Flux).** Image A is the degraded photo, image B a lightly enhanced "
        "copy (e.g. sharpened); schedule A,A,B. Every cluster centre is decoded: pick the cleanest from the batch "
        "(the paper picks one centre per task by eye). The distance map shows the clusters.",
        "degraded.png", "lightly_enhanced.png", "A,A,B", "a portrait photo of a person, high quality"),
    "oscillation_recolour_strokes_flux": lambda g: oscillation(
        g, "**Stroke recolouring (Flux).** Image A is the photo, image B the same photo with colour "
        "strokes painted where the new colour should go; schedule A,B,B. The centres blend the strokes into a "
        "natural recolouring.", "photo.png", "photo_with_strokes.png", "A,B,B", "a photo of a red car"),
    "oscillation_makeup_flux": lambda g: oscillation(
        g, "**Makeup transfer from strokes (Flux).** Image A is the face, image B the face with makeup "
        "strokes (eye shadow, lipstick); schedule A,B,B.", "face.png", "face_with_makeup_strokes.png", "A,B,B",
        "a woman with red eye shadow, high quality, 4K"),
}


def main():
    import server
    s = server.Server()
    try:
        info = s.get("/object_info")
    finally:
        s.stop()
    out = ROOT / "workflows"
    out.mkdir(exist_ok=True)
    for name, build in WORKFLOWS.items():
        g = Graph(info)
        build(g)
        workflow = g.workflow()
        problems = check_workflow(workflow, info)
        if problems:
            raise SystemExit(f"{name}: " + "; ".join(problems))
        (out / f"{name}.json").write_text(json.dumps(workflow, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote workflows/{name}.json ({len(workflow['nodes'])} nodes)")


if __name__ == "__main__":
    main()
