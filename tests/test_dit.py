"""Tiny seeded DiTs on the CPU: zero output and identity blocks at init, any grid, text padding that changes
nothing, per-frame timesteps that reduce to one timestep, gradients everywhere, the variant without
cross-attention, and clear config errors."""
import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from dit import DiT, DiTConfig

E = 24  # text width of the tiny configs


def tiny_model(seed=0, perturb=True, **overrides):
    """A small DiT. perturb=True moves the zero-initialised layers (adaLN, final layer) away from zero, since
    at init the output is exactly zero and most properties would hold trivially."""
    torch.manual_seed(seed)
    config = DiTConfig(**{"dim": 32, "depth": 2, "heads": 2, "text_dim": E, **overrides})
    model = DiT(config)
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                if not p.any():
                    p.normal_(std=0.1)
    return model


def captions(lengths, S=None, seed=1):
    """Random text features (B, S, E) with a mask True on the first lengths[i] positions, and a pooled (B, E)."""
    g = torch.Generator().manual_seed(seed)
    S = S or max(lengths)
    features = torch.randn(len(lengths), S, E, generator=g)
    mask = torch.arange(S)[None, :] < torch.tensor(lengths)[:, None]  # (B, S)
    return features, mask, torch.randn(len(lengths), E, generator=g)


def test_output_is_exactly_zero_at_init():
    model = tiny_model(perturb=False)
    for shape in [(2, 4, 3, 4, 6), (1, 4, 1, 8, 2)]:
        features, mask, pooled = captions([5, 2][: shape[0]])
        out = model(torch.randn(shape), torch.rand(shape[0]), features, mask, pooled)
        assert out.shape == shape and torch.all(out == 0)


def test_every_block_is_the_identity_at_init():
    model = tiny_model(perturb=False)
    x = torch.randn(2, 12, 32)  # (B, L, D) on a (1, 3, 4) grid
    features, mask, _ = captions([3, 7])
    cos, sin = model.rope.tables((1, 3, 4), "cpu")
    for cond in (torch.randn(2, 1, 32), torch.randn(2, 3, 32)):  # one timestep, or one per group of 4 tokens
        for block in model.blocks:
            assert torch.equal(block(x, cond, features, mask, cos, sin), x)


@pytest.mark.parametrize("shape", [(2, 4, 3, 4, 6), (1, 4, 1, 6, 10), (2, 4, 2, 8, 2)])  # incl. f = 1, non-square
def test_output_shape_for_any_grid(shape):
    model = tiny_model()
    features, mask, pooled = captions([4, 6][: shape[0]])
    out = model(torch.randn(shape), torch.rand(shape[0]), features, mask, pooled)
    assert out.shape == shape and out.abs().sum() > 0


def test_temporal_patches_and_per_frame_timesteps():
    model = tiny_model(patch_size=(2, 2, 2))
    latents = torch.randn(2, 4, 4, 4, 6)
    features, mask, pooled = captions([4, 6])
    scalar = model(latents, torch.tensor([0.3, 0.8]), features, mask, pooled)
    per_frame = torch.tensor([[0.3, 0.3, 0.6, 0.6], [0.8, 0.8, 0.8, 0.8]])
    assert scalar.shape == latents.shape
    assert not torch.allclose(model(latents, per_frame, features, mask, pooled), scalar)
    model.eval()  # checked when sampling; a training step skips the check, which waits for the GPU
    with pytest.raises(ValueError, match="equal within each temporal patch of pt = 2"):
        model(latents, torch.tensor([[0.3, 0.4, 0.6, 0.6], [0.8] * 4]), features, mask, pooled)


def test_per_frame_t_with_equal_frames_equals_one_t():
    model = tiny_model()
    latents = torch.randn(2, 4, 3, 4, 4)
    features, mask, pooled = captions([4, 6])
    t = torch.tensor([0.25, 0.9])
    one_t = model(latents, t, features, mask, pooled)
    torch.testing.assert_close(model(latents, t[:, None].expand(2, 3), features, mask, pooled), one_t)
    torch.testing.assert_close(model(latents[:1], 0.25, features[:1], mask[:1], pooled[:1]), one_t[:1])  # a float t
    # Different timesteps per frame do change the result (the per-frame path is not ignored).
    per_frame = torch.tensor([[0.25, 0.5, 0.25], [0.9, 0.9, 0.9]])
    assert not torch.allclose(model(latents, per_frame, features, mask, pooled)[0], one_t[0])


