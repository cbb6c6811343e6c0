"""A deadline reached is an infrastructure failure: the real Redis, gRPC and pymilvus clients, pointed at a server
that accepts connections and never answers (a hung Redis or Milvus), raise within their deadline, and the worker
classifies what they raise as transient (``streams.cores.retry.is_transient``): it holds the partition and retries
the batch, never dead-letters it. No services: the silent server is a local socket."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any, cast

import grpc
import pytest
from tenacity import wait_none

from contracts.topics import Topics
from infra import clients
from infra.metrics import EngineMetrics
from infra.settings import MilvusSettings, RedisSettings, Settings
from streams.app import _retrying, agent_specs, poison_dead_letters, run_batch
from streams.cores.retry import is_transient
from streams.engine import BatchResult, Outgoing, Record

TOPICS = Topics.for_prefix("unit.")


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A TCP server that accepts every connection and never sends a byte."""
    server = socket.create_server(("127.0.0.1", 0))
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.1)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            held.append(conn)

    t = threading.Thread(target=accept, daemon=True)
    t.start()
    yield server.getsockname()[1]
    stop.set()
    t.join(2)
    server.close()
    for c in held:
        c.close()


def _timed(fn: Any) -> tuple[BaseException, float]:
    t0 = time.monotonic()
    with pytest.raises(Exception) as info:
        fn()
    return info.value, time.monotonic() - t0


def test_a_redis_command_to_a_hung_server_ends_at_the_serving_deadline_as_a_transient_error(silent_port):
    import redis.exceptions

    settings = RedisSettings(port=silent_port, serving_timeout_s=0.2)
    client = clients.redis_client(settings, serving=True)
    try:
        exc, took = _timed(lambda: client.get("thaw:x"))
    finally:
        client.close()
    assert isinstance(exc, redis.exceptions.TimeoutError), repr(exc)
    assert is_transient(exc)
    assert took < 3 * 0.2, took  # one try: a timeout is not retried on the serving path


@pytest.mark.parametrize("retries", [0, 1])
def test_a_redis_command_on_the_ingest_path_is_retried_a_bounded_number_of_times(silent_port, retries):
    import redis.exceptions

    settings = RedisSettings(port=silent_port, timeout_s=0.2, retries=retries)
    client = clients.redis_client(settings)
    try:
        exc, took = _timed(lambda: client.get("thaw:x"))
    finally:
        client.close()
    assert isinstance(exc, redis.exceptions.TimeoutError) and is_transient(exc)
    # (1 + retries)^2 tries of 0.2 s (the handshake and the command each retried), within the computed bound
    assert (1 + retries) ** 2 * 0.2 <= took <= clients.redis_hung_server_s(settings) + 0.3, took


def test_a_grpc_call_to_a_hung_server_ends_at_its_deadline_as_a_transient_error(silent_port):
    channel = grpc.insecure_channel(f"127.0.0.1:{silent_port}")
    try:
        call = channel.unary_unary("/milvus.proto.milvus.MilvusService/Search")
        exc, took = _timed(lambda: call(b"", timeout=0.3))
    finally:
        channel.close()
    assert isinstance(exc, grpc.RpcError) and exc.code() == grpc.StatusCode.DEADLINE_EXCEEDED  # what pymilvus raises
    assert is_transient(exc)
    assert took < 3 * 0.3, took


def test_a_milvus_client_to_a_hung_server_gives_up_at_the_connect_deadline_as_a_transient_error(silent_port):
    settings = MilvusSettings(uri=f"http://127.0.0.1:{silent_port}", serving_connect_timeout_s=0.4)
    exc, took = _timed(lambda: clients.milvus_client(settings, serving=True))
    assert is_transient(exc), repr(exc)
    assert took < 3 * 0.4, took


class _Engine:
    """Content handling whose first two attempts read Redis from a hung server, as a sink outage would."""

    def __init__(self, port: int) -> None:
        self.redis = clients.redis_client(RedisSettings(port=port, timeout_s=0.1, retries=0))
        self.attempts = 0

    def handle_content(self, recs: list[Record]) -> BatchResult:
        self.attempts += 1
        if self.attempts <= 2:
            self.redis.get("thaw:fresh")
        return BatchResult(out=[Outgoing(TOPICS.content_indexed, r.key, b"trace") for r in recs], ok=len(recs))

    def retry_due(self, rec: Record) -> float:
        return 0.0

    def clock(self) -> float:
        return 0.0

    prepare_user_events = commit_user_events = handle_profiles = handle_content


def test_a_batch_whose_sink_times_out_is_retried_whole_and_nothing_is_dead_lettered(silent_port):
    eng = _Engine(silent_port)
    metrics = EngineMetrics()
    spec = agent_specs(Settings(), TOPICS, cast(Any, eng))[0]
    recs = [Record(TOPICS.content_new, 0, i, b"k%d" % i, b"{}", 0) for i in range(8)]
    sent: list[Outgoing] = []

    async def send(msgs: list[Outgoing]) -> None:
        sent.extend(msgs)

    async def retrying(what: str, fn: Any) -> Any:
        return await _retrying(what, fn, metrics, agent=spec.name, wait=wait_none())

    try:
        res = asyncio.run(run_batch(spec, recs, send=send, retrying=retrying,
                                    poison=poison_dead_letters(TOPICS, metrics)))
    finally:
        eng.redis.close()
    assert eng.attempts == 3 and res.ok == 8  # the whole batch, again, until the sink answers
    assert [m.topic for m in sent] == [TOPICS.content_indexed] * 8  # no dead letter
    assert metrics.registry.get_sample_value(
        "thaw_agent_retries_total", {"agent": "content", "step": "content", "error": "redis.TimeoutError"}) == 2
