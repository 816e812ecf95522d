"""One frame for every model family.

A sampler state ``x`` at noise level ``σ`` and a denoiser ``D(x, σ)`` returning the predicted clean
latent. For ε/v models in ComfyUI's variance-exploding space (``x = x0 + σ ε``) and for rectified
flow (``x = (1 − σ) x0 + σ ε``) the first-order step

    E_{σ→σ'}(x) = D + (σ'/σ) (x − D)

is exactly the DDIM step and the Euler step of the flow ODE respectively, so every method here is
written once against ``D`` and a list of sigmas.
"""
import torch
from tqdm.auto import trange

FLOAT64_LESS = {"mps", "privateuseone"}
"""Device types without float64: Apple MPS and DirectML (``privateuseone``). Tests add a type to declare it so."""


def has_float64(device):
    """Whether tensors of ``device`` (a torch.device or its name) may be float64: not on a type in FLOAT64_LESS."""
    return torch.device(device).type not in FLOAT64_LESS


def precise_dtype(device):
    """The dtype of the precise state on ``device``, which stays on ``device``: float64 where the device has it, else
    float32, with the exactness that matters kept by compensated (double-float) arithmetic (``core.bdia``)."""
    return torch.float64 if has_float64(device) else torch.float32


def euler_step(x, denoised, sigma, sigma_next):
    """E_{σ→σ'}(x) = D + (σ'/σ)(x − D): DDIM for ε/v models, Euler for rectified flow."""
    return denoised + (sigma_next / sigma) * (x - denoised)


SCHEDULE_FAULTS = {
    "levels": "hold at least two noise levels (one step)",
    "finite": "be finite and non-negative",
    "monotonic": "be strictly monotonic",
    "descending": "descend",
    "ascending": "ascend",
}


def schedule_fault(sigmas, descending=None):
    """The one schedule rule of the pack: at least one step, finite, non-negative, strictly monotonic (every step
    divides by the σ it starts from or reaches, so only the clean end may be 0), and with ``descending`` True/False
    in that order. Returns None for a valid schedule, else the key of SCHEDULE_FAULTS it breaks."""
    s = [float(v) for v in sigmas]
    if len(s) < 2:
        return "levels"
    if not all(v == v and abs(v) != float("inf") and v >= 0 for v in s):
        return "finite"
    if not (all(a > b for a, b in zip(s, s[1:])) or all(a < b for a, b in zip(s, s[1:]))):
        return "monotonic"
    if descending is not None and (s[0] > s[-1]) != descending:
        return "descending" if descending else "ascending"
    return None


def require_schedule(sigmas, descending=True):
    """``sigmas`` as floats, or a ValueError naming the rule (``schedule_fault``) it breaks."""
    fault = schedule_fault(sigmas, descending)
    if fault is not None:
        raise ValueError(f"sigmas must {SCHEDULE_FAULTS[fault]}, got {[float(v) for v in sigmas]}")
    return [float(v) for v in sigmas]


def rel_rms(a, b):
    """Relative RMS error ‖a − b‖ / ‖b‖ per batch element (a tensor of shape [B]), in ``precise_dtype``."""
    dtype = precise_dtype(b.device)
    a, b = a.to(dtype).flatten(1), b.to(dtype).flatten(1)
    return (a - b).norm(dim=1) / b.norm(dim=1).clamp_min(1e-300 if dtype == torch.float64 else torch.finfo(dtype).tiny)


def batch_sigma(x, sigma):
    """σ as a per-sample vector, the shape ComfyUI's denoisers expect."""
    return x.new_ones([x.shape[0]]) * sigma


@torch.no_grad()
def sample_euler(model, x, sigmas, extra_args=None, callback=None, disable=None):
    """Plain deterministic DDIM / Euler sampling along descending ``sigmas`` (one call per step)."""
    extra_args = {} if extra_args is None else extra_args
    for i in trange(len(sigmas) - 1, disable=disable):
        denoised = model(x, batch_sigma(x, sigmas[i]), **extra_args)
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i], "sigma_hat": sigmas[i], "denoised": denoised})
        x = euler_step(x, denoised, sigmas[i], sigmas[i + 1])
    return x
