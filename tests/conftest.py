"""Makes the repository root importable as the package ``inversion_suite`` (as ComfyUI imports it under
whatever folder name it has), without installing anything, and the scripts' tooling (the headless ComfyUI server and
the workflow checker, scripts/comfyui_server.py and scripts/workflow_tools.py) importable by the tests."""
import sys

import pytest

import hostlib

hostlib.import_pack()
sys.path.insert(0, str(hostlib.ROOT / "scripts"))


@pytest.fixture(scope="module", params=["sd15", "sd3", "flux"])
def family(request):
    """Host tier: each tiny model family in turn."""
    return request.param


@pytest.fixture(scope="module")
def model(family):
    """Host tier: a tiny random-weight model of ``family`` (imports ComfyUI only when a host test asks)."""
    import hostlib
    return hostlib.tiny_model(family)


@pytest.fixture(scope="session")
def server():
    """Host tier: one headless ComfyUI server (``main.py --cpu``) for every server module of the run."""
    import comfyui_server as server_mod
    s = server_mod.Server()
    yield s
    s.stop()
