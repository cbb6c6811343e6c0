"""A plain multi-layer perceptron block."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn


class MLP(nn.Module):
    """``Linear → ReLU → Dropout`` per hidden layer, then an optional linear output layer.

    Args:
        in_dim: Input width.
        hidden: Widths of the hidden layers (may be empty).
        out_dim: Width of the final linear layer (no activation), or ``None`` to end on the last hidden layer.
        dropout: Dropout after each hidden activation.
        layer_norm: Put a LayerNorm before each hidden activation.

    Shapes:
        ``B x in_dim -> B x out_dim`` (or ``B x hidden[-1]``).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int | None = None,
        dropout: float = 0.0,
        layer_norm: bool = False,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        width = in_dim
        for h in hidden:
            layers.append(nn.Linear(width, h))
            if layer_norm:
                layers.append(nn.LayerNorm(h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        if out_dim is not None:
            layers.append(nn.Linear(width, out_dim))
            width = out_dim
        self.out_dim = width
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)
