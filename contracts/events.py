"""Event contracts: every message on a Thaw topic, as versioned pydantic v2 models.

This module imports nothing but pydantic and the standard library, so producers (``workloads/``, or any user's
code) can use it without pulling in the worker. JSON on the wire, UTF-8, one event per Kafka record; the key is
``item_id`` for content topics and ``user_id`` for user topics. Every event carries ``schema_version``; a consumer
accepts the versions in ``SUPPORTED_VERSIONS`` and dead-letters the rest.

Datetimes must be timezone-aware (ISO-8601 with an offset or ``Z``); naive datetimes are rejected.
"""

from __future__ import annotations

import base64
import binascii
import re
import unicodedata
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

SCHEMA_VERSION = 1
SUPPORTED_VERSIONS = frozenset({1})

# Hard caps of the contract. Deployments may lower them (StreamSettings); they can never be raised past these.
MAX_ID_CHARS = 128
MAX_TEXT_CHARS = 10_000
MAX_TAGS = 64
MAX_TAG_CHARS = 64
MAX_INLINE_IMAGE_BYTES = 2 * 1024 * 1024
MAX_INLINE_AUDIO_BYTES = 6 * 1024 * 1024
MAX_AUDIO_SECONDS = 600.0
MAX_URI_CHARS = 2048
MAX_CONTEXT_KEYS = 32
MAX_CONTEXT_KEY_CHARS = 64
MAX_CONTEXT_VALUE_CHARS = 256


class ContentKind(StrEnum):
    TRACK = "track"
    COMMENT = "comment"
    MOMENT = "moment"
    DYNAMIC = "dynamic"
    FAN_GROUP = "fan_group"


class Action(StrEnum):
    IMPRESSION = "impression"
    CLICK = "click"
    PLAY = "play"
    COMPLETE = "complete"
    LIKE = "like"
    COMMENT = "comment"
    SHARE = "share"
    SKIP = "skip"
    FOLLOW = "follow"


_BAD_ID_CHARS = re.compile(r"[\s\x00-\x1f\x7f-\x9f\u2028\u2029\ufeff]")


def _check_id(v: str) -> str:
    """An id in Unicode NFC (so one name typed two ways is one id), at most :data:`MAX_ID_CHARS` UTF-8 *bytes*
    (Milvus counts ``VARCHAR(128)`` in bytes), without whitespace or control characters."""
    v = unicodedata.normalize("NFC", v)
    if not v or len(v.encode("utf-8")) > MAX_ID_CHARS or _BAD_ID_CHARS.search(v):
        raise ValueError(f"ids are 1..{MAX_ID_CHARS} UTF-8 bytes without whitespace or control characters")
    return v


Id = Annotated[str, AfterValidator(_check_id)]


