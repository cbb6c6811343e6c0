"""The nemesis' ``--brokers 3`` mode without a stack: its ports, its settings and its fault plan."""

from __future__ import annotations

from dataclasses import asdict, replace
from pathlib import Path

import numpy as np
import pytest

from benchmarks.nemesis import DEFAULT_PORTS, QUICK, Plan, fault_order, free_ports
from infra.settings import Settings
from infra.stack.kafka import node_ports


def test_three_brokers_get_ports_of_their_own(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    one, three = free_ports(11), free_ports(11, brokers=3)
    assert three.brokers == 3 and one.brokers == 1
    kafka = [p for pair in node_ports(three.kafka, three.controller, 3) for p in pair]
    others = [three.redis, three.milvus, three.metrics, three.web, *range(three.milvus_base, three.milvus_base + 11)]
    assert len(set(kafka)) == 6 and not set(kafka) & set(others)
    for name, value in three.env(tmp_path).items():
        monkeypatch.setenv(name, value)
    s = Settings()
    assert s.kafka.brokers == 3
    assert s.kafka.bootstrap_servers.split(",") == [f"127.0.0.1:{p}" for p, _ in node_ports(three.kafka,
                                                                                            three.controller, 3)]
    assert s.kafka.topic_replication_factor() == 3 and s.kafka.topic_min_insync_replicas() == 2
    defaults = replace(DEFAULT_PORTS, brokers=3)
    kafka = [p for pair in node_ports(defaults.kafka, defaults.controller, 3) for p in pair]
    assert not set(kafka) & {defaults.redis, defaults.milvus, defaults.metrics, defaults.web,
                             *range(defaults.milvus_base, defaults.milvus_base + 11)}


def test_the_leader_faults_join_the_plan_and_leave_the_single_broker_order_alone() -> None:
    plain = fault_order(QUICK, np.random.default_rng(8))
    assert "leader_kill" not in plain and "leader_pause" not in plain
    assert fault_order(QUICK, np.random.default_rng(8)) == plain  # seeded
    brokers3 = Plan(**{**asdict(QUICK), "leader_kills": 1, "leader_pauses": 1})
    order = fault_order(brokers3, np.random.default_rng(8))
    assert sorted(order) == sorted([*plain, "leader_kill", "leader_pause"])
