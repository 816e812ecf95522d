"""Host tier, server level, issue 14: every node of the pack runs three times in a row through POST /prompt in one
headless ComfyUI server, on the same model loaded by a loader node inside the server's execution (inference mode,
so its weights are inference tensors). A widget changes per run so ComfyUI's cache cannot answer a run; the history
shows each run executed the pack's nodes and succeeded; the LATENTs are finite; the test-only probe node
(tests/host_pack) shows the loaded model unchanged: its weight checksum and patches after every run, a stock Euler
run on it after the third (bitwise the same as before any pack node ran). With the old live-module lookup in
nodes/grad.py, run 2 of Post-Inversion Optimize and of Fine-Tune Inversion failed here ('Inference tensors cannot
be saved for backward')."""
import json

import pytest

import hostlib

hostlib.require_comfyui()


FAMILY = "flux"  # the family whose second runs failed (in-place block additions, checkpointed gradients)


@pytest.fixture(scope="module")
def defaults(server):
    """Each pack node's widget defaults from /object_info (COMBOs: their default, else their first option)."""
    info = server.get("/object_info")
    out = {}
    for node_id, node in info.items():
        if node_id.startswith("InversionSuite_"):
            values = {}
            for name, spec in node["input"]["required"].items():
                options = spec[1] if len(spec) > 1 else {}
                if isinstance(spec[0], list):
                    values[name] = options.get("default", spec[0][0])
                elif "default" in options:
                    values[name] = options["default"]
            out[node_id] = values
    return out


def base():
    """Tiny model, conditioning, latent, 3-step schedule and guider: the same in every prompt, so ComfyUI keeps their
    outputs (the loaded model is one object for the whole module)."""
    return {
        "model": {"class_type": "InvTest_TinyModel", "inputs": {"family": FAMILY}},
        "cond": {"class_type": "InvTest_TinyCond", "inputs": {"family": FAMILY, "seed": 1}},
        "latent": {"class_type": "InvTest_TinyLatent", "inputs": {"family": FAMILY, "batch": 1}},
        "sigmas": {"class_type": "BasicScheduler", "inputs": {"model": ["model", 0], "scheduler": "simple", "steps": 3,
                                                              "denoise": 1.0}},
        "guider": {"class_type": "BasicGuider", "inputs": {"model": ["model", 0], "conditioning": ["cond", 0]}},
    }


def node(defaults, kind, **inputs):
    kind = f"InversionSuite_{kind}"
    return {"class_type": kind, "inputs": {**defaults[kind], **inputs}}


def probe(tag, latent_1=None, latent_2=None, other_model=None, sample=True):
    inputs = {"family": FAMILY, "model": ["model", 0], "tag": tag, "sample": sample}
    for name, value in (("latent_1", latent_1), ("latent_2", latent_2), ("other_model", other_model)):
        if value is not None:
            inputs[name] = value
    return {"class_type": "InvTest_ModelProbe", "inputs": inputs}


COMMON = dict(model=["model", 0], latent=["latent", 0], sigmas=["sigmas", 0], guider=["guider", 0])


def stock_sampler(sampler, sigmas, noise=None, latent=("latent", 0)):
    nodes = {"sample": {"class_type": "SamplerCustomAdvanced",
                        "inputs": {"noise": noise or ["nonoise", 0], "guider": ["guider", 0], "sampler": sampler,
                                   "sigmas": sigmas, "latent_image": list(latent)}}}
    if noise is None:
        nodes["nonoise"] = {"class_type": "DisableNoise", "inputs": {}}
    return nodes


def fixed_point_invert(d, run):
    return {"node": node(d, "FixedPointInvert", model=["model", 0], latent=["latent", 0], sigmas=["sigmas", 0],
                         guider=["guider", 0], max_iterations=3, seed=run)}, [["node", 0]]


def fixed_point_sampler(d, run):
    return {"node": node(d, "FixedPointInversionSampler", max_iterations=3, seed=run),
            "flip": {"class_type": "FlipSigmas", "inputs": {"sigmas": ["sigmas", 0]}},
            **stock_sampler(["node", 0], ["flip", 0])}, [["sample", 0]]


def bdia(d, run):
    gamma = (0.96, 0.9, 0.8)[run]
    return {"node": node(d, "BDIAInvert", model=["model", 0], latent=["latent", 0], sigmas=["sigmas", 0],
                         guider=["guider", 0], gamma=gamma),
            "node2": node(d, "BDIASampler", inversion=["node", 1], gamma=gamma),
            **stock_sampler(["node2", 0], ["sigmas", 0], noise=["node", 0])}, [["node", 2], ["sample", 0]]


def oscillation(d, run):
    return {"node": node(d, "OscillationInvert", model=["model", 0], latent=["latent", 0], guider=["guider", 0],
                         iterations=8, burn_in=2, sigma=0.4 + 0.1 * run)}, [["node", 0], ["node", 2]]


def group(d, run):
    return {"latent_b": {"class_type": "InvTest_TinyLatent", "inputs": {"family": FAMILY, "batch": 1}},
            "node": node(d, "GroupInversion", model=["model", 0], image_a=["latent", 0], image_b=["latent_b", 0],
                         guider=["guider", 0], iterations=8, burn_in=2, sigma=0.4 + 0.1 * run)}, \
        [["node", 0], ["node", 2]]


