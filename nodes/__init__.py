"""ComfyUI adapters (V3 schema). Imported only by the host, through ``comfy_entrypoint``."""
from .api import ComfyExtension
from .bdia import BDIAInvert, BDIASampler
from .fixed_point import FixedPointInversionSampler, FixedPointInvert
from .optimize import FineTuneInversion, PostInversionOptimize
from .oscillation import GroupInversion, OscillationInvert

NODES = [FixedPointInvert, FixedPointInversionSampler, BDIASampler, BDIAInvert, OscillationInvert, GroupInversion,
         PostInversionOptimize, FineTuneInversion]


class InversionSuiteExtension(ComfyExtension):
    """Registers the pack's nodes. ComfyUI 0.38 awaits ``on_load`` before ``get_node_list``; 0.3.64 never calls
    it, so nothing the nodes need may depend on it."""

    async def on_load(self):
        return None

    async def get_node_list(self):
        return list(NODES)
