"""``thaw state``: the engine's Redis state: its key layout (``layout``) and the layout-1 -> 2 migration
(``migrate-keys``; see :mod:`indexing.redis_migrate`); the namespaces runs leave behind (``namespaces``,
``drop-namespace``; see :mod:`infra.namespace`)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from thaw.commands._common import settings

app = typer.Typer(no_args_is_help=True, help="Engine state: Redis key layout and migration; namespaces of runs.")

ShardsOpt = Annotated[int | None, typer.Option(
    min=1, help="the partitions of user.events (default: what the broker reports for it)")]


def _user_events_partitions() -> int:
    from contracts.topics import Topics
    from infra.topics import partition_counts

    s = settings()
    topic = Topics.for_prefix(s.kafka.topic_prefix).user_events
    n = partition_counts(s.kafka, [topic]).get(topic)
    if not n:
        typer.echo(f"error: the broker reports no topic {topic}: pass --shards", err=True)
        raise typer.Exit(2)
    return n


@app.command("layout")
def layout() -> None:
    """Print the stored key layout (version and shard count), or say none is stored."""
    from indexing.redis_state import RedisState

    users = RedisState(settings().redis)
    n = users.read_layout()
    typer.echo(json.dumps({"version": 2, "shards": n} if n else {"layout": None}))


@app.command("migrate-keys")
def migrate_keys(shards: ShardsOpt = None) -> None:
    """Move layout-1 keys (no shard tags; written before version 2 of the layout) to layout 2. Stop the workers
    first; safe to run again after an interruption."""
    from indexing.redis_migrate import migrate
    from indexing.redis_state import RedisState

    s = settings()
    users = RedisState(s.redis)
    if users.cluster:
        typer.echo("error: layout 1 never ran on a Redis Cluster: migrate on the single Redis that holds it", err=True)
        raise typer.Exit(2)
    n = shards or _user_events_partitions()
    try:
        report = migrate(users.r, s.redis.key_prefix, n)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(json.dumps(report.to_dict()))


@app.command("namespaces")
def namespaces() -> None:
    """List the namespaces (demo runs, benchmark runs, test runs) that have topics on the broker."""
    from infra.namespace import list_namespaces

    for ns in list_namespaces(settings()):
        typer.echo(ns)


@app.command("drop-namespace")
def drop_namespace(
    names: Annotated[list[str], typer.Argument(help="namespaces to drop (see `thaw state namespaces`)")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="print what would be dropped, drop nothing")] = False,
) -> None:
    """Drop what each namespace owns: its topics and consumer groups, its Milvus collections, its Redis keys.
    Stop its workers first (a running worker makes its topics again)."""
    from infra.namespace import NamespaceError
    from infra.namespace import drop_namespace as drop

    base = settings()
    for ns in names:
        try:
            out = drop(base.namespaced(ns), dry_run=dry_run)
        except (NamespaceError, ValueError) as exc:
            typer.echo(f"error: {ns}: {exc}", err=True)
            raise typer.Exit(2) from None
        d = out.to_dict()
        typer.echo(json.dumps({"namespace": ns, "dry_run": dry_run, "topics": len(d["topics"]), "groups": d["groups"],
                               "collections": d["collections"], "redis_keys": d["redis_keys"]}))
