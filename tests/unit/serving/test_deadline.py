"""A hung dependency does not freeze the API: the request deadline answers 503 without waiting for the stuck thread,
the concurrency limit sheds what comes next at once, and ``/healthz`` answers throughout.

The hang is real: a recommender blocked on a ``threading.Event``, or a real Redis client talking to a socket that
accepts and never answers. Every request runs on a helper thread with a time limit, so a regression (a handler that
waits for the stuck call) fails the test in seconds instead of hanging it.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis
from fastapi.testclient import TestClient

from serving.guard import Bulkhead, DeadlineExceeded, Overloaded, stuck_dependency
from tests.unit.serving.helpers import FakeRecommender, serving, settings, typed

DEADLINE_S = 0.4
SLOTS = 3
LIMIT_S = DEADLINE_S + 1.5  # the most a deadline answer may take here (a loaded 2-core machine)


@pytest.fixture
def unstick() -> Iterator[list[Callable[[], None]]]:
    """What ends the hangs a test made (run when a request outlives its limit, and at the end)."""
    out: list[Callable[[], None]] = []
    yield out
    for f in out:
        f()


@pytest.fixture
def gate(unstick: list[Callable[[], None]]) -> threading.Event:
    ev = threading.Event()
    unstick.append(ev.set)
    return ev


@pytest.fixture
def calls(unstick: list[Callable[[], None]]) -> Iterator[Callable[..., tuple[httpx.Response, float]]]:
    pool = ThreadPoolExecutor(8)

    def call(client: TestClient, path: str, limit_s: float = LIMIT_S, **kw: Any) -> tuple[httpx.Response, float]:
        """``client.get(path)`` on another thread; fails when no answer came within ``limit_s`` (after ending the
        hangs, so the app can shut down)."""
        t0 = time.monotonic()
        fut = pool.submit(client.get, path, **kw)
        try:
            r = fut.result(timeout=limit_s)
        except TimeoutError:
            for f in unstick:
                f()
            pytest.fail(f"GET {path}: no answer within {limit_s} s (the API waits for a stuck call)")
        return r, time.monotonic() - t0

    yield call
    pool.shutdown(wait=False, cancel_futures=True)


def _api(rec: FakeRecommender, **serve: Any) -> Any:
    limits = {"request_deadline_s": DEADLINE_S, "ready_deadline_s": DEADLINE_S, "max_concurrency": SLOTS}
    return serving(lambda: typed(rec), settings(**{**limits, **serve}))


def test_a_stuck_request_answers_503_at_its_deadline_and_health_answers_meanwhile(gate, calls) -> None:
    rec = FakeRecommender(gate=gate)
    with _api(rec) as (c, ops):
        r, took = calls(c, "/recommend?user_id=u1")
        assert r.status_code == 503, r.text
        assert r.json() == {"detail": f"no answer within {DEADLINE_S:g} s; see /readyz", "dependency": None}
        assert DEADLINE_S - 0.05 <= took < LIMIT_S
        for client in (c, ops):  # the stuck call still runs; liveness does not wait for it
            h, took_h = calls(client, "/healthz", limit_s=1.0)
            assert h.status_code == 200 and took_h < 1.0
        text = ops.get("/metrics").text
        assert 'thaw_api_deadline_exceeded_total{dependency="none",endpoint="/recommend"} 1.0' in text
        assert 'thaw_api_in_flight{pool="recommend"} 1.0' in text  # the abandoned call holds its slot
        assert 'thaw_api_requests_total{endpoint="/recommend",status="503"} 1.0' in text
        gate.set()  # the dependency recovers: the slot comes back, requests are served again
        deadline = time.monotonic() + 5
        while rec.calls and 'thaw_api_in_flight{pool="recommend"} 0.0' not in ops.get("/metrics").text:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        assert "thaw_recommend_requests_total{" not in ops.get("/metrics").text  # the late list was not served
        r, _ = calls(c, "/recommend?user_id=u1")
        assert r.status_code == 200, r.text
        assert "thaw_recommend_requests_total{" in ops.get("/metrics").text


def test_past_the_concurrency_limit_requests_are_shed_at_once(gate, calls) -> None:
    rec = FakeRecommender(gate=gate)
    with _api(rec) as (c, ops):
        for _ in range(SLOTS):  # every slot taken by a call that hangs
            assert calls(c, "/recommend?user_id=u1")[0].status_code == 503
        for path in ("/recommend?user_id=u2", "/ab", "/ab/u3"):
            r, took = calls(c, path, limit_s=1.0)
            assert r.status_code == 503, r.text
            assert r.json() == {"detail": f"overloaded: {SLOTS} requests in flight; retry later", "dependency": None}
            assert r.headers["retry-after"] == "1"
            assert took < DEADLINE_S  # not queued: answered before any deadline could pass
        assert rec.calls == SLOTS  # the shed requests never reached the recommender
        h, _ = calls(ops, "/healthz", limit_s=1.0)
        assert h.status_code == 200  # with every request thread stuck
        text = ops.get("/metrics").text
        assert 'thaw_api_shed_total{endpoint="/recommend"} 1.0' in text
        assert 'thaw_api_shed_total{endpoint="/ab/{user_id}"} 1.0' in text
        assert f'thaw_api_in_flight{{pool="recommend"}} {SLOTS}.0' in text


def test_concurrent_requests_within_the_limit_are_served_together(calls) -> None:
    barrier = threading.Barrier(SLOTS, timeout=5)

    class Together(FakeRecommender):
        def recommend(self, user_id: str, k: int = 20, variant: str | None = None) -> Any:
            barrier.wait()  # returns only when SLOTS calls run at the same time
            return super().recommend(user_id, k, variant)

    with _api(Together(), request_deadline_s=5.0) as (c, _):
        with ThreadPoolExecutor(SLOTS) as pool:
            got = list(pool.map(lambda j: c.get("/recommend", params={"user_id": f"u{j}"}), range(SLOTS)))
    assert [r.status_code for r in got] == [200] * SLOTS


def test_readiness_names_the_check_that_hangs(gate, calls) -> None:
    with _api(FakeRecommender(gate=gate)) as (_, ops):
        r, took = calls(ops, "/readyz")
        assert r.status_code == 503 and took < LIMIT_S
        assert r.json() == {"ready": False, "checks": {
            "space": "text@t", "redis": f"error: no answer within {DEADLINE_S:g} s"}}


class _Silent:
    """A TCP server that accepts connections and never answers (a frozen Redis)."""

    def __init__(self) -> None:
        self.server = socket.create_server(("127.0.0.1", 0), backlog=16)
        self.port = self.server.getsockname()[1]

    def close(self) -> None:
        self.server.close()


class _RedisBacked(FakeRecommender):
    """Reads the user from a real Redis client before answering."""

    def __init__(self, port: int) -> None:
        super().__init__()
        self.redis = redis.Redis(host="127.0.0.1", port=port, socket_timeout=30, socket_connect_timeout=5)

    def recommend(self, user_id: str, k: int = 20, variant: str | None = None) -> Any:
        self.redis.hgetall(f"user:{user_id}")
        return super().recommend(user_id, k, variant)


def test_the_deadline_names_the_dependency_the_thread_waits_on(calls, unstick) -> None:
    silent = _Silent()
    unstick.append(silent.close)
    try:
        with _api(_RedisBacked(silent.port)) as (c, ops):
            r, took = calls(c, "/recommend?user_id=u1")
            assert r.status_code == 503 and took < LIMIT_S
            assert r.json() == {"detail": f"no answer within {DEADLINE_S:g} s (waiting on redis); see /readyz",
                                "dependency": "redis"}
            assert ('thaw_api_deadline_exceeded_total{dependency="redis",endpoint="/recommend"} 1.0'
                    in ops.get("/metrics").text)
    finally:
        silent.close()


@pytest.mark.parametrize(("modules", "dependency"), [
    (["socket", "redis.connection", "redis.client", "ranking.online.pipeline"], "redis"),
    (["threading", "grpc._channel", "pymilvus.client.grpc_handler", "indexing.milvus_items"], "milvus"),
    (["pymilvus.orm.connections"], "milvus"),
    (["threading", "serving.space", "serving.deps"], "the served space"),
    (["redis.connection", "serving.space"], "redis"),  # building the space, stuck in Redis
    (["onnxruntime", "ranking.online.ranker"], None),
    (["redisish.module"], None),
    ([], None),
])
def test_stuck_dependency(modules: list[str], dependency: str | None) -> None:
    assert stuck_dependency(modules) == dependency


def test_bulkhead_accounting() -> None:
    async def main() -> None:
        b = Bulkhead(2, "t")
        assert await b.run(lambda: 41 + 1, 1.0) == 42
        with pytest.raises(ZeroDivisionError):
            await b.run(lambda: 1 // 0, 1.0)
        assert b.in_flight == 0
        ev = threading.Event()
        with pytest.raises(DeadlineExceeded):
            await b.run(ev.wait, 0.05)
        with pytest.raises(DeadlineExceeded):
            await b.run(ev.wait, 0.05)
        assert b.in_flight == 2
        with pytest.raises(Overloaded):
            await b.run(lambda: 1, 1.0)
        ev.set()
        for _ in range(100):
            if b.in_flight == 0:
                break
            await asyncio.sleep(0.01)
        assert b.in_flight == 0
        b.close()  # a closed bulkhead starts new threads for later calls
        assert await b.run(lambda: "again", 1.0) == "again"
        assert b.in_flight == 0

    asyncio.run(main())
