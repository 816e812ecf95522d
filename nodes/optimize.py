"""PostInversionOptimize and FineTuneInversion: optimisation through the frozen model inside ComfyUI."""
import copy

import torch
from .host import io

from .. import core
from .common import (CATEGORY, check_bool, check_finite_output, check_latent, check_range, conditioning_inputs, fail,
                     latent_weight, make_guider, model_family,
                     output_latent, run_in_guider, seed_input, state_to_latent)
from .grad import LowRank, differentiable, dit_blocks, needs_checkpointing
from .host import training
from .oscillation import SIGMA_MAX, SIGMA_MIN, resolve_sigma
from .plot import loss_curve, report_ui

# attention query/key projections: to_q/to_k (SD1.x/SDXL, HiDream, Qwen-Image, LTX-Video), fused qkv (SD3, Flux,
# Chroma, Lumina 2, PixArt, HunyuanVideo; Wqkv HunyuanDiT; qkv_x/qkv_y Mochi), q_proj/k_proj (Cosmos, Qwen-Image's
# text stream), q/k (Wan), w1q/w1k/w2q/w2k (AuraFlow)
ADAPTED = ("to_q", "to_k", ".qkv", ".Wqkv", ".qkv_x", ".qkv_y", "q_proj", "k_proj", ".q", ".k", ".w1q", ".w1k", ".w2q",
           ".w2k")


LR_MIN = 0.001  # the learning-rate widgets' lower end (0 would optimise nothing)


def sigma_inputs():
    return [
        io.Float.Input("sigma", default=0.40, min=SIGMA_MIN, max=SIGMA_MAX, step=0.01,
                       tooltip="The noise level of the latent (the one it was inverted or oscillated at). At most the "
                               "model's σ_max: 1 for flow models (SD3, Flux), about 14.6 for SD1.x/SDXL. In "
                               "'fraction of schedule' mode at most 1."),
        io.Combo.Input("sigma_mode", options=["absolute", "fraction of schedule"], default="absolute",
                       tooltip="absolute, or that fraction of the way along the model's own schedule."),
        io.Boolean.Input("gradient_checkpointing", default=True,
                         tooltip="Recompute each DiT block in backward (SD3, Flux): activation memory falls to the "
                                 "block inputs. Required on Flux; not available for SD1.x/SDXL UNets."),
    ]


def state_input():
    return io.Latent.Input("latent", tooltip="The inverted state at σ: Oscillation/Group Inversion's centre_states, "
                                             "or an inverted latent made at this σ.")


def prepare(node, guider, sigma, sigma_mode, checkpointing):
    """Family, σ, and a copy of the guider driving a differentiable clone of its model."""
    patcher = guider.model_patcher
    ms = patcher.get_model_object("model_sampling")
    flow = model_family(node, ms) == "flow"
    sigma = resolve_sigma(node, ms, sigma, sigma_mode)
    checkpointing = check_bool(node, "gradient_checkpointing", checkpointing)
    if needs_checkpointing(patcher) and not checkpointing:
        fail(node, "gradient_checkpointing", "must be on for this model (Flux, Chroma, HunyuanVideo and LTX-Video "
                                             "blocks add in place into their inputs; only the checkpointed path can "
                                             "differentiate them)")
    grad_patcher = differentiable(patcher, checkpointing, node)
    checkpointing = ("on" if dit_blocks(patcher) else "not available (no block patch point)") if checkpointing \
        else "off"
    grad_guider = copy.copy(guider)
    grad_guider.model_patcher, grad_guider.model_options = grad_patcher, grad_patcher.model_options
    return grad_guider, grad_patcher, ms, flow, sigma, checkpointing


