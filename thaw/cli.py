"""The ``thaw`` command line: the composition root that assembles every command.

Run ``thaw --help``. Settings come from ``THAW_*`` environment variables (see ``infra/settings.py``) and are built
once here, per command.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Annotated

import typer

from infra.settings import Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Thaw: streaming real-time cold-start engine.")
stack_app = typer.Typer(no_args_is_help=True, help="The local stack: Kafka (KRaft), Redis, Milvus standalone.")
models_app = typer.Typer(no_args_is_help=True, help="The versioned model directory.")
app.add_typer(stack_app, name="stack")
app.add_typer(models_app, name="models")
cf_app = typer.Typer(no_args_is_help=True, help="The CF space: CB2CF + DSSM towers published together.")
app.add_typer(cf_app, name="cf")


def _settings() -> Settings:
    return load_settings()


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)


# ---------------------------------------------------------------------------------------------------- stack
@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka, Redis and Milvus locally (idempotent; reuses healthy services)."""
    from infra.stack import LocalStack, StackError, format_statuses

    t0 = time.perf_counter()
    try:
        st = LocalStack(_settings()).up()
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_statuses(st))
    typer.echo(f"all healthy in {time.perf_counter() - t0:.1f}s")


@stack_app.command("down")
def stack_down() -> None:
    """Stop what ``thaw stack up`` started (services it found running are left alone)."""
    from infra.stack import LocalStack, format_statuses

    typer.echo(format_statuses(LocalStack(_settings()).down()))


@stack_app.command("status")
def stack_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Health and address of each service."""
    from infra.stack import LocalStack, format_statuses

    st = LocalStack(_settings()).status()
    if as_json:
        typer.echo(json.dumps([vars(s) for s in st], default=str, indent=2))
    else:
        typer.echo(format_statuses(st))
    if not all(x.healthy for x in st):
        raise typer.Exit(1)


# --------------------------------------------------------------------------------------------------- models
@models_app.command("export-text")
def models_export_text(version: str = "1") -> None:
    """Export the bundled all-MiniLM-L6-v2 to ONNX into the model directory."""
    from encoders.registry import ModelRegistry
    from encoders.text import MODEL_NAME, export_minilm

    reg = ModelRegistry(_settings().models.dir)
    if version in reg.versions(MODEL_NAME):
        typer.echo(f"{MODEL_NAME} version {version} already exists at {reg.root / MODEL_NAME / version}")
        return
    mv = export_minilm(reg, version)
    typer.echo(f"exported {MODEL_NAME}@{version} to {mv.path} (sha256 {mv.manifest.sha256[:12]})")


@models_app.command("list")
def models_list() -> None:
    """Published models, their versions and the current one."""
    from encoders.registry import ModelRegistry

    reg = ModelRegistry(_settings().models.dir)
    if not reg.root.is_dir():
        typer.echo(f"no models under {reg.root}")
        return
    for d in sorted(p for p in reg.root.iterdir() if p.is_dir()):
        typer.echo(f"{d.name}: versions {reg.versions(d.name)} current {reg.current_version(d.name)}")


@cf_app.command("load")
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

    rep = load_warm_vectors(_settings(), version=version, items=items, users=users, user_weight=user_weight,
                            users_from=users_from)
    typer.echo(json.dumps(rep))


@cf_app.command("flip")
def cf_flip(
    space: Annotated[str, typer.Argument(help="space to serve, e.g. cb2cf@20261201T0200Z")],
    group: Annotated[str | None, typer.Option(help="consumer group writing that space (checked for lag)")] = None,
    max_lag: int = 0,
) -> None:
    """Serve another space: the Milvus serving alias and the Redis space key move together (blue/green)."""
    from streams.rollout.cf_load import FlipRefused, flip_space

    try:
        rep = flip_space(_settings(), space, group=group, max_lag=max_lag)
    except FlipRefused as exc:
        typer.echo(f"flip refused: {exc}", err=True)
        raise typer.Exit(3) from None
    typer.echo(json.dumps(rep))


# -------------------------------------------------------------------------------------- training, evaluation
_PASS = {"allow_extra_args": True, "ignore_unknown_options": True, "help_option_names": []}
_TRAINERS = {
    "audio-mae": "encoders.training.audio_mae",
    "musicclip": "encoders.training.musicclip",
    "flava": "encoders.training.flava",
    "ranker": "ranking.training.ranker",
}


def _run_module_main(module: str, prog: str, args: list[str]) -> None:
    """Run an entry module's argparse ``main`` with ``args`` (its own ``--help`` documents the options)."""
    import importlib

    mod = importlib.import_module(module)
    saved = sys.argv
    sys.argv = [prog, *args]
    try:
        rc = mod.main()
    finally:
        sys.argv = saved
    if isinstance(rc, int) and rc:
        raise typer.Exit(rc)


