"""Host tier: the pictures the nodes return carry their labelled elements (rendered from known data: expected
size, not blank, title/axis text, colour scale, data drawn where the data says), and Fixed-Point Invert returns
its convergence picture and its report as UI text."""
import pytest
import torch

import hostlib

hostlib.require_comfyui()

from inversion_suite.nodes import plot  # noqa: E402
from inversion_suite.nodes.fixed_point import FixedPointInvert  # noqa: E402

DARK = 0.6  # text and axis lines are drawn in near-black on white (anti-aliased)


def ink(image, box):
    """Fraction of dark (text/line) pixels in box = (x0, y0, x1, y1)."""
    x0, y0, x1, y1 = box
    region = image[0, y0:y1, x0:x1]
    return float((region.mean(-1) < DARK).float().mean())


def check_canvas(image, size):
    w, h = size
    assert image.shape == (1, h, w, 3) and image.dtype == torch.float32
    assert 0.0 <= float(image.min()) and float(image.max()) <= 1.0
    assert float(image.std()) > 0.05  # not blank
    assert ink(image, (w // 4, 0, 3 * w // 4, 36)) > 0.01  # a title


def test_distance_map_has_axes_colour_scale_and_chequer():
    z = torch.zeros(12, 4)
    z[1::2] += 1.0  # period 2: distance 1 between odd and even iterates, 0 within a cluster
    image = plot.distance_map(torch.cdist(z, z), period=2, burn_in=2)
    check_canvas(image, plot.MAP_SIZE)
    left, top, side = 100, 70, 430
    assert ink(image, (0, top, left - 5, top + side)) > 0.003  # y tick labels and axis label
    assert ink(image, (left, top + side + 5, left + side, top + side + 60)) > 0.003  # x ticks and label
    bar = image[0, top + 5:top + side - 5, left + side + 40 + 11]
    assert float((bar[0] - bar[-1]).abs().sum()) > 0.5  # colour scale runs from bright (top) to dark (bottom)
    cell = side / 12
    pick = lambda i, j: image[0, int(top + (i + 0.5) * cell), int(left + (j + 0.5) * cell)]  # noqa: E731
    assert torch.allclose(pick(4, 4), pick(4, 6), atol=0.02)  # same cluster: same (dark) colour
    assert float((pick(4, 5) - pick(4, 4)).abs().sum()) > 0.5  # other cluster: far apart on the scale


def test_loss_curve_has_axes_and_values():
    losses = [1.0 * 0.7 ** i for i in range(30)]
    image = plot.loss_curve(losses)
    check_canvas(image, plot.CURVE_SIZE)
    w, h = plot.CURVE_SIZE
    assert ink(image, (0, 70, 95, h - 70)) > 0.003  # y ticks (values) and label
    assert ink(image, (100, h - 65, w - 30, h)) > 0.003  # x ticks and label
    blue = (image[0, :, :, 2] > 0.55) & (image[0, :, :, 0] < 0.3)
    rows = blue.nonzero()[:, 0]
    cols = blue.nonzero()[:, 1]
    assert len(rows) > 200  # the curve is drawn ...
    first, last = rows[cols < 130].float().mean(), rows[cols > w - 60].float().mean()
    assert first < last - 150  # ... falling from the top left to the bottom right


def test_convergence_chart_shows_residuals_tolerance_and_calls():
    diagnostics = [{"step": i, "sigma": 0.1 * i, "model_calls": 2 + i % 3, "iterations": 2 + i % 3, "intra": 1e-3 * 0.5 ** i,
                    "inter": 1e-4 * 0.5 ** i} for i in range(10)]
    image = plot.convergence_chart(diagnostics, tolerance=1e-5, max_iterations=10)
    check_canvas(image, plot.CONVERGENCE_SIZE)
    red = (image[0, :, :, 0] > 0.7) & (image[0, :, :, 1] < 0.3)
    assert int(red[70:300].sum()) > 100  # the dashed tolerance line and its label in the residual panel
    blue = (image[0, :, :, 2] > 0.55) & (image[0, :, :, 0] < 0.3)
    assert int(blue[360:530].sum()) > 2000  # the bars of model calls per step
    assert ink(image, (0, 360, 95, 530)) > 0.003  # calls axis labelled


def test_report_ui_is_v3_text():
    assert plot.report_ui("FixedPointInvert: 3 steps") == {"text": ["FixedPointInvert: 3 steps"]}


def test_fixed_point_invert_returns_convergence_picture_and_ui_text():
    model = hostlib.tiny_model("sd15")
    latent = hostlib.image_latent("sd15", batch=1, size=8)
    with torch.inference_mode():
        out = FixedPointInvert.execute(model=model, latent=latent, sigmas=hostlib.sigmas(model, 3),
                                       guider=hostlib.guider(model, "sd15"), max_iterations=4, tolerance=1e-5,
                                       criterion="inter-path", anderson_window=3, perturbation=0.5, seed=0)
    inverted, noise, report, convergence = out.args
    assert convergence.shape == (1, plot.CONVERGENCE_SIZE[1], plot.CONVERGENCE_SIZE[0], 3)
    assert out.ui == {"text": [report]} and report.startswith("FixedPointInvert: 3 steps")


@pytest.mark.parametrize("name", ["distance_map", "loss_curve", "convergence_chart"])
def test_pictures_fall_back_without_pillow(monkeypatch, name):
    monkeypatch.setattr(plot, "Image", None)
    args = {"distance_map": (torch.rand(6, 6),), "loss_curve": ([1.0, 0.5, 0.25],),
            "convergence_chart": ([{"step": 0, "sigma": 0.1, "model_calls": 2, "iterations": 2, "intra": 1e-3, "inter": 1e-4}],
                                  1e-5, 10)}[name]
    image = getattr(plot, name)(*args)
    assert image.ndim == 4 and image.shape[-1] == 3 and float(image.std()) > 0
