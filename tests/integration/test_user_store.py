"""The Redis user store against the real Redis of the local stack: atomic commits and offset fences."""

import json

import numpy as np
import pytest

from indexing.redis_state import (
    SEEN_CAP,
    FenceKey,
    FenceMovedError,
    RedisState,
    UserCommit,
    UserState,
    encode_commit,
    pack_state,
)

pytestmark = pytest.mark.integration
SHARDS = 2  # user.events partitions: users "a", "b", "u1", "u é" in shard 0; "u", "v", "sim:u:1" in 1


@pytest.fixture
def store(stack_settings, unique_name):
    s = stack_settings.namespaced(unique_name)
    st = RedisState(s.redis)
    st.ensure_layout(SHARDS)
    yield st
    st.delete_prefix()


def _state(x):
    return UserState(np.array([x, 1.0], np.float32), weight=2.0, ts=10.0, n_events=1)


def test_commit_writes_states_fences_seen_and_popularity(store):
    fk = FenceKey("g", "user.events", 0)
    store.commit(UserCommit("sp", {"u1": _state(1.0)}, {fk: 41}, {fk: -1}, {"u1": [("i1", 5.0)]}, {0: {"i1": 2.0}}))
    assert store.read_fences([fk]) == {fk: 41}
    got = store.read_states("sp", ["u1", "nobody"])
    assert got["nobody"] is None
    np.testing.assert_array_equal(got["u1"].vec, [1.0, 1.0])
    assert got["u1"].n_events == 1 and got["u1"].weight == 2.0
    assert store.seen("u1") == ["i1"] and store.popular("sp", 5) == [("i1", 2.0)]


def test_stale_fence_refuses_the_whole_commit(store):
    fk = FenceKey("g", "user.events", 1)  # user "u"'s partition
    store.commit(UserCommit("sp", {"u": _state(1.0)}, {fk: 10}, {fk: -1}, {}, {}))
    with pytest.raises(FenceMovedError):
        # a second writer that read the fence before the first commit
        store.commit(UserCommit("sp", {"u": _state(9.0)}, {fk: 12}, {fk: -1}, {}, {1: {"i": 1.0}}))
    assert store.read_states("sp", ["u"])["u"].vec[0] == 1.0
    assert store.read_fences([fk])[fk] == 10 and store.popular("sp", 5) == []


def test_prior_only_for_users_without_events(store):
    prior = UserState(np.array([0.0, 2.0], np.float32), 2.0, 0.0, 0, "prior")
    assert store.put_prior("sp", "new", prior, {"gender": "f"})
    assert store.profile("new") == {"gender": "f"}
    fk = FenceKey("g", "t", 0)
    store.commit(UserCommit("sp", {"old": _state(1.0)}, {fk: 0}, {fk: -1}, {}, {}))
    assert not store.put_prior("sp", "old", prior, {})
    assert store.read_states("sp", ["old"])["old"].source == "events"


def test_a_state_changed_by_another_batch_refuses_the_commit(store):
    """Two batches of one worker (user agent, retry agent) that read the same user: the later commit is refused
    (and re-prepared by the engine) instead of overwriting the first one's update."""
    fk_events, fk_retry = FenceKey("g", "user.events", 1), FenceKey("g", "user.events.retry", 1)
    states, digests = store.read_states_with_digests("sp", ["u"])
    assert states == {"u": None} and digests == {"u": ""}
    store.commit(UserCommit("sp", {"u": _state(1.0)}, {fk_events: 5}, {fk_events: -1}, {}, {},
                            expected_states=digests))
    with pytest.raises(FenceMovedError):  # computed from the state before the first commit
        store.commit(UserCommit("sp", {"u": _state(2.0)}, {fk_retry: 3}, {fk_retry: -1}, {}, {},
                                expected_states=digests))
    assert store.read_states("sp", ["u"])["u"].vec[0] == pytest.approx(1.0)
    assert store.read_fences([fk_retry])[fk_retry] == -1  # nothing of the refused batch was written
    _, fresh = store.read_states_with_digests("sp", ["u"])
    store.commit(UserCommit("sp", {"u": _state(3.0)}, {fk_retry: 3}, {fk_retry: -1}, {}, {}, expected_states=fresh))
    assert store.read_states("sp", ["u"])["u"].vec[0] == pytest.approx(3.0)


# ---------------------------------------------------------------- the commit script, section by section
E0, E1 = FenceKey("g", "user.events", 0), FenceKey("g", "user.events", 1)
RT = FenceKey("g", "user.events.retry", 0)
RT1 = FenceKey("g", "user.events.retry", 1)  # the retry partition of shard 1 (users "u", "v")


def _snapshot(store) -> dict[bytes, bytes]:
    """Every key under the store's prefix with its DUMP (a refused commit must change none)."""
    return {k: store.r.dump(k) for k in store.r.scan_iter(match=store.keys.everything())}


def _parked(store, f: FenceKey) -> set[int]:
    return {int(x) for x in store.r.smembers(store.parked_key(f))}


