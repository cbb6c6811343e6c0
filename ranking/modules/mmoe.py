"""Mixture-of-experts blocks: experts, a softmax gate, and a group-conditioned gate.

Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD 2018: ``n``
expert networks share the input; each task ``t`` mixes them with its own softmax gate ``g_t(x)`` and feeds the mix
to its tower. :class:`GroupGate` conditions a gate on a discrete user group (e.g. new/old user x gender): the gate
logits are a shared linear map of the input plus a per-group linear map (zero-initialised, so every group starts at
the shared gate and only moves away where its data says so). A group index outside ``[0, n_groups)`` is clamped.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from ranking.modules.mlp import MLP


class Experts(nn.Module):
    """``n`` independent MLP experts over the same input.

    Args:
        in_dim: Input width ``D``.
        n_experts: Number of experts ``n``.
        hidden: Hidden widths of each expert; the last one is the expert output width ``H``.
        dropout: Dropout inside the experts.

    Shapes:
        ``B x D -> B x n x H``.
    """

    def __init__(self, in_dim: int, n_experts: int, hidden: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        if n_experts < 1 or not hidden:
            raise ValueError("need at least one expert and one hidden layer")
        self.experts = nn.ModuleList(MLP(in_dim, hidden, None, dropout=dropout) for _ in range(n_experts))
        self.out_dim = int(hidden[-1])
        self.n_experts = n_experts

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.stack([e(x) for e in self.experts], dim=1)


class SoftmaxGate(nn.Module):
    """One task's gate: ``softmax(W x + b)`` over the experts.

    Shapes:
        ``B x D -> B x n`` (rows sum to one).
    """

    def __init__(self, in_dim: int, n_experts: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, n_experts)

    def forward(self, x: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        return torch.softmax(self.linear(x), dim=-1)


class GroupGate(nn.Module):
    """A gate conditioned on a user group: ``softmax(W x + b + W_g x + b_g)``.

    ``W_g``, ``b_g`` are one weight matrix and bias per group, gathered by the group index (exportable to ONNX),
    zero-initialised.

    Args:
        in_dim: Input width ``D``.
        n_experts: Number of experts ``n``.
        n_groups: Number of groups ``G``.

    Shapes:
        ``x: B x D``, ``group: B`` int64 ``-> B x n`` (rows sum to one).
    """

    def __init__(self, in_dim: int, n_experts: int, n_groups: int) -> None:
        super().__init__()
        if n_groups < 1:
            raise ValueError("n_groups must be >= 1")
        self.shared = nn.Linear(in_dim, n_experts)
        self.group_weight = nn.Parameter(torch.zeros(n_groups, in_dim, n_experts))
        self.group_bias = nn.Parameter(torch.zeros(n_groups, n_experts))
        self.n_groups = n_groups

    def forward(self, x: torch.Tensor, group: torch.Tensor | None = None) -> torch.Tensor:
        logits = self.shared(x)
        if group is not None:
            g = group.clamp(0, self.n_groups - 1)
            w = self.group_weight[g]  # B x D x n
            logits = logits + torch.bmm(x.unsqueeze(1), w).squeeze(1) + self.group_bias[g]
        return torch.softmax(logits, dim=-1)


def mix_experts(expert_out: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """Gate-weighted sum of expert outputs.

    Args:
        expert_out: ``B x n x H``.
        gate: ``B x n``.

    Returns:
        ``B x H``.
    """
    return (gate.unsqueeze(-1) * expert_out).sum(dim=1)
