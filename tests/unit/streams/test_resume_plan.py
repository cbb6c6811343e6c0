"""Resuming at the offset fences, without services: the seek decision (``plan_resume``: fences + committed offsets
-> seek targets), its log lines, the consumer's seek and commit of the plan, the resumer's reads, and the fence a
poison record moves once dead-lettered."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

import pytest
from faust.types import TP
from tenacity import wait_none

from contracts.topics import Topics
from indexing.redis_state import FenceKey
from infra.metrics import EngineMetrics
from infra.settings import Settings
from streams.app import AgentSpec, FencedConsumer, _retrying, fence_resumer, fenced_poison, run_batch
from streams.cores.fences import Resume, plan_resume
from streams.engine import BatchResult, Engine, PreparedUserBatch, Record
from tests.fakes import FakeText, InMemoryEngineState

TOPICS = Topics.for_prefix("unit.")
UE, RT = TOPICS.user_events, TOPICS.user_events_retry


def _one(fence, committed, earliest=0, end=None, *, group_has_fences=True) -> Resume:
    (r,) = plan_resume({(UE, 0): fence}, {(UE, 0): committed}, {(UE, 0): earliest},
                       None if end is None else {(UE, 0): end}, group_has_fences=group_has_fences)
    return r


# ---------------------------------------------------------------------------------------------- the decision


def test_fence_at_the_committed_offset_stays():
    r = _one(fence=99, committed=100, end=120)
    assert (r.case, r.target, r.replays, r.unrecoverable) == ("at-fence", None, 0, 0)


def test_fence_ahead_of_the_committed_offset_skips_what_is_applied():
    # the worker died between its Redis commit (fence 149) and its Kafka commit (100)
    r = _one(fence=149, committed=100, end=200)
    assert (r.case, r.target, r.replays) == ("skip-applied", 150, 0)


def test_fence_behind_the_committed_offset_replays_what_redis_lost():
    # Redis lost its last second: the fence went back to 79 while Kafka had committed 100
    r = _one(fence=79, committed=100, end=100)
    assert (r.case, r.target, r.replays, r.unrecoverable) == ("replay", 80, 20, 0)


def test_a_fence_without_a_committed_offset_is_followed():
    assert (_one(fence=49, committed=None, end=60).target, _one(fence=49, committed=0).case) == (50, "skip-applied")
    assert _one(fence=-1, committed=None).case == "fresh"


def test_no_fence_nothing_committed_is_a_new_group_left_to_the_reset_policy():
    r = _one(fence=-1, committed=None, earliest=5, group_has_fences=False)
    assert (r.case, r.target) == ("fresh", None)
    assert _one(fence=-1, committed=0).target is None  # Faust reports a committed 0 as none


def test_no_fence_but_committed_while_other_partitions_are_fenced_replays_from_the_earliest_offset():
    r = _one(fence=-1, committed=300, earliest=0, end=300, group_has_fences=True)
    assert (r.case, r.target, r.replays, r.unrecoverable) == ("fence-lost", 0, 300, 0)


def test_a_redis_that_lost_everything_rebuilds_the_states_from_the_earliest_retained_offset():
    r = _one(fence=-1, committed=300, earliest=120, end=300, group_has_fences=False)
    # the first 120 records are gone from the log: the states are rebuilt from what is left, and that is said
    assert (r.case, r.target, r.replays, r.unrecoverable) == ("states-lost", 120, 180, 120)


def test_records_after_the_fence_deleted_by_retention_are_counted_as_unrecoverable():
    r = _one(fence=9, committed=100, earliest=40, end=100)
    assert (r.case, r.target, r.unrecoverable) == ("replay", 40, 30)
    r = _one(fence=9, committed=None, earliest=40)  # no committed offset: the reset policy starts there anyway
    assert (r.case, r.target, r.unrecoverable) == ("replay", None, 30)


def test_a_fence_beyond_the_end_of_the_log_is_not_followed():
    r = _one(fence=500, committed=10, end=20)
    assert (r.case, r.target) == ("fence-ahead-of-log", None)
    assert _one(fence=19, committed=10, end=20).target == 20  # fence + 1 == end: caught up, fine


def test_every_partition_is_planned_on_its_own_in_order():
    plan = plan_resume({(UE, 1): 9, (UE, 0): 99, (RT, 0): -1}, {(UE, 0): 90, (UE, 1): 20, (RT, 0): 3}, {},
                       group_has_fences=True)
    assert [(r.topic, r.partition, r.case, r.target) for r in plan] == [
        (UE, 0, "skip-applied", 100), (UE, 1, "replay", 10), (RT, 0, "fence-lost", 0)]


# -------------------------------------------------------------------------------------------------- log lines


@pytest.mark.parametrize(("resume", "level", "words"), [
    (_one(149, 100), logging.INFO, ["offset 150", "fence 149", "committed offset 100"]),
    (_one(79, 100), logging.WARNING, ["offset 80", "fence 79", "committed offset 100", "20 record(s)"]),
    (_one(-1, 300, 0, group_has_fences=True), logging.ERROR, ["no fence", "committed offset 300", "offset 0"]),
    (_one(-1, 300, 120, group_has_fences=False), logging.ERROR,
     ["lost every user state", "offset 120", "120 record(s)", "LOST"]),
    (_one(500, 10, end=20), logging.ERROR, ["beyond the log's end", "fence 500", "committed offset 10"]),
    (_one(99, 100), logging.DEBUG, ["fence 99", "committed offset 100"]),
], ids=["ahead", "behind", "fence-lost", "states-lost", "beyond-end", "at-fence"])
def test_each_resume_is_logged_with_both_offsets(resume, level, words):
    got_level, line = resume.describe()
    assert got_level == level
    for w in words:
        assert w in line, line


# ---------------------------------------------------------------------------------- the consumer and resumer


class FakeConsumer:
    """What ``FencedConsumer.resume_at`` and ``fence_resumer`` use of Faust's consumer."""

    def __init__(self, committed=None, assigned=(), earliest=None, end=None, fail_commit=False):
        self._committed_offset: dict[TP, int | None] = dict(committed or {})
        self.assigned = set(assigned)
        self.earliest, self.end = earliest or {}, end or {}
        self.fail_commit = fail_commit
        self.seeks: list[dict[TP, int]] = []
        self.commits: list[dict[TP, int]] = []

    async def seek_wait(self, moves):
        self.seeks.append(dict(moves))

    async def _commit_offsets(self, offsets):
        if self.fail_commit:
            raise RuntimeError("rebalance in progress")
        self.commits.append(dict(offsets))
        self._committed_offset.update(offsets)

    def assignment(self):
        return self.assigned

    def topic_partitions(self, topic):
        return 2 if topic in (UE, RT) else None

    async def earliest_offsets(self, *tps):
        return {tp: self.earliest.get(tp, 0) for tp in tps}

    async def highwaters(self, *tps):
        return {tp: self.end.get(tp, 1000) for tp in tps}

    committed_offsets = FencedConsumer.committed_offsets


