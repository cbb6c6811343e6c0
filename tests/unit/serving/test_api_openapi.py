"""The OpenAPI spec: every route publishes the schema of what it answers."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from infra.settings import Settings
from serving.api import create_app

ROUTES = {"/recommend", "/ab", "/ab/{user_id}", "/healthz", "/readyz", "/metrics"}
NEEDS_THE_RECOMMENDER = {"/recommend", "/ab", "/ab/{user_id}"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    def served() -> Any:
        raise AssertionError("the spec is built without a recommender")

    with TestClient(create_app(Settings(), served=served)) as c:
        r = c.get("/openapi.json")
        assert r.status_code == 200
        out: dict[str, Any] = r.json()
        return out


def _schema(spec: dict[str, Any], path: str, status: str, media: str = "application/json") -> dict[str, Any]:
    response = spec["paths"][path]["get"]["responses"][status]
    schema: dict[str, Any] = response["content"][media]["schema"]
    ref = schema.get("$ref")
    if ref is not None:
        name = ref.rsplit("/", 1)[1]
        assert name in spec["components"]["schemas"], f"{path} {status}: {ref} is not a component"
        resolved: dict[str, Any] = spec["components"]["schemas"][name]
        return resolved
    return schema


def test_every_route_is_in_the_spec(spec: dict[str, Any]) -> None:
    assert set(spec["paths"]) == ROUTES


@pytest.mark.parametrize("path", sorted(ROUTES - {"/metrics"}))
def test_every_json_route_has_a_response_schema(spec: dict[str, Any], path: str) -> None:
    schema = _schema(spec, path, "200")
    assert schema["type"] == "object" and schema["properties"], f"{path}: no response schema"


def test_metrics_is_plain_text(spec: dict[str, Any]) -> None:
    assert _schema(spec, "/metrics", "200", "text/plain") == {"type": "string"}


@pytest.mark.parametrize("path", sorted(NEEDS_THE_RECOMMENDER))
def test_dependency_failures_are_documented(spec: dict[str, Any], path: str) -> None:
    schema = _schema(spec, path, "503")
    assert set(schema["properties"]) == {"detail"}


def test_recommend_schema_names_the_wire_fields(spec: dict[str, Any]) -> None:
    schema = _schema(spec, "/recommend", "200")
    assert set(schema["properties"]) == {"user_id", "ab", "ranker", "ranked_by", "degraded", "space", "items",
                                         "exposure", "debug"}
    assert set(schema["required"]) == {"user_id", "ab", "ranker", "ranked_by", "degraded", "space", "items",
                                       "exposure"}
    item = spec["components"]["schemas"]["RecommendedItem"]
    assert {"item_id", "score", "kind", "new", "created_at_ms", "task_scores"} == set(item["properties"])
    k = next(p for p in spec["paths"]["/recommend"]["get"]["parameters"] if p["name"] == "k")
    assert k["schema"]["maximum"] == Settings().serve.max_k


def test_readiness_documents_both_answers(spec: dict[str, Any]) -> None:
    assert _schema(spec, "/readyz", "200") == _schema(spec, "/readyz", "503")
    checks = spec["components"]["schemas"]["ReadyChecks"]
    assert set(checks["properties"]) == {"space", "redis", "milvus", "rankers"}
