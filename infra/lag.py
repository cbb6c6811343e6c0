"""Consumer-group lag from the Kafka admin API (committed offsets vs. log-end offsets).

Matches what ``kafka-consumer-groups.sh --describe`` (``ConsumerGroupCommand``) reports for the committed
partitions of a group: CURRENT-OFFSET is the committed offset, LOG-END-OFFSET the high watermark
(read_uncommitted) and LAG their difference.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any

from tenacity import Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from infra import clients
from infra.settings import KafkaSettings, Settings


@dataclass(frozen=True, order=True)
class PartitionLag:
    group: str
    topic: str
    partition: int
    committed: int | None  # None: the group has no committed offset for this partition
    end_offset: int
    lag: int | None  # end_offset - committed, None when nothing is committed


class LagReader:
    """Long-lived admin + consumer clients for repeated lag reads (e.g. by a Prometheus collector).

    Works with kafka-python 2.x (``list_consumer_groups`` / ``list_consumer_group_offsets``) and 3.x
    (``list_groups`` / ``list_group_offsets``).
    """

    def __init__(self, kafka: KafkaSettings, timeout_ms: int = 10_000) -> None:
        self._admin = clients.kafka_admin(kafka, request_timeout_ms=timeout_ms)
        try:
            # KafkaConsumer requires request_timeout_ms > session/fetch timeouts
            self._consumer = clients.kafka_consumer(
                kafka, group_id=None, enable_auto_commit=False, request_timeout_ms=max(timeout_ms, 30_500)
            )
        except Exception:
            self._admin.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._consumer.close()
        with contextlib.suppress(Exception):
            self._admin.close()

    def __enter__(self) -> LagReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def group_ids(self) -> list[str]:
        """All consumer groups (classic and KIP-848 ``consumer`` groups) known to the cluster."""
        admin = self._admin
        if hasattr(admin, "list_groups"):
            groups = admin.list_groups()
            ids = [g["group_id"] for g in groups if g.get("protocol_type", "consumer") in ("consumer", "")]
        else:  # kafka-python 2.x: [(group_id, protocol_type), ...]
            ids = [g[0] for g in admin.list_consumer_groups() if g[1] in ("consumer", "")]
        return sorted(set(ids))

    def committed(self, group_id: str, coordinator_wait_s: float = 15.0) -> dict[Any, int | None]:
        """{TopicPartition: committed offset or None} for one group.

        On a broker that has never hosted a group, the first FindCoordinator creates ``__consumer_offsets`` and
        answers COORDINATOR_NOT_AVAILABLE meanwhile; while that topic's partitions are still being loaded the
        OffsetFetch itself can answer NOT_COORDINATOR or COORDINATOR_LOAD_IN_PROGRESS. Those retriable errors are
        retried for ``coordinator_wait_s`` (the cached coordinator is dropped so the next try asks again).
        """
        from kafka.errors import (
            CoordinatorLoadInProgressError,
            CoordinatorNotAvailableError,
            NotCoordinatorError,
        )

        admin = self._admin

        def fetch() -> dict[Any, Any]:
            if hasattr(admin, "list_group_offsets"):
                return dict(admin.list_group_offsets({group_id: None}).get(group_id, {}))
            return dict(admin.list_consumer_group_offsets(group_id))

        retrying = Retrying(
            retry=retry_if_exception_type(
                (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError)
            ),
            stop=stop_after_delay(coordinator_wait_s),
            wait=wait_fixed(0.5),
            after=lambda _state: self._forget_coordinator(group_id),  # after each retriable failure
            reraise=True,
        )
        offsets = retrying(fetch)
        return {
            tp: (om.offset if om.offset is not None and om.offset >= 0 else None)
            for tp, om in offsets.items()
        }

    def _forget_coordinator(self, group_id: str) -> None:
        """Drop kafka-python's cached coordinator of ``group_id`` (3.x caches it per cluster), if it has one."""
        cluster = getattr(getattr(self._admin, "_manager", None), "cluster", None)
        cache = getattr(cluster, "_coordinators", None)
        if isinstance(cache, dict):
            for key in [k for k in cache if isinstance(k, tuple) and k[-1] == group_id]:
                cache.pop(key, None)

    def end_offsets(self, partitions: list[Any]) -> dict[Any, int]:
        if not partitions:
            return {}
        # a long-lived consumer only knows the topics of its first metadata fetch: ask for each topic's partitions
        # first, or kafka-python raises KeyError for a topic that appeared since
        for topic in {tp.topic for tp in partitions}:
            self._consumer.partitions_for_topic(topic)
        return dict(self._consumer.end_offsets(partitions))

    def read(self, group_ids: list[str] | None = None) -> list[PartitionLag]:
        groups = self.group_ids() if group_ids is None else list(group_ids)
        committed = {group: self.committed(group) for group in groups}
        partitions = sorted({tp for offsets in committed.values() for tp in offsets})
        ends = self.end_offsets(partitions)
        rows = []
        for group, offsets in committed.items():
            for tp, offset in offsets.items():
                end = ends.get(tp)
                if end is None:  # topic deleted since the commit
                    continue
                rows.append(
                    PartitionLag(
                        group, tp.topic, tp.partition, offset, end, None if offset is None else end - offset
                    )
                )
        return sorted(rows)


def group_is_active(settings: Settings, group_id: str) -> bool:
    """True when the consumer group is Stable and at least one member holds partitions (the worker is consuming)."""
    admin = clients.kafka_admin(settings.kafka, request_timeout_ms=10_000)
    try:
        desc = admin.describe_groups([group_id])
    finally:
        admin.close()
    g = desc.get(group_id) if isinstance(desc, dict) else None
    if not g:
        return False
    return g.get("group_state") == "Stable" and any(
        (m.get("member_assignment") or {}).get("assigned_partitions") for m in g.get("members", [])
    )


def consumer_lag(settings: Settings, group_ids: list[str] | None = None) -> list[PartitionLag]:
    """Lag of every committed partition of ``group_ids`` (all consumer groups when None), sorted."""
    with LagReader(settings.kafka) as reader:
        return reader.read(group_ids)
