"""Cold-item quality against the simulator's ground truth, with the multimodal content fields.

Run::

    python -m benchmarks.sim_cold_start                  # ~1,300 items of all five kinds, ~600 users
    python -m benchmarks.sim_cold_start --steps 120      # smaller

The community simulator (``workloads.simulator``) builds items of all five kinds from real assets (tracks = rendered
music21 clips with their metadata tags, moments = OpenMoji images with captions, dynamics / fan groups / comments =
text) and users with latent tastes; a documented choice model draws the interactions, so the **true relevance** of
every item for every user is known (``p_engage >= relevance_threshold``).

Protocol: the newest 20% of items (by creation time) are the cold test items and the 10% before them the cold
validation items; every interaction on them is held out. On the warm interactions (positive actions only) a DSSM
is trained; CB2CF maps content fields to its item space, once from the MiniLM ``text`` field alone and once from
every field the published encoders produce (text, MusicCLIP and Audio MAE on tracks, FLAVA-style image and
image-text on moments) — the same featuriser the stream runs. Every warm user ranks all cold test items;
Precision/Recall/NDCG@k against (a) the ground-truth relevant set and (b) the user's held-out interactions, next to
random and content-kNN. Writes ``benchmarks/results/sim_cold_start.{json,png}``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, machine_info, write_json


def simulate(steps: int, seed: int) -> tuple[Any, list[tuple[str, str, float, float]], int]:
    """Run the simulator on the real corpora: ``(simulator, positive interactions (user, item, action weight, ts),
    number of user events)``."""
    from ranking.online.actions import ACTION_WEIGHTS
    from workloads.simulator import CommunitySimulator, SimConfig, default_catalogue

    sim = CommunitySimulator(default_catalogue(require_corpora=True), SimConfig(seed=seed, steps=steps))
    rows: list[tuple[str, str, float, float]] = []
    n_events = 0
    for ev in sim.stream():
        if ev.topic == "user.events":
            n_events += 1
            w = ACTION_WEIGHTS[ev.data["action"]]
            if w > 0:
                rows.append((ev.data["user_id"], ev.data["item_id"], w, ev.ts))
    return sim, rows, n_events


def _featurize(items: list[Any], batch: int = 32) -> tuple[Any, dict[str, Any]]:
    """ContentFields of every sim item through the stream's featuriser (media decoded from the asset files)."""
    from encoders.featurizer import ContentFeaturizer, ContentInput, content_document
    from encoders.media import decode_audio, decode_image
    from encoders.registry import ModelRegistry
    from infra.settings import load_settings
    from ranking.training.content import ContentFields

    fz = ContentFeaturizer.from_registry(ModelRegistry(load_settings().models.dir), threads=2)
    names = fz.fields
    dims = fz.dims()
    values = {n: np.zeros((len(items), dims[n]), dtype=np.float32) for n in names}
    present = np.zeros((len(items), len(names)), dtype=bool)
    t0 = time.perf_counter()
    for s in range(0, len(items), batch):
        chunk = items[s : s + batch]
        inputs = []
        for it in chunk:
            a = it.asset
            img = decode_image(Path(a.image).read_bytes()) if a.image else None
            aud = decode_audio(Path(a.audio).read_bytes(), 600.0) if a.audio else None
            inputs.append(ContentInput(content_document(a.text, list(a.tags), it.kind.replace("_", " ")), img, aud))
        fb = fz.featurize(inputs)
        for n in names:
            values[n][s : s + len(chunk)] = fb.values[n]
        present[s : s + len(chunk)] = fb.present
    info = {"fields": list(names), "missing": list(fz.missing), "models": fz.model_versions,
            "seconds": round(time.perf_counter() - t0, 1),
            "present_share": {n: round(float(present[:, k].mean()), 3) for k, n in enumerate(names)}}
    src = {n: fz.model_versions[n] for n in names}
    return ContentFields(tuple(names), tuple(values[n] for n in names), present, src), info


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sim_cold_start", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=240, help="simulated steps (default 240)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    from ranking.evaluation.baselines import content_knn_scorer, random_scorer
    from ranking.models.cb2cf import CB2CFConfig
    from ranking.models.dssm import DSSMConfig
    from ranking.training.cb2cf import cb2cf_score, train_cb2cf
    from ranking.training.common import Interactions, evaluate_task
    from ranking.training.dssm import train_dssm
    from workloads.splits import EvalTask

    t_all = time.perf_counter()
    sim, rows, n_events = simulate(args.steps, args.seed)
    pos_u = [r[0] for r in rows]
    pos_i = [r[1] for r in rows]
    items, users = sim.items, sim.users
    item_ix = {it.item_id: j for j, it in enumerate(items)}
    user_ix = {u.user_id: j for j, u in enumerate(users)}
    pu = np.array([user_ix[u] for u in pos_u], dtype=np.int64)
    pi = np.array([item_ix[i] for i in pos_i], dtype=np.int64)
    order = np.argsort([it.created_ts for it in items], kind="stable")
    n = len(items)
    test_items = np.sort(order[int(0.8 * n):])
    val_items = np.sort(order[int(0.7 * n) : int(0.8 * n)])
    cold = np.zeros(n, dtype=bool)
    cold[test_items] = cold[val_items] = True
    warm_rows = ~cold[pi]
    train = Interactions(pu[warm_rows], pi[warm_rows], len(users), n)
    warm_users = np.unique(train.users)
    report: dict[str, Any] = {
        "benchmark": "sim_cold_start", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"steps": args.steps, "seed": args.seed, "k": args.k},
        "data": {"items": n, "items_by_kind": {k: sum(1 for it in items if it.kind == k) for k in
                                               ("track", "comment", "moment", "dynamic", "fan_group")},
                 "users": len(users), "events": n_events, "positive_interactions": int(len(pu)),
                 "warm_interactions": int(warm_rows.sum()), "warm_users": int(len(warm_users)),
                 "cold_test_items": int(len(test_items)), "cold_val_items": int(len(val_items))},
        "machine": machine_info(),
    }
    print(f"[sim_cold_start] {report['data']}", file=sys.stderr)

    def task(cands: np.ndarray, truth: bool) -> EvalTask:
        col = {int(c): j for j, c in enumerate(cands)}
        if truth:
            rel_sets = sim.true_relevance(list(warm_users), list(cands)) >= sim.cfg.relevance_threshold
            rel = [np.flatnonzero(r) for r in rel_sets]
        else:
            on = np.isin(pi, cands)
            by_user: dict[int, set[int]] = {}
            for u, i in zip(pu[on], pi[on], strict=True):
                by_user.setdefault(int(u), set()).add(col[int(i)])
            rel = [np.array(sorted(by_user.get(int(u), set())), dtype=np.int64) for u in warm_users]
        keep = [r for r in range(len(warm_users)) if len(rel[r])]
        return EvalTask(users=warm_users[keep], candidates=cands, relevant=[rel[r] for r in keep])

    truth_test, truth_val = task(test_items, True), task(val_items, True)
    inter_test = task(test_items, False)
    report["data"]["test_users_truth"] = truth_test.n_rows
    report["data"]["test_users_interactions"] = inter_test.n_rows

    content, finfo = _featurize(items)
    report["featurizer"] = finfo
    print(f"[sim_cold_start] features: {finfo}", file=sys.stderr)

    t0 = time.perf_counter()
    dssm, dlog = train_dssm(train, DSSMConfig(seed=args.seed, eval_k=args.k, threads=2))
    report["dssm"] = {"seconds": round(time.perf_counter() - t0, 1), "best_epoch": dlog.best_epoch}
    warm_items = np.flatnonzero(train.item_counts() > 0)
    targets = dssm.item_vectors(warm_items)

    def metrics(score: Any) -> dict[str, Any]:
        out = {}
        for name, tk in (("truth", truth_test), ("interactions", inter_test)):
            m = evaluate_task(tk, score, k=args.k)
            out[name] = {key: round(float(v), 5) for key, v in m.items() if "@" in key}
        return out

    models: dict[str, Any] = {"random": metrics(random_scorer(args.seed))}
    variants = {"text": ("text",), "all fields": tuple(content.names)}
    for label, fields in variants.items():
        sub = content.select(fields)
        models[f"content-knn ({label})"] = metrics(content_knn_scorer(sub.concatenated(), train, None))
        t0 = time.perf_counter()
        cfg = replace(CB2CFConfig(), seed=args.seed, eval_k=args.k, out_dim=DSSMConfig().dim, threads=2,
                      objective="regression")
        res = train_cb2cf(sub, warm_items, targets, cfg, truth_val, dssm.user_vectors)
        models[f"cb2cf ({label})"] = {**metrics(cb2cf_score(res.model, sub, dssm.user_vectors)),
                                      "fields": list(fields), "train_seconds": round(time.perf_counter() - t0, 1)}
        print(f"[sim_cold_start] cb2cf ({label}): {models[f'cb2cf ({label})']}", file=sys.stderr)
    report["models"] = models
    report["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "sim_cold_start.json", report)
    _plot(report, args.out / "sim_cold_start.png", args.k)
    print(args.out / "sim_cold_start.json")
    return 0


def _plot(report: dict[str, Any], path: Path, k: int) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["models"])
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for ax, rel in zip(axes, ("truth", "interactions"), strict=True):
        ax.barh(names, [report["models"][m][rel][f"ndcg@{k}"] for m in names])
        ax.set_title(f"NDCG@{k}, relevance = {'ground truth' if rel == 'truth' else 'held-out interactions'}")
        ax.invert_yaxis()
    fig.suptitle("simulator cold items (newest 20%): CB2CF from text vs every content field")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
