"""Training of :mod:`ranking.models.deepfm_mmoe`: the fit loop, its loss and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.deepfm_mmoe`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import numpy as np
import torch
from torch import nn

from ranking.models.deepfm_mmoe import DeepFMMMoE, DeepFMMMoEConfig, RankData, RankSchema
from ranking.training.common import EarlyStopping, TrainLog, seed_everything

logger = logging.getLogger(__name__)


def task_metrics(labels: np.ndarray, probs: np.ndarray) -> dict[str, float]:
    """AUC (NaN when one class is absent) and logloss of one task."""
    from sklearn.metrics import log_loss, roc_auc_score

    y = labels.astype(np.int64)
    p = np.clip(probs.astype(np.float64), 1e-7, 1 - 1e-7)
    auc = float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")
    ll = float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan")
    return {"auc": auc, "logloss": ll, "rows": float(len(y)), "positives": float(y.sum())}


def train_deepfm_mmoe(
    train: RankData,
    valid: RankData,
    schema: RankSchema,
    config: DeepFMMMoEConfig = DeepFMMMoEConfig(),  # noqa: B008 - frozen dataclass
    verbose: bool = False,
    on_epoch: Callable[[int, DeepFMMMoE], None] | None = None,
) -> tuple[DeepFMMMoE, TrainLog]:
    """Trains with the summed per-task binary cross-entropy, early-stopping on the validation mean AUC.

    Args:
        train: Training rows.
        valid: Validation rows (e.g. the latest slice of the training period); best epoch's weights are restored.
        schema: Inputs and tasks.
        config: Hyper-parameters.
        verbose: Print one line per epoch.
        on_epoch: Called after every epoch with ``(epoch, model)``.

    Returns:
        ``(model, log)``; ``log.history`` holds the mean training loss and validation AUC per epoch, and
        ``log.reference["initial_loss"]`` the training loss of the untrained model.
    """
    t0 = time.perf_counter()
    gen = seed_everything(config.seed, config.threads)
    model = DeepFMMMoE(schema, config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    n_tasks = len(schema.tasks)
    weights = torch.tensor(config.task_weights or (1.0,) * n_tasks, dtype=torch.float32)
    if len(weights) != n_tasks:
        raise ValueError("task_weights needs one weight per task")
    sparse, cats, dense, group = train.tensors()
    labels = torch.from_numpy(train.labels.astype(np.float32))
    bce = nn.BCEWithLogitsLoss(reduction="none")

    def loss_of(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = model(sparse[rows], cats[rows], dense[rows], group[rows])
        per_task = bce(logits, labels[rows]).mean(dim=0)  # T
        return (per_task * weights).sum(), per_task

    log = TrainLog()
    with torch.no_grad():
        model.eval()
        probe = torch.arange(min(len(train), 20000))
        log.reference["initial_loss"] = float(loss_of(probe)[0])
    stopper = EarlyStopping(config.patience)
    for epoch in range(config.max_epochs):
        model.train()
        total, steps = 0.0, 0
        perm = torch.randperm(len(train), generator=gen)
        for start in range(0, len(train), config.batch_size):
            rows = perm[start : start + config.batch_size]
            loss, _ = loss_of(rows)
            if config.embed_l2 > 0:
                idx = sparse[rows] + model.offsets.unsqueeze(0)
                loss = loss + config.embed_l2 * model.embedding(idx).pow(2).sum() / len(rows)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        probs = model.predict(valid)
        aucs = [task_metrics(valid.labels[:, t], probs[:, t])["auc"] for t in range(n_tasks)]
        mean_auc = float(np.nanmean(aucs))
        entry = {"epoch": float(epoch), "loss": total / max(steps, 1), "valid_mean_auc": mean_auc,
                 **{f"valid_auc_{name}": a for name, a in zip(schema.tasks, aucs, strict=True)}}
        log.history.append(entry)
        log.epochs_run = epoch + 1
        if verbose:
            logger.info(f"deepfm-mmoe epoch {epoch}: {entry}")
        if on_epoch is not None:
            on_epoch(epoch, model)
        if stopper.step(mean_auc, epoch, model):
            break
    stopper.restore(model)
    log.best_epoch, log.best_value = stopper.best_epoch, stopper.best
    model.eval()
    log.seconds = time.perf_counter() - t0
    return model, log
