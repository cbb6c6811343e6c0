"""The bulk user update (``apply_packed``, what ``apply_events`` runs) against the per-user computation it replaced,
kept here as the reference: over random batches (repeat users, every action, late events, priors, states from the
future clamped to the clock) both give the same states, and the packed rows are ``pack_state``'s bytes."""

from __future__ import annotations

import numpy as np
import pytest

from contracts.actions import ACTION_WEIGHTS
from indexing.redis_state import PackedStates, UserState, pack_state, pack_states, unpack_states
from streams.cores import event_time
from streams.cores.user_update import EventBatch, apply_events, apply_packed, decay

H = 7 * 24 * 3600.0
NOW = 1_796_000_000.0


def reference_apply_events(states, batch, half_life_s, now_s=None, max_ahead_s=300.0):
    """The per-user loop ``apply_events`` was before it ran in bulk (the same formulas, one user at a time)."""
    n = len(batch.users)
    if n == 0:
        return {}
    dim = batch.item_vecs.shape[1]
    weights = np.array([ACTION_WEIGHTS[a] for a in batch.actions], dtype=np.float64)
    ts = np.asarray(batch.ts, dtype=np.float64)
    uniq, inv = np.unique(np.asarray(batch.users, dtype=object), return_inverse=True)
    t_old = np.array([(s.ts if (s := states.get(u)) is not None else -np.inf) for u in uniq], dtype=np.float64)
    if now_s is not None:
        ts = event_time.clamp(ts, now_s, max_ahead_s)
        t_old = event_time.clamp(t_old, now_s, max_ahead_s)
    t_max_ev = np.full(len(uniq), -np.inf)
    np.maximum.at(t_max_ev, inv, ts)
    t_new = np.maximum(t_old, t_max_ev)
    ev_w = weights * decay(t_new[inv] - ts, half_life_s)
    add_vec = np.zeros((len(uniq), dim), dtype=np.float64)
    np.add.at(add_vec, inv, ev_w[:, None] * batch.item_vecs.astype(np.float64))
    add_w = np.zeros(len(uniq))
    np.add.at(add_w, inv, np.abs(ev_w))
    counts = np.bincount(inv, weights=(weights != 0).astype(np.float64), minlength=len(uniq)).astype(int)
    out = {}
    for j, u in enumerate(uniq):
        old = states.get(u)
        if old is None:
            vec, w, n_ev, src = add_vec[j], add_w[j], int(counts[j]), "events"
        else:
            d = float(decay(t_new[j] - t_old[j], half_life_s)) if np.isfinite(t_old[j]) else 1.0
            vec = old.vec.astype(np.float64) * d + add_vec[j]
            w = old.weight * d + add_w[j]
            n_ev = old.n_events + int(counts[j])
            src = "events" if n_ev > 0 else old.source
        out[str(u)] = UserState(vec=vec.astype(np.float32), weight=float(w), ts=float(t_new[j]), n_events=n_ev,
                                source=src)
    return out


def random_case(rng: np.random.Generator, n: int, n_users: int, dim: int = 8):
    users = [f"u{int(k)}" for k in rng.integers(0, n_users, size=n)]
    actions = list(rng.choice(list(ACTION_WEIGHTS), size=n))
    ts = NOW - rng.uniform(0, 3 * H, size=n)
    ts[rng.random(n) < 0.05] += 30 * 24 * 3600.0  # a few from the future (clamped when the clock is given)
    vecs = rng.normal(size=(n, dim)).astype(np.float32)
    states: dict[str, UserState | None] = {}
    for k in range(n_users):
        r = rng.random()
        if r < 0.3:
            continue  # a new user
        src = ["events", "prior", "dssm"][int(rng.integers(0, 3))]
        t = [NOW - rng.uniform(0, 5 * H), NOW + 90 * 24 * 3600.0, -np.inf][int(rng.choice(3, p=[0.85, 0.1, 0.05]))]
        states[f"u{k}"] = UserState(rng.normal(size=dim).astype(np.float32), float(rng.uniform(0, 20)), float(t),
                                    int(rng.integers(0, 50)) if src == "events" else 0, src)
    return states, EventBatch(users=users, item_vecs=vecs, actions=actions, ts=ts)


