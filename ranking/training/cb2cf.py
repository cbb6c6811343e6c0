"""Training of :mod:`ranking.models.cb2cf`: the fit loop, its loss and scoring helpers (torch).

The model and its config stay in :mod:`ranking.models.cb2cf`; see there for the paper it follows.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ranking.models.cb2cf import CB2CF, CB2CFConfig
from ranking.training.common import EarlyStopping, TrainLog, evaluate_task, finish_run, seed_everything
from ranking.training.content import ContentFields
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
    t0 = time.perf_counter()
    gen = seed_everything(config.seed, config.threads)
    model = CB2CF(content.specs, config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    tgt = torch.from_numpy(np.ascontiguousarray(targets, dtype=np.float32))
    stopper = EarlyStopping(config.patience)
    log = TrainLog()
    n = len(warm_items)
    for epoch in range(config.max_epochs):
        model.train()
        total, steps = 0.0, 0
        perm = torch.randperm(n, generator=gen).numpy()
        for start in range(0, n, config.batch_size):
            idx = perm[start : start + config.batch_size]
            if len(idx) < 2:
                continue
            xs, present = content.tensors(warm_items[idx])
            loss = cb2cf_loss(model(xs, present), tgt[idx], config)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        log.epochs_run = epoch + 1
        entry = {"epoch": float(epoch), "loss": total / max(steps, 1)}
        stop = False
        if val_task is not None and user_vectors is not None and (epoch + 1) % config.eval_every == 0:
            m = evaluate_task(val_task, cb2cf_score(model, content, user_vectors), k=config.eval_k)
            entry[f"val_ndcg@{config.eval_k}"] = m[f"ndcg@{config.eval_k}"]
            stop = stopper.step(m[f"ndcg@{config.eval_k}"], epoch, model)
        log.history.append(entry)
        if verbose:
            logger.info(f"cb2cf[{config.objective}] epoch {epoch}: {entry}")
        if stop:
            break
    finish_run(log, stopper, model)
    model.eval()
    log.seconds = time.perf_counter() - t0
    return CB2CFResult(model=model, log=log, objective=config.objective)


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
