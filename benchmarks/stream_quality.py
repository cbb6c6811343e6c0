"""Cold-item quality through the live stream vs offline: the stream must reproduce the offline numbers.

Run::

    python -m benchmarks.stream_quality                      # MovieLens-100k, seed 0
    python -m benchmarks.stream_quality --dataset lastfm

1. Offline: the cold-item harness (``ranking.evaluation.cold_items.run_cold_items``, models ``cb2cf``, ``hybrid``
   and the sparse kNN baselines) trains the DSSM on the warm interactions and CB2CF on the warm items, picks what
   to serve on validation (``cb2cf``, or the ``hybrid`` of CB2CF and the sparse item-kNN) and scores the test cold
   items (every test user ranks all test cold items). The trained DSSM towers and CB2CF (with the words field's
   vectorizer and, for the hybrid, its sparse half) are published with ONNX into a fresh model directory (beside a
   copy of the MiniLM export), version ``stream-quality``.
2. Live: a ``thaw worker`` in its own namespace serves that CF space (``THAW_STREAM__SPACE=cf``). The test users'
   DSSM vectors are loaded into Redis (``streams.rollout.cf_load``; warm items are *not* loaded, so the collection holds
   exactly the test cold items, as in the offline protocol). Every test cold item is published to
   ``content.new`` as the replayer would publish it (text + tags); the worker embeds it with MiniLM, vectorises its
   words, projects it with CB2CF (ONNX Runtime), appends the hybrid's sparse part and upserts it into Milvus.
3. For every test user, a Milvus top-``k`` search with their vector from Redis (the same search ``thaw recall``
   runs); Precision/Recall/NDCG/Hit@k over the same relevance sets as offline.
4. Freshness in the CF space: produce -> indexed of every cold item (the worker's ``content.indexed`` traces,
   items published at ``--rate``), and for ``--new-users`` brand-new users, first event -> ``thaw recall``
   serves their own vector.

Differences can come from the ONNX graphs (float32, checked allclose in tests), the Milvus index (approximate
search) and the text path (MiniLM through ONNX in the stream vs the cached offline embeddings). Writes
``benchmarks/results/stream_quality_<dataset>.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import (
    DEFAULT_OUT,
    Worker,
    base_settings,
    cleanup_namespace,
    machine_info,
    new_namespace,
    stack_up,
    wait_for,
    write_json,
)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.stream_quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", default="ml-100k", choices=["ml-100k", "lastfm"])
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--rate", type=float, default=20.0, help="items/s published (default 20)")
    ap.add_argument("--new-users", type=int, default=30, help="brand-new users timed first event -> recall")
    ap.add_argument("--lightgcn", action="store_true",
                    help="also start warm users from LightGCN vectors mapped into the DSSM space (offline and live)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    from contracts.ids import published_content, safe_id
    from contracts.topics import Topics
    from encoders.registry import ModelRegistry
    from encoders.text import MODEL_NAME, ensure_minilm
    from indexing.milvus_items import ItemIndex, collection_for
    from indexing.redis_state import RedisState
    from infra.topics import ensure_topics
    from ranking.evaluation.cold_items import ColdEvalArtifacts, ColdEvalConfig, load_cold_split, run_cold_items
    from ranking.training.common import evaluate_task
    from ranking.training.export import publish_cold_item_models
    from streams.rollout.cf_load import load_warm_vectors
    from workloads.replay import Publisher

    t_all = time.perf_counter()
    base = base_settings()
    report: dict[str, Any] = {"benchmark": "stream_quality", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "config": vars(args) | {"out": str(args.out)}, "machine": machine_info()}

    # ---- offline
    t0 = time.perf_counter()
    ds, split, info = load_cold_split(dataset=args.dataset, seed=args.seed)
    art = ColdEvalArtifacts()
    cfg = ColdEvalConfig(k=args.k, seed=args.seed, models=("tfidf-knn", "bm25-knn", "cb2cf", "hybrid"),
                         models_dir=base.models.dir)
    offline = run_cold_items(ds, split, cfg, artifacts=art)
    served = offline["selected"]["served"]
    version = "stream-quality"
    models_dir = Path(tempfile.mkdtemp(prefix="thaw-sq-models-"))
    src = ModelRegistry(base.models.dir)
    ensure_minilm(src)
    mv = src.load(MODEL_NAME)
    shutil.copytree(mv.path, models_dir / MODEL_NAME / mv.manifest.version)
    ModelRegistry(models_dir).set_current(MODEL_NAME, mv.manifest.version)
    publish_cold_item_models(art, models_dir, version=version, report=offline)
    if args.lightgcn:
        from ranking.models.lightgcn import LightGCNConfig, apply_linear_map, fit_linear_map
        from ranking.training.cb2cf import cb2cf_score
        from ranking.training.common import Interactions
        from ranking.training.export import export_lightgcn_users
        from ranking.training.lightgcn import train_lightgcn

        t_lg = time.perf_counter()
        train = Interactions(ds.users[split.train], ds.items[split.train], ds.n_users, ds.n_items)
        lg, lglog = train_lightgcn(train, LightGCNConfig(seed=args.seed, threads=2))
        everyone = np.arange(ds.n_users)
        warm_u = np.unique(train.users)
        lv = lg.user_vectors(everyone)
        assert art.dssm is not None and art.content is not None and art.selected_objective is not None
        w = fit_linear_map(lv[warm_u], art.dssm.user_vectors(warm_u))
        export_lightgcn_users(ModelRegistry(models_dir), version, lv, w, list(ds.user_ids))
        mapped = apply_linear_map(lv, w)
        score = cb2cf_score(art.cb2cf[art.selected_objective], art.content, lambda u: mapped[u])
        test_task0 = split.eval_task(ds, "test")
        lg_off = {k: v for k, v in evaluate_task(test_task0, score, k=args.k).items() if "@" in k}
        report["offline_lightgcn_users"] = {"metrics": lg_off, "train_seconds": round(time.perf_counter() - t_lg, 1),
                                            "best_epoch": lglog.best_epoch}
        print(f"[stream_quality] offline cb2cf with LightGCN users: {lg_off}", file=sys.stderr)
    key = f"ndcg@{args.k}"
    off = {k: v for k, v in offline["models"][served].items() if "@" in k and not k.startswith("val_")}
    report["offline"] = {"served_model": served, "metrics": off, "selected": offline["selected"],
                         "split": offline["split"], "seconds": round(time.perf_counter() - t0, 1),
                         "all_models": {m: {k: v for k, v in e.items() if "ndcg" in k or "recall@" in k}
                                        for m, e in offline["models"].items()}}
    print(f"[stream_quality] offline {served} (the served model): {off}", file=sys.stderr)

    # ---- live
    report["stack"] = stack_up(base)
    ns = new_namespace("sq")
    s0 = base.namespaced(ns)
    s = s0.model_copy(update={"models": s0.models.model_copy(update={"dir": models_dir})})
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, topics)
    log_dir = args.out / "logs"
    worker = Worker(s, log_dir / f"stream_quality-{args.dataset}-worker.log",
                    extra_env={"THAW_MODELS__DIR": str(models_dir), "THAW_STREAM__SPACE": "cf"})
    space = f"cb2cf@{version}"
    try:
        worker.start()
        worker.wait_ready()
        report["warm_load"] = load_warm_vectors(s, version=version, items=False, users=True)
        test_task = split.eval_task(ds, "test")
        prefix = ds.name.replace(" ", "_")
        cold = [int(i) for i in test_task.candidates]
        payloads = [{"item_id": safe_id(f"{prefix}:i:", ds.item_ids[i]), "kind": "track",
                     "creator_id": safe_id(f"{prefix}:creator:", ds.item_ids[i]),
                     "text": published_content(ds.item_text[i], ds.item_tags[i])[0],
                     "tags": published_content(ds.item_text[i], ds.item_tags[i])[1]}
                    for i in cold]
        t_pub = time.perf_counter()
        pub = Publisher(s, rate=args.rate)
        for it in payloads:
            pub.send_item(topics.content_new, it)
        pub.close()
        cbm = ModelRegistry(models_dir).load("cb2cf", version).manifest
        dim = int(cbm.extra.get("space_dim", cbm.dim))
        ix = ItemIndex(s.milvus, dim=dim, collection=collection_for(s.milvus, space))
        wait_for(lambda: ix.count() >= len(payloads), 600, "every cold item in Milvus", worker, poll_s=0.5)
        report["live_index_seconds"] = round(time.perf_counter() - t_pub, 1)
        store = RedisState(s.redis)
        col_of = {safe_id(f"{prefix}:i:", ds.item_ids[i]): c for c, i in enumerate(cold)}
        lat: list[float] = []

        def stream_scores(users: np.ndarray, items: np.ndarray) -> np.ndarray:
            out = np.full((len(users), len(items)), -1e9, dtype=np.float32)
            for r, u in enumerate(users):
                vec, _ = store.user_vector(space, safe_id(f"{prefix}:u:", ds.user_ids[int(u)]))
                if vec is None:
                    continue
                t = time.perf_counter()
                hits = ix.search(vec[None, :], args.k)[0]
                lat.append((time.perf_counter() - t) * 1000)
                for h in hits:
                    out[r, col_of[h.item_id]] = h.score
            return out

        live = evaluate_task(test_task, stream_scores, k=args.k)
        if args.lightgcn:
            report["warm_load_lightgcn"] = load_warm_vectors(s, version=version, items=False, users=True,
                                                             users_from="lightgcn")
            live_lg = evaluate_task(test_task, stream_scores, k=args.k)
            report["live_lightgcn_users"] = {"metrics": {k: v for k, v in live_lg.items() if "@" in k}}
            print(f"[stream_quality] live with LightGCN users: {report['live_lightgcn_users']}", file=sys.stderr)

        # freshness in the CF space: produce -> indexed from the worker's traces; a brand-new user's first event
        # -> recall serves their own vector
        from kafka import KafkaConsumer

        from contracts.events import ContentIndexed
        from ranking.online.recall import Recaller, served_index

        c = KafkaConsumer(topics.content_indexed, bootstrap_servers=s.kafka.bootstrap_servers,
                          auto_offset_reset="earliest", enable_auto_commit=False, group_id=None,
                          consumer_timeout_ms=2000)
        fresh = [(tr.indexed_at - tr.produced_at).total_seconds() * 1000 for tr in
                 (ContentIndexed.model_validate_json(m.value) for m in c) if tr.produced_at is not None]
        c.close()
        rec = Recaller(store, served_index(s.milvus, models_dir, store))
        first_event_ms = []
        pub = Publisher(s)
        for j in range(args.new_users):
            uid = f"sq-new-{j}"
            ev = {"user_id": uid, "item_id": payloads[j % len(payloads)]["item_id"], "action": "like"}
            t_sent = pub.send_event(topics.user_events, ev)
            pub.flush()
            while time.time() - t_sent < 30:
                r = rec.recall(uid, args.k)
                if r.source == "vector" and int(r.user_state.get("n_events", 0)) >= 1:
                    first_event_ms.append((time.time() - t_sent) * 1000)
                    break
                time.sleep(0.005)
        pub.close()
        report["freshness"] = {
            "produce_to_indexed_ms": _summary(fresh),
            "new_user_first_event_to_recall_ms": _summary(first_event_ms),
            "new_users_reflected": f"{len(first_event_ms)}/{args.new_users}",
            "rate_items_per_s": args.rate,
        }
        report["live"] = {"metrics": {k: v for k, v in live.items() if "@" in k},
                          "search_ms_p50": round(float(np.percentile(lat, 50)), 2) if lat else None,
                          "search_ms_p99": round(float(np.percentile(lat, 99)), 2) if lat else None,
                          "users": test_task.n_rows, "items": len(payloads)}
        report["difference"] = {k: round(report["live"]["metrics"][k] - off[k], 5) for k in off
                                if k in report["live"]["metrics"]}
        print(f"[stream_quality] live: {report['live']}", file=sys.stderr)
        report["worker_log_issues"] = worker.log_issues()
    finally:
        worker.close()
        report["cleanup"] = cleanup_namespace(s)
        shutil.rmtree(models_dir, ignore_errors=True)
    report["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"stream_quality_{args.dataset}.json"
    write_json(path, report)
    _plot(report, args.out / f"stream_quality_{args.dataset}.png", key)
    print(json.dumps({"offline": off, "live": report["live"]["metrics"], "difference": report["difference"],
                      "freshness": report.get("freshness")}))
    return 0


def _summary(xs: list[float]) -> dict[str, float | int | None]:
    if not xs:
        return {"n": 0, "p50": None, "p99": None, "max": None}
    a = np.asarray(xs)
    return {"n": len(a), "p50": round(float(np.percentile(a, 50)), 1), "p99": round(float(np.percentile(a, 99)), 1),
            "max": round(float(a.max()), 1)}


def _plot(report: dict[str, Any], path: Path, key: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = sorted(report["offline"]["metrics"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(8, 4))
    ax.bar(x - 0.2, [report["offline"]["metrics"][n] for n in names], 0.4, label="offline (torch)")
    ax.bar(x + 0.2, [report["live"]["metrics"].get(n, 0.0) for n in names], 0.4,
           label="live stream (Kafka → ONNX → Milvus)")
    ax.set_xticks(x, names)
    ax.set_title(f"{report['offline']['served_model']} (served) cold items, {report['config']['dataset']}: "
                 "offline vs through the stream")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
