"""Media fetching and decoding for the encoders: images to RGB arrays, audio to mono float waveforms.

Every failure is a :class:`MediaError` with a short, safe message (no payload bytes, no credentials from URIs):
the content agent dead-letters the item with it. Fetching supports ``file://`` and ``http(s)://`` with a size cap
and a timeout; other schemes are refused explicitly.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import numpy as np


class MediaError(ValueError):
    """A media payload could not be fetched or decoded."""


@dataclass(frozen=True)
class DecodedImage:
    pixels: np.ndarray  # H x W x 3 uint8 (RGB)

    @property
    def size(self) -> tuple[int, int]:
        return int(self.pixels.shape[1]), int(self.pixels.shape[0])


@dataclass(frozen=True)
class DecodedAudio:
    samples: np.ndarray  # N float32 mono in [-1, 1]
    sample_rate: int

    @property
    def duration_s(self) -> float:
        return len(self.samples) / float(self.sample_rate)


def safe_uri(uri: str) -> str:
    """The URI without user info or query string, for messages and logs."""
    parts = urlsplit(uri)
    host = parts.hostname or ""
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}{parts.path}"


def fetch(uri: str, max_bytes: int, timeout_s: float = 5.0) -> bytes:
    """Read a media URI (file:// or http(s)://), refusing more than ``max_bytes``."""
    parts = urlsplit(uri)
    if parts.scheme == "file":
        path = Path(unquote(parts.path))
        try:
            size = path.stat().st_size
        except OSError as exc:
            raise MediaError(f"cannot read {safe_uri(uri)}: {exc.strerror}") from None
        if size > max_bytes:
            raise MediaError(f"{safe_uri(uri)} is {size} bytes, over the {max_bytes}-byte cap")
        return path.read_bytes()
    if parts.scheme in ("http", "https"):
        import httpx

        try:
            with httpx.stream("GET", uri, timeout=timeout_s, follow_redirects=True) as resp:
                if resp.status_code != 200:
                    raise MediaError(f"GET {safe_uri(uri)} answered {resp.status_code}")
                buf = bytearray()
                for chunk in resp.iter_bytes():
                    buf += chunk
                    if len(buf) > max_bytes:
                        raise MediaError(f"{safe_uri(uri)} exceeds the {max_bytes}-byte cap")
                return bytes(buf)
        except httpx.HTTPError as exc:
            raise MediaError(f"GET {safe_uri(uri)} failed: {type(exc).__name__}") from None
    raise MediaError(f"unsupported media scheme {parts.scheme!r} (file, http, https)")


def decode_image(data: bytes, max_pixels: int = 40_000_000) -> DecodedImage:
    """Decode PNG/JPEG/WebP/GIF bytes to RGB; transparent images are composited onto white."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise MediaError(f"image is {im.width}x{im.height}, over the pixel cap")
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                rgba = im.convert("RGBA")
                bg = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                bg.alpha_composite(rgba)
                rgb = bg.convert("RGB")
            else:
                rgb = im.convert("RGB")
            return DecodedImage(np.asarray(rgb, dtype=np.uint8))
    except MediaError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as exc:
        raise MediaError(f"corrupt or unsupported image: {type(exc).__name__}") from None


def decode_audio(data: bytes, max_seconds: float) -> DecodedAudio:
    """Decode WAV/FLAC/OGG bytes to a mono float32 waveform at the file's own rate."""
    import soundfile as sf

    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate <= 0 or f.frames <= 0:
                raise MediaError("audio has no samples")
            dur = f.frames / float(f.samplerate)
            if dur > max_seconds:
                raise MediaError(f"audio is {dur:.1f}s, over the {max_seconds:.0f}s cap")
            x = f.read(dtype="float32", always_2d=True)
            sr = int(f.samplerate)
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise MediaError(f"corrupt or unsupported audio: {type(exc).__name__}") from None
    mono = x.mean(axis=1).astype(np.float32)
    if not np.all(np.isfinite(mono)):
        raise MediaError("audio contains non-finite samples")
    return DecodedAudio(mono, sr)
