"""Spacetime latent patches and 3D rotary position embedding (RoPE).

Sora turns a compressed video latent into a sequence of "spacetime patches" that serve as transformer tokens,
the way text tokens serve an LLM (Sora report "Video generation models as world simulators", sections
"Turning visual data into patches" and "Spacetime latent patches"). A sequence can be any length, so one model
trains and samples at many durations, resolutions and aspect ratios ("Variable durations, resolutions, aspect
ratios"). This file holds both halves of that idea:

    patchify / unpatchify   latent (B, c, f, h, w) <-> tokens (B, L, c*pt*ph*pw) on a grid (f', h', w')
    RoPE3D / apply_rope     where a token sits on that grid, as a rotation of attention queries and keys
    edge_distances          how far a token is from its frame's edges (an optional hint for the DiT)

Papers: An Image is Worth 16x16 Words (ViT, Dosovitskiy et al., arXiv:2010.11929) for patches as tokens;
ViViT (Arnab et al., arXiv:2103.15691) for spacetime "tubelet" patches; Patch n' Pack (NaViT, Dehghani et al.,
arXiv:2307.06304) for any resolution and aspect ratio as a sequence; RoFormer (Su et al., arXiv:2104.09864) for
rotary position embedding; CogVideoX (Yang et al., arXiv:2408.06072) for the 3D RoPE split of the head;
An Intriguing Failing of Convolutional Neural Networks and the CoordConv Solution (Liu et al., arXiv:1807.03247)
for giving a network the positions it cannot infer (edge_distances).
"""
import torch
import torch.nn as nn


