"""Core tier: masks for masked editing (core/mask.py): area averaging onto the latent, DiT token and UNet layer grids;
grow, feather, invert, binary; one mask per image or per video frame; the exact blend."""
import pytest
import torch

from inversion_suite.core import mask as M


def rand(*shape, seed=0):
    return torch.rand(*shape, generator=torch.Generator().manual_seed(seed))


def test_axis_weights_average_what_each_cell_covers():
    w = M.axis_weights(4, 16)  # 4 px per cell
    assert torch.equal(w.sum(1), torch.ones(4, dtype=torch.float64)) and torch.equal(w[1, 4:8], torch.full((4,), 0.25))
    patch = M.axis_weights(4, 7, 2)  # a patch/stride-2 grid over a padded axis: the last cell holds one pixel
    assert patch[3].tolist() == [0, 0, 0, 0, 0, 0, 1.0] and patch[0].tolist()[:2] == [0.5, 0.5]
    assert M.axis_weights(3, 9, 4)[2].tolist() == [0] * 8 + [1.0]
    with pytest.raises(ValueError, match="9 pixels in cells of 4 make 3 cells, not 4"):
        M.axis_weights(4, 9, 4)
    area = M.axis_weights(3, 8)  # 8/3 px per cell: fractions at the ends
    assert torch.allclose(area.sum(1), torch.ones(3, dtype=torch.float64), atol=1e-15)
    assert torch.allclose(area[0], torch.tensor([3, 3, 2, 0, 0, 0, 0, 0], dtype=torch.float64) / 8)
    up = M.axis_weights(5, 2)  # upsampling: a cell inside one pixel takes its value
    assert up[0].tolist() == [1.0, 0.0] and up[4].tolist() == [0.0, 1.0] and up[2].tolist() == [0.5, 0.5]


def test_pool_is_area_averaging_and_keeps_zeros_and_ones_exact():
    m = rand(2, 64, 48)
    out = M.pool(m, (8, 6))
    assert torch.allclose(out, m.reshape(2, 8, 8, 6, 8).mean((2, 4)), atol=1e-6)
    for shape in [(8, 6), (5, 9), (3, 7), (64, 80)]:
        assert torch.equal(M.pool(torch.ones(1, 37, 53), shape), torch.ones(1, *shape))
        assert torch.equal(M.pool(torch.zeros(1, 37, 53), shape), torch.zeros(1, *shape))


def test_latent_mask_of_images_one_or_one_per_image():
    mask = torch.zeros(2, 64, 64)
    mask[0, :32] = 1.0  # top half
    mask[1, :, 36:] = 1.0  # right 28 px: latent column 4 half covered
    m = M.latent_mask(mask, (2, 4, 8, 8))
    assert m.shape == (2, 1, 8, 8) and m.dtype == torch.float32
    assert float(m[0, 0, :4].min()) == 1.0 and float(m[0, 0, 4:].max()) == 0.0
    assert m[1, 0, 0].tolist() == [0, 0, 0, 0, 0.5, 1, 1, 1]
    assert M.latent_mask(mask, (2, 4, 8, 8), binary=True)[1, 0, 0].tolist() == [0, 0, 0, 0, 1, 1, 1, 1]
    assert torch.equal(M.latent_mask(mask, (2, 4, 8, 8), invert=True), 1 - m)
    assert M.latent_mask(mask[:1], (3, 4, 8, 8)).shape == (1, 1, 8, 8)  # one mask for the batch
    assert M.latent_mask(mask[0], (3, 4, 8, 8)).shape == (1, 1, 8, 8)  # [H, W] is one mask
    assert M.latent_mask(mask, (2, 16, 1, 8, 8)).shape == (2, 1, 1, 8, 8)  # Qwen-Image's one-frame latent
    with pytest.raises(ValueError, match=r"holds 2 masks; the latent holds 3 images: give one mask, or one per image"):
        M.latent_mask(mask, (3, 4, 8, 8))
    with pytest.raises(ValueError, match=r"must be a MASK of shape \[masks, height, width\], got shape \[1, 1, 4, 4\]"):
        M.latent_mask(torch.ones(1, 1, 4, 4), (1, 4, 8, 8))
    with pytest.raises(ValueError, match=r"must hold finite values"):
        M.latent_mask(torch.full((1, 4, 4), float("nan")), (1, 4, 8, 8))


