"""``thaw demo``: the whole engine on a replayed community, with its freshness/quality report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thaw.commands._common import settings, setup_logging


def demo(
    clips: Annotated[int, typer.Option(help="music21 clips the community's tracks are made of (rendered once)")] = 160,
    steps: Annotated[int, typer.Option(help="simulated community steps (minutes of community life)")] = 120,
    rate: Annotated[float, typer.Option(help="new posts published per second")] = 20.0,
    keep: Annotated[bool, typer.Option(help="leave the stack and worker running afterwards")] = False,
    out: Annotated[Path, typer.Option(help="folder for report.json and report.html")] = Path("demo-report"),
) -> None:
    """The main job: local stack + the whole engine + a replay of a real-data community, then a freshness/quality
    report (printed, and written as JSON and HTML)."""
    from thaw.demo import run_demo
    from thaw.demo_space import CommunityPlan
    from thaw.report_html import write_report

    setup_logging("WARNING")
    rep = run_demo(settings(), plan=CommunityPlan(n_clips=clips, steps=steps), rate=rate, keep=keep)
    typer.echo(rep.render())
    out.mkdir(parents=True, exist_ok=True)
    write_report(rep.to_dict(), out / "report.json", out / "report.html")
    typer.echo(f"report: {out / 'report.json'} and {out / 'report.html'}")
    if not rep.ok:
        raise typer.Exit(1)
