"""The lag reader retries the retriable coordinator errors a young broker answers, and gives up on others."""

from __future__ import annotations

from typing import Any

import pytest
from kafka.errors import (  # type: ignore[import-untyped]
    CoordinatorNotAvailableError,
    GroupAuthorizationFailedError,
    NotCoordinatorError,
)
from kafka.structs import OffsetAndMetadata, TopicPartition  # type: ignore[import-untyped]

from infra.lag import LagReader


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
    return reader


def test_not_coordinator_and_coordinator_not_available_are_retried() -> None:
    admin = _Admin([NotCoordinatorError(), CoordinatorNotAvailableError()])
    offsets = _reader(admin).committed("g1", coordinator_wait_s=10)
    assert admin.calls == 3
    assert offsets == {TopicPartition("content.new", 0): 7}


def test_a_retry_drops_the_cached_coordinator() -> None:
    admin = _Admin([NotCoordinatorError()] * 50)
    with pytest.raises(NotCoordinatorError):
        _reader(admin).committed("g2", coordinator_wait_s=0.0)
    assert (0, "g2") not in admin._manager.cluster._coordinators


def test_non_retriable_errors_are_raised_at_once() -> None:
    admin = _Admin([GroupAuthorizationFailedError()])
    with pytest.raises(GroupAuthorizationFailedError):
        _reader(admin).committed("g3", coordinator_wait_s=10)
    assert admin.calls == 1
