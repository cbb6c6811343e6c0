"""End to end: events through Kafka and the worker, then recommendations from a real ``thaw serve`` process."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from datetime import UTC, datetime

import httpx
import pytest
from kafka import KafkaProducer

from contracts.topics import Topics
from indexing.milvus_items import ItemIndex
from infra.procs import stop_process_group
from tests.e2e.conftest import wait_for

pytestmark = pytest.mark.e2e


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_thaw_serve_recommends_from_the_stream(worker, tmp_path):
    s = worker.settings
    t = Topics.for_prefix(s.kafka.topic_prefix)
    now = datetime.now(UTC).isoformat()
    p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", linger_ms=2)
    genres = {"metal": "heavy metal guitar riffs with distortion", "piano": "gentle solo piano lullaby, calm"}
    items = [{"item_id": f"{g}{i}", "kind": "track", "creator_id": g, "created_at": now, "text": f"{txt} #{i}",
              "tags": [g], "produced_at": now} for g, txt in genres.items() for i in range(6)]
    for it in items:
        p.send(t.content_new, key=it["item_id"].encode(), value=json.dumps(it).encode())
    p.flush()
    ix = ItemIndex(s.milvus, dim=384)
    wait_for(lambda: len(ix.get_rows([i["item_id"] for i in items])) == len(items), 60, "items in Milvus", worker)
    for i in range(3):
        ev = {"user_id": "fan", "item_id": f"metal{i}", "action": "like", "ts": now}
        p.send(t.user_events, key=b"fan", value=json.dumps(ev).encode())
    p.flush()
    p.close()

    port = _free_port()
    variants = [{"name": "recall", "ranker": "none", "new_item_share": 0.0}]
    env = {**os.environ, **s.env(), "THAW_SERVE__VARIANTS": json.dumps(variants)}
    log = tmp_path / "serve.log"
    proc = subprocess.Popen([sys.executable, "-m", "thaw", "serve", "--port", str(port), "--log-level", "warning"],
                            env=env, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        def ready() -> bool:
            try:
                return httpx.get(f"{base}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                assert proc.poll() is None, log.read_text()[-3000:]
                return False

        wait_for(ready, 60, "thaw serve ready")

        def liked_three() -> dict | None:
            body = httpx.get(f"{base}/recommend", params={"user_id": "fan", "k": 5, "debug": "true"}, timeout=10).json()
            return body if body["debug"]["user"].get("n_events") == 3 else None

        body = wait_for(liked_three, 30, "the three likes to reach the served user vector", worker)
        ids = [it["item_id"] for it in body["items"]]
        assert body["ab"]["variant"] == "recall" and body["ranker"] == "none"
        assert not {"metal0", "metal1", "metal2"} & set(ids)  # liked items are not recommended again
        assert set(ids[:3]) == {"metal3", "metal4", "metal5"}  # the rest of the metal tracks come first
        assert httpx.get(f"{base}/recommend", params={"user_id": "fan", "k": 0}, timeout=10).status_code == 422
        metrics = httpx.get(f"{base}/metrics", timeout=10).text
        assert 'thaw_recommend_requests_total{bucket=' in metrics
    finally:
        stop_process_group(proc)
    # uvicorn shuts down gracefully on SIGTERM, then re-raises the signal: -15 is its clean exit
    assert proc.returncode in (0, -signal.SIGTERM), log.read_text()[-3000:]
    assert "Traceback" not in log.read_text()

