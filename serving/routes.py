"""The API's routers: recommendations and the A/B split (the public port), operations (the ops port).

The public routes need a caller (:func:`serving.deps.get_principal`, a ``Security`` dependency) and decide what it
may ask with :func:`serving.auth.authorize`. Every handler is ``async``: what blocks (building the served space,
Redis, Milvus, the ranker) runs through a :class:`serving.deps.Guard`, within the request's deadline and the
concurrency limit, never on the event loop or FastAPI's thread pool. Failures they do not answer themselves go to
the typed handlers of :mod:`serving.errors`. (No ``from __future__ import annotations`` here: ``/recommend``'s
``k`` bound is a closure variable FastAPI must see when it reads the signature.)
"""

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import PlainTextResponse

from ranking.online.pipeline import USER_ID_RULE, Recommendation, checked_user_id, variant_summary
from serving.auth import Principal, authorize
from serving.deps import (
    MetricsDep,
    PrincipalDep,
    ReadyGuardDep,
    RecommendGuardDep,
    ServedDep,
    current_recommender,
)
from serving.errors import UnknownVariantError
from serving.guard import DeadlineExceeded, Overloaded
from serving.schemas import (
    ABSplitResponse,
    ABUserResponse,
    ErrorResponse,
    HealthResponse,
    InvalidRequestResponse,
    MilvusCheck,
    ReadyChecks,
    ReadyResponse,
    RecommendResponse,
    UnavailableResponse,
    VariantSummary,
)

UNAVAILABLE: dict[int | str, dict[str, Any]] = {
    503: {"model": UnavailableResponse, "description": "a dependency is down or did not answer within the "
          "deadline (serve.request_deadline_s), the API is at its concurrency limit (serve.max_concurrency; "
          "Retry-After), or the arm's ranker is not published"},
}
AUTH: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorResponse, "description": "no credential, or one that does not verify (WWW-Authenticate: "
          "Bearer)"},
    403: {"model": ErrorResponse, "description": "a scope is missing (admin for debug and variant), or a user "
          "token asked for another user"},
}
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def _allow(p: Principal, user_id: str | None, admin: bool = False) -> None:
    refused = authorize(p, user_id=user_id, admin=admin)
    if refused is not None:
        raise refused


def recommend_router(max_k: int) -> APIRouter:
    """``GET /recommend``, its list size capped at ``max_k`` (the ``serve.max_k`` setting)."""
    router = APIRouter(tags=["recommendations"])

    @router.get("/recommend", summary="Top-k items for a user", response_model=RecommendResponse,
                response_model_exclude_unset=True,
                responses={**AUTH, **UNAVAILABLE, 422: {
                    "model": InvalidRequestResponse,
                    "description": "an invalid parameter, a user_id the stream would refuse, or an unknown variant"}})
    async def recommend(
        principal: PrincipalDep,
        guard: RecommendGuardDep,
        served: ServedDep,
        metrics: MetricsDep,
        user_id: Annotated[str, Query(description=f"the user's id ({USER_ID_RULE}; served as its NFC form)")],
        k: Annotated[int, Query(ge=1, le=max_k, description="list size")] = 20,
        debug: Annotated[bool, Query(description="include the recall source, the user's profile and stage "
                                                 "timings (admin scope)")] = False,
        variant: Annotated[str | None, Query(max_length=32, description="force an A/B arm (QA; admin scope)")] = None,
    ) -> RecommendResponse:
        """Recall in the served space, rank, apply the new-item quota (``ranking.online.pipeline``).

        A user token may ask only for its own ``user_id``; the ``recommend`` scope for any user; ``debug`` and
        ``variant`` need ``admin``. ``user_id`` is checked as the stream checks ids (422 otherwise)."""
        user_id = checked_user_id(user_id)  # UnknownUserIdError: 422; NFC before the access rules compare it
        _allow(principal, user_id, admin=debug or variant is not None)

        def work() -> tuple[Recommendation, RecommendResponse]:
            rec = current_recommender(served)
            if variant is not None and variant not in {v.name for v in rec.ab.variants}:
                raise UnknownVariantError(variant)
            out = rec.recommend(user_id, k, variant=variant)
            return out, RecommendResponse.model_validate(out.to_dict(debug=debug))

        out, body = await guard(work)
        metrics.observe_recommendation(out)  # a list that came too late was not served: it is not counted
        return body

    return router


ab_router = APIRouter(tags=["a/b"])


@ab_router.get("/ab", summary="The A/B split", response_model=ABSplitResponse,
               responses={**AUTH, **UNAVAILABLE})
async def ab(principal: PrincipalDep, guard: RecommendGuardDep, served: ServedDep) -> ABSplitResponse:
    """The arms, their weights and bucket ranges (the ``recommend`` scope)."""
    _allow(principal, None)

    def work() -> ABSplitResponse:
        rec = current_recommender(served)
        return ABSplitResponse(buckets=rec.ab.n_buckets,
                               variants=[VariantSummary.model_validate(v) for v in variant_summary(rec.ab)])

    return await guard(work)