def _check_divisible(size, patch_size):
    if any(n % p for n, p in zip(size, patch_size)):
        up = tuple(-(-n // p) * p for n, p in zip(size, patch_size))  # the next multiples of the patch
        raise ValueError(
            f"latent (frames, height, width) = {tuple(size)} must be divisible by patch_size {tuple(patch_size)};"
            f" choose a video size whose latent is {up} (or another multiple of the patch)"
        )


def patchify(latents, patch_size=(1, 2, 2)):
    """Cut a latent video into non-overlapping pt x ph x pw patches and flatten each into a token.

    latents (B, c, f, h, w) -> tokens (B, L, c*pt*ph*pw) and grid (f', h', w') = (f/pt, h/ph, w/pw), L = f'h'w'.
    Tokens are time-major: every patch of the first time slab row by row, then the next slab, and so on, so the
    tokens of one latent frame are a contiguous run (dit.py relies on this for per-frame timesteps). Inside a
    token the values are ordered (c, pt, ph, pw), the layout of a Conv3d weight, so a Linear applied to the
    tokens is exactly ViT's patch embedding, a Conv3d with kernel = stride = patch_size.
    """
    B, c, f, h, w = latents.shape
    pt, ph, pw = patch_size
    _check_divisible((f, h, w), patch_size)
    gf, gh, gw = f // pt, h // ph, w // pw
    x = latents.reshape(B, c, gf, pt, gh, ph, gw, pw)  # (B, c, f', pt, h', ph, w', pw)
    x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)  # (B, f', h', w', c, pt, ph, pw)
    tokens = x.reshape(B, gf * gh * gw, c * pt * ph * pw)  # (B, L, c*pt*ph*pw)
    return tokens, (gf, gh, gw)


def edge_distances(grid, clip, device=None):
    """Each token's distance, in tokens, to the top, bottom, left and right edge of its frame, clipped at clip - 1,
    as rows of one embedding table: (L, 4) long, edge k's distance d at row k * clip + d, in patchify's token order.

    A CoordConv-style hint (Liu et al., arXiv:1807.03247: give a network the coordinates it cannot infer). RoPE
    makes attention see only offsets between tokens, so where the canvas ends, which the world's walls are, is
    otherwise inferred from which offsets are missing. Distances to the edges, unlike coordinates scaled to the
    canvas (NaViT, arXiv:2307.06304), mean the same on every canvas size; clipped, a larger canvas adds no new
    rows. grid (f', h', w') as patchify returns it."""
    f, h, w = grid
    rows = torch.arange(h, device=device)[:, None].expand(h, w)  # (h', w') each token's row
    cols = torch.arange(w, device=device)[None, :].expand(h, w)  # (h', w') and column
    distances = torch.stack([rows, h - 1 - rows, cols, w - 1 - cols], dim=-1).clamp(max=clip - 1)  # (h', w', 4)
    table_rows = distances + clip * torch.arange(4, device=device)  # (h', w', 4): edge k's rows start at k * clip
    return table_rows.expand(f, h, w, 4).reshape(f * h * w, 4)  # (L, 4), time-major as patchify's tokens


def unpatchify(tokens, grid, patch_size, channels):
    """Exact inverse of `patchify`: tokens (B, L, c*pt*ph*pw) on grid (f', h', w') -> latents (B, c, f, h, w)."""
    B, L, patch_dim = tokens.shape
    gf, gh, gw = grid
    pt, ph, pw = patch_size
    if L != gf * gh * gw or patch_dim != channels * pt * ph * pw:
        raise ValueError(
            f"tokens {tuple(tokens.shape)} do not fit grid {tuple(grid)}, patch_size {tuple(patch_size)} and"
            f" {channels} channels: expected (B, {gf * gh * gw}, {channels * pt * ph * pw})"
        )
    x = tokens.reshape(B, gf, gh, gw, channels, pt, ph, pw)  # (B, f', h', w', c, pt, ph, pw)
    x = x.permute(0, 4, 1, 5, 2, 6, 3, 7)  # (B, c, f', pt, h', ph, w', pw)
    return x.reshape(B, channels, gf * pt, gh * ph, gw * pw)  # (B, c, f, h, w)


# ---------------------------------------------------------------------------------------------------------------
# 3D RoPE. RoPE rotates each pair of query/key channels by an angle proportional to the token's position, so the
# score q.k depends only on the *difference* of the two positions. In 3D the head's channel pairs are shared out
# among the axes: some pairs rotate with the frame index, others with the row, others with the column. Positions
# are integer token coordinates, not rescaled to the training size: a grid larger than, or shaped unlike, any seen
# in training only adds new offsets, and the offsets the model has seen keep their meaning (how well it does on
# the new ones is for evaluation to say, but nothing breaks). No learned position table limits the size, so one
# model can sample, like Sora, "widescreen 1920x1080p videos, vertical 1080x1920 videos and everything inbetween".
# ---------------------------------------------------------------------------------------------------------------


def rope_axis_dims(head_dim):
    """Channels of one attention head given to (time, height, width): about 1/4 : 3/8 : 3/8, as in CogVideoX.

    Space gets more because our latent grids have more rows and columns than frames (a 4x causal VAE leaves few
    latent frames, and an image has one, where the time channels carry nothing), and spatial detail is finer.
    Height and width get the same number of channels, so rows and columns see the same set of frequencies; time
    takes any remainder. head_dim 64 -> (16, 24, 24); 32 -> (8, 12, 12); 24 -> (8, 8, 8).
    """
    if head_dim % 2 or head_dim < 6:
        raise ValueError(
            f"3D RoPE needs an even head_dim of at least 6, so time, height and width each get a pair of channels"
            f" to rotate: got {head_dim}; change dim or heads (head_dim = dim / heads)"
        )
    pairs = head_dim // 2
    hw_pairs = (pairs - pairs // 4) // 2
    return 2 * (pairs - 2 * hw_pairs), 2 * hw_pairs, 2 * hw_pairs


class RoPE3D(nn.Module):
    """cos/sin tables of 3D RoPE for a token grid, cached per (grid, device, dtype). Holds no parameters.

    Pairing convention: rotate-half (as in GPT-NeoX and Llama in Hugging Face), channel i is paired with channel
    i + head_dim/2. Of the head_dim/2 pairs, the first (about a quarter) rotate with time, the next with height
    and the last with width.
    Each axis is an ordinary 1D RoPE over its pairs with frequencies theta^(-2k/axis_dim). The convention only
    matters when loading weights trained elsewhere: q and k come from learned projections, so any fixed pairing
    trains equally well. Rotate-half slices contiguous halves, cheaper than the strided pairs of interleaving.
    """

    def __init__(self, head_dim, theta=10000.0):
        super().__init__()
        self.head_dim = head_dim
        self.axis_dims = rope_axis_dims(head_dim)
        self.theta = theta
        self._cache = {}  # plain dict, not buffers: tables are derived from the grid, never saved in checkpoints

    def tables(self, grid, device, dtype=torch.float32):
        """(cos, sin), each (1, 1, L, head_dim), broadcasting over q or k (B, heads, L, head_dim)."""
        if torch.compiler.is_compiling():
            # Under torch.compile the tables become a few fused ops inside the graph; reading a Python cache
            # would make the graph depend on what the cache holds, and recompile once it fills.
            return self._build(tuple(grid), torch.device(device), dtype)
        key = (tuple(grid), torch.device(device), dtype)
        if key not in self._cache:
            # Tables first built while sampling under torch.inference_mode() would be "inference tensors", which
            # autograd refuses to save; a training step that later reused them would fail. So build outside it.
            with torch.inference_mode(False):
                self._cache[key] = self._build(tuple(grid), torch.device(device), dtype)
        return self._cache[key]

    def _build(self, grid, device, dtype):
        # float32 angles are good to about 1e-5 rad at positions in the hundreds; float64 only when asked for.
        compute = torch.float64 if dtype == torch.float64 else torch.float32
        axes = [torch.arange(n, device=device, dtype=compute) for n in grid]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)  # (L, 3), time-major
        angles = []
        for axis, axis_dim in enumerate(self.axis_dims):
            exponents = torch.arange(0, axis_dim, 2, device=device, dtype=compute) / axis_dim  # (axis_dim/2,)
            angles.append(coords[:, axis, None] * self.theta ** -exponents)  # (L, axis_dim/2)
        angles = torch.cat(angles, dim=-1)  # (L, head_dim/2): one angle per channel pair
        angles = torch.cat([angles, angles], dim=-1)  # (L, head_dim): channels i and i + head_dim/2 share an angle
        cos = angles.cos().to(dtype)[None, None]  # (1, 1, L, head_dim)
        sin = angles.sin().to(dtype)[None, None]  # (1, 1, L, head_dim)
        return cos, sin


def rotate_half(x):
    """(x1, x2) -> (-x2, x1) on the two halves of the last dim: a 90-degree turn of every (i, i + d/2) pair."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat((-x2, x1), dim=-1)


def apply_rope(x, cos, sin):
    """Rotate queries or keys x (B, heads, L, head_dim) by their positions; cos, sin from `RoPE3D.tables`.

    Computed in the tables' dtype (float32 by default), so bf16 activations are rotated at full precision, and
    returned in x's dtype, so attention still sees matching dtypes under autocast.
    """
    x_rot = x.to(cos.dtype)
    return (x_rot * cos + rotate_half(x_rot) * sin).to(x.dtype)
