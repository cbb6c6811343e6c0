"""``thaw observability``: the Prometheus scrape config and the Grafana dashboard."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from thaw.commands._common import settings, write_or_echo

app = typer.Typer(no_args_is_help=True, help="Prometheus scrape config and Grafana dashboard over the "
                  "worker's and the API's /metrics.")


@app.command("prometheus-config")
def observability_prometheus_config(
    out: Annotated[Path | None, typer.Option(help="write here (default: stdout)")] = None,
    scrape_interval: Annotated[float, typer.Option(min=0.1, help="seconds between scrapes")] = 15.0,
) -> None:
    """Prometheus scrape config for the worker (THAW_STREAM__METRICS_PORT) and the API's ops port
    (THAW_SERVE__OPS_HOST/OPS_PORT)."""
    from infra.observability.scrape_config import render_prometheus_config

    write_or_echo(render_prometheus_config(settings(), scrape_interval_s=scrape_interval), out)


@app.command("grafana-dashboard")
def observability_grafana_dashboard(
    out: Annotated[Path | None, typer.Option(help="write here (default: stdout); the shipped one is "
                                             "infra/observability/grafana/thaw.json")] = None,
) -> None:
    """The Grafana dashboard JSON, built with grafanalib (the dev extra)."""
    try:
        from infra.observability.dashboard import dashboard_json
    except ImportError as exc:
        typer.echo(f"error: {exc}: grafanalib comes with the dev extra: pip install 'thaw[dev]'", err=True)
        raise typer.Exit(2) from exc
    write_or_echo(dashboard_json(), out)
