"""The local Redis Cluster's pure parts (node config, the create command, CLUSTER INFO / NODES parsing, formation
and health), the cluster client's options, and the mode guards of ``LocalStack`` (with sleeper processes standing in
for recorded servers: no Redis runs here)."""

from __future__ import annotations

import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from infra import clients
from infra.settings import KafkaSettings, MilvusSettings, RedisSettings, Settings, StackSettings, load_settings
from infra.stack import REDIS, LocalStack, StackError
from infra.stack import redis as stack_redis
from infra.stack.common import port_bindable
from infra.stack.redis import (
    CLUSTER_SLOTS,
    NodeProbe,
    assess_cluster,
    cluster_create_args,
    cluster_node_conf,
    cluster_ports,
    formation,
    node_entry,
    parse_cluster_info,
    parse_cluster_nodes,
)
from infra.stack.state import Launch, StateFile, pid_alive, spawn, terminate

# ------------------------------------------------------------------------------------------------ samples

# ids made up for these tests; the layout is Redis 7's
M1, M2, M3 = "a" * 40, "b" * 40, "c" * 40
R1, R2, R3 = "d" * 40, "e" * 40, "f" * 40


def _nodes_text(*, failed_master: bool = False) -> str:
    """CLUSTER NODES of a 3+3 cluster on 7000..7005 (bus 7006..7011) as node 7000 sees it; ``failed_master``: 7001
    was killed and its replica 7004 took its slots over."""
    m2 = (f"{M2} 127.0.0.1:7001@7007 master,fail - 1700000000000 1700000000000 2 disconnected"
          if failed_master else f"{M2} 127.0.0.1:7001@7007 master - 0 1700000001000 2 connected 5461-10922")
    r2 = (f"{R2} 127.0.0.1:7004@7010 master - 0 1700000001000 7 connected 5461-10922"
          if failed_master else f"{R2} 127.0.0.1:7004@7010 slave {M2} 0 1700000001000 2 connected")
    return "\n".join([
        f"{M1} 127.0.0.1:7000@7006,host-a myself,master - 0 1700000000500 1 connected 0-5460",
        m2,
        f"{M3} 127.0.0.1:7002@7008 master - 0 1700000001000 3 connected 10923-16383 [10923->-{M1}]",
        f"{R1} 127.0.0.1:7003@7009 slave {M1} 0 1700000001000 1 connected",
        r2,
        f"{R3} 127.0.0.1:7005@7011 slave {M3} 0 1700000001000 3 connected",
    ]) + "\n"


def _info(state: str = "ok", assigned: int = CLUSTER_SLOTS, ok: int = CLUSTER_SLOTS, known: int = 6) -> dict[str, str]:
    return {"cluster_state": state, "cluster_slots_assigned": str(assigned), "cluster_slots_ok": str(ok),
            "cluster_known_nodes": str(known)}


def _healthy(**over: object) -> list[NodeProbe]:
    nodes = tuple(parse_cluster_nodes(_nodes_text()))
    probes = []
    for i, port in enumerate(range(7000, 7006)):
        role = "master" if i < 3 else "slave"
        probes.append(NodeProbe(port, True, _info(), nodes, role=role, link="up" if role == "slave" else ""))
    return probes


# ------------------------------------------------------------------------------------------------ config


def test_node_conf_hardening_and_cluster_mode(tmp_path: Path) -> None:
    redis = RedisSettings(port=7000, cluster=True)
    conf = cluster_node_conf(redis, 7002, tmp_path / "7002", tmp_path / "logs").splitlines()
    for line in ("port 7002", "bind 127.0.0.1", "protected-mode yes", "appendonly yes", "appendfsync everysec",
                 'save ""', "cluster-enabled yes", "cluster-config-file nodes.conf", "cluster-port 7008",
                 "cluster-node-timeout 5000", "cluster-require-full-coverage yes", "set-proc-title no",
                 f"dir {tmp_path / '7002'}", f"logfile {tmp_path / 'logs' / 'redis-cluster-7002.log'}"):
        assert line in conf, line
    assert not [line for line in conf if line.startswith(("requirepass", "masterauth"))]


