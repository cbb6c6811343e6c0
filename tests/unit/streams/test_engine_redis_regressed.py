"""The engine under a Redis that went back in time, and the retry topic's claims on parked events: no services.

- A fence below what the worker resumed from or committed (Redis restarted and lost its last second) stops every
  fenced step (:class:`FencesRegressedError`), found by a batch's own read or by ``check_fences`` on an idle
  partition; a commit that moves the fence forward is not a regression.
- A retry-topic copy is applied only while its source offset is parked; a copy whose source was applied directly
  (the park was lost with Redis and the replayed event found its item) is skipped; a second copy of one source is
  skipped; a copy whose park is not committed yet waits (:class:`ParkPendingError`).
"""

import json
from datetime import UTC, datetime

import pytest

from contracts.topics import Topics
from indexing.redis_state import FenceKey, FencesRegressedError, unpack_state
from infra.settings import Settings
from streams.cores import retry
from streams.engine import Engine, ParkPendingError, Record
from tests.fakes import FakeText, InMemoryEngineState, InMemoryItems

TOPICS = Topics.for_prefix("unit.")
NOW = datetime(2026, 12, 4, 10, 0, tzinfo=UTC).timestamp()


def _n_events(store: InMemoryEngineState) -> dict[str, int]:
    """Events applied per user (the text space's states)."""
    return {u: unpack_state(raw).n_events for (space, u), raw in store.states.items() if space == "text-v1"}


def _engine(store, known=("a",)):
    eng = Engine(Settings(), TOPICS, FakeText(), items=InMemoryItems(known), users=store, group_id="g",
                 featurizer=object(), clock=lambda: NOW)
    return eng


def _event(off, item="a", partition=0):
    ev = {"user_id": "u1", "item_id": item, "action": "play", "ts": datetime.fromtimestamp(NOW, UTC).isoformat()}
    return Record(TOPICS.user_events, partition, off, b"u1", json.dumps(ev).encode(), 0)


def _copy(src: Record, off: int, claim: bool = True) -> Record:
    """The retry-topic record of ``src`` (first attempt), at retry offset ``off``."""
    env = retry.Park(1, NOW - 1, NOW - 0.5).envelope(partition=src.partition, offset=src.offset, key=src.key,
                                                      value=src.value, group="g", claim=claim)
    return Record(TOPICS.user_events_retry, 0, off, src.key, env.to_bytes(), 0)


def _run(eng, records):
    return eng.commit_user_events(eng.prepare_user_events(records))


UE0 = FenceKey("g", TOPICS.user_events, 0)


def test_a_fence_below_what_the_worker_committed_stops_every_fenced_step():
    store = InMemoryEngineState()
    eng = _engine(store)
    eng.resume_fences([(TOPICS.user_events, 0)])
    _run(eng, [_event(0), _event(1), _event(2)])
    assert store.fences[UE0] == 2 and eng.check_fences() is None
    store.fences[UE0] = 0  # Redis restarted and reloaded a point before the last commit
    with pytest.raises(FencesRegressedError, match=r"fence 0 below 2"):
        eng.prepare_user_events([_event(3)])
    assert eng.regressed is not None
    # from then on nothing is prepared, committed or fenced, whatever the fences say
    store.fences[UE0] = 2
    with pytest.raises(FencesRegressedError):
        eng.prepare_user_events([_event(3)])
    with pytest.raises(FencesRegressedError):
        eng.fence_past([_event(3)])
    assert _n_events(store) == {"u1": 3}


def test_the_periodic_check_finds_a_regression_on_an_idle_partition():
    store = InMemoryEngineState()
    store.fences[UE0] = 41
    eng = _engine(store)
    eng.resume_fences([(TOPICS.user_events, 0), (TOPICS.user_events, 1)])
    assert eng.check_fences() is None
    store.fences[UE0] = 40  # no batch reads it: only the check does
    why = eng.check_fences()
    assert why is not None and "fence 40 below 41" in why
    with pytest.raises(FencesRegressedError):
        _run(eng, [_event(0, partition=1)])


def test_a_resume_sets_the_floors_again_and_forward_moves_are_fine():
    store = InMemoryEngineState()
    store.fences[UE0] = 10
    eng = _engine(store)
    eng.resume_fences([(TOPICS.user_events, 0)])
    store.fences[UE0] = 20  # another worker moved it forward during a rebalance: not a regression
    assert eng.check_fences() is None
    store.fences[UE0] = 5
    eng.resume_fences([(TOPICS.user_events, 0)])  # an assignment plans from the fence as it is now
    assert eng.check_fences() is None and eng.regressed is None


def test_a_parked_event_is_applied_once_from_its_copy():
    store = InMemoryEngineState()
    eng = _engine(store, known=())
    src = _event(0, item="late")
    res = _run(eng, [src])
    assert res.deferred == 1 and store.parked[UE0] == {0}
    env = json.loads(res.dlq[0].value)
    assert env["claim"] is True
    eng.items.index("late")
    copy = Record(TOPICS.user_events_retry, 0, 0, src.key, res.dlq[0].value, 0)
    res2 = _run(eng, [copy, Record(TOPICS.user_events_retry, 0, 1, src.key, res.dlq[0].value, 0)])
    assert res2.ok == 1 and res2.skipped == 1  # the second copy of one source is skipped
    assert store.parked[UE0] == set() and _n_events(store) == {"u1": 1}


def test_a_copy_whose_source_was_applied_directly_is_skipped():
    # the park's commit was lost with Redis; the replayed event found its item and was applied directly
    store = InMemoryEngineState()
    eng = _engine(store)
    src = _event(0)
    _run(eng, [src])
    res = _run(eng, [_copy(src, 0)])
    assert res.ok == 0 and res.skipped == 1 and _n_events(store) == {"u1": 1}
    assert store.fences[FenceKey("g", TOPICS.user_events_retry, 0)] == 0  # the copy is handled: fence past it


def test_a_copy_whose_park_is_not_committed_yet_waits():
    store = InMemoryEngineState()
    eng = _engine(store)
    with pytest.raises(ParkPendingError):
        eng.prepare_user_events([_copy(_event(5), 0)])


def test_a_copy_without_a_claim_is_applied_as_it_comes():
    store = InMemoryEngineState()
    eng = _engine(store)
    res = _run(eng, [_copy(_event(5), 0, claim=False)])
    assert res.ok == 1 and _n_events(store) == {"u1": 1}


def test_a_copy_that_times_out_releases_its_claim():
    store = InMemoryEngineState()
    eng = _engine(store, known=())
    src = _event(0, item="never")
    _run(eng, [src])
    env = retry.Park(1, NOW - 3600, NOW - 1).envelope(partition=0, offset=0, key=src.key, value=src.value,
                                                      group="g", claim=True)
    res = _run(eng, [Record(TOPICS.user_events_retry, 0, 0, src.key, env.to_bytes(), 0)])
    assert res.rejected == {"UnknownItem": 1} and store.parked[UE0] == set()


def test_a_commit_landing_between_the_check_s_read_and_its_comparison_is_no_regression():
    store = InMemoryEngineState()
    store.fences[UE0] = 24
    eng = _engine(store)
    eng.resume_fences([(TOPICS.user_events, 0)])
    read = store.read_fences

    def racing(keys):
        out = read(keys)
        store.fences[UE0] = 25  # the users agent commits right after the check read the fence...
        eng._raise_floor({UE0: 25})  # ...and raises the floor before the check compares
        return out

    store.read_fences = racing
    assert eng.check_fences() is None and eng.regressed is None
