"""Host tier, robustness: every node, driven in-process as the server drives it (inside torch.inference_mode()),
with generated inputs of every kind a user or an API client can send (issue 13): every widget at, just inside and
just outside its declared range, NaN, ±inf, −0.0, floats where ints belong, None, text; sigmas empty, one level,
non-monotonic, ascending, with NaN/inf, negative, int64/float16, 2-D; latents with wrong channels, 3-D and 5-D,
batch 0, 1×1 and odd sizes, NaN/inf/1e30 values, float16/bfloat16/int, missing 'samples', extra keys; schedule
strings; unsupported models; foreign objects on typed inputs.

Each call must either return finite outputs of the declared types and shapes, or raise a ValueError that starts
with the node's name and names one of its inputs. Two drivers: a sweep that tries every single-input case once
(its family rotating over the three tiny families), and a derandomised hypothesis search over combinations of
up to three cases on every family, with a fixed example budget.
"""
import math
import re

import pytest
import torch

import hostlib

hostlib.require_comfyui()

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from inversion_suite.nodes import NODES as ALL_NODES  # noqa: E402

# The eight inversion nodes; the Attention Edit nodes' bad inputs are tested in test_host_attention.py.
NODES = [n for n in ALL_NODES if not n.__name__.startswith("AttentionEdit")]
from inversion_suite.nodes.bdia import BDIAInversion, BDIAInvert  # noqa: E402
from inversion_suite.nodes.common import check_samples  # noqa: E402

NAN, INF = float("nan"), float("inf")
SAMPLERS = {"FixedPointInversionSampler", "BDIASampler"}
# what SamplerCustomAdvanced hands a SAMPLER: the sampler's errors may name these
SAMPLER_CONTEXT = ("sigmas", "latent_image", "noise", "guider", "cfg", "model")
# widgets whose maximum costs many model calls: probed just inside the minimum instead of at the maximum
COSTLY = {"max_iterations", "iterations", "steps", "rounds", "decode_steps"}
MODELS = {}


def tiny(family):
    if family not in MODELS:
        MODELS[family] = hostlib.tiny_model(family)
    return MODELS[family]


def x0_model(family, kind="X0"):
    """The tiny model with an unsupported parameterisation: X0, IMG_TO_IMG or COSMOS_RFLOW."""
    import comfy.model_sampling as cms

    class Unsupported(cms.ModelSamplingDiscrete, getattr(cms, kind)):
        pass
    patched = tiny(family).clone()
    patched.add_object_patch("model_sampling", Unsupported(tiny(family).model.model_config))
    return patched


def sigma_for(family):
    return 1.0 if family == "sd15" else 0.4


# ---------------------------------------------------------------- valid, cheap arguments per node
def base_args(name, family):
    model = tiny(family)
    cond = dict(model=model, positive=hostlib.tiny_cond(family), negative=hostlib.tiny_cond(family, 101), cfg=1.0)
    latent = hostlib.image_latent(family, batch=1, size=8)
    sig = hostlib.sigmas(model, 2)
    oscillation = dict(sigma=sigma_for(family), sigma_mode="absolute", iterations=4, burn_in=0, max_period=2,
                       decode="one-step", decode_steps=2)
    solver = dict(max_iterations=2, tolerance=1e-3, criterion="intra-path", anderson_window=1, perturbation=0.5,
                  seed=0)
    if name == "FixedPointInvert":
        return {**cond, "latent": latent, "sigmas": sig, **solver}
    if name == "FixedPointInversionSampler":
        return {**solver, **cond, "latent_image": latent, "sigmas": sig.flip(0)}
    if name == "BDIASampler":
        return dict(method="bdia", gamma=0.96, inversion=None, **cond, latent_image=hostlib.empty_like(latent),
                    sigmas=sig)
    if name == "BDIAInvert":
        return {**cond, "latent": latent, "sigmas": sig, "method": "bdia", "gamma": 0.96}
    if name == "OscillationInvert":
        return {**cond, "latent": latent, **oscillation}
    if name == "GroupInversion":
        return {**cond, "image_a": latent, "image_b": hostlib.image_latent(family, batch=1, size=8, seed=5),
                "schedule": "A,B", **oscillation}
    if name == "PostInversionOptimize":
        return {**cond, "latent": latent, "target_1": hostlib.image_latent(family, batch=1, size=8, seed=5),
                "weight_1": 1.0, "weight_2": 0.0, "steps": 2, "rounds": 1, "lr_noise": 0.05, "lr_image": 0.01,
                "sigma": sigma_for(family), "sigma_mode": "absolute", "gradient_checkpointing": True}
    if name == "FineTuneInversion":
        return {**cond, "latent": latent, "target": hostlib.image_latent(family, batch=1, size=8, seed=5),
                "steps": 2, "learning_rate": 1e-4, "rank": 2, "seed": 0, "sigma": sigma_for(family),
                "sigma_mode": "absolute", "gradient_checkpointing": True}
    raise KeyError(name)


