"""Factorization-machine interaction block.

Rendle, "Factorization Machines", ICDM 2010: the second-order term ``sum_{i<j} <v_i, v_j> x_i x_j`` computed in
``O(F E)`` with the sum-square identity ``sum_{i<j} <v_i, v_j> = 1/2 * sum_e [(sum_i v_ie)^2 - sum_i v_ie^2]``. In
DeepFM (Guo et al., IJCAI 2017) the ``v_i`` are the field embeddings (already scaled by the feature value), shared
with the deep part.
"""

from __future__ import annotations

import torch
from torch import nn


class FactorizationMachine(nn.Module):
    """Pairwise field interactions by the sum-square trick.

    Args:
        reduce_sum: Sum over the embedding width (the FM scalar, ``B x 1``); if False return the ``B x E`` vector
            before that sum (the "bi-interaction" pooling of NFM).

    Shapes:
        ``B x F x E -> B x 1`` (``reduce_sum``) or ``B x E``.
    """

    def __init__(self, reduce_sum: bool = True) -> None:
        super().__init__()
        self.reduce_sum = reduce_sum

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"expected B x F x E field embeddings, got shape {tuple(x.shape)}")
        square_of_sum = x.sum(dim=1).pow(2)  # B x E
        sum_of_square = x.pow(2).sum(dim=1)  # B x E
        out = 0.5 * (square_of_sum - sum_of_square)
        return out.sum(dim=1, keepdim=True) if self.reduce_sum else out
