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

Every evaluation is also a check: the criterion is computed on the first evaluation of a step too, so a
step whose iteration starts close enough to its fixed point costs one evaluation. ``WarmStart`` predicts
that start from the steps already solved (FireFlow, Deng et al., arXiv 2412.07517, reuses the previous
step's velocity the same way in a rectified-flow solver); naive DDIM inversion's start ``z = x_i`` can
never pass the first check, its residual being the whole step.

What a step hands on decides the round trip: the plain step back from a state y at σ_{i+1} returns
``x_i − (f(y) − y)`` exactly, so the reconstruction error a step leaves is the residual at the state it
hands on. That is f(z) for the z that met the criterion, or, after two or more Anderson iterations, Anderson's
next iterate (its least-squares estimate of the fixed point over the window) where that moves f(z) by no more
than the residual just measured.
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


PLAUSIBLE = 100.0  # a state more than this many times the scale of a state at its σ is not a solution to report
FLOOR = 4.0  # the rounding floor: this many times the error the model's rounding leaves in f (``precision``) ...
STALL = 0.5  # ... below which an image stops once an evaluation has cut its criterion by less than this factor


def _rel(a, b, cap=None):
    """Per-sample relative RMS ‖a − b‖ / ‖b‖ (an all-zero ``b`` counts as 1, so a zero residual is 0), in
    ``precise_dtype``. With ``cap`` (per sample), a ``b`` whose norm exceeds it is no solution: its value is at
    least ‖b‖ / cap (> 1, so it never meets a tolerance)."""
    dtype = precise_dtype(b.device)
    a, b = a.flatten(1).to(dtype), b.flatten(1).to(dtype)
    norm = b.norm(dim=1)
    rel = (a - b).norm(dim=1) / torch.where(norm > 0, norm, torch.ones_like(norm))
    return rel if cap is None else torch.maximum(rel, torch.where(norm > cap.to(norm), norm / cap.to(norm), 0 * rel))


def _rounding_floor(z, denoised, sigma, sigma_next, precision):
    """``FLOOR`` times the relative error that rounding at unit roundoff ``precision`` leaves in f(z), per sample. The
    model's raw output (ε, v) is (z − D)/σ' and carries an error of about ``precision`` times its size; f multiplies
    it by σ' − σ, so ‖δf‖/‖z‖ ≈ (σ' − σ)/σ' · precision · ‖z − D‖/‖z‖. Where the residual stopped falling in
    bfloat16 it lay at 0.24–1.13 times that estimate on the tiny ComfyUI SD1.5, SDXL and Flux, 0.57 on full-size
    SDXL and 3.0–3.7 on full-size Flux-dev (57 blocks), random weights."""
    return FLOOR * abs(float(sigma_next) - float(sigma)) / float(sigma_next) * precision * _rel(denoised, z)


def _plausible_norm(x, sigma_next):
    """``PLAUSIBLE`` times the norm a state at σ' has when it starts from ``x``: √(‖x‖² + σ'²·numel). An iterate
    beyond it is not reported as a solution: an x̂₀ predictor whose D barely depends on its input puts the first
    step's fixed point at |z| ~ 1e8·|x₀|, a state no sampler regenerates from in float32, and a relative criterion
    would call it converged. Healthy iterates stay far below (the cap never binds on them)."""
    flat = x.flatten(1).to(precise_dtype(x.device))
    return PLAUSIBLE * (flat.norm(dim=1) ** 2 + float(sigma_next) ** 2 * flat.shape[1]).sqrt()


def _extrapolate(ts, ys, t):
    """The polynomial through the points (ts, ys) evaluated at t (Lagrange form; ys are tensors)."""
    total = 0
    for j, (tj, yj) in enumerate(zip(ts, ys)):
        weight = 1.0
        for k, tk in enumerate(ts):
            if k != j:
                weight *= (t - tk) / (tj - tk)
        total = total + weight * yj
    return total


class WarmStart:
    """The start of each step's iteration, predicted per image from the steps already solved.

    A solved step σ_{k−1} → σ_k leaves its state x_k and the model output of its fixed point,
    ε_k = (x_k − x_{k−1}) / (σ_k − σ_{k−1}) (``x_k = x_{k−1} + (σ_k − σ_{k−1}) ε(x_k, σ_k)``), so D_k = x_k − σ_k ε_k.
    The step σ → σ' from x has the fixed point ``z* = x + (σ' − σ) ε(z*, σ') = D* + (σ'/σ)(x − D*)``, so a prediction
    ε̂ of ε(z*, σ') (equivalently D̂ = x − σ ε̂ of D*) starts the iteration at

        z_0 = x + (σ' − σ) ε̂ = D̂ + (σ'/σ)(x − D̂).

    Candidates for the prediction:

    - ``previous D``: ε̂ = ε_k, i.e. D̂ = D_k reused (FireFlow's reuse of the previous step's velocity); exact where
      ε is constant along the path, as on a straight rectified flow.
    - ``linear``, ``quadratic``: ε̂ from the polynomial in σ through the last two / three (σ_k, ε_k).
    - ``Gaussian``: the step solved exactly for the Gaussian data N(m, s² I) that fits the last two solved steps.
      With the state x = α x0 + σ n (α = 1 for ε/v models in ComfyUI's VE space, α = 1 − σ for rectified flow),
      Tweedie's formula gives D = m + s² q with q = α (x − α D) / σ², so s² (per image) and m follow from a
      least-squares line through (q_k, D_k), anchored at the last step. The Gaussian's denoiser at σ' is
      D(z) = m + A'(z − α' m), A' = α' s² / (α'² s² + σ'²), and the step's fixed point is

          z_0 = (x − c (1 − α' A') m) / (1 − c (1 − A')),   c = (σ' − σ) / σ'.

    Modes: ``"predicted"`` starts each image from the candidate that predicted that image's previous step best (the
    distance of its start to the state the step converged to); before any has been measured, from ``previous D``,
    except that the Gaussian is tried at the first step it can be made (it becomes available at the low noise levels
    where data are locally Gaussian and its fit is exact: on the analytic mixture it takes the third of 8 steps from
    three evaluations to one);
    ``"previous D"`` always from ``previous D``; ``"none"`` at z_0 = x (naive DDIM inversion's start). The first step has
    nothing solved before it and starts at x in every mode; a schedule that starts at σ = 0 gives the polynomials the
    clean image as a point, with ε(x_0, 0) = α'(0) x_0 (0 for ε/v models, −x_0 for rectified flow: the limit of
    (x − D)/σ for any denoiser with D(x, 0) = x), so the line is available from the second step and the parabola
    from the third. Predictions are made only from steps where the image met
    the tolerance (an unconverged state is not on the path); without one, or where it is not finite, the start is x.
    """

    MODES = ("predicted", "previous D", "none")

    def __init__(self, mode, flow=False):
        if mode not in self.MODES:
            raise ValueError(f"warm_start must be one of {self.MODES}, got {mode!r}")
        self.mode, self.flow = mode, flow
        self.solved = []   # (σ_k, x_k, ε_k, met) of the last three solved steps, met: the images that met tol
        self.made = {}     # candidate name → the start it proposed for the step being solved
        self.errors = {}   # candidate name → per-image distance of its last proposal to the solved state

    def _alpha(self, sigma):
        return 1.0 - sigma if self.flow else 1.0

    def _gaussian(self, x, sigma, sigma_next):
        (s0, x0, e0, _), (s1, x1, e1, _) = self.solved[-2:]
        if s0 == 0:
            return torch.full_like(x, float("nan"))
        shape = (-1,) + (1,) * (x.dim() - 1)
        d0, d1 = x0 - s0 * e0, x1 - s1 * e1
        q0 = self._alpha(s0) * (x0 - self._alpha(s0) * d0) / s0 ** 2
        q1 = self._alpha(s1) * (x1 - self._alpha(s1) * d1) / s1 ** 2
        dq, dd = (q1 - q0).flatten(1), (d1 - d0).flatten(1)
        s2 = (dd * dq).sum(1) / (dq * dq).sum(1)                         # the data variance s² per image
        m = d1 - s2.view(shape) * q1                                     # the data mean
        a = self._alpha(sigma_next)
        gain = a * s2 / (a * a * s2 + sigma_next ** 2)                   # A' = ∂D/∂z at σ'
        c = (sigma_next - sigma) / sigma_next
        den = 1 - c * (1 - gain)
        z = (x - c * (1 - a * gain).view(shape) * m) / den.view(shape)
        usable = torch.isfinite(s2) & (s2 > 0) & (den > 1e-6)
        return torch.where(usable.view(shape), z, torch.full_like(z, float("nan")))

    def start(self, x, sigma, sigma_next):
        """z_0 for the step σ → σ' from the last solved state ``x`` [B, ...], and the candidate each image starts from."""
        sigma, sigma_next = float(sigma), float(sigma_next)
        self.made = {}
        shape = (-1,) + (1,) * (x.dim() - 1)
        if sigma == 0 and not self.solved:  # the clean image, a point for the polynomials; the step starts at x
            self.solved = [(0.0, x, -x if self.flow else torch.zeros_like(x), torch.ones(x.shape[0], dtype=torch.bool))]
        elif self.mode != "none" and self.solved:
            sigmas, eps = [s for s, _, _, _ in self.solved], [e for _, _, e, _ in self.solved]
            for name, n in (("previous D", 1), ("linear", 2), ("quadratic", 3), ("Gaussian", 2)):
                if len(self.solved) < n or (n > 1 and self.mode != "predicted"):
                    continue
                z = self._gaussian(x, sigma, sigma_next) if name == "Gaussian" else \
                    x + (sigma_next - sigma) * _extrapolate(sigmas[-n:], eps[-n:], sigma_next)
                met = torch.stack([m for _, _, _, m in self.solved[-n:]]).all(0)  # only from steps that met tol
                self.made[name] = torch.where(met.to(x.device).view(shape), z, torch.full_like(z, float("nan")))
        if not self.made:
            return x.clone(), ["none"] * x.shape[0]
        names = list(self.made)
        choice = torch.zeros(x.shape[0], dtype=torch.long)                 # previous D until measured,
        best = torch.full((x.shape[0],), float("inf"), dtype=x.dtype)
        fresh = "Gaussian" in self.made and not bool(torch.isfinite(self.errors.get("Gaussian", best)).any())
        if fresh:                                                          # but a fresh Gaussian is tried first
            finite = torch.isfinite(self.made["Gaussian"].flatten(1)).all(1).cpu()
            choice = torch.where(finite, names.index("Gaussian"), choice)
            best = torch.where(finite, torch.zeros_like(best), best)
        for j, name in enumerate(names):
            if name in self.errors:
                finite = torch.isfinite(self.made[name].flatten(1)).all(1).cpu()
                better = finite & (self.errors[name] < best)
                best, choice = torch.where(better, self.errors[name], best), torch.where(better, j, choice)
        z = x.clone()
        for j, name in enumerate(names):
            z = torch.where((choice == j).to(x.device).view(shape), self.made[name], z)
        finite = torch.isfinite(z.flatten(1)).all(1)
        z = torch.where(finite.view(shape), z, x)
        return z, [names[j] if ok else "none" for j, ok in zip(choice.tolist(), finite.tolist())]

    def solved_step(self, x, x_next, sigma, sigma_next, met):
        """Record the solved step σ → σ' (state x → x_next; ``met``: the images that met the tolerance, on the CPU) and
        how far each candidate's start was from x_next."""
        self.errors = {name: (z - x_next).flatten(1).norm(dim=1).cpu() for name, z in self.made.items()}
        self.errors = {name: torch.where(torch.isfinite(e), e, torch.full_like(e, float("inf")))
                       for name, e in self.errors.items()}
        eps = (x_next - x) / (float(sigma_next) - float(sigma))
        self.solved = (self.solved + [(float(sigma_next), x_next, eps, met)])[-3:]


@torch.no_grad()
def invert_fixed_point(model, x, sigmas, extra_args=None, callback=None, disable=None, max_iterations=10,
                       tolerance=1e-6, criterion="intra-path", anderson_window=3, perturbation=1.0, flow=False,
                       generator=None, shrink=True, on_call=None, warm_start="predicted", precision=0.0,
                       return_info=False):
    """Invert along ascending ``sigmas`` (σ_0 may be 0), solving each step by fixed-point iteration.

    Every image of the batch stops as soon as its own criterion is below ``tolerance``; with ``shrink`` (the default)
    later model calls are made on the images still iterating only, so ``model`` must accept any sub-batch of the
    images. ``shrink=False`` evaluates every image in every call (for conditioning that differs per image) and
    still updates only the images iterating; ``evaluations`` then counts every image.

    Args:
        model: denoiser ``model(x, sigma_batch, **extra_args) -> D``.
        x: the clean latent at ``sigmas[0]``, shape [B, ...]; batched elements are solved independently.
        sigmas: ascending noise levels, e.g. a flipped sampling schedule ``[0, …, σ_max]``.
        max_iterations: iterations (model evaluations per image and path) per step at most (≥ 1); ``max_iterations=1`` is naive
            DDIM inversion.
        tolerance: an image stops once its criterion, a relative RMS, is below ``tolerance``, or below the floor that
            the model's rounding sets (``precision``) where that is higher.
        criterion: ``"intra-path"`` stops on ‖f(z) − z‖/‖z‖ (AIDI, FPI); ``"inter-path"`` on ‖f(ẑ) − f(z)‖/‖f(z)‖ with a second
            path ẑ started at ``z + perturbation·N(0, I)`` in the model's own latent (NeurIPS 2024), batched with the
            first: the state in ComfyUI's VE space is √(1+σ²) times the model's latent, so the perturbation there is
            ``perturbation·√(1+σ_{i+1}²)·N(0, I)``; for rectified flow (``flow=True``) it is
            ``perturbation·N(0, I)``. Each inter-path iteration costs two evaluations per image.
        anderson_window: Anderson window m for either criterion (0 = plain Picard iteration, the NeurIPS 2024 setting).
        perturbation: inter-path only, the scale of N(0, I) (1 = the paper).
        flow: the model is rectified flow (state = model latent) rather than VE-scaled ε/v.
        generator: torch.Generator for the inter-path perturbation.
        return_info: also return ``{"steps": [...]}``, one dict per step with ``model_calls``, ``evaluations`` (batch
            elements evaluated), ``evaluations_per_image``, ``iterations`` (most over the images), ``converged``
            (images that met ``tolerance`` or stopped at the rounding floor; ``at_floor``: those of the latter, ``floor``: the
            highest floor), the final intra-path residual and (``"inter-path"``) the inter-path loss, each the
            worst over the batch, and ``trace``: per iteration, the worst intra-path and inter-path values over the
            images still iterating; ``start``: per image, the ``WarmStart`` candidate its iteration started from, and
            ``first_check``: the images that met ``tolerance`` at their first evaluation; ``runaway``: the images whose
            handed-on state is beyond ``PLAUSIBLE`` times the scale of a state at σ' (``_plausible_norm``), a state
            no sampler regenerates from (also in the callback's dict, so that a caller can stop there).
        on_call: optional ``on_call(held, used)`` before every model call: ``held`` the rows of the call's batch as
            indices into the images (``b + i`` for image i's second path), ``used`` the rows whose result the iteration
            takes (with ``shrink`` the same; without it the images still iterating).
        warm_start: where each step's iteration starts (``WarmStart``): ``"predicted"`` (default) from the candidate
            prediction that served the image best on its previous step, ``"previous D"`` from the previous step's D
            (ε), ``"none"`` at x_i (naive DDIM inversion's start, the behaviour before). With ``"inter-path"`` both paths
            start from the prediction, the second one perturbed as above. ``max_iterations=1`` always starts at x_i (naive
            DDIM inversion: with no check, a start predicted from unchecked steps drifts).
        precision: the unit roundoff of the model's arithmetic (2⁻⁸ bfloat16, 2⁻¹¹ float16, 2⁻²⁴ float32; 0, the
            default, counts it exact). Each evaluation of f then carries a rounding error that no iteration removes
            (in bfloat16 the residual stops falling at 1e-4–5e-3, above the node's tolerance), so an image also stops
            where its criterion is below ``_rounding_floor`` and its last evaluation cut it by less than ``STALL``:
            it is at the floor, and further evaluations would not improve the round trip (measured on the GPU
            benchmark's reduced SD1.5 in bfloat16 at 8 steps: 10 → 3 evaluations per image per step, round trip
            5.6e-3 → 4.7e-3).

    Returns: the latent at ``sigmas[-1]`` (with ``return_info``, and the info). Each step hands on f(z) for the z that
    met ``tolerance``; with ``"intra-path"``,
    Anderson (``anderson_window`` > 0) and a warm start, an image that needed two or more evaluations hands on Anderson's
    next iterate instead where that is within the measured residual of f(z) (module docstring). ``warm_start="none"``
    is the solver as it was before warm starts, bit for bit.
    """
    if criterion not in ("intra-path", "inter-path"):
        raise ValueError(f"criterion must be 'intra-path' or 'inter-path', got {criterion!r}")
    extra_args = {} if extra_args is None else extra_args
    two_paths = criterion == "inter-path" and max_iterations > 1
    steps = []
    b = x.shape[0]
    warm = WarmStart(warm_start, flow)
    if max_iterations == 1:  # one evaluation and no check: naive DDIM inversion (a start predicted from unchecked steps drifts)
        warm.mode = "none"
    hand_on = warm.mode != "none" and not two_paths and anderson_window > 0
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = sigmas[i], sigmas[i + 1]
        x_i = torch.cat([x, x]) if two_paths else x
        cap = _plausible_norm(x, sigma_next)
        start, started = warm.start(x, sigma, sigma_next)
        z = torch.cat([start, start]) if two_paths else start
        if two_paths:
            noise = torch.randn(x.shape, generator=generator, device="cpu", dtype=torch.float32)
            scale = perturbation * (1.0 if flow else (1 + float(sigma_next) ** 2) ** 0.5)
            z[b:] += scale * noise.to(x.device, x.dtype)
        mixer = Anderson(anderson_window)
        out, denoised_out = x.clone(), torch.empty_like(x)
        intra_out, inter_out, floor_out = (torch.zeros(b, dtype=precise_dtype(x.device)) for _ in range(3))
        iterations = torch.zeros(b, dtype=torch.long)
        floored, previous = torch.zeros(b, dtype=torch.bool), torch.full((b,), float("inf"), dtype=intra_out.dtype)
        active = torch.arange(b, device=x.device)
        calls = evaluations = 0
        trace = []
        for k in range(max_iterations):
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
            intra = _rel(fz[:n], zr[:n], cap[active])
            inter = _rel(fz[n:], fz[:n], cap[active]) if two_paths else intra
            floor = _rounding_floor(zr[:n], denoised[:n], sigma, sigma_next, precision)
            out[active], denoised_out[active] = fz[:n], denoised[:n]
            cpu = active.cpu()
            intra_out[cpu], inter_out[cpu], iterations[cpu] = intra.cpu(), inter.cpu(), k + 1
            floor_out[cpu] = floor.cpu()
            trace.append((float(intra.max()), float(inter.max()) if two_paths else None))
            at_floor = (inter < floor) & (inter > STALL * previous[cpu].to(inter))  # below the floor, no longer falling
            previous[cpu], floored[cpu] = inter.cpu(), at_floor.cpu()
            keep = (inter >= tolerance) & ~at_floor
            last = k == max_iterations - 1 or not bool(keep.any())
            if last and not hand_on:
                break
            mixed = mixer(zr, fz, rows)
            if hand_on:  # images done here hand on Anderson's iterate where it moves f(z) by at most the residual
                done = (~keep) & ((mixed[:n] - fz[:n]).flatten(1).norm(dim=1) <= (fz[:n] - zr[:n]).flatten(1).norm(dim=1))
                out[active[done]] = mixed[:n][done]
            if last:
                break
            if whole:
                z = mixed
            else:
                z[rows] = mixed
            active = active[keep]
        final = inter_out if two_paths else intra_out
        met = (final < tolerance) | floored
        warm.solved_step(x, out, sigma, sigma_next, met)
        runaway = (out.flatten(1).to(cap.dtype).norm(dim=1) > cap).nonzero().flatten().tolist()
        x = out
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigma_next, "sigma_hat": sigma_next, "denoised": denoised_out,
                      "runaway": runaway})
        if return_info:
            steps.append({"step": i, "sigma": float(sigma_next), "model_calls": calls,
                                "evaluations": evaluations, "evaluations_per_image": evaluations / b,
                                "iterations": int(iterations.max()), "converged": int(met.sum()),
                                "at_floor": int((met & (final >= tolerance)).sum()), "floor": float(floor_out.max()),
                                "images": b, "intra": float(intra_out.max()),
                                "inter": float(inter_out.max()) if two_paths else None, "trace": trace,
                                "start": started, "first_check": int(((iterations == 1) & met).sum()),
                                "runaway": runaway})
    return (x, {"steps": steps}) if return_info else x
