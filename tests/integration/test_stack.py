"""The local stack: idempotent ``up``, healthy ``status``, and each service answers real requests."""

from __future__ import annotations

import random
import time

import pytest

from infra import clients
from infra.settings import Settings
from infra.stack import SERVICES, LocalStack

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
