"""Training of :mod:`ranking.models.deepfm_mmoe`: its batches, loss and validation for the shared fit loop
(:func:`ranking.training.trainer.fit`), and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.deepfm_mmoe`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ranking.models.deepfm_mmoe import DeepFMMMoE, DeepFMMMoEConfig, RankData, RankSchema
from ranking.training.common import TrainLog
from ranking.training.trainer import FitConfig, Generators, fit

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
    n_tasks = len(schema.tasks)
    weights = torch.tensor(config.task_weights or (1.0,) * n_tasks, dtype=torch.float32)
    if len(weights) != n_tasks:
        raise ValueError("task_weights needs one weight per task")
    fit_config = FitConfig(
        max_epochs=config.max_epochs, patience=config.patience, monitor="valid_mean_auc", lr=config.lr,
        weight_decay=config.weight_decay, seed=config.seed, threads=config.threads, name="deepfm-mmoe",
    )

    def build(rand: Generators) -> _DeepFMMMoEFit:
        return _DeepFMMMoEFit(DeepFMMMoE(schema, config), train, valid, schema, weights, config, rand.torch)

    hook = None if on_epoch is None else lambda epoch, trainable: on_epoch(epoch, trainable.module)
    trained, log = fit(build, fit_config, verbose=verbose, on_epoch=hook, logger=logger)
    log.reference["initial_loss"] = trained.initial_loss
    return trained.module, log


@dataclass
class _DeepFMMMoEFit:
    """DeepFM + MMoE as :func:`fit` trains it: shuffled rows, the weighted sum of the per-task binary cross-entropies
    plus ``embed_l2`` on the batch's sparse embeddings, the mean per-task AUC on ``valid``.

    Attributes:
        weights: ``float32[T]`` loss weight per task.
        initial_loss: Weighted training loss of the untrained model on the first 20,000 rows (set on creation).
    """

    module: DeepFMMMoE
    train: RankData
    valid: RankData
    schema: RankSchema
    weights: torch.Tensor
    config: DeepFMMMoEConfig
    gen: torch.Generator
    initial_loss: float = float("nan")

    def __post_init__(self) -> None:
        self.sparse, self.cats, self.dense, self.group = self.train.tensors()
        self.labels = torch.from_numpy(self.train.labels.astype(np.float32))
        self.bce = nn.BCEWithLogitsLoss(reduction="none")
        with torch.no_grad():
            self.module.eval()
            self.initial_loss = float(self._task_loss(torch.arange(min(len(self.train), 20000))))

    def _task_loss(self, rows: torch.Tensor) -> torch.Tensor:
        """Weighted sum over tasks of the mean binary cross-entropy of ``rows`` (``int64[B]``)."""
        logits = self.module(self.sparse[rows], self.cats[rows], self.dense[rows], self.group[rows])
        per_task = self.bce(logits, self.labels[rows]).mean(dim=0)  # T
        return (per_task * self.weights).sum()

    def batches(self, epoch: int) -> Iterator[torch.Tensor]:
        """``int64[B]`` row indices per batch, a fresh permutation each epoch."""
        perm = torch.randperm(len(self.train), generator=self.gen)
        for start in range(0, len(self.train), self.config.batch_size):
            yield perm[start : start + self.config.batch_size]

    def loss(self, batch: torch.Tensor) -> torch.Tensor:
        """Weighted task BCE of the ``B`` rows plus ``embed_l2`` x the squared norm of their sparse embeddings
        per row."""
        loss = self._task_loss(batch)
        if self.config.embed_l2 > 0:
            idx = self.sparse[batch] + self.module.offsets.unsqueeze(0)
            loss = loss + self.config.embed_l2 * self.module.embedding(idx).pow(2).sum() / len(batch)
        return loss

    def validate(self) -> dict[str, float]:
        """``valid_mean_auc`` (NaN-skipping mean over tasks) and ``valid_auc_<task>`` on ``valid``."""
        probs = self.module.predict(self.valid)
        aucs = [task_metrics(self.valid.labels[:, t], probs[:, t])["auc"] for t in range(len(self.schema.tasks))]
        return {"valid_mean_auc": float(np.nanmean(aucs)),
                **{f"valid_auc_{name}": a for name, a in zip(self.schema.tasks, aucs, strict=True)}}
