"""What every service module of the local stack shares: names, the error, the status row, port and poll helpers."""

from __future__ import annotations

import logging
import shutil
import socket
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from tenacity import RetryCallState, Retrying, retry_if_result, wait_fixed

log = logging.getLogger("thaw.stack")

KAFKA = "kafka"
REDIS = "redis"
MILVUS = "milvus"
SERVICES: tuple[str, ...] = (KAFKA, REDIS, MILVUS)

LOOPBACK = {"127.0.0.1", "localhost", "::1"}

T = TypeVar("T")


class StackError(RuntimeError):
    """A local-stack service could not be fetched, started or reached; the message carries a hint."""


@dataclass(frozen=True)
class ServiceStatus:
    name: str
    address: str
    healthy: bool
    pid: int | None
    managed: bool
    detail: str
    startup_s: float | None = None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def port_bindable(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` (SO_REUSEADDR like the servers: TIME_WAIT doesn't count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line[:300] for line in text[-lines:])


def which(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` not found on PATH. {hint}")
    return found


def poll(
    check: Callable[[], T],
    done: Callable[[T], bool],
    *,
    until: float,
    clock: Callable[[], float],
    every_s: float,
) -> T:
    """Call ``check`` every ``every_s`` seconds until ``done(result)`` or ``clock() >= until``; the last result.

    An exception raised by ``check`` ends the polling at once and propagates unchanged.
    """

    def last_result(state: RetryCallState) -> Any:
        assert state.outcome is not None
        return state.outcome.result()

    retrying = Retrying(
        retry=retry_if_result(lambda result: not done(result)),
        stop=lambda _state: clock() >= until,
        wait=wait_fixed(every_s),
        retry_error_callback=last_result,
    )
    result: T = retrying(check)
    return result
