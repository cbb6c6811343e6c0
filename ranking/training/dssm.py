"""Training of :mod:`ranking.models.dssm`: the fit loop, its loss and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.dssm`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import torch
from torch import nn

from ranking.evaluation.baselines import random_scorer
from ranking.models.dssm import DSSM, CategoricalFeatures, DSSMConfig
from ranking.training.common import (
    EarlyStopping,
    Interactions,
    TrainLog,
    evaluate_task,
    finish_holdout,
    seed_everything,
    warm_holdout,
)

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
    t0 = time.perf_counter()
    gen = seed_everything(config.seed, config.threads)
    rng = np.random.default_rng(config.seed)
    fit, task = warm_holdout(train, config.holdout_share, rng)
    counts = fit.item_counts()

    model = DSSM(train.n_users, train.n_items, config, user_features)
    model.seen_users.copy_(torch.from_numpy(fit.user_counts() > 0))
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    log_q_all = torch.from_numpy(np.log(np.maximum(counts, 1) / max(len(fit), 1)).astype(np.float32))
    users_t = torch.from_numpy(fit.users)
    items_t = torch.from_numpy(fit.items)
    stopper = EarlyStopping(config.patience)
    log = TrainLog()
    for epoch in range(config.max_epochs):
        model.train()
        total, steps = 0.0, 0
        perm = torch.randperm(len(fit), generator=gen)
        for start in range(0, len(fit), config.batch_size):
            idx = perm[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            u, i = users_t[idx], items_t[idx]
            if config.user_id_dropout > 0:
                drop = torch.rand(len(u), generator=gen) < config.user_id_dropout
                uid = torch.where(drop, torch.full_like(u, model.user_tower.unknown), u)
            else:
                uid = u
            uv = model.user_tower(uid, model.user_features(u))
            iv = model.item_tower(i)
            loss = in_batch_softmax_loss(uv, iv, i, config.temperature, log_q_all[i] if config.logq else None)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        log.epochs_run = epoch + 1
        entry = {"epoch": float(epoch), "loss": total / max(steps, 1)}
        if task is not None:
            m = evaluate_task(task, dssm_score(model), k=config.eval_k)
            entry[f"holdout_ndcg@{config.eval_k}"] = m[f"ndcg@{config.eval_k}"]
            stop = stopper.step(m[f"ndcg@{config.eval_k}"], epoch, model)
        else:
            stop = False
        log.history.append(entry)
        if verbose:
            logger.info(f"dssm epoch {epoch}: {entry}")
        if stop:
            break
    finish_holdout(log, stopper, model, task, random_scorer(config.seed), config.eval_k)
    model.eval()
    log.seconds = time.perf_counter() - t0
    return model, log


def dssm_score(model: DSSM):  # type: ignore[no-untyped-def]
    """``score(users, items)`` by the twin tower (warm items only make sense)."""

    cache: dict[str, np.ndarray] = {}

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if "items" not in cache or cache["items"] is not items:
            cache["items"], cache["vectors"] = items, model.item_vectors(items)
        return model.user_vectors(users) @ cache["vectors"].T

    return score
