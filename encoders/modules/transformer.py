"""A pre-norm transformer encoder block written with plain ops, so it exports to ONNX (opset 17) the same way
in training and eval mode (``torch.nn.TransformerEncoderLayer`` switches to a fused kernel in eval mode).

Vaswani et al., "Attention Is All You Need", NeurIPS 2017; pre-norm placement as in ViT (Dosovitskiy et al.,
"An Image is Worth 16x16 Words", ICLR 2021).
"""

from __future__ import annotations

import math

import torch
from torch import nn


class Attention(nn.Module):
    """Multi-head self-attention. ``x``: B x T x D; ``key_pad``: B x T bool, True where a token is padding."""

    def __init__(self, dim: int, heads: int, dropout: float = 0.0) -> None:
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.head_dim = dim // heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_pad: torch.Tensor | None = None) -> torch.Tensor:
        b, t, d = x.shape
        qkv = self.qkv(x).reshape(b, t, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]  # B x H x T x Dh
        att = (q @ k.transpose(-2, -1)) / math.sqrt(self.head_dim)  # B x H x T x T
        if key_pad is not None:
            att = att.masked_fill(key_pad[:, None, None, :], -1e4)
        att = self.drop(att.softmax(dim=-1))
        y = (att @ v).transpose(1, 2).reshape(b, t, d)
        return self.proj(y)


class Block(nn.Module):
    """Pre-norm block: ``x + attn(ln(x))`` then ``x + mlp(ln(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads, dropout)
        self.ln2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Dropout(dropout), nn.Linear(hidden, dim))
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, key_pad: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop(self.attn(self.ln1(x), key_pad))
        return x + self.drop(self.mlp(self.ln2(x)))


class Encoder(nn.Module):
    """A stack of :class:`Block` with a final LayerNorm. B x T x D -> B x T x D."""

    def __init__(self, dim: int, depth: int, heads: int, mlp_ratio: float = 4.0, dropout: float = 0.0) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(dim, heads, mlp_ratio, dropout) for _ in range(depth)])
        self.norm = nn.LayerNorm(dim)

    def forward(self, x: torch.Tensor, key_pad: torch.Tensor | None = None) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, key_pad)
        return self.norm(x)


def sincos_1d(n: int, dim: int) -> torch.Tensor:
    """Fixed sine-cosine position table, ``n x dim``."""
    pos = torch.arange(n, dtype=torch.float32)[:, None]
    i = torch.arange(dim // 2, dtype=torch.float32)[None, :]
    ang = pos / (10000 ** (2 * i / dim))
    out = torch.zeros(n, dim)
    out[:, 0::2] = torch.sin(ang)
    out[:, 1::2] = torch.cos(ang)
    return out
