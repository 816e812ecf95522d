"""Masks for editing: a user's mask (any resolution, soft or binary, one per image or per video frame) on the latent
grid and on the grids the model's attention works on, and the blend that keeps everything outside it. Pure torch.

A masked edit regenerates an inverted latent with a changed prompt and keeps the source outside the mask ``m``
(1 = edit, 0 = keep). Three places use ``m``, all through :func:`blend`, ``lerp(source, edit, m)``, which is exactly
``source`` where ``m = 0`` and exactly ``edit`` where ``m = 1`` (no ``source + 1·(edit − source)`` rounding):

* every step's prediction: ``D* = D_src + m ⊙ (D_edit − D_src)``, with ``D_src`` the source's prediction at that σ
  (recorded during the exact inversion). Every sampler of the pack updates each latent pixel from that pixel's state
  and prediction only (BDIA's recurrence, Euler, DDIM), so the background stays on the source's trajectory.
* the sampling run's output: ``L* = L_src + m ⊙ (L_edit − L_src)`` with ``L_src`` the source's clean latent, so
  outside a hard mask the result *is* the source latent, whatever the sampler.
* attention (KV-Edit, Zhu et al., arXiv 2502.17363): the background tokens' keys and values come from the source,
  ``K* = K_src + m_tok ⊙ (K_edit − K_src)`` (and V), so the edited region attends to the source's background.
  ``m_tok`` is ``m`` averaged over each token's pixels (:func:`token_mask`, :func:`pool`).

Shapes: a stock ComfyUI MASK is ``[M, H, W]`` floats in [0, 1] (``[H, W]`` is taken as one mask). Latents are
``[B, C, H, W]`` or, for video, ``[B, C, T, H, W]``. :func:`latent_mask` returns ``[B or 1, 1, H, W]`` (or
``[B or 1, 1, T or 1, H, W]``), which broadcasts against the latent.
"""
import math

import torch

SNAP = 1e-6  # mask values within this of 0 or 1 are taken as 0 or 1 (area weights sum to 1 up to rounding)


def _snap(m):
    m = m.clamp(0.0, 1.0)
    return torch.where(m < SNAP, torch.zeros_like(m), torch.where(m > 1.0 - SNAP, torch.ones_like(m), m))


def axis_weights(n_out, n_in, stride=None):
    """``[n_out, n_in]`` float64 averaging weights along one axis.

    Without ``stride``, cells tile the axis evenly (``n_in / n_out`` pixels each, fractions at the ends) and average by
    overlapping length: exact area averaging, which also upsamples (a cell inside one pixel takes its value). With
    ``stride`` (a patch embedding, or stride-2 convolutions of a padded input), cell ``i`` holds pixels
    ``i·stride … min((i+1)·stride, n_in) − 1`` and averages the pixels it holds.
    """
    if n_out < 1 or n_in < 1:
        raise ValueError(f"sizes must be positive, got {n_out} from {n_in}")
    w = torch.zeros(n_out, n_in, dtype=torch.float64)
    if stride is not None:
        if -(-n_in // stride) != n_out:
            raise ValueError(f"{n_in} pixels in cells of {stride} make {-(-n_in // stride)} cells, not {n_out}")
        for i in range(n_out):
            lo, hi = i * stride, min((i + 1) * stride, n_in)
            w[i, lo:hi] = 1.0 / (hi - lo)
        return w
    # in units of 1 / n_out pixel: cell i spans [i·n_in, (i+1)·n_in), pixel j spans [j·n_out, (j+1)·n_out)
    for i in range(n_out):
        lo, hi = i * n_in, (i + 1) * n_in
        for j in range(lo // n_out, min(n_in, -(-hi // n_out))):
            overlap = min(hi, (j + 1) * n_out) - max(lo, j * n_out)
            if overlap > 0:
                w[i, j] = overlap / n_in
    return w


def pool(m, size, strides=(None, None)):
    """``m`` [..., H, W] averaged onto ``size`` = (h, w) (:func:`axis_weights` per axis, area averaging unless
    ``strides`` are given); values snapped to 0/1 within ``SNAP``."""
    h, w = size
    wh = axis_weights(h, m.shape[-2], strides[0]).to(m.device)
    ww = axis_weights(w, m.shape[-1], strides[1]).to(m.device)
    out = torch.einsum("ij,...jk,lk->...il", wh, m.double(), ww)
    return _snap(out).to(m.dtype)


def _shift_max(m, kernel):
    """Grayscale dilation of [N, 1, H, W] by a 3×3 structuring element (``'square'`` or ``'cross'``), edges
    replicated (the image is taken to continue beyond its border)."""
    p = torch.nn.functional.pad(m, (1, 1, 1, 1), mode="replicate")
    h, w = m.shape[-2:]
    offsets = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if kernel == "square" or dy == 0 or dx == 0]
    return torch.stack([p[..., 1 + dy:1 + dy + h, 1 + dx:1 + dx + w] for dy, dx in offsets]).amax(0)


def grow(m, radius):
    """Dilate (``radius`` > 0) or erode (< 0) a [N, 1, H, W] mask by ``|radius|`` pixels: grayscale morphology
    with an octagon (3×3 square and cross alternately), so a point grows to an octagon reaching ``radius`` pixels
    along the axes. Erosion is ``1 − dilate(1 − m)``."""
    radius = int(radius)
    if radius == 0:
        return m
    out = m if radius > 0 else 1.0 - m
    for i in range(abs(radius)):
        out = _shift_max(out, "square" if i % 2 == 0 else "cross")
    return out if radius > 0 else 1.0 - out


def feather_kernel(radius, dtype=torch.float64):
    """The 1-D feather kernel: ``cos²(π d / (2 (r + 1)))`` for ``|d| ≤ r``, normalised; smooth, zero beyond ``r``."""
    d = torch.arange(-radius, radius + 1, dtype=torch.float64)
    k = torch.cos(math.pi * d / (2 * (radius + 1))) ** 2
    return (k / k.sum()).to(dtype)


def feather(m, radius):
    """Soften the edge of a [N, 1, H, W] mask: separable blur with :func:`feather_kernel` (edges replicated). The
    edited region spreads ``radius`` pixels outward and fades ``radius`` pixels inward; an all-0 or all-1 mask is
    unchanged."""
    radius = int(radius)
    if radius <= 0:
        return m
    k = feather_kernel(radius, m.dtype).to(m.device)
    n = m.shape[0]
    x = m.reshape(n, 1, *m.shape[-2:])
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (radius, radius, 0, 0), mode="replicate"),
                                   k.view(1, 1, 1, -1))
    x = torch.nn.functional.conv2d(torch.nn.functional.pad(x, (0, 0, radius, radius), mode="replicate"),
                                   k.view(1, 1, -1, 1))
    return x.reshape(m.shape)


