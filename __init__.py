"""Inversion Suite: exact and fixed-point diffusion inversion nodes for ComfyUI.

Importing this package needs only torch; ComfyUI calls ``comfy_entrypoint`` to register the nodes.
"""
__version__ = "0.1.0"


async def comfy_entrypoint():
    from .nodes import InversionSuiteExtension
    return InversionSuiteExtension()
