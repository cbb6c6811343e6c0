"""Freshness: seconds from an event's production to its effect being served. Pure."""

from __future__ import annotations

from datetime import datetime


def content_start(produced_at: datetime | None, record_ts_ms: int | None) -> float | None:
    """When a content item started its way (epoch seconds): its ``produced_at``, else the Kafka record's
    timestamp, else unknown."""
    if produced_at:
        return produced_at.timestamp()
    return record_ts_ms / 1000.0 if record_ts_ms else None


def freshness_s(done_at: float, start: float) -> float:
    """Seconds from ``start`` to ``done_at`` (epoch seconds), never negative (clock skew)."""
    return max(0.0, done_at - start)
