"""The recommendation HTTP API (FastAPI on uvicorn), started by ``thaw serve``: two apps, two ports, one process.

The public app (``serve.host:serve.port``; every route needs a caller, :mod:`serving.auth`)::

    GET /recommend?user_id=U&k=20[&debug=true][&variant=NAME]   recall -> rank -> exposure quota
    (ranking.online.pipeline); a user token only for its own user, debug and variant with the admin scope
    GET /ab                     the A/B split (variants, weights, bucket ranges): the recommend scope
    GET /ab/{user_id}           one user's bucket and variant (the rules of /recommend)
    GET /healthz                liveness, no credential (for a load balancer)

The ops app (``serve.ops_host:serve.ops_port``, loopback by default; no credentials: keep it internal)::

    GET /healthz                liveness: the process answers (async: it answers while every request thread hangs)
    GET /readyz                 readiness: Redis answers, the served Milvus collection is loaded, rankers loaded
                                (a missing one is not ready, or with missing_ranker=recall_order reported degraded)
    GET /metrics                Prometheus text format (own registry; families in :mod:`serving.metrics`)
    GET /openapi.json, /docs    the OpenAPI spec of both apps (every response's schema: :mod:`serving.schemas`,
                                the security schemes of the public routes) and its UI

Every blocking call of a request (building the served space, Redis, Milvus, the ranker) runs on a bulkhead
(:mod:`serving.guard`): at most ``serve.max_concurrency`` in flight (more answer 503 at once), each awaited at most
``serve.request_deadline_s`` (then 503 naming the dependency it waits on, without waiting for its thread).

Errors (:mod:`serving.errors`): invalid parameters answer 422 with FastAPI's field-level details; an unknown
``variant`` 422; no or a bad credential 401, a missing scope or another user's id 403; Redis or Milvus unavailable
503 with the failing dependency named (the body names the dependency and the exception class only; connection
strings carry no secrets either: settings keep them as ``SecretStr``). An arm whose ranker is not published
answers 503 with ``detail`` naming the model, the version asked, the model directory, the arm and the command that
publishes it, or with ``THAW_SERVE__MISSING_RANKER=recall_order`` is served in the recall order (``"ranker": null,
"ranked_by": "recall_order", "degraded": "deepfm-mmoe not published"``) and counted.

Every ``/recommend`` response carries ``ab.bucket`` and ``ab.variant``; clients should echo them in
``user.events`` ``context`` (``{"ab_bucket": "17", "ab_variant": "gated"}``) so engagement can be split by arm
downstream.

Layout: routers in :mod:`serving.routes`, the dependencies they get (from ``app.state``) in :mod:`serving.deps`,
the recommender they serve as a Protocol in :mod:`serving.ports` (:class:`serving.space.ServedSpace` builds the
real one per served space); :mod:`serving.server` runs both apps.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi

from infra.settings import Settings
from serving.auth import AuthConfigError, Authenticator
from serving.deps import Guard
from serving.errors import install_exception_handlers
from serving.guard import Bulkhead
from serving.metrics import ServeMetrics, observe_requests
from serving.ports import RecommenderLike, ServedFn
from serving.rate_limit import RateLimiter, auth_failure_limiter
from serving.routes import ab_router, ops_router, public_health_router, recommend_router
from serving.space import ServedSpace

__all__ = ["AuthConfigError", "RecommenderLike", "ServeApps", "ServeMetrics", "ServedSpace", "create_app",
           "create_apps"]

log = logging.getLogger("thaw.api")

TITLE = "Thaw recommendation API"
DESCRIPTION = (
    "Cold-start-aware recommendations: recall in the served CF space with freshness mixing, DeepFM + MMoE ranking, "
    "a new-item exposure quota and a deterministic A/B split.\n\n"
    "**Ports.** `/recommend`, `/ab` and `/ab/{user_id}` (and a `/healthz`) are served on the public port "
    "(`THAW_SERVE__PORT`); the operations routes (`/healthz`, `/readyz`, `/metrics`) and this spec on the internal "
    "ops port (`THAW_SERVE__OPS_PORT`).\n\n"
    "**Credentials.** A JWT bearer token whose `sub` is the user (it may ask only for that user), or an `X-API-Key`. "
    "Scopes: `recommend` (any user, the split), `admin` (`debug=true`, `variant=`; implies `recommend`).")
READY_POOL = 4  # readiness checks in flight at most (a hung dependency holds them; later probes answer not ready)


@dataclass(frozen=True)
class ServeApps:
    """The two apps of one API process: ``public`` (``serve.port``) and ``ops`` (``serve.ops_port``)."""

    public: FastAPI
    ops: FastAPI


def _warm(space: ServedSpace) -> None:
    """Build the served space and load its rankers before the first request needs them (a failure is the first
    request's, and /readyz's, to report)."""
    try:
        space.get().preload()
    except Exception as exc:  # noqa: BLE001 - logged by class only; /readyz names it
        log.warning("warming the served space failed (%s); the first request builds it", type(exc).__name__)


def _lifespan(owned: ServedSpace | None, bulkheads: tuple[Bulkhead, ...]) -> Any:
    @contextlib.asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if owned is not None:
            threading.Thread(target=_warm, args=(owned,), name="thaw-warm", daemon=True).start()
        yield
        for b in bulkheads:
            b.close()
        if owned is not None:
            owned.close()

    return lifespan


def _state(app: FastAPI, shared: dict[str, Any]) -> None:
    for k, v in shared.items():
        setattr(app.state, k, v)
    app.middleware("http")(observe_requests)
    install_exception_handlers(app)


def _reader(pool: Bulkhead) -> Callable[[], float]:
    return lambda: pool.in_flight


def _shared(settings: Settings, served: ServedFn | None, metrics: ServeMetrics | None
            ) -> tuple[dict[str, Any], Any]:
    """The state both apps share, and the lifespan of the app that owns it."""
    sv = settings.serve
    authenticator = None if sv.auth.mode == "local-dev" else Authenticator(sv.auth)
    m = metrics or ServeMetrics()
    owned = ServedSpace(settings, on_ranker_refused=m.count_refused_ranker) if served is None else None
    recommend_pool, ready_pool = Bulkhead(sv.max_concurrency, "recommend"), Bulkhead(READY_POOL, "ready")
    for name, pool in (("recommend", recommend_pool), ("ready", ready_pool)):
        m.in_flight.labels(name).set_function(_reader(pool))
    shared: dict[str, Any] = {
        "settings": settings, "served": owned.get if owned is not None else served, "owned_space": owned,
        "metrics": m, "authenticator": authenticator,
        "recommend_guard": Guard(recommend_pool, sv.request_deadline_s),
        "rate_limiter": RateLimiter(sv.rate_limit_rps, sv.rate_limit_burst),
        # failed authentications per client address
        "auth_failure_limiter": auth_failure_limiter(sv.auth_failure_rps, sv.auth_failure_burst),
        "ready_cache": {},  # /readyz's last answer (serving.routes.readyz)
        "ready_guard": Guard(ready_pool, sv.ready_deadline_s),
    }
    return shared, _lifespan(owned, (recommend_pool, ready_pool))


def create_apps(settings: Settings, served: ServedFn | None = None,
                metrics: ServeMetrics | None = None) -> ServeApps:
    """The public and the ops application (what ``thaw serve`` runs), sharing the recommender, the metrics and the
    guards.

    Args:
        settings: Engine settings (``serve`` section for the pipeline, the ports, the deadline and the auth).
        served: Returns the current recommender (default: a :class:`ServedSpace` over ``settings``, warmed in the
            background when the public app starts and closed when it stops).
        metrics: Metric families (default: a fresh registry).

    Raises:
        AuthConfigError: Authentication is on and cannot check anything (no secret, key or JWKS configured), or a
            key file cannot be read.
    """
    shared, lifespan = _shared(settings, served, metrics)
    public = FastAPI(lifespan=lifespan, title=TITLE, version="1", openapi_url=None, docs_url=None, redoc_url=None)
    _state(public, shared)
    public.include_router(recommend_router(settings.serve.max_k))
    public.include_router(ab_router)
    public.include_router(public_health_router)

    ops = FastAPI(title=f"{TITLE} (ops port)", version="1", docs_url="/docs", redoc_url=None,
                  openapi_url="/openapi.json")
    _state(ops, shared)
    ops.include_router(ops_router)

    def openapi() -> dict[str, Any]:  # both apps' routes in one spec, served on the ops port
        if ops.openapi_schema is None:
            ops.openapi_schema = get_openapi(title=TITLE, version="1", description=DESCRIPTION,
                                             routes=[*public.routes, *ops.routes])
        return ops.openapi_schema

    ops.openapi = openapi  # type: ignore[method-assign]
    return ServeApps(public=public, ops=ops)


def create_app(settings: Settings, served: ServedFn | None = None, metrics: ServeMetrics | None = None) -> FastAPI:
    """Every route of both apps on one application: for tests and in-process use (``thaw serve`` never serves it;
    it runs :func:`create_apps` on two ports). The same arguments, auth and guards as :func:`create_apps`."""
    shared, lifespan = _shared(settings, served, metrics)
    app = FastAPI(lifespan=lifespan, title=TITLE, version="1", description=DESCRIPTION, docs_url="/docs",
                  redoc_url=None)
    _state(app, shared)
    app.include_router(recommend_router(settings.serve.max_k))
    app.include_router(ab_router)
    app.include_router(ops_router)
    return app
