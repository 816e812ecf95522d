"""Fixed-point DDIM inversion.

Inverting one step σ_i → σ_{i+1} exactly means finding the ``z`` that the plain step brings back to
``x_i``, i.e. the fixed point of

    f(z) = x_i + (σ_{i+1} − σ_i) (z − D(z, σ_{i+1})) / σ_{i+1}.

Naive DDIM inversion is one Picard step from ``z = x_i``. Iterating to convergence is the
fixed-point inversion of Pan et al., "Effective Real Image Editing with Accelerated Iterative
Diffusion Inversion" (AIDI, ICCV 2023), who add Anderson acceleration; the stopping rule may be the
intra-path residual ‖f(z) − z‖ or the inter-path loss ‖f(z) − f(ẑ)‖ of "Exploring Fixed Point in
Image Editing" (NeurIPS 2024), where ẑ starts from a perturbed guess and follows the same map.
Both paths share one batched model call.
"""
import torch
from tqdm.auto import trange

from .frame import batch_sigma


class Anderson:
    """Type-II Anderson mixing over a window of ``m`` past iterates, per batch element.

    Given ``z`` and ``f(z)``, returns the next iterate ``f(z) − ΔF γ`` with
    ``γ = argmin ‖r − ΔR γ‖``, where ``r = f(z) − z`` and ΔR, ΔF hold the differences of the last
    residuals and map values. ``m = 0`` is plain Picard iteration.
    """

    def __init__(self, m):
        self.m, self.dr, self.df, self.last = m, [], [], None

    def __call__(self, z, fz):
        if self.m == 0:
            return fz
        shape = z.shape
        f, r = fz.flatten(1), (fz - z).flatten(1)
        if self.last is not None:
            self.dr = (self.dr + [r - self.last[0]])[-self.m:]
            self.df = (self.df + [f - self.last[1]])[-self.m:]
        self.last = (r, f)
        if not self.dr:
            return fz
        dR, dF = torch.stack(self.dr, -1).double(), torch.stack(self.df, -1).double()
        gram = dR.transpose(1, 2) @ dR
        ridge = 1e-12 * gram.diagonal(dim1=1, dim2=2).amax(-1).clamp_min(1e-300)
        gram = gram + ridge[:, None, None] * torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        coef = torch.linalg.solve(gram, dR.transpose(1, 2) @ r.double().unsqueeze(-1))
        return (f.double() - (dF @ coef).squeeze(-1)).to(fz.dtype).reshape(shape)


def _rel(a, b):
    """Per-sample relative RMS ‖a − b‖ / ‖b‖."""
    return (a - b).flatten(1).norm(dim=1) / b.flatten(1).norm(dim=1).clamp_min(1e-30)


@torch.no_grad()
def invert_fixed_point(model, x, sigmas, extra_args=None, callback=None, disable=None, max_iter=10, tol=1e-6,
                       criterion="inter", anderson=3, perturbation=0.5, generator=None, diagnostics=None):
    """Invert along ascending ``sigmas`` (σ_0 may be 0), solving each step by fixed-point iteration.

    Args:
        model: denoiser ``model(x, sigma_batch, **extra_args) -> D``.
        x: the clean latent at ``sigmas[0]``, shape [B, ...]; batched elements are solved independently.
        sigmas: ascending noise levels, e.g. a flipped sampling schedule ``[0, …, σ_max]``.
        max_iter: model calls per step at most (≥ 1); ``max_iter=1`` is naive DDIM inversion.
        tol: stop a step once the criterion, as a relative RMS, is below ``tol`` for every element.
        criterion: ``"intra"`` stops on ‖f(z) − z‖/‖f(z)‖ (AIDI); ``"inter"`` on ‖f(z) − f(ẑ)‖/‖f(z)‖ with a
            second path ẑ started at ``z + perturbation·σ_{i+1}·N(0, I)`` (NeurIPS 2024), batched with the first.
        anderson: Anderson window m (0 = plain Picard iteration).
        generator: torch.Generator for the inter-path perturbation.
        diagnostics: optional list; one dict per step is appended with the model calls, the final intra-path
            residual and (for ``"inter"``) the inter-path loss, each the worst over the batch.

    Returns: the latent at ``sigmas[-1]``.
    """
    if criterion not in ("intra", "inter"):
        raise ValueError(f"criterion must be 'intra' or 'inter', got {criterion!r}")
    extra_args = {} if extra_args is None else extra_args
    two_paths = criterion == "inter" and max_iter > 1
    b = x.shape[0]
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_i = torch.cat([x, x]) if two_paths else x
        z = x_i.clone()
        if two_paths:
            noise = torch.randn(x.shape, generator=generator, device="cpu", dtype=torch.float32)
            z[b:] += perturbation * sigma_next * noise.to(x.device, x.dtype)
        mixer = Anderson(anderson)
        for k in range(max_iter):
            denoised = model(z, batch_sigma(z, sigma_next), **extra_args)
            fz = x_i + (sigma_next - sigma) / sigma_next * (z - denoised)
            intra = _rel(fz[:b], z[:b])
            inter = _rel(fz[b:], fz[:b]) if two_paths else intra
            if bool((inter < tol).all()) or k == max_iter - 1:
                break
            z = mixer(z, fz)
        x = fz[:b]
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma_next, "sigma_hat": sigma_next, "denoised": denoised[:b]})
        if diagnostics is not None:
            diagnostics.append({"step": i, "sigma": float(sigma_next), "model_calls": k + 1,
                                "intra": float(intra.max()), "inter": float(inter.max()) if two_paths else None})
    return x
