"""Text encoder: captions -> character tokens -> features (B, S, E), padding mask (B, S), pooled vector (B, E).

Implements the text conditioning of the Sora report ("Video generation models as world simulators"), section
"Language understanding": Sora is a text-conditional model that turns prompts into videos. Sora relies on a
large pretrained language model; our captions come from a small grammar over a moving-digits world, so a tiny
character-level transformer trained from scratch is enough -- and needs no download and no vocabulary file. In
place of that pretraining, train.py first teaches it for a few seconds what each caption states
(`pretrain_text_encoder`), then trains it jointly with the DiT. Empty captions stand for "no text", the
unconditional half of classifier-free guidance.

Papers: ByT5: Towards a token-free future with pre-trained byte-to-byte models (Xue et al., arXiv:2105.13626)
for vocabulary-free character tokens; Attention Is All You Need (Vaswani et al., arXiv:1706.03762) for the
transformer encoder, here pre-norm (On Layer Normalization in the Transformer Architecture, Xiong et al.,
arXiv:2002.04745); Classifier-Free Diffusion Guidance (Ho & Salimans, arXiv:2207.12598) for caption dropout.
"""
from dataclasses import dataclass

import torch
import torch.nn as nn
import torch.nn.functional as F

# Token ids: 0 = PAD, 1 = BOS, then the 95 printable ASCII characters ' ' (32) to '~' (126) in order.
PAD_ID, BOS_ID = 0, 1
FIRST_CHAR, LAST_CHAR = " ", "~"
CHAR_OFFSET = ord(FIRST_CHAR) - 2  # id = ord(char) - CHAR_OFFSET, so ' ' -> 2
VOCAB_SIZE = 2 + ord(LAST_CHAR) - ord(FIRST_CHAR) + 1  # 97


@dataclass
class TextEncoderConfig:
    max_len: int = 256  # tokens per caption with BOS (two-digit captions reach 195 characters); fixed once trained
    dim: int = 256  # E, the width of the text features the DiT attends to
    depth: int = 4  # encoder blocks
    heads: int = 4
    mlp_ratio: float = 4.0
    dropout: float = 0.0  # the grammar gives endless fresh captions: no need to regularise


