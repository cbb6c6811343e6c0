"""The Redis key layout against the real Redis of the local stack (single node or cluster, whichever the stack runs):
the stored layout and its checks, popularity summed exactly over the shards, and the layout-1 -> 2 migration."""

from __future__ import annotations

import random

import numpy as np
import pytest

from indexing.redis_keys import LegacyKeys, RedisKeys
from indexing.redis_migrate import migrate, new_key
from indexing.redis_state import FenceKey, LayoutError, RedisState, UserCommit, UserState, pack_state

pytestmark = pytest.mark.integration


@pytest.fixture
def settings(stack_settings, unique_name):
    return stack_settings.namespaced(unique_name)


@pytest.fixture
def store(settings):
    st = RedisState(settings.redis)
    yield st
    st.delete_prefix()


def test_the_layout_is_stored_once_and_checked(settings, store):
    reader = RedisState(settings.redis, serving=True)
    assert store.read_layout() is None
    assert reader.request_view("sp", "u1") == (None, [], [], {})  # no worker yet: every user is cold
    assert store.ensure_layout(4) == 4 and store.read_layout() == 4
    assert store.ensure_layout(4) == 4  # the same again is fine
    with pytest.raises(LayoutError, match="4 shards but user.events has 8"):
        store.ensure_layout(8)
    with pytest.raises(LayoutError, match="layout"):  # another writer's view: the stored one wins
        RedisState(settings.redis).ensure_layout(2)
    fk = FenceKey("g", "user.events", store.shard_of("u1"))
    st = UserState(np.array([1.0, 0.0], np.float32), 1.0, 5.0, 1)
    store.commit(UserCommit("sp", {"u1": st}, {fk: 0}, {fk: -1}, {"u1": [("i", 5.0)]}, {fk.partition: {"i": 4.0}}))
    reader._layout_checked = -1e18  # the reader looks again (at most once a second, see LAYOUT_RECHECK_S)
    got, seen, _, _ = reader.request_view("sp", "u1")
    assert got is not None and pack_state(got) == pack_state(st) and seen == [("i", 5.0)]


def test_popularity_is_the_exact_sum_over_the_shards(store):
    shards = 8
    store.ensure_layout(shards)
    rng = random.Random(3)
    truth: dict[str, float] = {}
    per_shard: dict[int, dict[str, float]] = {s: {} for s in range(shards)}
    # 3,000 items; a few are moderately popular in every shard (never in one shard's top 64) and top the sum
    for j in range(3000):
        item = f"i{j}"
        for s in rng.sample(range(shards), rng.randint(1, 3)):
            w = float(rng.randint(1, 40))
            per_shard[s][item] = per_shard[s].get(item, 0.0) + w
    for j in range(5):
        for s in range(shards):
            per_shard[s][f"spread{j}"] = 30.0 + j
    for s, pop in per_shard.items():
        for item, w in pop.items():
            truth[item] = truth.get(item, 0.0) + w
        store.r.zadd(store.keys.popularity("sp", s), pop)
    want = sorted(truth.items(), key=lambda kv: (-kv[1], kv[0]))
    for n in (1, 5, 20, 200):
        assert store.popular("sp", n) == want[:n], n
    assert [i for i, _ in store.popular("sp", 5)] == [f"spread{j}" for j in (4, 3, 2, 1, 0)]
    assert store.popular("sp", 10_000) == want  # more than there are: all of them
    assert store.popular("other-space", 5) == []


def test_new_key_maps_each_layout_1_kind():
    k = RedisKeys("thaw:", 4)
    assert new_key(k, "thaw:u:sp@1:sim:u:17") == ("state", k.user_state("sp@1", "sim:u:17"))
    assert new_key(k, "thaw:seen:a:b") == ("seen", k.seen("a:b"))
    assert new_key(k, "thaw:pop:sp@1") == ("popularity", k.popularity("sp@1", 0))
    assert new_key(k, "thaw:fence:grp:x:user.events:3") == ("fence", k.fence("grp:x", "user.events", 3))
    assert new_key(k, "thaw:item:i1") is None and new_key(k, "thaw:fresh:sp") is None
    assert new_key(k, "thaw:space") is None and new_key(k, "other:u:sp:u") is None


def test_layout_1_data_is_refused_then_migrated(settings, store):
    if store.cluster:
        pytest.skip("layout 1 never ran on a Redis Cluster (its commit crosses slots): migration is single-node")
    p = settings.redis.key_prefix
    old = LegacyKeys(p)
    st = UserState(np.array([0.5, 0.5], np.float32), 2.0, 9.0, 3)
    r = store.r
    r.set(f"{p}u:sp:alice", pack_state(st))
    r.hset(f"{p}prof:alice", mapping={"gender": "f"})
    r.zadd(f"{p}seen:alice", {"i1": 1.0, "i2": 2.0})
    r.zadd(f"{p}eng:alice", {"i2": 2.0})
    r.zadd(old.popularity("sp"), {"i1": 3.0, "i2": 5.0})
    r.set(old.fence("g", "user.events", 1), 41)
    r.sadd(old.parked("g", "user.events", 1), 40)
    r.set(f"{p}item:i1", '{"k":"track","t":[],"c":1}')
    with pytest.raises(LayoutError, match="migrate-keys"):
        store.ensure_layout(4, legacy_check=[("g", "user.events")])
    report = migrate(r, p, 4)
    assert report.moved == {"state": 1, "prof": 1, "seen": 1, "eng": 1, "popularity": 1, "fence": 1, "parked": 1}
    fresh = RedisState(settings.redis)
    assert fresh.ensure_layout(4, legacy_check=[("g", "user.events")]) == 4
    got = fresh.read_states("sp", ["alice"])["alice"]
    assert got is not None and pack_state(got) == pack_state(st)
    assert fresh.profile("alice") == {"gender": "f"} and fresh.seen("alice") == ["i2", "i1"]
    assert fresh.engaged("alice") == [("i2", 2.0)] and fresh.popular("sp", 5) == [("i2", 5.0), ("i1", 3.0)]
    f1 = FenceKey("g", "user.events", 1)
    assert fresh.read_fences([f1]) == {f1: 41} and fresh.read_parked({f1: [40]}) == {f1: {40}}
    assert fresh.item_meta(["i1"])["i1"].kind == "track"  # untouched
    assert r.get(f"{p}u:sp:alice") is None and r.get(old.fence("g", "user.events", 1)) is None
    with pytest.raises(ValueError, match="already"):
        migrate(r, p, 4)
