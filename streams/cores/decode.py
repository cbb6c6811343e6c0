"""Decoding raw Kafka records into contract events, with a typed reason for every rejection.

Pure: bytes in, an event or a :class:`Rejected` out; media are decoded from bytes the engine already holds
(fetching a URI is the engine's I/O: :mod:`streams.media_fetch`). Nothing here raises on bad input.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from typing import TypeVar

from pydantic import BaseModel, ValidationError

from contracts.events import ContentNew, DeadLetter, now_utc
from encoders.featurizer import content_document
from encoders.media import DecodedAudio, DecodedImage, MediaError, decode_audio, decode_image

E = TypeVar("E", bound=BaseModel)


@dataclass(frozen=True)
class Rejected:
    """Why one record was not used (becomes a DLQ record)."""

    error_class: str  # InvalidJSON | SchemaViolation | Oversize | CorruptMedia | UnknownItem | ...
    error: str


def decode_event(raw: bytes | None, model: type[E], max_bytes: int) -> E | Rejected:
    """Parse and validate one record's value."""
    if raw is None:
        return Rejected("InvalidJSON", "empty record value (tombstone)")
    if len(raw) > max_bytes:
        return Rejected("Oversize", f"record is {len(raw)} bytes, over the {max_bytes}-byte cap")
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        # json_invalid errors are JSON syntax problems; everything else violates the schema.
        if any(e.get("type") == "json_invalid" for e in exc.errors()):
            return Rejected("InvalidJSON", _first_error(exc))
        return Rejected("SchemaViolation", _first_error(exc))
    except (ValueError, UnicodeDecodeError) as exc:
        return Rejected("InvalidJSON", str(exc)[:300])


def _first_error(exc: ValidationError) -> str:
    errs = exc.errors(include_url=False, include_input=False)
    parts = []
    for e in errs[:3]:
        loc = ".".join(str(x) for x in e.get("loc", ())) or "<root>"
        parts.append(f"{loc}: {e.get('msg')}")
    more = f" (+{len(errs) - 3} more)" if len(errs) > 3 else ""
    return "; ".join(parts) + more


@dataclass(frozen=True)
class MediaBytes:
    """An item's media as bytes: inline base64 decoded, or what the engine fetched for a URI (None: no such media,
    or a URI scheme the engine does not fetch)."""

    image: bytes | None
    audio: bytes | None


@dataclass(frozen=True)
class DecodedMedia:
    image: DecodedImage | None
    audio: DecodedAudio | None


@dataclass(frozen=True)
class MediaCaps:
    """The size limits an item's media are decoded under (from ``StreamSettings`` and ``MediaSettings``)."""

    max_image_bytes: int
    max_audio_bytes: int
    max_audio_s: float
    max_image_pixels: int = 40_000_000
    max_audio_decoded_bytes: int | None = None


def decode_media(media: MediaBytes, caps: MediaCaps) -> DecodedMedia | Rejected:
    """Decode an item's image and audio bytes; corrupt or oversize media is a rejection. Pure: the bytes come from
    the event or from the engine's fetch (:func:`streams.media_fetch.media_bytes`)."""
    img = aud = None
    try:
        if media.image is not None:
            if len(media.image) > caps.max_image_bytes:
                return Rejected("Oversize",
                                f"image is {len(media.image)} bytes, over the {caps.max_image_bytes}-byte cap")
            img = decode_image(media.image, max_pixels=caps.max_image_pixels)
        if media.audio is not None:
            if len(media.audio) > caps.max_audio_bytes:
                return Rejected("Oversize",
                                f"audio is {len(media.audio)} bytes, over the {caps.max_audio_bytes}-byte cap")
            aud = decode_audio(media.audio, caps.max_audio_s, max_decoded_bytes=caps.max_audio_decoded_bytes)
    except MediaError as exc:
        return Rejected("CorruptMedia", str(exc))
    return DecodedMedia(img, aud)


def item_text(ev: ContentNew) -> str:
    """The text an item is embedded from: its own text and tags (:func:`encoders.featurizer.content_document`),
    or its kind when it has neither."""
    return content_document(ev.text or "", ev.tags or [], fallback=ev.kind.value.replace("_", " "))


def dead_letter(
    *, topic: str, partition: int, offset: int, key: bytes | None, value: bytes | None, why: Rejected
) -> DeadLetter:
    """The DLQ record for a rejected input (the original bytes kept, base64)."""
    return DeadLetter(
        source_topic=topic,
        partition=partition,
        offset=offset,
        key_b64=base64.b64encode(key).decode() if key is not None else None,
        value_b64=base64.b64encode(value or b"").decode(),
        error_class=why.error_class,
        error=why.error[:2000],
        failed_at=now_utc(),
    )


def parse_json_loose(raw: bytes) -> dict[str, object] | None:
    """Best-effort JSON object parse (for keys/ids of records that failed validation)."""
    try:
        v = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    return v if isinstance(v, dict) else None
