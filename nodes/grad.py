"""Gradients through a ComfyUI model from inside a node, without editing ComfyUI or patching its classes.

ComfyUI runs nodes in ``torch.inference_mode()``, so loaded weights are inference tensors that autograd may not
save, and Flux's blocks add in place into their inputs. Through the ModelPatcher's own mechanisms:

* layers get an identity weight wrapper, so ComfyUI casts a normal copy of each weight at use; any other
  inference-tensor parameter or buffer gets an object patch holding a normal clone (restored when ComfyUI
  unpatches the model; the loaded weights are never written);
* with ``checkpointing`` every DiT block (SD3, Flux) is replaced, through ``patches_replace['dit']``, by a
  gradient-checkpointed call of the original block on clones of its inputs: activation memory falls to the
  block inputs, and the in-place additions act on the clones. Flux needs it; SD1.x/SDXL UNets offer no
  whole-block patch point, so there it is not available.

Newer ComfyUI (0.30+) also needs a non-dynamic clone under Dynamic VRAM and ``training()`` around forward and
backward (both in ``host.py``, with the versions they serve), and a per-call snapshot of the block's
``transformer_options`` (the model rewrites that dict block by block).
"""
import copy
import types

import torch
import torch.utils.checkpoint

from .common import fail
from .host import non_dynamic, training

def _frozen(fn):
    """A copy of a closure holding its free variables' current values: ComfyUI's block wrappers read their loop
    variable late, which a checkpoint's recomputation (run after the loop) would otherwise see changed."""
    cells = tuple(types.CellType(c.cell_contents) for c in fn.__closure__ or ())
    return types.FunctionType(fn.__code__, fn.__globals__, fn.__name__, fn.__defaults__, cells)


def _fresh(v):
    """A block argument the block may write into: tensors cloned, also inside tuples and lists (LTX-2's blocks take
    ``img`` as the pair (video, audio) and add into both in place); dicts shallow-copied."""
    if torch.is_tensor(v):
        return v.clone()
    if isinstance(v, (tuple, list)):
        return type(v)(_fresh(x) for x in v)
    return dict(v) if isinstance(v, dict) else v


def _checkpointed_block(args, extra):
    """Checkpointed call of the original block. ``args`` is snapshotted at call time (dict values such as
    ``transformer_options`` shallow-copied): ComfyUI 0.38 rewrites one ``transformer_options`` dict block by block
    (``block_index``, ``block_type``, ``img_slice``), and the recomputation in backward must see this block's. The
    block runs inside ``training()`` also when backward recomputes it (the autograd engine does not carry the
    unfused-kernel mode into the recomputation: JoyImage's blocks call comfy-kitchen's fused RMS norm + RoPE)."""
    block = _frozen(extra["original_block"])
    snapshot = {k: dict(v) if isinstance(v, dict) else v for k, v in args.items()}

    def run(a):
        with training():
            return block({k: _fresh(v) for k, v in a.items()})
    return torch.utils.checkpoint.checkpoint(run, snapshot, use_reentrant=False)


def dit_blocks(patcher):
    """[(kind, count)] of the DiT blocks a model exposes to ``patches_replace['dit']`` (empty for UNets)."""
    dm = patcher.model.diffusion_model
    double = getattr(dm, "double_blocks", None) or getattr(dm, "joint_blocks", None) or []
    return [(kind, len(blocks)) for kind, blocks in (("double_block", double),
                                                      ("single_block", getattr(dm, "single_blocks", []) or []))
            if len(blocks)] + other_dit_blocks(dm)


def needs_checkpointing(patcher):
    """Flux blocks add in place into their inputs: backward only works through the checkpointed clones."""
    dm = patcher.model.diffusion_model
    return hasattr(dm, "single_blocks") or adds_in_place(dm) or bool(in_place_modules(dm))


def checkpointed_blocks(patcher):
    """How many blocks or modules gradient checkpointing covers: the DiT blocks of ``dit_blocks`` and the modules of
    ``in_place_modules``."""
    return sum(n for _, n in dit_blocks(patcher)) + len(in_place_modules(patcher.model.diffusion_model))


# Modules a model calls outside any patches_replace['dit'] point that write in place into tensors autograd needs, by
# model class (subclasses included): attributes holding a module or a module list (ComfyUI 0.30). For the
# differentiable clone each is replaced, by an object patch, with a twin that runs it checkpointed on clones.
IN_PLACE_MODULES = {
    "PixDiT_T2I": ("patch_blocks", "pixel_blocks"),  # PixelDiT's apply_adaln_: x.addcmul_(x, scale).add_(shift)
    "WanDancerModel": ("music_injector",),  # x[:, :seq_len] = x[:, :seq_len] + the music cross-attention
}


