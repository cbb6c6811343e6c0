"""The recommendation HTTP API (FastAPI on uvicorn), started by ``thaw serve``.

Endpoints::

    GET /recommend?user_id=U&k=20[&debug=true][&variant=NAME]   recall -> rank -> exposure quota
    (ranking.online.pipeline)
    GET /ab                     the A/B split (variants, weights, bucket ranges, salt-independent)
    GET /ab/{user_id}           one user's bucket and variant
    GET /healthz                liveness: the process answers
    GET /readyz                 readiness: Redis answers, the served Milvus collection is loaded, rankers loaded
                                (a missing one is not ready, or with missing_ranker=recall_order reported degraded)
    GET /metrics                Prometheus text format (own registry)
    GET /openapi.json, /docs    the OpenAPI spec and its browser UI

Errors: invalid parameters answer 422 with FastAPI's field-level details; an unknown ``variant`` 422; Redis or
Milvus unavailable 503 with the failing dependency named (connection strings carry no secrets: settings keep them
as ``SecretStr``). An arm whose ranker is not published answers 503 with ``detail`` naming the model, the version
asked, the model directory, the arm and the command that publishes it, or with
``THAW_SERVE__MISSING_RANKER=recall_order`` is served in the recall order (``"ranker": null, "ranked_by":
"recall_order", "degraded": "deepfm-mmoe not published"``) and counted.

Every ``/recommend`` response carries ``ab.bucket`` and ``ab.variant``; clients should echo them in
``user.events`` ``context`` (``{"ab_bucket": "17", "ab_variant": "gated"}``) so engagement can be split by arm
downstream.

Metrics families (same conventions as the engine's ``infra.metrics``: ``thaw_`` prefix, seconds, ``_total``)::

    thaw_api_requests_total{endpoint,status}           counter
    thaw_api_request_seconds{endpoint}                 histogram
    thaw_recommend_requests_total{variant,bucket,recall_source}   counter   per-bucket traffic
    thaw_recommend_seconds{variant}                    histogram  end-to-end pipeline time per arm
    thaw_recommend_stage_seconds{stage}                histogram  redis_user, recall_vector, recall_fresh, rank, ...
    thaw_recommend_items_total{variant,new}            counter    served items; new / all = exposure share
    thaw_recommend_quota_items_total{variant}          counter    new items placed by the quota, not the ranking
    thaw_recommend_ranker_fallbacks_total{variant,reason}   counter   lists served in the recall order because the
                                                       arm's ranker is missing (not_published, version_not_found)
"""

import contextlib
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from typing import Annotated, Any

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from infra.metrics import STAGE_BUCKETS
from infra.settings import Settings

log = logging.getLogger("thaw.api")


