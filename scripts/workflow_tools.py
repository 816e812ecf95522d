"""UI-format workflow helpers shared by the workflow builder and the server tests: which inputs are widgets (as
the frontend lays them out), consistency checks against /object_info, and conversion to an API prompt with tiny
stand-in models."""
import json
import pathlib
import zlib

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLE_INPUTS = ROOT / "example_inputs"
# The workflows that need a newer ComfyUI than the oldest host, with that ComfyUI's definitions of the stock nodes they
# use (written by scripts/build_workflows.py on it): an older host checks them against these.
NEWER_STOCK = ROOT / "tests" / "newer_stock_nodes.json"
SCHEMA_KEYS = ("input", "input_order", "output", "output_name", "output_node")
WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODEL_FILES = (".safetensors", ".ckpt", ".pt", ".pth", ".sft", ".gguf")
UI_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}
CONTROL, UPLOAD = "<control_after_generate>", "<upload>"
CONTROL_MODES = ("fixed", "increment", "decrement", "randomize")
SEED_NAMES = ("seed", "noise_seed")  # INTs the frontend gives a control even when the schema says nothing
MODEL_DIRECTORIES = {"CheckpointLoaderSimple": "checkpoints", "UNETLoader": "diffusion_models",
                     "DualCLIPLoader": "text_encoders", "CLIPLoader": "text_encoders", "VAELoader": "vae"}
IMAGE_NODES = {"LoadImage", "LoadImageMask", "PreviewImage", "SaveImage"}
TITLE_HEIGHT = 30  # LiteGraph draws a node's title bar above its pos
MIN_IMAGE_NODE_HEIGHT = 360  # room for the image preview the frontend draws inside the node
SCREEN = (1920, 1080)
MIN_SCALE = 0.6  # below this the frontend's text is no longer readable


def input_specs(node_def):
    """[(name, type, options, optional)] in the order the frontend lays them out."""
    order = node_def.get("input_order", {})
    out = []
    for group in ("required", "optional"):
        specs = node_def["input"].get(group, {})
        for name in order.get(group, list(specs)):
            spec = specs[name]
            kind, options = spec[0], (spec[1] if len(spec) > 1 else {})
            if isinstance(kind, list):
                kind, options = "COMBO", {**options, "options": kind}
            out.append((name, kind, options, group == "optional"))
    return out


def stock_schema(node_def):
    """The part of a node definition the checks read (inputs, their order, outputs), with upload lists (the files in
    the input folder) left empty: as JSON, to compare with a recorded one."""
    out = json.loads(json.dumps({k: node_def.get(k) for k in SCHEMA_KEYS}))
    for group in ("required", "optional"):
        for spec in (out["input"] or {}).get(group, {}).values():
            options = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if options.get("image_upload"):
                if isinstance(spec[0], list):
                    spec[0] = []
                else:
                    options["options"] = []
    return out


def newer_stock():
    """{comfyui: version, workflows: [names], nodes: {type: stock_schema}} of NEWER_STOCK (empty without it)."""
    if not NEWER_STOCK.is_file():
        return {"comfyui": None, "workflows": [], "nodes": {}}
    return json.loads(NEWER_STOCK.read_text())


def is_widget(kind, options):
    return kind in WIDGET_TYPES and not options.get("forceInput")


def has_control(name, kind, options):
    """Whether the frontend adds a control_after_generate combo after this widget (frontend 1.27 and 1.58:
    `control_after_generate ?? name in ('seed', 'noise_seed')` for INT, `control_after_generate` for COMBO)."""
    flag = options.get("control_after_generate")
    if kind == "INT":
        return bool(flag) if flag is not None else name in SEED_NAMES
    return kind == "COMBO" and bool(flag)


def widget_slots(node_def):
    """Widget names in widgets_values order; a control_after_generate (CONTROL) or an upload button (UPLOAD)
    takes an extra slot right after its widget."""
    names = []
    for name, kind, options, _ in input_specs(node_def):
        if is_widget(kind, options):
            names.append(name)
            if has_control(name, kind, options):
                names.append(CONTROL)
            elif options.get("image_upload"):
                names.append(UPLOAD)
    return names


