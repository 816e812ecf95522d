"""Host tier, server level: a headless ComfyUI (main.py --cpu) loads the pack; every node registers with
tooltips and descriptions; every bundled workflow is consistent with the registered nodes and runs end to end
through POST /prompt with tiny stand-in models. A workflow for a family only a newer ComfyUI has (18, 19: ComfyUI
0.30) is checked on an older host against that ComfyUI's recorded stock nodes and the pack's registered ones, and
the older server refuses it before running anything, naming a stock node or value it lacks."""
import json
import pathlib

import pytest

import hostlib

hostlib.require_comfyui()

from workflow_tools import (CONTROL, EXAMPLE_INPUTS, MODEL_FILES, UI_ONLY, check_workflow, newer_stock,  # noqa: E402
                            prompt_family, provided_inputs, stock_schema, to_api, widget_slots, with_tiny_models)

ROOT = pathlib.Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
NEWER = newer_stock()  # the workflows that need a newer ComfyUI, and its stock nodes they use
NODE_IDS = ["InversionSuite_FixedPointInvert", "InversionSuite_FixedPointInversionSampler",
            "InversionSuite_BDIASampler", "InversionSuite_BDIAInvert", "InversionSuite_OscillationInvert",
            "InversionSuite_GroupInversion", "InversionSuite_PostInversionOptimize", "InversionSuite_FineTuneInversion",
            "InversionSuite_AttentionEditRecord", "InversionSuite_AttentionEditInject",
            "InversionSuite_AttentionEditReport"]


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


@pytest.fixture(scope="module")
def comfyui_version(server):
    return server.get("/system_stats")["system"]["comfyui_version"]


def node_types(workflow):
    return {n["type"] for n in workflow["nodes"]} - UI_ONLY


def runs_here(workflow, object_info):
    """Whether this ComfyUI has every node the workflow uses and the model class of the family it is for."""
    if not node_types(workflow) <= set(object_info):
        return False
    return hostlib.on_host(prompt_family(to_api(workflow, object_info)))


def as_on_newer_host(object_info):
    """Node definitions as the newer ComfyUI declares its stock nodes (recorded), the pack's as registered here."""
    return {**object_info, **NEWER["nodes"]}


def test_pack_imports_cleanly(server, object_info):
    log = server.text_log()
    assert "inversion_suite" in log and not any("IMPORT FAILED" in line and "inversion_suite" in line
                                                 for line in log.splitlines())


@pytest.mark.parametrize("node_id", NODE_IDS)
def test_node_registers_with_tooltips_and_description(object_info, node_id):
    info = object_info[node_id]
    assert info["category"] == "sampling/inversion suite"
    assert len(info["description"]) > 80
    for group in ("required", "optional"):
        for name, spec in info["input"].get(group, {}).items():
            assert len(spec) > 1 and spec[1].get("tooltip"), f"{node_id}.{name} has no tooltip"


# Nodes that return a report shown on the node (V3 UI text); the two SAMPLER nodes have none.
REPORTING = {"InversionSuite_FixedPointInvert", "InversionSuite_BDIAInvert", "InversionSuite_OscillationInvert",
             "InversionSuite_GroupInversion", "InversionSuite_PostInversionOptimize",
             "InversionSuite_FineTuneInversion"}


def test_workflows_are_listed_as_templates_with_thumbnails(server):
    listed = server.get("/api/workflow_templates")
    assert sorted(listed["inversion_suite"]) == sorted(w.stem for w in WORKFLOWS)
    assert len(WORKFLOWS) >= 12
    for w in WORKFLOWS:  # frontend 1.27 asks /api/workflow_templates/<pack>/<name>.jpg
        assert w.with_suffix(".jpg").stat().st_size > 5000, w.stem


def test_every_node_and_family_has_a_workflow(object_info):
    used, families = set(), set()
    for w in WORKFLOWS:
        workflow = json.loads(w.read_text())
        used |= {n["type"] for n in workflow["nodes"]}
        families.add(w.stem.rsplit("(", 1)[-1].rstrip(")"))
    assert set(NODE_IDS) <= used, set(NODE_IDS) - used
    assert {"SD1.5", "SD3.5", "Flux", "Wan 2.1", "Flux.2 Klein", "HunyuanVideo 1.5"} <= families


