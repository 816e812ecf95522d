"""Where each DiT family's image tokens sit in its attention, and how a call of ComfyUI's attention function is placed
in a block: the layouts Attention Edit knows, read from ComfyUI's model code (0.3.64 and 0.30.0) and checked by
tests/nodes/attention/test_host_attention_families.py on both hosts.

A layout names diffusion-model classes exactly (a subclass may run other attention calls: it is not assumed to share
the layout), the blocks a user can choose, how the pack learns which block a call belongs to (``placement``) and the
token order of that block's image attention (``order``). Every placement rides on
``transformer_options["optimized_attention_override"]``, which ComfyUI's attention functions call when the model passes
them its transformer_options; no ComfyUI class is patched.

Placements:

* ``dit``: the family has a ``patches_replace["dit"]`` point per block; the pack's replacement stamps the block into a
  copy of transformer_options and the block's ``call``-th attention call is its image attention (``hooks.dit_stamp``).
* ``count``: no block replace point, but the forward calls attention in a fixed order (``skip`` refiner layers, then
  ``calls`` per block, the ``call``-th on the image): a call's place in the model call names its block. The number of
  calls is checked after every model call, so a model that runs another sequence is refused, never misread.
* ``native``: the model writes ``block_type``/``block_index`` (and ``img_slice``) into its transformer_options itself
  (ComfyUI 0.30's Krea 2, and Kandinsky 5, whose ``patches_replace["dit"]`` call does not fit its blocks).

Token orders (n = the latent's patches, from the latent's shape and the family's patch size, rounded up to the
family's padding multiple):

* ``text first``, ``[txt; img (; reference tokens)]``: the image rows start after the text; its length is the block's
  text stream (``dit``) or ComfyUI's ``img_slice``; without either (``count``) the image is the last n rows.
* ``image first``, ``[img (; references); txt]``: rows from 0, as many as the block's image stream (``dit``) or n.
* ``image only``: the block's self-attention holds image tokens only (Wan, LTX-Video, Kandinsky 5, Cosmos): every row.
"""
import math

TEXT_FIRST, IMAGE_FIRST, IMAGE_ONLY = "text first", "image first", "image only"
ORDERS = {TEXT_FIRST: "[text; image]", IMAGE_FIRST: "[image; text]", IMAGE_ONLY: "image tokens only"}