def post_optimize(d, run):
    return {"node": node(d, "PostInversionOptimize", model=["model", 0], latent=["latent", 0],
                         target_1=["latent", 0], guider=["guider", 0], steps=2, rounds=1,
                         lr_noise=0.05 + 0.01 * run)}, [["node", 0], ["node", 1]]


def fine_tune(d, run):
    return {"node": node(d, "FineTuneInversion", model=["model", 0], latent=["latent", 0], target=["latent", 0],
                         guider=["guider", 0], steps=2, seed=run)}, [], ["node", 0]


def attention_edit(d, run):
    """Record on the inversion, inject into the regeneration (workflow 14's graph), report on the record."""
    fraction = (0.4, 0.6, 0.8)[run]
    return {"node": node(d, "AttentionEditRecord", model=["model", 0], steps=fraction),
            "rguider": {"class_type": "BasicGuider", "inputs": {"model": ["node", 0], "conditioning": ["cond", 0]}},
            "invert": node(d, "BDIAInvert", model=["node", 0], latent=["latent", 0], sigmas=["sigmas", 0],
                           guider=["rguider", 0]),
            "node2": node(d, "AttentionEditInject", model=["model", 0], record=["node", 1], self_steps=fraction,
                          cross_steps=fraction),
            "eguider": {"class_type": "BasicGuider", "inputs": {"model": ["node2", 0], "conditioning": ["cond", 0]}},
            "bdia": node(d, "BDIASampler", inversion=["invert", 1]),
            "sample": {"class_type": "SamplerCustomAdvanced",
                       "inputs": {"noise": ["invert", 0], "guider": ["eguider", 0], "sampler": ["bdia", 0],
                                  "sigmas": ["sigmas", 0], "latent_image": ["latent", 0]}},
            "node3": node(d, "AttentionEditReport", record=["node", 1], latent=["sample", 0]),
            "show": {"class_type": "PreviewAny", "inputs": {"source": ["node3", 0]}}}, [["sample", 0]]


REPORTING = {"InversionSuite_FixedPointInvert", "InversionSuite_BDIAInvert", "InversionSuite_OscillationInvert",
             "InversionSuite_GroupInversion", "InversionSuite_PostInversionOptimize",
             "InversionSuite_FineTuneInversion"}
SCENARIOS = {"FixedPointInvert": fixed_point_invert, "FixedPointInversionSampler": fixed_point_sampler,
             "BDIAInvert+BDIASampler": bdia, "OscillationInvert": oscillation, "GroupInversion": group,
             "PostInversionOptimize": post_optimize, "FineTuneInversion": fine_tune,
             "AttentionEdit": attention_edit}


def report(result, key="probe"):
    return json.loads(result["outputs"][key]["text"][0])


def cached_nodes(result):
    return {n for kind, data in result["status"]["messages"] if kind == "execution_cached" for n in data["nodes"]}


def run_ok(server, prompt, what=""):
    status, result = server.run_prompt(prompt)
    assert status == 200, result
    errors = [f"{data.get('node_type')}: {data.get('exception_type')}: {data.get('exception_message')}"
              for kind, data in result["status"]["messages"] if kind == "execution_error"]
    assert result["status"]["status_str"] == "success", f"{what} failed: {errors}"
    return result


@pytest.fixture(scope="module")
def reference(server):
    """The probe on the freshly loaded model, before any pack node ran."""
    return report(run_ok(server, {**base(), "probe": probe("reference")}))


def test_loader_runs_in_inference_mode_and_the_probe_sees_the_model(reference):
    assert reference["inference_mode"] is True and reference["inference_weights"] is True
    assert reference["stock_finite"] and reference["patches"] == 0 and reference["object_patches"] == 0


@pytest.mark.parametrize("name", SCENARIOS)
def test_three_runs_in_a_row_through_the_server(server, defaults, reference, name):
    for run in range(3):
        built = SCENARIOS[name](defaults, run)
        extra, latents = built[0], built[1]
        other = built[2] if len(built) > 2 else None
        prompt = {**base(), **extra,
                  "probe": probe(f"{name} {run}", *latents, other_model=other, sample=run == 2)}
        result = run_ok(server, prompt, f"{name} run {run + 1} of 3")
        ours = {k for k, v in prompt.items() if v["class_type"].startswith("InversionSuite_")}
        assert ours and not ours & cached_nodes(result), f"run {run + 1}: {ours & cached_nodes(result)} came from cache"
        assert "model" in cached_nodes(result)  # the same loaded model, not a reload
        for k in (k for k in ours if prompt[k]["class_type"] in REPORTING):  # this run's report, as UI text
            text = result["outputs"][k]["text"][0]
            assert text.startswith(prompt[k]["class_type"].split("_", 1)[1])
            assert "model calls" in text or "loss" in text
        seen = report(result)
        assert seen["tag"] == f"{name} {run}"
        for i in range(len(latents)):
            assert seen[f"latent_{i + 1}"]["finite"], (run, seen)
        assert seen["model_id"] == reference["model_id"], "the loaded model was replaced"
        assert seen["weights"] == reference["weights"], f"run {run + 1}: the input model's weights changed"
        assert (seen["patches"], seen["object_patches"]) == (0, 0)
    # Sampling in between would load the input model and so unpatch the previous run's clone: the runs above follow
    # each other directly, as when a user queues a node again; the stock runs come after the third.
    if other is not None:
        assert seen["other_finite"], seen
    assert seen["stock"] == reference["stock"], "a stock sampler on the input model gives another result afterwards"
