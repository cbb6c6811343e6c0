"""Items dated past the clock (indexed before the worker refused future-dated posts) never take the top of the
fallback list nor a place in the fresh window. In-memory stand-ins for Redis; no services."""

from __future__ import annotations

from typing import Any

import numpy as np

from ranking.online.pipeline import FRESH_MAX_AHEAD_MS
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
