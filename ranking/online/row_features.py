"""The ranker's per-row feature functions, shared by training and serving (numpy only, no torch).

:func:`ranking.training.rank_data.build_rank_split` applies them to every training row with fit-period statistics;
:class:`ranking.online.features.RankFeaturizer` applies the same functions to one request, so training and serving
cannot compute a column differently. See :mod:`ranking.training.rank_data` for what each column means.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

ITEM_AGE_BINS = (1.0, 3.0, 10.0)
"""Simulator context: item age at exposure in steps, bucketed ``<1, 1-3, 3-10, >=10`` -> 1..4."""


def hour_context(ts: np.ndarray) -> np.ndarray:
    """MovieLens context: hour of day (UTC) of ``ts`` (epoch seconds) in six 4-hour buckets, 1..6."""
    hour = ((np.asarray(ts, np.float64) // 3600) % 24).astype(np.int64)
    return hour // 4 + 1


def item_age_context(
    ts: np.ndarray, created: np.ndarray, step_s: float, bins: Sequence[float] = ITEM_AGE_BINS
) -> np.ndarray:
    """Simulator context: ``(ts - created) / step_s`` (item age in steps) bucketed by ``bins``, 1-based."""
    age_steps = (np.asarray(ts, np.float64) - np.asarray(created, np.float64)) / step_s
    return (np.digitize(age_steps, list(bins)) + 1).astype(np.int64)


def decade_index(year: np.ndarray) -> np.ndarray:
    """Release decade 1 (<= 1920s) .. 9 (2000s), 0 = unknown year (``<= 0``)."""
    y = np.asarray(year).astype(np.int64)
    return np.where(y > 0, np.clip((y - 1920) // 10, 0, 8) + 1, 0).astype(np.int64)


TAG_COUNT_BINS = (1.0, 3.0, 6.0, 11.0, 20.0)
"""Last.fm item column: how many tags the item carries as published (the replayer keeps at most 20), bucketed
``0, 1-2, 3-5, 6-10, 11-19, 20`` -> 1..6 (:func:`tag_count_bucket`)."""


def tag_count_bucket(n_tags: np.ndarray, bins: Sequence[float] = TAG_COUNT_BINS) -> np.ndarray:
    """Last.fm ``item_extra``: the number of published tags bucketed by ``bins``, 1-based (1 = no tags)."""
    return (np.digitize(np.asarray(n_tags, np.float64), list(bins)) + 1).astype(np.int64)


SPARSE_FIELDS = ("user_id", "item_id", "gender", "age", "user_extra", "status", "context", "item_extra")
"""The ranker's categorical fields, in column order (0 = unknown in each)."""


def user_groups(
    count: np.ndarray, gender: np.ndarray, n_genders: int, new_user_max_history: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(is_new, group)`` per row from the user's prior engaged-row count and gender index (0 = unknown)."""
    is_new = np.asarray(count) < new_user_max_history
    group = (~is_new).astype(np.int64) * n_genders + np.asarray(gender, np.int64)
    return is_new, group


def interest_dense(
    count: np.ndarray,
    sums: np.ndarray,
    item_cats: np.ndarray,
    gender: np.ndarray,
    group: np.ndarray,
    means: np.ndarray,
    n_genders: int,
    shrinkage: float,
) -> np.ndarray:
    """Raw (unscaled) dense columns ``[interest_dev (C), affinity (5)]`` per row, ``float32[N, C + 5]``.

    Args:
        count: ``int64[N]`` engaged rows of the row's user strictly before it.
        sums: ``float32[N, C]`` summed categories of those rows.
        item_cats: ``float32[N, C]`` the row item's categories.
        gender: ``int64[N]`` the user's gender index (0 = unknown).
        group: ``int64[N]`` the row's group (:func:`user_groups`).
        means: ``float64[G, C]`` group mean category shares (:attr:`RankStats.group_means`).
        n_genders: :attr:`RankStats.n_genders`.
        shrinkage: ``k``.
    """
    m_row = means[group]
    k = shrinkage
    total = np.maximum(sums.sum(1, keepdims=True), 0.0)
    prof = (sums / np.maximum(total, 1e-12) * count[:, None] + k * m_row) / (count[:, None] + k)
    dev = prof - m_row
    new_minus_old = means[gender] - means[n_genders + gender]  # m_(new, gender) - m_(old, gender)
    denom = np.maximum(item_cats.sum(1), 1.0)
    affinity = np.stack([(prof * item_cats).sum(1) / denom, (m_row * item_cats).sum(1) / denom,
                         (dev * item_cats).sum(1) / denom, (new_minus_old * item_cats).sum(1) / denom,
                         np.log1p(count) / np.log(100.0)], axis=1)
    return np.concatenate([dev, affinity], axis=1).astype(np.float32)


def standardise(dense: np.ndarray, mu: np.ndarray, sd: np.ndarray) -> np.ndarray:
    """``(dense - mu) / sd`` as float32 (fit-period statistics)."""
    return ((dense - mu) / sd).astype(np.float32)


def sparse_rows(
    user_id: np.ndarray,
    item_id: np.ndarray,
    gender: np.ndarray,
    age: np.ndarray,
    user_extra: np.ndarray,
    is_new: np.ndarray,
    context: np.ndarray,
    item_extra: np.ndarray,
) -> np.ndarray:
    """``int64[N, 8]`` sparse columns in :data:`SPARSE_FIELDS` order (status: 1 new, 2 old)."""
    status = np.where(is_new, 1, 2)
    cols = np.broadcast_arrays(user_id, item_id, gender, age, user_extra, status, context, item_extra)
    return np.stack(cols, axis=1).astype(np.int64)