def test_node_conf_with_a_password_sets_it_for_clients_and_replicas(tmp_path: Path) -> None:
    redis = RedisSettings(port=7000, cluster=True, password=SecretStr("s3cret-pw"))
    conf = cluster_node_conf(redis, 7000, tmp_path, tmp_path).splitlines()
    assert "requirepass s3cret-pw" in conf
    assert "masterauth s3cret-pw" in conf


def test_ports_bus_ports_and_their_bound() -> None:
    redis = RedisSettings(port=16379, cluster=True)
    assert cluster_ports(redis) == list(range(16379, 16385))
    assert [stack_redis.cluster_bus_port(redis, p) for p in cluster_ports(redis)] == list(range(16385, 16391))
    s = Settings(redis=redis)
    assert [p for _, p in stack_redis.ports(s)] == list(range(16379, 16391))
    assert stack_redis.ports(Settings(redis=RedisSettings(port=16379))) == [("127.0.0.1", 16379)]
    stack_redis.check_local_config(s)
    with pytest.raises(StackError, match="12 ports"):
        stack_redis.check_local_config(Settings(redis=RedisSettings(port=65530, cluster=True)))


def test_create_command_line_carries_no_password() -> None:
    args = cluster_create_args("/usr/bin/redis-cli", "127.0.0.1", [7000, 7001, 7002, 7003, 7004, 7005])
    assert args == ["/usr/bin/redis-cli", "--cluster", "create", "127.0.0.1:7000", "127.0.0.1:7001",
                    "127.0.0.1:7002", "127.0.0.1:7003", "127.0.0.1:7004", "127.0.0.1:7005",
                    "--cluster-replicas", "1", "--cluster-yes"]
    assert not any(a in ("-a", "--pass", "--user") for a in args)


# ------------------------------------------------------------------------------------------------ parsing


def test_parse_cluster_info() -> None:
    raw = (b"cluster_enabled:1\r\ncluster_state:ok\r\ncluster_slots_assigned:16384\r\ncluster_slots_ok:16384\r\n"
           b"cluster_known_nodes:6\r\ncluster_size:3\r\n")
    info = parse_cluster_info(raw)
    assert info["cluster_state"] == "ok" and info["cluster_known_nodes"] == "6" and info["cluster_size"] == "3"
    assert parse_cluster_info("cluster_state:fail\n\n") == {"cluster_state": "fail"}


def test_parse_cluster_nodes() -> None:
    nodes = {n.port: n for n in parse_cluster_nodes(_nodes_text())}
    assert sorted(nodes) == list(range(7000, 7006))
    me = nodes[7000]
    assert (me.node_id, me.host, me.bus_port, me.slots) == (M1, "127.0.0.1", 7006, ((0, 5460),))
    assert me.is_master and not me.is_replica and "myself" in me.flags and me.slot_count == 5461
    assert nodes[7002].slots == ((10923, 16383),)  # the migrating-slot entry is left out
    assert nodes[7003].is_replica and nodes[7003].master_id == M1 and nodes[7003].slot_count == 0
    assert sum(n.slot_count for n in nodes.values()) == CLUSTER_SLOTS
    failed = {n.port: n for n in parse_cluster_nodes(_nodes_text(failed_master=True))}
    assert failed[7001].failing and failed[7001].link_state == "disconnected" and failed[7001].slots == ()
    assert failed[7004].is_master and failed[7004].slots == ((5461, 10922),)


def test_parse_a_fresh_node_without_its_own_address() -> None:
    (node,) = parse_cluster_nodes(f"{M1} :7000@7006 myself,master - 0 0 0 connected\n")
    assert (node.host, node.port, node.bus_port, node.slots) == ("", 7000, 7006, ())


# ------------------------------------------------------------------------------------------------ decisions