def test_a_commit_writes_every_section(store):
    binary = UserState(np.frombuffer(b"\x00\xff\xfe\x80\x00\x00\x00\x00", "<f4").copy(), 3.0, 4.5, 2, "prior")
    store.r.sadd(store.parked_key(RT), 5, 6, 7)
    store.commit(UserCommit(
        "sp", {"sim:u:1": _state(1.0), "u é": binary}, {E0: 9, E1: 4, RT: 2}, {E0: -1, E1: -1, RT: -1},
        seen={"sim:u:1": [("i1", 5.0), ("i2", 6.5)], "u é": [("i:3", 7.25)]},
        popularity={0: {"i1": 2.0}, 1: {"i:3": 0.5}},  # two shards: the sum is read
        engaged={"sim:u:1": [("i2", 6.5)]},
        parked={E0: [3, 8], E1: [1]},
        claims={RT: [5, 7]},
    ))
    assert store.read_fences([E0, E1, RT]) == {E0: 9, E1: 4, RT: 2}
    got = store.read_states("sp", ["sim:u:1", "u é"])
    np.testing.assert_array_equal(got["sim:u:1"].vec, [1.0, 1.0])
    assert store.r.get(store.user_key("sp", "u é")) == pack_state(binary)  # binary-safe, byte for byte
    assert (got["u é"].source, got["u é"].n_events, got["u é"].ts) == ("prior", 2, 4.5)
    assert store.request_view("sp", "sim:u:1")[1] == [("i2", 6.5), ("i1", 5.0)]
    assert store.seen("u é") == ["i:3"]
    assert store.engaged("sim:u:1") == [("i2", 6.5)] and store.engaged("u é") == []
    assert _parked(store, E0) == {3, 8} and _parked(store, E1) == {1}
    assert _parked(store, RT) == {6}  # the claimed offsets are resolved, the other stays
    assert store.popular("sp", 5) == [("i1", 2.0), ("i:3", 0.5)]
    # popularity accumulates, seen keeps the newest score of an item
    store.commit(UserCommit("sp", {}, {E0: 10}, {E0: 9}, {"u é": [("i:3", 8.0)]}, {0: {"i:3": 2.0}}))
    assert store.popular("sp", 5) == [("i:3", 2.5), ("i1", 2.0)]
    assert store.request_view("sp", "u é")[1] == [("i:3", 8.0)]


@pytest.mark.parametrize("refused", ["fence moved", "fence appeared", "state moved", "claim gone"])
def test_a_refused_commit_writes_nothing(store, refused):
    """A commit of one shard (what the engine sends per partition on a cluster): refused, it writes nothing."""
    store.r.sadd(store.parked_key(RT1), 1)
    store.commit(UserCommit("sp", {"u": _state(1.0)}, {E1: 5}, {E1: -1}, {"u": [("i", 1.0)]}, {1: {"i": 1.0}}))
    _, digests = store.read_states_with_digests("sp", ["u"])
    expected_fences, expected_states, claims = {E1: 5, RT1: -1}, dict(digests), {RT1: [1]}
    if refused == "fence moved":
        expected_fences[E1] = 4
    elif refused == "fence appeared":
        store.r.set(store.fence_key(RT1), 0)
    elif refused == "state moved":
        expected_states["u"] = ""  # computed from no state, but there is one
    else:
        claims = {RT1: [1, 2]}  # 2 was never parked (another copy resolved it)
    before = _snapshot(store)
    with pytest.raises(FenceMovedError):
        store.commit(UserCommit(
            "sp", {"u": _state(9.0), "v": _state(2.0)}, {E1: 8, RT1: 3}, expected_fences,
            {"u": [("j", 2.0)], "v": [("j", 2.0)]}, {1: {"j": 3.0}}, expected_states=expected_states,
            engaged={"u": [("j", 2.0)]}, parked={E1: [7]}, claims=claims))
    assert _snapshot(store) == before


def test_a_commit_over_two_partitions_is_atomic_per_partition_on_a_cluster(store):
    """Shard 0 ("a") and shard 1 ("u") in one commit, shard 1's fence moved: a single Redis refuses all of it (one
    script); a cluster applies shard 0's part (its own fence guards it: the engine re-reads the batch and skips it)
    and refuses shard 1's."""
    store.commit(UserCommit("sp", {}, {E1: 5}, {E1: -1}, {}, {}))
    with pytest.raises(FenceMovedError):
        store.commit(UserCommit("sp", {"a": _state(1.0), "u": _state(2.0)}, {E0: 3, E1: 9}, {E0: -1, E1: 4}, {}, {}))
    got = store.read_states("sp", ["a", "u"])
    assert got["u"] is None and store.read_fences([E1]) == {E1: 5}
    if store.cluster:
        assert got["a"] is not None and store.read_fences([E0]) == {E0: 3}
    else:
        assert got["a"] is None and store.read_fences([E0]) == {E0: -1}


def test_a_commit_of_users_without_their_partitions_fence_is_refused_before_redis(store):
    with pytest.raises(ValueError, match=r"shard\(s\) \[1\] without the fence"):
        store.commit(UserCommit("sp", {"u": _state(1.0)}, {E0: 1}, {E0: -1}, {}, {}))
    with pytest.raises(ValueError, match="without the fence"):
        store.commit(UserCommit("sp", {}, {E0: 1}, {E0: -1}, {}, {1: {"i": 1.0}}))
    assert store.read_fences([E0]) == {E0: -1}


