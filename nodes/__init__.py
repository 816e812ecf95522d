"""ComfyUI adapters (V3 schema). Imported only by the host, through ``comfy_entrypoint``."""
from comfy_api.v0_0_2 import ComfyExtension

from .bdia import BDIAInvert, BDIASampler
from .fixed_point import FixedPointInversionSampler, FixedPointInvert
from .optimize import FineTuneInversion, PostInversionOptimize
from .oscillation import GroupInversion, OscillationInvert

NODES = [FixedPointInvert, FixedPointInversionSampler, BDIASampler, BDIAInvert, OscillationInvert, GroupInversion,
         PostInversionOptimize, FineTuneInversion]
from .attention import NODES as ATTENTION_NODES; NODES += ATTENTION_NODES  # noqa: E402,E702 (Attention Edit)


class InversionSuiteExtension(ComfyExtension):
    async def get_node_list(self):
        return list(NODES)
