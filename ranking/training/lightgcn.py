"""Training of :mod:`ranking.models.lightgcn`: its batches, loss and validation for the shared fit loop
(:func:`ranking.training.trainer.fit`), and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.lightgcn`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from ranking.models.lightgcn import LightGCN, LightGCNConfig, normalized_adjacency
from ranking.training.common import (
    Interactions,
    ScoreFn,
    TrainLog,
    evaluate_task,
    holdout_reference,
    random_scorer,
    warm_holdout,
)
from ranking.training.trainer import FitConfig, Generators, fit
from workloads.splits import EvalTask

logger = logging.getLogger(__name__)


def lightgcn_score(model: LightGCN) -> ScoreFn:
    """``score(users, items) = e_u · e_i`` with the final embeddings."""

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return model.user_vectors(users) @ model.item_vectors(items).T

    return score


def _sample_negatives(
    users: np.ndarray, n_items: int, candidates: np.ndarray, positive_keys: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """One negative per user from ``candidates``, re-drawn (up to 5 times) where it hit a positive pair."""
    neg = candidates[rng.integers(0, len(candidates), len(users))]
    for _ in range(5):
        bad = np.isin(users * np.int64(n_items) + neg, positive_keys)
        if not bad.any():
            break
        neg[bad] = candidates[rng.integers(0, len(candidates), int(bad.sum()))]
    return neg


def train_lightgcn(
    train: Interactions,
    config: LightGCNConfig = LightGCNConfig(),  # noqa: B008 - frozen dataclass
    verbose: bool = False,
) -> tuple[LightGCN, TrainLog]:
    """Trains LightGCN with BPR on warm positive pairs, early-stopping on a warm hold-out.

    Args:
        train: Training pairs (duplicates count once in the graph).
        config: Hyper-parameters.
        verbose: Print one line per evaluation.

    Returns:
        ``(model, log)``. The model's graph holds the non-held-out pairs; ``log.history`` has the mean BPR loss per
        epoch and the hold-out NDCG at each evaluation; ``log.reference`` the random hold-out NDCG.
    """
    k = config.eval_k
    fit_config = FitConfig(
        max_epochs=config.max_epochs, patience=config.patience, monitor=f"holdout_ndcg@{k}",
        eval_every=config.eval_every, eval_last=True, lr=config.lr, seed=config.seed, threads=config.threads,
        loss_key="bpr", name="lightgcn",
    )

    def build(rand: Generators) -> _LightGCNFit:
        fit_pairs, task = warm_holdout(train, config.holdout_share, rand.numpy)
        keys = np.unique(fit_pairs.users * np.int64(train.n_items) + fit_pairs.items)
        pu, pi = keys // train.n_items, keys % train.n_items
        adj = normalized_adjacency(pu, pi, train.n_users, train.n_items)
        model = LightGCN(train.n_users, train.n_items, adj, config)
        return _LightGCNFit(model, pu, pi, keys, np.unique(pi), config, rand, task)

    trained, log = fit(build, fit_config, verbose=verbose, logger=logger)
    if trained.task is not None:
        holdout_reference(log, trained.task, random_scorer(config.seed), k)
    trained.module.refresh()
    return trained.module, log


@dataclass
class _LightGCNFit:
    """LightGCN as :func:`fit` trains it: the graph's pairs shuffled, one sampled negative each per epoch, BPR plus
    ``reg`` x L2 (the history records the BPR part), NDCG on the warm hold-out.

    Attributes:
        users: ``int64[E]`` user of each graph pair (unique pairs).
        items: ``int64[E]`` item of each graph pair.
        keys: ``int64[E]`` sorted ``user * n_items + item`` of the graph pairs (negatives avoid them).
        graph_items: ``int64[G]`` items in the graph (where negatives come from).
        task: The warm hold-out, ``None`` when nothing is held out.
    """

    module: LightGCN
    users: np.ndarray
    items: np.ndarray
    keys: np.ndarray
    graph_items: np.ndarray
    config: LightGCNConfig
    rand: Generators
    task: EvalTask | None

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per batch ``(users, positives, negatives)``, each ``int64[B]``; clears the cached propagation at the end
        of the epoch (the weights moved)."""
        neg = _sample_negatives(self.users, self.module.n_items, self.graph_items, self.keys, self.rand.numpy)
        perm = torch.randperm(len(self.users), generator=self.rand.torch).numpy()
        for start in range(0, len(perm), self.config.batch_size):
            b = perm[start : start + self.config.batch_size]
            yield torch.from_numpy(self.users[b]), torch.from_numpy(self.items[b]), torch.from_numpy(neg[b])
        self.module._final = None

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """``(BPR + reg x L2, BPR)`` of the batch's ``B`` triples."""
        bpr, l2 = self.module.bpr_loss(*batch)
        return bpr + self.config.reg * l2, bpr

    def validate(self) -> dict[str, float] | None:
        """``holdout_ndcg@k`` with freshly propagated embeddings, ``None`` when nothing is held out."""
        if self.task is None:
            return None
        self.module.eval()
        self.module.refresh()
        k = self.config.eval_k
        return {f"holdout_ndcg@{k}": evaluate_task(self.task, lightgcn_score(self.module), k=k)[f"ndcg@{k}"]}
