"""User-event throughput: the worker's user agent vs a raw aiokafka ``getmany`` read of the same topic, in one run.

``python -m benchmarks.user_throughput [--events 100000] [--users 5000] [--items 300] [--catalogue ml-100k]
[--out benchmarks/results]``

Steps (fresh namespace, own worker subprocess):

1. start the worker, publish ``--items`` items to ``content.new`` and wait until all are searchable, wait until the
   group has committed them, stop the worker. The items come from a plain clone's data by default
   (:func:`benchmarks._harness.text_items`): MovieLens-100k movies from the recbole wheel (title as text, genres as
   tags), or ``--catalogue community`` (the demo community's posts); ``--catalogue lastfm`` takes Last.fm artists
   from the optional datasets folder (``THAW_DATASETS_DIR``). What the user path costs does not depend on which;
2. with no worker running, pre-produce ``--events`` valid ``UserEvent`` records (``--users`` users, those items,
   mixed actions incl. impressions) into ``user.events`` as fast as possible;
3. raw: an ``AIOKafkaConsumer`` with a throwaway group reads the whole topic from the beginning with
   ``getmany(timeout_ms, max_records)``, bytes only (no decode); timed from the group assignment to the last record;
4. agent: restart the worker; timed from its consumer group becoming active (Stable, partitions assigned) until every
   Redis offset fence ``{key_prefix}fence:{group}:{topic}:{partition}`` equals that partition's end offset - 1, i.e.
   every event is applied (decoded, validated, item vectors looked up, user states updated, committed to Redis);
5. correctness: per user, ``n_events`` in Redis (``RedisState.read_states``) == the number of non-impression events
   produced for that user; no DLQ records.

Report: ``<out>/user_throughput.json`` (events/s of both, the ratio, the worker's CPU and the machine's busy cores,
the worker's per-batch stage timings from its Prometheus /metrics, Redis' own cost over the agent's window from
``INFO``, the correctness check) and ``<out>/user_throughput.png`` (the rates, the progress curves, the stage times).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import (
    DEFAULT_OUT,
    TEXT_DATASETS,
    BenchError,
    CpuMeter,
    Worker,
    base_settings,
    cleanup_namespace,
    machine_info,
    new_namespace,
    parse_prometheus,
    scrape,
    stack_up,
    stage_table,
    text_items,
    wait_for,
    write_json,
)
from infra import clients
from infra.settings import Settings

log = logging.getLogger("benchmarks.user_throughput")

# a feed-like mix: mostly impressions and light engagement
ACTION_MIX: dict[str, float] = {
    "impression": 0.40,
    "click": 0.15,
    "play": 0.18,
    "complete": 0.08,
    "like": 0.06,
    "comment": 0.02,
    "share": 0.02,
    "skip": 0.07,
    "follow": 0.02,
}
SURFACES = ("feed", "search", "profile", "radio")


def make_events(n: int, n_users: int, item_ids: list[str], seed: int = 0,
                now: float | None = None) -> tuple[list[tuple[bytes, bytes]], dict[str, Any]]:
    """``n`` UserEvent JSON records (key = user_id) and the truth needed to check them.

    Users and items are drawn with a skew (a few heavy users, popular items); timestamps are the last ``n`` ms before
    ``now``, in order. The truth has, per user, the number of non-impression events (what ``n_events`` counts).
    """
    from contracts.actions import ACTION_WEIGHTS

    rng = np.random.default_rng(seed)
    now = time.time() if now is None else now
    users = [f"bench:u:{k:05d}" for k in range(n_users)]
    uw = 1.0 / np.power(np.arange(n_users) + 10.0, 0.8)
    iw = 1.0 / (np.arange(len(item_ids)) + 1.0)
    u_idx = rng.choice(n_users, size=n, p=uw / uw.sum())
    i_idx = rng.choice(len(item_ids), size=n, p=iw / iw.sum())
    names = list(ACTION_MIX)
    probs = np.array([ACTION_MIX[a] for a in names])
    a_idx = rng.choice(len(names), size=n, p=probs / probs.sum())
    dwell = rng.integers(1_000, 300_000, size=n)
    surf = rng.integers(0, len(SURFACES), size=n)
    t0 = now - n * 0.001
    out: list[tuple[bytes, bytes]] = []
    per_user: Counter[str] = Counter()
    actions: Counter[str] = Counter()
    for j in range(n):
        user = users[u_idx[j]]
        action = names[a_idx[j]]
        ts = datetime.fromtimestamp(t0 + j * 0.001, UTC).isoformat()
        ev: dict[str, Any] = {
            "schema_version": 1,
            "user_id": user,
            "item_id": item_ids[i_idx[j]],
            "action": action,
            "ts": ts,
            "context": {"surface": SURFACES[surf[j]]},
            "produced_at": ts,
        }
        if action in ("play", "complete", "skip"):
            ev["dwell_ms"] = int(dwell[j])
        out.append((user.encode(), json.dumps(ev, separators=(",", ":")).encode()))
        actions[action] += 1
        if ACTION_WEIGHTS[action] != 0:
            per_user[user] += 1
    truth = {
        "users": users,
        "n_events_by_user": dict(per_user),
        "non_impression": sum(per_user.values()),
        "actions": dict(sorted(actions.items())),
        "distinct_users": int(len(set(u_idx.tolist()))),
    }
    return out, truth


def produce_all(settings: Settings, topic: str, records: list[tuple[bytes, bytes]]) -> dict[str, Any]:
    """Send everything as fast as kafka-python allows; returns the produce rate."""

    p = clients.kafka_producer(
        settings.kafka,
        acks="all",
        linger_ms=20,
        batch_size=1024 * 1024,
        max_request_size=16 * 1024 * 1024,
    )
    t0 = time.perf_counter()
    for k, v in records:
        p.send(topic, key=k, value=v)
    p.flush(timeout=300)
    dt = time.perf_counter() - t0
    p.close(timeout=10)
    return {"events": len(records), "seconds": round(dt, 2), "events_per_s": round(len(records) / dt, 1),
            "mean_value_bytes": round(float(np.mean([len(v) for _, v in records])), 1)}


def redis_costs(r: Any) -> dict[str, float]:
    """Redis' own counters now: its CPU seconds and, per command the user path sends, calls and microseconds."""
    cpu = r.info("cpu")
    out = {"cpu_s": float(cpu["used_cpu_user"]) + float(cpu["used_cpu_sys"])}
    stats = r.info("commandstats")
    for cmd in ("evalsha", "mget", "zadd", "get", "set"):
        st = stats.get(f"cmdstat_{cmd}", {})
        out[f"{cmd}_calls"] = float(st.get("calls", 0))
        out[f"{cmd}_usec"] = float(st.get("usec", 0))
    return out


