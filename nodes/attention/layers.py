"""Which attention layers an edit uses: the model's architecture (UNet or DiT), layer names, the user's block selection."""
import comfy.ldm.modules.attention as comfy_attention

from ..common import fail
from .families import layout_of


def classify(patcher):
    """('unet', layers, None) or ('dit', layers, None); layers are UNet (group, id, transformer_index) or DiT (kind, i)
    with kind 'double', 'single' or 'block' (``families``). ('latent', [], reason) for a model whose attention the pack
    cannot edit: a masked edit still works there (it needs only the source's prediction per step and its clean
    latent)."""
    dm = patcher.model.diffusion_model
    if hasattr(dm, "input_blocks"):
        layers = []
        groups = (("input", list(dm.input_blocks)), ("middle", [dm.middle_block]), ("output", list(dm.output_blocks)))
        for group, blocks in groups:
            for i, block in enumerate(blocks):
                for m in block.modules():
                    if isinstance(m, comfy_attention.SpatialTransformer):
                        layers += [(group, i, t) for t, b in enumerate(m.transformer_blocks) if b.attn2 is not None]
        return "unet", layers, None
    layout, reason = layout_of(dm)
    if layout is None:
        return "latent", [], reason
    return "dit", layout.layers(dm), None


def dit_layout(patcher):
    """The DiT's ``families.Layout``."""
    return layout_of(patcher.model.diffusion_model)[0]


def architecture(node, patcher):
    """('unet', layers) or ('dit', layers) (see ``classify``); a model whose attention cannot be edited is an error."""
    arch, layers, reason = classify(patcher)
    if reason is not None:
        fail(node, "model", reason)
    return arch, layers


def layer_name(layer):
    return f"{layer[0]}.{layer[1]}" + (f".{layer[2]}" if len(layer) > 2 and layer[2] else "")


def select_layers(node, name, spec, layers, default):
    """Parse 'all', 'input', 'output.3-8', 'single.10-37', … (comma-separated) into a set of layers."""
    spec = ",".join(default if item.strip() in ("", "auto") else item for item in (spec or "").split(","))
    groups = sorted({layer[0] for layer in layers})
    chosen = set()
    for item in spec.split(","):
        item = item.strip()
        if item == "all":
            chosen |= set(layers)
            continue
        group, _, span = item.partition(".")
        try:
            lo, _, hi = span.partition("-")
            lo, hi = (int(lo), int(hi or lo)) if span else (0, 10 ** 9)
        except ValueError:
            lo = None
        if group not in groups or lo is None:
            fail(node, name, f"must list layers as 'all' or <group>[.<i>[-<j>]] with groups {groups}", repr(item))
        chosen |= {layer for layer in layers if layer[0] == group and lo <= layer[1] <= hi}
    if not chosen:
        fail(node, name, f"selects no layer (this model has {len(layers)}: groups {groups})", repr(spec))
    return frozenset(chosen)