def test_formation() -> None:
    fresh = [NodeProbe(p, True, _info("fail", 0, 0, 1)) for p in range(7000, 7006)]
    assert formation(fresh) == "fresh"
    assert formation(_healthy()) == "formed"
    assert formation(fresh[:3] + _healthy()[3:]) == "partial"
    assert formation(_healthy()[:5] + [NodeProbe(7005, False, error="nothing listening")]) == "down"
    assert formation([]) == "down"


def test_a_healthy_cluster_is_complete() -> None:
    health = assess_cluster(_healthy())
    assert health.usable and health.complete
    assert (health.up, health.masters, health.replicas) == (6, 3, 3)
    assert "6/6 nodes up (3 masters, 3 replicas), 16384/16384 slots ok; ports 7000-7005" in health.detail


def test_a_failed_over_cluster_is_usable_not_complete() -> None:
    nodes = tuple(parse_cluster_nodes(_nodes_text(failed_master=True)))
    probes = [NodeProbe(p.port, True, p.info, nodes, role="master" if p.port == 7004 else p.role, link=p.link)
              for p in _healthy() if p.port != 7001]
    probes.insert(1, NodeProbe(7001, False, error="nothing listening on 127.0.0.1:7001"))
    health = assess_cluster(probes)
    assert health.usable and not health.complete
    assert (health.up, health.masters, health.replicas) == (5, 3, 2)
    assert "down: 7001 (nothing listening on 127.0.0.1:7001)" in health.detail


def test_a_cluster_without_full_coverage_or_ok_state_is_not_usable() -> None:
    probes = _healthy()
    probes[2] = NodeProbe(7002, True, _info("fail", ok=10923), probes[2].nodes, role="master")
    health = assess_cluster(probes)
    assert not health.usable and not health.complete
    assert "NOT ok" in health.detail and "not ok on 7002 (fail, 10923 slots ok)" in health.detail


def test_a_replica_still_syncing_is_not_complete() -> None:
    probes = _healthy()
    probes[4] = NodeProbe(7004, True, probes[4].info, probes[4].nodes, role="slave", link="down")
    health = assess_cluster(probes)
    assert health.usable and not health.complete
    assert "replicas not in sync: 7004" in health.detail


# ------------------------------------------------------------------------------------------------ settings, client


def test_cluster_setting_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THAW_REDIS__CLUSTER", "1")
    s = load_settings()
    assert s.redis.cluster
    assert s.redis.display() == "redis://127.0.0.1:16379 (cluster)"
    assert not RedisSettings().cluster and RedisSettings().display() == "redis://127.0.0.1:16379/0"
    with pytest.raises(ValidationError, match="database 0 only"):
        RedisSettings(cluster=True, db=3)


def test_cluster_options_carry_the_paths_deadlines() -> None:
    from redis.backoff import ExponentialBackoff, NoBackoff

    s = RedisSettings(cluster=True, password=SecretStr("pw-x"), username="thaw", timeout_s=4.0,
                      connect_timeout_s=1.5, retries=2, serving_timeout_s=0.25, serving_connect_timeout_s=0.1,
                      serving_retries=1, health_check_interval_s=7)
    ingest = clients.redis_cluster_options(s)
    serving = clients.redis_cluster_options(s, serving=True)
    assert "db" not in ingest and "health_check_interval" not in ingest  # RedisCluster refuses / drops these
    assert "pw-x" not in repr(ingest)  # a SecretStr until the call
    assert clients.reveal(ingest)["password"] == "pw-x" and ingest["username"] == "thaw"
    assert (ingest["socket_timeout"], ingest["socket_connect_timeout"]) == (4.0, 1.5)
    assert (serving["socket_timeout"], serving["socket_connect_timeout"]) == (0.25, 0.1)
    assert ingest["require_full_coverage"] is True and "read_from_replicas" not in ingest
    assert ingest["retry"].get_retries() == 2 and isinstance(ingest["retry"]._backoff, ExponentialBackoff)
    assert serving["retry"].get_retries() == 1 and isinstance(serving["retry"]._backoff, NoBackoff)
    conn = ingest["connection_class"](host="127.0.0.1", port=1)  # no connection until used
    assert conn.health_check_interval == 7
    assert clients.redis_cluster_options(s, socket_timeout=9)["socket_timeout"] == 9  # extra wins


