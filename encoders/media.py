"""Media fetching and decoding for the encoders: images to RGB arrays, audio to mono float waveforms.

Every failure is a :class:`MediaError` with a short, safe message (no payload bytes, no credentials from URIs):
the content agent dead-letters the item with it. Fetching supports ``file://`` and ``http(s)://``; other schemes
are refused explicitly.

The URI comes from a ``content.new`` event, whose publisher controls every byte of it, so fetching follows the
media policy (:class:`infra.settings.MediaSettings`, threat model in ``docs/THREAT_MODEL.md``). Each refusal is a
:class:`MediaRefused` whose message starts with the rule it broke (``media.file_outside_root: ...``):

- ``file://``: only under a configured media root (the path resolved, symlinks followed; no root: refused), only a
  regular file (never a device, FIFO or socket; checked before opening and again on the opened descriptor, opened
  non-blocking so a FIFO cannot stall the partition), and never more than the byte cap read, whatever ``stat``
  says.
- ``http(s)://``: the host on the allow-list when one is set; every address DNS gives checked (loopback, private,
  link-local, multicast, reserved and unspecified refused unless their network is allowed explicitly) and the
  connection made to the checked address (Host header and TLS SNI/verification name the host), so a DNS answer
  that changes between check and connect cannot redirect it; redirects followed by hand, each target checked the
  same way, at most ``max_redirects``; one wall-clock budget for the whole item (a watchdog shuts the socket down at
  the deadline: a slow drip of headers or body cannot hold the partition); the byte cap counted on the bytes
  received (a lying ``Content-Length`` gets nothing more), transfer compression decoded with a bounded inflater.
- decoding: images over the pixel cap (read from the header, before any pixel is decoded) and audio whose decoded
  samples would exceed the decoded-size cap (from the header) are refused as bombs.
"""

from __future__ import annotations

import io
import ipaddress
import os
import socket
import stat
import threading
import time
import zlib
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote, urljoin, urlsplit

import numpy as np

from infra.settings import MediaSettings

if TYPE_CHECKING:
    import ssl

    import httpx

# rule codes: the first word of every refusal's message (and of the DLQ record's ``error``)
FILE_OUTSIDE_ROOT = "media.file_outside_root"
NOT_REGULAR_FILE = "media.not_regular_file"
UNREADABLE = "media.unreadable"
BAD_URI = "media.bad_uri"
UNSUPPORTED_SCHEME = "media.unsupported_scheme"
TOO_LARGE = "media.too_large"
HOST_NOT_ALLOWED = "media.host_not_allowed"
PRIVATE_ADDRESS = "media.private_address"
DNS_FAILED = "media.dns_failed"
TOO_MANY_REDIRECTS = "media.too_many_redirects"
TIMEOUT = "media.timeout"
HTTP_STATUS = "media.http_status"
HTTP_FAILED = "media.http_failed"
CONTENT_ENCODING = "media.content_encoding"
DECOMPRESSION_BOMB = "media.decompression_bomb"
PIXEL_BOMB = "media.pixel_bomb"
CORRUPT = "media.corrupt"
AUDIO_TOO_LONG = "media.audio_too_long"

_REDIRECTS = (301, 302, 303, 307, 308)
_CHUNK = 64 * 1024


class MediaError(ValueError):
    """A media payload could not be fetched or decoded."""


class MediaRefused(MediaError):
    """A media URI or payload broke a rule of the media policy; ``rule`` names it (``media.<rule>``)."""

    def __init__(self, rule: str, message: str) -> None:
        super().__init__(f"{rule}: {message}")
        self.rule = rule


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
    try:
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:  # a malformed port or host
        host, port = "?", ""
    if ":" in host:
        host = f"[{host}]"
    return f"{parts.scheme}://{host}{port}{parts.path}"[:300]


def fetch(
    uri: str,
    max_bytes: int,
    timeout_s: float | None = None,
    *,
    policy: MediaSettings | None = None,
    deadline: float | None = None,
) -> bytes:
    """Read a media URI (file:// or http(s)://) under the media policy, refusing more than ``max_bytes``.

    Args:
        uri: The URI an event named.
        max_bytes: Byte cap (on the bytes read or received, whatever the file size or ``Content-Length`` say).
        timeout_s: Time budget of this fetch (default ``policy.fetch_timeout_s``).
        policy: The media policy; default :class:`MediaSettings` (no file roots: ``file://`` is refused; any public
            host).
        deadline: ``time.monotonic()`` by which the fetch must be done (an item's budget shared by its media);
            wins over ``timeout_s``.

    Raises:
        MediaRefused: A rule refused the URI or its payload (the message starts with the rule).
        MediaError: The media could not be read.
    """
    pol = policy if policy is not None else MediaSettings()
    if deadline is None:
        deadline = time.monotonic() + (timeout_s if timeout_s is not None else pol.fetch_timeout_s)
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        return _fetch_file(uri, max_bytes, pol)
    if scheme in ("http", "https"):
        return _fetch_http(uri, max_bytes, pol, deadline)
    raise MediaRefused(UNSUPPORTED_SCHEME, f"unsupported media scheme {parts.scheme!r} (file, http, https)")


