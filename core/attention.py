"""Attention control for editing an inverted image: the map and feature arithmetic, in pure torch.

An edit regenerates an inverted latent with a changed prompt. Left alone, layout and identity drift; the
methods here tie the edited pass to the *source* pass (the regeneration with the source prompt, which after
an exact inversion is the inversion's own last model call at every σ) by handing it the source's attention.

* Prompt-to-Prompt (Hertz, Mokady, Tenenbaum, Aberman, Pritch, Cohen-Or, "Prompt-to-Prompt Image Editing with
  Cross Attention Control", arXiv 2208.01626, 2022; ICLR 2023). Cross-attention maps
  ``M = softmax(Q Kᵀ/√d)`` of shape [B, H, N_pixels, T_tokens] are edited for the first τ steps:
  word swap ``M* = M_src``; refinement ``M*_{:,j} = M_src_{:,A(j)}`` where the edit token j is aligned to a
  source token A(j), else ``M_edit_{:,j}``; reweighting ``M*_{:,j} = c_j · M_{:,j}``. Self-attention maps
  ``softmax(Q_src K_srcᵀ/√d)`` replace the edit's for a chosen fraction of steps (P2P §3.2; the same
  injection as Plug-and-Play, Tumanyan et al., CVPR 2023). Local blending keeps the pixels outside a mask
  taken from the chosen words' cross-attention: ``x* = x_src + m ⊙ (x_edit − x_src)``.
* RF-Edit / RF-Solver-Edit (Wang et al., "Taming Rectified Flow for Inversion and Editing", arXiv 2411.04746,
  ICML 2025): in flow DiTs the source's attention *values* of the image tokens replace the edit's in chosen
  blocks for the first steps, ``V*_img = V_src,img``.
* KV-Edit (Zhu et al., "KV-Edit: Training-Free Image Editing for Precise Background Preservation",
  arXiv 2502.17363, 2025): keys as well, ``K*_img = K_src,img``, so the image tokens attend as in the source.

Every function works on whole tensors with explicit layouts; nothing here knows about ComfyUI.
"""
import difflib
import math

import torch


def injected_steps(num_steps, fraction):
    """How many of ``num_steps`` sampling steps, counted from the first (highest σ), a ``fraction`` in
    [0, 1] covers: ``⌊fraction · num_steps⌋`` (P2P's ``cross_replace_steps``/``self_replace_steps``)."""
    if not 0.0 <= fraction <= 1.0 or math.isnan(fraction):
        raise ValueError(f"fraction must be in [0, 1], got {fraction}")
    return int(fraction * num_steps + 1e-9)


def step_index(sigma, schedule, rtol=1e-5, atol=1e-7):
    """Index of ``sigma`` in the *descending* order of ``schedule`` (a list of floats in either order),
    i.e. the sampling step that evaluates the model there; None when ``sigma`` is not in the schedule."""
    tol = rtol * abs(sigma) + atol
    if not any(abs(s - sigma) <= tol for s in schedule):
        return None
    return sum(1 for s in schedule if s > sigma + tol)


def same_schedule(a, b, rtol=1e-5, atol=1e-4):
    """True when two schedules (any order) hold the same noise levels. ``atol`` accepts FlipSigmas' 0 → 1e-4."""
    a, b = sorted(a), sorted(b)
    return len(a) == len(b) and all(abs(x - y) <= rtol * abs(y) + atol for x, y in zip(a, b))


def attention_probs(q, k, heads, precision=torch.float32):
    """Attention maps ``softmax(Q Kᵀ / √d)`` per head.

    Args:
        q: [B, N, H·d] queries; k: [B, T, H·d] keys (the UNet layout).
        heads: H.
    Returns: [B, H, N, T] probabilities in ``precision``.
    """
    b, n, c = q.shape
    d = c // heads
    qh = q.reshape(b, n, heads, d).transpose(1, 2).to(precision)
    kh = k.reshape(b, k.shape[1], heads, d).transpose(1, 2).to(precision)
    return torch.softmax(qh @ kh.transpose(-1, -2) * d ** -0.5, dim=-1)


