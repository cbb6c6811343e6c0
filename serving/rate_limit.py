"""Per-client rate limits of the API: a token bucket per caller.

A caller is who authenticated (a JWT's ``sub``, an API key's name) or, with authentication off (``local-dev``), the
client address. Each has a bucket of ``burst`` tokens refilled at ``rate`` per second; a request takes one, and a
request that finds the bucket empty is answered 429 with ``Retry-After`` (the seconds until a token is back), before
any Redis or Milvus work. The buckets live in an LRU of at most ``max_clients`` callers, so a flood of distinct
callers costs bounded memory (an evicted caller starts again from a full bucket). ``rate = 0`` turns the limit off.
Per process: behind a balancer over N replicas a caller gets up to N times the rate.

**Failed authentication** has buckets of its own, per client address (:data:`AUTH_FAILURE_BURST` failures,
refilled at :data:`AUTH_FAILURE_RPS`): every 401 takes a token of its address's bucket (:meth:`RateLimiter.charge`),
and a request from an address whose bucket is empty is answered 429 *before* its credentials are verified
(:meth:`RateLimiter.check`), so a flood or a guessing run of bad tokens and keys is bounded per address. A failure
never touches an authenticated caller's bucket (the two limits are separate limiters), and a request that
authenticates takes nothing from its address's failure budget.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from cachetools import LRUCache

# the failed-authentication limit per client address (module constants: there is no setting for it yet)
AUTH_FAILURE_BURST = 20.0
AUTH_FAILURE_RPS = 1.0

CALLER_REFUSAL = "rate limit exceeded for this caller"
AUTH_FAILURE_REFUSAL = "too many failed authentications from this address; retry later"


class RateLimited(Exception):
    """The caller's bucket is empty; ``retry_after_s`` until the next token, ``detail`` what the 429 body says."""

    def __init__(self, retry_after_s: float, detail: str = CALLER_REFUSAL) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after_s:.2f} s")
        self.retry_after_s = retry_after_s
        self.detail = detail


class RateLimiter:
    """Token buckets per caller key (see the module docstring); ``refusal`` is what its 429 body says."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic, refusal: str = CALLER_REFUSAL) -> None:
        self.rate, self.burst, self.clock, self.refusal = rate, max(1.0, burst), clock, refusal
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(maxsize=max_clients)  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def _tokens(self, key: str, now: float) -> float:
        """``key``'s tokens at ``now`` (lock held)."""
        tokens, at = self._buckets.get(key, (self.burst, now))
        return min(self.burst, tokens + max(0.0, now - at) * self.rate)

    def take(self, key: str) -> None:
        """Take one token of ``key``'s bucket.

        Raises:
            RateLimited: The bucket is empty.
        """
        self._admit(key, take=True)

    def check(self, key: str) -> None:
        """Refuse when ``key``'s bucket is empty, taking nothing (a request is let through to be verified).

        Raises:
            RateLimited: The bucket is empty.
        """
        self._admit(key, take=False)

    def _admit(self, key: str, *, take: bool) -> None:
        if not self.enabled:
            return
        now = self.clock()
        with self._lock:
            tokens = self._tokens(key, now)
            if tokens < 1.0:
                if take:
                    self._buckets[key] = (tokens, now)
                raise RateLimited((1.0 - tokens) / self.rate, self.refusal)
            if take:
                self._buckets[key] = (tokens - 1.0, now)

    def charge(self, key: str) -> None:
        """Take one token of ``key``'s bucket if one is left, never raising (a failure that already happened is
        counted; the next :meth:`check` refuses once the bucket is empty)."""
        if not self.enabled:
            return
        now = self.clock()
        with self._lock:
            self._buckets[key] = (max(0.0, self._tokens(key, now) - 1.0), now)


def auth_failure_limiter(rps: float = AUTH_FAILURE_RPS, burst: float = AUTH_FAILURE_BURST,
                         max_clients: int = 100_000, clock: Callable[[], float] = time.monotonic) -> RateLimiter:
    """The limiter of failed authentications per client address (see the module docstring; ``serve.auth_failure_*``
    settings, whose defaults are these constants)."""
    return RateLimiter(rps, burst, max_clients, clock, AUTH_FAILURE_REFUSAL)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)))
