"""A user-events batch prepared while the previous one commits (``prepare_user_events(after=...)``): prepared as if
that commit had landed, it commits at once on top of it; when that commit did not land as prepared, the
compare-and-set refuses the batch and it is prepared again from the store. Either way every event is applied once.
In-memory store, no services."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime, timedelta

import numpy as np

from contracts.topics import Topics
from infra.settings import Settings
from streams.cores import retry
from streams.engine import Engine, Record
from tests.fakes import FakeText, InMemoryEngineState, InMemoryItems

TOPICS = Topics.for_prefix("unit.")
ITEMS = ("a", "b", "c")


def _engine(users: InMemoryEngineState) -> Engine:
    items = InMemoryItems(dim=3)
    for k, i in enumerate(ITEMS):
        items.vectors[i] = np.eye(3, dtype=np.float32)[k]
    return Engine(Settings(), TOPICS, FakeText(dim=3), items=items, users=users, group_id="g", featurizer=object())


def _records(offsets: range, users: list[str], partition: int = 0, topic: str | None = None) -> list[Record]:
    t0 = datetime.now(UTC) - timedelta(minutes=5)
    out = []
    for k, off in enumerate(offsets):
        u = users[k % len(users)]
        ev = {"user_id": u, "item_id": ITEMS[off % 3], "action": ["play", "like", "skip"][off % 3],
              "ts": (t0 + timedelta(seconds=off)).isoformat()}
        out.append(Record(topic or TOPICS.user_events, partition, off, u.encode(), json.dumps(ev).encode(), 0))
    return out


def _sequential(batches: list[list[Record]]) -> InMemoryEngineState:
    users = InMemoryEngineState()
    eng = _engine(users)
    for recs in batches:
        eng.commit_user_events(eng.prepare_user_events(recs))
    return users


def _same_states(a: InMemoryEngineState, b: InMemoryEngineState) -> None:
    assert a.fences == b.fences
    assert set(a.states) == set(b.states)
    for key in a.states:
        sa, sb = a.state(*key), b.state(*key)
        assert (sa.n_events, sa.ts, sa.source) == (sb.n_events, sb.ts, sb.source)
        np.testing.assert_allclose(sa.vec, sb.vec, rtol=1e-6)
    assert {u: sorted(v) for u, v in a.seen.items()} == {u: sorted(v) for u, v in b.seen.items()}  # sets in Redis
    assert a.popularity == b.popularity


def test_a_batch_prepared_on_top_of_the_previous_commit_commits_at_once():
    first, second = _records(range(0, 40), ["u1", "u2", "u3"]), _records(range(40, 80), ["u2", "u3", "u4"])
    users = InMemoryEngineState()
    eng = _engine(users)
    p1 = eng.prepare_user_events(first)
    p2 = eng.prepare_user_events(second, after=p1)  # while p1 has not committed yet
    eng.commit_user_events(p1)
    eng.commit_user_events(p2)
    assert users.commit_calls == 2  # no refused commit: p2 expected exactly what p1 wrote
    _same_states(users, _sequential([first, second]))


def test_without_the_overlay_the_second_commit_is_refused_and_prepared_again():
    """What the overlay saves: a batch read before the previous commit landed loses the compare-and-set."""
    first, second = _records(range(0, 40), ["u1", "u2"]), _records(range(40, 80), ["u2", "u3"])
    users = InMemoryEngineState()
    eng = _engine(users)
    p1 = eng.prepare_user_events(first)
    p2 = eng.prepare_user_events(second)
    eng.commit_user_events(p1)
    eng.commit_user_events(p2)
    assert users.commit_calls == 3
    _same_states(users, _sequential([first, second]))


def test_a_previous_commit_that_landed_otherwise_refuses_the_batch_which_is_prepared_again():
    first, second = _records(range(0, 40), ["u1", "u2"]), _records(range(40, 80), ["u2", "u3"])
    users = InMemoryEngineState()
    eng = _engine(users)
    p1 = eng.prepare_user_events(first)
    p2 = eng.prepare_user_events(second, after=p1)
    # the previous batch lost a race and was prepared again: a third event of u2 was applied in between (a copy
    # from the retry topic, the other way a user's state moves: a user's events are all on its one partition)
    [src] = _records(range(100, 101), ["u2"])
    park = retry.unknown_item(None, time.time(), 60.0)
    assert isinstance(park, retry.Park)
    env = park.envelope(partition=0, offset=src.offset, key=src.key, value=src.value, group="g", claim=False)
    extra = [Record(TOPICS.user_events_retry, 0, 0, src.key, env.to_bytes(), 0)]
    eng.commit_user_events(eng.prepare_user_events(extra))
    eng.commit_user_events(p1)  # refused once (u2's state moved), prepared again, committed
    eng.commit_user_events(p2)  # refused (u2 is not what p1 first wrote), prepared again, committed
    assert users.commit_calls == 5
    _same_states(users, _sequential([first, extra, second]))


def test_a_batch_prepared_on_top_of_one_that_never_commits_is_prepared_again_from_the_store():
    """Its commit does not carry the other batch's effects: refused, prepared again, it applies its own events only.
    (The users agent never commits a batch whose predecessor did not commit: ``streams.app``.)"""
    first, second = _records(range(0, 40), ["u1", "u2"]), _records(range(40, 80), ["u2", "u3"])
    users = InMemoryEngineState()
    eng = _engine(users)
    p1 = eng.prepare_user_events(first)
    p2 = eng.prepare_user_events(second, after=p1)
    eng.commit_user_events(p2)
    assert users.commit_calls == 2
    assert users.state("text-v1", "u1") is None
    _same_states(users, _sequential([second]))


def test_retry_topic_batches_are_not_prepared_on_top_of_another():
    first = _records(range(0, 10), ["u1"])
    users = InMemoryEngineState()
    eng = _engine(users)
    p1 = eng.prepare_user_events(first)
    retried = _records(range(0, 3), ["u1"], topic=TOPICS.user_events_retry)  # (unreadable envelopes: dead letters)
    p2 = eng.prepare_user_events(retried, after=p1)
    assert p2.commit is not None and all(k.topic == TOPICS.user_events_retry for k in p2.commit.fences)
    assert p2.commit.expected_fences == {k: -1 for k in p2.commit.fences}  # read from the store, not from p1
