"""A claiming retry-topic copy whose source offset no record of its source partition has (at or past the partition's
end offset) is a forged envelope: it is dead-lettered, not left waiting for a park that never comes (which held its
retry partition for good). A copy below the end whose park is not committed yet still waits. No services."""

import json
from datetime import UTC, datetime

import pytest

from contracts.events import DeadLetter
from contracts.topics import Topics
from indexing.redis_state import FenceKey, unpack_state
from infra.settings import Settings
from streams.cores import retry
from streams.cores.retry import past_the_end, stale_ends
from streams.engine import Engine, ParkPendingError, Record
from tests.fakes import FakeText, InMemoryEngineState, InMemoryItems, InMemoryPartitionEnds

TOPICS = Topics.for_prefix("unit.")
NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp()
UE0 = FenceKey("g", TOPICS.user_events, 0)
RETRY0 = FenceKey("g", TOPICS.user_events_retry, 0)
SOURCE = (TOPICS.user_events, 0)


def _engine(store, ends=None, known=("a",)):
    return Engine(Settings(), TOPICS, FakeText(), items=InMemoryItems(known), users=store, group_id="g",
                  featurizer=object(), clock=lambda: NOW, ends=ends)


def _event(off, item="a"):
    ev = {"user_id": "u1", "item_id": item, "action": "play", "ts": datetime.fromtimestamp(NOW, UTC).isoformat()}
    return Record(TOPICS.user_events, 0, off, b"u1", json.dumps(ev).encode(), 0)


def _copy(src: Record, off: int) -> Record:
    """A claiming retry-topic record of ``src``, at retry offset ``off``."""
    env = retry.Park(1, NOW - 1, NOW - 0.5).envelope(partition=src.partition, offset=src.offset, key=src.key,
                                                      value=src.value, group="g", claim=True)
    return Record(TOPICS.user_events_retry, 0, off, src.key, env.to_bytes(), 0)


def _run(eng, records):
    return eng.commit_user_events(eng.prepare_user_events(records))


def test_a_claim_past_the_source_partition_s_end_is_dead_lettered_as_forged():
    store = InMemoryEngineState()
    ends = InMemoryPartitionEnds({SOURCE: 100})
    eng = _engine(store, ends)
    res = _run(eng, [_copy(_event(10**12), 7)])
    assert res.rejected == {"ForgedEnvelope": 1} and res.ok == 0
    (out,) = res.dlq
    dl = DeadLetter.model_validate_json(out.value)
    assert out.topic == TOPICS.user_dlq and (dl.source_topic, dl.partition, dl.offset) == (*SOURCE, 10**12)
    assert "forged retry envelope" in dl.error and "end offset 100" in dl.error
    # the retry partition moves on: its fence is past the copy, nothing was applied or claimed
    assert store.fences[RETRY0] == 7 and UE0 not in store.fences and not store.states
    assert ends.calls == [[SOURCE]]


def test_a_claim_exactly_at_the_end_is_forged_and_one_below_it_waits():
    store = InMemoryEngineState()
    eng = _engine(store, InMemoryPartitionEnds({SOURCE: 100}))
    assert _run(eng, [_copy(_event(100), 0)]).rejected == {"ForgedEnvelope": 1}
    with pytest.raises(ParkPendingError):
        eng.prepare_user_events([_copy(_event(99), 1)])


def test_a_genuine_pending_park_still_waits_then_applies_once_committed():
    store = InMemoryEngineState()
    ends = InMemoryPartitionEnds({SOURCE: 6})
    eng = _engine(store, ends, known=())
    src = _event(5, item="late")
    copy = _copy(src, 0)
    with pytest.raises(ParkPendingError):  # offset 5 is below the end: its park is not committed yet
        eng.prepare_user_events([copy])
    prep = eng.prepare_user_events([src])  # the users batch that parks it commits
    assert prep.result.deferred == 1
    eng.commit_user_events(prep)
    assert store.parked[UE0] == {5}
    eng.items.index("late")
    res = _run(eng, [copy])
    assert res.ok == 1 and res.rejected == {} and store.parked[UE0] == set()
    assert {u: unpack_state(r).n_events for (_, u), r in store.states.items()} == {"u1": 1}


def test_without_end_offsets_or_when_they_cannot_be_read_a_claim_waits():
    forged = _copy(_event(10**12), 0)
    with pytest.raises(ParkPendingError):  # no port: as before, every such copy waits
        _engine(InMemoryEngineState()).prepare_user_events([forged])
    ends = InMemoryPartitionEnds({SOURCE: 100})
    ends.fail = TimeoutError("broker out of reach")
    eng = _engine(InMemoryEngineState(), ends)
    with pytest.raises(ParkPendingError):
        eng.prepare_user_events([forged])
    ends.fail = None  # the broker answers again: dead-lettered
    assert _run(eng, [forged]).rejected == {"ForgedEnvelope": 1}


def test_one_read_per_batch_and_a_cached_end_answers_later_batches():
    store = InMemoryEngineState()
    ends = InMemoryPartitionEnds({SOURCE: 1000})
    eng = _engine(store, ends)
    res = _run(eng, [_copy(_event(10**12 + i), i) for i in range(50)])
    assert res.rejected == {"ForgedEnvelope": 50} and len(ends.calls) == 1
    for _ in range(3):  # a pending park retried: the cached end (above its offset) answers
        with pytest.raises(ParkPendingError):
            eng.prepare_user_events([_copy(_event(500), 60)])
    assert len(ends.calls) == 1
    # an offset at or past the cached end is read again before the copy is called forged (the end only grows)
    ends.ends[SOURCE] = 3000
    with pytest.raises(ParkPendingError):
        eng.prepare_user_events([_copy(_event(2000), 61)])
    assert len(ends.calls) == 2


def test_the_end_offset_rules():
    assert past_the_end(99, 100) is None
    assert "at or past" in past_the_end(100, 100) and past_the_end(10**12, 100) is not None
    cached = {"a": (100, 10.0), "b": (100, 0.0)}
    assert stale_ends({"a": 50}, cached, now=12.0, ttl_s=5.0) == []  # fresh and above the offset
    assert stale_ends({"a": 100}, cached, now=12.0, ttl_s=5.0) == ["a"]  # at the cached end: read again
    assert stale_ends({"b": 50}, cached, now=12.0, ttl_s=5.0) == ["b"]  # too old
    assert stale_ends({"c": 0}, cached, now=12.0, ttl_s=5.0) == ["c"]  # never read
