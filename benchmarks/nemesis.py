"""Nemesis: faults under load, then a checker over the producer's history (Jepsen-style).

Run (its own local stack, own ports and home; it kills that stack's processes, never another's)::

    python -m benchmarks.nemesis                  # full: >= 100k user events, >= 2k items, 10 worker kills, ...
    python -m benchmarks.nemesis --quick --free-ports --out /tmp/nemesis-quick.json   # the test suite's run

What it does:

1. brings up a local stack (Kafka, Redis with AOF ``everysec``, Milvus) under ``--home`` on the ports of
   :data:`DEFAULT_PORTS` (or free ones: ``--free-ports``), creates the topics of a fresh namespace, makes sure
   MiniLM is published and starts ``python -m thaw worker`` (text space) as a subprocess;
2. a **producer** (kafka-python, ``acks=all``, idempotent) publishes content items and user events (2% of each
   deliberately bad) and records the history of every record it got an ack for (topic, partition, offset, key,
   value); user events name published items only, mostly items published a few seconds earlier (indexed by
   then), some just-published ones (the retry topic handles those);
3. a **nemesis** thread, at times drawn from ``--seed``, kills the worker with SIGKILL (and restarts it), pauses
   the broker with SIGSTOP for 10 s, kills and restarts the broker, kills Redis with SIGKILL and restarts it (it
   reloads its append-only file and loses up to its last second of writes), stops Milvus for 30 s; one fault at a
   time, each after the engine caught up with the last one;
4. a **monitor** samples every 0.5 s how far the worker got (the sum of its Redis offset fences on the user-events
   partitions: records handled) against the log ends (lag), and restarts a worker that exited on its own;
5. once everything is handled, the **checker** reads the topics back and compares, from the history: every valid
   user event applied exactly once (each user's ``n_events`` and vector in Redis equal an offline recomputation
   with :func:`streams.cores.user_update.apply_events` over the valid events in the log), every valid item in
   Milvus (and found by a search with its own vector), every bad record in a DLQ with a reason. It reports
   ``lost``, ``duplicated`` and ``misfiled`` (with breakdowns), the faults and the time to recover after each
   (``resume_s``: until the next record is handled; ``catch_up_s``: until the lag is back under
   :data:`CAUGHT_UP_LAG`), into ``benchmarks/results/nemesis.{json,png}`` (or ``--out``).

``--workers N`` runs N worker processes in one consumer group (:class:`benchmarks.worker_group.WorkerGroup`; the
topics get 8 partitions unless ``--partitions`` says otherwise): each worker kill hits a random worker, and the plan
adds worker pauses (SIGSTOP of a random worker for 15 s, past the group's 10 s session timeout: the group evicts it,
its partitions move to the others, and it wakes up holding batches it prepared before the pause), so the
rebalances happen in the middle of the faults; the checker is the same. Its full report is
``nemesis_workers<N>.json``.

``--brokers 3`` runs its Kafka as three KRaft nodes (``thaw stack up --brokers 3``: topics with 3 replicas and
``min.insync.replicas`` 2) and the plan adds faults on the broker that leads the most ``user.events`` partitions at
that moment: ``leader_kill`` (SIGKILL, down for ``leader_down_s`` while the other two carry on, then restarted) and
``leader_pause`` (SIGSTOP for ``leader_pause_s``, past the controller's 9 s broker session: it is fenced, its
partitions get new leaders, and it wakes up a stale leader). The first node's ``broker_pause`` and
``broker_restart`` stay in the plan. Its full report is ``nemesis_brokers3.json``.

``--redis-cluster`` runs its Redis as the local stack's Redis Cluster (``thaw stack up --redis-cluster``: 3 masters
and 3 replicas on the Redis port .. + 5, their bus on + 6 .. + 11; :meth:`Ports.redis_ports`, which ``--free-ports``
reserves too), with ``THAW_REDIS__CLUSTER=1`` for this process and the workers; the monitor and the checker read
through ``RedisCluster``. Its ``redis_kill`` SIGKILLs the master serving the slots of the most user-event shards
(:func:`master_to_kill`), waits until every live node says ``cluster_state:ok`` and routes those slots to the
promoted replica (:func:`failover_done`; the seconds are the fault's ``failover_s``), then restarts the killed node,
which rejoins as a replica. Replication is asynchronous, so the promoted replica may miss the last acknowledged
commits: the worker finds its fences below their floors and restarts from them (docs/architecture.md, "Redis going
back in time"). The report's ``redis`` says ``cluster`` or ``single``; its default name gets ``_redis_cluster``.
"""

from __future__ import annotations

import argparse
import base64
import bisect
import contextlib
import gzip
import json
import os
import shutil
import signal
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, BenchError, machine_info, wait_for, write_json
from benchmarks.worker_group import WorkerGroup, pick_member
from infra.stack.redis import CLUSTER_NODES

#: the nemesis stack's ports (never the defaults: another stack may run there)
DEFAULT_HOME = Path("/tmp/thaw-nemesis-stack")

#: the lag (user-event records not handled yet) under which the engine counts as caught up after a fault
CAUGHT_UP_LAG = 300

USER_ACTIONS = ["impression", "click", "play", "complete", "like", "comment", "share", "skip"]
KINDS = ["track", "comment", "moment", "dynamic"]
WORDS = ("guitar piano synth drums bass violin choir jazz folk metal ambient techno ballad anthem lullaby waltz "
         "rain summer night city ocean mountain dance dream fire river neon velvet echo storm").split()


@dataclass(frozen=True)
class Ports:
    kafka: int
    controller: int
    redis: int
    milvus: int
    milvus_base: int  # + 0..10: Milvus' embedded etcd, metrics and internal gRPC ports
    metrics: int
    web: int
    # Kafka nodes: node i listens on kafka + 2i, its controller on controller + 2i (the settings list them all)
    brokers: int = 1
    # a Redis Cluster (``infra.stack.redis.ClusterStack``): 6 nodes on redis .. redis + 5, their bus on + 6 .. + 11
    redis_cluster: bool = False

    def redis_ports(self) -> list[int]:
        """Every port the stack's Redis takes: one, or the cluster's 12 (client ports, then bus ports)."""
        return list(range(self.redis, self.redis + (REDIS_CLUSTER_PORTS if self.redis_cluster else 1)))

    def env(self, home: Path) -> dict[str, str]:
        """The ``THAW_*`` variables of a stack on these ports under ``home`` (for this process and the worker)."""
        return {
            "THAW_REDIS__CLUSTER": "1" if self.redis_cluster else "0",
            "THAW_STACK__HOME": str(home),
            "THAW_KAFKA__BOOTSTRAP_SERVERS": f"127.0.0.1:{self.kafka}",
            "THAW_KAFKA__CONTROLLER_PORT": str(self.controller),
            "THAW_KAFKA__BROKERS": str(self.brokers),
            "THAW_REDIS__PORT": str(self.redis),
            "THAW_MILVUS__URI": f"http://127.0.0.1:{self.milvus}",
            "THAW_STACK__MILVUS_PORT": str(self.milvus),
            "THAW_STACK__MILVUS_PORT_BASE": str(self.milvus_base),
            "THAW_STREAM__METRICS_PORT": str(self.metrics),
            "THAW_STREAM__WEB_PORT": str(self.web),
        }