class _Event(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid", str_strip_whitespace=True)

    schema_version: int = SCHEMA_VERSION

    @field_validator("schema_version")
    @classmethod
    def _supported(cls, v: int) -> int:
        if v not in SUPPORTED_VERSIONS:
            raise ValueError(f"unsupported schema_version {v}; supported: {sorted(SUPPORTED_VERSIONS)}")
        return v

    def to_bytes(self) -> bytes:
        return self.model_dump_json(exclude_none=True).encode()


class Media(BaseModel):
    """An image or an audio clip, either by URI (``file://``, ``http(s)://``, ``s3://``) or inline base64.

    Exactly one of ``uri`` and ``data_b64`` is set. Inline payloads are size-capped by the contract; the worker
    decodes them and dead-letters corrupt media.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    uri: str | None = Field(default=None, max_length=MAX_URI_CHARS)
    data_b64: str | None = None
    mime: str | None = Field(default=None, max_length=64)

    @model_validator(mode="after")
    def _one_source(self) -> Media:
        if (self.uri is None) == (self.data_b64 is None):
            raise ValueError("media needs exactly one of 'uri' and 'data_b64'")
        if self.uri is not None and "://" not in self.uri:
            raise ValueError("media uri needs a scheme (file://, http://, https://, s3://)")
        return self

    def inline_bytes(self) -> bytes | None:
        """Decoded inline payload (None for URI media). Raises ValueError on bad base64."""
        if self.data_b64 is None:
            return None
        try:
            return base64.b64decode(self.data_b64, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("media data_b64 is not valid base64") from exc

    def inline_size(self) -> int:
        """Decoded size in bytes of an inline payload, from its base64 length (0 for URI media)."""
        if self.data_b64 is None:
            return 0
        n = len(self.data_b64)
        return n * 3 // 4 - self.data_b64[-2:].count("=")


class AudioMedia(Media):
    duration_s: float | None = Field(default=None, gt=0, le=MAX_AUDIO_SECONDS)

    @model_validator(mode="after")
    def _cap(self) -> AudioMedia:
        if self.inline_size() > MAX_INLINE_AUDIO_BYTES:
            raise ValueError(f"inline audio exceeds {MAX_INLINE_AUDIO_BYTES} bytes")
        return self


class ImageMedia(Media):
    @model_validator(mode="after")
    def _cap(self) -> ImageMedia:
        if self.inline_size() > MAX_INLINE_IMAGE_BYTES:
            raise ValueError(f"inline image exceeds {MAX_INLINE_IMAGE_BYTES} bytes")
        return self


class ContentNew(_Event):
    """``content.new``: a new post of any kind, published the moment it is created."""

    item_id: Id
    kind: ContentKind
    creator_id: Id
    created_at: AwareDatetime
    text: str = Field(default="", max_length=MAX_TEXT_CHARS)
    tags: list[Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]] = Field(
        default_factory=list, max_length=MAX_TAGS
    )
    image: ImageMedia | None = None
    audio: AudioMedia | None = None
    parent_id: Id | None = None  # the track a comment belongs to, the group a dynamic was posted in, ...
    produced_at: AwareDatetime | None = None  # stamped by the producer for freshness tracing

    @model_validator(mode="after")
    def _has_content(self) -> ContentNew:
        if not self.text and not self.tags and self.image is None and self.audio is None:
            raise ValueError("content needs at least one of text, tags, image, audio")
        return self


class UserEvent(_Event):
    """``user.events``: one behaviour of one user on one item."""

    user_id: Id
    item_id: Id
    action: Action
    ts: AwareDatetime
    dwell_ms: int | None = Field(default=None, ge=0, le=24 * 3600 * 1000)
    # free-form client context (surface, ab_bucket, ab_variant, ...): bounded in keys and in characters
    context: dict[
        Annotated[str, Field(min_length=1, max_length=MAX_CONTEXT_KEY_CHARS)],
        Annotated[str, Field(max_length=MAX_CONTEXT_VALUE_CHARS)],
    ] = Field(default_factory=dict, max_length=MAX_CONTEXT_KEYS)
    produced_at: AwareDatetime | None = None


class UserProfile(_Event):
    """``user.profile``: a new user's registration, before any behaviour."""

    user_id: Id
    gender: Literal["f", "m", "x", "unknown"] = "unknown"
    age_bucket: Literal["<18", "18-24", "25-34", "35-44", "45-54", "55+", "unknown"] = "unknown"
    region: str | None = Field(default=None, max_length=64)
    genres: list[Annotated[str, Field(min_length=1, max_length=MAX_TAG_CHARS)]] = Field(
        default_factory=list, max_length=MAX_TAGS
    )
    artists: list[Annotated[str, Field(min_length=1, max_length=128)]] = Field(
        default_factory=list, max_length=MAX_TAGS
    )
    ts: AwareDatetime
    produced_at: AwareDatetime | None = None


class ContentIndexed(_Event):
    """``content.indexed``: the freshness trace of one item.

    ``indexed_at`` is when Milvus acknowledged the upsert; reads at Bounded consistency (the default) see the row
    one time tick later (~200 ms on Milvus 2.3.5, measured), Strong reads see it at once. ``benchmarks/freshness``
    measures produce-to-searchable from outside the engine.
    """

    item_id: Id
    kind: ContentKind
    collection: str
    model_versions: dict[str, str]
    created_at: AwareDatetime
    produced_at: AwareDatetime | None = None  # absent when the producer did not stamp it
    consumed_at: AwareDatetime
    indexed_at: AwareDatetime
    stage_ms: dict[str, float]  # decode, encode (and per encoder), upsert, ... for the batch this item was in
    modalities: list[str]  # decoded media: text, image, audio
    features: list[str] = Field(default_factory=list)  # content feature fields computed (encoders.featurizer)


class DeadLetter(_Event):
    """``*.dlq``: an input the engine could not use, with the reason. Nothing is dropped silently."""

    source_topic: str
    partition: int
    offset: int
    key_b64: str | None = None  # the source record had no key
    value_b64: str
    error_class: str
    error: str = Field(max_length=2000)
    failed_at: AwareDatetime


class RetryEnvelope(_Event):
    """``user.events.retry``: a user event whose item was not indexed yet, parked for another attempt.

    Users react to new posts within seconds, often before the post's vector is searchable; such an event is
    retried with backoff until ``first_seen + grace`` and only then dead-lettered as ``UnknownItem``.
    """

    attempt: int = Field(ge=1)
    first_seen: AwareDatetime
    retry_at: AwareDatetime
    source_partition: int
    source_offset: int
    key_b64: str | None = None  # the source record had no key
    value_b64: str
    # the consumer group that parked it: during a blue/green roll-out two groups consume the same topics, and
    # each applies only its own retries (the other group parks its own copy when it meets the original)
    group: str | None = None
    # the source record's offset is in its group's parked set (``indexing.redis_state``): this copy is applied only
    # while the offset is still parked there (so a copy of an event the group applied directly, or through another
    # copy, is skipped); envelopes without it are applied as they come
    claim: bool = False


EVENT_TYPES: dict[str, type[_Event]] = {
    "content.new": ContentNew,
    "user.events": UserEvent,
    "user.profile": UserProfile,
    "content.indexed": ContentIndexed,
}


def example_events() -> dict[str, dict[str, Any]]:
    """One valid JSON example per input topic (shown in docs/events.md, checked by the contract tests)."""
    t = "2026-11-25T10:00:00Z"
    return {
        "content.new": {
            "schema_version": 1,
            "item_id": "track:9f2c",
            "kind": "track",
            "creator_id": "artist:77",
            "created_at": t,
            "text": "Late-night piano sketch in D minor",
            "tags": ["piano", "ambient", "minor"],
            "audio": {"uri": "s3://bucket/tracks/9f2c.ogg", "duration_s": 184.0},
        },
        "user.events": {
            "schema_version": 1,
            "user_id": "u:1024",
            "item_id": "track:9f2c",
            "action": "play",
            "ts": t,
            "dwell_ms": 95000,
            "context": {"surface": "feed"},
        },
        "user.profile": {
            "schema_version": 1,
            "user_id": "u:2048",
            "gender": "f",
            "age_bucket": "18-24",
            "region": "EU",
            "genres": ["indie folk", "dream pop"],
            "artists": ["Beach House"],
            "ts": t,
        },
    }


def now_utc() -> datetime:
    from datetime import UTC

    return datetime.now(UTC)
