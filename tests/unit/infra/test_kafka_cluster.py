"""The replicated local Kafka without running it: settings, node layout and properties, config checks, topic
replication, leadership choice, producer defaults, and ``down`` / ``status`` over every node."""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from contracts.topics import Topics
from infra import clients
from infra.settings import KafkaSettings, Settings, StackSettings, local_bootstrap
from infra.stack import KAFKA, LocalStack, StackError
from infra.stack import kafka as stack_kafka
from infra.stack.common import poll
from infra.stack.state import StateFile, pid_alive, spawn, terminate
from infra.topics import MIN_INSYNC, topic_configs, topic_specs


def _props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and not line.startswith("#"))


def _cluster(tmp_path: Path, n: int = 3, port: int = 31092, **kafka: Any) -> Settings:
    return Settings(kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}", controller_port=port + 1, brokers=n,
                                       **kafka),
                    stack=StackSettings(home=tmp_path / "stack", stop_timeout_s=5))


# ------------------------------------------------------------------------------------------------ settings


def test_one_broker_by_default_with_one_replica() -> None:
    k = KafkaSettings()
    assert (k.brokers, k.bootstrap_servers) == (1, "127.0.0.1:19092")
    assert (k.topic_replication_factor(), k.topic_min_insync_replicas()) == (1, 1)


def test_three_brokers_list_every_node_and_replicate_three_times_two_in_sync() -> None:
    k = KafkaSettings(brokers=3)
    assert k.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert k.port == 19092
    assert (k.topic_replication_factor(), k.topic_min_insync_replicas()) == (3, 2)
    two = KafkaSettings(brokers=2)
    assert (two.topic_replication_factor(), two.topic_min_insync_replicas()) == (2, 1)
    five = KafkaSettings(brokers=5)
    assert (five.topic_replication_factor(), five.topic_min_insync_replicas()) == (3, 2)


