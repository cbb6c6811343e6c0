"""Training of :mod:`ranking.models.dssm`: its batches, loss and validation for the shared fit loop
(:func:`ranking.training.trainer.fit`), and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.dssm`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ranking.models.dssm import DSSM, CategoricalFeatures, DSSMConfig
from ranking.training.common import (
    Interactions,
    TrainLog,
    evaluate_task,
    holdout_reference,
    random_scorer,
    warm_holdout,
)
from ranking.training.trainer import FitConfig, Generators, fit
from workloads.splits import EvalTask

logger = logging.getLogger(__name__)


def in_batch_softmax_loss(
    u: torch.Tensor, v: torch.Tensor, items: torch.Tensor, temperature: float, log_q: torch.Tensor | None
) -> torch.Tensor:
    """Sampled softmax over in-batch items with logQ correction and duplicate masking.

    Args:
        u: ``B x D`` user vectors (unit norm).
        v: ``B x D`` item vectors of the positives (unit norm).
        items: ``B`` item ids (duplicates of the row's own item are masked as negatives).
        temperature: Softmax temperature.
        log_q: ``B`` log sampling probability of each column's item, or ``None`` for no correction.

    Returns:
        Scalar mean cross-entropy of each row against its own column.
    """
    logits = u @ v.T / temperature  # B x B
    if log_q is not None:
        logits = logits - log_q.unsqueeze(0)
    dup = items.unsqueeze(0) == items.unsqueeze(1)
    eye = torch.eye(len(items), dtype=torch.bool)
    logits = logits.masked_fill(dup & ~eye, float("-inf"))
    return nn.functional.cross_entropy(logits, torch.arange(len(items)))


def train_dssm(
    train: Interactions,
    config: DSSMConfig = DSSMConfig(),  # noqa: B008 - frozen dataclass
    user_features: CategoricalFeatures | None = None,
    verbose: bool = False,
) -> tuple[DSSM, TrainLog]:
    """Trains the twin tower on warm positive pairs, early-stopping on a warm hold-out.

    A ``holdout_share`` of the pairs (of users with at least 3 pairs) is held out; after each epoch the hold-out
    users rank all warm items (excluding their training items) and training stops when NDCG@``eval_k`` has not
    improved for ``patience`` epochs; the best epoch's weights are restored. The cold validation items play no part
    here: the CF space is a property of the warm data.

    Args:
        train: Warm training pairs (cold items must not appear).
        config: Hyper-parameters.
        user_features: Optional categorical user features.
        verbose: Print one line per epoch.

    Returns:
        ``(model, log)``; ``model.seen_users`` flags users with training pairs.
    """
    k = config.eval_k
    fit_config = FitConfig(
        max_epochs=config.max_epochs, patience=config.patience, monitor=f"holdout_ndcg@{k}", lr=config.lr,
        weight_decay=config.weight_decay, seed=config.seed, threads=config.threads, name="dssm",
    )

    def build(rand: Generators) -> _DSSMFit:
        fit_pairs, task = warm_holdout(train, config.holdout_share, rand.numpy)
        model = DSSM(train.n_users, train.n_items, config, user_features)
        model.seen_users.copy_(torch.from_numpy(fit_pairs.user_counts() > 0))
        counts = fit_pairs.item_counts()
        log_q = torch.from_numpy(np.log(np.maximum(counts, 1) / max(len(fit_pairs), 1)).astype(np.float32))
        users, items = torch.from_numpy(fit_pairs.users), torch.from_numpy(fit_pairs.items)
        return _DSSMFit(model, users, items, log_q, config, rand.torch, task)

    trained, log = fit(build, fit_config, verbose=verbose, logger=logger)
    if trained.task is not None:
        holdout_reference(log, trained.task, random_scorer(config.seed), k)
    return trained.module, log


@dataclass
class _DSSMFit:
    """The twin tower as :func:`fit` trains it: shuffled positive pairs (batches of at least 2), user ids dropped to
    "unknown" at ``user_id_dropout``, :func:`in_batch_softmax_loss`, NDCG on the warm hold-out.

    Attributes:
        users: ``int64[N]`` user of each fit pair.
        items: ``int64[N]`` item of each fit pair.
        log_q: ``float32[n_items]`` log share of the fit pairs per item (the logQ correction).
        task: The warm hold-out, ``None`` when nothing is held out.
    """

    module: DSSM
    users: torch.Tensor
    items: torch.Tensor
    log_q: torch.Tensor
    config: DSSMConfig
    gen: torch.Generator
    task: EvalTask | None

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per batch ``(user ids int64[B] as the tower sees them, users int64[B], items int64[B])``."""
        n, size, dropout = len(self.users), self.config.batch_size, self.config.user_id_dropout
        perm = torch.randperm(n, generator=self.gen)
        for start in range(0, n, size):
            idx = perm[start : start + size]
            if len(idx) < 2:
                continue
            u, i = self.users[idx], self.items[idx]
            if dropout > 0:
                drop = torch.rand(len(u), generator=self.gen) < dropout
                yield torch.where(drop, torch.full_like(u, self.module.user_tower.unknown), u), u, i
            else:
                yield u, u, i

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """:func:`in_batch_softmax_loss` over the batch's ``B x B`` user-item logits."""
        uid, u, i = batch
        uv = self.module.user_tower(uid, self.module.user_features(u))
        iv = self.module.item_tower(i)
        log_q = self.log_q[i] if self.config.logq else None
        return in_batch_softmax_loss(uv, iv, i, self.config.temperature, log_q)

    def validate(self) -> dict[str, float] | None:
        """``holdout_ndcg@k`` on the warm hold-out, ``None`` when nothing is held out."""
        if self.task is None:
            return None
        k = self.config.eval_k
        return {f"holdout_ndcg@{k}": evaluate_task(self.task, dssm_score(self.module), k=k)[f"ndcg@{k}"]}


def dssm_score(model: DSSM):  # type: ignore[no-untyped-def]
    """``score(users, items)`` by the twin tower (warm items only make sense)."""

    cache: dict[str, np.ndarray] = {}

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if "items" not in cache or cache["items"] is not items:
            cache["items"], cache["vectors"] = items, model.item_vectors(items)
        return model.user_vectors(users) @ cache["vectors"].T

    return score
