"""Shared helpers of the offline ranking models: seeding, interaction data, early stopping, batched evaluation.

Everything here is plain numpy/torch over integer indices (no dataset objects), so the model modules stay testable on
toy arrays and the evaluation harness (:mod:`ranking.evaluation.cold_items`) owns the dataset handling. The fit loop
that uses them is :func:`ranking.training.trainer.fit`.
"""

from __future__ import annotations

import copy
import random
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from workloads.metrics import RankingMetrics
from workloads.splits import EvalTask

ScoreFn = Callable[[np.ndarray, np.ndarray], np.ndarray]
"""``score(users int64[U], items int64[I]) -> float32[U, I]``: higher is better."""


def seed_everything(seed: int, threads: int = 1) -> torch.Generator:
    """Seeds python, numpy and torch, sets torch's intra-op threads, returns a seeded torch generator.

    One thread is the default on purpose: on this 2-core machine shared with other busy processes, a DSSM step
    (batch 1024) took 20 ms with 1 thread and 193 ms with 2 (OpenMP workers spin-waiting for a core another
    process holds); with both cores idle 2 threads were only 1.2-1.5x faster (9-11 ms vs 13 ms). Pass 2 on a
    dedicated machine.
    """
    random.seed(seed)
    np.random.seed(seed % (2**32))  # noqa: NPY002 - legacy global state some libraries read
    torch.manual_seed(seed)
    torch.set_num_threads(threads)
    g = torch.Generator()
    g.manual_seed(seed)
    return g


