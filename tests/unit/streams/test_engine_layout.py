"""The engine and the Redis key layout (``indexing.redis_keys``): a user event must be on its user's partition (else
``Misrouted``), its popularity goes to that shard, a parked copy is keyed by user id, and the layout is checked
against the topics' partition counts. In-memory store, no services."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest

from contracts.actions import ACTION_WEIGHTS
from contracts.topics import Topics
from indexing.redis_keys import partition_of, shard_of
from indexing.redis_state import FenceKey, LayoutError
from infra.settings import Settings
from streams.engine import Engine, Record
from streams.layout import shard_count
from tests.fakes import FakeText, InMemoryEngineState, InMemoryItems

TOPICS = Topics.for_prefix("unit.")
LIKE = ACTION_WEIGHTS["like"]
N = 4


def _engine(users: InMemoryEngineState, known: set[str] | None = None) -> Engine:
    items = InMemoryItems(dim=3, known=known or ())
    for k, i in enumerate(("a", "b", "c")):
        items.vectors[i] = np.eye(3, dtype=np.float32)[k]
    return Engine(Settings(), TOPICS, FakeText(dim=3), items=items, users=users, group_id="g", featurizer=object())


def _rec(user: str, off: int, item: str = "a", partition: int | None = None, key: bytes | None = None) -> Record:
    ev = {"user_id": user, "item_id": item, "action": "like", "ts": datetime.now(UTC).isoformat()}
    p = shard_of(user, N) if partition is None else partition
    return Record(TOPICS.user_events, p, off, user.encode() if key is None else key, json.dumps(ev).encode(), 0)


def _users_on(shard: int, n: int) -> list[str]:
    return [u for u in (f"user{i}" for i in range(200)) if shard_of(u, N) == shard][:n]


def test_an_event_on_its_users_partition_is_applied_and_its_popularity_goes_to_that_shard():
    users = InMemoryEngineState(shards=N)
    eng = _engine(users)
    u0, u2 = _users_on(0, 1)[0], _users_on(2, 1)[0]
    res = eng.commit_user_events(eng.prepare_user_events([_rec(u0, 5), _rec(u2, 9, "b")]))
    assert res.ok == 2 and not res.rejected
    (commit,) = users.commits
    assert {s: dict(p) for s, p in commit.popularity.items()} == {0: {"a": LIKE}, 2: {"b": LIKE}}
    assert users.fences == {FenceKey("g", TOPICS.user_events, 0): 5, FenceKey("g", TOPICS.user_events, 2): 9}


def test_an_event_on_another_partition_is_dead_lettered_misrouted():
    users = InMemoryEngineState(shards=N)
    eng = _engine(users)
    u = _users_on(1, 1)[0]
    res = eng.commit_user_events(eng.prepare_user_events([_rec(u, 3, partition=3)]))
    assert res.ok == 0 and res.rejected == {"Misrouted": 1}
    (dl,) = res.dlq
    dead = json.loads(dl.value)
    reason = dead["error"]
    assert dead["error_class"] == "Misrouted"
    assert "partition 1" in reason and "partition 3" in reason and "user_id" in reason
    assert users.state("", u) is None and not users.states  # nothing applied
    assert users.fences == {FenceKey("g", TOPICS.user_events, 3): 3}  # the fence moves past it


def test_a_parked_copy_is_keyed_by_user_id_so_it_lands_on_the_users_retry_partition():
    users = InMemoryEngineState(shards=N)
    eng = _engine(users, known={"a"})
    u = _users_on(3, 1)[0]
    # a key that is not the user id but happens to hash to the same partition is still on the right partition
    odd = next(k for k in (f"k{i}".encode() for i in range(500)) if partition_of(k, N) == 3 and k != u.encode())
    res = eng.prepare_user_events([_rec(u, 4, item="late", key=odd)]).result
    assert res.deferred == 1
    (copy,) = res.dlq
    assert copy.topic == TOPICS.user_events_retry and copy.key == u.encode()
    assert partition_of(copy.key, N) == 3


def test_a_retry_copy_on_another_retry_partition_is_misrouted():
    users = InMemoryEngineState(shards=N)
    eng = _engine(users, known={"a"})
    u = _users_on(2, 1)[0]
    first = eng.prepare_user_events([_rec(u, 4, item="late")])
    eng.commit_user_events(first)  # registers the park
    (copy,) = first.result.dlq
    eng.items.index("late")
    ok = eng.prepare_user_events([Record(TOPICS.user_events_retry, 2, 0, copy.key, copy.value, 0)]).result
    bad = eng.prepare_user_events([Record(TOPICS.user_events_retry, 1, 0, copy.key, copy.value, 0)]).result
    assert not ok.rejected and bad.rejected == {"Misrouted": 1}


def test_the_layout_follows_the_user_events_partitions():
    assert shard_count(TOPICS, {TOPICS.user_events: 8, TOPICS.user_events_retry: 8}) == 8
    with pytest.raises(LayoutError, match="same count"):
        shard_count(TOPICS, {TOPICS.user_events: 8, TOPICS.user_events_retry: 4})
    with pytest.raises(LayoutError, match="no partitions"):
        shard_count(TOPICS, {})
    users = InMemoryEngineState(shards=1)
    eng = _engine(users)
    assert eng.ensure_layout({TOPICS.user_events: 8, TOPICS.user_events_retry: 8}) == 8 and users.shards == 8
    with pytest.raises(LayoutError):  # partitions added to user.events later: users would change shards
        eng.resume_fences([(TOPICS.user_events, 0)], {TOPICS.user_events: 16, TOPICS.user_events_retry: 16})
