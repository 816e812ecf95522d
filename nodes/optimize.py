"""PostInversionOptimize and FineTuneInversion: optimisation through the frozen model inside ComfyUI."""
import copy

import torch

from .. import core
from .common import CATEGORY, check_finite_output, conditioning_inputs, fail, latent_weight, sigma_inputs, widgets
from .grad import checkpointed_blocks, differentiable, needs_checkpointing
from .host import io, open_model, seed_input, training
from .plot import loss_curve, report_ui

# attention query/key projections: to_q/to_k (SD1.x/SDXL, HiDream, Qwen-Image, LTX-Video), fused qkv (SD3, Flux,
# Chroma, Lumina 2, PixArt, HunyuanVideo; Wqkv HunyuanDiT; qkv_x/qkv_y Mochi), q_proj/k_proj (Cosmos, Qwen-Image's
# text stream), q/k (Wan), w1q/w1k/w2q/w2k (AuraFlow); ComfyUI 0.30's: to_query/to_key (Kandinsky 5), wq/wk (Krea 2),
# img_qkv/txt_qkv (Lens), img_attn_qkv/txt_attn_qkv (JoyImage)
ADAPTED = ("to_q", "to_k", ".qkv", ".Wqkv", ".qkv_x", ".qkv_y", "q_proj", "k_proj", ".q", ".k", ".w1q", ".w1k", ".w2q",
           ".w2k", ".to_query", ".to_key", ".wq", ".wk", "_qkv")


LR_MIN = 0.001  # the learning-rate widgets' lower end (0 would optimise nothing)


def gradient_inputs():
    return sigma_inputs(io, "The noise level of the latent (the one it was inverted or oscillated at).") + [
        io.Boolean.Input("gradient_checkpointing", default=True,
                         tooltip="Recompute each DiT block in backward (SD3, Flux): activation memory falls to the "
                                 "block inputs. Required on Flux; not available for SD1.x/SDXL UNets."),
    ]


def state_input():
    return io.Latent.Input("latent", tooltip="The inverted state at σ: Oscillation/Group Inversion's centre_states, "
                                             "or an inverted latent made at this σ.")


