"""UI-format workflow helpers shared by the workflow builder and the server tests: which inputs are widgets,
consistency checks against /object_info, and conversion to an API prompt with tiny stand-in models."""
import zlib

WIDGET_TYPES = {"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"}
MODEL_FILES = (".safetensors", ".ckpt", ".pt", ".pth", ".sft", ".gguf")
UI_ONLY = {"Note", "MarkdownNote", "Reroute", "PrimitiveNode"}


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


def is_widget(kind, options):
    return kind in WIDGET_TYPES and not options.get("forceInput")


def widget_slots(node_def):
    """Widget names in widgets_values order; a seed with control_after_generate takes an extra slot (None)."""
    names = []
    for name, kind, options, _ in input_specs(node_def):
        if is_widget(kind, options):
            names.append(name)
            if options.get("control_after_generate") or options.get("image_upload"):
                names.append(None)
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


def check_workflow(workflow, object_info):
    """Every problem found: unknown node types, mistyped links, widget values that do not fit."""
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
            problems.append(f"node {n['id']} {n['type']}: {len(values)} widget values for {len(slots)} widgets")
            continue
        for name, value in zip(slots, values):
            if name is not None and name not in linked and not check_value(*specs[name], value):
                problems.append(f"node {n['id']} {n['type']}: widget {name}={value!r} does not fit {specs[name]}")
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
    return problems


def to_api(workflow, object_info):
    """UI workflow -> API prompt {id: {class_type, inputs}}."""
    links = {l[0]: l for l in workflow["links"]}
    prompt = {}
    for n in workflow["nodes"]:
        if n["type"] in UI_ONLY:
            continue
        inputs = {}
        for name, value in zip(widget_slots(object_info[n["type"]]), n.get("widgets_values", [])):
            if name is not None:
                inputs[name] = value
        for i in n.get("inputs", []):
            if i.get("link") is not None:
                link = links[i["link"]]
                inputs[i["name"]] = [str(link[1]), link[2]]
        prompt[str(n["id"])] = {"class_type": n["type"], "inputs": inputs}
    return prompt


def with_tiny_models(prompt):
    """Replace loaders, text encoders, images and VAEs by the test-only tiny nodes so a workflow runs on CPU."""
    family = "flux" if any(v["class_type"] == "UNETLoader" for v in prompt.values()) else "sd15"
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
        elif kind in ("SaveImage", "PreviewImage") and prompt[inputs["images"][0]]["class_type"] == "VAEDecode":
            out[key] = {"class_type": "SaveLatent",
                        "inputs": {"samples": prompt[inputs["images"][0]]["inputs"]["samples"],
                                   "filename_prefix": f"workflow_{key}"}}
        elif kind not in ("LoadImage", "VAEDecode", "VAELoader", "DualCLIPLoader", "CLIPLoader"):
            out[key] = node
    return out
