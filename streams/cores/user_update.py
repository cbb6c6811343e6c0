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

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from contracts.actions import ACTION_WEIGHTS
from indexing.redis_state import UserState
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
    """
    n = len(batch.users)
    if n == 0:
        return {}
    dim = batch.item_vecs.shape[1]
    weights = np.array([ACTION_WEIGHTS[a] for a in batch.actions], dtype=np.float64)
    ts = np.asarray(batch.ts, dtype=np.float64)
    uniq, inv = np.unique(np.asarray(batch.users, dtype=object), return_inverse=True)
    t_old = np.array(
        [(s.ts if (s := states.get(u)) is not None else -np.inf) for u in uniq], dtype=np.float64
    )
    if now_s is not None:
        ts = event_time.clamp(ts, now_s, max_ahead_s)
        t_old = event_time.clamp(t_old, now_s, max_ahead_s)
    t_max_ev = np.full(len(uniq), -np.inf)
    np.maximum.at(t_max_ev, inv, ts)
    t_new = np.maximum(t_old, t_max_ev)
    ev_w = weights * decay(t_new[inv] - ts, half_life_s)  # N
    add_vec = np.zeros((len(uniq), dim), dtype=np.float64)
    np.add.at(add_vec, inv, ev_w[:, None] * batch.item_vecs.astype(np.float64))
    add_w = np.zeros(len(uniq))
    np.add.at(add_w, inv, np.abs(ev_w))
    counts = np.bincount(inv, weights=(weights != 0).astype(np.float64), minlength=len(uniq)).astype(int)

    out: dict[str, UserState] = {}
    for j, u in enumerate(uniq):
        old = states.get(u)
        if old is None:
            vec = add_vec[j]
            w = add_w[j]
            n_ev = int(counts[j])
            src = "events"
        else:
            d = float(decay(t_new[j] - t_old[j], half_life_s)) if np.isfinite(t_old[j]) else 1.0
            vec = old.vec.astype(np.float64) * d + add_vec[j]
            w = old.weight * d + add_w[j]
            n_ev = old.n_events + int(counts[j])
            src = "events" if n_ev > 0 else old.source
        out[str(u)] = UserState(vec=vec.astype(np.float32), weight=float(w), ts=float(t_new[j]), n_events=n_ev,
                                source=src)
    return out


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
