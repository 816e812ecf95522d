"""Oscillation Inversion and group inversion at one fixed noise level.

Zheng et al., "Oscillation Inversion: Understand the structure of Large Flow Model through the Lens
of Inversion" (arXiv 2411.11135; AAAI 2026). At a fixed σ the map

    z_{k+1} = y_{s(k)} + σ v(z_k, σ)   ⇔   z_{k+1} = z_k + y_{s(k)} − D(z_k, σ)

(our frame, core/frame.py) solves ``D(z, σ) = y``. With an off-manifold target the iterates do not
converge but oscillate between clusters whose mean inverts ``y``; cycling several targets with a
schedule ``s`` (e.g. A, A, B: group inversion) gives a periodic orbit whose period follows the
schedule. Clusters are the iterates grouped by index modulo the detected period.
"""
import itertools
import math

import torch

from .frame import batch_sigma, precise_dtype, sample_euler


@torch.no_grad()
def oscillation_iterates(model, targets, sigma, iterations, schedule=(0,), extra_args=None, callback=None,
                         history_dtype=None):
    """Run the fixed-σ iteration and return every iterate.

    Args:
        targets: list of clean latents y_j, each [B, ...] of one shape.
        sigma: the fixed noise level σ (the paper: 0.40 on Flux's unshifted schedule).
        iterations: number of model calls K; the history holds z_0 = y_{s(0)} … z_K.
        schedule: indices into ``targets`` cycled by iteration: (0,) for one target, (0, 0, 1) for A, A, B.
        callback: called with ``{"i", "x", "denoised", "sigma"}`` after every model call.
        history_dtype: dtype the returned iterates are stored in (default: the iterate's own). The iteration
            itself runs in the targets' dtype; only the kept history is cast, into one buffer allocated up front:
            ``(K + 1)·B·numel·itemsize`` bytes (the model's bf16 instead of float64: a quarter).
    Returns: tensor [K + 1, B, ...] of iterates.
    """
    extra_args = {} if extra_args is None else extra_args
    z = targets[schedule[0]].clone()
    history = z.new_empty((iterations + 1,) + tuple(z.shape), dtype=z.dtype if history_dtype is None else history_dtype)
    history[0] = z
    for k in range(iterations):
        denoised = model(z, batch_sigma(z, sigma), **extra_args)
        z = z + targets[schedule[k % len(schedule)]] - denoised
        history[k + 1] = z
        if callback is not None:
            callback({"i": k, "x": z, "denoised": denoised, "sigma": sigma})
    return history


def periodicity(history, period):
    """Worst-over-batch mean relative distance ‖z_{k+p} − z_k‖ / RMS‖z‖ over the history, in ``precise_dtype``."""
    h = history.flatten(2).to(precise_dtype(history.device))
    scale = h.norm(dim=2).mean(0).clamp_min(1e-30)
    return float(((h[period:] - h[:-period]).norm(dim=2).mean(0) / scale).max())