class PostInversionOptimize(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_PostInversionOptimize", display_name="Post-Inversion Optimize",
            category=CATEGORY,
            description="Refines an inverted latent by AdamW through the frozen model (Oscillation Inversion's "
                        "post-inversion optimisation): z = x̂ + σ·v, minimising Σ w_j‖D(z, σ) − y_j‖², each round "
                        "re-splitting the state (x̂ = D(z)); returns the best state evaluated and its prediction. "
                        "Works on SD1.x/SDXL, SD3 and Flux.",
            inputs=conditioning_inputs(io) + [
                state_input(),
                io.Latent.Input("target_1", tooltip="Target image latent (e.g. a pasted or stroke-edited image): "
                                                    "Load Image → VAE Encode → here."),
                io.Float.Input("weight_1", default=1.0, min=0.0, max=100.0, step=0.05, tooltip="Weight of target 1."),
                io.Latent.Input("target_2", optional=True, tooltip="Optional second target latent."),
                io.Float.Input("weight_2", default=0.0, min=0.0, max=100.0, step=0.05,
                               tooltip="Weight of target 2 (0 ignores it)."),
                io.Int.Input("steps", default=6, min=1, max=1000,
                             tooltip="AdamW steps per round (paper: 6). Cost: steps × rounds forward and backward "
                                     "passes (each about 3 model calls of time); the maxima are a million passes."),
                io.Int.Input("rounds", default=20, min=1, max=1000, tooltip="Rounds (paper: 20)."),
                io.Float.Input("lr_noise", default=0.05, min=LR_MIN, max=10.0, step=0.001,
                               tooltip="Learning rate of the noise part v (paper: 0.05)."),
                io.Float.Input("lr_image", default=0.01, min=LR_MIN, max=10.0, step=0.001,
                               tooltip="Learning rate of x̂ (paper: 0.01)."),
            ] + sigma_inputs(),
            outputs=[
                io.Latent.Output(display_name="optimized", tooltip="The one-step prediction D(state) of the returned state "
                                                                   "(a clean latent)."),
                io.Latent.Output(display_name="state", tooltip="The optimised state at σ (the best one evaluated), for "
                                                               "DisableNoise sampling on the sigmas from σ down."),
                io.Image.Output(display_name="loss_curve", tooltip="Loss per step (log scale)."),
                io.String.Output(display_name="report", tooltip="Initial and final loss, model calls."),
            ])

    @classmethod
    def execute(cls, model, latent, target_1, weight_1, weight_2, steps, rounds, lr_noise, lr_image, sigma,
                sigma_mode, gradient_checkpointing, target_2=None, cfg=1.0, positive=None, negative=None,
                guider=None) -> io.NodeOutput:
        node = "PostInversionOptimize"
        guider = make_guider(node, model, positive, negative, cfg, guider)
        samples = check_latent(node, "latent", latent, guider.model_patcher)
        targets, weights = [], []
        for name, t, w in (("target_1", target_1, weight_1), ("target_2", target_2, weight_2)):
            w = check_range(node, name.replace("target", "weight"), w, 0.0, 100.0)
            if t is None:
                continue
            ts = check_latent(node, name, t, guider.model_patcher)
            if tuple(ts.shape) != tuple(samples.shape):
                fail(node, name, f"must have the latent's shape {list(samples.shape)}", list(ts.shape))
            if w > 0:
                targets.append(ts)
                weights.append(w)
        if target_2 is None and weight_2 > 0:
            fail(node, "weight_2", "must be 0 when target_2 is not connected", weight_2)
        if not targets:
            fail(node, "weight_1", "and weight_2 must not both be 0")
        steps = check_range(node, "steps", steps, 1, 1000, integer=True)
        rounds = check_range(node, "rounds", rounds, 1, 1000, integer=True)
        lr_noise = check_range(node, "lr_noise", lr_noise, LR_MIN, 10.0)
        lr_image = check_range(node, "lr_image", lr_image, LR_MIN, 10.0)
        grad_guider, grad_patcher, ms, flow, sigma, checkpointing = prepare(node, guider, sigma, sigma_mode,
                                                                           gradient_checkpointing)
        process_in = grad_patcher.get_model_object("process_latent_in")
        scale = latent_weight(ms, sigma, samples.shape)
        found = {"losses": [], "summary": {}}

        def run(model_fn, x, sigmas, extra_args, callback):
            with torch.inference_mode(False), torch.enable_grad(), training():
                ys = [process_in(t.float()).to(x.device).clone() for t in targets]
                z = (x * scale).float().clone()
                state, prediction = core.post_inversion_optimize(
                    lambda v, s, **kw: model_fn(v, s, **kw).float(), z, sigma, ys, weights, flow, steps, rounds,
                    lr_noise, lr_image, extra_args, None if callback is None else (
                        lambda d: callback({"i": d["i"], "x": z, "denoised": d["denoised"]})), found["losses"],
                    summary=found["summary"])
            found["state"] = state
            return prediction
        _, sampler = run_in_guider(grad_guider, samples, torch.tensor([sigma, 0.0]), run, total=steps * rounds,
                                   node=node)
        check_finite_output(node, "the optimised state", found["state"])
        process_out = grad_patcher.get_model_object("process_latent_out")
        losses, summary = found["losses"], found["summary"]
        text = (f"{node}: σ={sigma:.4g}, {steps}×{rounds} steps, loss {summary['initial']:.4g} → {summary['loss']:.4g} "
                f"({summary['loss'] / max(summary['initial'], 1e-30):.1%}; the best state evaluated, never worse than "
                f"the input), {summary['evaluations_per_image']} model evaluations per image "
                f"({sampler.counter['calls']} calls), gradient checkpointing {checkpointing}")
        return io.NodeOutput(output_latent(latent, process_out(sampler.state.float().cpu())),
                             output_latent(latent, state_to_latent(ms, process_out, found["state"], sigma)),
                             loss_curve(losses), text, ui=report_ui(text))


