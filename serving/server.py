"""Runs the public and the ops app of :func:`serving.api.create_apps` in one process: two uvicorn servers, one event
loop. SIGTERM or SIGINT stops both gracefully (a second signal forces it); the process then exits 0."""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import Iterator
from typing import Literal

import uvicorn
from fastapi import FastAPI

from serving.api import ServeApps


class _Server(uvicorn.Server):
    """A uvicorn server that leaves the signals to :func:`serve_apps` (it stops both servers on one signal)."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def _serve_both(servers: list[_Server], sockets: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()

    def stop() -> None:
        for s in servers:
            s.force_exit = s.should_exit  # the second signal
            s.should_exit = True

    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop)
    await asyncio.gather(*(s.serve(sockets=[sock]) for s, sock in zip(servers, sockets, strict=True)))


def serve_apps(apps: ServeApps, *, host: str, port: int, ops_host: str, ops_port: int,
               log_level: str = "info") -> None:
    """Serve ``apps.public`` on ``host:port`` and ``apps.ops`` on ``ops_host:ops_port`` until a signal.

    The access log stays off (a query string carries user ids); neither server logs a request's headers. Both
    ports are bound first: one that cannot be bound ends the process before anything is served (uvicorn logs why
    and exits non-zero).
    """
    def config(app: FastAPI, h: str, p: int, lifespan: Literal["on", "off"]) -> uvicorn.Config:
        return uvicorn.Config(app, host=h, port=p, lifespan=lifespan, log_level=log_level, access_log=False,
                              timeout_graceful_shutdown=5)

    configs = [config(apps.public, host, port, "on"), config(apps.ops, ops_host, ops_port, "off")]
    sockets = [c.bind_socket() for c in configs]  # a port in use ends the process here, before either server starts
    asyncio.run(_serve_both([_Server(c) for c in configs], sockets))
