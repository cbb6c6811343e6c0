"""The API's typed exception handlers: every dependency failure answers 503 naming the dependency, never a secret.

The recommender is an in-memory fake of :class:`serving.ports.RecommenderLike` that raises what a test asks for,
where the real one would meet it: building the served space, or serving a request.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from pymilvus.exceptions import MilvusException
from redis import exceptions as redis_errors

from infra.settings import ABVariant, Settings
from ranking.online.ab import ABSplit
from ranking.online.pipeline import Candidate, RankerNotPublishedError, Recommendation, UnknownUserIdError
from serving.api import create_app
from serving.ports import RecommenderLike

SECRET = "hunter2-secret"


class _Users:
    def __init__(self, error: Exception | None = None) -> None:
        self.error = error

    def ping(self) -> bool:
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
    """A recommender over nothing: one fixed list, or the exception it was given."""

    def __init__(self, error: Exception | None = None, ping_error: Exception | None = None) -> None:
        self.error = error
        self.space = "text@t"
        self.ab = ABSplit((ABVariant(name="control"), ABVariant(name="recall", ranker="none")), "salt", 10)
        self.users = _Users(ping_error)
        self.index = _Index()

    def recommend(self, user_id: str, k: int = 20, variant: str | None = None) -> Recommendation:
        if self.error is not None:
            raise self.error
        a = self.ab.assign(user_id)
        items = [Candidate("i1", 0.5, 0, "vector", "track", 1_000, False, score=0.5)]
        exposure = {"recalled": 1, "recalled_new": 0, "new_in_top_k_by_rank": 0, "new_added_by_quota": 0,
                    "new_in_top_k": 0, "new_item_share": 0.2}
        return Recommendation(user_id, a.bucket, variant or a.variant.name, "none", self.space, "vector", items,
                              exposure, {"total": 1.0}, {"seen": 0, "engaged": 0, "ranker_history": 0,
                                                         "profile": {}})

    def preload(self) -> dict[str, str]:
        return {"control": "none", "recall": "none"}

    def close(self) -> None:
        pass


def _typed(rec: FakeRecommender) -> RecommenderLike:
    return rec  # the fake provides what the API uses of a recommender (``mypy`` on this file checks it)


def _client(served: Callable[[], RecommenderLike]) -> TestClient:
    return TestClient(create_app(Settings(), served=served), raise_server_exceptions=False)


@pytest.fixture
def client_for() -> Iterator[Callable[[FakeRecommender], TestClient]]:
    clients: list[TestClient] = []

    def make(rec: FakeRecommender) -> TestClient:
        c = _client(lambda: _typed(rec))
        clients.append(c.__enter__())
        return c

    yield make
    for c in clients:
        c.__exit__(None, None, None)


class _RpcError(grpc.RpcError):
    """What a gRPC call raises when Milvus is away (grpc's own subclasses are private)."""


DEPENDENCY_FAILURES = [
    (redis_errors.ConnectionError(f"Error connecting to redis://:{SECRET}@127.0.0.1:1"), "redis", "ConnectionError"),
    (redis_errors.TimeoutError(f"Timeout reading from {SECRET}"), "redis", "TimeoutError"),
    (redis_errors.AuthenticationError(f"invalid password {SECRET}"), "redis", "AuthenticationError"),
    (redis_errors.BusyLoadingError("loading the dataset"), "redis", "BusyLoadingError"),
    (MilvusException(code=2, message=f"Fail connecting to server on {SECRET}"), "milvus", "MilvusException"),
    (_RpcError(f"UNAVAILABLE {SECRET}"), "milvus", "_RpcError"),
]


@pytest.mark.parametrize(("exc", "what", "cls"), DEPENDENCY_FAILURES, ids=lambda v: type(v).__name__)
def test_a_dependency_failure_while_serving_answers_503_naming_it(
        client_for: Callable[[FakeRecommender], TestClient], exc: Exception, what: str, cls: str) -> None:
    c = client_for(FakeRecommender(error=exc))
    r = c.get("/recommend", params={"user_id": "u1", "k": 3})
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": f"{what} unavailable ({cls}); see /readyz"}
    assert r.headers["content-type"] == "application/json"
    assert SECRET not in r.text
    assert 'thaw_api_requests_total{endpoint="/recommend",status="503"} 1.0' in c.get("/metrics").text


@pytest.mark.parametrize(("exc", "cls"), [(e, cls) for e, _, cls in DEPENDENCY_FAILURES],
                         ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("path", ["/recommend", "/ab", "/ab/u1"])
def test_a_dependency_failure_while_building_the_space_answers_503(path: str, exc: Exception, cls: str) -> None:
    def served() -> RecommenderLike:
        raise exc

    with _client(served) as c:
        r = c.get(path, params={"user_id": "u1"})
        assert r.status_code == 503, r.text
        assert r.json() == {"detail": f"the served space unavailable ({cls}); see /readyz"}
        assert SECRET not in r.text
        ready = c.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "checks": {"space": f"error: {cls}"}}


def test_readiness_reports_redis_down_without_secrets(client_for: Callable[[FakeRecommender], TestClient]) -> None:
    c = client_for(FakeRecommender(ping_error=redis_errors.ConnectionError(SECRET)))
    r = c.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "checks": {
        "space": "text@t", "redis": "error: ConnectionError", "milvus": {"collection": "thaw_fake", "rows": 3},
        "rankers": {"control": "none", "recall": "none"}}}
    assert SECRET not in r.text


