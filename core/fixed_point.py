"""Fixed-point DDIM inversion.

Inverting one step σ_i → σ_{i+1} exactly means finding the ``z`` that the plain step brings back to
``x_i``, i.e. the fixed point of

    f(z) = x_i + (σ_{i+1} − σ_i) (z − D(z, σ_{i+1})) / σ_{i+1}.

Naive DDIM inversion is one Picard step from ``z = x_i``. Iterating to convergence is the
fixed-point inversion of Pan et al., "Effective Real Image Editing with Accelerated Iterative
Diffusion Inversion" (AIDI, ICCV 2023), who add Anderson acceleration and stop on the intra-path
residual ‖f(z) − z‖. "Exploring Fixed Point in Image Editing" (NeurIPS 2024) instead stops on the
inter-path loss ‖f(z) − f(ẑ)‖, where a second path ẑ starts at ``z + N(0, I)`` in the model's own
latent and both paths follow plain Picard iteration; both paths share one batched model call.

Cost is counted in model evaluations per image (batch elements evaluated): every image stops as soon
as its own criterion is met and is not evaluated again, so a converged image costs nothing more while
the others iterate.
"""
import torch
from tqdm.auto import trange

from .frame import batch_sigma, precise_dtype


class Anderson:
    """Type-II Anderson mixing over a window of ``m`` past iterates, per batch row (AIDI).

    Given ``z`` and ``f(z)`` for some rows of a batch, returns the next iterate ``f(z) − ΔF γ`` with
    ``γ = argmin ‖r − ΔR γ‖``, where ``r = f(z) − z`` and ΔR, ΔF hold the differences of the row's last
    residuals and map values. ``m = 0`` is plain Picard iteration.

    The least-squares problem is solved in float64 on unit-norm columns of ΔR with a fixed ridge (1e-10 of the
    unit diagonal), so the ridge never underflows whatever the state's dtype; on a device without float64 it is
    solved there in float32 with a ridge of 1e-6, above float32's rounding of the unit diagonal. A history column
    whose norm is at the rounding level of the state (a row that stopped moving, an all-zero image,
    float16/bfloat16 round-off) is unusable and gets no weight; a row without usable history takes the plain
    step ``f(z)``, and so does a row whose mixed iterate would not be finite.
    """

    RIDGE = 1e-10
    RIDGE_FLOAT32 = 1e-6

    def __init__(self, m):
        self.m, self.rows, self.dr, self.df, self.last = m, None, [], [], None

    def __call__(self, z, fz, rows):
        """Next iterate for ``rows`` (batch indices, a subsequence of the previous call's; z, fz hold those rows)."""
        if self.m == 0:
            return fz
        dtype = precise_dtype(fz.device)
        f, r = fz.flatten(1).to(dtype), (fz - z).flatten(1).to(dtype)
        if self.last is not None:
            if rows.numel() != self.rows.numel():  # rows that stopped leave the history
                keep = torch.searchsorted(self.rows, rows)
                self.last = [t[keep] for t in self.last]
                self.dr, self.df = [t[keep] for t in self.dr], [t[keep] for t in self.df]
            self.dr = (self.dr + [r - self.last[0]])[-self.m:]
            self.df = (self.df + [f - self.last[1]])[-self.m:]
        self.rows, self.last = rows, [r, f]
        if not self.dr:
            return fz
        dR, dF = torch.stack(self.dr, -1), torch.stack(self.df, -1)             # [n, d, k]
        gram = dR.transpose(1, 2) @ dR                                          # [n, k, k]
        norms = gram.diagonal(dim1=1, dim2=2).sqrt()                            # [n, k]
        floor = 8 * torch.finfo(fz.dtype).eps * f.norm(dim=1, keepdim=True)    # rounding level of the row
        usable = (norms > floor) & (norms > 1e-150) & torch.isfinite(norms)
        scale = torch.where(usable, 1 / norms, torch.zeros_like(norms))         # unit columns; unusable → 0
        eye = torch.eye(gram.shape[-1], dtype=gram.dtype, device=gram.device)
        ridge = self.RIDGE if dtype == torch.float64 else self.RIDGE_FLOAT32
        unit_gram = gram * scale[:, :, None] * scale[:, None, :] + ridge * eye + torch.diag_embed(
            (~usable).to(gram.dtype))
        rhs = (dR.transpose(1, 2) @ r.unsqueeze(-1)).squeeze(-1) * scale
        coef = torch.linalg.solve(unit_gram, rhs.unsqueeze(-1)).squeeze(-1) * scale
        mixed = f - (dF @ coef.unsqueeze(-1)).squeeze(-1)
        good = usable.any(1) & torch.isfinite(mixed).all(1)
        return torch.where(good[:, None], mixed, f).to(fz.dtype).reshape(fz.shape)


def _rel(a, b):
    """Per-sample relative RMS ‖a − b‖ / ‖b‖ (an all-zero ``b`` counts as 1, so a zero residual is 0), in
    ``precise_dtype``."""
    dtype = precise_dtype(b.device)
    a, b = a.flatten(1).to(dtype), b.flatten(1).to(dtype)
    norm = b.norm(dim=1)
    return (a - b).norm(dim=1) / torch.where(norm > 0, norm, torch.ones_like(norm))


