"""FixedPointInvert and FixedPointInversionSampler: thin adapters over core.invert_fixed_point."""
import torch
from comfy_api.v0_0_2 import io

from .. import core
from .common import (CATEGORY, CoreSampler, InvertedNoise, check_choice, check_latent, check_range, check_samples,
                     check_sigmas, conditioning_inputs, fail, make_guider, model_family, output_latent, report,
                     run_in_guider, state_to_latent, tolerance_input)

CRITERIA = {"inter-path": "inter", "intra-path": "intra"}


def solver_inputs():
    return [
        io.Int.Input("max_iterations", default=10, min=1, max=100,
                     tooltip="Model calls per step at most. 1 = naive DDIM inversion. Cost: up to steps × this "
                             "many model calls (twice the batch with inter-path), e.g. 800 calls for 8 steps at "
                             "100, minutes on a full-size model when the tolerance is out of reach."),
        tolerance_input(io, 1e-5),
        io.Combo.Input("criterion", options=list(CRITERIA), default="inter-path",
                       tooltip="inter-path: ‖f(z) − f(ẑ)‖ between two paths from different starts (NeurIPS 2024; "
                               "does not stop early on a plateau). intra-path: ‖f(z) − z‖ (AIDI)."),
        io.Int.Input("anderson_window", default=3, min=0, max=10,
                     tooltip="Anderson acceleration window m (AIDI). 0 = plain Picard iteration, which may stall on "
                             "flow models. The window costs no model calls; above about 5 it rarely helps."),
        io.Float.Input("perturbation", default=0.5, min=0.0, max=10.0, step=0.05,
                       tooltip="Inter-path only: the second path starts at z + perturbation·σ·N(0, I)."),
        io.Int.Input("seed", default=0, min=0, max=2 ** 31 - 1, tooltip="Seed of the inter-path perturbation."),
    ]


def check_solver(node, max_iterations, tolerance, criterion, anderson_window, perturbation, seed):
    """The solver widgets, converted (INT widgets to int); returned in the order given."""
    return (check_range(node, "max_iterations", max_iterations, 1, 100, integer=True),
            check_range(node, "tolerance", tolerance, 1e-12, 1.0),
            check_choice(node, "criterion", criterion, CRITERIA),
            check_range(node, "anderson_window", anderson_window, 0, 10, integer=True),
            check_range(node, "perturbation", perturbation, 0.0, 10.0),
            check_range(node, "seed", seed, 0, 2 ** 31 - 1, integer=True))


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
        max_iterations, tolerance, criterion, anderson_window, perturbation, seed = check_solver(
            node, max_iterations, tolerance, criterion, anderson_window, perturbation, seed)
        diagnostics = []
        run = solver(max_iterations, tolerance, criterion, anderson_window, perturbation, seed, diagnostics)
        _, sampler = run_in_guider(guider, samples, descending.flip(0), run, node=node)
        sigma_top = float(descending[0])
        process_in = patcher.get_model_object("process_latent_in")
        process_out = patcher.get_model_object("process_latent_out")
        inverted = output_latent(latent, state_to_latent(ms, process_out, sampler.state, sigma_top))
        noise = InvertedNoise(node, sampler.state, sigma_top, ms, process_in, seed=seed)
        return io.NodeOutput(inverted, noise, report(node, diagnostics, sampler.counter["calls"]))


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
        options = check_solver(node, max_iterations, tolerance, criterion, anderson_window, perturbation, seed)

        def run(model, x, sigmas, extra_args, callback):
            # the same checks as Fixed-Point Invert, on what SamplerCustomAdvanced hands over, before any model call
            model_family(node, sampler.base_model.model_sampling)
            check_sigmas(node, sigmas, direction="ascending")
            check_samples(node, "latent_image (of SamplerCustomAdvanced)", x, sampler.base_model)
            return solver(*options, [])(model, x, sigmas, extra_args, callback)
        sampler = CoreSampler(run, node=node)
        return io.NodeOutput(sampler)
