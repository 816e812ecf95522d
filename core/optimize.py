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


def post_inversion_optimize(model, z, sigma, targets, weights=None, flow=True, steps=6, rounds=20, lr_eps=0.05,
                            lr_x=0.01, extra_args=None, callback=None, losses=None, loss="squared", split="velocity",
                            summary=None):
    """Optimise ``(x̂, v)`` so that the one-step prediction of ``z = x̂ + σ v`` matches the targets.

    Args:
        model: a denoiser ``D(x, sigma_batch)`` that autograd can differentiate with respect to ``x``.
        z: the inverted state at ``sigma``, [B, ...].
        targets: list of clean latents y_j, each shaped like ``z``; ``weights`` their weights (default equal).
        flow: rectified flow (α = 1 − σ) rather than VE (α = 1).
        steps, rounds: AdamW steps per round, rounds; ``lr_eps``/``lr_x``: learning rates for the noise part (v or ε) and x̂.
        loss: ``"squared"`` (mean squared error, the default) or ``"norm"`` (the official code's unsquared norm).
        split: ``"velocity"`` (z = x̂ + σ v, the official code's; the default) or ``"noise"`` (z = α x̂ + σ ε).
        callback: called with ``{"i", "loss", "denoised"}`` after every step; ``losses`` (a list) collects the loss
            of every state evaluated: ``steps·rounds + 1`` values, the input's first and the final state's last.
        summary: optional dict, filled with ``loss`` (of the returned states, averaged over the images), ``initial``
            (of the input) and ``evaluations_per_image``.
    Returns: ``(state, prediction)``: per image, the best state evaluated (lowest loss; images are independent)
        and ``D(state)``. The model is evaluated ``steps·rounds + 1`` times per image; ``losses`` holds the loss
        averaged over the images.
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
    losses_initial, evaluations = [], 0
    for i in range(steps * rounds):
        state = state.detach().requires_grad_(True)
        prediction = model(state, s_in, **extra_args)
        per_image = objective(prediction)
        value = per_image.mean()
        keep(per_image, state, prediction)
        evaluations += 1
        if i == 0:
            losses_initial.append(float(value.detach()))
        if losses is not None:
            losses.append(float(value.detach()))
        if not math.isfinite(float(value.detach())):
            break
        if i % steps == 0:  # round boundary: split the current state again, consistently, and restart AdamW
            x_hat = prediction.detach().clone()
            eps = ((state.detach() - alpha * x_hat) / sigma).requires_grad_(True)
            x_hat.requires_grad_(True)
            opt = torch.optim.AdamW([{"params": [eps], "lr": lr_eps}, {"params": [x_hat], "lr": lr_x}])
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
        if losses is not None:
            losses.append(float(per_image.mean()))
    if summary is not None:
        summary.update(loss=float(best["loss"].mean()), initial=losses_initial[0] if losses_initial else math.nan,
                       evaluations_per_image=evaluations)
    if not bool(torch.isfinite(best["loss"]).all()):  # the input itself was not finite under the model
        raise ValueError("post_inversion_optimize: the loss at the input state is not finite")
    return best["state"], best["prediction"]
