"""``thaw sim``: the community simulator (``workloads/simulator.py``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="The community simulator (workloads/simulator.py).")


@app.command("stats")
def sim_stats(
    events: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
    steps: Annotated[int, typer.Option(help="at least this many steps")] = 60,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 0,
) -> None:
    """Generate the community simulator's event stream; print its statistics and events/s as JSON."""
    from workloads.simulator import generate_stats

    typer.echo(json.dumps(generate_stats(events=events, steps=steps, seed=seed), indent=2))
