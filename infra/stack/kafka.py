"""Kafka for the local stack: the jars from Maven Central, the KRaft storage format, the properties, start, health.

Every node is broker and controller at once (KRaft combined mode, no ZooKeeper) on loopback, run straight from the
Maven jars on the JDK. One node by default (``kafka.brokers`` = 1)::

    <home>/kafka-libs/<version>/*.jar   fetched once by :func:`fetch_kafka` (pom: infra/kafka/pom.xml)
    <home>/kafka/server.properties      written on every start from the settings
    <home>/kafka/log4j2.properties      Log4j2 config (file appender to <home>/logs/kafka-server.log)
    <home>/kafka/kraft-<ctrl-port>/     log.dirs, formatted once with kafka.tools.StorageTool (--standalone)

``thaw stack up --brokers N`` (``kafka.brokers`` = N > 1) runs N such nodes from the same jars: node i (1-based)
listens on ``port + 2(i-1)`` and its controller on ``controller_port + 2(i-1)``, and the N controllers form a
static voter quorum (``controller.quorum.voters``: a fixed local cluster never changes its voters, and a node whose
log dir is lost is formatted again with the cluster id alone, no directory ids to keep). Combined, not split: N
JVMs instead of 2N on a small machine; a node killed takes its broker and its controller vote, and the other
N - 1 keep a majority of the quorum from N = 3. Each node has its own directory, formatted once with one cluster id
shared by all (the first formatted node's, else ``cluster.id``)::

    <home>/kafka/cluster<N>-<ctrl-port>/cluster.id
    <home>/kafka/cluster<N>-<ctrl-port>/node-<i>/server.properties, log4j2.properties
    <home>/kafka/cluster<N>-<ctrl-port>/node-<i>/kraft/      log.dirs of node i
    <home>/logs/kafka-<i>.out, kafka-<i>-server.log          (node 1: kafka.out, kafka-server.log)

The cluster's internal topics (``__consumer_offsets``, transactions) have min(3, N) replicas and
``min.insync.replicas`` 2 from three replicas; the engine's topics get theirs from :mod:`infra.topics`.
"""

from __future__ import annotations

import base64
import contextlib
import os
import re
import shutil
import subprocess
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra import clients
from infra.lag import group_coordination
from infra.settings import Settings
from infra.stack.common import KAFKA, StackError, log, poll, port_open, which
from infra.stack.state import Launch, spawn

_POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"


def host_port(settings: Settings) -> tuple[str, int]:
    first = settings.kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def bootstrap_addresses(settings: Settings) -> list[tuple[str, int]]:
    """Every (host, port) of ``kafka.bootstrap_servers``."""
    out = []
    for addr in settings.kafka.bootstrap_servers.split(","):
        host, _, port = addr.strip().rpartition(":")
        out.append((host.strip("[]") or "127.0.0.1", int(port)))
    return out


# ------------------------------------------------------------------------------------------------------ nodes


def node_ports(port: int, controller_port: int, n: int) -> list[tuple[int, int]]:
    """(listener, controller) port of each of ``n`` local nodes: ``port + 2i`` and ``controller_port + 2i``, so the
    default 19092 / 19093 give 19092..19097 for three nodes."""
    return [(port + 2 * i, controller_port + 2 * i) for i in range(n)]


def node_service(node_id: int) -> str:
    """The ``state.json`` entry of node ``node_id`` (1-based): ``kafka`` for the first, ``kafka-<id>`` after."""
    return KAFKA if node_id == 1 else f"{KAFKA}-{node_id}"


def is_node_service(name: str) -> bool:
    """Whether ``name`` is the ``state.json`` entry of a Kafka node (of a cluster of any size)."""
    return name == KAFKA or (name.startswith(f"{KAFKA}-") and name[len(KAFKA) + 1 :].isdigit())


def node_id_of(service: str) -> int:
    """The node id of a node's ``state.json`` entry (:func:`node_service` backwards)."""
    return 1 if service == KAFKA else int(service[len(KAFKA) + 1 :])


