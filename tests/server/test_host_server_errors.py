"""Host tier, server level: malformed prompts through POST /prompt (issue 13). Each is answered with ComfyUI's
400 and node_errors naming the node and input, or, where only the node can tell (a NaN that JSON lets through,
a latent the model cannot take), with an execution error naming the node and input; and after every one the
server runs the next, good prompt."""
import json
import time

import pytest

import hostlib

hostlib.require_comfyui()


NODE = "5"  # the pack's node in every prompt below


def good_prompt(node="InversionSuite_FixedPointInvert", family="sd3"):
    """Tiny model → scheduler → the pack's node → PreviewAny (an output node, so the prompt executes)."""
    widgets = {
        "InversionSuite_FixedPointInvert": {"max_iterations": 2, "tolerance": 1e-3, "criterion": "intra-path",
                                            "anderson_window": 1, "perturbation": 0.5, "seed": 0,
                                            "sigmas": ["4", 0], "latent": ["3", 0]},
        "InversionSuite_OscillationInvert": {"sigma": 0.4, "sigma_mode": "absolute", "iterations": 4, "burn_in": 0,
                                             "max_period": 2, "decode": "one-step", "decode_steps": 2,
                                             "latent": ["3", 0]},
    }[node]
    return {
        "1": {"class_type": "InvTest_TinyModel", "inputs": {"family": family}},
        "2": {"class_type": "InvTest_TinyCond", "inputs": {"family": family, "seed": 1}},
        "3": {"class_type": "InvTest_TinyLatent", "inputs": {"family": family, "batch": 1}},
        "4": {"class_type": "BasicScheduler", "inputs": {"model": ["1", 0], "scheduler": "simple", "steps": 2,
                                                         "denoise": 1.0}},
        NODE: {"class_type": node, "inputs": {"model": ["1", 0], "positive": ["2", 0], "cfg": 1.0, **widgets}},
        "6": {"class_type": "PreviewAny", "inputs": {"source": [NODE, 2 if "FixedPoint" in node else 4]}},
    }


def assert_serves_next(server):
    status, result = server.run_prompt(good_prompt())
    assert status == 200 and result["status"]["status_str"] == "success", json.dumps(result)[-1500:]


def test_good_prompt_runs(server):
    assert_serves_next(server)


def test_unknown_node_is_a_400(server):
    prompt = good_prompt()
    prompt[NODE]["class_type"] = "InversionSuite_NoSuchNode"
    status, body = server.post("/prompt", {"prompt": prompt})
    # by status, the error's structure and the node id, not by ComfyUI's wording (which changed between 0.3.64's
    # "invalid_prompt … does not exist" and 0.30's "missing_node_type … not found")
    assert status == 400 and "node_errors" in body
    assert body["error"]["type"] in ("invalid_prompt", "missing_node_type")
    assert body["error"]["details"] == f"Node ID '#{NODE}'"
    assert_serves_next(server)


# (input, value, ComfyUI's error type): the frontend's own checks, applied by the server to API prompts too
BAD_WIDGETS = [
    ("sigmas", ["3", 0], "return_type_mismatch"),  # a LATENT link into SIGMAS
    ("latent", ["4", 0], "return_type_mismatch"),  # a SIGMAS link into LATENT
    ("max_iterations", 0, "value_smaller_than_min"),
    ("max_iterations", 10 ** 9, "value_bigger_than_max"),  # a huge iteration count
    ("tolerance", 0.0, "value_smaller_than_min"),
    ("cfg", 1e9, "value_bigger_than_max"),
    ("max_iterations", "many", "invalid_input_type"),
    ("perturbation", "half", "invalid_input_type"),
    ("latent", None, "required_input_missing"),
]


@pytest.mark.parametrize("name, value, kind", BAD_WIDGETS, ids=[f"{b[0]}={b[1]!r}" for b in BAD_WIDGETS])
def test_malformed_input_is_a_400_naming_node_and_input(server, name, value, kind):
    prompt = good_prompt()
    if value is None:
        del prompt[NODE]["inputs"][name]
    else:
        prompt[NODE]["inputs"][name] = value
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400, body
    errors = body["node_errors"][NODE]["errors"]
    assert any(e["type"] == kind and e["extra_info"]["input_name"] == name for e in errors), errors
    assert body["node_errors"][NODE]["class_type"] == "InversionSuite_FixedPointInvert"
    assert_serves_next(server)


def test_huge_iteration_count_on_oscillation_is_a_400(server):
    prompt = good_prompt("InversionSuite_OscillationInvert")
    prompt[NODE]["inputs"]["iterations"] = 10 ** 9
    status, body = server.post("/prompt", {"prompt": prompt})
    assert status == 400
    assert any(e["type"] == "value_bigger_than_max" and e["extra_info"]["input_name"] == "iterations"
               for e in body["node_errors"][NODE]["errors"])
    assert_serves_next(server)


def execution_error(result):
    return next(m[1] for m in result["status"]["messages"] if m[0] == "execution_error")


# what passes ComfyUI's own checks but not the node's: the node refuses it before any model call
EXECUTION_ERRORS = [
    ("InversionSuite_FixedPointInvert", "cfg", float("nan"),
     "FixedPointInvert: input 'cfg' must be a number (finite), got nan"),  # JSON parsers accept NaN
    ("InversionSuite_OscillationInvert", "sigma", 5.0, "OscillationInvert: input 'sigma' must be at most σ_max = 1 "
                                                       "for this model, got 5.0"),
]


@pytest.mark.parametrize("node, name, value, message", EXECUTION_ERRORS, ids=["nan-cfg", "sigma-above-max"])
def test_value_only_the_node_can_refuse_is_an_execution_error(server, node, name, value, message):
    prompt = good_prompt(node)
    prompt[NODE]["inputs"][name] = value
    status, result = server.run_prompt(prompt)
    assert status == 200 and result["status"]["status_str"] == "error"
    error = execution_error(result)
    assert error["node_id"] == NODE and error["exception_type"].endswith("ValueError")
    assert error["exception_message"].strip() == message
    assert_serves_next(server)


def test_latent_of_another_family_is_an_execution_error(server):
    """An SD1.5 latent (4 channels) on SD3: refused by the node naming its input, then the server goes on."""
    prompt = good_prompt()
    prompt["3"]["inputs"]["family"] = "sd15"
    status, result = server.run_prompt(prompt)
    assert status == 200 and result["status"]["status_str"] == "error"
    error = execution_error(result)
    assert error["node_id"] == NODE
    assert error["exception_message"].startswith("FixedPointInvert: input 'latent' must have 16 channels")
    assert_serves_next(server)


def test_option_outside_a_combo_is_refused_naming_node_and_input(server):
    """ComfyUI 0.3.64 does not check V3 combo options itself (later versions answer 400 value_not_in_list): either
    way the answer names the node and the input, and the server goes on."""
    prompt = good_prompt()
    prompt[NODE]["inputs"]["criterion"] = "best"
    status, body = server.post("/prompt", {"prompt": prompt})
    if status == 400:
        assert any(e["extra_info"]["input_name"] == "criterion" for e in body["node_errors"][NODE]["errors"])
    else:
        deadline = time.time() + 120
        while body["prompt_id"] not in server.get(f"/history/{body['prompt_id']}") and time.time() < deadline:
            time.sleep(0.3)
        error = execution_error(server.get(f"/history/{body['prompt_id']}")[body["prompt_id"]])
        assert error["node_id"] == NODE and error["exception_message"].strip() == (
            "FixedPointInvert: input 'criterion' must be one of ['inter-path', 'intra-path'], got 'best'")
    assert_serves_next(server)