def test_serving_cluster_client_retries_connection_errors_only() -> None:
    from redis.cluster import RedisCluster
    from redis.exceptions import ClusterDownError, ConnectionError, TimeoutError

    cls = clients._serving_cluster_class()
    assert issubclass(cls, RedisCluster)
    assert cls.ERRORS_ALLOW_RETRY == (ConnectionError,)
    assert TimeoutError in RedisCluster.ERRORS_ALLOW_RETRY and ClusterDownError in RedisCluster.ERRORS_ALLOW_RETRY


def test_hung_cluster_bound() -> None:
    s = RedisSettings(cluster=True, timeout_s=1.0, retries=2, serving_timeout_s=0.3, serving_retries=1)
    assert clients.redis_hung_server_s(s) == 3 * 1.0 + 2 * clients.REDIS_RETRY_CAP_S  # no squaring: nodes never retry
    assert clients.redis_hung_server_s(s, serving=True) == pytest.approx(0.6)  # a pipeline retries a timeout
    single = RedisSettings(timeout_s=1.0, retries=2)
    assert clients.redis_hung_server_s(single) == 9 * 1.0 + 8 * 0.5  # the single-node rule is unchanged
    assert clients.redis_hung_server_s(single, serving=True) == 0.3


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_cluster_client_connects_when_made_and_fails_fast_without_a_node() -> None:
    from redis.exceptions import RedisClusterException

    s = RedisSettings(cluster=True, port=_closed_port(), connect_timeout_s=0.5)
    started = time.monotonic()
    with pytest.raises(RedisClusterException, match="cannot be connected"):
        clients.redis_client(s)
    assert time.monotonic() - started < 3
    single = clients.redis_client(RedisSettings(port=s.port))  # the single-node client connects lazily
    single.close()


# ------------------------------------------------------------------------------------------------ modes


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in socks]
    finally:
        for sock in socks:
            sock.close()


def _free_run(n: int) -> int:
    """The first of ``n`` consecutive ports nothing listens on (a random range in 40000-49999)."""
    import random

    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(40000, 50000 - n)
        if all(port_bindable("127.0.0.1", p) for p in range(base, base + n)):
            return base
    raise RuntimeError("no free port range")


@pytest.fixture
def homes() -> Iterator[list[Path]]:
    """Stack homes to clean up after the test: whatever cluster node a broken guard let start there is stopped."""
    made: list[Path] = []
    yield made
    for home in made:
        s = Settings(stack=StackSettings(home=home, stop_timeout_s=5))
        stack_redis.ClusterStack(s, StateFile(home)).stop()


def _settings(tmp_path: Path, *, cluster: bool, homes: list[Path] | None = None) -> Settings:
    kafka, ctrl, milvus = _free_ports(3)
    redis = _free_run(12)
    s = Settings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka}", controller_port=ctrl),
        redis=RedisSettings(port=redis, cluster=cluster),
        milvus=MilvusSettings(uri=f"http://127.0.0.1:{milvus}"),
        stack=StackSettings(home=tmp_path / "stack", milvus_port=milvus, ready_timeout_s=0.6, stop_timeout_s=5),
    )
    if homes is not None:
        homes.append(s.stack.home)
    return s


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Launch]:
    launch = spawn([sys.executable, "-c", "import time; time.sleep(60)"], tmp_path / "sleep.out", "time.sleep",
                   tmp_path)
    yield launch
    if pid_alive(launch.pid):
        terminate(launch.pid, 5, time.monotonic)


