"""The benchmarks' pure helpers: statistics, Prometheus parsing, user-event generation (no stack needed)."""

from __future__ import annotations

import json

import pytest

from benchmarks._harness import Histogram, parse_prometheus, parse_rates, stage_table, summarize
from benchmarks.user_throughput import make_events
from contracts.actions import ACTION_WEIGHTS
from contracts.events import UserEvent
from infra.metrics import EngineMetrics


def test_summarize_scales_and_handles_empty():
    s = summarize([0.1, 0.2, 0.3, 0.4], scale=1000.0)
    assert s["n"] == 4
    assert s["p50"] == pytest.approx(250.0)
    assert s["max"] == pytest.approx(400.0)
    assert s["min"] == pytest.approx(100.0)
    empty = summarize([])
    assert empty["n"] == 0 and empty["p99"] is None


def test_parse_rates():
    assert parse_rates("20, 50,100") == [20.0, 50.0, 100.0]
    with pytest.raises(ValueError):
        parse_rates("0")
    with pytest.raises(ValueError):
        parse_rates("")


def test_histogram_quantile_interpolates_like_prometheus():
    h = Histogram(buckets=[(0.1, 50.0), (0.2, 100.0), (float("inf"), 100.0)], sum=12.0, count=100.0)
    assert h.quantile(0.5) == pytest.approx(0.1)
    assert h.quantile(0.75) == pytest.approx(0.15)
    assert Histogram().quantile(0.5) is None


def test_parse_prometheus_reads_the_engines_metrics():
    m = EngineMetrics()
    m.event("x.user.events", "ok", 300)
    for ms in (2.0, 4.0, 6.0):
        m.observe_stage("decode", ms / 1000.0)
    m.observe_stage("commit", 0.008)
    parsed = parse_prometheus(m.render().decode())
    counters = parsed["counters"]["thaw_events"]
    assert counters[(("outcome", "ok"), ("topic", "x.user.events"))] == 300
    table = stage_table(parsed)
    assert table["decode"]["batches"] == 3
    assert table["decode"]["mean_ms"] == pytest.approx(4.0)
    assert table["commit"]["batches"] == 1
    assert table["decode"]["p50_ms_est"] is not None


def test_make_events_are_valid_and_the_truth_counts_non_impressions():
    items = [f"lastfm:{i}" for i in range(20)]
    records, truth = make_events(3000, 100, items, seed=1, now=1_800_000_000.0)
    assert len(records) == 3000
    per_user: dict[str, int] = {}
    actions: dict[str, int] = {}
    for key, value in records:
        ev = UserEvent.model_validate_json(value)
        assert key == ev.user_id.encode()
        assert ev.item_id in items
        actions[ev.action.value] = actions.get(ev.action.value, 0) + 1
        if ACTION_WEIGHTS[ev.action.value] != 0:
            per_user[ev.user_id] = per_user.get(ev.user_id, 0) + 1
    assert per_user == truth["n_events_by_user"]
    assert truth["non_impression"] == sum(per_user.values())
    assert actions == truth["actions"]
    assert 0 < actions["impression"] < 3000  # a real mix
    assert len(truth["users"]) == 100
    # deterministic for a seed
    again, _ = make_events(3000, 100, items, seed=1, now=1_800_000_000.0)
    assert again == records
    assert json.loads(records[0][1])["schema_version"] == 1
