"""``thaw cf``: load and flip the CF space (CB2CF + DSSM towers published together)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from thaw.commands._common import settings

app = typer.Typer(no_args_is_help=True, help="The CF space: CB2CF + DSSM towers published together.")


@app.command("load")
def cf_load(
    version: Annotated[str | None, typer.Option(help="CF version (default: the current cb2cf)")] = None,
    items: Annotated[bool, typer.Option("--items/--no-items", help="upsert the warm item vectors")] = True,
    users: Annotated[bool, typer.Option("--users/--no-users", help="store the warm user states")] = True,
    user_weight: float = 5.0,
    users_from: Annotated[str, typer.Option(help="dssm | lightgcn (published as lightgcn-user)")] = "dssm",
) -> None:
    """Load a published CF space's warm item vectors (Milvus) and warm user vectors (Redis).

    Publish one first: `thaw evaluate cold-items --dataset lastfm --models cb2cf --publish-dir ~/.cache/thaw/models`.
    """
    from streams.rollout.cf_load import load_warm_vectors

    rep = load_warm_vectors(settings(), version=version, items=items, users=users, user_weight=user_weight,
                            users_from=users_from)
    typer.echo(json.dumps(rep))


@app.command("flip")
def cf_flip(
    space: Annotated[str, typer.Argument(help="space to serve, e.g. cb2cf@20261201T0200Z")],
    group: Annotated[str | None, typer.Option(help="consumer group writing that space (checked for lag)")] = None,
    max_lag: int = 0,
) -> None:
    """Serve another space: the Milvus serving alias and the Redis space key move together (blue/green)."""
    from streams.rollout.cf_load import FlipRefused, flip_space

    try:
        rep = flip_space(settings(), space, group=group, max_lag=max_lag)
    except FlipRefused as exc:
        typer.echo(f"flip refused: {exc}", err=True)
        raise typer.Exit(3) from None
    typer.echo(json.dumps(rep))
