"""The OpenAPI spec (served on the ops port): every route of both ports publishes the schema of what it answers,
and the public routes their security schemes."""

from __future__ import annotations

from typing import Any

import pytest

from infra.settings import Settings
from tests.unit.serving.helpers import JWT_SECRET, serving, settings

ROUTES = {"/recommend", "/ab", "/ab/{user_id}", "/healthz", "/readyz", "/metrics"}
NEEDS_THE_RECOMMENDER = {"/recommend", "/ab", "/ab/{user_id}"}


@pytest.fixture(scope="module")
def spec() -> dict[str, Any]:
    def served() -> Any:
        raise AssertionError("the spec is built without a recommender")

    with serving(served, settings({"jwt_secret": JWT_SECRET})) as (public, ops):
        assert public.get("/openapi.json").status_code == 404 and public.get("/docs").status_code == 404
        assert ops.get("/docs").status_code == 200
        r = ops.get("/openapi.json")
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
    assert set(schema["properties"]) == {"detail", "dependency"} and schema["required"] == ["detail"]


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


@pytest.mark.parametrize("path", sorted(NEEDS_THE_RECOMMENDER))
def test_the_public_routes_name_their_security_schemes(spec: dict[str, Any], path: str) -> None:
    op = spec["paths"][path]["get"]
    assert op["security"] == [{"bearer": []}, {"apiKey": []}]  # either one
    assert {"401", "403"} <= set(op["responses"])


def test_the_security_schemes(spec: dict[str, Any]) -> None:
    schemes = spec["components"]["securitySchemes"]
    assert schemes["bearer"] == {"type": "http", "scheme": "bearer", "description": schemes["bearer"]["description"]}
    assert schemes["apiKey"]["type"] == "apiKey" and schemes["apiKey"]["in"] == "header"
    assert schemes["apiKey"]["name"] == "X-API-Key"
    assert not any("security" in spec["paths"][p]["get"] for p in ROUTES - NEEDS_THE_RECOMMENDER)


def test_readiness_documents_both_answers(spec: dict[str, Any]) -> None:
    assert _schema(spec, "/readyz", "200") == _schema(spec, "/readyz", "503")
    checks = spec["components"]["schemas"]["ReadyChecks"]
    assert set(checks["properties"]) == {"space", "redis", "milvus", "rankers"}
