"""The lag reader (through wait_for_group_coordinator) retries the retriable coordinator errors a young broker
answers, and gives up on others; the coordination check behind the stack's Kafka probe."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import (  # type: ignore[import-untyped]
    CoordinatorNotAvailableError,
    GroupAuthorizationFailedError,
    NotCoordinatorError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition  # type: ignore[import-untyped]

from infra.lag import (
    CoordinatorNotReadyError,
    LagReader,
    group_coordination,
    offsets_partition_for,
    probe_groups,
    wait_for_group_coordinator,
)
from infra.settings import KafkaSettings


class _Cluster:
    def __init__(self) -> None:
        self._coordinators: dict[tuple[int, str], int] = {}


class _Manager:
    def __init__(self) -> None:
        self.cluster = _Cluster()


class _Admin:
    """Answers ``errors`` one after another, then the offsets; caches a coordinator like kafka-python 3.x."""

    def __init__(self, errors: list[Exception]) -> None:
        self.errors = list(errors)
        self.calls = 0
        self._manager = _Manager()

    def list_group_offsets(self, specs: dict[str, Any]) -> dict[str, dict[Any, Any]]:
        self.calls += 1
        (group,) = specs
        self._manager.cluster._coordinators[(0, group)] = 1
        if self.errors:
            raise self.errors.pop(0)
        tp = TopicPartition("content.new", 0)
        return {group: {tp: OffsetAndMetadata(7, "", -1)}}


def _reader(admin: _Admin) -> LagReader:
    reader = object.__new__(LagReader)
    reader._admin = admin
    reader._kafka = KafkaSettings()
    return reader


def test_not_coordinator_and_coordinator_not_available_are_retried() -> None:
    admin = _Admin([NotCoordinatorError(), CoordinatorNotAvailableError()])
    offsets = _reader(admin).committed("g1", coordinator_wait_s=10)
    assert admin.calls == 3
    assert offsets == {TopicPartition("content.new", 0): 7}


def test_a_retry_drops_the_cached_coordinator() -> None:
    admin = _Admin([NotCoordinatorError()] * 50)
    with pytest.raises(CoordinatorNotReadyError) as err:
        _reader(admin).committed("g2", coordinator_wait_s=0.0)
    assert (0, "g2") not in admin._manager.cluster._coordinators
    assert isinstance(err.value.__cause__, NotCoordinatorError)
    msg = str(err.value)
    assert "127.0.0.1:19092" in msg and "'g2'" in msg and "__consumer_offsets not ready" in msg and "waited" in msg


def test_non_retriable_errors_are_raised_at_once() -> None:
    admin = _Admin([GroupAuthorizationFailedError()])
    with pytest.raises(GroupAuthorizationFailedError):
        _reader(admin).committed("g3", coordinator_wait_s=10)
    assert admin.calls == 1


def test_wait_for_group_coordinator_reuses_an_admin_and_bounds_the_wait() -> None:
    admin = _Admin([CoordinatorNotAvailableError()] * 1000)
    with pytest.raises(CoordinatorNotReadyError, match="cannot coordinate consumer group 'w1'"):
        wait_for_group_coordinator(KafkaSettings(), "w1", timeout_s=0.3, admin=admin, every_s=0.05)
    assert 2 <= admin.calls <= 10
    ok = _Admin([CoordinatorNotAvailableError()])
    assert wait_for_group_coordinator(KafkaSettings(), "w2", timeout_s=5, admin=ok, every_s=0.01) == {
        TopicPartition("content.new", 0): OffsetAndMetadata(7, "", -1)
    }


def test_offsets_partition_matches_kafka() -> None:
    # Utils.abs(groupId.hashCode()) % n; hashCode values from the JVM (jshell)
    assert offsets_partition_for("thaw-engine", 50) == 740377541 % 50
    assert offsets_partition_for("thaw-demo_20260509abcd", 8) == 1601927819 % 8
    assert offsets_partition_for("\u00e9\u20acx", 7) == 483317 % 7
    assert offsets_partition_for("polygenelubricants", 8) == 0  # hashCode is Integer.MIN_VALUE: Utils.abs gives 0
    assert offsets_partition_for("", 8) == 0
    groups = probe_groups(8)
    assert sorted(offsets_partition_for(g, 8) for g in groups) == list(range(8))
    assert len(probe_groups(50)) == 50


class _CoordAdmin(_Admin):
    """describe_topics answers the given __consumer_offsets partitions (None: the topic does not exist)."""

    def __init__(self, leaders: list[int] | None, errors: list[Exception]) -> None:
        super().__init__(errors)
        self.leaders = leaders
        self.groups: list[str] = []

    def describe_topics(self, topics: list[str]) -> list[dict[str, Any]]:
        if self.leaders is None:
            return [{"name": topics[0], "error_code": 3, "partitions": []}]
        parts = [{"partition_index": i, "leader_id": lead, "error_code": 0} for i, lead in enumerate(self.leaders)]
        return [{"name": topics[0], "error_code": 0, "partitions": parts}]

    def list_group_offsets(self, specs: dict[str, Any]) -> dict[str, dict[Any, Any]]:
        self.groups = list(specs)
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return {g: {} for g in specs}


def test_group_coordination_checks_every_offsets_partition() -> None:
    missing = _CoordAdmin(None, [CoordinatorNotAvailableError()])
    ready, why = group_coordination(missing)
    assert not ready and "does not exist" in why and missing.calls == 1  # the FindCoordinator that creates it
    leaderless = _CoordAdmin([0, -1, 0, 0], [])
    assert group_coordination(leaderless) == (False, "__consumer_offsets: 3 of 4 partitions have a leader")
    loading = _CoordAdmin([0] * 4, [NotCoordinatorError()])
    ready, why = group_coordination(loading)
    assert not ready and "NotCoordinatorError" in why
    ok = _CoordAdmin([0] * 4, [])
    assert group_coordination(ok)[0]
    assert sorted(offsets_partition_for(g, 4) for g in ok.groups) == [0, 1, 2, 3]
    with pytest.raises(GroupAuthorizationFailedError):
        group_coordination(_CoordAdmin([0] * 4, [GroupAuthorizationFailedError()]))
