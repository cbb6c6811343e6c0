"""The Redis user store against the real Redis of the local stack: atomic commits and offset fences."""

import numpy as np
import pytest

from indexing.redis_users import FenceKey, FenceMovedError, UserCommit, UserState, UserStore

pytestmark = pytest.mark.integration


@pytest.fixture
def store(stack_settings, unique_name):
    s = stack_settings.namespaced(unique_name)
    st = UserStore(s.redis)
    yield st
    st.delete_prefix()


def _state(x):
    return UserState(np.array([x, 1.0], np.float32), weight=2.0, ts=10.0, n_events=1)


def test_commit_writes_states_fences_seen_and_popularity(store):
    fk = FenceKey("g", "user.events", 0)
    store.commit(UserCommit("sp", {"u1": _state(1.0)}, {fk: 41}, {fk: -1}, {"u1": [("i1", 5.0)]}, {"i1": 2.0}))
    assert store.read_fences([fk]) == {fk: 41}
    got = store.read_states("sp", ["u1", "nobody"])
    assert got["nobody"] is None
    np.testing.assert_array_equal(got["u1"].vec, [1.0, 1.0])
    assert got["u1"].n_events == 1 and got["u1"].weight == 2.0
    assert store.seen("u1") == ["i1"] and store.popular("sp", 5) == [("i1", 2.0)]


def test_stale_fence_refuses_the_whole_commit(store):
    fk = FenceKey("g", "user.events", 3)
    store.commit(UserCommit("sp", {"u": _state(1.0)}, {fk: 10}, {fk: -1}, {}, {}))
    with pytest.raises(FenceMovedError):
        # a second writer that read the fence before the first commit
        store.commit(UserCommit("sp", {"u": _state(9.0)}, {fk: 12}, {fk: -1}, {}, {"i": 1.0}))
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
    fk_events, fk_retry = FenceKey("g", "user.events", 0), FenceKey("g", "user.events.retry", 0)
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