@app.command("train", context_settings=_PASS)
def train(
    ctx: typer.Context,
    model: Annotated[str, typer.Argument(help="audio-mae | musicclip | flava | ranker")],
) -> None:
    """Train an encoder on its real corpus, then export it to ONNX into the model directory.

    Options after the model name go to the trainer: `thaw train musicclip --help`.
    """
    if model in ("--help", "-h"):
        typer.echo(ctx.get_help())
        return
    if model not in _TRAINERS:
        typer.echo(f"unknown model {model!r}: one of {', '.join(_TRAINERS)}", err=True)
        raise typer.Exit(2)
    _logging("WARNING")
    _run_module_main(_TRAINERS[model], f"thaw train {model}", list(ctx.args))


@app.command("evaluate", context_settings=_PASS)
def evaluate(
    ctx: typer.Context,
    task: Annotated[str, typer.Argument(help="cold-items | new-users")],
) -> None:
    """Offline cold-start evaluation on a packaged or generic-format dataset (`thaw evaluate cold-items --help`)."""
    if task in ("--help", "-h"):
        typer.echo(ctx.get_help())
        return
    if task not in ("cold-items", "new-users"):
        typer.echo(f"unknown task {task!r}: cold-items or new-users", err=True)
        raise typer.Exit(2)
    _logging("WARNING")
    from ranking.evaluation.cold_items import main as evaluate_main

    rc = evaluate_main([task, *ctx.args])
    if rc:
        raise typer.Exit(rc)


# --------------------------------------------------------------------------------------------------- engine
@app.command("topics")
def topics_create(partitions: int | None = None) -> None:
    """Create the engine's Kafka topics (idempotent)."""
    from streams.topics import Topics, ensure_topics

    s = _settings()
    created = ensure_topics(s.kafka, Topics.for_prefix(s.kafka.topic_prefix), partitions)
    typer.echo(f"created: {created or 'nothing (all exist)'}")


@app.command("worker")
def worker(
    loglevel: str = "info",
    metrics_port: int | None = None,
    follow_cf: Annotated[bool, typer.Option("--follow-cf", help="supervise CF-space worker groups: pick up each "
                                            "new cb2cf version without a restart, rolled out blue/green")] = False,
    poll_s: Annotated[float, typer.Option(help="with --follow-cf: seconds between model-directory checks")] = 5.0,
) -> None:
    """Run the streaming engine (Faust worker: content, user and profile agents) with /metrics."""
    import faust

    from infra.metrics import EngineMetrics
    from streams.app import create_app

    _logging(loglevel.upper())
    s = _settings()
    if follow_cf:
        import signal
        import threading

        from streams.rollout.follow import CFFollower

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"following cb2cf versions under {s.models.dir} (groups {s.stream.app_id}-<version>)", err=True)
        CFFollower(s, poll_s=poll_s, extra_args=["--metrics-port", "0"]).run(stop)
        return
    metrics = EngineMetrics.for_settings(s, [s.stream.app_id])
    port = metrics.start_http_server(metrics_port if metrics_port is not None else s.stream.metrics_port)
    rt = create_app(s, metrics=metrics)
    typer.echo(f"metrics on http://127.0.0.1:{port}/metrics; space {rt.engine.space}", err=True)
    faust.Worker(rt.app, loglevel=loglevel).execute_from_commandline()


