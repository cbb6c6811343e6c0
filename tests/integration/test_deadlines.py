"""Deadlines against the real Redis and Milvus of the local stack, reached through a TCP proxy the test freezes
(every byte held: a server that hangs): a call on the serving path gives up within its budget, one on the ingest path
within its own, what they raise is transient for the worker, and the same clients work again once the proxy thaws.
Also: the worker's Faust app bounds its Kafka requests and deliveries from the settings."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pytest

from indexing.milvus_items import ItemIndex, ItemRow
from indexing.redis_state import RedisState
from infra import clients
from infra.settings import Settings
from streams.cores.retry import is_transient
from tests.e2e.test_worker_stop import FreezableProxy, skip_on_a_redis_cluster

pytestmark = pytest.mark.integration

DIM = 8


def _fails_within(call: Callable[[], Any], most_s: float) -> tuple[BaseException, float]:
    """Run ``call``, which must raise within ``most_s``; the exception and the seconds it took. The call runs on a
    daemon thread, so one without a deadline fails the test instead of hanging it (closing the proxy ends it)."""
    out: dict[str, Any] = {}

    def run() -> None:
        t0 = time.monotonic()
        try:
            out["value"] = call()
        except Exception as exc:  # noqa: BLE001 - what the test looks at
            out["exc"] = exc
        out["took"] = time.monotonic() - t0

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(most_s + 5.0)
    if t.is_alive():
        pytest.fail(f"the call still waits {most_s + 5.0:.1f}s later: it has no deadline (bound {most_s:.3f}s)")
    assert "exc" in out, f"the call answered {out.get('value')!r} through a frozen proxy"
    exc, took = out["exc"], out["took"]
    assert took < most_s, f"{type(exc).__name__} after {took:.3f}s (bound {most_s:.3f}s)"
    return exc, took


def _answers_within(call: Callable[[], Any], most_s: float) -> Any:
    """``call``'s result, retried until it answers (the proxy's held bytes drain first), within ``most_s``."""
    deadline = time.monotonic() + most_s
    while True:
        try:
            return call()
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)


@pytest.fixture
def redis_proxy(stack_settings: Settings) -> Iterator[FreezableProxy]:
    proxy = FreezableProxy(stack_settings.redis.host, stack_settings.redis.port)
    yield proxy
    proxy.close()


@pytest.fixture
def milvus_proxy(stack_settings: Settings) -> Iterator[FreezableProxy]:
    host, port = stack_settings.milvus.uri.split("://", 1)[1].rsplit(":", 1)
    proxy = FreezableProxy(host, int(port))
    yield proxy
    proxy.close()


def test_redis_through_a_frozen_proxy_gives_up_within_each_paths_budget(stack_settings, unique_name, redis_proxy):
    skip_on_a_redis_cluster(stack_settings)
    s = stack_settings.namespaced(unique_name)
    via = s.redis.model_copy(update={"host": "127.0.0.1", "port": redis_proxy.port, "timeout_s": 1.0})
    api, worker = RedisState(via, serving=True), RedisState(via)
    direct = RedisState(s.redis)
    try:
        direct.set_space("minilm-l6@1")
        direct.ensure_layout(1)
        assert api.current_space() == worker.current_space() == "minilm-l6@1"  # both connected, unfrozen
        assert api.keys.shards == worker.keys.shards == 1  # the layout read before the freeze
        redis_proxy.frozen.set()

        budget = via.serving_timeout_s
        exc, took = _fails_within(api.current_space, 3 * budget)
        print(f"redis serving path, frozen: {type(exc).__name__} after {took * 1000:.0f} ms (budget {budget}s)")
        assert is_transient(exc), repr(exc)
        exc, took = _fails_within(lambda: api.read_states("minilm-l6@1", ["u1", "u2"]), 3 * budget)
        assert is_transient(exc)

        exc, took = _fails_within(worker.current_space, 3 * via.timeout_s)
        print(f"redis ingest path, frozen: {type(exc).__name__} after {took * 1000:.0f} ms (budget {via.timeout_s}s)")
        assert took >= via.timeout_s * 0.9 and is_transient(exc)  # the ingest budget, not the serving one

        redis_proxy.frozen.clear()
        assert _answers_within(api.current_space, 5.0) == "minilm-l6@1"  # the same client reconnects
        assert _answers_within(worker.current_space, 5.0) == "minilm-l6@1"
    finally:
        direct.delete_prefix()
        for st in (api, worker, direct):
            st.r.close()


def _rows(n: int) -> tuple[np.ndarray, list[ItemRow]]:
    rng = np.random.default_rng(3)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, [ItemRow(f"i{i}", v[i], "track", "c", 1000 + i, "m@1") for i in range(n)]


def test_milvus_through_a_frozen_proxy_gives_up_within_each_paths_budget(stack_settings, unique_name, milvus_proxy):
    s = stack_settings.namespaced(unique_name)
    direct = ItemIndex(s.milvus, dim=DIM)
    via = s.milvus.model_copy(update={"uri": f"http://127.0.0.1:{milvus_proxy.port}", "timeout_s": 1.5})
    api = worker = None
    try:
        direct.ensure()
        vecs, rows = _rows(20)
        direct.upsert(rows)
        api, worker = ItemIndex(via, dim=DIM, serving=True), ItemIndex(via, dim=DIM)
        assert _answers_within(lambda: api.search(vecs[:1], 3, consistency="Strong")[0][0].item_id, 10) == "i0"
        assert worker.search(vecs[:1], 3)[0][0].item_id == "i0"
        milvus_proxy.frozen.set()

        budget = via.serving_timeout_s
        exc, took = _fails_within(lambda: api.search(vecs[:1], 3), 3 * budget)
        print(f"milvus serving search, frozen: {type(exc).__name__} after {took * 1000:.0f} ms (budget {budget}s)")
        assert is_transient(exc), repr(exc)
        exc, took = _fails_within(lambda: api.get_vectors(["i1"], strong_retry=False), 3 * budget)
        print(f"milvus serving query, frozen: {type(exc).__name__} after {took * 1000:.0f} ms")
        assert is_transient(exc), repr(exc)

        exc, took = _fails_within(lambda: worker.upsert(rows[:2]), 3 * via.timeout_s)
        print(f"milvus ingest upsert, frozen: {type(exc).__name__} after {took * 1000:.0f} ms "
              f"(budget {via.timeout_s}s)")
        assert took >= via.timeout_s * 0.9 and is_transient(exc), repr(exc)

        # a client made while Milvus hangs (the API rebuilding its index after a flip) gives up at its connect deadline
        connect = via.serving_connect_timeout_s
        exc, took = _fails_within(lambda: clients.milvus_client(via, serving=True, dedicated=True), 3 * connect)
        print(f"milvus serving connect, frozen: {type(exc).__name__} after {took * 1000:.0f} ms (budget {connect}s)")
        assert is_transient(exc), repr(exc)

        milvus_proxy.frozen.clear()
        assert _answers_within(lambda: api.search(vecs[1:2], 3)[0][0].item_id, 10) == "i1"
        assert _answers_within(worker.count, 10) == 20
    finally:
        for ix in (api, worker):
            if ix is not None:
                ix.close()
        direct.drop()
        direct.close()


def test_the_worker_app_bounds_its_kafka_requests_and_deliveries(stack_settings, unique_name):
    from contracts.topics import Topics
    from streams.app import create_app
    from streams.engine import Engine
    from tests.fakes import FakeFeaturizer, FakeText, InMemoryEngineState, InMemoryItems

    base = stack_settings.namespaced(unique_name)
    for request_s, session_s, want in ((20.0, 10.0, 20.0), (20.0, 25.0, 25.0)):
        s = base.model_copy(update={
            "kafka": base.kafka.model_copy(update={"request_timeout_s": request_s, "delivery_timeout_s": 45.0}),
            "stream": base.stream.model_copy(update={"session_timeout_s": session_s}),
        })
        topics = Topics.for_prefix(s.kafka.topic_prefix)
        text = FakeText()
        engine = Engine(s, topics, text, InMemoryItems(), InMemoryEngineState(), group_id=s.stream.app_id,
                        featurizer=FakeFeaturizer(text))
        rt = create_app(s, topics=topics, engine=engine)
        assert rt.app.conf.broker_request_timeout == want  # never below the session timeout (Faust refuses it)
        assert rt.app.conf.producer_request_timeout == 45.0  # Faust's default is 1200 s
        assert rt.steps is not None and rt.steps.stuck_after_s == s.stream.stuck_after_s
