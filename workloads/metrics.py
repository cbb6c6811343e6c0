"""Top-K ranking metrics for (cold-start) recommendation, vectorised with numpy.

Protocol (the usual one for cold items, e.g. GAR/Heater/DropoutNet):

* A score matrix has one row per evaluated user and one column per candidate
  item (for item cold start: the held-out cold items). Higher is better;
  ``NaN`` counts as ``-inf``.
* Entries in the optional exclusion set (e.g. items seen in training) are
  never recommended; they are also dropped from the ground truth, since they
  cannot be hit.
* Each user's candidates are ranked by score (``argpartition`` then a sort of
  the top K; ties broken by lower column index inside the top K, arbitrary
  but deterministic at the K boundary). Fewer than K rankable candidates
  leave the tail of the list empty.
* Binary relevance. For a user with relevant set R and hits h = |top-K ∩ R|:
  ``precision@K = h / K``, ``recall@K = h / |R|``, ``hit@K = [h > 0]``,
  ``ndcg@K = DCG / IDCG`` with ``DCG = sum over hit ranks r (1-based) of
  1 / log2(r + 1)`` and IDCG the same for min(K, |R|) hits at ranks 1...
* Metrics are averaged over users with >= 1 relevant (non-excluded)
  candidate; users without any are skipped. ``coverage@K`` is the share of
  candidate columns that appear in at least one evaluated user's top K.
* With no evaluated user every metric is ``NaN``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np

DEFAULT_KS: tuple[int, ...] = (20,)
RelevanceLike = np.ndarray | Sequence[Iterable[int]]


def _rows_to_mask(rows: Sequence[Iterable[int]], start: int, stop: int, n_cols: int) -> np.ndarray:
    """Turns per-row column-index lists ``rows[start:stop]`` into a boolean block."""
    block = np.zeros((stop - start, n_cols), dtype=bool)
    for r in range(start, stop):
        cols = np.asarray(list(rows[r]) if not isinstance(rows[r], np.ndarray) else rows[r], dtype=np.int64)
        if cols.size:
            if cols.min() < 0 or cols.max() >= n_cols:
                raise ValueError(f"row {r}: column index out of range [0, {n_cols})")
            block[r - start, cols] = True
    return block


def _block(x: RelevanceLike | None, start: int, stop: int, n_cols: int) -> np.ndarray | None:
    if x is None:
        return None
    if isinstance(x, np.ndarray) and x.ndim == 2:
        if x.shape[1] != n_cols:
            raise ValueError(f"mask has {x.shape[1]} columns, scores have {n_cols}")
        return np.asarray(x[start:stop], dtype=bool)
    return _rows_to_mask(x, start, stop, n_cols)  # type: ignore[arg-type]


def topk(scores: np.ndarray, k: int, exclude: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Top-K columns per row, best first.

    Args:
        scores: ``float[n_rows, n_cols]``.
        k: List length; clipped to ``n_cols``.
        exclude: Optional ``bool[n_rows, n_cols]``; True entries are never
            returned as valid.

    Returns:
        ``(cols, valid)``: ``int64[n_rows, k]`` column indices and
        ``bool[n_rows, k]`` that is False where the slot holds an excluded or
        ``-inf``/``NaN`` score (i.e. the list ran out of candidates).
    """
    s = np.array(scores, dtype=np.float64, copy=True)
    if s.ndim != 2:
        raise ValueError("scores must be 2-D (users x candidates)")
    s[np.isnan(s)] = -np.inf
    if exclude is not None:
        s[exclude] = -np.inf
    n_rows, n_cols = s.shape
    k = min(k, n_cols)
    if k <= 0 or n_rows == 0:
        return np.zeros((n_rows, 0), dtype=np.int64), np.zeros((n_rows, 0), dtype=bool)
    if k < n_cols:
        part = np.argpartition(-s, k - 1, axis=1)[:, :k]
    else:
        part = np.broadcast_to(np.arange(n_cols), (n_rows, n_cols)).copy()
    vals = np.take_along_axis(s, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    cols = np.take_along_axis(part, order, axis=1).astype(np.int64)
    valid = np.isfinite(np.take_along_axis(vals, order, axis=1))
    return cols, valid


class RankingMetrics:
    """Accumulates top-K metrics over batches of users.

    Example:
        >>> acc = RankingMetrics(n_candidates=scores.shape[1], ks=(10, 20))
        >>> acc.update(scores[:512], relevant[:512])
        >>> acc.update(scores[512:], relevant[512:])
        >>> acc.result()["ndcg@20"]
    """

    def __init__(self, n_candidates: int, ks: Sequence[int] = DEFAULT_KS) -> None:
        """Initialises empty sums.

        Args:
            n_candidates: Number of score-matrix columns (for coverage).
            ks: Cut-offs to compute.
        """
        if not ks or min(ks) <= 0:
            raise ValueError("ks must be positive integers")
        self.n_candidates = int(n_candidates)
        self.ks = tuple(sorted(set(int(k) for k in ks)))
        self.n_users = 0
        self._sums = {f"{m}@{k}": 0.0 for k in self.ks for m in ("precision", "recall", "ndcg", "hit")}
        self._covered = {k: np.zeros(self.n_candidates, dtype=bool) for k in self.ks}
        kmax = max(self.ks)
        self._disc = 1.0 / np.log2(np.arange(2, kmax + 2))
        self._idcg = np.concatenate([[0.0], np.cumsum(self._disc)])

    def update(
        self,
        scores: np.ndarray,
        relevant: RelevanceLike,
        exclude: RelevanceLike | None = None,
        batch_size: int = 1024,
    ) -> None:
        """Adds a block of users.

        Args:
            scores: ``float[n_rows, n_candidates]``.
            relevant: ``bool[n_rows, n_candidates]`` or, per row, an iterable
                of relevant column indices.
            exclude: Same forms as ``relevant``; items never to recommend.
            batch_size: Rows processed at once (bounds temporary memory).
        """
        scores = np.asarray(scores)
        if scores.ndim != 2 or scores.shape[1] != self.n_candidates:
            raise ValueError(f"scores must be (n_rows, {self.n_candidates}), got {scores.shape}")
        n_rows = scores.shape[0]
        if len(relevant) != n_rows or (exclude is not None and len(exclude) != n_rows):
            raise ValueError("relevant/exclude must have one entry per score row")
        kmax = max(self.ks)
        for start in range(0, n_rows, batch_size):
            stop = min(start + batch_size, n_rows)
            rel = _block(relevant, start, stop, self.n_candidates)
            exc = _block(exclude, start, stop, self.n_candidates)
            assert rel is not None
            if exc is not None:
                rel = rel & ~exc
            n_rel = rel.sum(axis=1)
            keep = n_rel > 0
            if not keep.any():
                continue
            cols, valid = topk(scores[start:stop][keep], kmax, None if exc is None else exc[keep])
            rel, n_rel = rel[keep], n_rel[keep]
            hits = np.take_along_axis(rel, cols, axis=1) & valid
            self.n_users += int(keep.sum())
            for k in self.ks:
                kk = min(k, cols.shape[1])
                h = hits[:, :kk]
                nh = h.sum(axis=1)
                dcg = (h * self._disc[:kk]).sum(axis=1)
                idcg = self._idcg[np.minimum(n_rel, k)]
                self._sums[f"precision@{k}"] += float((nh / k).sum())
                self._sums[f"recall@{k}"] += float((nh / n_rel).sum())
                self._sums[f"ndcg@{k}"] += float((dcg / idcg).sum())
                self._sums[f"hit@{k}"] += float((nh > 0).sum())
                self._covered[k][cols[:, :kk][valid[:, :kk]]] = True

    def result(self) -> dict[str, float]:
        """Averages so far: ``precision@K``, ``recall@K``, ``ndcg@K``, ``hit@K``,
        ``coverage@K`` for each K, plus ``n_users`` (users evaluated)."""
        out: dict[str, float] = {}
        for k in self.ks:
            for m in ("precision", "recall", "ndcg", "hit"):
                key = f"{m}@{k}"
                out[key] = self._sums[key] / self.n_users if self.n_users else float("nan")
            out[f"coverage@{k}"] = (
                float(self._covered[k].sum()) / self.n_candidates
                if self.n_users and self.n_candidates
                else float("nan")
            )
        out["n_users"] = float(self.n_users)
        return out


def ranking_metrics(
    scores: np.ndarray,
    relevant: RelevanceLike,
    ks: Sequence[int] | int = DEFAULT_KS,
    exclude: RelevanceLike | None = None,
    batch_size: int = 1024,
) -> dict[str, float]:
    """Precision/Recall/NDCG/Hit/Coverage @K for a full score matrix.

    Args:
        scores: ``float[n_users, n_candidates]`` (higher is better).
        relevant: ``bool[n_users, n_candidates]`` or, per row, an iterable of
            relevant column indices (e.g. ``EvalTask.relevant``).
        ks: One cut-off or several.
        exclude: Optional items never to recommend, same forms as
            ``relevant`` (e.g. ``EvalTask.exclude``).
        batch_size: Rows processed at once.

    Returns:
        ``{"precision@K", "recall@K", "ndcg@K", "hit@K", "coverage@K", ...,
        "n_users"}``; see the module docstring for the exact definitions.
    """
    scores = np.asarray(scores)
    acc = RankingMetrics(scores.shape[1], (ks,) if isinstance(ks, int) else ks)
    acc.update(scores, relevant, exclude, batch_size=batch_size)
    return acc.result()


def list_metrics(
    ranked: Sequence[Sequence[str]], relevant: Sequence[Iterable[str]], k: int = 20
) -> dict[str, float]:
    """Precision/Recall/NDCG/Hit @K for ranked id lists (e.g. what a live recall returned per user).

    The same definitions as :func:`ranking_metrics` (binary relevance, log2 discount, IDCG over
    ``min(K, |relevant|)``, averaged over users with at least one relevant item), for when the ranking is a list of
    ids rather than a score matrix. ``coverage@K`` is the number of distinct ids recommended across users.
    """
    if len(ranked) != len(relevant):
        raise ValueError("ranked and relevant need one entry per user")
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    p = r = n = h = 0.0
    users = 0
    shown: set[str] = set()
    for lst, rel_it in zip(ranked, relevant, strict=True):
        rel = set(rel_it)
        if not rel:
            continue
        top = list(lst)[:k]
        shown.update(top)
        hits = np.array([1.0 if i in rel else 0.0 for i in top] + [0.0] * (k - len(top)))
        n_hit = hits.sum()
        p += n_hit / k
        r += n_hit / len(rel)
        n += float(hits @ disc) / float(disc[: min(k, len(rel))].sum())
        h += float(n_hit > 0)
        users += 1
    if users == 0:
        nan = float("nan")
        return {f"precision@{k}": nan, f"recall@{k}": nan, f"ndcg@{k}": nan, f"hit@{k}": nan,
                f"coverage@{k}": 0.0, "n_users": 0.0}
    return {
        f"precision@{k}": round(p / users, 5),
        f"recall@{k}": round(r / users, 5),
        f"ndcg@{k}": round(n / users, 5),
        f"hit@{k}": round(h / users, 5),
        f"coverage@{k}": float(len(shown)),
        "n_users": float(users),
    }
