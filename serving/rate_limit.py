"""Per-client rate limits of the API: a token bucket per caller.

A caller is who authenticated (a JWT's ``sub``, an API key's name) or, with authentication off (``local-dev``), the
client address. Each has a bucket of ``burst`` tokens refilled at ``rate`` per second; a request takes one, and a
request that finds the bucket empty is answered 429 with ``Retry-After`` (the seconds until a token is back), before
any Redis or Milvus work. The buckets live in an LRU of at most ``max_clients`` callers, so a flood of distinct
callers costs bounded memory (an evicted caller starts again from a full bucket). ``rate = 0`` turns the limit off.
Per process: behind a balancer over N replicas a caller gets up to N times the rate.
"""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

from cachetools import LRUCache


class RateLimited(Exception):
    """The caller's bucket is empty; ``retry_after_s`` until the next token."""

    def __init__(self, retry_after_s: float) -> None:
        super().__init__(f"rate limit exceeded; retry in {retry_after_s:.2f} s")
        self.retry_after_s = retry_after_s


class RateLimiter:
    """Token buckets per caller key (see the module docstring)."""

    def __init__(self, rate: float, burst: float, max_clients: int = 100_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.rate, self.burst, self.clock = rate, max(1.0, burst), clock
        self._buckets: LRUCache[str, tuple[float, float]] = LRUCache(maxsize=max_clients)  # key -> (tokens, at)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def take(self, key: str) -> None:
        """Take one token of ``key``'s bucket.

        Raises:
            RateLimited: The bucket is empty.
        """
        if not self.enabled:
            return
        now = self.clock()
        with self._lock:
            tokens, at = self._buckets.get(key, (self.burst, now))
            tokens = min(self.burst, tokens + (now - at) * self.rate)
            if tokens < 1.0:
                self._buckets[key] = (tokens, now)
                raise RateLimited((1.0 - tokens) / self.rate)
            self._buckets[key] = (tokens - 1.0, now)


def retry_after_header(seconds: float) -> str:
    """``Retry-After`` in whole seconds (at least 1)."""
    return str(max(1, math.ceil(seconds)))
