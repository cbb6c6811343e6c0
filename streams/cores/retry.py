"""Retry schedules. Pure.

Two kinds of retry:

- **unknown items**: users react to a new post within seconds, often before its vector is searchable. Such an
  event is parked on the retry topic (a :class:`~contracts.events.RetryEnvelope`) with a delay that doubles from
  0.25 s up to 5 s, and is dead-lettered as ``UnknownItem`` once the next attempt would fall after
  ``first_seen + grace``. The retry agent is a delay queue: it holds a batch until its last record is due.
  Whoever can write the retry topic controls an envelope's ``first_seen``, ``attempt`` and ``retry_at``, so none
  is taken as it comes: ``first_seen`` is clamped into ``[now - RETRY_MAX_AGE_S, now]`` (a future one would never
  let the grace run out), an ``attempt`` past :func:`max_unknown_item_attempts` is dead-lettered as a forged
  envelope (which also bounds the parks of any one event), and a ``retry_at`` later than any the worker writes
  does not hold the batch (:func:`hold_s`).
- **sinks** (Milvus, Redis, Kafka delivery): a step failing for an infrastructure reason (:func:`is_transient`:
  a service unreachable, timing out, overloaded, refusing writes) is retried forever with a jittered backoff whose
  ceiling doubles from 0.2 s up to 10 s (:data:`SINK_WAIT`), holding the partition (nothing is acked, so nothing
  is lost). Any other failure of a handling step is the records' own (a poison record, see
  :mod:`streams.cores.poison`): retrying it would block the partition forever, so the worker isolates and
  dead-letters the records it fails on instead. Deliveries and the user-events commit are retried whatever fails.
- **fence races**: a user-events commit whose fences moved is re-prepared and retried at once, at most
  :data:`FENCE_COMMIT_TRIES` times.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Hashable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TypeVar

import grpc
from aiokafka.errors import KafkaError as AsyncKafkaError
from kafka.errors import KafkaError as SyncKafkaError  # type: ignore[import-untyped]
from pymilvus.exceptions import ConnectError, ConnectionNotExistException, MilvusException, MilvusUnavailableException
from redis import exceptions as redis_errors
from tenacity import wait_exponential, wait_random_exponential

from contracts.events import RetryEnvelope
from indexing.redis_state import FenceMovedError, FencesRegressedError

UNKNOWN_ITEM_FIRST_DELAY_S = 0.25
UNKNOWN_ITEM_MAX_DELAY_S = 5.0
RETRY_HOLD_MAX_S = 5.0  # the retry agent waits at most this long per batch (records are at most 5 s apart)
# how far ahead of the consuming worker's clock the worker that parked an event may be: a record due later than
# now + UNKNOWN_ITEM_MAX_DELAY_S + this was not written by a worker (a forged retry_at) and is handled at once
RETRY_CLOCK_SKEW_S = 5.0
# the oldest first_seen an envelope is taken at (the retry topic's retention): older ones are clamped to it
RETRY_MAX_AGE_S = 7 * 24 * 3600.0

SINK_FIRST_DELAY_S = 0.2
SINK_MAX_DELAY_S = 10.0
# tenacity's wait for attempt n: 0.2 * 2^(n-1), capped at 10 s (0.2, 0.4, 0.8, ..., 6.4, 10, 10, ...)
SINK_BACKOFF = wait_exponential(multiplier=SINK_FIRST_DELAY_S, max=SINK_MAX_DELAY_S)
# what a failing sink step waits: "equal jitter" under that ceiling, uniform in [1/2, 1] x SINK_BACKOFF, so workers
# that lost the same Redis or Milvus do not all come back at the same instant (still never above 10 s)
SINK_WAIT = wait_exponential(multiplier=SINK_FIRST_DELAY_S / 2, max=SINK_MAX_DELAY_S / 2) + wait_random_exponential(
    multiplier=SINK_FIRST_DELAY_S / 2, max=SINK_MAX_DELAY_S / 2
)

FENCE_COMMIT_TRIES = 8


def unknown_item_delay(attempt: int) -> float:
    """Seconds until retry ``attempt`` (1-based) of an event whose item is not indexed (finite for any int)."""
    doublings = min(max(attempt, 1), 32) - 1  # 0.25 * 2**5 > 5 already: the cap keeps 2**n small
    return min(UNKNOWN_ITEM_FIRST_DELAY_S * 2**doublings, UNKNOWN_ITEM_MAX_DELAY_S)


def unknown_item_attempts(grace_s: float) -> int:
    """The parks a genuine history makes within ``grace_s``: the largest n whose delays 1..n sum to at most it."""
    n, total = 0, 0.0
    while True:
        d = unknown_item_delay(n + 1)
        if d >= UNKNOWN_ITEM_MAX_DELAY_S:  # from here on every delay is the cap: the rest in one step
            return n + max(0, int((grace_s - total) // d))
        if total + d > grace_s:
            return n
        n, total = n + 1, total + d


def max_unknown_item_attempts(grace_s: float) -> int:
    """The highest ``attempt`` an envelope may come back with: twice a genuine history, plus 4 (retries that came
    early: clocks apart, the grace changed between deployments). One past it is a forged envelope."""
    return 2 * unknown_item_attempts(grace_s) + 4


@dataclass(frozen=True)
class Park:
    """Park the event on the retry topic for another attempt."""

    attempt: int
    first_seen: float  # epoch seconds
    retry_at: float  # epoch seconds

    def envelope(self, *, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 group: str, claim: bool = False) -> RetryEnvelope:
        """The retry-topic record of source record ``partition``/``offset`` for consumer group ``group``
        (``claim``: the source offset is registered in the group's parked set, see :class:`RetryEnvelope`)."""
        return RetryEnvelope(
            attempt=self.attempt,
            first_seen=datetime.fromtimestamp(self.first_seen, UTC),
            retry_at=datetime.fromtimestamp(self.retry_at, UTC),
            source_partition=partition,
            source_offset=offset,
            key_b64=base64.b64encode(key).decode() if key is not None else None,
            value_b64=base64.b64encode(value or b"").decode(),
            group=group,
            claim=claim,
        )


@dataclass(frozen=True)
class GiveUp:
    """Dead-letter the event as ``UnknownItem``."""

    waited_s: float | None  # how long it was retried; None when it was never parked
    forged: str | None = None  # why its envelope cannot be one the worker wrote (it is not parked again)

    def reason(self, item_id: str) -> str:
        waited = f" after {self.waited_s:.1f}s of retries" if self.waited_s is not None else ""
        forged = f"; forged retry envelope: {self.forged}" if self.forged is not None else ""
        return f"item {item_id!r} is not indexed{waited}{forged}"


def unknown_item(previous: RetryEnvelope | None, now: float, grace_s: float) -> Park | GiveUp:
    """What to do with an event whose item is not indexed at ``now``.

    ``previous`` is the envelope it came back in from the retry topic (None on first sight). Its ``first_seen`` is
    clamped into ``[now - RETRY_MAX_AGE_S, now]``; an ``attempt`` over :func:`max_unknown_item_attempts` gives up
    at once, naming the forged envelope.
    """
    if previous is not None:
        most = max_unknown_item_attempts(grace_s)
        if previous.attempt > most:
            return GiveUp(None, forged=f"attempt {previous.attempt} is past the {most} a {grace_s:g}s grace allows")
    first = min(max(previous.first_seen.timestamp(), now - RETRY_MAX_AGE_S), now) if previous else now
    attempt = previous.attempt + 1 if previous else 1
    delay = unknown_item_delay(attempt)
    if now + delay - first <= grace_s:
        return Park(attempt=attempt, first_seen=first, retry_at=now + delay)
    return GiveUp(now - first if previous else None)


def unwrap(env: RetryEnvelope) -> tuple[int, int, bytes | None, bytes]:
    """The source record a retry envelope carries: partition, offset, key, value."""
    key = base64.b64decode(env.key_b64) if env.key_b64 else None
    return env.source_partition, env.source_offset, key, base64.b64decode(env.value_b64)


def retry_due(value: bytes | None) -> float:
    """Epoch seconds at which a retry-topic record is due (0 when it cannot be read: handled as a reject)."""
    try:
        return datetime.fromisoformat(json.loads(value or b"{}")["retry_at"]).timestamp()
    except (ValueError, KeyError, TypeError):
        return 0.0


def hold_s(due: Iterable[float], now: float, cap: float = RETRY_HOLD_MAX_S) -> float:
    """How long the retry agent holds a batch: until its last record is due, at most ``cap`` (0: handle now).

    A record due later than a worker ever parks one (``now + UNKNOWN_ITEM_MAX_DELAY_S + RETRY_CLOCK_SKEW_S``) has a
    forged ``retry_at``: it counts as due now, so it cannot hold its batch (it is handled, and parked again with a
    genuine due time if its item is still unknown)."""
    latest = now + UNKNOWN_ITEM_MAX_DELAY_S + RETRY_CLOCK_SKEW_S
    wait = max((d for d in due if d <= latest), default=0.0) - now
    return min(wait, cap) if wait > 0 else 0.0


# ------------------------------------------------------------------------------------------ claims past the end

#: seconds the engine keeps a partition's end offset (see :func:`stale_ends`)
END_OFFSET_TTL_S = 5.0
K = TypeVar("K", bound=Hashable)


def past_the_end(offset: int, end: int) -> str | None:
    """Why a claiming retry-topic copy cannot be one a worker parked, or None: its ``source_offset`` is at or past
    its source partition's end offset (``end``, the high watermark), so no record of that partition has it. A
    genuine park names a record the worker read there. Such a copy would wait for its park forever (neither parked
    nor behind the fence) and hold its retry partition."""
    if offset < end:
        return None
    return f"source offset {offset} is at or past the source partition's end offset {end}: no record has it"


def stale_ends(wanted: Mapping[K, int], cached: Mapping[K, tuple[int, float]], now: float,
               ttl_s: float = END_OFFSET_TTL_S) -> list[K]:
    """The partitions whose end offset must be read (again) from the broker: ``wanted`` maps each to the highest
    offset asked about, ``cached`` holds (end, read at) of earlier reads. One not cached, read longer than
    ``ttl_s`` ago, or whose cached end is at or below its offset asked about (an end only grows: it may have
    passed the offset since, and a copy is never dead-lettered on a stale end) is read."""
    return [k for k, off in wanted.items()
            if k not in cached or now - cached[k][1] > ttl_s or cached[k][0] <= off]


# ------------------------------------------------------------------------------------------------ what is transient

#: Redis errors about the server or the cluster, not the command's data: unreachable, loading, failing over,
#: read-only replica, out of memory, ACL/auth, busy script, cluster redirects
_REDIS_TRANSIENT: tuple[type[BaseException], ...] = (
    redis_errors.ConnectionError,  # also AuthenticationError, AuthorizationError, BusyLoadingError, MaxClients...
    redis_errors.TimeoutError,
    redis_errors.ClusterError,  # ClusterDownError, MasterDownError
    redis_errors.TryAgainError,
    redis_errors.ReadOnlyError,
    redis_errors.OutOfMemoryError,
    redis_errors.NoPermissionError,
    redis_errors.AskError,  # MovedError
    redis_errors.RedisClusterException,  # RedisClusterUnreachableError, SlotNotCoveredError
)
#: ResponseError prefixes that are about the server's state (redis-py has no class for these)
_REDIS_TRANSIENT_REPLIES = ("BUSY", "MISCONF", "NOREPLICAS", "LOADING", "MASTERDOWN", "READONLY", "OOM", "TRYAGAIN",
                            "CLUSTERDOWN", "NOAUTH", "NOPERM")
#: gRPC status codes (Milvus) that say the service, not the request, is the problem
_GRPC_TRANSIENT = frozenset({
    grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.ABORTED, grpc.StatusCode.CANCELLED, grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.PERMISSION_DENIED,
})
#: Milvus error codes (the server's ``merr`` codes, which pymilvus carries as ``MilvusException.code``) of a service
#: that is down, not ready, over a memory/disk/rate quota or denying writes, and of a collection that is not there
#: or not loaded (every record would fail alike: hold the partition, do not dead-letter the stream)
_MILVUS_TRANSIENT_CODES = frozenset({2, 3, 4, 7, 8, 9, 11, 12, 100, 101})
#: what a Milvus server says (under its generic code 65535) when one of its own components cannot reach another:
#: seen while the local Milvus shut down (``empty grpc client: failed to connect 127.0.0.1:...: connection refused``)
_MILVUS_TRANSIENT_MESSAGES = ("empty grpc client", "failed to connect", "connection refused", "connection reset",
                              "service unavailable", "not healthy", "node not found", "channel not available")
#: OSErrors about a path, not a connection: an input (or a bug) names a file that is not there
_PATH_ERRORS: tuple[type[OSError], ...] = (FileNotFoundError, FileExistsError, IsADirectoryError, NotADirectoryError)


def _transient_one(exc: BaseException) -> bool:
    if isinstance(exc, FenceMovedError):  # another worker writes the same partitions: a rebalance, not the data
        return True
    if isinstance(exc, FencesRegressedError):  # Redis went back in time: the worker stops and resumes (not data)
        return True
    if isinstance(exc, OSError):  # ConnectionError, TimeoutError, socket errors; not a missing file
        return not isinstance(exc, _PATH_ERRORS)
    if isinstance(exc, SyncKafkaError | AsyncKafkaError):
        return True  # delivery and broker errors: the agents' handling steps do not talk to Kafka themselves
    if isinstance(exc, _REDIS_TRANSIENT):
        return True
    if isinstance(exc, redis_errors.ResponseError):
        return str(exc).lstrip().upper().startswith(_REDIS_TRANSIENT_REPLIES)
    if isinstance(exc, ConnectError | MilvusUnavailableException | ConnectionNotExistException):
        return True
    if isinstance(exc, MilvusException):
        code = exc.code
        if isinstance(code, grpc.StatusCode):  # pymilvus gave up retrying an RPC: it carries the gRPC status
            return code in _GRPC_TRANSIENT
        if isinstance(code, int) and code in _MILVUS_TRANSIENT_CODES:
            return True
        message = str(getattr(exc, "message", "") or exc).lower()
        return any(m in message for m in _MILVUS_TRANSIENT_MESSAGES)
    if isinstance(exc, grpc.FutureTimeoutError):
        return True
    if isinstance(exc, grpc.RpcError):
        code_of = getattr(exc, "code", None)
        return callable(code_of) and code_of() in _GRPC_TRANSIENT
    return False


def is_transient(exc: BaseException) -> bool:
    """Whether ``exc`` is an infrastructure failure (Kafka, Redis, Milvus, the network) worth retrying as is.

    True for: builtin ``ConnectionError``/``TimeoutError`` and other ``OSError``s except path errors
    (``FileNotFoundError`` ...); every Kafka error (kafka-python, aiokafka); Redis connection, timeout, cluster,
    read-only, out-of-memory, permission and busy replies; Milvus connection errors and ``MilvusException`` codes of
    a service down, not ready, over quota or rate limit, or a collection missing/not loaded; gRPC ``UNAVAILABLE``,
    ``DEADLINE_EXCEEDED``, ``RESOURCE_EXHAUSTED`` and the like; a fence race (:class:`FenceMovedError`).

    The chain counts: an exception raised from or while handling a transient one is transient (pymilvus wraps a
    gRPC ``UNAVAILABLE`` in a ``MilvusException`` after its own retries). Anything else (a bug, a dimension mismatch,
    a model rejecting an input, a Milvus parameter error) is not: retrying it cannot help.
    """
    seen: set[int] = set()
    todo: list[BaseException | None] = [exc]
    while todo:
        e = todo.pop()
        if e is None or id(e) in seen or len(seen) >= 16:
            continue
        seen.add(id(e))
        if _transient_one(e):
            return True
        todo += [e.__cause__, e.__context__]
    return False


def error_name(exc: BaseException) -> str:
    """The class of ``exc`` as dead letters and the stuck signal name it: ``ValueError`` for a builtin, else with
    its top-level package, ``redis.ConnectionError``, ``pymilvus.MilvusException`` (which service failed)."""
    cls = type(exc)
    root = cls.__module__.split(".", 1)[0]
    return cls.__qualname__ if root == "builtins" else f"{root}.{cls.__qualname__}"
