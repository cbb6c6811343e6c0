"""Offset fences: which records of a batch are already applied. Pure.

A user-events partition's fence is the highest offset whose effect is committed in Redis (together with the
effect, see ``indexing.redis_users``). A redelivered record at or below its partition's fence is skipped; the
batch's commit moves each touched fence to the highest offset it handled, on the condition that the fences still
hold what was read (compare-and-set: another worker on the same partitions makes the commit fail and re-read).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from indexing.redis_users import FenceKey


class Positioned(Protocol):
    """Anything with a Kafka position (a record)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...


R = TypeVar("R", bound=Positioned)


@dataclass(frozen=True)
class FenceSplit(Generic[R]):
    """A batch split at its partitions' fences."""

    fresh: list[R]  # above their partition's fence, in batch order
    skipped: int  # at or below it: already applied
    advance: dict[FenceKey, int]  # the new fence of every partition with a fresh record: its highest fresh offset
    expected: dict[FenceKey, int]  # the fences read for those partitions (what the commit's compare-and-set expects)


def fence_keys(group_id: str, records: Sequence[Positioned]) -> dict[tuple[str, int], FenceKey]:
    """The fence of each (topic, partition) in the batch, for consumer group ``group_id``."""
    return {(r.topic, r.partition): FenceKey(group_id, r.topic, r.partition) for r in records}


def split_by_fence(
    records: Sequence[R], keys: Mapping[tuple[str, int], FenceKey], applied: Mapping[FenceKey, int]
) -> FenceSplit[R]:
    """Split ``records`` at the fences ``applied`` (the highest applied offset per partition, -1 for none)."""
    fresh: list[R] = []
    skipped = 0
    advance: dict[FenceKey, int] = {}
    for rec in records:
        fk = keys[(rec.topic, rec.partition)]
        if rec.offset <= applied[fk]:
            skipped += 1
            continue
        advance[fk] = max(advance.get(fk, -1), rec.offset)
        fresh.append(rec)
    return FenceSplit(fresh, skipped, advance, {k: applied[k] for k in advance})
