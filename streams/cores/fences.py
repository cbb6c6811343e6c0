"""Offset fences: which records of a batch are already applied. Pure.

A user-events partition's fence is the highest offset whose effect is committed in Redis (together with the
effect, see ``indexing.redis_state``). A redelivered record at or below its partition's fence is skipped; the
batch's commit moves each touched fence to the highest offset it handled, on the condition that the fences still
hold what was read (compare-and-set: another worker on the same partitions makes the commit fail and re-read).

Resuming (:func:`plan_resume`): the fence, not Kafka's committed offset, says where a fenced partition resumes.
On partition assignment the worker seeks each fenced partition (user events and their retry topic) to its fence
+ 1, in both directions:

- ahead of the committed offset (the worker died between its Redis commit and its Kafka commit): the records in
  between are applied already; they are not read again, and the new position is committed.
- behind it (Redis lost its last writes: AOF ``everysec`` loses up to a second, a failover loses the replica's
  lag): the lost records are read and applied again; the fences make that exact (each is applied once in the end).
  Kafka's committed offset is left ahead until the replay passes it.
- no fence, nothing committed: a new group; Kafka's reset policy (earliest) applies.
- no fence but a committed offset: Redis holds nothing the group applied on that partition. Every handled
  record moves its partition's fence (poison records included), so this is a Redis that lost that partition's
  state, or every state when the group has no fence on any partition. **Decision: replay from the earliest
  retained offset**, logged as an error, not refuse: the states are gone, rebuilding them from the log is the only
  thing an operator could do instead, and the fences make the rebuild idempotent, so a worker that dies half way
  simply continues. What the log no longer holds (retention) cannot be replayed: the plan counts it
  (``unrecoverable``) and the worker says so loudly.
- a fence beyond the log's end (the topic was recreated, or the Redis belongs to another cluster): the fences do
  not describe this log; the worker stays at the committed offset and says so loudly (delete the stale fence
  keys, ``{prefix}fence:{group}:*``, before the records at or below them are skipped).

Redis going back in time under a running worker (a Redis killed and restarted with its append-only file, which
loses up to its last second; a failover to a lagging replica; a restore): no assignment happens, so nothing seeks,
and the worker's positions are ahead of the fences. The worker detects it and stops, and its restart resumes as
above (``replay``: the lost records are read again and applied once). Detection: each assigned fenced partition
has a **floor**, the fence the worker resumed it from (set at every assignment's plan) raised by each of its own
commits; fences only ever move forward, so a fence below its floor means Redis lost writes. Every batch checks the
fences it reads against the floors before it applies anything (a commit racing a restart fails its compare-and-set
and is re-read, so it is checked too), and a timer checks every assigned partition once a second (an idle
partition has no batch to notice), reading the floors before the fences so that a commit in between cannot look
like a regression. Once found, every fenced step refuses to run (``FencesRegressedError``, retried, never
dead-lettered), the worker stops promptly and exits 75 (EX_TEMPFAIL) for its supervisor to restart it.
**Decision: stop and restart rather than seek in place**: Faust holds records fetched past the fences in its
stream buffers and in the batches agents are holding, and any of them applied before the replay would move a fence
past records never applied; a new process holds none. A Redis restart that lost nothing (the fences at their
floors) is not a regression and changes nothing.

The retry topic (``user.events.retry``): a user event whose item is not indexed yet is parked there and its
partition's fence moves past it. If Redis loses that fence move, the replay reads the event again; by then its item
may be indexed, so it is applied directly, while its parked copy is still on the retry topic. So a park registers
the source offset in its partition's **parked set** (``{prefix}parked:{group}:{topic}:{partition}``), atomically
with the fence, and the copy carries ``claim``: a claiming copy is applied (or dead-lettered when its grace ran
out) only while its source offset is parked, and its commit removes it (a compare-and-set: a commit whose offset
left the set meanwhile is refused and re-read). A copy whose source is not parked but at or below the source
partition's fence was resolved otherwise (applied directly after a replay, or through another copy of the same
source: a replay that parks the event again writes a second copy) and is skipped; one whose source is above the
fence waits until the user-events batch that parked it has committed. Copies without ``claim`` (parked by an
older worker) are applied as they come.

Not covered: the content and profile agents' Redis writes (fresh sets, item attributes, priors) carry no fence and
are not replayed after Redis loses them (Milvus, which holds the item vectors, is written idempotently and is not
affected); a retry-topic copy dead-lettered as a poison record leaves its offset in the parked set (memory only).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from indexing.redis_state import FenceKey


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
    return {tp: FenceKey(group_id, *tp) for tp in dict.fromkeys((r.topic, r.partition) for r in records)}


def split_by_fence(
    records: Sequence[R], keys: Mapping[tuple[str, int], FenceKey], applied: Mapping[FenceKey, int]
) -> FenceSplit[R]:
    """Split ``records`` at the fences ``applied`` (the highest applied offset per partition, -1 for none)."""
    fresh: list[R] = []
    skipped = 0
    fence = {tp: applied[fk] for tp, fk in keys.items()}  # by (topic, partition): no FenceKey hashed per record
    top: dict[tuple[str, int], int] = {}
    for rec in records:
        tp = (rec.topic, rec.partition)
        off = rec.offset
        if off <= fence[tp]:
            skipped += 1
            continue
        if off > top.get(tp, -1):
            top[tp] = off
        fresh.append(rec)
    advance = {keys[tp]: off for tp, off in top.items()}
    return FenceSplit(fresh, skipped, advance, {k: applied[k] for k in advance})


#: why a fenced partition resumes where it does (see :func:`plan_resume`)
ResumeCase = Literal["at-fence", "skip-applied", "replay", "fresh", "fence-lost", "states-lost", "fence-ahead-of-log"]

TP = tuple[str, int]  # (topic, partition)


@dataclass(frozen=True)
class Resume:
    """Where one fenced partition resumes after an assignment, and why."""

    topic: str
    partition: int
    fence: int  # highest applied offset in Redis (-1: none)
    committed: int | None  # the group's committed offset in Kafka (the next to read; None: none)
    target: int | None  # the offset to seek to (None: stay where Faust put it: the committed offset)
    case: ResumeCase
    unrecoverable: int = 0  # records after the fence the log no longer holds (deleted by retention)

    @property
    def replays(self) -> int:
        """How many records below the committed offset are read again (0 unless seeking behind it)."""
        if self.target is None or self.committed is None:
            return 0
        return max(0, self.committed - self.target)

    def describe(self) -> tuple[int, str]:
        """The log level and line of this resume (both offsets named)."""
        where = f"{self.topic}[{self.partition}]"
        fence = f"fence {self.fence}" if self.fence >= 0 else "no fence"
        done = f"committed offset {self.committed}" if self.committed is not None else "no committed offset"
        at = f"offset {self.target}" if self.target is not None else "the committed offset"
        lost = (f"; {self.unrecoverable} record(s) after the fence are no longer in the log (retention) and are "
                "LOST to the user states" if self.unrecoverable else "")
        level = logging.ERROR if self.unrecoverable else logging.INFO
        if self.case == "skip-applied":
            return level, f"{where}: resuming at {at} ({fence}, {done}): the records up to the fence are applied{lost}"
        if self.case == "replay":
            return max(level, logging.WARNING), (
                f"{where}: resuming at {at} ({fence}, {done}): Redis lost the writes of {self.replays} record(s) "
                f"the group had committed; reading them again (the fences apply each once){lost}")
        if self.case == "fence-lost":
            return logging.ERROR, (
                f"{where}: {fence} but {done} while Redis holds fences of other partitions: Redis lost this "
                f"partition's state; replaying it from {at}{lost}")
        if self.case == "states-lost":
            return logging.ERROR, (
                f"{where}: {fence} but {done}, and Redis holds no fence of this group at all: Redis lost every user "
                f"state; rebuilding them by replaying from {at}{lost}")
        if self.case == "fence-ahead-of-log":
            return logging.ERROR, (
                f"{where}: {fence} is beyond the log's end: the fences do not describe this log (topic recreated? "
                f"another cluster's Redis?); staying at {at} ({done}); records at or below the fence will be skipped "
                "until the stale fence keys are deleted")
        return logging.DEBUG, f"{where}: resuming at {at} ({fence}, {done}): {self.case}{lost}"


def plan_resume(
    fences: Mapping[TP, int],
    committed: Mapping[TP, int | None],
    earliest: Mapping[TP, int],
    end: Mapping[TP, int] | None = None,
    *,
    group_has_fences: bool,
) -> list[Resume]:
    """Seek targets for the fenced partitions in ``fences`` (see the module docstring). Pure.

    Args:
        fences: (topic, partition) -> the partition's fence (-1: none), for each assigned fenced partition.
        committed: the group's committed offsets (absent, None or 0: nothing committed).
        earliest: the first offset each partition's log still holds (absent: 0).
        end: the log end offsets (the next offset to be written), when known.
        group_has_fences: whether Redis holds a fence of this group on any partition of the fenced topics (not
            only the assigned ones): tells a Redis that lost everything from one that lost one partition's fence.

    Returns:
        One :class:`Resume` per partition of ``fences``, sorted by (topic, partition).
    """
    out = []
    for tp in sorted(fences):
        fence = fences[tp]
        done = committed.get(tp) or None
        first = earliest.get(tp, 0)
        last = end.get(tp) if end is not None else None
        case: ResumeCase
        if fence < 0:
            if done is None:
                out.append(Resume(tp[0], tp[1], fence, done, None, "fresh"))
                continue
            case = "fence-lost" if group_has_fences else "states-lost"
            want = 0
        elif last is not None and fence + 1 > last:
            out.append(Resume(tp[0], tp[1], fence, done, None, "fence-ahead-of-log"))
            continue
        else:
            want = fence + 1
            position = done if done is not None else first
            case = "at-fence" if want == position else "skip-applied" if want > position else "replay"
        target = max(want, first)
        if case == "at-fence" or (done is None and target == first):
            target_or_none = None  # where Faust (or the reset policy) starts anyway
        else:
            target_or_none = target
        out.append(Resume(tp[0], tp[1], fence, done, target_or_none, case, unrecoverable=target - want))
    return out