def check_value(kind, options, value):
    if kind == "INT":
        return isinstance(value, int) and options.get("min", -2 ** 64) <= value <= options.get("max", 2 ** 64)
    if kind == "FLOAT":
        return isinstance(value, (int, float)) and options.get("min", -1e308) <= value <= options.get("max", 1e308)
    if kind == "BOOLEAN":
        return isinstance(value, bool)
    if kind == "STRING":
        return isinstance(value, str)
    choices = options.get("options", [])
    if options.get("image_upload") or (isinstance(value, str) and value.endswith(MODEL_FILES)):
        return isinstance(value, str) and bool(value)  # file lists: empty on a test server without weights
    return value in choices


def provided_inputs():
    """Image files the pack ships for ComfyUI's input folder."""
    return {p.name for p in EXAMPLE_INPUTS.glob("*.png")}


def node_box(n):
    """The screen rectangle a node takes (x0, y0, x1, y1), title bar included."""
    x, y = n["pos"]
    w, h = n["size"]
    return x, y - TITLE_HEIGHT, x + w, y + h


def overlaps(a, b, gap=0):
    return a[0] < b[2] + gap and b[0] < a[2] + gap and a[1] < b[3] + gap and b[1] < a[3] + gap


def check_layout(workflow):
    """Overlapping nodes or groups, image nodes too small for their preview, nodes outside every group, and a
    graph that does not fit a 1920×1080 screen at a readable zoom when loaded."""
    problems = []
    nodes = workflow["nodes"]
    for n in nodes:
        if n["type"] in IMAGE_NODES and n["size"][1] < MIN_IMAGE_NODE_HEIGHT:
            problems.append(f"node {n['id']} {n['type']}: height {n['size'][1]} leaves no room for its image")
    for i, a in enumerate(nodes):
        for b in nodes[i + 1:]:
            if overlaps(node_box(a), node_box(b)):
                problems.append(f"nodes {a['id']} {a['type']} and {b['id']} {b['type']} overlap")
    groups = workflow.get("groups", [])
    boxes = [(g["title"], (g["bounding"][0], g["bounding"][1], g["bounding"][0] + g["bounding"][2],
                           g["bounding"][1] + g["bounding"][3])) for g in groups]
    for i, (ta, a) in enumerate(boxes):
        for tb, b in boxes[i + 1:]:
            if overlaps(a, b):
                problems.append(f"groups '{ta}' and '{tb}' overlap")
    for n in nodes:
        if n["type"] in UI_ONLY:
            continue
        box = node_box(n)
        inside = [t for t, g in boxes if g[0] <= box[0] and g[1] <= box[1] and box[2] <= g[2] and box[3] <= g[3]]
        if len(inside) != 1:
            problems.append(f"node {n['id']} {n['type']} lies in {len(inside)} groups (expected one stage)")
    ds = workflow.get("extra", {}).get("ds", {})
    scale, (ox, oy) = ds.get("scale", 1.0), ds.get("offset", [0, 0])
    all_boxes = [node_box(n) for n in nodes] + [b for _, b in boxes]
    x0, y0 = min(b[0] for b in all_boxes), min(b[1] for b in all_boxes)
    x1, y1 = max(b[2] for b in all_boxes), max(b[3] for b in all_boxes)
    sx0, sy0, sx1, sy1 = (x0 + ox) * scale, (y0 + oy) * scale, (x1 + ox) * scale, (y1 + oy) * scale
    if scale < MIN_SCALE or sx0 < 0 or sy0 < 0 or sx1 > SCREEN[0] or sy1 > SCREEN[1]:
        problems.append(f"graph on screen at ({sx0:.0f}, {sy0:.0f})-({sx1:.0f}, {sy1:.0f}) zoom {scale:.2f}: does "
                        f"not fit {SCREEN[0]}×{SCREEN[1]} at zoom ≥ {MIN_SCALE}")
    return problems


