"""The nemesis' ``--redis-cluster`` mode without a stack: its ports, its settings, which master it kills and when
it counts the failover done."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest

from benchmarks.nemesis import DEFAULT_PORTS, Ports, failover_done, free_ports, master_to_kill, shard_slots
from infra.settings import Settings
from infra.stack.kafka import node_ports
from infra.stack.redis import NodeProbe, cluster_bus_port, cluster_ports, parse_cluster_nodes, ports

# CLUSTER NODES of a freshly created local cluster on 26379..26384 (bus on +6), as `redis-cli --cluster create`
# splits the slots: 0-5460, 5461-10922, 10923-16383
A, B, C, D, E, F = (f"{c * 40}" for c in "abcdef")
NODES = f"""\
{A} 127.0.0.1:26379@26385 myself,master - 0 0 1 connected 0-5460
{B} 127.0.0.1:26380@26386 master - 0 1 2 connected 5461-10922
{C} 127.0.0.1:26381@26387 master - 0 1 3 connected 10923-16383
{D} 127.0.0.1:26382@26388 slave {B} 0 1 2 connected
{E} 127.0.0.1:26383@26389 slave {C} 0 1 3 connected
{F} 127.0.0.1:26384@26390 slave {A} 0 1 1 connected
"""


def _all_ports(p: Ports) -> list[int]:
    kafka = [q for pair in node_ports(p.kafka, p.controller, p.brokers) for q in pair]
    rest = [p.milvus, p.metrics, p.web, *range(p.milvus_base, p.milvus_base + 11)]
    return kafka + p.redis_ports() + rest


@pytest.mark.parametrize("brokers", [1, 3])
def test_free_ports_reserve_the_twelve_cluster_ports_apart_from_the_rest(brokers: int) -> None:
    single, cluster = free_ports(5, brokers), free_ports(5, brokers, redis_cluster=True)
    assert single.redis_ports() == [single.redis]
    assert cluster.redis_cluster and not single.redis_cluster
    assert cluster.redis_ports() == list(range(cluster.redis, cluster.redis + 12))
    everything = _all_ports(cluster)
    assert len(everything) == len(set(everything))  # no port serves two things
    # the single-Redis layout of a seed is what it always was (the cluster ports come after it)
    assert replace(cluster, redis=single.redis, redis_cluster=False) == single


def test_the_default_ports_leave_room_for_the_cluster() -> None:
    for brokers in (1, 3):
        p = replace(DEFAULT_PORTS, brokers=brokers, redis_cluster=True)
        everything = _all_ports(p)
        assert len(everything) == len(set(everything))


def test_the_env_puts_this_process_and_the_worker_on_the_cluster(monkeypatch: pytest.MonkeyPatch,
                                                                   tmp_path: Path) -> None:
    p = free_ports(9, 3, redis_cluster=True)
    env = p.env(tmp_path)
    assert env["THAW_REDIS__CLUSTER"] == "1" and env["THAW_REDIS__PORT"] == str(p.redis)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.redis.cluster and s.kafka.brokers == 3
    # what the local stack starts and checks is exactly the nemesis' reservation
    assert sorted(q for _, q in ports(s)) == p.redis_ports()
    assert [cluster_bus_port(s.redis, q) for q in cluster_ports(s.redis)] == p.redis_ports()[6:]
    monkeypatch.setenv("THAW_REDIS__CLUSTER", "1")
    for name, value in free_ports(9).env(tmp_path).items():  # a single-Redis run overrides an exported cluster
        monkeypatch.setenv(name, value)
    assert not Settings().redis.cluster


def test_shard_slots_are_the_hash_tags_slots() -> None:
    # `redis-cli cluster keyslot '{s0}'` .. '{s3}' on Redis 7.0
    assert shard_slots(4) == {0: 11097, 1: 15224, 2: 2843, 3: 6970}


def test_the_master_serving_most_shards_is_killed() -> None:
    nodes = parse_cluster_nodes(NODES)
    victim, shards = master_to_kill(nodes, 4)
    assert (victim.port, shards) == (26381, [0, 1])  # {s0} 11097 and {s1} 15224 are in 10923-16383
    # a tie goes to the master of the lowest shard; replicas are never picked
    split = parse_cluster_nodes(NODES.replace("5461-10922", "5461-12000").replace("10923-16383", "12001-16383"))
    assert master_to_kill(split, 4) == (split[1], [0, 3])  # {s3} 6970 joins {s0} on 26380
    victim, shards = master_to_kill(split, 3)  # one shard each
    assert (victim.port, shards) == (26380, [0])
    victim, shards = master_to_kill(nodes, 1)
    assert (victim.port, shards) == (26381, [0])
    moved = NODES.replace("connected 10923-16383", "connected").replace(
        f"{E} 127.0.0.1:26383@26389 slave {C} 0 1 3 connected", f"{E} 127.0.0.1:26383@26389 master - 0 1 4 connected "
        "10923-16383").replace(f"{C} 127.0.0.1:26381@26387 master", f"{C} 127.0.0.1:26381@26387 master,fail")
    victim, shards = master_to_kill(parse_cluster_nodes(moved), 4)
    assert (victim.port, shards) == (26383, [0, 1])
    # a master marked failed is not killed again, even before its replica took its slots
    failed = NODES.replace(f"{C} 127.0.0.1:26381@26387 master", f"{C} 127.0.0.1:26381@26387 master,fail")
    assert master_to_kill(parse_cluster_nodes(failed), 4)[0].port in (26379, 26380)
    with pytest.raises(ValueError, match="no master"):
        master_to_kill(parse_cluster_nodes(failed), 1)
    with pytest.raises(ValueError, match="no master"):
        master_to_kill(parse_cluster_nodes(NODES.replace("master", "slave")), 4)


def _probe(port: int, nodes: str, state: str = "ok") -> NodeProbe:
    return NodeProbe(port, True, {"cluster_state": state, "cluster_slots_ok": "16384"},
                     tuple(parse_cluster_nodes(nodes)))


def test_the_failover_is_done_once_every_live_node_sees_a_new_master_for_the_slot() -> None:
    slot = shard_slots(1)[0]
    before = NODES
    # C killed: until the others mark it failed they still say ok and route the slot to C
    dead = NodeProbe(26381, False, error="nothing listening")
    assert failover_done([_probe(q, before) for q in (26379, 26380, 26382, 26383, 26384)] + [dead], C, slot) is None
    failed = before.replace(f"{C} 127.0.0.1:26381@26387 master", f"{C} 127.0.0.1:26381@26387 master,fail")
    assert failover_done([_probe(q, failed, "fail") for q in (26379, 26380, 26383)] + [dead], C, slot) is None
    promoted = failed.replace("connected 10923-16383", "connected").replace(
        f"{E} 127.0.0.1:26383@26389 slave {C} 0 1 3 connected",
        f"{E} 127.0.0.1:26383@26389 master - 0 1 4 connected 10923-16383")
    # one node has not heard of the promotion yet: not done
    assert failover_done([_probe(26379, promoted), _probe(26380, failed, "fail"), dead], C, slot) is None
    new = failover_done([_probe(q, promoted) for q in (26379, 26380, 26382, 26383, 26384)] + [dead], C, slot)
    assert new is not None and (new.port, new.node_id) == (26383, E)
    assert failover_done([dead], C, slot) is None  # nothing answers: not done