# ---------------------------------------------------------------------------------------------------- file://
def _fetch_file(uri: str, max_bytes: int, pol: MediaSettings) -> bytes:
    parts = urlsplit(uri)
    shown = safe_uri(uri)
    if parts.netloc not in ("", "localhost"):
        raise MediaRefused(BAD_URI, f"{shown}: a file URI names no host (file:///path)")
    raw = unquote(parts.path)
    if not raw.startswith("/") or "\x00" in raw:
        raise MediaRefused(BAD_URI, f"{shown}: not an absolute path")
    if not pol.file_roots:
        raise MediaRefused(FILE_OUTSIDE_ROOT, f"{shown}: no media root is configured (THAW_MEDIA__FILE_ROOTS)")
    real = os.path.realpath(raw)  # symlinks followed: where the bytes really are
    if not any(_within(real, os.path.realpath(root)) for root in pol.file_roots):
        raise MediaRefused(FILE_OUTSIDE_ROOT, f"{shown} resolves outside the media roots")
    try:
        st = os.stat(real)
    except OSError as exc:
        raise MediaRefused(UNREADABLE, f"cannot read {shown}: {exc.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise MediaRefused(NOT_REGULAR_FILE, f"{shown} is not a regular file ({_file_kind(st.st_mode)})")
    if st.st_size > max_bytes:
        raise MediaRefused(TOO_LARGE, f"{shown} is {st.st_size} bytes, over the {max_bytes}-byte cap")
    flags = os.O_RDONLY | os.O_NONBLOCK | os.O_NOFOLLOW | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(real, flags)
    except OSError as exc:
        raise MediaRefused(UNREADABLE, f"cannot read {shown}: {exc.strerror}") from None
    try:
        fst = os.fstat(fd)  # what was opened, not what was checked: swapped meanwhile is refused
        if not stat.S_ISREG(fst.st_mode) or (fst.st_dev, fst.st_ino) != (st.st_dev, st.st_ino):
            raise MediaRefused(NOT_REGULAR_FILE, f"{shown} changed to a non-regular file while being opened")
        buf = bytearray()
        while True:
            chunk = os.read(fd, min(_CHUNK, max_bytes + 1 - len(buf)))
            if not chunk:
                break
            buf += chunk
            if len(buf) > max_bytes:
                raise MediaRefused(TOO_LARGE, f"{shown} exceeds the {max_bytes}-byte cap")
        return bytes(buf)
    except OSError as exc:
        raise MediaRefused(UNREADABLE, f"cannot read {shown}: {exc.strerror}") from None
    finally:
        os.close(fd)


def _within(path: str, root: str) -> bool:
    return path == root or os.path.commonpath([path, root]) == root


def _file_kind(mode: int) -> str:
    for test, name in ((stat.S_ISDIR, "a directory"), (stat.S_ISCHR, "a character device"),
                       (stat.S_ISBLK, "a block device"), (stat.S_ISFIFO, "a FIFO"), (stat.S_ISSOCK, "a socket")):
        if test(mode):
            return name
    return "not a plain file"


# --------------------------------------------------------------------------------------------------- http(s)://
@dataclass(frozen=True)
class _Target:
    url: httpx.URL  # the URI as named
    host: str  # its host, lower case
    addresses: tuple[str, ...]  # the checked addresses, in resolver order: the request connects to these only


def _fetch_http(uri: str, max_bytes: int, pol: MediaSettings, deadline: float) -> bytes:
    current = uri
    for _hop in range(pol.max_redirects + 1):
        target = _check_target(current, pol, deadline)
        for i, address in enumerate(target.addresses):  # the next checked address when one cannot be reached
            try:
                resp_status, location, body = _get(target, address, max_bytes, deadline)
                break
            except _ConnectFailed:
                if i == len(target.addresses) - 1:
                    raise
        if resp_status in _REDIRECTS:
            if not location:
                raise MediaRefused(HTTP_STATUS, f"GET {safe_uri(str(target.url))} answered {resp_status} "
                                                "without a Location")
            current = urljoin(str(target.url), location)
            continue
        if resp_status != 200:
            raise MediaRefused(HTTP_STATUS, f"GET {safe_uri(str(target.url))} answered {resp_status}")
        assert body is not None
        return body
    raise MediaRefused(TOO_MANY_REDIRECTS, f"{safe_uri(uri)}: more than {pol.max_redirects} redirects")


def _check_target(uri: str, pol: MediaSettings, deadline: float) -> _Target:
    import httpx

    shown = safe_uri(uri)
    try:
        url = httpx.URL(uri)
    except (httpx.InvalidURL, ValueError, TypeError):
        raise MediaRefused(BAD_URI, f"{shown}: not a valid URL") from None
    if url.scheme not in ("http", "https"):
        raise MediaRefused(UNSUPPORTED_SCHEME, f"redirected to a {url.scheme!r} URI ({shown}); only http, https")
    host = url.raw_host.decode("ascii").lower().rstrip(".")  # IDNA (punycode) form, as DNS and SNI see it
    if not host:
        raise MediaRefused(BAD_URI, f"{shown}: no host")
    if pol.allowed_hosts and not any(_host_matches(host, h) for h in pol.allowed_hosts):
        raise MediaRefused(HOST_NOT_ALLOWED, f"{shown}: host {host} is not on the media host allow-list")
    port = url.port or (443 if url.scheme == "https" else 80)
    addresses = _resolve(host, port, deadline, shown)
    for a in addresses:
        why = _forbidden(a, pol)
        if why:
            named = f"{a} is" if str(a) == host else f"{host} resolves to {a},"
            raise MediaRefused(PRIVATE_ADDRESS, f"{shown}: {named} {why}")
    return _Target(url, host, tuple(str(a) for a in addresses))


def _host_matches(host: str, pattern: str) -> bool:
    if pattern.startswith("*."):
        return host.endswith(pattern[1:]) and len(host) > len(pattern) - 1
    return host == pattern


def _resolve(host: str, port: int, deadline: float, shown: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    try:
        return [ipaddress.ip_address(host)]
    except ValueError:
        pass
    box: dict[str, Any] = {}

    def run() -> None:
        try:
            box["infos"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, proto=socket.IPPROTO_TCP)
        except (OSError, UnicodeError) as exc:
            box["error"] = exc

    # getaddrinfo has no timeout of its own: it runs aside, and the item stops waiting at its deadline
    t = threading.Thread(target=run, name="media-dns", daemon=True)
    t.start()
    t.join(max(0.0, deadline - time.monotonic()))
    if t.is_alive():
        raise MediaRefused(TIMEOUT, f"{shown}: resolving {host} took longer than the fetch budget")
    if "error" in box:
        raise MediaRefused(DNS_FAILED, f"{shown}: cannot resolve {host}")
    out: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = []
    for info in box["infos"]:
        addr = ipaddress.ip_address(str(info[4][0]).split("%", 1)[0])
        if addr not in out:
            out.append(addr)
    if not out:
        raise MediaRefused(DNS_FAILED, f"{shown}: {host} has no address")
    return out


def _forbidden(addr: ipaddress.IPv4Address | ipaddress.IPv6Address, pol: MediaSettings) -> str | None:
    """Why the worker must not connect to ``addr`` (None: a public address, or in an allowed network)."""
    if any(addr in ipaddress.ip_network(n, strict=False) for n in pol.allowed_private_networks):
        return None
    checks: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):  # IPv4 embedded in IPv6 reaches the IPv4 address
        embedded = addr.ipv4_mapped or addr.sixtofour
        if embedded is None and addr in ipaddress.ip_network("64:ff9b::/96"):  # NAT64
            embedded = ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF)
        if embedded is not None:
            if any(embedded in ipaddress.ip_network(n, strict=False) for n in pol.allowed_private_networks):
                return None
            checks.append(embedded)
    for a in checks:
        for flag, name in (("is_unspecified", "an unspecified"), ("is_loopback", "a loopback"),
                           ("is_link_local", "a link-local"), ("is_multicast", "a multicast"),
                           ("is_private", "a private"), ("is_reserved", "a reserved")):
            if getattr(a, flag):
                return f"{name} address"
        if not a.is_global:
            return "not a public address"
    return None