def test_the_same_commit_passes_once_its_expectations_hold(store):
    store.r.sadd(store.parked_key(RT1), 1, 2)
    store.commit(UserCommit("sp", {"u": _state(1.0)}, {E1: 5}, {E1: -1}, {}, {}))
    _, digests = store.read_states_with_digests("sp", ["u", "v"])
    store.commit(UserCommit("sp", {"u": _state(9.0), "v": _state(2.0)}, {E1: 8, RT1: 0}, {E1: 5, RT1: -1}, {}, {},
                            expected_states=digests, claims={RT1: [1, 2]}))
    assert store.read_fences([E1, RT1]) == {E1: 8, RT1: 0} and _parked(store, RT1) == set()
    assert store.read_states("sp", ["v"])["v"].vec[0] == 2.0


def test_a_state_left_unchecked_is_overwritten(store):
    store.commit(UserCommit("sp", {"u": _state(1.0)}, {E1: 5}, {E1: -1}, {}, {}))
    store.commit(UserCommit("sp", {"u": _state(7.0)}, {E1: 6}, {E1: 5}, {}, {}))  # no expected_states
    assert store.read_states("sp", ["u"])["u"].vec[0] == 7.0


def test_large_sections_are_applied_whole_and_seen_sets_are_capped(store):
    """More records of one key than one Lua unpack takes (1,000 per call) and more seen items than SEEN_CAP."""
    seen = [(f"i{j}", float(j)) for j in range(2500)]
    store.r.sadd(store.parked_key(RT1), *range(1500))
    pop = {f"i{j}": 1.0 for j in range(1200)}
    store.commit(UserCommit("sp", {"u": _state(1.0)}, {E1: 1}, {E1: -1}, {"u": seen}, {1: pop},
                            engaged={"u": seen[:1100]}, parked={E1: list(range(2100))},
                            claims={RT1: list(range(1400))}))
    assert store.seen("u") == [f"i{j}" for j in range(2499, 2499 - SEEN_CAP, -1)]
    assert [i for i, _ in store.engaged("u")] == [f"i{j}" for j in range(1099, 1099 - SEEN_CAP, -1)]
    assert store.r.zcard(store.keys.seen("u")) == store.r.zcard(store.keys.engaged("u")) == SEEN_CAP
    assert store.r.zcard(store.keys.popularity("sp", 1)) == 1200
    assert _parked(store, E1) == set(range(2100)) and _parked(store, RT1) == set(range(1400, 1500))


def test_an_unknown_encoding_is_an_error_not_a_refusal(store):
    import redis

    keys, args = encode_commit(UserCommit("sp", {}, {E0: 1}, {E0: -1}, {}, {}), store.keys)
    header = json.loads(args[0])
    with pytest.raises(redis.ResponseError, match="unknown sections format"):
        store._commit_script(keys=keys, args=[json.dumps({**header, "format": 2}), *args[1:]])
    del header["sections"]["claims"]
    with pytest.raises(redis.ResponseError, match="no section claims"):
        store._commit_script(keys=keys, args=[json.dumps(header), *args[1:]])
    assert store.read_fences([E0]) == {E0: -1}


# ---------------------------------------------------------------- the bulk read and the packed commit call
def test_packed_states_read_as_the_per_user_read_and_commit_byte_for_byte(store):
    from indexing.redis_state import PackedStates

    fk = FenceKey("g", "user.events", 0)
    store.commit(UserCommit("sp", {"a": _state(1.0), "b": _state(2.0)}, {fk: 3}, {fk: -1}, {}, {}))
    packed, digests = store.read_packed_states("sp", ["a", "b", "nobody"])
    states, want = store.read_states_with_digests("sp", ["a", "b", "nobody"])
    assert digests == want and set(packed) == {"a", "b"} and states["nobody"] is None
    assert all(packed.raw[u] == pack_state(states[u]) for u in ("a", "b"))
    # a commit of packed states writes those bytes as they are
    raw = pack_state(_state(7.0))
    store.commit(UserCommit("sp", PackedStates({"a": raw}), {fk: 4}, {fk: 3}, {}, {},
                            expected_states={"a": digests["a"]}))
    assert store.r.get(store.user_key("sp", "a")) == raw


def test_the_commit_loads_its_script_again_when_redis_lost_it(store):
    """After a restart or SCRIPT FLUSH Redis does not know the script's sha: the call loads it and goes on."""
    fk = FenceKey("g", "user.events", 1)
    store.r.script_flush()
    store.commit(UserCommit("sp", {"u": _state(1.0)}, {fk: 5}, {fk: -1}, {}, {}))
    assert store.read_fences([fk]) == {fk: 5}
    with pytest.raises(FenceMovedError):  # the script's own refusals still come back as they are
        store.commit(UserCommit("sp", {"u": _state(2.0)}, {fk: 6}, {fk: -1}, {}, {}))