def detect_period(history, max_period=8, rel_tol=1e-3, periodic_tol=0.1):
    """Detect the period of an iterate history (burn-in already removed).

    A converged history (error of p = 1 below ``rel_tol``) has period 1. A periodic one (best error below
    ``periodic_tol``) has the smallest p within 1.5× the best error, so multiples of the period are not
    preferred. An aperiodic (chaotic) orbit gets the p with the least error. Returns ``(period, errors)``
    with the error of every candidate, so the caller reports how periodic the orbit really is.
    """
    max_period = max(1, min(max_period, (history.shape[0] - 1) // 2))
    errors = [periodicity(history, p) for p in range(1, max_period + 1)]
    if not all(math.isfinite(e) for e in errors):
        raise ValueError("detect_period: the iterate history holds NaN or inf (the iteration diverged)")
    best = min(errors)
    limit = max(rel_tol, 1.5 * best) if best < periodic_tol else best
    period = next((p for p, e in enumerate(errors, 1) if e <= limit), errors.index(best) + 1)
    return period, errors


def cluster_centres(history, period, offset=0):
    """Cluster centres: means of iterates grouped by index modulo ``period``, and of unions of two groups.

    ``offset`` is the absolute index of ``history[0]`` (the burn-in) so that group ``j`` always means
    iterations ``k ≡ j (mod period)``. A union is the equal-weight mean of its groups' centres. Returns
    ``(centres [n, B, ...], labels)``; with period ≥ 2 the mean of all groups comes last (Theorem 2: for
    period 2 its one-step prediction reproduces the target).
    """
    groups = torch.stack([history[(j - offset) % period::period].mean(0) for j in range(period)])
    sets = [(f"k%{period}={j}", [j]) for j in range(period)]
    if period >= 3:
        sets += [(f"k%{period} in {{{a},{b}}}", [a, b]) for a, b in itertools.combinations(range(period), 2)]
    if period >= 2:
        sets.append(("all", list(range(period))))
    centres = torch.stack([groups[idx].mean(0) for _, idx in sets])
    return centres, [label for label, _ in sets]


def pairwise_distances(history, block=64):
    """Matrix [K, K] of mean-over-batch Euclidean distances between iterates (the paper's Fig. 2c).

    Float64 on blocks of ``block`` iterates of one image at a time: the working memory is two blocks, not a
    float64 copy of the whole history (which long runs cannot afford). On a device without float64: float32, one
    matrix product per pair of blocks (``cdist`` is missing on some such devices) of the iterates less the image's
    mean iterate, so ‖a‖² + ‖b‖² − 2a·b cancels little; the nearest iterates' distances are then good to a few 1e-4
    of the orbit's radius (float32's √ε), plenty for the map."""
    h = history.flatten(2)
    k, batch = h.shape[:2]
    dtype = precise_dtype(h.device)
    out = torch.zeros(k, k, dtype=dtype, device=h.device)
    for b in range(batch):
        centre = None if dtype == torch.float64 else h[:, b].mean(0, dtype=dtype)
        for i in range(0, k, block):
            rows = h[i:i + block, b].to(dtype)
            for j in range(0, k, block):
                out[i:i + block, j:j + block] += _distances(rows, h[j:j + block, b].to(dtype), centre)
    return out / batch


def _distances(a, b, centre=None):
    """Euclidean distances between the rows of ``a`` and ``b``: ``cdist``, or with a ``centre`` one matrix product of
    the rows less the centre (‖a‖² + ‖b‖² − 2a·b, which cancels little for rows near the centre)."""
    if centre is None:
        return torch.cdist(a, b)
    a, b = a - centre, b - centre
    squared = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2 * (a @ b.T)
    return squared.clamp_min(0).sqrt()


@torch.no_grad()
def oscillation_inversion(model, targets, sigma, extra_args=None, callback=None, disable=None, iterations=20,
                          schedule=(0,), burn_in=4, max_period=6, decode_sigmas=None, history_dtype=None,
                          return_info=False):
    """Oscillation / group inversion end to end (arXiv 2411.11135 §3): iterate at σ, drop ``burn_in`` iterates,
    detect the period, take every cluster centre z̄ and decode it along ``decode_sigmas`` (descending from σ to 0;
    default ``[σ, 0]``, the one-step prediction D(z̄, σ)).

    Returns the decoded centres [P·B, ...] (centre-major), and with ``return_info`` also a dict: ``history`` (every
    iterate, [K + 1, B, ...]), ``period``, ``errors`` (periodicity error per candidate period), ``labels`` (which
    iterates each centre averages) and ``centres`` (the centre states at σ, [P·B, ...]).
    """
    history = oscillation_iterates(model, targets, sigma, iterations, schedule, extra_args, callback, history_dtype)
    kept = history[burn_in:]
    period, errors = detect_period(kept, max_period)
    centres, labels = cluster_centres(kept, period, offset=burn_in)
    x = targets[0]
    states = centres.flatten(0, 1).to(x.dtype)
    decode_sigmas = [sigma, 0.0] if decode_sigmas is None else decode_sigmas
    shifted = None if callback is None else (lambda d: callback({**d, "i": iterations + d["i"]}))
    decoded = sample_euler(model, states, torch.tensor(decode_sigmas, dtype=x.dtype, device=x.device), extra_args,
                           shifted, disable=True)
    info = {"history": history, "period": period, "errors": errors, "labels": labels, "centres": states}
    return (decoded, info) if return_info else decoded
