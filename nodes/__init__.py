"""ComfyUI adapters (V3 schema). Imported only by the host, through ``comfy_entrypoint``."""
import logging
import pathlib
import shutil

from .host import ComfyExtension
from .attention import AttentionEditInject, AttentionEditRecord, AttentionEditReport
from .bdia import BDIAInvert, BDIASampler
from .fixed_point import FixedPointInversionSampler, FixedPointInvert
from .optimize import FineTuneInversion, PostInversionOptimize
from .oscillation import GroupInversion, OscillationInvert

NODES = [FixedPointInvert, FixedPointInversionSampler, BDIASampler, BDIAInvert, OscillationInvert, GroupInversion,
         PostInversionOptimize, FineTuneInversion, AttentionEditRecord, AttentionEditInject, AttentionEditReport]


EXAMPLE_INPUTS = pathlib.Path(__file__).resolve().parents[1] / "example_inputs"


def install_example_inputs(input_dir=None):
    """Copy the pack's example images (scripts/make_examples.py) into ComfyUI's input folder so the bundled
    workflows find them; a file that is already there (the user's, or an earlier copy) is never overwritten.
    Returns the names copied."""
    if input_dir is None:
        import folder_paths
        input_dir = folder_paths.get_input_directory()
    target = pathlib.Path(input_dir)
    copied = []
    try:
        target.mkdir(parents=True, exist_ok=True)
        for source in sorted(EXAMPLE_INPUTS.glob("*.png")):
            destination = target / source.name
            if not destination.exists():
                shutil.copyfile(source, destination)
                copied.append(source.name)
    except OSError as e:  # a read-only input folder must not stop the nodes from loading
        logging.warning("Inversion Suite: could not copy the example inputs to %s: %s", target, e)
    if copied:
        logging.info("Inversion Suite: copied %d example inputs to %s", len(copied), target)
    return copied


class InversionSuiteExtension(ComfyExtension):
    """Registers the pack's nodes. ComfyUI 0.38 awaits ``on_load`` before ``get_node_list``; 0.3.64 never calls
    it, so the entrypoint installs the example inputs too."""

    async def on_load(self):
        install_example_inputs()

    async def get_node_list(self):
        return list(NODES)