def _resume_at(consumer, plan):
    asyncio.run(FencedConsumer.resume_at(cast(Any, consumer), plan))


def test_the_consumer_seeks_every_target_and_commits_only_those_ahead(caplog):
    c = FakeConsumer(committed={TP(UE, 0): 100, TP(UE, 1): 100})
    plan = plan_resume({(UE, 0): 149, (UE, 1): 79, (RT, 0): 4}, {(UE, 0): 100, (UE, 1): 100, (RT, 0): 5}, {},
                       group_has_fences=True)
    with caplog.at_level(logging.INFO, logger="streams.app"):
        _resume_at(c, plan)
    assert c.seeks == [{TP(UE, 0): 150, TP(UE, 1): 80}]  # the retry partition is at its fence already
    assert c.commits == [{TP(UE, 0): 150}]  # a replay never commits backwards
    assert c._committed_offset[TP(UE, 1)] == 100
    assert any("Redis lost the writes of 20 record(s)" in r.message and r.levelno == logging.WARNING
               for r in caplog.records)


def test_a_failed_commit_of_the_fence_offsets_still_lets_faust_commit_after_them(caplog):
    c = FakeConsumer(committed={TP(UE, 0): 100}, fail_commit=True)
    _resume_at(c, plan_resume({(UE, 0): 149}, {(UE, 0): 100}, {}, group_has_fences=True))
    assert c.seeks == [{TP(UE, 0): 150}]
    # Faust commits a run of acked offsets starting at its committed offset: it must start at the target
    assert c._committed_offset[TP(UE, 0)] == 150
    assert "could not commit the fence offsets" in caplog.text


def test_nothing_to_seek_seeks_nothing():
    c = FakeConsumer()
    _resume_at(c, plan_resume({(UE, 0): 99}, {(UE, 0): 100}, {}, group_has_fences=True))
    assert c.seeks == [] and c.commits == []


def _engine(users):
    return Engine(Settings(), TOPICS, FakeText(), items=cast(Any, None), users=users,
                  group_id="g", featurizer=cast(Any, object()))


