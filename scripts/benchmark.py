"""Benchmarks (not tests). Every README figure comes from this one command.

    python scripts/benchmark.py [--out bench_out]        # core tier (analytic model) + tiny ComfyUI models
    python scripts/benchmark.py --no-host                # core tier only
    python scripts/benchmark.py --gpu                    # full-size random-weight SD1.5 / SDXL / Flux-dev, bf16
    python scripts/benchmark.py --gpu --reduced          # the same code at reduced depth on CPU (its own test)

Output: first the machine-independent figures (model evaluations per image, round-trip errors, bytes kept for
backward), then the timings under a heading naming the machine they were taken on. Figures (PNG) need matplotlib
and are skipped with a note without it. Cost is counted in model evaluations per image (batch elements evaluated).
"""
import argparse
import math
import pathlib
import platform
import statistics
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import comfyui_host  # noqa: E402

if __name__ == "__main__" and "--gpu" in sys.argv[1:] and "--reduced" not in sys.argv[1:]:
    comfyui_host.start_dynamic_vram()  # as ComfyUI's main.py does, before torch is imported

import torch  # noqa: E402

comfyui_host.import_pack()

from inversion_suite import core  # noqa: E402
from inversion_suite.core.toy import (GaussianMixtureDenoiser, TinyConvDenoiser, flow_sigmas, make_mixture,  # noqa: E402
                                     ve_sigmas)

FP_METHODS = {  # name: invert_fixed_point options (warm start predicted, the default, unless named)
    "naive DDIM inversion": dict(max_iterations=1, warm_start="none"),
    "one evaluation per step, predicted start": dict(max_iterations=1),
    "Picard, intra-path 1e-6": dict(max_iterations=50, tolerance=1e-6, anderson_window=0, criterion="intra-path"),
    "Anderson, intra-path 1e-4 (node defaults)": dict(max_iterations=10, tolerance=1e-4, anderson_window=3, criterion="intra-path"),
    "Anderson, intra-path 1e-4, naive start": dict(max_iterations=10, tolerance=1e-4, anderson_window=3, criterion="intra-path",
                                                   warm_start="none"),
    "Anderson, intra-path 1e-6": dict(max_iterations=10, tolerance=1e-6, anderson_window=3, criterion="intra-path"),
    "Anderson, intra-path 1e-9": dict(max_iterations=20, tolerance=1e-9, anderson_window=3, criterion="intra-path"),
    "paper: Picard, inter-path 1e-4": dict(max_iterations=20, tolerance=1e-4, anderson_window=0, criterion="inter-path"),
    "paper: Picard, inter-path 1e-6": dict(max_iterations=50, tolerance=1e-6, anderson_window=0, criterion="inter-path"),
    "Anderson, inter-path 1e-6": dict(max_iterations=10, tolerance=1e-6, anderson_window=3, criterion="inter-path"),
}


def table(header, rows):
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def fixed_point_run(flow, steps, options, diagnostics=None, network=False, draw=0, states=None):
    """Invert and sample back; ``network``: the tiny random conv network instead of the analytic mixture; ``draw``:
    which mixture (its seed) and images (seed ``draw + 1``) of the analytic model."""
    if network:
        model = TinyConvDenoiser(flow=flow)
        x0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    else:
        model = make_mixture(flow=flow, seed=draw)
        x0 = model.sample(2, generator=torch.Generator().manual_seed(draw + 1))
    sigmas = flow_sigmas(steps) if flow else ve_sigmas(steps)
    with torch.no_grad():
        top, info = core.invert_fixed_point(model, x0, sigmas.flip(0), disable=True, flow=flow,
                                            generator=torch.Generator().manual_seed(0), return_info=True,
                                            callback=None if states is None else lambda d: states.append(d["x"]),
                                            **options)
        back = core.sample_euler(model, top, sigmas, disable=True)
    if diagnostics is not None:  # the caller's list gets every step's dict
        diagnostics.extend(info["steps"])
    if states is not None:  # the caller's list gets the model, the clean images and every step's state
        states[:0] = [model, x0]
    per_image = sum(d["evaluations_per_image"] for d in info["steps"])
    return per_image, float(core.rel_rms(back, x0).max())


def core_fixed_point(steps=20):
    rows = []
    for flow in (False, True):
        for name, options in FP_METHODS.items():
            per_image, err = fixed_point_run(flow, steps, options)
            rows.append(["flow" if flow else "ε (VE)", name, f"{per_image:.0f}", f"{per_image / steps:.2f}",
                         f"{err:.1e}"])
    return table(["model", "method", "evaluations per image", "per image per step", "round-trip rel. RMS"], rows)


WARM_STEPS = (8, 28, 50)
WARM_CRITERIA = {  # the node defaults per criterion (nodes/fixed_point.py: inter-path iterates plain Picard)
    "intra-path": dict(max_iterations=10, tolerance=1e-4, anderson_window=3, criterion="intra-path"),
    "inter-path": dict(max_iterations=10, tolerance=1e-4, anderson_window=0, criterion="inter-path", perturbation=1.0),
}
WARM_RUNS = [("intra-path", "predicted"), ("intra-path", "none"), ("inter-path", "predicted"), ("inter-path", "none")]
WARM_HEADER = ["model", "steps", "intra-path (default), predicted start: per step (first step / later steps)",
               "met at the first evaluation", "first-check residual, median of later steps", "round trip", "intra-path, naive start (before)", "round trip",
               "inter-path, predicted start", "round trip", "inter-path, naive start (before)", "round trip"]


def warm_cells(run, per_step, first_residuals, first_checks, images, err):
    """One run's cells: evaluations per image per step (the first step's / the later steps' mean), for the default
    run the image-steps that met the tolerance at their first evaluation and the median over the later steps of the
    worst image's residual at the first evaluation (where it is above the tolerance, 1e-4, a step costs two), and the
    round trip."""
    steps = len(per_step)
    cost = f"{sum(per_step) / steps:.2f} ({per_step[0]:.2f} / {sum(per_step[1:]) / (steps - 1):.2f})"
    later = sorted(first_residuals[1:])
    default = [f"{first_checks}/{images * steps}", f"{later[len(later) // 2]:.1e}"]
    return [cost] + (default if run == WARM_RUNS[0] else []) + [f"{err:.1e}"]