def test_the_environment_sets_the_brokers_and_a_namespace_keeps_them(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("THAW_KAFKA__BROKERS", "3")
    monkeypatch.setenv("THAW_KAFKA__BOOTSTRAP_SERVERS", "127.0.0.1:31000")
    s = Settings()
    assert s.kafka.bootstrap_servers == "127.0.0.1:31000,127.0.0.1:31002,127.0.0.1:31004"
    ns = s.namespaced("t1")
    assert ns.kafka.bootstrap_servers == s.kafka.bootstrap_servers and ns.kafka.brokers == 3


def test_an_explicit_list_or_a_remote_host_is_kept() -> None:
    assert KafkaSettings(brokers=3, bootstrap_servers="127.0.0.1:1,127.0.0.1:5").bootstrap_servers == \
        "127.0.0.1:1,127.0.0.1:5"
    assert KafkaSettings(brokers=3, bootstrap_servers="kafka.prod:9092").bootstrap_servers == "kafka.prod:9092"
    assert local_bootstrap("localhost:9000", 2) == "localhost:9000,localhost:9002"
    assert local_bootstrap("127.0.0.1:9000", 1) == "127.0.0.1:9000"


def test_explicit_replication_wins_and_an_impossible_min_insync_is_refused() -> None:
    k = KafkaSettings(brokers=3, replication_factor=1)
    assert (k.topic_replication_factor(), k.topic_min_insync_replicas()) == (1, 1)
    assert KafkaSettings(replication_factor=3, min_insync_replicas=3).topic_min_insync_replicas() == 3
    with pytest.raises(ValidationError, match="more than the replication factor"):
        KafkaSettings(brokers=3, replication_factor=2, min_insync_replicas=3)
    with pytest.raises(ValidationError):
        KafkaSettings(brokers=0)


# ------------------------------------------------------------------------------------------ node layout


def test_node_ports_interleave_listeners_and_controllers() -> None:
    assert stack_kafka.node_ports(19092, 19093, 3) == [(19092, 19093), (19094, 19095), (19096, 19097)]
    assert [stack_kafka.node_service(i) for i in (1, 2, 3)] == ["kafka", "kafka-2", "kafka-3"]
    assert stack_kafka.is_node_service("kafka-3") and stack_kafka.is_node_service("kafka")
    assert not stack_kafka.is_node_service("kafka-x") and not stack_kafka.is_node_service("redis")


def test_the_single_broker_keeps_its_layout_and_properties(tmp_path: Path) -> None:
    s = Settings(stack=StackSettings(home=tmp_path))
    (node,) = stack_kafka.nodes(s, tmp_path)
    assert (node.node_id, node.port, node.controller_port, node.service) == (1, 19092, 19093, "kafka")
    assert node.props == tmp_path / "kafka" / "server.properties"
    assert node.data == tmp_path / "kafka" / "kraft-19093"
    assert node.out_log(tmp_path) == tmp_path / "logs" / "kafka.out"
    assert node.server_log(tmp_path) == stack_kafka.server_log(tmp_path)
    props = _props(stack_kafka.server_properties(s, node.data))
    assert props["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093" and "controller.quorum.voters" not in props
    for key in ("default.replication.factor", "min.insync.replicas", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "transaction.state.log.min.isr"):
        assert props[key] == "1", key
    assert stack_kafka.format_args("cid", node.props)[:3] == ["kafka.tools.StorageTool", "format", "--standalone"]


def test_each_node_of_three_has_its_ports_directory_and_the_static_voters(tmp_path: Path) -> None:
    s = _cluster(tmp_path)
    nodes = stack_kafka.nodes(s, tmp_path)
    assert [(n.node_id, n.port, n.controller_port) for n in nodes] == [(1, 31092, 31093), (2, 31094, 31095),
                                                                      (3, 31096, 31097)]
    assert len({n.data for n in nodes}) == 3 and all(n.data.parent.parent.name == "cluster3-31093" for n in nodes)
    assert len({n.marker for n in nodes}) == 3
    props = _props(stack_kafka.server_properties(s, nodes[1].data, nodes[1]))
    assert props["node.id"] == "2"
    assert props["listeners"] == "PLAINTEXT://127.0.0.1:31094,CONTROLLER://127.0.0.1:31095"
    assert props["controller.quorum.voters"] == "1@127.0.0.1:31093,2@127.0.0.1:31095,3@127.0.0.1:31097"
    assert "controller.quorum.bootstrap.servers" not in props
    assert props["log.dirs"] == str(nodes[1].data)
    for key in ("default.replication.factor", "offsets.topic.replication.factor",
                "transaction.state.log.replication.factor", "share.coordinator.state.topic.replication.factor"):
        assert props[key] == "3", key
    for key in ("min.insync.replicas", "transaction.state.log.min.isr", "share.coordinator.state.topic.min.isr"):
        assert props[key] == "2", key
    assert "--standalone" not in stack_kafka.format_args("cid", nodes[1].props, standalone=False)
    assert stack_kafka.ports(s) == [("127.0.0.1", p) for p in range(31092, 31098)]


def test_the_nodes_share_one_cluster_id(tmp_path: Path) -> None:
    s = _cluster(tmp_path)
    first = stack_kafka.shared_cluster_id(s, tmp_path)
    assert stack_kafka.shared_cluster_id(s, tmp_path) == first  # kept in cluster.id
    node = stack_kafka.nodes(s, tmp_path)[2]
    node.data.mkdir(parents=True)
    (node.data / "meta.properties").write_text("version=1\ncluster.id=FormattedId\nnode.id=3\n")
    assert stack_kafka.shared_cluster_id(s, tmp_path) == "FormattedId"  # a formatted node's id wins


def test_local_config_refuses_overlapping_ports_strange_addresses_and_too_many_replicas(tmp_path: Path) -> None:
    stack_kafka.check_local_config(_cluster(tmp_path))
    overlap = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:31092", controller_port=31094, brokers=3))
    with pytest.raises(StackError, match="do not overlap"):
        stack_kafka.check_local_config(overlap)
    stranger = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:31092,127.0.0.1:31093",
                                            controller_port=31193, brokers=2))
    with pytest.raises(StackError, match="127.0.0.1:31093, which is no node"):
        stack_kafka.check_local_config(stranger)
    with pytest.raises(StackError, match="replication factor 3 needs at least"):
        stack_kafka.check_local_config(_cluster(tmp_path, n=2, replication_factor=3, min_insync_replicas=1))


# ------------------------------------------------------------------------------------- topics, leadership


def test_replicated_topics_get_min_insync_the_single_broker_not() -> None:
    spec = topic_specs(KafkaSettings(), Topics.for_prefix("x."))[0]
    assert MIN_INSYNC not in topic_configs(spec)
    assert topic_configs(spec, (3, 2))[MIN_INSYNC] == "2"
    assert topic_configs(spec, (2, 1))[MIN_INSYNC] == "1"


