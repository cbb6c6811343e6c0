"""The one fit loop of the ranking models: seeding, Adam steps, per-epoch history, early stopping, best-state restore.

A model takes part through a small adapter (:class:`Trainable`) that says what one epoch's batches are, what the loss
of a batch is and what to measure after an epoch; :func:`fit` does everything else, the same way for every model::

    def build(rand: Generators) -> MyFit:  # called after seeding, so the model's init is seeded
        return MyFit(MyModel(...), data, rand.numpy)

    trainable, log = fit(build, FitConfig(max_epochs=50, patience=4, monitor="val_ndcg@20"))

The loop per epoch: ``module.train()``, then for every batch of ``batches(epoch)`` ``zero_grad / loss.backward /
step``; on evaluation epochs ``validate()`` adds its metrics to the epoch's history entry, and the monitored value (a
validation metric or a loss) drives :class:`~ranking.training.common.EarlyStopping`. At the end the best epoch's
weights are restored and the module is left in eval mode.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from ranking.training.common import EarlyStopping, TrainLog, seed_everything

BatchT = TypeVar("BatchT")
T = TypeVar("T", bound="Trainable[Any]")

_logger = logging.getLogger(__name__)


class Trainable(Protocol[BatchT]):
    """What :func:`fit` needs from a model: its weights, its batches, its loss and a validation hook."""

    @property
    def module(self) -> nn.Module:
        """The weights Adam optimises and early stopping snapshots and restores."""
        ...

    def batches(self, epoch: int) -> Iterable[BatchT]:
        """One epoch's batches, in training order; draws the epoch's randomness (shuffles, negatives) itself."""
        ...

    def loss(self, batch: BatchT) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """The scalar loss to minimise, or ``(loss, logged)`` where the history records ``logged`` instead (e.g. a
        loss without its regulariser)."""
        ...

    def validate(self) -> dict[str, float] | None:
        """Metrics after an evaluation epoch (added to its history entry), or ``None`` when there is nothing to
        validate on."""
        ...


@dataclass(frozen=True)
class Generators:
    """The seeded random sources a model's ``build`` gets: torch (shuffles, masks) and numpy (sampling)."""

    torch: torch.Generator
    numpy: np.random.Generator


@dataclass(frozen=True)
class FitConfig:
    """How :func:`fit` runs.

    Attributes:
        max_epochs: Epoch cap.
        patience: Evaluations of ``monitor`` without improvement before stopping.
        monitor: History key that drives early stopping and picks the restored epoch (a ``validate()`` metric, or
            ``loss_key`` for the training loss); ``None`` = no early stopping, the last epoch counts.
        mode: ``"max"`` when higher ``monitor`` is better, ``"min"`` for a loss.
        min_delta: Smallest improvement that counts.
        eval_every: ``validate()`` runs after every ``eval_every``-th epoch.
        eval_last: Also validate after the last epoch (``max_epochs``).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        seed: Seeds python, numpy and torch before the model is built (see :func:`seed_everything`).
        threads: torch intra-op threads.
        loss_key: History key of the epoch's mean training loss.
        name: Model name in the progress lines.
    """

    max_epochs: int
    patience: int
    monitor: str | None = None
    mode: Literal["max", "min"] = "max"
    min_delta: float = 1e-5
    eval_every: int = 1
    eval_last: bool = False
    lr: float = 1e-3
    weight_decay: float = 0.0
    seed: int = 0
    threads: int = 1
    loss_key: str = "loss"
    name: str = "model"

    def evaluates(self, epoch: int) -> bool:
        """Whether ``validate()`` runs after ``epoch`` (0-based)."""
        return (epoch + 1) % self.eval_every == 0 or (self.eval_last and epoch + 1 == self.max_epochs)


def fit(
    build: Callable[[Generators], T],
    config: FitConfig,
    verbose: bool = False,
    on_epoch: Callable[[int, T], None] | None = None,
    logger: logging.Logger | None = None,
) -> tuple[T, TrainLog]:
    """Seeds, builds the model and trains it with Adam, early-stopping on ``config.monitor``.

    Args:
        build: Makes the trainable from the seeded generators (runs right after seeding, before the optimiser).
        config: Loop settings.
        verbose: Log one line per epoch (its history entry).
        on_epoch: Called after every epoch with ``(epoch, trainable)``, before the stopping decision.
        logger: Where the progress lines go (default this module's logger).

    Returns:
        ``(trainable, log)``: the module holds the best epoch's weights (the last epoch's without early stopping) and
        is in eval mode; ``log.history`` has one entry per epoch: ``epoch``, ``loss_key`` (the mean over the epoch's
        batches) and the ``validate()`` metrics on evaluation epochs.
    """
    t0 = time.perf_counter()
    gen = seed_everything(config.seed, config.threads)
    trainable = build(Generators(torch=gen, numpy=np.random.default_rng(config.seed)))
    module = trainable.module
    opt = torch.optim.Adam(module.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    stopper = EarlyStopping(config.patience, config.min_delta)
    sign = 1.0 if config.mode == "max" else -1.0
    log = TrainLog()
    monitored = False
    for epoch in range(config.max_epochs):
        entry = {"epoch": float(epoch), config.loss_key: _train_epoch(trainable, opt, epoch)}
        metrics = trainable.validate() if config.evaluates(epoch) else None
        entry.update(metrics or {})
        log.history.append(entry)
        log.epochs_run = epoch + 1
        if verbose:
            (logger or _logger).info(f"{config.name} epoch {epoch}: {entry}")
        if on_epoch is not None:
            on_epoch(epoch, trainable)
        if config.monitor is not None and config.monitor in entry:
            monitored = True
            value = entry[config.monitor]
            if stopper.step(value if sign > 0 else -value, epoch, module):
                break
    _finish(log, stopper, module, monitored, sign)
    module.eval()
    log.seconds = time.perf_counter() - t0
    return trainable, log


def _train_epoch(trainable: Trainable[Any], opt: torch.optim.Optimizer, epoch: int) -> float:
    """One pass over ``trainable.batches(epoch)``; returns the mean logged loss (0 without batches)."""
    trainable.module.train()
    total, steps = 0.0, 0
    for batch in trainable.batches(epoch):
        out = trainable.loss(batch)
        loss, logged = out if isinstance(out, tuple) else (out, out)
        opt.zero_grad()
        loss.backward()
        opt.step()
        total += float(logged.item())
        steps += 1
    return total / max(steps, 1)


def _finish(log: TrainLog, stopper: EarlyStopping, module: nn.Module, monitored: bool, sign: float) -> None:
    """Restores the best state and records its epoch and value (``-1`` and ``-inf`` for a mode-"max" monitor that
    never beat ``-inf``, e.g. always NaN); when ``monitor`` was never measured, the last epoch counts."""
    if monitored:
        stopper.restore(module)
        log.best_epoch = stopper.best_epoch
        log.best_value = stopper.best if sign > 0 else -stopper.best
    else:
        log.best_epoch = log.epochs_run - 1
