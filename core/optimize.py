"""Post-inversion optimisation through the frozen model.

Zheng et al., Oscillation Inversion (arXiv 2411.11135, v1 "post-inversion optimization"; official code
``flux_optim``): starting from an inverted latent (or a cluster centre) ``z`` at a fixed σ, split it into a clean
part and a velocity part, ``z = x̂ + σ v`` with ``x̂ = D(z)`` and ``v = (z − x̂)/σ`` (k-diffusion's derivative
d; for ε/v models in VE space v = ε, for rectified flow v = ε − x0, Flux's velocity), and minimise

    L(x̂, v) = Σ_j w_j ‖D(x̂ + σ v, σ) − y_j‖²  (mean over elements)

with AdamW through the frozen denoiser, in rounds (paper defaults: lr 0.05 for v, 0.01 for x̂, 6 steps per
round, 20 rounds). At every round boundary the current state is split again, consistently: ``x̂ ← D(z)``,
``v ← (z − x̂)/σ`` (so ``z`` itself does not move), and AdamW starts afresh. What is returned is, image by image,
the best state evaluated (the input included) with its own one-step prediction ``D(z)``: the result is never
worse than the input, and ``prediction`` is always the prediction of ``state``.

Choices against the official code: the split is the official velocity split (``split="velocity"``); the ε split
``z = α x̂ + σ ε`` (α = 1 − σ for flow) is ``split="noise"`` and differs only for flow models. The loss is the
squared error (mean over elements), whose minimiser for several targets is their weighted mean; the official
code's unsquared norm Σ_j w_j ‖D(z) − y_j‖ is ``loss="norm"``.
"""
import math

import torch


def post_inversion_optimize(model, z, sigma, targets, weights=None, flow=True, steps=6, rounds=20, lr_noise=0.05,
                            lr_image=0.01, extra_args=None, callback=None, loss="squared", split="velocity",
                            return_info=False):
    """Optimise ``(x̂, v)`` so that the one-step prediction of ``z = x̂ + σ v`` matches the targets.

    Args:
        model: a denoiser ``D(x, sigma_batch)`` that autograd can differentiate with respect to ``x``.
        z: the inverted state at ``sigma``, [B, ...].
        targets: list of clean latents y_j, each shaped like ``z``; ``weights`` their weights (default equal).
        flow: rectified flow (α = 1 − σ) rather than VE (α = 1).
        steps, rounds: AdamW steps per round, rounds; ``lr_noise``/``lr_image``: learning rates for the noise part
            (v or ε) and x̂.
        loss: ``"squared"`` (mean squared error, the default) or ``"norm"`` (the official code's unsquared norm).
        split: ``"velocity"`` (z = x̂ + σ v, the official code's; the default) or ``"noise"`` (z = α x̂ + σ ε).
        callback: called with ``{"i", "loss", "denoised"}`` after every step.
    Returns: ``(state, prediction)``: per image, the best state evaluated (lowest loss; images are independent)
        and ``D(state)``; with ``return_info`` also a dict: ``losses`` (the loss, averaged over the images, of every
        state evaluated: ``steps·rounds + 1`` values, the input's first and the final state's last), ``loss`` (of
        the returned states), ``initial`` (of the input) and ``evaluations_per_image`` (``steps·rounds + 1``).
    """
    if loss not in ("squared", "norm"):
        raise ValueError(f"loss must be 'squared' or 'norm', got {loss!r}")
    if split not in ("noise", "velocity"):
        raise ValueError(f"split must be 'noise' or 'velocity', got {split!r}")
    extra_args = {} if extra_args is None else extra_args
    weights = [1.0 / len(targets)] * len(targets) if weights is None else weights
    alpha = 1 - sigma if flow and split == "noise" else 1.0
    s_in = z.new_ones([z.shape[0]]) * sigma

    def objective(prediction):  # per image
        if loss == "squared":
            return sum(w * (prediction - y).flatten(1).square().mean(1) for w, y in zip(weights, targets))
        return sum(w * (prediction - y).flatten(1).norm(dim=1) for w, y in zip(weights, targets))

    best = {"loss": torch.full((z.shape[0],), math.inf, dtype=torch.float64), "state": z.detach().clone(),
            "prediction": torch.full_like(z, math.nan)}

    def keep(per_image, state, prediction):  # the best state so far, image by image
        better = (per_image.detach().cpu().double() < best["loss"]) & torch.isfinite(per_image.detach().cpu())
        best["loss"] = torch.where(better, per_image.detach().cpu().double(), best["loss"])
        rows = better.to(state.device).reshape(-1, *[1] * (state.dim() - 1))
        best["state"] = torch.where(rows, state.detach(), best["state"])
        best["prediction"] = torch.where(rows, prediction.detach(), best["prediction"])

    state = z.detach()
    x_hat = eps = opt = None
    losses, evaluations = [], 0
    for i in range(steps * rounds):
        state = state.detach().requires_grad_(True)
        prediction = model(state, s_in, **extra_args)
        per_image = objective(prediction)
        value = per_image.mean()
        keep(per_image, state, prediction)
        evaluations += 1
        losses.append(float(value.detach()))
        if not math.isfinite(float(value.detach())):
            break
        if i % steps == 0:  # round boundary: split the current state again, consistently, and restart AdamW
            x_hat = prediction.detach().clone()
            eps = ((state.detach() - alpha * x_hat) / sigma).requires_grad_(True)
            x_hat.requires_grad_(True)
            opt = torch.optim.AdamW([{"params": [eps], "lr": lr_noise}, {"params": [x_hat], "lr": lr_image}])
        opt.zero_grad()
        value.backward()  # z = α x̂ + σ ε is linear: ∂L/∂x̂ = α ∂L/∂z, ∂L/∂ε = σ ∂L/∂z
        x_hat.grad, eps.grad = alpha * state.grad, sigma * state.grad
        opt.step()
        if callback is not None:
            callback({"i": i, "loss": float(value.detach()), "denoised": prediction.detach()})
        state = alpha * x_hat.detach() + sigma * eps.detach()
    else:
        with torch.no_grad():
            prediction = model(state, s_in, **extra_args)
            per_image = objective(prediction)
        keep(per_image, state, prediction)
        evaluations += 1
        losses.append(float(per_image.mean()))
    if not bool(torch.isfinite(best["loss"]).all()):  # the input itself was not finite under the model
        raise ValueError("post_inversion_optimize: the loss at the input state is not finite")
    info = {"losses": losses, "loss": float(best["loss"].mean()), "initial": losses[0] if losses else math.nan,
            "evaluations_per_image": evaluations}
    return (best["state"], best["prediction"], info) if return_info else (best["state"], best["prediction"])