@dataclass(frozen=True, eq=False)
class Interactions:
    """Positive (user, item) pairs used for training, plus the index space they live in.

    Attributes:
        users: ``int64[N]`` user indices.
        items: ``int64[N]`` item indices.
        n_users: Size of the user index space.
        n_items: Size of the item index space.
    """

    users: np.ndarray
    items: np.ndarray
    n_users: int
    n_items: int

    def __post_init__(self) -> None:
        if len(self.users) != len(self.items):
            raise ValueError("users and items must have the same length")

    def __len__(self) -> int:
        return int(len(self.users))

    def item_counts(self) -> np.ndarray:
        """``int64[n_items]`` interactions per item."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        """``int64[n_users]`` interactions per user."""
        return np.bincount(self.users, minlength=self.n_users).astype(np.int64)

    def take(self, rows: np.ndarray) -> Interactions:
        """The pairs at ``rows`` (same index spaces)."""
        return Interactions(self.users[rows], self.items[rows], self.n_users, self.n_items)


def group_pairs(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Groups unique ``cols`` by ``rows``: (sorted row keys, per key the sorted unique cols)."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), []
    pairs = np.unique(np.stack([rows, cols], axis=1).astype(np.int64), axis=0)
    keys, starts = np.unique(pairs[:, 0], return_index=True)
    return keys, list(np.split(pairs[:, 1], starts[1:]))


def pairs_task(
    target: Interactions, candidates: np.ndarray, exclude: Interactions | None = None
) -> EvalTask:
    """An :class:`EvalTask` ranking ``candidates`` for every user of ``target`` (e.g. a warm hold-out).

    Args:
        target: Relevant (user, item) pairs; items outside ``candidates`` are ignored.
        candidates: Candidate item indices.
        exclude: Pairs never to recommend (e.g. the training pairs).
    """
    cand = np.unique(candidates).astype(np.int64)
    col_of = np.full(target.n_items, -1, dtype=np.int64)
    col_of[cand] = np.arange(len(cand))
    tc = col_of[target.items]
    ok = tc >= 0
    users, relevant = group_pairs(target.users[ok], tc[ok])
    excl: list[np.ndarray] | None = None
    if exclude is not None:
        ec = col_of[exclude.items]
        keep = (ec >= 0) & np.isin(exclude.users, users)
        ekeys, egroups = group_pairs(exclude.users[keep], ec[keep])
        lookup = dict(zip(ekeys.tolist(), egroups, strict=True))
        empty = np.zeros(0, dtype=np.int64)
        excl = [lookup.get(int(u), empty) for u in users]
    return EvalTask(users=users, candidates=cand, relevant=relevant, exclude=excl)


def random_scorer(seed: int = 0) -> ScoreFn:
    """Uniform random scores, one fixed seeded draw per (user, item) (the same pair always scores the same)."""

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        # hash (user, item, seed) into [0, 1): independent of batching order
        x = (users.astype(np.uint64)[:, None] * np.uint64(0x9E3779B97F4A7C15)) ^ (
            items.astype(np.uint64)[None, :] * np.uint64(0xC2B2AE3D27D4EB4F) + np.uint64(seed)
        )
        x ^= x >> np.uint64(31)
        x *= np.uint64(0xBF58476D1CE4E5B9)
        x ^= x >> np.uint64(29)
        return (x >> np.uint64(40)).astype(np.float32) / np.float32(1 << 24)

    return score


def evaluate_task(task: EvalTask, score: ScoreFn, k: int = 20, batch_users: int = 512) -> dict[str, float]:
    """Scores every task user against all its candidates in user batches and returns the @k metrics.

    Args:
        task: The evaluation task (users, candidates, relevant, exclude).
        score: ``score(users, items) -> float[U, I]``.
        k: Cut-off.
        batch_users: Users scored at once (bounds memory at ``batch_users x n_candidates``).
    """
    acc = RankingMetrics(len(task.candidates), ks=(k,))
    for start in range(0, task.n_rows, batch_users):
        stop = min(start + batch_users, task.n_rows)
        s = np.asarray(score(task.users[start:stop], task.candidates), dtype=np.float32)
        acc.update(
            s,
            task.relevant[start:stop],
            None if task.exclude is None else task.exclude[start:stop],
        )
    return acc.result()


class EarlyStopping:
    """Keeps the best state of a model by a validation score (higher is better) and says when to stop.

    Args:
        patience: Evaluations without improvement before stopping.
        min_delta: Smallest improvement that counts.
    """

    def __init__(self, patience: int, min_delta: float = 1e-5) -> None:
        self.patience = patience
        self.min_delta = min_delta
        self.best = -float("inf")
        self.best_epoch = -1
        self.best_state: dict[str, Any] | None = None
        self._bad = 0

    def step(self, value: float, epoch: int, model: torch.nn.Module) -> bool:
        """Records one evaluation; returns True when training should stop."""
        if value > self.best + self.min_delta:
            self.best = value
            self.best_epoch = epoch
            self.best_state = copy.deepcopy(model.state_dict())
            self._bad = 0
            return False
        self._bad += 1
        return self._bad >= self.patience

    def restore(self, model: torch.nn.Module) -> None:
        """Loads the best state seen (no-op if none was recorded)."""
        if self.best_state is not None:
            model.load_state_dict(self.best_state)


def minibatches(n: int, batch_size: int, rng: np.random.Generator, shuffle: bool = True) -> Iterator[np.ndarray]:
    """Yields index batches covering ``range(n)`` once (a shuffled permutation when ``shuffle``)."""
    order = rng.permutation(n) if shuffle else np.arange(n)
    for start in range(0, n, batch_size):
        yield order[start : start + batch_size]


@dataclass
class TrainLog:
    """What a training run did: per-evaluation history, the best epoch and its validation value, wall time."""

    history: list[dict[str, float]] = field(default_factory=list)
    best_epoch: int = -1
    best_value: float = float("nan")
    seconds: float = 0.0
    epochs_run: int = 0
    reference: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "best_epoch": self.best_epoch,
            "best_value": self.best_value,
            "epochs_run": self.epochs_run,
            "seconds": round(self.seconds, 3),
            **self.reference,
        }


def warm_holdout(train: Interactions, share: float, rng: np.random.Generator) -> tuple[Interactions, EvalTask | None]:
    """Holds out ``share`` of the pairs of users with at least 3 pairs for early stopping.

    Returns the pairs to fit on and the hold-out task (each held pair ranked among the warm items, the fit pairs
    excluded), ``None`` when nothing is held out.
    """
    holdout = np.zeros(len(train), dtype=bool)
    if share > 0:
        eligible = np.flatnonzero(train.user_counts()[train.users] >= 3)
        pick = rng.choice(eligible, size=int(round(share * len(eligible))), replace=False)
        holdout[pick] = True
    fit = train.take(np.flatnonzero(~holdout))
    held = train.take(np.flatnonzero(holdout))
    warm_items = np.flatnonzero(train.item_counts() > 0)
    return fit, (pairs_task(held, warm_items, exclude=fit) if holdout.any() else None)


def holdout_reference(log: TrainLog, task: EvalTask, reference: ScoreFn, k: int) -> None:
    """Records in ``log.reference`` the warm hold-out NDCG@k of ``reference`` (random scores): the floor a model that
    early-stopped on that hold-out is read against."""
    rnd = evaluate_task(task, reference, k=k)
    log.reference[f"holdout_random_ndcg@{k}"] = rnd[f"ndcg@{k}"]