def test_video_masks_per_latent_frame_or_per_video_frame():
    frames = torch.zeros(9, 16, 16)  # 1 + 4·2 video frames → 3 latent frames (Wan/HunyuanVideo/Cosmos VAE)
    frames[2, :8, :8] = 1.0
    frames[7, 8:, 8:] = 1.0
    m = M.latent_mask(frames, (1, 16, 3, 8, 8))
    assert m.shape == (1, 1, 3, 8, 8)
    assert float(m[0, 0, 0].max()) == 0.0  # latent frame 0 = video frame 0
    assert float(m[0, 0, 1, :4, :4].min()) == 1.0 and float(m[0, 0, 1].sum()) == 16  # frames 1–4: the union
    assert float(m[0, 0, 2, 4:, 4:].min()) == 1.0 and float(m[0, 0, 2].sum()) == 16  # frames 5–8
    assert M.frame_groups(17, 5) == [[0], [1, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12], [13, 14, 15, 16]]
    assert M.frame_groups(3, 3) == [[0], [1], [2]] and M.frame_groups(4, 3) is None
    per_frame = M.latent_mask(rand(3, 16, 16), (2, 16, 3, 8, 8))  # one per latent frame, shared by both videos
    assert per_frame.shape == (1, 1, 3, 8, 8)
    per_video = M.latent_mask(rand(2, 16, 16), (2, 16, 3, 8, 8))  # one per video, every frame alike
    assert per_video.shape == (2, 1, 1, 8, 8)
    both = M.latent_mask(torch.cat([frames, 1 - frames]), (2, 16, 3, 8, 8))  # per video, then per frame
    assert both.shape == (2, 1, 3, 8, 8) and torch.equal(both[0], m[0]) and float(both[1, 0, 0].min()) == 1.0
    assert M.latent_mask(rand(1, 16, 16), (2, 16, 3, 8, 8)).shape == (1, 1, 1, 8, 8)
    with pytest.raises(ValueError, match=r"holds 4 masks; the latent holds 1 video of 3 latent frames: give 1, 3 \(one "
                                         r"per latent frame\) or 1 \+ r·2 \(one per video frame, e\.g\. 9\)$"):
        M.latent_mask(rand(4, 16, 16), (1, 16, 3, 8, 8))
    with pytest.raises(ValueError, match=r"holds 8 masks; the latent holds 2 videos of 3 latent frames: .* 2 \(one "
                                         r"per video\) or 2× one of those \(per video, then per frame\)"):
        M.latent_mask(rand(8, 16, 16), (2, 16, 3, 8, 8))


def test_grow_is_an_octagon_and_shrink_its_inverse():
    point = torch.zeros(1, 1, 15, 15)
    point[..., 7, 7] = 1.0
    grown = M.grow(point, 4)
    rows = grown[0, 0].sum(1)
    assert grown[0, 0, 7].sum() == 9 and grown[0, 0, 3, 7] == 1 and grown[0, 0, 2, 7] == 0  # reach 4 along axes
    assert grown[0, 0, 4, 4] == 1 and grown[0, 0, 3, 3] == 0  # diagonal reach 3 (< 4·√2: rounder than a square)
    assert torch.equal(rows, rows.flip(0)) and torch.equal(grown, grown.transpose(-1, -2))
    square = torch.zeros(1, 1, 16, 16)
    square[..., 3:13, 3:13] = 1.0
    shrunk = M.grow(square, -2)
    assert shrunk[0, 0, 8].tolist() == [0] * 5 + [1] * 6 + [0] * 5
    assert torch.equal(M.grow(shrunk, 2)[..., 5:11, 5:11], square[..., 5:11, 5:11])
    edge = torch.zeros(1, 1, 8, 8)
    edge[..., :, :3] = 1.0  # touches the left border: the image continues there, so it does not shrink from it
    assert M.grow(edge, -1)[0, 0, 4].tolist() == [1, 1, 0, 0, 0, 0, 0, 0]
    for full in (torch.zeros(1, 1, 6, 6), torch.ones(1, 1, 6, 6)):
        assert torch.equal(M.grow(full, 3), full) and torch.equal(M.grow(full, -3), full)
    soft = rand(1, 1, 10, 10)
    assert bool((M.grow(soft, 1) >= soft).all()) and bool((M.grow(soft, -1) <= soft).all())


