"""``thaw report``: render saved reports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True, help="Render saved reports.")


@app.command("html")
def report_html(
    in_path: Annotated[Path, typer.Option("--in", exists=True, dir_okay=False, help="the JSON report")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="the HTML page to write")],
) -> None:
    """A JSON report (``thaw demo``'s report.json) as one self-contained HTML page: result, tables, plots."""
    from thaw.report_html import render_html

    try:
        report = json.loads(in_path.read_text())
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{in_path} is not JSON: {exc}", param_hint="--in") from exc
    if not isinstance(report, dict):
        raise typer.BadParameter(f"{in_path} holds a {type(report).__name__}, not a report object", param_hint="--in")
    out.write_text(render_html(report), encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)
