"""Host tier, server level: a headless ComfyUI (main.py --cpu) loads the pack; every node registers with
tooltips and descriptions; every bundled workflow is consistent with the registered nodes and runs end to end
through POST /prompt with tiny stand-in models."""
import json
import pathlib

import pytest

import hostlib

hostlib.require_comfyui()

import server as server_mod  # noqa: E402
from workflow_tools import check_workflow, to_api, with_tiny_models  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.json"))
NODE_IDS = ["InversionSuite_FixedPointInvert", "InversionSuite_FixedPointInversionSampler",
            "InversionSuite_BDIASampler", "InversionSuite_BDIAInvert", "InversionSuite_OscillationInvert",
            "InversionSuite_GroupInversion", "InversionSuite_PostInversionOptimize", "InversionSuite_FineTuneInversion"]


@pytest.fixture(scope="module")
def server():
    s = server_mod.Server()
    yield s
    s.stop()


@pytest.fixture(scope="module")
def object_info(server):
    return server.get("/object_info")


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


def test_workflows_are_listed_as_templates(server):
    listed = server.get("/api/workflow_templates")
    assert sorted(listed["inversion_suite"]) == sorted(w.stem for w in WORKFLOWS)
    assert len(WORKFLOWS) >= 8


@pytest.mark.parametrize("path", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_workflow_is_consistent_with_registered_nodes(object_info, path):
    workflow = json.loads(path.read_text())
    assert check_workflow(workflow, object_info) == []


@pytest.mark.parametrize("path", WORKFLOWS, ids=[w.stem for w in WORKFLOWS])
def test_workflow_runs_end_to_end_with_tiny_models(server, object_info, path):
    prompt = with_tiny_models(to_api(json.loads(path.read_text()), object_info))
    status, result = server.run_prompt(prompt)
    assert status == 200, result
    assert result["status"]["status_str"] == "success", json.dumps(result["status"])[-2000:]
    ours = [k for k, v in prompt.items() if v["class_type"].startswith("InversionSuite_")]
    assert ours and all(k in result["outputs"] or prompt[k]["class_type"] for k in ours)


def test_checker_catches_a_mistyped_link(object_info):
    workflow = json.loads((ROOT / "workflows" / "bdia_edit_sd15.json").read_text())
    vae_link = next(link for link in workflow["links"] if link[5] == "VAE")
    vae_link[5] = "IMAGE"
    assert any(f"link {vae_link[0]}:" in p and "declared IMAGE" in p for p in check_workflow(workflow, object_info))


def test_bad_prompt_is_rejected_with_400(server, object_info):
    prompt = with_tiny_models(to_api(json.loads((ROOT / "workflows" / "fixed_point_edit_sd15.json").read_text()),
                                     object_info))
    node = next(k for k, v in prompt.items() if v["class_type"] == "InversionSuite_FixedPointInvert")
    prompt[node]["inputs"]["max_iterations"] = 0
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400 and node in body["node_errors"]