@dataclass(frozen=True)
class KafkaNode:
    """One KRaft node (broker + controller) of the local stack: its ports, directories and ``state.json`` entry."""

    node_id: int
    port: int
    controller_port: int
    conf_dir: Path  # server.properties and log4j2.properties
    data: Path  # log.dirs, formatted once

    @property
    def service(self) -> str:
        return node_service(self.node_id)

    @property
    def props(self) -> Path:
        return self.conf_dir / "server.properties"

    @property
    def marker(self) -> str:
        """What identifies this node's process in its command line (its properties file is its last argument)."""
        return str(self.props)

    def out_log(self, home: Path) -> Path:
        return home / "logs" / f"{self.service}.out"

    def server_log(self, home: Path) -> Path:
        return home / "logs" / f"{self.service}-server.log"


def cluster_dir(settings: Settings, home: Path) -> Path:
    """Where the nodes of a local cluster of ``kafka.brokers`` > 1 nodes keep their directories."""
    return home / "kafka" / f"cluster{settings.kafka.brokers}-{settings.kafka.controller_port}"


def nodes(settings: Settings, home: Path) -> list[KafkaNode]:
    """The nodes of the local Kafka: the single broker's layout of old for one, ``cluster<N>-<ctrl>/node-<i>``
    for more."""
    k = settings.kafka
    if k.brokers == 1:
        kdir = home / "kafka"
        return [KafkaNode(1, k.port, k.controller_port, kdir, kdir / f"kraft-{k.controller_port}")]
    base = cluster_dir(settings, home)
    return [KafkaNode(i + 1, p, c, base / f"node-{i + 1}", base / f"node-{i + 1}" / "kraft")
            for i, (p, c) in enumerate(node_ports(k.port, k.controller_port, k.brokers))]


def ports(settings: Settings) -> list[tuple[str, int]]:
    """The (host, port) pairs the local brokers bind: each node's PLAINTEXT listener and KRaft controller."""
    host = "127.0.0.1"
    return [(host, p) for nd in nodes(settings, settings.stack.home) for p in (nd.port, nd.controller_port)]


def check_local_config(settings: Settings) -> None:
    k = settings.kafka
    if k.security_protocol != "PLAINTEXT":
        raise StackError("the local Kafka broker speaks PLAINTEXT only; unset THAW_KAFKA__SECURITY_PROTOCOL")
    if k.brokers == 1:
        return
    pairs = node_ports(k.port, k.controller_port, k.brokers)
    every = [p for pair in pairs for p in pair]
    if len(set(every)) != len(every) or max(every) > 65535:
        raise StackError(f"{k.brokers} Kafka nodes need ports {k.port}, {k.port} + 2, ... and {k.controller_port}, "
                         f"{k.controller_port} + 2, ... that do not overlap: choose a controller port "
                         "(THAW_KAFKA__CONTROLLER_PORT) one above the listener port, or far from it")
    listeners = {p for p, _ in pairs}
    strangers = [f"{h}:{p}" for h, p in bootstrap_addresses(settings) if p not in listeners]
    if strangers:
        raise StackError(f"THAW_KAFKA__BOOTSTRAP_SERVERS names {', '.join(strangers)}, which is no node of the local "
                         f"{k.brokers}-node cluster (listeners {sorted(listeners)}); give the first node's address "
                         "alone and the settings list the others")
    if k.topic_replication_factor() > k.brokers:
        raise StackError(f"replication factor {k.topic_replication_factor()} needs at least that many brokers, "
                         f"not {k.brokers} (THAW_KAFKA__REPLICATION_FACTOR, THAW_KAFKA__BROKERS)")


