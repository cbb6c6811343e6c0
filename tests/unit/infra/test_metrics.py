"""EngineMetrics exposition: render the dedicated registry and check the sample values."""

from __future__ import annotations

import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.lag import PartitionLag
from infra.metrics import FRESHNESS_BUCKETS, EngineMetrics


def samples(metrics: EngineMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = metrics.render().decode("utf-8")
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_counters_and_histograms_render() -> None:
    m = EngineMetrics()
    m.event("events", "ok", 3)
    m.event("events", "ok")
    m.event("events", "dlq")
    m.dlq("events", "DecodeError", 2)
    m.observe_freshness(0.2)
    m.observe_freshness(7.0)
    m.observe_freshness(-1.0)  # clock skew clamps to 0
    m.observe_stage("encode", 0.004)
    s = samples(m)
    assert s[("thaw_events_total", (("outcome", "ok"), ("topic", "events")))] == 4
    assert s[("thaw_events_total", (("outcome", "dlq"), ("topic", "events")))] == 1
    assert s[("thaw_dlq_total", (("error", "DecodeError"), ("topic", "events")))] == 2
    assert s[("thaw_freshness_seconds_count", ())] == 3
    assert s[("thaw_freshness_seconds_sum", ())] == pytest.approx(7.2)
    assert s[("thaw_freshness_seconds_bucket", (("le", "0.01"),))] == 1
    assert s[("thaw_freshness_seconds_bucket", (("le", "0.25"),))] == 2
    assert s[("thaw_freshness_seconds_bucket", (("le", "10.0"),))] == 3
    assert s[("thaw_freshness_seconds_bucket", (("le", "+Inf"),))] == 3
    les = sorted(float(dict(k[1])["le"]) for k in s if k[0] == "thaw_freshness_seconds_bucket")
    assert les[:-1] == list(FRESHNESS_BUCKETS) and les[0] == 0.01 and les[-2] == 60.0
    assert s[("thaw_stage_seconds_count", (("stage", "encode"),))] == 1
    # no lag source: no lag families
    assert not any(k[0].startswith("thaw_consumer_lag") for k in s)


def test_stage_timer_uses_clock_and_records_on_error() -> None:
    clock = FakeClock()
    m = EngineMetrics(clock=clock)
    with m.stage("upsert"):
        clock.now += 0.3
    with pytest.raises(ValueError), m.stage("upsert"):
        clock.now += 0.2
        raise ValueError("boom")
    s = samples(m)
    assert s[("thaw_stage_seconds_count", (("stage", "upsert"),))] == 2
    assert s[("thaw_stage_seconds_sum", (("stage", "upsert"),))] == pytest.approx(0.5)


def test_registries_are_independent() -> None:
    a, b = EngineMetrics(), EngineMetrics()
    a.event("t", "ok")
    assert samples(a)[("thaw_events_total", (("outcome", "ok"), ("topic", "t")))] == 1
    assert ("thaw_events_total", (("outcome", "ok"), ("topic", "t"))) not in samples(b)


def test_consumer_lag_gauge_is_refreshed_and_cached() -> None:
    clock = FakeClock()
    calls = []
    rows = [
        PartitionLag("g1", "events", 0, 5, 12, 7),
        PartitionLag("g1", "events", 1, 3, 3, 0),
        PartitionLag("g1", "events", 2, None, 9, None),  # nothing committed: no sample
    ]

    def source() -> list[PartitionLag]:
        calls.append(clock.now)
        return list(rows)

    m = EngineMetrics(source, lag_refresh_s=5.0, clock=clock)
    s = samples(m)
    assert s[("thaw_consumer_lag", (("group", "g1"), ("partition", "0"), ("topic", "events")))] == 7
    assert s[("thaw_consumer_lag", (("group", "g1"), ("partition", "1"), ("topic", "events")))] == 0
    assert ("thaw_consumer_lag", (("group", "g1"), ("partition", "2"), ("topic", "events"))) not in s
    assert s[("thaw_consumer_lag_up", ())] == 1
    rows[0] = PartitionLag("g1", "events", 0, 10, 12, 2)
    clock.now += 1.0
    s = samples(m)  # cached
    assert s[("thaw_consumer_lag", (("group", "g1"), ("partition", "0"), ("topic", "events")))] == 7
    clock.now += 5.0
    s = samples(m)  # refreshed
    assert s[("thaw_consumer_lag", (("group", "g1"), ("partition", "0"), ("topic", "events")))] == 2
    assert len(calls) == 2
    m.refresh_lag()
    assert len(calls) == 3


def test_consumer_lag_failure_is_reported_not_raised() -> None:
    def broken() -> list[PartitionLag]:
        raise ConnectionError("no broker")

    m = EngineMetrics(broken)
    s = samples(m)
    assert s[("thaw_consumer_lag_up", ())] == 0
    assert not any(k[0] == "thaw_consumer_lag" for k in s)


def test_http_server_serves_the_registry() -> None:
    m = EngineMetrics(lambda: [PartitionLag("g", "t", 0, 1, 4, 3)])
    try:
        port = m.start_http_server(0)
        m.event("t", "ok")
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as resp:
            body = resp.read().decode("utf-8")
        assert 'thaw_events_total{outcome="ok",topic="t"} 1.0' in body
        assert 'thaw_consumer_lag{group="g",partition="0",topic="t"} 3.0' in body
    finally:
        m.close()


def test_ab_events_are_counted_per_arm_and_action() -> None:
    m = EngineMetrics()
    m.ab_event("gated", "like", 3)
    m.ab_event("gated", "like")
    m.ab_event("plain", "skip", 2)
    fams = {f.name: f for f in text_string_to_metric_families(m.render().decode())}
    got = {(s.labels["variant"], s.labels["action"]): s.value for s in fams["thaw_ab_events"].samples
           if s.name == "thaw_ab_events_total"}
    assert got == {("gated", "like"): 4.0, ("plain", "skip"): 2.0}
