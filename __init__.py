"""Inversion Suite: exact and fixed-point diffusion inversion nodes for ComfyUI.

Importing this package needs only torch; ComfyUI calls ``comfy_entrypoint`` to register the nodes.
"""
__version__ = "0.1.0"


async def comfy_entrypoint():
    from .nodes import InversionSuiteExtension, install_example_inputs
    install_example_inputs()  # ComfyUI 0.3.64 never calls on_load; newer ones do, and the copy is idempotent
    return InversionSuiteExtension()
