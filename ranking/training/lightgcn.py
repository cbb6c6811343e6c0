"""Training of :mod:`ranking.models.lightgcn`: the fit loop, its loss and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.lightgcn`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch

from ranking.evaluation.baselines import random_scorer
from ranking.models.lightgcn import LightGCN, LightGCNConfig, normalized_adjacency
from ranking.training.common import (
    EarlyStopping,
    Interactions,
    ScoreFn,
    TrainLog,
    evaluate_task,
    finish_holdout,
    seed_everything,
    warm_holdout,
)

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
    t0 = time.perf_counter()
    gen = seed_everything(config.seed, config.threads)
    rng = np.random.default_rng(config.seed)
    fit, task = warm_holdout(train, config.holdout_share, rng)

    keys = np.unique(fit.users * np.int64(train.n_items) + fit.items)
    pu, pi = keys // train.n_items, keys % train.n_items
    adj = normalized_adjacency(pu, pi, train.n_users, train.n_items)
    model = LightGCN(train.n_users, train.n_items, adj, config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    stopper = EarlyStopping(config.patience)
    log = TrainLog()
    graph_items = np.unique(pi)
    for epoch in range(config.max_epochs):
        model.train()
        neg = _sample_negatives(pu, train.n_items, graph_items, keys, rng)
        perm = torch.randperm(len(pu), generator=gen).numpy()
        total, steps = 0.0, 0
        for start in range(0, len(perm), config.batch_size):
            b = perm[start : start + config.batch_size]
            bpr, l2 = model.bpr_loss(torch.from_numpy(pu[b]), torch.from_numpy(pi[b]), torch.from_numpy(neg[b]))
            loss = bpr + config.reg * l2
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += float(bpr.item())
            steps += 1
        model._final = None
        log.epochs_run = epoch + 1
        entry = {"epoch": float(epoch), "bpr": total / max(steps, 1)}
        stop = False
        if task is not None and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.max_epochs):
            model.eval()
            model.refresh()
            m = evaluate_task(task, lightgcn_score(model), k=config.eval_k)
            entry[f"holdout_ndcg@{config.eval_k}"] = m[f"ndcg@{config.eval_k}"]
            stop = stopper.step(m[f"ndcg@{config.eval_k}"], epoch, model)
        log.history.append(entry)
        if verbose:
            logger.info(f"lightgcn epoch {epoch}: {entry}")
        if stop:
            break
    finish_holdout(log, stopper, model, task, random_scorer(config.seed), config.eval_k)
    model.eval()
    model.refresh()
    log.seconds = time.perf_counter() - t0
    return model, log
