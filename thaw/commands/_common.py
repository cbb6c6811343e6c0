"""What every command module shares: the settings, the logging setup and a few option types."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

from infra.settings import Settings, load_settings

RUN_PANEL = "Run"  # the help panel of the options that say where a run reads and writes

AsJsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars", rich_help_panel=RUN_PANEL)]


def settings() -> Settings:
    """The settings from the ``THAW_*`` environment, built per command."""
    return load_settings()


def setup_logging(level: str = "INFO") -> None:
    """Log records to stderr at ``level``."""
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # kafka-python warns, with the raw bytes, on every describe of a Faust group (its member metadata is not the
    # plain consumer format); the group checks read only the state and the assignment, which it does decode
    logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)


def resolve_models_dir(value: str | Path | None) -> Path:
    """``value``, or the settings' model directory (``THAW_MODELS__DIR``)."""
    return Path(value).expanduser() if value is not None else Path(settings().models.dir)


def write_json(report: Any, path: Path | None) -> None:
    """Writes ``report`` as indented JSON to ``path`` (nothing when ``path`` is None)."""
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


def write_or_echo(text: str, out: Path | None) -> None:
    """``text`` to ``out`` (its folder made), or to stdout when ``out`` is None."""
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out}", err=True)