def core_warm_start():
    """The node defaults with the predicted and the naive start on the analytic mixture (batch 2), 8/28/50 steps,
    both criteria: where the evaluations go, and the round trip."""
    rows = []
    for flow in (False, True):
        for steps in WARM_STEPS:
            row = ["flow" if flow else "ε (VE)", steps]
            for run in WARM_RUNS:
                diagnostics = []
                _, err = fixed_point_run(flow, steps, dict(WARM_CRITERIA[run[0]], warm_start=run[1]), diagnostics)
                row += warm_cells(run, [d["evaluations_per_image"] for d in diagnostics],
                                  [d["trace"][0][0] for d in diagnostics],
                                  sum(d["first_check"] for d in diagnostics), diagnostics[0]["images"], err)
            rows.append(row)
    return table(WARM_HEADER, rows)


DRAWS = 8  # analytic mixtures (seeds 0–7), two images each; draw 0 is the mixture of the tables above


def core_warm_start_draws(draws=DRAWS):
    """The node defaults over ``draws`` mixtures and image pairs: how the cost and the round trip of the table above
    spread. A draw whose images lie where the mixture's modes separate costs most, and its round trip can exceed the
    per-step tolerance: on 8 steps where a step runs out of iterations there, on 28 and 50 where the sampler multiplies
    the small miss a step that met the tolerance hands on (``step_effect`` names the step)."""
    rows = []
    for flow in (False, True):
        for steps in WARM_STEPS:
            costs, errors = [], []
            for draw in range(draws):
                cost, err = fixed_point_run(flow, steps, WARM_CRITERIA["intra-path"], draw=draw)
                costs.append(cost / steps)
                errors.append(err)
            worst = max(range(draws), key=errors.__getitem__)
            step, residual, effect = step_effect(flow, steps, worst)
            rows.append(["flow" if flow else "ε (VE)", steps, f"{sum(costs) / draws:.2f}",
                         f"{min(costs):.2f} – {max(costs):.2f}", sum(c <= (3.0 if steps < 28 else 2.0) for c in costs),
                         f"{statistics.median(errors):.1e}", f"{errors[worst]:.1e} (draw {worst})",
                         sum(e <= 1e-4 for e in errors),
                         f"step {step}: {residual:.1e} → {effect:.1e} (×{effect / residual:.2g})" if residual > 0
                         else "—"])
    return table(["model", "steps", "evaluations per image per step, mean", "range over the draws",
                  "draws within 3.0 (8 steps) / 2.0", "round trip, median", "round trip, worst",
                  "draws within 1e-4", "worst draw: the step whose handed-on residual moves x0 most (residual → "
                  "change of x0)"], rows)


def step_effect(flow, steps, draw):
    """Where a draw's round-trip error comes from: per step, the residual the state it handed on leaves (the plain
    step back from it misses the state before by exactly that residual) and how far that miss moves the regenerated
    image when the rest of the way is sampled; the step that moves it most, as (step, residual, change of x0), both
    relative RMS of the worst image."""
    states = []
    fixed_point_run(flow, steps, WARM_CRITERIA["intra-path"], draw=draw, states=states)
    model, path = states[0], states[1:]
    sigmas = (flow_sigmas(steps) if flow else ve_sigmas(steps)).flip(0)
    worst = (0, 0.0, -1.0)
    with torch.no_grad():
        for i in range(steps):
            back = core.sample_euler(model, path[i + 1], sigmas[i:i + 2].flip(0), disable=True)
            down = sigmas[:i + 1].flip(0)
            moved = core.rel_rms(core.sample_euler(model, back, down, disable=True),
                                 core.sample_euler(model, path[i], down, disable=True))
            image = int(moved.argmax())
            if float(moved[image]) > worst[2]:
                worst = (i, float(core.rel_rms(back, path[i])[image]), float(moved[image]))
    return worst


def host_warm_start(families=None, step_counts=WARM_STEPS):
    """The same through Fixed-Point Invert on the tiny ComfyUI models (batch 2, cfg 1), regenerated through stock
    SamplerCustomAdvanced + euler; the per-step figures read from the node's report."""
    comfyui_host.use_comfyui()
    from inversion_suite.nodes import tiny
    from inversion_suite.nodes.fixed_point import FixedPointInvert
    rows = []
    for family in families or tiny.FAMILIES:
        model = tiny.tiny_model(family)
        latent = tiny.image_latent(family)
        guider = tiny.guider(model, family, 1.0)
        for steps in step_counts:
            sigmas = tiny.sigmas(model, steps)
            row = [family, steps]
            for run in WARM_RUNS:
                with torch.inference_mode():
                    _, noise, report, _ = FixedPointInvert.execute(**node_args(
                        FixedPointInvert, model=model, latent=latent, sigmas=sigmas, guider=guider, criterion=run[0],
                        warm_start=run[1])).args
                    rec = tiny.stock_sample(noise, guider, tiny.euler(), sigmas, tiny.empty_like(latent))
                lines = report.splitlines()
                columns = [line.split() for line in lines if line[:4].strip().isdigit()]
                first = int(lines[1].split("warm start: ")[1].split("/")[0]) if "warm start:" in lines[1] else 0
                row += warm_cells(run, [float(c[2]) for c in columns], [float(c[4]) for c in columns], first,
                                  latent["samples"].shape[0],
                                  rel(rec, latent["samples"]))
            rows.append(row)
    return table(WARM_HEADER, rows)


