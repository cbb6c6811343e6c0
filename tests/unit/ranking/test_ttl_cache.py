"""The per-space caches of the API: one build per ``ttl_s`` shared by every request, a rebuild that never queues the
others, and the fresh window and fallback list built from them with each request's own exclusions. No services."""

from __future__ import annotations

import threading
from typing import Any

import numpy as np
import pytest

from infra.settings import Settings
from ranking.online.pipeline import Recommender
from ranking.online.recall import Recaller
from ranking.online.ttl_cache import TTLValue


class _Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def test_builds_once_per_ttl_and_per_key():
    clock = _Clock()
    c: TTLValue[int] = TTLValue(1.0, clock=clock)
    calls = []

    def build(v: int) -> int:
        calls.append(v)
        return v

    assert c.get(lambda: build(1)) == 1 and c.get(lambda: build(2)) == 1
    assert c.get(lambda: build(3), key="other") == 3
    clock.t += 1.01
    assert c.get(lambda: build(4)) == 4
    assert calls == [1, 3, 4] and c.builds == 3


def test_ttl_zero_builds_every_time():
    c: TTLValue[int] = TTLValue(0.0)
    assert [c.get(lambda i=i: i) for i in range(3)] == [0, 1, 2]


def test_a_rebuild_does_not_queue_the_other_callers():
    clock = _Clock()
    c: TTLValue[str] = TTLValue(1.0, clock=clock)
    c.get(lambda: "old")
    clock.t += 2
    started, release = threading.Event(), threading.Event()

    def slow() -> str:
        started.set()
        release.wait(5)
        return "new"

    t = threading.Thread(target=lambda: c.get(slow))
    t.start()
    assert started.wait(5)
    assert c.get(lambda: pytest.fail("a second build while one runs")) == "old"  # served at once
    release.set()
    t.join(5)
    assert c.get(lambda: "unused") == "new"


def test_a_failed_rebuild_raises_and_the_next_call_builds_again():
    clock = _Clock()
    c: TTLValue[str] = TTLValue(1.0, clock=clock)
    c.get(lambda: "good")
    clock.t += 2

    def boom() -> str:
        raise ConnectionError("redis away")

    with pytest.raises(ConnectionError):
        c.get(boom)
    assert c.get(lambda: "again") == "again"  # the failed build stored nothing


NOW = 1_796_000_000.0
NOW_MS = int(NOW * 1000)


class _Users:
    def __init__(self, window: list[tuple[str, int]]) -> None:
        self.window = window
        self.reads = 0
        self.pop_reads = 0

    def created_since(self, space: str, since_ms: int, n: int, until_ms: int | None = None) -> list[tuple[str, int]]:
        self.reads += 1
        return [(i, ms) for i, ms in self.window if since_ms <= ms <= (until_ms or ms)][:n]

    def item_meta(self, ids: list[str]) -> dict[str, Any]:
        return {}

    def popular(self, space: str, n: int) -> list[tuple[str, float]]:
        self.pop_reads += 1
        return [("hit", 9.0), ("other", 3.0)]

    def freshest(self, space: str, n: int) -> list[tuple[str, int]]:
        return self.window[:n]

    def current_space(self) -> str:
        return "text@t"


class _Index:
    def __init__(self, vecs: dict[str, np.ndarray]) -> None:
        self.vecs = vecs
        self.lookups = 0

    def get_vectors(self, ids: list[str], strong_retry: bool = False) -> dict[str, np.ndarray]:
        self.lookups += 1
        return {i: self.vecs[i] for i in ids if i in self.vecs}

    def get_rows(self, ids: list[str]) -> list[dict[str, Any]]:
        return [{"item_id": i, "created_at": NOW_MS - 7 * 24 * 3600_000} for i in ids]


def _rec(users: _Users, index: _Index, cache_s: float) -> Recommender:
    serve = Settings().serve.model_copy(update={"fresh_cache_s": cache_s, "fresh_k": 2})
    return Recommender(serve, users, index, "text@t", None, clock=lambda: NOW)  # type: ignore[arg-type]


def test_the_fresh_window_is_read_once_per_ttl_and_each_request_excludes_its_own_seen_items():
    window = [("n1", NOW_MS - 1000), ("n2", NOW_MS - 2000), ("n3", NOW_MS - 3000)]
    vecs = {"n1": np.array([1.0, 0.0], np.float32), "n2": np.array([0.8, 0.6], np.float32),
            "n3": np.array([0.0, 1.0], np.float32)}
    users, index = _Users(window), _Index(vecs)
    rec = _rec(users, index, cache_s=60.0)
    v = np.array([1.0, 0.0], np.float32)
    since, until = NOW_MS - 3600_000, NOW_MS + 300_000
    assert [c.item_id for c in rec._fresh(v, set(), since, until)] == ["n1", "n2"]
    assert [c.item_id for c in rec._fresh(v, {"n1"}, since, until)] == ["n2", "n3"]
    assert [c.item_id for c in rec._fresh(v, {"n1", "n2", "n3"}, since, until)] == []
    assert users.reads == 1 and index.lookups == 1
    # a window bound that moved past an item leaves it out of the cached window too
    assert [c.item_id for c in rec._fresh(v, set(), NOW_MS - 1500, until)] == ["n1"]
    uncached = _rec(_Users(window), _Index(vecs), cache_s=0.0)
    for _ in range(3):
        uncached._fresh(v, set(), since, until)
    assert uncached.users.reads == 3  # type: ignore[attr-defined]


def test_the_fallback_list_is_scored_once_per_ttl_with_each_callers_exclusions():
    users = _Users([("n1", NOW_MS - 1000)])
    rec = Recaller(users, _Index({}), clock=lambda: NOW, cache_s=60.0)  # type: ignore[arg-type]
    first = [r.item_id for r in rec.fallback(3, set())]
    assert set(first) == {"hit", "other", "n1"}
    assert "hit" not in [r.item_id for r in rec.fallback(3, {"hit"})]
    assert users.pop_reads == 1
