"""End to end: a replicated Kafka loses the broker that leads the most ``user.events`` partitions mid-stream.

Its own 3-node KRaft cluster (``kafka.brokers`` = 3, free ports, a temporary home; the session's Redis and Milvus
reused), topics with 3 replicas and ``min.insync.replicas`` 2, a real ``thaw worker`` and the nemesis producer
(kafka-python, ``acks=all``, idempotent) publishing user events and posts (2% bad) with the history of every ack.
A third of the way in, the broker leading the most ``user.events`` partitions is killed with SIGKILL; while it is
down, the worker must go on handling records published after the kill on EVERY partition (leadership moved to a
replica: with one replica those partitions would stall until the broker is back, see
:func:`kill_the_busiest_leader`'s ``replication_factor``); then it is restarted, the stream finishes, and the
nemesis checker (:func:`benchmarks.nemesis.check`) compares the final Redis and Milvus states with the history:
nothing lost, duplicated or misfiled.
"""

from __future__ import annotations

import contextlib
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from benchmarks.nemesis import Plan, Producer, check
from contracts.topics import Topics
from encoders.registry import ModelRegistry
from encoders.text import ensure_minilm
from indexing.redis_state import FenceKey, RedisState
from infra.lag import consumer_lag
from infra.settings import Settings
from infra.stack import LocalStack
from infra.stack.kafka import busiest_leader, partition_leaders
from infra.stack.state import pid_alive, signal_process
from tests.e2e.conftest import running_worker, wait_for

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

#: a short stream: ~60 s of user events at 60/s with posts among them
PLAN = Plan(user_events=3600, items=240, users=200, rate=60.0, worker_kills=0, broker_pause_s=0.0,
            milvus_stop_s=0.0, gap_s=(0.0, 0.0))
#: records every partition must see handled past its end offset at the kill, while the broker is down
PROGRESS = 10


def _free_run(n: int) -> int:
    """The first of ``n`` consecutive loopback ports nothing listens on."""
    rng = np.random.default_rng()
    for _ in range(200):
        base = int(rng.integers(40000, 49000))
        ok = True
        for port in range(base, base + n):
            with socket.socket() as sock:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                try:
                    sock.bind(("127.0.0.1", port))
                except OSError:
                    ok = False
                    break
        if ok:
            return base
    raise RuntimeError("no free port run")


def cluster_settings(base: Settings, home: Path, replication_factor: int) -> Settings:
    """``base`` (the session's Redis and Milvus) with a 3-node Kafka on free ports under ``home``."""
    port = _free_run(6)
    jars = base.stack.home / "kafka-libs"
    home.mkdir(parents=True, exist_ok=True)
    if (jars / base.kafka.version / ".complete").exists():
        (home / "kafka-libs").symlink_to(jars)  # the session's jars: no Maven run
    d = base.model_dump()
    d["kafka"].update(bootstrap_servers=f"127.0.0.1:{port}", controller_port=port + 1, brokers=3,
                      replication_factor=replication_factor, min_insync_replicas=None)
    d["stack"]["home"] = home
    return Settings.model_validate(d)


def _fences(s: Settings, topic: str) -> dict[int, int]:
    keys = [FenceKey(s.stream.app_id, topic, p) for p in range(s.kafka.partitions)]
    got = RedisState(s.redis).read_fences(keys)
    return {k.partition: v for k, v in got.items()}


def _ends(s: Settings, topic: str) -> dict[int, int]:
    from kafka import KafkaConsumer, TopicPartition

    c = KafkaConsumer(bootstrap_servers=s.kafka.bootstrap_servers, group_id=None, enable_auto_commit=False,
                      request_timeout_ms=10_000)
    try:
        got = c.end_offsets([TopicPartition(topic, p) for p in range(s.kafka.partitions)])
        return {tp.partition: int(o) for tp, o in got.items()}
    finally:
        c.close()


def _drained(s: Settings, t: Topics) -> bool:
    """Every user event and retry handled (their fences at the log ends) and content.new's group lag 0."""
    try:
        for topic in (t.user_events, t.user_events_retry):
            ends, fences = _ends(s, topic), _fences(s, topic)
            if any(fences[p] + 1 < end for p, end in ends.items() if end > 0):
                return False
        rows = consumer_lag(s, [s.stream.app_id])
    except Exception:  # noqa: BLE001 - a broker still electing leaders: ask again
        return False
    return all(r.lag == 0 for r in rows if r.topic == t.content_new)


