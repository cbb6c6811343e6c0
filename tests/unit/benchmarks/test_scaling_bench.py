"""The scaling benchmark's and the worker group's pure decisions, and the nemesis' fault plan with several workers
(no stack, no worker process)."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.nemesis import FULL, QUICK, Plan, fault_order
from benchmarks.scaling import (
    cores_used,
    crossing_time,
    departed_partitions,
    derive,
    longest_stall,
    per_worker_core,
    saturation,
    scaling_table,
    stat_cpu_seconds,
    tree_cpu,
    window_rates,
)
from benchmarks.worker_group import WorkerGroup, covers, member_partitions, pick_member
from infra.settings import Settings


def test_crossing_time_interpolates_and_says_never():
    prog = [(0.0, 0.0), (1.0, 100.0), (2.0, 300.0)]
    assert crossing_time(prog, 50) == pytest.approx(0.5)
    assert crossing_time(prog, 200) == pytest.approx(1.5)
    assert crossing_time(prog, 300) == pytest.approx(2.0)
    assert crossing_time(prog, 301) is None
    assert crossing_time([(0.0, 5.0)], 1) == 0.0


def test_window_rates_leave_out_start_up_and_tail():
    # nothing for 2 s (start-up), then 100/s steady, then a slow tail of 10 s for the last 100
    prog = [(0.0, 0.0), (2.0, 0.0), (11.0, 900.0), (21.0, 1000.0)]
    r = window_rates(prog, 1000)
    assert r["done_s"] == pytest.approx(21.0)
    assert r["overall_per_s"] == pytest.approx(1000 / 21, abs=0.1)
    assert r["steady_per_s"] == pytest.approx(100.0, abs=0.1)
    assert r["first_s"] == pytest.approx(2.0, abs=0.02)
    unfinished = window_rates([(0.0, 0.0), (1.0, 10.0)], 1000)
    assert unfinished["overall_per_s"] is None and unfinished["steady_per_s"] is None


def test_stat_cpu_seconds_reads_past_a_command_with_parentheses():
    # pid (comm) state ppid ... utime(14th) stime(15th)
    fields = ["S", "42"] + ["0"] * 9 + ["250", "150"] + ["0"] * 30
    text = "1234 (python3 (thaw) worker) " + " ".join(fields)
    assert stat_cpu_seconds(text, 100.0) == (42, pytest.approx(4.0))


def test_tree_cpu_adds_every_descendant_and_nothing_else():
    procs = {10: (1, 1.0), 11: (10, 2.0), 12: (11, 0.5), 20: (1, 7.0)}
    assert tree_cpu(procs, 10) == pytest.approx(3.5)
    assert tree_cpu(procs, 20) == pytest.approx(7.0)
    assert tree_cpu(procs, 99) is None
    # a child that is measured on its own (a worker under the benchmark process) is not counted twice
    assert tree_cpu(procs, 10, stop=[11, 10]) == pytest.approx(1.0)


def test_cores_used_per_process_and_missing_or_replaced_ones():
    got = cores_used({"a": 1.0, "b": 5.0, "c": None}, {"a": 3.0, "b": 1.0, "c": 2.0, "d": 1.0}, 2.0)
    assert got == {"a": 1.0, "b": None, "c": None, "d": None}


def test_saturation_names_what_uses_the_cores():
    cores = {"worker-0": 0.7, "worker-1": 0.6, "kafka": 0.1, "redis": 0.2, "milvus": 0.1, "benchmark": 0.05}
    s = saturation(cores, 1.95, 2)
    assert s["cpu_bound"] and not s["redis_bound"]
    assert s["top"] == "workers" and s["cores_by_group"]["workers"] == pytest.approx(1.3)
    assert s["cores_by_group"]["other processes"] == pytest.approx(0.2)
    assert "CPU-bound" in s["verdict"] and "workers" in s["verdict"]
    # the same processes on 4 cores beside someone else's job: 3.4 busy is under 90 %, the others use 1.65
    s = saturation(cores, 3.4, 4)
    assert not s["cpu_bound"] and s["top"] == "other processes"
    assert s["cores_by_group"]["other processes"] == pytest.approx(1.65)
    busy = saturation({"worker-0": 0.3, "redis": 0.2}, 1.9, 2)
    assert busy["cpu_bound"] and busy["top"] == "other processes"
    idle = saturation({"worker-0": 0.3, "redis": 0.95}, 1.3, 2)
    assert not idle["cpu_bound"] and idle["redis_bound"] and "Redis" in idle["verdict"]
    assert saturation({}, None, 2)["verdict"].startswith("unknown")


def test_scaling_table_speedup_per_worker_and_efficiency():
    t = scaling_table({1: 1000.0, 2: 1500.0, 4: 1600.0})
    assert t["1"] == {"per_s": 1000.0, "speedup": 1.0, "per_worker_per_s": 1000.0, "efficiency": 1.0}
    assert t["2"]["speedup"] == pytest.approx(1.5) and t["2"]["efficiency"] == pytest.approx(0.75)
    assert t["4"]["per_worker_per_s"] == pytest.approx(400.0) and t["4"]["efficiency"] == pytest.approx(0.4)
    assert scaling_table({1: None, 2: 800.0})["2"]["speedup"] == 1.0  # the smallest count that was measured
    assert scaling_table({1: None}) == {}


def test_longest_stall_of_one_partition_in_a_window():
    samples = [(0.0, [0, 5]), (1.0, [1, 5]), (2.0, [1, 5]), (3.0, [1, 5]), (4.0, [2, 5]), (5.0, [3, 6])]
    assert longest_stall(samples, 0, 0.0, 5.0) == pytest.approx(3.0)  # from 1.0 to 4.0
    assert longest_stall(samples, 1, 0.0, 5.0) == pytest.approx(5.0)
    assert longest_stall(samples, 0, 3.5, 5.0) == pytest.approx(1.0)
    assert longest_stall(samples, 0, 10.0, 20.0) is None


def test_departed_partitions_by_member_id():
    before = {"faust-a": (0, 1, 2), "faust-b": (3, 4, 5), "faust-c": (6, 7)}
    after = {"faust-a": (0, 1, 2, 6), "faust-c": (3, 4, 5, 7)}
    assert departed_partitions(before, after) == [3, 4, 5]
    assert departed_partitions(before, before) == []


def test_member_partitions_reads_both_assignment_shapes():
    desc = {"members": [
        {"member_id": "m1", "member_assignment": {"assigned_partitions": [("t.user.events", [3, 1]),
                                                                          ("t.content.new", [1, 3])]}},
        {"member_id": "m2", "member_assignment": {"assigned_partitions": [
            {"topic": "t.user.events", "partitions": [0, 2]}]}},
        {"member_id": "m3", "member_assignment": {}},
    ]}
    assert member_partitions(desc, "t.user.events") == {"m1": (1, 3), "m2": (0, 2), "m3": ()}


def test_covers_every_partition_once_with_every_member_working():
    assert covers({"a": (0, 1), "b": (2, 3)}, 2, 4)
    assert not covers({"a": (0, 1), "b": (2, 3)}, 3, 4)  # a member has not joined yet
    assert not covers({"a": (0, 1, 2, 3), "b": ()}, 2, 4)  # one member idle: the rebalance is not done
    assert not covers({"a": (0, 1), "b": (1, 2, 3)}, 2, 4)  # a partition twice
    assert not covers({"a": (0,), "b": (2, 3)}, 2, 4)  # a partition nobody holds
    assert covers({"a": (0,), "b": (1,), "c": ()}, 3, 2)  # more members than partitions


def test_pick_member_draws_nothing_for_one_worker():
    rng = np.random.default_rng(5)
    state = rng.bit_generator.state
    assert pick_member(rng, 1) == 0
    assert rng.bit_generator.state == state
    picks = {pick_member(rng, 3) for _ in range(200)}
    assert picks == {0, 1, 2}
    with pytest.raises(ValueError):
        pick_member(rng, 0)


def test_fault_order_without_pauses_is_the_one_earlier_runs_drew():
    # what the one-worker nemesis drew before worker pauses existed (seeds 7 and 3: the README's and the e2e test's)
    assert fault_order(QUICK, np.random.default_rng(8)) == [
        "worker_kill", "broker_restart", "milvus_stop", "worker_kill", "broker_pause", "redis_kill"]
    assert fault_order(QUICK, np.random.default_rng(4)) == [
        "worker_kill", "broker_pause", "worker_kill", "milvus_stop", "redis_kill", "broker_restart"]
    assert fault_order(FULL, np.random.default_rng(8)).count("worker_kill") == 10


def test_fault_order_with_pauses_adds_them():
    plan = Plan(**{**QUICK.__dict__, "worker_pauses": 2})
    order = fault_order(plan, np.random.default_rng(8))
    assert order.count("worker_pause") == 2 and order.count("worker_kill") == 2 and len(order) == 8


def test_worker_group_names_logs_and_data_dirs(tmp_path):
    s = Settings()
    one = WorkerGroup(s, tmp_path, 1, data_dir=tmp_path / "faust")
    assert [w.log.name for w in one.members] == ["worker.log"]
    assert one.members[0].extra_env["THAW_STREAM__DATA_DIR"] == str(tmp_path / "faust")
    three = WorkerGroup(s, tmp_path / "g", 3, data_dir=tmp_path / "faust", extra_env={"X": "1"})
    assert [w.log.name for w in three.members] == ["worker-0.log", "worker-1.log", "worker-2.log"]
    dirs = {w.extra_env["THAW_STREAM__DATA_DIR"] for w in three.members}
    assert dirs == {str(tmp_path / "faust" / f"w{i}") for i in range(3)}
    assert all(w.extra_env["X"] == "1" for w in three.members)
    assert not three.alive() and len(three.dead()) == 3
    with pytest.raises(ValueError):
        WorkerGroup(s, tmp_path, 0)


def test_worker_group_log_issues_add_up_over_members(tmp_path):
    g = WorkerGroup(Settings(), tmp_path, 2)
    g.members[0].log.write_text("2026-12-07 10:00:00 WARNING x: slow\n2026-12-07 10:00:01 ERROR y: boom\n")
    g.members[1].log.write_text("2026-12-07 10:00:02 WARNING x: slow\n")
    got = g.log_issues()
    assert got["counts"] == {"WARNING": 2, "ERROR": 1}
    assert got["first"][0].startswith("worker-0: ") and any(x.startswith("worker-1: ") for x in got["first"])
    assert g.starts == 0


def test_per_worker_core_and_derive():
    win = {"total": 1000, "done_s": 4.0, "overall_per_s": 250.0,
           "saturation": {"cores_by_group": {"workers": 0.5}}}
    assert per_worker_core(win) == pytest.approx(500.0)  # 1000 records over 2 worker CPU-seconds
    assert per_worker_core({"total": 10, "done_s": None, "saturation": {}}) is None
    slow = {"total": 1000, "done_s": 2.0, "overall_per_s": 500.0, "saturation": {"cores_by_group": {"workers": 1.0}}}
    report = {"phases": [{"workers": 1, "items": dict(win), "user_events": dict(win), "correctness": {"ok": True}},
                         {"workers": 2, "items": dict(slow), "user_events": dict(slow),
                          "correctness": {"ok": False}}]}
    got = derive(report)["scaling"]
    assert got["per_worker_core"]["user_events"] == {"1": 500.0, "2": 500.0}
    assert got["user_events"]["2"]["speedup"] == pytest.approx(2.0)
    assert got["all_correct"] is False
