"""Scale-out: 1, 2 and 4 engine workers in one consumer group on 8 partitions, then a rebalance mid-stream.

Run (its own local stack on free ports under a fresh temporary home; the shared stack is never touched)::

    python -m benchmarks.scaling              # 1,000 items and 150,000 user events per worker count; rebalance 40k
    python -m benchmarks.scaling --quick      # 400 items and 40,000 user events; rebalance over 12,000 events
    python -m benchmarks.scaling --workers 1,2 --out /tmp/scaling

What it does:

1. brings up a private stack (Kafka KRaft, Redis with AOF, Milvus standalone; free ports, like the nemesis), makes
   sure MiniLM is published (the items are text, so MiniLM is the only encoder the content path runs);
2. per worker count N, in a fresh namespace whose topics have :data:`PARTITIONS` partitions: starts N
   ``python -m thaw worker`` processes (:class:`benchmarks.worker_group.WorkerGroup`) and waits until the group is
   Stable with the partitions split between all N. Then two measured windows, each started the same way: the whole
   group is frozen (SIGSTOP), the input is published, the group is released (SIGCONT) and timed from the release.
   The group's session timeout is 60 s here, so a freeze causes no rebalance (checked: the same members before and
   after each window):

   - **items**: ``--items`` MovieLens-100k items (title and genres, the plain clone's data) to ``content.new``;
     until every item's ``content.indexed`` trace is written (decode, MiniLM, Milvus upsert, Redis attributes);
   - **user events**: ``--events`` events of ``--users`` users on those items
     (:func:`benchmarks.user_throughput.make_events`); until every partition's Redis offset fence is at its end;

   over each window the CPU of every process (each worker, Kafka, Redis, Milvus, this process; from ``/proc``)
   and the machine's busy cores, and what saturates (:func:`saturation`). Checked afterwards: every item in
   Milvus, each user's ``n_events`` equal to the events produced for them, no dead letters. With the workers
   stopped, the raw limits of the same run: a raw aiokafka ``getmany`` of the same ``user.events`` topic (bytes
   only, :func:`benchmarks.user_throughput.raw_getmany`) and the content featuriser alone in this process over the
   same items (batch 32, the content agent's batch);
3. **rebalance**: a fresh namespace, 2 workers, the nemesis' producer (:class:`benchmarks.nemesis.Producer`: every
   acknowledged record kept, 2% bad records, some events on items published a moment earlier) at ``--rate``; at a
   third of the load a third worker joins, at two thirds one of the first two is killed with SIGKILL (the default
   10 s session timeout: its partitions move on after it). Once everything is handled the nemesis checker
   (:func:`benchmarks.nemesis.check`) compares the final state exactly: every valid user event applied once, every
   valid item in Milvus, every bad record dead-lettered. Also per partition how long its progress stalled around
   the join and the kill.

Report: ``<out>/scaling.json`` and ``<out>/scaling.png`` (default ``benchmarks/results/``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, BenchError, CpuMeter, machine_info, wait_for, write_json

#: partitions of every topic of the benchmark's namespaces (issue 19: 1, 2 and 4 workers on 8 partitions)
PARTITIONS = 8

#: the group's session timeout in the throughput phases: a freeze of the group while the input is published
#: (seconds) stays well under it, so it causes no rebalance
THROUGHPUT_SESSION_TIMEOUT_S = 60.0

SHARED_NOTE = ("measured on a shared 2-core machine: other engineers were running tests and benchmarks at the same "
               "time, so 'other' CPU (machine busy cores minus this run's processes) took part of the cores; read the "
               "rates with each window's busy cores and per-process CPU")


@dataclass(frozen=True)
class ScalePlan:
    workers: tuple[int, ...]
    items: int  # per worker count
    events: int  # per worker count
    users: int
    featurizer_items: int  # the featuriser's raw limit runs on this many of the items
    rebalance_events: int
    rebalance_items: int
    rebalance_users: int
    rebalance_rate: float  # user events/s the nemesis producer aims at during the rebalance


FULL = ScalePlan(workers=(1, 2, 4), items=1_000, events=150_000, users=5_000, featurizer_items=256,
                 rebalance_events=40_000, rebalance_items=600, rebalance_users=2_000, rebalance_rate=400.0)
QUICK = ScalePlan(workers=(1, 2, 4), items=400, events=40_000, users=2_000, featurizer_items=256,
                  rebalance_events=12_000, rebalance_items=300, rebalance_users=600, rebalance_rate=200.0)


# ------------------------------------------------------------------------------------------- pure decisions
def crossing_time(progress: Sequence[tuple[float, float]], count: float) -> float | None:
    """When a non-decreasing progress curve ``[(t, done), ...]`` first reached ``count`` (linear between samples);
    None if it never did."""
    prev: tuple[float, float] | None = None
    for t, n in progress:
        if n >= count:
            if prev is None or n == prev[1]:
                return t
            t0, n0 = prev
            return t0 + (t - t0) * (count - n0) / (n - n0)
        prev = (t, n)
    return None


def window_rates(progress: Sequence[tuple[float, float]], total: float) -> dict[str, float | None]:
    """Rates of a timed window (t from the release): ``overall`` (``total`` / time to the last one) and ``steady``
    (the 10 % to 90 % stretch: no start-up, no tail), plus when the first and the last one were done."""
    t_first = crossing_time(progress, min(1.0, total))
    t_done = crossing_time(progress, total)
    t10, t90 = crossing_time(progress, 0.1 * total), crossing_time(progress, 0.9 * total)
    return {
        "first_s": None if t_first is None else round(t_first, 3),
        "done_s": None if t_done is None else round(t_done, 3),
        "overall_per_s": round(total / t_done, 1) if t_done else None,
        "steady_per_s": round(0.8 * total / (t90 - t10), 1) if t10 is not None and t90 is not None and t90 > t10
        else None,
    }


def stat_cpu_seconds(stat: str, clk_tck: float) -> tuple[int, float]:
    """``(ppid, user+system CPU seconds)`` from the text of ``/proc/<pid>/stat`` (the command may hold spaces and
    parentheses: the fields start after the last ``)``)."""
    fields = stat.rsplit(")", 1)[1].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / clk_tck


def tree_cpu(procs: Mapping[int, tuple[int, float]], root: int, stop: Iterable[int] = ()) -> float | None:
    """CPU seconds of ``root`` and its descendants in ``procs`` (pid -> (ppid, cpu)), not descending into the
    processes in ``stop`` (counted on their own: this benchmark's children include the workers and the stack's
    services); None when ``root`` is gone."""
    if root not in procs:
        return None
    skip = set(stop) - {root}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in procs.items():
        children.setdefault(ppid, []).append(pid)
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += procs[pid][1]
        todo.extend(c for c in children.get(pid, []) if c not in skip)
    return total


def cores_used(before: Mapping[str, float | None], after: Mapping[str, float | None],
               seconds: float) -> dict[str, float | None]:
    """Cores each process used over a window of ``seconds``: the CPU-seconds difference over the wall time (None
    where a reading is missing, or the process was replaced in between)."""
    out: dict[str, float | None] = {}
    for name, a in after.items():
        b = before.get(name)
        out[name] = round((a - b) / seconds, 3) if a is not None and b is not None and a >= b and seconds > 0 \
            else None
    return out


def saturation(cores: Mapping[str, float | None], busy: float | None, ncpu: int) -> dict[str, Any]:
    """What limits a window: the CPU when the machine's busy cores reach 90 % of its cores (then the biggest user
    of them is named: the workers together, Kafka, Redis, Milvus, this benchmark, or other people's processes),
    and Redis when it alone is near one core (its commands run on one thread)."""
    def total(prefix: str) -> float:
        return round(sum(v for k, v in cores.items() if k.startswith(prefix) and v is not None), 3)

    groups = {"workers": total("worker"), "kafka": total("kafka"), "redis": total("redis"),
              "milvus": total("milvus"), "benchmark": total("benchmark")}
    ours = sum(groups.values())
    groups["other processes"] = round(max(0.0, busy - ours), 3) if busy is not None else 0.0
    top = max(groups, key=lambda k: groups[k])
    cpu_bound = busy is not None and busy >= 0.9 * ncpu
    redis_bound = groups["redis"] >= 0.9
    if busy is None:
        verdict = "unknown (no CPU reading)"
    elif cpu_bound:
        verdict = (f"CPU-bound: {busy:.2f} of {ncpu} cores busy; the most went to {top} "
                   f"({groups[top]:.2f} cores)")
    else:
        verdict = f"not CPU-bound: {busy:.2f} of {ncpu} cores busy (waiting on I/O or on a single thread)"
    if redis_bound:
        verdict += f"; Redis near one full core ({groups['redis']:.2f}): its single command thread limits"
    return {"busy_cores": busy, "cores_by_group": groups, "cpu_bound": cpu_bound, "redis_bound": redis_bound,
            "top": top, "verdict": verdict}


def per_worker_core(window: Mapping[str, Any]) -> float | None:
    """Records handled per CPU-second the workers used in a window (its ``total``, ``done_s`` and the workers'
    cores from its ``saturation``): the rate one core of worker gives, which other load on the machine changes much
    less than the wall-clock rate."""
    cores = ((window.get("saturation") or {}).get("cores_by_group") or {}).get("workers")
    done = window.get("done_s")
    if not cores or not done:
        return None
    return round(float(window["total"]) / (float(cores) * float(done)), 1)


def derive(report: dict[str, Any]) -> dict[str, Any]:
    """The report's derived figures, from what each phase recorded: per window the rate per worker core, and the
    scaling tables (wall-clock and per core) over the worker counts."""
    phases = report.get("phases") or []
    for ph in phases:
        for key in ("items", "user_events"):
            ph[key]["per_worker_core_s"] = per_worker_core(ph[key])
    report["scaling"] = {
        **{key: scaling_table({ph["workers"]: ph[key]["overall_per_s"] for ph in phases})
           for key in ("items", "user_events")},
        "per_worker_core": {key: {str(ph["workers"]): ph[key]["per_worker_core_s"] for ph in phases}
                            for key in ("items", "user_events")},
        "all_correct": all(ph["correctness"]["ok"] for ph in phases),
    }
    return report


def scaling_table(rates: Mapping[int, float | None]) -> dict[str, dict[str, float | None]]:
    """Per worker count: its rate, the speed-up over the smallest count, the rate per worker and the efficiency
    (speed-up over the ideal, which is linear in the worker count)."""
    known = {n: r for n, r in rates.items() if r}
    if not known:
        return {}
    base_n = min(known)
    base = known[base_n]
    out: dict[str, dict[str, float | None]] = {}
    for n in sorted(rates):
        r = rates[n]
        sp = r / base if r else None
        out[str(n)] = {"per_s": r, "speedup": round(sp, 3) if sp else None,
                       "per_worker_per_s": round(r / n, 1) if r else None,
                       "efficiency": round(sp / (n / base_n), 3) if sp else None}
    return out


def departed_partitions(before: Mapping[str, Sequence[int]], after: Mapping[str, Sequence[int]]) -> list[int]:
    """The partitions the members that left held: members keep their member id across rebalances, so the ids in
    ``before`` missing from ``after`` are the ones that left (the group description tells members apart by id
    only; every worker has the same client id and host)."""
    return sorted(p for m, ps in before.items() if m not in after for p in ps)


def longest_stall(samples: Sequence[tuple[float, Sequence[int | None]]], partition: int, t0: float,
                  t1: float) -> float | None:
    """The longest time partition ``partition``'s fence did not move in ``[t0, t1]``, from samples ``(t, fences)``
    (a partition whose records keep arriving, as in a paced load, never stands still on its own for long). None
    without two readings in the window."""
    pts = [(t, f[partition]) for t, f in samples if t0 <= t <= t1 and f[partition] is not None]
    if len(pts) < 2:
        return None
    longest, since = 0.0, pts[0][0]
    for (_, a), (t, b) in zip(pts, pts[1:], strict=False):
        longest = max(longest, t - since)  # still at its last move's value until t
        if b is not None and a is not None and b > a:
            since = t
    return round(longest, 2)


# ------------------------------------------------------------------------------------------------- CPU
def _proc_table() -> dict[int, tuple[int, float]]:
    clk = float(os.sysconf("SC_CLK_TCK"))
    out: dict[int, tuple[int, float]] = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat", encoding="utf-8") as fh:
                out[int(d)] = stat_cpu_seconds(fh.read(), clk)
        except (OSError, IndexError, ValueError):
            continue
    return out


class CpuSnapshot:
    """CPU seconds so far of the named processes and their children (workers, stack services, this process)."""

    def __init__(self, roots: Mapping[str, int | None]) -> None:
        procs = _proc_table()
        self.t = time.perf_counter()
        pids = [pid for pid in roots.values() if pid is not None]
        self.cpu = {name: (tree_cpu(procs, pid, pids) if pid is not None else None) for name, pid in roots.items()}


# ------------------------------------------------------------------------------------------------ the stack
@dataclass
class Env:
    """What every phase shares: the private stack, its ports and home, the base settings, the log folder."""

    stack: Any
    ports: Any
    home: Path
    base: Any
    logs: Path
    log: Callable[[str], None]

    def roots(self, group: Any) -> dict[str, int | None]:
        out: dict[str, int | None] = {f"{w.log.stem}": (w.pid if w.alive() else None) for w in group.members}
        for name in ("kafka", "redis", "milvus"):
            try:
                out[name] = self.stack.pid(name)
            except BenchError:
                out[name] = None
        out["benchmark"] = os.getpid()
        return out


def _group(env: Env, s: Any, n: int, tag: str, extra: Mapping[str, str]) -> Any:
    from benchmarks.worker_group import WorkerGroup

    work = env.home / "work" / tag
    work.mkdir(parents=True, exist_ok=True)
    return WorkerGroup(s, env.logs / tag, n, loglevel="warning", data_dir=work / "faust",
                       extra_env={**env.ports.env(env.home), "THAW_STREAM__SPACE": "text",
                                  "THAW_KAFKA__PARTITIONS": str(PARTITIONS), **extra})


def _namespace(env: Env, tag: str) -> tuple[Any, Any]:
    from contracts.topics import Topics
    from infra.topics import ensure_topics

    s = env.base.namespaced(f"scale_{tag}_{int(time.time())}")
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, topics, PARTITIONS)
    return s, topics


def _sum_ends(consumer: Any, topic: str) -> int | None:
    from kafka import TopicPartition

    try:
        ends = consumer.end_offsets([TopicPartition(topic, p) for p in range(PARTITIONS)])
    except Exception:  # noqa: BLE001 - busy broker: no reading this time
        return None
    return int(sum(ends.values()))


def _fences(r: Any, keys: list[str]) -> list[int | None] | None:
    try:
        vals = r.mget(keys)
    except Exception:  # noqa: BLE001 - busy Redis: no reading this time
        return None
    return [int(v) if v is not None else None for v in vals]


def _fence_keys(s: Any, topic: str) -> list[str]:
    from indexing.redis_keys import RedisKeys

    rk = RedisKeys(s.redis.key_prefix)
    return [rk.fence(s.stream.app_id, topic, p) for p in range(PARTITIONS)]


def _timed_window(env: Env, group: Any, admin: Any, topic_for_members: str, publish: Callable[[], int],
                  done: Callable[[], int | None], timeout_s: float, poll_s: float) -> dict[str, Any]:
    """Freeze the group, ``publish`` (returns how many to handle), release it and poll ``done`` (how many are
    handled) every ``poll_s`` until all are; the rates, each process' CPU and the machine's over the window."""
    before = group.assignment(admin, topic_for_members)
    group.pause()
    t_freeze = time.perf_counter()
    try:
        total = publish()
    finally:
        frozen_s = time.perf_counter() - t_freeze
        cpu0, meter = CpuSnapshot(env.roots(group)), CpuMeter()
        group.resume()
    t0 = time.perf_counter()
    progress: list[tuple[float, float]] = [(0.0, 0.0)]
    deadline = t0 + timeout_s
    while True:
        n = done()
        now = time.perf_counter()
        if n is not None and n != progress[-1][1]:
            progress.append((now - t0, float(n)))
        if n is not None and n >= total:
            break
        if now > deadline:
            raise BenchError(f"{progress[-1][1]:.0f}/{total} handled after {timeout_s:.0f}s:\n{group.log_tail()}")
        if not group.alive():
            raise BenchError(f"a worker died during the window:\n{group.log_tail()}")
        time.sleep(poll_s)
    cpu1, busy = CpuSnapshot(env.roots(group)), meter.busy_cores()
    wall = cpu1.t - cpu0.t
    cores = cores_used(cpu0.cpu, cpu1.cpu, wall)
    after = group.assignment(admin, topic_for_members)
    return {
        "total": total,
        **window_rates(progress, total),
        "publish_while_frozen_s": round(frozen_s, 2),
        "rebalanced_during_window": before is None or after is None or set(before) != set(after),
        "cores": cores,
        "saturation": saturation(cores, busy, os.cpu_count() or 1),
        "_progress": progress[:: max(1, len(progress) // 150)] + [progress[-1]],
    }


def featurizer_limit(featurizer: Any, items: Sequence[Mapping[str, Any]], batch: int) -> dict[str, Any]:
    """The content featuriser alone, in this process, over ``items`` in batches of ``batch`` (after one warm-up
    batch): what the encoders allow one process, with nothing of the stream around them."""
    from contracts.events import ContentNew
    from encoders.featurizer import ContentInput
    from streams.cores.decode import item_text

    now = datetime.now(UTC).isoformat()
    docs = [ContentInput(item_text(ContentNew.model_validate({**it, "created_at": now}))) for it in items]
    featurizer.featurize(docs[:batch])
    meter = CpuMeter()
    t0 = time.perf_counter()
    for i in range(0, len(docs), batch):
        featurizer.featurize(docs[i:i + batch])
    dt = time.perf_counter() - t0
    return {"items": len(docs), "batch": batch, "seconds": round(dt, 2), "items_per_s": round(len(docs) / dt, 1),
            "machine_busy_cores": meter.busy_cores()}


# ------------------------------------------------------------------------------------------ throughput phase
def throughput_phase(env: Env, n: int, plan: ScalePlan, featurizer: Any, seed: int) -> dict[str, Any]:
    from benchmarks._harness import cleanup_namespace, movielens_items
    from benchmarks.user_throughput import end_offsets, make_events, produce_all, raw_getmany
    from indexing.redis_state import RedisState
    from indexing.wait import wait_indexed
    from infra import clients
    from workloads.replay import Publisher

    s, topics = _namespace(env, f"w{n}")
    group = _group(env, s, n, f"w{n}", {"THAW_STREAM__SESSION_TIMEOUT_S": f"{THROUGHPUT_SESSION_TIMEOUT_S:g}"})
    admin = clients.kafka_admin(s.kafka)
    consumer = clients.kafka_consumer(s.kafka, group_id=None, enable_auto_commit=False)
    store = RedisState(s.redis)
    out: dict[str, Any] = {"workers": n, "namespace": s.kafka.topic_prefix.rstrip(".")}
    try:
        t = time.perf_counter()
        group.start()
        group.wait_ready(topics.user_events, PARTITIONS)
        out["group_ready_s"] = round(time.perf_counter() - t, 1)
        out["assignment"] = {k[-8:]: v for k, v in (group.assignment(admin, topics.user_events) or {}).items()}
        env.log(f"[scaling] {n} worker(s) share the {PARTITIONS} partitions ({out['group_ready_s']} s); items")

        items = movielens_items(plan.items, seed=seed)
        ids = [it["item_id"] for it in items]
        traces0 = _sum_ends(consumer, topics.content_indexed) or 0

        def publish_items() -> int:
            pub = Publisher(s, rate=0)
            for it in items:
                pub.send_item(topics.content_new, it)
            pub.close()
            return len(items)

        def traces() -> int | None:
            got = _sum_ends(consumer, topics.content_indexed)
            return None if got is None else got - traces0

        # end offsets from the broker cost this process some CPU: 10 readings a second resolve ~20 items/s
        out["items"] = _timed_window(env, group, admin, topics.user_events, publish_items, traces, 900, 0.1)
        out["items"]["searchable"] = wait_indexed(s, ids, timeout_s=120)
        env.log(f"[scaling]   items/s {out['items']['overall_per_s']} (steady {out['items']['steady_per_s']}); "
                f"{out['items']['saturation']['verdict']}")

        records, truth = make_events(plan.events, plan.users, ids, seed=seed)
        keys = _fence_keys(s, topics.user_events)
        ends: dict[int, int] = {}
        produced: dict[str, Any] = {}

        def publish_events() -> int:
            produced.update(produce_all(s, topics.user_events, records))
            ends.update(end_offsets(s, topics.user_events))
            return sum(ends.values())

        def applied() -> int | None:
            fences = _fences(store.r, keys)
            return None if fences is None else sum(min(f + 1, ends.get(p, 0)) for p, f in enumerate(fences)
                                                   if f is not None)

        env.log(f"[scaling]   user events ({plan.events})")
        out["user_events"] = _timed_window(env, group, admin, topics.user_events, publish_events, applied, 900,
                                           0.02)
        out["user_events"]["produce"] = produced
        records.clear()
        env.log(f"[scaling]   user events/s {out['user_events']['overall_per_s']} "
                f"(steady {out['user_events']['steady_per_s']}); {out['user_events']['saturation']['verdict']}")

        # correctness: every event applied once (n_events per user), nothing dead-lettered
        space = store.current_space()
        got: dict[str, int] = {}
        users = truth["users"]
        if space is not None:
            for i in range(0, len(users), 1000):
                for u, st in store.read_states(space, users[i:i + 1000]).items():
                    if st is not None:
                        got[u] = st.n_events
        want = truth["n_events_by_user"]
        wrong = sorted(u for u in set(want) | set(got) if got.get(u, 0) != want.get(u, 0))
        dlq = sum(end_offsets(s, topics.user_dlq).values()) + sum(end_offsets(s, topics.content_dlq).values())
        out["correctness"] = {"users_mismatched": len(wrong), "dead_letters": dlq,
                              "items_searchable": out["items"]["searchable"], "items": len(ids),
                              "ok": not wrong and dlq == 0 and out["items"]["searchable"] == len(ids)}
        out["worker_stop_s"] = round(group.stop(), 1)

        # raw limits, with the workers stopped
        raw = asyncio.run(raw_getmany(s, topics.user_events, plan.events, f"{s.stream.app_id}-raw", 10_000, 200,
                                      deadline_s=300))
        raw.pop("_progress", None)
        out["raw_getmany"] = raw
        out["featurizer_alone"] = featurizer_limit(featurizer, items[:plan.featurizer_items],
                                                   s.stream.content_batch_size)
        ev, it = out["user_events"]["overall_per_s"], out["items"]["overall_per_s"]
        out["ratios"] = {
            "user_events_over_raw_getmany": round(ev / raw["events_per_s"], 4) if ev and raw["events_per_s"] else None,
            "items_over_featurizer_alone": (round(it / out["featurizer_alone"]["items_per_s"], 3)
                                            if it and out["featurizer_alone"]["items_per_s"] else None),
        }
        env.log(f"[scaling]   raw getmany {raw['events_per_s']}/s, featuriser alone "
                f"{out['featurizer_alone']['items_per_s']} items/s; correct: {out['correctness']['ok']}")
    finally:
        group.close()
        out["worker_log_issues"] = group.log_issues()
        consumer.close()
        admin.close()
        out["cleanup"] = cleanup_namespace(s, extra_groups=[f"{s.stream.app_id}-raw"])
    return out


# ------------------------------------------------------------------------------------------- rebalance phase
class FenceSampler:
    """Every ``every_s``: each user-events partition's Redis fence, for the stalls around the join and the kill."""

    def __init__(self, s: Any, topic: str, every_s: float = 0.25) -> None:
        import redis

        self.r = redis.Redis(host=s.redis.host, port=s.redis.port, socket_timeout=2, socket_connect_timeout=1)
        self.keys = _fence_keys(s, topic)
        self.every_s = every_s
        self.samples: list[tuple[float, list[int | None]]] = []
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.wait(self.every_s):
            got = _fences(self.r, self.keys)
            if got is not None:
                self.samples.append((time.time(), got))


