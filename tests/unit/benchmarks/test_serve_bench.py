"""Pure helpers of benchmarks.serve: ranking metrics, latency summary, the simulator's choice model, payloads."""

from __future__ import annotations

import math

import numpy as np
import pytest

from benchmarks.serve import (
    DedupTextEncoder,
    balance_pool,
    cdf,
    contract_payload,
    hits_at_k,
    latency_summary,
    mean_se,
    ndcg_at_k,
    sim_relevance,
    stratify,
)
from contracts.events import ContentNew, UserEvent


def test_ndcg_perfect_partial_and_empty():
    assert ndcg_at_k(["a", "b", "c"], {"a", "b"}, 3) == pytest.approx(1.0)
    # one hit at rank 2 of 2 relevant: (1/log2 3) / (1 + 1/log2 3)
    want = (1 / math.log2(3)) / (1 + 1 / math.log2(3))
    assert ndcg_at_k(["x", "a", "y"], {"a", "b"}, 3) == pytest.approx(want)
    # only the top k count, and the ideal is capped at k hits
    assert ndcg_at_k(["x", "y", "a"], {"a"}, 2) == 0.0
    assert ndcg_at_k(["a", "b"], {"a", "b", "c", "d"}, 2) == pytest.approx(1.0)
    assert ndcg_at_k(["a"], set(), 20) is None


def test_hits_precision_and_capped_recall():
    p, r = hits_at_k(["a", "x", "b", "y"], {"a", "b", "c"}, 4)  # type: ignore[misc]
    assert p == pytest.approx(0.5) and r == pytest.approx(2 / 3)
    p, r = hits_at_k(["a", "b"], {f"i{j}" for j in range(100)} | {"a"}, 2)  # type: ignore[misc]
    assert p == 0.5 and r == 0.5  # recall over min(k, |relevant|)
    assert hits_at_k(["a"], [], 5) is None


def test_latency_summary_percentiles_and_rate():
    s = latency_summary([float(x) for x in range(1, 101)], duration_s=10.0)
    assert s["n"] == 100 and s["req_per_s"] == 10.0
    assert s["p50_ms"] == pytest.approx(50.5) and s["p99_ms"] == pytest.approx(99.01)
    assert s["max_ms"] == 100.0 and s["mean_ms"] == pytest.approx(50.5)
    empty = latency_summary([], 5.0)
    assert empty["n"] == 0 and empty["p99_ms"] is None


def test_mean_se_skips_none():
    m = mean_se([1.0, None, 3.0])
    assert m["n"] == 2 and m["mean"] == 2.0 and m["se"] == pytest.approx(1.0)
    assert mean_se([None])["mean"] is None


def test_sim_relevance_matches_the_simulator_formula():
    tastes = np.array([[1.0, 0.0], [0.6, 0.8]])
    topics = np.array([[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]])
    quality = np.array([0.0, 0.5, -0.5])
    p = sim_relevance(tastes, topics, quality, mu=0.2, sd=0.1, alpha=-3.0, beta=1.5)
    assert p.shape == (2, 3)
    assert p[0, 0] == pytest.approx(1 / (1 + math.exp(-(-3 + 1.5 * 8.0))))
    assert p[1, 2] == pytest.approx(1 / (1 + math.exp(-(-3 + 1.5 * 8.0 - 0.5))))
    assert p[0, 1] < 0.1  # orthogonal taste: below the mean affinity


def test_contract_payload_rebases_times_and_ids():
    data = {"item_id": "sim:i:3", "kind": "comment", "creator_id": "sim:creator:1", "created_at": 1_790_000_000.0,
            "text": "nice", "tags": ["piano"], "parent_id": "sim:i:1"}
    d = contract_payload(data, 100.0, id_prefix="fill:")
    ev = ContentNew.model_validate(d)
    assert ev.item_id == "fill:i:3" and ev.parent_id == "fill:i:1" and ev.creator_id == "sim:creator:1"
    assert ev.created_at.timestamp() == pytest.approx(1_790_000_100.0)
    ue = UserEvent.model_validate(contract_payload({"user_id": "sim:u:1", "item_id": "sim:i:3", "action": "like",
                                                    "ts": 1_790_000_000.5}, -0.5))
    assert ue.item_id == "sim:i:3" and ue.ts.timestamp() == pytest.approx(1_790_000_000.0)
    assert data["created_at"] == 1_790_000_000.0  # input untouched


def test_stratify_and_pool():
    groups = {"a": [f"a{j}" for j in range(50)], "b": ["b0", "b1"], "c": []}
    s = stratify(groups, 30, seed=1)
    assert len(s["a"]) == 10 and sorted(s["b"]) == ["b0", "b1"] and s["c"] == []
    assert len(set(s["a"])) == 10 and stratify(groups, 30, seed=1) == s
    pool = balance_pool(["h0", "h1"], ["n0"], ["x0"], (0.7, 0.2, 0.1))
    kinds = [k for _, k in pool]
    assert len(pool) == 1000 and kinds.count("history") == 700 and kinds.count("unknown_id") == 100
    assert balance_pool(["h"], [], ["x"], (0.7, 0.2, 0.1))[-1] == ("x", "unknown_id")


def test_cdf_thinned_and_monotone():
    xs, ys = cdf([3.0, 1.0, 2.0, 4.0], points=4)
    assert xs == [1.0, 2.0, 3.0, 4.0] and ys == [0.25, 0.5, 0.75, 1.0]
    xs, ys = cdf(list(np.arange(1000.0)), points=50)
    assert len(xs) == 50 and ys[-1] == 1.0 and all(b >= a for a, b in zip(xs, xs[1:], strict=False))
    assert cdf([]) == ([], [])


class _CountingEncoder:
    dim = 2
    model_version = "fake@1"

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        return np.array([[float(len(t)), 1.0] for t in texts], dtype=np.float32)


def test_dedup_encoder_encodes_each_document_once():
    inner = _CountingEncoder()
    enc = DedupTextEncoder(inner)
    a = enc.encode(["ab", "abc", "ab"])
    assert inner.calls == [["ab", "abc"]] and a.shape == (3, 2)
    assert np.array_equal(a[0], a[2]) and a[1, 0] == 3.0
    b = enc.encode(["abc", "x"])
    assert inner.calls[-1] == ["x"] and b[0, 0] == 3.0 and b[1, 0] == 1.0
    assert enc.encoded == 3 and enc.hits == 2
    assert enc.encode([]).shape == (0, 2)
