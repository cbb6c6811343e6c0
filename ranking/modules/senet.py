"""Squeeze-and-excitation over feature fields.

Hu, Shen & Sun, "Squeeze-and-Excitation Networks", CVPR 2018: squeeze each channel to a scalar, excite with a
bottleneck MLP and a sigmoid, rescale the channels. Applied to recommendation feature *fields* (one field = one
channel) as in FiBiNET (Huang, Zhang & Zhang, RecSys 2019) and in the CB2CF content tower of the NetEase Cloud Music
talk: the model learns, per item, how much to trust each modality.
"""

from __future__ import annotations

import torch
from torch import nn


class SENetLayer(nn.Module):
    """Field-wise squeeze-and-excitation.

    Squeeze: ``z_f = mean_e E[b, f, e]``; excitation: ``a = sigmoid(W2 relu(W1 z))`` with a bottleneck of
    ``max(1, F // reduction)`` units; output ``a_f * E_f``. The mean-squeeze sees the learned "missing" embedding of
    an absent field (see :class:`~ranking.modules.fields.FieldProjection`), so the gate can learn to down-weight it.

    Args:
        n_fields: Number of fields ``F``.
        reduction: Bottleneck reduction ratio ``r``.

    Shapes:
        ``B x F x E -> B x F x E``; :attr:`last_weights` keeps the last ``B x F`` gate values (for inspection).
    """

    def __init__(self, n_fields: int, reduction: int = 2) -> None:
        super().__init__()
        hidden = max(1, n_fields // max(1, reduction))
        self.excite = nn.Sequential(
            nn.Linear(n_fields, hidden),
            nn.ReLU(),
            nn.Linear(hidden, n_fields),
            nn.Sigmoid(),
        )
        self.last_weights: torch.Tensor | None = None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.mean(dim=-1)  # B x F
        a = self.excite(z)  # B x F
        self.last_weights = a.detach()
        return x * a.unsqueeze(-1)
