"""The API's routers: recommendations, the A/B split, and operations (liveness, readiness, metrics).

Handlers get the recommender and the metric families from :mod:`serving.deps`; failures they do not answer
themselves go to the typed handlers of :mod:`serving.errors`. (No ``from __future__ import annotations`` here:
``/recommend``'s ``k`` bound is a closure variable FastAPI must see when it reads the signature.)
"""

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Query, Response
from fastapi.responses import PlainTextResponse

from ranking.online.pipeline import variant_summary
from serving.deps import MetricsDep, RecommenderDep, ServedDep
from serving.errors import UnknownVariantError
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
    503: {"model": UnavailableResponse, "description": "a dependency is down, or the arm's ranker is not published"},
}
PROMETHEUS_TEXT = "text/plain; version=0.0.4; charset=utf-8"


def recommend_router(max_k: int) -> APIRouter:
    """``GET /recommend``, its list size capped at ``max_k`` (the ``serve.max_k`` setting)."""
    router = APIRouter(tags=["recommendations"])

    @router.get("/recommend", summary="Top-k items for a user", response_model=RecommendResponse,
                response_model_exclude_unset=True,
                responses={**UNAVAILABLE, 422: {"model": InvalidRequestResponse,
                                                "description": "an invalid parameter or an unknown variant"}})
    def recommend(
        rec: RecommenderDep,
        metrics: MetricsDep,
        user_id: Annotated[str, Query(min_length=1, max_length=128, description="the user's id")],
        k: Annotated[int, Query(ge=1, le=max_k, description="list size")] = 20,
        debug: Annotated[bool, Query(description="include the recall source and stage timings")] = False,
        variant: Annotated[str | None, Query(max_length=32, description="force an A/B arm (QA only)")] = None,
    ) -> RecommendResponse:
        """Recall in the served space, rank, apply the new-item quota (``ranking.online.pipeline``)."""
        if variant is not None and variant not in {v.name for v in rec.ab.variants}:
            raise UnknownVariantError(variant)
        out = rec.recommend(user_id, k, variant=variant)
        metrics.observe_recommendation(out)
        return RecommendResponse.model_validate(out.to_dict(debug=debug))

    return router


ab_router = APIRouter(tags=["a/b"])


@ab_router.get("/ab", summary="The A/B split", response_model=ABSplitResponse, responses=UNAVAILABLE)
def ab(rec: RecommenderDep) -> ABSplitResponse:
    """The arms, their weights and bucket ranges."""
    return ABSplitResponse(buckets=rec.ab.n_buckets,
                           variants=[VariantSummary.model_validate(v) for v in variant_summary(rec.ab)])


@ab_router.get("/ab/{user_id}", summary="A user's A/B bucket and variant", response_model=ABUserResponse,
               responses={**UNAVAILABLE, 422: {"model": ErrorResponse, "description": "user_id too long"}})
def ab_user(rec: RecommenderDep, user_id: str) -> ABUserResponse:
    """The user's hash bucket and the arm that owns it."""
    if not 1 <= len(user_id) <= 128:
        raise HTTPException(422, detail="user_id must be 1-128 characters")
    a = rec.ab.assign(user_id)
    return ABUserResponse(user_id=user_id, bucket=a.bucket, variant=a.variant.name)


ops_router = APIRouter(tags=["operations"])


@ops_router.get("/healthz", summary="Liveness", response_model=HealthResponse)
async def healthz() -> HealthResponse:
    """The process answers."""
    return HealthResponse()


@ops_router.get("/readyz", summary="Readiness: Redis, Milvus and the rankers", response_model=ReadyResponse,
                response_model_exclude_unset=True,
                responses={503: {"model": ReadyResponse, "description": "not ready (the checks say why)"}})
def readyz(served: ServedDep, response: Response) -> ReadyResponse:
    """Ready when Redis answers, the served collection exists and every arm's ranker loads (or falls back)."""
    try:
        rec = served()
    except Exception as exc:  # noqa: BLE001 - reported, not raised
        response.status_code = 503
        return ReadyResponse(ready=False, checks=ReadyChecks(space=f"error: {type(exc).__name__}"))
    redis: str
    milvus: MilvusCheck | str
    rankers: dict[str, str] | str
    try:
        redis = "ok" if rec.users.ping() else "error"
    except Exception as exc:  # noqa: BLE001
        redis = f"error: {type(exc).__name__}"
    try:
        if not rec.index.exists():
            milvus = f"error: collection {rec.index.name} does not exist (no worker has written it yet)"
        else:
            milvus = MilvusCheck(collection=rec.index.name, rows=rec.index.count())
    except Exception as exc:  # noqa: BLE001
        milvus = f"error: {type(exc).__name__}"
    try:
        rankers = rec.preload()
    except Exception as exc:  # noqa: BLE001 - our own message (model, directory, command), no secrets
        rankers = f"error: {type(exc).__name__}: {exc}"
    ok = redis == "ok" and isinstance(milvus, MilvusCheck) and isinstance(rankers, dict)
    response.status_code = 200 if ok else 503
    return ReadyResponse(ready=ok, checks=ReadyChecks(space=rec.space, redis=redis, milvus=milvus, rankers=rankers))


@ops_router.get("/metrics", summary="Prometheus metrics", response_class=PlainTextResponse,
                responses={200: {"description": "the Prometheus text format, version 0.0.4"}})
def metrics_endpoint(metrics: MetricsDep) -> PlainTextResponse:
    """The API's metric families."""
    return PlainTextResponse(metrics.render(), media_type=PROMETHEUS_TEXT)
