"""The Prometheus scrape config for a Thaw deployment, generated from the settings.

Two jobs: ``thaw-worker`` scrapes the worker's ``/metrics`` (``stream.metrics_port``, bound on loopback by
``thaw worker``) and ``thaw-api`` scrapes the recommendation API's ``/metrics`` on its ops port
(``serve.ops_host:serve.ops_port``; the public port serves no ``/metrics``).
``thaw observability prometheus-config`` writes it; ``infra/observability/prometheus.yml`` is the rendering of the
default settings (a test keeps it equal).

Run Prometheus on it::

    prometheus --config.file=infra/observability/prometheus.yml --storage.tsdb.path=/tmp/thaw-prom
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from infra.settings import Settings

SHIPPED = Path(__file__).with_name("prometheus.yml")
WORKER_JOB = "thaw-worker"
API_JOB = "thaw-api"
_HEADER = (
    "# Prometheus scrape config for Thaw: the worker's and the API's /metrics.\n"
    "# Generated from the settings by `thaw observability prometheus-config`; do not edit by hand.\n"
)


def _scrape_host(bind: str) -> str:
    """Where a Prometheus on this host reaches a server bound on ``bind`` (a wildcard bind is reached on loopback)."""
    return "127.0.0.1" if bind in ("", "0.0.0.0", "::") else bind  # noqa: S104 - compared, not bound


def prometheus_config(
    settings: Settings,
    *,
    scrape_interval_s: float = 15.0,
    worker_targets: Sequence[str] | None = None,
    api_targets: Sequence[str] | None = None,
) -> dict[str, Any]:
    """The config as a mapping (``yaml.safe_dump`` of it is what Prometheus reads).

    Args:
        settings: The worker's metrics port and the API's ops host and port come from here.
        scrape_interval_s: Scrape (and rule evaluation) interval.
        worker_targets: ``host:port`` of every worker to scrape (default: the one on ``stream.metrics_port``).
        api_targets: ``host:port`` of every API process's ops server (default: ``serve.ops_host:serve.ops_port``);
            empty: no API job.
    """
    interval = f"{scrape_interval_s:g}s"
    workers = list(worker_targets) if worker_targets is not None else [
        f"127.0.0.1:{settings.stream.metrics_port}"]
    apis = list(api_targets) if api_targets is not None else [
        f"{_scrape_host(settings.serve.ops_host)}:{settings.serve.ops_port}"]
    jobs: list[dict[str, Any]] = []
    if workers:
        jobs.append({"job_name": WORKER_JOB, "metrics_path": "/metrics", "static_configs": [{"targets": workers}]})
    if apis:
        jobs.append({"job_name": API_JOB, "metrics_path": "/metrics", "static_configs": [{"targets": apis}]})
    # Prometheus refuses a scrape timeout above the interval; its default (10 s) is above a short interval
    timeout = interval if scrape_interval_s < 10 else "10s"
    return {
        "global": {"scrape_interval": interval, "scrape_timeout": timeout, "evaluation_interval": interval},
        "scrape_configs": jobs,
    }


def render_prometheus_config(settings: Settings, **kwargs: Any) -> str:
    """:func:`prometheus_config` as YAML text, with a header naming the command that generates it."""
    return _HEADER + yaml.safe_dump(prometheus_config(settings, **kwargs), sort_keys=False)
