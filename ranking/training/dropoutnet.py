"""Training of :mod:`ranking.models.dropoutnet`: the fit loop, its loss and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.dropoutnet`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ranking.models.dropoutnet import DropoutNet, DropoutNetConfig
from ranking.training.common import EarlyStopping, Interactions, TrainLog, evaluate_task, finish_run, seed_everything
from ranking.training.content import ContentFields
from workloads.splits import EvalTask

logger = logging.getLogger(__name__)


def train_dropoutnet(
    train: Interactions,
    user_cf: np.ndarray,
    item_cf: np.ndarray,
    content: ContentFields,
    config: DropoutNetConfig = DropoutNetConfig(),  # noqa: B008
    val_task: EvalTask | None = None,
    verbose: bool = False,
) -> tuple[DropoutNet, Callable[[np.ndarray, np.ndarray], np.ndarray], TrainLog]:
    """Trains DropoutNet on warm pairs; early-stops on the cold validation task when given.

    Args:
        train: Warm positive pairs.
        user_cf: ``float32[n_users, D]`` pretrained user vectors (DSSM user tower).
        item_cf: ``float32[n_items, D]`` pretrained item vectors (DSSM item tower; rows of cold items unused).
        content: Content fields of all items.
        config: Hyper-parameters.
        val_task: Cold validation task (items scored with ``V_i = 0``).
        verbose: Print progress.

    Returns:
        ``(model, cold_score, log)``: ``cold_score(users, items)`` scores items from content only.
    """
    t0 = time.perf_counter()
    gen = seed_everything(config.seed, config.threads)
    rng = np.random.default_rng(config.seed)
    x_all = torch.from_numpy(content.concatenated())
    p_all = torch.from_numpy(content.present.astype(np.float32))
    U = torch.from_numpy(np.ascontiguousarray(user_cf, dtype=np.float32))
    V = torch.from_numpy(np.ascontiguousarray(item_cf, dtype=np.float32))
    model = DropoutNet(U.shape[1], x_all.shape[1], p_all.shape[1], config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm = np.flatnonzero(train.item_counts() > 0)
    stopper = EarlyStopping(config.patience)
    log = TrainLog()

    @torch.no_grad()
    def cold_score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        model.eval()
        it = torch.from_numpy(items)
        iv = model.item(torch.zeros(len(items), V.shape[1]), x_all[it], p_all[it])
        return (model.user(U[torch.from_numpy(users)]) @ iv.T).numpy()

    for epoch in range(config.max_epochs):
        model.train()
        n_pos = len(train)
        users = np.concatenate([train.users] + [train.users] * config.negatives)
        items = np.concatenate([train.items] + [rng.choice(warm, n_pos) for _ in range(config.negatives)])
        perm = rng.permutation(len(users))
        total, steps = 0.0, 0
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            u = torch.from_numpy(users[idx])
            i = torch.from_numpy(items[idx])
            uv, iv = U[u], V[i]
            target = (uv * iv).sum(1)
            keep = (torch.rand(len(idx), 1, generator=gen) >= config.dropout_rate).to(iv.dtype)
            pred = (model.user(uv) * model.item(iv * keep, x_all[i], p_all[i])).sum(1)
            loss = nn.functional.mse_loss(pred, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        log.epochs_run = epoch + 1
        entry = {"epoch": float(epoch), "loss": total / max(steps, 1)}
        stop = False
        if val_task is not None:
            m = evaluate_task(val_task, cold_score, k=config.eval_k)
            entry[f"val_ndcg@{config.eval_k}"] = m[f"ndcg@{config.eval_k}"]
            stop = stopper.step(m[f"ndcg@{config.eval_k}"], epoch, model)
        log.history.append(entry)
        if verbose:
            logger.info(f"dropoutnet epoch {epoch}: {entry}")
        if stop:
            break
    finish_run(log, stopper, model)
    model.eval()
    log.seconds = time.perf_counter() - t0
    return model, cold_score, log
