"""The main job (``thaw demo``): local stack + engine + a replay of real data, then a freshness/quality report.

What it does, in one isolated namespace per run (its own topic prefix, consumer group, Milvus collection and Redis
key prefix, printed at the end so you can inspect it with ``thaw recall``/``thaw lag``):

1. ``thaw stack up`` (reusing healthy services), and the text model exported to ONNX if it is not yet.
2. Starts ``thaw worker`` as a subprocess.
3. Samples MovieLens-100k (shipped inside the recbole wheel, so a plain clone has it): the most-rated films become
   new ``track`` posts (title + genres), a sample of their raters becomes users (gender and age bucket in their
   profiles); ratings become ``like`` (>= 4), ``play`` or ``skip`` (<= 2). Each user's ratings are split by time:
   the earliest 80% are replayed as ``user.events``, the latest 20% are held out (the held-out skips are not
   relevant items). A few extra users are kept as brand-new users.
   A small share of deliberately bad records is injected.
4. Publishes a dozen tracks with real audio (rendered music21 clips, when that corpus is built) and a dozen moments
   with real images (OpenMoji) and reports which content fields each got from the published encoders.
5. Measures: produce->indexed freshness of every item (from ``content.indexed`` traces), new-user
   first-event->recall-reflects-it latency, recall quality on the held-out ratings (Milvus search with the users'
   Redis vectors) next to the popularity fallback and random, DLQ accounting (every bad record must be in a DLQ),
   and the final consumer lag.
6. Starts ``thaw serve`` on the same namespace and measures ``/recommend``: held-out quality per A/B arm (recall
   order vs the same with a 20% new-item quota), no already-seen item served, latency sequentially and under 16
   concurrent clients, and the new-item exposure share per arm from the API's ``/metrics``.
7. Stops the worker, and the stack if this run started it (``--keep`` leaves both running).
"""

from __future__ import annotations

import base64
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.registry import ModelRegistry
from encoders.text import ensure_minilm
from indexing.milvus_items import ItemIndex
from indexing.redis_users import UserStore
from infra.lag import consumer_lag, group_is_active, wait_for_group_coordinator
from infra.procs import stop_process_group
from infra.settings import Settings
from infra.stack import LocalStack
from ranking.online.recall import Recaller
from streams.events import ContentIndexed
from streams.topics import Topics, ensure_topics
from workloads.datasets import load_dataset
from workloads.metrics import list_metrics
from workloads.replay import Publisher, media_items, media_roots, replay_sample, sample_dataset

HOLDOUT_SHARE = 0.2
NEW_USERS = 8


@dataclass
class DemoReport:
    ok: bool = True
    sections: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, **self.sections}

    def render(self) -> str:
        lines = ["", "=== Thaw demo report ==="]
        for name, sec in self.sections.items():
            lines.append(f"\n[{name}]")
            if isinstance(sec, dict):
                for k, v in sec.items():
                    lines.append(f"  {k:38s} {json.dumps(v) if isinstance(v, dict | list) else v}")
            else:
                lines.append(f"  {sec}")
        lines.append("")
        lines.append("RESULT: " + ("OK" if self.ok else "PROBLEMS: " + "; ".join(self.problems)))
        return "\n".join(lines)

    def fail(self, msg: str) -> None:
        self.ok = False
        self.problems.append(msg)


def _pct(xs: list[float], q: float) -> float:
    return round(float(np.percentile(xs, q)), 4) if xs else float("nan")


def _consume_all(s: Settings, topic: str, expect: int, timeout_s: float) -> list[bytes]:
    """Read a topic from the beginning until ``expect`` records or the timeout."""
    from infra.clients import kafka_consumer

    c = kafka_consumer(
        s.kafka,
        topic,
        group_id=None,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=1000,
    )
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    try:
        while len(out) < expect and time.monotonic() < deadline:
            for m in c:
                out.append(m.value)
                if len(out) >= expect:
                    break
    finally:
        c.close()
    return out


