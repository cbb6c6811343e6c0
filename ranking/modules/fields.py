"""Content feature fields: named fixed-width vectors with an explicit presence mask.

A content field is one modality's (or one source's) embedding of an item, e.g. ``text`` (MiniLM, 384-d) now, and
``audio`` (MusicCLIP / Audio MAE) or ``image_text`` (FLAVA-style) later. Each item has a presence flag per field: a
missing modality is *explicit* (its vector is replaced by a learned per-field "missing" embedding after projection),
never silently a zero vector that the model would read as content.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn


@dataclass(frozen=True)
class FieldSpec:
    """One content field: its name (also its ONNX input name) and width."""

    name: str
    dim: int


class FieldProjection(nn.Module):
    """Projects each field to a common width and substitutes a learned embedding where the field is missing.

    Args:
        fields: The field specs, in input order.
        dim: Common projected width ``E``.
        field_dropout: Training only: probability of dropping a present field (treated as missing), so the model
            learns to cope with a modality that is absent at serving time.

    Shapes:
        ``fields[f]``: ``B x d_f``; ``present``: ``B x F`` (float or bool, 1 = present) ``-> B x F x E``.
    """

    def __init__(self, fields: Sequence[FieldSpec], dim: int, field_dropout: float = 0.0) -> None:
        super().__init__()
        if not fields:
            raise ValueError("at least one content field is needed")
        self.specs = tuple(fields)
        self.proj = nn.ModuleList(nn.Linear(f.dim, dim) for f in self.specs)
        self.missing = nn.Parameter(torch.zeros(len(self.specs), dim))
        nn.init.normal_(self.missing, std=0.02)
        self.field_dropout = field_dropout

    def forward(self, fields: Sequence[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        if len(fields) != len(self.specs):
            raise ValueError(f"expected {len(self.specs)} fields, got {len(fields)}")
        mask = present.to(torch.float32)
        if self.training and self.field_dropout > 0 and len(self.specs) > 1:
            keep = (torch.rand_like(mask) >= self.field_dropout).to(mask.dtype)
            dropped = mask * keep
            # never drop every field of an item that had at least one
            none_left = (dropped.sum(1, keepdim=True) == 0) & (mask.sum(1, keepdim=True) > 0)
            mask = torch.where(none_left, mask, dropped)
        projected = torch.stack([p(x) for p, x in zip(self.proj, fields, strict=True)], dim=1)  # B x F x E
        m = mask.unsqueeze(-1)
        return m * projected + (1.0 - m) * self.missing.unsqueeze(0)
