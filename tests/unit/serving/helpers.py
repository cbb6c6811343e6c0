"""What the API's unit tests share: an in-memory recommender, settings with authentication off or on, and the test
clients of both ports of one app."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

from fastapi.testclient import TestClient

from infra.settings import ABVariant, Settings
from ranking.online.ab import ABSplit
from ranking.online.pipeline import Candidate, Recommendation
from serving.api import ServeApps, create_apps
from serving.metrics import ServeMetrics
from serving.ports import RecommenderLike

SECRET = "hunter2-secret"
JWT_SECRET = "a-test-signing-secret-of-32-chars-or-more"


class _Users:
    def __init__(self, error: Exception | None = None, gate: threading.Event | None = None) -> None:
        self.error = error
        self.gate = gate

    def ping(self) -> bool:
        if self.gate is not None:
            self.gate.wait()
        if self.error is not None:
            raise self.error
        return True


class _Index:
    name = "thaw_fake"

    def exists(self) -> bool:
        return True

    def count(self) -> int:
        return 3


class FakeRecommender:
    """A recommender over nothing: one fixed list, or the exception it was given; with ``gate``, every call
    (``recommend``, the readiness ping) blocks until the gate is set (a hung dependency)."""

    def __init__(self, error: Exception | None = None, ping_error: Exception | None = None,
                 gate: threading.Event | None = None) -> None:
        self.error = error
        self.gate = gate
        self.space = "text@t"
        self.ab = ABSplit((ABVariant(name="control", ranker="deepfm-mmoe"), ABVariant(name="recall", ranker="none")),
                          "salt", 10)
        self.users = _Users(ping_error, gate)
        self.index = _Index()
        self.calls = 0

    def recommend(self, user_id: str, k: int = 20, variant: str | None = None) -> Recommendation:
        self.calls += 1
        if self.gate is not None:
            self.gate.wait()
        if self.error is not None:
            raise self.error
        a = self.ab.assign(user_id)
        items = [Candidate("i1", 0.5, 0, "vector", "track", 1_000, False, score=0.5)]
        exposure = {"recalled": 1, "recalled_new": 0, "new_in_top_k_by_rank": 0, "new_added_by_quota": 0,
                    "new_in_top_k": 0, "new_item_share": 0.2}
        return Recommendation(user_id, a.bucket, variant or a.variant.name, "none", self.space, "vector", items,
                              exposure, {"total": 1.0}, {"seen": 0, "engaged": 0, "ranker_history": 0,
                                                         "profile": {"gender": "f"}})

    def preload(self) -> dict[str, str]:
        return {"control": "none", "recall": "none"}

    def close(self) -> None:
        pass


def typed(rec: FakeRecommender) -> RecommenderLike:
    return rec  # the fake provides what the API uses of a recommender (``mypy`` on this file checks it)


def settings(auth: dict[str, Any] | None = None, **serve: Any) -> Settings:
    """Default settings with ``serve`` overrides; authentication off (``local-dev``) unless ``auth`` is given."""
    return Settings.model_validate({"serve": {**serve, "auth": auth if auth is not None else {"mode": "local-dev"}}})


@contextlib.contextmanager
def clients(apps: ServeApps) -> Iterator[tuple[TestClient, TestClient]]:
    """The public and the ops test client of ``apps``, both started (lifespans run)."""
    with TestClient(apps.public, raise_server_exceptions=False) as public, \
            TestClient(apps.ops, raise_server_exceptions=False) as ops:
        yield public, ops


@contextlib.contextmanager
def serving(served: Callable[[], RecommenderLike], s: Settings | None = None,
            metrics: ServeMetrics | None = None) -> Iterator[tuple[TestClient, TestClient]]:
    """:func:`clients` of an app over ``served`` (authentication off by default)."""
    with clients(create_apps(s or settings(), served=served, metrics=metrics)) as pair:
        yield pair
