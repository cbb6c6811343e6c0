"""The shipped Prometheus config and Grafana dashboard: generated, not stale, and over metrics that exist.

The metric and label names are read from the real registries (the worker's :class:`EngineMetrics` and the API's
:class:`ServeMetrics`), each family exercised once so its label names show in its samples.
"""

from __future__ import annotations

import json
import re

import pytest
import yaml
from prometheus_client import CollectorRegistry
from prometheus_client.metrics import MetricWrapperBase

from infra.lag import PartitionLag
from infra.metrics import EngineMetrics
from infra.observability import dashboard, scrape_config
from infra.settings import Settings
from serving.api import ServeMetrics

_SUFFIXES = {"counter": ("_total", "_created"), "histogram": ("_bucket", "_count", "_sum", "_created"),
             "gauge": ("",), "summary": ("_count", "_sum", "_created")}
_KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "offset", "bool", "and", "or", "unless"}
_LABEL_LISTS = r"\b(by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)"


def _exercise_wrappers(owner: object) -> None:
    """One sample per labelled counter/histogram attribute of ``owner`` (so its label names show)."""
    for value in vars(owner).values():
        if isinstance(value, MetricWrapperBase):
            child = value.labels(*["x"] * len(value._labelnames)) if value._labelnames else value
            if hasattr(child, "inc"):
                child.inc()
            else:
                child.observe(0.1)


def _exposed(registry: CollectorRegistry) -> dict[str, set[str]]:
    """Series name -> label names, for every series the registry exposes."""
    out: dict[str, set[str]] = {}
    for fam in registry.collect():
        for suffix in _SUFFIXES.get(fam.type, ("",)):
            out.setdefault(fam.name + suffix, set())
        for s in fam.samples:
            out.setdefault(s.name, set()).update(s.labels)
    return out


@pytest.fixture(scope="module")
def exposed() -> dict[str, set[str]]:
    worker = EngineMetrics(lambda: [PartitionLag("g", "content.new", 0, 1, 3, 2)])
    _exercise_wrappers(worker)
    worker.track_agents(["content"])
    worker.step_failed("content", "upsert", "MilvusException")  # thaw_agent_failing shows only while stuck
    api = ServeMetrics()
    _exercise_wrappers(api)
    names = _exposed(worker.registry)
    for name, labels in _exposed(api.registry).items():
        names.setdefault(name, set()).update(labels)
    return names


def metric_names(expr: str) -> list[str]:
    """The series names a PromQL expression selects (functions, keywords, label lists and ranges left out)."""
    e = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    e = re.sub(r"\{[^}]*\}", "", e)
    e = re.sub(r"\[[^\]]*\]", "", e)
    e = re.sub(_LABEL_LISTS, " ", e)  # "sum by (a) (x)" -> "sum   (x)"
    out = []
    for m in re.finditer(r"(?<![\w.])[A-Za-z_:][A-Za-z0-9_:]*", e):
        if m.group() in _KEYWORDS or e[m.end():].lstrip().startswith("("):
            continue
        out.append(m.group())
    return out