def redis_window(before: dict[str, float], after: dict[str, float], seconds: float, events: int) -> dict[str, Any]:
    """What Redis spent over a window: cores, and per user event the commit script's and the reads' time."""
    d = {k: after[k] - before[k] for k in before}
    scripts = d["evalsha_calls"]
    return {
        "cpu_cores": round(d["cpu_s"] / seconds, 3) if seconds > 0 else None,
        "cpu_us_per_event": round(d["cpu_s"] / events * 1e6, 1),
        "commit_scripts": int(scripts),
        "commit_script_ms_mean": round(d["evalsha_usec"] / scripts / 1000, 2) if scripts else None,
        "commit_script_us_per_event": round(d["evalsha_usec"] / events, 1),
        "mget_us_per_event": round(d["mget_usec"] / events, 1),
        "zadd_calls_per_event": round(d["zadd_calls"] / events, 2),  # the seen and engaged sets (inside the script)
    }


def end_offsets(settings: Settings, topic: str) -> dict[int, int]:
    from kafka import TopicPartition

    c = clients.kafka_consumer(settings.kafka, group_id=None, enable_auto_commit=False)
    try:
        parts = c.partitions_for_topic(topic) or set()
        ends = c.end_offsets([TopicPartition(topic, p) for p in sorted(parts)])
        return {tp.partition: int(off) for tp, off in ends.items()}
    finally:
        c.close()