class ServeMetrics:
    """The API's metric families on their own registry."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.requests = Counter("thaw_api_requests", "HTTP requests by endpoint and status", ["endpoint", "status"],
                                registry=r)
        self.request_s = Histogram("thaw_api_request_seconds", "HTTP request wall time", ["endpoint"],
                                   buckets=STAGE_BUCKETS, registry=r)
        self.recommend = Counter("thaw_recommend_requests", "Served recommendation lists by A/B arm and bucket",
                                 ["variant", "bucket", "recall_source"], registry=r)
        self.recommend_s = Histogram("thaw_recommend_seconds", "Recommendation pipeline time per A/B arm",
                                     ["variant"], buckets=STAGE_BUCKETS, registry=r)
        self.stage_s = Histogram("thaw_recommend_stage_seconds", "Recommendation pipeline stage time", ["stage"],
                                 buckets=STAGE_BUCKETS, registry=r)
        self.items = Counter("thaw_recommend_items", "Served items by A/B arm and whether the item is new",
                             ["variant", "new"], registry=r)
        self.quota = Counter("thaw_recommend_quota_items", "New items placed in a list by the exposure quota",
                             ["variant"], registry=r)
        self.ranker_fallbacks = Counter(
            "thaw_recommend_ranker_fallbacks",
            "Lists served in the recall order because the arm's ranker is not published, by arm and reason",
            ["variant", "reason"], registry=r)

    def render(self) -> bytes:
        return bytes(generate_latest(self.registry))


class ServedSpace:
    """The recommender of the space Redis says is served, rebuilt when that space flips (checked every
    ``refresh_s``): a blue/green flip of the CF space reaches the API without a restart."""

    def __init__(self, settings: "Settings", refresh_s: float = 5.0) -> None:
        from indexing.redis_users import UserStore
        from ranking.online.pipeline import RankerPool

        self.settings = settings
        self.refresh_s = refresh_s
        self.users = UserStore(settings.redis)
        self.rankers = RankerPool(settings.models.dir)
        self._lock = threading.Lock()
        self._rec: Any = None
        self._space: str | None = None
        self._checked = 0.0

    def _build(self, space: str) -> Any:
        from ranking.online.pipeline import Recommender
        from ranking.online.recall import served_index

        index = served_index(self.settings.milvus, self.settings.models.dir, self.users)
        return Recommender(self.settings.serve, self.users, index, space or self._text_space(), self.rankers)

    def _text_space(self) -> str:
        from encoders.registry import ModelRegistry

        reg = ModelRegistry(self.settings.models.dir)
        name = self.settings.models.text_encoder
        return f"{name}@{reg.current_version(name)}"

    def get(self) -> Any:
        now = time.monotonic()
        if self._rec is not None and now - self._checked < self.refresh_s:
            return self._rec
        with self._lock:
            if self._rec is not None and now - self._checked < self.refresh_s:
                return self._rec
            space = self.users.current_space() or ""
            if self._rec is None or space != self._space:
                old = self._rec
                self._rec = self._build(space)
                self._space = space
                log.info("serving space %s (collection %s)", self._rec.space, self._rec.index.name)
                if old is not None:
                    old.close()
            self._checked = now
            return self._rec

    def close(self) -> None:
        if self._rec is not None:
            self._rec.close()


def create_app(settings: Settings, served: Callable[[], Any] | None = None, metrics: ServeMetrics | None = None):  # type: ignore[no-untyped-def]
    """The FastAPI application.

    Args:
        settings: Engine settings (``serve`` section for the pipeline).
        served: Returns the current :class:`ranking.online.pipeline.Recommender` (default: :class:`ServedSpace`).
        metrics: Metric families (default: a fresh registry).
    """
    from fastapi import FastAPI, HTTPException, Query, Request
    from fastapi.responses import JSONResponse, Response

    from ranking.online.ab import bucket_of
    from ranking.online.pipeline import RankerNotPublishedError, UnknownUserIdError, variant_summary

    space = None
    if served is None:
        space = ServedSpace(settings)
        served = space.get
    get_rec: Callable[[], Any] = served
    m = metrics or ServeMetrics()
    s = settings.serve

    @contextlib.asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        yield
        if space is not None:
            space.close()

    app = FastAPI(
        lifespan=lifespan,
        title="Thaw recommendation API",
        version="1",
        description="Cold-start-aware recommendations: recall in the served CF space with freshness mixing, "
        "DeepFM + MMoE ranking, a new-item exposure quota and a deterministic A/B split.",
    )

    @app.middleware("http")
    async def _observe(request: Request, call_next):  # type: ignore[no-untyped-def]
        t0 = time.perf_counter()
        route = request.scope.get("route")
        response = await call_next(request)
        route = request.scope.get("route") or route
        endpoint = getattr(route, "path", "unmatched")
        m.requests.labels(endpoint, str(response.status_code)).inc()
        m.request_s.labels(endpoint).observe(time.perf_counter() - t0)
        return response

    def _dependency_error(what: str, exc: Exception) -> HTTPException:
        log.warning("%s unavailable: %s", what, type(exc).__name__)
        return HTTPException(503, detail=f"{what} unavailable ({type(exc).__name__}); see /readyz")

    @app.get("/recommend", summary="Top-k items for a user")
    def recommend(
        user_id: Annotated[str, Query(min_length=1, max_length=128, description="the user's id")],
        k: Annotated[int, Query(ge=1, le=s.max_k, description="list size")] = 20,
        debug: Annotated[bool, Query(description="include the recall source and stage timings")] = False,
        variant: Annotated[str | None, Query(max_length=32, description="force an A/B arm (QA only)")] = None,
    ) -> dict[str, Any]:
        try:
            rec = get_rec()
        except Exception as exc:  # noqa: BLE001 - Redis or Milvus away at (re)build time
            raise _dependency_error("the served space", exc) from exc
        if variant is not None and variant not in {v.name for v in rec.ab.variants}:
            raise HTTPException(422, detail=f"unknown variant {variant!r}; see /ab")
        try:
            out = rec.recommend(user_id, k, variant=variant)
        except UnknownUserIdError as exc:
            raise HTTPException(422, detail=str(exc)) from exc
        except RankerNotPublishedError as exc:  # an answer, not a crash: the body says what to publish
            raise HTTPException(503, detail=exc.to_dict()) from exc
        except Exception as exc:
            name = type(exc).__name__
            if "Redis" in name or "Connection" in name or "Timeout" in name:
                raise _dependency_error("redis", exc) from exc
            if "Milvus" in name or "Rpc" in name:
                raise _dependency_error("milvus", exc) from exc
            raise
        m.recommend.labels(out.variant, str(out.bucket), out.recall_source).inc()
        m.recommend_s.labels(out.variant).observe(out.timings_ms["total"] / 1000)
        for stage, ms in out.timings_ms.items():
            if stage != "total":
                m.stage_s.labels(stage).observe(ms / 1000)
        n_new = sum(c.is_new for c in out.items)
        m.items.labels(out.variant, "true").inc(n_new)
        m.items.labels(out.variant, "false").inc(len(out.items) - n_new)
        m.quota.labels(out.variant).inc(out.exposure["new_added_by_quota"])
        if out.degraded is not None:
            m.ranker_fallbacks.labels(out.variant, out.fallback_reason or "unknown").inc()
        result: dict[str, Any] = out.to_dict(debug=debug)
        return result

    @app.get("/ab", summary="The A/B split")
    def ab() -> dict[str, Any]:
        rec = get_rec()
        return {"buckets": rec.ab.n_buckets, "variants": variant_summary(rec.ab)}

    @app.get("/ab/{user_id}", summary="A user's A/B bucket and variant")
    def ab_user(user_id: str) -> dict[str, Any]:
        if not 1 <= len(user_id) <= 128:
            raise HTTPException(422, detail="user_id must be 1-128 characters")
        rec = get_rec()
        a = rec.ab.assign(user_id)
        return {"user_id": user_id, "bucket": bucket_of(user_id, rec.ab.salt, rec.ab.n_buckets),
                "variant": a.variant.name}

    @app.get("/healthz", summary="Liveness")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", summary="Readiness: Redis, Milvus and the rankers")
    def readyz() -> JSONResponse:
        checks: dict[str, Any] = {}
        ok = True
        try:
            rec = get_rec()
            checks["space"] = rec.space
        except Exception as exc:  # noqa: BLE001
            return JSONResponse({"ready": False, "checks": {"space": f"error: {type(exc).__name__}"}}, 503)
        try:
            checks["redis"] = "ok" if rec.users.ping() else "error"
        except Exception as exc:  # noqa: BLE001
            checks["redis"] = f"error: {type(exc).__name__}"
        try:
            if not rec.index.exists():
                checks["milvus"] = f"error: collection {rec.index.name} does not exist (no worker has written it yet)"
            else:
                checks["milvus"] = {"collection": rec.index.name, "rows": rec.index.count()}
        except Exception as exc:  # noqa: BLE001
            checks["milvus"] = f"error: {type(exc).__name__}"
        try:
            checks["rankers"] = rec.preload()
        except Exception as exc:  # noqa: BLE001
            checks["rankers"] = f"error: {type(exc).__name__}: {exc}"
        ok = checks["redis"] == "ok" and isinstance(checks["milvus"], dict) and isinstance(checks["rankers"], dict)
        return JSONResponse({"ready": ok, "checks": checks}, 200 if ok else 503)

    @app.get("/metrics", summary="Prometheus metrics", response_class=Response)
    def metrics_endpoint() -> Response:
        return Response(m.render(), media_type="text/plain; version=0.0.4; charset=utf-8")

    app.state.metrics = m
    return app


def app_from_env():  # type: ignore[no-untyped-def]
    """uvicorn factory (``uvicorn --factory serving.api:app_from_env``): settings from the ``THAW_*`` environment."""
    from infra.settings import load_settings

    return create_app(load_settings())
