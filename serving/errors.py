"""Typed exception handlers: what a failure inside a request answers.

=============================================================  ======  ============================================
exception                                                      status  body
=============================================================  ======  ============================================
:class:`DependencyUnavailableError` (the served space failed    503     ``{"detail": "<what> unavailable (<class>);
to build: Redis, Milvus or the model directory)                         see /readyz"}``
``redis.exceptions.ConnectionError`` / ``TimeoutError``         503     the same, ``<what>`` = ``redis``
(and their subclasses: authentication, busy loading, ...)
``pymilvus.exceptions.MilvusException``, ``grpc.RpcError``      503     the same, ``<what>`` = ``milvus``
:class:`~ranking.online.pipeline.RankerNotPublishedError`       503     ``{"detail": {"error":
                                                                        "ranker_not_published", "model", ...}}``
:class:`~ranking.online.pipeline.UnknownUserIdError`,           422     ``{"detail": "<message>"}``
:class:`UnknownVariantError`
=============================================================  ======  ============================================

A dependency failure names the dependency and the exception class only, never the exception's text (a client's
message may carry a host, a user name or a password).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ranking.online.pipeline import RankerNotPublishedError, UnknownUserIdError
from serving.schemas import ErrorResponse, RankerNotPublished, UnavailableResponse

log = logging.getLogger("thaw.api")

Handler = Callable[[Request, Exception], Awaitable[Response]]


class DependencyUnavailableError(Exception):
    """A dependency the request needs is down (the API answers 503 naming it).

    Args:
        what: The dependency, as the body names it (``the served space``).
        cause: The exception it failed with (only its class name is kept).
    """

    def __init__(self, what: str, cause: BaseException) -> None:
        self.what = what
        self.cause = type(cause).__name__
        super().__init__(f"{what} unavailable ({self.cause})")


class UnknownVariantError(ValueError):
    """A forced ``variant`` that is not an arm of the split (the API answers 422)."""

    def __init__(self, variant: str) -> None:
        super().__init__(f"unknown variant {variant!r}; see /ab")


def dependency_errors() -> dict[type[Exception], str]:
    """The client exceptions that mean Redis or Milvus is down, mapped to the dependency they name."""
    import grpc
    from pymilvus.exceptions import MilvusException
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return {RedisConnectionError: "redis", RedisTimeoutError: "redis", MilvusException: "milvus",
            grpc.RpcError: "milvus"}


def unavailable(what: str, cause: str) -> JSONResponse:
    """The 503 answer for a dependency that is down."""
    log.warning("%s unavailable: %s", what, cause)
    body = UnavailableResponse(detail=f"{what} unavailable ({cause}); see /readyz")
    return JSONResponse(body.model_dump(mode="json"), status_code=503)


def _on_client_error(what: str) -> Handler:
    async def handle(_request: Request, exc: Exception) -> Response:
        return unavailable(what, type(exc).__name__)

    return handle


async def _on_dependency_unavailable(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DependencyUnavailableError)
    return unavailable(exc.what, exc.cause)


async def _on_ranker_not_published(_request: Request, exc: Exception) -> Response:
    # an answer, not a crash: the body says what to publish
    assert isinstance(exc, RankerNotPublishedError)
    body = UnavailableResponse(detail=RankerNotPublished.model_validate(exc.to_dict()))
    return JSONResponse(body.model_dump(mode="json"), status_code=503)


async def _on_bad_parameter(_request: Request, exc: Exception) -> Response:
    return JSONResponse(ErrorResponse(detail=str(exc)).model_dump(mode="json"), status_code=422)


def install_exception_handlers(app: FastAPI) -> None:
    """Register the handlers of the table above on ``app``."""
    for exc_type, what in dependency_errors().items():
        app.add_exception_handler(exc_type, _on_client_error(what))
    app.add_exception_handler(DependencyUnavailableError, _on_dependency_unavailable)
    app.add_exception_handler(RankerNotPublishedError, _on_ranker_not_published)
    app.add_exception_handler(UnknownUserIdError, _on_bad_parameter)
    app.add_exception_handler(UnknownVariantError, _on_bad_parameter)
