"""SIGTERM stops ``thaw worker`` promptly and cleanly, with a batch stuck in flight, and loses nothing.

The worker reaches Redis through a small TCP proxy the test can freeze (every byte held: a hung sink). A content
batch is caught between its Milvus upsert and its Redis writes when SIGTERM arrives: the worker must exit 0 within
10 s, leave its consumer group, commit nothing of that batch, and a restarted worker must apply it in full.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from datetime import UTC, datetime

import pytest
from kafka import KafkaProducer
from kafka.structs import TopicPartition

from contracts.topics import Topics
from indexing.milvus_items import ItemIndex
from indexing.redis_state import RedisState
from infra import clients
from infra.lag import LagReader, group_is_active
from infra.settings import Settings
from infra.topics import ensure_topics
from tests.e2e.conftest import Worker, running_worker, wait_for

pytestmark = pytest.mark.e2e

STOP_BUDGET_S = 10.0


ONE_NODE_PROXY_ON_A_CLUSTER = (
    "a Redis Cluster client follows the slot map to the nodes' own addresses, around a one-node proxy, so a frozen "
    "proxy cannot hang it: this runs against the single Redis (make test); the cluster client's deadlines are "
    "unit-tested (tests/unit/infra)")


def skip_on_a_redis_cluster(s: Settings) -> None:
    """Skip, saying why, a test that hangs Redis through a one-node :class:`FreezableProxy`."""
    if s.redis.cluster:
        pytest.skip(ONE_NODE_PROXY_ON_A_CLUSTER)


class FreezableProxy:
    """A TCP proxy to one upstream; while frozen it holds every byte (a sink that hangs) and drops them on close."""

    def __init__(self, host: str, port: int) -> None:
        self.upstream = (host, port)
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.frozen = threading.Event()
        self.held = threading.Event()  # set once a byte arrived while frozen
        self.closed = threading.Event()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed.is_set():
            try:
                client, _ = self.server.accept()
            except OSError:
                return
            upstream = socket.create_connection(self.upstream)
            self.socks += [client, upstream]
            threading.Thread(target=self._pump, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while data := src.recv(65536):
                while self.frozen.is_set() and not self.closed.is_set():
                    self.held.set()
                    time.sleep(0.02)
                if self.closed.is_set():
                    return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed.set()
        self.server.close()
        for s in self.socks:
            s.close()


def _items(prefix: str, n: int) -> list[dict[str, str]]:
    now = datetime.now(UTC).isoformat()
    return [{"item_id": f"{prefix}{i}", "kind": "track", "creator_id": "artist", "created_at": now,
             "text": f"a quiet piano piece number {i} from set {prefix}", "produced_at": now} for i in range(n)]


def _publish(s, topic: str, items: list[dict[str, str]]) -> None:
    p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
    for it in items:
        p.send(topic, key=it["item_id"].encode(), value=json.dumps(it).encode())
    p.flush()
    p.close()


def _uncommitted(s, topic: str) -> int:
    """Records of ``topic`` past the worker group's committed offsets (a partition never committed counts whole)."""
    tps = [TopicPartition(topic, p) for p in range(s.kafka.partitions)]
    with LagReader(s.kafka) as reader:
        committed = reader.committed(s.stream.app_id)
        ends = reader.end_offsets(tps)
    return sum(ends[tp] - (committed.get(tp) or 0) for tp in tps)


def _members(s) -> list[object]:
    admin = clients.kafka_admin(s.kafka, request_timeout_ms=10_000)
    try:
        desc = admin.describe_groups([s.stream.app_id])
    finally:
        admin.close()
    g = desc.get(s.stream.app_id) if isinstance(desc, dict) else None
    return list((g or {}).get("members") or [])


def _drop_namespace(s) -> None:
    """What ``running_worker`` drops after its worker, for when the test ends before it starts one."""
    from pymilvus import MilvusClient

    RedisState(s.redis).delete_prefix()
    for name in MilvusClient(s.milvus.uri).list_collections():
        if name == s.milvus.items_collection or name.startswith(s.milvus.items_collection + "__"):
            ItemIndex(s.milvus, dim=384, collection=name).drop()


def test_sigterm_with_a_batch_in_flight_exits_promptly_and_loses_nothing(stack_settings, unique_name, tmp_path):
    skip_on_a_redis_cluster(stack_settings)
    s = stack_settings.namespaced(unique_name)
    topic = Topics.for_prefix(s.kafka.topic_prefix).content_new
    ensure_topics(s.kafka, Topics.for_prefix(s.kafka.topic_prefix))
    proxy = FreezableProxy(s.redis.host, s.redis.port)
    first = Worker(s, None, tmp_path / "worker.log",  # type: ignore[arg-type]
                   {"THAW_STREAM__SPACE": "text", "THAW_REDIS__HOST": "127.0.0.1",
                    "THAW_REDIS__PORT": str(proxy.port)})
    restarted = None
    try:
        first.start()
        first.wait_ready()
        ix = ItemIndex(s.milvus, dim=384)
        store = RedisState(s.redis)

        # a first set goes through and is committed
        done = _items("a", 6)
        _publish(s, topic, done)
        wait_for(lambda: len(ix.get_rows([i["item_id"] for i in done])) == len(done), 60, "set a in Milvus", first)
        wait_for(lambda: _uncommitted(s, topic) == 0, 30, "set a committed", first)

        # Redis hangs; the next batch gets as far as Milvus and blocks in its Redis step
        proxy.frozen.set()
        stuck = _items("b", 6)
        _publish(s, topic, stuck)
        wait_for(lambda: ix.get_rows([i["item_id"] for i in stuck]) and proxy.held.is_set(), 60,
                 "a batch in flight (in Milvus, blocked on Redis)", first)

        t0 = time.monotonic()
        first.proc.send_signal(signal.SIGTERM)
        try:
            rc = first.proc.wait(timeout=30)
        except Exception:
            pytest.fail(f"worker still running 30 s after SIGTERM:\n{first.log_tail()}")
        stop_s = time.monotonic() - t0
        print(f"worker stopped {stop_s:.2f}s after SIGTERM (rc {rc})")
        assert rc == 0, first.log_tail()
        assert stop_s < STOP_BUDGET_S, first.log_tail()
        assert "abandoned" in first.log.read_text(errors="replace"), first.log_tail()

        # it left the group; nothing of the abandoned batch was committed or fully applied
        assert not group_is_active(s, s.stream.app_id)
        assert _members(s) == []
        assert _uncommitted(s, topic) == len(stuck)
        proxy.close()
        assert store.item_meta([i["item_id"] for i in stuck]) == {}

        # a restarted worker (straight to Redis) reads the abandoned records again and applies them
        restarted = running_worker(s, tmp_path / "restarted.log")
        w = next(restarted)
        every = [i["item_id"] for i in done + stuck]
        wait_for(lambda: len(ix.get_rows(every)) == len(every), 60, "every item in Milvus", w)
        wait_for(lambda: len(store.item_meta(every)) == len(every), 60, "every item's metadata in Redis", w)
        wait_for(lambda: _uncommitted(s, topic) == 0, 30, "every record committed", w)
    finally:
        proxy.close()
        if first.proc is not None and first.alive():
            first.kill9()
        if restarted is not None:
            next(restarted, None)  # stops the worker and drops the namespace
        else:
            _drop_namespace(s)
