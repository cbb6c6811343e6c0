import numpy as np
import pytest

from indexing.redis_state import UserState
from streams.cores.user_update import EventBatch, apply_events, prior_state, profile_text

H = 100.0


def _batch(users, vecs, actions, ts):
    return EventBatch(users=users, item_vecs=np.asarray(vecs, dtype=np.float32), actions=actions,
                      ts=np.asarray(ts, dtype=np.float64))


def test_first_events_build_weighted_sum():
    out = apply_events({}, _batch(["u", "u"], [[1, 0], [0, 1]], ["play", "like"], [10, 10]), H)
    st = out["u"]
    # play weight 2, like weight 4, same time: S = (2, 4), W = 6
    np.testing.assert_allclose(st.vec, [2, 4], rtol=1e-6)
    assert st.weight == pytest.approx(6)
    assert st.n_events == 2 and st.ts == 10


def test_decay_by_half_life_and_order_independence():
    a = apply_events({}, _batch(["u", "u"], [[1, 0], [0, 1]], ["play", "play"], [0, H]), H)["u"]
    # the first event is one half-life older than the state time: (2*0.5, 2)
    np.testing.assert_allclose(a.vec, [1, 2], rtol=1e-6)
    b = apply_events({}, _batch(["u", "u"], [[0, 1], [1, 0]], ["play", "play"], [H, 0]), H)["u"]
    np.testing.assert_allclose(a.vec, b.vec, rtol=1e-6)
    # incremental: applying the second event later equals applying both at once
    first = apply_events({}, _batch(["u"], [[1, 0]], ["play"], [0]), H)
    second = apply_events(first, _batch(["u"], [[0, 1]], ["play"], [H]), H)["u"]
    np.testing.assert_allclose(second.vec, a.vec, rtol=1e-6)
    assert second.weight == pytest.approx(a.weight)


def test_out_of_order_event_is_decayed_not_the_state():
    st = apply_events({}, _batch(["u"], [[1, 0]], ["play"], [H]), H)
    late = apply_events(st, _batch(["u"], [[0, 1]], ["play"], [0]), H)["u"]
    np.testing.assert_allclose(late.vec, [2, 1], rtol=1e-6)
    assert late.ts == H


def test_skip_pushes_away_and_impression_is_neutral():
    st = apply_events({}, _batch(["u", "u"], [[1, 0], [0, 1]], ["like", "skip"], [0, 0]), H)["u"]
    np.testing.assert_allclose(st.vec, [4, -1], rtol=1e-6)
    imp = apply_events({}, _batch(["v"], [[1, 0]], ["impression"], [0]), H)["v"]
    assert imp.unit() is None and imp.n_events == 0


def test_prior_is_outweighed_by_events():
    prior = prior_state(np.array([1.0, 0.0]), ts=0.0)
    assert prior.source == "prior"
    st = apply_events({"u": prior}, _batch(["u"] * 3, [[0, 1]] * 3, ["like"] * 3, [0, 0, 0]), H)["u"]
    assert st.source == "events" and st.n_events == 3
    u = st.unit()
    assert u[1] > u[0] > 0


def test_many_users_one_batch():
    rng = np.random.default_rng(0)
    users = [f"u{i % 7}" for i in range(50)]
    vecs = rng.normal(size=(50, 4))
    out = apply_events({}, _batch(users, vecs, ["play"] * 50, np.zeros(50)), H)
    assert len(out) == 7
    for j in range(7):
        idx = [i for i in range(50) if users[i] == f"u{j}"]
        np.testing.assert_allclose(out[f"u{j}"].vec, 2 * vecs[idx].sum(0), rtol=1e-5)


def test_unit_and_profile_text():
    assert UserState(np.zeros(3, np.float32), 0, 0).unit() is None
    assert profile_text(["jazz", "folk"], []) == "music genres: jazz, folk"
    assert profile_text([], []) == ""
