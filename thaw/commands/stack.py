"""``thaw stack``: the local stack (Kafka in KRaft mode, Redis, Milvus standalone)."""

from __future__ import annotations

import json
import time
from typing import Annotated

import typer

from infra.settings import Settings
from thaw.commands._common import settings, setup_logging

app = typer.Typer(no_args_is_help=True, help="The local stack: Kafka (KRaft), Redis, Milvus standalone.")

BrokersOpt = Annotated[int | None, typer.Option(
    "--brokers", min=1, max=9, help="Kafka nodes (KRaft broker + controller each, ports +2 per node): 3 gives topics "
    "3 replicas and min.insync.replicas 2; the same as THAW_KAFKA__BROKERS, which the worker and every other "
    "command need too")]


RedisClusterOpt = Annotated[bool, typer.Option(
    "--redis-cluster", help="A Redis Cluster (3 masters + 3 replicas on THAW_REDIS__PORT .. +5, their bus on +6 .. "
    "+11) instead of one Redis; the same as THAW_REDIS__CLUSTER=1, which the worker and every other command need "
    "too (`status` and `down` find a running cluster either way)")]


def _with_brokers(s: Settings, brokers: int | None) -> Settings:
    """``s`` with ``kafka.brokers`` = ``brokers`` (validated again, so the bootstrap list names every node)."""
    if brokers is None or brokers == s.kafka.brokers:
        return s
    d = s.model_dump()
    d["kafka"]["brokers"] = brokers
    return type(s).model_validate(d)


@app.command("up")
def stack_up(brokers: BrokersOpt = None, redis_cluster: RedisClusterOpt = False) -> None:
    """Start Kafka, Redis and Milvus locally (idempotent; reuses healthy services)."""
    from infra.stack import LocalStack, StackError, format_statuses

    t0 = time.perf_counter()
    s = _with_brokers(settings(), brokers)
    if redis_cluster and not s.redis.cluster:
        s = s.model_copy(update={"redis": s.redis.model_copy(update={"cluster": True})})
    try:
        st = LocalStack(s).up()
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_statuses(st))
    typer.echo(f"all healthy in {time.perf_counter() - t0:.1f}s")
    if s.kafka.brokers > 1 and brokers is not None and settings().kafka.brokers != brokers:
        typer.echo(f"the other commands need the same: export THAW_KAFKA__BROKERS={s.kafka.brokers} "
                   f"(bootstrap {s.kafka.bootstrap_servers})")
    if redis_cluster and not settings().redis.cluster:
        typer.echo("Redis runs as a cluster: the other commands need export THAW_REDIS__CLUSTER=1")


@app.command("down")
def stack_down() -> None:
    """Stop what ``thaw stack up`` started, every Kafka node included (services it found running are left
    alone)."""
    from infra.stack import LocalStack, format_statuses

    typer.echo(format_statuses(LocalStack(settings()).down()))


@app.command("status")
def stack_status(as_json: Annotated[bool, typer.Option("--json")] = False, brokers: BrokersOpt = None) -> None:
    """Health and address of each service (Kafka: every node up and registered)."""
    from infra.stack import LocalStack, format_statuses

    st = LocalStack(_with_brokers(settings(), brokers)).status()
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
