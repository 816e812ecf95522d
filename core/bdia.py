"""Exactly invertible two-step samplers: BDIA and O-BELM.

Both update a *pair* of consecutive latents with one model call per step,

    x_{i−1} = a_i x_{i+1} + b_i x_i + c_i D(x_i, σ_i),

so the step is undone exactly by ``x_{i+1} = (x_{i−1} − b_i x_i − c_i D_i) / a_i`` with the *same* model
call. The recurrence runs in float64 whatever the model's dtype: the inverse amplifies rounding in an
alternating mode by 1/a_i per step.

* BDIA: Zhang, Lewis, Kleijn, "Exact Diffusion Inversion via Bi-directional Integration
  Approximation" (ECCV 2024). In our frame (DESIGN.md §3.2)
  ``x_{i−1} = E_{i→i−1}(x_i) + γ_i (x_{i+1} − E_{i→i+1}(x_i))`` with ``γ_i = γ`` for rectified flow and
  ``γ_i = γ √((1 + σ_{i−1}²)/(1 + σ_{i+1}²))`` for ε/v models, which reproduces the paper's DDIM-space rule.
* O-BELM: Wang et al., "BELM: Bidirectional Explicit Linear Multi-step Sampler for Exact Inversion in
  Diffusion Models" (NeurIPS 2024), the second-order member of the family, with no free parameter.
  With ``d = (x − D)/σ``, ``h_i = σ_i − σ_{i−1}``:
  ``x_{i−1} = (h_i²/h_{i+1}²) x_{i+1} + (1 − h_i²/h_{i+1}²) x_i − h_i (h_i + h_{i+1})/h_{i+1} · d_i``.
  For ε/v models this is the paper's rule (ComfyUI's VE state is its x̄ = x/α); for flow models the same
  rule is applied to the flow ODE in σ.

Sampling from noise starts with one plain step (there is no upper latent yet). An inversion hands
back the pair ``(x_N, x_{N−1})`` and sampling from that pair skips the first step, so the round trip
is exact. The inversion's own first step, from the clean latent, is one fixed-point inversion step;
any choice there keeps the round trip exact.
"""
import math

import torch
from tqdm.auto import trange

from .fixed_point import invert_fixed_point
from .frame import batch_sigma, euler_step, require_schedule


def bdia_coefficients(gamma, flow):
    """(a, b, c) of BDIA's step x_lo = a·x_hi + b·x + c·D taken at σ (σ_lo < σ < σ_hi)."""
    def coefficients(s_lo, s, s_hi):
        g = gamma if flow else gamma * math.sqrt((1 + s_lo ** 2) / (1 + s_hi ** 2))
        return g, s_lo / s - g * s_hi / s, (1 - s_lo / s) - g * (1 - s_hi / s)
    return coefficients


def obelm_coefficients(s_lo, s, s_hi):
    """(a, b, c) of O-BELM's step x_lo = a·x_hi + b·x + c·D taken at σ."""
    h, h_next = s - s_lo, s_hi - s
    a = h ** 2 / h_next ** 2
    w = h * (h + h_next) / h_next / s  # d = (x − D)/σ folded into the x and D coefficients
    return a, 1 - a - w, w


def _two_step_sample(model, x, sigmas, coefficients, extra_args, callback, disable, x_below):
    extra_args = {} if extra_args is None else extra_args
    s = require_schedule(sigmas, descending=True)
    dtype = x.dtype
    x_hi, x = (None, x.double()) if x_below is None else (x.double(), x_below.double())
    start = 0 if x_below is None else 1
    for i in trange(start, len(s) - 1, disable=disable):
        denoised = model(x, batch_sigma(x, s[i]), **extra_args).double()
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s[i], "sigma_hat": s[i], "denoised": denoised})
        if x_hi is None:
            x_next = euler_step(x, denoised, s[i], s[i + 1])
        else:
            a, b, c = coefficients(s[i + 1], s[i], s[i - 1])
            x_next = a * x_hi + b * x + c * denoised
        x_hi, x = x, x_next
    return x.to(dtype)


def _two_step_invert(model, x, sigmas, coefficients, extra_args, callback, disable, first_step_iters):
    extra_args = {} if extra_args is None else extra_args
    s = require_schedule(sigmas, descending=False)
    dtype = x.dtype
    x_lo = x.double()
    x = invert_fixed_point(model, x_lo, s[:2], extra_args, max_iter=first_step_iters, criterion="intra",
                           disable=True).double()
    for i in trange(1, len(s) - 1, disable=disable):
        denoised = model(x, batch_sigma(x, s[i]), **extra_args).double()
        if callback is not None:
            callback({"x": x, "i": i, "sigma": s[i], "sigma_hat": s[i], "denoised": denoised})
        a, b, c = coefficients(s[i - 1], s[i], s[i + 1])
        x_lo, x = x, (x_lo - b * x - c * denoised) / a
    return x.to(dtype), x_lo.to(dtype)


@torch.no_grad()
def sample_bdia(model, x, sigmas, extra_args=None, callback=None, disable=None, gamma=1.0, flow=True, x_below=None):
    """BDIA sampling along descending ``sigmas``.

    Args:
        x: the state at ``sigmas[0]``.
        gamma: γ in [0, 1]; 0 is plain DDIM/Euler, 1 the leapfrog rule. Use 0.9–1 when the result will be inverted.
        flow: True for rectified-flow models (γ_i = γ), False for ε/v models in VE space.
        x_below: the state at ``sigmas[1]`` handed over by :func:`invert_bdia`; then the first step is skipped
            and the round trip is exact. Without it the first step is a plain step.
    Returns: the state at ``sigmas[-1]`` (in ``x``'s dtype; the recurrence runs in float64).
    """
    return _two_step_sample(model, x, sigmas, bdia_coefficients(gamma, flow), extra_args, callback, disable, x_below)


@torch.no_grad()
def invert_bdia(model, x, sigmas, extra_args=None, callback=None, disable=None, gamma=1.0, flow=True,
                first_step_iters=1):
    """Exact inverse of :func:`sample_bdia` along ascending ``sigmas`` (σ_0 may be 0).

    The first step solves the implicit step by ``first_step_iters`` fixed-point iterations; then
    ``x_{i+1} = E_{i→i+1}(x_i) + (x_{i−1} − E_{i→i−1}(x_i)) / γ_i`` with one model call per step.
    Returns the pair ``(x_N, x_{N−1})``: the state at ``sigmas[-1]`` and the one below it.
    """
    if not 0 < gamma <= 1:
        raise ValueError(f"gamma must be in (0, 1] to invert, got {gamma}")
    return _two_step_invert(model, x, sigmas, bdia_coefficients(gamma, flow), extra_args, callback, disable,
                            first_step_iters)


@torch.no_grad()
def sample_obelm(model, x, sigmas, extra_args=None, callback=None, disable=None, x_below=None):
    """O-BELM sampling along descending ``sigmas``; ``x_below`` as in :func:`sample_bdia`."""
    return _two_step_sample(model, x, sigmas, obelm_coefficients, extra_args, callback, disable, x_below)


@torch.no_grad()
def invert_obelm(model, x, sigmas, extra_args=None, callback=None, disable=None, first_step_iters=1):
    """Exact inverse of :func:`sample_obelm` along ascending ``sigmas``; returns ``(x_N, x_{N−1})``."""
    return _two_step_invert(model, x, sigmas, obelm_coefficients, extra_args, callback, disable, first_step_iters)