def _stalls(sampler: FenceSampler, parts: Sequence[int], t0: float, horizon_s: float) -> dict[str, Any]:
    per = {p: longest_stall(sampler.samples, p, t0, t0 + horizon_s) for p in parts}
    vals = [v for v in per.values() if v is not None]
    return {"partitions": {str(p): v for p, v in per.items()}, "max_s": max(vals) if vals else None,
            "median_s": float(np.median(vals)) if vals else None}


def rebalance_phase(env: Env, plan: ScalePlan, seed: int) -> dict[str, Any]:
    from benchmarks._harness import cleanup_namespace
    from benchmarks.nemesis import Monitor, Plan, Producer, all_handled, check, served_space
    from indexing.wait import wait_indexed
    from infra import clients

    s, topics = _namespace(env, "rebalance")
    # no valid event may run out of its unknown-item grace during a stall: the check expects each one applied
    group = _group(env, s, 2, "rebalance", {"THAW_STREAM__UNKNOWN_ITEM_GRACE_S": "900"})
    load = Plan(user_events=plan.rebalance_events, items=plan.rebalance_items, users=plan.rebalance_users,
                rate=plan.rebalance_rate, worker_kills=0, broker_pause_s=0.0, milvus_stop_s=0.0, gap_s=(0.0, 0.0))
    done = threading.Event()
    producer = Producer(s, load, seed, done)
    monitor = Monitor(s, group)
    sampler = FenceSampler(s, topics.user_events)
    admin = clients.kafka_admin(s.kafka)
    out: dict[str, Any] = {"plan": asdict(load), "namespace": s.kafka.topic_prefix.rstrip(".")}
    threads: list[threading.Thread] = []
    try:
        group.start()
        group.wait_ready(topics.user_events, PARTITIONS)
        from kafka import KafkaProducer

        warm = min(50, load.items // 4)
        p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", enable_idempotence=True)
        producer.publish_items(p, 0, warm)
        p.flush()
        p.close()
        threads = [threading.Thread(target=monitor.run, name="monitor", daemon=True),
                   threading.Thread(target=sampler.run, name="fences", daemon=True)]
        for th in threads:
            th.start()
        if wait_indexed(s, producer.item_ids[:warm], timeout_s=300) < warm:
            raise BenchError(f"the first {warm} items were not searchable after 300 s:\n{group.log_tail()}")
        load_s = load.user_events / load.rate
        env.log(f"[scaling] rebalance: 2 workers, {load.user_events} events at {load.rate:g}/s (~{load_s:.0f} s); "
                f"a third joins at ~{load_s / 3:.0f} s, one is killed at ~{2 * load_s / 3:.0f} s")
        t_load = time.time()
        prod = threading.Thread(target=producer.run, args=(warm,), name="producer", daemon=True)
        prod.start()
        events: dict[str, Any] = {}

        def settle(n: int, what: str) -> float:
            def ok() -> bool:
                from benchmarks.worker_group import covers

                got = group.assignment(admin, topics.user_events)
                return got is not None and covers(got, n, PARTITIONS)

            try:
                wait_for(ok, 300, what, None, poll_s=0.5)
            except BenchError as exc:
                raise BenchError(f"{exc}; last seen {group.last_seen}") from exc
            return time.time()

        time.sleep(max(0.0, t_load + load_s / 3 - time.time()))
        before_join = group.assignment(admin, topics.user_events) or {}
        t_join = time.time()
        joined = group.add()
        t_join_stable = settle(3, "the group to take the third worker in")
        events["join"] = {"t_s": round(t_join - t_load, 2), "worker": joined.log.stem,
                          "stable_after_s": round(t_join_stable - t_join, 2),
                          "members_before": len(before_join)}
        env.log(f"[scaling]   {joined.log.stem} joined; group Stable with 3 after {t_join_stable - t_join:.1f} s")

        time.sleep(max(0.0, t_load + 2 * load_s / 3 - time.time(), t_join_stable + 10 - time.time()))
        victim = group.members[0]
        before_kill = group.assignment(admin, topics.user_events) or {}
        with monitor.hold:
            t_kill = time.time()
            group.kill9(victim)
            group.retire(victim)
        t_kill_stable = settle(2, "the group to move the killed worker's partitions")
        held = departed_partitions(before_kill, group.assignment(admin, topics.user_events) or {})
        events["kill"] = {"t_s": round(t_kill - t_load, 2), "worker": victim.log.stem,
                          "its_partitions": held, "stable_after_s": round(t_kill_stable - t_kill, 2)}
        env.log(f"[scaling]   {victim.log.stem} killed (held {held}); group Stable with 2 after "
                f"{t_kill_stable - t_kill:.1f} s")
        done.set()
        while prod.is_alive():
            prod.join(timeout=10)
            cur = monitor.current()
            env.log(f"[scaling]   t={time.time() - t_load:5.0f}s acked={len(producer.history)} "
                    f"handled={cur.handled} lag={cur.lag}")
        if producer.error is not None:
            raise BenchError(f"producer failed: {producer.error!r}") from producer.error
        t_load_end = time.time()
        wait_for(lambda: all_handled(s, monitor), 600, "the workers to handle every record", None, poll_s=0.5)
        time.sleep(3.0)  # the content agent's last upsert (content is not fenced)
        t_drained = time.time()
        for th_stop in (monitor.stop, sampler.stop):
            th_stop.set()
        for th in threads:
            th.join(timeout=10)
        group.stop()
        env.log("[scaling]   checking the final state against the producer's history")
        verdict = check(s, producer.history, served_space(s))
        all_parts = list(range(PARTITIONS))
        events["join"]["stall"] = _stalls(sampler, all_parts, t_join, 60.0)
        events["kill"]["stall"] = _stalls(sampler, held or all_parts, t_kill, 60.0)
        out.update({
            **{k: verdict[k] for k in ("lost", "duplicated", "misfiled", "state_mismatch")},
            "exact": verdict["lost"] == verdict["duplicated"] == verdict["misfiled"] == verdict["state_mismatch"]
            == 0,
            "events": events,
            "checker": {k: v for k, v in verdict.items() if k not in ("lost", "duplicated", "misfiled",
                                                                    "state_mismatch")},
            "producer": {"sent": dict(producer.sent), "acked": len(producer.history),
                         "send_failures": len(producer.failed)},
            "worker_exits_on_their_own": monitor.exits,
            "wall_s": {"load": round(t_load_end - t_load, 1), "drain": round(t_drained - t_load_end, 1)},
            "timeline": [{"t": round(x.t - t_load, 2), "handled": x.handled, "lag": x.lag}
                         for x in monitor.samples[::2]],
        })
        env.log(f"[scaling]   lost={verdict['lost']} duplicated={verdict['duplicated']} "
                f"misfiled={verdict['misfiled']} state_mismatch={verdict['state_mismatch']}")
    finally:
        done.set()
        monitor.stop.set()
        sampler.stop.set()
        for th in threads:  # the monitor restarts dead workers: it must be gone before the group stops
            th.join(timeout=10)
        group.close()
        out["worker_log_issues"] = group.log_issues()
        admin.close()
        if group.dead() == group.members:  # never delete the namespace under a running worker
            out["cleanup"] = cleanup_namespace(s)
    return out


# ---------------------------------------------------------------------------------------------------- report
def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    phases = report["phases"]
    ns = [ph["workers"] for ph in phases]
    x = np.arange(len(ns))
    fig, axes = plt.subplots(2, 2, figsize=(14, 9))
    ax = axes[0][0]
    ev = [ph["user_events"]["overall_per_s"] or 0 for ph in phases]
    bars = ax.bar(x, ev, color="#1f77b4")
    for b, ph in zip(bars, phases, strict=True):
        r = ph["ratios"]["user_events_over_raw_getmany"]
        core = ph["user_events"].get("per_worker_core_s")
        ax.annotate(f"{b.get_height():,.0f}/s" + (f"\n{r}x raw" if r else "")
                    + (f"\n{core:,.0f} per worker core-s" if core else ""),
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=8)
    ax.set_xticks(x, [f"{n} worker{'s' if n > 1 else ''}" for n in ns])
    ax.set_ylabel("user events applied / s")
    raws = [ph["raw_getmany"]["events_per_s"] for ph in phases]
    ax.set_title(f"user events ({PARTITIONS} partitions); raw getmany {min(raws):,.0f}-{max(raws):,.0f}/s",
                 fontsize=10)
    ax.set_ylim(0, max(ev + [1]) * 1.25)

    ax = axes[0][1]
    it = [ph["items"]["overall_per_s"] or 0 for ph in phases]
    fz = [ph["featurizer_alone"]["items_per_s"] for ph in phases]
    bars = ax.bar(x - 0.2, it, 0.4, label="through the content path", color="#2ca02c")
    ax.bar(x + 0.2, fz, 0.4, label="featuriser alone (1 process)", color="#bbbbbb")
    for b, ph in zip(bars, phases, strict=True):
        core = ph["items"].get("per_worker_core_s")
        ax.annotate(f"{b.get_height():,.1f}/s" + (f"\n{core:,.1f} per\nworker core-s" if core else ""),
                    (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom", fontsize=7)
    ax.set_ylim(0, max(it + fz + [1]) * 1.3)
    ax.set_xticks(x, [f"{n} worker{'s' if n > 1 else ''}" for n in ns])
    ax.set_ylabel("items / s")
    ax.set_title("items (MovieLens-100k text, MiniLM)", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[1][0]
    groups = ["workers", "kafka", "redis", "milvus", "benchmark", "other processes"]
    colors = ["#1f77b4", "#ff7f0e", "#d62728", "#2ca02c", "#9467bd", "#bbbbbb"]
    for k, key in enumerate(("items", "user_events")):
        bottom = np.zeros(len(ns))
        for g, c in zip(groups, colors, strict=True):
            vals = np.array([ph[key]["saturation"]["cores_by_group"].get(g) or 0.0 for ph in phases])
            ax.bar(x + (k - 0.5) * 0.4, vals, 0.38, bottom=bottom, color=c,
                   label=g if k == 0 else None, hatch="//" if key == "items" else None, edgecolor="white")
            bottom += vals
    ax.axhline(os.cpu_count() or 2, color="black", lw=0.8, ls="--")
    ax.set_xticks(x, [f"{n}w: items | events" for n in ns], fontsize=8)
    ax.set_ylabel("CPU cores over the window")
    ax.set_title("where the cores went (hatched: items window)", fontsize=10)
    ax.legend(fontsize=7, ncol=3)

    ax = axes[1][1]
    rb = report.get("rebalance") or {}
    tl = rb.get("timeline") or []
    if tl:
        ts = [p["t"] for p in tl]
        rate = [float("nan")] + [((b["handled"] - a["handled"]) / (b["t"] - a["t"]))
                                 if a["handled"] is not None and b["handled"] is not None and b["t"] > a["t"]
                                 else float("nan") for a, b in zip(tl, tl[1:], strict=False)]
        ax.plot(ts, rate, lw=0.8, color="#1f77b4", label="handled / s")
        ax2 = ax.twinx()
        ax2.plot(ts, [p["lag"] if p["lag"] is not None else float("nan") for p in tl], lw=0.8, color="black",
                 label="lag")
        ax2.set_ylabel("lag (records)")
        for key, color in (("join", "tab:green"), ("kill", "tab:red")):
            e = (rb.get("events") or {}).get(key)
            if e:
                ax.axvline(e["t_s"], color=color, ls="--", label=f"{key} ({e['worker']})")
                ax.axvspan(e["t_s"], e["t_s"] + e["stable_after_s"], color=color, alpha=0.15)
        ax.set_xlabel("seconds since the load started")
        ax.set_ylabel("user events handled / s")
        ax.legend(fontsize=8, loc="upper left")
        ax.set_title(f"rebalance under load: lost {rb.get('lost')}, duplicated {rb.get('duplicated')}, "
                     f"misfiled {rb.get('misfiled')}, state mismatch {rb.get('state_mismatch')}", fontsize=10)
    fig.suptitle(f"benchmarks.scaling ({report['mode']}, {report['date']}): shared 2-core machine", fontsize=11)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ------------------------------------------------------------------------------------------------------ main
def run(plan: ScalePlan, seed: int, out_dir: Path, home: Path, *, mode: str, keep_stack: bool = False,
        rebalance: bool = True, log: Callable[[str], None] = print,
        report: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every phase, filling ``report`` as it goes (so a caller still has the finished phases when a later one
    fails)."""
    from benchmarks.nemesis import Stack, _share_kafka_jars, free_ports
    from encoders.featurizer import ContentFeaturizer
    from encoders.registry import ModelRegistry
    from encoders.text import ensure_minilm
    from infra.settings import load_settings

    t_start = time.time()
    ports = free_ports(seed + 100)
    os.environ.update(ports.env(home))
    os.environ["THAW_KAFKA__PARTITIONS"] = str(PARTITIONS)
    base = load_settings()
    home.mkdir(parents=True, exist_ok=True)
    _share_kafka_jars(base)
    stack = Stack(base)
    report = {} if report is None else report
    report.update({
        "benchmark": "scaling", "mode": mode, "date": datetime.now(UTC).date().isoformat(), "seed": seed,
        "partitions": PARTITIONS, "plan": asdict(plan), "shared_machine": True, "shared_machine_note": SHARED_NOTE,
        "ports": asdict(ports), "machine": machine_info(),
    })
    env = Env(stack, ports, home, base, out_dir / "logs" / "scaling", log)
    try:
        log(f"[scaling] private stack under {home} (kafka {ports.kafka}, redis {ports.redis}, milvus {ports.milvus})")
        stack.up()
        registry = ModelRegistry(base.models.dir)
        ensure_minilm(registry)
        featurizer = ContentFeaturizer.from_registry(registry, threads=base.models.onnx_threads)
        phases: list[dict[str, Any]] = []
        report["phases"] = phases
        for n in plan.workers:
            phases.append(throughput_phase(env, n, plan, featurizer, seed))
            derive(report)
        if rebalance:
            report["rebalance"] = rebalance_phase(env, plan, seed)
        report["wall_s"] = round(time.time() - t_start, 1)
        report["machine"]["loadavg_after"] = machine_info()["loadavg_1_5_15"]
        return report
    finally:
        if not keep_stack:
            with contextlib.suppress(Exception):
                stack.down()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.scaling", description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (400 items, 40k events, rebalance 12k)")
    ap.add_argument("--workers", default=None, help="worker counts, comma-separated (default 1,2,4)")
    ap.add_argument("--items", type=int, default=None, help="items per worker count")
    ap.add_argument("--events", type=int, default=None, help="user events per worker count")
    ap.add_argument("--no-rebalance", action="store_true", help="skip the rebalance phase")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--home", type=Path, default=None, help="the private stack's home (default: a new temporary "
                    "folder, removed afterwards); must be empty or absent")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report folder (default benchmarks/results)")
    ap.add_argument("--keep-stack", action="store_true", help="leave the private stack running (and its home)")
    a = ap.parse_args(argv)
    # a SIGTERM unwinds like an exception, so the workers and the private stack are stopped on the way out
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    plan = QUICK if a.quick else FULL
    over: dict[str, Any] = {}
    if a.workers:
        try:
            over["workers"] = tuple(int(x) for x in a.workers.split(",") if x.strip())
        except ValueError:
            ap.error("--workers is a comma-separated list of counts, e.g. 1,2,4")
        if not over["workers"] or min(over["workers"]) < 1:
            ap.error("--workers counts are >= 1")
    if a.items is not None:
        over["items"] = a.items
    if a.events is not None:
        over["events"] = a.events
    plan = ScalePlan(**{**asdict(plan), **over})
    if a.home is not None and a.home.exists() and any(a.home.iterdir()):
        ap.error(f"--home {a.home} is not empty (the benchmark starts its stack from empty data)")
    home = a.home or Path(tempfile.mkdtemp(prefix="thaw-scaling-"))
    report: dict[str, Any] = {}
    try:
        run(plan, a.seed, a.out, home, mode="quick" if a.quick else "full", keep_stack=a.keep_stack,
            rebalance=not a.no_rebalance, report=report)
    except BenchError as exc:
        print(f"[scaling] FAILED: {exc}", file=sys.stderr)
        for ph in report.get("phases") or []:  # the phases that finished are kept beside the error
            for key in ("items", "user_events"):
                ph[key].pop("_progress", None)
        write_json(a.out / "scaling.json", {**report, "benchmark": "scaling", "error": str(exc)[-4000:]})
        return 1
    finally:
        if not a.keep_stack and a.home is None:
            shutil.rmtree(home, ignore_errors=True)
    png = a.out / "scaling.png"
    plot(report, png)
    for ph in report["phases"]:
        for key in ("items", "user_events"):
            ph[key].pop("_progress", None)
    write_json(a.out / "scaling.json", report)
    rb = report.get("rebalance") or {}
    print(f"[scaling] user events/s by workers {report['scaling']['user_events']}; items/s "
          f"{report['scaling']['items']}; rebalance exact: {rb.get('exact')}; wrote {a.out / 'scaling.json'} and "
          f"{png} in {report['wall_s']} s", file=sys.stderr)
    ok = report["scaling"]["all_correct"] and (not rb or rb.get("exact"))
    return 0 if ok else 2


if __name__ == "__main__":
    raise SystemExit(main())
