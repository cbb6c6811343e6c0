"""Command line: ``python -m workloads.datasets stats [--json] [--dataset NAME ...]``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from typing import Any

from workloads.datasets import DATASETS, load_dataset
from workloads.splits import default_cold_item_split


def dataset_stats(name: str, seed: int = 0) -> dict[str, Any]:
    """Loads one dataset and returns its stats and default cold-item split shares.

    Args:
        name: Dataset name from ``DATASETS``.
        seed: Seed of the default split (ignored for predefined splits).
    """
    t0 = time.perf_counter()
    ds = load_dataset(name)
    load_s = time.perf_counter() - t0
    split = default_cold_item_split(ds, seed=seed)
    stats = ds.summary()
    stats.update(
        {
            "load_seconds": round(load_s, 3),
            "split": "predefined" if split.seed is None else f"random items 8:1:1 seed={seed}",
            "cold_items": int(len(split.cold_items)),
            "cold_item_share": len(split.cold_items) / ds.n_items,
            "cold_interaction_share": split.cold_interaction_share,
            "train_interactions": int(len(split.train)),
            "val_interactions": int(len(split.val)),
            "test_interactions": int(len(split.test)),
        }
    )
    return stats


def _table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("dataset", "name", "{}"),
        ("users", "users", "{:,}"),
        ("items", "items", "{:,}"),
        ("interactions", "interactions", "{:,}"),
        ("density", "density", "{:.4%}"),
        ("cold items", "cold_item_share", "{:.1%}"),
        ("cold inter.", "cold_interaction_share", "{:.1%}"),
        ("val/test inter.", None, ""),
        ("split", "split", "{}"),
        ("load s", "load_seconds", "{:.2f}"),
    ]
    cells = [[c[0] for c in cols]]
    for r in rows:
        line = []
        for _, key, fmt in cols:
            if key is None:
                line.append(f"{r['val_interactions']:,}/{r['test_interactions']:,}")
            else:
                line.append(fmt.format(r[key]))
        cells.append(line)
    widths = [max(len(row[j]) for row in cells) for j in range(len(cols))]
    out = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m workloads.datasets")
    sub = parser.add_subparsers(dest="cmd", required=True)
    st = sub.add_parser("stats", help="print users/items/interactions/density/cold share per dataset")
    st.add_argument("--json", action="store_true", help="print JSON instead of a table")
    st.add_argument("--dataset", action="append", choices=sorted(DATASETS), help="only this dataset (repeatable)")
    st.add_argument("--seed", type=int, default=0, help="seed of the default random cold-item split")
    args = parser.parse_args(argv)
    rows = [dataset_stats(name, seed=args.seed) for name in (args.dataset or list(DATASETS))]
    if args.json:
        json.dump(rows, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        print(_table(rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
