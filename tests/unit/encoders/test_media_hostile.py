"""Media URIs named by an untrusted publisher (docs/THREAT_MODEL.md): every rule of the media policy, with real files,
a real FIFO, real device and /proc files, and a real HTTP server on 127.0.0.1. Each refusal is prompt, bounded in
memory, and names its rule."""

from __future__ import annotations

import gzip
import io
import os
import socket
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from encoders import media
from encoders.media import MediaError, MediaRefused, decode_audio, decode_image, fetch
from infra.settings import MediaSettings, Settings

LOCAL = ("127.0.0.1/32",)  # the deliberate, test-only exemption of loopback from the private-address rule
TEN_MB = 10 * 1024 * 1024


def _png(w: int = 8, h: int = 6) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (w, h), (0, 128, 255)).save(buf, format="PNG")
    return buf.getvalue()


def _pixel_bomb_png(w: int = 20_000, h: int = 20_000) -> bytes:
    """A valid 1-bit PNG of w x h black pixels: ~50 KB on the wire, 400 M pixels (1.2 GB as RGB) decoded."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    z = zlib.compressobj(9)
    row = b"\x00" * (1 + (w + 7) // 8)  # filter byte + packed bits
    idat = b"".join(z.compress(row) for _ in range(h)) + z.flush()
    ihdr = struct.pack(">IIBBBBB", w, h, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def _refused(rule: str, fn, *args, **kw) -> MediaRefused:
    with pytest.raises(MediaRefused) as ei:
        fn(*args, **kw)
    assert ei.value.rule == rule, str(ei.value)
    assert str(ei.value).startswith(f"{rule}: ")
    return ei.value


@pytest.fixture
def root(tmp_path: Path) -> Path:
    r = tmp_path / "media"
    r.mkdir()
    (r / "ok.png").write_bytes(_png())
    return r


@pytest.fixture
def pol(root: Path) -> MediaSettings:
    return MediaSettings(file_roots=(root,))


# ------------------------------------------------------------------------------------------------------- file://
def test_a_regular_file_inside_the_root_is_read(root, pol):
    assert fetch(f"file://{root}/ok.png", 1 << 20, policy=pol) == _png()
    assert fetch(f"file://localhost{root}/ok.png", 1 << 20, policy=pol) == _png()
    (root / "a b.png").write_bytes(b"x")
    assert fetch(f"file://{root}/a%20b.png", 10, policy=pol) == b"x"


def test_file_uris_are_refused_without_a_configured_root(root):
    e = _refused("media.file_outside_root", fetch, f"file://{root}/ok.png", 1 << 20)
    assert "THAW_MEDIA__FILE_ROOTS" in str(e)
    _refused("media.file_outside_root", fetch, f"file://{root}/ok.png", 1 << 20, policy=MediaSettings())


def test_a_file_outside_the_root_is_refused(tmp_path, pol):
    (tmp_path / "secret.txt").write_text("s3cr3t")
    e = _refused("media.file_outside_root", fetch, f"file://{tmp_path}/secret.txt", 1 << 20, policy=pol)
    assert "s3cr3t" not in str(e)
    # dot-dot and a sibling whose name starts like the root stay outside
    _refused("media.file_outside_root", fetch, f"file://{tmp_path}/media/../secret.txt", 1 << 20, policy=pol)
    (tmp_path / "media-other").mkdir()
    (tmp_path / "media-other" / "x.png").write_bytes(_png())
    _refused("media.file_outside_root", fetch, f"file://{tmp_path}/media-other/x.png", 1 << 20, policy=pol)


def test_a_symlink_escaping_the_root_is_refused_and_one_staying_inside_is_followed(tmp_path, root, pol):
    (tmp_path / "secret.txt").write_text("s3cr3t")
    (root / "escape.png").symlink_to(tmp_path / "secret.txt")
    (root / "dir").symlink_to(tmp_path)
    _refused("media.file_outside_root", fetch, f"file://{root}/escape.png", 1 << 20, policy=pol)
    _refused("media.file_outside_root", fetch, f"file://{root}/dir/secret.txt", 1 << 20, policy=pol)
    (root / "alias.png").symlink_to(root / "ok.png")
    assert fetch(f"file://{root}/alias.png", 1 << 20, policy=pol) == _png()


def test_dev_zero_is_refused_at_once_and_never_read(root, pol):
    """The reported incident: stat says 0 bytes, read_bytes() never ends. Refused by the root rule, and by the
    regular-file rule even when /dev itself is configured as a root (or reached through a symlink in the root)."""
    t0 = time.monotonic()
    _refused("media.file_outside_root", fetch, "file:///dev/zero", 1 << 20, policy=pol)
    (root / "zero.wav").symlink_to("/dev/zero")
    _refused("media.file_outside_root", fetch, f"file://{root}/zero.wav", 1 << 20, policy=pol)
    _refused("media.not_regular_file", fetch, "file:///dev/zero", 1 << 20,
             policy=MediaSettings(file_roots=(Path("/dev"),)))
    assert time.monotonic() - t0 < 1.0


def _in_thread(fn, timeout_s: float):
    box: dict = {}

    def run():
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - reported to the test
            box["error"] = exc

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout_s)
    assert not t.is_alive(), "the fetch blocked"
    return box


def test_a_fifo_inside_the_root_is_refused_without_blocking(root, pol):
    """A FIFO with no writer blocks open() and read() forever: it must come back at once, refused."""
    os.mkfifo(root / "pipe.wav")
    box = _in_thread(lambda: fetch(f"file://{root}/pipe.wav", 1 << 20, policy=pol), 5.0)
    assert isinstance(box.get("error"), MediaRefused), box
    assert box["error"].rule == "media.not_regular_file" and "FIFO" in str(box["error"])
    # and a symlink in the root to a FIFO in the root: same refusal, same promptness
    (root / "alias.wav").symlink_to(root / "pipe.wav")
    box = _in_thread(lambda: fetch(f"file://{root}/alias.wav", 1 << 20, policy=pol), 5.0)
    assert box["error"].rule == "media.not_regular_file"


def test_what_is_opened_is_checked_again(root, pol, monkeypatch):
    """A path that stat saw as a regular file but is a FIFO when opened (swapped meanwhile): the non-blocking open
    returns at once and fstat on the descriptor refuses it."""
    os.mkfifo(root / "swapped.wav")
    regular = os.stat(root / "ok.png")
    real_stat = os.stat
    monkeypatch.setattr(media.os, "stat", lambda p, *a, **k: regular if str(p).endswith("swapped.wav")
                        else real_stat(p, *a, **k))
    box = _in_thread(lambda: fetch(f"file://{root}/swapped.wav", 1 << 20, policy=pol), 5.0)
    assert isinstance(box.get("error"), MediaRefused) and box["error"].rule == "media.not_regular_file", box


def test_proc_files_are_refused(root, pol):
    e = _refused("media.file_outside_root", fetch, "file:///proc/self/environ", 1 << 20, policy=pol)
    assert "PATH" not in str(e)
    (root / "env.png").symlink_to("/proc/self/environ")
    _refused("media.file_outside_root", fetch, f"file://{root}/env.png", 1 << 20, policy=pol)


def test_directories_missing_files_hosts_and_sizes(root, pol):
    (root / "sub").mkdir()
    _refused("media.not_regular_file", fetch, f"file://{root}/sub", 1 << 20, policy=pol)
    _refused("media.unreadable", fetch, f"file://{root}/nope.png", 1 << 20, policy=pol)
    _refused("media.bad_uri", fetch, f"file://evil.example{root}/ok.png", 1 << 20, policy=pol)
    _refused("media.too_large", fetch, f"file://{root}/ok.png", 10, policy=pol)
    _refused("media.unsupported_scheme", fetch, "ftp://example.com/x.png", 1 << 20, policy=pol)


def test_reads_are_bounded_by_the_cap_whatever_stat_says(root, pol, monkeypatch):
    """/dev/zero and /proc files say size 0: the read itself stops one byte past the cap."""
    (root / "big.bin").write_bytes(b"x" * 5000)
    real_stat = os.stat

    def says_empty(p, *a, **k):
        st = real_stat(p, *a, **k)
        return os.stat_result((st.st_mode, st.st_ino, st.st_dev, st.st_nlink, st.st_uid, st.st_gid, 0,
                               int(st.st_atime), int(st.st_mtime), int(st.st_ctime)))

    monkeypatch.setattr(media.os, "stat", says_empty)
    e = _refused("media.too_large", fetch, f"file://{root}/big.bin", 1000, policy=pol)
    assert "exceeds the 1000-byte cap" in str(e)


# ------------------------------------------------------------------------------------------------------ http(s)://
class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    hosts: list[str] = []

    def log_message(self, *args) -> None:  # quiet
        pass

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(body)

    def _drip(self, data: bytes, every_s: float, for_s: float = 10.0) -> None:
        t_end = time.monotonic() + for_s
        try:
            while time.monotonic() < t_end:
                self.wfile.write(data)
                self.wfile.flush()
                time.sleep(every_s)
        except OSError:
            pass

    def _stream(self, total: int, chunked: bool) -> None:
        block = b"\x00" * 65536
        try:
            for _ in range(total // len(block)):
                if chunked:
                    self.wfile.write(f"{len(block):x}\r\n".encode() + block + b"\r\n")
                else:
                    self.wfile.write(block)
            if chunked:
                self.wfile.write(b"0\r\n\r\n")
        except OSError:
            pass

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        u = urlsplit(self.path)
        q = {k: v[0] for k, v in parse_qs(u.query).items()}
        _Handler.hosts.append(self.headers.get("Host", ""))
        if u.path == "/ok.png":
            self._send(200, _png(), {"Content-Type": "image/png"})
        elif u.path == "/host":
            self._send(200, self.headers.get("Host", "").encode())
        elif u.path == "/redirect":
            self._send(int(q.get("code", "302")), headers={"Location": q["to"]})
        elif u.path.startswith("/chain/"):
            n = int(u.path.rsplit("/", 1)[1])
            self._send(302, headers={"Location": f"/chain/{n - 1}" if n > 0 else "/ok.png"})
        elif u.path == "/missing":
            self._send(404, b"no")
        elif u.path == "/liar":  # says 10 bytes, streams 10 MB (chunked framing wins over Content-Length)
            self.send_response(200)
            self.send_header("Content-Length", "10")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._stream(TEN_MB, chunked=True)
        elif u.path == "/no-length":  # no length at all: the body ends when the connection closes
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self._stream(TEN_MB, chunked=False)
            self.close_connection = True
        elif u.path == "/declares-huge":
            self.send_response(200)
            self.send_header("Content-Length", str(50 * TEN_MB))
            self.end_headers()
            self._stream(1 << 20, chunked=False)
        elif u.path == "/drip":  # headers at once, then one byte every 50 ms
            self.send_response(200)
            self.send_header("Connection", "close")
            self.end_headers()
            self._drip(b"\x00", 0.05)
            self.close_connection = True
        elif u.path == "/slow-headers":  # never finishes its headers
            try:
                self.wfile.write(b"HTTP/1.1 200 OK\r\n")
            except OSError:
                return
            self._drip(b"X-Slow: a\r\n", 0.05)
            self.close_connection = True
        elif u.path == "/gzip-bomb":  # 30 MB of zeros as ~30 KB of gzip, sent although we asked for identity
            self._send(200, gzip.compress(b"\x00" * (3 * TEN_MB)), {"Content-Encoding": "gzip"})
        elif u.path == "/gzip-ok":
            self._send(200, gzip.compress(_png()), {"Content-Encoding": "gzip"})
        elif u.path == "/brotli":
            self._send(200, b"????", {"Content-Encoding": "br"})
        elif u.path == "/pixel-bomb.png":
            self._send(200, _pixel_bomb_png(), {"Content-Type": "image/png"})
        else:
            self._send(404)


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def local() -> MediaSettings:
    """Loopback allowed, deliberately: only so that these tests can reach their own server."""
    return MediaSettings(allowed_private_networks=LOCAL, fetch_timeout_s=3.0)


def test_loopback_is_refused_by_default(server):
    t0 = time.monotonic()
    e = _refused("media.private_address", fetch, f"{server}/ok.png", 1 << 20)
    assert "loopback" in str(e)
    port = server.rsplit(":", 1)[1]
    _refused("media.private_address", fetch, f"http://localhost:{port}/ok.png", 1 << 20)
    _refused("media.private_address", fetch, f"http://[::ffff:127.0.0.1]:{port}/ok.png", 1 << 20)
    _refused("media.private_address", fetch, f"http://0x7f000001:{port}/ok.png", 1 << 20)
    assert time.monotonic() - t0 < 2.0
    n = len(_Handler.hosts)
    _refused("media.private_address", fetch, f"{server}/host", 1 << 20)
    assert len(_Handler.hosts) == n  # refused before any connection


@pytest.mark.parametrize("uri", [
    "http://10.1.2.3/x.png", "http://172.16.0.1/x.png", "http://192.168.1.1/x.png",  # private
    "http://169.254.169.254/latest/meta-data/",  # link-local (cloud metadata)
    "http://224.0.0.1/x.png",  # multicast
    "http://0.0.0.0/x.png", "http://[::]/x.png",  # unspecified
    "http://[::1]/x.png", "http://[fe80::1]/x.png", "http://[fd00::1]/x.png",  # loopback, link-local, ULA
    "http://100.64.0.1/x.png",  # shared address space (CGNAT)
    "http://[64:ff9b::a00:1]/x.png", "http://[2002:c0a8:101::1]/x.png",  # NAT64 / 6to4 of private IPv4
])
def test_private_link_local_multicast_and_reserved_addresses_are_refused(uri):
    _refused("media.private_address", fetch, uri, 1 << 20)


def test_an_explicitly_allowed_network_is_fetched(server, local):
    assert fetch(f"{server}/ok.png", 1 << 20, policy=local) == _png()
    _refused("media.http_status", fetch, f"{server}/missing", 1 << 20, policy=local)


def test_the_checked_address_is_the_one_connected_to(server, local, monkeypatch):
    """DNS is asked once, every answer checked, and the connection goes to the checked address with the Host
    header naming the host: a name that resolves differently later (rebinding) is never resolved again."""
    port = int(server.rsplit(":", 1)[1])
    calls = []
    real = socket.getaddrinfo

    def fake_getaddrinfo(host, p, *a, **k):
        calls.append(host)
        if host == "media.example.test":  # this name exists only here, and only once
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))] if calls.count(host) == 1 else []
        return real(host, p, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", fake_getaddrinfo)
    got = fetch(f"http://media.example.test:{port}/host", 1 << 20, policy=local)
    assert got == f"media.example.test:{port}".encode()
    assert calls.count("media.example.test") == 1 and set(calls) <= {"media.example.test", "127.0.0.1"}


def test_an_unreachable_checked_address_falls_back_to_the_next_checked_one(server, monkeypatch):
    port = int(server.rsplit(":", 1)[1])
    real = socket.getaddrinfo

    def two(host, p, *a, **k):
        if host == "two.example.test":  # 127.0.0.2 has no listener on the port; 127.0.0.1 does
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.2", p)),
                    (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))]
        return real(host, p, *a, **k)

    monkeypatch.setattr(socket, "getaddrinfo", two)
    pol = MediaSettings(allowed_private_networks=("127.0.0.0/8",))
    assert fetch(f"http://two.example.test:{port}/ok.png", 1 << 20, policy=pol) == _png()
    e = _refused("media.http_failed", fetch, "http://127.0.0.2:9/x.png", 1 << 20, policy=pol)
    assert "cannot connect" in str(e)


def test_one_private_answer_among_public_ones_refuses_the_host(monkeypatch):
    def rebinding(host, p, *a, **k):
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("93.184.216.34", p)),
                (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))]

    monkeypatch.setattr(media.socket, "getaddrinfo", rebinding)
    e = _refused("media.private_address", fetch, "http://rebind.example.test/x.png", 1 << 20)
    assert "127.0.0.1" in str(e)


def test_unresolvable_and_slow_dns(monkeypatch):
    def nx(host, p, *a, **k):
        raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")

    monkeypatch.setattr(media.socket, "getaddrinfo", nx)
    _refused("media.dns_failed", fetch, "http://nx.example.test/x.png", 1 << 20)

    def slow(host, p, *a, **k):
        time.sleep(3)
        raise socket.gaierror(socket.EAI_AGAIN, "timeout")

    monkeypatch.setattr(media.socket, "getaddrinfo", slow)
    t0 = time.monotonic()
    _refused("media.timeout", fetch, "http://slow.example.test/x.png", 1 << 20, timeout_s=0.3)
    assert time.monotonic() - t0 < 2.5  # the lookup itself takes 3 s


def test_host_allow_list(server, monkeypatch):
    port = int(server.rsplit(":", 1)[1])
    monkeypatch.setattr(media.socket, "getaddrinfo",
                        lambda host, p, *a, **k: [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))])
    pol = MediaSettings(allowed_hosts=("cdn.example.test", "*.media.example.test"), allowed_private_networks=LOCAL)
    assert fetch(f"http://CDN.example.test:{port}/ok.png", 1 << 20, policy=pol) == _png()
    assert fetch(f"http://a.b.media.example.test:{port}/ok.png", 1 << 20, policy=pol) == _png()
    e = _refused("media.host_not_allowed", fetch, f"http://evil.example.test:{port}/ok.png", 1 << 20, policy=pol)
    assert "evil.example.test" in str(e)
    _refused("media.host_not_allowed", fetch, f"http://media.example.test:{port}/ok.png", 1 << 20, policy=pol)
    _refused("media.host_not_allowed", fetch, f"http://cdn.example.test.evil.test:{port}/ok.png", 1 << 20,
             policy=pol)
    # the allow-list narrows, it never widens: an allowed name resolving to a private address is still refused
    strict = MediaSettings(allowed_hosts=("cdn.example.test",))
    _refused("media.private_address", fetch, f"http://cdn.example.test:{port}/ok.png", 1 << 20, policy=strict)


def test_redirects_are_rechecked_and_limited(server, local):
    # a public-looking first hop cannot hand the worker a private address, a file or another host
    to_private = f"{server}/redirect?to=http://169.254.169.254/latest/meta-data/"
    e = _refused("media.private_address", fetch, to_private, 1 << 20, policy=local)
    assert "169.254.169.254" in str(e)
    _refused("media.unsupported_scheme", fetch, f"{server}/redirect?to=file:///etc/passwd", 1 << 20, policy=local)
    port = server.rsplit(":", 1)[1]
    hosts = MediaSettings(allowed_hosts=("127.0.0.1",), allowed_private_networks=LOCAL)
    _refused("media.host_not_allowed", fetch, f"{server}/redirect?to=http://localhost:{port}/ok.png", 1 << 20,
             policy=hosts)
    # within the limit: followed (relative Location too); past it: refused
    assert fetch(f"{server}/chain/2", 1 << 20, policy=local) == _png()  # /chain/N: N + 1 redirects
    assert fetch(f"{server}/redirect?code=308&to=/ok.png", 1 << 20, policy=local) == _png()
    e = _refused("media.too_many_redirects", fetch, f"{server}/chain/3", 1 << 20, policy=local)
    assert "3 redirects" in str(e)
    _refused("media.too_many_redirects", fetch, f"{server}/chain/0", 1 << 20,
             policy=MediaSettings(allowed_private_networks=LOCAL, max_redirects=0))


def test_the_cap_counts_bytes_received_not_what_content_length_says(server, local):
    t0 = time.monotonic()
    e = _refused("media.too_large", fetch, f"{server}/liar", 1 << 20, policy=local)
    assert "1048576-byte cap" in str(e)
    _refused("media.too_large", fetch, f"{server}/no-length", 1 << 20, policy=local)
    _refused("media.too_large", fetch, f"{server}/declares-huge", 1 << 20, policy=local)
    assert time.monotonic() - t0 < 5.0


def test_a_slow_drip_is_cut_at_the_time_budget(server):
    pol = MediaSettings(allowed_private_networks=LOCAL, fetch_timeout_s=0.5)
    for path in ("/drip", "/slow-headers"):
        t0 = time.monotonic()
        e = _refused("media.timeout", fetch, f"{server}{path}", 1 << 20, policy=pol)
        took = time.monotonic() - t0
        assert 0.4 < took < 2.0, (path, took, str(e))  # the drip itself lasts 10 s


def test_transfer_compression_is_inflated_with_a_bound(server, local):
    assert fetch(f"{server}/gzip-ok", 1 << 20, policy=local) == _png()
    t0 = time.monotonic()
    _refused("media.decompression_bomb", fetch, f"{server}/gzip-bomb", 1 << 20, policy=local)
    assert time.monotonic() - t0 < 2.0
    _refused("media.content_encoding", fetch, f"{server}/brotli", 1 << 20, policy=local)


def test_no_proxy_from_the_environment_is_used(server, local, monkeypatch):
    """A proxy would connect to an address nobody checked: the fetch ignores HTTP(S)_PROXY."""
    monkeypatch.setenv("HTTP_PROXY", "http://203.0.113.1:9")
    monkeypatch.setenv("http_proxy", "http://203.0.113.1:9")
    assert fetch(f"{server}/ok.png", 1 << 20, policy=local) == _png()


# -------------------------------------------------------------------------------------------------------- bombs
def test_a_pixel_bomb_png_is_refused_from_its_header(server, local):
    bomb = _pixel_bomb_png()
    assert len(bomb) < 200_000  # 400 M pixels (1.2 GB as RGB) in under 200 KB
    t0 = time.monotonic()
    data = fetch(f"{server}/pixel-bomb.png", 1 << 20, policy=local)  # small enough to fetch ...
    assert data == bomb
    e = _refused("media.pixel_bomb", decode_image, data, max_pixels=MediaSettings().max_image_pixels)  # ... not
    assert "400000000 pixels" in str(e)  # past Pillow's own hard limit: refused by the same rule
    # over our cap (40 M) but under Pillow's limits: our header check refuses it before a pixel is decoded
    e = _refused("media.pixel_bomb", decode_image, _pixel_bomb_png(8000, 8000))
    assert "8000x8000" in str(e) and "40000000-pixel cap" in str(e)
    _refused("media.pixel_bomb", decode_image, _pixel_bomb_png(20_000, 20_000), max_pixels=10**12)
    assert time.monotonic() - t0 < 5.0
    # at the cap it decodes, one pixel under it is refused
    assert decode_image(_png(40, 30), max_pixels=1200).size == (40, 30)
    _refused("media.pixel_bomb", decode_image, _png(40, 30), max_pixels=1199)


def _flac_silence(seconds: float, channels: int, sr: int = 48_000) -> bytes:
    buf = io.BytesIO()
    with sf.SoundFile(buf, "w", samplerate=sr, channels=channels, format="FLAC", subtype="PCM_16") as f:
        block = np.zeros((sr, channels), dtype=np.int16)
        for _ in range(int(seconds)):
            f.write(block)
    return buf.getvalue()


def test_compressed_audio_that_would_decode_past_the_cap_is_refused():
    flac = _flac_silence(20, channels=4)  # 960 k frames x 4 channels: 15 MB of float32 from a few KB
    assert len(flac) < 200_000
    e = _refused("media.decompression_bomb", decode_audio, flac, 600.0, max_decoded_bytes=8 << 20)
    assert "4 channels" in str(e)
    assert decode_audio(flac, 600.0, max_decoded_bytes=64 << 20).duration_s == pytest.approx(20.0)
    _refused("media.audio_too_long", decode_audio, flac, 10.0)


def test_corrupt_media_names_its_rule():
    _refused("media.corrupt", decode_image, b"\x89PNG\r\n\x1a\n" + b"\x00" * 40)
    _refused("media.corrupt", decode_audio, b"RIFF0000WAVEjunk", 10.0)
    assert issubclass(MediaRefused, MediaError)


# ---------------------------------------------------------------------------------------------------- settings
def test_media_settings_from_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("THAW_MEDIA__FILE_ROOTS", f'["{tmp_path}"]')
    monkeypatch.setenv("THAW_MEDIA__ALLOWED_HOSTS", '["CDN.Example.com.", "*.media.example.com"]')
    monkeypatch.setenv("THAW_MEDIA__FETCH_TIMEOUT_S", "2.5")
    monkeypatch.setenv("THAW_MEDIA__MAX_REDIRECTS", "1")
    monkeypatch.setenv("THAW_MEDIA__MAX_IMAGE_PIXELS", "1000")
    s = Settings()
    assert s.media.file_roots == (tmp_path,)
    assert s.media.allowed_hosts == ("cdn.example.com", "*.media.example.com")
    assert (s.media.fetch_timeout_s, s.media.max_redirects, s.media.max_image_pixels) == (2.5, 1, 1000)
    # a worker started with env() gets the same roots; namespaced() keeps them
    ns = s.namespaced("run_1")
    assert ns.media.file_roots == (tmp_path,)
    assert ns.env()["THAW_MEDIA__FILE_ROOTS"] == f'["{tmp_path}"]'


def test_media_settings_defaults_and_validation(tmp_path):
    d = MediaSettings()
    assert d.file_roots == () and d.allowed_hosts == () and d.allowed_private_networks == ()
    assert (d.fetch_timeout_s, d.max_redirects, d.max_image_pixels) == (5.0, 3, 40_000_000)
    assert "THAW_MEDIA__FILE_ROOTS" not in Settings(media=MediaSettings()).namespaced("x").env()
    with pytest.raises(ValueError, match="absolute"):
        MediaSettings(file_roots=(Path("relative/dir"),))
    with pytest.raises(ValueError):
        MediaSettings(allowed_private_networks=("not-a-network",))
    with pytest.raises(ValueError):
        MediaSettings(allowed_hosts=("http://cdn.example.com/",))
    s = Settings(media=MediaSettings()).with_media_roots(tmp_path, str(tmp_path))
    assert s.media.file_roots == (tmp_path.resolve(),)


# ------------------------------------------------------------------------------------------------------------ TLS
@pytest.fixture(scope="module")
def tls_server(tmp_path_factory) -> Iterator[tuple[str, Path]]:
    """An HTTPS server on 127.0.0.1 whose self-signed certificate names only media.example.test."""
    import datetime as dt
    import ssl

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "media.example.test")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(hours=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("media.example.test")]), critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    d = tmp_path_factory.mktemp("tls")
    (d / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    (d / "key.pem").write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                  serialization.NoEncryption()))
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(d / "cert.pem", d / "key.pem")
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.daemon_threads = True
    srv.socket = ctx.wrap_socket(srv.socket, server_side=True)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield str(srv.server_address[1]), d / "cert.pem"
    srv.shutdown()
    srv.server_close()


def test_https_connects_to_the_checked_address_and_verifies_the_host_name(tls_server, monkeypatch):
    """Connected by IP, yet SNI and the certificate check name the host: the right name passes, a name the
    certificate does not carry fails, and a drip over TLS is cut at the budget like one in the clear."""
    import ssl

    port, cafile = tls_server
    monkeypatch.setattr(media, "_tls_context", lambda: ssl.create_default_context(cafile=str(cafile)))
    real = socket.getaddrinfo
    monkeypatch.setattr(socket, "getaddrinfo", lambda host, p, *a, **k: (
        [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p))] if host.endswith(".example.test")
        else real(host, p, *a, **k)))
    pol = MediaSettings(allowed_private_networks=LOCAL, fetch_timeout_s=3.0)
    host = f"media.example.test:{port}"
    assert fetch(f"https://{host}/host", 1 << 20, policy=pol) == host.encode()
    assert fetch(f"https://{host}/ok.png", 1 << 20, policy=pol) == _png()
    e = _refused("media.http_failed", fetch, f"https://other.example.test:{port}/ok.png", 1 << 20, policy=pol)
    assert "certificate" in str(e)
    _refused("media.http_failed", fetch, f"https://127.0.0.1:{port}/ok.png", 1 << 20, policy=pol)
    t0 = time.monotonic()
    _refused("media.timeout", fetch, f"https://media.example.test:{port}/drip", 1 << 20,
             policy=MediaSettings(allowed_private_networks=LOCAL, fetch_timeout_s=0.5))
    assert time.monotonic() - t0 < 1.5