class _Watchdog:
    """Shuts the sockets of one fetch down at its deadline, so no read can outlive the item's budget."""

    def __init__(self, deadline: float) -> None:
        self._lock = threading.Lock()
        self._socks: list[socket.socket] = []
        self.fired = False
        self._timer = threading.Timer(max(0.0, deadline - time.monotonic()), self._fire)
        self._timer.daemon = True
        self._timer.start()

    def trace(self, event: str, info: dict[str, Any]) -> None:
        """httpcore's ``trace`` extension: learn each socket as soon as it is connected (and TLS-wrapped)."""
        if event not in ("connection.connect_tcp.complete", "connection.start_tls.complete"):
            return
        stream = info.get("return_value")
        sock = stream.get_extra_info("socket") if stream is not None else None
        if isinstance(sock, socket.socket):
            with self._lock:
                self._socks.append(sock)
                if self.fired:
                    _shutdown(sock)

    def _fire(self) -> None:
        with self._lock:
            self.fired = True
            for s in self._socks:
                _shutdown(s)

    def cancel(self) -> None:
        self._timer.cancel()


def _shutdown(sock: socket.socket) -> None:
    try:
        socket.socket.shutdown(sock, socket.SHUT_RDWR)  # the plain socket's: wakes a blocked read, TLS or not
    except OSError:
        pass