@app.command("recall")
def recall(
    user: Annotated[str, typer.Option("--user", help="user id")],
    k: int = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Top-k items for a user from Milvus (user vector from Redis), or the fallback for a user without one."""
    from indexing.redis_users import UserStore
    from ranking.online.recall import Recaller, served_index

    s = _settings()
    users = UserStore(s.redis)
    items = served_index(s.milvus, s.models.dir, users)
    items.ensure()
    res = Recaller(users, items).recall(user, k)
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=2))
        return
    typer.echo(f"user {user}: source={res.source} space={res.space} state={res.user_state} "
               f"timings_ms={ {k: round(v, 1) for k, v in res.timings_ms.items()} }")
    for i, it in enumerate(res.items, 1):
        typer.echo(f"{i:3d}. {it.item_id:40s} {it.score:8.4f} {it.kind}")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default THAW_SERVE__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default THAW_SERVE__PORT)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    log_level: str = "info",
) -> None:
    """Run the recommendation API: GET /recommend, /ab, /healthz, /readyz, /metrics, /docs (OpenAPI)."""
    import uvicorn

    s = _settings()
    _logging(log_level.upper())
    h, p = host or s.serve.host, port or s.serve.port
    if workers > 1:  # every worker process builds its own app from the THAW_* environment
        uvicorn.run("serving.api:app_from_env", factory=True, host=h, port=p, workers=workers, log_level=log_level)
        return
    from serving.api import create_app

    uvicorn.run(create_app(s), host=h, port=p, log_level=log_level, access_log=False)


@app.command("lag")
def lag(
    group: Annotated[list[str] | None, typer.Option("--group")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[bool, typer.Option("--watch")] = False,
    interval: float = 2.0,
) -> None:
    """Consumer lag per group/topic/partition (committed offset, end offset, lag) from the Kafka admin API."""
    from infra.lag import consumer_lag

    s = _settings()
    while True:
        rows = consumer_lag(s, group or None)
        if as_json:
            typer.echo(json.dumps([vars(r) for r in rows]))
        else:
            typer.echo(f"{'GROUP':24s} {'TOPIC':28s} {'PART':>4s} {'COMMITTED':>10s} {'END':>10s} {'LAG':>8s}")
            for r in rows:
                committed = "-" if r.committed is None else str(r.committed)
                lag_s = "-" if r.lag is None else str(r.lag)
                typer.echo(f"{r.group:24s} {r.topic:28s} {r.partition:4d} {committed:>10s} "
                           f"{r.end_offset:10d} {lag_s:>8s}")
            typer.echo(f"total lag {sum(r.lag or 0 for r in rows)} (partitions without a committed offset: "
                       f"{sum(r.lag is None for r in rows)})")
        if not watch:
            return
        time.sleep(interval)


@app.command("replay")
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
    from workloads.replay import replay_dataset

    _logging("WARNING")
    s = _settings()
    stats = replay_dataset(s, source, rate=rate, limit=limit, items_limit=items_limit,
                           item_content=item_content, seed=seed, bad_share=bad_share, speedup=speedup)
    typer.echo(json.dumps(stats, indent=2))


@app.command("demo")
def demo(
    items: int = 400,
    users: int = 60,
    rate: float = 50.0,
    keep: Annotated[bool, typer.Option(help="leave the stack and worker running afterwards")] = False,
    report: Annotated[Path | None, typer.Option(help="write the JSON report here")] = None,
) -> None:
    """The main job: local stack + engine + a replay of real data, then a freshness/quality report."""
    from thaw.demo import run_demo

    _logging("WARNING")
    rep = run_demo(_settings(), n_items=items, n_users=users, rate=rate, keep=keep)
    typer.echo(rep.render())
    if report:
        report.write_text(json.dumps(rep.to_dict(), indent=2))
    if not rep.ok:
        raise typer.Exit(1)


def _service_errors() -> tuple[type[BaseException], ...]:
    import redis
    from kafka.errors import KafkaError
    from pymilvus.exceptions import MilvusException

    from encoders.registry import ModelNotFoundError
    from infra.stack import StackError

    return (redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError, redis.exceptions.TimeoutError,
            KafkaError, MilvusException, StackError, ModelNotFoundError)


def main() -> None:
    """Entry point: unreachable services and missing models end in one clear line, not a traceback."""
    try:
        app()
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised when unknown
        if isinstance(exc, _service_errors()):
            s = load_settings()
            where = f"(kafka {s.kafka.bootstrap_servers}, redis {s.redis.display()}, milvus {s.milvus.uri})"
            typer.echo(f"error: {type(exc).__name__}: {str(exc)[:300]} {where}", err=True)
            typer.echo("hint: is the stack up? `thaw stack status`", err=True)
            sys.exit(2)
        raise