class Layout:
    """One family's attention layout (see the module docstring).

    Args:
        family: the name shown in plans and errors.
        classes: ``module.QualName`` of the diffusion-model classes it describes.
        groups: ``(attribute, kind, key)`` per block list: the ModuleList's attribute, the kind users select
            ('double', 'single', 'block') and the ``patches_replace["dit"]`` key prefix (``dit``) or ComfyUI's
            ``block_type`` (``native``).
        placement: 'dit', 'count' or 'native'.
        order: a token order, or a function of the diffusion model giving it (one that changed between hosts).
        call: which attention call of a block is its image attention (1: the first).
        calls: attention calls per block (``count``).
        skip: attributes of refiner layer lists that run before the blocks, one attention call per layer (``count``).
        pad: the attribute holding the multiple the image tokens are padded to (Z-Image's ``pad_tokens_multiple``).
        patch: a function of the diffusion model giving its patch size per latent axis, where the model does not
            declare ``patch_size``.
        unsupported: model inputs (extra conditions) that change the token layout, refused by name.
    """

    def __init__(self, family, classes, groups, placement, order, call=1, calls=1, skip=(), pad=None, patch=None,
                 unsupported=()):
        self.family, self.classes, self.groups, self.placement = family, tuple(classes), tuple(groups), placement
        self._order, self.call, self.calls, self.skip, self.pad = order, call, calls, tuple(skip), pad
        self._patch, self.unsupported = patch, tuple(unsupported)

    def order(self, dm):
        return self._order(dm) if callable(self._order) else self._order

    def layers(self, dm):
        """Every (kind, index) the model has, in forward order."""
        return [(kind, i) for attr, kind, _ in self.groups for i in range(len(getattr(dm, attr)))]

    def key(self, kind):
        return next(key for _, k, key in self.groups if k == kind)

    def kind(self, block_type):
        """The kind a ``native`` block_type names (None: not a block the layout knows)."""
        return next((k for _, k, key in self.groups if key == block_type), None)

    def plan(self, dm):
        """``count``: the layer of every attention call of one model call, in order (None: a call that is not a
        block's image attention)."""
        plan = [None] * sum(len(getattr(dm, attr, None) or ()) for attr in self.skip)
        for layer in self.layers(dm):
            plan += [layer if c == self.call else None for c in range(1, self.calls + 1)]
        return plan

    def patch(self, dm):
        """The patch size per latent axis (int or tuple), as ``core.mask.token_mask`` takes it."""
        return self._patch(dm) if self._patch is not None else declared_patch(dm)

    def tokens(self, dm, shape):
        """Image tokens of a latent of ``shape`` ([B, C, (T,) H, W]): its patches in row-major order, rounded up to the
        padding multiple (the padding tokens follow the image)."""
        spatial = list(shape[2:])
        p = self.patch(dm)
        p = (p,) * 2 if isinstance(p, int) else tuple(int(x) for x in p)
        p = ((1,) * (len(spatial) - len(p)) + p)[-len(spatial):]
        n = math.prod(-(-s // q) for s, q in zip(spatial, p))
        multiple = getattr(dm, self.pad, None) if self.pad else None
        return -(-n // multiple) * multiple if multiple else n

    def describe(self, dm):
        how = {"dit": "a patches_replace['dit'] stamp per block", "count": "the attention calls' order in a model call",
               "native": "the block ComfyUI stamps into transformer_options"}[self.placement]
        return f"{self.family}: token order {ORDERS[self.order(dm)]}, blocks found by {how}"


def declared_patch(dm):
    """The patch size a diffusion model declares (on itself or its ``x_embedder``), int or per-axis tuple; 1 if none."""
    for obj in (dm, getattr(dm, "x_embedder", None)):
        p = getattr(obj, "patch_size", None)
        if isinstance(p, int) or (isinstance(p, (tuple, list)) and all(isinstance(x, int) for x in p)):
            return p
    return 1


def _flipped(dm):
    """HunyuanVideo: ComfyUI 0.3.64 joins its double blocks as [img; txt] (``flipped_img_txt``) and its single blocks
    likewise; 0.30 joins both as [txt; img]."""
    return IMAGE_FIRST if any(getattr(b, "flipped_img_txt", False) for b in dm.double_blocks) else TEXT_FIRST


def _cosmos_patch(dm):
    return (dm.patch_temporal, dm.patch_spatial, dm.patch_spatial)


def _cogvideo_patch(dm):
    return (getattr(dm, "patch_size_t", None) or 1, dm.patch_size, dm.patch_size)


def _krea_patch(dm):
    return getattr(dm, "patch", None) or getattr(dm, "patch_size", 1)


DOUBLE, SINGLE = ("double_blocks", "double", "double_block"), ("single_blocks", "single", "single_block")
LAYOUTS = [
    Layout("SD3", ["comfy.ldm.modules.diffusionmodules.mmdit.OpenAISignatureMMDITWrapper"],
           [("joint_blocks", "double", "double_block")], "dit", TEXT_FIRST),
    Layout("Flux / Flux.2 / LongCat-Image", ["comfy.ldm.flux.model.Flux"], [DOUBLE, SINGLE], "dit", TEXT_FIRST),
    Layout("Chroma", ["comfy.ldm.chroma.model.Chroma"], [DOUBLE, SINGLE], "dit", TEXT_FIRST),
    Layout("HunyuanVideo", ["comfy.ldm.hunyuan_video.model.HunyuanVideo"], [DOUBLE, SINGLE], "dit", _flipped,
           unsupported=("ref_latent",)),  # (image-to-video's reference frame: its tokens precede the image's)
    Layout("Qwen-Image", ["comfy.ldm.qwen_image.model.QwenImageTransformer2DModel"],
           [("transformer_blocks", "double", "double_block")], "dit", TEXT_FIRST),
    Layout("MageFlow", ["comfy.ldm.mage_flow.model.MageFlowTransformer2DModel"],
           [("transformer_blocks", "double", "double_block")], "dit", TEXT_FIRST),
    Layout("AuraFlow", ["comfy.ldm.aura.mmdit.MMDiT"],
           [("double_layers", "double", "double_block"), ("single_layers", "single", "single_block")], "dit",
           TEXT_FIRST),
    Layout("Mochi", ["comfy.ldm.genmo.joint_model.asymm_models_joint.AsymmDiTJoint"],
           [("blocks", "double", "double_block")], "dit", IMAGE_FIRST),
    Layout("Lens", ["comfy.ldm.lens.model.LensTransformer2DModel"],
           [("transformer_blocks", "double", "double_block")], "dit", IMAGE_FIRST, patch=lambda dm: 1),  # packed
    Layout("JoyImage", ["comfy.ldm.joyimage.model.JoyImageTransformer3DModel"], [DOUBLE], "dit", IMAGE_FIRST),
    Layout("Wan 2.1 / 2.2", ["comfy.ldm.wan.model.WanModel", "comfy.ldm.wan.model_wandancer.WanDancerModel"],
           [("blocks", "block", "double_block")], "dit", IMAGE_ONLY,
           unsupported=("reference_latent",)),  # (its tokens precede the image's; context latents follow them)
    Layout("LTX-Video", ["comfy.ldm.lightricks.model.LTXVModel"],
           [("transformer_blocks", "block", "double_block")], "dit", IMAGE_ONLY),
    Layout("Kandinsky 5", ["comfy.ldm.kandinsky5.model.Kandinsky5"],  # (its 'dit' block_wrap passes x=, which
           [("visual_transformer_blocks", "block", "double")], "native", IMAGE_ONLY),  # its blocks do not take)
    Layout("HiDream", ["comfy.ldm.hidream.model.HiDreamImageTransformer2DModel"],
           [("double_stream_blocks", "double", None), ("single_stream_blocks", "single", None)], "count",
           IMAGE_FIRST, unsupported=("image_cond",)),
    Layout("Lumina 2 / Z-Image", ["comfy.ldm.lumina.model.NextDiT", "comfy.ldm.lumina.model.NextDiTPixelSpace"],
           [("layers", "single", None)], "count", TEXT_FIRST, skip=("context_refiner", "noise_refiner"),
           pad="pad_tokens_multiple", unsupported=("ref_latents", "siglip_feats")),
    Layout("Cosmos Predict2 / Anima", ["comfy.ldm.cosmos.predict2.MiniTrainDIT", "comfy.ldm.anima.model.Anima"],
           [("blocks", "block", None)], "count", IMAGE_ONLY, calls=2, patch=_cosmos_patch),
    Layout("CogVideoX", ["comfy.ldm.cogvideo.model.CogVideoXTransformer3DModel"],
           [("blocks", "double", None)], "count", TEXT_FIRST, patch=_cogvideo_patch),
    Layout("Krea 2", ["comfy.ldm.krea2.model.SingleStreamDiT"], [("blocks", "single", "single")], "native",
           TEXT_FIRST, patch=_krea_patch, unsupported=("ref_latents",)),
]

# Families whose attention the pack cannot reach without patching ComfyUI's classes: their attention calls pass no
# transformer_options (so no override sees them) and they have no attention patch point.
UNREACHABLE = {
    "comfy.ldm.pixart.pixartms.PixArtMS": "PixArt-Σ",
    "comfy.ldm.hydit.models.HunYuanDiT": "HunyuanDiT",
    "comfy.ldm.ernie.model.ErnieImageModel": "Ernie-Image",
}
# Families whose attention the override reaches but whose layout the pack does not place, with the reason.
NOT_PLACED = {
    "comfy.ldm.boogu.model.BooguTransformer2DModel":
        "Boogu: its refiners and two attention calls per double block depend on the reference images given",
    "comfy.ldm.ideogram4.model.Ideogram4Transformer2DModel":
        "Ideogram 4: it runs the batch in chunks per prompt inside one model call",
    "comfy.ldm.hidream_o1.model.HiDreamO1Transformer":
        "HiDream-O1: a two-pass attention over a language model's sequence",
    "comfy.ldm.pixeldit.model.PixDiT_T2I": "PixelDiT: pixel blocks attend within patches after the patch blocks",
    "comfy.ldm.lightricks.av_model.LTXAVModel": "LTX-2: audio and video streams attend to each other",
}


def class_path(dm):
    t = type(dm)
    return f"{t.__module__}.{t.__qualname__}"


def layout_of(dm):
    """(Layout, None) for a diffusion model whose attention the pack places, else (None, why not) (a UNet: (None,
    None))."""
    path = class_path(dm)
    for layout in LAYOUTS:
        if path in layout.classes:
            missing = [attr for attr, _, _ in layout.groups if not hasattr(dm, attr)]
            if missing:
                return None, f"is a {layout.family} model without its blocks ({', '.join(missing)}): a variant the " \
                             f"pack has not verified"
            return layout, None
    if hasattr(dm, "input_blocks"):
        return None, None
    if path in UNREACHABLE:
        return None, (f"is {UNREACHABLE[path]}, whose attention ComfyUI calls without transformer_options and without "
                      f"an attention patch point: reaching it would mean patching ComfyUI's classes, which the pack "
                      f"never does")
    if path in NOT_PLACED:
        return None, f"is {NOT_PLACED[path]}, a token layout the pack does not place yet"
    bases = [f"{b.__module__}.{b.__qualname__}" for b in type(dm).__mro__[1:]]
    for layout in LAYOUTS:
        if any(b in layout.classes for b in bases):
            return None, (f"is {type(dm).__name__}, a variant of {layout.family} that may run other attention calls; "
                          f"the pack has not verified its layout")
    return None, f"is {type(dm).__name__}, a model whose attention layout the pack does not know"
