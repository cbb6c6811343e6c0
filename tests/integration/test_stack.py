"""The local stack: idempotent ``up``, healthy ``status``, and each service answers real requests."""

from __future__ import annotations

import logging
import random
import re
import socket
import time
import uuid
from pathlib import Path

import pytest

from infra import clients
from infra.settings import Settings
from infra.stack import KAFKA, SERVICES, LocalStack

pytestmark = pytest.mark.integration


def test_up_is_idempotent_and_status_healthy(stack_settings: Settings) -> None:
    stack = LocalStack(stack_settings)
    before = {s.name: s for s in stack.status()}
    started = time.monotonic()
    again = {s.name: s for s in stack.up()}
    assert time.monotonic() - started < 15, "a second up must reuse the running services"
    assert set(again) == set(SERVICES)
    for name in SERVICES:
        assert before[name].healthy, before[name]
        assert again[name].healthy, again[name]
        assert again[name].pid == before[name].pid  # nothing restarted
        assert again[name].managed == before[name].managed
        assert again[name].address
    status = {s.name: s for s in stack.status()}
    assert all(s.healthy for s in status.values()), status
    assert status["kafka"].address == stack_settings.kafka.bootstrap_servers
    assert status["milvus"].address == stack_settings.milvus.uri


def test_kafka_produce_consume(stack_settings: Settings, unique_name: str) -> None:
    from kafka.admin import NewTopic

    kafka = stack_settings.kafka
    topic = f"stack-{unique_name}"
    admin = clients.kafka_admin(kafka)
    try:
        admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
        producer = clients.kafka_producer(kafka, acks="all")
        payload = f"hello {unique_name}".encode()
        producer.send(topic, key=b"k", value=payload).get(timeout=30)
        producer.flush()
        producer.close()
        consumer = clients.kafka_consumer(
            kafka,
            topic,
            group_id=f"g-{unique_name}",
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            consumer_timeout_ms=30_000,
        )
        try:
            first = next(iter(consumer))  # StopIteration after 30 s without a message
            assert (first.key, first.value) == (b"k", payload)
            consumer.commit()
        finally:
            consumer.close()
    finally:
        try:
            admin.delete_topics([topic])
        finally:
            admin.close()


def test_redis_set_get(stack_settings: Settings, unique_name: str) -> None:
    client = clients.redis_client(stack_settings.redis)
    key = f"{stack_settings.redis.key_prefix}stack-test:{unique_name}"
    try:
        assert client.set(key, b"v1", ex=60)
        assert client.get(key) == b"v1"
        with client.pipeline(transaction=True) as pipe:
            pipe.hset(key + ":h", mapping={"a": 1, "b": 2})
            pipe.hgetall(key + ":h")
            _, h = pipe.execute()
        assert h == {b"a": b"1", b"b": b"2"}
    finally:
        client.delete(key, key + ":h")
        client.close()


def test_milvus_create_insert_search_drop(stack_settings: Settings, unique_name: str) -> None:
    client = clients.milvus_client(stack_settings.milvus)
    name = f"stack_{unique_name}"
    dim = 8
    rng = random.Random(7)
    try:
        client.create_collection(name, dimension=dim, metric_type="COSINE", consistency_level="Strong")
        rows = [{"id": i, "vector": [rng.uniform(-1, 1) for _ in range(dim)]} for i in range(100)]
        assert client.insert(name, rows)["insert_count"] == 100
        hits = client.search(name, data=[rows[42]["vector"]], limit=3, output_fields=["id"])
        assert len(hits) == 1 and len(hits[0]) == 3
        assert hits[0][0]["id"] == 42  # its own vector: cosine similarity 1
        assert name in client.list_collections()
    finally:
        if client.has_collection(name):
            client.drop_collection(name)
        client.close()
    check = clients.milvus_client(stack_settings.milvus)
    try:
        assert name not in check.list_collections()
    finally:
        check.close()


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


# what kafka-python's consumer logs when it has to retry a coordinator lookup, join, fetch or commit
_COORDINATOR_RETRY = re.compile(
    r"Coordinator(NotAvailable|LoadInProgress)|NotCoordinator|Coordinator Not Available|coordinator dead|"
    r"loading the group|Offset fetch failed|OffsetCommit for group .* failed"
)


