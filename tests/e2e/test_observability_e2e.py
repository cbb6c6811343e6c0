"""End to end: Debian's real ``prometheus`` scrapes a running worker with the generated config; consumer lag and the
freshness histogram are read back through Prometheus' HTTP query API, and every dashboard expression parses."""

from __future__ import annotations

import json
import math
import shutil
import signal
import socket
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlparse

import httpx
import pytest
from kafka import KafkaProducer

from contracts.topics import Topics
from infra.observability import dashboard
from infra.observability.scrape_config import WORKER_JOB, render_prometheus_config
from tests.e2e.conftest import Worker, wait_for

pytestmark = pytest.mark.e2e

N_ITEMS = 12
N_EVENTS = 30


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Prometheus:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def query(self, expr: str) -> list[dict]:
        r = httpx.get(f"{self.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr!r}: {body}"
        return body["data"]["result"]

    def scalar(self, expr: str) -> float | None:
        res = self.query(expr)
        return float(res[0]["value"][1]) if res else None

    def log_tail(self, n: int = 30) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def _binary() -> str:
    path = shutil.which("prometheus") or ("/usr/bin/prometheus" if Path("/usr/bin/prometheus").exists() else None)
    if path is None:
        pytest.fail("the prometheus server is not installed: `apt-get install prometheus` (Debian; scripts/setup.sh "
                    "installs it)", pytrace=False)
    return path


@pytest.fixture
def prometheus(worker: Worker, tmp_path: Path) -> Iterator[Prometheus]:
    """Prometheus scraping ``worker`` every second, on its own port and storage; always killed afterwards."""
    binary = _binary()
    target = urlparse(worker.metrics_url()).netloc
    config = tmp_path / "prometheus.yml"
    config.write_text(render_prometheus_config(worker.settings, scrape_interval_s=1, worker_targets=[target],
                                               api_targets=[]))
    port = _free_port()
    log = tmp_path / "prometheus.log"
    proc = subprocess.Popen(
        [binary, f"--config.file={config}", f"--storage.tsdb.path={tmp_path / 'tsdb'}",
         f"--web.listen-address=127.0.0.1:{port}", "--log.level=warn"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
    )
    prom = Prometheus(f"http://127.0.0.1:{port}", proc, log)
    try:
        def ready() -> bool:
            if proc.poll() is not None:
                pytest.fail(f"prometheus exited with {proc.returncode}:\n{prom.log_tail()}", pytrace=False)
            try:
                return httpx.get(f"{prom.url}/-/ready", timeout=2).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(ready, 60, "prometheus to be ready", worker, poll_s=0.2)
        yield prom
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _target_up(prom: Prometheus) -> bool:
    body = httpx.get(f"{prom.url}/api/v1/targets", timeout=5).json()
    return any(t["labels"].get("job") == WORKER_JOB and t["health"] == "up" for t in body["data"]["activeTargets"])


def _worker_samples(worker: Worker) -> list:
    from prometheus_client.parser import text_string_to_metric_families

    body = httpx.get(worker.metrics_url(), timeout=10).text
    return [s for fam in text_string_to_metric_families(body) for s in fam.samples]


def _worker_count(worker: Worker) -> float:
    """The worker's own ``thaw_freshness_seconds_count``."""
    return sum(s.value for s in _worker_samples(worker) if s.name == "thaw_freshness_seconds_count")


def _events_ok(worker: Worker) -> dict[str, float]:
    return {s.labels["topic"]: s.value for s in _worker_samples(worker)
            if s.name == "thaw_events_total" and s.labels.get("outcome") == "ok"}


def test_prometheus_reads_the_workers_lag_and_freshness(worker, prometheus) -> None:
    s = worker.settings
    t = Topics.for_prefix(s.kafka.topic_prefix)
    wait_for(lambda: _target_up(prometheus), 60, "the worker target to be up in prometheus", worker, poll_s=0.5)
    # the histogram is scraped at 0 before anything flows, so rate()/increase() see the whole increase
    wait_for(lambda: prometheus.scalar("sum(thaw_freshness_seconds_count)") == 0, 30,
             "a first scrape of the empty histogram", worker, poll_s=0.5)

    p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", linger_ms=2)
    for i in range(N_ITEMS):
        item = {"item_id": f"obs{i}", "kind": "track", "creator_id": "artist-obs", "created_at": _now(),
                "text": f"slow ambient drone with field recordings, part {i}", "tags": ["ambient"],
                "produced_at": _now()}
        p.send(t.content_new, key=item["item_id"].encode(), value=json.dumps(item).encode())
    p.flush()
    # the histogram observes each indexed item (produce -> searchable); user events then move the lag of their topic
    wait_for(lambda: _worker_count(worker) == N_ITEMS, 60, "the items to be indexed", worker, poll_s=0.2)
    for j in range(N_EVENTS):
        ev = {"user_id": f"listener{j % 5}", "item_id": f"obs{j % N_ITEMS}", "action": "play", "ts": _now(),
              "produced_at": _now()}
        p.send(t.user_events, key=ev["user_id"].encode(), value=json.dumps(ev).encode())
    p.flush()
    p.close()
    wait_for(lambda: _events_ok(worker).get(t.user_events) == N_EVENTS, 60, "every user event to be applied", worker,
             poll_s=0.2)
    expected = N_ITEMS

    # the freshness histogram through Prometheus: its count is the items the worker indexed, its quantiles finite
    wait_for(lambda: prometheus.scalar("sum(thaw_freshness_seconds_count)") == expected, 30,
             "prometheus to scrape the full histogram", worker, poll_s=0.5)
    p50 = prometheus.scalar("histogram_quantile(0.5, sum by (le) (increase(thaw_freshness_seconds_bucket[5m])))")
    p99 = prometheus.scalar("histogram_quantile(0.99, sum by (le) (increase(thaw_freshness_seconds_bucket[5m])))")
    assert p50 is not None and p99 is not None
    assert math.isfinite(p50) and 0 < p50 <= p99 <= 60, (p50, p99)
    inf_bucket = prometheus.scalar('sum(thaw_freshness_seconds_bucket{le="+Inf"})')
    assert inf_bucket == expected

    def ok_events() -> dict[str, float]:
        return {r["metric"]["topic"]: float(r["value"][1])
                for r in prometheus.query('sum by (topic) (thaw_events_total{outcome="ok"})')}

    # the histogram was complete before the user events were applied: wait for a scrape that has them too
    wait_for(lambda: ok_events().get(t.user_events) == N_EVENTS, 30, "prometheus to scrape the applied events",
             worker, poll_s=0.5)
    ok = ok_events()
    assert ok[t.content_new] == N_ITEMS and ok[t.user_events] == N_EVENTS

    # consumer lag: a series per partition of every topic the worker's group consumes, caught up to 0
    def caught_up() -> list[dict] | None:
        rows = prometheus.query(f'thaw_consumer_lag{{group="{s.stream.app_id}"}}')
        topics = {r["metric"]["topic"] for r in rows}
        if {t.content_new, t.user_events} <= topics and all(float(r["value"][1]) == 0 for r in rows):
            return rows
        return None

    rows = wait_for(caught_up, 60, "the consumer lag series to reach 0", worker, poll_s=0.5)
    assert all(r["metric"]["job"] == WORKER_JOB and r["metric"]["partition"].isdigit() for r in rows)
    assert prometheus.scalar("min(thaw_consumer_lag_up)") == 1
    per_topic = {r["metric"]["topic"]: float(r["value"][1])
                 for r in prometheus.query(f'sum by (topic) (thaw_consumer_lag{{group="{s.stream.app_id}"}})')}
    assert per_topic[t.content_new] == 0 and per_topic[t.user_events] == 0

    # every expression of the shipped dashboard is valid PromQL for this Prometheus, and the worker's have data
    model = json.loads(dashboard.SHIPPED.read_text())
    with_data = set()
    for panel in model["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$__rate_interval", "1m")
            if prometheus.query(expr):
                with_data.add(panel["title"])
    assert {"Events/s by outcome", "Consumer lag per topic", "Freshness: produce -> searchable",
            "Stage latency p99", "Agents stuck"} <= with_data