def frame_groups(mask_frames, latent_frames):
    """Which mask frames each latent frame covers, or None when ``mask_frames`` is not a frame count for
    ``latent_frames``: equal counts map one to one; a causal video VAE that compresses time by ``r`` (Wan,
    HunyuanVideo, Cosmos: 4; LTX-Video: 8; Mochi: 6) turns ``1 + r (T − 1)`` frames into ``T``: latent frame 0 holds
    frame 0, latent frame ``t`` frames ``1 + r (t − 1) … r t``."""
    if mask_frames == latent_frames:
        return [[t] for t in range(latent_frames)]
    if latent_frames > 1 and mask_frames > latent_frames and (mask_frames - 1) % (latent_frames - 1) == 0:
        r = (mask_frames - 1) // (latent_frames - 1)
        return [[0]] + [list(range(1 + r * (t - 1), 1 + r * t)) for t in range(1, latent_frames)]
    return None


def latent_mask(mask, shape, grow_by=0, feather_by=0, invert=False, binary=False):
    """A user's MASK on the latent grid of ``shape``.

    Args:
        mask: [M, H', W'] (or [H', W']) floats in [0, 1], any resolution: 1 = edit, 0 = keep the source.
        shape: the latent's shape, [B, C, H, W] or [B, C, T, H, W].
        grow_by: latent pixels to dilate (> 0) or erode (< 0) the region to edit (:func:`grow`).
        feather_by: latent pixels to soften its edge over (:func:`feather`).
        invert: edit where the mask is 0 instead (applied before grow and feather).
        binary: after area averaging, 1 where the mask covers at least half of a latent pixel, else 0.
    Returns: float32 [B or 1, 1, H, W] (video: [B or 1, 1, T or 1, H, W]).

    Which masks go with which images: images (4-D, or 5-D with T = 1): M = 1 (every image) or B (one each). Video
    (T > 1): M = 1 (every frame of every video); a frame count F, shared by the videos: F = T latent frames, or the
    F = 1 + r (T − 1) frames a causal video VAE encodes into T (a latent frame is edited wherever any of its frames
    is: the maximum over them); M = B (one mask per video); M = B·F (per video, then per frame). Raises ValueError
    naming the counts it accepts. Every step is spatial, per frame; the frame mapping comes last.
    """
    if not torch.is_tensor(mask):
        raise ValueError(f"must be a MASK tensor, got {type(mask).__name__}")
    if mask.ndim == 2:
        mask = mask[None]
    if mask.ndim != 3 or mask.shape[0] < 1 or mask.shape[1] < 1 or mask.shape[2] < 1:
        raise ValueError(f"must be a MASK of shape [masks, height, width], got shape {list(mask.shape)}")
    if mask.is_complex() or not bool(torch.isfinite(mask.float()).all()):
        raise ValueError("must hold finite values in [0, 1]")
    if len(shape) not in (4, 5):
        raise ValueError(f"cannot be applied to a latent of shape {list(shape)} (needs [B, C, H, W] or "
                         f"[B, C, T, H, W])")
    b, h, w = shape[0], shape[-2], shape[-1]
    frames = shape[2] if len(shape) == 5 else 1
    m_count = mask.shape[0]
    plan = _assign(m_count, b, frames)  # (per_video, groups): per_video ∈ {1, B}; groups None or frame groups
    m = pool(mask.detach().to("cpu", torch.float64).clamp(0.0, 1.0), (h, w))[:, None]  # [M, 1, h, w]
    if binary:
        m = (m >= 0.5).double()
    if invert:
        m = 1.0 - m
    m = _snap(feather(grow(m, grow_by), feather_by))
    per_video, groups = plan
    if len(shape) == 4:
        return m.float()
    if groups is None:  # one mask per video (or one for all), every frame alike
        return m[:, :, None].float()
    f = m_count // per_video
    m = m.reshape(per_video, f, h, w)
    m = torch.stack([m[:, g].amax(1) for g in groups], 1)  # [per_video, T, h, w]
    return m[:, None].float()