@torch.no_grad()
def invert_fixed_point(model, x, sigmas, extra_args=None, callback=None, disable=None, max_iter=10, tol=1e-6,
                       criterion="intra", anderson=3, perturbation=1.0, flow=False, generator=None,
                       diagnostics=None, shrink=True, on_call=None):
    """Invert along ascending ``sigmas`` (σ_0 may be 0), solving each step by fixed-point iteration.

    Every image of the batch stops as soon as its own criterion is below ``tol``; with ``shrink`` (the default)
    later model calls are made on the images still iterating only, so ``model`` must accept any sub-batch of the
    images. ``shrink=False`` evaluates every image in every call (for conditioning that differs per image) and
    still updates only the images iterating; ``evaluations`` then counts every image.

    Args:
        model: denoiser ``model(x, sigma_batch, **extra_args) -> D``.
        x: the clean latent at ``sigmas[0]``, shape [B, ...]; batched elements are solved independently.
        sigmas: ascending noise levels, e.g. a flipped sampling schedule ``[0, …, σ_max]``.
        max_iter: iterations (model evaluations per image and path) per step at most (≥ 1); ``max_iter=1`` is naive
            DDIM inversion.
        tol: an image stops once its criterion, a relative RMS, is below ``tol``.
        criterion: ``"intra"`` stops on ‖f(z) − z‖/‖z‖ (AIDI, FPI); ``"inter"`` on ‖f(ẑ) − f(z)‖/‖f(z)‖ with a second
            path ẑ started at ``z + perturbation·N(0, I)`` in the model's own latent (NeurIPS 2024), batched with the
            first: the state in ComfyUI's VE space is √(1+σ²) times the model's latent, so the perturbation there is
            ``perturbation·√(1+σ_{i+1}²)·N(0, I)``; for rectified flow (``flow=True``) it is
            ``perturbation·N(0, I)``. Each inter-path iteration costs two evaluations per image.
        anderson: Anderson window m for either criterion (0 = plain Picard iteration, the NeurIPS 2024 setting).
        perturbation: inter-path only, the scale of N(0, I) (1 = the paper).
        flow: the model is rectified flow (state = model latent) rather than VE-scaled ε/v.
        generator: torch.Generator for the inter-path perturbation.
        diagnostics: optional list; one dict per step is appended with ``model_calls``, ``evaluations`` (batch
            elements evaluated), ``evaluations_per_image``, ``iterations`` (most over the images), ``converged``
            (images that met ``tol``), the final intra-path residual and (``"inter"``) the inter-path loss, each the
            worst over the batch, and ``trace``: per iteration, the worst intra-path and inter-path values over the
            images still iterating.
        on_call: optional ``on_call(held, used)`` before every model call: ``held`` the rows of the call's batch as
            indices into the images (``b + i`` for image i's second path), ``used`` the rows whose result the iteration
            takes (with ``shrink`` the same; without it the images still iterating).

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
            scale = perturbation * (1.0 if flow else (1 + float(sigma_next) ** 2) ** 0.5)
            z[b:] += scale * noise.to(x.device, x.dtype)
        mixer = Anderson(anderson)
        out, denoised_out = x.clone(), torch.empty_like(x)
        intra_out, inter_out = (torch.zeros(b, dtype=precise_dtype(x.device)) for _ in range(2))
        iterations = torch.zeros(b, dtype=torch.long)
        active = torch.arange(b, device=x.device)
        calls = evaluations = 0
        trace = []
        for k in range(max_iter):
            rows = torch.cat([active, active + b]) if two_paths else active
            whole = rows.numel() == z.shape[0]
            zr = z if whole else z[rows]
            if on_call is not None:
                on_call(rows if shrink else torch.arange(z.shape[0], device=z.device), rows)
            if shrink:
                denoised = model(zr, batch_sigma(zr, sigma_next), **extra_args)
                calls, evaluations = calls + 1, evaluations + rows.numel()
            else:
                denoised = model(z, batch_sigma(z, sigma_next), **extra_args)[rows]
                calls, evaluations = calls + 1, evaluations + z.shape[0]
            fz = (x_i if whole else x_i[rows]) + (sigma_next - sigma) / sigma_next * (zr - denoised)
            n = active.numel()
            intra = _rel(fz[:n], zr[:n])
            inter = _rel(fz[n:], fz[:n]) if two_paths else intra
            out[active], denoised_out[active] = fz[:n], denoised[:n]
            cpu = active.cpu()
            intra_out[cpu], inter_out[cpu], iterations[cpu] = intra.cpu(), inter.cpu(), k + 1
            trace.append((float(intra.max()), float(inter.max()) if two_paths else None))
            keep = inter >= tol
            if k == max_iter - 1 or not bool(keep.any()):
                break
            if whole:
                z = mixer(zr, fz, rows)
            else:
                z[rows] = mixer(zr, fz, rows)
            active = active[keep]
        x = out
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma_next, "sigma_hat": sigma_next, "denoised": denoised_out})
        if diagnostics is not None:
            final = inter_out if two_paths else intra_out
            diagnostics.append({"step": i, "sigma": float(sigma_next), "model_calls": calls,
                                "evaluations": evaluations, "evaluations_per_image": evaluations / b,
                                "iterations": int(iterations.max()), "converged": int((final < tol).sum()),
                                "images": b, "intra": float(intra_out.max()),
                                "inter": float(inter_out.max()) if two_paths else None, "trace": trace})
    return x
