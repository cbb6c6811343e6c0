"""CB2CF: map an item's content to its collaborative-filtering vector, so a brand-new item is recallable at once.

Barkan, Koenigstein, Yogev & Katz, "CB2CF: A Neural Multiview Content-to-Collaborative Filtering Model for
Completely Cold Item Recommendations", RecSys 2019: a multiview content network is trained on warm items to
predict their CF embeddings; at serving time it maps the content of a cold item into the CF space, where the
ordinary user vectors score it. As in the NetEase Cloud Music talk, the views are concatenated content fields passed
through a SENet field gate and an MLP, and the CF space is the item side of the DSSM twin tower
(:mod:`ranking.models.dssm`).

Architecture (``F`` fields, projection width ``E``)::

    field_f (B x d_f), present (B x F)
      → FieldProjection: Linear per field, learned "missing" embedding where absent     B x F x E
      → SENetLayer: squeeze-excitation over the F fields                                  B x F x E
      → flatten → MLP → L2 norm                                                           B x dim

Objectives (``CB2CFConfig.objective``), on warm items whose targets are the frozen DSSM item vectors ``t_i``:

* ``regression``: ``1 - cos(f(x_i), t_i)`` (for unit vectors, MSE/2). Pulls each prediction onto its own target,
  but is indifferent to which *other* items it lands close to.
* ``contrastive``: InfoNCE of ``f(x_i)`` against the batch's targets ``t_j`` (temperature ``tau``): the prediction
  must be closer to its own item's vector than to the other items' vectors, which is what retrieval among many cold
  items needs (ranking, not absolute position).
* ``combined``: ``regression_weight * regression + contrastive``.

Which is better, measured on validation cold items only (:mod:`ranking.evaluation.cold_items`, ml-100k and Last.fm,
seeds 0 and
1): **regression**. It won all 24 runs with the default network and the ``doc`` field (DSSM temperatures 0.05, 0.1,
0.2, CF width 32/64, InfoNCE temperatures 0.05/0.1/0.2; e.g. ml-100k seed 0: regression 0.374, combined 0.358,
contrastive 0.356 NDCG@20; Last.fm seed 0: 0.337 / 0.301 / 0.300). The others won only where something else was off:
a wider MLP (512-256, dropout 0.2) that hurt regression, a DSSM without logQ, and 2 of 4 three-field runs. The
reason is measurable: the DSSM item vectors carry item popularity as their component along the mean user vector
(correlation 0.92 with log popularity on ml-100k), and most of what content can predict about a cold item's
interactions on these datasets is that popularity (CB2CF scored with one mean user keeps 0.32 of its 0.37 validation
NDCG on ml-100k). InfoNCE is invariant to a component shared by all in-batch targets (it shifts every logit of a row
by the same amount), so the contrastive model does not learn it (mean-user NDCG 0.25 vs 0.32). The harness still
trains all three and picks by validation; the config default is ``regression``.

:func:`train_cb2cf` early-stops on the validation cold items' NDCG@k through the DSSM user tower when a validation
task is given (the comparison of objectives is done on validation by :mod:`ranking.evaluation.cold_items`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
from torch import nn

from ranking.modules.fields import FieldProjection, FieldSpec
from ranking.modules.mlp import MLP
from ranking.modules.senet import SENetLayer

if TYPE_CHECKING:
    from ranking.training.content import ContentFields

Objective = Literal["regression", "contrastive", "combined"]
OBJECTIVES: tuple[Objective, ...] = ("regression", "contrastive", "combined")


@dataclass(frozen=True)
class CB2CFConfig:
    """Hyper-parameters of CB2CF and its training.

    Attributes:
        out_dim: CF-space width (must equal the DSSM ``dim``).
        field_dim: Per-field projection width ``E``.
        senet_reduction: SENet bottleneck reduction ratio.
        hidden: Hidden widths of the MLP after the field gate.
        dropout: MLP dropout.
        field_dropout: Training probability of hiding a present field (only with several fields).
        objective: ``regression`` | ``contrastive`` | ``combined``.
        temperature: InfoNCE temperature.
        regression_weight: Weight of the regression term in ``combined``.
        batch_size: Warm items per batch (= in-batch negatives + 1 for InfoNCE).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        max_epochs: Epoch cap.
        patience: Validation checks without improvement before stopping.
        eval_every: Epochs between validation checks.
        eval_k: Cut-off of the validation metric.
        seed: Seed.
        threads: torch intra-op threads (see :func:`ranking.training.common.seed_everything`).
    """

    out_dim: int = 64
    field_dim: int = 128
    senet_reduction: int = 2
    hidden: tuple[int, ...] = (256,)
    dropout: float = 0.1
    field_dropout: float = 0.1
    objective: Objective = "regression"
    temperature: float = 0.05
    regression_weight: float = 1.0
    batch_size: int = 256
    lr: float = 1e-3
    weight_decay: float = 1e-5
    max_epochs: int = 200
    patience: int = 8
    eval_every: int = 1
    eval_k: int = 20
    seed: int = 0
    threads: int = 1


class CB2CF(nn.Module):
    """Content fields → CF-space vector.

    Args:
        fields: Content field specs, in input order.
        config: Hyper-parameters.

    Shapes:
        ``fields[f]: B x d_f`` float32, ``present: B x F`` float32 (1 = present) ``-> B x out_dim`` (unit norm).
    """

    def __init__(self, fields: Sequence[FieldSpec], config: CB2CFConfig = CB2CFConfig()) -> None:  # noqa: B008
        super().__init__()
        self.config = config
        self.specs = tuple(fields)
        self.project = FieldProjection(self.specs, config.field_dim, field_dropout=config.field_dropout)
        self.senet = SENetLayer(len(self.specs), config.senet_reduction)
        self.mlp = MLP(len(self.specs) * config.field_dim, config.hidden, config.out_dim, dropout=config.dropout)

    def forward(self, fields: Sequence[torch.Tensor], present: torch.Tensor) -> torch.Tensor:
        e = self.senet(self.project(fields, present))  # B x F x E
        return nn.functional.normalize(self.mlp(e.flatten(1)), dim=1)

    @torch.no_grad()
    def embed(self, content: ContentFields, items: np.ndarray, batch: int = 4096) -> np.ndarray:
        """``float32[I, out_dim]`` CF vectors of ``items`` from their content (eval mode)."""
        self.eval()
        out = []
        for s in range(0, len(items), batch):
            xs, present = content.tensors(items[s : s + batch])
            out.append(self(xs, present))
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.out_dim), np.float32)