class LowRank(torch.nn.Module):
    """A weight wrapper ``W ↦ W + (α/r)·B·A`` (LoRA, Hu et al. 2021); B starts at 0, so the model starts unchanged."""

    def __init__(self, weight, rank, generator=None):
        super().__init__()
        out_features, in_features = weight.shape[0], weight[0].numel()
        self.shape, self.scale = weight.shape, 1.0 / rank
        self.down = torch.nn.Parameter(torch.randn(rank, in_features, generator=generator) / in_features ** 0.5)
        self.up = torch.nn.Parameter(torch.zeros(out_features, rank))

    def forward(self, weight):
        delta = (self.up @ self.down).reshape(self.shape) * self.scale
        return weight + delta.to(device=weight.device, dtype=weight.dtype)


def fine_tune_inversion(model, z, sigma, target, adapters, extra_args=None, callback=None, steps=100,
                        learning_rate=1e-4, return_info=False):
    """Fine-tuned inversion (Oscillation Inversion names it without an algorithm; this is the pack's definition):
    train the parameters of ``adapters`` (modules, e.g. :class:`LowRank` weight wrappers the model applies) with AdamW
    so that the one-step prediction from the inverted state matches the target,

        min_θ ‖D_θ(z, σ) − y‖²  (mean over elements).

    Returns the last prediction ``D_θ(z, σ)``; with ``return_info`` also ``{"losses": [...]}``, one per step.
    """
    extra_args = {} if extra_args is None else extra_args
    s_in = z.new_ones([z.shape[0]]) * sigma
    params = [p for adapter in adapters for p in adapter.parameters()]
    opt = torch.optim.AdamW(params, lr=learning_rate, weight_decay=0.0)
    losses = []
    for i in range(steps):
        opt.zero_grad()
        prediction = model(z, s_in, **extra_args).float()
        value = (prediction - target).square().mean()
        value.backward()
        opt.step()
        losses.append(float(value.detach()))
        if callback is not None:
            callback({"i": i, "x": z, "denoised": prediction.detach()})
    prediction = prediction.detach()
    return (prediction, {"losses": losses}) if return_info else prediction
