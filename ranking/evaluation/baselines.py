"""Non-neural cold-item baselines: random (:func:`ranking.training.common.random_scorer`, also the trainers'
reference), popularity, dense content-kNN, sparse (TF-IDF / BM25) item-kNN.

Each builder returns a ``score(users, items) -> float32[U, I]`` function (see :data:`ranking.training.common.ScoreFn`).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import sparse

from ranking.online.sparse import knn_scores
from ranking.training.common import Interactions, ScoreFn, random_scorer


def popularity_scorer(train: Interactions, seed: int = 0) -> ScoreFn:
    """Training interaction count of the item; ties broken by :func:`random_scorer` (same seed).

    For strictly cold items every count is 0, so this *is* the random ranking (identical numbers with the same
    seed): popularity carries no information about items that have no history. It is reported to make that
    explicit, since popularity is the usual fallback for warm recommendation.
    """
    counts = train.item_counts().astype(np.float32)
    tie = random_scorer(seed)

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return counts[items][None, :] + tie(users, items)

    return score


def content_knn_scorer(item_content: np.ndarray, train: Interactions, k: int | None = None) -> ScoreFn:
    """Content kNN: how similar the item's content is to what the user consumed.

    ``score(u, i) = mean_{j in N_u} cos(c_i, c_j)`` where ``N_u`` are the user's distinct warm training items
    (``k=None``: all of them, i.e. the cosine to the user's mean content vector, unnormalised), or, with ``k``, the
    mean over the ``k`` items of ``N_u`` most similar to ``i`` (item-based kNN with the user's history as the
    neighbourhood pool). Users without warm history score 0 everywhere.

    Args:
        item_content: ``float32[n_items, d]`` unit-norm content vectors (rows of items without content are zero).
        train: Warm training pairs.
        k: Neighbours per (user, item), or ``None`` for all.
    """
    c = np.ascontiguousarray(item_content, dtype=np.float32)
    pairs = np.unique(np.stack([train.users, train.items], axis=1), axis=0)
    starts = np.searchsorted(pairs[:, 0], np.arange(train.n_users + 1))
    hist = pairs[:, 1]

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        ci = c[items]
        out = np.zeros((len(users), len(items)), dtype=np.float32)
        for r, u in enumerate(users):
            h = hist[starts[u] : starts[u + 1]]
            if len(h) == 0:
                continue
            if k is None or len(h) <= k:
                out[r] = ci @ c[h].mean(axis=0)
            else:
                sims = ci @ c[h].T  # I x |N_u|
                top = np.partition(sims, len(h) - k, axis=1)[:, len(h) - k :]
                out[r] = top.mean(axis=1)
        return out

    return score


def sparse_knn_scorer(rows: sparse.csr_matrix, train: Interactions, k: int | None = None) -> ScoreFn:
    """Sparse item-kNN: a user's score for an item is the mean of the ``k`` largest cosines between the item's
    TF-IDF/BM25 row and the rows of the user's distinct warm training items (:func:`ranking.online.sparse.knn_scores`;
    ``k=None``: all of them). Users without warm history score 0 everywhere."""
    rows = sparse.csr_matrix(rows, dtype=np.float32)
    pairs = np.unique(np.stack([train.users, train.items], axis=1), axis=0)
    starts = np.searchsorted(pairs[:, 0], np.arange(train.n_users + 1))
    hist = pairs[:, 1]
    cache: dict[str, Any] = {}

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        if cache.get("items") is not items:
            cache["items"], cache["rows"] = items, rows[items]
        cand = cache["rows"]
        out = np.zeros((len(users), len(items)), dtype=np.float32)
        for r, u in enumerate(users):
            out[r] = knn_scores(cand, rows[hist[starts[u] : starts[u + 1]]], k)
        return out

    return score