def run_demo(settings: Settings, n_items: int = 400, n_users: int = 60, rate: float = 50.0,
             keep: bool = False) -> DemoReport:
    rep = DemoReport()
    run = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]
    # the worker reads the demo's file:// media (the corpus directories) and nothing else of the filesystem
    s = settings.namespaced(f"demo_{run}").with_media_roots(*media_roots())
    topics = Topics.for_prefix(s.kafka.topic_prefix)

    # 1. stack + model
    t0 = time.perf_counter()
    stack = LocalStack(settings)
    running_before = {x.name for x in stack.status() if x.healthy}
    statuses = stack.up()
    started_here = [x.name for x in statuses if x.managed and x.name not in running_before]
    rep.sections["stack"] = {
        "up_s": round(time.perf_counter() - t0, 2),
        **{x.name: f"{x.address} healthy={x.healthy} managed={x.managed}" for x in statuses},
    }
    t1 = time.perf_counter()
    mv = ensure_minilm(ModelRegistry(s.models.dir))
    rep.sections["model"] = {"text": f"{mv.manifest.name}@{mv.manifest.version}",
                             "ready_s": round(time.perf_counter() - t1, 2)}
    ensure_topics(s.kafka, topics)
    wait_for_group_coordinator(s, s.stream.app_id)  # before the group reads below (a fresh broker: ~0.4 s)

    # 2. worker
    # the demo's quality section measures the MiniLM text space (a CF space is measured by benchmarks.stream_quality)
    env = {**os.environ, **s.env(), "THAW_STREAM__SPACE": "text"}
    metrics_port = s.stream.metrics_port + 1
    log_path = s.stack.home / f"demo-worker-{run}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logf = log_path.open("wb")
    worker = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "thaw", "worker", "--loglevel", "warning", "--metrics-port", str(metrics_port)],
        env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        t_w = time.perf_counter()
        while not group_is_active(s, s.stream.app_id):
            if worker.poll() is not None or time.perf_counter() - t_w > 180:
                rep.fail(f"the worker did not start consuming (see {log_path})")
                return rep
            time.sleep(0.5)
        rep.sections["model"]["worker_ready_s"] = round(time.perf_counter() - t_w, 2)
        _run(rep, s, topics, run, n_items, n_users, rate, worker, mv.manifest.dim)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        logf.close()
        if not keep and started_here:
            stack.down(started_here)
    rep.sections["inspect"] = {
        "env": " ".join(f"{k}={v}" for k, v in s.env().items()),
        "worker_log": str(log_path),
        "stack_left_running": keep or not started_here,
    }
    return rep