def tokenize(captions, max_len, multiple=1):
    """Captions (list of B strings) -> ids (B, S) long and mask (B, S) bool, True at real tokens.

    Every caption starts with BOS, so even "" has one real token (attention then always has a key to attend
    to). The batch is padded to its longest caption, not to max_len: short captions cost short attention.
    multiple > 1 pads S up to a multiple of it (at most max_len), so that a compiled model (torch.compile) sees
    a few shapes instead of one per caption length; padding is masked, so it changes nothing but rounding.
    A caption too long raises instead of being truncated, because truncation would silently drop words the
    video must show.
    """
    rows = []
    for i, caption in enumerate(captions):
        for position, char in enumerate(caption):
            if not FIRST_CHAR <= char <= LAST_CHAR:
                raise ValueError(f"caption {i} has {char!r} at position {position}; the text encoder accepts "
                                 f"printable ASCII ({FIRST_CHAR!r} to {LAST_CHAR!r}, i.e. space to ~)")
        if len(caption) + 1 > max_len:
            raise ValueError(f"caption {i} has {len(caption)} characters, {len(caption) + 1} tokens with BOS, "
                             f"over max_len = {max_len}; shorten it, or train with a larger "
                             f"TextEncoderConfig.max_len")
        rows.append([BOS_ID] + [ord(char) - CHAR_OFFSET for char in caption])
    longest = max(len(row) for row in rows)
    S = min(max_len, -(-longest // multiple) * multiple)  # longest rounded up to a multiple
    ids = torch.full((len(rows), S), PAD_ID, dtype=torch.long)  # (B, S)
    for i, row in enumerate(rows):
        ids[i, : len(row)] = torch.tensor(row)
    return ids, ids != PAD_ID


def detokenize(ids):
    """ids (B, S) -> list of B strings; BOS and PAD are dropped. The inverse of tokenize."""
    return ["".join(chr(i + CHAR_OFFSET) for i in row if i > BOS_ID) for row in ids.tolist()]


def attention(q, k, v, attn_mask=None, dropout_p=0.0):
    """F.scaled_dot_product_attention, in fp32 on the CPU, where under bf16 autocast its flash-attention kernel
    runs 5x slower than in fp32 (dit.py writes the formula out there instead: faster at its short sequences, and
    the text encoder's attention is a small share of a step)."""
    if q.device.type != "cpu" or q.dtype == torch.float32:
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, dropout_p=dropout_p)
    with torch.autocast("cpu", enabled=False):
        out = F.scaled_dot_product_attention(q.float(), k.float(), v.float(), attn_mask=attn_mask,
                                             dropout_p=dropout_p)
    return out.to(q.dtype)  # (B, heads, L, head_dim)


class SelfAttention(nn.Module):
    """Multi-head self-attention over the caption; padded keys get no attention."""

    def __init__(self, config):
        super().__init__()
        assert config.dim % config.heads == 0, f"dim {config.dim} must be divisible by heads {config.heads}"
        self.heads, self.dropout = config.heads, config.dropout
        self.qkv = nn.Linear(config.dim, 3 * config.dim)
        self.proj = nn.Linear(config.dim, config.dim)

    def forward(self, x, mask):  # x (B, S, E), mask (B, S) -> (B, S, E)
        B, S, E = x.shape
        qkv = self.qkv(x).view(B, S, 3, self.heads, E // self.heads)  # (B, S, 3, heads, E/heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)  # (B, heads, S, E/heads) each
        # attn_mask True = may attend; (B, 1, 1, S) broadcasts over heads and queries, so no query sees padding.
        # Queries at padded positions still compute something, but nothing downstream reads them.
        attn_mask = mask.view(B, 1, 1, S)  # (B, 1, 1, S)
        out = attention(q, k, v, attn_mask=attn_mask,
                        dropout_p=self.dropout if self.training else 0.0)  # (B, heads, S, E/heads)
        return self.proj(out.transpose(1, 2).reshape(B, S, E))  # (B, S, E)


class FeedForward(nn.Module):
    """The position-wise MLP: expand, GELU, project back."""

    def __init__(self, config):
        super().__init__()
        hidden = int(config.dim * config.mlp_ratio)
        self.fc1, self.fc2 = nn.Linear(config.dim, hidden), nn.Linear(hidden, config.dim)

    def forward(self, x):  # (B, S, E) -> (B, S, E)
        return self.fc2(F.gelu(self.fc1(x)))


class EncoderBlock(nn.Module):
    """Pre-norm transformer block: x + attn(norm(x)), then x + mlp(norm(x)). Normalising the branch inputs
    rather than the sum keeps a clean residual path, which trains stably without a long learning-rate warm-up."""

    def __init__(self, config):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(config.dim), SelfAttention(config)
        self.norm2, self.mlp = nn.LayerNorm(config.dim), FeedForward(config)
        self.drop = nn.Dropout(config.dropout)

    def forward(self, x, mask):  # x (B, S, E), mask (B, S) -> (B, S, E)
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class TextEncoder(nn.Module):
    """Character embeddings + learned positions -> pre-norm encoder blocks -> final LayerNorm."""

    def __init__(self, config):
        super().__init__()
        self.config = config
        self.token_embedding = nn.Embedding(VOCAB_SIZE, config.dim)
        # Learned positions are fine here: text positions are bounded by max_len (unlike video, whose grid
        # size changes at sampling time and so uses RoPE in the DiT).
        self.position_embedding = nn.Embedding(config.max_len, config.dim)
        # Both keep nn.Embedding's N(0, 1) init, the scale of what the default-initialised blocks add to the
        # residual stream. GPT-2's std 0.02 goes with 0.02 Linears; here it would let the blocks drown the
        # characters, and the two-caption test in tests/test_text_encoder.py then learns slower and less surely.
        self.blocks = nn.ModuleList(EncoderBlock(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(config.dim)

    def forward(self, ids, mask):  # ids (B, S) long, mask (B, S) bool
        """Returns features (B, S, E), mask (B, S), pooled (B, E)."""
        S = ids.shape[1]
        if S > self.config.max_len:
            raise ValueError(f"{S} tokens is over max_len = {self.config.max_len}; use tokenize() to check captions")
        x = self.token_embedding(ids) + self.position_embedding.weight[:S]  # (B, S, E)
        for block in self.blocks:
            x = block(x, mask)
        features = self.norm(x)  # (B, S, E)
        # Pooled = mean over the real tokens. A BOS/CLS vector would only become a summary once training
        # teaches it to be one; the mean is a summary from step 0 and gives every character a direct gradient.
        # Masking keeps it independent of how much padding the batch happens to have.
        weights = mask.unsqueeze(-1).to(features.dtype)  # (B, S, 1)
        pooled = (features * weights).sum(dim=1) / weights.sum(dim=1)  # (B, E); >= 1 real token (BOS)
        return features, mask, pooled

    def encode(self, captions):
        """Captions (list of B strings) -> features (B, S, E), mask (B, S), pooled (B, E) on this module's device."""
        ids, mask = tokenize(captions, self.config.max_len)
        device = self.token_embedding.weight.device
        return self(ids.to(device), mask.to(device))
