"""The pictures and the on-node reports the nodes return; presentation only, no mathematics.

Pictures are ComfyUI IMAGEs ([1, H, W, 3] floats in [0, 1]) drawn with Pillow, which every ComfyUI install
already has (it is in ComfyUI's requirements): headless, no new dependency, and the same picture everywhere.
Where Pillow cannot be imported the pictures fall back to a plain colour-mapped matrix or curve without text.
"""
import math

import torch

# viridis anchors, dark to bright
_ANCHORS = torch.tensor([[0.267, 0.005, 0.329], [0.229, 0.322, 0.546], [0.128, 0.567, 0.551],
                         [0.369, 0.789, 0.383], [0.993, 0.906, 0.144]])
INK, GRID, PAPER = (30, 30, 30), (215, 215, 215), (255, 255, 255)
LINE, ACCENT = (31, 119, 180), (214, 39, 40)
MAP_SIZE, CURVE_SIZE, CONVERGENCE_SIZE = (720, 600), (720, 420), (720, 600)

try:
    import numpy as np
    from PIL import Image, ImageDraw, ImageFont
except ImportError:  # pragma: no cover - ComfyUI always ships Pillow and numpy
    Image = None


def colormap(values):
    """Map values in [0, 1] to viridis-like RGB."""
    v = values.clamp(0, 1) * (len(_ANCHORS) - 1)
    lo = v.floor().long().clamp(max=len(_ANCHORS) - 2)
    t = (v - lo)[..., None]
    return _ANCHORS[lo] * (1 - t) + _ANCHORS[lo + 1] * t


# ---------------------------------------------------------------- on-node reports
def report_ui(text):
    """The node's report as V3 UI text (kept in the history and sent with the `executed` message), also shown on
    the node while it is on screen through the server's progress-text channel (no frontend extension needed)."""
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
        context, server = get_executing_context(), getattr(PromptServer, "instance", None)
        if context is not None and server is not None and hasattr(server, "send_progress_text"):
            server.send_progress_text(text, context.node_id)
    except ImportError:  # outside a ComfyUI server (tests calling execute directly)
        pass
    return {"text": [text]}


# ---------------------------------------------------------------- drawing helpers (Pillow)
def _font(size):
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1: fixed bitmap font
        return ImageFont.load_default()


def _to_image(img):
    return torch.from_numpy(np.asarray(img.convert("RGB"), dtype=np.float32) / 255.0)[None].contiguous()


def _fmt(v):
    if v == 0:
        return "0"
    a = abs(v)
    if a >= 1e4 or a < 1e-2:
        mantissa, exponent = f"{v:.1e}".split("e")
        return f"{mantissa.rstrip('0').rstrip('.')}e{int(exponent)}"
    return f"{v:.3g}"


def _linear_ticks(lo, hi, count=5):
    if hi <= lo:
        return [lo]
    raw = (hi - lo) / count
    step = 10 ** math.floor(math.log10(raw))
    step *= next(m for m in (1, 2, 5, 10) if m * step >= raw)
    first = math.ceil(lo / step - 1e-9) * step
    return [first + i * step for i in range(int((hi - first) / step + 1e-9) + 1)]


class _Axes:
    """One plot box with data-to-pixel maps, ticks, labels and a frame."""

    def __init__(self, draw, box, x_range, y_range, log_y=False):
        self.draw, self.box, self.log_y, self.grid = draw, box, log_y, True
        (self.x0, self.x1), (y0, y1) = x_range, y_range
        if log_y:
            y0, y1 = math.log10(max(y0, 1e-300)), math.log10(max(y1, 1e-300))
            y0, y1 = math.floor(y0), max(math.ceil(y1), math.floor(y0) + 1)
        elif y1 == y0:
            y0, y1 = y0 - 1, y1 + 1
        self.y0, self.y1 = y0, y1

    def px(self, x, y):
        left, top, right, bottom = self.box
        fx = 0.5 if self.x1 == self.x0 else (x - self.x0) / (self.x1 - self.x0)
        yv = math.log10(max(y, 1e-300)) if self.log_y else y
        fy = (yv - self.y0) / (self.y1 - self.y0)
        return left + fx * (right - left), bottom - fy * (bottom - top)

    def frame(self, x_label, y_label, x_ticks, font, y_ticks=None):
        left, top, right, bottom = self.box
        d = self.draw
        if y_ticks is not None:
            pass
        elif self.log_y:
            y_ticks = [10.0 ** e for e in range(int(self.y0), int(self.y1) + 1)]
            if len(y_ticks) > 7:
                y_ticks = y_ticks[::math.ceil(len(y_ticks) / 7)]
        else:
            y_ticks = _linear_ticks(self.y0, self.y1)
        for t in y_ticks:
            _, y = self.px(self.x0, t)
            if self.grid:
                d.line([(left, y), (right, y)], fill=GRID)
            d.line([(left - 5, y), (left, y)], fill=INK)
            d.text((left - 8, y), _fmt(t), fill=INK, font=font, anchor="rm")
        for t in x_ticks:
            x, _ = self.px(t, 10 ** self.y0 if self.log_y else self.y0)
            d.line([(x, bottom), (x, bottom + 5)], fill=INK)
            d.text((x, bottom + 8), _fmt(t), fill=INK, font=font, anchor="mt")
        d.rectangle(self.box, outline=INK)
        d.text(((left + right) / 2, bottom + 30), x_label, fill=INK, font=font, anchor="mt")
        label = Image.new("RGBA", (int(bottom - top), 24), (0, 0, 0, 0))
        ImageDraw.Draw(label).text((label.width / 2, 12), y_label, fill=INK, font=font, anchor="mm")
        return label.rotate(90, expand=True), (int(left - 80), int(top))


