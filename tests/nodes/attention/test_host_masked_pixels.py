"""Host tier: a masked edit in pixels. Workflows 16/17 decode the masked edit and paste the photo's own pixels back
outside the mask with stock GrowMask + ImageCompositeMasked; this module runs that pipeline on a tiny SD1.5-like model
and a tiny VAE, both built with the running ComfyUI's own classes, through the stock nodes the workflows use (VAEEncode,
VAEDecode, GrowMask, ImageCompositeMasked) and the pack's Record / BDIA Invert / Inject / BDIA Sampler.

The VAE (no real VAE weights can be loaded here): ``comfy.sd.VAE`` given a state dict and the config of an SD1.5-layout
``AutoencoderKL`` (ComfyUI's ``ldm`` Encoder / Decoder: 96 channels at every level, one ResNet block per level (two
in the decoder), the mid-block attention, GroupNorm of 32 groups, 4 latent channels, 8× down), as its loader builds
one from a ``config``. Its weights are seeded and chosen so that it reconstructs, as a VAE must for a seam to mean
anything: the skip paths carry the image (the encoder averages 8×8 pixels into A·RGB with a seeded 4×3 A of
orthogonal columns, the decoder maps back with A's left inverse and blurs each ×2 upsampling with [1 2 1]/4; at the
output GroupNorms each colour channel shares its group with its negation and a constant, which fix the group's mean
and all but ~1e-5 of its spread), and every ResNet branch and the mid-block attention are seeded random layers whose
output weights are N(0, 0.02²/fan-in): they reach the whole image through GroupNorm statistics and attention, as in
a real VAE. Round trip ≈ 28 dB PSNR on the test photos (SD1.5's VAE: ≈ 25–30 dB on photos), blurrier than a real
VAE (detail finer than 8 px is lost) and darker at the border (zero padding).

Photos: 2 synthetic 192×192 photos (smooth gradients, an ellipse "car", seeded grain of 2 %); masks: a disc over each
car at the photo's resolution, as the mask editor paints one. The edit: Record (keys on) while BDIA Invert inverts the
VAE-encoded photos with the source prompt, then Inject with the mask as workflows 16/17 set it (self 0.25, cross 0.5,
mask_grow 1, mask_feather 1, soft, the background's keys and values from the source) regenerates with the edited
prompt; BDIA γ 0.96, 6 steps, weights N(0, 0.14²) so the edit moves the decoded photos by ~10 levels. The unmasked
edit is the same Inject without a mask.

Definitions (images in ComfyUI's [0, 1] IMAGE range; figures in 8-bit levels, 1/255):

* E, the region the latent edit touched: the latent pixels where the processed mask m > 0 (after grow and feather),
  as 8×8-pixel cells. G, the paste region: GrowMask(mask) > 0, as workflows 16/17 grow it (16 px =
  (mask_grow + mask_feather) × 8, tapered corners: a diamond, 11 px along the diagonals) and one latent pixel wider
  with square corners (24 px), which covers E.
* Round trip R = VAEDecode(VAEEncode(photo)); the masked edit's latent is VAEEncode(photo) outside E, bit for bit.
* (1) Background after decoding: |VAEDecode(masked edit) − R|, the largest over RGB, outside E, in rings of distance
  from E (Chebyshev: ≤ 8, 8–16, 16–32, > 32 px); its mean inside E is the edit's size.
* (2) After the paste P = ImageCompositeMasked(destination = photo, source = decoded edit, mask = G): P against the
  photo where G = 0 and against the decoded edit where G = 1.
* (3) Seam at G's edge, for an image I: a step is the mean over RGB of |I(p) − I(q)| for two pixels 2 px apart along
  a row or a column; the seam is the mean step of the pairs that cross G's edge (one pixel in G, one outside) over
  the mean step of the pairs beside it (both pixels within 8 px of the edge, neither within 2 px), over the interior
  (pixels ≥ 8 px from the photo's border). 1: crossing the edge looks like any step next to it; above 1: a visible
  edge. For (a) the decoded masked edit, (b) the same with the photo's pixels pasted back outside G, (c) the decoded
  unmasked edit pasted the same way (plain pixel pasting), and as baselines the photo and R. Pooled over both photos.

What is asserted: (1) the latent outside E is the encoded photo bit for bit; decoded, the background is not R to
float precision (the decoder is not local) but within a fraction of the edit (every ring's largest difference below
half, its mean below a fifth of the edit's mean inside E); (2) the photo's pixels outside G and the decoded edit
inside, bit for bit, and the wider G covers E; (3) every figure finite and positive, (a) < (b) < (c): decoding alone
leaves no edge, pasting the photo next to the round trip leaves the VAE's error as one, plain pasting adds the
background the unmasked edit changed. The figures are printed (the README quotes them)."""
import importlib.util
import math
import pathlib
import sys