def check_models(n, slots, values):
    """Every model file a loader names has a download entry (properties.models: name, url, directory)."""
    problems = []
    entries = {m.get("name"): m for m in n.get("properties", {}).get("models", [])}
    for name, value in zip(slots, values):
        if not (isinstance(value, str) and value.endswith(MODEL_FILES)):
            continue
        entry = entries.get(value)
        directory = MODEL_DIRECTORIES.get(n["type"])
        if entry is None or not str(entry.get("url", "")).startswith("https://") or not entry.get("directory"):
            problems.append(f"node {n['id']} {n['type']}: {name}={value!r} has no download URL in properties.models")
        elif directory and entry["directory"] != directory:
            problems.append(f"node {n['id']} {n['type']}: {value!r} goes to models/{directory}, "
                            f"not {entry['directory']}")
        elif not entry["url"].rsplit("/", 1)[-1].split("?")[0] == value:
            problems.append(f"node {n['id']} {n['type']}: URL of {value!r} downloads another file name")
    return problems


def check_workflow(workflow, object_info, provided=None):
    """Every problem the frontend or a user would meet: unknown node types, widget values on the wrong input or
    out of range, controls that change a seed between runs, images the pack does not ship, loaders without a
    download URL, mistyped or missing links, and a layout with overlaps."""
    provided = provided_inputs() if provided is None else provided
    problems = []
    nodes = {n["id"]: n for n in workflow["nodes"]}
    for n in workflow["nodes"]:
        if n["type"] in UI_ONLY:
            continue
        if n["type"] not in object_info:
            problems.append(f"node {n['id']}: unknown type {n['type']}")
            continue
        node_def = object_info[n["type"]]
        linked = {i["name"] for i in n.get("inputs", []) if i.get("link") is not None}
        specs = {name: (kind, options) for name, kind, options, _ in input_specs(node_def)}
        slots = widget_slots(node_def)
        values = n.get("widgets_values", [])
        if len(values) != len(slots):
            problems.append(f"node {n['id']} {n['type']}: {len(values)} widget values for {len(slots)} widgets "
                            f"{slots}")
            continue
        for i, (name, value) in enumerate(zip(slots, values)):
            if name == CONTROL:
                owner = slots[i - 1]
                if value not in CONTROL_MODES:
                    problems.append(f"node {n['id']} {n['type']}: control of {owner} is {value!r}, not one of "
                                    f"{CONTROL_MODES} (a widget value on the wrong input)")
                elif value != "fixed" and owner not in linked:
                    problems.append(f"node {n['id']} {n['type']}: {owner} is set to {value} after every run, so the "
                                    "saved workflow does not reproduce its result")
            elif name != UPLOAD and name not in linked and not check_value(*specs[name], value):
                problems.append(f"node {n['id']} {n['type']}: widget {name}={value!r} does not fit {specs[name]}")
        if n["type"] in ("LoadImage", "LoadImageMask") and values and values[0] not in provided:
            problems.append(f"node {n['id']} {n['type']}: {values[0]!r} is not shipped in example_inputs/")
        problems += check_models(n, slots, values)
        if not node_def.get("output_node") and not any(o.get("links") for o in n.get("outputs", [])):
            problems.append(f"node {n['id']} {n['type']}: no output is connected, so it never runs")
        for name, kind, options, optional in input_specs(node_def):
            if not optional and not is_widget(kind, options) and name not in linked:
                problems.append(f"node {n['id']} {n['type']}: required input {name} is not connected")
    for link_id, src, src_slot, dst, dst_slot, kind in workflow["links"]:
        if src not in nodes or dst not in nodes:
            problems.append(f"link {link_id}: joins a missing node")
            continue
        s, d = nodes[src], nodes[dst]
        if s["type"] in UI_ONLY or d["type"] in UI_ONLY or s["type"] not in object_info or d["type"] not in object_info:
            continue
        out_type = object_info[s["type"]]["output"][src_slot]
        target = d["inputs"][dst_slot]
        in_type = dict((name, k) for name, k, _, _ in input_specs(object_info[d["type"]])).get(target["name"])
        if not (out_type == kind == in_type or "*" in (out_type, in_type)):
            problems.append(f"link {link_id}: {s['type']}.{src_slot} ({out_type}) -> {d['type']}.{target['name']} "
                            f"({in_type}) declared {kind}")
    return problems + check_layout(workflow)


