"""Exactly invertible two-step samplers: BDIA and O-BELM.

Both update a *pair* of consecutive latents with one model call per step,

    x_{i−1} = a_i x_{i+1} + b_i x_i + c_i D(x_i, σ_i),

so the step is undone exactly by ``x_{i+1} = (x_{i−1} − b_i x_i − c_i D_i) / a_i`` with the *same* model
call. The recurrence runs in float64 whatever the model's dtype: the inverse amplifies rounding in an
alternating mode by 1/a_i per step. On a device without float64 (``frame.has_float64``: Apple MPS, DirectML)
it runs there in double-float instead: each latent is a pair ``(hi, lo)`` of float32 tensors whose sum carries
about 48 bits, and the model sees ``hi``. A state may be handed in and out as such a pair (see
:func:`sample_bdia`); a plain tensor comes back in its dtype, so on such a device an inversion handed over as
tensors is rounded to float32, which costs the round trip its exactness (measured in tests/core/test_core_devices.py).
The nodes hand the pair over in full: ``precise_state`` in, ``state_value`` to keep it on the CPU, ``state_on`` back.

* BDIA: Zhang, Lewis, Kleijn, "Exact Diffusion Inversion via Bi-directional Integration
  Approximation" (ECCV 2024). In our frame (core/frame.py)
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
import struct

import torch
from tqdm.auto import trange

from .fixed_point import invert_fixed_point
from .frame import batch_sigma, euler_step, has_float64, require_schedule


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


# ---------------------------------------------------------------- double-float arithmetic (float64-less devices)
# Error-free transformations on float32 tensors, one torch op each (nothing fused or reassociated): Knuth's TwoSum,
# Dekker's FastTwoSum and his product with Veltkamp's split (24-bit significands halve into 12 bits, whose products
# are exact). Coefficients are Python floats, split on the host.
def _f32(v):
    """The Python float ``v`` rounded to the nearest float32."""
    return struct.unpack("f", struct.pack("f", v))[0]


def _halves(c):
    """A float32-exact Python float as ``hi + lo`` exactly, each of at most 12 significant bits."""
    hi = struct.unpack("f", struct.pack("I", struct.unpack("I", struct.pack("f", c))[0] & 0xFFFFF000))[0]
    return hi, c - hi


def _split(a):
    """Veltkamp's split of a float32 tensor: ``hi + lo = a`` exactly, each of at most 12 significant bits."""
    t = a * 4097.0
    hi = t - (t - a)
    return hi, a - hi


def _two_sum(a, b):
    """``s + e = a + b`` exactly with ``s = fl(a + b)``."""
    s = a + b
    v = s - a
    return s, (a - (s - v)) + (b - v)


def _fast_two_sum(a, b):
    """``s + e = a + b`` exactly with ``s = fl(a + b)``, for |a| ≥ |b| (or a = 0)."""
    s = a + b
    return s, b - (s - a)


def _scaled(x, c):
    """``c·x`` as a double-float, for a double-float ``x = (hi, lo)`` (``lo`` None for a plain float32 tensor) and a
    Python float ``c`` (carried as two float32 parts)."""
    hi, lo = x
    c_hi = _f32(c)
    c_lo = _f32(c - c_hi)
    p = hi * c_hi
    (a1, a2), (b1, b2) = _split(hi), _halves(c_hi)
    e = ((a1 * b1 - p) + a1 * b2 + a2 * b1) + a2 * b2  # p + e = hi·c_hi exactly
    e = e + hi * c_lo if lo is None else e + (hi * c_lo + lo * c_hi)
    return _fast_two_sum(p, e)


def _sum(x, y):
    """The double-float ``x + y`` (the accurate addition of double-double arithmetic)."""
    s, e = _two_sum(x[0], y[0])
    t, f = _two_sum(x[1], y[1])
    s, e = _fast_two_sum(s, e + t)
    return _fast_two_sum(s, e + f)


def _combine(*terms):
    """``Σ c_k x_k`` as a double-float, for pairs of a Python float ``c_k`` and a double-float ``x_k``."""
    out = None
    for c, x in terms:
        term = _scaled(x, c)
        out = term if out is None else _sum(out, term)
    return out


def _to_state(x, compensated):
    """A tensor or a ``(hi, lo)`` pair as the precise state: float64, or (``compensated``) a float32 double-float."""
    hi, lo = x if isinstance(x, (tuple, list)) else (x, None)
    if not compensated:
        return hi.double() if lo is None else hi.double() + lo.double()
    hi = hi.float()
    return hi, torch.zeros_like(hi) if lo is None else lo.float()


def _from_state(x, like):
    """The precise state in the form of ``like``: a ``(hi, lo)`` pair of its parts' dtype if it is a pair, else a
    tensor of its dtype (a double-float rounded to ``hi``)."""
    if isinstance(like, (tuple, list)):
        dtype = like[0].dtype
        if isinstance(x, tuple):
            return x[0].to(dtype), x[1].to(dtype)
        hi = x.to(dtype)
        return hi, (x - hi.double()).to(dtype)
    return (x[0] if isinstance(x, tuple) else x).to(like.dtype)


def precise_state(x):
    """A tensor as the state the recurrence keeps on its device: float64, or a double-float pair ``(x, 0)`` where
    the device lacks float64. Handed to an inversion, it makes the inversion hand its pair back in that form."""
    return _to_state(x, _compensated(x))