def _serve(rep: DemoReport, s: Settings, run: str, eval_users: list[str], held: dict[str, set[str]],
           store: UserStore, space: str, clients: int = 16, requests_each: int = 25) -> None:
    """``thaw serve`` as a subprocess on the demo namespace: held-out quality of the served lists per A/B arm,
    latency sequentially and under ``clients`` concurrent clients, and the new-item exposure share.

    Two arms split 50/50 by user hash: ``recall`` (the recall order, no quota) and ``fresh20`` (the same with a 20%
    new-item quota). Both use ``ranker: none``: the published rankers are trained on other id spaces (the simulator
    or MovieLens), and a ranker trained on all MovieLens ratings would have seen the demo's held-out ones; the
    recall -> rank comparison is ``benchmarks/serve.py``, on the simulator's ground truth with a time hold-out.
    """
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    variants = [{"name": "recall", "ranker": "none", "new_item_share": 0.0},
                {"name": "fresh20", "ranker": "none", "new_item_share": 0.2}]
    # every post was created during this run: the window is set so that the newest 20% of them count as "new"
    created = sorted(ms for _, ms in store.freshest(space, 100_000))
    cutoff_ms = created[int(0.8 * (len(created) - 1))] if created else 0
    window_s = max(1.0, time.time() - cutoff_ms / 1000.0)
    env = {**os.environ, **s.env(), "THAW_SERVE__VARIANTS": json.dumps(variants),
           "THAW_SERVE__FRESH_WINDOW_S": f"{window_s:.1f}"}
    log_path = s.stack.home / f"demo-serve-{run}.log"
    logf = log_path.open("wb")
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "thaw", "serve", "--port", str(port), "--log-level", "warning"],
        env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    sec: dict[str, Any] = {"url": base, "arms": variants, "fresh_window_s": round(window_s, 1),
                           "posts": len(created)}
    try:
        t0 = time.perf_counter()
        while True:
            try:
                if httpx.get(f"{base}/readyz", timeout=5).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if proc.poll() is not None or time.perf_counter() - t0 > 90:
                rep.fail(f"thaw serve did not become ready (see {log_path})")
                return
            time.sleep(0.2)
        sec["ready_s"] = round(time.perf_counter() - t0, 2)
        with httpx.Client(base_url=base, timeout=30) as client:
            lists: dict[str, tuple[list[list[str]], list[set[str]]]] = {}
            lat, leaked, new_share, errors = [], 0, [], 0
            for u in eval_users:
                t = time.perf_counter()
                r = client.get("/recommend", params={"user_id": u, "k": 20})
                lat.append((time.perf_counter() - t) * 1000)
                if r.status_code != 200:
                    errors += 1
                    continue
                body = r.json()
                ids = [it["item_id"] for it in body["items"]]
                leaked += len(set(ids) & set(store.seen(u)))
                new_share.append(sum(it["new"] for it in body["items"]) / max(len(ids), 1))
                ranked, rel = lists.setdefault(body["ab"]["variant"], ([], []))
                ranked.append(ids)
                rel.append(held[u])
            sec["sequential"] = {"requests": len(lat), "errors": errors, "p50_ms": _pct(lat, 50),
                                 "p99_ms": _pct(lat, 99)}
            sec["held-out ratings per arm"] = {arm: {"users": len(r), **list_metrics(r, rel, 20)}
                                             for arm, (r, rel) in sorted(lists.items())}
            sec["seen items served (must be 0)"] = leaked
            if leaked:
                rep.fail(f"{leaked} already-seen items were served")
            if errors:
                rep.fail(f"{errors} /recommend requests failed")

            def one(u: str) -> tuple[float, int]:
                t = time.perf_counter()
                code = client.get("/recommend", params={"user_id": u, "k": 20}).status_code
                return (time.perf_counter() - t) * 1000, code

            work = [eval_users[i % len(eval_users)] for i in range(clients * requests_each)]
            t_load = time.perf_counter()
            with ThreadPoolExecutor(clients) as pool:
                res = list(pool.map(one, work))
            wall = time.perf_counter() - t_load
            conc = [ms for ms, _ in res]
            sec[f"{clients} concurrent clients"] = {
                "requests": len(res), "errors": sum(c != 200 for _, c in res), "req_per_s": round(len(res) / wall, 1),
                "p50_ms": _pct(conc, 50), "p99_ms": _pct(conc, 99),
                "note": "client and server share this machine's cores",
            }
            metrics = client.get("/metrics").text
        served = {}
        for line in metrics.splitlines():
            if line.startswith("thaw_recommend_items_total{"):
                labels, value = line.rsplit(" ", 1)
                served[labels[len("thaw_recommend_items_total"):]] = float(value)
        for arm in ("recall", "fresh20"):
            n_new = served.get(f'{{new="true",variant="{arm}"}}', 0.0)
            n_all = n_new + served.get(f'{{new="false",variant="{arm}"}}', 0.0)
            sec[f"new-item exposure share, arm {arm}"] = round(n_new / n_all, 4) if n_all else None
    finally:
        stop_process_group(proc)
        logf.close()
        rep.sections["serving: thaw serve /recommend"] = sec


def _media_posts(rep: DemoReport, s: Settings, topics: Topics, run: str, n_each: int = 12) -> None:
    """Publish real tracks (audio) and moments (images) and report the content fields each one got."""
    from encoders.featurizer import ContentFeaturizer

    media = media_items(n_each, n_each, seed=2, tag=run)
    fz = ContentFeaturizer.from_registry(ModelRegistry(s.models.dir), threads=1)
    sec: dict[str, Any] = {"encoders_published": fz.model_versions, "encoders_missing": list(fz.missing)}
    if not media:
        sec["note"] = "no media corpus built (thaw corpus music build; workloads.imagetext build)"
        rep.sections["multimodal posts"] = sec
        return
    pub = Publisher(s, rate=10.0)
    for it in media:
        pub.send_item(topics.content_new, it)
    pub.close()
    ids = {it["item_id"] for it in media}
    traces: list[ContentIndexed] = []
    deadline = time.monotonic() + 90
    while len(traces) < len(ids) and time.monotonic() < deadline:
        traces = [t for t in (ContentIndexed.model_validate_json(v) for v in
                              _consume_all(s, topics.content_indexed, 10**6, 2)) if t.item_id in ids]
    fresh = [(t.indexed_at - t.produced_at).total_seconds() for t in traces if t.produced_at]
    by_kind: dict[str, dict[str, int]] = {}
    for t in traces:
        key = "+".join(t.features)
        by_kind.setdefault(t.kind.value, {})[key] = by_kind.setdefault(t.kind.value, {}).get(key, 0) + 1
    stages = sorted({k for t in traces for k in t.stage_ms if k.startswith("encode_")})
    sec.update({
        "published": {k: sum(1 for m in media if m["kind"] == k) for k in ("track", "moment")},
        "indexed": len(traces), "features by kind": by_kind,
        "produce_to_indexed_p50_s": _pct(fresh, 50), "produce_to_indexed_p99_s": _pct(fresh, 99),
        "encoder_batch_ms_p50": {k: _pct([t.stage_ms[k] for t in traces if k in t.stage_ms], 50) for k in stages},
    })
    rep.sections["multimodal posts"] = sec
    if len(traces) != len(media):
        rep.fail(f"only {len(traces)}/{len(media)} media posts were indexed")