def _canvas(size, title, subtitle=None):
    img = Image.new("RGB", size, PAPER)
    d = ImageDraw.Draw(img)
    d.text((size[0] / 2, 12), title, fill=INK, font=_font(19), anchor="mt")
    if subtitle:
        d.text((size[0] / 2, 38), subtitle, fill=(90, 90, 90), font=_font(14), anchor="mt")
    return img, d


def _paste_label(img, label_and_pos):
    label, pos = label_and_pos
    img.paste(label, pos, label)


def _x_ticks(n, start=0):
    if n <= 1:
        return [start]
    return [t for t in _linear_ticks(start, start + n - 1, 6) if float(t).is_integer()]


# ---------------------------------------------------------------- the pictures
def distance_map(matrix, period=None, burn_in=0):
    """Heat map of the iterates' pairwise distances with iterate-index axes and a colour scale.

    A chequer pattern of period p (from iterate ``burn_in`` on) means the iterates oscillate between p clusters.
    """
    m = matrix.detach().float().cpu()
    if Image is None:
        return matrix_image(m)
    n = m.shape[0]
    hi = float(m.max()) if m.numel() else 0.0
    norm = m / max(hi, 1e-30)
    subtitle = (f"period {period} from iterate {burn_in}: a chequer of period p = p clusters; dark = close"
                if period else "a chequer of period p = p clusters; dark = close")
    img, d = _canvas(MAP_SIZE, "Distances between iterates |z_i - z_j|", subtitle)
    font = _font(13)
    left, top, side = 100, 70, 430
    rgb = (colormap(norm) * 255).round().to(torch.uint8).numpy()
    img.paste(Image.fromarray(rgb, "RGB").resize((side, side), Image.NEAREST), (left, top))
    axes = _Axes(d, (left, top, left + side, top + side), (-0.5, n - 0.5), (n - 0.5, -0.5))
    axes.grid = False
    _paste_label(img, axes.frame("iterate index j", "iterate index i", _x_ticks(n), font, _x_ticks(n)))
    if 0 < burn_in < n:
        x, _ = axes.px(burn_in - 0.5, 0)
        d.line([(x, top), (x, top + side)], fill=ACCENT, width=2)
        d.text((x - 3, top + side - 3), "burn-in", fill=ACCENT, font=font, anchor="rb")
    # colour scale
    bar_left, bar_w = left + side + 40, 22
    ramp = colormap(torch.linspace(1, 0, side)[:, None].expand(side, bar_w))
    img.paste(Image.fromarray((ramp * 255).round().to(torch.uint8).numpy(), "RGB"), (bar_left, top))
    d.rectangle((bar_left, top, bar_left + bar_w, top + side), outline=INK)
    for t in _linear_ticks(0.0, hi if hi > 0 else 1.0):
        y = top + side - (t / (hi if hi > 0 else 1.0)) * side
        d.line([(bar_left + bar_w, y), (bar_left + bar_w + 5, y)], fill=INK)
        d.text((bar_left + bar_w + 8, y), _fmt(t), fill=INK, font=font, anchor="lm")
    d.text((bar_left + bar_w / 2, top + side + 8), "distance", fill=INK, font=font, anchor="mt")
    return _to_image(img)