async def raw_getmany(settings: Settings, topic: str, expected: int, group: str, max_records: int,
                      timeout_ms: int, deadline_s: float) -> dict[str, Any]:
    """Read the whole topic from the beginning with a throwaway group, bytes only."""
    from aiokafka import AIOKafkaConsumer

    c = AIOKafkaConsumer(
        topic,
        **clients.aiokafka_kwargs(settings.kafka),
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        max_partition_fetch_bytes=settings.kafka.max_message_bytes,
    )
    t_start = time.perf_counter()
    deadline = t_start + deadline_s
    await c.start()
    try:
        while not c.assignment():
            if time.perf_counter() > deadline:
                raise BenchError("raw consumer got no assignment")
            await asyncio.sleep(0.001)
        t_active = time.perf_counter()
        n = nbytes = calls = 0
        t_first: float | None = None
        first_n = 0
        progress: list[tuple[float, int]] = [(0.0, 0)]
        while n < expected and time.perf_counter() < deadline:
            batch = await c.getmany(timeout_ms=timeout_ms, max_records=max_records)
            calls += 1
            for msgs in batch.values():
                n += len(msgs)
                for m in msgs:
                    nbytes += len(m.value) if m.value is not None else 0
            now = time.perf_counter()
            if t_first is None and n:
                t_first, first_n = now, n
            progress.append((now - t_active, n))
        t_end = time.perf_counter()
    finally:
        await c.stop()
    dt = t_end - t_active
    # thin the progress curve for the report
    step = max(1, len(progress) // 200)
    return {
        "events": n,
        "bytes": nbytes,
        "getmany_calls": calls,
        "group_join_s": round(t_active - t_start, 3),
        "first_records_after_active_s": round((t_first or t_end) - t_active, 3),
        "seconds_from_active": round(dt, 3),
        "events_per_s": round(n / dt, 1) if dt > 0 else None,
        "events_per_s_after_first_records": (
            round((n - first_n) / (t_end - t_first), 1) if t_first is not None and t_end > t_first else None),
        "mb_per_s": round(nbytes / dt / 1e6, 1) if dt > 0 else None,
        "complete": n >= expected,
        "_progress": progress[::step] + [progress[-1]],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:

    from contracts.topics import Topics
    from indexing.redis_state import RedisState
    from indexing.wait import wait_indexed
    from infra.lag import consumer_lag
    from infra.topics import ensure_topics
    from workloads.replay import Publisher

    base = base_settings()
    report: dict[str, Any] = {
        "benchmark": "user_throughput",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"events": args.events, "users": args.users, "items": args.items, "catalogue": args.catalogue,
                   "seed": args.seed,
                   "raw_max_records": args.max_records, "raw_timeout_ms": args.timeout_ms,
                   "partitions": base.kafka.partitions, "worker_batch_size": base.stream.batch_size,
                   "worker_batch_within_s": base.stream.batch_within_s},
        "machine": machine_info(),
        "stack": stack_up(base),
    }
    ns = new_namespace("users")
    s = base.namespaced(ns)
    group = s.stream.app_id
    raw_group = f"{group}-rawread"
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, topics)
    report["namespace"] = ns
    log_dir = args.out / "logs"
    worker = Worker(s, log_dir / "user_throughput-worker.log")
    admin = clients.kafka_admin(s.kafka)
    store = RedisState(s.redis)
    try:
        # ---- 1. items
        print(f"[users] namespace {ns}: starting worker, indexing {args.items} items", file=sys.stderr)
        worker.start()
        worker.wait_ready(timeout_s=args.ready_timeout)
        items = text_items(args.items, args.catalogue, seed=args.seed)
        pub = Publisher(s, rate=0)
        for it in items:
            pub.send_item(topics.content_new, it)
        pub.close()
        item_ids = [it["item_id"] for it in items]
        n_indexed = wait_indexed(s, item_ids, timeout_s=120)
        if n_indexed != len(item_ids):
            raise BenchError(f"only {n_indexed}/{len(item_ids)} items searchable:\n{worker.log_tail()}")

        def content_committed() -> bool:
            rows = [r for r in consumer_lag(s, [group]) if r.topic == topics.content_new]
            return bool(rows) and sum(r.end_offset for r in rows) == len(items) and all(r.lag == 0 for r in rows)

        wait_for(content_committed, 60, "content.new offsets committed", worker, poll_s=0.2)
        report["items_indexed"] = n_indexed
        report["worker_stop_s"] = round(worker.stop(), 2)

        # ---- 2. pre-produce user events (no worker running)
        print(f"[users] producing {args.events} user events for {args.users} users", file=sys.stderr)
        t_gen = time.perf_counter()
        records, truth = make_events(args.events, args.users, item_ids, seed=args.seed)
        gen_s = time.perf_counter() - t_gen
        from contracts.events import UserEvent

        for _, v in records[:: max(1, len(records) // 2000)]:
            UserEvent.model_validate_json(v)  # a sample of the payloads against the contract
        prod = produce_all(s, topics.user_events, records)
        ends = end_offsets(s, topics.user_events)
        if sum(ends.values()) != args.events:
            raise BenchError(f"user.events holds {sum(ends.values())} records, expected {args.events}")
        report["produce"] = {**prod, "generate_s": round(gen_s, 2), "end_offsets": ends,
                             "actions": truth["actions"], "non_impression_events": truth["non_impression"],
                             "distinct_users": truth["distinct_users"]}
        del records

        # ---- 3. raw getmany read
        print("[users] raw aiokafka getmany read", file=sys.stderr)
        raw = asyncio.run(raw_getmany(s, topics.user_events, args.events, raw_group, args.max_records,
                                      args.timeout_ms, deadline_s=args.timeout))
        if not raw["complete"]:
            raise BenchError(f"raw read got {raw['events']}/{args.events} records before the deadline")
        report["raw_getmany"] = raw

        # ---- 4. the worker's user agent
        print("[users] restarting the worker; timing the user agent", file=sys.stderr)
        from indexing.redis_keys import RedisKeys

        rk = RedisKeys(s.redis.key_prefix)
        fence_keys = {p: rk.fence(group, topics.user_events, p) for p in sorted(ends)}
        targets = {p: ends[p] - 1 for p in ends if ends[p] > 0}
        t_spawn = time.perf_counter()
        worker.start()
        wait_for(lambda: worker.group_active(admin), args.ready_timeout, "consumer group to be active", worker,
                 poll_s=0.05)
        t_active = time.perf_counter()
        cpu0, meter, redis0 = worker.cpu_seconds(), CpuMeter(), redis_costs(store.r)
        progress: list[tuple[float, int]] = [(0.0, 0)]
        t_first_commit: float | None = None
        applied_at_first = 0
        deadline = t_active + args.timeout
        while True:
            vals = store.r.mget([fence_keys[p] for p in targets])
            now = time.perf_counter()
            fences = {p: (int(v) if v is not None else -1) for p, v in zip(targets, vals, strict=True)}
            applied = sum(f + 1 for f in fences.values())
            if t_first_commit is None and applied > 0:
                t_first_commit, applied_at_first = now, applied
            if not progress or progress[-1][1] != applied:
                progress.append((now - t_active, applied))
            if all(fences[p] == targets[p] for p in targets):
                t_done = now
                break
            if now > deadline:
                raise BenchError(f"user agent applied {applied}/{args.events} events in {args.timeout:.0f}s:\n"
                                 f"{worker.log_tail()}")
            if not worker.alive():
                raise BenchError(f"worker died:\n{worker.log_tail()}")
            time.sleep(0.02)
        cpu1, busy_cores, redis1 = worker.cpu_seconds(), meter.busy_cores(), redis_costs(store.r)
        dt = t_done - t_active

        def user_lag_zero() -> bool:
            rows = [r for r in consumer_lag(s, [group]) if r.topic == topics.user_events]
            return len(rows) == len(targets) and all(r.lag == 0 for r in rows)

        committed_s = None
        try:
            wait_for(user_lag_zero, 30, "user.events committed lag 0", worker, poll_s=0.1)
            committed_s = round(time.perf_counter() - t_active, 3)
        except BenchError as exc:
            report["committed_lag_error"] = str(exc)[:500]
        agent: dict[str, Any] = {
            "events": args.events,
            "worker_spawn_to_group_active_s": round(t_active - t_spawn, 2),
            "first_commit_after_active_s": round((t_first_commit or t_done) - t_active, 3),
            "seconds_from_active": round(dt, 3),
            "events_per_s": round(args.events / dt, 1),
            "events_per_s_after_first_commit": (
                round((args.events - applied_at_first) / (t_done - t_first_commit), 1)
                if t_first_commit and t_done > t_first_commit else None),
            "committed_lag_zero_after_active_s": committed_s,
            "worker_cpu_cores": round((cpu1 - cpu0) / dt, 3) if cpu0 is not None and cpu1 is not None else None,
            "machine_busy_cores": busy_cores,
            "worker_cpu_us_per_event": (round((cpu1 - cpu0) / args.events * 1e6, 1)
                                        if cpu0 is not None and cpu1 is not None else None),
            # the local stack's Redis over the same window (shared: other clients' calls count too)
            "redis": redis_window(redis0, redis1, dt, args.events),
            "_progress": progress[:: max(1, len(progress) // 200)] + [progress[-1]],
        }

        # ---- worker metrics (its registry started with this process: only this run's user batches)
        try:
            parsed = parse_prometheus(scrape(worker.metrics_port(timeout_s=10)))
            stages = stage_table(parsed)
            ev_total = {
                f"{dict(k).get('topic')}:{dict(k).get('outcome')}": int(v)
                for k, v in parsed["counters"].get("thaw_events", {}).items()
            }
            user_stages = {k: v for k, v in stages.items() if k in ("decode", "lookup", "update", "commit")}
            busy = sum(float(v["total_s"] or 0.0) for v in user_stages.values())
            batches = int(user_stages.get("decode", {}).get("batches") or 0)
            agent["worker_metrics"] = {
                "stage_seconds_per_batch": user_stages,
                "events_total": ev_total,
                "batches": batches,
                "mean_batch_size": round(args.events / batches, 1) if batches else None,
                "handler_busy_s": round(busy, 3),
                "handler_busy_share_of_wall": round(busy / dt, 3) if dt > 0 else None,
            }
        except Exception as exc:  # noqa: BLE001 - metrics are optional
            agent["worker_metrics_error"] = f"{type(exc).__name__}: {exc}"
        report["agent"] = agent
        report["ratio_agent_over_raw"] = round(agent["events_per_s"] / raw["events_per_s"], 4)

        # ---- 5. correctness
        space = store.current_space()
        users = truth["users"]
        got: dict[str, int] = {}
        if space is not None:
            for start in range(0, len(users), 1000):
                for u, st in store.read_states(space, users[start : start + 1000]).items():
                    if st is not None:
                        got[u] = st.n_events
        expected = truth["n_events_by_user"]
        mismatched = sorted(u for u in set(expected) | set(got) if got.get(u, 0) != expected.get(u, 0))
        dlq = sum(end_offsets(s, topics.user_dlq).values())
        report["correctness"] = {
            "space": space,
            "expected_n_events_total": truth["non_impression"],
            "redis_n_events_total": int(sum(got.values())),
            "users_with_state": len(got),
            "users_mismatched": len(mismatched),
            "mismatched_examples": {u: [expected.get(u, 0), got.get(u, 0)] for u in mismatched[:5]},
            "user_dlq_records": dlq,
            "ok": (sum(got.values()) == truth["non_impression"] and not mismatched and dlq == 0),
        }
    finally:
        worker.close()
        report["worker_log"] = str(worker.log)
        report["worker_log_issues"] = worker.log_issues()
        admin.close()
        report["cleanup"] = cleanup_namespace(s, extra_groups=[raw_group])
    report["machine"]["loadavg_after"] = machine_info()["loadavg_1_5_15"]
    return report


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    raw, agent = report["raw_getmany"], report["agent"]
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(16, 4.5))
    names = ["raw aiokafka\ngetmany (bytes)", "Thaw user agent\n(applied to Redis)"]
    vals = [raw["events_per_s"], agent["events_per_s"]]
    bars = ax1.bar(names, vals, color=["#8c8c8c", "#1f77b4"])
    for b, v in zip(bars, vals, strict=True):
        ax1.annotate(f"{v:,.0f}/s", (b.get_x() + b.get_width() / 2, b.get_height()), ha="center", va="bottom")
    ax1.set_ylabel("user events per second")
    ax1.set_title(f"agent / raw = {report['ratio_agent_over_raw']:.3f} "
                  f"({report['config']['events']:,} events, {report['config']['partitions']} partitions)")
    ax1.set_ylim(0, max(vals) * 1.15)
    for key, label, color in (("raw_getmany", "raw getmany", "#8c8c8c"), ("agent", "user agent", "#1f77b4")):
        prog = report[key].get("_progress") or []
        if prog:
            ax2.plot([p[0] for p in prog], [p[1] for p in prog], label=label, color=color)
    ax2.set_xlabel("seconds since the consumer group was active")
    ax2.set_ylabel("events read / applied")
    ax2.set_title("progress")
    ax2.grid(True, alpha=0.3)
    ax2.legend()
    stages = (agent.get("worker_metrics") or {}).get("stage_seconds_per_batch") or {}
    names3 = [n for n in ("decode", "lookup", "update", "commit") if n in stages]
    if names3:
        means = [float(stages[n]["mean_ms"] or 0.0) for n in names3]
        p99 = [float(stages[n]["p99_ms_est"] or 0.0) for n in names3]
        x = np.arange(len(names3))
        ax3.bar(x - 0.2, means, 0.4, label="mean", color="#1f77b4")
        ax3.bar(x + 0.2, p99, 0.4, label="p99 (bucket estimate)", color="#aec7e8")
        ax3.set_xticks(x, names3)
        ax3.set_ylabel("ms per batch")
        batch = (agent.get("worker_metrics") or {}).get("mean_batch_size")
        ax3.set_title(f"worker stages (mean batch {batch}); worker {agent.get('worker_cpu_cores')} cores, "
                      f"machine {agent.get('machine_busy_cores')}", fontsize=9)
        ax3.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.user_throughput", description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000, help="user events to pre-produce (default 100000)")
    ap.add_argument("--users", type=int, default=5_000, help="distinct users (default 5000)")
    ap.add_argument("--items", type=int, default=300, help="items indexed first (default 300)")
    ap.add_argument("--catalogue", choices=TEXT_DATASETS, default="ml-100k",
                    help="where the items come from (benchmarks._harness.text_items): ml-100k (default) and "
                         "community are in a plain clone, lastfm needs THAW_DATASETS_DIR")
    ap.add_argument("--max-records", type=int, default=10_000, help="raw getmany max_records (default 10000)")
    ap.add_argument("--timeout-ms", type=int, default=200, help="raw getmany timeout_ms (default 200)")
    ap.add_argument("--timeout", type=float, default=600.0, help="max seconds for each read (default 600)")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="worker start timeout (s)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory (default benchmarks/results)")
    ap.add_argument("--keep-progress", action="store_true", help="keep the progress curves in the JSON")
    return ap


def main(argv: list[str] | None = None) -> int:
    ap = parser()
    args = ap.parse_args(argv)
    if args.events < 1 or args.users < 1 or args.items < 1:
        ap.error("--events, --users and --items must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # describe_groups can't decode Faust's member metadata
    args.out.mkdir(parents=True, exist_ok=True)
    t0 = time.time()
    try:
        report = run(args)
    except BenchError as exc:
        print(f"[users] FAILED: {exc}", file=sys.stderr)
        write_json(args.out / "user_throughput.json", {"benchmark": "user_throughput", "error": str(exc)[-4000:]})
        return 1
    report["elapsed_s"] = round(time.time() - t0, 1)
    png = args.out / "user_throughput.png"
    plot(report, png)
    if not args.keep_progress:
        report["raw_getmany"].pop("_progress", None)
        report["agent"].pop("_progress", None)
    js = args.out / "user_throughput.json"
    write_json(js, report)
    print(f"[users] raw getmany {report['raw_getmany']['events_per_s']:,.0f}/s, user agent "
          f"{report['agent']['events_per_s']:,.0f}/s, ratio {report['ratio_agent_over_raw']:.4f}; correctness "
          f"{'OK' if report['correctness']['ok'] else 'FAILED'}; wrote {js} and {png} in {report['elapsed_s']} s",
          file=sys.stderr)
    return 0 if report["correctness"]["ok"] else 2


if __name__ == "__main__":
    raise SystemExit(main())
