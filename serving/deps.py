"""FastAPI dependencies: what a route gets from the application (``app.state``, set by ``create_app``).

``app.state`` holds ``served`` (a :data:`serving.ports.ServedFn`), ``metrics`` (:class:`serving.metrics.ServeMetrics`)
and ``settings`` (:class:`infra.settings.Settings`; the routes need only ``serve.max_k``, given to
:func:`serving.routes.recommend_router` when the app is built).
"""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from serving.errors import DependencyUnavailableError
from serving.metrics import ServeMetrics
from serving.ports import RecommenderLike, ServedFn


async def get_metrics(request: Request) -> ServeMetrics:
    """The app's metric families."""
    metrics: ServeMetrics = request.app.state.metrics
    return metrics


async def get_served(request: Request) -> ServedFn:
    """The function that returns the current recommender (for routes that report its failures themselves)."""
    served: ServedFn = request.app.state.served
    return served


def get_recommender(served: Annotated[ServedFn, Depends(get_served)]) -> RecommenderLike:
    """The recommender of the served space.

    A sync dependency on purpose: a (re)build after a flip talks to Redis and Milvus, off the event loop.

    Raises:
        DependencyUnavailableError: Building it failed (Redis or Milvus away, a model not published).
    """
    try:
        return served()
    except Exception as exc:  # noqa: BLE001 - any failure to (re)build the space: Redis, Milvus, the model dir
        raise DependencyUnavailableError("the served space", exc) from exc


MetricsDep = Annotated[ServeMetrics, Depends(get_metrics)]
ServedDep = Annotated[ServedFn, Depends(get_served)]
RecommenderDep = Annotated[RecommenderLike, Depends(get_recommender)]
