"""Post-inversion optimisation through the frozen model.

Zheng et al., Oscillation Inversion (arXiv 2411.11135, v1 "post-inversion optimization"): starting from an
inverted latent (or a cluster centre) ``z`` at a fixed σ, split it into a clean part and a noise part,
``z = α x̂ + σ ε`` (α = 1 for ε/v models in VE space, α = 1 − σ for rectified flow), and minimise

    L(x̂, ε) = Σ_j w_j ‖D(α x̂ + σ ε, σ) − y_j‖²  (mean over elements)

with AdamW through the frozen denoiser; after every round the last one-step prediction becomes the next
round's clean part (paper defaults: lr 0.05 for ε, 0.01 for x̂, 6 steps per round, 20 rounds).
"""
import torch


def post_inversion_optimize(model, z, sigma, targets, weights=None, flow=True, steps=6, rounds=20, lr_eps=0.05,
                            lr_x=0.01, extra_args=None, callback=None, losses=None):
    """Optimise ``(x̂, ε)`` so that the one-step prediction of ``z = α x̂ + σ ε`` matches the targets.

    Args:
        model: a denoiser ``D(x, sigma_batch)`` that autograd can differentiate with respect to ``x``.
        z: the inverted state at ``sigma``, [B, ...].
        targets: list of clean latents y_j, each shaped like ``z``; ``weights`` their weights (default equal).
        steps, rounds: AdamW steps per round, rounds; ``lr_eps``/``lr_x``: learning rates for ε and x̂.
        callback: called with ``{"i", "loss", "denoised"}`` after every step; ``losses`` (a list) collects
            the loss of every step.
    Returns: ``(z, prediction)``: the optimised state at σ and its last one-step prediction.
    """
    extra_args = {} if extra_args is None else extra_args
    weights = [1.0 / len(targets)] * len(targets) if weights is None else weights
    alpha = 1 - sigma if flow else 1.0
    s_in = z.new_ones([z.shape[0]]) * sigma
    with torch.no_grad():
        x_hat = model(z, s_in, **extra_args)
    eps = (z - alpha * x_hat) / sigma
    prediction = x_hat
    for r in range(rounds):
        x_hat = prediction.detach().clone().requires_grad_(True)
        eps = eps.detach().clone().requires_grad_(True)
        opt = torch.optim.AdamW([{"params": [eps], "lr": lr_eps}, {"params": [x_hat], "lr": lr_x}])
        for k in range(steps):
            opt.zero_grad()
            prediction = model(alpha * x_hat + sigma * eps, s_in, **extra_args)
            loss = sum(w * (prediction - y).square().mean() for w, y in zip(weights, targets))
            loss.backward()
            opt.step()
            if losses is not None:
                losses.append(float(loss.detach()))
            if callback is not None:
                callback({"i": r * steps + k, "loss": float(loss.detach()), "denoised": prediction.detach()})
    with torch.no_grad():
        z = alpha * x_hat + sigma * eps
    return z.detach(), prediction.detach()