def to_api(workflow, object_info):
    """UI workflow -> API prompt {id: {class_type, inputs}}, as the frontend's graphToPrompt builds it."""
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for n in workflow["nodes"]:
        if n["type"] in UI_ONLY:
            continue
        inputs = {}
        for name, value in zip(widget_slots(object_info[n["type"]]), n.get("widgets_values", [])):
            if name not in (CONTROL, UPLOAD):
                inputs[name] = value
        for i in n.get("inputs", []):
            if i.get("link") is not None:
                link = links[i["link"]]
                inputs[i["name"]] = [str(link[1]), link[2]]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt


# Fewer iterations in the test substitution: every node still runs every code path (several steps, several
# iterations, several optimisation rounds), on 16×16 latents of tiny models.
CHEAP = {"BasicScheduler": {"steps": 3}, "InversionSuite_FixedPointInvert": {"max_iterations": 3},
         "InversionSuite_FixedPointInversionSampler": {"max_iterations": 3},
         "InversionSuite_OscillationInvert": {"iterations": 8, "burn_in": 2},
         "InversionSuite_GroupInversion": {"iterations": 8, "burn_in": 2},
         "InversionSuite_PostInversionOptimize": {"steps": 2, "rounds": 2},
         "InversionSuite_FineTuneInversion": {"steps": 3}, "Flux2Scheduler": {"steps": 3}}
# Diffusion-model file names (a part of them) → the tiny family that stands in for them; any other UNETLoader: Flux
UNET_FAMILIES = {"wan2.1": "wan21", "flux-2-klein": "flux2_klein", "hunyuanvideo1.5": "hunyuan_video15"}


def prompt_family(prompt):
    for node in prompt.values():
        if node["class_type"] == "UNETLoader":
            name = node["inputs"].get("unet_name", "").lower()
            return next((family for part, family in UNET_FAMILIES.items() if part in name), "flux")
        if node["class_type"] == "CheckpointLoaderSimple" and "sd3" in node["inputs"].get("ckpt_name", "").lower():
            return "sd3"
    return "sd15"


def decoded(prompt, ref):
    """The VAEDecode behind an IMAGE link, followed through pixel pastes (ImageCompositeMasked's source), or None."""
    node = prompt[ref[0]]
    while node["class_type"] == "ImageCompositeMasked":
        node = prompt[node["inputs"]["source"][0]]
    return node if node["class_type"] == "VAEDecode" else None


def with_tiny_models(prompt, cheap=True):
    """Replace loaders, text encoders, images and VAEs by the test-only tiny nodes so a workflow runs on CPU; with
    ``cheap``, also cut steps and iterations (CHEAP)."""
    family = prompt_family(prompt)
    out = {}
    for key, node in prompt.items():
        kind, inputs = node["class_type"], node["inputs"]
        if kind in ("CheckpointLoaderSimple", "UNETLoader"):
            out[key] = {"class_type": "InvTest_TinyModel", "inputs": {"family": family}}
        elif kind == "CLIPTextEncode":
            seed = zlib.crc32(inputs.get("text", "").encode()) % 1000
            out[key] = {"class_type": "InvTest_TinyCond", "inputs": {"family": family, "seed": seed}}
        elif kind in ("VAEEncode", "EmptyLatentImage", "EmptySD3LatentImage"):
            out[key] = {"class_type": "InvTest_TinyLatent", "inputs": {"family": family, "batch": 1}}
        elif kind in ("SaveImage", "PreviewImage", "SaveAnimatedWEBP") and decoded(prompt, inputs["images"]):
            out[key] = {"class_type": "SaveLatent",
                        "inputs": {"samples": decoded(prompt, inputs["images"])["inputs"]["samples"],
                                   "filename_prefix": f"workflow_{key}"}}
        elif kind not in ("LoadImage", "VAEDecode", "VAELoader", "DualCLIPLoader", "CLIPLoader",
                          "ImageCompositeMasked"):
            out[key] = {"class_type": kind, "inputs": {**inputs, **(CHEAP.get(kind, {}) if cheap else {})}}
    return out
