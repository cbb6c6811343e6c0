"""Retry schedules. Pure.

Two kinds of retry:

- **unknown items**: users react to a new post within seconds, often before its vector is searchable. Such an
  event is parked on the retry topic (a :class:`~streams.events.RetryEnvelope`) with a delay that doubles from
  0.25 s up to 5 s, and is dead-lettered as ``UnknownItem`` once the next attempt would fall after
  ``first_seen + grace``. The retry agent is a delay queue: it holds a batch until its last record is due.
- **sinks** (Milvus, Redis, Kafka delivery): a failing step is retried forever with a backoff that doubles from
  0.2 s up to 10 s, holding the partition (nothing is acked, so nothing is lost); see :data:`SINK_BACKOFF`.
- **fence races**: a user-events commit whose fences moved is re-prepared and retried at once, at most
  :data:`FENCE_COMMIT_TRIES` times.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

from tenacity import wait_exponential

from streams.events import RetryEnvelope

UNKNOWN_ITEM_FIRST_DELAY_S = 0.25
UNKNOWN_ITEM_MAX_DELAY_S = 5.0
RETRY_HOLD_MAX_S = 5.0  # the retry agent waits at most this long per batch (records are at most 5 s apart)

SINK_FIRST_DELAY_S = 0.2
SINK_MAX_DELAY_S = 10.0
# tenacity's wait for attempt n: 0.2 * 2^(n-1), capped at 10 s (0.2, 0.4, 0.8, ..., 6.4, 10, 10, ...)
SINK_BACKOFF = wait_exponential(multiplier=SINK_FIRST_DELAY_S, max=SINK_MAX_DELAY_S)

FENCE_COMMIT_TRIES = 8


def unknown_item_delay(attempt: int) -> float:
    """Seconds until retry ``attempt`` (1-based) of an event whose item is not indexed."""
    return min(UNKNOWN_ITEM_FIRST_DELAY_S * 2 ** (attempt - 1), UNKNOWN_ITEM_MAX_DELAY_S)


@dataclass(frozen=True)
class Park:
    """Park the event on the retry topic for another attempt."""

    attempt: int
    first_seen: float  # epoch seconds
    retry_at: float  # epoch seconds

    def envelope(self, *, partition: int, offset: int, key: bytes | None, value: bytes | None,
                 group: str) -> RetryEnvelope:
        """The retry-topic record of source record ``partition``/``offset`` for consumer group ``group``."""
        return RetryEnvelope(
            attempt=self.attempt,
            first_seen=datetime.fromtimestamp(self.first_seen, UTC),
            retry_at=datetime.fromtimestamp(self.retry_at, UTC),
            source_partition=partition,
            source_offset=offset,
            key_b64=base64.b64encode(key).decode() if key is not None else None,
            value_b64=base64.b64encode(value or b"").decode(),
            group=group,
        )


@dataclass(frozen=True)
class GiveUp:
    """Dead-letter the event as ``UnknownItem``."""

    waited_s: float | None  # how long it was retried; None when it was never parked

    def reason(self, item_id: str) -> str:
        waited = f" after {self.waited_s:.1f}s of retries" if self.waited_s is not None else ""
        return f"item {item_id!r} is not indexed{waited}"


def unknown_item(previous: RetryEnvelope | None, now: float, grace_s: float) -> Park | GiveUp:
    """What to do with an event whose item is not indexed at ``now``.

    ``previous`` is the envelope it came back in from the retry topic (None on first sight).
    """
    first = previous.first_seen.timestamp() if previous else now
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
    """How long the retry agent holds a batch: until its last record is due, at most ``cap`` (0: handle now)."""
    wait = max(due, default=0.0) - now
    return min(wait, cap) if wait > 0 else 0.0
