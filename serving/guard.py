"""A per-request deadline and a concurrency limit for the API's blocking work (Redis, Milvus, the ranker).

The handlers are ``async``; what blocks runs on a :class:`Bulkhead`: at most ``size`` calls in flight on its own
daemon threads. A call past its deadline is answered at once (:class:`DeadlineExceeded`, 503) while its thread is
left to finish: it keeps its slot until it does, so a hung dependency fills the bulkhead and later requests are shed
at once (:class:`Overloaded`, 503) instead of queueing. Nothing of this runs on FastAPI's shared thread pool, and
the event loop stays free: ``/healthz`` answers while every slot is stuck.

Which dependency a stuck call waits on is read from its thread's stack when the deadline passes
(:func:`stuck_dependency` decides from the module names).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import sys
import threading
from collections.abc import Callable, Sequence
from typing import TypeVar

log = logging.getLogger("thaw.api")

T = TypeVar("T")
_Item = tuple[concurrent.futures.Future[object], Callable[[], object]]

# innermost frame first: the first module that names a client decides
_CLIENT_MODULES = (("redis", "redis"), ("hiredis", "redis"), ("pymilvus", "milvus"), ("grpc", "milvus"),
                   ("milvus_lite", "milvus"))


class Overloaded(Exception):
    """Every slot of the bulkhead is taken (the request is shed: 503 at once, ``Retry-After``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"overloaded: {limit} requests in flight; retry later")


class DeadlineExceeded(Exception):
    """The call did not finish within its deadline (503; its thread is left to finish).

    Args:
        deadline_s: The deadline.
        dependency: What the call's thread was waiting on (``redis``, ``milvus``, ``the served space``), None when
            it is not one of those (CPU, the ranker, not started yet).
    """

    def __init__(self, deadline_s: float, dependency: str | None) -> None:
        self.deadline_s = deadline_s
        self.dependency = dependency
        on = f" (waiting on {dependency})" if dependency else ""
        super().__init__(f"no answer within {deadline_s:g} s{on}")


def stuck_dependency(modules: Sequence[str]) -> str | None:
    """The dependency a thread waits on, from the modules of its stack (innermost first): the first frame in a
    Redis or Milvus client names it; else a wait inside :mod:`serving.space` (another request is building the
    served space) is ``the served space``; else None."""
    for m in modules:
        top = m.split(".", 1)[0]
        for prefix, dep in _CLIENT_MODULES:
            if top == prefix:
                return dep
    if any(m == "serving.space" for m in modules):
        return "the served space"
    return None


def thread_modules(ident: int) -> list[str]:
    """The module of each frame of thread ``ident``'s stack, innermost first (empty when it is not running)."""
    frame = sys._current_frames().get(ident)  # noqa: SLF001 - the documented way to read another thread's stack
    out = []
    while frame is not None:
        out.append(str(frame.f_globals.get("__name__", "")))
        frame = frame.f_back
    return out


class Bulkhead:
    """At most ``size`` blocking calls in flight, each on a thread of its own pool (daemon threads, started as
    needed): a call admitted always finds a free thread, so nothing queues.

    Args:
        size: The most calls in flight, abandoned ones included.
        name: Names the threads (``thaw-<name>-N``).
    """

    def __init__(self, size: int, name: str) -> None:
        self.size = size
        self.name = name
        self._lock = threading.Lock()
        self._in_flight = 0
        self._threads: list[threading.Thread] = []
        self._work: queue.SimpleQueue[_Item | None] = queue.SimpleQueue()

    @property
    def in_flight(self) -> int:
        """Calls running now (those whose caller gave up at the deadline included)."""
        return self._in_flight

    def _release(self) -> None:
        with self._lock:
            self._in_flight -= 1

    def _run(self, work: queue.SimpleQueue[_Item | None]) -> None:
        while (item := work.get()) is not None:
            fut, fn = item
            if not fut.set_running_or_notify_cancel():
                self._release()
                continue
            try:
                result = fn()
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                self._release()  # before the answer: the caller's next request finds the slot free
                fut.set_exception(exc)
            else:
                self._release()
                fut.set_result(result)

    def submit(self, fn: Callable[[], T]) -> tuple[concurrent.futures.Future[T], list[int]]:
        """Start ``fn`` on a free thread; returns its future and a box that holds the thread's id once it runs.

        Raises:
            Overloaded: ``size`` calls are in flight.
        """
        fut: concurrent.futures.Future[T] = concurrent.futures.Future()
        ident: list[int] = []

        def call() -> T:
            ident.append(threading.get_ident())
            return fn()

        with self._lock:
            if self._in_flight >= self.size:
                raise Overloaded(self.size)
            self._in_flight += 1
            if self._in_flight > len(self._threads):
                t = threading.Thread(target=self._run, args=(self._work,), daemon=True,
                                     name=f"thaw-{self.name}-{len(self._threads)}")
                self._threads.append(t)
                t.start()
            self._work.put((fut, call))  # type: ignore[arg-type]
        return fut, ident

    async def run(self, fn: Callable[[], T], deadline_s: float) -> T:
        """``fn()`` on the bulkhead, awaited at most ``deadline_s``.

        Raises:
            Overloaded: Every slot is taken (nothing was started).
            DeadlineExceeded: ``fn`` did not return in time; it goes on running, holding its slot.
            Exception: Whatever ``fn`` raised.
        """
        fut, ident = self.submit(fn)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(fut), deadline_s)
        except TimeoutError:
            dependency = stuck_dependency(thread_modules(ident[0])) if ident else None
            log.warning("a %s request passed its %g s deadline (waiting on %s); %d of %d slots in flight",
                        self.name, deadline_s, dependency or "no known dependency", self.in_flight, self.size)
            raise DeadlineExceeded(deadline_s, dependency) from None

    def close(self) -> None:
        """Let the threads end (an idle one now, a stuck one when its call returns); a later call starts new
        ones. Calls in flight keep their slots until they return."""
        with self._lock:
            threads, self._threads = self._threads, []
            old, self._work = self._work, queue.SimpleQueue()
        for _ in threads:
            old.put(None)