class FineTuneInversion(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(
            node_id="InversionSuite_FineTuneInversion", display_name="Fine-Tune Inversion", category=CATEGORY,
            description="Fine-tuned inversion (our definition; the paper names it without an algorithm): trains "
                        "small low-rank adapters on the attention query/key projections so that the one-step "
                        "prediction from the inverted latent matches the target, and returns a MODEL patched "
                        "through ComfyUI's weight wrappers. The loaded weights and the input MODEL are untouched.",
            inputs=conditioning_inputs(io) + [
                state_input(),
                io.Latent.Input("target", tooltip="The image latent the one-step prediction should match "
                                                  "(Load Image → VAE Encode → here)."),
                io.Int.Input("steps", default=100, min=1, max=10000,
                             tooltip="Training steps (about 100). Cost: one forward and backward pass each (about "
                                     "3 model calls of time); 10000 takes hours on a full-size model."),
                io.Float.Input("learning_rate", default=1e-4, min=1e-6, max=1.0, step=1e-5, round=False,
                               tooltip="AdamW learning rate of the adapters (about 1e-4)."),
                io.Int.Input("rank", default=4, min=1, max=128, tooltip="Adapter rank."),
                seed_input(io, "Seed of the adapters' init."),
            ] + sigma_inputs(),
            outputs=[
                io.Model.Output(display_name="model", tooltip="The input model with the trained adapters."),
                io.Image.Output(display_name="loss_curve", tooltip="Loss per step (log scale)."),
                io.String.Output(display_name="report", tooltip="Adapted layers, initial and final loss."),
            ])

    @classmethod
    def execute(cls, model, latent, target, steps, learning_rate, rank, seed, sigma, sigma_mode,
                gradient_checkpointing, cfg=1.0, positive=None, negative=None, guider=None) -> io.NodeOutput:
        node = "FineTuneInversion"
        guider = make_guider(node, model, positive, negative, cfg, guider)
        base = guider.model_patcher
        samples = check_latent(node, "latent", latent, base)
        ts = check_latent(node, "target", target, base)
        if tuple(ts.shape) != tuple(samples.shape):
            fail(node, "target", f"must have the latent's shape {list(samples.shape)}", list(ts.shape))
        steps = check_range(node, "steps", steps, 1, 10000, integer=True)
        learning_rate = check_range(node, "learning_rate", learning_rate, 1e-6, 1.0)
        rank = check_range(node, "rank", rank, 1, 128, integer=True)
        seed = check_range(node, "seed", seed, 0, 2 ** 31 - 1, integer=True)
        grad_guider, grad_patcher, ms, flow, sigma, _ = prepare(node, guider, sigma, sigma_mode, gradient_checkpointing)
        generator = torch.Generator().manual_seed(seed)
        adapters = {}
        with torch.inference_mode(False):
            for name, module in grad_patcher.model.diffusion_model.named_modules():  # the model differentiated
                weight = getattr(module, "weight", None)
                if name.endswith(ADAPTED) and hasattr(module, "weight_function") and weight is not None:
                    key = f"diffusion_model.{name}.weight"
                    adapters[key] = LowRank(weight, min(rank, min(weight.shape[0], weight[0].numel())),
                                            generator).to(weight.device)
                    grad_patcher.add_weight_wrapper(key, adapters[key])
        if not adapters:
            fail(node, "model", "has no attention query/key projections to adapt")
        process_in = grad_patcher.get_model_object("process_latent_in")
        scale = latent_weight(ms, sigma, samples.shape)
        losses = []

        def run(model_fn, x, sigmas, extra_args, callback):
            with torch.inference_mode(False), torch.enable_grad(), training():
                y = process_in(ts.float()).to(x.device).clone()
                z = (x * scale).float().clone()
                s_in = z.new_ones([z.shape[0]]) * sigma
                params = [p for a in adapters.values() for p in a.parameters()]
                opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
                for i in range(steps):
                    opt.zero_grad()
                    prediction = model_fn(z, s_in, **extra_args).float()
                    loss = (prediction - y).square().mean()
                    loss.backward()
                    opt.step()
                    losses.append(float(loss.detach()))
                    if callback is not None:
                        callback({"i": i, "x": z, "denoised": prediction.detach()})
            return prediction.detach()
        run_in_guider(grad_guider, samples, torch.tensor([sigma, 0.0]), run, total=steps, node=node)
        for adapter in adapters.values():
            for p in adapter.parameters():
                check_finite_output(node, "the trained adapters", p.detach(), "'learning_rate', 'latent' and 'cfg'")
        tuned = base.clone()
        for key, adapter in adapters.items():
            adapter.requires_grad_(False)
            tuned.add_weight_wrapper(key, adapter)
        text = (f"{node}: {len(adapters)} projections adapted (rank {rank}), {steps} steps at lr {learning_rate:g}, "
                f"loss {losses[0]:.4g} → {losses[-1]:.4g}")
        return io.NodeOutput(tuned, loss_curve(losses), text, ui=report_ui(text))
