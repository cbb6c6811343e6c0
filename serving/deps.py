"""FastAPI dependencies: what a route gets from the application (``app.state``, set by ``create_apps``).

``app.state`` holds ``served`` (a :data:`serving.ports.ServedFn`), ``metrics`` (:class:`serving.metrics.ServeMetrics`),
``settings`` (:class:`infra.settings.Settings`), ``authenticator`` (:class:`serving.auth.Authenticator`, None with
authentication off), the limiters of :mod:`serving.rate_limit` (``rate_limiter`` per caller, ``auth_failure_limiter``
per client address), and the guards of the blocking work (:class:`Guard`): ``recommend_guard`` for ``/recommend``
and ``/ab``, ``ready_guard`` for ``/readyz``.

:func:`get_principal` is the ``Security`` dependency of the public routes: a bearer token or an API key (the
OpenAPI spec lists both schemes); every dependency here is ``async`` and touches no I/O, so nothing waits on
FastAPI's thread pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, TypeVar

from fastapi import Depends, Request, Security
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from serving.auth import LOCAL_DEV, Authenticator, AuthError, Principal
from serving.errors import DependencyUnavailableError
from serving.guard import Bulkhead
from serving.metrics import ServeMetrics
from serving.ports import RecommenderLike, ServedFn
from serving.rate_limit import RateLimiter

T = TypeVar("T")

bearer_scheme = HTTPBearer(
    auto_error=False, scheme_name="bearer",
    description="A JWT (HS256, RS256 or ES256) whose `sub` is the user; the `scope` claim may grant `recommend` "
                "(any user) and `admin` (debug, variant).")
api_key_scheme = APIKeyHeader(
    name="X-API-Key", auto_error=False, scheme_name="apiKey",
    description="A service caller's key; its scopes are configured with its SHA-256 (THAW_SERVE__AUTH__API_KEYS).")


@dataclass(frozen=True)
class Guard:
    """A bulkhead and the deadline its calls are awaited for."""

    bulkhead: Bulkhead
    deadline_s: float

    async def __call__(self, fn: Callable[[], T]) -> T:
        """``fn()`` off the event loop within the deadline (see :meth:`serving.guard.Bulkhead.run`)."""
        return await self.bulkhead.run(fn, self.deadline_s)


async def get_metrics(request: Request) -> ServeMetrics:
    """The app's metric families."""
    metrics: ServeMetrics = request.app.state.metrics
    return metrics


async def get_served(request: Request) -> ServedFn:
    """The function that returns the current recommender (call it inside a guarded call: it may build one)."""
    served: ServedFn = request.app.state.served
    return served


async def get_recommend_guard(request: Request) -> Guard:
    """The guard of ``/recommend`` and ``/ab`` (``serve.max_concurrency``, ``serve.request_deadline_s``)."""
    guard: Guard = request.app.state.recommend_guard
    return guard


async def get_ready_guard(request: Request) -> Guard:
    """The guard of ``/readyz`` (its own small bulkhead, ``serve.ready_deadline_s``)."""
    guard: Guard = request.app.state.ready_guard
    return guard


async def get_principal(
    request: Request,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(bearer_scheme)],
    api_key: Annotated[str | None, Security(api_key_scheme)],
) -> Principal:
    """The caller: the bearer token's user or the API key's service (``LOCAL_DEV`` with authentication off).

    Two limits (:mod:`serving.rate_limit`; ``RateLimited`` is answered 429 by :mod:`serving.errors`): before any
    credential is verified, the client address's budget of failed authentications (each 401 takes one of it), then,
    once the caller is known, the caller's own rate limit.

    Raises:
        AuthError: No credential, two of them, or one that does not verify (the API answers 401).
        RateLimited: The address has failed authentication too often, or the caller is over its rate limit.
    """
    auth: Authenticator | None = request.app.state.authenticator
    client = f"ip:{request.client.host if request.client is not None else '-'}"
    if auth is None:
        principal = LOCAL_DEV
    else:
        failures: RateLimiter = request.app.state.auth_failure_limiter
        failures.check(client)
        try:
            principal = _verify(auth, bearer, api_key)
        except AuthError:
            failures.charge(client)
            raise
    limiter: RateLimiter = request.app.state.rate_limiter
    if limiter.enabled:
        limiter.take(client if principal is LOCAL_DEV else f"{principal.kind}:{principal.subject}")
    return principal


def _verify(auth: Authenticator, bearer: HTTPAuthorizationCredentials | None, api_key: str | None) -> Principal:
    """The caller the one credential names.

    Raises:
        AuthError: No credential, two of them, or one that does not verify.
    """
    if bearer is not None and api_key is not None:
        raise AuthError("ambiguous", "send one credential: a bearer token or an X-API-Key, not both")
    if bearer is not None:
        return auth.from_token(bearer.credentials)
    if api_key is not None:
        return auth.from_api_key(api_key)
    raise AuthError("missing", "credentials needed: Authorization: Bearer <JWT>, or X-API-Key")


def current_recommender(served: ServedFn) -> RecommenderLike:
    """The recommender of the served space (blocking: call it inside a guarded call).

    Raises:
        DependencyUnavailableError: Building it failed (Redis or Milvus away, a model not published).
    """
    try:
        return served()
    except Exception as exc:  # noqa: BLE001 - any failure to (re)build the space: Redis, Milvus, the model dir
        raise DependencyUnavailableError("the served space", exc) from exc


MetricsDep = Annotated[ServeMetrics, Depends(get_metrics)]
ServedDep = Annotated[ServedFn, Depends(get_served)]
RecommendGuardDep = Annotated[Guard, Depends(get_recommend_guard)]
ReadyGuardDep = Annotated[Guard, Depends(get_ready_guard)]
PrincipalDep = Annotated[Principal, Security(get_principal)]
