"""A real ``thaw serve`` whose Redis hangs: liveness answers at once, ``/recommend`` answers 503 naming Redis within
its deadline, readiness says not ready within its own, and the API serves again once Redis does.

The API reaches Redis through the e2e suite's freezable TCP proxy (every byte held while frozen: a hung Redis, not
a refused connection); the worker writes Redis directly.
"""

from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime

import httpx
import pytest
from kafka import KafkaProducer

from contracts.topics import Topics
from indexing.milvus_items import ItemIndex
from serving.auth import mint_token
from tests.e2e.conftest import wait_for
from tests.e2e.serve_proc import JWT_SECRET, thaw_serve
from tests.e2e.test_worker_stop import FreezableProxy, skip_on_a_redis_cluster

pytestmark = pytest.mark.e2e

DEADLINE_S = 0.25
READY_DEADLINE_S = 1.0
MARGIN_S = 1.0  # scheduling on a shared 2-core machine


def _publish(s, worker) -> None:
    t = Topics.for_prefix(s.kafka.topic_prefix)
    now = datetime.now(UTC).isoformat()
    p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", linger_ms=2)
    items = [{"item_id": f"song{i}", "kind": "track", "creator_id": "a", "created_at": now,
              "text": f"a calm piano piece number {i}", "produced_at": now} for i in range(6)]
    for it in items:
        p.send(t.content_new, key=it["item_id"].encode(), value=json.dumps(it).encode())
    p.send(t.user_events, key=b"fan", value=json.dumps({"user_id": "fan", "item_id": "song0", "action": "like",
                                                        "ts": now}).encode())
    p.flush()
    p.close()
    ix = ItemIndex(s.milvus, dim=384)
    wait_for(lambda: len(ix.get_rows([i["item_id"] for i in items])) == len(items), 60, "items in Milvus", worker)


def _timed(fn, *args, **kw) -> tuple[httpx.Response, float]:
    t0 = time.monotonic()
    r = fn(*args, **kw)
    return r, time.monotonic() - t0


def test_a_frozen_redis_answers_503_within_the_deadline_and_liveness_stays_up(stack_settings, request, tmp_path):
    skip_on_a_redis_cluster(stack_settings)  # before the worker starts
    worker = request.getfixturevalue("worker")
    s = worker.settings
    _publish(s, worker)
    proxy = FreezableProxy(s.redis.host, s.redis.port)
    # the API's Redis client gets a loose per-call timeout here, so what answers is the request deadline itself
    # (with the default 0.3 s the client's own timeout would answer 503 too, naming redis as well)
    env = {**s.env(), "THAW_REDIS__PORT": str(proxy.port), "THAW_REDIS__SERVING_TIMEOUT_S": "30",
           "THAW_SERVE__VARIANTS": json.dumps([{"name": "recall", "ranker": "none"}]),
           "THAW_SERVE__REQUEST_DEADLINE_S": str(DEADLINE_S), "THAW_SERVE__READY_DEADLINE_S": str(READY_DEADLINE_S),
           "THAW_SERVE__MAX_CONCURRENCY": "4",
           # every /readyz runs its checks (the default reuses an answer for 2 s: the freeze would be seen late)
           "THAW_SERVE__READY_CACHE_S": "0"}
    fan = {"Authorization": f"Bearer {mint_token(JWT_SECRET, 'fan')}"}
    try:
        with thaw_serve(env, tmp_path / "serve.log") as api, httpx.Client(timeout=30) as http:
            api.wait_ready()
            wait_for(lambda: http.get(f"{api.base}/recommend", params={"user_id": "fan"}, headers=fan).status_code
                     == 200, 30, "a first list through the proxy")

            proxy.frozen.set()  # Redis hangs: every byte to and from it is held
            r, took = _timed(http.get, f"{api.base}/recommend", params={"user_id": "fan"}, headers=fan)
            assert r.status_code == 503, r.text
            assert r.json() == {"detail": f"no answer within {DEADLINE_S:g} s (waiting on redis); see /readyz",
                                "dependency": "redis"}
            assert DEADLINE_S <= took < DEADLINE_S + MARGIN_S, took
            assert proxy.held.is_set()

            with ThreadPoolExecutor(8) as pool:  # a burst while Redis hangs: every answer is quick
                burst = list(pool.map(lambda _: _timed(http.get, f"{api.base}/recommend",
                                                       params={"user_id": "fan"}, headers=fan), range(8)))
            assert {b.status_code for b, _ in burst} == {503}, [b.text for b, _ in burst]
            assert max(t for _, t in burst) < DEADLINE_S + 2 * MARGIN_S, [t for _, t in burst]
            shed = [t for b, t in burst if b.json()["detail"].startswith("overloaded")]
            assert len(shed) >= 8 - 3, [b.text for b, _ in burst]  # 4 slots, one already held by the first call
            assert max(shed) < DEADLINE_S, shed  # shed at once, not queued

            for base in (api.base, api.ops):  # liveness never waits for Redis
                h, took_h = _timed(http.get, f"{base}/healthz")
                assert h.status_code == 200 and took_h < MARGIN_S, (base, took_h)
            ready, took_r = _timed(http.get, f"{api.ops}/readyz")
            assert ready.status_code == 503 and took_r < READY_DEADLINE_S + MARGIN_S, (ready.text, took_r)
            assert ready.json()["ready"] is False
            metrics = http.get(f"{api.ops}/metrics").text
            assert 'thaw_api_deadline_exceeded_total{dependency="redis",endpoint="/recommend"}' in metrics
            assert 'thaw_api_in_flight{pool="recommend"} 4.0' in metrics
            assert 'thaw_api_shed_total{endpoint="/recommend"}' in metrics

            proxy.frozen.clear()  # Redis answers again: so does the API
            wait_for(lambda: http.get(f"{api.base}/recommend", params={"user_id": "fan"},
                                      headers=fan).status_code == 200, 30, "/recommend to recover")
            wait_for(lambda: http.get(f"{api.ops}/readyz").status_code == 200, 30, "readiness to recover")
    finally:
        proxy.close()
