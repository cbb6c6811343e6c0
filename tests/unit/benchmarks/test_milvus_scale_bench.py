"""The Milvus scale benchmark's pure parts: the synthetic items and queries, brute-force ground truth, recall, the
plan of configurations and the best-cell table (the Milvus runs themselves need the stack)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.milvus_scale import (
    DIM,
    FRESH_MS,
    KIND_NAMES,
    IndexConfig,
    best_cells,
    clustered_items,
    exact_topk,
    filter_mask,
    plan,
    recall_at_k,
    user_queries,
)
from infra.settings import MilvusSettings

NOW_MS = 1_800_000_000_000


def test_clustered_items_have_the_documented_shape() -> None:
    items = clustered_items(20_000, NOW_MS, seed=3)
    assert items.vectors.shape == (20_000, DIM) and items.vectors.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(items.vectors, axis=1), 1.0, atol=1e-5)
    shares = np.bincount(items.kinds, minlength=len(KIND_NAMES)) / len(items.kinds)
    np.testing.assert_allclose(shares, [0.35, 0.2, 0.2, 0.15, 0.1], atol=0.03)
    fresh = filter_mask(items, "fresh", NOW_MS)
    assert fresh is not None and fresh.mean() == pytest.approx(1 / 30, abs=0.005)
    assert items.created_ms.max() <= NOW_MS and items.created_ms.min() > NOW_MS - 30 * 86_400_000
    # clustered: an item is much closer to its cluster's mean than to a random item
    c0 = items.vectors[items.cluster == items.cluster[0]]
    centre = c0.mean(axis=0) / np.linalg.norm(c0.mean(axis=0))
    assert float((c0 @ centre).mean()) > 0.5
    assert abs(float((items.vectors[:500] @ items.vectors[500:1000].T).mean())) < 0.1
    again = clustered_items(20_000, NOW_MS, seed=3)
    np.testing.assert_array_equal(again.vectors, items.vectors)


def test_user_queries_are_unit_means_of_a_few_items() -> None:
    items = clustered_items(5_000, NOW_MS)
    q = user_queries(items, 50)
    assert q.shape == (50, DIM)
    np.testing.assert_allclose(np.linalg.norm(q, axis=1), 1.0, atol=1e-5)
    # a user vector is close to its items: its best match scores far above a random item
    assert float(np.median((q @ items.vectors.T).max(axis=1))) > 0.7


def test_exact_topk_matches_a_full_sort_with_and_without_a_mask() -> None:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(2_345, 16)).astype(np.float32)
    q = rng.normal(size=(7, 16)).astype(np.float32)
    mask = rng.random(2_345) < 0.3
    full = np.argsort(-(q @ v.T), axis=1)[:, :10]
    np.testing.assert_array_equal(exact_topk(v, q, 10, chunk=500), full)
    s = q @ v.T
    s[:, ~mask] = -np.inf
    np.testing.assert_array_equal(exact_topk(v, q, 10, mask, chunk=333), np.argsort(-s, axis=1)[:, :10])


def test_recall_counts_the_share_of_the_truth_found() -> None:
    truth = np.array([[1, 2, 3, 4], [5, 6, 7, 8]])
    assert recall_at_k([[1, 2, 3, 4], [5, 6, 7, 8]], truth) == 1.0
    assert recall_at_k([[4, 3, 9, 10], [8]], truth) == pytest.approx((0.5 + 0.25) / 2)
    assert recall_at_k([[], []], truth) == 0.0


def test_filters() -> None:
    items = clustered_items(3_000, NOW_MS)
    assert filter_mask(items, "none", NOW_MS) is None
    kind = filter_mask(items, "kind", NOW_MS)
    assert kind is not None and np.all(items.kinds[kind] == 0)
    fresh = filter_mask(items, "fresh", NOW_MS)
    assert fresh is not None and np.all(items.created_ms[fresh] >= NOW_MS - FRESH_MS)
    with pytest.raises(ValueError):
        filter_mask(items, "other", NOW_MS)


def test_plan_and_config_settings() -> None:
    big, small, quick = plan(1_000_000, False), plan(100_000, False), plan(20_000, True)
    assert set(big) == set(small) == {"created_day", "none", "kind"}
    assert any(c.kind == "IVF_FLAT" and dict(c.build)["nlist"] == 1024 for c in big["kind"])
    assert all(v >= 100 for c in small["created_day"] if c.kind == "HNSW" for v in c.search)  # ef >= k
    assert sum(len(c) for c in quick.values()) == 3
    cfg = IndexConfig("HNSW", (("M", 8), ("efConstruction", 64)), (100,))
    s = cfg.settings(MilvusSettings(), 400)
    assert (s.index_type, s.hnsw_m, s.hnsw_ef_construction, s.hnsw_ef) == ("HNSW", 8, 64, 400)
    ivf = IndexConfig("IVF_FLAT", (("nlist", 256),), (8,)).settings(MilvusSettings(), 32)
    assert (ivf.index_type, ivf.ivf_nlist, ivf.ivf_nprobe) == ("IVF_FLAT", 256, 32)
    assert cfg.label == "HNSW(M=8,efConstruction=64)"


def test_best_cells_pick_the_fastest_cell_above_the_recall_bar() -> None:
    def cell(f: str, p50: float, rec: float, ef: int) -> dict[str, object]:
        return {"filter": f, "latency_ms": {"p50": p50, "p99": p50 * 3}, "recall_at_100": rec, "param": {"ef": ef}}

    report = {"sizes": [{"rows": 10, "layouts": [{"layout": "none", "configs": [
        {"index": "HNSW(a)", "cells": [cell("none", 1.0, 0.90, 100), cell("none", 2.0, 0.97, 200),
                                       cell("fresh", 5.0, 0.99, 100)]},
        {"index": "IVF(b)", "cells": [cell("none", 1.5, 0.96, 32)]}]}]}]}
    best = best_cells(report)
    assert [(b["filter"], b["index"], b["p50_ms"]) for b in best] == [("none", "IVF(b)", 1.5),
                                                                        ("fresh", "HNSW(a)", 5.0)]
