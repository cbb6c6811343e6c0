"""Topic declarations: every Kafka topic Thaw reads or writes, in one place.

Names, keys and retention only; :func:`infra.topics.ensure_topics` creates the missing ones on a broker. Keys keep
one item's or one user's events in one partition.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    doc: str
    retention_ms: int | None = None
    dlq: bool = False


@dataclass(frozen=True)
class Topics:
    """The topic names for one deployment (an optional prefix isolates tests and tenants)."""

    content_new: str
    user_events: str
    user_events_retry: str
    user_profile: str
    content_indexed: str
    content_dlq: str
    user_dlq: str

    @classmethod
    def for_prefix(cls, prefix: str = "") -> Topics:
        return cls(
            content_new=f"{prefix}content.new",
            user_events=f"{prefix}user.events",
            user_events_retry=f"{prefix}user.events.retry",
            user_profile=f"{prefix}user.profile",
            content_indexed=f"{prefix}content.indexed",
            content_dlq=f"{prefix}content.dlq",
            user_dlq=f"{prefix}user.dlq",
        )

    def specs(self) -> list[TopicSpec]:
        week = 7 * 24 * 3600 * 1000
        return [
            TopicSpec(self.content_new, "item_id", "new posts of all five kinds"),
            TopicSpec(self.user_events, "user_id", "user behaviour"),
            TopicSpec(self.user_events_retry, "user_id", "user events waiting for their item to be indexed",
                      retention_ms=week),
            TopicSpec(self.user_profile, "user_id", "new-user registrations"),
            TopicSpec(self.content_indexed, "item_id", "freshness traces", retention_ms=week),
            TopicSpec(self.content_dlq, "item_id", "rejected content with reason", retention_ms=4 * week, dlq=True),
            TopicSpec(self.user_dlq, "user_id", "rejected user events/profiles with reason", 4 * week, dlq=True),
        ]

    def all(self) -> list[str]:
        return [s.name for s in self.specs()]
