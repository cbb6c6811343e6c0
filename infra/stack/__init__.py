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
    kafka/cluster<N>-<ctrl-port>/node-<i>/   the same per node of ``--brokers N`` (infra/stack/kafka.py)
    redis/redis.conf, redis.pid  Debian redis-server, loopback only, AOF (appendfsync everysec) in redis/data/
    redis-cluster/<port>/        the same per node of ``--redis-cluster`` (+ nodes.conf; infra/stack/redis.py)
    milvus/                      Milvus 2.3.5 standalone (PyPI ``milvus`` wheel): configs/ data/ bin/ logs/
    logs/                        stdout/stderr of every process, Kafka's server.log, redis.log
    state.json                   pids of the processes ``up`` started (so ``down`` stops only those)

Ports (defaults; all configurable through :class:`infra.settings.Settings`)::

    Kafka   19092  PLAINTEXT listener      (kafka.bootstrap_servers)           127.0.0.1
            19093  KRaft controller         (kafka.controller_port)             127.0.0.1
            19094..19097 the listeners and controllers of nodes 2 and 3 of ``--brokers 3`` (+2 per node)
    Redis   16379                          (redis.port)                        127.0.0.1
            16379..16384 the nodes of ``--redis-cluster``, 16385..16390 their cluster bus    127.0.0.1
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
        if name == REDIS and _redis.cluster_in_charge(self.settings, self._state):
            return _redis.ClusterStack(self.settings, self._state, self.clock).status()
        healthy, detail = self.probe(name, timeout_s=3.0)
        pid = self._state.managed_pid(name)
        entry = self._state.read().get(name) or {}
        if pid is None and not healthy and entry:
            detail += " (the process thaw stack started has exited; see its log: " + str(entry.get("log")) + ")"
        if name == KAFKA:
            detail += self._kafka_nodes_detail()
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
        if name == KAFKA and self.settings.kafka.brokers > 1:
            return self._ensure_kafka_nodes()
        if name == REDIS and _redis.cluster_in_charge(self.settings, self._state):
            return _redis.ClusterStack(self.settings, self._state, self.clock).ensure()
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

        logs = [launch.log, _kafka.server_log(self.home)] if name == KAFKA else [launch.log]
        self._poll_ready(attempt, f"{name} (pid {launch.pid})", f"it is left running, see {launch.log} or stop it",
                         logs)

    def _poll_ready(self, attempt: Callable[[], tuple[bool, str]], what: str, left: str,
                    logs: Sequence[Path] = ()) -> str:
        """Run ``attempt`` every 0.25 s until it reports healthy and return its detail; StackError naming ``what``
        once ``ready_timeout_s`` passed (``left``: what was left running and where its logs are), with the last lines of
        ``logs`` (a machine without the stack's home, a CI runner, shows why there and nowhere else)."""
        deadline = self.clock() + self.settings.stack.ready_timeout_s
        healthy, detail = poll(attempt, lambda r: r[0], until=deadline, clock=self.clock, every_s=0.25)
        if not healthy:
            tails = "".join(f"\nlast lines of {p}:\n{tail(p, 8)}" for p in logs if p.exists())
            raise StackError(
                f"{what} not healthy after {self.settings.stack.ready_timeout_s:.0f}s ({detail}); {left} with "
                f"`thaw stack down`; raise THAW_STACK__READY_TIMEOUT_S on slow machines{tails}"
            )
        return detail

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
        if name == KAFKA and any(n != KAFKA and _kafka.is_node_service(n) for n in self._state.read()):
            return self._stop_kafka_nodes()
        if name == REDIS and _redis.cluster_recorded(self._state):
            return _redis.ClusterStack(self.settings, self._state, self.clock).stop()
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

    # ------------------------------------------------------------------------------- Kafka of several nodes

    def kafka_node_pid(self, node_id: int) -> int | None:
        """The pid of local Kafka node ``node_id`` (1-based) that ``up`` started, if it runs."""
        return self._state.managed_pid(_kafka.node_service(node_id))

    def _kafka_node_entries(self) -> list[str]:
        return sorted((n for n in self._state.read() if _kafka.is_node_service(n)), key=_kafka.node_id_of)

    def _kafka_nodes_detail(self) -> str:
        """`` nodes: 1 pid 11, 2 pid 12, 3 not running`` when more than one node is configured or recorded."""
        wanted = {nd.service for nd in _kafka.nodes(self.settings, self.home)}
        names = sorted(set(self._kafka_node_entries()) | wanted, key=_kafka.node_id_of)
        if len(names) < 2:
            return ""
        parts = []
        for n in names:
            pid = self._state.managed_pid(n)
            parts.append(f"{_kafka.node_id_of(n)} " + (f"pid {pid}" if pid else "not running"))
        return "; nodes: " + ", ".join(parts)

    def _ensure_kafka_nodes(self) -> ServiceStatus:
        """Every node of the ``kafka.brokers``-node cluster running and all of them registered, the group
        coordinator available: nodes still running are kept, the others (killed, never started) started, all at
        once (a node can only finish starting once a majority of the controllers runs)."""
        address = self.address(KAFKA)
        nodes = _kafka.nodes(self.settings, self.home)
        state = self._state.read()
        for nd in nodes:  # a live node of another layout (the single broker, another cluster size) on these entries
            pid = self._state.managed_pid(nd.service)
            marker = (state.get(nd.service) or {}).get("marker")
            if pid is not None and marker != nd.marker:
                raise StackError(f"{nd.service} (pid {pid}) runs another Kafka layout ({marker}); stop it with "
                                 "`thaw stack down` before bringing up a different number of brokers")
        healthy, detail = self.probe(KAFKA, timeout_s=3.0)
        running = {nd.node_id: self._state.managed_pid(nd.service) for nd in nodes}
        if healthy:
            entry = state.get(KAFKA) or {}
            pid = running.get(1)
            return ServiceStatus(KAFKA, address, True, pid, pid is not None, detail + self._kafka_nodes_detail(),
                                 entry.get("startup_s") if pid is not None else None)
        if not self.is_local(KAFKA):
            raise StackError(f"kafka at {address} is not reachable ({detail}); thaw stack only starts services on "
                             "loopback addresses, so start it yourself or point the settings at a running one")
        missing = [nd for nd in nodes if running[nd.node_id] is None]
        busy = [p for nd in missing for p in (nd.port, nd.controller_port) if not port_bindable("127.0.0.1", p)]
        if busy:
            raise StackError(f"port(s) {', '.join(map(str, busy))} needed by kafka are in use by something that is "
                             f"not a healthy kafka ({detail}). Stop that process or choose other ports "
                             f"({_PORT_ENV[KAFKA]})")
        started = self.clock()
        _kafka.fetch_kafka(self.settings)  # once, before the nodes start in parallel (each would run Maven)
        cid = _kafka.shared_cluster_id(self.settings, self.home)
        for nd in missing:
            self._state.drop(nd.service)
        with ThreadPoolExecutor(max_workers=max(1, len(missing)), thread_name_prefix="kafka-node") as pool:
            futures = {nd.node_id: pool.submit(_kafka.start_node, self.settings, self.home, nd, cid)
                       for nd in missing}
        launches = {nd.node_id: self._state.launch(nd.service) for nd in nodes if running[nd.node_id] is not None}
        errors = []
        for nd in missing:
            exc = futures[nd.node_id].exception()
            if exc is None:
                launches[nd.node_id] = futures[nd.node_id].result()
                self._state.record(nd.service, launches[nd.node_id])
            else:
                errors.append(f"node {nd.node_id}: {exc}")
        if errors:
            raise StackError("; ".join(errors))

        def attempt() -> tuple[bool, str]:
            for nd in nodes:
                launch = launches[nd.node_id]
                if not pid_alive(launch.pid):
                    self._state.drop(nd.service)
                    tails = "\n".join(f"last lines of {p}:\n{tail(p)}" for p in (launch.log, nd.server_log(self.home))
                                      if p.exists())
                    raise StackError(f"kafka node {nd.node_id} (pid {launch.pid}) exited during startup; {tails}")
            return self.probe(KAFKA, timeout_s=3.0)

        pids = [launches[nd.node_id].pid for nd in nodes]
        detail = self._poll_ready(attempt, f"kafka ({len(nodes)} nodes, pids {pids})",
                                  f"they are left running, see {self.home / 'logs'} or stop them",
                                  [p for nd in nodes for p in (launches[nd.node_id].log, nd.server_log(self.home))])
        elapsed = round(self.clock() - started, 3)
        for nd in missing:
            self._state.update(nd.service, startup_s=elapsed)
        return ServiceStatus(KAFKA, address, True, launches[1].pid, True, detail + self._kafka_nodes_detail(),
                             elapsed)

    def _stop_kafka_nodes(self) -> ServiceStatus:
        """Stop every recorded Kafka node at once (SIGTERM each, SIGKILL of those still running after the grace)."""
        names = self._kafka_node_entries()
        pids = {n: pid for n in names if (pid := self._state.managed_pid(n)) is not None}
        live = list(pids)
        started = self.clock()
        grace = self.settings.stack.stop_timeout_s
        with ThreadPoolExecutor(max_workers=max(1, len(live)), thread_name_prefix="kafka-stop") as pool:
            killed = dict(zip(live, pool.map(lambda n: terminate(pids[n], grace, self.clock), live), strict=True))
        for n in names:
            self._state.drop(n)
        if not live:
            return ServiceStatus(KAFKA, self.address(KAFKA), False, None, False, "not running")
        hard = sum(killed.values())
        how = f"SIGTERM {len(live) - hard}" + (f", SIGKILL after grace period {hard}" if hard else "")
        return ServiceStatus(KAFKA, self.address(KAFKA), False, pids.get(KAFKA) or pids[live[0]], True,
                             f"stopped {len(live)} node(s) ({how}, {self.clock() - started:.1f}s)")


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
