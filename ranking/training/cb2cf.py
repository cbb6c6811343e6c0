"""Training of :mod:`ranking.models.cb2cf`: its batches, loss and validation for the shared fit loop
(:func:`ranking.training.trainer.fit`), and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.cb2cf`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ranking.models.cb2cf import CB2CF, CB2CFConfig
from ranking.training.common import TrainLog, evaluate_task
from ranking.training.content import ContentFields
from ranking.training.trainer import FitConfig, Generators, fit
from workloads.splits import EvalTask

logger = logging.getLogger(__name__)


def cb2cf_loss(pred: torch.Tensor, target: torch.Tensor, config: CB2CFConfig) -> torch.Tensor:
    """The configured objective for ``B x D`` unit predictions and ``B x D`` unit targets (see module docstring)."""
    reg = (1.0 - (pred * target).sum(1)).mean()
    if config.objective == "regression":
        return reg
    logits = pred @ target.T / config.temperature
    nce = nn.functional.cross_entropy(logits, torch.arange(len(pred)))
    if config.objective == "contrastive":
        return nce
    return config.regression_weight * reg + nce


@dataclass
class CB2CFResult:
    """A trained CB2CF with its training log."""

    model: CB2CF
    log: TrainLog
    objective: str = ""
    extra: dict[str, float] = field(default_factory=dict)


def train_cb2cf(
    content: ContentFields,
    warm_items: np.ndarray,
    targets: np.ndarray,
    config: CB2CFConfig = CB2CFConfig(),  # noqa: B008
    val_task: EvalTask | None = None,
    user_vectors: Callable[[np.ndarray], np.ndarray] | None = None,
    verbose: bool = False,
) -> CB2CFResult:
    """Fits CB2CF on warm items to land on their (frozen) CF vectors.

    Args:
        content: Content fields of the whole catalogue.
        warm_items: ``int64[W]`` items to train on.
        targets: ``float32[W, out_dim]`` their CF vectors (DSSM item tower outputs, unit norm).
        config: Hyper-parameters.
        val_task: Cold validation task; with ``user_vectors`` it drives early stopping (NDCG@``eval_k`` of the
            validation users over the validation cold items, scored ``user · CB2CF(content)``). Without it,
            training runs ``max_epochs``.
        user_vectors: ``users -> float32[U, out_dim]`` (the DSSM user tower).
        verbose: Print progress.
    """
    fit_config = FitConfig(
        max_epochs=config.max_epochs, patience=config.patience, monitor=f"val_ndcg@{config.eval_k}",
        eval_every=config.eval_every, lr=config.lr, weight_decay=config.weight_decay, seed=config.seed,
        threads=config.threads, name=f"cb2cf[{config.objective}]",
    )

    def build(rand: Generators) -> _CB2CFFit:
        model = CB2CF(content.specs, config)
        tgt = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
        return _CB2CFFit(model, content, warm_items, tgt, config, rand.torch, val_task, user_vectors)

    trained, log = fit(build, fit_config, verbose=verbose, logger=logger)
    return CB2CFResult(model=trained.module, log=log, objective=config.objective)


@dataclass
class _CB2CFFit:
    """CB2CF as :func:`fit` trains it: shuffled warm-item batches (of at least 2), :func:`cb2cf_loss`, cold NDCG."""

    module: CB2CF
    content: ContentFields
    warm_items: np.ndarray
    targets: torch.Tensor
    config: CB2CFConfig
    gen: torch.Generator
    val_task: EvalTask | None
    user_vectors: Callable[[np.ndarray], np.ndarray] | None

    def batches(self, epoch: int) -> Iterator[np.ndarray]:
        """Row indices into ``warm_items``: ``int64[B]`` per batch, a fresh permutation each epoch."""
        n = len(self.warm_items)
        perm = torch.randperm(n, generator=self.gen).numpy()
        for start in range(0, n, self.config.batch_size):
            idx = perm[start : start + self.config.batch_size]
            if len(idx) >= 2:
                yield idx

    def loss(self, batch: np.ndarray) -> torch.Tensor:
        """:func:`cb2cf_loss` of the batch items' ``B x out_dim`` predictions against their CF vectors."""
        xs, present = self.content.tensors(self.warm_items[batch])
        return cb2cf_loss(self.module(xs, present), self.targets[batch], self.config)

    def validate(self) -> dict[str, float] | None:
        """``val_ndcg@k`` on the cold validation task, ``None`` without one (or without user vectors)."""
        if self.val_task is None or self.user_vectors is None:
            return None
        k = self.config.eval_k
        m = evaluate_task(self.val_task, cb2cf_score(self.module, self.content, self.user_vectors), k=k)
        return {f"val_ndcg@{k}": m[f"ndcg@{k}"]}


def cb2cf_score(
    model: CB2CF, content: ContentFields, user_vectors: Callable[[np.ndarray], np.ndarray]
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """``score(users, items) = user_vector(u) · CB2CF(content(i))`` (item vectors cached per candidate array)."""
    cache: dict[str, np.ndarray] = {}

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if "items" not in cache or cache["items"] is not items:
            cache["items"], cache["vectors"] = items, model.embed(content, items)
        return user_vectors(users) @ cache["vectors"].T

    return score
