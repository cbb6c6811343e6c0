"""A real ``thaw serve`` subprocess for the e2e tests: its public and ops ports, its log, and a stop that checks it
exited cleanly."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.procs import stop_process_group
from tests.e2e.conftest import wait_for

JWT_SECRET = "an-e2e-signing-secret-of-32-characters-or-more"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServeProc:
    proc: subprocess.Popen[bytes]
    log: Path
    base: str  # the public port: /recommend, /ab, /healthz
    ops: str  # the ops port: /readyz, /metrics, /healthz, /docs

    def log_tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]

    def wait_ready(self, timeout_s: float = 90) -> None:
        def ready() -> bool:
            try:
                return httpx.get(f"{self.ops}/readyz", timeout=5).status_code == 200
            except httpx.HTTPError:
                assert self.proc.poll() is None, self.log_tail()
                return False

        wait_for(ready, timeout_s, "thaw serve ready")


@contextmanager
def thaw_serve(env: dict[str, str], log: Path) -> Iterator[ServeProc]:
    """``thaw serve`` on two free loopback ports with ``env`` over this process's environment (an HS256 secret
    unless ``env`` configures the auth); stopped with SIGTERM afterwards, and it must exit 0 with no traceback."""
    port, ops_port = free_port(), free_port()
    full = {**os.environ, "THAW_SERVE__AUTH__JWT_SECRET": JWT_SECRET, **env}
    proc = subprocess.Popen([sys.executable, "-m", "thaw", "serve", "--port", str(port), "--ops-port", str(ops_port),
                             "--log-level", "warning"],
                            env=full, stdout=log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True)
    sp = ServeProc(proc, log, f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}")
    try:
        yield sp
    finally:
        stop_process_group(proc)
    assert proc.returncode == 0, sp.log_tail()  # both servers stop gracefully on SIGTERM
    assert "Traceback" not in log.read_text(errors="replace"), sp.log_tail()
