"""A real Redis Cluster from ``LocalStack``: 3 masters + 3 replicas of Debian's redis-server on free ports under a
temporary home (never the shared stack's Redis on 16379), reached through ``infra.clients.redis_client``; a master
killed with SIGKILL is replaced by its replica and the data stays readable through the client.

Kafka and Milvus are the session stack's (found healthy, reused, left alone by ``down``)."""

from __future__ import annotations

import random
import signal
import time
import uuid
from pathlib import Path

import pytest
from pydantic import SecretStr

from infra import clients
from infra.settings import Settings
from infra.stack import KAFKA, MILVUS, REDIS, LocalStack, StackError, probe_redis
from infra.stack import redis as stack_redis
from infra.stack.common import port_bindable, port_open
from infra.stack.state import StateFile, cmdline, pid_alive, signal_process

pytestmark = pytest.mark.integration

#: how long a killed master may take to be replaced and its keys readable again through the client (node timeout
#: 5 s, then the failure report, the election, the client's topology refresh: ~9 s measured)
FAILOVER_BOUND_S = 30.0


def _free_run(n: int) -> int:
    rng = random.Random()
    for _ in range(400):
        base = rng.randrange(40000, 50000 - n)
        if all(port_bindable("127.0.0.1", p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no run of free ports in 40000-49999")


@pytest.fixture
def cluster_settings(stack_settings: Settings, tmp_path: Path) -> Settings:
    base = _free_run(2 * stack_redis.CLUSTER_NODES)
    assert base != stack_settings.redis.port
    return stack_settings.model_copy(update={
        "redis": stack_settings.redis.model_copy(update={
            "port": base, "cluster": True, "password": SecretStr("pw-" + uuid.uuid4().hex)}),
        "stack": stack_settings.stack.model_copy(update={"home": tmp_path / "cluster-stack"}),
    })


def _read_all(client: object, keys: dict[str, bytes]) -> bool:
    return all(client.get(k) == v for k, v in keys.items())  # type: ignore[attr-defined]


def test_redis_cluster_up_use_failover_down(stack_settings: Settings, cluster_settings: Settings) -> None:
    from redis.cluster import RedisCluster
    from redis.exceptions import ClusterCrossSlotError, RedisClusterException, RedisError

    shared = clients.redis_client(stack_settings.redis)
    shared_pid_before = shared.info("server")["process_id"]
    rs = cluster_settings.redis
    ports = stack_redis.cluster_ports(rs)
    home = cluster_settings.stack.home
    home.mkdir(parents=True)
    stack = LocalStack(cluster_settings)
    state = StateFile(home)
    client = None
    try:
        # --- up: six nodes, formed once, complete
        statuses = {st.name: st for st in stack.up()}
        redis_up = statuses[REDIS]
        assert redis_up.healthy and redis_up.managed, redis_up
        assert "6/6 nodes up (3 masters, 3 replicas), 16384/16384 slots ok" in redis_up.detail, redis_up.detail
        assert not statuses[KAFKA].managed and not statuses[MILVUS].managed  # the session's, reused
        print(f"cluster up in {redis_up.startup_s:.1f} s: {redis_up.detail}")
        pids = {p: state.managed_pid(stack_redis.node_entry(p)) for p in ports}
        assert all(pids.values()), pids
        for port, pid in pids.items():
            conf = home / "redis-cluster" / str(port) / "redis.conf"
            assert (conf.stat().st_mode & 0o777) == 0o600
            assert str(conf) in cmdline(pid or 0)
            assert rs.password is not None and rs.password.get_secret_value() not in cmdline(pid or 0)
            assert (home / "redis-cluster" / str(port) / "nodes.conf").exists()
        for probe in stack_redis.probe_nodes(rs):
            assert probe.info is not None and probe.info["cluster_state"] == "ok", probe
            assert probe.int_info("cluster_slots_ok") == stack_redis.CLUSTER_SLOTS

        # --- a second up leaves the formed cluster alone
        create_log = home / "logs" / "redis-cluster-create.log"
        created = create_log.stat().st_mtime_ns
        started = time.monotonic()
        again = {st.name: st for st in stack.up()}[REDIS]
        assert again.healthy and time.monotonic() - started < 15
        assert {p: state.managed_pid(stack_redis.node_entry(p)) for p in ports} == pids
        assert create_log.stat().st_mtime_ns == created  # redis-cli --cluster create did not run again
        status = {st.name: st for st in stack.status()}[REDIS]
        assert status.healthy and "6/6 nodes up" in status.detail, status

        # --- a single-mode probe of a cluster node says what it is
        single = cluster_settings.model_copy(update={"redis": rs.model_copy(update={"cluster": False})})
        healthy, detail = probe_redis(single, 3.0)
        assert not healthy and "Redis Cluster node" in detail and "THAW_REDIS__CLUSTER=1" in detail
        with pytest.raises(StackError, match="Redis Cluster started by thaw stack runs"):  # no mixing of modes
            LocalStack(single)._ensure(REDIS)

        # --- the engine's client: keys in different slots on all three masters
        client = clients.redis_client(rs)
        assert isinstance(client, RedisCluster)
        keys = {f"thaw:cluster-test:{i}": f"v{i}".encode() for i in range(300)}
        for k, v in keys.items():
            assert client.set(k, v)
        assert _read_all(client, keys)
        owners = {client.get_node_from_key(k).port for k in keys}
        assert len(owners) == 3 and owners <= set(ports), owners
        a, b = next((a, b) for a in keys for b in keys if client.keyslot(a) != client.keyslot(b))
        with pytest.raises(RedisClusterException, match="same key slot"):  # redis-py refuses it itself
            client.mget(a, b)
        with pytest.raises(ClusterCrossSlotError, match="hash to the same slot"):  # and the server: CROSSSLOT
            client.execute_command("MGET", a, b, target_nodes=client.get_node_from_key(a))
        assert client.mget(a, a) == [keys[a], keys[a]]

        # --- SIGKILL the master of ``a``: its replica takes over, the keys stay readable through the client
        victim = client.get_node_from_key(a)
        assert client.execute_command("WAIT", 1, 5000, target_nodes=victim) >= 1  # its replica has the writes
        seen_by_victim = stack_redis.probe_node(rs, victim.port, 3.0).nodes
        victim_id = next(n.node_id for n in seen_by_victim if "myself" in n.flags)
        replica_ports = {n.port for n in seen_by_victim if n.master_id == victim_id}
        assert len(replica_ports) == 1, replica_ports
        victim_pid = pids[victim.port]
        assert victim_pid is not None
        signal_process(victim_pid, signal.SIGKILL)
        killed_at = time.monotonic()
        while pid_alive(victim_pid):
            assert time.monotonic() - killed_at < 10
            time.sleep(0.05)
        value, errors = None, []
        while time.monotonic() - killed_at < FAILOVER_BOUND_S:
            try:
                value = client.get(a)
                break
            except (RedisError, RedisClusterException) as exc:
                errors.append(type(exc).__name__)
                time.sleep(0.2)
        took = time.monotonic() - killed_at
        print(f"master {victim.port} killed: {a} readable again after {took:.1f} s ({len(errors)} failed reads: "
              f"{sorted(set(errors))})")
        assert value == keys[a], f"not readable {FAILOVER_BOUND_S} s after the kill: {errors[-5:]}"
        promoted = client.get_node_from_key(a)
        assert promoted.port in replica_ports
        assert _read_all(client, keys)  # every key, on every master, the promoted one included
        assert client.set(a, b"after-failover") and client.get(a) == b"after-failover"
        degraded = {st.name: st for st in stack.status()}[REDIS]
        assert degraded.healthy and "5/6 nodes up" in degraded.detail and f"down: {victim.port}" in degraded.detail

        # --- up again restarts the killed node, which rejoins as a replica
        healed = {st.name: st for st in stack.up()}[REDIS]
        assert healed.healthy and "6/6 nodes up (3 masters, 3 replicas)" in healed.detail, healed.detail
        rejoined = stack_redis.probe_node(rs, victim.port, 3.0)
        assert rejoined.role == "slave", rejoined
        assert _read_all(client, {k: v for k, v in keys.items() if k != a})
    finally:
        if client is not None:
            client.close()
        running = {p: state.managed_pid(stack_redis.node_entry(p)) for p in ports}
        stopped = {st.name: st for st in stack.down()}
    # --- down stops exactly the six nodes; the session stack's Redis is untouched
    assert "stopped 6 Redis Cluster node(s)" in stopped[REDIS].detail, stopped[REDIS]
    assert not any(pid_alive(pid) for pid in running.values() if pid), running
    assert not stack_redis.cluster_recorded(state)
    assert not any(port_open("127.0.0.1", p) for p in ports)
    assert shared.ping() and shared.info("server")["process_id"] == shared_pid_before
    shared.close()