def test_batched_equals_one_by_one_whatever_the_padding():
    model = tiny_model()
    latents = torch.randn(2, 4, 2, 4, 6)
    t = torch.tensor([0.2, 0.7])
    features, mask, pooled = captions([5, 9])  # S = 9: the first caption carries 4 padding positions
    batched = model(latents, t, features, mask, pooled)
    for i, length in enumerate([5, 9]):
        one = slice(i, i + 1)
        alone = model(latents[one], t[one], features[one, :length], mask[one, :length], pooled[one])
        torch.testing.assert_close(alone, batched[one], atol=1e-5, rtol=1e-5)
    # Pad the batch 6 positions further, with random features there: the same result.
    more_features = torch.cat([features, torch.randn(2, 6, E)], dim=1)  # (B, S + 6, E)
    more_mask = torch.cat([mask, torch.zeros(2, 6, dtype=torch.bool)], dim=1)  # (B, S + 6)
    torch.testing.assert_close(model(latents, t, more_features, more_mask, pooled), batched, atol=1e-5, rtol=1e-5)


def test_masked_text_positions_are_ignored():
    model = tiny_model()
    latents, t = torch.randn(2, 4, 2, 4, 4), torch.rand(2)
    features, mask, pooled = captions([3, 6])
    out = model(latents, t, features, mask, pooled)
    scrambled = torch.where(mask[..., None], features, 100 * torch.randn_like(features))
    assert torch.equal(model(latents, t, scrambled, mask, pooled), out)
    # A caption with no real character at all gives a finite result that ignores its features.
    empty = torch.zeros_like(mask)
    out_empty = model(latents, t, features, empty, pooled)
    assert torch.isfinite(out_empty).all()
    assert torch.equal(model(latents, t, torch.randn_like(features), empty, pooled), out_empty)


def test_gradients_reach_every_parameter():
    model = tiny_model()
    features, mask, pooled = captions([4, 6])
    latents = torch.randn(2, 4, 2, 4, 4)
    out = model(latents, torch.rand(2, 2), features, mask, pooled)
    (out - torch.randn_like(out)).square().mean().backward()
    no_grad = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not no_grad, f"no gradient reaches {no_grad}"


def test_without_cross_attention_the_caption_acts_through_its_pooled_vector_alone():
    model, full = tiny_model(cross_attention=False), tiny_model()
    assert all(block.cross_attn is None and not hasattr(block, "norm2") for block in model.blocks)
    extra = {n: p.numel() for n, p in full.named_parameters()}
    for n, p in model.named_parameters():
        extra[n] -= p.numel()
    # what it lacks is each block's cross-attention, its norm and its gate's slice of the adaLN (one D-row block)
    assert {n for n, count in extra.items() if count} == {
        n for n in extra if n.startswith("blocks.") and (".cross_attn." in n or ".norm2." in n or ".adaLN_mod" in n)}
    assert sum(extra.values()) == sum(p.numel() for b in full.blocks for p in [*b.cross_attn.parameters(),
                                                                              *b.norm2.parameters()]) + 2 * (33 * 32)
    latents, t = torch.randn(2, 4, 2, 4, 4), torch.rand(2)
    features, mask, pooled = captions([3, 6])
    out = model(latents, t, features, mask, pooled)
    assert torch.equal(model(latents, t, torch.randn_like(features), mask.flip(0), pooled), out)  # tokens unread
    assert not torch.allclose(model(latents, t, features, mask, pooled.flip(0)), out)  # the pooled vector steers
    (out - torch.randn_like(out)).square().mean().backward()
    assert all(p.grad is not None and p.grad.any() for p in model.parameters())  # every weight it has is used


