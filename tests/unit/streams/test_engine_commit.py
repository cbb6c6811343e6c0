"""Engine.commit_user_events' fence-race retry loop, with an in-memory user store: no services."""

import json
from datetime import UTC, datetime

import pytest

from contracts.topics import Topics
from indexing.redis_state import FenceMovedError
from infra.settings import Settings
from streams.engine import Engine, Record
from tests.fakes import FakeText, InMemoryEngineState, InMemoryItems

TOPICS = Topics.for_prefix("unit.")


class RacingState(InMemoryEngineState):
    """The in-memory state whose ``commit`` fails while ``races`` is positive (another worker moved a fence: to
    ``moved_to`` if given), calling ``on_race`` first (what happens meanwhile, e.g. an item gets indexed)."""

    def __init__(self, races, moved_to=None, on_race=None):
        super().__init__()
        self.races, self.moved_to, self.on_race = races, moved_to, on_race

    def commit(self, c):
        if self.races > 0:
            self.commit_calls += 1
            self.races -= 1
            if self.on_race is not None:
                self.on_race()
            if self.moved_to is not None:
                self.fences.update({k: self.moved_to for k in c.fences})
            raise FenceMovedError("moved")
        super().commit(c)


def _engine(users, items=None):
    return Engine(Settings(), TOPICS, FakeText(), items=items, users=users, group_id="g", featurizer=object())


def _batch():
    # unreadable events: the batch still moves its fence (they are dead-lettered, never re-read)
    return [Record(TOPICS.user_events, 0, off, b"k", b"{broken", 0) for off in (5, 6)]


def test_commits_at_once_without_a_race():
    users = RacingState(races=0)
    eng = _engine(users)
    res = eng.commit_user_events(eng.prepare_user_events(_batch()))
    assert users.commit_calls == 1 and len(users.fence_reads) == 1
    assert res.rejected == {"InvalidJSON": 2} and "commit" in res.stage_ms
    assert list(users.fences.values()) == [6]


def test_a_moved_fence_re_reads_the_batch_and_commits_again():
    users = RacingState(races=2)
    eng = _engine(users)
    res = eng.commit_user_events(eng.prepare_user_events(_batch()))
    assert users.commit_calls == 3 and len(users.fence_reads) == 3
    assert list(users.fences.values()) == [6] and "commit" in res.stage_ms


def test_a_batch_another_worker_applied_meanwhile_is_skipped():
    users = RacingState(races=1, moved_to=6)
    eng = _engine(users)
    res = eng.commit_user_events(eng.prepare_user_events(_batch()))
    assert users.commit_calls == 1 and len(users.fence_reads) == 2
    # this worker delivered their dead letters before it lost the race: counted once, as rejected, not skipped
    assert res.skipped == 0 and res.rejected == {"InvalidJSON": 2}


def test_gives_up_after_eight_commits():
    users = RacingState(races=100)
    eng = _engine(users)
    with pytest.raises(FenceMovedError, match="kept moving"):
        eng.commit_user_events(eng.prepare_user_events(_batch()))
    assert users.commit_calls == 8 and len(users.fence_reads) == 9  # the first read and one after each failed commit
    users2 = RacingState(races=100)
    eng2 = _engine(users2)
    with pytest.raises(FenceMovedError, match="kept moving"):
        eng2.commit_user_events(eng2.prepare_user_events(_batch()), max_retries=3)
    assert users2.commit_calls == 3


def _event(off, item):
    ev = {"user_id": "u1", "item_id": item, "action": "play", "ts": datetime.now(UTC).isoformat()}
    return Record(TOPICS.user_events, 0, off, b"u1", json.dumps(ev).encode(), 0)


def test_a_record_parked_before_a_lost_race_is_not_also_applied_after_it():
    items = InMemoryItems(known={"a"})
    users = RacingState(races=1, on_race=lambda: items.index("late"))  # indexed while this batch races
    eng = _engine(users, items)
    first = eng.prepare_user_events([_event(1, "a"), _event(2, "late"), _event(3, "a")])
    assert first.result.deferred == 1 and first.result.ok == 2
    parked = list(first.result.dlq)  # delivered by the agent before the commit
    res = eng.commit_user_events(first)
    assert users.commit_calls == 2
    # the late item is indexed now, but its event is on the retry topic: applied from there, not here too
    (done,) = users.commits
    assert done.states["u1"].n_events == 2
    assert res.ok == 2 and res.deferred == 1 and res.dlq == parked
    assert list(users.fences.values()) == [3]


class LandsBetween(InMemoryEngineState):
    """The in-memory state that runs ``between`` once, right after the first read of a user-events partition's fence
    or parked set (what another agent's commit does in between two round trips of a claim check)."""

    def __init__(self):
        super().__init__()
        self.between = None

    def _maybe(self, keys):
        if self.between is not None and any(k.topic == TOPICS.user_events for k in keys):
            run, self.between = self.between, None
            return run
        return None

    def read_fences(self, keys):
        keys = list(keys)
        out = super().read_fences(keys)
        if (run := self._maybe(keys)) is not None:
            run()
        return out

    def read_parked(self, offsets):
        out = super().read_parked(offsets)
        if (run := self._maybe(list(offsets))) is not None:
            run()
        return out


def test_a_park_committed_between_the_claim_checks_reads_is_applied_not_lost():
    """The users agent parks an event (its retry copy is delivered before its commit); the retry agent reads the
    copy's claim while that commit lands. Read in the order parked set, then fence, the copy looked resolved (not
    parked yet, already fenced) and the event was lost; fences first, it is applied once."""
    items = InMemoryItems(known={"a"})
    users = LandsBetween()
    eng = _engine(users, items)
    first = eng.prepare_user_events([_event(1, "late")])
    (copy,) = first.result.dlq
    items.index("late")
    users.between = lambda: eng.commit_user_events(first)  # the users agent's commit lands mid-check
    res = eng.commit_user_events(eng.prepare_user_events([Record(TOPICS.user_events_retry, 0, 0, copy.key,
                                                                  copy.value, 0)]))
    assert users.between is None  # the commit did land between the two reads
    assert res.ok == 1 and res.skipped == 0
    (state,) = [users.state(sp, u) for sp, u in users.states]
    assert state.n_events == 1 and all(not offs for offs in users.parked.values())
