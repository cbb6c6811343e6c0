"""Engine.commit_user_events' fence-race retry (tenacity), with an in-memory user store: no services."""

import json

import numpy as np
import pytest

from contracts.topics import Topics
from indexing.redis_users import FenceMovedError
from infra.settings import Settings
from streams.engine import Engine, Record

TOPICS = Topics.for_prefix("unit.")


class Text:
    model_version = "text-v1"
    dim = 2


class Users:
    """Fences in memory; ``commit`` fails while ``races`` is positive (another worker moved a fence)."""

    def __init__(self, races, moved_to=None):
        self.races, self.moved_to = races, moved_to
        self.fences: dict = {}
        self.commits = 0
        self.reads = 0

    def read_fences(self, keys):
        self.reads += 1
        return {k: self.fences.get(k, -1) for k in keys}

    def commit(self, c):
        self.commits += 1
        if self.races > 0:
            self.races -= 1
            if self.moved_to is not None:
                self.fences = {k: self.moved_to for k in c.fences}
            raise FenceMovedError("moved")
        assert c.expected_fences == {k: self.fences.get(k, -1) for k in c.fences}
        self.fences.update(c.fences)


def _engine(users):
    return Engine(Settings(), TOPICS, Text(), items=None, users=users, group_id="g", featurizer=object())


def _batch():
    # unreadable events: the batch still moves its fence (they are dead-lettered, never re-read)
    return [Record(TOPICS.user_events, 0, off, b"k", b"{broken", 0) for off in (5, 6)]


def test_commits_at_once_without_a_race():
    users = Users(races=0)
    eng = _engine(users)
    res = eng.commit_user_events(eng.prepare_user_events(_batch()))
    assert users.commits == 1 and users.reads == 1
    assert res.rejected == {"InvalidJSON": 2} and "commit" in res.stage_ms
    assert list(users.fences.values()) == [6]


def test_a_moved_fence_re_reads_the_batch_and_commits_again():
    users = Users(races=2)
    eng = _engine(users)
    res = eng.commit_user_events(eng.prepare_user_events(_batch()))
    assert users.commits == 3 and users.reads == 3
    assert list(users.fences.values()) == [6] and "commit" in res.stage_ms


def test_a_batch_another_worker_applied_meanwhile_is_skipped():
    users = Users(races=1, moved_to=6)
    eng = _engine(users)
    res = eng.commit_user_events(eng.prepare_user_events(_batch()))
    assert users.commits == 1 and users.reads == 2
    # this worker delivered their dead letters before it lost the race: counted once, as rejected, not skipped
    assert res.skipped == 0 and res.rejected == {"InvalidJSON": 2}


def test_gives_up_after_eight_commits():
    users = Users(races=100)
    eng = _engine(users)
    with pytest.raises(FenceMovedError, match="kept moving"):
        eng.commit_user_events(eng.prepare_user_events(_batch()))
    assert users.commits == 8 and users.reads == 9  # the first read and one after each failed commit
    users2 = Users(races=100)
    eng2 = _engine(users2)
    with pytest.raises(FenceMovedError, match="kept moving"):
        eng2.commit_user_events(eng2.prepare_user_events(_batch()), max_retries=3)
    assert users2.commits == 3


class Items:
    """Item vectors in memory; ``late`` items are indexed only once ``indexed`` is set (by a lost commit race)."""

    def __init__(self, known, late):
        self.known, self.late, self.indexed = known, late, False

    def get_vectors(self, ids):
        have = self.known | (self.late if self.indexed else set())
        return {i: np.array([1.0, 0.0], dtype=np.float32) for i in ids if i in have}


class RacingUsers(Users):
    """A user store with states; the first commit loses a race, during which the late item gets indexed."""

    def __init__(self, items):
        super().__init__(races=1)
        self.items = items
        self.applied: list = []

    def read_states_with_digests(self, space, users):
        return {u: None for u in users}, {u: "" for u in users}

    def commit(self, c):
        if self.races > 0:
            self.items.indexed = True  # the content agent indexes the late item while this batch races
        super().commit(c)
        self.applied.append(c)


def _event(off, item):
    ev = {"user_id": "u1", "item_id": item, "action": "play", "ts": "2026-12-04T10:00:00+00:00"}
    return Record(TOPICS.user_events, 0, off, b"u1", json.dumps(ev).encode(), 0)


def test_a_record_parked_before_a_lost_race_is_not_also_applied_after_it():
    items = Items(known={"a"}, late={"late"})
    users = RacingUsers(items)
    eng = _engine(users)
    eng.items = items
    first = eng.prepare_user_events([_event(1, "a"), _event(2, "late"), _event(3, "a")])
    assert first.result.deferred == 1 and first.result.ok == 2
    parked = list(first.result.dlq)  # delivered by the agent before the commit
    res = eng.commit_user_events(first)
    assert users.commits == 2
    # the late item is indexed now, but its event is on the retry topic: applied from there, not here too
    (done,) = users.applied
    assert done.states["u1"].n_events == 2
    assert res.ok == 2 and res.deferred == 1 and res.dlq == parked
    assert list(users.fences.values()) == [3]
