"""Cold-item quality over split seeds and both protocols: the served model against the strongest simple baseline.

For every dataset, split seed and protocol (``standard``: each test user ranks the test cold items; ``gar``: every
item without training interactions is a candidate, validation positives excluded), the cold-item harness
(:func:`ranking.evaluation.cold_items.run_cold_items`) trains and scores, choosing everything on validation:

* the sparse item-kNN baselines (TF-IDF and BM25 over text and tag words, neighbourhood size chosen on validation)
  and the one of them that won on validation (``best sparse``);
* the dense content-kNN (MiniLM document vectors);
* CB2CF (MiniLM document field + the BM25 ``words`` field) in the DSSM space;
* the hybrid (CB2CF score + w x sparse kNN over all of the user's items, weighting and w chosen on validation),
  served as one vector per item;
* ``served``: whichever of CB2CF and the hybrid won on validation (what ``thaw evaluate cold-items --publish-dir``
  publishes and the worker serves).

Reported per (dataset, protocol): test NDCG@K / Recall@K per model and seed, the paired difference and ratio
``served - best sparse`` per seed with their mean and spread (sample standard deviation over seeds), and whether
the ratio clears ``--target`` (1.05) in every seed. Writes ``<out>/cold_item_quality.json`` and ``.png``.

Run::

    python -m benchmarks.cold_item_quality                                   # ml-100k, seeds 0,1,2, both protocols
    THAW_DATASETS_DIR=/path/to/datasets python -m benchmarks.cold_item_quality --datasets ml-100k,lastfm
    python -m benchmarks.cold_item_quality --plot-only

CB2CF compares objectives on validation in ``thaw evaluate cold-items``; here only ``regression`` is trained (the
objective that won every validation comparison recorded in :mod:`ranking.models.cb2cf`) to keep the run short.
CiteULike-a is a held-out benchmark: run it once, never to choose anything (``--datasets citeulike-a``).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, machine_info, write_json

MODELS = ("random", "content-knn", "tfidf-knn", "bm25-knn", "cb2cf", "hybrid")
PLOTTED = ("content-knn", "best sparse", "cb2cf", "hybrid")


def run_one(dataset: str, seed: int, protocol: str, k: int, max_users: int | None) -> dict[str, Any]:
    """One harness run; the per-model test metrics and the validation choices."""
    from ranking.evaluation.cold_items import ColdEvalConfig, evaluate_cold_items

    cfg = ColdEvalConfig(objectives=("regression",), protocol=protocol, max_users=max_users)  # type: ignore[arg-type]
    t0 = time.perf_counter()
    rep = evaluate_cold_items(None, dataset=dataset, seed=seed, k=k, models=MODELS, config=cfg)
    sel = rep["selected"]
    models = {m: {key: float(v) for key, v in e.items() if key.endswith(f"@{k}") and "coverage" not in key}
              for m, e in rep["models"].items()}
    best_sparse = sel["best_sparse_knn"]
    served = sel["served"]
    models["best sparse"] = {**models[best_sparse], "model": best_sparse}  # type: ignore[dict-item]
    models["served"] = {**models[served], "model": served}  # type: ignore[dict-item]
    return {
        "dataset": dataset, "seed": seed, "protocol": protocol, "models": models, "selected": sel,
        "split": rep["split"], "protocol_detail": rep["protocol"], "seconds": round(time.perf_counter() - t0, 1),
    }


def summarize(runs: list[dict[str, Any]], k: int, target: float) -> dict[str, Any]:
    """Per (dataset, protocol): mean/std of every model and the paired served - best sparse difference."""
    out: dict[str, Any] = {}
    key = f"ndcg@{k}"
    for ds in sorted({r["dataset"] for r in runs}):
        for proto in sorted({r["protocol"] for r in runs}):
            rs = sorted((r for r in runs if r["dataset"] == ds and r["protocol"] == proto), key=lambda r: r["seed"])
            if not rs:
                continue
            names = [m for m in rs[0]["models"] if all(m in r["models"] for r in rs)]
            per_model = {}
            for m in names:
                vals = np.array([r["models"][m][key] for r in rs])
                per_model[m] = {"mean": float(vals.mean()), "std": float(vals.std(ddof=1)) if len(vals) > 1 else 0.0,
                                "per_seed": vals.round(5).tolist()}
            served = np.array([r["models"]["served"][key] for r in rs])
            sparse = np.array([r["models"]["best sparse"][key] for r in rs])
            diff, ratio = served - sparse, served / np.maximum(sparse, 1e-12)
            sd = float(diff.std(ddof=1)) if len(diff) > 1 else 0.0
            out[f"{ds}|{proto}"] = {
                "dataset": ds, "protocol": proto, "seeds": [r["seed"] for r in rs], "models": per_model,
                "served_models": [r["models"]["served"]["model"] for r in rs],
                "best_sparse_models": [r["models"]["best sparse"]["model"] for r in rs],
                "paired": {
                    "served_minus_best_sparse": diff.round(5).tolist(),
                    "mean_difference": float(diff.mean()), "std_difference": sd,
                    "ratio": ratio.round(4).tolist(), "min_ratio": float(ratio.min()),
                    "mean_ratio": float(ratio.mean()),
                    "gain_beyond_seed_spread": bool(diff.mean() > 2 * sd) if len(diff) > 1 else None,
                },
                f"target_ratio_{target:g}_every_seed": bool((ratio >= target).all()),
            }
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cells = list(report["summary"].values())
    k = report["config"]["k"]
    fig, axes = plt.subplots(1, max(len(cells), 1), figsize=(4.2 * max(len(cells), 1), 4.2), squeeze=False)
    for ax, c in zip(axes[0], cells, strict=False):
        names = [m for m in PLOTTED if m in c["models"]]
        means = [c["models"][m]["mean"] for m in names]
        stds = [c["models"][m]["std"] for m in names]
        ax.bar(range(len(names)), means, yerr=stds, capsize=4,
               color=["0.6", "tab:orange", "tab:blue", "tab:red"][: len(names)])
        for j, m in enumerate(names):
            ax.scatter([j] * len(c["models"][m]["per_seed"]), c["models"][m]["per_seed"], color="k", s=10, zorder=3)
        ax.set_xticks(range(len(names)), names, rotation=20)
        p = c["paired"]
        ax.set_title(f"{c['dataset']} ({c['protocol']})\nserved/best sparse: mean {p['mean_ratio']:.3f}, "
                     f"min {p['min_ratio']:.3f}", fontsize=9)
        ax.set_ylabel(f"test NDCG@{k} (mean ± sd over seeds)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.cold_item_quality", description=__doc__.split("\n\n")[0])
    ap.add_argument("--datasets", default="ml-100k", help="comma-separated: ml-100k, lastfm, citeulike-a")
    ap.add_argument("--seeds", default="0,1,2")
    ap.add_argument("--protocols", default="standard,gar")
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--max-users", type=int, default=None, help="evaluate only the first N users by id")
    ap.add_argument("--target", type=float, default=1.05, help="served / best sparse ratio to reach in every seed")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--name", default="cold_item_quality", help="file name stem of the JSON and PNG")
    ap.add_argument("--plot-only", action="store_true")
    args = ap.parse_args(argv)
    path = args.out / f"{args.name}.json"
    if args.plot_only:
        plot(json.loads(path.read_text()), path.with_suffix(".png"))
        return 0
    report: dict[str, Any] = {"benchmark": "cold_item_quality", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "config": vars(args) | {"out": str(args.out)}, "machine": machine_info(), "runs": []}
    for ds in args.datasets.split(","):
        for seed in (int(s) for s in args.seeds.split(",")):
            for proto in args.protocols.split(","):
                r = run_one(ds, seed, proto, args.k, args.max_users)
                report["runs"].append(r)
                m = r["models"]
                print(f"[cold_item_quality] {ds} seed {seed} {proto}: served {m['served']['model']} "
                      f"{m['served'][f'ndcg@{args.k}']:.4f}, best sparse {m['best sparse']['model']} "
                      f"{m['best sparse'][f'ndcg@{args.k}']:.4f} ({r['seconds']}s)", file=sys.stderr, flush=True)
                report["summary"] = summarize(report["runs"], args.k, args.target)
                args.out.mkdir(parents=True, exist_ok=True)
                write_json(path, report)
    plot(report, path.with_suffix(".png"))
    print(json.dumps({c: {"mean_ratio": v["paired"]["mean_ratio"], "min_ratio": v["paired"]["min_ratio"],
                          "mean_difference": v["paired"]["mean_difference"],
                          "std_difference": v["paired"]["std_difference"]}
                      for c, v in report["summary"].items()}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