import pytest
import torch

import hostlib

hostlib.require_comfyui()

from inversion_suite.core import mask as M  # noqa: E402
from inversion_suite.nodes.attention import AttentionEditInject, AttentionEditRecord  # noqa: E402
from inversion_suite.nodes.bdia import BDIAInvert, BDIASampler  # noqa: E402

STEPS = 6
PIXELS = 192  # 24×24 latent pixels
MARGIN = 8  # px left out of the seam figures at the photo's border
SEAM_PX = 2  # the pixel pairs of the seam figures: this far apart
SIDE_PX = 8  # the reference pairs of the seam figures: within this of the edge
GROW, FEATHER = 1, 1  # Inject's mask_grow / mask_feather in workflows 16/17 (latent pixels)
LEVEL = 1 / 255
SCALE = 0.14  # the tiny model's weights: the edited prompt moves the decoded photo by ~10 levels (0.1: ~4)

# the stand-in VAE: an SD1.5-layout AutoencoderKL, narrow
WIDTH = 96  # 32 GroupNorm groups of 3 channels: (colour, −colour, constant) for R, G, B, then random features
CONSTANT = 100.0  # the constant channel that fixes each colour group's statistics
SHIFT = 12.0  # keeps SiLU on its linear branch after the output norms
RESIDUAL = 0.02  # scale of every ResNet branch's last conv and the attention's output projection
LATENT_GAIN = 15.0  # latents of SD's magnitude (a few units)
VAE_PARAMS = {"embed_dim": 4, "ddconfig": {"double_z": True, "z_channels": 4, "resolution": PIXELS, "in_channels": 3,
                                           "out_ch": 3, "ch": WIDTH, "ch_mult": [1, 1, 1, 1], "num_res_blocks": 1,
                                           "attn_resolutions": [], "dropout": 0.0}}
COLOUR = [0, 3, 6]  # the colour channels; 1, 4, 7 their negations; 2, 5, 8 the constants


