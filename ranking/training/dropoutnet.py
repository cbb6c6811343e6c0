"""Training of :mod:`ranking.models.dropoutnet`: its batches, loss and validation for the shared fit loop
(:func:`ranking.training.trainer.fit`), and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.dropoutnet`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ranking.models.dropoutnet import DropoutNet, DropoutNetConfig
from ranking.training.common import Interactions, TrainLog, evaluate_task
from ranking.training.content import ContentFields
from ranking.training.trainer import FitConfig, Generators, fit
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
    x_all = torch.from_numpy(content.concatenated())
    p_all = torch.from_numpy(content.present.astype(np.float32))
    U = torch.from_numpy(np.ascontiguousarray(user_cf, dtype=np.float32))
    V = torch.from_numpy(np.ascontiguousarray(item_cf, dtype=np.float32))
    fit_config = FitConfig(
        max_epochs=config.max_epochs, patience=config.patience, monitor=f"val_ndcg@{config.eval_k}", lr=config.lr,
        weight_decay=config.weight_decay, seed=config.seed, threads=config.threads, name="dropoutnet",
    )

    def build(rand: Generators) -> _DropoutNetFit:
        model = DropoutNet(U.shape[1], x_all.shape[1], p_all.shape[1], config)
        warm = np.flatnonzero(train.item_counts() > 0)
        return _DropoutNetFit(model, train, warm, U, V, x_all, p_all, config, rand, val_task)

    trained, log = fit(build, fit_config, verbose=verbose, logger=logger)
    return trained.module, trained.cold_score, log


@dataclass
class _DropoutNetFit:
    """DropoutNet as :func:`fit` trains it: positives plus sampled warm negatives, the item CF input dropped out at
    ``dropout_rate``, MSE to the pretrained dot product, NDCG on the cold validation task.

    Attributes:
        warm: ``int64[W]`` items with training pairs (where negatives come from).
        U: ``float32[n_users, D]`` pretrained user vectors.
        V: ``float32[n_items, D]`` pretrained item vectors.
        x_all: ``float32[n_items, C]`` concatenated content of all items.
        p_all: ``float32[n_items, F]`` content presence flags.
    """

    module: DropoutNet
    train: Interactions
    warm: np.ndarray
    U: torch.Tensor
    V: torch.Tensor
    x_all: torch.Tensor
    p_all: torch.Tensor
    config: DropoutNetConfig
    rand: Generators
    val_task: EvalTask | None

    def batches(self, epoch: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Per batch ``(users int64[B], items int64[B], keep float32[B, 1])``; ``keep`` is 0 where the item's CF
        vector is dropped. Negatives (``negatives`` per positive, uniform over warm items) are drawn each epoch."""
        rng, train, negatives = self.rand.numpy, self.train, self.config.negatives
        n_pos = len(train)
        users = np.concatenate([train.users] + [train.users] * negatives)
        items = np.concatenate([train.items] + [rng.choice(self.warm, n_pos) for _ in range(negatives)])
        perm = rng.permutation(len(users))
        for start in range(0, len(perm), self.config.batch_size):
            idx = perm[start : start + self.config.batch_size]
            keep = torch.rand(len(idx), 1, generator=self.rand.torch) >= self.config.dropout_rate
            yield torch.from_numpy(users[idx]), torch.from_numpy(items[idx]), keep.to(self.V.dtype)

    def loss(self, batch: tuple[torch.Tensor, torch.Tensor, torch.Tensor]) -> torch.Tensor:
        """MSE between the ``B`` model dot products and the ``B`` pretrained ones ``U_u · V_i``."""
        u, i, keep = batch
        uv, iv = self.U[u], self.V[i]
        target = (uv * iv).sum(1)
        pred = (self.module.user(uv) * self.module.item(iv * keep, self.x_all[i], self.p_all[i])).sum(1)
        return nn.functional.mse_loss(pred, target)

    def validate(self) -> dict[str, float] | None:
        """``val_ndcg@k`` of :meth:`cold_score` on the cold validation task, ``None`` without one."""
        if self.val_task is None:
            return None
        k = self.config.eval_k
        return {f"val_ndcg@{k}": evaluate_task(self.val_task, self.cold_score, k=k)[f"ndcg@{k}"]}

    @torch.no_grad()
    def cold_score(self, users: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``float32[U, I]`` scores of ``items`` from content only (``V_i = 0``)."""
        self.module.eval()
        it = torch.from_numpy(items)
        iv = self.module.item(torch.zeros(len(items), self.V.shape[1]), self.x_all[it], self.p_all[it])
        return (self.module.user(self.U[torch.from_numpy(users)]) @ iv.T).numpy()
