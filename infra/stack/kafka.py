"""Kafka for the local stack: the jars from Maven Central, the KRaft storage format, the properties, start, health.

One node is broker and controller (KRaft, no ZooKeeper) on loopback, run straight from the Maven jars on the JDK::

    <home>/kafka-libs/<version>/*.jar   fetched once by :func:`fetch_kafka` (pom: infra/kafka/pom.xml)
    <home>/kafka/server.properties      written on every start from the settings
    <home>/kafka/log4j2.properties      Log4j2 config (file appender to <home>/logs/kafka-server.log)
    <home>/kafka/kraft-<ctrl-port>/     log.dirs, formatted once with kafka.tools.StorageTool (--standalone)
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
from pathlib import Path

from infra import clients
from infra.lag import group_coordination
from infra.settings import Settings
from infra.stack.common import StackError, log, poll, port_open, which
from infra.stack.state import Launch, spawn

_POM = Path(__file__).resolve().parent.parent / "kafka" / "pom.xml"


def host_port(settings: Settings) -> tuple[str, int]:
    first = settings.kafka.bootstrap_servers.split(",")[0].strip()
    host, _, port = first.rpartition(":")
    return host.strip("[]") or "127.0.0.1", int(port)


def ports(settings: Settings) -> list[tuple[str, int]]:
    """The (host, port) pairs the local broker binds: the PLAINTEXT listener and the KRaft controller."""
    host = "127.0.0.1"
    return [(host, settings.kafka.port), (host, settings.kafka.controller_port)]


def check_local_config(settings: Settings) -> None:
    if settings.kafka.security_protocol != "PLAINTEXT":
        raise StackError("the local Kafka broker speaks PLAINTEXT only; unset THAW_KAFKA__SECURITY_PROTOCOL")


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


def format_args(cid: str, props: Path) -> list[str]:
    """The KRaft storage format command (after the JVM and classpath). The id goes in the ``--cluster-id=`` form:
    a URL-safe base64 id starts with "-" one time in 64, which as a separate argument reads as an option (the
    format then fails with a usage message)."""
    return ["kafka.tools.StorageTool", "format", "--standalone", f"--cluster-id={cid}", "-c", str(props)]


# ------------------------------------------------------------------------------------------------------ probe


def probe_kafka(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Healthy = the broker answers DescribeCluster AND can coordinate a consumer group of any name.

    The second part is :func:`infra.lag.group_coordination` (``__consumer_offsets`` exists, every partition has a
    leader, FindCoordinator + OffsetFetch succeed for a throwaway group per partition), retried every 0.25 s
    within ``timeout_s``: a freshly formatted broker answers metadata ~0.4 s before it can host groups (its first
    FindCoordinator creates ``__consumer_offsets``). An already healthy broker passes on the first try (a few ms).
    """
    deadline = time.monotonic() + timeout_s
    host, port = host_port(settings)
    if not port_open(host, port, timeout=min(timeout_s, 1.0)):
        return False, f"nothing listening on {host}:{port}"
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
        cluster = f"Kafka cluster {info.get('cluster_id')} ({len(info.get('brokers', []))} broker(s))"
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


def server_properties(settings: Settings, data: Path) -> str:
    """``server.properties`` of the single-node KRaft broker+controller with ``log.dirs`` = ``data``."""
    s = settings
    host, port = host_port(s)
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
    header = "# written by infra/stack/kafka.py on every `up`; edit the settings, not this file\n"
    return header + "".join(f"{k}={v}\n" for k, v in lines.items())


def start_kafka(settings: Settings, home: Path) -> Launch:
    """Fetch the jars if needed, write the configs, format the KRaft storage once, start ``kafka.Kafka``."""
    exe = java()
    libs = fetch_kafka(settings)
    s = settings
    kdir = home / "kafka"
    logs = home / "logs"
    data = kdir / f"kraft-{s.kafka.controller_port}"
    kdir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    props = kdir / "server.properties"
    props.write_text(server_properties(s, data), encoding="utf-8")
    log4j = kdir / "log4j2.properties"
    log4j.write_text(LOG4J2.replace("@LOGDIR@", str(logs)), encoding="utf-8")
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
    if not (data / "meta.properties").exists():
        shutil.rmtree(data, ignore_errors=True)
        fmt = subprocess.run(
            [*jvm, "-cp", cp, *format_args(cluster_id(), props)],
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
    return spawn([*jvm, "-cp", cp, "kafka.Kafka", str(props)], out_log, marker=str(props), cwd=kdir)


def server_log(home: Path) -> Path:
    """Kafka's own log (Log4j2), shown with the stdout log when the broker dies during startup."""
    return home / "logs" / "kafka-server.log"


LOG4J2 = """\
# written by infra/stack/kafka.py
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