def differentiable_guider(opened, checkpointing):
    """A copy of the opened guider driving a differentiable clone of its model, and how checkpointing went."""
    patcher = opened.patcher
    if needs_checkpointing(patcher) and not checkpointing:
        fail(opened.node, "gradient_checkpointing", "must be on for this model (the blocks of Flux, Chroma, "
                                                    "HunyuanVideo, LTX-Video and PixelDiT and WanDancer's music "
                                                    "injector write in place into their inputs; only the "
                                                    "checkpointed path can differentiate them)")
    grad_patcher = differentiable(patcher, checkpointing, opened.node)
    guider = copy.copy(opened.guider)
    guider.model_patcher, guider.model_options = grad_patcher, grad_patcher.model_options
    covered = checkpointed_blocks(patcher)
    how = ("on" if covered else "not available (no block patch point)") if checkpointing else "off"
    return guider, how


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
            ] + gradient_inputs(),
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
        options = widgets(cls, locals())
        opened = open_model(node, model, positive, negative, options["cfg"], guider)
        samples = opened.latent("latent", latent)
        targets, weights = [], []
        for name, t in (("target_1", target_1), ("target_2", target_2)):
            weight = options[name.replace("target", "weight")]
            if t is not None:
                ts = opened.latent(name, t, samples)
                if weight > 0:
                    targets.append(ts)
                    weights.append(weight)
        if target_2 is None and weight_2 > 0:
            fail(node, "weight_2", "must be 0 when target_2 is not connected", weight_2)
        if not targets:
            fail(node, "weight_1", "and weight_2 must not both be 0")
        sigma = opened.fixed_sigma(options["sigma"], options["sigma_mode"])
        grad_guider, checkpointing = differentiable_guider(opened, options["gradient_checkpointing"])
        scale = latent_weight(opened.model_sampling, sigma, samples.shape)

        def run(model_fn, x, sigmas, extra_args, callback):
            with torch.inference_mode(False), torch.enable_grad(), training():
                ys = [opened.process_in(t.float()).to(x.device).clone() for t in targets]
                z = (x * scale).float().clone()
                state, prediction, info = core.post_inversion_optimize(
                    lambda v, s, **kw: model_fn(v, s, **kw).float(), z, sigma, ys, weights, opened.flow,
                    options["steps"], options["rounds"], options["lr_noise"], options["lr_image"], extra_args,
                    None if callback is None else (lambda d: callback({"i": d["i"], "x": z, "denoised": d["denoised"]})),
                    return_info=True)
            return prediction, {**info, "state": state}
        ran = opened.run(run, samples, torch.tensor([sigma, 0.0]), total=options["steps"] * options["rounds"],
                         guider=grad_guider)
        info = ran.info
        check_finite_output(node, "the optimised state", info["state"])
        text = (f"{node}: σ={sigma:.4g}, {options['steps']}×{options['rounds']} steps, loss {info['initial']:.4g} → "
                f"{info['loss']:.4g} ({info['loss'] / max(info['initial'], 1e-30):.1%}; the best state evaluated, never "
                f"worse than the input), {info['evaluations_per_image']} model evaluations per image "
                f"({ran.calls} calls), gradient checkpointing {checkpointing}")
        return io.NodeOutput(opened.clean(latent, ran.state), opened.noisy(latent, info["state"], sigma),
                             loss_curve(info["losses"]), text, ui=report_ui(text))


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
            ] + gradient_inputs(),
            outputs=[
                io.Model.Output(display_name="model", tooltip="The input model with the trained adapters."),
                io.Image.Output(display_name="loss_curve", tooltip="Loss per step (log scale)."),
                io.String.Output(display_name="report", tooltip="Adapted layers, initial and final loss."),
            ])

    @classmethod
    def execute(cls, model, latent, target, steps, learning_rate, rank, seed, sigma, sigma_mode,
                gradient_checkpointing, cfg=1.0, positive=None, negative=None, guider=None) -> io.NodeOutput:
        node = "FineTuneInversion"
        options = widgets(cls, locals())
        opened = open_model(node, model, positive, negative, options["cfg"], guider)
        samples = opened.latent("latent", latent)
        ts = opened.latent("target", target, samples)
        sigma = opened.fixed_sigma(options["sigma"], options["sigma_mode"])
        grad_guider, _ = differentiable_guider(opened, options["gradient_checkpointing"])
        grad_patcher, rank = grad_guider.model_patcher, options["rank"]
        generator = torch.Generator().manual_seed(options["seed"])
        adapters = {}
        with torch.inference_mode(False):
            for name, module in grad_patcher.model.diffusion_model.named_modules():  # the model differentiated
                weight = getattr(module, "weight", None)
                if name.endswith(ADAPTED) and hasattr(module, "weight_function") and weight is not None:
                    key = f"diffusion_model.{name}.weight"
                    adapters[key] = core.LowRank(weight, min(rank, min(weight.shape[0], weight[0].numel())),
                                                 generator).to(weight.device)
                    grad_patcher.add_weight_wrapper(key, adapters[key])
        if not adapters:
            fail(node, "model", "has no attention query/key projections to adapt")
        scale = latent_weight(opened.model_sampling, sigma, samples.shape)

        def run(model_fn, x, sigmas, extra_args, callback):
            with torch.inference_mode(False), torch.enable_grad(), training():
                y = opened.process_in(ts.float()).to(x.device).clone()
                return core.fine_tune_inversion(model_fn, (x * scale).float().clone(), sigma, y,
                                                list(adapters.values()), extra_args, callback, options["steps"],
                                                options["learning_rate"], return_info=True)
        losses = opened.run(run, samples, torch.tensor([sigma, 0.0]), total=options["steps"],
                            guider=grad_guider).info["losses"]
        for adapter in adapters.values():
            for p in adapter.parameters():
                check_finite_output(node, "the trained adapters", p.detach(), "'learning_rate', 'latent' and 'cfg'")
        tuned = opened.patcher.clone()
        for key, adapter in adapters.items():
            adapter.requires_grad_(False)
            tuned.add_weight_wrapper(key, adapter)
        text = (f"{node}: {len(adapters)} projections adapted (rank {rank}), {options['steps']} steps at lr "
                f"{options['learning_rate']:g}, loss {losses[0]:.4g} → {losses[-1]:.4g}")
        return io.NodeOutput(tuned, loss_curve(losses), text, ui=report_ui(text))
