"""Consumer-group lag from the Kafka admin API (committed offsets vs. log-end offsets).

Matches what ``kafka-consumer-groups.sh --describe`` (``ConsumerGroupCommand``) reports for the committed
partitions of a group: CURRENT-OFFSET is the committed offset, LOG-END-OFFSET the high watermark
(read_uncommitted) and LAG their difference.

Also the group-coordination readiness of a broker: a freshly formatted broker has no ``__consumer_offsets`` topic
until the first FindCoordinator creates it, and answers COORDINATOR_NOT_AVAILABLE, then NOT_COORDINATOR /
COORDINATOR_LOAD_IN_PROGRESS while its partitions load (~0.4 s on the local stack).
:func:`wait_for_group_coordinator` is the one bounded wait every command that joins a group or reads group offsets
goes through; :func:`group_coordination` is the single check behind the local stack's Kafka probe.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, Retrying, retry_if_exception_type, stop_after_delay, wait_fixed

from infra import clients
from infra.settings import KafkaSettings, Settings

OFFSETS_TOPIC = "__consumer_offsets"
COORDINATOR_WAIT_S = 60.0  # default bound of wait_for_group_coordinator


class CoordinatorNotReadyError(RuntimeError):
    """Kafka answers but cannot coordinate consumer groups yet (``__consumer_offsets`` missing or still loading)."""


def _retriable_coordinator_errors() -> tuple[type[Exception], ...]:
    from kafka.errors import (  # type: ignore[import-untyped]
        CoordinatorLoadInProgressError,
        CoordinatorNotAvailableError,
        NotCoordinatorError,
    )

    return (CoordinatorNotAvailableError, CoordinatorLoadInProgressError, NotCoordinatorError)


def _fetch_group_offsets(admin: Any, group_ids: list[str]) -> dict[str, dict[Any, Any]]:
    """FindCoordinator + OffsetFetch for ``group_ids``: {group: {TopicPartition: OffsetAndMetadata}}."""
    if hasattr(admin, "list_group_offsets"):  # kafka-python 3.x: one batched FindCoordinator / OffsetFetch
        got = admin.list_group_offsets({g: None for g in group_ids})
        return {g: dict(got.get(g, {})) for g in group_ids}
    return {g: dict(admin.list_consumer_group_offsets(g)) for g in group_ids}  # kafka-python 2.x


def _forget_coordinators(admin: Any, group_ids: list[str]) -> None:
    """Drop kafka-python's cached coordinators of ``group_ids`` (3.x caches them per cluster), if it has any."""
    cluster = getattr(getattr(admin, "_manager", None), "cluster", None)
    cache = getattr(cluster, "_coordinators", None)
    if isinstance(cache, dict):
        wanted = set(group_ids)
        for key in [k for k in cache if isinstance(k, tuple) and k[-1] in wanted]:
            cache.pop(key, None)


def wait_for_group_coordinator(
    settings: Settings | KafkaSettings,
    group_id: str,
    timeout_s: float = COORDINATOR_WAIT_S,
    *,
    admin: Any = None,
    every_s: float = 0.25,
) -> dict[Any, Any]:
    """Block until Kafka can coordinate consumer group ``group_id``; its committed offsets (raw, per partition).

    Each try is a real FindCoordinator + OffsetFetch for the group (the first one also makes a fresh broker create
    ``__consumer_offsets``). COORDINATOR_NOT_AVAILABLE, NOT_COORDINATOR and COORDINATOR_LOAD_IN_PROGRESS are retried
    every ``every_s`` for ``timeout_s`` (the cached coordinator is dropped so the next try asks again), then
    :class:`CoordinatorNotReadyError`; any other error is raised at once. ``admin``: a kafka-python admin client to
    reuse (default: one made and closed here).
    """
    kafka = settings.kafka if isinstance(settings, Settings) else settings
    own = admin is None
    if own:
        admin = clients.kafka_admin(kafka, request_timeout_ms=10_000)
    started = time.monotonic()

    def give_up(state: RetryCallState) -> Any:
        assert state.outcome is not None
        last = state.outcome.exception()
        raise CoordinatorNotReadyError(
            f"Kafka at {kafka.bootstrap_servers} cannot coordinate consumer group {group_id!r} yet "
            f"({OFFSETS_TOPIC} not ready: {type(last).__name__}); waited {time.monotonic() - started:.1f} s "
            f"({state.attempt_number} tries). Check `thaw stack status` and the broker's log"
        ) from last

    retrying = Retrying(
        retry=retry_if_exception_type(_retriable_coordinator_errors()),
        stop=stop_after_delay(timeout_s),
        wait=wait_fixed(every_s),
        after=lambda _state: _forget_coordinators(admin, [group_id]),  # after each retriable failure
        retry_error_callback=give_up,
    )
    try:
        offsets: dict[Any, Any] = retrying(lambda: _fetch_group_offsets(admin, [group_id])[group_id])
        return offsets
    finally:
        if own:
            with contextlib.suppress(Exception):
                admin.close()


