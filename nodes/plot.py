"""Small IMAGE renderers (ComfyUI IMAGE: [1, H, W, 3] floats in [0, 1]); presentation only."""
import torch

# viridis anchors, dark to bright
_ANCHORS = torch.tensor([[0.267, 0.005, 0.329], [0.229, 0.322, 0.546], [0.128, 0.567, 0.551],
                         [0.369, 0.789, 0.383], [0.993, 0.906, 0.144]])


def colormap(values):
    """Map values in [0, 1] to viridis-like RGB."""
    v = values.clamp(0, 1) * (len(_ANCHORS) - 1)
    lo = v.floor().long().clamp(max=len(_ANCHORS) - 2)
    t = (v - lo)[..., None]
    return _ANCHORS[lo] * (1 - t) + _ANCHORS[lo + 1] * t


def matrix_image(matrix, size=512):
    """A square heat map of a non-negative matrix, nearest-neighbour upscaled to about ``size`` pixels."""
    m = matrix.float().cpu()
    m = m / m.max().clamp_min(1e-30)
    scale = max(1, size // m.shape[0])
    rgb = colormap(m).repeat_interleave(scale, 0).repeat_interleave(scale, 1)
    return rgb[None].contiguous()


def curve_image(values, width=512, height=256):
    """A line plot of ``values`` (e.g. a loss curve) on a log scale, white on dark."""
    v = torch.as_tensor(values, dtype=torch.float64).clamp_min(1e-30).log10()
    img = torch.full((height, width, 3), 0.08)
    if v.numel() == 0:
        return img[None]
    lo, hi = float(v.min()), float(v.max())
    xs = torch.linspace(0, width - 1, v.numel()).round().long()
    ys = ((hi - v) / max(hi - lo, 1e-12) * (height - 1)).round().long()
    for i in range(v.numel()):
        img[max(ys[i] - 1, 0):ys[i] + 2, max(xs[i] - 1, 0):xs[i] + 2] = torch.tensor([0.99, 0.91, 0.14])
    return img[None]
