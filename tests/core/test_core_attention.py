"""Core tier: Prompt-to-Prompt map arithmetic, RF-Edit/KV-Edit token replacement, step windows, local blend."""
import pytest
import torch

from inversion_suite.core import attention as A


def qkv(b=2, n=6, t=5, heads=2, d=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(b, n, heads * d, generator=g), torch.randn(b, t, heads * d, generator=g),
            torch.randn(b, t, heads * d, generator=g))


def test_probabilities_and_attend_match_scaled_dot_product_attention():
    q, k, v = qkv()
    probs = A.attention_probs(q, k, 2)
    assert probs.shape == (2, 2, 6, 5)
    assert torch.allclose(probs.sum(-1), torch.ones(2, 2, 6), atol=1e-6)
    split = lambda x: x.reshape(2, x.shape[1], 2, 4).transpose(1, 2)  # noqa: E731
    reference = torch.nn.functional.scaled_dot_product_attention(split(q), split(k), split(v))
    assert torch.allclose(A.attend(probs, v, 2), reference.transpose(1, 2).reshape(2, 6, 8), atol=1e-6)


def test_word_swap_copies_the_source_maps_and_needs_equal_shapes():
    source, edit = torch.rand(1, 2, 6, 5), torch.rand(1, 2, 6, 5)
    assert torch.equal(A.word_swap(source, edit), source)
    with pytest.raises(ValueError, match="equal shape"):
        A.word_swap(source, torch.rand(1, 2, 6, 7))


def test_refine_takes_aligned_columns_from_the_source():
    source, edit = torch.rand(1, 2, 6, 5), torch.rand(1, 2, 6, 6)
    alignment = torch.tensor([0, 1, -1, 2, 3, 4])
    out = A.refine(source, edit, alignment)
    assert torch.equal(out[..., [0, 1, 3, 4, 5]], source) and torch.equal(out[..., 2], edit[..., 2])
    with pytest.raises(ValueError, match="alignment has 3 tokens"):
        A.refine(source, edit, torch.tensor([0, 1, 2]))


def test_token_alignment_of_an_insertion_and_a_substitution():
    assert A.token_alignment([9, 1, 2, 8, 8], [9, 1, 7, 2, 8]).tolist() == [0, 1, -1, 2, 3]
    assert A.token_alignment([9, 1, 2, 3, 8], [9, 1, 5, 3, 8]).tolist() == [0, 1, -1, 3, 4]


def test_reweight_scales_only_chosen_columns_and_p2p_composes():
    maps = torch.rand(1, 2, 6, 4)
    scales = torch.tensor([1.0, 2.0, 1.0, 0.5])
    out = A.reweight(maps, scales)
    assert torch.equal(out[..., 0], maps[..., 0]) and torch.allclose(out[..., 1], 2 * maps[..., 1])
    source = torch.rand(1, 2, 6, 4)
    assert torch.allclose(A.p2p_cross(source, maps, "word swap", scales=scales), source * scales)
    with pytest.raises(ValueError, match="mode must be"):
        A.p2p_cross(source, maps, "swap")


def test_step_windows_and_schedule_positions():
    assert [A.injected_steps(8, f) for f in (0.0, 0.25, 0.4, 0.5, 1.0)] == [0, 2, 3, 4, 8]
    assert A.injected_steps(100, 0.29) == 29  # 0.29·100 is 28.999… in floating point
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match=r"fraction must be in \[0, 1\]"):
            A.injected_steps(8, bad)
    schedule = [14.6, 6.0, 2.0, 0.5, 0.0]
    assert [A.step_index(s, schedule) for s in schedule] == [0, 1, 2, 3, 4]
    assert [A.step_index(s, schedule[::-1]) for s in schedule] == [0, 1, 2, 3, 4]
    assert A.step_index(3.0, schedule) is None
    assert A.same_schedule(schedule, [1e-4, 0.5, 2.0, 6.0, 14.6]) and not A.same_schedule(schedule, schedule[:-1])


def test_token_helpers():
    ids = [49406, 320, 1125, 539, 49407, 49407, 49407]
    assert A.content_length(ids) == 5
    assert A.find_tokens([1, 5, 6, 2, 5, 6], [5, 6]) == [1, 2, 4, 5]


@pytest.mark.parametrize("dim", [1, 2])
def test_replace_tokens_keeps_text_rows_and_takes_image_rows(dim):
    shape = [2, 3, 3, 4]
    shape[dim] = 7
    x = torch.randn(*shape)
    image = torch.randn(*[2, 3, 3, 4][:dim], 4, *[2, 3, 3, 4][dim + 1:])
    out = A.replace_tokens(x, image, 3, dim)
    assert torch.equal(out.narrow(dim, 0, 3), x.narrow(dim, 0, 3)) and torch.equal(out.narrow(dim, 3, 4), image)
    with pytest.raises(ValueError, match="source holds 4 tokens, the target 5"):
        A.replace_tokens(x, image, 2, dim)
    # image first ([img; txt]: HiDream, Mochi, Lens, JoyImage) or between text and reference tokens
    out = A.replace_tokens(x, image, 0, dim, count=4)
    assert torch.equal(out.narrow(dim, 0, 4), image) and torch.equal(out.narrow(dim, 4, 3), x.narrow(dim, 4, 3))
    out = A.replace_tokens(x, image, 1, dim, count=4)
    assert torch.equal(out.narrow(dim, 1, 4), image) and torch.equal(out.narrow(dim, 0, 1), x.narrow(dim, 0, 1))
    assert torch.equal(out.narrow(dim, 5, 2), x.narrow(dim, 5, 2))
    with pytest.raises(ValueError, match="rows 5:9 do not fit 7 tokens"):
        A.replace_tokens(x, image, 5, dim, count=4)


def test_local_blend_mask_follows_the_attended_region():
    h = w = 8
    maps = torch.zeros(1, 2, h * w, 3)
    region = torch.zeros(h, w)
    region[2:4, 5:7] = 1
    maps[..., 1] = region.flatten()
    maps[..., 0] = 1 - region.flatten()
    low = torch.nn.functional.avg_pool2d(region[None, None], 2).flatten()
    maps_low = torch.zeros(1, 2, 16, 3)
    maps_low[..., 1] = low
    mask = A.local_blend_mask([maps, maps_low], [1], (h, w), threshold=0.3)
    assert mask.shape == (1, 1, h, w) and mask[0, 0, 2:4, 5:7].eq(1).all() and mask[0, 0, 6:, :3].eq(0).all()
    source, edit = torch.zeros(1, 4, h, w), torch.ones(1, 4, h, w)
    out = A.blend(source, edit, mask)
    assert torch.equal(out, mask.expand(1, 4, h, w))
