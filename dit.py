"""The diffusion transformer (DiT): noisy spacetime patches + timestep + caption -> predicted velocity.

Sora "is a diffusion model; given input noisy patches (and conditioning information like text prompts), it's
trained to predict the original clean patches. Importantly, Sora is a diffusion transformer" (Sora report, "Scaling
transformers for video generation"). Ours predicts the rectified-flow velocity instead (diffusion.py), which
gives the clean patches as x0 = x_t - t * velocity. Each block is DiT's adaLN-Zero block plus a cross-attention
to the caption (or, with DiTConfig.cross_attention off, the caption's pooled vector in adaLN alone); attention
uses QK-norm and 3D RoPE (patchify.py) and no learned position table, so the same weights run on any grid of
latent frames, rows and columns. Optionally (DiTConfig.edge_distances) each token also learns how far it is from its
frame's edges, which RoPE's offsets leave the model to guess: where the walls are on a canvas of any size.

Papers: Scalable Diffusion Models with Transformers (DiT, Peebles & Xie, arXiv:2212.09748) for adaLN-Zero,
TimestepEmbedder and FinalLayer; PixArt-alpha (Chen et al., arXiv:2310.00426) for text cross-attention in a DiT
block; Scaling Vision Transformers to 22 Billion Parameters (Dehghani et al., arXiv:2302.05442) for QK-norm;
Root Mean Square Layer Normalization (Zhang & Sennrich, arXiv:1910.07467); Open-Sora (Zheng et al.,
arXiv:2412.20404) for one timestep per latent frame, so some frames can be given clean.
"""
import math
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

from patchify import RoPE3D, apply_rope, edge_distances, patchify, rope_axis_dims, unpatchify


@dataclass
class DiTConfig:
    latent_channels: int = 4  # c, from the VAE
    patch_size: tuple[int, int, int] = (1, 2, 2)  # (pt, ph, pw) latent cells per token
    dim: int = 256  # D, the width of every token
    depth: int = 6  # number of DiTBlocks
    heads: int = 4  # head_dim = dim / heads = 64
    mlp_ratio: float = 4.0
    text_dim: int = 256  # E, the width of the text encoder's features
    rope_theta: float = 10000.0  # RoPE base: the slowest rotation has a period of about 2 * pi * theta tokens
    # False: no cross-attention; the caption steers every block through its pooled vector in adaLN alone, as DiT's
    # class label does. Enough for a caption of one digit's attributes, which the pooled vector holds whole.
    cross_attention: bool = True
    # n >= 2: every token also learns where its frame's edges are: an embedding of its distance, in tokens, to each
    # of the four edges, clipped at n - 1 (patchify.edge_distances). RoPE alone gives only relative positions, so
    # a model trained on several canvas sizes could place the walls only by guessing; 0: off.
    edge_distances: int = 0

    def __post_init__(self):
        self.patch_size = tuple(self.patch_size)  # a list from the command line or a checkpoint works too
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive ints (pt, ph, pw): got {self.patch_size}")
        if self.dim % self.heads:
            raise ValueError(
                f"dim must be divisible by heads: got dim {self.dim}, heads {self.heads}; e.g. heads = dim // 64"
            )
        if self.edge_distances < 0 or self.edge_distances == 1:  # 1 would be one constant vector per edge
            raise ValueError(f"edge_distances must be 0 (off) or at least 2: got {self.edge_distances}")
        rope_axis_dims(self.dim // self.heads)  # raises if the head cannot be split among time, height, width


def modulate(x, shift, scale):
    """adaLN: scale and shift a normalised x. `1 + scale`, so a zero scale (at init) leaves x unchanged."""
    return x * (1 + scale) + shift


class TimestepEmbedder(nn.Module):
    """Timestep t in [0, 1], any shape (...), -> vector (..., D): sinusoidal frequencies, then an MLP (DiT)."""

    def __init__(self, dim, freq_dim=256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t):  # t (...) -> (..., D)
        # The Transformer's sinusoid has angular frequencies from 1 down to 1/10000 per unit, made for integer
        # positions (or DDPM's steps 0..999). Over t in [0, 1] even the fastest would turn by one radian at most,
        # so nearby timesteps would get nearly identical features. Scaling by 1000 spreads t over the range the
        # frequencies were made for: fast ones tell t = 0.30 from 0.31, slow ones give coarse t without wrapping.
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device) / half)  # (half,)
        angles = 1000.0 * t.float()[..., None] * freqs  # (..., half)
        return self.mlp(torch.cat([angles.cos(), angles.sin()], dim=-1))  # (..., freq_dim) -> (..., D)