#: the ports of the local Redis Cluster: 6 nodes and their 6 cluster-bus ports (``infra.stack.redis``)
REDIS_CLUSTER_PORTS = 2 * CLUSTER_NODES

DEFAULT_PORTS = Ports(kafka=29092, controller=29093, redis=26379, milvus=29531, milvus_base=29540, metrics=29108,
                      web=26066)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("0.0.0.0", port))  # noqa: S104 - Milvus binds every interface: check the same
        except OSError:
            return False
    return True


def free_ports(seed: int | None = None, brokers: int = 1, redis_cluster: bool = False) -> Ports:
    """Ports nothing listens on: 6 single ones and a run of 11 for Milvus (a random range in 30000-39999); with
    several Kafka nodes, their 2 ports each after those; with a Redis Cluster, its 12 after all of them (the single
    broker's and the single Redis' ports of a seed are the same as ever)."""
    rng = np.random.default_rng(seed)
    kafka_nodes = 2 * brokers if brokers > 1 else 0
    for _ in range(200):
        base = int(rng.integers(30000, 39980))
        run = list(range(base, base + 17 + kafka_nodes + (REDIS_CLUSTER_PORTS if redis_cluster else 0)))
        if all(_bindable(p) for p in run):
            kafka = run[17] if brokers > 1 else run[0]
            redis = run[17 + kafka_nodes] if redis_cluster else run[2]
            return Ports(kafka=kafka, controller=kafka + 1, redis=redis, milvus=run[3], metrics=run[4],
                         web=run[5], milvus_base=run[6], brokers=brokers, redis_cluster=redis_cluster)
    raise BenchError("no free port range found")


@dataclass(frozen=True)
class Plan:
    """How much load and which faults."""

    user_events: int
    items: int
    users: int
    rate: float  # user events per second the producer aims at
    worker_kills: int
    broker_pause_s: float
    milvus_stop_s: float
    gap_s: tuple[float, float]  # seconds between one fault's recovery and the next fault (uniform)
    bad_share: float = 0.02
    fresh_share: float = 0.05  # user events on an item published in the last second (likely not indexed yet)
    # with several workers (--workers N): SIGSTOPs of one worker, longer than the group's session timeout, so the
    # group evicts it and it comes back as a zombie holding a batch it prepared before the pause
    worker_pauses: int = 0
    worker_pause_s: float = 15.0
    # with several brokers (--brokers 3): faults on the broker leading the most user.events partitions, killed
    # (and kept down for leader_down_s) or paused past the controller's broker session timeout (9 s)
    leader_kills: int = 0
    leader_pauses: int = 0
    leader_down_s: float = 15.0
    leader_pause_s: float = 15.0
    # with a Redis Cluster (--redis-cluster): how long a killed master's replica may take to be promoted
    redis_failover_timeout_s: float = 120.0


FULL = Plan(user_events=100_000, items=2_000, users=3_000, rate=300.0, worker_kills=10, broker_pause_s=10.0,
            milvus_stop_s=30.0, gap_s=(3.0, 12.0))
QUICK = Plan(user_events=10_000, items=300, users=400, rate=60.0, worker_kills=2, broker_pause_s=10.0,
             milvus_stop_s=15.0, gap_s=(2.0, 5.0))

FAULT_KINDS = ("worker_kill", "worker_pause", "broker_pause", "broker_restart", "redis_kill", "milvus_stop",
               "leader_kill", "leader_pause")


# ------------------------------------------------------------------------------------------------ the stack
def _share_kafka_jars(settings: Any) -> None:
    """The Kafka jars are version-pinned and only read: link the default home's copy instead of fetching them."""
    from infra.settings import Settings, StackSettings
    from infra.stack import kafka_libs_dir

    mine = kafka_libs_dir(settings)
    if (mine / ".complete").exists():
        return
    default = kafka_libs_dir(Settings(stack=StackSettings()))  # the default home, whatever THAW_STACK__HOME says
    if (default / ".complete").exists():
        mine.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            mine.symlink_to(default, target_is_directory=True)


class Stack:
    """The nemesis' own local stack: its processes, and the faults done to them."""

    def __init__(self, settings: Any) -> None:
        from infra.stack import LocalStack
        from infra.stack.state import StateFile

        self.settings = settings
        self.local = LocalStack(settings)
        self.state = StateFile(settings.stack.home)

    def up(self) -> None:
        self.local.up()

    def down(self) -> None:
        self.local.down()

    def pid(self, name: str) -> int:
        pid = self.state.managed_pid(name)
        if pid is None:
            raise BenchError(f"{name} is not running under {self.settings.stack.home}")
        return pid

    def signal(self, name: str, sig: signal.Signals) -> int:
        from infra.stack.state import signal_process

        pid = self.pid(name)
        signal_process(pid, sig)
        return pid

    def kill9(self, name: str) -> None:
        from infra.stack.state import pid_alive

        pid = self.signal(name, signal.SIGKILL)
        wait_for(lambda: not pid_alive(pid), 30, f"{name} to die")

    def stop(self, name: str) -> None:
        self.local.down([name])

    def busiest_leader(self, topic: str) -> tuple[int, list[int]]:
        """The Kafka node leading the most partitions of ``topic`` now, and those partitions."""
        from infra.stack.kafka import busiest_leader, partition_leaders

        leaders = partition_leaders(self.settings, topic)
        node = busiest_leader(leaders)
        if node is None:
            raise BenchError(f"no partition of {topic} has a leader: {leaders}")
        return node, sorted(p for p, n in leaders.items() if n == node)

    # ------------------------------------------------------------------------------------- Redis Cluster
    def redis_probes(self) -> list[Any]:
        """What each port of the local Redis Cluster answers now (``infra.stack.redis.NodeProbe``)."""
        from infra.stack.redis import probe_nodes

        return probe_nodes(self.settings.redis, timeout_s=2.0)

    def redis_view(self) -> list[Any]:
        """The cluster's ``CLUSTER NODES`` as the first node that answers with ``cluster_state:ok`` sees it."""
        for p in self.redis_probes():
            if p.answered and (p.info or {}).get("cluster_state") == "ok":
                return list(p.nodes)
        raise BenchError("no Redis Cluster node answers with cluster_state:ok")

    def redis_node_entry(self, port: int) -> str:
        from infra.stack.redis import node_entry

        return node_entry(port)


