"""Items dated past the clock (indexed before the worker refused future-dated posts) never take the top of the
fallback list, a place in the fresh window, nor (found by the vector search) the "new" flag and a place of the
new-item quota. In-memory stand-ins for Redis and Milvus; no services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from indexing.milvus_items import Hit
from indexing.redis_state import UserState
from infra.settings import ABVariant, ServeSettings
from ranking.online.pipeline import FRESH_MAX_AHEAD_MS, RankerPool, Recommender, is_new_item
from ranking.online.recall import FALLBACK_MAX_AHEAD_MS, Recaller

NOW = 1_796_000_000.0
NOW_MS = int(NOW * 1000)
FAR_MS = 253_370_764_800_000  # 9999-01-01


class _Users:
    """The freshness and popularity sets of one space."""

    def __init__(self, fresh: dict[str, int]) -> None:
        self.fresh = fresh

    def popular(self, space: str, n: int) -> list[tuple[str, float]]:
        return [("old-hit", 50.0)]

    def freshest(self, space: str, n: int) -> list[tuple[str, int]]:
        return sorted(self.fresh.items(), key=lambda kv: -kv[1])[:n]

    def current_space(self) -> str:
        return "text@t"

    def created_since(self, space: str, since_ms: int, n: int, until_ms: int | None = None) -> list[tuple[str, int]]:
        top = np.inf if until_ms is None else until_ms
        return [(i, ms) for i, ms in self.freshest(space, 10**9) if since_ms <= ms <= top][:n]


class _Index:
    def get_rows(self, ids: list[str]) -> list[dict[str, Any]]:
        return [{"item_id": i, "created_at": NOW_MS - 3600_000} for i in ids]


def test_the_fallback_leaves_out_items_dated_past_the_clock() -> None:
    users = _Users({"far-future": FAR_MS, "next-hour": NOW_MS + 3600_000, "just-now": NOW_MS - 1000,
                    "in-skew": NOW_MS + FALLBACK_MAX_AHEAD_MS - 1})
    rec = Recaller(users, _Index(), clock=lambda: NOW)  # type: ignore[arg-type]
    got = [r.item_id for r in rec.fallback(10, set())]
    assert set(got) == {"old-hit", "just-now", "in-skew"}


def test_the_fresh_window_leaves_out_items_dated_past_the_clock() -> None:
    from infra.settings import Settings
    from ranking.online.pipeline import Recommender

    users = _Users({"far-future": FAR_MS, "next-hour": NOW_MS + 3600_000, "just-now": NOW_MS - 1000,
                    "in-skew": NOW_MS + FRESH_MAX_AHEAD_MS - 1})
    users.item_meta = lambda ids: {}  # type: ignore[attr-defined]

    class _Vectors:
        def search(self, vectors: np.ndarray, k: int, **_: Any) -> list[list[Any]]:
            return [[]]

        def get_vectors(self, ids: list[str], strong_retry: bool = False) -> dict[str, np.ndarray]:
            return {i: np.array([1.0, 0.0], np.float32) for i in ids}

    rec = Recommender(Settings().serve, users, _Vectors(), "text@t", None, clock=lambda: NOW)  # type: ignore[arg-type]
    source, cands = rec._recall(np.array([1.0, 0.0], np.float32), [], NOW_MS, {})
    assert source == "vector" and {c.item_id for c in cands} == {"just-now", "in-skew"}


def _quota_recommender(hits: list[Any]) -> Any:
    """A recall-order arm with a new-item quota of half the list, for a user with a vector, over an index whose
    search returns ``hits``."""
    class _User(_Users):
        def request_view(self, space: str, user_id: str, n_engaged: int = 200) -> tuple[Any, list[Any], list[Any],
                                                                                           dict[str, Any]]:
            return UserState(np.array([1.0, 0.0], np.float32), 1.0, NOW, n_events=3), [], [], {}

        def item_meta(self, ids: list[str]) -> dict[str, Any]:
            return {}

    class _Searched(_Index):
        def search(self, vectors: np.ndarray, k: int, **_: Any) -> list[list[Any]]:
            return [hits[:k]]

    serve = ServeSettings(variants=(ABVariant(name="recall", ranker="none"),), fresh_k=0, new_item_share=0.5)
    return Recommender(serve, _User({}), _Searched(), "text@t", RankerPool(Path("/nonexistent")),  # type: ignore[arg-type]
                       clock=lambda: NOW)


def test_a_far_future_vector_hit_is_not_new_and_takes_no_quota_place() -> None:
    old_ms = NOW_MS - 30 * 86_400_000  # outside the fresh window
    hits = [Hit("old-1", 0.9, "track", "c", old_ms), Hit("old-2", 0.8, "track", "c", old_ms),
            Hit("far-future", 0.1, "track", "c", FAR_MS)]
    rec = _quota_recommender(hits)
    out = rec.recommend("u1", 2)
    assert out.recall_source == "vector"
    assert [c.item_id for c in out.items] == ["old-1", "old-2"]
    assert out.exposure["recalled_new"] == 0 and out.exposure["new_added_by_quota"] == 0
    _, cands = rec._recall(np.array([1.0, 0.0], np.float32), [], NOW_MS, {})
    assert {c.item_id: c.is_new for c in cands}["far-future"] is False


def test_new_needs_both_bounds_on_the_vector_branch() -> None:
    window_ms = 24 * 3_600_000
    assert is_new_item(NOW_MS - 1000, NOW_MS, window_ms) and is_new_item(NOW_MS + FRESH_MAX_AHEAD_MS, NOW_MS, window_ms)
    assert not is_new_item(NOW_MS + FRESH_MAX_AHEAD_MS + 1, NOW_MS, window_ms)
    assert not is_new_item(NOW_MS - window_ms - 1, NOW_MS, window_ms)
    old_ms = NOW_MS - 30 * 86_400_000
    hits = [Hit("old-1", 0.9, "track", "c", old_ms), Hit("old-2", 0.8, "track", "c", old_ms),
            Hit("in-skew", 0.2, "track", "c", NOW_MS + FRESH_MAX_AHEAD_MS - 1),
            Hit("next-hour", 0.1, "track", "c", NOW_MS + 3_600_000)]
    out = _quota_recommender(hits).recommend("u1", 2)
    # the in-skew post is new and the quota brings it in; the one an hour ahead is neither
    assert [c.item_id for c in out.items] == ["old-1", "in-skew"]
    assert out.exposure["recalled_new"] == 1 and out.exposure["new_added_by_quota"] == 1
