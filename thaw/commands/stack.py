"""``thaw stack``: the local stack (Kafka in KRaft mode, Redis, Milvus standalone)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from thaw.commands._common import settings, setup_logging

app = typer.Typer(no_args_is_help=True, help="The local stack: Kafka (KRaft), Redis, Milvus standalone.")


@app.command("up")
def stack_up() -> None:
    """Start Kafka, Redis and Milvus locally (idempotent; reuses healthy services)."""
    from infra.stack import LocalStack, StackError, format_statuses

    t0 = time.perf_counter()
    try:
        st = LocalStack(settings()).up()
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_statuses(st))
    typer.echo(f"all healthy in {time.perf_counter() - t0:.1f}s")


@app.command("down")
def stack_down() -> None:
    """Stop what ``thaw stack up`` started (services it found running are left alone)."""
    from infra.stack import LocalStack, format_statuses

    typer.echo(format_statuses(LocalStack(settings()).down()))


@app.command("status")
def stack_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Health and address of each service."""
    from infra.stack import LocalStack, format_statuses

    st = LocalStack(settings()).status()
    if as_json:
        typer.echo(json.dumps([vars(s) for s in st], default=str, indent=2))
    else:
        typer.echo(format_statuses(st))
    if not all(x.healthy for x in st):
        raise typer.Exit(1)


@app.command("fetch")
def stack_fetch() -> None:
    """Fetch the Kafka jars of THAW_KAFKA__VERSION with Maven (once; cached under the stack dir); prints their dir."""
    from infra.stack import StackError, fetch_kafka

    setup_logging("WARNING")
    try:
        libs = fetch_kafka(settings())
    except StackError as exc:
        typer.echo(f"stack fetch failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(libs))