class RMSNorm(nn.Module):
    """x / rms(x) * weight over the last dim. Unlike nn.RMSNorm, the weight is cast to x's dtype, so bf16
    autocast keeps the fused kernel (nn.RMSNorm falls back to a slower path and warns when dtypes differ)."""

    def __init__(self, dim, eps=1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):  # (..., dim) -> (..., dim)
        return F.rms_norm(x, (x.shape[-1],), self.weight.to(x.dtype), self.eps)


def attention(q, k, v, attn_mask=None):
    """softmax(q k^T / sqrt(head_dim)) v over (B, heads, L, head_dim) queries and (B, heads, S, head_dim) keys and
    values; attn_mask (B, 1, 1, S) bool, True = may be attended. Returns (B, heads, L, head_dim).

    Off the CPU, or in fp32, F.scaled_dot_product_attention's fused kernels. On the CPU under bf16 autocast the
    formula is written out: PyTorch's CPU flash-attention kernel runs 5x slower in bf16 than in fp32, and at 48
    tokens the two bf16 products with the softmax in fp32 run forward and backward in 0.4x the time of that kernel
    in fp32 (EXPERIMENTS.md, "Attention on the CPU"). The scores are rounded to bf16 too. The softmax takes them in
    bf16: PyTorch's CPU kernel computes it in fp32 inside and rounds only its result, so it equals
    `scores.float().softmax(-1).to(bf16)` but for ties, without the two copies of the (B, heads, L, S) scores that
    casting around it costs (the 2x step of 40 clips with cross-attention: 1.07x with the GELU below). The result
    stays within about 2^-7 of the exact formula, relative to the largest value (tests/test_precision.py)."""
    if q.device.type != "cpu" or q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask)
    scores = q @ k.transpose(-2, -1) * q.shape[-1] ** -0.5  # (B, heads, L, S)
    if attn_mask is not None:
        scores = scores.masked_fill(~attn_mask, float("-inf"))
    return scores.softmax(dim=-1) @ v  # (B, heads, L, head_dim)


