"""Personal relevance, per kind: NDCG@k within one kind, beside a non-personal control, so that ranking kinds or
popular topics (population relevance) cannot pass for personalisation.

Given one ``users x candidates`` score matrix of a cold-start task and each user's relevant columns:

* **within-kind NDCG@k**: the candidates restricted to the columns of one group (tracks ranked against tracks,
  moments against moments; optionally text-poor and text-rich posts of a kind apart), the relevant items restricted
  the same way, users with no relevant item in the group left out;
* **the non-personal control**: every user gets the *mean user's* scores (the column mean of the matrix over the
  task's users, which for a latent model ``u . v`` is exactly the mean user vector's score), ranked and scored
  against each user's own relevant items. A model whose personal NDCG is no better than its control ranks by item
  (kind, quality, popular topics), not by the user's taste.

Pure functions over arrays: the offline harness (:mod:`ranking.evaluation.cold_items`), ``benchmarks.sim_cold_start``
and the demo's live section (:mod:`thaw.quality`) all report through :func:`personal_report`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from workloads.metrics import topk

TEXT_POOR, TEXT_RICH = "text-poor", "text-rich"


def ndcg_rows(scores: np.ndarray, relevant: Sequence[np.ndarray], k: int) -> np.ndarray:
    """Per-row NDCG@k (binary relevance, log2 discount, IDCG over ``min(k, |relevant|)``; the tie-breaking of
    :func:`workloads.metrics.topk`); NaN for a row without a relevant column."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[0] != len(relevant):
        raise ValueError("one relevant set per score row")
    out = np.full(s.shape[0], np.nan)
    if s.shape[0] == 0 or s.shape[1] == 0:
        return out
    cols, valid = topk(s, k)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    for r, rel in enumerate(relevant):
        rel = np.asarray(rel, dtype=np.int64)
        if len(rel) == 0:
            continue
        hits = np.isin(cols[r], rel) & valid[r]
        out[r] = float(disc[: cols.shape[1]][hits].sum()) / float(disc[: min(k, len(rel))].sum())
    return out


def non_personal_scores(scores: np.ndarray) -> np.ndarray:
    """The non-personal control of a score matrix: every row replaced by the column mean (one mean user; NaN
    entries, i.e. excluded ones, left out of the mean, a column excluded for everyone stays NaN)."""
    s = np.asarray(scores, dtype=np.float64)
    if s.shape[0] == 0:
        return s.copy()
    seen = ~np.isnan(s)
    n = seen.sum(axis=0)
    mean = np.where(n > 0, np.where(seen, s, 0.0).sum(axis=0) / np.maximum(n, 1), np.nan)
    return np.repeat(mean[None, :], s.shape[0], axis=0)


def restrict(relevant: Sequence[np.ndarray], cols: np.ndarray, n_cols: int) -> list[np.ndarray]:
    """Each row's relevant columns that lie in ``cols``, as positions in ``cols`` (the restricted matrix's)."""
    pos = np.full(n_cols, -1, dtype=np.int64)
    pos[np.asarray(cols, dtype=np.int64)] = np.arange(len(cols))
    out = []
    for rel in relevant:
        p = pos[np.asarray(rel, dtype=np.int64)]
        out.append(np.sort(p[p >= 0]))
    return out


def candidate_groups(kinds: Sequence[str], text_poor: Sequence[bool] | None = None,
                     only: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """Column groups of a task's candidates: ``all``, each kind (``only`` those, when given), and where a kind has
    both text-poor and text-rich candidates ``<kind>|text-poor`` / ``<kind>|text-rich`` (and ``all|...``)."""
    kd = np.asarray(list(kinds), dtype=object)
    poor = np.zeros(len(kd), dtype=bool) if text_poor is None else np.asarray(list(text_poor), dtype=bool)
    if len(poor) != len(kd):
        raise ValueError("one text_poor flag per candidate")
    groups: dict[str, np.ndarray] = {"all": np.arange(len(kd))}

    def split(name: str, mask: np.ndarray) -> None:
        if (mask & poor).any() and (mask & ~poor).any():
            groups[f"{name}|{TEXT_POOR}"] = np.flatnonzero(mask & poor)
            groups[f"{name}|{TEXT_RICH}"] = np.flatnonzero(mask & ~poor)

    split("all", np.ones(len(kd), dtype=bool))
    for kind in dict.fromkeys(kd.tolist()):
        if only is not None and kind not in only:
            continue
        mask = kd == kind
        groups[str(kind)] = np.flatnonzero(mask)
        split(str(kind), mask)
    return groups


def group_ndcg(scores: np.ndarray, relevant: Sequence[np.ndarray], k: int,
               cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(personal, non-personal)`` per-row NDCG@k with the candidates restricted to ``cols``; NaN where a row
    has no relevant item among them. The non-personal control is the mean user over every row of ``scores``."""
    s = np.asarray(scores, dtype=np.float64)
    sub = s[:, cols]
    rel = restrict(relevant, cols, s.shape[1])
    return ndcg_rows(sub, rel, k), ndcg_rows(non_personal_scores(s)[:, cols], rel, k)


def personal_report(scores: np.ndarray, relevant: Sequence[np.ndarray], k: int,
                    groups: Mapping[str, np.ndarray], min_candidates: int | None = None) -> dict[str, Any]:
    """Per group (:func:`candidate_groups`): mean personal NDCG@k, the non-personal control's, their difference
    (``personal_gain@k``: what taste adds over the mean user), the users and candidates counted. A group with at most
    ``min_candidates`` candidates (default ``k``: every item would be in every top-k) is left out."""
    floor = k if min_candidates is None else min_candidates
    out: dict[str, Any] = {}
    for name, cols in groups.items():
        cols = np.asarray(cols, dtype=np.int64)
        if len(cols) <= floor:
            continue
        pers, ctrl = group_ndcg(scores, relevant, k, cols)
        ok = ~np.isnan(pers)
        if not ok.any():
            continue
        p, c = float(pers[ok].mean()), float(ctrl[ok].mean())
        out[name] = {f"ndcg@{k}": round(p, 5), f"non_personal_ndcg@{k}": round(c, 5),
                     f"personal_gain@{k}": round(p - c, 5), "users": int(ok.sum()), "candidates": int(len(cols))}
    return out

