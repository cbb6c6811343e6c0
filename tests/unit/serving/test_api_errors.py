"""The API's typed exception handlers: every dependency failure answers 503 naming the dependency, never a secret.

The recommender is an in-memory fake of :class:`serving.ports.RecommenderLike` that raises what a test asks for,
where the real one would meet it: building the served space, or serving a request.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import pytest
from fastapi.testclient import TestClient
from pymilvus.exceptions import MilvusException
from redis import exceptions as redis_errors

from ranking.online.pipeline import USER_ID_RULE, RankerNotPublishedError, UnknownUserIdError
from serving.ports import RecommenderLike
from tests.unit.serving.helpers import SECRET, FakeRecommender, serving, typed

Clients = tuple[TestClient, TestClient]


@pytest.fixture
def client_for() -> Iterator[Callable[[FakeRecommender], Clients]]:
    """The public and ops clients of an app over a fake recommender (authentication off)."""
    with contextlib.ExitStack() as stack:
        yield lambda rec: stack.enter_context(serving(lambda: typed(rec)))


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
        client_for: Callable[[FakeRecommender], Clients], exc: Exception, what: str, cls: str) -> None:
    c, ops = client_for(FakeRecommender(error=exc))
    r = c.get("/recommend", params={"user_id": "u1", "k": 3})
    assert r.status_code == 503, r.text
    assert r.json() == {"detail": f"{what} unavailable ({cls}); see /readyz", "dependency": what}
    assert r.headers["content-type"] == "application/json"
    assert SECRET not in r.text
    assert 'thaw_api_requests_total{endpoint="/recommend",status="503"} 1.0' in ops.get("/metrics").text


@pytest.mark.parametrize(("exc", "cls"), [(e, cls) for e, _, cls in DEPENDENCY_FAILURES],
                         ids=lambda v: type(v).__name__)
@pytest.mark.parametrize("path", ["/recommend", "/ab", "/ab/u1"])
def test_a_dependency_failure_while_building_the_space_answers_503(path: str, exc: Exception, cls: str) -> None:
    def served() -> RecommenderLike:
        raise exc

    with serving(served) as (c, ops):
        r = c.get(path, params={"user_id": "u1"})
        assert r.status_code == 503, r.text
        assert r.json() == {"detail": f"the served space unavailable ({cls}); see /readyz",
                            "dependency": "the served space"}
        assert SECRET not in r.text
        ready = ops.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {"ready": False, "checks": {"space": f"error: {cls}"}}


def test_readiness_reports_redis_down_without_secrets(client_for: Callable[[FakeRecommender], Clients]) -> None:
    _, ops = client_for(FakeRecommender(ping_error=redis_errors.ConnectionError(SECRET)))
    r = ops.get("/readyz")
    assert r.status_code == 503
    assert r.json() == {"ready": False, "checks": {
        "space": "text@t", "redis": "error: ConnectionError", "milvus": {"collection": "thaw_fake", "rows": 3},
        "rankers": {"control": "none", "recall": "none"}}}
    assert SECRET not in r.text


def test_ready_when_every_check_passes(client_for: Callable[[FakeRecommender], Clients]) -> None:
    r = client_for(FakeRecommender())[1].get("/readyz")
    assert r.status_code == 200
    assert r.json()["ready"] is True and r.json()["checks"]["redis"] == "ok"


def test_a_missing_ranker_answers_503_with_what_to_publish(
        client_for: Callable[[FakeRecommender], Clients]) -> None:
    miss = RankerNotPublishedError("deepfm-mmoe", None, Path("/models"), "not_published", variant="control")
    r = client_for(FakeRecommender(error=miss))[0].get("/recommend", params={"user_id": "u1"})
    assert r.status_code == 503
    assert r.json() == {"detail": miss.to_dict()}
    assert list(r.json()["detail"]) == list(miss.to_dict())  # same keys, same order


def test_bad_parameters_answer_422_with_a_message(client_for: Callable[[FakeRecommender], Clients]) -> None:
    bad_id, _ = client_for(FakeRecommender(error=UnknownUserIdError("user_id must be 1-128 characters")))
    r = bad_id.get("/recommend", params={"user_id": "u1"})
    assert (r.status_code, r.json()) == (422, {"detail": "user_id must be 1-128 characters"})
    c, _ = client_for(FakeRecommender())
    r = c.get("/recommend", params={"user_id": "u1", "variant": "nope"})
    assert (r.status_code, r.json()) == (422, {"detail": "unknown variant 'nope'; see /ab"})
    r = c.get("/ab/" + "x" * 129)
    assert (r.status_code, r.json()) == (422, {"detail": USER_ID_RULE})
    r = c.get("/recommend", params={"user_id": "u1", "k": 0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "k"]


@pytest.mark.parametrize("exc", [ValueError("a bug"), ConnectionError("not a client's"), KeyError("k")],
                         ids=lambda e: type(e).__name__)
def test_other_exceptions_are_not_dependency_failures(client_for: Callable[[FakeRecommender], Clients],
                                                       exc: Exception) -> None:
    r = client_for(FakeRecommender(error=exc))[0].get("/recommend", params={"user_id": "u1"})
    assert r.status_code == 500


def test_bodies_keep_the_wire_keys(client_for: Callable[[FakeRecommender], Clients]) -> None:
    c, ops = client_for(FakeRecommender())
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
    assert c.get("/healthz").json() == {"status": "ok"} == ops.get("/healthz").json()
    m = ops.get("/metrics")
    assert m.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