def assert_same(got: dict[str, UserState], want: dict[str, UserState]) -> None:
    assert set(got) == set(want)
    for u, w in want.items():
        g = got[u]
        assert (g.n_events, g.source, g.ts) == (w.n_events, w.source, w.ts), u
        assert g.weight == pytest.approx(w.weight, rel=1e-12, abs=1e-12), u
        np.testing.assert_allclose(g.vec, w.vec, rtol=1e-6, atol=1e-6, err_msg=u)


@pytest.mark.parametrize("seed", range(12))
@pytest.mark.parametrize("clock", [None, NOW])
def test_bulk_update_equals_the_per_user_reference(seed, clock):
    rng = np.random.default_rng(seed)
    states, batch = random_case(rng, n=int(rng.integers(1, 600)), n_users=int(rng.integers(1, 120)))
    want = reference_apply_events(states, batch, H, now_s=clock)
    assert_same(apply_events(states, batch, H, now_s=clock), want)
    # the engine's form: the states read packed, the result packed as the commit writes it
    packed_in = PackedStates({u: pack_state(st) for u, st in states.items() if st is not None})
    out = apply_packed(packed_in, batch, H, now_s=clock)
    assert_same(dict(out.items()), want)
    assert all(out.raw[u] == pack_state(out[u]) for u in out)


def test_bulk_pack_and_unpack_are_pack_state_byte_for_byte():
    rng = np.random.default_rng(1)
    states = [UserState(rng.normal(size=5).astype(np.float32), float(rng.random()), float(rng.random() * 1e9), k,
                        ["events", "prior", "dssm"][k % 3]) for k in range(20)]
    raws = [pack_state(st) for st in states]
    assert pack_states(unpack_states(raws, 5)) == raws
    with pytest.raises(ValueError):
        unpack_states([raws[0][:-1]], 5)
    with pytest.raises(ValueError):
        unpack_states([b"\x02" + raws[0][1:]], 5)  # an unknown format


def test_the_reference_comparison_can_fail():
    """A bulk sum that forgets the old state's decay is caught."""
    rng = np.random.default_rng(3)
    states, batch = random_case(rng, n=200, n_users=20)
    want = reference_apply_events(states, batch, H)
    wrong = reference_apply_events(states, EventBatch(batch.users, batch.item_vecs, batch.actions,
                                                      np.asarray(batch.ts) + H), H)
    with pytest.raises(AssertionError):
        assert_same(wrong, want)


def test_the_commit_command_is_packed_as_redis_py_packs_it():
    """RedisState sends the commit script's call packed by hiredis in one C call: the bytes redis-py would send."""
    from hiredis import pack_command
    from redis.connection import Connection

    from indexing.redis_keys import RedisKeys
    from indexing.redis_state import FenceKey, UserCommit, encode_commit

    f0, f1 = FenceKey("g", "t.user.events", 0), FenceKey("g", "t.user.events", 1)
    states = PackedStates({"u é": pack_state(UserState(np.arange(4, dtype=np.float32), 2.5, NOW, 3, "prior"))})
    commit = UserCommit("sp", states, {f0: 9, f1: 4}, {f0: -1, f1: 3}, {"u é": [("i:1", NOW + 0.25)]},
                        {1: {"i:1": 2.0}}, expected_states={"u é": ""}, engaged={"u é": [("i:1", NOW + 0.25)]},
                        parked={f0: [7]})
    keys, args = encode_commit(commit, RedisKeys("thaw:", 2))
    cmd = ("EVALSHA", "0" * 40, len(keys), *keys, *args)
    assert pack_command(cmd) == b"".join(Connection().pack_command(*cmd))
