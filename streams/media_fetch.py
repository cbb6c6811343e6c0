"""Fetching a new post's media bytes: the one place the content path reaches outside the process for an event.

An event's publisher names its media URIs, so every fetch goes through :func:`encoders.media.fetch` under the
operator's :class:`~infra.settings.MediaSettings` (``file://`` only inside the media roots, ``http(s)://`` only to
allowed public hosts, bounded reads), with one time budget for the item's image and audio together. Inline
base64 media are decoded here too, so the pure decoder (:func:`streams.cores.decode.decode_media`) only sees bytes.
"""

from __future__ import annotations

import time

from contracts.events import ContentNew
from encoders.media import MediaError, fetch
from infra.settings import MediaSettings
from streams.cores.decode import MediaBytes, Rejected


def media_bytes(
    ev: ContentNew, *, max_image_bytes: int, max_audio_bytes: int, policy: MediaSettings | None = None
) -> MediaBytes | Rejected:
    """The item's image and audio bytes, inline or fetched; a refusal or a failed fetch is a ``CorruptMedia``
    rejection whose reason starts with the rule it broke (``media.file_outside_root: ...``, see
    :mod:`encoders.media`); bad base64 is ``CorruptMedia`` too.

    ``policy`` defaults to :class:`MediaSettings` (no ``file://`` root, public hosts only)."""
    pol = policy if policy is not None else MediaSettings()
    deadline = time.monotonic() + pol.fetch_timeout_s  # one budget for the item's image and audio together
    try:
        image = audio = None
        if ev.image is not None:
            image = ev.image.inline_bytes()
            if image is None and ev.image.uri:
                image = fetch(ev.image.uri, max_image_bytes, policy=pol, deadline=deadline)
        if ev.audio is not None:
            audio = ev.audio.inline_bytes()
            if audio is None and ev.audio.uri:
                audio = fetch(ev.audio.uri, max_audio_bytes, policy=pol, deadline=deadline)
    except MediaError as exc:
        return Rejected("CorruptMedia", str(exc))
    except ValueError as exc:  # bad base64
        return Rejected("CorruptMedia", str(exc)[:300])
    return MediaBytes(image, audio)
