"""Analytic Gaussian-mixture denoisers: closed-form D(x, σ) for tests, benchmarks and the demo.

Data ``x0 ~ Σ_c φ_c N(μ_c, s_c² I)`` in latent-shaped tensors; the state is ``x = α x0 + σ ε`` with
``α = 1`` (ComfyUI's VE space for ε/v models) or ``α = 1 − σ`` (rectified flow). Then
``x | c ~ N(α μ_c, (α² s_c² + σ²) I)`` and the optimal denoiser is the responsibility-weighted

    D(x, σ) = Σ_c w_c(x) [μ_c + α s_c² / (α² s_c² + σ²) (x − α μ_c)].

It is nonlinear and multi-modal, so it shows the oscillation of the third paper.
"""
import torch


class GaussianMixtureDenoiser:
    """Callable ``D(x, sigma_batch)`` for a mixture with means ``means`` [K, ...] and stds ``stds`` [K]."""

    def __init__(self, means, stds, weights=None, flow=False):
        self.means = means.double()
        self.stds = torch.as_tensor(stds, dtype=torch.float64)
        k = self.means.shape[0]
        self.log_weights = (torch.full((k,), 1.0 / k) if weights is None else torch.as_tensor(weights)).double().log()
        self.flow = flow
        self.calls = 0

    def __call__(self, x, sigma, **_):
        self.calls += 1
        dtype = x.dtype
        x = x.double()
        s = torch.as_tensor(sigma, dtype=torch.float64, device=x.device).reshape(-1)[:1].squeeze()
        a = 1 - s if self.flow else torch.ones_like(s)
        var = a ** 2 * self.stds ** 2 + s ** 2                                   # [K]
        flat = x.flatten(1)                                                      # [B, d]
        mu = self.means.flatten(1)                                               # [K, d]
        d = flat.shape[1]
        sq = torch.cdist(flat, a * mu) ** 2                                      # [B, K]
        logp = self.log_weights - 0.5 * sq / var - 0.5 * d * torch.log(var)
        w = torch.softmax(logp, dim=1)                                           # [B, K]
        gain = a * self.stds ** 2 / var                                          # [K]
        post = mu[None] + gain[None, :, None] * (flat[:, None] - a * mu[None])   # [B, K, d]
        return (w[..., None] * post).sum(1).reshape(x.shape).to(dtype)

    def sample(self, n, generator=None, component=None):
        """Draw ``n`` clean latents (from one ``component`` if given)."""
        k = self.means.shape[0]
        c = torch.full((n,), component) if component is not None else torch.multinomial(
            self.log_weights.exp(), n, replacement=True, generator=generator)
        eps = torch.randn((n,) + tuple(self.means.shape[1:]), generator=generator, dtype=torch.float64)
        return self.means[c] + self.stds[c].reshape(-1, *[1] * (self.means.dim() - 1)) * eps


def make_mixture(shape=(4, 8, 8), k=3, spread=0.3, seed=0, flow=False):
    """A reproducible mixture of ``k`` modes with unit-RMS means in latent shape ``shape``."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn((k,) + tuple(shape), generator=g, dtype=torch.float64)
    return GaussianMixtureDenoiser(means, torch.full((k,), spread), flow=flow)


def ve_sigmas(n, sigma_min=0.0292, sigma_max=14.6146, rho=7.0):
    """A descending Karras schedule for ε models in VE space, ending with 0 (n steps)."""
    ramp = torch.linspace(0, 1, n, dtype=torch.float64)
    s = (sigma_max ** (1 / rho) + ramp * (sigma_min ** (1 / rho) - sigma_max ** (1 / rho))) ** rho
    return torch.cat([s, s.new_zeros(1)])


def flow_sigmas(n, shift=3.0):
    """A descending SD3-style shifted schedule for rectified flow, 1 → 0 (n steps)."""
    t = torch.linspace(1, 0, n + 1, dtype=torch.float64)
    return shift * t / (1 + (shift - 1) * t)


class TinyConvDenoiser(torch.nn.Module):
    """A small random convolutional ε-network wrapped as a denoiser, for a learned-looking (non-analytic) model.

    VE: ``D = x − σ·ε̂(x/√(1+σ²), σ)``; flow: ``D = x − σ·v̂(x, σ)``, as ComfyUI's EPS and CONST wrap a network.
    """

    def __init__(self, channels=4, width=32, seed=0, flow=False):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.flow, self.calls = flow, 0
        self.net = torch.nn.Sequential(torch.nn.Conv2d(channels + 1, width, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(width, width, 3, padding=1), torch.nn.SiLU(),
                                       torch.nn.Conv2d(width, channels, 3, padding=1))
        with torch.no_grad():
            for p in self.net.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.1)

    def forward(self, x, sigma, **_):
        self.calls += 1
        s = torch.as_tensor(sigma, dtype=x.dtype, device=x.device).reshape(-1, 1, 1, 1).expand(x.shape[0], 1, 1, 1)
        inp = x if self.flow else x / torch.sqrt(1 + s ** 2)
        out = self.net(torch.cat([inp, s.expand(-1, 1, *x.shape[2:])], 1).float()).to(x.dtype)
        return x - s * out