def vae_state_dict(seed=0):
    """Seeded weights for VAE_PARAMS (module docstring): skip paths that carry the image, random residual layers."""
    from comfy.ldm.models.autoencoder import AutoencoderKL
    with torch.device("meta"):
        shapes = {key: value.shape for key, value in AutoencoderKL(**VAE_PARAMS).state_dict().items()}
    g = torch.Generator().manual_seed(seed)

    def randn(shape, std):
        return torch.randn(shape, generator=g) * std
    q, _ = torch.linalg.qr(torch.randn(4, 3, generator=g, dtype=torch.float64))
    to_latent, from_latent = (LATENT_GAIN * q).float(), (q.T / LATENT_GAIN).float()  # from_latent @ to_latent = I
    down = torch.zeros(3, 3)
    down[:2, :2] = 0.25  # Downsample pads right and bottom: a 2×2 mean
    blur = torch.tensor([0.25, 0.5, 0.25])
    blur = blur[:, None] * blur[None, :]
    spread = CONSTANT * math.sqrt(2) / 3  # the standard deviation of a (x, −x, CONSTANT) group when x is small
    signed = COLOUR + [c + 1 for c in COLOUR]
    sd = {}
    for key in sorted(shapes):
        shape, (module, kind) = shapes[key], key.rsplit(".", 1)
        fan_in = math.prod(shape[1:])
        if kind == "bias" and not module.endswith(("norm_out", "conv_in", "conv_out")):
            value = torch.zeros(shape)
        elif module.endswith("norm_out"):  # colour → colour + SHIFT, whatever the group's statistics
            value = torch.ones(shape) if kind == "weight" else torch.zeros(shape)
            value[COLOUR] = spread if kind == "weight" else CONSTANT / 3 + SHIFT
        elif ".norm" in module:
            value = torch.ones(shape)
        elif module.endswith(("conv1", ".q", ".k", ".v")):
            value = randn(shape, 1 / math.sqrt(fan_in))
        elif module.endswith(("conv2", "proj_out")):
            value = randn(shape, RESIDUAL / math.sqrt(fan_in))
        elif module.endswith("sample.conv"):  # per channel: a 2×2 mean down; up: blur colours, keep the rest
            value = torch.zeros(shape)
            for c in range(WIDTH):
                kernel = down if "downsample" in module else blur if c in signed else None
                if kernel is None:
                    value[c, c, 1, 1] = 1.0
                else:
                    value[c, c] = kernel
        elif module.endswith("conv_in"):  # colours, their negations, constants; random features after
            if kind == "bias":
                value = torch.zeros(shape)
                value[[c + 2 for c in COLOUR]] = CONSTANT
            else:
                value = torch.zeros(shape)
                value[9:] = randn((WIDTH - 9,) + tuple(shape[1:]), 1 / math.sqrt(fan_in))
                mix = torch.eye(3) if module.startswith("encoder") else from_latent
                for i, c in enumerate(COLOUR):
                    value[c, :, 1, 1] = mix[i]
                    value[c + 1, :, 1, 1] = -mix[i]
        elif module == "encoder.conv_out":  # latent mean = to_latent · colour; log-variance 0
            if kind == "bias":
                value = torch.zeros(shape)
                value[:4] = -SHIFT * to_latent.sum(1)
            else:
                value = torch.zeros(shape)
                value[:4, COLOUR, 1, 1] = to_latent
        elif module == "decoder.conv_out":
            if kind == "bias":
                value = torch.full(shape, -SHIFT)
            else:
                value = torch.zeros(shape)
                for i, c in enumerate(COLOUR):
                    value[i, c, 1, 1] = 1.0
        elif module.endswith("quant_conv"):
            value = torch.eye(shape[0])[:, :, None, None]
        else:
            raise KeyError(f"no rule for {key}")
        sd[key] = value.reshape(shape)
    return sd


def tiny_vae():
    import comfy.sd
    return comfy.sd.VAE(sd=vae_state_dict(), config={"params": VAE_PARAMS})


def comfyui_nodes():
    """ComfyUI's nodes.py as the module ``nodes``, which its comfy_extras import (run from the repository root, the
    pack's own ``nodes`` package would shadow it on sys.path)."""
    path = (hostlib.COMFYUI / "nodes.py").resolve()
    module = sys.modules.get("nodes")
    if module is None or pathlib.Path(getattr(module, "__file__", None) or ".").resolve() != path:
        spec = importlib.util.spec_from_file_location("nodes", path)
        module = importlib.util.module_from_spec(spec)
        sys.modules["nodes"] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules["nodes"]
            raise
    return module


def stock(node_class, **inputs):
    """A stock node as the server runs it: V3 (``execute``) or V1 (``FUNCTION``); its outputs as a tuple."""
    if hasattr(node_class, "define_schema"):
        return tuple(node_class.execute(**inputs).args)
    return tuple(getattr(node_class(), node_class.FUNCTION)(**inputs))


def photo(seed, centre, axes, colour):
    """A synthetic photo [1, PIXELS, PIXELS, 3]: smooth gradients, an ellipse (the car), seeded grain."""
    g = torch.Generator().manual_seed(seed)
    y, x = torch.meshgrid(torch.linspace(0, 1, PIXELS), torch.linspace(0, 1, PIXELS), indexing="ij")
    image = torch.stack([0.35 + 0.3 * y + 0.05 * torch.sin(7 * x + seed),
                         0.45 + 0.15 * torch.cos(5 * x + 3 * y),
                         0.75 - 0.35 * y + 0.05 * torch.sin(9 * y)], -1)
    car = ((((y * PIXELS - centre[0]) / axes[0]) ** 2 + ((x * PIXELS - centre[1]) / axes[1]) ** 2) <= 1)[..., None]
    image = torch.where(car, torch.tensor(colour), image)
    return (image + 0.02 * torch.randn(image.shape, generator=g)).clamp(0.0, 1.0)[None]