def loss_curve(values, title="Loss per optimisation step", good="falling and levelling off = converged"):
    """Loss against step with labelled axes, the first and last values written on the plot."""
    v = [float(x) for x in values]
    if Image is None:
        return curve_image(v)
    img, d = _canvas(CURVE_SIZE, title, f"good: {good}")
    font = _font(13)
    box = (100, 70, CURVE_SIZE[0] - 30, CURVE_SIZE[1] - 70)
    if not v:
        d.text(((box[0] + box[2]) / 2, (box[1] + box[3]) / 2), "no values", fill=INK, font=font, anchor="mm")
        return _to_image(img)
    positive = [x for x in v if x > 0 and math.isfinite(x)] or [1.0]
    lo, hi = min(positive), max(positive)
    log_y = hi / lo > 10
    axes = _Axes(d, box, (0, max(len(v) - 1, 1)), (lo, hi) if log_y else (min(v + [0.0]), hi * 1.05), log_y)
    _paste_label(img, axes.frame("optimisation step", "loss (log scale)" if log_y else "loss",
                                 _x_ticks(len(v)), font))
    points = [axes.px(i, max(x, lo)) for i, x in enumerate(v)]
    if len(points) > 1:
        d.line(points, fill=LINE, width=2)
    for (x, y), text, anchor in ((points[0], f"start {_fmt(v[0])}", "lb"), (points[-1], f"end {_fmt(v[-1])}", "rb")):
        d.ellipse((x - 4, y - 4, x + 4, y + 4), fill=ACCENT)
        d.text((x + (6 if anchor == "lb" else -6), y - 6), text, fill=ACCENT, font=font, anchor=anchor)
    return _to_image(img)


def convergence_chart(diagnostics, tolerance, max_iterations, criterion="inter-path"):
    """Fixed-point inversion per step: the final residual (log scale, tolerance dashed) and the iterations."""
    steps = [int(d["step"]) for d in diagnostics]
    key = "inter" if criterion == "inter-path" else "intra"
    residual = [float(d[key] if d.get(key) is not None else d["intra"]) for d in diagnostics]
    calls = [int(d["iterations"]) for d in diagnostics]
    if Image is None:
        return curve_image(residual)
    img, d = _canvas(CONVERGENCE_SIZE, "Fixed-point inversion: convergence per step",
                     "good: residual under the dashed tolerance with few iterations per step")
    font = _font(13)
    if not steps:
        return _to_image(img)
    xr = (min(steps) - 0.5, max(steps) + 0.5)
    ticks = _x_ticks(len(steps), min(steps))
    finite = [r for r in residual if r > 0 and math.isfinite(r)] or [tolerance]
    top = _Axes(d, (100, 70, CONVERGENCE_SIZE[0] - 30, 300), xr,
                (min(finite + [tolerance]), max(finite + [tolerance])), log_y=True)
    _paste_label(img, top.frame("", f"{criterion} residual", ticks, font))
    x0, _ = top.px(xr[0], tolerance)
    x1, y = top.px(xr[1], tolerance)
    for xs in range(int(x0), int(x1), 12):
        d.line([(xs, y), (min(xs + 6, x1), y)], fill=ACCENT, width=2)
    d.text((x1 - 4, y - 3), f"tolerance {_fmt(tolerance)}", fill=ACCENT, font=font, anchor="rb")
    points = [top.px(s, max(r, 1e-300)) for s, r in zip(steps, residual)]
    if len(points) > 1:
        d.line(points, fill=LINE, width=2)
    for x, y in points:
        d.ellipse((x - 3, y - 3, x + 3, y + 3), fill=LINE)
    bottom = _Axes(d, (100, 360, CONVERGENCE_SIZE[0] - 30, CONVERGENCE_SIZE[1] - 70), xr, (0, max_iterations + 1))
    _paste_label(img, bottom.frame("inversion step (clean -> noise)", "iterations", ticks, font))
    half = max(2.0, 0.35 * (bottom.px(1, 0)[0] - bottom.px(0, 0)[0]))
    for s, c in zip(steps, calls):
        x, y = bottom.px(s, c)
        _, base = bottom.px(s, 0)
        d.rectangle((x - half, y, x + half, base), fill=LINE if c < max_iterations else ACCENT)
    _, y = bottom.px(xr[0], max_iterations)
    d.line([(bottom.box[0], y), (bottom.box[2], y)], fill=ACCENT)
    d.text((bottom.box[2] - 4, y - 3), f"max_iterations {max_iterations} (red: not converged)", fill=ACCENT,
           font=font, anchor="rb")
    return _to_image(img)


# ---------------------------------------------------------------- text-free fallbacks
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