def test_feather_spreads_by_its_radius_and_keeps_flat_masks():
    k = M.feather_kernel(3)
    assert k.numel() == 7 and abs(float(k.sum()) - 1) < 1e-15 and bool((k > 0).all()) and torch.equal(k, k.flip(0))
    step = torch.zeros(1, 1, 1, 20)
    step[..., 10:] = 1.0
    f = M.feather(step, 3)[0, 0, 0]
    assert float(f[:7].max()) == 0.0 and float(f[13:].min()) > 1 - 1e-6  # changes only within 3 px of the edge
    assert bool((f[1:] >= f[:-1]).all()) and 0.0 < float(f[7]) < float(f[12]) < 1.0
    assert abs(float(f[9] + f[10]) - 1.0) < 1e-6  # symmetric about the edge
    for full in (torch.zeros(1, 1, 9, 9), torch.ones(1, 1, 9, 9)):
        out = M.latent_mask(full[0], (1, 4, 9, 9), feather_by=3, grow_by=2)
        assert torch.equal(out, full)


def test_order_binary_invert_grow_feather():
    mask = torch.zeros(1, 16, 16)
    mask[:, 4:12, 4:12] = 1.0
    a = M.latent_mask(mask, (1, 4, 16, 16), invert=True, grow_by=1)  # grow acts on the region to edit (inverted)
    assert float(a[0, 0, 8, 8]) == 0.0 and float(a[0, 0, 4, 8]) == 1.0 and float(a[0, 0, 5, 8]) == 0.0
    soft = torch.full((1, 8, 8), 0.5)
    assert float(M.latent_mask(soft, (1, 4, 8, 8), binary=True).min()) == 1.0  # at least half covered: edited
    assert float(M.latent_mask(soft * 0.99, (1, 4, 8, 8), binary=True).max()) == 0.0


def test_token_mask_follows_the_patch_grid():
    m = torch.zeros(1, 1, 7, 9)
    m[..., :, 4:] = 1.0
    tokens = M.token_mask(m, 20, 2)  # ⌈7/2⌉ × ⌈9/2⌉ patches, cut patches average the pixels they hold
    assert tokens.shape == (1, 20)
    grid = tokens.reshape(4, 5)
    assert grid[0].tolist() == [0, 0, 1, 1, 1] and torch.equal(grid[3], grid[0])
    ref = M.token_mask(m, 26, 2)  # reference tokens after the target (Flux Kontext) keep the edit's own
    assert torch.equal(ref[:, :20], tokens) and float(ref[:, 20:].min()) == 1.0
    with pytest.raises(ValueError, match=r"holds 19 image tokens, fewer than the 20 patches \(4×5\)"):
        M.token_mask(m, 19, 2)
    half = torch.zeros(1, 1, 8, 8)
    half[..., :, 3] = 1.0
    assert M.token_mask(half, 16, 2).reshape(4, 4)[0].tolist() == [0, 0.5, 0, 0]
    video = torch.zeros(2, 1, 3, 4, 4)
    video[1, :, 2] = 1.0
    vt = M.token_mask(video, 12, (1, 2, 2))  # t-major order: frame, row, column
    assert vt.shape == (2, 12) and vt[1].tolist() == [0] * 8 + [1] * 4 and float(vt[0].max()) == 0.0
    layer = M.layer_mask(m, (4, 5))  # a UNet level of a 7×9 latent (stride-2 convolutions round up)
    assert torch.equal(layer, tokens) and M.layer_stride(9, 3) == 4 and M.layer_stride(9, 5) == 2
    assert M.layer_stride(12, 5) is None  # no power-of-two level: area averaging


def test_blend_is_exact_at_zero_and_one():
    g = torch.Generator().manual_seed(0)
    source = torch.randn(4, 3, 8, 8, generator=g) * 1e3
    edit = torch.randn(4, 3, 8, 8, generator=g) * 1e-3
    naive = source + 1.0 * (edit - source)
    assert not torch.equal(naive, edit)  # why lerp: the textbook formula rounds
    assert torch.equal(M.blend(source, edit, torch.ones(1, 1, 8, 8)), edit)
    assert torch.equal(M.blend(source, edit, torch.zeros(4, 1, 8, 8)), source)
    m = (rand(4, 1, 8, 8) > 0.5).float()
    out = M.blend(source, edit, m)
    assert torch.equal(out[M.outside(m).expand_as(out)], source[M.outside(m).expand_as(out)])
    assert torch.equal(out[(m == 1).expand_as(out)], edit[(m == 1).expand_as(out)])