def disc(centre, radius):
    y, x = torch.meshgrid(torch.arange(PIXELS) + 0.5, torch.arange(PIXELS) + 0.5, indexing="ij")
    return (((y - centre[0]) ** 2 + (x - centre[1]) ** 2) <= radius ** 2).float()[None]


def context(edited):
    """8 text embeddings; the edit changes tokens 2–5 (another object)."""
    cond = hostlib.tiny_cond("sd15")
    text = torch.randn(1, 8, 32, generator=torch.Generator().manual_seed(5))
    if edited:
        text[:, 2:6] = 3.0 * torch.randn(1, 4, 32, generator=torch.Generator().manual_seed(6))
    cond[0][0] = text
    return cond


def guider(model, edited=False):
    import comfy.samplers
    g = comfy.samplers.CFGGuider(model)
    g.inner_set_conds({"positive": context(edited)})
    g.set_cfg(1.0)
    return g


def dilate(region, radius):
    """Chebyshev dilation of a [B, H, W] bool region by ``radius`` pixels."""
    if radius <= 0:
        return region
    return torch.nn.functional.max_pool2d(region[:, None].float(), 2 * radius + 1, 1, radius)[:, 0] > 0


def seam(image, grown, across=SEAM_PX, side=SIDE_PX):
    """Module docstring, (3): the mean step of pixel pairs ``across`` px apart that cross G's edge over the mean step
    of such pairs beside it (within ``side`` px of the edge, neither within ``across``), interior pixels only; and
    the mean step across."""
    inner = torch.zeros(grown.shape, dtype=torch.bool)
    inner[:, MARGIN:-MARGIN, MARGIN:-MARGIN] = True
    edge = torch.zeros_like(grown)
    for axis in (1, 2):
        n = grown.shape[axis] - 1
        flip = grown.narrow(axis, 1, n) != grown.narrow(axis, 0, n)
        edge.narrow(axis, 1, n).logical_or_(flip)
        edge.narrow(axis, 0, n).logical_or_(flip)
    near, beside = dilate(edge, across), dilate(edge, side)
    sums = {"across": [0.0, 0], "beside": [0.0, 0]}
    for axis in (1, 2):
        n = image.shape[axis] - across
        step = (image.narrow(axis, across, n) - image.narrow(axis, 0, n)).abs().mean(-1).double()
        both = inner.narrow(axis, across, n) & inner.narrow(axis, 0, n)
        crossing = both & (grown.narrow(axis, across, n) != grown.narrow(axis, 0, n))
        apart = ~near.narrow(axis, across, n) & ~near.narrow(axis, 0, n)
        beside_pairs = both & apart & beside.narrow(axis, across, n) & beside.narrow(axis, 0, n)
        for name, pairs in (("across", crossing), ("beside", beside_pairs)):
            sums[name][0] += float(step[pairs].sum())
            sums[name][1] += int(pairs.sum())
    across_mean = sums["across"][0] / sums["across"][1]
    return across_mean / (sums["beside"][0] / sums["beside"][1]), across_mean


CARS = [dict(seed=3, centre=(88, 84), axes=(20, 30), colour=[0.15, 0.25, 0.7], radius=36),
        dict(seed=4, centre=(100, 104), axes=(24, 26), colour=[0.7, 0.2, 0.15], radius=32)]
# GrowMask: workflows 16/17's (16 px, tapered corners: a diamond, 11 px along the diagonals) and one that covers E
# (24 px, square corners: every pixel of a latent pixel within 2 latent pixels of one the mask touches)
EXPANDS = {"workflow": ((GROW + FEATHER) * 8, True), "covering": ((GROW + FEATHER + 1) * 8, False)}