def in_place_modules(dm):
    """[(path under the diffusion model, module)] of the IN_PLACE_MODULES of ``dm``."""
    names = next((IN_PLACE_MODULES[c.__name__] for c in type(dm).__mro__ if c.__name__ in IN_PLACE_MODULES), ())
    found = []
    for name in names:
        module = getattr(dm, name, None)
        if isinstance(module, torch.nn.ModuleList):
            found += [(f"{name}.{i}", block) for i, block in enumerate(module)]
        elif module is not None:
            found.append((name, module))
    return found


def _checkpointed_module(module):
    """A shallow copy of ``module`` (the same parameters and submodules, so weight patches keep their keys) whose call
    runs the module's own forward checkpointed, on clones of its tensor arguments, inside ``training()``."""
    forward = type(module).forward
    twin = copy.copy(module)

    def checkpointed(*args, **kwargs):
        def run(a, k):
            with training():
                return forward(twin, *_fresh(a), **{name: _fresh(v) for name, v in k.items()})
        return torch.utils.checkpoint.checkpoint(run, args, kwargs, use_reentrant=False)
    twin.forward = checkpointed
    return twin


# Other DiTs whose forward hands each block to patches_replace['dit'] (ComfyUI 0.3.64), by class (subclasses
# included): the block lists' attributes and patch kinds. PixArt, Lumina 2, HiDream and Cosmos offer no such point.
OTHER_DITS = {
    "MMDiT": (("double_layers", "double_block"), ("single_layers", "single_block")),  # AuraFlow
    "HunYuanDiT": (("blocks", "double_block"),),
    "QwenImageTransformer2DModel": (("transformer_blocks", "double_block"),),
    "WanModel": (("blocks", "double_block"),),
    "AsymmDiTJoint": (("blocks", "double_block"),),  # Mochi
    "LTXVModel": (("transformer_blocks", "double_block"),),
}


def _other_dit(dm):
    return next((OTHER_DITS[c.__name__] for c in type(dm).__mro__ if c.__name__ in OTHER_DITS), ())


def other_dit_blocks(dm):
    """[(kind, count)] for the DiTs of OTHER_DITS."""
    return [(kind, len(getattr(dm, name))) for name, kind in _other_dit(dm) if len(getattr(dm, name, ()) or ())]


def adds_in_place(dm):
    """LTX-Video's blocks add in place into their input (``x += attn1(norm(x))``), which autograd refuses: like Flux,
    they differentiate only through the block replacement that checkpoints a call on clones of the inputs."""
    return any(c.__name__ == "LTXVModel" for c in type(dm).__mro__)


def _same(tensor):
    """Identity weight wrapper: any wrapper makes ComfyUI cast a fresh copy of the weight at use (a normal tensor
    under ``inference_mode(False)``), so weights are copied one layer at a time, never all at once."""
    return tensor


def differentiable(patcher, checkpointing, node="differentiable"):
    """A clone of ``patcher`` through which autograd can differentiate (see the module docstring).

    Layers with ComfyUI weight functions get an identity weight wrapper (weights copied at use); any other
    inference-tensor parameter or buffer (norm scales, embeddings) gets an object patch holding a normal clone.
    Which ones are inference tensors is asked of the ModelPatcher (``get_model_object``: its own object patches,
    else the originals it backed up, else the module's), never of the live module, which may still hold another
    clone's object-patched copies (a previous run's) that ComfyUI replaces by the originals when it loads this one.
    """
    p = non_dynamic(patcher, lambda expected, got: fail(node, "model", expected, got))
    dm = p.model.diffusion_model
    wrapped = set()
    for name, module in dm.named_modules():
        if hasattr(module, "weight_function"):
            for kind in ("weight", "bias"):
                if getattr(module, kind, None) is not None:
                    p.add_weight_wrapper(f"diffusion_model.{name}.{kind}" if name else f"diffusion_model.{kind}", _same)
                    wrapped.add(f"{name}.{kind}" if name else kind)
    with torch.inference_mode(False):
        for name, _ in list(dm.named_parameters()) + list(dm.named_buffers()):
            if name in wrapped:
                continue
            t = p.get_model_object(f"diffusion_model.{name}")  # the clone's: under 0.38 it may hold another model
            if t.is_inference():
                copy = t.clone()
                p.add_object_patch(f"diffusion_model.{name}",
                                   torch.nn.Parameter(copy, requires_grad=False) if isinstance(t, torch.nn.Parameter)
                                   else copy)
    if checkpointing:
        for kind, count in dit_blocks(p):
            for i in range(count):
                p.set_model_patch_replace(_checkpointed_block, "dit", kind, i)
        for path, module in in_place_modules(dm):
            p.add_object_patch(f"diffusion_model.{path}", _checkpointed_module(module))
    return p