@cache
def _tls_context() -> ssl.SSLContext:
    import httpx

    return httpx.create_ssl_context(trust_env=True)  # SSL_CERT_FILE/DIR: the operator's, not the publisher's


class _ConnectFailed(MediaRefused):
    """No connection to this address (nothing was sent): the next checked address may be tried."""


def _get(target: _Target, address: str, max_bytes: int, deadline: float) -> tuple[int, str | None, bytes | None]:
    """One GET to one checked address of the target: (status, Location of a redirect, body of a 200)."""
    import httpx

    shown = safe_uri(str(target.url))
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        raise MediaRefused(TIMEOUT, f"{shown}: over the fetch budget")
    url = target.url.copy_with(host=address)
    netloc = target.url.netloc.decode("ascii")
    headers = {"Host": netloc, "Accept-Encoding": "identity", "User-Agent": "thaw-media/1"}
    extensions: dict[str, Any] = {}
    if target.url.scheme == "https":
        extensions["sni_hostname"] = target.host
    dog = _Watchdog(deadline)
    extensions["trace"] = dog.trace
    try:
        # trust_env=False: no proxy from the environment (it would connect elsewhere than the checked address)
        with httpx.Client(trust_env=False, verify=_tls_context(), follow_redirects=False,
                          timeout=httpx.Timeout(remaining),
                          limits=httpx.Limits(max_keepalive_connections=0)) as client:
            with client.stream("GET", url, headers=headers, extensions=extensions) as resp:
                if resp.status_code in _REDIRECTS:
                    return resp.status_code, resp.headers.get("location"), None
                if resp.status_code != 200:
                    return resp.status_code, None, None
                declared = resp.headers.get("content-length")
                if declared and declared.strip().isdigit() and int(declared) > max_bytes:
                    raise MediaRefused(TOO_LARGE, f"{shown} declares {int(declared)} bytes, over the "
                                                  f"{max_bytes}-byte cap")
                body = _read_body(resp.iter_raw(), resp.headers.get("content-encoding", ""), max_bytes,
                                  deadline, shown)
                if dog.fired:  # a shut-down socket ends a length-less body early: never take it for the whole
                    raise MediaRefused(TIMEOUT, f"{shown}: over the fetch budget")
                return 200, None, body
    except MediaRefused:
        raise
    except (httpx.HTTPError, OSError, ValueError) as exc:
        if dog.fired or time.monotonic() >= deadline or isinstance(exc, httpx.TimeoutException):
            raise MediaRefused(TIMEOUT, f"{shown}: over the fetch budget") from None
        if isinstance(exc, httpx.ConnectError):
            why = "its TLS certificate is not valid for the host" if "CERTIFICATE" in str(exc).upper() else \
                "cannot connect"
            raise _ConnectFailed(HTTP_FAILED, f"GET {shown} failed at {address}: {why}") from None
        raise MediaRefused(HTTP_FAILED, f"GET {shown} failed: {type(exc).__name__}") from None
    finally:
        dog.cancel()


