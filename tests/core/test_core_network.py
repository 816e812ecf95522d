"""Core tier with a tiny random convolutional network (a learned-looking model, not closed form), and the
package import without ComfyUI."""
import pathlib
import sys

import pytest
import torch

from inversion_suite.core import (invert_bdia, invert_fixed_point, invert_obelm, rel_rms, sample_bdia, sample_euler,
                                  sample_obelm)
from inversion_suite.core.toy import TinyConvDenoiser, flow_sigmas, ve_sigmas


def setup(flow, steps=10):
    model = TinyConvDenoiser(flow=flow)
    sigmas = flow_sigmas(steps) if flow else ve_sigmas(steps)
    x0 = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    return model, sigmas, x0


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_fixed_point_beats_naive_on_a_network(flow):
    model, sigmas, x0 = setup(flow)
    with torch.no_grad():
        naive = invert_fixed_point(model, x0, sigmas.flip(0), max_iterations=1, warm_start="none", disable=True)
        fixed = invert_fixed_point(model, x0, sigmas.flip(0), max_iterations=20, tolerance=1e-8, disable=True)
        e_naive = float(rel_rms(sample_euler(model, naive, sigmas, disable=True), x0).max())
        e_fixed = float(rel_rms(sample_euler(model, fixed, sigmas, disable=True), x0).max())
    print(f"flow={flow}: naive {e_naive:.2e}, fixed point {e_fixed:.2e}")
    assert e_fixed < 1e-4 and e_naive > 1e3 * e_fixed


@pytest.mark.parametrize("flow", [False, True], ids=["eps", "flow"])
def test_exact_samplers_round_trip_a_network(flow):
    model, sigmas, x0 = setup(flow)
    with torch.no_grad():
        top, below = invert_bdia(model, x0, sigmas.flip(0), gamma=0.96, flow=flow, disable=True)
        assert float(rel_rms(sample_bdia(model, top, sigmas, gamma=0.96, flow=flow, x_below=below,
                                         disable=True), x0).max()) < 1e-10
        top, below = invert_obelm(model, x0, sigmas.flip(0), disable=True)
        assert float(rel_rms(sample_obelm(model, top, sigmas, x_below=below, disable=True), x0).max()) < 1e-10


def test_package_imports_without_comfyui():
    """The root __init__ and core import where ComfyUI is absent, and import nothing of ComfyUI's."""
    import subprocess
    code = ("import sys; sys.path.insert(0, 'tests'); import hostlib; hostlib.import_pack(); "
            "import inversion_suite, inversion_suite.core; "
            "assert callable(inversion_suite.comfy_entrypoint); "
            "assert not [m for m in sys.modules if m == 'comfy' or m.startswith(('comfy.', 'comfy_api'))]")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=str(pathlib.Path(__file__).resolve().parents[2]))