@pytest.fixture(scope="module")
def run():
    """The masked edit of two photos, decoded and pasted as workflows 16/17 do (and with G one latent pixel wider);
    the unmasked edit alike."""
    stock_nodes = comfyui_nodes()
    from comfy_extras.nodes_mask import GrowMask, ImageCompositeMasked
    vae = tiny_vae()
    photos = torch.cat([photo(c["seed"], c["centre"], c["axes"], c["colour"]) for c in CARS])
    mask = torch.cat([disc(c["centre"], c["radius"]) for c in CARS])
    model = hostlib.tiny_model("sd15", scale=SCALE)
    with torch.inference_mode():
        latent = stock(stock_nodes.VAEEncode, pixels=photos, vae=vae)[0]
        record_model, store, _ = AttentionEditRecord.execute(model=model, blocks="auto", steps=0.5,
                                                             cross_attention=True, self_attention=True, keys=True,
                                                             storage="auto").args
        sigmas = hostlib.sigmas(model, STEPS)
        noise, inversion, _, _ = BDIAInvert.execute(model=record_model, latent=latent, sigmas=sigmas, method="bdia",
                                                    gamma=0.96, guider=guider(record_model)).args
        sampler = BDIASampler.execute(method="bdia", gamma=0.96, inversion=inversion).args[0]
        edits = {}
        for name, masking in (("masked", dict(mask=mask, mask_grow=GROW, mask_feather=FEATHER, mask_mode="soft",
                                               background="source attention")), ("unmasked", {})):
            edit_model = AttentionEditInject.execute(model=model, record=store, blocks="auto", self_steps=0.25,
                                                     cross_steps=0.5, cross_mode="word swap", inject_keys=False,
                                                     **masking).args[0]
            edits[name] = hostlib.stock_sample(noise, guider(edit_model, edited=True), sampler, sigmas,
                                               hostlib.empty_like(latent))
        decoded = {name: stock(stock_nodes.VAEDecode, samples={"samples": out}, vae=vae)[0]
                   for name, out in edits.items()}
        round_trip = stock(stock_nodes.VAEDecode, samples=latent, vae=vae)[0]
        grown = {g: stock(GrowMask, mask=mask, expand=expand, tapered_corners=tapered)[0]
                 for g, (expand, tapered) in EXPANDS.items()}
        pasted = {(g, name): stock(ImageCompositeMasked, destination=photos, source=image, x=0, y=0,
                                   resize_source=False, mask=grown[g])[0]
                  for g in grown for name, image in decoded.items()}
    m = M.latent_mask(mask, tuple(latent["samples"].shape), grow_by=GROW, feather_by=FEATHER)
    touched = torch.nn.functional.interpolate((m > 0).float(), scale_factor=8)[:, 0] > 0
    return dict(vae=vae, photos=photos, latent=latent["samples"], m=m, edits=edits, decoded=decoded,
                round_trip=round_trip, grown=grown, pasted=pasted, touched=touched)


def label(grown_by):
    expand, tapered = EXPANDS[grown_by]
    return f"GrowMask by {expand} px, {'tapered' if tapered else 'square'} corners"


def psnr(a, b):
    return -10 * math.log10(float((a.double() - b.double())[:, MARGIN:-MARGIN, MARGIN:-MARGIN].square().mean()))