def _plan(engine: Engine, consumer: FakeConsumer) -> list[Resume]:
    async def go() -> list[Resume]:
        return await fence_resumer(engine)(cast(Any, consumer))

    return asyncio.run(go())


def test_the_resumer_reads_every_fenced_partition_in_one_mget_and_plans_the_assigned_ones():
    users = InMemoryEngineState({FenceKey("g", UE, 1): 41})  # a fence on a partition another worker holds
    eng = _engine(users)
    c = FakeConsumer(committed={TP(UE, 0): 300}, assigned={TP(UE, 0), TP("unit.content.new", 0)},
                     earliest={TP(UE, 0): 7}, end={TP(UE, 0): 300})
    plan = _plan(eng, c)
    assert len(users.fence_reads) == 1 and len(users.fence_reads[0]) == 4  # 2 topics x 2 partitions
    (r,) = plan
    assert (r.topic, r.partition, r.case, r.target, r.unrecoverable) == (UE, 0, "fence-lost", 7, 7)


def test_the_resumer_without_fenced_partitions_reads_nothing():
    users = InMemoryEngineState()
    c = FakeConsumer(assigned={TP("unit.content.new", 0)})
    assert _plan(_engine(users), c) == []
    assert users.fence_reads == []


def test_fence_past_moves_only_fences_behind_the_records():
    users = InMemoryEngineState({FenceKey("g", UE, 0): 10})
    eng = _engine(users)
    eng.fence_past([Record(UE, 0, 12, b"k", b"x"), Record(RT, 1, 3, b"k", b"x")])
    assert users.fences == {FenceKey("g", UE, 0): 12, FenceKey("g", RT, 1): 3}
    (moved,) = users.commits  # the fences alone: no state, history or popularity
    assert not moved.states and not moved.seen and not moved.popularity
    eng.fence_past([Record(UE, 0, 11, b"k", b"x")])  # already behind the fence: nothing written
    assert users.fences[FenceKey("g", UE, 0)] == 12 and len(users.commits) == 1


# ------------------------------------------------------------------------------ a poison record moves the fence


class PoisonEngine:
    def __init__(self):
        self.calls: list[tuple[str, list[int]]] = []

    def prepare_user_events(self, recs):
        self.calls.append(("handle", [r.offset for r in recs]))
        if any(r.key == b"bad" for r in recs):
            raise ValueError("poison")
        return PreparedUserBatch(BatchResult(ok=len(recs)), None, recs)

    def commit_user_events(self, prep):
        self.calls.append(("commit", [r.offset for r in prep.records]))
        return prep.result

    def fence_past(self, recs):
        self.calls.append(("fence", [r.offset for r in recs]))


def test_a_dead_lettered_poison_record_of_a_fenced_topic_moves_its_fence_after_the_dead_letter():
    eng = PoisonEngine()
    spec: AgentSpec[Any] = AgentSpec("users", UE, 8, 0.05, "users", handle=eng.prepare_user_events,
                                     result=lambda p: p.result, route=lambda r: r.dlq,
                                     commit=eng.commit_user_events, dlq=TOPICS.user_dlq)
    (fenced,) = fenced_poison([spec], cast(Any, eng))
    assert fenced.passed == eng.fence_past
    recs = [Record(UE, 0, o, b"bad" if o == 2 else b"k", b"{}", 0) for o in range(4)]
    metrics = EngineMetrics()

    async def send(msgs):
        eng.calls.append(("send", [len(msgs)]))

    async def retrying(what, fn):
        return await _retrying(what, fn, metrics, wait=wait_none())

    def letter(spec, rec, exc):
        from streams.engine import Outgoing
        return Outgoing(TOPICS.user_dlq, rec.key, b"dead")

    asyncio.run(run_batch(fenced, recs, send=send, retrying=retrying, poison=letter))
    after = [c for c in eng.calls if c[0] != "handle"]
    k = after.index(("fence", [2]))
    assert after[k - 1] == ("send", [1])  # the dead letter is delivered before the fence moves past it
    assert ("commit", [3]) in after[k + 1:]  # and the records after it are committed after that
    # an agent without a commit step (content, profiles) has no fence
    content = AgentSpec("content", TOPICS.content_new, 8, 0.05, "content", handle=eng.prepare_user_events,
                        result=lambda p: p.result, route=lambda r: r.dlq, dlq=TOPICS.content_dlq)
    assert fenced_poison([content], cast(Any, eng))[0].passed is None