def attend(probs, v, heads):
    """``M V`` back in the UNet layout: probs [B, H, N, T], v [B, T, H·d] → [B, N, H·d] in v's dtype."""
    b, t, c = v.shape
    vh = v.reshape(b, t, heads, c // heads).transpose(1, 2)
    out = probs.to(v.dtype) @ vh
    return out.transpose(1, 2).reshape(b, probs.shape[2], c)


def word_swap(source, edit):
    """P2P word swap: ``M* = M_src`` (the edit keeps the source's cross-attention maps; its own values
    carry the new words). Shapes must match: the prompts have the same number of tokens."""
    if source.shape != edit.shape:
        raise ValueError(f"word swap needs maps of equal shape, got {list(source.shape)} and {list(edit.shape)}")
    return source.clone()


def refine(source, edit, alignment):
    """P2P refinement: ``M*_{:,j} = M_src_{:,A(j)}`` for edit tokens aligned to a source token, the edit's own
    ``M_edit_{:,j}`` for new tokens (``A(j) = −1``).

    Args:
        source, edit: [..., T] maps; alignment: LongTensor [T_edit] of source indices or −1.
    """
    if alignment.numel() != edit.shape[-1]:
        raise ValueError(f"alignment has {alignment.numel()} tokens, the maps {edit.shape[-1]}")
    aligned = alignment >= 0
    out = edit.clone()
    out[..., aligned] = source[..., alignment[aligned]]
    return out


def reweight(maps, scales):
    """P2P attention reweighting: ``M*_{:,j} = c_j · M_{:,j}`` (columns of chosen tokens scaled, the rest ×1)."""
    return maps * scales.to(maps.dtype)


def p2p_cross(source, edit, mode="word swap", alignment=None, scales=None):
    """The edited cross-attention maps of one injected step: word swap or refinement, then reweighting."""
    if mode == "word swap":
        maps = word_swap(source, edit)
    elif mode == "refine":
        maps = refine(source, edit, alignment)
    else:
        raise ValueError(f"mode must be 'word swap' or 'refine', got {mode!r}")
    return maps if scales is None else reweight(maps, scales)


def token_alignment(source_ids, edit_ids):
    """For every edit token, the index of the source token it aligns to, or −1 for a new token.

    The alignment is the longest matching blocks of the two token sequences (``difflib``; P2P aligns with a
    global sequence alignment, which agrees on insertions and substitutions of words). Returns a LongTensor.
    """
    out = [-1] * len(edit_ids)
    matcher = difflib.SequenceMatcher(a=list(source_ids), b=list(edit_ids), autojunk=False)
    for block in matcher.get_matching_blocks():
        for o in range(block.size):
            out[block.b + o] = block.a + o
    return torch.tensor(out, dtype=torch.long)


def content_length(ids):
    """Length of a padded token sequence without its trailing padding (repeats of the last token kept once)."""
    n = len(ids)
    while n > 1 and ids[n - 2] == ids[-1]:
        n -= 1
    return n


def find_tokens(ids, word_ids):
    """Positions in ``ids`` of every occurrence of the token subsequence ``word_ids``."""
    w = len(word_ids)
    return [i + j for i in range(len(ids) - w + 1) if list(ids[i:i + w]) == list(word_ids) for j in range(w)]


def replace_tokens(x, source, start, dim, count=None):
    """Rows ``start : start + count`` of ``x`` along the token dimension ``dim`` (``count`` None: to the end) replaced
    by ``source``, which holds exactly those rows: RF-Edit's ``V*_img = V_src,img`` and KV-Edit's ``K*_img = K_src,img``
    with the other tokens (text before or after the image, in whatever order the model joins them) kept from the
    edit."""
    count = x.shape[dim] - start if count is None else count
    if start < 0 or count < 0 or start + count > x.shape[dim]:
        raise ValueError(f"rows {start}:{start + count} do not fit {x.shape[dim]} tokens")
    if source.shape[dim] != count:
        raise ValueError(f"source holds {source.shape[dim]} tokens, the target {count}")
    tail = x.shape[dim] - start - count
    return torch.cat([x.narrow(dim, 0, start), source.to(x), x.narrow(dim, start + count, tail)], dim=dim)


def local_blend_mask(maps, positions, size, threshold=0.3):
    """P2P local blend mask from cross-attention maps of the chosen words.

    Args:
        maps: list of [B, H, N, T] maps (layers of any resolution N = h·w with h/w = size's aspect).
        positions: token indices of the chosen words (None: every column of ``maps``).
        size: (h, w) of the latent.
        threshold: keep pixels where the normalised attention exceeds it.
    Returns: a [B, 1, h, w] float mask in {0, 1}: the words' attention averaged over heads, tokens and layers
    (each layer resized to the latent), max-pooled 3×3, divided by its maximum, thresholded.
    """
    h, w = size
    acc = None
    for m in maps:
        n = m.shape[2]
        scale = math.sqrt(h * w / n)
        lh, lw = max(1, round(h / scale)), max(1, round(w / scale))
        a = (m if positions is None else m[..., positions]).float().mean(dim=(1, 3)).reshape(m.shape[0], 1, lh, lw)
        a = torch.nn.functional.interpolate(a, size=(h, w), mode="nearest")
        acc = a if acc is None else acc + a
    acc = torch.nn.functional.max_pool2d(acc / len(maps), 3, stride=1, padding=1)
    acc = acc / acc.flatten(1).amax(dim=1).clamp_min(1e-30)[:, None, None, None]
    return (acc > threshold).float()


def blend(source, edit, mask):
    """``x* = x_src + m ⊙ (x_edit − x_src)``: the edit inside the mask, the source outside."""
    return source + mask.to(edit) * (edit - source.to(edit))