# ------------------------------------------------------------------------------------------------------- jars


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
    mvn = which("mvn", "Install Maven to fetch the Kafka jars from Maven Central: apt-get install maven")
    if not _POM.exists():
        raise StackError(f"Kafka pom not found at {_POM} (broken installation?)")
    partial = libs.with_name(f".{libs.name}.partial-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    cmd = [
        mvn,
        "-q",
        "-B",
        "--strict-checksums",  # a jar whose checksum does not match the repository's fails the fetch
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


def java() -> str:
    java_home = os.environ.get("JAVA_HOME")
    if java_home and (Path(java_home) / "bin" / "java").exists():
        exe = str(Path(java_home) / "bin" / "java")
    else:
        exe = which("java", "Kafka 4 needs Java 17+: apt-get install openjdk-17-jre-headless")
    out = subprocess.run([exe, "-version"], capture_output=True, text=True, timeout=30, check=False)
    m = re.search(r'version "(\d+)(?:\.(\d+))?', out.stderr + out.stdout)
    if m:
        major = int(m.group(1)) if m.group(1) != "1" else int(m.group(2) or 0)
        if major < 17:
            raise StackError(
                f"{exe} is Java {major}; Kafka 4 needs Java 17+ (apt-get install openjdk-17-jre-headless)"
            )
    return exe


def cluster_id() -> str:
    return base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode("ascii")


def format_args(cid: str, props: Path, standalone: bool = True) -> list[str]:
    """The KRaft storage format command (after the JVM and classpath). The id goes in the ``--cluster-id=`` form:
    a URL-safe base64 id starts with "-" one time in 64, which as a separate argument reads as an option (the
    format then fails with a usage message). ``standalone``: a single node's dynamic quorum of itself; otherwise the
    properties name the static voters (``controller.quorum.voters``) and the format takes no quorum option."""
    return ["kafka.tools.StorageTool", "format", *(["--standalone"] if standalone else []), f"--cluster-id={cid}",
            "-c", str(props)]


def formatted_cluster_id(data: Path) -> str | None:
    """The ``cluster.id`` a formatted log dir holds (None: not formatted)."""
    try:
        text = (data / "meta.properties").read_text(encoding="utf-8")
    except OSError:
        return None
    m = re.search(r"^cluster\.id=(\S+)$", text, flags=re.MULTILINE)
    return m.group(1) if m else None


def shared_cluster_id(settings: Settings, home: Path) -> str:
    """The cluster id every node of a local cluster is formatted with: a formatted node's, else the one kept in
    ``cluster.id``, else a new one (kept there)."""
    for nd in nodes(settings, home):
        cid = formatted_cluster_id(nd.data)
        if cid:
            return cid
    kept = cluster_dir(settings, home) / "cluster.id"
    with contextlib.suppress(OSError):
        cid = kept.read_text(encoding="utf-8").strip()
        if cid:
            return cid
    cid = cluster_id()
    kept.parent.mkdir(parents=True, exist_ok=True)
    kept.write_text(cid + "\n", encoding="utf-8")
    return cid


# ------------------------------------------------------------------------------------------------------ probe


def probe_kafka(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Healthy = the broker answers DescribeCluster AND can coordinate a consumer group of any name.

    The second part is :func:`infra.lag.group_coordination` (``__consumer_offsets`` exists, every partition has a
    leader, FindCoordinator + OffsetFetch succeed for a throwaway group per partition), retried every 0.25 s
    within ``timeout_s``: a freshly formatted broker answers metadata ~0.4 s before it can host groups (its first
    FindCoordinator creates ``__consumer_offsets``). An already healthy broker passes on the first try (a few ms).
    """
    deadline = time.monotonic() + timeout_s
    addrs = bootstrap_addresses(settings)
    want = settings.kafka.brokers
    silent = [f"{h}:{p}" for h, p in addrs if not port_open(h, p, timeout=min(timeout_s, 1.0))]
    if len(silent) == len(addrs):
        return False, f"nothing listening on {', '.join(silent)}"
    if want > 1 and silent:  # a node killed a moment ago may still be registered: its port says it is gone
        return False, f"{len(addrs) - len(silent)} of {len(addrs)} brokers listening (nothing on {', '.join(silent)})"
    from kafka import KafkaAdminClient  # type: ignore[import-untyped]

    ms = max(int(timeout_s * 1000), 1000)
    # kafka-python 3.x bounds the bootstrap with bootstrap_timeout_ms, 2.x with api_version_auto_timeout_ms
    new_style = "bootstrap_timeout_ms" in KafkaAdminClient.DEFAULT_CONFIG
    bootstrap_key = "bootstrap_timeout_ms" if new_style else "api_version_auto_timeout_ms"
    try:
        admin = clients.kafka_admin(settings.kafka, request_timeout_ms=ms, **{bootstrap_key: ms})
    except Exception as exc:  # noqa: BLE001 - any client failure means "not healthy"
        return False, f"{type(exc).__name__}: {exc}"
    try:
        info = admin.describe_cluster()
        registered = info.get("brokers", [])
        cluster = f"Kafka cluster {info.get('cluster_id')} ({len(registered)} broker(s))"
        if len(registered) < want:
            ids = sorted(b.get("node_id") for b in registered)
            return False, f"{cluster}: {len(registered)} of {want} brokers registered ({ids})"
        ready, why = poll(
            lambda: group_coordination(admin), lambda r: r[0], until=deadline, clock=time.monotonic, every_s=0.25
        )
        if not ready:
            return False, f"{cluster} answers but cannot coordinate consumer groups yet ({why})"
        return True, f"{cluster}, {why}"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            admin.close()


# ------------------------------------------------------------------------------------------------------ start


def cluster_replication(brokers: int) -> tuple[int, int]:
    """(replication factor, ``min.insync.replicas``) of a local cluster's internal topics and topic defaults:
    min(3, brokers) replicas, 2 in sync from three replicas (1 below)."""
    rf = min(3, brokers)
    return rf, 2 if rf >= 3 else 1


def server_properties(settings: Settings, data: Path, node: KafkaNode | None = None) -> str:
    """``server.properties`` of a KRaft broker+controller with ``log.dirs`` = ``data``: the single node (``node``
    None or the only one) with its own dynamic quorum, or ``node`` of a ``kafka.brokers``-node cluster with the
    static voters of all of them."""
    s = settings
    host, port = host_port(s)
    adv_host = "127.0.0.1" if host == "localhost" else host
    n = s.kafka.brokers
    node = node or KafkaNode(1, port, s.kafka.controller_port, data.parent, data)
    port, cport = node.port, node.controller_port
    if n == 1:
        quorum = {"controller.quorum.bootstrap.servers": f"127.0.0.1:{cport}"}
    else:
        voters = ",".join(f"{i + 1}@127.0.0.1:{c}" for i, (_, c) in
                          enumerate(node_ports(s.kafka.port, s.kafka.controller_port, n)))
        quorum = {"controller.quorum.voters": voters}
    rf, isr = (str(v) for v in cluster_replication(n))
    lines = {
        "process.roles": "broker,controller",
        "node.id": str(node.node_id),
        **quorum,
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}",
        "advertised.listeners": f"PLAINTEXT://{adv_host}:{port},CONTROLLER://127.0.0.1:{cport}",
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "log.dirs": str(data),
        "num.partitions": str(s.kafka.partitions),
        "default.replication.factor": rf,
        "min.insync.replicas": isr,
        "offsets.topic.replication.factor": rf,
        "offsets.topic.num.partitions": "8",
        "transaction.state.log.replication.factor": rf,
        "transaction.state.log.min.isr": isr,
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": rf,
        "share.coordinator.state.topic.min.isr": isr,
        "group.initial.rebalance.delay.ms": "0",
        "auto.create.topics.enable": str(s.stack.kafka_auto_create_topics).lower(),
        "delete.topic.enable": "true",
        "num.network.threads": "2",
        "num.io.threads": "4",
        "num.recovery.threads.per.data.dir": "1",
        "log.retention.hours": "168",
    }
    header = "# written by infra/stack/kafka.py on every `up`; edit the settings, not this file\n"
    return header + "".join(f"{k}={v}\n" for k, v in lines.items())


def start_kafka(settings: Settings, home: Path) -> Launch:
    """Fetch the jars if needed, write the configs, format the KRaft storage once, start ``kafka.Kafka`` (the single
    node of ``kafka.brokers`` = 1)."""
    return start_node(settings, home, nodes(settings, home)[0])


def start_node(settings: Settings, home: Path, node: KafkaNode, cid: str | None = None) -> Launch:
    """Start one node: its configs written, its log dir formatted once (with ``cid``, the cluster's shared id, when
    it belongs to a cluster; a new id for the single node), then ``kafka.Kafka`` detached."""
    exe = java()
    libs = fetch_kafka(settings)
    s = settings
    logs = home / "logs"
    node.conf_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    props = node.props
    props.write_text(server_properties(s, node.data, node), encoding="utf-8")
    log4j = node.conf_dir / "log4j2.properties"
    log4j.write_text(LOG4J2.replace("@LOGFILE@", str(node.server_log(home))), encoding="utf-8")
    cp = str(libs / "*")
    jvm = [
        exe,
        f"-Xms{min(256, s.stack.kafka_heap_mb)}m",
        f"-Xmx{s.stack.kafka_heap_mb}m",
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
        f"-Dkafka.logs.dir={logs}",
    ]
    data = node.data
    if not (data / "meta.properties").exists():
        shutil.rmtree(data, ignore_errors=True)
        single = s.kafka.brokers == 1
        fmt = subprocess.run(
            [*jvm, "-cp", cp, *format_args(cid or cluster_id(), props, standalone=single)],
            capture_output=True,
            text=True,
            timeout=300,
            check=False,
        )
        if fmt.returncode != 0:
            shutil.rmtree(data, ignore_errors=True)
            out = "\n".join((fmt.stdout + fmt.stderr).strip().splitlines()[-15:])
            raise StackError(f"kafka.tools.StorageTool format of node {node.node_id} failed (exit "
                             f"{fmt.returncode}):\n{out}")
    return spawn([*jvm, "-cp", cp, "kafka.Kafka", str(props)], node.out_log(home), marker=node.marker,
                 cwd=node.conf_dir)


def server_log(home: Path) -> Path:
    """Kafka's own log (Log4j2) of the first node, shown with the stdout log when the broker dies during startup."""
    return home / "logs" / "kafka-server.log"


# ------------------------------------------------------------------------------------------------ leadership


def partition_leaders(settings: Settings, topic: str, timeout_s: float = 10.0) -> dict[int, int]:
    """Partition -> the node id that leads it now (-1: no leader), from the cluster's metadata."""
    admin = clients.kafka_admin(settings.kafka, request_timeout_ms=int(timeout_s * 1000))
    try:
        answer = admin.describe_topics([topic])
    finally:
        with contextlib.suppress(Exception):
            admin.close()
    return leaders_of(answer, topic)


def leaders_of(describe_topics: Any, topic: str) -> dict[int, int]:
    """Partition -> leader id of ``topic`` in a kafka-python ``describe_topics`` answer."""
    for t in describe_topics or []:
        if t.get("name", t.get("topic")) != topic or t.get("error_code", 0):
            continue
        out = {}
        for p in t.get("partitions") or []:
            leader = p.get("leader_id", p.get("leader"))
            out[int(p.get("partition_index", p.get("partition")))] = -1 if leader is None else int(leader)
        return out
    return {}


def busiest_leader(leaders: Mapping[int, int]) -> int | None:
    """The node that leads the most partitions (the lowest id among equals); None when none has a leader."""
    counts: dict[int, int] = {}
    for node in leaders.values():
        if node >= 0:
            counts[node] = counts.get(node, 0) + 1
    if not counts:
        return None
    return min(counts, key=lambda node: (-counts[node], node))


LOG4J2 = """\
# written by infra/stack/kafka.py
status = warn
name = thaw-kafka
appender.file.type = RollingFile
appender.file.name = FILE
appender.file.fileName = @LOGFILE@
appender.file.filePattern = @LOGFILE@.%i
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
