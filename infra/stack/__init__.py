"""The local no-Docker stack: Kafka (KRaft), Redis and Milvus standalone as detached local processes.

``LocalStack(settings).up()`` brings the three services up (in parallel), waits until each answers a real
request (Kafka: until it can also coordinate consumer groups, see :func:`infra.lag.group_coordination`) and returns
one :class:`ServiceStatus` per service; ``down()`` stops what ``up`` started; ``status()``
reports. The commands are ``thaw stack up | down | status | fetch`` (``thaw.cli``); one module per service:

    infra/stack/kafka.py    jars via Maven, KRaft format, server.properties, start, probe (:func:`fetch_kafka`)
    infra/stack/redis.py    redis.conf, start, probe
    infra/stack/milvus.py   the ``milvus`` wheel's config template and ports, start, probe
    infra/stack/state.py    detached launches, liveness, stopping, state.json and the stack's flock
    infra/stack/common.py   service names, StackError, ServiceStatus, port and poll helpers

Everything lives under ``settings.stack.home`` (default ``~/.cache/thaw/stack``)::

    kafka-libs/<version>/*.jar   Kafka jars from Maven Central (``mvn -q -B dependency:copy-dependencies``,
                                 pom: infra/kafka/pom.xml), fetched once
    kafka/server.properties      single-node KRaft broker+controller on 127.0.0.1
    kafka/log4j2.properties      Log4j2 config (file appender to logs/kafka-server.log)
    kafka/kraft-<ctrl-port>/     log.dirs, formatted once with kafka.tools.StorageTool (--standalone)
    redis/redis.conf, redis.pid  Debian redis-server, loopback only, AOF (appendfsync everysec) in redis/data/
    milvus/                      Milvus 2.3.5 standalone (PyPI ``milvus`` wheel): configs/ data/ bin/ logs/
    logs/                        stdout/stderr of every process, Kafka's server.log, redis.log
    state.json                   pids of the processes ``up`` started (so ``down`` stops only those)

Ports (defaults; all configurable through :class:`infra.settings.Settings`)::

    Kafka   19092  PLAINTEXT listener      (kafka.bootstrap_servers)           127.0.0.1
            19093  KRaft controller         (kafka.controller_port)             127.0.0.1
    Redis   16379                          (redis.port)                        127.0.0.1
    Milvus  19531  gRPC + REST proxy        (stack.milvus_port == milvus.uri)   ALL interfaces
            19540  embedded etcd client     (stack.milvus_port_base + 0)        127.0.0.1
            19541  embedded etcd peer       (+1)                                127.0.0.1
            19542  metrics / healthz        (+2)                                ALL interfaces
            19543..19550 proxy-internal, rootCoord, queryCoord, queryNode, indexCoord, indexNode, dataCoord,
                   dataNode gRPC (+3..+10)                                       ALL interfaces

Security note: the Milvus binary has no bind-address option, so its gRPC ports (proxy and internal components)
listen on every interface without authentication. Run the local stack on trusted hosts only (or firewall the
ports); Kafka and Redis listen on loopback only.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from infra.settings import Settings
from infra.stack import kafka as _kafka
from infra.stack import milvus as _milvus
from infra.stack import redis as _redis
from infra.stack.common import (
    KAFKA,
    LOOPBACK,
    MILVUS,
    REDIS,
    SERVICES,
    ServiceStatus,
    StackError,
    poll,
    port_bindable,
    tail,
)
from infra.stack.kafka import fetch_kafka, kafka_classpath, kafka_libs_dir, probe_kafka
from infra.stack.milvus import probe_milvus
from infra.stack.redis import probe_redis
from infra.stack.state import Launch, StateFile, pid_alive, terminate

__all__ = [
    "KAFKA",
    "MILVUS",
    "REDIS",
    "SERVICES",
    "LocalStack",
    "ServiceStatus",
    "StackError",
    "fetch_kafka",
    "format_statuses",
    "kafka_classpath",
    "kafka_libs_dir",
    "probe_kafka",
    "probe_milvus",
    "probe_redis",
]

_PORT_ENV = {
    KAFKA: "THAW_KAFKA__BOOTSTRAP_SERVERS, THAW_KAFKA__CONTROLLER_PORT",
    REDIS: "THAW_REDIS__PORT",
    MILVUS: "THAW_STACK__MILVUS_PORT with THAW_MILVUS__URI, THAW_STACK__MILVUS_PORT_BASE",
}
_PROBES: dict[str, Callable[[Settings, float], tuple[bool, str]]] = {
    KAFKA: probe_kafka,
    REDIS: probe_redis,
    MILVUS: probe_milvus,
}
_STARTS: dict[str, Callable[[Settings, Path], Launch]] = {
    KAFKA: _kafka.start_kafka,
    REDIS: _redis.start_redis,
    MILVUS: _milvus.start_milvus,
}
_PORTS: dict[str, Callable[[Settings], list[tuple[str, int]]]] = {
    KAFKA: _kafka.ports,
    REDIS: _redis.ports,
    MILVUS: _milvus.ports,
}
_CHECKS: dict[str, Callable[[Settings], None]] = {
    KAFKA: _kafka.check_local_config,
    REDIS: _redis.check_local_config,
    MILVUS: _milvus.check_local_config,
}


class LocalStack:
    """Start, stop and inspect the local Kafka + Redis + Milvus processes described by ``settings``.

    Only services whose configured address is on loopback are started; a remote service is probed and reported
    (``managed=False``). Started processes run in their own session (they outlive this Python process); their
    pids are recorded in ``<home>/state.json`` so ``down`` stops exactly those and nothing else.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.clock = clock
        self.home = settings.stack.home
        self._state = StateFile(self.home)

    # ----------------------------------------------------------------------------------------- public API

    def up(self) -> list[ServiceStatus]:
        """Bring all services up (reusing healthy ones), wait until each answers, return their status.

        Raises :class:`StackError` naming every service that could not be brought up.
        """
        self._check_config()
        self.home.mkdir(parents=True, exist_ok=True)
        with self._state.flock():
            with ThreadPoolExecutor(max_workers=len(SERVICES), thread_name_prefix="stack-up") as pool:
                futures = {name: pool.submit(self._ensure, name) for name in SERVICES}
            results: list[ServiceStatus] = []
            errors: list[str] = []
            for name, fut in futures.items():
                exc = fut.exception()
                if exc is None:
                    results.append(fut.result())
                elif isinstance(exc, StackError):
                    errors.append(f"[{name}] {exc}")
                else:
                    errors.append(f"[{name}] unexpected {type(exc).__name__}: {exc}")
            if errors:
                raise StackError("local stack is not up:\n" + "\n".join(errors))
            return results

    def down(self, services: Sequence[str] | None = None) -> list[ServiceStatus]:
        """Stop the processes ``up`` started (SIGTERM, then SIGKILL of the process group after a grace).

        ``services`` limits it to those names (default: all three).
        """
        names = tuple(services) if services is not None else SERVICES
        unknown = set(names) - set(SERVICES)
        if unknown:
            raise StackError(f"unknown services {sorted(unknown)}; known: {list(SERVICES)}")
        self.home.mkdir(parents=True, exist_ok=True)
        with self._state.flock():
            with ThreadPoolExecutor(max_workers=len(SERVICES), thread_name_prefix="stack-down") as pool:
                return list(pool.map(self._stop, names))

    def status(self) -> list[ServiceStatus]:
        """Health, address and pid of each service (a real request per service, short timeouts)."""
        with ThreadPoolExecutor(max_workers=len(SERVICES), thread_name_prefix="stack-status") as pool:
            return list(pool.map(self._status, SERVICES))

    # ----------------------------------------------------------------------------------------- per service

    def address(self, name: str) -> str:
        s = self.settings
        if name == KAFKA:
            return s.kafka.bootstrap_servers
        if name == REDIS:
            return s.redis.display()
        return s.milvus.uri

    def is_local(self, name: str) -> bool:
        if name == KAFKA:
            host = _kafka.host_port(self.settings)[0]
        elif name == REDIS:
            host = self.settings.redis.host
        else:
            if self.settings.milvus.is_lite:
                return False
            host = _milvus.host_port(self.settings)[0]
        return host in LOOPBACK

    def probe(self, name: str, timeout_s: float = 5.0) -> tuple[bool, str]:
        return _PROBES[name](self.settings, timeout_s)

    def _status(self, name: str) -> ServiceStatus:
        healthy, detail = self.probe(name, timeout_s=3.0)
        pid = self._state.managed_pid(name)
        entry = self._state.read().get(name) or {}
        if pid is None and not healthy and entry:
            detail += " (the process thaw stack started has exited; see its log: " + str(entry.get("log")) + ")"
        return ServiceStatus(
            name=name,
            address=self.address(name),
            healthy=healthy,
            pid=pid,
            managed=pid is not None,
            detail=detail,
            startup_s=entry.get("startup_s") if pid is not None else None,
        )

    def _ensure(self, name: str) -> ServiceStatus:
        address = self.address(name)
        healthy, detail = self.probe(name, timeout_s=3.0)
        pid = self._state.managed_pid(name)
        if healthy:
            entry = self._state.read().get(name) or {}
            return ServiceStatus(
                name,
                address,
                True,
                pid,
                pid is not None,
                detail,
                entry.get("startup_s") if pid is not None else None,
            )
        if not self.is_local(name):
            raise StackError(
                f"{name} at {address} is not reachable ({detail}); thaw stack only starts services on "
                "loopback addresses, so start it yourself or point the settings at a running one"
            )
        if pid is not None:  # ours, still starting (or hung): wait for it
            launch = self._state.launch(name)
            started = self.clock()
            self._wait_ready(name, launch)
            return ServiceStatus(name, address, True, pid, True, self.probe(name)[1], self.clock() - started)
        self._state.drop(name)
        self._check_ports_free(name, detail)
        started = self.clock()
        launch = _STARTS[name](self.settings, self.home)
        self._state.record(name, launch)
        self._wait_ready(name, launch)
        elapsed = round(self.clock() - started, 3)
        self._state.update(name, startup_s=elapsed)
        return ServiceStatus(name, address, True, launch.pid, True, self.probe(name)[1], elapsed)

    def _wait_ready(self, name: str, launch: Launch) -> None:
        """Probe every 0.25 s until healthy; StackError if the process exits or ``ready_timeout_s`` passes."""

        def attempt() -> tuple[bool, str]:
            if not pid_alive(launch.pid):
                self._state.drop(name)
                logs = [launch.log]
                if name == KAFKA:
                    logs.append(_kafka.server_log(self.home))
                tails = "\n".join(f"last lines of {p}:\n{tail(p)}" for p in logs if p.exists())
                raise StackError(f"{name} (pid {launch.pid}) exited during startup; {tails}")
            return self.probe(name, timeout_s=3.0)

        deadline = self.clock() + self.settings.stack.ready_timeout_s
        healthy, detail = poll(attempt, lambda r: r[0], until=deadline, clock=self.clock, every_s=0.25)
        if not healthy:
            raise StackError(
                f"{name} (pid {launch.pid}) not healthy after {self.settings.stack.ready_timeout_s:.0f}s "
                f"({detail}); it is left running, see {launch.log} or stop it with "
                f"`thaw stack down`; raise THAW_STACK__READY_TIMEOUT_S on slow machines"
            )

    def _check_ports_free(self, name: str, detail: str) -> None:
        busy = [port for host, port in _PORTS[name](self.settings) if not port_bindable(host, port)]
        if busy:
            raise StackError(
                f"port(s) {', '.join(map(str, busy))} needed by {name} are in use by something that is not a "
                f"healthy {name} ({detail}). Stop that process or choose other ports ({_PORT_ENV[name]})"
            )

    def _check_config(self) -> None:
        for name in SERVICES:
            if self.is_local(name):
                _CHECKS[name](self.settings)

    def _stop(self, name: str) -> ServiceStatus:
        address = self.address(name)
        pid = self._state.managed_pid(name)
        if pid is None:
            self._state.drop(name)
            healthy, detail = self.probe(name, timeout_s=2.0)
            note = "not started by thaw stack; left alone" if healthy else "not running"
            return ServiceStatus(name, address, healthy, None, False, f"{note} ({detail})" if healthy else note)
        started = self.clock()
        killed = terminate(pid, self.settings.stack.stop_timeout_s, self.clock)
        self._state.drop(name)
        how = "SIGKILL after grace period" if killed else "SIGTERM"
        return ServiceStatus(name, address, False, pid, True, f"stopped ({how}, {self.clock() - started:.1f}s)")


def format_statuses(statuses: list[ServiceStatus]) -> str:
    """A small fixed-width table for terminals."""
    rows = [("SERVICE", "HEALTHY", "MANAGED", "PID", "STARTUP", "ADDRESS", "DETAIL")]
    for st in statuses:
        rows.append(
            (
                st.name,
                "yes" if st.healthy else "NO",
                "yes" if st.managed else "no",
                str(st.pid) if st.pid else "-",
                f"{st.startup_s:.1f}s" if st.startup_s is not None else "-",
                st.address,
                st.detail,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(6)]
    return "\n".join("  ".join(c.ljust(w) for c, w in zip(r[:6], widths, strict=True)) + "  " + r[6] for r in rows)