@ab_router.get("/ab/{user_id}", summary="A user's A/B bucket and variant", response_model=ABUserResponse,
               responses={**AUTH, **UNAVAILABLE, 422: {"model": ErrorResponse,
                                                        "description": "not a user id of the wire contract"}})
async def ab_user(principal: PrincipalDep, guard: RecommendGuardDep, served: ServedDep,
                  user_id: str) -> ABUserResponse:
    """The user's hash bucket and the arm that owns it (the same id check and access rules as ``/recommend``)."""
    user_id = checked_user_id(user_id)
    _allow(principal, user_id)

    def work() -> ABUserResponse:
        a = current_recommender(served).ab.assign(user_id)
        return ABUserResponse(user_id=user_id, bucket=a.bucket, variant=a.variant.name)

    return await guard(work)


async def healthz() -> HealthResponse:
    """The process answers (on the event loop: it answers while every request thread is stuck)."""
    return HealthResponse()


public_health_router = APIRouter(tags=["operations"])
# the same liveness on the public port, for a load balancer (the spec documents the ops one)
public_health_router.add_api_route("/healthz", healthz, methods=["GET"], response_model=HealthResponse,
                                   include_in_schema=False)

ops_router = APIRouter(tags=["operations"])
ops_router.add_api_route("/healthz", healthz, methods=["GET"], summary="Liveness", response_model=HealthResponse)


def _ready_checks(served: Any, checks: dict[str, Any], stage: list[str]) -> tuple[bool, ReadyChecks]:
    """The readiness checks, recorded in ``checks`` as they pass (``stage`` names the one running), so a check
    that outlives the deadline can be named."""
    stage[0] = "space"
    try:
        rec = served()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        return False, ReadyChecks(space=f"error: {type(exc).__name__}")
    checks["space"] = rec.space
    stage[0] = "redis"
    try:
        checks["redis"] = "ok" if rec.users.ping() else "error"
    except Exception as exc:  # noqa: BLE001
        checks["redis"] = f"error: {type(exc).__name__}"
    stage[0] = "milvus"
    try:
        if not rec.index.exists():
            checks["milvus"] = f"error: collection {rec.index.name} does not exist (no worker has written it yet)"
        else:
            checks["milvus"] = MilvusCheck(collection=rec.index.name, rows=rec.index.count())
    except Exception as exc:  # noqa: BLE001
        checks["milvus"] = f"error: {type(exc).__name__}"
    stage[0] = "rankers"
    try:
        checks["rankers"] = rec.preload()
    except Exception as exc:  # noqa: BLE001 - our own message (model, directory, command), no secrets
        checks["rankers"] = f"error: {type(exc).__name__}: {exc}"
    ok = (checks["redis"] == "ok" and isinstance(checks["milvus"], MilvusCheck)
          and isinstance(checks["rankers"], dict))
    return ok, ReadyChecks(**checks)


@ops_router.get("/readyz", summary="Readiness: Redis, Milvus and the rankers", response_model=ReadyResponse,
                response_model_exclude_unset=True,
                responses={503: {"model": ReadyResponse, "description": "not ready (the checks say why)"}})
async def readyz(served: ServedDep, guard: ReadyGuardDep, response: Response, request: Request) -> ReadyResponse:
    """Ready when Redis answers, the served collection exists and every arm's ranker loads (or falls back).

    A check that does not answer within ``serve.ready_deadline_s`` is reported as such (not ready). An answer is
    reused for ``serve.ready_cache_s`` (the Milvus check is a Strong count: probes every second would each wait
    for a time tick)."""
    cache: dict[str, tuple[float, bool, ReadyChecks]] = request.app.state.ready_cache
    ttl = request.app.state.settings.serve.ready_cache_s
    hit = cache.get("last")
    if hit is not None and time.monotonic() - hit[0] < ttl:
        response.status_code = 200 if hit[1] else 503
        return ReadyResponse(ready=hit[1], checks=hit[2])
    checks: dict[str, Any] = {}
    stage = ["space"]
    try:
        ok, out = await guard(lambda: _ready_checks(served, checks, stage))
    except DeadlineExceeded as exc:
        ok, out = False, ReadyChecks(**{**checks.copy(), stage[0]: f"error: {exc}"})
    except Overloaded:
        ok, out = False, ReadyChecks(space="error: earlier readiness checks still running (a dependency hangs)")
    cache["last"] = (time.monotonic(), ok, out)
    response.status_code = 200 if ok else 503
    return ReadyResponse(ready=ok, checks=out)


@ops_router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
                responses={200: {"description": "the Prometheus text format, version 0.0.4"}})
async def metrics_endpoint(metrics: MetricsDep) -> PlainTextResponse:
    """The API's metric families."""
    return PlainTextResponse(metrics.render(), media_type=PROMETHEUS_TEXT)