class SelfAttention(nn.Module):
    """Multi-head attention among all L spacetime tokens at once (full 3D attention: every patch sees every
    other patch in space and time), with QK-norm and 3D RoPE on the queries and keys."""

    def __init__(self, dim, heads):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)  # q, k and v in one matmul
        self.q_norm = RMSNorm(dim // heads)
        self.k_norm = RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, cos, sin):  # x (B, L, D); cos, sin (1, 1, L, head_dim) -> (B, L, D)
        B, L, D = x.shape
        qkv = self.qkv(x).view(B, L, 3, self.heads, D // self.heads)  # (B, L, 3, heads, head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # 3 x (B, heads, L, head_dim)
        # QK-norm: without it the attention logits q.k can grow during training until softmax saturates and the
        # loss spikes (ViT-22B). Normalising each head's q and k bounds them; cheap insurance under bf16.
        q, k = self.q_norm(q), self.k_norm(k)
        # RoPE after the norm, so the score compares rotated (position-aware) unit-scale vectors.
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = attention(q, k, v)  # (B, heads, L, head_dim), flash kernel when available
        return self.proj(out.transpose(1, 2).reshape(B, L, D))  # (B, L, D)


class CrossAttention(nn.Module):
    """Video tokens (queries) read the caption's features (keys and values), as in PixArt-alpha. Padded text
    positions get no attention. No RoPE here: the text encoder already put word order into its features."""

    def __init__(self, dim, text_dim, heads):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(text_dim, 2 * dim)
        self.q_norm = RMSNorm(dim // heads)
        self.k_norm = RMSNorm(dim // heads)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, text_features, text_mask):  # x (B, L, D); text (B, S, E); mask (B, S) -> (B, L, D)
        B, L, D = x.shape
        S = text_features.shape[1]
        q = self.q(x).view(B, L, self.heads, D // self.heads).transpose(1, 2)  # (B, heads, L, head_dim)
        kv = self.kv(text_features).view(B, S, 2, self.heads, D // self.heads)  # (B, S, 2, heads, head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4)  # 2 x (B, heads, S, head_dim)
        q, k = self.q_norm(q), self.k_norm(k)
        # A caption with no real character (say, an empty one) would leave softmax nothing to normalise over,
        # which gives NaN on some kernels. Let such a row attend everywhere (finite), then zero its result.
        has_text = text_mask.any(dim=1)  # (B,)
        attn_mask = (text_mask | ~has_text[:, None])[:, None, None, :]  # (B, 1, 1, S), True = may be attended
        out = attention(q, k, v, attn_mask=attn_mask)  # (B, heads, L, head_dim)
        out = self.proj(out.transpose(1, 2).reshape(B, L, D))  # (B, L, D)
        return out * has_text[:, None, None].to(out.dtype)  # (B, L, D)


class MLP(nn.Module):
    """Position-wise feed-forward network: Linear, GELU, Linear. DiT used GELU's tanh approximation, once faster on
    GPUs; on the CPU in bf16 the exact (erf) form is 2.4x faster forward and backward at the cpu preset's shapes
    (EXPERIMENTS.md, "Where the step's time goes"), and the two differ by under 0.001."""

    def __init__(self, dim, hidden):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x):  # (..., D) -> (..., D)
        return self.fc2(F.gelu(self.fc1(x)))


class DiTBlock(nn.Module):
    """adaLN-Zero transformer block (DiT) with a text cross-attention (PixArt-alpha):

        x = x + gate_sa  * SelfAttention(modulate(norm(x), shift_sa, scale_sa))
        x = x + gate_ca  * CrossAttention(norm(x), text)
        x = x + gate_mlp * MLP(modulate(norm(x), shift_mlp, scale_mlp))

    The shifts, scales and gates are regressed from the conditioning vector (timestep + pooled caption), so
    the noise level steers every layer; DiT found this beat feeding the timestep in as an extra token. With
    cross_attention=False the middle line (and gate_ca) is left out: the caption then steers the block through
    the pooled vector in that conditioning alone, as DiT's class label does.
    """

    def __init__(self, dim, heads, text_dim, mlp_ratio, cross_attention=True):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)  # adaLN supplies scale and shift
        self.attn = SelfAttention(dim, heads)
        if cross_attention:
            self.norm2 = nn.LayerNorm(dim, eps=1e-6)  # not modulated (as in PixArt-alpha): it learns its own affine
            self.cross_attn = CrossAttention(dim, text_dim, heads)
        else:
            self.cross_attn = None  # the caption arrives through cond alone (DiTConfig.cross_attention)
        self.norm3 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = MLP(dim, int(dim * mlp_ratio))
        self.num_mods = 7 if cross_attention else 6  # shifts, scales and gates; no cross-attention, no gate_ca
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, self.num_mods * dim))
        # adaLN-Zero: all modulation vectors start at zero. Zero gates make the block the identity, so at init
        # the deep network is a shallow one and trains stably, each block growing its residual from nothing;
        # zero shift and scale make the adaLN a plain LayerNorm. DiT found this the best of its variants.
        nn.init.zeros_(self.adaLN_modulation[-1].weight)
        nn.init.zeros_(self.adaLN_modulation[-1].bias)

    def forward(self, x, cond, text_features, text_mask, cos, sin):
        # x (B, L, D); cond (B, T, D) with T = 1 (one timestep per clip) or T = f' (one per latent frame);
        # text_features (B, S, E); text_mask (B, S); cos, sin (1, 1, L, head_dim) -> (B, L, D)
        B, L, D = x.shape
        T = cond.shape[1]
        mods = list(self.adaLN_modulation(cond).unsqueeze(2).chunk(self.num_mods, dim=-1))  # 7 or 6 x (B, T, 1, D)
        gate_ca = mods.pop(3) if self.cross_attn is not None else None
        shift_sa, scale_sa, gate_sa, shift_mlp, scale_mlp, gate_mlp = mods
        # Tokens are time-major, so the L / T tokens that share a timestep are contiguous: viewing x as groups
        # lets each group's modulation broadcast over its tokens without copying it out to all L of them.
        x = x.view(B, T, L // T, D)  # (B, T, N, D), N = L / T
        h = modulate(self.norm1(x), shift_sa, scale_sa)  # (B, T, N, D)
        x = x + gate_sa * self.attn(h.view(B, L, D), cos, sin).view(B, T, -1, D)  # (B, T, N, D)
        if self.cross_attn is not None:
            h = self.norm2(x).view(B, L, D)  # (B, L, D)
            x = x + gate_ca * self.cross_attn(h, text_features, text_mask).view(B, T, -1, D)  # (B, T, N, D)
        h = modulate(self.norm3(x), shift_mlp, scale_mlp)  # (B, T, N, D)
        x = x + gate_mlp * self.mlp(h)  # (B, T, N, D)
        return x.view(B, L, D)  # (B, L, D)


class FinalLayer(nn.Module):
    """adaLN (shift and scale from the conditioning), then a linear from each token to its patch values (DiT)."""

    def __init__(self, dim, patch_dim):
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.adaLN_modulation = nn.Sequential(nn.SiLU(), nn.Linear(dim, 2 * dim))
        self.linear = nn.Linear(dim, patch_dim)
        # Zero init, so the model predicts velocity 0 at init: the mean of the target noise - x0 for zero-mean
        # latents, hence the best constant guess. Training starts at loss = Var(target), with no random output
        # to unlearn first.
        for layer in (self.adaLN_modulation[-1], self.linear):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(self, x, cond):  # x (B, L, D); cond (B, T, D) -> (B, L, patch_dim)
        B, L, D = x.shape
        T = cond.shape[1]
        shift, scale = self.adaLN_modulation(cond).unsqueeze(2).chunk(2, dim=-1)  # 2 x (B, T, 1, D)
        h = modulate(self.norm(x).view(B, T, L // T, D), shift, scale)  # (B, T, N, D)
        return self.linear(h).view(B, L, -1)  # (B, L, patch_dim)


class DiT(nn.Module):
    """Latent (B, c, f, h, w) -> patch tokens -> DiTBlocks -> FinalLayer -> velocity (B, c, f, h, w)."""

    def __init__(self, config: DiTConfig):
        super().__init__()
        self.config = config
        pt, ph, pw = config.patch_size
        patch_dim = config.latent_channels * pt * ph * pw
        # A Linear on patchify's tokens is ViT's patch embedding (a Conv3d with kernel = stride = patch_size).
        self.patch_embed = nn.Linear(patch_dim, config.dim)
        self.t_embedder = TimestepEmbedder(config.dim)
        self.text_pooled_embed = nn.Linear(config.text_dim, config.dim)  # the caption's summary joins t in cond
        self.rope = RoPE3D(config.dim // config.heads, config.rope_theta)
        if config.edge_distances:
            # 4n rows, n per edge (top, bottom, left, right); zero at init, so the model starts as without
            self.edge_embed = nn.Embedding(4 * config.edge_distances, config.dim)
            nn.init.zeros_(self.edge_embed.weight)
        self.blocks = nn.ModuleList(
            DiTBlock(config.dim, config.heads, config.text_dim, config.mlp_ratio, config.cross_attention)
            for _ in range(config.depth)
        )
        self.final_layer = FinalLayer(config.dim, patch_dim)

    def forward(self, latents, t, text_features, text_mask, text_pooled):
        """latents (B, c, f, h, w), noised; t (B,) or (B, f) in [0, 1], or a float; text_features (B, S, E);
        text_mask (B, S) bool, True = real character; text_pooled (B, E). Returns the velocity (B, c, f, h, w)."""
        cfg = self.config
        B, c, f, h, w = latents.shape
        if c != cfg.latent_channels:
            raise ValueError(f"latents have {c} channels but DiTConfig.latent_channels is {cfg.latent_channels}")
        if text_mask.dtype != torch.bool or text_mask.shape != text_features.shape[:2]:
            raise ValueError(
                f"text_mask must be bool (B, S) = {tuple(text_features.shape[:2])}, True = real character: got"
                f" {text_mask.dtype} {tuple(text_mask.shape)}; for a 0/1 mask pass mask.bool()"
            )
        if text_features.shape[-1] != cfg.text_dim or text_pooled.shape != (B, cfg.text_dim):
            raise ValueError(
                f"text features must be (B, S, {cfg.text_dim}) and pooled (B, {cfg.text_dim}) to match"
                f" DiTConfig.text_dim: got {tuple(text_features.shape)} and {tuple(text_pooled.shape)}"
            )
        tokens, grid = patchify(latents, cfg.patch_size)  # (B, L, c*pt*ph*pw), grid (f', h', w')
        x = self.patch_embed(tokens)  # (B, L, D)
        if cfg.edge_distances:
            edge_rows = edge_distances(grid, cfg.edge_distances, latents.device)  # (L, 4) rows of the table
            # (L, 4, D) -> (L, D), the same for every clip; cast, or an fp32 table would lift bf16 autocast's x to fp32
            x = x + self.edge_embed(edge_rows).sum(1).to(x.dtype)
        t = self.timesteps_per_group(torch.as_tensor(t, dtype=torch.float32, device=latents.device), B, f)
        cond = self.t_embedder(t) + self.text_pooled_embed(text_pooled)[:, None]  # (B, T, D)
        cos, sin = self.rope.tables(grid, latents.device)  # (1, 1, L, head_dim), cached per grid
        for block in self.blocks:
            x = block(x, cond, text_features, text_mask, cos, sin)  # (B, L, D)
        x = self.final_layer(x, cond)  # (B, L, c*pt*ph*pw)
        return unpatchify(x, grid, cfg.patch_size, c)  # (B, c, f, h, w)

    def timesteps_per_group(self, t, batch, frames):
        """t -> (B, T): T = 1 when the clip has one timestep (its modulation broadcasts over all L tokens), or
        T = f' for one timestep per latent frame (it broadcasts over that frame's h' * w' tokens). Both paths run
        the same block code. With pt > 1 a token spans pt frames, so their timesteps must be equal."""
        if t.dim() == 0:
            t = t.expand(batch)  # a float or 0-dim tensor: the same timestep for the whole batch
        if t.shape == (batch,):
            return t[:, None]  # (B, 1)
        if t.shape != (batch, frames):
            raise ValueError(f"t must be (B,) = ({batch},) or (B, f) = ({batch}, {frames}): got {tuple(t.shape)}")
        pt = self.config.patch_size[0]
        if pt == 1:
            return t  # (B, f)
        t = t.view(batch, frames // pt, pt)  # (B, f', pt)
        # The check reads t back (a GPU sync), so training, whose t train.objective_inputs draws per token, skips it
        if not self.training and not torch.equal(t, t[..., :1].expand_as(t)):
            raise ValueError(f"per-frame t must be equal within each temporal patch of pt = {pt} latent frames")
        return t[..., 0]  # (B, f')

    def num_params(self):
        return sum(p.numel() for p in self.parameters())

    def flops_per_token(self, num_tokens, text_len):
        """Forward FLOPs per video token (2 per multiply-add; a training step costs about 3x) for clips of
        num_tokens tokens and captions of text_len characters: the matmuls of the weights plus the attention
        scores and weighted sums. Per-clip work (timestep MLP, adaLN) is left out: it is not per token."""
        cfg = self.config
        D, E, L, S = cfg.dim, cfg.text_dim, num_tokens, text_len
        patch_dim = cfg.latent_channels * math.prod(cfg.patch_size)
        self_attn = 4 * D * D + 2 * L * D  # qkv + output projection; q.k and the sum over v, L keys each
        cross_attn = 2 * D * D + 2 * S * D + 2 * S * E * D / L  # q + output; scores over S; text k, v shared by L
        if not cfg.cross_attention:
            cross_attn = 0
        mlp = 2 * D * int(D * cfg.mlp_ratio)
        return 2 * (2 * patch_dim * D + cfg.depth * (self_attn + cross_attn + mlp))
