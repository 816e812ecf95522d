"""FixedPointInvert and FixedPointInversionSampler: thin adapters over core.invert_fixed_point."""
import torch

from .. import core
from .common import (CATEGORY, check_samples, check_sigmas, conditioning_inputs, model_family,
                     tolerance_input, widgets)
from .host import BATCH_ROWS, CoreSampler, io, open_model, seed_input
from .plot import convergence_chart, report_ui

CRITERIA = ("inter-path", "intra-path")  # the COMBO order of the schema since the first release
WARM_STARTS = ("predicted", "previous D", "none")  # "none": the naive start, the solver before warm starts
MAX_ITERATIONS, TOLERANCE = 10, 1e-4  # node defaults, chosen by evaluations per image (README)


def solver_inputs():
    return [
        io.Int.Input("max_iterations", default=MAX_ITERATIONS, min=1, max=100,
                     tooltip="Iterations per step at most (each evaluates the model once per image and path). "
                             "1 = one evaluation per step, the price of naive DDIM inversion: from the predicted start "
                             "(warm_start) each step lands much closer on 8 steps and more (the report's residuals say "
                             "how close; on 4–5 steps it can regenerate worse); with warm_start none it is naive DDIM "
                             "inversion. Cost: up to steps × this many evaluations per image (twice "
                             "with inter-path), e.g. 800 for 8 steps at 100: minutes on a full-size model when the "
                             "tolerance is out of reach."),
        tolerance_input(io, TOLERANCE),
        io.Combo.Input("criterion", options=list(CRITERIA), default="intra-path",
                       tooltip="intra-path: stop on ‖f(z) − z‖ (AIDI), with Anderson acceleration; the cheapest. "
                               "inter-path: the NeurIPS 2024 rule ‖f(z) − f(ẑ)‖ between two plain-Picard paths, the "
                               "second started at z + N(0, I) in the model's latent; two evaluations per iteration."),
        io.Int.Input("anderson_window", default=3, min=0, max=10,
                     tooltip="intra-path only: Anderson acceleration window m (AIDI). 0 = plain Picard iteration, "
                             "which may stall on flow models. The window costs no model calls; above about 5 it rarely "
                             "helps. inter-path always iterates with plain Picard, as the paper does."),
        io.Float.Input("perturbation", default=1.0, min=0.0, max=10.0, step=0.05,
                       tooltip="inter-path only: the second path starts at z + perturbation·N(0, I) in the model's "
                               "own latent (1 = the paper)."),
        seed_input(io, "Seed of the inter-path perturbation."),
        io.Combo.Input("warm_start", options=list(WARM_STARTS), default="predicted", optional=True,
                       tooltip="Where each step's iteration starts; every model evaluation is also a check, so a step "
                               "that starts at its fixed point costs one. predicted: per image, the best of a few "
                               "predictions from the steps already solved (the previous D, polynomials through the "
                               "previous model outputs, the Gaussian fitted to the last two steps or, after the first, "
                               "to how the model responded within it), chosen by how well "
                               "each predicted the previous step. previous D: the previous step's denoised prediction "
                               "reused (FireFlow). none: the naive start, as before. With max_iterations 1 every step "
                               "serves the predictions (none is checked)."),
    ]


def per_image_conditioning(guider):
    """Whether some conditioning differs between the images of a batch (a batched prompt, a ControlNet, an
    inpainting concat): ComfyUI fits such conds to a sub-batch by truncation, so every call must carry every image."""
    for conds in (getattr(guider, "conds", None) or {}).values():
        for cond in conds or []:
            if not isinstance(cond, dict):
                continue
            if cond.get("control") is not None:
                return True
            for value in list(cond.values()) + list((cond.get("model_conds") or {}).values()):
                value = getattr(value, "cond", value)
                if torch.is_tensor(value) and value.ndim > 0 and value.shape[0] > 1:
                    return True
    return False


SOLVER = ("max_iterations", "tolerance", "criterion", "anderson_window", "perturbation", "warm_start")


def solver(options, flow, guider):
    """The core run with the solver widgets' values (``options``, checked), named as the core names them. Whether
    converged images may leave the batch is asked of ``guider`` when the run starts (its conds are known then)."""
    generator = torch.Generator().manual_seed(options["seed"])
    solve = {name: options[name] for name in SOLVER if name in options}
    if solve["criterion"] == "inter-path":
        solve["anderson_window"] = 0  # the paper's plain Picard iteration

    def run(model, x, sigmas, extra_args, callback):
        transformer_options = extra_args.get("model_options", {}).get("transformer_options", {})
        return core.invert_fixed_point(model, x, sigmas, extra_args, callback, disable=True, flow=flow,
                                       generator=generator, shrink=not per_image_conditioning(guider),
                                       on_call=lambda *rows: transformer_options.__setitem__(BATCH_ROWS, rows),
                                       precision=model.precision, return_info=True, **solve)
    return run