def label_names(expr: str) -> set[str]:
    """Label names an expression groups by or matches on."""
    names = {n.strip() for _, group in re.findall(_LABEL_LISTS, expr) for n in group.split(",") if n.strip()}
    for matchers in re.findall(r"\{([^}]*)\}", expr):
        names.update(re.findall(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)", matchers))
    return names


def test_promql_name_parser() -> None:
    assert metric_names('sum by (le, a) (rate(x_bucket{new="true"}[$__rate_interval])) / max(y) * 1e3') == [
        "x_bucket", "y"]
    assert metric_names("histogram_quantile(0.99, sum by (le) (rate(z_bucket[5m])))") == ["z_bucket"]
    assert label_names('sum by (variant) (rate(m{new="true", b!~"x"}[1m]))') == {"variant", "new", "b"}


def test_the_shipped_dashboard_is_what_the_module_builds() -> None:
    assert dashboard.SHIPPED.read_text() == dashboard.dashboard_json(), (
        "infra/observability/grafana/thaw.json is stale: thaw observability grafana-dashboard "
        "--out infra/observability/grafana/thaw.json")


def test_every_dashboard_expression_names_metrics_and_labels_that_exist(exposed) -> None:
    model = json.loads(dashboard.SHIPPED.read_text())
    exprs = dashboard.expressions(model)
    assert len(exprs) >= 12
    unknown, bad_labels, seen = [], [], set()
    for expr in exprs:
        names = metric_names(expr)
        assert names, f"no metric in {expr!r}"
        seen.update(names)
        unknown += [n for n in names if n not in exposed]
        have = set().union(*(exposed.get(n, set()) for n in names))
        bad_labels += [f"{lab} in {expr!r}" for lab in label_names(expr) - have]
    assert unknown == []
    assert bad_labels == []
    # the panels the dashboard promises
    for family in ("thaw_events_total", "thaw_dlq_total", "thaw_freshness_seconds_bucket", "thaw_consumer_lag",
                   "thaw_agent_stuck_seconds", "thaw_stage_seconds_bucket", "thaw_api_requests_total",
                   "thaw_api_request_seconds_bucket", "thaw_recommend_items_total"):
        assert family in seen


def test_legends_use_labels_the_expression_keeps() -> None:
    model = json.loads(dashboard.SHIPPED.read_text())
    for panel in model["panels"]:
        for t in panel.get("targets", []):
            kept = label_names(t["expr"]) - {"le", "new"}
            for lab in re.findall(r"\{\{(\w+)\}\}", t.get("legendFormat", "")):
                assert lab in kept, f"legend {{{{{lab}}}}} not kept by {t['expr']!r}"


def test_panels_use_the_datasource_variable_and_do_not_overlap() -> None:
    model = json.loads(dashboard.SHIPPED.read_text())
    assert model["uid"] == dashboard.UID
    assert [v["name"] for v in model["templating"]["list"]] == ["datasource"]
    cells: set[tuple[int, int]] = set()
    for p in model["panels"]:
        if p["type"] != "row":
            assert p["datasource"] == "${datasource}"
        g = p["gridPos"]
        area = {(x, y) for x in range(g["x"], g["x"] + g["w"]) for y in range(g["y"], g["y"] + g["h"])}
        assert not area & cells, p["title"]
        cells |= area
    assert len({p["id"] for p in model["panels"]}) == len(model["panels"])


def test_the_shipped_prometheus_config_is_the_default_rendering(monkeypatch) -> None:
    import os

    for key in [k for k in os.environ if k.startswith("THAW_")]:
        monkeypatch.delenv(key)
    assert scrape_config.SHIPPED.read_text() == scrape_config.render_prometheus_config(Settings()), (
        "infra/observability/prometheus.yml is stale: thaw observability prometheus-config "
        "--out infra/observability/prometheus.yml (with no THAW_* set)")


def test_prometheus_config_follows_the_settings() -> None:
    serve = {"host": "10.0.0.9", "port": 28080, "ops_host": "0.0.0.0", "ops_port": 28081}
    s = Settings.model_validate({"stream": {"metrics_port": 29108}, "serve": serve})
    cfg = yaml.safe_load(scrape_config.render_prometheus_config(s, scrape_interval_s=1))
    jobs = {j["job_name"]: j for j in cfg["scrape_configs"]}
    assert jobs["thaw-worker"]["static_configs"] == [{"targets": ["127.0.0.1:29108"]}]
    # the API's ops port (the public one serves no /metrics); a wildcard bind is reached on loopback
    assert jobs["thaw-api"]["static_configs"] == [{"targets": ["127.0.0.1:28081"]}]
    assert cfg["global"] == {"scrape_interval": "1s", "scrape_timeout": "1s", "evaluation_interval": "1s"}
    only = scrape_config.prometheus_config(s, worker_targets=["10.0.0.5:19108", "10.0.0.6:19108"], api_targets=[])
    assert [j["job_name"] for j in only["scrape_configs"]] == ["thaw-worker"]
    assert only["scrape_configs"][0]["static_configs"][0]["targets"] == ["10.0.0.5:19108", "10.0.0.6:19108"]
    assert only["global"]["scrape_timeout"] == "10s"