def _topic_replication(s: Settings, topic: str) -> tuple[set[int], str | None]:
    """(replica counts of the topic's partitions, its min.insync.replicas)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    from infra import clients

    admin = clients.kafka_admin(s.kafka)
    try:
        desc = admin.describe_topics([topic])
        counts = {len(p.get("replicas", p.get("replica_nodes", []))) for d in desc for p in d["partitions"]}
        cfg = admin.describe_configs([ConfigResource(ConfigResourceType.TOPIC, topic, {"min.insync.replicas": None})])
    finally:
        admin.close()
    value = ((cfg.get("topic") or {}).get(topic) or {}).get("min.insync.replicas", {}).get("value")
    return counts, value


def kill_the_busiest_leader(base: Settings, name: str, tmp: Path, replication_factor: int = 3) -> dict[str, Any]:
    """The whole scenario (the module docstring); what it saw. ``replication_factor`` 1 shows what the replicas
    buy: the dead broker's partitions stall until it is back."""
    cluster = cluster_settings(base, tmp / "stack", replication_factor)
    stack = LocalStack(cluster)
    seen: dict[str, Any] = {}
    try:
        t0 = time.monotonic()
        kafka = next(x for x in stack.up() if x.name == "kafka")
        seen["stack_up_s"] = round(time.monotonic() - t0, 1)
        # what `up` reports is the probe that found the new nodes ready, not the one before they started
        assert kafka.healthy and kafka.detail.startswith("Kafka cluster") and "(3 broker(s))" in kafka.detail, kafka
        s = cluster.namespaced(name)
        t = Topics.for_prefix(s.kafka.topic_prefix)
        ensure_minilm(ModelRegistry(s.models.dir))
        env = {"THAW_KAFKA__BOOTSTRAP_SERVERS": s.kafka.bootstrap_servers, "THAW_KAFKA__BROKERS": "3",
               "THAW_KAFKA__CONTROLLER_PORT": str(s.kafka.controller_port),
               "THAW_KAFKA__REPLICATION_FACTOR": str(replication_factor),
               # every valid event waits for its item however long the outage (the checker expects each applied)
               "THAW_STREAM__UNKNOWN_ITEM_GRACE_S": "900"}
        with contextlib.contextmanager(running_worker)(s, tmp / "worker.log", env) as worker:
            seen["replicas"], seen["min_insync"] = _topic_replication(s, t.user_events)
            done = threading.Event()
            producer = Producer(s, PLAN, seed=5, done=done)
            from kafka import KafkaProducer

            warm = 30
            p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", enable_idempotence=True)
            producer.publish_items(p, 0, warm)
            p.flush()
            p.close()
            wait_for(lambda: sum(_ends(s, t.content_indexed).values()) >= warm, 120, "the first items indexed",
                     worker, poll_s=0.5)
            run = threading.Thread(target=producer.run, args=(warm,), name="producer", daemon=True)
            run.start()
            wait_for(lambda: len(producer.history) >= PLAN.user_events // 3, 300, "a third of the stream acked",
                     worker, poll_s=0.2)

            leaders = partition_leaders(s, t.user_events)
            victim = busiest_leader(leaders)
            assert victim is not None, leaders
            pid = stack.kafka_node_pid(victim)
            assert pid is not None, f"node {victim} is not one this stack started"
            ends0 = _ends(s, t.user_events)
            signal_process(pid, signal.SIGKILL)
            t_kill = time.monotonic()
            wait_for(lambda: not pid_alive(pid), 30, f"node {victim} to die")
            seen.update(victim=victim, leaders_before=leaders, ends_at_kill=ends0)

            def progressed() -> list[int]:
                fences = _fences(s, t.user_events)
                return [p for p, end in ends0.items() if fences[p] + 1 < end + PROGRESS]

            deadline = time.monotonic() + 120
            stalled = progressed()
            while stalled and time.monotonic() < deadline and worker.alive():
                time.sleep(0.5)
                stalled = progressed()
            seen["stalled_partitions"] = stalled
            seen["all_partitions_moved_on_s"] = None if stalled else round(time.monotonic() - t_kill, 1)
            with contextlib.suppress(Exception):
                seen["leaders_while_down"] = partition_leaders(s, t.user_events)

            t_up = time.monotonic()
            stack.up()  # restarts the killed node
            seen["down_s"] = round(time.monotonic() - t_kill, 1)
            seen["restart_s"] = round(time.monotonic() - t_up, 1)
            time.sleep(5.0)
            done.set()
            run.join(timeout=300)
            assert not run.is_alive(), "the producer did not finish"
            if producer.error is not None:
                raise producer.error
            t_end = time.monotonic()
            drained = _drained(s, t)
            while not drained and time.monotonic() < t_end + 300 and worker.alive():
                time.sleep(0.5)
                drained = _drained(s, t)
            seen["drained_s"] = round(time.monotonic() - t_end, 1) if drained else None
            seen["worker_log"] = worker.log_tail(15)
            if not drained:  # what the checker finds then is not the final state: report the stall
                return seen
            time.sleep(3.0)  # the content agent's last upsert (content is not fenced)
            worker.stop()
            space = RedisState(s.redis).current_space()
            assert space is not None
            seen["check"] = check(s, producer.history, space)
            seen["producer_failed"] = producer.failed[:5]
            seen["producer_sent"] = dict(producer.sent)
    finally:
        seen["stack_down"] = [st.detail for st in stack.down()]
    return seen


def test_killing_the_broker_that_leads_the_most_user_event_partitions_loses_and_repeats_nothing(
    stack_settings, unique_name, tmp_path  # noqa: ANN001
):
    seen = kill_the_busiest_leader(stack_settings, unique_name, tmp_path)
    print({k: v for k, v in seen.items() if k not in ("check", "worker_log")})
    assert seen["replicas"] == {3} and seen["min_insync"] == "2", seen
    assert not seen["stalled_partitions"], (
        f"partitions {seen['stalled_partitions']} made no progress while node {seen['victim']} was down; "
        f"leaders then {seen.get('leaders_while_down')}\n{seen['worker_log']}")
    assert seen["drained_s"] is not None, f"the worker did not handle every record:\n{seen['worker_log']}"
    res = seen["check"]
    assert all(leader not in (-1, seen["victim"]) for leader in seen["leaders_while_down"].values()), seen
    summary = {k: res[k] for k in ("lost", "duplicated", "misfiled", "state_mismatch")}
    assert summary == {"lost": 0, "duplicated": 0, "misfiled": 0, "state_mismatch": 0}, {
        k: res[k] for k in ("lost_breakdown", "duplicated_breakdown", "misfiled_breakdown", "counts")}
    assert seen["producer_failed"] == []
    counts = res["counts"]
    assert counts["valid_user_events"] >= PLAN.user_events * 0.9 and counts["bad_records"] > 0, counts
    assert counts["producer_duplicates"] == 0, counts
