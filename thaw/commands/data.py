"""``thaw data``: the packaged interaction datasets."""

from __future__ import annotations

import json
from enum import StrEnum
from typing import Annotated, Any

import typer

from thaw.commands._common import AsJsonOpt

app = typer.Typer(no_args_is_help=True, help="The packaged interaction datasets (MovieLens-100k, Last.fm, "
                  "CiteULike-a).")


class DatasetName(StrEnum):
    """The packaged interaction datasets (``workloads.datasets.DATASETS``)."""

    ml_100k = "ml-100k"
    lastfm = "lastfm"
    citeulike_a = "citeulike-a"


def _datasets_table(rows: list[dict[str, Any]]) -> str:
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
        cells.append([f"{r['val_interactions']:,}/{r['test_interactions']:,}" if key is None else fmt.format(r[key])
                      for _, key, fmt in cols])
    widths = [max(len(row[j]) for row in cells) for j in range(len(cols))]
    out = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


@app.command("stats")
def data_stats(
    as_json: AsJsonOpt = False,
    dataset: Annotated[list[DatasetName] | None, typer.Option(help="only this dataset (repeatable)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the default random cold-item split")] = 0,
) -> None:
    """Users, items, interactions, density and cold-item shares per dataset (fetched on first use)."""
    from workloads.dataset_stats import dataset_stats

    names = [d.value for d in dataset] if dataset else [d.value for d in DatasetName]
    rows = [dataset_stats(name, seed=seed) for name in names]
    typer.echo(json.dumps(rows, indent=2) if as_json else _datasets_table(rows))