# ------------------------------------------------------------------------------------------------- records
@dataclass
class Acked:
    """One record the broker acknowledged (``acks=all``)."""

    topic: str
    partition: int
    offset: int
    key: bytes
    value: bytes
    kind: str  # "user" | "item" | "bad_user" | "bad_item"
    t: float


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def _item_event(i: int, rng: np.random.Generator, t: float) -> dict[str, Any]:
    words = [WORDS[int(k)] for k in rng.integers(len(WORDS), size=8)]
    return {"item_id": f"nm{i}", "kind": KINDS[i % len(KINDS)], "creator_id": f"c{i % 97}", "created_at": _iso(t),
            "text": f"item {i}: " + " ".join(words), "tags": sorted(set(words[:3]))}


def _user_event(n: int, user: str, item: str, rng: np.random.Generator, t: float) -> dict[str, Any]:
    return {"user_id": user, "item_id": item, "action": USER_ACTIONS[int(rng.integers(len(USER_ACTIONS)))],
            "ts": _iso(t), "dwell_ms": int(rng.integers(0, 60_000)), "context": {"nid": str(n)}}


def _bad_user(i: int, t: float) -> bytes:
    """A user event the contract refuses (cycling through three defects)."""
    k = i % 3
    if k == 0:
        return b'{"user_id": "u", "item_id": '  # invalid JSON
    if k == 1:
        return json.dumps({"user_id": f"u{i}", "item_id": "nm0", "action": "dance", "ts": _iso(t)}).encode()
    return json.dumps({"user_id": f"u{i}", "item_id": "nm0", "action": "play", "ts": "2026-01-01T00:00:00"}).encode()


def _bad_item(i: int, t: float, rng: np.random.Generator) -> bytes:
    """A content event the engine refuses (invalid JSON, a schema violation, a corrupt inline image)."""
    k = i % 3
    if k == 0:
        return b'{"item_id": "x", "kind": '
    if k == 1:
        return json.dumps({"item_id": f"badi{i}", "kind": "hologram", "creator_id": "c",
                           "created_at": _iso(t), "text": "x"}).encode()
    junk = base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.bytes(64)).decode()
    return json.dumps({"item_id": f"badi{i}", "kind": "moment", "creator_id": "c", "created_at": _iso(t),
                       "text": "broken picture", "image": {"data_b64": junk}}).encode()


