"""consumer_lag agrees exactly with Kafka's own ConsumerGroupCommand (kafka-consumer-groups --describe)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from infra import clients
from infra.lag import PartitionLag, consumer_lag
from infra.metrics import EngineMetrics
from infra.settings import Settings
from infra.stack import kafka_classpath

pytestmark = pytest.mark.integration

PER_PARTITION = {0: 10, 1: 7, 2: 5}  # messages produced per partition
COMMIT_AT = {0: 4, 1: 7, 2: 1}  # committed offset per partition after consuming


def kafka_tool_describe(settings: Settings, group: str) -> dict[tuple[str, int], tuple[int, int, int]]:
    """{(topic, partition): (CURRENT-OFFSET, LOG-END-OFFSET, LAG)} from ConsumerGroupCommand --describe."""
    java = shutil.which("java")
    assert java, "java is needed for Kafka's ConsumerGroupCommand"
    cmd = [
        java,
        "-Xmx256m",
        "-cp",
        kafka_classpath(settings),
        "org.apache.kafka.tools.consumer.group.ConsumerGroupCommand",
        "--bootstrap-server",
        settings.kafka.bootstrap_servers,
        "--describe",
        "--group",
        group,
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = [line.split() for line in proc.stdout.splitlines() if line.strip()]
    header_idx = next(i for i, cols in enumerate(lines) if cols[:2] == ["GROUP", "TOPIC"])
    header = lines[header_idx]
    rows = {}
    for cols in lines[header_idx + 1 :]:
        row = dict(zip(header, cols, strict=False))
        if row.get("GROUP") != group:
            continue
        rows[(row["TOPIC"], int(row["PARTITION"]))] = (
            int(row["CURRENT-OFFSET"]),
            int(row["LOG-END-OFFSET"]),
            int(row["LAG"]),
        )
    return rows


@pytest.fixture
def committed_group(stack_settings: Settings, unique_name: str):  # type: ignore[no-untyped-def]
    from kafka import TopicPartition
    from kafka.admin import NewTopic
    from kafka.structs import OffsetAndMetadata

    kafka = stack_settings.kafka
    topic, group = f"lag-{unique_name}", f"lag-group-{unique_name}"
    admin = clients.kafka_admin(kafka)
    admin.create_topics([NewTopic(topic, num_partitions=3, replication_factor=1)])
    try:
        producer = clients.kafka_producer(kafka, acks="all")
        futures = [
            producer.send(topic, value=f"{p}-{i}".encode(), partition=p)
            for p, n in PER_PARTITION.items()
            for i in range(n)
        ]
        producer.flush()
        for fut in futures:
            fut.get(timeout=30)
        producer.close()

        consumer = clients.kafka_consumer(
            kafka,
            topic,
            group_id=group,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            max_poll_records=100,
        )
        try:
            seen: dict[int, int] = {p: 0 for p in PER_PARTITION}
            for _ in range(60):
                for tp, records in consumer.poll(timeout_ms=500).items():
                    seen[tp.partition] += len(records)
                if all(seen[p] >= COMMIT_AT[p] for p in PER_PARTITION):
                    break
            assert all(seen[p] >= COMMIT_AT[p] for p in PER_PARTITION), seen
            consumer.commit(
                {TopicPartition(topic, p): OffsetAndMetadata(off, "", -1) for p, off in COMMIT_AT.items()}
            )
        finally:
            consumer.close(autocommit=False)
        yield topic, group
    finally:
        try:
            admin.delete_groups([group])
        except Exception:  # noqa: BLE001 - best-effort cleanup
            pass
        admin.delete_topics([topic])
        admin.close()


def test_consumer_lag_matches_kafka_tool(stack_settings: Settings, committed_group: tuple[str, str]) -> None:
    topic, group = committed_group
    ours = consumer_lag(stack_settings, [group])
    expected = [
        PartitionLag(group, topic, p, COMMIT_AT[p], PER_PARTITION[p], PER_PARTITION[p] - COMMIT_AT[p])
        for p in sorted(PER_PARTITION)
    ]
    assert ours == expected

    tool = kafka_tool_describe(stack_settings, group)
    assert set(tool) == {(topic, p) for p in PER_PARTITION}
    for row in ours:
        assert tool[(row.topic, row.partition)] == (row.committed, row.end_offset, row.lag), row


def test_consumer_lag_lists_all_groups(stack_settings: Settings, committed_group: tuple[str, str]) -> None:
    topic, group = committed_group
    rows = [r for r in consumer_lag(stack_settings) if r.group == group]
    assert [(r.partition, r.lag) for r in rows] == [
        (p, PER_PARTITION[p] - COMMIT_AT[p]) for p in sorted(PER_PARTITION)
    ]


def test_engine_metrics_exports_kafka_lag(stack_settings: Settings, committed_group: tuple[str, str]) -> None:
    topic, group = committed_group
    metrics = EngineMetrics.for_settings(stack_settings, [group])
    try:
        text = metrics.render().decode("utf-8")
    finally:
        metrics.close()
    assert "thaw_consumer_lag_up 1.0" in text
    for p in PER_PARTITION:
        lag = PER_PARTITION[p] - COMMIT_AT[p]
        assert f'thaw_consumer_lag{{group="{group}",partition="{p}",topic="{topic}"}} {float(lag)}' in text
