"""Typed exception handlers: what a failure inside a request answers.

=============================================================  ======  ============================================
exception                                                      status  body
=============================================================  ======  ============================================
:class:`DependencyUnavailableError` (the served space failed    503     ``{"detail": "<what> unavailable (<class>);
to build: Redis, Milvus or the model directory)                         see /readyz", "dependency": "<what>"}``
``redis.exceptions.ConnectionError`` / ``TimeoutError``         503     the same, ``<what>`` = ``redis``
(and their subclasses: authentication, busy loading, ...)
``pymilvus.exceptions.MilvusException``, ``grpc.RpcError``      503     the same, ``<what>`` = ``milvus``
:class:`~serving.guard.DeadlineExceeded` (no answer within      503     ``{"detail": "no answer within 1 s (waiting
``serve.request_deadline_s``)                                           on redis); see /readyz", "dependency":
                                                                        "redis"}`` (null: none known)
:class:`~serving.guard.Overloaded` (``serve.max_concurrency``   503     ``{"detail": "overloaded: ...",
requests in flight)                                                     "dependency": null}``, ``Retry-After: 1``
:class:`~ranking.online.pipeline.RankerNotPublishedError`       503     ``{"detail": {"error":
                                                                        "ranker_not_published", "model", ...}}``
:class:`~serving.auth.AuthError` (no, or no valid, credential)  401     ``{"detail": "<why>"}``,
                                                                        ``WWW-Authenticate: Bearer ...``
:class:`~serving.auth.ForbiddenError` (a scope missing, a       403     ``{"detail": "<why>"}``
user token asking for another user)
:class:`~ranking.online.pipeline.UnknownUserIdError`,           422     ``{"detail": "<message>"}``
:class:`UnknownVariantError`
=============================================================  ======  ============================================

A dependency failure names the dependency and the exception class only, never the exception's text (a client's
message may carry a host, a user name or a password); an auth failure names the reason, never the credential.
Deadlines, shed requests and auth failures are counted (:class:`serving.metrics.ServeMetrics`).
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from fastapi import FastAPI
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from ranking.online.pipeline import RankerNotPublishedError, UnknownUserIdError
from serving.auth import AuthError, ForbiddenError
from serving.guard import DeadlineExceeded, Overloaded
from serving.metrics import ServeMetrics
from serving.rate_limit import RateLimited, retry_after_header
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
    body = UnavailableResponse(detail=f"{what} unavailable ({cause}); see /readyz", dependency=what)
    return JSONResponse(body.model_dump(mode="json"), status_code=503)


def _endpoint(request: Request) -> str:
    return str(getattr(request.scope.get("route"), "path", "unmatched"))


def _metrics(request: Request) -> ServeMetrics:
    m: ServeMetrics = request.app.state.metrics
    return m


async def _on_deadline(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, DeadlineExceeded)
    _metrics(request).deadline_exceeded.labels(_endpoint(request), exc.dependency or "none").inc()
    body = UnavailableResponse(detail=f"{exc}; see /readyz", dependency=exc.dependency)
    return JSONResponse(body.model_dump(mode="json"), status_code=503)


async def _on_overloaded(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Overloaded)
    _metrics(request).shed.labels(_endpoint(request)).inc()
    body = UnavailableResponse(detail=str(exc), dependency=None)
    return JSONResponse(body.model_dump(mode="json"), status_code=503, headers={"Retry-After": "1"})


async def _on_rate_limited(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RateLimited)
    _metrics(request).rate_limited.labels(_endpoint(request)).inc()
    return JSONResponse({"detail": exc.detail}, status_code=429,
                        headers={"Retry-After": retry_after_header(exc.retry_after_s)})


def _bearer_challenge(error: str | None = None, description: str | None = None, scope: str | None = None) -> str:
    parts = ['realm="thaw"']
    if error is not None:
        parts.append(f'error="{error}"')
    if description is not None:
        parts.append('error_description="{}"'.format(description.replace('"', "'")))
    if scope is not None:
        parts.append(f'scope="{scope}"')
    return "Bearer " + ", ".join(parts)


async def _on_auth_error(request: Request, exc: Exception) -> Response:
    # RFC 6750: no error code when no credentials came; invalid_token otherwise
    assert isinstance(exc, AuthError)
    _metrics(request).auth_failures.labels(exc.reason).inc()
    log.info("401 on %s: %s", _endpoint(request), exc.reason)
    error = None if exc.reason == "missing" else "invalid_token"
    return JSONResponse(ErrorResponse(detail=str(exc)).model_dump(mode="json"), status_code=401,
                        headers={"WWW-Authenticate": _bearer_challenge(error, str(exc) if error else None)})


async def _on_forbidden(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ForbiddenError)
    _metrics(request).auth_failures.labels(exc.reason).inc()
    log.info("403 on %s: %s", _endpoint(request), exc.reason)
    headers = ({"WWW-Authenticate": _bearer_challenge("insufficient_scope", str(exc), exc.scope)}
               if exc.scope is not None else None)
    return JSONResponse(ErrorResponse(detail=str(exc)).model_dump(mode="json"), status_code=403, headers=headers)


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
    return JSONResponse(body.model_dump(mode="json", exclude_unset=True), status_code=503)


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
    app.add_exception_handler(DeadlineExceeded, _on_deadline)
    app.add_exception_handler(Overloaded, _on_overloaded)
    app.add_exception_handler(RateLimited, _on_rate_limited)
    app.add_exception_handler(AuthError, _on_auth_error)
    app.add_exception_handler(ForbiddenError, _on_forbidden)