def test_server_copies_the_example_inputs_without_overwriting(server, tmp_path):
    from inversion_suite.nodes import install_example_inputs
    assert provided_inputs() <= {p.name for p in (server.dir / "input").iterdir()}
    mine = tmp_path / sorted(provided_inputs())[0]
    mine.write_bytes(b"the user's own file")
    copied = install_example_inputs(tmp_path)
    assert mine.read_bytes() == b"the user's own file" and mine.name not in copied
    assert len(copied) == len(provided_inputs()) - 1 and install_example_inputs(tmp_path) == []


def test_seed_inputs_declare_their_control(object_info):
    for node_id in ("InversionSuite_FixedPointInvert", "InversionSuite_FineTuneInversion"):
        spec = object_info[node_id]["input"]["required"]["seed"][1]
        assert spec["control_after_generate"] in (True, "fixed")
        slots = widget_slots(object_info[node_id])
        assert slots[slots.index("seed") + 1] == CONTROL


@pytest.mark.parametrize("path", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_workflow_is_consistent_with_registered_nodes(object_info, comfyui_version, path):
    """As the frontend loads it, against this ComfyUI's nodes. A workflow that needs a newer ComfyUI: its stock nodes
    are the recorded ones of that ComfyUI (still what it declares, where this host is that ComfyUI), and on an older
    host the stock nodes it lacks are those, the pack's nodes (widget values included) checked as registered here."""
    workflow = json.loads(path.read_text())
    if path.stem not in NEWER["workflows"]:
        assert check_workflow(workflow, object_info) == []
        return
    stock = {k for k in node_types(workflow) if not k.startswith("InversionSuite_")}
    assert stock <= set(NEWER["nodes"]) and not any(k.startswith("InversionSuite_") for k in NEWER["nodes"])
    if comfyui_version == NEWER["comfyui"]:
        assert {k: stock_schema(object_info[k]) for k in stock} == {k: NEWER["nodes"][k] for k in stock}
    if runs_here(workflow, object_info):
        assert check_workflow(workflow, object_info) == []
    else:
        assert node_types(workflow) - set(object_info) <= stock  # only stock nodes are missing here, never the pack's
        assert check_workflow(workflow, as_on_newer_host(object_info)) == []


def refused_before_running(server, object_info, workflow):
    """On a ComfyUI without the workflow's family: POST /prompt of the workflow as it is (no stand-ins) is refused
    (400) naming a stock node or a stock value this ComfyUI lacks; no node of the pack is named."""
    prompt = to_api(workflow, as_on_newer_host(object_info))
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400, body
    missing = {v["class_type"] for v in prompt.values()} - set(object_info)
    if missing:  # ComfyUI stops at the first node it does not have
        assert body["error"]["type"] == "invalid_prompt" and any(f"node {m} does not" in body["error"]["message"]
                                                                 for m in missing), body
        return
    errors = body["node_errors"]
    assert errors and not [k for k in errors if prompt[k]["class_type"].startswith("InversionSuite_")], errors
    newer_values = [(prompt[k]["class_type"], e["extra_info"]["input_name"], e["extra_info"]["received_value"])
                    for k, v in errors.items() for e in v["errors"] if e["type"] == "value_not_in_list"
                    and not str(e["extra_info"]["received_value"]).endswith(MODEL_FILES)]
    assert newer_values, errors  # refused for a value of the newer ComfyUI, not only for model files absent here
    for kind, name, value in newer_values:
        spec = NEWER["nodes"][kind]["input"]
        options = {**spec.get("required", {}), **spec.get("optional", {})}[name]
        assert value in (options[0] if isinstance(options[0], list) else options[1]["options"])


@pytest.mark.parametrize("path", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_workflow_runs_end_to_end_with_tiny_models(server, object_info, path):
    """With tiny stand-ins of its family; on a ComfyUI that lacks the family (a newer ComfyUI's workflow on an older
    host), the server refuses it before running anything."""
    workflow = json.loads(path.read_text())
    if not runs_here(workflow, object_info):
        assert path.stem in NEWER["workflows"], f"{path.stem} does not run on this ComfyUI"
        refused_before_running(server, object_info, workflow)
        return
    prompt = with_tiny_models(to_api(workflow, object_info))
    status, result = server.run_prompt(prompt)
    assert status == 200, result
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[-2000:]
    ours = [k for k, v in prompt.items() if v["class_type"] in REPORTING]
    for k in ours:  # each node's report comes back as UI text (shown on the node)
        text = result["outputs"][k]["text"][0]
        assert text.startswith(prompt[k]["class_type"].split("_", 1)[1]) and ("model calls" in text or "loss" in text)
    assert any(v["class_type"].startswith("InversionSuite_") for v in prompt.values())


def _workflow(name):
    return json.loads(next(w for w in WORKFLOWS if w.stem.startswith(name)).read_text())


def _node(workflow, kind):
    return next(n for n in workflow["nodes"] if n["type"] == kind)


def test_checker_catches_what_the_frontend_would_meet(object_info):
    clean = _workflow("01 ")
    assert check_workflow(clean, object_info) == []

    def problems(edit, base=clean):
        workflow = json.loads(json.dumps(base))
        edit(workflow)
        return " | ".join(check_workflow(workflow, object_info))

    def unknown(w):
        _node(w, "KSamplerSelect")["type"] = "NoSuchNode"

    def seed_randomises(w):
        values = _node(w, "InversionSuite_FixedPointInvert")["widgets_values"]
        values[values.index("fixed")] = "randomize"

    def control_slot_missing(w):  # values written without the control: every later value lands one input early
        values = _node(w, "InversionSuite_FineTuneInversion")["widgets_values"]
        values.remove("fixed")
        values.append(values[-1])

    def bad_combo(w):
        _node(w, "KSamplerSelect")["widgets_values"][0] = "no_such_sampler"

    def unshipped_image(w):
        _node(w, "LoadImage")["widgets_values"][0] = "example.png"

    def no_url(w):
        _node(w, "CheckpointLoaderSimple")["properties"].pop("models")

    def overlap(w):
        a, b = _node(w, "KSamplerSelect"), _node(w, "CFGGuider")
        a["pos"] = [b["pos"][0] + 20, b["pos"][1] + 20]

    def dangling(w):
        w["nodes"].append({**_node(w, "KSamplerSelect"), "id": 99, "pos": [-2000, -2000],
                           "outputs": [{"name": "SAMPLER", "type": "SAMPLER", "links": []}]})

    def outside_groups(w):
        w["groups"] = w["groups"][1:]

    assert "unknown type NoSuchNode" in problems(unknown)
    assert "node 99 KSamplerSelect: no output is connected" in problems(dangling)
    assert "lies in 0 groups" in problems(outside_groups)
    assert "seed is set to randomize after every run" in problems(seed_randomises)
    assert "control of seed is 0.4" in problems(control_slot_missing, _workflow("12 "))
    assert "sampler_name='no_such_sampler' does not fit" in problems(bad_combo)
    assert "'example.png' is not shipped" in problems(unshipped_image)
    assert "has no download URL" in problems(no_url)
    assert "overlap" in problems(overlap)


def test_newer_host_workflows_are_checked_on_every_host(object_info):
    """What the checks of a newer ComfyUI's workflow catch also where that ComfyUI's stock nodes are the recorded ones:
    a pack widget out of its range, a stock value or node that ComfyUI does not have."""
    workflow = _workflow("18 ")
    assert path_stem("18 ") in NEWER["workflows"] and "Flux2Scheduler" in NEWER["nodes"]
    info = as_on_newer_host(object_info)
    assert check_workflow(workflow, info) == []

    def problems(edit):
        changed = json.loads(json.dumps(workflow))
        edit(changed)
        return " | ".join(check_workflow(changed, info))

    def gamma_out_of_range(w):
        values = _node(w, "InversionSuite_BDIAInvert")["widgets_values"]
        values[values.index(0.96)] = 1.5

    def unknown_text_encoder_type(w):
        _node(w, "CLIPLoader")["widgets_values"][1] = "no_such_type"

    def unknown_scheduler(w):
        _node(w, "Flux2Scheduler")["type"] = "Flux3Scheduler"

    assert "widget gamma=1.5 does not fit" in problems(gamma_out_of_range)
    assert "type='no_such_type' does not fit" in problems(unknown_text_encoder_type)
    assert "unknown type Flux3Scheduler" in problems(unknown_scheduler)


def path_stem(prefix):
    return next(w.stem for w in WORKFLOWS if w.stem.startswith(prefix))


def test_checker_catches_a_mistyped_link(object_info):
    workflow = _workflow("04 ")
    vae_link = next(link for link in workflow["links"] if link[5] == "VAE")
    vae_link[5] = "IMAGE"
    assert any(f"link {vae_link[0]}:" in p and "declared IMAGE" in p for p in check_workflow(workflow, object_info))


def test_bad_prompt_is_rejected_with_400(server, object_info):
    prompt = with_tiny_models(to_api(_workflow("01 "), object_info))
    node = next(k for k, v in prompt.items() if v["class_type"] == "InversionSuite_FixedPointInvert")
    prompt[node]["inputs"]["max_iterations"] = 0
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400 and node in body["node_errors"]


def test_seed_control_defaults_to_fixed_where_the_api_can_say_so():
    """ComfyUI ≥ 0.4 has io.ControlAfterGenerate (string default for the frontend); 0.3.64 only a boolean."""
    import enum
    import types
    from inversion_suite.nodes.host import seed_input

    class Mode(str, enum.Enum):
        fixed = "fixed"
        randomize = "randomize"
    seen = {}
    fake = types.SimpleNamespace(ControlAfterGenerate=Mode, Int=types.SimpleNamespace(
        Input=lambda name, **kw: seen.update(name=name, **kw)))
    seed_input(fake, "Seed.")
    assert seen["name"] == "seed" and seen["control_after_generate"] == "fixed"
    del fake.ControlAfterGenerate
    seed_input(fake, "Seed.")
    assert seen["control_after_generate"] is True


def test_on_load_copies_the_example_inputs(monkeypatch, tmp_path):
    """ComfyUI ≥ 0.38 awaits the extension's on_load (0.3.64 never does; comfy_entrypoint copies there)."""
    import asyncio
    import folder_paths
    from inversion_suite.nodes import InversionSuiteExtension
    monkeypatch.setattr(folder_paths, "get_input_directory", lambda: str(tmp_path))
    asyncio.run(InversionSuiteExtension().on_load())
    assert {p.name for p in tmp_path.iterdir()} == provided_inputs()


def test_every_loaded_image_is_in_the_servers_input_folder(server):
    """The LoadImage files the workflows name load through the server (the tiny substitution skips LoadImage)."""
    names = sorted({n["widgets_values"][0] for w in WORKFLOWS for n in json.loads(w.read_text())["nodes"]
                    if n["type"] == "LoadImage"})
    assert names and set(names) <= provided_inputs()
    prompt = {}
    for i, name in enumerate(names):
        prompt[f"load{i}"] = {"class_type": "LoadImage", "inputs": {"image": name}}
        prompt[f"show{i}"] = {"class_type": "PreviewImage", "inputs": {"images": [f"load{i}", 0]}}
    status, result = server.run_prompt(prompt)
    assert status == 200 and result["status"]["status_str"] == "success", result
    from PIL import Image
    frames = [getattr(Image.open(EXAMPLE_INPUTS / name), "n_frames", 1) for name in names]
    assert [len(result["outputs"][f"show{i}"]["images"]) for i in range(len(names))] == frames  # every frame
    assert 17 in frames and all(f % 4 == 1 for f in frames)  # the clip: 4k + 1 frames, as Wan's VAE needs