def test_the_vae_is_comfyuis(run):
    """The stand-in is ComfyUI's VAE class around its AutoencoderKL, 4 latent channels, 8× down, float32, and
    reconstructs about as well as a real one (24–40 dB)."""
    from comfy.ldm.models.autoencoder import AutoencoderKL
    import comfy.sd
    vae, photos, latent = run["vae"], run["photos"], run["latent"]
    assert isinstance(vae, comfy.sd.VAE) and isinstance(vae.first_stage_model, AutoencoderKL)
    assert vae.vae_dtype == torch.float32 and latent.shape == (2, 4, PIXELS // 8, PIXELS // 8)
    quality = psnr(run["round_trip"], photos)
    change = float((run["decoded"]["unmasked"] - run["round_trip"]).abs().mean()) / LEVEL
    print(f"stand-in VAE: {sum(p.numel() for p in vae.first_stage_model.parameters()) / 1e6:.2f} M parameters, "
          f"latent std {float(latent.std()):.2f}, round trip {quality:.1f} dB PSNR (interior); the unmasked edit "
          f"moves the decoded photo by {change:.1f} levels on average")
    assert 24.0 < quality < 40.0 and bool(torch.isfinite(latent).all()) and change > 3.0


def test_background_after_decoding_is_the_round_trip(run):
    """(1): the latent outside E is the encoded photo bit for bit; decoded, the background is the round trip up to
    what a decoder that is not local adds: its 3×3 convolutions reach 9 latent pixels and more, its GroupNorm
    statistics and mid-block attention the whole image, so the difference hardly falls off with the distance."""
    m, latent, out = run["m"], run["latent"], run["edits"]["masked"]
    keep = M.outside(m).expand_as(out)
    assert torch.equal(out[keep], latent[keep]) and not torch.equal(out[~keep], latent[~keep])
    diff = (run["decoded"]["masked"] - run["round_trip"]).abs().amax(-1)  # [B, H, W]
    touched = run["touched"]
    rings, previous = {}, touched
    for label, distance in (("≤ 8 px", 8), ("8–16 px", 16), ("16–32 px", 32), ("> 32 px", None)):
        reach = dilate(touched, distance) if distance else torch.ones_like(touched)
        ring = reach & ~previous
        rings[label] = (float(diff[ring].max()) / LEVEL, float(diff[ring].mean()) / LEVEL, int(ring.sum()))
        previous = reach
    inside = float(diff[touched].mean()) / LEVEL
    print("decoded masked edit − round trip outside E, by distance from E (largest / mean, 8-bit levels): "
          + ", ".join(f"{k} {v[0]:.2f} / {v[1]:.2f}" for k, v in rings.items())
          + f"; inside E: mean {inside:.1f} (the edit)")
    assert all(v[2] > 0 and math.isfinite(v[0]) for v in rings.values()) and inside > 3.0
    assert all(v[0] < inside / 2 and v[1] < inside / 5 for v in rings.values())


@pytest.mark.parametrize("grown_by", list(EXPANDS))
def test_original_pixels_pasted_back_exactly(run, grown_by):
    """(2): outside G the saved image is the photo, bit for bit; inside, the decoded edit. Where E reaches past G (the
    latent mask's soft cells at the edge), the paste keeps the photo."""
    photos, grown, touched, m = run["photos"], run["grown"][grown_by], run["touched"], run["m"]
    outside = (grown == 0)[..., None].expand_as(photos)
    for name in ("masked", "unmasked"):
        image = run["pasted"][grown_by, name]
        assert torch.equal(image[outside], photos[outside])
        assert torch.equal(image[~outside], run["decoded"][name][~outside])
    beyond = touched & (grown == 0)
    cells = torch.nn.functional.interpolate((grown > 0).float()[:, None], size=m.shape[-2:], mode="area")
    cut = m[(cells < 1.0) & (m > 0)]  # latent pixels of E partly or wholly outside G
    print(f"paste, G = {label(grown_by)}: G covers {float((grown > 0).float().mean()):.2f} of the "
          f"photos; pixels of E outside G {int(beyond.sum())} of {int(touched.sum())}, the latent mask there "
          f"≤ {float(cut.max()) if cut.numel() else 0.0:.2f}")
    if grown_by == "covering":
        assert int(beyond.sum()) == 0


@pytest.mark.parametrize("grown_by", list(EXPANDS))
def test_pixel_seam(run, grown_by):
    """(3): the seam at G's edge for the decoded masked edit, the masked edit pasted back and plain pixel pasting;
    also the mean step across in levels (the photo's own: its grain)."""
    grown = run["grown"][grown_by] > 0
    figures = {"photo": seam(run["photos"], grown), "round trip": seam(run["round_trip"], grown),
               "(a) masked edit decoded": seam(run["decoded"]["masked"], grown),
               "(b) masked edit, photo pasted back": seam(run["pasted"][grown_by, "masked"], grown),
               "(c) unmasked edit, photo pasted back": seam(run["pasted"][grown_by, "unmasked"], grown)}
    print(f"pixel seam at the edge of G = {label(grown_by)} (step across / step beside; the step across in "
          f"levels): " + ", ".join(f"{k} {v[0]:.2f} ({v[1] / LEVEL:.1f})" for k, v in figures.items()))
    assert all(math.isfinite(v) and v > 0 for pair in figures.values() for v in pair)
    a, b, c = (figures[k][0] for k in list(figures)[2:])
    assert a < b < c
