"""The recommendation HTTP API (FastAPI on uvicorn), started by ``thaw serve``.

Endpoints::

    GET /recommend?user_id=U&k=20[&debug=true][&variant=NAME]   recall -> rank -> exposure quota
    (ranking.online.pipeline)
    GET /ab                     the A/B split (variants, weights, bucket ranges, salt-independent)
    GET /ab/{user_id}           one user's bucket and variant
    GET /healthz                liveness: the process answers
    GET /readyz                 readiness: Redis answers, the served Milvus collection is loaded, rankers loaded
                                (a missing one is not ready, or with missing_ranker=recall_order reported degraded)
    GET /metrics                Prometheus text format (own registry; families in :mod:`serving.metrics`)
    GET /openapi.json, /docs    the OpenAPI spec (every response's schema: :mod:`serving.schemas`) and its UI

Errors (:mod:`serving.errors`): invalid parameters answer 422 with FastAPI's field-level details; an unknown
``variant`` 422; Redis or Milvus unavailable 503 with the failing dependency named (the body names the
dependency and the exception class only; connection strings carry no secrets either: settings keep them as
``SecretStr``). An arm whose ranker is not published answers 503 with ``detail`` naming the model, the version
asked, the model directory, the arm and the command that publishes it, or with
``THAW_SERVE__MISSING_RANKER=recall_order`` is served in the recall order (``"ranker": null, "ranked_by":
"recall_order", "degraded": "deepfm-mmoe not published"``) and counted.

Every ``/recommend`` response carries ``ab.bucket`` and ``ab.variant``; clients should echo them in
``user.events`` ``context`` (``{"ab_bucket": "17", "ab_variant": "gated"}``) so engagement can be split by arm
downstream.

Layout: routers in :mod:`serving.routes`, the dependencies they get (from ``app.state``) in :mod:`serving.deps`,
the recommender they serve as a Protocol in :mod:`serving.ports` (:class:`serving.space.ServedSpace` builds the
real one per served space).
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI

from infra.settings import Settings
from serving.errors import install_exception_handlers
from serving.metrics import ServeMetrics, observe_requests
from serving.ports import RecommenderLike, ServedFn
from serving.routes import ab_router, ops_router, recommend_router
from serving.space import ServedSpace

__all__ = ["RecommenderLike", "ServeMetrics", "ServedSpace", "app_from_env", "create_app"]


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    yield
    owned: ServedSpace | None = app.state.owned_space
    if owned is not None:
        owned.close()


def create_app(settings: Settings, served: ServedFn | None = None, metrics: ServeMetrics | None = None) -> FastAPI:
    """The FastAPI application.

    Args:
        settings: Engine settings (``serve`` section for the pipeline).
        served: Returns the current recommender (default: a :class:`ServedSpace` over ``settings``, closed when
            the app shuts down).
        metrics: Metric families (default: a fresh registry).
    """
    owned = ServedSpace(settings) if served is None else None
    app = FastAPI(
        lifespan=_lifespan,
        title="Thaw recommendation API",
        version="1",
        description="Cold-start-aware recommendations: recall in the served CF space with freshness mixing, "
        "DeepFM + MMoE ranking, a new-item exposure quota and a deterministic A/B split.",
    )
    app.state.settings = settings
    app.state.served = owned.get if owned is not None else served
    app.state.owned_space = owned
    app.state.metrics = metrics or ServeMetrics()
    app.middleware("http")(observe_requests)
    install_exception_handlers(app)
    app.include_router(recommend_router(settings.serve.max_k))
    app.include_router(ab_router)
    app.include_router(ops_router)
    return app


def app_from_env() -> FastAPI:
    """uvicorn factory (``uvicorn --factory serving.api:app_from_env``): settings from the ``THAW_*`` environment."""
    from infra.settings import load_settings

    return create_app(load_settings())