def test_fresh_kafka_coordinates_groups_right_after_up(
    stack_settings: Settings, tmp_path: Path, unique_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    """A freshly formatted broker: once ``up`` returns, a new group joins and commits on the first try.

    A broker formatted a moment ago has no ``__consumer_offsets`` until the first FindCoordinator, which answers
    COORDINATOR_NOT_AVAILABLE (the first ``make demo`` on a fresh machine failed on it). Own home and ports, a fresh
    KRaft format; Redis and Milvus are the session's (reused, not started). Nothing here retries.
    """
    from kafka.admin import NewTopic  # type: ignore[import-untyped]
    from kafka.structs import TopicPartition  # type: ignore[import-untyped]

    kafka_port, controller_port = _free_ports(2)
    home = tmp_path / "fresh-stack"
    home.mkdir()
    jars = stack_settings.stack.home / "kafka-libs"
    if (jars / stack_settings.kafka.version / ".complete").exists():
        (home / "kafka-libs").symlink_to(jars)  # the jars fetched for the session stack: no Maven run here
    fresh = stack_settings.model_copy(
        update={
            # one fresh broker (what this test is about), whatever the session's stack runs
            "kafka": stack_settings.kafka.model_copy(
                update={"bootstrap_servers": f"127.0.0.1:{kafka_port}", "controller_port": controller_port,
                        "brokers": 1}
            ),
            "stack": stack_settings.stack.model_copy(update={"home": home}),
        }
    )
    assert not (home / "kafka" / f"kraft-{controller_port}").exists()
    stack = LocalStack(fresh)
    try:
        statuses = {st.name: st for st in stack.up()}
        kafka = fresh.kafka
        assert statuses[KAFKA].managed and statuses[KAFKA].healthy, statuses[KAFKA]
        assert (home / "kafka" / f"kraft-{controller_port}" / "meta.properties").exists()  # formatted by this up
        print(f"fresh Kafka coordinator-ready {statuses[KAFKA].startup_s:.2f} s after start: {statuses[KAFKA].detail}")

        # 1. right away, new groups of any name: FindCoordinator + OffsetFetch, one request each, no retry
        admin = clients.kafka_admin(kafka, request_timeout_ms=10_000)
        try:
            groups = [f"fresh-{uuid.uuid4().hex[:10]}" for _ in range(16)]
            offsets = admin.list_group_offsets({g: None for g in groups})
            assert set(offsets) == set(groups) and not any(offsets.values())

            # 2. a consumer in a new group joins, reads and commits; its client must not have retried anything
            topic = f"fresh-{unique_name}"
            admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)])
            producer = clients.kafka_producer(kafka, acks="all")
            producer.send(topic, key=b"k", value=b"v").get(timeout=30)
            producer.close()
            group = f"g-{unique_name}"
            caplog.set_level(logging.DEBUG, logger="kafka")
            consumer = clients.kafka_consumer(
                kafka, topic, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False,
                consumer_timeout_ms=30_000,
            )
            try:
                first = next(iter(consumer))  # joins the group (StopIteration after 30 s without a record)
                assert (first.key, first.value) == (b"k", b"v")
                consumer.commit()
                assert consumer.committed(TopicPartition(topic, 0)) == 1
            finally:
                consumer.close()
            retries = [r.getMessage() for r in caplog.records if _COORDINATOR_RETRY.search(r.getMessage())]
            assert not retries, retries
            discovered = [r for r in caplog.records if r.getMessage().startswith("Discovered coordinator")]
            assert len(discovered) == 1, [r.getMessage() for r in discovered]
            committed = admin.list_group_offsets({group: None})[group]
            assert committed[TopicPartition(topic, 0)].offset == 1
        finally:
            admin.close()
    finally:
        stopped = {st.name: st for st in stack.down()}
        assert not stopped[KAFKA].healthy, stopped[KAFKA]  # ours stopped; the session's Redis/Milvus left alone


def test_kraft_format_takes_a_cluster_id_that_starts_with_a_dash(stack_settings: Settings, tmp_path: Path) -> None:
    """A URL-safe base64 cluster id starts with "-" one time in 64; the format command must not read it as an
    option (a fresh stack failed to come up with "usage: kafka-storage format" on such an id)."""
    import subprocess

    from infra.stack.kafka import format_args, java, kafka_classpath, server_properties

    data = tmp_path / "kraft"
    props = tmp_path / "server.properties"
    single = stack_settings.model_copy(update={"kafka": stack_settings.kafka.model_copy(update={"brokers": 1})})
    props.write_text(server_properties(single, data), encoding="utf-8")  # a single node's (--standalone) format
    cid = "-" + "A" * 21
    out = subprocess.run([java(), "-cp", kafka_classpath(stack_settings), *format_args(cid, props)],
                         capture_output=True, text=True, timeout=120, check=False)
    assert out.returncode == 0, out.stdout[-1500:] + out.stderr[-1500:]
    assert f"cluster.id={cid}" in (data / "meta.properties").read_text()
