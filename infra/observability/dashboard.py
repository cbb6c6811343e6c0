"""The Grafana dashboard over the worker's and the API's metrics, built with grafanalib (never hand-typed JSON).

``thaw observability grafana-dashboard`` writes it (default: the shipped ``infra/observability/grafana/thaw.json``,
which a test keeps equal to :func:`dashboard_json` and whose every expression names metrics the worker and API
registries expose). Import it in Grafana (Dashboards -> New -> Import) and pick the Prometheus data source that
scrapes ``prometheus.yml``'s jobs; the ``datasource`` variable at the top switches it later.

Rows and panels::

    Worker     events/s by topic and outcome, dead letters/s by topic and error, consumer lag per group and topic
               (and whether the lag read succeeds), freshness p50/p99 (produce -> searchable, from the histogram),
               stage latency p99 by stage, seconds an agent has been stuck, retries/s of failing steps
    API        requests/s by endpoint and status, request latency p99 by endpoint, /recommend pipeline p99 per arm,
               share of new items among the served items per arm, lists served in the recall order per arm
"""

from __future__ import annotations

import json
from pathlib import Path

from grafanalib._gen import DashboardEncoder
from grafanalib.core import (
    Dashboard,
    GridPos,
    RowPanel,
    Target,
    Template,
    Templating,
    Time,
    TimeSeries,
)
from grafanalib.core import Panel as _Panel

SHIPPED = Path(__file__).parent / "grafana" / "thaw.json"
UID = "thaw-engine"
DATASOURCE = "${datasource}"
RATE = "$__rate_interval"

_W, _H = 12, 8  # two panels per row of the 24-column grid


def _rate(metric: str, by: str, selector: str = "") -> str:
    return f"sum by ({by}) (rate({metric}{selector}[{RATE}]))"


def _quantile(q: float, histogram: str, by: str = "") -> str:
    labels = f"le, {by}" if by else "le"
    return f"histogram_quantile({q:g}, sum by ({labels}) (rate({histogram}_bucket[{RATE}])))"


def _series(title: str, targets: list[tuple[str, str]], unit: str, description: str) -> TimeSeries:
    return TimeSeries(
        title=title,
        description=description,
        dataSource=DATASOURCE,
        targets=[Target(expr=expr, legendFormat=legend, refId=chr(ord("A") + i))
                 for i, (expr, legend) in enumerate(targets)],
        unit=unit,
        legendDisplayMode="table",
        legendCalcs=["lastNotNull", "max"],
    )


def _worker_panels() -> list[TimeSeries]:
    return [
        _series("Events/s by outcome", [(_rate("thaw_events_total", "topic, outcome"), "{{topic}} {{outcome}}")],
                "ops", "Events handled per second by topic and outcome (ok, dlq, skipped, deferred, retry, poison)."),
        _series("Dead letters/s", [(_rate("thaw_dlq_total", "topic, error"), "{{topic}} {{error}}")],
                "ops", "Events sent to the dead-letter topic per second, by source topic and error class."),
        _series("Consumer lag per topic", [
            ("sum by (group, topic) (thaw_consumer_lag)", "{{group}} {{topic}}"),
            ("min(thaw_consumer_lag_up)", "lag read ok (1) / failed (0)"),
        ], "short", "Committed-offset lag summed over partitions, read from Kafka when scraped."),
        _series("Freshness: produce -> searchable", [
            (_quantile(0.5, "thaw_freshness_seconds"), "p50"),
            (_quantile(0.99, "thaw_freshness_seconds"), "p99"),
        ], "s", "Seconds from an event's produce timestamp until it is indexed/applied (histogram quantiles)."),
        _series("Stage latency p99", [(_quantile(0.99, "thaw_stage_seconds", "stage"), "{{stage}}")],
                "s", "Wall time of each pipeline stage (decode, encode, upsert, ...), 99th percentile."),
        _series("Agents stuck", [
            ("max by (agent) (thaw_agent_stuck_seconds)", "{{agent}} stuck s"),
            ("sum by (agent, step, error) (thaw_agent_failing)", "{{agent}} failing: {{step}} {{error}}"),
        ], "s", "Seconds an agent has been retrying a step that fails for an infrastructure reason (0: healthy)."),
        _series("Retries/s of failing steps", [(_rate("thaw_agent_retries_total", "agent, step, error"),
                                                "{{agent}} {{step}} {{error}}")],
                "ops", "Retries of agent steps that failed for an infrastructure reason."),
    ]


def _api_panels() -> list[TimeSeries]:
    new = 'new="true"'
    return [
        _series("API requests/s", [(_rate("thaw_api_requests_total", "endpoint, status"), "{{endpoint}} {{status}}")],
                "reqps", "HTTP requests per second by endpoint and status code."),
        _series("API request latency p99", [(_quantile(0.99, "thaw_api_request_seconds", "endpoint"),
                                             "{{endpoint}}")],
                "s", "HTTP request wall time by endpoint, 99th percentile."),
        _series("/recommend pipeline p99 per arm", [(_quantile(0.99, "thaw_recommend_seconds", "variant"),
                                                     "{{variant}}")],
                "s", "Recall -> rank -> quota pipeline time per A/B arm, 99th percentile."),
        _series("New items share of served items", [(
            f"{_rate('thaw_recommend_items_total', 'variant', '{' + new + '}')}"
            f" / {_rate('thaw_recommend_items_total', 'variant')}", "{{variant}}")],
                "percentunit", "Share of served items that are new (the exposure quota's target), per A/B arm."),
        _series("Lists served in the recall order", [(_rate("thaw_recommend_ranker_fallbacks_total",
                                                             "variant, reason"), "{{variant}} {{reason}}")],
                "reqps", "Lists an arm served without its ranker (not published), per second."),
    ]


def _layout(rows: list[tuple[str, list[TimeSeries]]]) -> list[_Panel]:
    out: list[_Panel] = []
    y = 0
    for title, panels in rows:
        out.append(RowPanel(title=title, gridPos=GridPos(h=1, w=24, x=0, y=y)))
        y += 1
        for i, p in enumerate(panels):
            p.gridPos = GridPos(h=_H, w=_W, x=(i % 2) * _W, y=y + (i // 2) * _H)
            out.append(p)
        y += ((len(panels) + 1) // 2) * _H
    return out


def build_dashboard() -> Dashboard:
    """The dashboard: a worker row and an API row over one Prometheus data source variable."""
    return Dashboard(
        title="Thaw engine",
        uid=UID,
        description="The Thaw worker (events, dead letters, consumer lag, freshness, stages, stuck agents) and the "
                    "recommendation API (requests, latency, new-item share).",
        tags=["thaw"],
        timezone="browser",
        refresh="10s",
        time=Time("now-30m", "now"),
        schemaVersion=36,
        templating=Templating(list=[Template(name="datasource", label="Data source", type="datasource",
                                             query="prometheus")]),
        panels=_layout([("Worker", _worker_panels()), ("API", _api_panels())]),
    ).auto_panel_ids()


def dashboard_json() -> str:
    """The dashboard as Grafana's JSON model (sorted keys, newline-terminated: stable to diff and to commit)."""
    return json.dumps(build_dashboard().to_json_data(), cls=DashboardEncoder, sort_keys=True, indent=2) + "\n"


def expressions(model: dict) -> list[str]:  # type: ignore[type-arg]
    """Every PromQL expression of the panels of a dashboard JSON model."""
    return [t["expr"] for p in model.get("panels", []) for t in p.get("targets", []) if t.get("expr")]


def write_dashboard(path: Path = SHIPPED) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dashboard_json())
    return path
