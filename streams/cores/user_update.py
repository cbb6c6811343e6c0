"""Incremental user vectors: a time-decayed, action-weighted sum of the vectors of the items a user engaged with.

Pure functions, no I/O: the user agent reads states from Redis, calls :func:`apply_events`, writes the result.

State per user: ``S`` (D float32, the decayed weighted sum), ``W`` (the decayed total weight), ``T`` (the time the
state is decayed to, epoch seconds). An event of action weight ``a`` on item vector ``v`` at time ``t`` contributes
``a * 2^(-(T' - t)/h) * v`` where ``T' = max(T, t)`` is the new state time and ``h`` the half-life; the old state
decays by ``2^(-(T' - T)/h)``. The update is a closed form over the batch, so it does not depend on the order of
events within a batch, and an out-of-order event counts for what it would have counted had it arrived in time.
The served user vector is ``S / ||S||``. Negative actions (skip) push the vector away from the item.

A brand-new user starts from a prior (declared genres/artists, later a group prior) with weight
``PRIOR_WEIGHT``, so a handful of real events moves them toward their own taste.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import sparse

from contracts.actions import ACTION_WEIGHTS
from indexing.redis_state import (
    SOURCE_CODES,
    PackedStates,
    StateArrays,
    UserState,
    pack_state,
    pack_states,
    unpack_states,
)
from streams.cores import event_time

PRIOR_WEIGHT = 2.0


@dataclass(frozen=True)
class EventBatch:
    """Column arrays for one batch of already-validated events whose items are known.

    ``users[i]`` is the user id of event i, ``item_vecs`` is N x D float32, ``actions`` the action names,
    ``ts`` epoch seconds.
    """

    users: Sequence[str]
    item_vecs: np.ndarray
    actions: Sequence[str]
    ts: np.ndarray


def decay(dt: np.ndarray | float, half_life_s: float) -> np.ndarray:
    return np.exp2(-np.maximum(np.asarray(dt, dtype=np.float64), 0.0) / half_life_s)


def apply_events(
    states: Mapping[str, UserState | None],
    batch: EventBatch,
    half_life_s: float,
    now_s: float | None = None,
    max_ahead_s: float = 300.0,
) -> dict[str, UserState]:
    """New states for every user in ``batch`` (``states`` holds their current state or None).

    With ``now_s`` (the worker's clock), an event time or a state time more than ``max_ahead_s`` ahead of it counts
    as ``now_s`` (:func:`streams.cores.event_time.clamp`): one event dated in the future cannot move a state's time
    there and freeze its decay, and a state that holds such a time already decays normally from its next event on.
    The computation is :func:`apply_packed`'s; this unpacks its result.
    """
    return dict(apply_packed(states, batch, half_life_s, now_s, max_ahead_s).items())


def factorize(keys: Sequence[str]) -> tuple[dict[str, int], np.ndarray]:
    """The distinct ``keys`` (key -> its index, in order of first appearance) and the index of each key."""
    index: dict[str, int] = {}
    setdefault = index.setdefault
    inv = np.fromiter((setdefault(k, len(index)) for k in keys), dtype=np.intp, count=len(keys))
    return index, inv


def _packed(states: Mapping[str, UserState | None], users: Iterable[str]) -> dict[str, bytes]:
    """The packed bytes of the current state of each of ``users`` that has one (as they are for a
    :class:`PackedStates`, the engine's read)."""
    if isinstance(states, PackedStates):
        raw = states.raw
        return {u: raw[u] for u in users if u in raw}
    out: dict[str, bytes] = {}
    for u in users:
        if (st := states.get(u)) is not None:
            out[u] = pack_state(st)
    return out


def apply_packed(
    states: Mapping[str, UserState | None],
    batch: EventBatch,
    half_life_s: float,
    now_s: float | None = None,
    max_ahead_s: float = 300.0,
) -> PackedStates:
    """:func:`apply_events` over the batch's users as rows of arrays (no per-user Python but reading their
    states), the new states packed as the commit writes them. ``states`` may be a :class:`PackedStates`, whose
    bytes are read as they are.

    Per user ``u`` with events ``j``: ``T' = max(T, max_j t_j)``, ``S' = S·2^(-(T'-T)/h) + Σ_j a_j·2^(-(T'-t_j)/h)·v_j``
    and ``W' = W·2^(-(T'-T)/h) + Σ_j |a_j·2^(-(T'-t_j)/h)|`` (a user without a state starts from 0 at ``-inf``;
    a state time that is not finite does not decay); the sums run in batch order.
    """
    n = len(batch.users)
    if n == 0:
        return PackedStates({})
    vecs = np.asarray(batch.item_vecs)
    dim = vecs.shape[1]
    index, inv = factorize(batch.users)
    n_users = len(index)
    weights = np.fromiter(map(ACTION_WEIGHTS.__getitem__, batch.actions), dtype=np.float64, count=n)
    ts = np.asarray(batch.ts, dtype=np.float64)
    have = _packed(states, index)
    old = unpack_states(list(have.values()), dim)
    pos = np.fromiter(map(index.__getitem__, have), dtype=np.intp, count=len(have))  # their rows
    t_old = np.full(n_users, -np.inf)
    t_old[pos] = old.ts
    if now_s is not None:
        ts = event_time.clamp(ts, now_s, max_ahead_s)
        t_old = event_time.clamp(t_old, now_s, max_ahead_s)
    t_max_ev = np.full(n_users, -np.inf)
    np.maximum.at(t_max_ev, inv, ts)
    t_new = np.maximum(t_old, t_max_ev)
    ev_w = weights * decay(t_new[inv] - ts, half_life_s)  # N
    # per-user sums, in batch order: (users x events, the events' decayed weights) @ (events x D)
    vec = sparse.csr_matrix((ev_w, (inv, np.arange(n))), shape=(n_users, n)) @ vecs  # float64
    weight = np.bincount(inv, weights=np.abs(ev_w), minlength=n_users)
    n_events = np.bincount(inv, weights=(weights != 0).astype(np.float64), minlength=n_users).astype(np.int64)
    source = np.full(n_users, SOURCE_CODES["events"], dtype=np.uint8)
    if len(have):
        t0 = t_old[pos]
        d = np.where(np.isfinite(t0), decay(t_new[pos] - np.where(np.isfinite(t0), t0, 0.0), half_life_s), 1.0)
        vec[pos] += old.vec.astype(np.float64) * d[:, None]
        weight[pos] += old.weight * d
        n_events[pos] += old.n_events
        source[pos] = np.where(n_events[pos] > 0, SOURCE_CODES["events"], old.source)
    rows = pack_states(StateArrays(n_events, weight, t_new, source, vec))  # packed as float32
    return PackedStates(dict(zip(index, rows, strict=True)))


def prior_state(prior_vec: np.ndarray, ts: float, weight: float = PRIOR_WEIGHT) -> UserState:
    """The starting state of a brand-new user from a unit prior vector."""
    v = np.asarray(prior_vec, dtype=np.float32)
    n = float(np.linalg.norm(v))
    if n > 0:
        v = v / n
    return UserState(vec=(v * weight).astype(np.float32), weight=weight, ts=ts, n_events=0, source="prior")


def combine_priors(taste: np.ndarray | None, group: np.ndarray | None) -> np.ndarray | None:
    """A new user's prior from their declared tastes and their group prior (gender and age, in a CF space):
    either one alone, or the unit taste vector plus the (unit) group prior when both exist; None when neither."""
    if taste is None:
        return group
    if group is None:
        return taste
    t = taste / max(float(np.linalg.norm(taste)), 1e-12)
    return t + group


def profile_text(genres: Sequence[str], artists: Sequence[str], region: str | None = None) -> str:
    """The text a new user's declared tastes are embedded from (empty when nothing was declared)."""
    parts = []
    if genres:
        parts.append("music genres: " + ", ".join(genres))
    if artists:
        parts.append("artists: " + ", ".join(artists))
    return ". ".join(parts)