def _java_string_hash(s: str) -> int:
    """``java.lang.String#hashCode`` (UTF-16 code units, 32-bit wrap-around)."""
    h = 0
    data = s.encode("utf-16-be")
    for i in range(0, len(data), 2):
        h = (31 * h + int.from_bytes(data[i : i + 2], "big")) & 0xFFFFFFFF
    return h - (1 << 32) if h >= 1 << 31 else h


def offsets_partition_for(group_id: str, partitions: int) -> int:
    """The ``__consumer_offsets`` partition whose leader coordinates ``group_id`` (Kafka's
    ``Utils.abs(groupId.hashCode()) % numPartitions``)."""
    h = _java_string_hash(group_id)
    return (0 if h == -(1 << 31) else abs(h)) % partitions


def probe_groups(partitions: int, prefix: str = "thaw-probe-") -> list[str]:
    """Throwaway group ids, one coordinated by each of the ``partitions`` partitions of ``__consumer_offsets``."""
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions and i < 1000 * partitions:
        gid = f"{prefix}{i}"
        found.setdefault(offsets_partition_for(gid, partitions), gid)
        i += 1
    return [found[p] for p in sorted(found)]


def _offsets_topic_leaders(admin: Any) -> tuple[int, int] | None:
    """(partitions, partitions with a leader) of ``__consumer_offsets``; None when the topic does not exist."""
    topics = admin.describe_topics([OFFSETS_TOPIC])
    for t in topics:
        if t.get("name", t.get("topic")) != OFFSETS_TOPIC or t.get("error_code", 0) != 0:
            continue
        parts = t.get("partitions") or []
        leaders = [p.get("leader_id", p.get("leader")) for p in parts if not p.get("error_code")]
        led = [leader for leader in leaders if leader is not None and leader >= 0]
        return (len(parts), len(led)) if parts else None
    return None


def group_coordination(admin: Any) -> tuple[bool, str]:
    """One check (no waiting): can the cluster coordinate a consumer group in ANY ``__consumer_offsets`` partition?

    True when the topic exists, every partition has a leader and a FindCoordinator + OffsetFetch for a throwaway
    group of each partition succeeds (so a new group of any name can join and commit). On a broker without the
    topic yet, the FindCoordinator made here creates it. Retriable coordinator errors give (False, why); any
    other error propagates.
    """
    retriable = _retriable_coordinator_errors()
    leaders = _offsets_topic_leaders(admin)
    if leaders is None:
        with contextlib.suppress(*retriable):  # FindCoordinator makes the broker create __consumer_offsets
            _fetch_group_offsets(admin, probe_groups(1))
        return False, f"{OFFSETS_TOPIC} does not exist yet (now being created)"
    n, led = leaders
    if led < n:
        return False, f"{OFFSETS_TOPIC}: {led} of {n} partitions have a leader"
    groups = probe_groups(n)
    try:
        _fetch_group_offsets(admin, groups)
    except retriable as exc:
        _forget_coordinators(admin, groups)
        return False, f"{OFFSETS_TOPIC} not ready: {type(exc).__name__}"
    return True, f"group coordinator ready on all {n} {OFFSETS_TOPIC} partitions"


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
        self._kafka = kafka
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

        Read through :func:`wait_for_group_coordinator`: on a broker that has never hosted a group (or is still
        loading ``__consumer_offsets``) the retriable coordinator errors are retried for ``coordinator_wait_s``,
        then :class:`CoordinatorNotReadyError`.
        """
        offsets = wait_for_group_coordinator(self._kafka, group_id, coordinator_wait_s, admin=self._admin)
        return {
            tp: (om.offset if om.offset is not None and om.offset >= 0 else None)
            for tp, om in offsets.items()
        }

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