def test_ready_when_every_check_passes(client_for: Callable[[FakeRecommender], TestClient]) -> None:
    r = client_for(FakeRecommender()).get("/readyz")
    assert r.status_code == 200
    assert r.json()["ready"] is True and r.json()["checks"]["redis"] == "ok"


def test_a_missing_ranker_answers_503_with_what_to_publish(
        client_for: Callable[[FakeRecommender], TestClient]) -> None:
    miss = RankerNotPublishedError("deepfm-mmoe", None, Path("/models"), "not_published", variant="control")
    r = client_for(FakeRecommender(error=miss)).get("/recommend", params={"user_id": "u1"})
    assert r.status_code == 503
    assert r.json() == {"detail": miss.to_dict()}
    assert list(r.json()["detail"]) == list(miss.to_dict())  # same keys, same order


def test_bad_parameters_answer_422_with_a_message(client_for: Callable[[FakeRecommender], TestClient]) -> None:
    bad_id = client_for(FakeRecommender(error=UnknownUserIdError("user_id must be 1-128 characters")))
    r = bad_id.get("/recommend", params={"user_id": "u1"})
    assert (r.status_code, r.json()) == (422, {"detail": "user_id must be 1-128 characters"})
    c = client_for(FakeRecommender())
    r = c.get("/recommend", params={"user_id": "u1", "variant": "nope"})
    assert (r.status_code, r.json()) == (422, {"detail": "unknown variant 'nope'; see /ab"})
    r = c.get("/ab/" + "x" * 129)
    assert (r.status_code, r.json()) == (422, {"detail": "user_id must be 1-128 characters"})
    r = c.get("/recommend", params={"user_id": "u1", "k": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "k"]


@pytest.mark.parametrize("exc", [ValueError("a bug"), ConnectionError("not a client's"), KeyError("k")],
                         ids=lambda e: type(e).__name__)
def test_other_exceptions_are_not_dependency_failures(client_for: Callable[[FakeRecommender], TestClient],
                                                       exc: Exception) -> None:
    r = client_for(FakeRecommender(error=exc)).get("/recommend", params={"user_id": "u1"})
    assert r.status_code == 500


def test_bodies_keep_the_wire_keys(client_for: Callable[[FakeRecommender], TestClient]) -> None:
    c = client_for(FakeRecommender())
    body = c.get("/recommend", params={"user_id": "u1", "k": 1}).json()
    assert list(body) == ["user_id", "ab", "ranker", "ranked_by", "degraded", "space", "items", "exposure"]
    assert body["degraded"] is None and list(body["items"][0]) == ["item_id", "score", "kind", "new",
                                                                   "created_at_ms"]
    dbg = c.get("/recommend", params={"user_id": "u1", "k": 1, "debug": "true"}).json()["debug"]
    assert list(dbg) == ["recall_source", "user", "timings_ms", "items"]
    assert list(dbg["user"]) == ["seen", "engaged", "ranker_history", "profile"]
    assert c.get("/ab").json() == {"buckets": 10, "variants": [
        {"name": "control", "weight": 1.0, "ranker": "deepfm-mmoe", "new_item_share": None, "buckets": [0, 4]},
        {"name": "recall", "weight": 1.0, "ranker": "none", "new_item_share": None, "buckets": [5, 9]}]}
    a = c.get("/ab/u1").json()
    assert list(a) == ["user_id", "bucket", "variant"] and a["user_id"] == "u1"
    assert c.get("/healthz").json() == {"status": "ok"}
    m = c.get("/metrics")
    assert m.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
