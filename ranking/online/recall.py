"""Recall for one user: the user's vector from Redis, a Milvus top-k in the same space, a fallback without one.

Sources, in order:
- ``vector``: the user has a state in the current space (from events, or the prior set at registration);
  Milvus search by inner product, excluding what the user has already seen.
- ``fallback``: no vector yet. Items are scored by freshness-weighted popularity
  (``log1p(pop) * 2^(-age/half_life)`` plus a small boost for the newest items) from the Redis popularity and
  freshness sets, so a brand-new user still gets something recent that others engaged with.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from indexing.milvus_items import ItemIndex, collection_for
from indexing.redis_state import RedisState
from ranking.online.ttl_cache import TTLValue

# items dated more than this ahead of the clock are left out of the fallback list (the worker's default
# stream.max_clock_skew_s: it dead-letters newer posts, see streams.cores.event_time)
FALLBACK_MAX_AHEAD_MS = 300_000


@dataclass(frozen=True)
class RecallItem:
    item_id: str
    score: float
    kind: str = ""
    created_at_ms: int = 0


@dataclass
class RecallResult:
    user_id: str
    source: str  # vector | fallback
    space: str
    items: list[RecallItem]
    user_state: dict[str, Any] = field(default_factory=dict)
    timings_ms: dict[str, float] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "user_id": self.user_id,
            "source": self.source,
            "space": self.space,
            "user_state": self.user_state,
            "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
            "items": [vars(i) for i in self.items],
        }


class Recaller:
    """Recall top-k items for a user.

    Args:
        users: the Redis user store.
        items: the Milvus items collection of the served space.
        space: the vector-space id (defaults to the one Redis says is served).
        fresh_half_life_s: half-life of the freshness decay in the fallback.
        clock: epoch-seconds clock.
        cache_s: how long one scored fallback list is shared (0: scored on every call).
    """

    def __init__(
        self,
        users: RedisState,
        items: ItemIndex,
        space: str | None = None,
        fresh_half_life_s: float = 3 * 24 * 3600.0,
        clock: Callable[[], float] = time.time,
        cache_s: float = 0.0,
    ) -> None:
        self.users = users
        self.items = items
        self.space = space or users.current_space() or ""
        self.half_life = fresh_half_life_s
        self.clock = clock
        self._fallback_cache: TTLValue[list[RecallItem]] = TTLValue(cache_s)

    def recall(self, user_id: str, k: int = 20, exclude_seen: bool = True) -> RecallResult:
        t0 = time.perf_counter()
        vec, state = self.users.user_vector(self.space, user_id)
        seen = self.users.seen(user_id) if exclude_seen else []
        t1 = time.perf_counter()
        timings = {"redis": (t1 - t0) * 1000}
        info: dict[str, Any] = {}
        if state is not None:
            info = {"n_events": state.n_events, "source": state.source, "weight": round(state.weight, 4)}
        if vec is not None:
            hits = self.items.search(vec[None, :], k, exclude=[seen])[0]
            timings["milvus"] = (time.perf_counter() - t1) * 1000
            items = [RecallItem(h.item_id, h.score, h.kind, h.created_at_ms) for h in hits]
            return RecallResult(user_id, "vector", self.space, items, info, timings)
        items = self.fallback(k, set(seen))
        timings["fallback"] = (time.perf_counter() - t1) * 1000
        return RecallResult(user_id, "fallback", self.space, items, info, timings)

    def fallback(self, k: int, exclude: set[str]) -> list[RecallItem]:
        """Freshness-weighted popular items (see module docstring), without ``exclude``. The scored list is shared
        by the calls of one ``cache_s`` (:class:`~ranking.online.ttl_cache.TTLValue`)."""
        pool = max(200, 10 * k)
        scored = self._fallback_cache.get(lambda: self._score_fallback(pool), key=pool)
        return [r for r in scored if r.item_id not in exclude][:k]

    def _score_fallback(self, pool: int) -> list[RecallItem]:
        """The fallback's ``pool`` most popular and ``pool`` newest items, scored and sorted."""
        pop = dict(self.users.popular(self.space, pool))
        fresh = dict(self.users.freshest(self.space, pool))
        missing = [i for i in pop if i not in fresh]
        if missing:
            for r in self.items.get_rows(missing):
                fresh[str(r["item_id"])] = int(r["created_at"])  # type: ignore[call-overload]
        now_ms = self.clock() * 1000
        # an item dated past the clock (indexed before the worker refused such posts) would rank first forever
        fresh = {i: ms for i, ms in fresh.items() if ms <= now_ms + FALLBACK_MAX_AHEAD_MS}
        newest = max(fresh.values(), default=0)
        scored = []
        for item, created in fresh.items():
            age_s = max(0.0, (now_ms - created) / 1000)
            score = math.log1p(pop.get(item, 0.0)) * 2 ** (-age_s / self.half_life)
            score += 0.1 * 2 ** (-max(0.0, (newest - created) / 1000) / 3600.0)  # newest hour's items surface
            scored.append(RecallItem(item, score, "", created))
        scored.sort(key=lambda r: r.score, reverse=True)
        return scored


def served_index(milvus: Any, models_dir: Any, users: RedisState, *, serving: bool = False) -> ItemIndex:
    """The items collection of the space Redis says is served (the text space when none is recorded yet).

    Args:
        milvus: ``infra.settings.MilvusSettings``.
        models_dir: The versioned model directory (for the space's dimension).
        users: The Redis user store.
        serving: Give the index the serving path's deadlines (the API), not the ingest path's (the CLI).
    """
    from encoders.registry import ModelRegistry
    from encoders.text import MODEL_NAME

    reg = ModelRegistry(models_dir)
    space = users.current_space() or ""
    if space.startswith("cb2cf@"):
        m = reg.load("cb2cf", space.split("@", 1)[1], verify=False).manifest
        dim = int(m.extra.get("space_dim", m.dim))
    else:
        dim = reg.load(MODEL_NAME, verify=False).manifest.dim
    return ItemIndex(milvus, dim=dim, collection=collection_for(milvus, space), serving=serving)