def test_edge_embedding_starts_as_a_no_op_and_reaches_the_rows_of_the_grid():
    """--dit-edge-distances: zero at init, so the model equals the one without it; once learned it changes the
    output, and a grid two tokens high and three wide reads only the rows of distances 0-1 (top, bottom) and
    0-2 (left, right) of a table of 4 per edge."""
    plain, with_edges = tiny_model(), tiny_model(perturb=False, edge_distances=4)
    missing = with_edges.load_state_dict(plain.state_dict(), strict=False).missing_keys
    assert missing == ["edge_embed.weight"]
    latents, t = torch.randn(2, 4, 2, 4, 6), torch.rand(2)  # grid (2, 2, 3)
    features, mask, pooled = captions([4, 6])
    before = plain(latents, t, features, mask, pooled)
    assert torch.equal(with_edges(latents, t, features, mask, pooled), before)
    with torch.no_grad():
        with_edges.edge_embed.weight.normal_(std=0.1)
    out = with_edges(latents, t, features, mask, pooled)
    assert not torch.allclose(out, before)
    out.square().sum().backward()
    used = with_edges.edge_embed.weight.grad.abs().sum(1).view(4, 4) > 0  # (edge, distance)
    assert used.tolist() == [[True, True, False, False]] * 2 + [[True, True, True, False]] * 2


@pytest.mark.parametrize("edge_distances", [0, 4])
def test_runs_under_bf16_autocast(edge_distances):
    model = tiny_model(edge_distances=edge_distances)
    features, mask, pooled = captions([4, 6])
    seen = []  # the dtype of the residual stream entering the first block: bf16, with or without the edge table
    model.blocks[0].register_forward_pre_hook(lambda module, args: seen.append(args[0].dtype))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.randn(2, 4, 2, 4, 4), torch.rand(2), features, mask, pooled)
    assert out.shape == (2, 4, 2, 4, 4) and torch.isfinite(out).all() and seen == [torch.bfloat16]


@pytest.mark.parametrize("cross_attention", [True, False])
def test_flops_per_token_matches_flop_counter(cross_attention):
    model = tiny_model(depth=3, cross_attention=cross_attention)
    latents = torch.randn(1, 4, 4, 8, 8)  # L = 4 * 4 * 4 = 64 tokens
    features, mask, pooled = captions([10])
    # The math backend writes attention as matmuls, which the counter sees (it has no formula for the fused CPU op).
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(latents, torch.rand(1), features, mask, pooled)
    counted = counter.get_total_flops() / 64
    # The estimate leaves out per-clip work (timestep MLP, adaLN), a few percent at this tiny size.
    assert 0.97 < model.flops_per_token(num_tokens=64, text_len=10) / counted <= 1.0
    assert model.num_params() == sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"dim": 30, "heads": 4}, "divisible by heads"),
        ({"dim": 16, "heads": 4}, "even head_dim of at least 6"),
        ({"patch_size": (2, 2)}, "three positive ints"),
        ({"patch_size": (1, 0, 2)}, "three positive ints"),
        ({"edge_distances": -1}, "edge_distances must be 0"),
        ({"edge_distances": 1}, "edge_distances must be 0"),
    ],
)
def test_bad_config_raises(overrides, message):
    with pytest.raises(ValueError, match=message):
        DiTConfig(**overrides)


def test_bad_inputs_raise():
    model = tiny_model()
    latents = torch.randn(2, 4, 2, 4, 4)
    features, mask, pooled = captions([4, 6])
    with pytest.raises(ValueError, match="must be bool"):
        model(latents, torch.rand(2), features, mask.float(), pooled)
    with pytest.raises(ValueError, match=r"t must be \(B,\)"):
        model(latents, torch.rand(2, 3), features, mask, pooled)
    with pytest.raises(ValueError, match="channels"):
        model(latents[:, :3], torch.rand(2), features, mask, pooled)
    with pytest.raises(ValueError, match="divisible by patch_size"):
        model(latents[..., :3], torch.rand(2), features, mask, pooled)
