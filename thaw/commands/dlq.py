"""``thaw dlq``: the dead-letter queues: what is in them (``stats``) and idempotent replay (``replay``).

The I/O is :mod:`streams.dlq_replay`, every decision :mod:`streams.cores.dlq`. Output carries counts, topic names,
positions and error classes only: never a record's bytes, key or error text.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any

import typer

from thaw.commands._common import AsJsonOpt, settings, setup_logging

app = typer.Typer(no_args_is_help=True, help="The dead-letter queues: statistics and idempotent replay.")

DlqArg = Annotated[str, typer.Argument(help="content | user: the content.dlq or user.dlq of THAW_KAFKA__TOPIC_PREFIX")]
MaxReadOpt = Annotated[int, typer.Option(min=1, help="read at most this many DLQ records in this run")]


def _fail(msg: str, code: int = 2) -> None:
    typer.echo(f"error: {msg}", err=True)
    raise typer.Exit(code)


def _print_report(rep: dict[str, Any], title: str) -> None:
    typer.echo(f"{title}: {rep['dlq']}: read {rep['read']} record(s)"
               + (f", failed_at {rep['oldest_failed_at']} .. {rep['newest_failed_at']}" if rep["oldest_failed_at"]
                  else ""))
    for name, key in (("verdicts", "verdicts"), ("error classes", "error_classes"),
                      ("source topics", "source_topics")):
        if rep[key]:
            typer.echo(f"  {name}:")
            for k, n in rep[key].items():
                typer.echo(f"    {k:40s} {n:8d}")
    settled = rep.get("settled_intents") or {}
    if any(settled.values()):
        typer.echo(f"  intents of a stopped run: {settled}")
    if rep["stopped"]:
        typer.echo(f"  stopped at the {rep['stopped']} bound; next offsets per partition: {rep['next_offsets']}")


@app.command("stats")
def stats(
    dlq: DlqArg = "user",
    max_read: MaxReadOpt = 100_000,
    as_json: AsJsonOpt = False,
) -> None:
    """Counts of a DLQ's dead letters by error class, source topic and replay state; the oldest and newest."""
    from streams.dlq_replay import ReplayError, ReplayOptions, dlq_topic, replay

    setup_logging("WARNING")
    s = settings()
    from contracts.topics import Topics

    try:
        rep = replay(s, ReplayOptions(dlq_topic(Topics.for_prefix(s.kafka.topic_prefix), dlq), max_read=max_read,
                                      dry_run=True)).to_dict()
    except ReplayError as exc:
        _fail(str(exc))
        return
    rep["verdicts"] = {("replayable" if k == "replay" else k): n for k, n in rep["verdicts"].items()}
    if as_json:
        typer.echo(json.dumps({k: v for k, v in rep.items() if k not in ("replayed", "replayed_by_error_class")}))
        return
    _print_report(rep, "stats")


def _parse(kind: str, fn: Any, value: str | None) -> Any:
    if value is None:
        return None
    try:
        return fn(value)
    except ValueError as exc:
        _fail(f"--{kind}: {exc}")


@app.command("replay")
def replay_cmd(
    dlq: DlqArg,
    error_class: Annotated[list[str] | None, typer.Option(
        "--error-class", help="only dead letters of this error class (repeat for several), e.g. UnknownItem")] = None,
    source_topic: Annotated[str | None, typer.Option(
        help="only dead letters of this source topic (user.events, or the full name)")] = None,
    since: Annotated[str | None, typer.Option(help="only dead letters that failed at or after this ISO-8601 time "
                                              "with a timezone (2026-11-25T10:00:00Z)")] = None,
    until: Annotated[str | None, typer.Option(help="only dead letters that failed at or before this time")] = None,
    partition: Annotated[list[int] | None, typer.Option(
        "--partition", min=0, help="only this partition of the DLQ (repeat for several)")] = None,
    offset_range: Annotated[str | None, typer.Option(
        help="only DLQ offsets A-B (both included), A- (from A) or A")] = None,
    limit: Annotated[int | None, typer.Option(min=1, help="replay at most this many dead letters")] = None,
    max_read: MaxReadOpt = 100_000,
    max_record_bytes: Annotated[int | None, typer.Option(
        min=1, help="a DLQ record larger than this is reported and skipped (default: the DLQ's cap)")] = None,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="write nothing: print what would be replayed")] = False,
    to_topic: Annotated[str | None, typer.Option(
        help="republish to this topic instead of each dead letter's source topic")] = None,
    include_replayed: Annotated[bool, typer.Option(
        "--include-replayed", help="also replay dead letters of records that were replays themselves")] = False,
    as_json: AsJsonOpt = False,
) -> None:
    """Republish dead letters (their original key and value) to their source topic, once each.

    A ledger topic (dlq.replays) records every replay, so a dead letter is never replayed twice, whatever the filters.

    Replays carry the header thaw-replay-of; one that fails again is skipped unless --include-replayed.

    Invalid, truncated, retry-topic and oversize dead letters are counted and skipped. Exit 3: a send failed, rerun.
    """
    from contracts.topics import Topics
    from streams.cores.dlq import ReplayFilter, parse_offset_range, parse_time
    from streams.dlq_replay import ReplayError, ReplayOptions, SendFailed, dlq_topic, full_topic, replay

    setup_logging("WARNING")
    s = settings()
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    t_since: datetime | None = _parse("since", parse_time, since)
    t_until: datetime | None = _parse("until", parse_time, until)
    offsets = _parse("offset-range", parse_offset_range, offset_range)
    try:
        name = dlq_topic(topics, dlq)
        flt = ReplayFilter(error_classes=frozenset(error_class or ()),
                           source_topic=full_topic(topics, source_topic) if source_topic else None,
                           since=t_since, until=t_until, partitions=frozenset(partition or ()), offsets=offsets)
        opts = ReplayOptions(name, flt, limit=limit, max_read=max_read, max_record_bytes=max_record_bytes,
                             dry_run=dry_run, to_topic=full_topic(topics, to_topic) if to_topic else None,
                             include_replayed=include_replayed)
        rep = replay(s, opts).to_dict()
    except ReplayError as exc:
        _fail(str(exc), 3 if isinstance(exc, SendFailed) else 2)
        return
    if as_json:
        typer.echo(json.dumps(rep))
        return
    _print_report(rep, "dry run" if dry_run else "replay")
    what = "would replay" if dry_run else "replayed"
    typer.echo(f"{what} {sum(rep['replayed_by_error_class'].values())} dead letter(s)"
               + "".join(f"\n    {k:40s} {n:8d}" for k, n in rep["replayed_by_error_class"].items()))
