"""A value rebuilt at most once per ``ttl_s``, shared by the API's request threads.

The fresh-window matrix (the vectors of every item created within the window, up to ``fresh_exact_max``) and the
fallback list are the same for every request of a space within a second, yet building them costs a Redis range
read of up to 20k entries (and a stack of their vectors) per request. :class:`TTLValue` builds once, serves the
value to every request until it is ``ttl_s`` old, then rebuilds; a single thread rebuilds while the others keep
serving the previous value (so a slow rebuild, e.g. a Redis hiccup, does not queue every request behind it), and
only the very first build makes callers wait. A failed build raises in the thread that ran it and stores
nothing: the next call builds again. ``ttl_s = 0`` builds on every call (no caching).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from typing import Generic, TypeVar

T = TypeVar("T")


class TTLValue(Generic[T]):
    """One cached value per key (e.g. the list size a fallback is built for), rebuilt when ``ttl_s`` old."""

    def __init__(self, ttl_s: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.ttl_s = ttl_s
        self.clock = clock
        self._values: dict[Hashable, tuple[float, T]] = {}
        self._building: set[Hashable] = set()
        self._lock = threading.Lock()
        self._first = threading.Condition(self._lock)
        self.builds = 0  # how many times a value was built (tests, metrics)

    def get(self, build: Callable[[], T], key: Hashable = None) -> T:
        """The value for ``key``: cached if younger than ``ttl_s``, else built with ``build()``."""
        if self.ttl_s <= 0:
            self.builds += 1
            return build()
        with self._lock:
            while True:
                now = self.clock()
                have = self._values.get(key)
                if have is not None and now - have[0] < self.ttl_s:
                    return have[1]
                if key not in self._building:
                    self._building.add(key)
                    break
                if have is not None:  # another thread is rebuilding: serve the previous value meanwhile
                    return have[1]
                self._first.wait(timeout=1.0)  # the first build of this key is running
        try:
            value = build()
            with self._lock:
                self._values[key] = (self.clock(), value)
                self.builds += 1
            return value
        finally:
            with self._lock:
                self._building.discard(key)
                self._first.notify_all()
