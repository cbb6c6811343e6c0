"""Deterministic cold-start splits over an :class:`InteractionDataset`.

Every split is expressed as sorted ``int64`` arrays of interaction row indices
(into ``ds.users`` / ``ds.items`` / ...) plus the item or user sets involved,
and can build an :class:`EvalTask` (score-matrix rows, columns and ground
truth) for :mod:`workloads.metrics`. The same seed always gives the same split.

* :func:`cold_item_split`: a share of items is held out with *all* their
  interactions (item cold start), split into validation and test item sets.
* :func:`new_user_split`: a share of users is held out; each reveals its
  first ``k`` interactions (by time when known) and the rest are targets.
* :func:`temporal_split`: a global time cut.
* :func:`predefined_cold_item_split`: wraps splits shipped with a dataset
  (e.g. CiteULike-a's GAR split); :func:`default_cold_item_split` picks it
  when present.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from workloads.datasets.base import InteractionDataset


@dataclass(frozen=True, eq=False)
class EvalTask:
    """What a ranking evaluation needs, in score-matrix coordinates.

    Row ``r`` of a score matrix is user ``users[r]``; column ``c`` is item
    ``candidates[c]``.

    Attributes:
        users: ``int64[n_rows]`` evaluated users (each has >=1 relevant item).
        candidates: ``int64[n_cols]`` candidate item indices (sorted).
        relevant: Per row, ``int64`` column indices of relevant candidates.
        exclude: Per row, ``int64`` column indices to exclude from ranking
            (e.g. items the user already interacted with), or ``None``.
    """

    users: np.ndarray
    candidates: np.ndarray
    relevant: list[np.ndarray]
    exclude: list[np.ndarray] | None = None

    @property
    def n_rows(self) -> int:
        """Number of evaluated users."""
        return int(len(self.users))


def _group(rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, list[np.ndarray]]:
    """Groups unique ``cols`` by ``rows``; returns (sorted row keys, per-key sorted cols)."""
    if len(rows) == 0:
        return np.zeros(0, dtype=np.int64), []
    pairs = np.unique(np.stack([rows, cols], axis=1), axis=0)
    keys, starts = np.unique(pairs[:, 0], return_index=True)
    return keys.astype(np.int64), [a.astype(np.int64) for a in np.split(pairs[:, 1], starts[1:])]


def make_eval_task(
    ds: InteractionDataset,
    target_rows: np.ndarray,
    candidates: np.ndarray | None = None,
    exclude_rows: np.ndarray | None = None,
    min_weight: float | None = None,
) -> EvalTask:
    """Builds an :class:`EvalTask` from interaction rows.

    Args:
        ds: The dataset.
        target_rows: Interaction rows whose items are the ground truth.
        candidates: Candidate item indices (default: all items).
        exclude_rows: Interaction rows whose items are excluded for their
            user (typically the user's training/revealed interactions).
        min_weight: Only targets with ``weight >= min_weight`` are relevant
            (e.g. ``4.0`` for MovieLens ratings).

    Returns:
        The task; users with no relevant candidate are left out.
    """
    cand = np.arange(ds.n_items, dtype=np.int64) if candidates is None else np.unique(candidates)
    col_of = np.full(ds.n_items, -1, dtype=np.int64)
    col_of[cand] = np.arange(len(cand))
    t = np.asarray(target_rows, dtype=np.int64)
    if min_weight is not None:
        t = t[ds.weights[t] >= min_weight]
    tc = col_of[ds.items[t]]
    ok = tc >= 0
    users, relevant = _group(ds.users[t][ok], tc[ok])
    exclude: list[np.ndarray] | None = None
    if exclude_rows is not None:
        e = np.asarray(exclude_rows, dtype=np.int64)
        ec = col_of[ds.items[e]]
        keep = (ec >= 0) & np.isin(ds.users[e], users)
        ekeys, egroups = _group(ds.users[e][keep], ec[keep])
        lookup = dict(zip(ekeys.tolist(), egroups, strict=True))
        empty = np.zeros(0, dtype=np.int64)
        exclude = [lookup.get(int(u), empty) for u in users]
    return EvalTask(users=users, candidates=cand, relevant=relevant, exclude=exclude)


def _rows_of(mask: np.ndarray) -> np.ndarray:
    return np.flatnonzero(mask).astype(np.int64)


ColdProtocol = Literal["standard", "gar"]
COLD_PROTOCOLS: tuple[ColdProtocol, ...] = ("standard", "gar")


@dataclass(frozen=True, eq=False)
class ColdItemSplit:
    """Item cold-start split: cold items keep none of their interactions in train.

    Attributes:
        train: Rows of warm items (training data).
        val: All rows of the validation cold items.
        test: All rows of the test cold items.
        warm_items: Items with >=1 interaction that are not cold.
        val_items: Validation cold items.
        test_items: Test cold items.
        n_interactions: Number of interactions of the dataset split.
        seed: Seed used, or ``None`` for predefined splits.
        extra: Further named row sets (e.g. predefined ``warm_val``).
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    warm_items: np.ndarray
    val_items: np.ndarray
    test_items: np.ndarray
    n_interactions: int
    seed: int | None
    extra: dict[str, np.ndarray] = field(default_factory=dict)

    def mask(self, part: str) -> np.ndarray:
        """Boolean mask over interactions for ``train``/``val``/``test``/an extra name."""
        rows = getattr(self, part) if part in ("train", "val", "test") else self.extra[part]
        m = np.zeros(self.n_interactions, dtype=bool)
        m[rows] = True
        return m

    @property
    def cold_items(self) -> np.ndarray:
        """Validation and test cold items together (sorted)."""
        return np.union1d(self.val_items, self.test_items)

    @property
    def cold_interaction_share(self) -> float:
        """Share of interactions that belong to cold items."""
        return (len(self.val) + len(self.test)) / max(self.n_interactions, 1)

    def eval_task(
        self,
        ds: InteractionDataset,
        part: Literal["val", "test"] = "test",
        min_weight: float | None = None,
        protocol: ColdProtocol = "standard",
        max_users: int | None = None,
    ) -> EvalTask:
        """The ranking task of one part of the cold items.

        Protocols (:data:`COLD_PROTOCOLS`):

        * ``standard``: every user with an interaction on a ``part`` cold item ranks that part's cold items only
          (nothing to exclude: none of them is known to the user).
        * ``gar``: the candidates are every item without training interactions (validation and test cold items
          together), as in GAR (Chen et al., SIGIR 2022) and ALDI (Huang et al., SIGIR 2023); relevant are the
          user's ``part`` items. For ``test``, the user's validation cold items are known positives and are
          excluded from its ranking; for ``val`` nothing is excluded (test interactions are unknown when choices
          are made on validation).

        Args:
            ds: The dataset.
            part: ``val`` or ``test``.
            min_weight: Only interactions with at least this weight are relevant.
            protocol: ``standard`` or ``gar``.
            max_users: Keep only the first ``max_users`` evaluated users by user index (``None``: all).
        """
        items = self.val_items if part == "val" else self.test_items
        rows = self.val if part == "val" else self.test
        if protocol == "standard":
            task = make_eval_task(ds, rows, candidates=items, min_weight=min_weight)
        elif protocol == "gar":
            exclude = self.val if part == "test" else np.zeros(0, dtype=np.int64)
            task = make_eval_task(ds, rows, candidates=self.cold_items, exclude_rows=exclude, min_weight=min_weight)
        else:
            raise ValueError(f"unknown protocol {protocol!r}; known: {COLD_PROTOCOLS}")
        if max_users is not None and task.n_rows > max_users:
            task = EvalTask(
                users=task.users[:max_users],
                candidates=task.candidates,
                relevant=task.relevant[:max_users],
                exclude=None if task.exclude is None else task.exclude[:max_users],
            )
        return task


def _shares(n: int, total_share: float, val_share: float, what: str) -> tuple[int, int]:
    if not 0.0 <= val_share <= total_share <= 1.0:
        raise ValueError(f"need 0 <= val_share <= {what}_share <= 1, got {val_share}, {total_share}")
    n_total = int(round(total_share * n))
    n_val = min(int(round(val_share * n)), n_total)
    return n_total, n_val


def cold_item_split(
    ds: InteractionDataset,
    cold_share: float = 0.2,
    val_share: float = 0.1,
    seed: int = 0,
) -> ColdItemSplit:
    """Holds out a random share of items with all their interactions.

    Items are drawn uniformly among items with at least one interaction
    (items without interactions are in no set). With the defaults, 10% of
    those items are validation cold items, 10% test cold items and 80% warm
    (the 8:1:1 item split of the GAR CiteULike benchmark).

    Args:
        ds: The dataset.
        cold_share: Share of items held out in total (val + test).
        val_share: Share of items (of the same base, not of the cold ones)
            that go to validation; ``cold_share - val_share`` go to test.
        seed: Seed of the item permutation.

    Returns:
        A :class:`ColdItemSplit`; ``train``, ``val``, ``test`` partition all
        interactions.
    """
    observed = np.flatnonzero(ds.item_counts() > 0).astype(np.int64)
    n_cold, n_val = _shares(len(observed), cold_share, val_share, "cold")
    perm = np.random.default_rng(seed).permutation(observed)
    val_items = np.sort(perm[:n_val])
    test_items = np.sort(perm[n_val:n_cold])
    warm_items = np.sort(perm[n_cold:])
    role = np.zeros(ds.n_items, dtype=np.int8)
    role[val_items] = 1
    role[test_items] = 2
    r = role[ds.items]
    return ColdItemSplit(
        train=_rows_of(r == 0),
        val=_rows_of(r == 1),
        test=_rows_of(r == 2),
        warm_items=warm_items,
        val_items=val_items,
        test_items=test_items,
        n_interactions=ds.n_interactions,
        seed=seed,
    )


def predefined_cold_item_split(
    ds: InteractionDataset,
    train: Sequence[str] = ("warm_emb", "warm_map"),
    val: str = "cold_item_val",
    test: str = "cold_item_test",
) -> ColdItemSplit:
    """Wraps a cold-item split shipped with the dataset (``ds.splits``).

    Args:
        ds: Dataset with predefined splits (e.g. CiteULike-a, GAR layout).
        train: Split names whose rows form the training set. Names missing
            from ``ds.splits`` are skipped (ALDI has no ``warm_map``).
        val: Name of the validation cold-item rows.
        test: Name of the test cold-item rows.

    Returns:
        A :class:`ColdItemSplit`; all other predefined splits (e.g.
        ``warm_val``, ``warm_test``) are kept in ``extra``.

    Raises:
        ValueError: If a cold item also appears in a training row or the
            val and test cold items overlap.
    """
    names = [t for t in train if t in ds.splits]
    if not names:
        raise ValueError(f"none of {list(train)} in predefined splits {list(ds.splits)}")
    train_rows = np.unique(np.concatenate([ds.splits[t] for t in names]))
    val_rows, test_rows = ds.splits[val], ds.splits[test]
    val_items = np.unique(ds.items[val_rows])
    test_items = np.unique(ds.items[test_rows])
    warm_items = np.unique(ds.items[train_rows])
    if np.intersect1d(val_items, test_items).size:
        raise ValueError("predefined val and test cold items overlap")
    if np.intersect1d(np.union1d(val_items, test_items), warm_items).size:
        raise ValueError("predefined cold items have training interactions")
    extra = {k: v for k, v in ds.splits.items() if k not in (*names, val, test)}
    return ColdItemSplit(
        train=train_rows,
        val=np.sort(val_rows),
        test=np.sort(test_rows),
        warm_items=warm_items,
        val_items=val_items,
        test_items=test_items,
        n_interactions=ds.n_interactions,
        seed=None,
        extra=extra,
    )


def default_cold_item_split(ds: InteractionDataset, seed: int = 0) -> ColdItemSplit:
    """The split used by default: the predefined one if shipped, else 8:1:1 items.

    Args:
        ds: The dataset.
        seed: Seed for :func:`cold_item_split` when nothing is predefined.
    """
    if "cold_item_test" in ds.splits and "cold_item_val" in ds.splits:
        return predefined_cold_item_split(ds)
    return cold_item_split(ds, cold_share=0.2, val_share=0.1, seed=seed)


@dataclass(frozen=True, eq=False)
class NewUserSplit:
    """User cold-start split: held-out users reveal a few interactions.

    Attributes:
        train: All rows of non-held-out users.
        val_reveal: First ``reveal_k`` rows of each validation user.
        val_target: Remaining rows of the validation users.
        test_reveal: First ``reveal_k`` rows of each test user.
        test_target: Remaining rows of the test users.
        train_users: Users that are not held out.
        val_users: Held-out validation users.
        test_users: Held-out test users.
        reveal_k: Interactions revealed per held-out user.
        by_time: Whether "first" meant earliest timestamp (else seeded random
            order).
        n_interactions: Number of interactions of the dataset split.
        seed: Seed used.
    """

    train: np.ndarray
    val_reveal: np.ndarray
    val_target: np.ndarray
    test_reveal: np.ndarray
    test_target: np.ndarray
    train_users: np.ndarray
    val_users: np.ndarray
    test_users: np.ndarray
    reveal_k: int
    by_time: bool
    n_interactions: int
    seed: int

    def eval_task(
        self, ds: InteractionDataset, part: Literal["val", "test"] = "test", min_weight: float | None = None
    ) -> EvalTask:
        """Ranks all items for each held-out user, excluding its revealed items."""
        reveal = self.val_reveal if part == "val" else self.test_reveal
        target = self.val_target if part == "val" else self.test_target
        return make_eval_task(ds, target, exclude_rows=reveal, min_weight=min_weight)


def new_user_split(
    ds: InteractionDataset,
    user_share: float = 0.2,
    reveal_k: int = 5,
    seed: int = 0,
    val_share: float = 0.1,
) -> NewUserSplit:
    """Holds out users; each reveals its first ``reveal_k`` interactions.

    Only users with more than ``reveal_k`` interactions are eligible (others
    would have nothing to predict); shares are of the eligible users. A held-out
    user's interactions are ordered by timestamp when the dataset has them
    (ties in seeded random order), else in seeded random order; the first
    ``reveal_k`` are revealed, the rest are targets.

    Args:
        ds: The dataset.
        user_share: Share of eligible users held out (val + test).
        reveal_k: Interactions revealed per held-out user (>= 0).
        seed: Seed of the user permutation and of the ordering tie-breaks.
        val_share: Share of eligible users that go to validation.

    Returns:
        A :class:`NewUserSplit`; its row sets partition all interactions.
    """
    if reveal_k < 0:
        raise ValueError("reveal_k must be >= 0")
    rng = np.random.default_rng(seed)
    counts = ds.user_counts()
    eligible = np.flatnonzero(counts > reveal_k).astype(np.int64)
    n_held, n_val = _shares(len(eligible), user_share, val_share, "user")
    perm = rng.permutation(eligible)
    val_users = np.sort(perm[:n_val])
    test_users = np.sort(perm[n_val:n_held])
    role = np.zeros(ds.n_users, dtype=np.int8)
    role[val_users] = 1
    role[test_users] = 2
    r = role[ds.users]

    tiebreak = rng.random(ds.n_interactions)
    by_time = ds.timestamps is not None
    if ds.timestamps is not None:
        order = np.lexsort((tiebreak, ds.timestamps, ds.users))
    else:
        order = np.lexsort((tiebreak, ds.users))
    sorted_users = ds.users[order]
    first = np.searchsorted(sorted_users, sorted_users, side="left")
    rank = np.empty(ds.n_interactions, dtype=np.int64)
    rank[order] = np.arange(ds.n_interactions) - first
    revealed = rank < reveal_k
    return NewUserSplit(
        train=_rows_of(r == 0),
        val_reveal=_rows_of((r == 1) & revealed),
        val_target=_rows_of((r == 1) & ~revealed),
        test_reveal=_rows_of((r == 2) & revealed),
        test_target=_rows_of((r == 2) & ~revealed),
        train_users=np.setdiff1d(np.flatnonzero(counts > 0), perm[:n_held]).astype(np.int64),
        val_users=val_users,
        test_users=test_users,
        reveal_k=reveal_k,
        by_time=by_time,
        n_interactions=ds.n_interactions,
        seed=seed,
    )


@dataclass(frozen=True, eq=False)
class TemporalSplit:
    """Global time cut: train strictly before val, val strictly before test.

    Attributes:
        train: Rows with ``ts < val_cutoff``.
        val: Rows with ``val_cutoff <= ts < test_cutoff`` (empty if no val).
        test: Rows with ``ts >= test_cutoff``.
        val_cutoff: First validation timestamp (== ``test_cutoff`` if none).
        test_cutoff: First test timestamp.
        test_new_items: Items in test with no train/val interaction (natural
            item cold start).
        test_new_users: Users in test with no train/val interaction.
        n_interactions: Number of interactions of the dataset split.
    """

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray
    val_cutoff: int
    test_cutoff: int
    test_new_items: np.ndarray
    test_new_users: np.ndarray
    n_interactions: int

    def eval_task(
        self,
        ds: InteractionDataset,
        part: Literal["val", "test"] = "test",
        min_weight: float | None = None,
    ) -> EvalTask:
        """Ranks all items per user, excluding items the user had before the cut."""
        target = self.val if part == "val" else self.test
        seen = self.train if part == "val" else np.concatenate([self.train, self.val])
        return make_eval_task(ds, target, exclude_rows=seen, min_weight=min_weight)


def temporal_split(ds: InteractionDataset, test_share: float = 0.2, val_share: float = 0.0) -> TemporalSplit:
    """Splits interactions by a global time cut.

    The test set is the latest ``test_share`` of interactions, widened to
    include every interaction tied with the cut-off timestamp, so training
    rows are strictly earlier than test rows (the realised share can be a
    bit larger than asked). Same rule for validation just before test.

    Args:
        ds: Dataset with timestamps.
        test_share: Share of the latest interactions used as test.
        val_share: Share of interactions just before test used as validation.

    Raises:
        ValueError: If the dataset has no timestamps or shares are invalid.
    """
    if ds.timestamps is None:
        raise ValueError(f"{ds.name} has no timestamps; temporal_split needs them")
    if not (0.0 < test_share < 1.0 and 0.0 <= val_share and test_share + val_share < 1.0):
        raise ValueError("need 0 < test_share, 0 <= val_share, test_share + val_share < 1")
    ts = ds.timestamps
    sorted_ts = np.sort(ts, kind="stable")
    n = len(ts)
    n_test = max(1, int(round(test_share * n)))
    n_val = int(round(val_share * n))
    test_cutoff = int(sorted_ts[n - n_test])
    val_cutoff = int(sorted_ts[n - n_test - n_val]) if n_val else test_cutoff
    val_cutoff = min(val_cutoff, test_cutoff)
    train = _rows_of(ts < val_cutoff)
    val = _rows_of((ts >= val_cutoff) & (ts < test_cutoff))
    test = _rows_of(ts >= test_cutoff)
    before = np.concatenate([train, val])
    return TemporalSplit(
        train=train,
        val=val,
        test=test,
        val_cutoff=val_cutoff,
        test_cutoff=test_cutoff,
        test_new_items=np.setdiff1d(ds.items[test], ds.items[before]).astype(np.int64),
        test_new_users=np.setdiff1d(ds.users[test], ds.users[before]).astype(np.int64),
        n_interactions=n,
    )