def prediction_floor(families=None, steps=28):
    """Why a tiny random-weight model's step costs two evaluations: between consecutive solved steps its ε changes by
    ε(x_{k+1}, σ_{k+1}) − ε(x_k, σ_k), split here into the σ part ε(x_k, σ_{k+1}) − ε(x_k, σ_k) (one extra model call
    per step, outside the inversion) and the rest (the state's move). A prediction from the steps before can follow
    the state's move, not a change in σ that random time-embedding weights make irregular. Fixed-Point Invert's
    defaults, batch 2, cfg 1; medians over the steps after the third, relative to ‖ε‖."""
    comfyui_host.use_comfyui()
    from inversion_suite.core.frame import batch_sigma
    from inversion_suite.nodes import tiny
    from inversion_suite.nodes.fixed_point import MAX_ITERATIONS, TOLERANCE
    from inversion_suite.nodes.host import open_model
    rows = []
    for family in families or tiny.FAMILIES:
        model = tiny.tiny_model(family)
        opened = open_model("benchmark", guider=tiny.guider(model, family, 1.0))
        sigmas = tiny.sigmas(model, steps).flip(0)
        parts = []

        def run(denoiser, x, s, extra_args, callback):
            states = [x]
            top = core.invert_fixed_point(denoiser, x, s, extra_args, lambda d: states.append(d["x"]), disable=True,
                                          flow=opened.flow, max_iterations=MAX_ITERATIONS, tolerance=TOLERANCE)
            eps = [(states[k + 1] - states[k]) / (s[k + 1] - s[k]) for k in range(len(s) - 1)]
            for k in range(3, len(s) - 1):
                with torch.no_grad():
                    frozen = (states[k] - denoiser(states[k], batch_sigma(x, s[k + 1]), **extra_args)) / s[k + 1]
                scale = float(eps[k].norm())
                parts.append((float((eps[k] - eps[k - 1]).norm()) / scale,
                              float((frozen - eps[k - 1]).norm()) / scale, float((eps[k] - frozen).norm()) / scale))
            return top
        opened.run(run, tiny.image_latent(family)["samples"], sigmas)
        medians = [sorted(column)[len(column) // 2] for column in zip(*parts)]
        rows.append([family, steps] + [f"{m:.1e}" for m in medians])
    return table(["model", "steps", "‖Δε‖ / ‖ε‖ between steps", "σ part (state held)", "state's move (σ held)"], rows)


def intra_versus_inter(steps=20, tol=1e-4):
    """When does the intra-path rule stop where the paper's inter-path rule would not? Both paths plain Picard
    (the paper); from each step's trace, the iteration at which ‖f(z) − z‖ first fell below ``tol`` against the one
    at which ‖f(z) − f(ẑ)‖ did, and the round trip each rule gives when run on its own."""
    rows = []
    for network in (False, True):
        for flow in (False, True):
            diagnostics = []
            paper = dict(max_iterations=50, tolerance=tol, anderson_window=0)
            fixed_point_run(flow, steps, dict(paper, criterion="inter-path"), diagnostics, network)
            earlier, saved, later = 0, 0, 0
            for d in diagnostics:
                first_intra = next((k + 1 for k, (intra, _) in enumerate(d["trace"]) if intra < tol), d["iterations"])
                if first_intra < d["iterations"]:
                    earlier += 1
                    saved += d["iterations"] - first_intra
                elif d["trace"][-1][0] >= tol and d["iterations"] < paper["max_iterations"]:
                    later += 1  # the inter-path rule stopped while the intra-path residual was still above tol
            intra_cost, intra_err = fixed_point_run(flow, steps, dict(paper, criterion="intra-path"), None, network)
            inter_cost, inter_err = fixed_point_run(flow, steps, dict(paper, criterion="inter-path"), None, network)
            name = ("tiny conv network, " if network else "analytic mixture, ") + ("flow" if flow else "ε (VE)")
            rows.append([name, f"{earlier}/{len(diagnostics)}", f"{saved / steps:.2f}", f"{later}/{len(diagnostics)}",
                         f"{intra_cost:.0f} / {intra_err:.1e}", f"{inter_cost:.0f} / {inter_err:.1e}"])
    return table(["model", "steps where intra-path stops first", "iterations earlier per step",
                  "steps where inter-path stops first",
                  "intra-path: evaluations per image / round trip", "inter-path: evaluations per image / round trip"],
                 rows)


def core_bdia(steps=50):
    rows = []
    for flow in (False, True):
        model = make_mixture(flow=flow)
        sigmas = flow_sigmas(steps) if flow else ve_sigmas(steps)
        real = model.sample(2, generator=torch.Generator().manual_seed(4)) + 0.05 * torch.randn(
            2, 4, 8, 8, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
        f32 = lambda x, s, **kw: model(x, s).float().double()  # noqa: E731  model outputs in float32
        for method, gamma in [("bdia", 1.0), ("bdia", 0.96), ("bdia", 0.9), ("bdia", 0.8), ("bdia", 0.5),
                              ("o-belm", None)]:
            errs = []
            for dtype in (torch.float64, torch.float32):
                if method == "bdia":
                    top, below = core.invert_bdia(f32, real, sigmas.flip(0), gamma=gamma, flow=flow, disable=True)
                    again = core.sample_bdia(f32, top.to(dtype), sigmas, gamma=gamma, flow=flow,
                                             x_below=below.to(dtype), disable=True)
                else:
                    top, below = core.invert_obelm(f32, real, sigmas.flip(0), disable=True)
                    again = core.sample_obelm(f32, top.to(dtype), sigmas, x_below=below.to(dtype), disable=True)
                errs.append(float(core.rel_rms(again.double(), real).max()))
            label = "O-BELM" if method == "o-belm" else f"BDIA γ={gamma}"
            amp = "—" if gamma is None else f"{(1 / gamma) ** steps:.1e}"
            rows.append(["flow" if flow else "ε (VE)", label, amp, f"{errs[0]:.1e}", f"{errs[1]:.1e}"])
    return table(["model", "method", "(1/γ)^N", "round trip, float64 state", "round trip, float32 hand-over"], rows)


def overhead(repeats=10):
    """Our own arithmetic per model call at full latent sizes (CPU): time outside the model ÷ time inside it,
    with a one-3×3-conv stand-in for the model (a real UNet/DiT call costs far more, so real ratios are smaller)."""
    rows = []
    for name, shape in [("SD1.5 512²", (1, 4, 64, 64)), ("SDXL/Flux 1024²", (1, 16, 128, 128))]:
        x = torch.randn(shape)
        conv = torch.nn.Conv2d(shape[1], shape[1], 3, padding=1)
        for label, fn in [("fixed point (Anderson m=3, intra-path)", lambda m: core.invert_fixed_point(
                              m, x.double(), torch.tensor([0.5, 0.6], dtype=torch.float64), max_iterations=5, tolerance=0.0,
                              disable=True)),
                          ("BDIA (float64 recurrence)", lambda m: core.sample_bdia(
                              m, x.double(), torch.linspace(0.9, 0.1, 6, dtype=torch.float64), gamma=0.96,
                              disable=True))]:
            inside = {"t": 0.0, "calls": 0}

            def model(z, s, **kw):
                start = time.perf_counter()
                with torch.no_grad():
                    out = conv(z.float()).to(z.dtype)
                inside["t"] += time.perf_counter() - start
                inside["calls"] += 1
                return out
            fn(model)
            inside.update(t=0.0, calls=0)
            start = time.perf_counter()
            for _ in range(repeats):
                fn(model)
            own = (time.perf_counter() - start - inside["t"]) / inside["calls"]
            call = inside["t"] / inside["calls"]
            rows.append([name, label, f"{own * 1e3:.2f} ms", f"{call * 1e3:.2f} ms", f"{own / call:.2f}"])
    return table(["latent", "our code", "own time per model call", "stand-in model call", "ratio"], rows)


def machine():
    """The machine timings were taken on, in words."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = f", GPU {torch.cuda.get_device_name()}" if torch.cuda.is_available() else ""
    return (f"{cpu}, {torch.get_num_threads()} torch threads{gpu}; {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, torch {torch.__version__}")


def timed_model(model):
    """A clone of a ModelPatcher whose diffusion-model calls are timed (synchronised on GPU) and counted in
    evaluations (batch elements); ``spent["inside"]`` is True during a call, ``spent["first"]`` is when the first call
    since it was set to None started."""
    spent = {"model": 0.0, "calls": 0, "evaluations": 0, "inside": False, "first": None}

    def sync():
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    def wrapper(apply_model, args):
        sync()
        start = time.perf_counter()
        spent["first"] = start if spent["first"] is None else spent["first"]
        spent["inside"] = True
        try:
            out = apply_model(args["input"], args["timestep"], **args["c"])
        finally:
            spent["inside"] = False
        sync()
        spent["model"] += time.perf_counter() - start
        spent["calls"] += 1
        spent["evaluations"] += args["input"].shape[0]
        return out
    patched = model.clone()
    patched.set_model_unet_function_wrapper(wrapper)
    return patched, spent


METADATA_OPS = frozenset({  # aten ops that make views or read metadata: no kernel runs
    "view", "_unsafe_view", "reshape", "_reshape_alias", "flatten", "expand", "select", "slice", "unsqueeze", "squeeze",
    "permute", "transpose", "t", "alias", "detach", "diagonal", "as_strided", "unbind", "split", "chunk", "lift_fresh",
    "view_as_real", "view_as_complex", "unfold", "narrow", "movedim", "sym_size", "sym_stride", "sym_numel", "dim",
    "is_same_size", "_has_compatible_shallow_copy_type"})
HOST_READS = frozenset({"cpu", "tolist", "item", "__bool__", "__float__", "__int__", "__index__", "numpy"})


class DeviceWork:
    """Counts what a run does outside the diffusion model's forward passes (``spent["inside"]`` of ``timed_model``):
    ``ops``, the aten ops that compute (each one kernel launch or more where its tensors are on a GPU; views and
    metadata excluded), and ``reads``, the host's reads of tensor values (``.cpu()``, ``.tolist()``, ``float()``,
    ``bool()``, a boolean mask's ``nonzero`` …), each a synchronisation with a GPU that holds the tensor. With ``gpu``
    the tensors on the CPU are the host's; on a CPU run they are told apart as a GPU run would place them: what
    ``.cpu()`` returns, what a factory makes without a ``device``, and what ops make from such tensors alone. Neither
    ops on the host's tensors nor reads of them are counted."""

    def __init__(self, spent, gpu=False):
        from torch.overrides import TorchFunctionMode
        from torch.utils._python_dispatch import TorchDispatchMode
        self.spent, self.ops, self.reads, work = spent, 0, 0, self

        def on_host(t):
            return t.device.type == "cpu" if gpu else getattr(t, "_on_host", False)

        class Ops(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                inputs = [t for t in torch.utils._pytree.tree_leaves((args, kwargs)) if torch.is_tensor(t)]
                host = all(on_host(t) for t in inputs) and (inputs or "device" not in (kwargs or {}))
                if host and func.overloadpacket.__name__ not in ("_to_copy", "copy_"):
                    for t in torch.utils._pytree.tree_leaves(out):
                        if torch.is_tensor(t):
                            t._on_host = True
                elif not work.spent["inside"]:
                    name = func.overloadpacket.__name__
                    bool_index = name == "index" and any(torch.is_tensor(t) and t.dtype == torch.bool
                                                         for t in (args[1] if len(args) > 1 else []) or [])
                    work.reads += name in ("nonzero", "masked_select") or bool_index
                    work.ops += name not in METADATA_OPS
                return out

        class Reads(TorchFunctionMode):
            def __torch_function__(self, func, types, args=(), kwargs=None):
                out = func(*args, **(kwargs or {}))
                name = getattr(func, "__name__", "")
                if name in HOST_READS and args and torch.is_tensor(args[0]):
                    work.reads += not on_host(args[0]) and not work.spent["inside"]
                    if name == "cpu":
                        out._on_host = True
                return out
        self.modes = (Reads(), Ops())

    def __enter__(self):
        for mode in self.modes:
            mode.__enter__()
        return self

    def __exit__(self, *exc):
        for mode in reversed(self.modes):
            mode.__exit__(*exc)


def device_work_rows(families=("sd15", "sd3", "flux"), steps=8):
    """Ops and host reads per model call outside the model, per node at its defaults and for stock euler sampling
    through the same guider (ComfyUI's own share), on the tiny ComfyUI models (batch 1, cfg 1). The counts do not depend
    on the model's size: the same code runs around a full-size model's forward."""
    comfyui_host.use_comfyui()
    from inversion_suite.nodes import tiny
    from inversion_suite.nodes.bdia import BDIAInvert
    from inversion_suite.nodes.fixed_point import FixedPointInvert
    from inversion_suite.nodes.oscillation import OscillationInvert
    rows = []
    for family in families:
        patched, spent = timed_model(tiny.tiny_model(family))
        latent = {"samples": tiny.image_latent(family)["samples"][:1]}
        sigmas, guider = tiny.sigmas(patched, steps), tiny.guider(patched, family, 1.0)
        runs = [("stock euler sampling, same guider", lambda: tiny.stock_sample(
                    tiny.disable_noise(), guider, tiny.euler(), sigmas, latent)),
                ("FixedPointInvert (defaults)", lambda: FixedPointInvert.execute(**node_args(
                    FixedPointInvert, model=patched, latent=latent, sigmas=sigmas, guider=guider))),
                ("BDIAInvert", lambda: BDIAInvert.execute(**node_args(
                    BDIAInvert, model=patched, latent=latent, sigmas=sigmas, guider=guider)))]
        if family == "flux":
            runs.append(("OscillationInvert (defaults)", lambda: OscillationInvert.execute(**node_args(
                OscillationInvert, model=patched, latent=latent, guider=guider))))
        stock = None
        for label, fn in runs:
            with torch.inference_mode():
                fn()  # warm-up: loading, caches
                spent.update(calls=0)
                with DeviceWork(spent) as work:
                    fn()
            ops, reads = work.ops / spent["calls"], work.reads / spent["calls"]
            own = "—" if stock is None else f"{ops - stock[0]:.0f} / {reads - stock[1]:.1f}"
            stock = stock or (ops, reads)  # the first run, stock sampling
            rows.append([family, label, spent["calls"], f"{ops:.0f}", f"{reads:.1f}", own])
    return table(["model", "run", "model calls", "ops per call", "host reads per call",
                  "the pack's own: ops / reads per call (run − stock)"], rows)


def node_args(cls, **values):
    """A node's schema defaults, updated with ``values`` (so the benchmark follows the nodes' defaults)."""
    args = {i.id: i.default for i in cls.define_schema().inputs if getattr(i, "default", None) is not None}
    args.update(values)
    return args


def host_rows():
    """Tiny ComfyUI models through the nodes at their defaults, batch 2, 8 steps: evaluations per image and round
    trip (machine-independent), and everything-but-the-model time ÷ model time (timing)."""
    comfyui_host.use_comfyui()
    from inversion_suite.nodes import tiny
    from comfy_extras.nodes_custom_sampler import FlipSigmas
    from inversion_suite.nodes.bdia import BDIAInvert, BDIASampler
    from inversion_suite.nodes.fixed_point import FixedPointInvert
    rows, timings = [], []
    for family in tiny.FAMILIES:
        patched, spent = timed_model(tiny.tiny_model(family))
        latent, sigmas = tiny.image_latent(family), tiny.sigmas(patched, 8)
        for cfg in (1.0, 3.0):
            guider = tiny.guider(patched, family, cfg)

            def measure(label, fn):
                spent.update(model=0.0, calls=0, evaluations=0)
                start = time.perf_counter()
                with torch.inference_mode():
                    rec, evaluations = fn()
                total = time.perf_counter() - start
                ratio = (total - spent["model"]) / spent["model"]
                rows.append([family, cfg, label, f"{evaluations / 2 / 8:.2f}",
                             f"{rel(rec, latent['samples']):.1e}"])
                timings.append([family, cfg, label, f"{ratio:.2f}"])

            def fixed(**options):
                def run():
                    inv = FixedPointInvert.execute(**node_args(FixedPointInvert, model=patched, latent=latent,
                                                               sigmas=sigmas, guider=guider, **options)).args
                    evaluations = spent["evaluations"]
                    return tiny.stock_sample(inv[1], guider, tiny.euler(), sigmas,
                                                tiny.empty_like(latent)), evaluations
                return run

            def exact(method):
                def run():
                    noise, inversion, _, _ = BDIAInvert.execute(**node_args(
                        BDIAInvert, model=patched, latent=latent, sigmas=sigmas, method=method, gamma=0.96,
                        guider=guider)).args
                    evaluations = spent["evaluations"]
                    sampler = BDIASampler.execute(method=method, gamma=0.96, inversion=inversion).args[0]
                    return tiny.stock_sample(noise, guider, sampler, sigmas, tiny.empty_like(latent)), evaluations
                return run

            def stock():
                inv = tiny.stock_sample(tiny.disable_noise(), guider, tiny.euler(),
                                           FlipSigmas().get_sigmas(sigmas)[0], latent)
                evaluations = spent["evaluations"]
                return tiny.stock_sample(tiny.disable_noise(), guider, tiny.euler(), sigmas,
                                            {"samples": inv}), evaluations
            if family == "sd15":
                measure("stock FlipSigmas + euler", stock)
            measure("FixedPointInvert, naive (1 iteration)", fixed(max_iterations=1, warm_start="none"))
            measure("FixedPointInvert, 1 iteration, predicted start", fixed(max_iterations=1))
            measure("FixedPointInvert, defaults (Anderson, intra-path 1e-4)", fixed())
            measure("FixedPointInvert, paper (Picard, inter-path 1e-4)", fixed(criterion="inter-path"))
            measure("BDIA γ=0.96", exact("bdia"))
            measure("O-BELM", exact("o-belm"))
    note = "evaluations are network passes: cfg 3 evaluates conditional and unconditional, twice cfg 1"
    return (table(["model", "cfg", "method", "evaluations per image per step (inversion)", "round-trip rel. RMS"],
                  rows) + f"\n\n({note})",
            table(["model", "cfg", "method", "everything but the model ÷ model time"], timings))


def optimisation_memory(size=64):
    """Bytes autograd keeps for backward during one optimisation step's forward (activation memory), with and
    without gradient checkpointing, tiny SD3 and Flux at a size×size latent (machine-independent), and the
    backward time (timing)."""
    comfyui_host.use_comfyui()
    from inversion_suite.nodes import tiny
    import comfy.samplers
    from inversion_suite.nodes.grad import differentiable
    rows, timings = [], []
    for family in ("sd3", "flux"):
        model = tiny.tiny_model(family)
        with torch.inference_mode():
            model.model.load_state_dict({k: v.clone() for k, v in model.model.state_dict().items()})
        for checkpointing in (False, True):
            if family == "flux" and not checkpointing:
                rows.append([family, "off", "— (Flux needs it: in-place block additions)"])
                continue
            saved = {"bytes": 0}

            def pack(t):
                saved["bytes"] += t.numel() * t.element_size()
                return t

            class Step(comfy.samplers.Sampler):
                def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
                           denoise_mask=None, disable_pbar=False):
                    with torch.inference_mode(False), torch.enable_grad():
                        z = latent_image.clone().requires_grad_(True)
                        with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                            loss = model_wrap(z, torch.full((z.shape[0],), 0.4), **extra_args).square().mean()
                        start = time.perf_counter()
                        loss.backward()
                        saved["backward"] = time.perf_counter() - start
                    return latent_image
            guider = tiny.guider(differentiable(model, checkpointing), family)
            latent = torch.randn(1, 16, size, size)
            with torch.inference_mode():
                guider.sample(torch.zeros_like(latent), latent, Step(), torch.tensor([0.4, 0.0]))
            on = "on" if checkpointing else "off"
            rows.append([family, on, f"{saved['bytes'] / 2 ** 20:.1f} MiB"])
            timings.append([family, on, f"{saved['backward'] * 1e3:.0f} ms"])
    return (table(["model (tiny)", "checkpointing", "kept for backward (one step)"], rows),
            table(["model (tiny)", "checkpointing", "backward time"], timings))


def oscillation_toy():
    """The paper's toy (Fig. 2), single and group target: the iterates and what was detected in them."""
    angles = torch.arange(4, dtype=torch.float64) * math.pi / 2
    means = 4 * torch.stack([angles.cos(), angles.sin()], -1)
    model = GaussianMixtureDenoiser(means, torch.full((4,), 0.125), flow=True)
    cases = [("one target between two modes", [(means[:1] + means[1:2]) / 2], (0,)),
             ("group A,A,B", [means[:1] + 0.1, means[1:2] - 0.1], (0, 0, 1))]
    results = []
    for title, targets, schedule in cases:
        history = core.oscillation_iterates(model, targets, 0.4, 60, schedule)
        period, errors = core.detect_period(history[20:])
        _, labels = core.cluster_centres(history[20:], period, offset=20)
        preds = model(history[-12:, 0], torch.full((12,), 0.4, dtype=torch.float64))
        results.append(dict(title=title, targets=targets, history=history, period=period, error=errors[period - 1],
                            labels=labels, preds=preds))
    text = "\n".join(f"{r['title']}: detected period {r['period']} (periodicity error {r['error']:.1e}), "
                     f"centres {r['labels']}" for r in results)
    return means, results, text


def pyplot():
    """matplotlib's pyplot (Agg), or None where matplotlib is not installed (figures are optional)."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def oscillation_figure(path):
    """Writes the toy figure to ``path`` when matplotlib is there; returns the detected periods as text."""
    means, results, text = oscillation_toy()
    plt = pyplot()
    if plt is None:
        return text + "\n(figure skipped: matplotlib is not installed)"
    fig, axes = plt.subplots(2, 3, figsize=(14, 9))
    for row, r in zip(axes, results):
        h = r["history"][:, 0]
        row[0].plot(h[:, 0], h[:, 1], "-o", ms=3, lw=0.6, color="tab:blue")
        row[0].set_title(f"{r['title']}: iterates z_k (period {r['period']})", fontsize=10)
        row[1].scatter(means[:, 0], means[:, 1], s=300, c="lightgray", label="modes")
        row[1].scatter(r["preds"][:, 0], r["preds"][:, 1], c="tab:red", label="D(z_k), last 12")
        for t in r["targets"]:
            row[1].scatter(t[0, 0], t[0, 1], marker="*", s=200, c="k")
        row[1].set_title("one-step predictions (★ targets)", fontsize=10)
        row[1].legend(loc="lower left", fontsize=8)
        for ax in row[:2]:
            ax.set_xlabel("latent coordinate 1")
            ax.set_ylabel("latent coordinate 2")
        image = row[2].imshow(core.pairwise_distances(r["history"][20:]).numpy(), cmap="viridis",
                              extent=(19.5, 60.5, 60.5, 19.5))
        row[2].set_title("pairwise distances of iterates 20–60", fontsize=10)
        row[2].set_xlabel("iterate k")
        row[2].set_ylabel("iterate k")
        fig.colorbar(image, ax=row[2], label="‖z_i − z_j‖")
    fig.suptitle("Oscillation toy (flow, σ = 0.4)\ngood: the iterates settle into the period the schedule sets, the "
                 "predictions land on modes, and the distance map shows a chequer of that period")
    fig.tight_layout()
    fig.savefig(path, dpi=80, metadata={"Software": None})
    plt.close(fig)
    return text


# ---------------------------------------------------------------- GPU mode: full-size random-weight architectures
FULL = {  # ComfyUI's own unet_configs (comfy/model_detection.py) for SD1.5 and SDXL; Flux-dev's detected config
    "sd15": {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "adm_in_channels": None, "in_channels": 4, "model_channels": 320,
             "num_res_blocks": [2, 2, 2, 2], "transformer_depth": [1, 1, 1, 1, 1, 1, 0, 0], "channel_mult": [1, 2, 4, 4],
             "transformer_depth_middle": 1, "use_linear_in_transformer": False, "context_dim": 768, "num_heads": 8,
             "transformer_depth_output": [1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0], "use_temporal_attention": False,
             "use_temporal_resblock": False},
    "sdxl": {"use_checkpoint": False, "image_size": 32, "out_channels": 4, "use_spatial_transformer": True,
             "legacy": False, "num_classes": "sequential", "adm_in_channels": 2816, "in_channels": 4,
             "model_channels": 320, "num_res_blocks": [2, 2, 2], "transformer_depth": [0, 0, 2, 2, 10, 10],
             "channel_mult": [1, 2, 4], "transformer_depth_middle": 10, "use_linear_in_transformer": True,
             "context_dim": 2048, "num_head_channels": 64, "transformer_depth_output": [0, 0, 0, 2, 2, 2, 10, 10, 10],
             "use_temporal_attention": False, "use_temporal_resblock": False},
    "flux": {"image_model": "flux", "in_channels": 16, "out_channels": 16, "vec_in_dim": 768, "context_in_dim": 4096,
             "hidden_size": 3072, "mlp_ratio": 4.0, "num_heads": 24, "depth": 19, "depth_single_blocks": 38,
             "axes_dim": [16, 56, 56], "theta": 10000, "patch_size": 2, "qkv_bias": True, "guidance_embed": True},
}
REDUCED = {  # the same architectures at reduced depth and width, for the CPU test of this mode
    "sd15": dict(FULL["sd15"], model_channels=32, num_res_blocks=[1, 1], transformer_depth=[1, 1], channel_mult=[1, 2],
                 transformer_depth_output=[1, 1, 1, 1], context_dim=32, num_heads=2),
    "sdxl": dict(FULL["sdxl"], model_channels=32, num_res_blocks=[1, 1], transformer_depth=[0, 1],
                 channel_mult=[1, 2], transformer_depth_middle=1, transformer_depth_output=[0, 0, 1, 1],
                 context_dim=32, num_head_channels=16),
    "flux": dict(FULL["flux"], vec_in_dim=32, context_in_dim=32, hidden_size=128, num_heads=1, depth=1,
                 depth_single_blocks=1),  # heads of 128 channels, as ComfyUI's loader detects them (0.30+)
}
CONTEXT = {"sd15": (77, 768), "sdxl": (77, 2048), "flux": (256, 4096)}
POOLED = {"sd15": None, "sdxl": 1280, "flux": 768}
LATENT = {"sd15": (4, 512), "sdxl": (4, 1024), "flux": (16, 1024)}  # channels, image side


def full_model(family, reduced, device, dtype):
    """A ModelPatcher around ``family``'s architecture built with ComfyUI's own classes, random weights."""
    import comfy.model_patcher
    import comfy.supported_models as sm
    from comfy.ldm.flux.model import FluxParams
    from inversion_suite.nodes.host import complete_params
    unet = dict((REDUCED if reduced else FULL)[family])
    if family == "flux":  # the fields a newer ComfyUI's FluxParams requires (0.30+: txt_ids_dims), as detected
        unet = complete_params(FluxParams, unet)
    config = {"sd15": sm.SD15, "sdxl": sm.SDXL, "flux": sm.Flux}[family](unet)
    config.set_inference_dtype(dtype, None)
    model = config.get_model({}, device=device)
    g = torch.Generator(device=device).manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, device=device, dtype=torch.float32).to(p.dtype) * 0.02)
    return comfy.model_patcher.ModelPatcher(model, load_device=device, offload_device=device)


def full_cond(family, reduced, device):
    g = torch.Generator().manual_seed(1)
    tokens, width = CONTEXT[family]
    if reduced:
        width = 32 if family != "sdxl" else 32
    extra = {}
    if POOLED[family]:
        pooled = 32 if reduced and family == "flux" else POOLED[family]
        extra["pooled_output"] = torch.randn(1, pooled, generator=g)
    if family == "flux":
        extra["guidance"] = 3.5
    return [[torch.randn(1, 8 if reduced else tokens, width, generator=g), extra]]


def rel(a, b):
    """Relative error of the whole tensor ``a`` against ``b``."""
    return float(core.rel_rms(a.reshape(1, -1), b.reshape(1, -1)))


def gpu_benchmark(reduced=False, families=("sd15", "sdxl", "flux"), steps=8, batch=1):
    """Per node: model evaluations per image, model time against the pack's own time per model call, peak GPU
    memory; PostInversionOptimize on Flux at 1024² with checkpointing, and one forward's peak without it."""
    import comfy.model_management as mm
    import comfy.samplers
    from comfy_extras.nodes_custom_sampler import BasicScheduler
    from inversion_suite.nodes.bdia import BDIAInvert
    from inversion_suite.nodes.fixed_point import FixedPointInvert
    from inversion_suite.nodes.grad import differentiable
    from inversion_suite.nodes.optimize import PostInversionOptimize
    from inversion_suite.nodes.oscillation import OscillationInvert
    device = mm.get_torch_device()
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    rows = []

    def peak_reset():
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()

    def peak():
        return f"{torch.cuda.max_memory_allocated() / 2 ** 30:.1f} GiB" if cuda else "n/a (CPU)"

    for family in families:
        patcher = full_model(family, reduced, device, dtype)
        patched, spent = timed_model(patcher)
        channels, side = LATENT[family]
        side = 64 if reduced else side
        latent = {"samples": torch.randn(batch, channels, side // 8, side // 8, generator=torch.Generator().manual_seed(2))}
        guider = comfy.samplers.CFGGuider(patched)
        guider.inner_set_conds({"positive": full_cond(family, reduced, device)})
        guider.set_cfg(1.0)
        sigmas = BasicScheduler().get_sigmas(patched, "simple", steps, 1.0)[0]
        flow = family == "flux"
        euler = comfy.samplers.sampler_object("euler")
        runs = [("stock euler sampling, same guider (ComfyUI's own time)", lambda: guider.sample(
                    torch.zeros_like(latent["samples"]), latent["samples"].clone(), euler, sigmas, seed=0)),
                ("FixedPointInvert (defaults)", lambda: FixedPointInvert.execute(**node_args(
                    FixedPointInvert, model=patched, latent=latent, sigmas=sigmas, guider=guider))),
                ("BDIAInvert", lambda: BDIAInvert.execute(**node_args(
                    BDIAInvert, model=patched, latent=latent, sigmas=sigmas, guider=guider)))]
        if flow:
            runs.append(("OscillationInvert (defaults)", lambda: OscillationInvert.execute(**node_args(
                OscillationInvert, model=patched, latent=latent, guider=guider))))
            runs.append(("PostInversionOptimize, checkpointing on, 6×2 steps", lambda: PostInversionOptimize.execute(
                **node_args(PostInversionOptimize, model=patched, latent=latent, target_1=latent, guider=guider,
                            rounds=2, gradient_checkpointing=True))))
        for label, fn in runs:
            try:
                with torch.inference_mode():
                    fn()  # warm-up: loading, first-call kernels
                spent.update(model=0.0, calls=0, evaluations=0)
                peak_reset()
                start = time.perf_counter()
                with torch.inference_mode():
                    fn()
                if cuda:
                    torch.cuda.synchronize()
                total = time.perf_counter() - start
            except Exception as e:  # a random-weight model may overflow in bf16: report it and go on
                rows.append([family, label, "—", "—", "—", "—", f"failed: {type(e).__name__}: {str(e)[:80]}", "—"])
                continue
            own = (total - spent["model"]) / max(spent["calls"], 1)
            call = spent["model"] / max(spent["calls"], 1)
            row = [family, label, f"{spent['evaluations'] / batch:.0f}", f"{call * 1e3:.1f} ms", f"{own * 1e3:.2f} ms",
                   f"{own / call:.2%}", peak()]
            spent.update(calls=0)
            with torch.inference_mode(), DeviceWork(spent, gpu=cuda) as work:
                fn()
            rows.append(row + [f"{work.ops / spent['calls']:.0f} / {work.reads / spent['calls']:.1f}"])
        if flow:  # without checkpointing Flux cannot run backward (in-place block additions): one forward's peak
            grad_model = differentiable(patcher, False)
            g2 = comfy.samplers.CFGGuider(grad_model)
            g2.inner_set_conds({"positive": full_cond(family, reduced, device)})

            class Forward(comfy.samplers.Sampler):
                def sample(self, model_wrap, sigmas, extra_args, callback, noise, latent_image=None,
                           denoise_mask=None, disable_pbar=False):
                    with torch.inference_mode(False), torch.enable_grad():
                        z = latent_image.clone().requires_grad_(True)
                        model_wrap(z, torch.full((z.shape[0],), 0.4, device=z.device), **extra_args).float().square().mean()
                    return latent_image
            label = "PostInversionOptimize, checkpointing off: one forward with graph (backward refused)"
            peak_reset()
            try:
                with torch.inference_mode():
                    g2.sample(torch.zeros_like(latent["samples"]), latent["samples"], Forward(),
                              torch.tensor([0.4, 0.0]))
                rows.append([family, label, "1", "—", "—", "—", peak(), "—"])
            except Exception as e:  # as above
                rows.append([family, label, "—", "—", "—", "—", f"failed: {type(e).__name__}: {str(e)[:80]}", "—"])
        del patched, patcher, guider
        mm.unload_all_models()
        mm.soft_empty_cache()
    size = "reduced depth, 64² images" if reduced else "full size, bf16, 512² (SD1.5) / 1024² (SDXL, Flux)"
    note = ("own time = everything but the model's forward passes (the pack, ComfyUI's guider and, for "
            "PostInversionOptimize, the backward pass through the model), per model call; ops / host reads: the same "
            "counted (DeviceWork) in a third run")
    return table(["model", "node", "evaluations per image", "model time per call", "own time per call",
                  "own ÷ model", "peak GPU memory", "own ops / host reads per call"], rows) + f"\n\n({note})", size


def dynamic_vram_benchmark(reduced=False):
    """Post-Inversion Optimize run twice on a random-weight Flux that ComfyUI's own loader (``load_diffusion_model``,
    the Load Diffusion Model node's) read from disk, as a user's graph runs it. Under Dynamic VRAM the node
    differentiates the loader's non-dynamic delegate: the weights are read from disk for the first run only. Per run:
    the patcher's class, the reads of the file and the wall time."""
    import tempfile

    import comfy.model_management as mm
    import comfy.model_patcher
    import comfy.samplers
    import comfy.sd
    import safetensors.torch
    from inversion_suite.nodes.optimize import PostInversionOptimize
    if not hasattr(comfy.model_patcher.ModelPatcher, "is_dynamic"):
        return "n/a: this ComfyUI has no Dynamic VRAM (0.30+)"
    device = mm.get_torch_device()
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    side = 64 if reduced else LATENT["flux"][1]
    latent = {"samples": torch.randn(1, 16, side // 8, side // 8, generator=torch.Generator().manual_seed(2))}
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        path = pathlib.Path(folder) / "flux_random.safetensors"
        built = full_model("flux", reduced, device, dtype)
        safetensors.torch.save_file({k: v.detach().to("cpu").contiguous()
                                     for k, v in built.model.diffusion_model.state_dict().items()}, str(path))
        del built
        mm.soft_empty_cache()
        # on from here (main.py turns it on at start-up): its layers take their weights from a state dict only
        dynamic = comfyui_host.enable_dynamic_vram()
        reads = []

        def counted(*args, **kwargs):  # the loader's own reload factory, counted
            reads.append(path)
            return comfy.sd.load_diffusion_model(*args, **kwargs)
        loaded = comfy.sd.load_diffusion_model(str(path))
        if getattr(loaded, "cached_patcher_init", None):
            loaded.cached_patcher_init = (counted,) + tuple(loaded.cached_patcher_init[1:])
        model, spent = timed_model(loaded)
        guider = comfy.samplers.CFGGuider(model)
        guider.inner_set_conds({"positive": full_cond("flux", reduced, device)})
        guider.set_cfg(1.0)
        for run in (1, 2):
            reads.clear()
            spent.update(model=0.0, calls=0, evaluations=0, first=None)
            start = time.perf_counter()
            with torch.inference_mode():
                out = PostInversionOptimize.execute(**node_args(
                    PostInversionOptimize, model=model, latent=latent, target_1=latent, guider=guider, rounds=2,
                    gradient_checkpointing=True)).args[0]["samples"]
            if cuda:
                torch.cuda.synchronize()
            first = "—" if spent["first"] is None else f"{spent['first'] - start:.1f} s"
            rows.append([run, type(model).__name__, "on" if model.is_dynamic() else "off", len(reads),
                         f"{time.perf_counter() - start:.1f} s", first,
                         f"{spent['model']:.1f} s ({spent['calls']} calls)", "yes" if torch.isfinite(out).all() else "NO"])
        del model, loaded, guider
        mm.unload_all_models()
        mm.soft_empty_cache()
    return f"Dynamic VRAM {'on' if dynamic else 'off'}\n\n" + table(
        ["run", "loaded patcher", "Dynamic VRAM", "reads of the file from disk", "wall time",
         "of it before the first forward (loading, preparing the copy)", "of it in forward passes", "finite"], rows)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(ROOT / "bench_out"), help="folder for the figures")
    parser.add_argument("--no-host", action="store_true", help="skip the ComfyUI tiny-model rows")
    parser.add_argument("--gpu", action="store_true", help="full-size random-weight SD1.5/SDXL/Flux-dev in bf16")
    parser.add_argument("--reduced", action="store_true", help="with --gpu: reduced depth, runs on CPU (for tests)")
    args = parser.parse_args()
    out = pathlib.Path(args.out)
    if args.gpu:
        if not torch.cuda.is_available() and not args.reduced:
            sys.exit("--gpu needs a CUDA GPU (use --reduced to run the same code on CPU)")
        comfyui_host.use_comfyui(cpu=not torch.cuda.is_available())
        text, size = gpu_benchmark(reduced=args.reduced)
        print(f"## GPU benchmark ({size}; random weights, batch 1, 8 steps, cfg 1)\n\nMachine: {machine()}\n\n"
              + text, flush=True)
        print("\n## Post-Inversion Optimize twice on a Flux read from disk by ComfyUI's loader, 6×2 steps\n\n"
              + dynamic_vram_benchmark(reduced=args.reduced))
        return
    out.mkdir(parents=True, exist_ok=True)
    print("# Machine-independent figures\n")
    print("## Fixed-point inversion, analytic Gaussian mixture, 20 steps, batch 2\n\n" + core_fixed_point())
    print("\n## Fixed-point warm start at the node defaults, analytic Gaussian mixture, batch 2\n\n" + core_warm_start())
    print(f"\n## The same over {DRAWS} draws of the analytic mixture (node defaults, batch 2)\n\n" + core_warm_start_draws())
    print("\n## Intra-path against inter-path (the paper's rule: Picard, second path z + N(0, I)), tol 1e-4\n\n"
          + intra_versus_inter())
    print("\n## BDIA / O-BELM, analytic mixture, 50 steps, real (off-manifold) latent\n\n" + core_bdia())
    print("\n## Oscillation toy\n\n" + oscillation_figure(out / "oscillation_toy.png"))
    timings = [("Our own time per model call (full latent sizes, one-conv stand-in model)", overhead())]
    if args.no_host:
        pass
    elif not comfyui_host.use_comfyui(required=False):
        print("\n(host rows skipped: no ComfyUI found; set COMFYUI_PATH, or run ./scripts/test.sh once)")
    else:
        rows, host_timing = host_rows()
        memory, backward = optimisation_memory()
        print("\n## Tiny ComfyUI models through the nodes at their defaults (batch 2, 8 steps)\n\n" + rows)
        print("\n## Fixed-point warm start at the node defaults, tiny ComfyUI models (batch 2, cfg 1)\n\n"
              + host_warm_start())
        print("\n## What a prediction can follow: the change of ε between steps, tiny ComfyUI models\n\n"
              + prediction_floor())
        print("\n## Post-inversion optimisation memory, 64×64 latent\n\n" + memory)
        print("\n## Device work per model call outside the model (tiny ComfyUI models, batch 1, 8 steps, cfg 1)\n\n"
              + device_work_rows())
        timings += [("Tiny ComfyUI models: everything but the model ÷ model time", host_timing),
                    ("Post-inversion optimisation backward, 64×64 latent", backward)]
    print(f"\n# Timings\n\nMachine: {machine()}")
    for title, text in timings:
        print(f"\n## {title}\n\n{text}")


if __name__ == "__main__":
    main()
