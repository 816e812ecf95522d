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

On a GPU the solver's own cost is its kernel launches and its synchronisations: every read of a value by the host
waits for the device. An iteration therefore reads its per-image figures (the criteria's norms and Anderson's inner
products) in one transfer and decides on the host, and a step reads once more for the warm start's measurements; the
small problems (Anderson's least squares, the choice of start) are solved on the host, and every warm-start candidate
is one batched product of host-computed weights with the last state and model outputs.

What a step hands on decides the round trip: the plain step back from a state y at σ_{i+1} returns
``x_i − (f(y) − y)`` exactly, so the reconstruction error a step leaves is the residual at the state it
hands on. That is f(z) for the z that met the criterion, or, after two or more Anderson iterations, Anderson's
next iterate (its least-squares estimate of the fixed point over the window) where that moves f(z) by no more
than the residual just measured. An image that runs out of iterations hands on f(z) of its last iterate where that
iterate missed least, of the plausible iterates the step evaluated (the miss ‖f(z) − z‖ itself, not relative to ‖z‖,
which grows on a diverging iteration): the iteration was still converging, and where f contracts f(z) misses less.
Otherwise it hands on the iterate that missed least, whose error is then that measured miss: where f does not
contract (the step crosses the boundary between two modes of the data) f of the last iterate can miss far more.
"""
import math

import torch
from tqdm.auto import trange

from .frame import batch_sigma, precise_dtype


class Anderson:
    """Type-II Anderson mixing over a window of ``m`` past iterates, per batch row (AIDI).

    Given ``z`` and ``f(z)`` for some rows of a batch, the next iterate is ``f(z) − ΔF γ`` with
    ``γ = argmin ‖r − ΔR γ‖``, where ``r = f(z) − z`` and ΔR, ΔF hold the differences of the row's last
    residuals and map values. ``m = 0`` is plain Picard iteration.

    The work is split so that the host reads the device once per iteration: ``gram`` records the iterate and returns
    the inner products of the columns [ΔR, r, ΔF, f(z)] (one batched product on the device), read with the iteration's
    other figures; ``coefficients`` solves the small least-squares problem from them on the host in float64, on
    unit-norm columns of ΔR with a fixed ridge (1e-10 of the unit diagonal; 1e-6 where a device without float64 formed
    the products in float32, above float32's rounding of the unit diagonal); ``mix`` forms the iterates on the device.
    A history column whose norm is at the rounding level of the state (a row that stopped moving, an all-zero image,
    float16/bfloat16 round-off) is unusable and gets no weight; a row without usable history takes the plain step
    ``f(z)``, and so does a row whose γ is not finite.
    """

    RIDGE = 1e-10
    RIDGE_FLOAT32 = 1e-6

    def __init__(self, m):
        self.m, self.rows, self.dr, self.df, self.last, self.columns = m, None, [], [], None, None

    def gram(self, residual, fz, rows):
        """Record the iterate of ``rows`` (batch indices on the host, a subsequence of the previous call's; ``residual``
        = f(z) − z and fz hold those rows) and return the Gram matrices [n, p, p] of the columns [ΔR, r, ΔF, f(z)] (p = 2k + 2 for k past
        differences) on the device; None while the rows have no history (their next iterate is f(z))."""
        if self.m == 0:
            return None
        dtype = precise_dtype(fz.device)
        f, r = fz.flatten(1).to(dtype), residual.flatten(1).to(dtype)
        if self.last is not None:
            if rows.numel() != self.rows.numel():  # rows that stopped leave the history
                keep = torch.searchsorted(self.rows, rows).to(fz.device, non_blocking=True)
                self.last = [t[keep] for t in self.last]
                self.dr, self.df = [t[keep] for t in self.dr], [t[keep] for t in self.df]
            self.dr = (self.dr + [r - self.last[0]])[-self.m:]
            self.df = (self.df + [f - self.last[1]])[-self.m:]
        self.rows, self.last, self.shape, self.dtype = rows, [r, f], fz.shape, fz.dtype
        if not self.dr:
            return None
        self.columns = torch.stack(self.dr + [r] + self.df + [f], 1)           # [n, p, d]
        return self.columns @ self.columns.transpose(1, 2)

    def coefficients(self, gram, eps):
        """γ of one row from its Gram matrix (``gram``, the p² entries row by row, as floats) and the unit roundoff
        ``eps`` of the state: (γ, ‖ΔF γ‖, ‖f(z) − ΔF γ‖), γ None for the plain step."""
        g, k = _square(gram)
        p = 2 * k + 2
        norm_f2 = g[p - 1][p - 1]
        floor = 8 * eps * math.sqrt(norm_f2)                                      # rounding level of the row
        norms = [math.sqrt(g[i][i]) if g[i][i] >= 0 else math.nan for i in range(k)]
        usable = [floor < v < math.inf and v > 1e-150 for v in norms]           # (NaN is none of these)
        if not any(usable):
            return None, 0.0, math.sqrt(norm_f2)
        scale = [1 / v if ok else 0.0 for v, ok in zip(norms, usable)]          # unit columns; unusable → 0
        ridge = self.RIDGE if self.columns.dtype == torch.float64 else self.RIDGE_FLOAT32
        unit = [[g[i][j] * scale[i] * scale[j] + (ridge + (not usable[i]) if i == j else 0.0) for j in range(k)]
                for i in range(k)]
        gamma = _solve_spd(unit, [g[i][k] * scale[i] for i in range(k)])
        if gamma is None:
            return None, 0.0, math.sqrt(norm_f2)
        gamma = [c * s for c, s in zip(gamma, scale)]
        if not all(c - c == 0 for c in gamma):
            return None, 0.0, math.sqrt(norm_f2)
        moved2 = sum(gamma[i] * gamma[j] * g[k + 1 + i][k + 1 + j] for i in range(k) for j in range(k))
        cross = sum(c * g[k + 1 + i][p - 1] for i, c in enumerate(gamma))
        return gamma, math.sqrt(max(moved2, 0.0)), math.sqrt(max(norm_f2 - 2 * cross + moved2, 0.0))

    def response(self, gram):
        """From one row's Gram entries (as for ``coefficients``), how f responded to its input over the window's
        pairs of iterates: (Σ⟨ΔF, Δz⟩, Σ‖Δz‖², Σ‖ΔF‖²), with Δz = ΔF − ΔR the change of the iterate."""
        g, k = _square(gram)
        pairs = [(g[k + 1 + t][k + 1 + t], g[k + 1 + t][t], g[t][t]) for t in range(k)]  # ‖ΔF‖², ⟨ΔF, ΔR⟩, ‖ΔR‖²
        return (sum(ff - fr for ff, fr, _ in pairs), sum(ff - 2 * fr + rr for ff, fr, rr in pairs),
                sum(ff for ff, _, _ in pairs))

    def mix(self, gammas):
        """The next iterates ``f(z) − ΔF γ`` of the rows of the last ``gram`` (γ per row, None: f(z))."""
        k = (self.columns.shape[1] - 2) // 2
        gamma = torch.tensor([[0.0] * k if c is None else c for c in gammas], dtype=self.columns.dtype)
        gamma = gamma.to(self.columns.device, non_blocking=True)
        mixed = torch.baddbmm(self.columns[:, -1:], gamma[:, None], self.columns[:, k + 1:-1], alpha=-1)
        return mixed.reshape(self.shape).to(self.dtype)


def _square(gram):
    """A row's Gram entries (p² floats, row by row) as rows, and the number k of history pairs (p = 2k + 2)."""
    p = math.isqrt(len(gram))
    return [gram[i * p:(i + 1) * p] for i in range(p)], (p - 2) // 2


def _solve_spd(a, b):
    """x with a x = b for a small symmetric positive definite ``a`` (lists of floats), by Cholesky; None where ``a``
    is not positive definite."""
    n = len(b)
    low = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(i + 1):
            s = a[i][j] - sum(low[i][t] * low[j][t] for t in range(j))
            if i == j:
                if not s > 0:
                    return None
                low[i][i] = math.sqrt(s)
            else:
                low[i][j] = s / low[j][j]
    y = []
    for i in range(n):
        y.append((b[i] - sum(low[i][t] * y[t] for t in range(i))) / low[i][i])
    x = [0.0] * n
    for i in reversed(range(n)):
        x[i] = (y[i] - sum(low[t][i] * x[t] for t in range(i + 1, n))) / low[i][i]
    return x


PLAUSIBLE = 100.0  # a state more than this many times the scale of a state at its σ is not a solution to report
FLOOR = 4.0  # the rounding floor: this many times the error the model's rounding leaves in f (``precision``) ...
STALL = 0.5  # ... below which an image stops once an evaluation has cut its criterion by less than this factor


def _norms(t):
    """Per-sample 2-norm of ``t`` [B, ...] in ``precise_dtype``, on its device."""
    return t.flatten(1).to(precise_dtype(t.device)).norm(dim=1)


def _gaps(a, b):
    """Per-sample ‖a − b‖, the difference taken in ``precise_dtype``."""
    dtype = precise_dtype(b.device)
    return (a.flatten(1).to(dtype) - b.flatten(1).to(dtype)).norm(dim=1)


def _to_host(columns):
    """Per-image figures (tensors [n] or [n, q] on the state's device) read in one transfer, as a list of floats per
    image: a solver step synchronises with its device once per iteration, never per figure."""
    dtype = precise_dtype(columns[0].device)
    return torch.cat([c.reshape(c.shape[0], -1).to(dtype) for c in columns], 1).cpu().tolist()


def _worst(values):
    """The largest of ``values`` (floats), NaN if one of them is NaN."""
    return math.nan if any(math.isnan(v) for v in values) else max(values)


def _relative(gap, norm, cap=None):
    """A relative RMS ‖a − b‖ / ‖b‖ from ``gap`` = ‖a − b‖ and ``norm`` = ‖b‖ (an all-zero ``b`` counts as 1, so a zero
    residual is 0). With ``cap``, a ``b`` whose norm exceeds it is no solution: its value is at least ‖b‖ / cap (> 1,
    so it never meets a tolerance)."""
    rel = gap / (norm if norm > 0 else 1.0)
    if cap is None:
        return rel
    bound = norm / cap if norm > cap else 0.0 * rel
    return math.nan if math.isnan(rel) or math.isnan(bound) else max(rel, bound)


def _rounding_floor(gap, norm, sigma, sigma_next, precision):
    """``FLOOR`` times the relative error that rounding at unit roundoff ``precision`` leaves in f(z), from ``gap`` =
    ‖z − D‖ and ``norm`` = ‖z‖. The model's raw output (ε, v) is (z − D)/σ' and carries an error of about ``precision``
    times its size; f multiplies it by σ' − σ, so ‖δf‖/‖z‖ ≈ (σ' − σ)/σ' · precision · ‖z − D‖/‖z‖. Where the residual
    stopped falling in bfloat16 it lay at 0.24–1.13 times that estimate on the tiny ComfyUI SD1.5, SDXL and Flux, 0.57
    on full-size SDXL and 3.1–3.7 on full-size Flux-dev (57 blocks; from its third step, where it had stopped
    falling), random weights."""
    return FLOOR * abs(sigma_next - sigma) / sigma_next * precision * _relative(gap, norm)


def _plausible_norm(norm, sigma_next, numel):
    """``PLAUSIBLE`` times the norm a state at σ' has when it starts from a state of norm ``norm`` with ``numel``
    elements: √(‖x‖² + σ'²·numel). An iterate beyond it is not reported as a solution: an x̂₀ predictor whose D barely
    depends on its input puts the first step's fixed point at |z| ~ 1e8·|x₀|, a state no sampler regenerates from in
    float32, and a relative criterion would call it converged. Healthy iterates stay far below (the cap never binds on
    them)."""
    return PLAUSIBLE * math.sqrt(norm * norm + sigma_next ** 2 * numel)


def _lagrange(ts, t):
    """The weights w_j of the polynomial through points at ``ts`` evaluated at t: p(t) = Σ_j w_j y_j (Lagrange form)."""
    weights = []
    for j, tj in enumerate(ts):
        weight = 1.0
        for k, tk in enumerate(ts):
            if k != j:
                weight *= (t - tk) / (tj - tk)
        weights.append(weight)
    return weights


def _on_device(indices, device):
    """A list of batch indices as an index tensor on ``device`` (copied without waiting for the device)."""
    return torch.tensor(indices, dtype=torch.long).to(device, non_blocking=True)


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

      After the first solved step, with no second to draw the line through, s² comes from that step's own
      iterations instead: every pair of iterates at σ_k measured the denoiser's response ΔD = A_k Δz (exactly so
      for the Gaussian: f − z changes by ΔF − Δz, f by ΔF = c (Δz − ΔD)), so the least-squares gain over Anderson's
      window, A_k = 1 − Σ⟨ΔF, Δz⟩ / (c Σ‖Δz‖²), gives s² = A_k σ_k² / (α_k (1 − α_k A_k)). A Gaussian's response is
      along its input, so this fit is made only where ΔF and Δz are mostly aligned (cos² ≥ ½ between the window's
      stacked ΔF and Δz; on the random-weight networks measured the cosine is 0.01–0.46) and 0 < α_k A_k < 1 (a
      positive s²).

    Modes: ``"predicted"`` starts each image from the candidate that predicted that image's previous step best (the
    distance of its start to the state the step converged to); before any has been measured for that image, from
    ``previous D``, except that the Gaussian is tried once at the first step it can be made for that image (it becomes
    available at the low noise levels where data are locally Gaussian and its fit is exact: on the analytic mixture it
    takes the second step of 8 from three evaluations to one). Every choice is the image's own, so an image in a batch
    gets the start it gets alone;
    ``"previous D"`` always from ``previous D``; ``"none"`` at z_0 = x (naive DDIM inversion's start). The first step has
    nothing solved before it and starts at x in every mode; a schedule that starts at σ = 0 gives the polynomials the
    clean image as a point, with ε(x_0, 0) = α'(0) x_0 (0 for ε/v models, −x_0 for rectified flow: the limit of
    (x − D)/σ for any denoiser with D(x, 0) = x), so the line is available from the second step and the parabola
    from the third. Predictions are made only from steps where the image met
    the tolerance (an unconverged state is not on the path); without one, or where it is not finite, the start is x.
    With one evaluation per step (``max_iterations=1``) no step iterates to its criterion, and every step counts (but
    one whose state ran away): a step then costs what naive DDIM inversion costs and starts from the prediction
    instead of x. Measured from 8 steps up it lands far closer; on 4–5-step schedules it can regenerate worse than
    naive inversion (analytic ε mixture, 4 steps: round trip 1.26 against 0.26), naive inversion's errors there
    partly cancelling in the Euler regeneration.
    """

    MODES = ("predicted", "previous D", "none")
    CANDIDATES = (("previous D", 1), ("linear", 2), ("quadratic", 3), ("Gaussian", 1))  # name, solved steps it needs

    def __init__(self, mode, flow=False):
        if mode not in self.MODES:
            raise ValueError(f"warm_start must be one of {self.MODES}, got {mode!r}")
        self.mode, self.flow = mode, flow
        self.solved = []   # (σ_k, x_k, ε_k, met) of the last three solved steps, met: per image, whether it met tol
        self.names = []    # the candidates proposed for the step being solved, in CANDIDATES order
        self.made = None   # their starts, [B, candidates, d], on the device
        self.usable = {}   # candidate name → per image, whether its proposal came from steps the image met tol at
        self.errors = {}   # candidate name → per-image distance of its last proposal to the solved state
        self.fit = None    # per image, the data variance s² of the Gaussian fitted to the steps solved (None: none)
        self.tried = set()  # the images that have started from the Gaussian

    def _alpha(self, sigma):
        return 1.0 - sigma if self.flow else 1.0

    def _q(self, sigma):
        """(a, b) with Tweedie's q = α (x − α D) / σ² = a x + b ε at σ (D = x − σ ε)."""
        alpha = self._alpha(sigma)
        return alpha * (1 - alpha) / sigma ** 2, alpha ** 2 / sigma

    def _gaussian(self, sigma, sigma_next):
        """Per image, the Gaussian's fixed point of the step as weights on (x, ε_k) (None where the fit makes none:
        s² ≤ 0 or not finite, or an improper step). The data mean m = D_k − s² q_k is linear in (x, ε_k) too."""
        a_k, b_k = self._q(sigma)
        a = self._alpha(sigma_next)
        c = (sigma_next - sigma) / sigma_next
        weights = []
        for s2 in self.fit:
            if not 0 < s2 < math.inf:
                weights.append(None)
                continue
            gain = a * s2 / (a * a * s2 + sigma_next ** 2)            # A' = ∂D/∂z at σ'
            den = 1 - c * (1 - gain)
            if not den > 1e-6:
                weights.append(None)
                continue
            shrink = c * (1 - a * gain)
            weights.append(((1 - shrink * (1 - s2 * a_k)) / den, shrink * (sigma + s2 * b_k) / den))
        return weights

    def start(self, x, sigma, sigma_next):
        """z_0 for the step σ → σ' from the last solved state ``x`` [B, ...], the candidate each image starts from, and
        per image (on the device) whether that start was finite (None where every image starts at x); an image whose
        start is not finite starts at x. Every candidate is a combination of x and the last solved ε's with weights
        worked out on the host, so one batched product on the device forms them all."""
        b = x.shape[0]
        self.names, self.made, self.usable = [], None, {}
        if sigma == 0 and not self.solved:  # the clean image, a point for the polynomials; the step starts at x
            self.solved = [(0.0, x, -x if self.flow else torch.zeros_like(x), [True] * b)]
            return x, ["none"] * b, None
        if self.mode == "none" or not self.solved:
            return x, ["none"] * b, None
        sigmas, count = [s for s, _, _, _ in self.solved], len(self.solved)
        weights = []  # per candidate, per image: weights on (x, ε of each solved step)
        for name, n in self.CANDIDATES:
            if count < n or (name != "previous D" and self.mode != "predicted"):
                continue
            if name == "Gaussian" and self.fit is None:
                continue
            drawn = self.solved[-min(count, 2) if name == "Gaussian" else -n:]  # (the Gaussian: its line's two steps)
            met = [all(m[j] for _, _, _, m in drawn) for j in range(b)]  # only from steps that met tol
            if name == "Gaussian":
                per_image = self._gaussian(sigma, sigma_next)
                met = [m and w is not None for m, w in zip(met, per_image)]
                weights.append([[wx] + [0.0] * (count - 1) + [we] if ok else [1.0] + [0.0] * count
                                for (wx, we), ok in zip([w or (1.0, 0.0) for w in per_image], met)])
            else:  # z_0 = x + (σ' − σ) ε̂, ε̂ the polynomial through the last n (σ_k, ε_k) at σ'
                poly = [0.0] * (count - n) + [(sigma_next - sigma) * w for w in _lagrange(sigmas[-n:], sigma_next)]
                weights.append([[1.0] + poly] * b)
            self.names.append(name)
            self.usable[name] = met
        inf = math.inf
        chosen = []
        for j in range(b):
            choice, best = "previous D", inf                         # previous D until measured,
            if self.usable.get("Gaussian", [False] * b)[j] and j not in self.tried:
                choice, best = "Gaussian", 0.0                       # but the Gaussian is tried once first
                self.tried.add(j)
            for name, errors in self.errors.items():
                if name in self.usable and self.usable[name][j] and errors[j] < best:
                    choice, best = name, errors[j]
            chosen.append(choice if self.usable[choice][j] else "none")
        # the candidates and, last, the start itself: one product of per-image weights with (x, ε_1, …) per image
        at_x = [1.0] + [0.0] * count
        table = [[w[j] for w in weights] + [at_x if c == "none" else weights[self.names.index(c)][j]]
                 for j, c in enumerate(chosen)]
        basis = torch.stack([x] + [e for _, _, e, _ in self.solved], 1).flatten(2)        # [B, 1 + count, d]
        made = torch.tensor(table, dtype=basis.dtype).to(x.device, non_blocking=True) @ basis
        self.made = made[:, :-1]
        if all(name == "none" for name in chosen):
            return x, chosen, None
        z = made[:, -1].reshape(x.shape)
        finite = (z - z == 0).flatten(1).all(1)  # x − x is 0 where x is finite, else NaN
        return torch.where(finite.view((-1,) + (1,) * (x.dim() - 1)), z, x), chosen, finite

    def _secant(self, sigma, sigma_next, response):
        """s² of the Gaussian whose denoiser responded at σ' as the step's iterations measured, ``response`` =
        (Σ⟨ΔF, Δz⟩, Σ‖Δz‖², Σ‖ΔF‖²) from ``Anderson.response`` (class docstring); NaN where it fits no Gaussian."""
        if response is None:
            return math.nan
        along, moved, mapped = response
        if not (moved > 0 and along * along >= 0.5 * moved * mapped):  # ΔF mostly along Δz, as a Gaussian's is
            return math.nan
        gain = 1 - along / ((sigma_next - sigma) / sigma_next * moved)  # A = 1 − Σ⟨ΔF, Δz⟩ / (c Σ‖Δz‖²)
        a = self._alpha(sigma_next)
        return gain * sigma_next ** 2 / (a * (1 - a * gain)) if 0 < a * gain < 1 else math.nan

    def solved_step(self, x, x_next, sigma, sigma_next, met, response=None):
        """Record the solved step σ → σ' (state x → x_next; ``met``: per image, whether it met the tolerance) and how
        far each candidate's start was from x_next; with the Gaussian candidate, fit it for the next step (its s² per
        image from the inner products of dq = q' − q and dd = D' − D, or, after the first step, from ``response``: per
        image, how the step's iterations saw f respond, None where it made no pair of iterates). One transfer from the
        device."""
        eps = (x_next - x) / (float(sigma_next) - float(sigma))
        self.solved = (self.solved + [(float(sigma_next), x_next, eps, list(met))])[-3:]
        columns = [] if self.made is None else [(self.made - x_next.flatten(1)[:, None]).norm(dim=2)]
        fit = self.mode == "predicted" and len(self.solved) >= 2 and self.solved[-2][0] != 0
        if fit:
            (s0, x0, e0, _), (s1, x1, e1, _) = self.solved[-2:]
            (a0, b0), (a1, b1) = self._q(s0), self._q(s1)
            basis = torch.stack([x0, e0, x1, e1], 1).flatten(2)                           # [B, 4, d]
            combine = torch.tensor([[-a0, -b0, a1, b1], [-1.0, s0, 1.0, -s1]], dtype=basis.dtype)  # dq, dd
            change = combine.to(x.device, non_blocking=True) @ basis
            columns.append(change @ change.transpose(1, 2))                                # [B, 2, 2]
        figures = _to_host(columns) if columns else []
        self.errors = {name: [row[k] if row[k] < math.inf and ok else math.inf
                              for row, ok in zip(figures, self.usable[name])] for k, name in enumerate(self.names)}
        if fit:
            self.fit = [row[-3] / row[-4] if row[-4] > 0 else math.nan for row in figures]
        else:
            fits = [self._secant(float(sigma), float(sigma_next), r) for r in response or []]
            self.fit = fits if self.mode == "predicted" and any(f < math.inf for f in fits) else None


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
        x: the clean latent at ``sigmas[0]``, shape [B, ...]; batched elements are solved independently (each image's
            result is the one it gets alone, for a model whose output for an image does not depend on the batch; with
            ``"inter-path"`` up to its second path's perturbation, drawn for the whole batch).
        sigmas: ascending noise levels, e.g. a flipped sampling schedule ``[0, …, σ_max]``.
        max_iterations: iterations (model evaluations per image and path) per step at most (≥ 1); ``max_iterations=1`` is
            one evaluation per step: naive DDIM inversion with ``warm_start="none"``; from the predicted start
            otherwise (a predictor–corrector at the price of naive inversion, as FireFlow's reuse of the previous
            velocity is; measured on the tiny ComfyUI models at 28 steps: round trip 3.5e-4–3.3e-3 against 1.1e-2–1.6e-2
            from x).
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
            highest floor), the intra-path residual of the iterate each image hands on (that of its last, or of the
            earlier one it hands on) and (``"inter-path"``) its last inter-path loss, each the worst over the batch,
            and ``trace``: per iteration, the worst intra-path and inter-path values over the
            images still iterating; ``start``: per image, the ``WarmStart`` candidate its iteration started from, and
            ``first_check``: the images that met ``tolerance`` at their first evaluation; ``earlier``: the images that
            ran out of iterations and handed on an earlier iterate, the one that missed least (module docstring);
            ``runaway``: the images whose iteration ended beyond ``PLAUSIBLE`` times the scale of a state at σ'
            (``_plausible_norm``; its last f(z), or Anderson's iterate where it hands that on), a state no sampler
            regenerates from (also in the callback's dict, so that a caller can stop there, even where the image hands
            on an earlier, better iterate). The
            callback's dict also says whether the step's state is ``finite``, known from its norms without another read
            (a state with NaN or inf has a norm that is not finite; its last model output then is not finite either,
            the state being x_i + (σ' − σ)/σ'·(z − D)); False also where a norm overflowed.
        on_call: optional ``on_call(held, used)`` before every model call: ``held`` the rows of the call's batch as
            indices into the images (``b + i`` for image i's second path), ``used`` the rows whose result the iteration
            takes (with ``shrink`` the same; without it the images still iterating); both index tensors on the host.
        warm_start: where each step's iteration starts (``WarmStart``): ``"predicted"`` (default) from the candidate
            prediction that served the image best on its previous step, ``"previous D"`` from the previous step's D
            (ε), ``"none"`` at x_i (naive DDIM inversion's start, the behaviour before). With ``"inter-path"`` both paths
            start from the prediction, the second one perturbed as above. With ``max_iterations=1`` predictions are made
            from every step (none meets a criterion it does not iterate to).
        precision: the unit roundoff of the model's arithmetic (2⁻⁸ bfloat16, 2⁻¹¹ float16, 2⁻²⁴ float32; 0, the
            default, counts it exact). Each evaluation of f then carries a rounding error that no iteration removes
            (in bfloat16 the residual stops falling at 2e-4–5.5e-3, above the node's tolerance), so an image also stops
            where its criterion is below ``_rounding_floor`` and its last evaluation cut it by less than ``STALL``:
            it is at the floor, and further evaluations would not improve the round trip (measured on the GPU
            benchmark's reduced SD1.5 in bfloat16 at 8 steps: 10 → 3 evaluations per image per step, round trip
            5.6e-3 → 4.7e-3).

    Returns: the latent at ``sigmas[-1]`` (with ``return_info``, and the info). Each step hands on f(z) for the z that
    met ``tolerance``; with ``"intra-path"``,
    Anderson (``anderson_window`` > 0) and a warm start, an image that needed two or more evaluations hands on Anderson's
    next iterate instead where that is within the measured residual of f(z). An image that ran out of iterations
    hands on f(z) of its last iterate where that iterate missed least (‖f(z) − z‖), else the iterate that missed least,
    and then reports that iterate's intra-path residual (module docstring). ``warm_start="none"``
    is the solver as it was before warm starts, bit for bit wherever no image hands on an earlier iterate.
    """
    if criterion not in ("intra-path", "inter-path"):
        raise ValueError(f"criterion must be 'intra-path' or 'inter-path', got {criterion!r}")
    extra_args = {} if extra_args is None else extra_args
    two_paths = criterion == "inter-path" and max_iterations > 1
    paths = 2 if two_paths else 1
    levels = torch.as_tensor(sigmas).tolist()  # the schedule read once
    steps = []
    b, numel = x.shape[0], x[0].numel()
    warm = WarmStart(warm_start, flow)
    hand_on = warm.mode != "none" and not two_paths and anderson_window > 0 and max_iterations > 1
    norm_x = [row[0] for row in _to_host([_norms(x)])]
    for i in trange(len(sigmas) - 1, disable=disable):
        sigma, sigma_next = levels[i], levels[i + 1]
        cap = [_plausible_norm(norm, sigma_next, numel) for norm in norm_x]
        x_i = torch.cat([x, x]) if two_paths else x
        start, started, finite = warm.start(x, sigma, sigma_next)
        z = torch.cat([start, start]) if two_paths else start
        if two_paths:
            noise = torch.randn(x.shape, generator=generator, device="cpu", dtype=torch.float32)
            scale = perturbation * (1.0 if flow else (1 + sigma_next ** 2) ** 0.5)
            z[b:] += scale * noise.to(x.device, x.dtype)
        sigma_batch = batch_sigma(z, sigma_next)
        mixer = Anderson(anderson_window)
        out, denoised_out = torch.empty_like(x), torch.empty_like(x)
        intra_out, inter_out, floor_out, norm_x = [0.0] * b, [0.0] * b, [0.0] * b, [0.0] * b
        iterations, floored, previous = [0] * b, [False] * b, [math.inf] * b
        active, index = list(range(b)), None  # the images still iterating; their rows of z on the device (None: all)
        response = [None] * b  # per image, how f responded over Anderson's window (``Anderson.response``)
        best, kept, earlier = [(math.inf, -1, 0, math.inf)] * b, {}, []  # per image: its least miss ‖f(z) − z‖ at a
        # plausible z, that iterate's iteration, row and intra-path residual; the images that hand on that iterate
        calls = evaluations = 0
        trace = []
        for k in range(max_iterations):
            n = len(active)
            rows = torch.tensor(active + [j + b for j in active] if two_paths else active, dtype=torch.long)
            zr = z if index is None else z.index_select(0, index)
            if on_call is not None:
                on_call(rows if shrink else torch.arange(z.shape[0]), rows)
            if shrink:
                denoised = model(zr, sigma_batch[:zr.shape[0]], **extra_args)
                calls, evaluations = calls + 1, evaluations + zr.shape[0]
            else:
                denoised = model(z, sigma_batch, **extra_args)
                denoised = denoised if index is None else denoised.index_select(0, index)
                calls, evaluations = calls + 1, evaluations + z.shape[0]
            x_rows = x_i if index is None else x_i.index_select(0, index)
            step = zr - denoised
            fz = x_rows + (sigma_next - sigma) / sigma_next * step
            residual = fz - zr
            columns = [_norms(residual[:n]), _norms(zr[:n]), _norms(fz[:n])]  # ‖f(z) − z‖, ‖z‖, ‖f(z)‖
            if two_paths:
                columns.append(_gaps(fz[n:], fz[:n]))                           # ‖f(ẑ) − f(z)‖
            if precision:
                columns.append(_norms(step[:n]))                                # ‖z − D‖, for the rounding floor
            if finite is not None and k == 0:
                columns.append(finite)
            gram = mixer.gram(residual, fz, rows) if hand_on or k < max_iterations - 1 else None
            if gram is not None:                                                # each path's Gram matrix, per image
                columns.append(gram.reshape(paths, n, -1).transpose(0, 1))
            keep, handed, intra_now, inter_now, gammas = [], [], [], [], []
            for j, (image, figures) in enumerate(zip(active, _to_host(columns))):
                figures = iter(figures)
                gap, norm, norm_f = next(figures), next(figures), next(figures)
                intra = _relative(gap, norm, cap[image])
                inter = _relative(next(figures), norm_f, cap[image]) if two_paths else intra
                floor = _rounding_floor(next(figures), norm, sigma, sigma_next, precision) if precision else 0.0
                if finite is not None and k == 0 and not next(figures):
                    started[image] = "none"
                at_floor = inter < floor and inter > STALL * previous[image]  # below the floor, no longer falling
                intra_out[image], inter_out[image], floor_out[image], iterations[image] = intra, inter, floor, k + 1
                if (gap if norm <= cap[image] else math.inf) < best[image][0]:  # the step back from z misses by gap
                    best[image] = (gap, k, j, intra)
                previous[image], floored[image], norm_x[image] = inter, at_floor, norm_f
                keep.append(inter >= tolerance and not at_floor)
                intra_now.append(intra)
                inter_now.append(inter)
                if gram is not None:
                    flat = list(figures)
                    size = len(flat) // paths
                    mixing = [mixer.coefficients(flat[q:q + size], torch.finfo(fz.dtype).eps)
                              for q in range(0, len(flat), size)]
                    gammas.append([gamma for gamma, _, _ in mixing])
                    if not two_paths:
                        response[image] = mixer.response(flat)
                    moved, norm_mixed = mixing[0][1:]
                    if hand_on and not keep[-1] and moved <= gap:  # done: hand on Anderson's iterate where it moves
                        handed.append(j)                           # f(z) by at most the residual
                        norm_x[image] = norm_mixed
            trace.append((_worst(intra_now), _worst(inter_now) if two_paths else None))
            go = k < max_iterations - 1 and any(keep)
            ending = [j for j in range(n) if not (go and keep[j])]  # the images whose iteration ends here
            if len(ending) == b:
                out.copy_(fz[:n])
                denoised_out.copy_(denoised[:n])
            elif ending:
                take, into = _on_device(ending, x.device), _on_device([active[j] for j in ending], x.device)
                out.index_copy_(0, into, fz.index_select(0, take))
                denoised_out.index_copy_(0, into, denoised.index_select(0, take))
            kept[k] = (zr, denoised)  # this iteration's states and model outputs, while an image's best is among them
            for j in [j for j in ending if keep[j] and best[active[j]][1] not in (k, -1)]:
                _, it, row, intra = best[active[j]]  # out of iterations, its last iterate not its best: the best
                take, into = _on_device([row], x.device), _on_device([active[j]], x.device)
                out.index_copy_(0, into, kept[it][0].index_select(0, take))
                denoised_out.index_copy_(0, into, kept[it][1].index_select(0, take))
                intra_out[active[j]] = intra  # (``norm_x`` stays the last f(z)'s: where the iteration ran)
                earlier.append(active[j])
            going = {best[active[j]][1] for j in range(n) if go and keep[j]}
            kept = {key: tensors for key, tensors in kept.items() if key in going}
            if gram is None:
                mixed = fz
            elif go or handed:  # per row of the call: the first paths' γ, then the second paths'
                mixed = mixer.mix([gamma for path in zip(*gammas) for gamma in path])
            if handed:
                take = _on_device(handed, x.device)
                out.index_copy_(0, _on_device([active[j] for j in handed], x.device), mixed.index_select(0, take))
            if not go:
                break
            z = mixed if index is None else z.index_copy(0, index, mixed)
            if not all(keep):
                active = [image for image, kept in zip(active, keep) if kept]
                index = _on_device(active + [j + b for j in active] if two_paths else active, x.device)
        final = inter_out if two_paths else intra_out
        met = [value < tolerance or stopped for value, stopped in zip(final, floored)]
        runaway = [image for image in range(b) if norm_x[image] > cap[image]]
        warm.solved_step(x, out, sigma, sigma_next, met if max_iterations > 1 else [i not in runaway for i in range(b)],
                         response)
        x = out
        if callback is not None:
            callback({"x": x, "i": i, "sigma": sigmas[i + 1], "sigma_hat": sigmas[i + 1], "denoised": denoised_out,
                      "runaway": runaway, "finite": all(math.isfinite(norm) for norm in norm_x)})
        if return_info:
            steps.append({"step": i, "sigma": sigma_next, "model_calls": calls, "evaluations": evaluations,
                          "evaluations_per_image": evaluations / b, "iterations": max(iterations),
                          "converged": sum(met), "at_floor": sum(m and v >= tolerance for m, v in zip(met, final)),
                          "floor": _worst(floor_out), "images": b, "intra": _worst(intra_out),
                          "inter": _worst(inter_out) if two_paths else None, "trace": trace, "start": started,
                          "first_check": sum(m and it == 1 for m, it in zip(met, iterations)), "runaway": runaway,
                          "earlier": earlier})
    return (x, {"steps": steps}) if return_info else x