class Producer:
    """Publishes the load at ``plan.rate`` and keeps the history of acknowledged records."""

    def __init__(self, settings: Any, plan: Plan, seed: int, done: threading.Event) -> None:
        from contracts.topics import Topics

        self.s = settings
        self.plan = plan
        self.rng = np.random.default_rng(seed)
        self.topics = Topics.for_prefix(settings.kafka.topic_prefix)
        self.done = done  # set by the nemesis: keep producing until then (and at least plan's counts)
        self.history: list[Acked] = []
        self.failed: list[tuple[str, str]] = []  # (kind, error) of sends without an ack
        self.sent = Counter[str]()
        self._lock = threading.Lock()
        # valid items in the order of their acks, and the ack times (non-decreasing: one I/O thread acks)
        self.item_ids: list[str] = []
        self.item_acked_at: list[float] = []
        self.error: BaseException | None = None

    def _producer(self) -> Any:
        from kafka import KafkaProducer  # type: ignore[import-untyped]

        return KafkaProducer(bootstrap_servers=self.s.kafka.bootstrap_servers, acks="all", enable_idempotence=True,
                             linger_ms=5, retries=2**31 - 1, delivery_timeout_ms=300_000, request_timeout_ms=15_000,
                             max_block_ms=300_000)

    def _send(self, p: Any, topic: str, key: bytes, value: bytes, kind: str, item: str | None = None) -> None:
        self.sent[kind] += 1

        def ok(md: Any) -> None:
            now = time.time()
            with self._lock:
                self.history.append(Acked(topic, md.partition, md.offset, key, value, kind, now))
                if item is not None:
                    self.item_ids.append(item)
                    self.item_acked_at.append(now)

        def failed(exc: BaseException) -> None:
            with self._lock:
                self.failed.append((kind, f"{type(exc).__name__}: {exc}"))

        p.send(topic, key=key, value=value).add_callback(ok).add_errback(failed)

    def publish_items(self, p: Any, start: int, n: int) -> int:
        for i in range(start, start + n):
            self._send(p, self.topics.content_new, f"nm{i}".encode(),
                       json.dumps(_item_event(i, self.rng, time.time())).encode(), "item", item=f"nm{i}")
        return start + n

    def run(self, warm_items: int) -> None:
        try:
            self._run(warm_items)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc

    def _run(self, warm_items: int) -> None:
        plan, rng, t = self.plan, self.rng, self.topics
        p = self._producer()
        next_item = warm_items  # items 0..warm_items-1 were published (and indexed) before the start
        users = [f"u{k}" for k in range(plan.users)]
        # per user event, the chance that a content record comes next: items spread over the user events
        item_every = max(1, plan.user_events // max(1, plan.items - warm_items))
        bad_every = int(round(1 / plan.bad_share)) if plan.bad_share > 0 else 0
        n = 0
        t0 = time.monotonic()
        while n < plan.user_events or next_item < plan.items or not self.done.is_set():
            # pacing: n events by n / rate seconds
            ahead = n / plan.rate - (time.monotonic() - t0)
            if ahead > 0:
                time.sleep(min(ahead, 0.2))
                continue
            now = time.time()
            if bad_every and n % bad_every == bad_every - 1:
                self._send(p, t.user_events, f"bad:{n}".encode(), _bad_user(n, now), "bad_user")
            if n % item_every == 0 and next_item < plan.items:
                if bad_every and next_item % bad_every == bad_every - 1:
                    self._send(p, t.content_new, f"bad:item:{next_item}".encode(),
                               _bad_item(next_item, now, rng), "bad_item")
                next_item = self.publish_items(p, next_item, 1)
            with self._lock:
                n_acked = len(self.item_ids)
                n_settled = bisect.bisect_right(self.item_acked_at, now - 3.0)  # acked 3 s ago or earlier
                n_old = bisect.bisect_right(self.item_acked_at, now - 1.0)  # the rest: acked in the last second
            if not n_acked:
                time.sleep(0.05)
                continue
            if n_old < n_acked and rng.random() < plan.fresh_share:
                lo, hi = n_old, n_acked  # just published: most likely not indexed yet (the retry topic's case)
            else:
                lo, hi = 0, max(n_settled, 1)
            # a skewed choice: recent items are popular
            item = self.item_ids[hi - 1 - min(hi - 1 - lo, int(rng.exponential(max(1.0, (hi - lo) / 4))))]
            user = users[int(rng.integers(len(users)))]
            self._send(p, t.user_events, user.encode(), json.dumps(_user_event(n, user, item, rng, now)).encode(),
                       "user")
            n += 1
        p.flush(timeout=300)
        p.close(timeout=30)


# ------------------------------------------------------------------------------------------------- monitor
@dataclass
class Sample:
    t: float
    handled: int | None  # user-event records handled (sum of fence + 1 over the partitions)
    end: int | None  # user-event records in the log
    retry_handled: int | None
    retry_end: int | None
    indexed: int | None  # content.indexed records (one per indexed item batch member)

    @property
    def lag(self) -> int | None:
        if self.handled is None or self.end is None:
            return None
        return self.end - self.handled


class Monitor:
    """Samples progress every ``every_s``; restarts a worker of the group that exited without being killed by the
    nemesis."""

    def __init__(self, settings: Any, worker: WorkerGroup, every_s: float = 0.5) -> None:
        from contracts.topics import Topics

        self.s = settings
        self.worker = worker
        self.every_s = every_s
        self.topics = Topics.for_prefix(settings.kafka.topic_prefix)
        self.samples: list[Sample] = []
        self.exits: list[dict[str, Any]] = []  # worker exits the nemesis did not cause
        self.hold = threading.Lock()  # held by the nemesis while it kills/restarts the worker
        self.stop = threading.Event()
        self._consumer: Any = None
        self._state: Any = None  # indexing.redis_state.RedisState, see _redis

    def _redis(self) -> Any:
        """A ``RedisState`` over a client with short deadlines (``RedisCluster`` on a cluster), made on first use
        and again after a failed read (a cluster client cannot be made while a slot has no master)."""
        if self._state is None:
            from indexing.redis_state import RedisState
            from infra import clients

            self._state = RedisState(self.s.redis, client=clients.redis_client(
                self.s.redis, socket_timeout=2, socket_connect_timeout=1))
        return self._state

    def _fences(self, topic: str, n: int) -> int | None:
        from indexing.redis_keys import RedisKeys

        rk = RedisKeys(self.s.redis.key_prefix)
        keys = [rk.fence(self.s.stream.app_id, topic, i) for i in range(n)]
        try:
            vals = self._redis().mget(keys)  # split by slot on a cluster: each partition's fence is in its own
        except Exception:  # noqa: BLE001 - Redis down, a master failing over: no sample
            with contextlib.suppress(Exception):
                if self._state is not None:
                    self._state.r.close()
            self._state = None
            return None
        return sum(int(v) + 1 for v in vals if v is not None)

    def _ends(self, topic: str, n: int) -> int | None:
        from kafka import TopicPartition

        try:
            if self._consumer is None:
                from kafka import KafkaConsumer

                # kafka-python 3.x bounds the bootstrap with bootstrap_timeout_ms, 2.x with
                # api_version_auto_timeout_ms
                new = "bootstrap_timeout_ms" in KafkaConsumer.DEFAULT_CONFIG
                bounded = {"bootstrap_timeout_ms" if new else "api_version_auto_timeout_ms": 3000}
                self._consumer = KafkaConsumer(bootstrap_servers=self.s.kafka.bootstrap_servers, group_id=None,
                                               enable_auto_commit=False, request_timeout_ms=3000, **bounded)
            ends = self._consumer.end_offsets([TopicPartition(topic, i) for i in range(n)])
            return int(sum(ends.values()))
        except Exception:  # noqa: BLE001 - broker down or paused: no sample
            with contextlib.suppress(Exception):
                self._consumer.close()
            self._consumer = None
            return None

    def current(self) -> Sample:
        return self.samples[-1] if self.samples else Sample(time.time(), None, None, None, None, None)

    def run(self) -> None:
        parts = self.s.kafka.partitions
        while not self.stop.wait(self.every_s):
            t = self.topics
            self.samples.append(Sample(time.time(), self._fences(t.user_events, parts),
                                       self._ends(t.user_events, parts), self._fences(t.user_events_retry, parts),
                                       self._ends(t.user_events_retry, parts), self._ends(t.content_indexed, parts)))
            if self.hold.acquire(blocking=False):
                try:
                    for w in self.worker.dead():
                        code = w.proc.returncode if w.proc is not None else None
                        self.exits.append({"t": time.time(), "returncode": code, "worker": w.log.stem})
                        w.start()
                finally:
                    self.hold.release()

    def caught_up(self, timeout_s: float, past: int | None = None) -> bool:
        """Wait until the user-event lag is under :data:`CAUGHT_UP_LAG` and more than ``past`` records are handled
        (the engine moved since a fault ended); False after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            cur = self.current()
            moved = past is None or (cur.handled is not None and cur.handled > past)
            if moved and cur.lag is not None and cur.lag <= CAUGHT_UP_LAG:
                return True
            time.sleep(self.every_s)
        return False


# ------------------------------------------------------------------------------------------------- nemesis
@dataclass
class Fault:
    kind: str
    start: float
    end: float = 0.0
    detail: str = ""
    resume_s: float | None = None
    catch_up_s: float | None = None
    failover_s: float | None = None  # a Redis Cluster master kill: until a replica serves its slots


class Nemesis:
    """Does the plan's faults, one at a time, at random times (``seed``)."""

    def __init__(self, stack: Stack, worker: WorkerGroup, monitor: Monitor, plan: Plan, seed: int,
                 done: threading.Event) -> None:
        self.stack = stack
        self.worker = worker
        self.victims = np.random.default_rng(seed + 2)  # which worker of several a worker fault hits
        self.monitor = monitor
        self.plan = plan
        self.rng = np.random.default_rng(seed + 1)
        self.done = done
        self.faults: list[Fault] = []
        self.error: BaseException | None = None
        self.order = fault_order(plan, self.rng)

    def run(self) -> None:
        try:
            past: int | None = None
            for kind in self.order:
                self.monitor.caught_up(180, past)
                time.sleep(float(self.rng.uniform(*self.plan.gap_s)))
                fault = Fault(kind, time.time())
                getattr(self, kind)(fault)
                fault.end = time.time()
                self.faults.append(fault)
                time.sleep(1.0)  # a sample after the fault: what was handled when it ended
                past = self.monitor.current().handled
            self.monitor.caught_up(180, past)
        except BaseException as exc:  # noqa: BLE001 - reported by the main thread
            self.error = exc
        finally:
            self.done.set()

    def worker_kill(self, fault: Fault) -> None:
        with self.monitor.hold:
            members = self.worker.members
            w = members[pick_member(self.victims, len(members))]
            self.worker.kill9(w)
            fault.detail = (f"worker start #{w.starts + 1}" if len(members) == 1
                            else f"{w.log.stem} SIGKILL, its start #{w.starts + 1}")
            w.start()

    def worker_pause(self, fault: Fault) -> None:
        members = self.worker.members
        w = members[pick_member(self.victims, len(members))]
        self.worker.pause([w])
        try:
            time.sleep(self.plan.worker_pause_s)
        finally:
            self.worker.resume([w])
        fault.detail = f"{w.log.stem} SIGSTOP {self.plan.worker_pause_s:g}s"

    def broker_pause(self, fault: Fault) -> None:
        self.stack.signal("kafka", signal.SIGSTOP)
        try:
            time.sleep(self.plan.broker_pause_s)
        finally:
            self.stack.signal("kafka", signal.SIGCONT)
        fault.detail = f"SIGSTOP {self.plan.broker_pause_s:g}s"

    def broker_restart(self, fault: Fault) -> None:
        self.stack.kill9("kafka")
        t = time.time()
        self.stack.up()
        fault.detail = f"SIGKILL, back up in {time.time() - t:.1f}s"

    def _user_events(self) -> str:
        from contracts.topics import Topics

        return Topics.for_prefix(self.stack.settings.kafka.topic_prefix).user_events

    def leader_kill(self, fault: Fault) -> None:
        from infra.stack.kafka import node_service

        node, led = self.stack.busiest_leader(self._user_events())
        self.stack.kill9(node_service(node))
        time.sleep(self.plan.leader_down_s)  # the cluster runs on the other nodes meanwhile
        t = time.time()
        self.stack.up()
        fault.detail = (f"node {node} (leading user.events {led}) SIGKILL, down {self.plan.leader_down_s:g}s, "
                        f"back up in {time.time() - t:.1f}s")

    def leader_pause(self, fault: Fault) -> None:
        from infra.stack.kafka import node_service

        node, led = self.stack.busiest_leader(self._user_events())
        self.stack.signal(node_service(node), signal.SIGSTOP)
        try:
            time.sleep(self.plan.leader_pause_s)
        finally:
            self.stack.signal(node_service(node), signal.SIGCONT)
        fault.detail = f"node {node} (leading user.events {led}) SIGSTOP {self.plan.leader_pause_s:g}s"

    def redis_kill(self, fault: Fault) -> None:
        if self.stack.settings.redis.cluster:
            self.redis_master_kill(fault)
            return
        self.stack.kill9("redis")
        t = time.time()
        self.stack.up()
        fault.detail = f"SIGKILL, AOF reloaded, back up in {time.time() - t:.1f}s"

    def redis_master_kill(self, fault: Fault) -> None:
        """On a Redis Cluster: SIGKILL the master serving the most user-event shards (:func:`master_to_kill`),
        wait until every live node says ``cluster_state:ok`` and routes its slots to a promoted replica
        (:func:`failover_done`), then restart it: ``thaw stack up`` starts the missing node, which rejoins from its
        ``nodes.conf`` as a replica of the new master and resyncs from it."""
        shards = self.stack.settings.kafka.partitions
        victim, served = master_to_kill(self.stack.redis_view(), shards)
        slot = shard_slots(shards)[served[0]]
        self.stack.kill9(self.stack.redis_node_entry(victim.port))
        t_kill = time.time()
        new = None
        while new is None:
            if time.time() - t_kill > self.plan.redis_failover_timeout_s:
                raise BenchError(f"no replica of Redis node {victim.port} took over within "
                                 f"{self.plan.redis_failover_timeout_s:g}s")
            time.sleep(0.2)
            new = failover_done(self.stack.redis_probes(), victim.node_id, slot)
        failover_s = time.time() - t_kill
        t = time.time()
        self.stack.up()
        back_s = time.time() - t
        view = self.stack.redis_view()
        ports = {n.node_id: n.port for n in view}
        rejoined = next((n for n in view if n.node_id == victim.node_id), None)
        role = ("not in the cluster view" if rejoined is None else
                f"a replica of {ports.get(rejoined.master_id or '', rejoined.master_id)}" if rejoined.is_replica
                else "a master")
        fault.detail = (f"master {victim.port} (slots of shards {served}) SIGKILL; replica {new.port} promoted, "
                        f"cluster_state ok after {failover_s:.1f}s; {victim.port} restarted, cluster complete again "
                        f"in {back_s:.1f}s, rejoined as {role}")
        fault.failover_s = round(failover_s, 2)

    def milvus_stop(self, fault: Fault) -> None:
        self.stack.stop("milvus")
        time.sleep(self.plan.milvus_stop_s)
        t = time.time()
        self.stack.up()
        fault.detail = f"stopped {self.plan.milvus_stop_s:g}s, back up in {time.time() - t:.1f}s"


def fault_order(plan: Plan, rng: np.random.Generator) -> list[str]:
    """The plan's faults in a random order drawn from ``rng`` (without worker pauses, the order every earlier
    nemesis run drew for its seed)."""
    kinds = (["worker_kill"] * plan.worker_kills + ["worker_pause"] * plan.worker_pauses
             + ["broker_pause", "broker_restart", "redis_kill", "milvus_stop"]
             + ["leader_kill"] * plan.leader_kills + ["leader_pause"] * plan.leader_pauses)
    return [kinds[int(i)] for i in rng.permutation(len(kinds))]


def shard_slots(shards: int) -> dict[int, int]:
    """The Redis Cluster hash slot of each user-event shard's keys (the slot of its hash tag ``{s<n>}``)."""
    from redis.crc import key_slot

    from indexing.redis_keys import RedisKeys

    return {n: key_slot(RedisKeys.tag(n).encode()) for n in range(shards)}


def _serving(nodes: Sequence[Any], slot: int) -> Any | None:
    """The master (not marked failing) whose slot ranges hold ``slot``."""
    return next((n for n in nodes if n.is_master and not n.failing and any(lo <= slot <= hi for lo, hi in n.slots)),
                None)


def master_to_kill(nodes: Sequence[Any], shards: int) -> tuple[Any, list[int]]:
    """From ``CLUSTER NODES`` (``infra.stack.redis.ClusterNodeLine``): the master serving the slots of the most
    user-event shards, and those shards; a tie goes to the master of the lowest shard. ValueError if no master
    serves any shard."""
    served: dict[str, list[int]] = {}
    by_id: dict[str, Any] = {}
    for shard, slot in shard_slots(shards).items():
        m = _serving(nodes, slot)
        if m is not None:
            served.setdefault(m.node_id, []).append(shard)
            by_id[m.node_id] = m
    if not served:
        raise ValueError(f"no master serves the slots of shards 0..{shards - 1}")
    best = min(served, key=lambda nid: (-len(served[nid]), served[nid][0]))
    return by_id[best], served[best]


def failover_done(probes: Sequence[Any], killed_id: str, slot: int) -> Any | None:
    """The promoted master, once every node that answers (``infra.stack.redis.NodeProbe``) says
    ``cluster_state:ok`` and routes ``slot`` to a master other than ``killed_id``; None until then."""
    live = [p for p in probes if p.answered]
    if not live:
        return None
    new = None
    for p in live:
        if (p.info or {}).get("cluster_state") != "ok":
            return None
        m = _serving(p.nodes, slot)
        if m is None or m.node_id == killed_id:
            return None
        new = m
    return new


def recover_times(faults: list[Fault], samples: list[Sample]) -> None:
    """Each fault's ``resume_s`` (from its end until the handled count grows) and ``catch_up_s`` (until the lag
    is under :data:`CAUGHT_UP_LAG` again)."""
    for f in faults:
        after = [s for s in samples if s.t >= f.end and s.handled is not None]
        if not after:
            continue
        first = after[0].handled
        for s in after:
            if f.resume_s is None and s.handled is not None and first is not None and s.handled > first:
                f.resume_s = round(s.t - f.end, 2)
            if f.catch_up_s is None and s.lag is not None and s.lag <= CAUGHT_UP_LAG:
                f.catch_up_s = round(s.t - f.end, 2)
            if f.resume_s is not None and f.catch_up_s is not None:
                break


# ------------------------------------------------------------------------------------------------- checker
def read_all(settings: Any, topic: str, timeout_s: float = 120.0) -> list[Any]:
    """Every record of ``topic`` (assign + seek to the beginning, read up to the end offsets)."""
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=settings.kafka.bootstrap_servers, group_id=None, enable_auto_commit=False,
                      max_partition_fetch_bytes=settings.kafka.dlq_max_message_bytes, consumer_timeout_ms=1000)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or [])]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        ends = c.end_offsets(tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and any(c.position(tp) < ends[tp] for tp in tps):
            for batch in c.poll(timeout_ms=500).values():
                out.extend(batch)
        return out
    finally:
        c.close()


def check(settings: Any, history: list[Acked], space: str) -> dict[str, Any]:
    """Compare the final states with the history (see the module docstring). Pure reads."""
    from contracts.events import ContentNew, DeadLetter, UserEvent
    from contracts.topics import Topics
    from indexing.milvus_items import ItemIndex
    from indexing.redis_state import RedisState
    from streams.cores.decode import Rejected, decode_event
    from streams.cores.user_update import EventBatch, apply_events

    s = settings
    t = Topics.for_prefix(s.kafka.topic_prefix)
    pos = {(a.topic, a.partition, a.offset): a for a in history}

    # 1. the log holds every acknowledged record (the broker lost none); what the log holds is what counts
    logs = {name: read_all(s, name) for name in (t.user_events, t.content_new, t.user_dlq, t.content_dlq)}
    in_log = {(m.topic, m.partition, m.offset): m for name in (t.user_events, t.content_new) for m in logs[name]}
    broker_lost = sum(1 for k, a in pos.items() if k not in in_log or in_log[k].value != a.value)
    bad_pos = {k for k, m in in_log.items() if (m.key or b"").startswith(b"bad:")}

    # 2. items: every valid item in the log is in Milvus, and found by its own vector
    items: dict[str, ContentNew] = {}
    for k, m in in_log.items():
        if k[0] == t.content_new and k not in bad_pos:
            ev = decode_event(m.value, ContentNew, s.stream.max_event_bytes)
            if not isinstance(ev, Rejected):
                items[ev.item_id] = ev
    from indexing.milvus_items import collection_for

    ix = ItemIndex(s.milvus, dim=384, collection=collection_for(s.milvus, space))
    vecs: dict[str, np.ndarray] = {}
    ids = sorted(items)
    for i in range(0, len(ids), 500):
        vecs.update(ix.get_vectors(ids[i:i + 500]))
    items_missing = [i for i in ids if i not in vecs]
    sample = [ids[int(j)] for j in np.random.default_rng(0).choice(len(ids), size=min(50, len(ids)), replace=False)
              if ids[int(j)] in vecs]
    not_found = 0
    if sample:
        hits = ix.search(np.stack([vecs[i] for i in sample]), 5, consistency="Strong")
        not_found = sum(1 for i, row in zip(sample, hits, strict=True) if i not in [h.item_id for h in row])

    # 3. user events: the offline recomputation over the valid events in the log
    valid: list[UserEvent] = []
    nids = Counter[str]()
    for k, m in sorted(in_log.items()):
        if k[0] != t.user_events or k in bad_pos:
            continue
        ev = decode_event(m.value, UserEvent, s.stream.max_event_bytes)
        if isinstance(ev, Rejected) or ev.item_id not in vecs:
            continue
        valid.append(ev)
        nids[ev.context.get("nid", "")] += 1
    producer_duplicates = sum(n - 1 for n in nids.values() if n > 1)
    store = RedisState(s.redis)
    users = sorted({e.user_id for e in valid})
    got = store.read_states(space, users)
    expected = apply_events({}, EventBatch(users=[e.user_id for e in valid],
                                           item_vecs=np.stack([vecs[e.item_id] for e in valid]),
                                           actions=[e.action.value for e in valid],
                                           ts=np.array([e.ts.timestamp() for e in valid])),
                            s.stream.user_half_life_s) if valid else {}
    lost_events = duplicated = mismatched = 0
    worst: list[dict[str, Any]] = []
    for u in users:
        want, have = expected[u], got.get(u)
        n_have = have.n_events if have is not None else 0
        if n_have < want.n_events:
            lost_events += want.n_events - n_have
        elif n_have > want.n_events:
            duplicated += n_have - want.n_events
        elif have is not None and not (np.allclose(have.vec, want.vec, rtol=1e-3, atol=1e-4)
                                       and abs(have.weight - want.weight) <= 1e-4 * max(1.0, abs(want.weight))):
            mismatched += 1
        if n_have != want.n_events and len(worst) < 10:
            worst.append({"user": u, "expected": want.n_events, "applied": n_have})

    # 4. dead letters: every bad record in a DLQ with a reason, no valid record there
    dl_sources: Counter[tuple[str, int, int]] = Counter()
    no_reason = 0
    classes = Counter[str]()
    for m in logs[t.user_dlq] + logs[t.content_dlq]:
        dl = decode_event(m.value, DeadLetter, s.kafka.dlq_max_message_bytes * 2)
        if isinstance(dl, Rejected):
            no_reason += 1
            continue
        dl_sources[(dl.source_topic, dl.partition, dl.offset)] += 1
        classes[dl.error_class] += 1
        if not dl.error_class or not dl.error:
            no_reason += 1
    bad_missing = sorted(k for k in bad_pos if k not in dl_sources)
    valid_dead = sorted(k for k in dl_sources if k not in bad_pos)
    repeats = sum(n - 1 for n in dl_sources.values() if n > 1)

    lost = broker_lost + lost_events + len(items_missing)
    misfiled = len(bad_missing) + len(valid_dead) + no_reason
    return {
        "lost": lost,
        "duplicated": duplicated,
        "misfiled": misfiled,
        "state_mismatch": mismatched,
        "lost_breakdown": {"acked_records_not_in_log": broker_lost, "user_events_not_applied": lost_events,
                           "items_not_in_milvus": len(items_missing), "items_missing_sample": items_missing[:10]},
        "duplicated_breakdown": {"user_events_applied_twice": duplicated, "worst_users": worst},
        "misfiled_breakdown": {"bad_records_not_dead_lettered": len(bad_missing),
                               "valid_records_dead_lettered": len(valid_dead),
                               "valid_dead_lettered_sample": [list(k) for k in valid_dead[:10]],
                               "dead_letters_without_reason": no_reason},
        "counts": {"acked": len(history), "log_user_events": sum(1 for k in in_log if k[0] == t.user_events),
                   "log_content": sum(1 for k in in_log if k[0] == t.content_new), "bad_records": len(bad_pos),
                   "valid_user_events": len(valid), "users": len(users), "valid_items": len(items),
                   "dead_letters": sum(dl_sources.values()), "dead_letter_repeats": repeats,
                   "dead_letter_classes": dict(classes), "producer_duplicates": producer_duplicates,
                   "search_sample": len(sample), "search_sample_not_found": not_found},
    }


# -------------------------------------------------------------------------------------------------- report
def plot(path: Path, samples: list[Sample], faults: list[Fault], t0: float, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(12, 6.5), sharex=True)
    colors = {"worker_kill": "tab:red", "worker_pause": "tab:pink", "broker_pause": "tab:purple",
              "broker_restart": "tab:brown", "redis_kill": "tab:orange", "milvus_stop": "tab:green",
              "leader_kill": "tab:olive", "leader_pause": "tab:cyan"}
    ts = [s.t - t0 for s in samples]
    rate: list[float] = []
    for a, b in zip(samples, samples[1:], strict=False):
        ok = a.handled is not None and b.handled is not None and b.t > a.t
        rate.append((b.handled - a.handled) / (b.t - a.t) if ok else float("nan"))  # type: ignore[operator]
    ax1.plot(ts[1:], rate, lw=0.8, color="tab:blue")
    ax1.set_ylabel("user events handled / s")
    ax2.plot(ts, [s.lag if s.lag is not None else float("nan") for s in samples], lw=0.8, color="black")
    ax2.set_ylabel("lag (records)")
    ax2.set_xlabel("seconds since the load started")
    seen: set[str] = set()
    for f in faults:
        for ax in (ax1, ax2):
            ax.axvspan(f.start - t0, max(f.end, f.start + 0.5) - t0, color=colors.get(f.kind, "grey"), alpha=0.3,
                       label=f.kind if ax is ax1 and f.kind not in seen else None)
        seen.add(f.kind)
    ax1.legend(loc="upper right", fontsize=8, ncol=5)
    ax1.set_title(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------------------------------- main
def run(plan: Plan, seed: int, out: Path, home: Path, ports: Ports, *, mode: str, keep_stack: bool = False,
        workers: int = 1, partitions: int | None = None, log: Callable[[str], None] = print) -> dict[str, Any]:
    os.environ.update(ports.env(home))
    if partitions is not None:  # the topics' partition count (this process creates them; the workers read it)
        os.environ["THAW_KAFKA__PARTITIONS"] = str(partitions)
    from contracts.topics import Topics
    from encoders.registry import ModelRegistry
    from encoders.text import ensure_minilm
    from infra.settings import load_settings
    from infra.topics import ensure_topics

    t_start = time.time()
    base = load_settings()
    if home.exists():  # a previous run's stack: stop it and start from empty data
        with contextlib.suppress(Exception):
            Stack(base).down()
        for sub in ("kafka", "redis", "redis-cluster", "milvus", "logs", "state.json", "work"):
            p = home / sub
            if p.is_dir() and not p.is_symlink():
                shutil.rmtree(p, ignore_errors=True)
            else:
                p.unlink(missing_ok=True)
    home.mkdir(parents=True, exist_ok=True)
    _share_kafka_jars(base)
    ns = f"nemesis_s{seed}_{int(t_start)}"
    s = base.namespaced(ns)
    stack = Stack(s)
    redis_ports = ports.redis_ports()
    log(f"stack up under {home} (kafka {ports.kafka}, redis "
        f"{f'cluster {redis_ports[0]}-{redis_ports[-1]}' if ports.redis_cluster else ports.redis}, "
        f"milvus {ports.milvus})")
    stack.up()
    ensure_minilm(ModelRegistry(s.models.dir))
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, topics)
    work = home / "work"
    work.mkdir(exist_ok=True)
    worker = WorkerGroup(s, work, workers, loglevel="warning", data_dir=work / "faust", extra_env={
        **ports.env(home), "THAW_STREAM__SPACE": "text",
        # no valid event may time out waiting for its item (Milvus is down for a while): the check expects each
        # valid event applied, so the unknown-item grace is longer than any fault
        "THAW_STREAM__UNKNOWN_ITEM_GRACE_S": "900"})
    done = threading.Event()
    producer = Producer(s, plan, seed, done)
    monitor = Monitor(s, worker)
    nemesis = Nemesis(stack, worker, monitor, plan, seed, done)
    result: dict[str, Any] = {}
    try:
        worker.start()
        worker.wait_ready(topics.user_events, s.kafka.partitions)
        from kafka import KafkaProducer

        warm = min(50, plan.items // 4)
        p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", enable_idempotence=True)
        producer.publish_items(p, 0, warm)
        p.flush()
        p.close()
        mon = threading.Thread(target=monitor.run, name="monitor", daemon=True)
        mon.start()
        wait_for(lambda: (monitor.current().indexed or 0) >= warm, 120, "the first items indexed",
                 worker.members[0])
        log(f"worker ready; load {plan.user_events} user events at {plan.rate:g}/s, {plan.items} items; "
            f"faults {nemesis.order}")
        t_load = time.time()
        prod = threading.Thread(target=producer.run, args=(warm,), name="producer", daemon=True)
        nem = threading.Thread(target=nemesis.run, name="nemesis", daemon=True)
        prod.start()
        nem.start()
        while nem.is_alive() or prod.is_alive():
            nem.join(timeout=10)
            prod.join(timeout=0.1 if nem.is_alive() else 10)
            cur = monitor.current()
            log(f"  t={time.time() - t_load:6.0f}s acked={len(producer.history)} handled={cur.handled} "
                f"lag={cur.lag} faults={len(nemesis.faults)}/{len(nemesis.order)}")
            if producer.error is not None or nemesis.error is not None:
                break
        for who in (producer, nemesis):
            if who.error is not None:
                raise BenchError(f"{type(who).__name__} failed: {who.error!r}") from who.error
        t_load_end = time.time()
        log("load and faults done; waiting for the worker to handle everything")

        wait_for(lambda: all_handled(s, monitor), 600, "the worker to handle every record", None, poll_s=0.5)
        time.sleep(3.0)  # the content agent's last batch (content is not fenced: give its upsert a moment)
        t_drained = time.time()
        monitor.stop.set()
        mon.join(timeout=10)
        worker.stop()
        log("checking")
        space = served_space(s)
        result = check(s, producer.history, space)
        recover_times(nemesis.faults, monitor.samples)
        history_file = work / "history.jsonl.gz"
        with gzip.open(history_file, "wt", encoding="utf-8") as fh:
            for a in producer.history:
                fh.write(json.dumps({"topic": a.topic, "partition": a.partition, "offset": a.offset,
                                     "key": a.key.decode(errors="replace"), "value": a.value.decode(errors="replace"),
                                     "kind": a.kind, "acked_at": round(a.t, 3)}) + "\n")
        done_kinds = Counter(f.kind for f in nemesis.faults)
        result = {
            **{k: result[k] for k in ("lost", "duplicated", "misfiled", "state_mismatch")},
            "seed": seed,
            "mode": mode,
            "workers": workers,
            "brokers": s.kafka.brokers,
            "redis": "cluster" if s.redis.cluster else "single",
            "partitions": s.kafka.partitions,
            "plan": asdict(plan),
            "faults_done": dict(done_kinds),
            "faults": [asdict(f) | {"start_s": round(f.start - t_load, 2), "end_s": round(f.end - t_load, 2)}
                       for f in nemesis.faults],
            "recover_s": _recover_summary(nemesis.faults),
            "worker_exits_on_its_own": monitor.exits,
            "worker_starts": worker.starts,
            "producer": {"sent": dict(producer.sent), "acked": len(producer.history),
                         "send_failures": len(producer.failed), "send_failure_sample": producer.failed[:5]},
            **{k: v for k, v in result.items() if k not in ("lost", "duplicated", "misfiled", "state_mismatch")},
            "wall_s": {"total": round(time.time() - t_start, 1), "load_and_faults": round(t_load_end - t_load, 1),
                       "drain": round(t_drained - t_load_end, 1)},
            "timeline": [{"t": round(x.t - t_load, 2), "handled": x.handled, "lag": x.lag,
                          "retry_handled": x.retry_handled, "retry_end": x.retry_end} for x in monitor.samples[::2]],
            "history_file": str(history_file),
            "worker_log_issues": worker.log_issues(),
            "ports": asdict(ports),
            "machine": machine_info(),
        }
        write_json(out, result)
        plot(out.with_suffix(".png"), monitor.samples, nemesis.faults, t_load,
             f"nemesis seed {seed}: lost {result['lost']}, duplicated {result['duplicated']}, "
             f"misfiled {result['misfiled']}; {sum(done_kinds.values())} faults")
        log(f"lost={result['lost']} duplicated={result['duplicated']} misfiled={result['misfiled']} "
            f"state_mismatch={result['state_mismatch']} faults={dict(done_kinds)} -> {out}")
        return result
    finally:
        done.set()
        monitor.stop.set()
        worker.close()
        if not keep_stack:
            with contextlib.suppress(Exception):
                stack.down()


def all_handled(s: Any, monitor: Monitor) -> bool:
    """Every record the engine consumes is handled: no user-event lag (the fences), the retry topic drained,
    and (content is not fenced) the group's committed offsets at the end of ``content.new``."""
    from contracts.topics import Topics
    from infra.lag import consumer_lag

    cur = monitor.current()
    if not (cur.lag == 0 and cur.retry_handled is not None and cur.retry_end is not None
            and cur.retry_handled >= cur.retry_end):
        return False
    try:
        rows = consumer_lag(s, [s.stream.app_id])
    except Exception:  # noqa: BLE001 - the broker is busy: ask again
        return False
    content = Topics.for_prefix(s.kafka.topic_prefix).content_new
    return all(r.lag == 0 for r in rows if r.topic == content)


def served_space(s: Any) -> str:
    from indexing.redis_state import RedisState

    space = RedisState(s.redis).current_space()
    if space is None:
        raise BenchError("the worker never recorded its vector space in Redis")
    return space


def _recover_summary(faults: list[Fault]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for kind in FAULT_KINDS:
        fs = [f for f in faults if f.kind == kind]
        if not fs:
            continue
        res = [f.resume_s for f in fs if f.resume_s is not None]
        cat = [f.catch_up_s for f in fs if f.catch_up_s is not None]
        out[kind] = {"n": len(fs), "resume_s_max": max(res) if res else None,
                     "resume_s_median": float(np.median(res)) if res else None,
                     "catch_up_s_max": max(cat) if cat else None,
                     "catch_up_s_median": float(np.median(cat)) if cat else None}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.nemesis", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the short seeded version (~10k events, a few faults)")
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--out", type=Path, default=None, help="JSON path (PNG beside it); default "
                    "benchmarks/results/nemesis.json (full) or /tmp/thaw-nemesis-quick.json (quick)")
    ap.add_argument("--home", type=Path, default=DEFAULT_HOME, help="the nemesis stack's home (wiped at start)")
    ap.add_argument("--free-ports", action="store_true", help="pick free ports instead of the 29xxx defaults")
    ap.add_argument("--events", type=int, default=None, help="override the plan's user-event count")
    ap.add_argument("--keep-stack", action="store_true", help="leave the stack running afterwards")
    ap.add_argument("--workers", type=int, default=1, help="worker processes in the consumer group (default 1); "
                    "with several, the worker faults hit a random one and some pause it past the session timeout")
    ap.add_argument("--brokers", type=int, default=1, choices=(1, 3), help="Kafka nodes (default 1); 3: topics "
                    "replicated 3 times (2 in sync), and the plan kills and pauses the broker that leads partitions")
    ap.add_argument("--redis-cluster", action="store_true", help="run its Redis as a Redis Cluster (3 masters + 3 "
                    "replicas, 12 ports from the Redis port); redis_kill then kills the master of the most "
                    "user-event shards, waits for its replica's promotion and restarts it")
    ap.add_argument("--partitions", type=int, default=None, help="partitions per topic (default: the settings' "
                    "4 with one worker, 8 with several)")
    a = ap.parse_args(argv)
    if a.workers < 1:
        ap.error("--workers must be >= 1")
    plan = QUICK if a.quick else FULL
    if a.events is not None:
        plan = Plan(**{**asdict(plan), "user_events": a.events})
    if a.workers > 1:
        plan = Plan(**{**asdict(plan), "worker_pauses": 1 if a.quick else 3})
    partitions = a.partitions if a.partitions is not None else (8 if a.workers > 1 else None)
    if a.brokers > 1:
        plan = Plan(**{**asdict(plan), "leader_kills": 1 if a.quick else 3, "leader_pauses": 1 if a.quick else 3})
    name = "nemesis" if a.workers == 1 else f"nemesis_workers{a.workers}"
    if a.brokers > 1:
        name += f"_brokers{a.brokers}"
    if a.redis_cluster:
        name += "_redis_cluster"
    out = a.out or (Path(f"/tmp/thaw-{name.replace('_', '-')}-quick.json") if a.quick else DEFAULT_OUT / f"{name}.json")
    ports = (free_ports(a.seed, a.brokers, a.redis_cluster) if a.free_ports
             else replace(DEFAULT_PORTS, brokers=a.brokers, redis_cluster=a.redis_cluster))
    res = run(plan, a.seed, out, a.home, ports, mode="quick" if a.quick else "full", keep_stack=a.keep_stack,
              workers=a.workers, partitions=partitions)
    return 0 if res["lost"] == res["duplicated"] == res["misfiled"] == res["state_mismatch"] == 0 else 1


if __name__ == "__main__":
    raise SystemExit(main())
