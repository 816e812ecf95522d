"""FixedPointInvert and FixedPointInversionSampler: thin adapters over core.invert_fixed_point."""
import torch
from comfy_api.v0_0_2 import io

from .. import core
from .common import (CATEGORY, CoreSampler, InvertedNoise, check_latent, check_range, check_sigmas,
                     conditioning_inputs, fail, make_guider, model_family, output_latent, report, run_in_guider,
                     seed_input, state_to_latent, tolerance_input)

from .plot import convergence_chart, report_ui

CRITERIA = {"inter-path": "inter", "intra-path": "intra"}


def solver_inputs():
    return [
        io.Int.Input("max_iterations", default=10, min=1, max=100,
                     tooltip="Model calls per step at most. 1 = naive DDIM inversion."),
        tolerance_input(io, 1e-5),
        io.Combo.Input("criterion", options=list(CRITERIA), default="inter-path",
                       tooltip="inter-path: ‖f(z) − f(ẑ)‖ between two paths from different starts (NeurIPS 2024; "
                               "does not stop early on a plateau). intra-path: ‖f(z) − z‖ (AIDI)."),
        io.Int.Input("anderson_window", default=3, min=0, max=10,
                     tooltip="Anderson acceleration window m (AIDI). 0 = plain Picard iteration, which may stall on "
                             "flow models."),
        io.Float.Input("perturbation", default=0.5, min=0.0, max=10.0, step=0.05,
                       tooltip="Inter-path only: the second path starts at z + perturbation·σ·N(0, I)."),
        seed_input(io, "Seed of the inter-path perturbation."),
    ]


def check_solver(node, max_iterations, tolerance, criterion, anderson_window, perturbation):
    check_range(node, "max_iterations", max_iterations, 1, 100)
    check_range(node, "tolerance", tolerance, 0.0, 1.0, lo_open=True)
    check_range(node, "anderson_window", anderson_window, 0, 10)
    check_range(node, "perturbation", perturbation, 0.0, 10.0)
    if criterion not in CRITERIA:
        fail(node, "criterion", f"must be one of {list(CRITERIA)}", criterion)


def solver(max_iterations, tolerance, criterion, anderson_window, perturbation, seed, diagnostics):
    generator = torch.Generator().manual_seed(seed)

    def run(model, x, sigmas, extra_args, callback):
        return core.invert_fixed_point(model, x, sigmas, extra_args, callback, disable=True, max_iter=max_iterations,
                                       tol=tolerance, criterion=CRITERIA[criterion], anderson=anderson_window,
                                       perturbation=perturbation, generator=generator, diagnostics=diagnostics)
    return run


class FixedPointInvert(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_FixedPointInvert", display_name="Fixed-Point Invert", category=CATEGORY,
            description="Inverts an image latent into the noise that regenerates it: DDIM inversion where every step "
                        "solves its implicit equation by fixed-point iteration (Anderson-accelerated, inter-path "
                        "stopping rule). Regenerate with stock SamplerCustomAdvanced + euler on the same sigmas, "
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
                io.String.Output(display_name="diagnostics", tooltip="Per-step model calls and residuals."),
                io.Image.Output(display_name="convergence",
                                tooltip="Picture of the residual per step (against the tolerance) and the model calls "
                                        "per step; connect a Preview Image."),
            ])

    @classmethod
    def execute(cls, model, latent, sigmas, max_iterations, tolerance, criterion, anderson_window, perturbation,
                seed, cfg=1.0, positive=None, negative=None, guider=None) -> io.NodeOutput:
        node = "FixedPointInvert"
        guider = make_guider(node, model, positive, negative, cfg, guider)
        patcher = guider.model_patcher
        ms = patcher.get_model_object("model_sampling")
        model_family(node, ms)
        samples = check_latent(node, "latent", latent, patcher)
        descending = check_sigmas(node, sigmas)
        check_solver(node, max_iterations, tolerance, criterion, anderson_window, perturbation)
        diagnostics = []
        run = solver(max_iterations, tolerance, criterion, anderson_window, perturbation, seed, diagnostics)
        _, sampler = run_in_guider(guider, samples, descending.flip(0), run)
        sigma_top = float(descending[0])
        process_in = patcher.get_model_object("process_latent_in")
        process_out = patcher.get_model_object("process_latent_out")
        inverted = output_latent(latent, state_to_latent(ms, process_out, sampler.state, sigma_top))
        noise = InvertedNoise(node, sampler.state, sigma_top, ms, process_in, seed=seed)
        text = report(node, diagnostics, sampler.counter["calls"])
        chart = convergence_chart(diagnostics, tolerance, max_iterations, criterion)
        return io.NodeOutput(inverted, noise, text, chart, ui=report_ui(text))


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
    def execute(cls, max_iterations, tolerance, criterion, anderson_window, perturbation, seed) -> io.NodeOutput:
        node = "FixedPointInversionSampler"
        check_solver(node, max_iterations, tolerance, criterion, anderson_window, perturbation)

        def run(model, x, sigmas, extra_args, callback):
            if len(sigmas) < 2 or not bool((sigmas[1:] > sigmas[:-1]).all()):
                fail(node, "sigmas", "must ascend (connect FlipSigmas between the scheduler and SamplerCustomAdvanced)",
                     [round(float(s), 4) for s in sigmas])
            return solver(max_iterations, tolerance, criterion, anderson_window, perturbation, seed, [])(
                model, x, sigmas, extra_args, callback)
        return io.NodeOutput(CoreSampler(run))
