"""End to end: events through Kafka and the worker, then recommendations from a real ``thaw serve`` process: its
public port behind a JWT, its ops port with readiness and metrics."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest
from kafka import KafkaProducer

from contracts.topics import Topics
from indexing.milvus_items import ItemIndex
from serving.auth import mint_token
from tests.e2e.conftest import wait_for
from tests.e2e.serve_proc import JWT_SECRET, thaw_serve

pytestmark = pytest.mark.e2e


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

    variants = [{"name": "recall", "ranker": "none", "new_item_share": 0.0}]
    env = {**s.env(), "THAW_SERVE__VARIANTS": json.dumps(variants)}
    with thaw_serve(env, tmp_path / "serve.log") as api:
        api.wait_ready()
        fan = {"Authorization": f"Bearer {mint_token(JWT_SECRET, 'fan')}"}
        admin = {"Authorization": f"Bearer {mint_token(JWT_SECRET, 'qa', scopes=['admin'])}"}
        assert httpx.get(f"{api.base}/recommend", params={"user_id": "fan"}, timeout=10).status_code == 401
        assert httpx.get(f"{api.base}/recommend", params={"user_id": "fan", "debug": "true"}, headers=fan,
                         timeout=10).status_code == 403  # debug is for admins

        def liked_three() -> dict | None:
            body = httpx.get(f"{api.base}/recommend", params={"user_id": "fan", "k": 5, "debug": "true"},
                             headers=admin, timeout=10).json()
            return body if body["debug"]["user"].get("n_events") == 3 else None

        body = wait_for(liked_three, 30, "the three likes to reach the served user vector", worker)
        ids = [it["item_id"] for it in body["items"]]
        assert body["ab"]["variant"] == "recall" and body["ranker"] == "none"
        assert not {"metal0", "metal1", "metal2"} & set(ids)  # liked items are not recommended again
        assert set(ids[:3]) == {"metal3", "metal4", "metal5"}  # the rest of the metal tracks come first
        own = httpx.get(f"{api.base}/recommend", params={"user_id": "fan", "k": 5}, headers=fan, timeout=10)
        assert own.status_code == 200 and [it["item_id"] for it in own.json()["items"]] == ids
        assert httpx.get(f"{api.base}/recommend", params={"user_id": "fan", "k": 0}, headers=fan,
                         timeout=10).status_code == 422
        metrics = httpx.get(f"{api.ops}/metrics", timeout=10).text
        assert 'thaw_recommend_requests_total{bucket=' in metrics
        assert 'thaw_api_auth_failures_total{reason="missing"} 1.0' in metrics
        for path in ("/metrics", "/readyz", "/docs"):  # operations stay on the ops port
            assert httpx.get(f"{api.base}{path}", timeout=10).status_code == 404
        assert httpx.get(f"{api.base}/healthz", timeout=10).status_code == 200
        assert "bearer" in httpx.get(f"{api.ops}/openapi.json", timeout=10).json()["components"]["securitySchemes"]
