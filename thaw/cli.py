"""The ``thaw`` command line: the composition root that assembles every command.

Run ``thaw --help``. One module per command group under :mod:`thaw.commands`; settings come from ``THAW_*``
environment variables (see ``infra/settings.py``) and are built once per command. Nothing here or there imports the
training stack until a command that needs it runs.
"""

from __future__ import annotations

import sys

import typer

from infra.settings import load_settings
from thaw.commands import (
    cf,
    corpus,
    data,
    demo,
    dlq,
    evaluate,
    models,
    observability,
    replay,
    report,
    serve,
    sim,
    stack,
    state,
    train,
    worker,
)

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Thaw: streaming real-time cold-start engine.")
app.command("topics")(worker.topics_create)
app.command("worker")(worker.worker)
app.command("recall")(serve.recall)
app.command("serve")(serve.serve)
app.command("serve-token")(serve.serve_token)
app.command("serve-key")(serve.serve_key)
app.command("lag")(worker.lag)
app.command("replay")(replay.replay)
app.command("demo")(demo.demo)
for _name, _group in (("stack", stack.app), ("models", models.app), ("cf", cf.app), ("train", train.app),
                      ("evaluate", evaluate.app), ("data", data.app), ("corpus", corpus.app), ("sim", sim.app),
                      ("report", report.app), ("observability", observability.app), ("dlq", dlq.app),
                      ("state", state.app)):
    app.add_typer(_group, name=_name)


def _service_errors() -> tuple[type[BaseException], ...]:
    import redis
    from kafka.errors import KafkaError
    from pymilvus.exceptions import MilvusException

    from encoders.registry import ModelNotFoundError
    from infra.lag import CoordinatorNotReadyError
    from infra.stack import StackError

    return (redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError, redis.exceptions.TimeoutError,
            redis.exceptions.RedisClusterException, KafkaError, MilvusException, StackError, ModelNotFoundError,
            CoordinatorNotReadyError)


def main() -> None:
    """Entry point: unreachable services and missing models end in one clear line, not a traceback."""
    from workloads.datasets import DatasetsDirNotSetError

    try:
        app(prog_name="thaw")
    except DatasetsDirNotSetError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised when unknown
        if isinstance(exc, _service_errors()):
            s = load_settings()
            where = f"(kafka {s.kafka.bootstrap_servers}, redis {s.redis.display()}, milvus {s.milvus.uri})"
            typer.echo(f"error: {type(exc).__name__}: {str(exc)[:300]} {where}", err=True)
            typer.echo("hint: is the stack up? `thaw stack status`", err=True)
            sys.exit(2)
        raise
