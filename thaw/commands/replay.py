"""``thaw replay``: publish a dataset or the simulator to the Kafka topics."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from thaw.commands._common import settings, setup_logging


def replay(
    source: Annotated[str, typer.Argument(help="lastfm | ml-100k | sim (the simulator) | a generic interactions CSV")],
    rate: Annotated[float, typer.Option(help="events per second (0 = as fast as possible)")] = 200.0,
    limit: Annotated[int | None, typer.Option(help="at most this many user events")] = None,
    items_limit: Annotated[int | None, typer.Option(help="at most this many items")] = None,
    item_content: Annotated[Path | None, typer.Option(help="item content file for a generic CSV")] = None,
    seed: int = 0,
    bad_share: Annotated[float, typer.Option(help="share of deliberately bad records to inject (0..0.5)")] = 0.0,
    speedup: Annotated[float, typer.Option(help="keep the source's own timing, this many times faster "
                                           "(datasets with timestamps, the simulator); 0 = use --rate")] = 0.0,
) -> None:
    """Publish a dataset or the simulator to the Kafka topics as contract events."""
    from indexing.wait import wait_indexed
    from workloads.replay import replay_dataset

    setup_logging("WARNING")
    s = settings()
    stats = replay_dataset(s, source, rate=rate, limit=limit, items_limit=items_limit,
                           item_content=item_content, seed=seed, bad_share=bad_share, speedup=speedup,
                           notify=lambda msg: typer.echo(f"replay: {msg}", err=True), wait_indexed=wait_indexed)
    typer.echo(json.dumps(stats, indent=2))