def _read_body(chunks: Any, encoding: str, max_bytes: int, deadline: float, shown: str) -> bytes:
    """The body, decoded (gzip/deflate with a bounded inflater), refused past ``max_bytes`` or the deadline."""
    enc = encoding.strip().lower()
    inflater: Any = None  # asked for identity; a server that compresses anyway is inflated with a bound
    if enc in ("gzip", "x-gzip", "deflate"):
        inflater = zlib.decompressobj(16 + zlib.MAX_WBITS if enc != "deflate" else zlib.MAX_WBITS)
    elif enc not in ("", "identity"):
        raise MediaRefused(CONTENT_ENCODING, f"{shown}: unsupported Content-Encoding {enc[:40]!r}")
    buf = bytearray()
    received = 0
    for chunk in chunks:
        received += len(chunk)
        if received > max_bytes:
            raise MediaRefused(TOO_LARGE, f"{shown} exceeds the {max_bytes}-byte cap")
        if inflater is None:
            buf += chunk
        else:
            _inflate(inflater, chunk, buf, max_bytes, shown)
        if time.monotonic() >= deadline:
            raise MediaRefused(TIMEOUT, f"{shown}: over the fetch budget")
    if inflater is not None:
        _inflate(inflater, b"", buf, max_bytes, shown)
    return bytes(buf)


def _inflate(inflater: Any, chunk: bytes, buf: bytearray, max_bytes: int, shown: str) -> None:
    try:
        # never more than one byte past the cap per call; the input it did not reach stays unread
        room = max_bytes + 1 - len(buf)
        buf += inflater.decompress(chunk, room) if chunk else inflater.flush(room)
    except zlib.error:
        raise MediaRefused(CORRUPT, f"{shown}: corrupt compressed body") from None
    if len(buf) > max_bytes:
        raise MediaRefused(DECOMPRESSION_BOMB, f"{shown} inflates past the {max_bytes}-byte cap")


# ---------------------------------------------------------------------------------------------------- decoding
def decode_image(data: bytes, max_pixels: int = 40_000_000) -> DecodedImage:
    """Decode PNG/JPEG/WebP/GIF bytes to RGB; transparent images are composited onto white.

    The size is read from the header and checked against ``max_pixels`` before any pixel is decoded.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as im:
            if im.width * im.height > max_pixels:
                raise MediaRefused(PIXEL_BOMB, f"image is {im.width}x{im.height}, over the {max_pixels}-pixel cap")
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
    except Image.DecompressionBombError as exc:  # Pillow's hard limit, checked on the header when opening
        raise MediaRefused(PIXEL_BOMB, f"over Pillow's decompression-bomb limit: {str(exc)[:200]}") from None
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise MediaRefused(CORRUPT, f"corrupt or unsupported image: {type(exc).__name__}") from None


def decode_audio(data: bytes, max_seconds: float, max_decoded_bytes: int | None = None) -> DecodedAudio:
    """Decode WAV/FLAC/OGG bytes to a mono float32 waveform at the file's own rate.

    Args:
        data: The encoded audio.
        max_seconds: Longer audio is refused (from the header, before decoding).
        max_decoded_bytes: Audio whose decoded float32 samples (frames x channels x 4) would exceed this is refused
            before decoding (a small FLAC/OGG can claim hours of many channels); default
            ``MediaSettings.max_audio_decoded_bytes``.
    """
    import soundfile as sf

    cap = max_decoded_bytes if max_decoded_bytes is not None else MediaSettings().max_audio_decoded_bytes
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            if f.samplerate <= 0 or f.frames <= 0:
                raise MediaRefused(CORRUPT, "audio has no samples")
            dur = f.frames / float(f.samplerate)
            if dur > max_seconds:
                raise MediaRefused(AUDIO_TOO_LONG, f"audio is {dur:.1f}s, over the {max_seconds:.0f}s cap")
            decoded = int(f.frames) * int(f.channels) * 4
            if decoded > cap:
                raise MediaRefused(DECOMPRESSION_BOMB, f"audio would decode to {decoded} bytes ({f.channels} "
                                                       f"channels x {f.frames} frames), over the {cap}-byte cap")
            x = f.read(dtype="float32", always_2d=True)
            sr = int(f.samplerate)
    except MediaError:
        raise
    except (sf.LibsndfileError, RuntimeError, ValueError, TypeError) as exc:
        raise MediaRefused(CORRUPT, f"corrupt or unsupported audio: {type(exc).__name__}") from None
    mono = x.mean(axis=1).astype(np.float32)
    if not np.all(np.isfinite(mono)):
        raise MediaRefused(CORRUPT, "audio contains non-finite samples")
    return DecodedAudio(mono, sr)
