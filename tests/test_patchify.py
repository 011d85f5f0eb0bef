"""Reference checks for patchify.py: the patch round trip and token order against explicit loops, and the 3D RoPE
relative-position property checked on the attention scores themselves."""
import pytest
import torch

from patchify import RoPE3D, apply_rope, edge_distances, patchify, rope_axis_dims, unpatchify


@pytest.mark.parametrize(
    "shape, patch_size",
    [
        ((2, 4, 3, 8, 6), (1, 2, 2)),  # default patch, non-square latent
        ((1, 3, 1, 4, 10), (1, 2, 2)),  # f = 1: an image
        ((2, 2, 4, 6, 4), (2, 2, 2)),  # pt = 2
        ((1, 5, 6, 3, 9), (3, 1, 3)),  # odd sizes everywhere
        ((3, 1, 2, 2, 2), (1, 1, 1)),  # every latent cell its own token
    ],
)
def test_round_trip_and_token_order(shape, patch_size):
    B, c, f, h, w = shape
    pt, ph, pw = patch_size
    latents = torch.randn(shape)
    tokens, grid = patchify(latents, patch_size)
    assert grid == (f // pt, h // ph, w // pw)
    assert tokens.shape == (B, f * h * w // (pt * ph * pw), c * pt * ph * pw)
    assert torch.equal(unpatchify(tokens, grid, patch_size, c), latents)

    # Slow reference: walk the grid time-major (t, then h, then w) and flatten each patch in (c, pt, ph, pw) order.
    reference = []
    for t in range(grid[0]):
        for i in range(grid[1]):
            for j in range(grid[2]):
                patch = latents[:, :, t * pt : (t + 1) * pt, i * ph : (i + 1) * ph, j * pw : (j + 1) * pw]
                reference.append(patch.reshape(B, -1))
    assert torch.equal(tokens, torch.stack(reference, dim=1))


def test_patchify_equals_conv3d_patch_embedding():
    # The docstring's promise: a Linear on the tokens is a Conv3d with kernel = stride = patch_size.
    latents = torch.randn(2, 4, 4, 6, 8, dtype=torch.float64)
    conv = torch.nn.Conv3d(4, 16, kernel_size=(2, 2, 2), stride=(2, 2, 2)).double()
    tokens, grid = patchify(latents, (2, 2, 2))
    by_linear = tokens @ conv.weight.reshape(16, -1).T + conv.bias  # (B, L, 16)
    by_conv = conv(latents).flatten(2).transpose(1, 2)  # (B, L, 16), same time-major order
    torch.testing.assert_close(by_linear, by_conv)


def test_not_divisible_names_rule_and_fix():
    rule_and_fix = r"\(3, 5, 8\) must be divisible by patch_size \(1, 2, 2\).*latent is \(3, 6, 8\)"
    with pytest.raises(ValueError, match=rule_and_fix):
        patchify(torch.randn(1, 4, 3, 5, 8), (1, 2, 2))
    with pytest.raises(ValueError, match="divisible"):
        patchify(torch.randn(1, 4, 3, 4, 4), (2, 2, 2))
    with pytest.raises(ValueError, match="do not fit grid"):
        unpatchify(torch.randn(1, 10, 16), (1, 2, 4), (1, 2, 2), 4)


def test_rope_axis_split():
    assert rope_axis_dims(64) == (16, 24, 24)  # CogVideoX's 1/4 : 3/8 : 3/8
    assert rope_axis_dims(32) == (8, 12, 12)
    for head_dim in range(6, 130, 2):
        dt, dh, dw = rope_axis_dims(head_dim)
        assert dt + dh + dw == head_dim and dh == dw and min(dt, dh) >= 2 and dt % 2 == 0 and dh % 2 == 0
    for bad in (4, 7, 33):
        with pytest.raises(ValueError, match="even head_dim of at least 6"):
            rope_axis_dims(bad)


def scores(head_dim, grid, seed=0):
    """All attention scores q_i . k_j after RoPE, with the same q and k vector at every position. (L, L)"""
    g = torch.Generator().manual_seed(seed)
    q, k = torch.randn(2, head_dim, generator=g, dtype=torch.float64)
    L = grid[0] * grid[1] * grid[2]
    cos, sin = RoPE3D(head_dim).tables(grid, "cpu", torch.float64)
    rq = apply_rope(q.expand(1, 1, L, head_dim), cos, sin)[0, 0]  # (L, head_dim)
    rk = apply_rope(k.expand(1, 1, L, head_dim), cos, sin)[0, 0]  # (L, head_dim)
    return rq @ rk.T


def test_rope_score_depends_only_on_relative_offset():
    grid = (5, 6, 7)
    S = scores(32, grid)

    def at(p, r):  # score between a query at position p and a key at position r, each (t, h, w)
        index = lambda t, h, w: (t * grid[1] + h) * grid[2] + w  # time-major, as patchify orders tokens
        return S[index(*p), index(*r)]

    p, r = (1, 2, 0), (3, 1, 4)
    for shift in [(1, 0, 0), (0, 3, 0), (0, 0, 2), (1, 2, 2), (-1, -1, 0)]:
        moved = lambda x: tuple(a + s for a, s in zip(x, shift))
        torch.testing.assert_close(at(p, r), at(moved(p), moved(r)))
    # Changing the offset along any single axis changes the score: every axis is encoded.
    for axis in range(3):
        r2 = list(r)
        r2[axis] += 1
        assert (at(p, r) - at(p, tuple(r2))).abs() > 1e-3


def test_rope_preserves_norm_and_fits_any_grid():
    rope = RoPE3D(24)
    for grid in [(1, 4, 4), (3, 2, 5), (2, 9, 1)]:  # an image, non-square, a single column
        L = grid[0] * grid[1] * grid[2]
        cos, sin = rope.tables(grid, "cpu")
        assert cos.shape == sin.shape == (1, 1, L, 24)
        x = torch.randn(2, 3, L, 24)
        torch.testing.assert_close(apply_rope(x, cos, sin).norm(dim=-1), x.norm(dim=-1))
    # Position (0, 0, 0) is not rotated, and for an image (f' = 1) the time channels are never rotated.
    cos, sin = rope.tables((1, 2, 2), "cpu")
    assert torch.equal(cos[0, 0, 0], torch.ones(24)) and torch.equal(sin[0, 0, 0], torch.zeros(24))
    assert torch.all(cos[..., :4] == 1) and torch.all(cos[..., 12:16] == 1)  # the time pairs (i, i + 12)


def test_rope_cache_and_inference_mode():
    rope = RoPE3D(16)
    with torch.inference_mode():  # first built while sampling...
        cos, sin = rope.tables((2, 3, 4), "cpu")
    assert rope.tables((2, 3, 4), torch.device("cpu"))[0] is cos  # same grid: the very same tensor
    assert rope.tables((2, 3, 5), "cpu")[0] is not cos
    # ...then reused in training: autograd must be able to save it for backward.
    x = torch.randn(1, 2, 24, 16, requires_grad=True)
    apply_rope(x, cos, sin).square().sum().backward()
    assert x.grad is not None


def test_apply_rope_keeps_input_dtype():
    cos, sin = RoPE3D(16).tables((1, 2, 2), "cpu")
    x = torch.randn(1, 2, 4, 16).bfloat16()
    assert apply_rope(x, cos, sin).dtype == torch.bfloat16


@pytest.mark.parametrize("grid, clip", [((2, 3, 5), 2), ((1, 4, 4), 3), ((3, 1, 2), 4)])
def test_edge_distances_against_a_loop(grid, clip):
    f, h, w = grid
    expected = [[k * clip + min(d, clip - 1) for k, d in enumerate((i, h - 1 - i, j, w - 1 - j))]
                for _ in range(f) for i in range(h) for j in range(w)]  # patchify's order: time, row, column
    assert edge_distances(grid, clip).tolist() == expected