def state_value(x):
    """A state (a tensor, or a double-float pair) as one float64 tensor on the CPU, which has float64: a pair's
    value hi + lo exactly."""
    hi, lo = x if isinstance(x, (tuple, list)) else (x, None)
    return hi.cpu().double() if lo is None else hi.cpu().double() + lo.cpu().double()


def state_on(x, device):
    """A float64 CPU tensor as the state on ``device``: float64 there, or the nearest double-float pair (hi the
    float32 rounding of x, lo the float32 rounding of the rest) where the device lacks float64."""
    if has_float64(device):
        return x.to(device, torch.float64)
    hi = x.float()
    return hi.to(device), (x - hi.double()).float().to(device)


def rounded(x, dtype=torch.float32):
    """A state as one tensor of ``dtype`` on its device (a pair's hi + lo, rounded)."""
    return (x[0] + x[1]).to(dtype) if isinstance(x, (tuple, list)) else x.to(dtype)


def _compensated(x):
    """Whether the state of ``x`` (a tensor or a pair) is kept in double-float: its device lacks float64."""
    return not has_float64((x[0] if isinstance(x, (tuple, list)) else x).device)


def _two_step_sample(model, x, sigmas, coefficients, extra_args, callback, disable, x_below):
    extra_args = {} if extra_args is None else extra_args
    s = require_schedule(sigmas, descending=True)
    like, dd = x, _compensated(x)
    x_hi, x = (None, _to_state(x, dd)) if x_below is None else (_to_state(x, dd), _to_state(x_below, dd))
    start = 0 if x_below is None else 1
    for i in trange(start, len(s) - 1, disable=disable):
        x_in = x[0] if dd else x
        denoised = model(x_in, batch_sigma(x_in, s[i]), **extra_args)
        denoised = denoised.float() if dd else denoised.double()
        if callback is not None:
            callback({"x": x_in, "i": i, "sigma": s[i], "sigma_hat": s[i], "denoised": denoised})
        if x_hi is None:
            r = s[i + 1] / s[i]
            x_next = _combine((r, x), (1 - r, (denoised, None))) if dd else euler_step(x, denoised, s[i], s[i + 1])
        else:
            a, b, c = coefficients(s[i + 1], s[i], s[i - 1])
            x_next = _combine((a, x_hi), (b, x), (c, (denoised, None))) if dd else a * x_hi + b * x + c * denoised
        x_hi, x = x, x_next
    return _from_state(x, like)


def _two_step_invert(model, x, sigmas, coefficients, extra_args, callback, disable, first_step_iters):
    extra_args = {} if extra_args is None else extra_args
    s = require_schedule(sigmas, descending=False)
    like, dd = x, _compensated(x)
    x_lo = _to_state(x, dd)
    x = _to_state(invert_fixed_point(model, x_lo[0] if dd else x_lo, s[:2], extra_args, max_iterations=first_step_iters,
                                     criterion="intra-path", disable=True), dd)
    for i in trange(1, len(s) - 1, disable=disable):
        x_in = x[0] if dd else x
        denoised = model(x_in, batch_sigma(x_in, s[i]), **extra_args)
        denoised = denoised.float() if dd else denoised.double()
        if callback is not None:
            callback({"x": x_in, "i": i, "sigma": s[i], "sigma_hat": s[i], "denoised": denoised})
        a, b, c = coefficients(s[i - 1], s[i], s[i + 1])
        x_lo, x = x, (_combine((1 / a, x_lo), (-b / a, x), (-c / a, (denoised, None))) if dd
                      else (x_lo - b * x - c * denoised) / a)
    return _from_state(x, like), _from_state(x_lo, like)


@torch.no_grad()
def sample_bdia(model, x, sigmas, extra_args=None, callback=None, disable=None, gamma=1.0, flow=True, x_below=None):
    """BDIA sampling along descending ``sigmas``.

    Args:
        x: the state at ``sigmas[0]``: a tensor, or a double-float pair ``(hi, lo)`` of float32 tensors (value
            hi + lo) as :func:`invert_bdia` hands back for one.
        gamma: γ in [0, 1]; 0 is plain DDIM/Euler, 1 the leapfrog rule. Use 0.9–1 when the result will be inverted.
        flow: True for rectified-flow models (γ_i = γ), False for ε/v models in VE space.
        x_below: the state at ``sigmas[1]`` handed over by :func:`invert_bdia` (a tensor or a pair); then the
            first step is skipped and the round trip is exact. Without it the first step is a plain step.
    Returns: the state at ``sigmas[-1]`` in ``x``'s form: ``x``'s dtype, or a pair of its parts' dtype. The
    recurrence runs in float64, or in double-float on a device without float64 (``frame.has_float64``).
    """
    return _two_step_sample(model, x, sigmas, bdia_coefficients(gamma, flow), extra_args, callback, disable, x_below)


@torch.no_grad()
def invert_bdia(model, x, sigmas, extra_args=None, callback=None, disable=None, gamma=1.0, flow=True,
                first_step_iters=1):
    """Exact inverse of :func:`sample_bdia` along ascending ``sigmas`` (σ_0 may be 0).

    The first step solves the implicit step by ``first_step_iters`` fixed-point iterations; then
    ``x_{i+1} = E_{i→i+1}(x_i) + (x_{i−1} − E_{i→i−1}(x_i)) / γ_i`` with one model call per step.
    Returns the pair ``(x_N, x_{N−1})``: the state at ``sigmas[-1]`` and the one below it, each in ``x``'s form (a
    tensor of its dtype, or a double-float pair: on a device without float64 only a pair hands the inversion over
    without rounding it to float32).
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