def test_the_busiest_leader_leads_the_most_partitions() -> None:
    answer = [{"topic": "other", "error_code": 0, "partitions": [{"partition": 0, "leader": 9}]},
              {"topic": "t", "error_code": 0, "partitions": [
                  {"partition": 0, "leader": 2}, {"partition": 1, "leader": 3}, {"partition": 2, "leader": 3},
                  {"partition": 3, "leader": -1}]}]
    leaders = stack_kafka.leaders_of(answer, "t")
    assert leaders == {0: 2, 1: 3, 2: 3, 3: -1}
    assert stack_kafka.busiest_leader(leaders) == 3
    assert stack_kafka.busiest_leader({0: 2, 1: 1}) == 1  # a tie: the lowest id
    assert stack_kafka.busiest_leader({0: -1}) is None
    assert stack_kafka.leaders_of(answer, "missing") == {}


def test_kafka_python_producers_are_acks_all_and_idempotent_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka

    calls: list[dict[str, Any]] = []

    class Capture:
        def __init__(self, **kw: Any) -> None:
            calls.append(kw)

    monkeypatch.setattr(kafka, "KafkaProducer", Capture)
    clients.kafka_producer(KafkaSettings(), linger_ms=5)
    clients.kafka_producer(KafkaSettings(), acks=1, enable_idempotence=False)
    assert (calls[0]["acks"], calls[0]["enable_idempotence"], calls[0]["linger_ms"]) == ("all", True, 5)
    assert (calls[1]["acks"], calls[1]["enable_idempotence"]) == (1, False)


# ------------------------------------------------------------------------------- down / status, all nodes


def _fake_nodes(settings: Settings, tmp_path: Path) -> list[int]:
    """Three sleeping processes recorded as the cluster's nodes (their properties path in their command line)."""
    state = StateFile(settings.stack.home)
    settings.stack.home.mkdir(parents=True, exist_ok=True)
    pids = []
    for node in stack_kafka.nodes(settings, settings.stack.home):
        cmd = [sys.executable, "-c", "import sys, time; time.sleep(60)", node.marker]
        launch = spawn(cmd, tmp_path / f"{node.service}.out", node.marker, tmp_path)
        state.record(node.service, launch)
        pids.append(launch.pid)
    for node in stack_kafka.nodes(settings, settings.stack.home):  # until each child runs its own command line
        poll(lambda n=node: state.managed_pid(n.service), bool, until=time.monotonic() + 20, clock=time.monotonic,
             every_s=0.02)
        assert state.managed_pid(node.service) is not None
    return pids


def test_status_names_every_node_and_down_stops_them_all(tmp_path: Path) -> None:
    s = _cluster(tmp_path)
    pids = _fake_nodes(s, tmp_path)
    try:
        stack = LocalStack(s)
        assert stack.kafka_node_pid(2) == pids[1]
        (kafka_status,) = [st for st in stack.status() if st.name == KAFKA]
        assert f"nodes: 1 pid {pids[0]}, 2 pid {pids[1]}, 3 pid {pids[2]}" in kafka_status.detail
        assert not kafka_status.healthy  # nothing listens on the ports
        one = Settings.model_validate({**s.model_dump(), "kafka": {**s.kafka.model_dump(), "brokers": 1,
                                                                    "bootstrap_servers": "127.0.0.1:31092"}})
        (down,) = [st for st in LocalStack(one).down() if st.name == KAFKA]  # without --brokers: all of them
        assert down.detail.startswith("stopped 3 node(s)"), down
        assert not any(pid_alive(p) for p in pids)
        assert StateFile(s.stack.home).read() == {}
    finally:
        for p in pids:
            if pid_alive(p):
                terminate(p, 5, time.monotonic)


def test_up_refuses_a_node_entry_of_another_layout(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    def no_start(*args: Any) -> None:
        raise AssertionError("no node may be started")

    monkeypatch.setattr(stack_kafka, "start_node", no_start)
    s = _cluster(tmp_path)
    single = Settings(kafka=KafkaSettings(bootstrap_servers="127.0.0.1:31092", controller_port=31093),
                      stack=s.stack)
    pids = _fake_nodes(single, tmp_path)  # the single broker's entry "kafka", alive
    try:
        with pytest.raises(StackError, match="runs another Kafka layout"):
            LocalStack(s)._ensure_kafka_nodes()
        assert pid_alive(pids[0])  # left alone
    finally:
        for p in pids:
            terminate(p, 5, time.monotonic)
