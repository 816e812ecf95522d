"""The ComfyUI node API the pack is written against: the pinned ``comfy_api.v0_0_2`` (a maintainer's advice:
versioned APIs stay backward compatible), with ``comfy_api.latest`` where a ComfyUI has no v0_0_2."""
try:
    from comfy_api.v0_0_2 import ComfyExtension, io
except ImportError:  # pragma: no cover - exercised by a test that hides v0_0_2
    from comfy_api.latest import ComfyExtension, io

__all__ = ["ComfyExtension", "io"]
