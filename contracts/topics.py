"""Topic declarations: every Kafka topic Thaw reads or writes, in one place.

Names, keys, retention and record size caps; :func:`infra.topics.ensure_topics` creates the missing ones on a broker
and keeps the caps of existing ones in line. Keys keep one item's or one user's events in one partition.

Record size caps (``max.message.bytes``) follow from the contract (:mod:`contracts.events`): an input topic admits
the largest valid event as ``json.dumps`` (escaping every non-ASCII character: a character outside the BMP takes
12 bytes), ``json.dumps(..., ensure_ascii=False)`` or :meth:`~contracts.events._Event.to_bytes` writes it, plus a
margin (``tests/unit/infra/test_topic_caps.py`` builds those events and checks each cap). A retry envelope carries
its user event base64 (4/3 of the bytes); a dead letter carries its record base64 with its error. Numbers written
with trailing zeros or JSON padded with whitespace are not covered: a producer that writes them is refused by the
broker (``MessageSizeTooLarge``) past the cap. Note that the broker checks a whole record *batch* against the cap:
a producer whose batches are larger (``batch.size`` / aiokafka's ``max_batch_size``) than a topic's cap must lower
them (kafka-python and the Java client split a refused batch; aiokafka does not).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

KiB = 1024
MiB = 1024 * KiB

#: the caps of the input topics (bytes per record batch), from the contract's caps
INPUT_MAX_MESSAGE_BYTES: dict[str, int] = {
    # inline media: a 2 MiB image and 6 MiB of audio as base64 (10.7 MiB), 10,000 characters of text, 64 tags
    "content.new": 16 * MiB,
    # the largest valid user event is 123,403 bytes as json.dumps writes it (32 context entries of 64 + 256
    # characters outside the BMP, 12 bytes each escaped; ids of 128 UTF-8 bytes), 41,483 as UTF-8
    "user.events": 128 * KiB,
    # the largest valid profile is 149,334 bytes escaped (64 genres of 64 and 64 artists of 128 characters), 50,262
    "user.profile": 160 * KiB,
}
#: freshness traces the worker writes (an item id, model versions, stage times: ~1 KB)
CONTENT_INDEXED_MAX_MESSAGE_BYTES = 1 * MiB
#: the replay ledger's entries (positions and topic names: ~300 bytes)
DLQ_REPLAYS_MAX_MESSAGE_BYTES = 64 * KiB
#: what a retry envelope holds besides its record's key and value (times, offsets, the group name)
ENVELOPE_FIELDS_BYTES = 4 * KiB
#: what a dead letter holds besides its record's key and value: its error (2,000 characters, at most 12,000 bytes
#: escaped), the source topic and offsets, and the record's key as the DLQ record's own key (up to ~2 KiB)
DEAD_LETTER_FIELDS_BYTES = 16 * KiB
_ROUND = 16 * KiB

#: the base names (without the prefix) of the topics, in the order of :meth:`Topics.specs`
TOPIC_NAMES = ("content.new", "user.events", "user.events.retry", "user.profile", "content.indexed", "content.dlq",
               "user.dlq", "dlq.replays")


def base64_bytes(n: int) -> int:
    """The length of ``n`` bytes as base64 (with padding)."""
    return 4 * ((n + 2) // 3)


def _round_up(n: int) -> int:
    return -(-n // _ROUND) * _ROUND


def envelope_max_message_bytes(source_cap: int) -> int:
    """The cap of a retry topic whose envelopes wrap records of a topic capped at ``source_cap``."""
    return _round_up(base64_bytes(source_cap) + ENVELOPE_FIELDS_BYTES)


def dead_letter_max_message_bytes(*source_caps: int) -> int:
    """The cap of a DLQ that takes the records of topics capped at ``source_caps`` (the largest counts)."""
    return _round_up(base64_bytes(max(source_caps)) + DEAD_LETTER_FIELDS_BYTES)


def record_caps(overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """Every topic's cap by base name: ``overrides`` (base name -> bytes), else the contract's. The retry topic and
    the DLQs follow the topics they take records from, so overriding ``user.events`` also grows them."""
    o = dict(overrides or {})
    unknown = sorted(set(o) - set(TOPIC_NAMES))
    if unknown:
        raise ValueError(f"no such topic {unknown}: the topics are {list(TOPIC_NAMES)}")
    caps = {name: o.get(name, cap) for name, cap in INPUT_MAX_MESSAGE_BYTES.items()}
    caps["user.events.retry"] = o.get("user.events.retry", envelope_max_message_bytes(caps["user.events"]))
    caps["content.indexed"] = o.get("content.indexed", CONTENT_INDEXED_MAX_MESSAGE_BYTES)
    caps["content.dlq"] = o.get("content.dlq", dead_letter_max_message_bytes(caps["content.new"]))
    caps["user.dlq"] = o.get("user.dlq", dead_letter_max_message_bytes(
        caps["user.events"], caps["user.profile"], caps["user.events.retry"]))
    caps["dlq.replays"] = o.get("dlq.replays", DLQ_REPLAYS_MAX_MESSAGE_BYTES)
    return {name: caps[name] for name in TOPIC_NAMES}


def least_caps(caps: Mapping[str, int]) -> dict[str, int]:
    """The least cap the retry topic and each DLQ can have under ``caps`` (every topic by base name, as
    :func:`record_caps` returns them): the envelope, or the dead letter, of the largest record their sources admit
    (unrounded: :func:`envelope_max_message_bytes` and :func:`dead_letter_max_message_bytes` add a margin)."""
    def letter(*sources: str) -> int:
        return base64_bytes(max(caps[s] for s in sources)) + DEAD_LETTER_FIELDS_BYTES

    return {"user.events.retry": base64_bytes(caps["user.events"]) + ENVELOPE_FIELDS_BYTES,
            "content.dlq": letter("content.new"),
            "user.dlq": letter("user.events", "user.profile", "user.events.retry")}


def undersized_caps(caps: Mapping[str, int]) -> dict[str, tuple[int, int]]:
    """The retry topic and DLQs whose cap in ``caps`` cannot hold their sources' largest record wrapped (an
    envelope the retry topic refuses, a dead letter a DLQ refuses: its delivery would be retried forever):
    base name -> (cap, least cap, :func:`least_caps`)."""
    return {name: (caps[name], need) for name, need in least_caps(caps).items() if caps[name] < need}


@dataclass(frozen=True)
class TopicSpec:
    name: str
    key: str
    doc: str
    retention_ms: int | None = None
    dlq: bool = False
    max_message_bytes: int = 1 * MiB  # the broker's own default
    compact: bool = False  # cleanup.policy compact,delete: the latest record per key, within the retention


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
    dlq_replays: str

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
            dlq_replays=f"{prefix}dlq.replays",
        )

    def specs(self, caps: Mapping[str, int] | None = None) -> list[TopicSpec]:
        """The declarations, with the record caps of :func:`record_caps` (``caps``: overrides by base name)."""
        week = 7 * 24 * 3600 * 1000
        c = record_caps(caps)
        return [
            TopicSpec(self.content_new, "item_id", "new posts of all five kinds",
                      max_message_bytes=c["content.new"]),
            TopicSpec(self.user_events, "user_id", "user behaviour", max_message_bytes=c["user.events"]),
            TopicSpec(self.user_events_retry, "user_id", "user events waiting for their item to be indexed",
                      retention_ms=week, max_message_bytes=c["user.events.retry"]),
            TopicSpec(self.user_profile, "user_id", "new-user registrations", max_message_bytes=c["user.profile"]),
            TopicSpec(self.content_indexed, "item_id", "freshness traces", retention_ms=week,
                      max_message_bytes=c["content.indexed"]),
            TopicSpec(self.content_dlq, "item_id", "rejected content with reason", retention_ms=4 * week, dlq=True,
                      max_message_bytes=c["content.dlq"]),
            TopicSpec(self.user_dlq, "user_id", "rejected user events/profiles with reason", 4 * week, dlq=True,
                      max_message_bytes=c["user.dlq"]),
            # twice the DLQs' retention: a replayed record that fails again is recognised while its dead letter lives
            TopicSpec(self.dlq_replays, "dlq topic/partition/offset", "the DLQ replay ledger (thaw dlq replay)",
                      retention_ms=8 * week, max_message_bytes=c["dlq.replays"], compact=True),
        ]

    def all(self) -> list[str]:
        return [s.name for s in self.specs()]

    def dlq_sources(self, dlq: str) -> list[str]:
        """The input topics whose records ``dlq`` takes (those a replay may republish to)."""
        if dlq == self.content_dlq:
            return [self.content_new]
        if dlq == self.user_dlq:
            return [self.user_events, self.user_profile]
        raise ValueError(f"{dlq!r} is not a DLQ of this deployment")