def fixed_point_report(node, diagnostics, calls, family):
    """Cost per step in evaluations per image (batch elements evaluated), and the residuals: at the first evaluation
    (how close the warm start came; above the tolerance the step needs a second evaluation) and at the last."""
    steps = max(len(diagnostics), 1)
    per_image = sum(d["evaluations_per_image"] for d in diagnostics)
    converged = sum(d["converged"] for d in diagnostics)
    images = sum(d["images"] for d in diagnostics)
    at_floor = sum(d.get("at_floor", 0) for d in diagnostics)
    lines = [f"{node}: {len(diagnostics)} steps, {per_image:.1f} model evaluations per image "
             f"({per_image / steps:.2f} per image per step; {calls} model calls), {converged}/{images} image-steps "
             f"met the tolerance ({family})"]
    if at_floor:
        floor = max(d.get("floor", 0.0) for d in diagnostics)
        lines.append(f"rounding floor: {at_floor} of them stopped at the floor the model's own arithmetic sets, above "
                     f"the tolerance (up to {floor:.1e}: no iteration gets below it at this precision)")
    if converged < images:
        missed = [str(d["step"]) for d in diagnostics if d["converged"] < d["images"]]
        earlier = sum(len(d.get("earlier", [])) for d in diagnostics)
        lines.append(f"out of iterations: {images - converged} image-steps missed the tolerance (step "
                     f"{', '.join(missed)}); {earlier} of them handed on an earlier iterate, which missed less than "
                     f"the last (for those the intra-path column is the residual of the iterate handed on)")
    starts = [name for d in diagnostics for name in d.get("start", [])]
    if starts:
        first = sum(d.get("first_check", 0) for d in diagnostics)
        counts = ", ".join(f"{name} {starts.count(name)}" for name in dict.fromkeys(starts))
        lines.append(f"warm start: {first}/{images} image-steps met the tolerance at their first evaluation "
                     f"(started from: {counts})")
    lines.append("step  sigma      evals/image  iterations  first check  intra-path  inter-path")
    for d in diagnostics:
        inter = "-" if d.get("inter") is None else f"{d['inter']:.2e}"
        lines.append(f"{d['step']:>4}  {d['sigma']:<9.4g}  {d['evaluations_per_image']:>11.2f}  {d['iterations']:>10}"
                     f"  {d['trace'][0][0]:>11.2e}  {d['intra']:.2e}    {inter}")
    return "\n".join(lines)


class FixedPointInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_FixedPointInvert", display_name="Fixed-Point Invert", category=CATEGORY,
            description="Inverts an image latent into the noise that regenerates it: DDIM inversion where every step "
                        "solves its implicit equation by fixed-point iteration (Anderson-accelerated, intra-path "
                        "stopping rule by default; the NeurIPS 2024 inter-path rule on request), each step starting "
                        "from a prediction made from the steps already solved. Regenerate with stock "
                        "SamplerCustomAdvanced + euler on the same sigmas, "
                        "using the NOISE output (every model family) or the LATENT with DisableNoise (ε/v models).",
            inputs=conditioning_inputs(io) + [
                io.Latent.Input("latent", tooltip="The image latent to invert (VAE Encode output; batches allowed)."),
                io.Sigmas.Input("sigmas", tooltip="The sampling schedule you will regenerate with (any stock scheduler; "
                                                  "descending, or already flipped)."),
            ] + solver_inputs(),
            outputs=[
                io.Latent.Output(display_name="inverted_latent",
                                 tooltip="The inverted state as a LATENT for DisableNoise regeneration (ε/v models, or "
                                         "flow models when the schedule starts below 1)."),
                io.Noise.Output(display_name="noise",
                                tooltip="The inverted state as NOISE for SamplerCustomAdvanced; works for every model."),
                io.String.Output(display_name="diagnostics",
                                 tooltip="Per-step model evaluations per image, iterations and residuals."),
                io.Image.Output(display_name="convergence",
                                tooltip="Picture of the residual per step (against the tolerance) and the model calls "
                                        "per step; connect a Preview Image."),
            ])

    @classmethod
    def execute(cls, model, latent, sigmas, max_iterations, tolerance, criterion, anderson_window, perturbation,
                seed, cfg=1.0, positive=None, negative=None, guider=None, warm_start="predicted") -> io.NodeOutput:
        options = widgets(cls, locals())
        opened = open_model("FixedPointInvert", model, positive, negative, options["cfg"], guider)
        samples, descending = opened.latent("latent", latent), check_sigmas("FixedPointInvert", sigmas)
        ran = opened.run(solver(options, opened.flow, opened.guider), samples, descending.flip(0))
        steps, sigma_top = ran.info["steps"], float(descending[0])
        text = fixed_point_report("FixedPointInvert", steps, ran.calls, opened.frame)
        chart = convergence_chart(steps, options["tolerance"], options["max_iterations"], options["criterion"])
        return io.NodeOutput(opened.noisy(latent, ran.state, sigma_top),
                             opened.noise(ran.state, sigma_top, seed=options["seed"]), text, chart, ui=report_ui(text))


class FixedPointInversionSampler(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_FixedPointInversionSampler", display_name="Fixed-Point Inversion Sampler",
            category=CATEGORY,
            description="A SAMPLER for SamplerCustomAdvanced that inverts along FlipSigmas' ascending schedule with "
                        "fixed-point steps (use DisableNoise). Its LATENT regenerates ε/v models with DisableNoise; "
                        "for flow models ending at σ = 1 use Fixed-Point Invert's NOISE output instead.",
            inputs=solver_inputs(),
            outputs=[io.Sampler.Output()])

    @classmethod
    def execute(cls, max_iterations, tolerance, criterion, anderson_window, perturbation, seed,
                warm_start="predicted") -> io.NodeOutput:
        node = "FixedPointInversionSampler"
        options = widgets(cls, locals())

        def run(model, x, sigmas, extra_args, callback):
            # the same checks as Fixed-Point Invert, on what SamplerCustomAdvanced hands over, before any model call
            flow = model_family(node, sampler.base_model.model_sampling) == "flow"
            check_sigmas(node, sigmas, direction="ascending")
            check_samples(node, "latent_image (of SamplerCustomAdvanced)", x, sampler.base_model)
            state, _ = solver(options, flow, sampler.guider)(model, x, sigmas, extra_args, callback)
            return state
        sampler = CoreSampler(run, node=node)
        return io.NodeOutput(sampler)