def _run(rep: DemoReport, s: Settings, topics: Topics, run: str, n_items: int, n_users: int, rate: float,
         worker: subprocess.Popen[bytes], dim: int) -> None:
    # 3. data: MovieLens-100k sample, per-user time holdout, brand-new users
    ds = load_dataset("ml-100k")
    sample = sample_dataset(ds, items_limit=n_items, users_limit=n_users + NEW_USERS, seed=0)
    users = [p["user_id"] for p in sample.profiles]
    new_users = set(users[-NEW_USERS:])
    by_user: dict[str, list[dict[str, Any]]] = {}
    for e in sample.events:
        by_user.setdefault(e["user_id"], []).append(e)
    rng = np.random.default_rng(0)
    replayed: list[dict[str, Any]] = []
    held: dict[str, set[str]] = {}
    for u, evs in by_user.items():
        if u in new_users:
            continue
        order = np.argsort([int(e["context"]["orig_ts"]) for e in evs], kind="stable")  # the user's ratings by time
        n_hold = max(1, int(round(HOLDOUT_SHARE * len(evs)))) if len(evs) >= 3 else 0
        n_keep = len(evs) - n_hold
        held[u] = {evs[i]["item_id"] for i in order[n_keep:] if evs[i]["action"] != "skip"}
        replayed.extend(evs[i] for i in sorted(order[:n_keep]))
    sample.events = replayed
    sample.profiles = [p for p in sample.profiles if p["user_id"] not in new_users]
    rep.sections["data"] = {
        "dataset": "MovieLens-100k (GroupLens, from the recbole wheel)",
        "items": len(sample.items), "users": len(sample.profiles), "replayed_events": len(replayed),
        "held_out_events": sum(len(v) for v in held.values()), "brand_new_users": len(new_users),
    }

    # 4a. replay (items at `rate`, then profiles and events as fast as the producer goes)
    stats = replay_sample(s, sample, rate=rate, topics=topics, bad_share=0.02, progress=False, seed=1)
    rep.sections["replay"] = stats
    if stats["items_indexed_before_events"] != len(sample.items):
        rep.fail(f"only {stats['items_indexed_before_events']}/{len(sample.items)} items became searchable")
    if worker.poll() is not None:
        rep.fail(f"worker exited with code {worker.returncode}")
        return

    # 4b. freshness of items from the content.indexed traces
    traces = [ContentIndexed.model_validate_json(v) for v in
              _consume_all(s, topics.content_indexed, len(sample.items), 60)]
    fresh = [(t.indexed_at - t.produced_at).total_seconds() for t in traces if t.produced_at]
    enc = [t.stage_ms.get("encode", 0.0) for t in traces]
    rep.sections["freshness: produce -> searchable"] = {
        "items_traced": len(traces), "p50_s": _pct(fresh, 50), "p99_s": _pct(fresh, 99), "max_s": _pct(fresh, 100),
        "encode_batch_ms_p50": _pct(enc, 50),
    }

    # 4b'. posts with real media: tracks with audio, moments with images, through every published encoder
    _media_posts(rep, s, topics, run)

    # 4c. wait until the user agent caught up (lag 0 on user.events and user.profile)
    deadline = time.monotonic() + 120
    lag_total = -1
    while time.monotonic() < deadline:
        rows = [r for r in consumer_lag(s, [s.stream.app_id]) if r.topic in (topics.user_events, topics.user_profile)]
        lag_total = sum(r.end_offset if r.lag is None else r.lag for r in rows)
        if rows and lag_total == 0:
            break
        time.sleep(0.5)
    if lag_total != 0:
        rep.fail(f"user agent did not catch up (lag {lag_total})")

    store = UserStore(s.redis)
    items = ItemIndex(s.milvus, dim=dim)
    items.ensure()
    rec = Recaller(store, items)

    # 4d. new users: profile without declared tastes -> fallback; first event -> own vector
    pub = Publisher(s)
    lat = []
    fallback_ok = 0
    for u in sorted(new_users):
        pub.send_profile(topics.user_profile, {"user_id": u})
    pub.flush()
    time.sleep(0.5)
    for u in sorted(new_users):
        if rec.recall(u, 20).source == "fallback":
            fallback_ok += 1
        first = by_user[u][0]
        t_sent = pub.send_event(topics.user_events, first)
        pub.flush()
        while time.time() - t_sent < 30:
            r = rec.recall(u, 20)
            if r.source == "vector" and int(r.user_state.get("n_events", 0)) >= 1:
                lat.append(time.time() - t_sent)
                break
            time.sleep(0.01)
    # a user who declares tastes at registration is personalised before any event
    pub.send_profile(topics.user_profile, {"user_id": f"demo:{run}:declared", "genres": ["Sci-Fi", "Thriller"]})
    pub.close()
    t_decl = time.time()
    declared_src = "fallback"
    while time.time() - t_decl < 30 and declared_src != "vector":
        declared_src = rec.recall(f"demo:{run}:declared", 10).source
        time.sleep(0.05)
    rep.sections["freshness: new user first event -> recall reflects it"] = {
        "users": len(new_users), "reflected": len(lat), "p50_s": _pct(lat, 50), "p99_s": _pct(lat, 99),
        "fallback_before_first_event": f"{fallback_ok}/{len(new_users)}",
        "declared-genres user served from": declared_src,
    }
    if len(lat) != len(new_users):
        rep.fail(f"only {len(lat)}/{len(new_users)} new users' first events reached recall within 30 s")

    # 4e. quality on the held-out ratings: user vectors vs popularity fallback vs random
    eval_users = [u for u in held if held[u]]
    ranked_vec, ranked_pop, ranked_rnd, rel = [], [], [], []
    all_items = [i["item_id"] for i in sample.items]
    t_q = time.perf_counter()
    lat_recall = []
    for u in eval_users:
        t = time.perf_counter()
        r = rec.recall(u, 20)
        lat_recall.append((time.perf_counter() - t) * 1000)
        seen = set(store.seen(u))
        ranked_vec.append([i.item_id for i in r.items])
        ranked_pop.append([i.item_id for i in rec.fallback(20, seen)])
        pool = [i for i in all_items if i not in seen]
        ranked_rnd.append(list(rng.choice(pool, size=min(20, len(pool)), replace=False)))
        rel.append(held[u])
    q: dict[str, Any] = {
        "users": len(eval_users),
        "user vectors (MiniLM space)": list_metrics(ranked_vec, rel, 20),
        "popularity fallback": list_metrics(ranked_pop, rel, 20),
        "random": list_metrics(ranked_rnd, rel, 20),
        "recall_call_ms_p50": _pct(lat_recall, 50), "recall_call_ms_p99": _pct(lat_recall, 99),
        "eval_s": round(time.perf_counter() - t_q, 2),
    }
    rep.sections["quality: held-out ratings, top-20 from Milvus"] = q
    if q["user vectors (MiniLM space)"]["recall@20"] <= q["random"]["recall@20"]:
        rep.fail("user-vector recall is no better than random")

    # 4e'. the recommendation API over the same namespace
    _serve(rep, s, run, eval_users, held, store, rec.space)

    # 4f. DLQ accounting and final lag
    n_bad = stats["bad_records"]
    dlq = _consume_all(s, topics.content_dlq, 10**6, 5) + _consume_all(s, topics.user_dlq, 10**6, 5)
    bad_keys = {json.loads(v)["key_b64"] for v in dlq}
    injected_found = sum(1 for k in bad_keys if k and base64.b64decode(k).startswith(b"bad:"))
    rep.sections["reliability"] = {
        "bad_records_injected": n_bad, "found_in_dlq": injected_found, "dlq_records_total": len(dlq),
        "worker_alive": worker.poll() is None,
    }
    if injected_found != n_bad:
        rep.fail(f"{n_bad - injected_found} injected bad records missing from the DLQs")
    lag_rows = consumer_lag(s, [s.stream.app_id])
    rep.sections["consumer lag (thaw lag)"] = {
        f"{r.topic}[{r.partition}]": ("-" if r.lag is None else r.lag) for r in lag_rows
    }
    items.close()