# ---------------------------------------------------------------- the cases: (label, factory(family))
def number_cases(spec, integer):
    lo, hi = spec.min, spec.max
    step = 1 if integer else min(spec.step or 0.01, max(abs(lo), 1e-3))
    values = [("at min", lo), ("below min", lo - step), ("above max", hi + step), ("NaN", NAN), ("+inf", INF),
              ("-inf", -INF), ("-0.0", -0.0), ("None", None), ("text", "7"), ("bool", True)]
    values += [("just above min", lo + step)] if spec.id in COSTLY else [("at max", hi), ("just below max", hi - step)]
    if integer:
        values += [("fractional float", lo + 0.5), ("integral float", float(lo) + 1)]
    return [(f"{label} ({value!r})", lambda f, v=value: v) for label, value in values]


def latent_cases():
    def lat(shape, fill=None, dtype=torch.float32):
        def make(family):
            c = hostlib.CHANNELS[family]
            shape_c = [c if s == "C" else s for s in shape]
            x = torch.randn(*shape_c, generator=torch.Generator().manual_seed(3))
            if fill is not None:
                x.view(-1)[: max(1, x.numel() // 7)] = fill
            return {"samples": x.to(dtype)}
        return make
    return [
        ("wrong channels", lambda f: {"samples": torch.randn(1, hostlib.CHANNELS[f] + 1, 8, 8)}),
        ("3-D", lat([1, "C", 8])), ("5-D", lat([1, "C", 2, 8, 8])), ("batch 0", lat([0, "C", 8, 8])),
        ("1x1", lat([1, "C", 1, 1])), ("2x2", lat([1, "C", 2, 2])), ("odd 5x7 batch 2", lat([2, "C", 5, 7])),
        ("NaN values", lat([1, "C", 8, 8], NAN)), ("inf values", lat([1, "C", 8, 8], INF)),
        ("1e30 values", lat([1, "C", 8, 8], 1e30)), ("float16", lat([1, "C", 8, 8], dtype=torch.float16)),
        ("bfloat16", lat([1, "C", 8, 8], dtype=torch.bfloat16)), ("float64", lat([1, "C", 8, 8], dtype=torch.float64)),
        ("int64", lat([1, "C", 8, 8], dtype=torch.int64)), ("missing samples", lambda f: {}),
        ("extra keys", lambda f: {**hostlib.image_latent(f, 1, 8), "batch_index": [0], "unknown": "kept"}),
        ("bare tensor", lambda f: hostlib.image_latent(f, 1, 8)["samples"]), ("None", lambda f: None),
        ("samples is text", lambda f: {"samples": "latent"}),
    ]


def sigmas_cases():
    def from_schedule(transform):
        return lambda f: transform(hostlib.sigmas(tiny(f), 2))
    return [
        ("empty", lambda f: torch.tensor([])), ("one level", from_schedule(lambda s: s[:1])),
        ("non-monotonic", from_schedule(lambda s: torch.stack([s[0], s[2], s[1]]))),
        ("ascending", from_schedule(lambda s: s.flip(0))), ("descending", from_schedule(lambda s: s)),
        ("NaN inside", from_schedule(lambda s: torch.stack([s[0], s[1] * NAN, s[2]]))),
        ("inf first", from_schedule(lambda s: torch.cat([torch.tensor([INF]), s[1:]]))),
        ("negative end", from_schedule(lambda s: torch.cat([s[:-1], torch.tensor([-0.5])]))),
        ("all zero", lambda f: torch.zeros(3)), ("plateau", from_schedule(lambda s: torch.stack([s[0], s[0], s[2]]))),
        ("int64", from_schedule(lambda s: s[[0, -1]].ceil().to(torch.int64))), ("float16", from_schedule(lambda s: s.half())),
        ("float64", from_schedule(lambda s: s.double())), ("2-D", from_schedule(lambda s: s[None])),
        ("bool", lambda f: torch.tensor([True, False])), ("list", lambda f: [1.0, 0.0]), ("None", lambda f: None),
    ]


def text_cases(values):
    return [(repr(v), lambda f, v=v: v) for v in values]


def cases_for(name, family_free=False):
    """{input: [(label, factory(family))]} for node ``name`` (sampler nodes include SamplerCustomAdvanced's)."""
    node = next(n for n in NODES if n.__name__ == name)
    out = {}
    for spec in node.define_schema().inputs:
        kind = spec.get_io_type()
        if kind in ("INT", "FLOAT"):
            out[spec.id] = number_cases(spec, kind == "INT")
        elif kind == "COMBO":
            out[spec.id] = text_cases(list(spec.options) + ["nonsense", None, 3])
        elif kind == "BOOLEAN":
            out[spec.id] = text_cases([True, False, None, "yes", 1])
        elif kind == "STRING":  # Group Inversion's schedule
            out[spec.id] = text_cases(["AAB", "AB", "A B", "ABCD", "A,,B", "", "  ", None, "A,X", "1,2", "a;b", "B",
                                       "A" * 65, "a,a,b", 5])
        elif kind == "LATENT":
            out[spec.id] = latent_cases()
        elif kind == "SIGMAS":
            out[spec.id] = sigmas_cases()
        elif kind == "MODEL":
            out[spec.id] = [("x0 model", x0_model), ("None", lambda f: None), ("text", lambda f: "model")]
        elif kind == "CONDITIONING":
            out[spec.id] = text_cases([None, [], "a cat", [[torch.zeros(1), "x"]]])
        elif kind == "GUIDER":
            out[spec.id] = [("stock guider", lambda f: hostlib.guider(tiny(f), f)), ("text", lambda f: "guider")]
        elif kind == "BDIA_INVERSION":
            out[spec.id] = [("text", lambda f: "inversion"), ("real inversion", lambda f: "REAL_INVERSION"),
                            ("inversion of other sigmas", lambda f: "OTHER_INVERSION")]
        else:
            raise AssertionError(f"no cases for {name}.{spec.id} of type {kind}")
    if name in SAMPLERS:  # what SamplerCustomAdvanced hands over; stock code itself needs a tensor and a model
        out["latent_image"] = [c for c in latent_cases() if c[0] in (
            "wrong channels", "3-D", "5-D", "batch 0", "1x1", "2x2", "odd 5x7 batch 2", "NaN values", "inf values",
            "1e30 values", "float16", "bfloat16", "float64", "extra keys")]
        out["sigmas"] = [c for c in sigmas_cases() if c[0] not in ("empty", "list", "None", "2-D", "bool")]
        out["cfg"] = number_cases(next(s for s in NODES[0].define_schema().inputs if s.id == "cfg"), False)[:7]
        out["model"] = [("x0 model", x0_model)]
    return out


CASES = {n.__name__: cases_for(n.__name__) for n in NODES}


# ---------------------------------------------------------------- driving a node as the server does
def bdia_inversion(family, args, other=False):
    model = tiny(family)
    sig = hostlib.sigmas(model, 3 if other else 2)
    latent = hostlib.image_latent(family, batch=1, size=8)
    noise, inversion, _, _ = BDIAInvert.execute(model=model, latent=latent, sigmas=sig, method="bdia", gamma=0.96,
                                                positive=hostlib.tiny_cond(family)).args
    return noise, inversion


def call(name, family, changes):
    """Run node ``name`` with its cheap defaults and ``changes`` applied; returns (args, outputs) or raises."""
    from comfy_extras.nodes_custom_sampler import Noise_EmptyNoise, Noise_RandomNoise
    import comfy.samplers
    node = next(n for n in NODES if n.__name__ == name)
    args = base_args(name, family)
    args.update(changes)
    with torch.inference_mode():
        if name not in SAMPLERS:
            return args, node.execute(**args).args
        widgets = {k: v for k, v in args.items() if k in {s.id for s in node.define_schema().inputs}}
        noise = Noise_EmptyNoise() if name == "FixedPointInversionSampler" else Noise_RandomNoise(0)
        if isinstance(widgets.get("inversion"), str) and widgets["inversion"].endswith("_INVERSION"):
            noise, widgets["inversion"] = bdia_inversion(family, args, other=widgets["inversion"] == "OTHER_INVERSION")
        sampler = node.execute(**widgets).args[0]
        guider = comfy.samplers.CFGGuider(args["model"])
        guider.set_conds(args["positive"], args["negative"])
        guider.set_cfg(args["cfg"])
        return args, (hostlib.stock_sample(noise, guider, sampler, args["sigmas"], args["latent_image"]),)


def assert_finite(tensor, what):
    assert torch.is_tensor(tensor) and tensor.is_floating_point(), what
    assert bool(torch.isfinite(tensor).all()), f"{what} is not finite"


def check_outputs(name, args, outputs):
    """Finite outputs of the declared types and shapes."""
    node = next(n for n in NODES if n.__name__ == name)
    declared = node.define_schema().outputs
    assert len(outputs) == len(declared)
    source = next((args[k] for k in ("latent", "image_a", "latent_image") if k in args), None)
    shape = tuple(source["samples"].shape)
    for spec, value in zip(declared, outputs):
        what = f"{name}.{spec.display_name or spec.io_type}"
        if spec.io_type == "SAMPLER":  # already run through SamplerCustomAdvanced: the result LATENT's samples
            assert_finite(value, what)
            assert tuple(value.shape) == shape, what
        elif spec.io_type == "LATENT":
            assert isinstance(value, dict), what
            assert_finite(value["samples"], what)
            out = tuple(value["samples"].shape)
            assert out[1:] == shape[1:] and out[0] % shape[0] == 0 and out[0] >= shape[0], (what, out, shape)
            if spec.display_name == "inverted_latent":
                assert out == shape, what
        elif spec.io_type == "NOISE":
            n = value.generate_noise({"samples": torch.zeros(shape)})
            assert_finite(n, what)
            assert tuple(n.shape) == shape, what
        elif spec.io_type == "IMAGE":
            assert_finite(value, what)
            assert value.ndim == 4 and value.shape[-1] == 3, what
        elif spec.io_type == "STRING":
            assert isinstance(value, str) and name in value and "nan" not in value.lower().split(), what
        elif spec.io_type == "MODEL":
            assert hasattr(value, "get_model_object") and value is not args["model"], what
        elif spec.io_type == "BDIA_INVERSION":
            assert isinstance(value, BDIAInversion), what
            assert_finite(value.x_top, what)
            assert_finite(value.x_below, what)
        else:
            raise AssertionError(f"unchecked output type {spec.io_type}")


def answers_clearly(name, family, changes):
    """The property: finite declared outputs, or a ValueError naming the node and one of its inputs."""
    try:
        args, outputs = call(name, family, changes)
    except ValueError as e:
        message = str(e)
        names = set(CASES[name]) | (set(SAMPLER_CONTEXT) if name in SAMPLERS else set())
        assert message.startswith(f"{name}: "), message
        assert any(f"'{n}'" in message or f"input '{n} " in message for n in names), message
        return "refused"
    check_outputs(name, args, outputs)
    return "ran"


def materialise(name, family, picks):
    return {key: dict(CASES[name][key])[label](family) for key, label in picks}


# ---------------------------------------------------------------- the sweep: every single-input case, once
SWEEP = [(n.__name__, key, label) for n in NODES for key, cases in CASES[n.__name__].items() for label, _ in cases]


def test_every_case_is_answered_clearly():
    from collections import Counter
    outcomes, failures = Counter(), []
    for j, (name, key, label) in enumerate(SWEEP):
        family = hostlib.FAMILIES[j % 3]
        try:
            outcomes[answers_clearly(name, family, materialise(name, family, [(key, label)]))] += 1
        except Exception as e:  # collect every failure, then report them together
            failures.append(f"{name} {family} {key}={label}: {type(e).__name__}: {str(e)[:300]}")
    print(f"{len(SWEEP)} single-input cases: {dict(outcomes)}")
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- hypothesis: combinations on every family
def picks_strategy(name):
    keyed = [(key, label) for key, cases in CASES[name].items() for label, _ in cases]
    return st.lists(st.sampled_from(keyed), min_size=1, max_size=3, unique_by=lambda p: p[0])


@pytest.mark.parametrize("family", hostlib.FAMILIES)
@pytest.mark.parametrize("name", [n.__name__ for n in NODES])
@settings(max_examples=6, derandomize=True, deadline=None, database=None, print_blob=True,
          suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_generated_inputs_are_answered_clearly(name, family, data):
    picks = data.draw(picks_strategy(name), label="changes")
    answers_clearly(name, family, materialise(name, family, picks))


# ---------------------------------------------------------------- specific behaviours
def test_dimensionality_follows_the_model():
    """A 5-D latent is refused on an image model and accepted on a video model (Wan's latent format), where a
    4-D one is accepted too, as stock samplers accept it; a 3-D one is refused on both."""
    import comfy.latent_formats
    image_model = tiny("sd3")
    video_model = image_model.clone()
    video_model.add_object_patch("latent_format", comfy.latent_formats.Wan21())
    five, four, three = torch.zeros(1, 16, 2, 8, 8), torch.zeros(1, 16, 8, 8), torch.zeros(1, 16, 8)
    with pytest.raises(ValueError, match=r"N: input 'x' must have 16 channels and the layout \[B, C, H, W\]"):
        check_samples("N", "x", five, image_model)
    assert check_samples("N", "x", five, video_model) is five
    assert check_samples("N", "x", four, video_model) is four
    with pytest.raises(ValueError, match=r"layout \[B, C, T, H, W\]"):
        check_samples("N", "x", three, video_model)


def test_minimum_latent_size_follows_the_unet():
    """The tiny SD1.5 UNet halves once: 3×3 is the least it runs on (GroupNorm needs 2×2 at the deepest level)."""
    with pytest.raises(ValueError, match=r"input 'latent' must be at least 3×3 for this model \(its UNet halves "
                                         r"the latent 1 times\), got shape \[2, 4, 2, 2\]"):
        call("FixedPointInvert", "sd15", {"latent": {"samples": torch.zeros(2, 4, 2, 2)}})
    _, (inverted, _, _, _) = call("FixedPointInvert", "sd15", {"latent": {"samples": torch.randn(1, 4, 3, 3)}})
    assert inverted["samples"].shape == (1, 4, 3, 3)
    _, (inverted, *_) = call("FixedPointInvert", "flux", {"latent": {"samples": torch.randn(1, 16, 1, 1)}})
    assert inverted["samples"].shape == (1, 16, 1, 1)


@pytest.mark.parametrize("schedule", ["A,A,B", "A A B", "AAB", "a, a, b"])
def test_schedule_spellings_mean_the_same(schedule):
    from inversion_suite.nodes.oscillation import parse_schedule
    assert parse_schedule("GroupInversion", schedule, [True, True, False, False]) == (0, 0, 1)


@pytest.mark.parametrize("schedule, message", [
    ("A;B", r"may only hold the letters A–D separated by commas or spaces"),
    ("ABC", r"may only name connected images \(image_a, image_b\), got 'C'"),
    (None, r"must be text listing image letters"), ("", r"must list image letters")])
def test_bad_schedules_are_refused(schedule, message):
    from inversion_suite.nodes.oscillation import parse_schedule
    with pytest.raises(ValueError, match=r"GroupInversion: input 'schedule' " + message):
        parse_schedule("GroupInversion", schedule, [True, True, False, False])


@pytest.mark.parametrize("seed, expected", [(1.0, None), (1.5, r"input 'seed' must be a whole number, got 1.5"),
                                            (NAN, r"input 'seed' must be a whole number \(finite\), got nan"),
                                            (-0.0, None)])
def test_seed_given_as_a_float(seed, expected):
    if expected is None:
        _, (inverted, _, report, _) = call("FixedPointInvert", "sd15", {"seed": seed, "criterion": "inter-path"})
        assert torch.isfinite(inverted["samples"]).all()
    else:
        with pytest.raises(ValueError, match="FixedPointInvert: " + expected):
            call("FixedPointInvert", "sd15", {"seed": seed, "criterion": "inter-path"})


@pytest.mark.parametrize("name", ["OscillationInvert", "FixedPointInvert", "BDIAInvert", "PostInversionOptimize"])
def test_nan_cfg_is_refused_before_any_model_call(name):
    model, calls = hostlib.counting(tiny("sd3"))
    with pytest.raises(ValueError, match=name + r": input 'cfg' must be a number \(finite\), got nan"):
        call(name, "sd3", {"model": model, "cfg": NAN})
    assert calls == []


def diverging(value, after=3):
    """The tiny SD3 whose output is multiplied by ``value`` (inf, NaN) from its ``after``-th call on; and its calls."""
    calls = []

    def blow_up(apply_model, args):
        calls.append(1)
        out = apply_model(args["input"], args["timestep"], **args["c"])
        return out * value if len(calls) >= after else out
    patched = tiny("sd3").clone()
    patched.set_model_unet_function_wrapper(blow_up)
    return patched, calls


def test_diverging_state_is_an_error_naming_node_and_step():
    """A model that returns inf from its third call: the node stops there with an error naming the step."""
    patched, calls = diverging(INF)
    with pytest.raises(ValueError, match=r"OscillationInvert: the state at step 3 of 5 \(σ=0\.4\) is not finite "
                                         r"\(NaN or inf\): the model diverged on these inputs; check the inputs"):
        call("OscillationInvert", "sd3", {"model": patched})
    assert len(calls) == 3


def test_a_diverging_fixed_point_step_is_an_error_without_an_extra_read():
    """Fixed-Point Invert knows a step's state is finite from the norms it already read (the callback's ``finite``):
    a model that returns NaN from its third call (a NaN state is no runaway: its norm is not beyond the cap) still
    stops the node at that step, after that call, with the error naming the step."""
    patched, calls = diverging(NAN)
    with pytest.raises(ValueError, match=r"FixedPointInvert: the state at step \d+ of \d+ \(σ=[0-9.]+\) is not finite "
                                         r"\(NaN or inf\): the model diverged"):
        call("FixedPointInvert", "sd3", {"model": patched})
    assert len(calls) == 3


def test_bdia_sampler_refuses_what_bdia_invert_refuses():
    """Ascending, all-zero and negative-ended schedules (ZeroDivisionError before) and x0 models get the same
    errors from the SAMPLER as from BDIA Invert."""
    for sig, message in [(torch.tensor([0.0, 0.5, 1.0]), r"BDIASampler: input 'sigmas' must descend"),
                         (torch.zeros(3), r"BDIASampler: input 'sigmas' must be strictly monotonic"),
                         (torch.tensor([1.0, 0.5, -0.1]), r"BDIASampler: input 'sigmas' must be finite and non-neg")]:
        with pytest.raises(ValueError, match=message):
            call("BDIASampler", "flux", {"sigmas": sig})
    with pytest.raises(ValueError, match=r"BDIASampler: input 'inversion' must be the 'inversion' output of BDIA"):
        call("BDIASampler", "sd15", {"inversion": "inversion"})


@pytest.mark.parametrize("kind", ["X0", "IMG_TO_IMG"])  # Cosmos is supported (ε-like noise), tests/host/test_host_families.py
@pytest.mark.parametrize("name", ["FixedPointInvert", "FixedPointInversionSampler", "BDIAInvert", "BDIASampler"])
def test_samplers_refuse_the_models_the_inversion_nodes_refuse(name, kind):
    """x0-predicting and image-to-image models: the same error from each SAMPLER as from its inversion node,
    before any model call."""
    calls = []
    model = x0_model("sd15", kind)
    model.set_model_unet_function_wrapper(lambda f, a: calls.append(1) or f(a["input"], a["timestep"], **a["c"]))
    with pytest.raises(ValueError, match=name + r": input 'model' must be an ε-, v-prediction or rectified-flow "
                                                r"model, got a model sampling of type ModelSamplingDiscrete/" + kind):
        call(name, "sd15", {"model": model})
    assert calls == []


def test_fixed_point_sampler_refuses_what_fixed_point_invert_refuses():
    with pytest.raises(ValueError, match=r"FixedPointInversionSampler: input 'sigmas' must ascend \(connect "
                                         r"FlipSigmas"):
        call("FixedPointInversionSampler", "sd15", {"sigmas": hostlib.sigmas(tiny("sd15"), 2)})


@pytest.mark.parametrize("fraction", [1.0, 0.5])
def test_schedule_fraction_up_to_one_is_accepted(fraction):
    """A fraction of 1.0 is σ_max (it was answered with 'got 999999999.9' on ε models)."""
    _, outputs = call("OscillationInvert", "sd15", {"sigma": fraction, "sigma_mode": "fraction of schedule"})
    assert ("σ=14.61," in outputs[-1]) == (fraction == 1.0)
    assert torch.isfinite(outputs[0]["samples"]).all()


def test_burn_in_at_its_maximum_is_reduced_not_refused():
    _, outputs = call("OscillationInvert", "sd3", {"burn_in": 999})
    assert "4 iterations, burn-in 2" in outputs[-1]


def test_detect_period_on_a_non_finite_history():
    from inversion_suite.core.oscillation import detect_period
    history = torch.randn(9, 1, 4)
    history[5] = NAN
    with pytest.raises(ValueError, match="detect_period: the iterate history holds NaN or inf"):
        detect_period(history, 3)
    assert detect_period(torch.randn(9, 1, 4, generator=torch.Generator().manual_seed(0)), 3)[0] in (1, 2, 3)


def test_core_two_step_samplers_refuse_a_dividing_schedule():
    from inversion_suite.core.bdia import invert_bdia, sample_bdia
    x = torch.zeros(1, 2)
    with pytest.raises(ValueError, match=r"sigmas must be strictly monotonic, got \[1.0, 0.0, 0.0\]"):
        sample_bdia(lambda v, s: v, x, [1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"sigmas must ascend, got \[1.0, 0.5\]"):
        invert_bdia(lambda v, s: v, x, [1.0, 0.5])
    with pytest.raises(ValueError, match=r"sigmas must be finite and non-negative"):
        sample_bdia(lambda v, s: v, x, [1.0, float("nan"), 0.0])
    assert math.isfinite(float(sample_bdia(lambda v, s: 0 * v, torch.ones(1, 2), [1.0, 0.5, 0.0]).sum()))


# combinations the nodes refuse whatever the ranges: both weights 0, a weight for an unconnected target
NOT_ALONE = {("PostInversionOptimize", "weight_1", "at min"), ("PostInversionOptimize", "weight_2", "at max"),
             ("PostInversionOptimize", "weight_2", "just below max")}


@pytest.mark.parametrize("name", [n.__name__ for n in NODES])
def test_declared_range_is_what_the_node_accepts(name):
    """Every number widget at its declared minimum and maximum (costly maxima: just above the minimum) runs on
    SD1.5, whose σ_max (14.61) is above the σ widget's maximum: the frontend's range is the node's."""
    refused = []
    for key, cases in CASES[name].items():
        for label, factory in cases:
            kind = label.split(" (")[0]
            if kind not in ("at min", "at max", "just above min") or (name, key, kind) in NOT_ALONE:
                continue
            try:
                call(name, "sd15", {key: factory("sd15")})
            except ValueError as e:
                refused.append(f"{key} {label}: {e}")
    assert not refused, "\n".join(refused)


@pytest.mark.parametrize("family, batch", [("sd15", 1), ("flux", 3), ("wan21", 1)])
def test_noise_with_a_latent_of_another_batch_is_refused_alike(family, batch):
    """Fixed-Point Invert's and BDIA Invert's NOISE given to stock SamplerCustomAdvanced with a latent of another batch
    size: the same ValueError from both, naming the node, the sampler's latent_image and the inverted shape, before
    any model call (the video family gets an image latent, as EmptyLatentImage gives)."""
    from inversion_suite.nodes.fixed_point import FixedPointInvert
    model = hostlib.tiny_model(family)
    lat, sigmas = hostlib.image_latent(family, batch=2, size=8), hostlib.sigmas(model, 3)
    with torch.inference_mode():
        noises = {"FixedPointInvert": FixedPointInvert.execute(
            model=model, latent=lat, sigmas=sigmas, max_iterations=2, tolerance=1e-4, criterion="intra-path",
            anderson_window=3, perturbation=1.0, seed=0, guider=hostlib.guider(model, family)).args[1],
            "BDIAInvert": BDIAInvert.execute(model=model, latent=lat, sigmas=sigmas, method="bdia", gamma=0.96,
                                             guider=hostlib.guider(model, family)).args[0]}
        other = {"samples": torch.zeros(batch, *lat["samples"].shape[1:2], *lat["samples"].shape[-2:])}
        counted, calls = hostlib.counting(model)
        for node, noise in noises.items():
            shape = list(noise.x.shape)
            with pytest.raises(ValueError, match=rf"^{node}: input 'latent_image \(of the sampler using this NOISE\)' "
                                                 rf"must have the inverted shape {re.escape(str(shape))}"):
                hostlib.stock_sample(noise, hostlib.guider(counted, family), hostlib.euler(), sigmas, other)
    assert calls == []
