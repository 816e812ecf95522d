"""ComfyUI API versions: the pack registers through the pinned ``comfy_api.v0_0_2``, falls back to
``comfy_api.latest`` on a ComfyUI without it, and passes the checks ComfyUI 0.38's loader makes
(``isinstance(ext, comfy_api.latest.ComfyExtension)``, then ``await ext.on_load()``, then the node list)."""
import asyncio
import subprocess
import sys
import textwrap

import hostlib

hostlib.require_comfyui()


def load_as_0_38_does():
    import comfy_api.latest
    import inversion_suite
    ext = asyncio.run(inversion_suite.comfy_entrypoint())
    assert isinstance(ext, comfy_api.latest.ComfyExtension)
    asyncio.run(ext.on_load())
    return asyncio.run(ext.get_node_list())


def test_extension_loads_as_comfyui_0_38_loads_it():
    from inversion_suite.nodes import NODES
    nodes = load_as_0_38_does()
    ids = [n.GET_SCHEMA().node_id for n in nodes]
    assert len(nodes) == len(NODES) >= 8 and len(set(ids)) == len(ids)
    assert all(i.startswith("InversionSuite") for i in ids)
    assert {"FixedPointInvert", "BDIASampler", "OscillationInvert", "GroupInversion",
            "PostInversionOptimize"} <= {n.__name__ for n in nodes}


def test_falls_back_to_comfy_api_latest_without_v0_0_2():
    """A ComfyUI without ``comfy_api.v0_0_2`` (simulated by blocking the module) still gets every node."""
    script = textwrap.dedent(f"""
        import asyncio, importlib.util, sys
        sys.path.append({str(hostlib.COMFYUI)!r})
        from comfy.cli_args import args; args.cpu = True
        sys.modules["comfy_api.v0_0_2"] = None          # as if this ComfyUI had no v0_0_2
        spec = importlib.util.spec_from_file_location("inversion_suite", {str(hostlib.ROOT / "__init__.py")!r},
                                                      submodule_search_locations=[{str(hostlib.ROOT)!r}])
        pack = importlib.util.module_from_spec(spec); sys.modules["inversion_suite"] = pack
        spec.loader.exec_module(pack)
        ext = asyncio.run(pack.comfy_entrypoint())
        nodes = asyncio.run(ext.get_node_list())
        import comfy_api.latest
        assert sys.modules["inversion_suite.nodes.host"].io is comfy_api.latest.io
        print(len(nodes), sorted(n.GET_SCHEMA().node_id for n in nodes)[0])
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    from inversion_suite.nodes import NODES
    assert out.stdout.split()[0] == str(len(NODES))
