"""DropoutNet-style cold-item model.

Volkovs, Yu & Poutanen, "DropoutNet: Addressing Cold Start in Recommender Systems", NeurIPS 2017. A pretrained CF
model gives user vectors ``U_u`` and item vectors ``V_i`` (here: the DSSM towers, so every model in the harness
shares one CF space; the paper used WMF, and says any latent model works). Two networks are trained:

* ``f_U(U_u)``: MLP over the user's CF vector.
* ``f_V([V_i, content_i])``: MLP over the item's CF vector concatenated with its content (all content fields side
  by side, absent fields zeroed, plus the presence mask).

The loss regresses the original CF score: ``(f_U(U_u) · f_V(V_i, x_i) - U_u · V_i)^2`` over the user's positive
pairs and sampled warm items. **Input dropout**: with probability ``dropout_rate`` an item's ``V_i`` is replaced by
zeros during training, so ``f_V`` must reproduce the CF score from content alone. At test time a cold item enters
with ``V_i = 0`` and only its content, exactly the dropped-out training condition.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ranking.modules.mlp import MLP


@dataclass(frozen=True)
class DropoutNetConfig:
    """Hyper-parameters.

    Attributes:
        hidden: Hidden widths of both MLPs.
        out_dim: Output width of ``f_U`` and ``f_V``.
        dropout_rate: Probability of zeroing the item CF input (the paper's item dropout, 0.5).
        negatives: Sampled warm items per positive pair.
        batch_size: Pairs per batch (positives + negatives).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        max_epochs: Epoch cap (an epoch = one pass over the positives).
        patience: Validation checks without improvement before stopping.
        eval_k: Cut-off of the validation metric.
        seed: Seed.
        threads: torch intra-op threads (see :func:`ranking.training.common.seed_everything`).
    """

    hidden: tuple[int, ...] = (256,)
    out_dim: int = 64
    dropout_rate: float = 0.5
    negatives: int = 2
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 1e-6
    max_epochs: int = 60
    patience: int = 5
    eval_k: int = 20
    seed: int = 0
    threads: int = 1


class DropoutNet(nn.Module):
    """``f_U`` and ``f_V``; content enters as one concatenated vector (see :meth:`ContentFields.concatenated`).

    Shapes:
        ``user(U: B x D) -> B x out``; ``item(V: B x D, x: B x C, present: B x F) -> B x out``.
    """

    def __init__(self, cf_dim: int, content_dim: int, n_fields: int, config: DropoutNetConfig) -> None:
        super().__init__()
        self.config = config
        self.f_user = MLP(cf_dim, config.hidden, config.out_dim)
        self.f_item = MLP(cf_dim + content_dim + n_fields, config.hidden, config.out_dim)

    def user(self, u: torch.Tensor) -> torch.Tensor:
        return self.f_user(u)

    def item(self, v: torch.Tensor, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.f_item(torch.cat([v, x, present], dim=1))
