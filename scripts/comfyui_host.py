"""How the scripts reach the pack and a real ComfyUI, as the tests do, without importing anything from tests/: the
repository imported as the package ``inversion_suite``; ComfyUI from ``COMFYUI_PATH``, else the newest tree that
``scripts/test.sh`` unpacked into ``.cache/``."""
import importlib.util
import os
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parents[1]


def import_pack():
    """The repository root as the package ``inversion_suite`` (as ComfyUI imports it, under its folder's name)."""
    if "inversion_suite" not in sys.modules:
        spec = importlib.util.spec_from_file_location("inversion_suite", ROOT / "__init__.py",
                                                      submodule_search_locations=[str(ROOT)])
        module = importlib.util.module_from_spec(spec)
        sys.modules["inversion_suite"] = module
        spec.loader.exec_module(module)
    return sys.modules["inversion_suite"]


def comfyui_path():
    """``COMFYUI_PATH``, else the newest ComfyUI tree in ``.cache/`` (None when there is none)."""
    if os.environ.get("COMFYUI_PATH"):
        return pathlib.Path(os.environ["COMFYUI_PATH"]).expanduser()
    trees = sorted(ROOT.glob(".cache/ComfyUI-*/comfy/samplers.py"), key=lambda p: [
        int(part) if part.isdigit() else 0 for part in p.parents[1].name.split("-", 1)[1].split(".")])
    return trees[-1].parents[1] if trees else None


def use_comfyui(cpu=True, required=True):
    """Put ComfyUI on ``sys.path`` and import it for the CPU (``cpu``) or the GPU, progress bars off. Returns whether
    one was found; exits with the reason when ``required``."""
    path = comfyui_path()
    if path is None or not (path / "comfy" / "samplers.py").is_file():
        if required:
            sys.exit(f"no ComfyUI at {path or '.cache/'} (set COMFYUI_PATH, or run ./scripts/test.sh once)")
        return False
    if str(path) not in sys.path:
        sys.path.append(str(path))
    from comfy.cli_args import args
    args.cpu = cpu
    import comfy.model_management  # noqa: F401  (after args.cpu)
    import comfy.utils
    comfy.utils.PROGRESS_BAR_ENABLED = False
    import_pack()
    return True


def start_dynamic_vram():
    """The first half of ComfyUI's own Dynamic VRAM start-up (``main.py``, 0.30+), which ComfyUI runs before torch is
    imported: load comfy-aimdo. Returns whether it loaded (False where there is none, as with 0.3.64)."""
    try:
        import comfy_aimdo.control
    except ImportError:
        return False
    return bool(comfy_aimdo.control.init())


def enable_dynamic_vram():
    """The second half, once ComfyUI is imported for the GPU (``main.py``): comfy-aimdo on every torch device, then
    ComfyUI's loaders build ``ModelPatcherDynamic``. Returns whether Dynamic VRAM is on: only with ComfyUI's flags
    allowing it (``--cpu`` does not), an NVIDIA GPU, torch 2.8+ and comfy-aimdo started."""
    try:
        import comfy_aimdo.control
        from comfy.cli_args import enables_dynamic_vram
    except ImportError:
        return False
    import comfy.memory_management
    import comfy.model_management as mm
    import comfy.model_patcher
    if not (enables_dynamic_vram() and mm.is_nvidia() and mm.torch_version_numeric >= (2, 8)):
        return False
    if not comfy_aimdo.control.init_devices(d.index for d in mm.get_all_torch_devices()):
        return False
    comfy_aimdo.control.set_log_info()  # ComfyUI's default console level
    comfy.model_patcher.CoreModelPatcher = comfy.model_patcher.ModelPatcherDynamic
    comfy.memory_management.aimdo_enabled = True
    return True
