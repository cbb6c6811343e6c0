"""``thaw topics``, ``thaw worker`` and ``thaw lag``: the streaming engine, its topics and its consumer groups."""

from __future__ import annotations

import json
import logging
import sys
import time
from typing import Annotated, Any

import typer

from thaw.commands._common import settings, setup_logging


def topics_create(partitions: int | None = None) -> None:
    """Create the engine's Kafka topics (idempotent)."""
    from contracts.topics import Topics
    from infra.topics import ensure_topics

    s = settings()
    created = ensure_topics(s.kafka, Topics.for_prefix(s.kafka.topic_prefix), partitions)
    typer.echo(f"created: {created or 'nothing (all exist)'}")


def _exit_past_stuck_threads(code: int, join_s: float = 0.5) -> None:
    """Exit with ``code`` without waiting on a thread stuck in a sink call.

    Python joins the asyncio executor's threads at exit, so one still inside a step of a batch the stop abandoned
    (a hung Redis or Milvus call) would hold the exit as long as the call hangs. That batch was not acked (it is read
    again after a restart), so exiting past it loses nothing.
    """
    import os
    import threading

    deadline = time.monotonic() + join_s
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for t in others:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in others if t.is_alive()]
    if not stuck:
        raise SystemExit(code)
    logging.getLogger("thaw.worker").warning(
        "exiting past %d thread(s) still inside an abandoned batch step (%s)", len(stuck), ", ".join(stuck))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


def worker(
    loglevel: str = "info",
    metrics_port: int | None = None,
    follow_cf: Annotated[bool, typer.Option("--follow-cf", help="supervise CF-space worker groups: pick up each "
                                            "new cb2cf version without a restart, rolled out blue/green")] = False,
    poll_s: Annotated[float, typer.Option(help="with --follow-cf: seconds between model-directory checks")] = 5.0,
    stop_grace: Annotated[float | None, typer.Option(min=0, help="seconds a stopping worker waits for its batches "
                                                     "in flight before abandoning them unacked (default 4)")] = None,
) -> None:
    """Run the streaming engine (Faust worker: content, user and profile agents) with /metrics.

    SIGTERM/SIGINT stop it promptly: batches in flight get ``--stop-grace`` seconds, a batch that does not finish
    is abandoned unacked (a restarted worker reads it again), the worker leaves its consumer group and exits 0.
    """
    import signal

    import faust

    from infra.metrics import EngineMetrics
    from streams.app import STOP_GRACE_S, create_app

    setup_logging(loglevel.upper())
    s = settings()
    if follow_cf:
        import threading

        from streams.rollout.follow import CFFollower

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"following cb2cf versions under {s.models.dir} (groups {s.stream.app_id}-<version>)", err=True)
        CFFollower(s, poll_s=poll_s, extra_args=["--metrics-port", "0"]).run(stop)
        return
    # a SIGTERM while the engine loads (before Faust installs its handler) exits at once: nothing is consumed yet
    signal.signal(signal.SIGTERM, _raise_exit)
    metrics = EngineMetrics.for_settings(s, [s.stream.app_id])
    code = 0
    rt = None
    try:
        port = metrics.start_http_server(metrics_port if metrics_port is not None else s.stream.metrics_port)
        rt = create_app(s, metrics=metrics, stop_grace_s=STOP_GRACE_S if stop_grace is None else stop_grace)
        typer.echo(f"metrics on http://127.0.0.1:{port}/metrics; space {rt.engine.space}", err=True)
        faust.Worker(rt.app, loglevel=loglevel).execute_from_commandline()
    except SystemExit as exc:  # Faust's worker always ends with one (0 after a clean stop)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        code = getattr(rt.app, "exit_code", 0) or code if rt is not None else code  # it stopped on its own
    finally:
        metrics.close()
    _exit_past_stuck_threads(code)


def lag(
    group: Annotated[list[str] | None, typer.Option("--group")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[bool, typer.Option("--watch")] = False,
    interval: float = 2.0,
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", help="a worker's /metrics URL to read its agents' health from (repeat for several workers; "
        "default: http://127.0.0.1:<THAW_STREAM__METRICS_PORT>/metrics)")] = None,
) -> None:
    """Consumer lag per group/topic/partition (committed offset, end offset, lag) from the Kafka admin API, then the
    worker's agents: stuck (seconds an agent has been retrying a failing sink step, the step and the last error
    class, or a batch step running longer than stream.stuck_after_s), the age of its oldest running step and its
    retries, read from the worker's /metrics (``--json`` prints the lag rows only)."""
    from infra.lag import consumer_lag
    from infra.metrics import read_agent_states

    s = settings()
    urls = metrics or [f"http://127.0.0.1:{s.stream.metrics_port}/metrics"]
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
            for url in urls:
                try:
                    agents = read_agent_states(url)
                except Exception as exc:  # noqa: BLE001 - no worker there is an answer, not a failure
                    typer.echo(f"agents: no worker metrics at {url} ({type(exc).__name__}); agent health not shown "
                               "(pass --metrics URL of a running worker)")
                    continue
                typer.echo(f"agents of the worker at {url}:")
                typer.echo(f"  {'AGENT':14s} {'STATE':8s} {'STUCK_S':>8s} {'STEP':10s} {'LAST_ERROR':28s} "
                           f"{'RETRIES':>8s} {'STEP_AGE_S':>10s}")
                for a in agents:
                    state = "STUCK" if a.step is not None or a.overdue is not None else "ok"
                    typer.echo(f"  {a.agent:14s} {state:8s} {a.stuck_s:8.1f} {a.step or a.overdue or '-':10s} "
                               f"{a.error or '-':28s} {a.retries:8d} {a.step_age_s:10.1f}")
        if not watch:
            return
        time.sleep(interval)