def _assign(m_count, batch, frames):
    """(masks per batch axis: 1 or B, frame groups or None) for M masks on a latent of B images/videos of T frames."""
    if frames <= 1:
        if m_count in (1, batch):
            return (m_count, None)
        raise ValueError(f"holds {m_count} masks; the latent holds {batch} image{'s' * (batch != 1)}: give one mask, "
                         f"or one per image ({batch})")
    if m_count == 1:
        return (1, None)
    groups = frame_groups(m_count, frames)
    if groups is not None:
        return (1, groups)
    if m_count == batch:
        return (batch, None)
    if m_count % batch == 0 and batch > 1:
        groups = frame_groups(m_count // batch, frames)
        if groups is not None:
            return (batch, groups)
    accepted = f"1, {frames} (one per latent frame) or 1 + r·{frames - 1} (one per video frame, e.g. " \
               f"{1 + 4 * (frames - 1)})"
    if batch > 1:
        accepted += f", {batch} (one per video) or {batch}× one of those (per video, then per frame)"
    raise ValueError(f"holds {m_count} masks; the latent holds {batch} video{'s' * (batch != 1)} of {frames} latent "
                     f"frames: give {accepted}")


def token_mask(m, tokens, patch):
    """A latent mask [N, 1, (T,) H, W] on a DiT's image tokens: [N, tokens], each token the mean of the latent pixels
    of its patch (``patch``: an int, or a tuple per axis (t, h, w) / (h, w); patches cut by the edge average the pixels
    they hold), in the row-major order of the patch grid. Tokens beyond the grid (reference images appended after the
    target, e.g. Flux Kontext) get 1: they keep the edit's own values. Raises ValueError when there are fewer tokens
    than patches."""
    spatial = m.shape[2:]
    if isinstance(patch, int):
        patch = (patch,) * 2
    patch = tuple(int(p) for p in patch)
    if len(patch) < len(spatial):
        patch = (1,) * (len(spatial) - len(patch)) + patch
    patch = patch[-len(spatial):]
    grid = [-(-s // p) for s, p in zip(spatial, patch)]
    out = m.double()
    for axis, (s, g, p) in enumerate(zip(spatial, grid, patch)):
        wts = axis_weights(g, s, p).to(m.device)
        out = torch.movedim(torch.tensordot(torch.movedim(out, 2 + axis, -1), wts, dims=([-1], [1])), -1, 2 + axis)
    out = _snap(out).reshape(m.shape[0], -1)
    n = out.shape[1]
    if tokens < n:
        raise ValueError(f"the model's attention holds {tokens} image tokens, fewer than the {n} patches "
                         f"({'×'.join(map(str, grid))}) of the latent")
    if tokens > n:
        out = torch.cat([out, out.new_ones(out.shape[0], tokens - n)], 1)
    return out.to(m.dtype)


def layer_stride(n_in, n_out):
    """The power-of-two stride a UNet level has over the latent along one axis (``n_out = ⌈n_in / stride⌉``, as
    stride-2 convolutions with padding give), or None when there is none (then the mask is area-averaged)."""
    stride = 1
    while -(-n_in // stride) > n_out:
        stride *= 2
    return stride if -(-n_in // stride) == n_out else None


def layer_mask(m, size):
    """A latent mask [N, 1, H, W] on a UNet layer's grid ``size`` = (h, w): [N, h·w], each cell the mean of the latent
    pixels under it (:func:`pool`)."""
    strides = (layer_stride(m.shape[-2], size[0]), layer_stride(m.shape[-1], size[1]))
    return pool(m, size, strides).reshape(m.shape[0], -1)


def blend(source, edit, m):
    """``source + m ⊙ (edit − source)`` as ``torch.lerp``: exactly ``source`` where ``m = 0`` and exactly ``edit``
    where ``m = 1``. ``m`` broadcasts against both; the result has ``edit``'s dtype and device."""
    return torch.lerp(source.to(edit), edit, m.to(edit))


def outside(m):
    """Where the mask is exactly 0 (the pixels a masked edit keeps), as a bool tensor."""
    return m == 0