def test_cluster_up_refuses_while_a_single_redis_of_ours_runs(tmp_path: Path, sleeper: Launch,
                                                              homes: list[Path]) -> None:
    s = _settings(tmp_path, cluster=True, homes=homes)
    stack = LocalStack(s)
    s.stack.home.mkdir(parents=True)
    StateFile(s.stack.home).record(REDIS, sleeper)
    with pytest.raises(StackError, match=r"single-node Redis started by thaw stack runs .*stop it first"):
        stack._ensure(REDIS)
    assert pid_alive(sleeper.pid)  # nothing was stopped or started
    status = stack._status(REDIS)
    assert not status.healthy and status.pid == sleeper.pid
    assert "single-node Redis started by thaw stack runs" in status.detail and "CLUSTER is set" in status.detail


def test_single_up_refuses_while_a_cluster_of_ours_runs(tmp_path: Path, sleeper: Launch, homes: list[Path]) -> None:
    s = _settings(tmp_path, cluster=False, homes=homes)
    stack = LocalStack(s)
    s.stack.home.mkdir(parents=True)
    state = StateFile(s.stack.home)
    state.record(node_entry(s.redis.port), sleeper)
    with pytest.raises(StackError, match=r"Redis Cluster started by thaw stack runs .*THAW_REDIS__CLUSTER=1"):
        stack._ensure(REDIS)
    status = stack._status(REDIS)
    assert not status.healthy and "THAW_REDIS__CLUSTER is not set" in status.detail
    assert status.pid == sleeper.pid and status.managed
    stopped = stack._stop(REDIS)  # down stops the recorded nodes whatever the settings' mode
    assert not pid_alive(sleeper.pid)
    assert "stopped 1 Redis Cluster node(s)" in stopped.detail
    assert not stack_redis.cluster_recorded(state)


def test_a_stale_cluster_entry_does_not_block_single_mode(tmp_path: Path) -> None:
    s = _settings(tmp_path, cluster=False)
    s.stack.home.mkdir(parents=True)
    state = StateFile(s.stack.home)
    state.record(node_entry(s.redis.port), Launch(2**22 + 7, "no-such-process", tmp_path / "x.out"))
    assert stack_redis.cluster_recorded(state) and not stack_redis.cluster_running(state)
    assert not stack_redis.cluster_in_charge(s, state)
    assert stack_redis.cluster_in_charge(_settings(tmp_path, cluster=True), state)


def test_cluster_up_names_busy_ports(tmp_path: Path, homes: list[Path]) -> None:
    s = _settings(tmp_path, cluster=True, homes=homes)
    stack = LocalStack(s)
    s.stack.home.mkdir(parents=True)
    bus = stack_redis.cluster_bus_port(s.redis, s.redis.port + 2)
    with socket.socket() as blocker:
        blocker.bind(("127.0.0.1", bus))
        blocker.listen(1)
        with pytest.raises(StackError) as err:
            stack._ensure(REDIS)
    assert str(bus) in str(err.value) and "THAW_REDIS__PORT" in str(err.value)
    assert not stack_redis.cluster_recorded(StateFile(s.stack.home))  # nothing started


# ------------------------------------------------------------------------------------------------ the command


def test_stack_up_redis_cluster_flag_sets_cluster_mode(monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from tests.thaw_cli import thaw

    seen: list[Settings] = []

    def up(self: LocalStack) -> list[object]:  # records what the command asked for; starts nothing
        seen.append(self.settings)
        return []

    monkeypatch.setattr(LocalStack, "up", up)
    monkeypatch.delenv("THAW_REDIS__CLUSTER", raising=False)
    assert thaw("stack", "up", "--redis-cluster") == 0
    assert seen[-1].redis.cluster
    assert "THAW_REDIS__CLUSTER=1" in capsys.readouterr().out
    assert thaw("stack", "up") == 0
    assert not seen[-1].redis.cluster
    assert "THAW_REDIS__CLUSTER" not in capsys.readouterr().out
    monkeypatch.setenv("THAW_REDIS__CLUSTER", "1")
    assert thaw("stack", "up") == 0
    assert seen[-1].redis.cluster
