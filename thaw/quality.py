"""The demo's live personal-relevance section: the served CF space against a text-only model and random, within
each kind and for text-poor vs text-rich new posts, each beside its non-personal control.

The served space's scores are the inner products Milvus ranks by: every evaluated warm user's vector as the
worker's Redis state holds it, against the new posts' vectors as the worker indexed them in Milvus (read back, then
scored exactly: a kind- or text-poor-restricted search is a very selective filter, which Milvus answers only in
part, see :meth:`indexing.milvus_items.ItemIndex.search`). The text-only model is BM25 item-kNN over the words each
post *published* (text and tags; fitted on the warm items, all of the user's warm items as neighbours), random is
seeded. The metrics are :func:`ranking.evaluation.personal.personal_report`'s; this module only gathers the inputs.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ranking.evaluation.baselines import random_scorer, sparse_knn_scorer
from ranking.evaluation.personal import candidate_groups, personal_report
from ranking.training.common import Interactions
from ranking.training.content import sparse_item_rows

SERVED, TEXT_ONLY, RANDOM = "served CF space (live)", "text-only: bm25-knn over published words", "random"


def personal_tables(served: np.ndarray, text_only: np.ndarray, rnd: np.ndarray, truth: np.ndarray, kinds: list[str],
                    text_poor: list[bool], k: int) -> dict[str, Any]:
    """Per candidate group (all, track, moment; text-poor / text-rich) and model: NDCG@k, the non-personal
    control, the difference. ``truth``: users x candidates, relevant by the ground truth."""
    relevant = [np.flatnonzero(r) for r in truth]
    groups = candidate_groups(kinds, text_poor, only=("track", "moment"))
    by_model = {SERVED: personal_report(served, relevant, k, groups),
                TEXT_ONLY: personal_report(text_only, relevant, k, groups),
                RANDOM: personal_report(rnd, relevant, k, groups)}
    out: dict[str, Any] = {}
    for g in groups:
        row = {m: {x: v[g][x] for x in (f"ndcg@{k}", f"non_personal_ndcg@{k}", f"personal_gain@{k}")}
               for m, v in by_model.items() if g in v}
        if row:
            any_model = next(v[g] for v in by_model.values() if g in v)
            out[g] = {**row, "users": any_model["users"], "candidates": any_model["candidates"]}
    return out


def live_personal_section(community: Any, split: Any, warm_users: np.ndarray, truth: np.ndarray,
                          test_items: list[int], test_ids: list[str], user_ids: list[str], store: Any, ix: Any,
                          space: str, k: int) -> dict[str, Any]:
    """The section (see the module docstring): reads the user vectors (Redis) and post vectors (Milvus), scores."""
    vecs = ix.get_vectors(test_ids)
    have = [j for j, iid in enumerate(test_ids) if iid in vecs]
    rows, users = [], []
    for r, u in enumerate(warm_users):
        vec, _ = store.user_vector(space, user_ids[int(u)])
        if vec is not None and truth[r, have].any():
            rows.append(r)
            users.append((int(u), np.asarray(vec, dtype=np.float32)))
    if not rows or not have:
        return {"users": 0, "note": "no user vector or no indexed new post to score"}
    U = np.stack([v for _, v in users])
    V = np.stack([vecs[test_ids[j]] for j in have])
    served = U.astype(np.float64) @ V.T.astype(np.float64)
    ds = community.dataset
    train = Interactions(ds.users[split.train], ds.items[split.train], ds.n_users, ds.n_items)
    words, _ = sparse_item_rows(ds, split.warm_items, "bm25", published=True)
    uix = np.array([u for u, _ in users], dtype=np.int64)
    cand = np.array([test_items[j] for j in have], dtype=np.int64)
    text_only = np.asarray(sparse_knn_scorer(words, train, None)(uix, cand), dtype=np.float64)
    rnd = np.asarray(random_scorer(0)(uix, cand), dtype=np.float64)
    items = community.sim.items
    tables = personal_tables(served, text_only, rnd, truth[np.ix_(rows, have)],
                             [items[i].kind for i in cand], [items[i].text_poor for i in cand], k)
    summary = {f"ndcg@{k} {g} ({row['candidates']} posts)": "; ".join(
        f"{m.split(':')[0]} {row[m][f'ndcg@{k}']:.3f} (non-personal {row[m][f'non_personal_ndcg@{k}']:.3f})"
        for m in (SERVED, TEXT_ONLY, RANDOM) if m in row) for g, row in tables.items()}
    return {"users": len(rows), "candidates": len(have), **summary, "by_group": tables,
            "text_poor_new_posts": {kd: int(sum(items[i].text_poor for i in cand if items[i].kind == kd))
                                    for kd in ("track", "moment")},
            "note": f"truth NDCG@{k} within each group (tracks against tracks, moments against moments, text-poor and "
                    f"text-rich posts apart); non_personal = the same model's scores of one mean user for everyone; "
                    f"served = Redis user vectors . Milvus post vectors; text-only = BM25 item-kNN over published "
                    f"text and tags"}


def quality_series(section: dict[str, Any], k: int) -> dict[str, dict[str, dict[str, float]]]:
    """The section's tables as the HTML report's quality series (:func:`thaw.report_html.quality_series`): one plot
    per group, a bar per model and one per its non-personal control."""
    out: dict[str, dict[str, dict[str, float]]] = {}
    for g, row in section.get("by_group", {}).items():
        bars: dict[str, dict[str, float]] = {}
        for m in (SERVED, TEXT_ONLY, RANDOM):
            if m in row:
                bars[m] = {f"ndcg@{k}": row[m][f"ndcg@{k}"]}
                bars[f"{m}, non-personal"] = {f"ndcg@{k}": row[m][f"non_personal_ndcg@{k}"]}
        out[f"new posts within '{g}', ground truth: live ({row['candidates']} candidates)"] = bars
    return out
