"""What a batch of applied user events adds besides the user vectors: seen and engaged history, item popularity,
and engagement per A/B serving arm. Pure.

- **seen**: every event but an impression (the recall filter drops items a user already reacted to);
- **engaged** and **popularity**: events with a positive action weight (:data:`ACTION_WEIGHTS`); an item's
  popularity grows by the action's weight, in the shard of the acting user (the popularity is kept per
  user-events partition so a partition's commit writes one Redis Cluster slot: ``indexing.redis_keys``);
- **A/B actions**: events whose context echoes the ``ab_variant`` that served them, counted per (arm, action).
  The arm name comes from the client, so it is a label only when the serving configuration has that arm (the
  worker passes the configured names): any other name (``random-123``, a retired arm) is counted as ``"other"``,
  one label, so metric cardinality stays bounded whatever clients send. A name ``infra.settings.ABVariant``
  could not produce at all is ``"invalid"``.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from contracts.actions import ACTION_WEIGHTS
from contracts.events import UserEvent
from streams.cores.user_event_decode import DecodedUserEvent

AB_NAME = re.compile(r"[A-Za-z0-9_.-]{1,32}")
INVALID_ARM = "invalid"
OTHER_ARM = "other"


def ab_arm(variant: str, arms: frozenset[str] | None = None) -> str:
    """The metric label of A/B variant ``variant`` as echoed by a client: itself when it is one of ``arms`` (the
    configured arm names; None: any well-formed name), else :data:`OTHER_ARM`; :data:`INVALID_ARM` when no
    configured arm could have that name."""
    if not AB_NAME.fullmatch(variant):
        return INVALID_ARM
    return variant if arms is None or variant in arms else OTHER_ARM


@dataclass
class Engagement:
    seen: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # user -> [(item, ts)]
    engaged: dict[str, list[tuple[str, float]]] = field(default_factory=dict)  # user -> [(item, ts)]
    popularity: dict[int, dict[str, float]] = field(default_factory=dict)  # shard -> item -> added weight
    ab_actions: dict[tuple[str, str], int] = field(default_factory=dict)  # (arm, action) -> events


def tally(events: Sequence[UserEvent | DecodedUserEvent], arms: frozenset[str] | None = None,
          shards: Sequence[int] | None = None) -> Engagement:
    """The engagement of ``events`` (validated events on indexed items, in batch order); ``arms``: the configured
    A/B arm names (see :func:`ab_arm`); ``shards``: each event's user shard (None: all in shard 0)."""
    return tally_columns([ev.user_id for ev in events], [ev.item_id for ev in events],
                         [ev.action.value for ev in events], [ev.ts.timestamp() for ev in events],
                         [ev.context.get("ab_variant") for ev in events], arms, shards)


def tally_columns(users: Sequence[str], items: Sequence[str], actions: Sequence[str], ts: Sequence[float],
                  variants: Sequence[str | None], arms: frozenset[str] | None = None,
                  shards: Sequence[int] | None = None) -> Engagement:
    """:func:`tally` of events given as columns (event ``j``: ``users[j]`` of shard ``shards[j]`` acted
    ``actions[j]`` on ``items[j]`` at ``ts[j]`` epoch seconds, echoing A/B variant ``variants[j]`` or None), in one
    pass without per-event objects."""
    seen: dict[str, list[tuple[str, float]]] = defaultdict(list)
    engaged: dict[str, list[tuple[str, float]]] = defaultdict(list)
    pops: dict[int, dict[str, float]] = {}
    ab: dict[tuple[str, str], int] = {}
    weights = ACTION_WEIGHTS
    shard_of = shards if shards is not None else [0] * len(users)
    for user, item, action, t, arm, shard in zip(users, items, actions, ts, variants, shard_of, strict=True):
        if action != "impression":
            seen[user].append((item, t))
        if arm is not None:
            key = (ab_arm(arm, arms), action)
            ab[key] = ab.get(key, 0) + 1
        w = weights[action]
        if w > 0:
            pop = pops.get(shard)
            if pop is None:
                pop = pops[shard] = defaultdict(float)
            pop[item] += w
            engaged[user].append((item, t))
    return Engagement(dict(seen), dict(engaged), {s: dict(p) for s, p in pops.items()}, ab)
