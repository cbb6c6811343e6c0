"""Prometheus metrics of the engine, on a dedicated registry per :class:`EngineMetrics` (no global state).

Exposed families::

    thaw_events_total{topic,outcome}              counter   events handled, by outcome (ok, dlq, skipped, ...)
    thaw_dlq_total{topic,error}                   counter   events sent to the dead-letter topic, by error
    thaw_consumer_lag{group,topic,partition}      gauge     committed-offset lag, read from Kafka when scraped
    thaw_consumer_lag_up                          gauge     1 if the last lag read succeeded, else 0
    thaw_freshness_seconds                        histogram produce timestamp -> item searchable in the index
    thaw_stage_seconds{stage}                     histogram wall time of a pipeline stage (decode, encode...)
    thaw_ab_events_total{variant,action}          counter   applied user events that carry the serving arm
                                                            (``context.ab_variant``): engagement per A/B arm
    thaw_agent_stuck_seconds{agent}               gauge     seconds the agent has been retrying a step that fails
                                                            for an infrastructure reason (its partitions wait);
                                                            0 while it is not (computed when scraped)
    thaw_agent_failing{agent,step,error}          gauge     1 for the step and error class of a stuck agent
                                                            (absent while it is not stuck)
    thaw_agent_retries_total{agent,step,error}    counter   retries of failing steps, by agent, step, error class
    thaw_worker_stuck{agent}                      gauge     1 while the agent runs a batch step (its retries
                                                            included) older than ``stream.stuck_after_s``: a sink
                                                            that hangs or keeps failing (computed when scraped)
    thaw_worker_step_age_seconds{agent}           gauge     age of the agent's oldest running batch step (0: none)
    thaw_worker_stuck_step{agent,stage}           gauge     1 for the stage of a stuck agent's oldest step (absent
                                                            while it is not stuck)

The ``thaw_worker_*`` families come from the worker's watchdog (:meth:`EngineMetrics.watch_steps`,
``streams.app.StepWatchdog``). :func:`read_agent_states` reads the agent families back from a worker's ``/metrics``
(``thaw lag`` shows them).
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client import start_http_server as _start_http_server
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.registry import Collector

from infra.lag import LagReader, PartitionLag
from infra.settings import Settings

log = logging.getLogger("thaw.metrics")

FRESHNESS_BUCKETS: tuple[float, ...] = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
STAGE_BUCKETS: tuple[float, ...] = (
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
)

LagSource = Callable[[], list[PartitionLag]]


class _LagCollector(Collector):
    """Reads consumer lag at scrape time, at most once per ``refresh_s`` (cached in between)."""

    def __init__(self, source: LagSource, refresh_s: float, clock: Callable[[], float]) -> None:
        self._source = source
        self._refresh_s = refresh_s
        self._clock = clock
        self._lock = threading.Lock()
        self._cached: list[PartitionLag] = []
        self._ok = False
        self._read_at: float | None = None

    def refresh(self, force: bool = False) -> None:
        with self._lock:
            now = self._clock()
            if not force and self._read_at is not None and now - self._read_at < self._refresh_s:
                return
            self._read_at = now
            try:
                self._cached = list(self._source())
                self._ok = True
            except Exception as exc:  # noqa: BLE001 - a scrape must not fail because Kafka is away
                log.warning("consumer lag read failed: %s: %s", type(exc).__name__, exc)
                self._cached = []
                self._ok = False

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        lag = GaugeMetricFamily(
            "thaw_consumer_lag",
            "Consumer group lag (log-end offset - committed offset)",
            labels=["group", "topic", "partition"],
        )
        up = GaugeMetricFamily("thaw_consumer_lag_up", "1 if the last consumer lag read from Kafka succeeded")
        return lag, up

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        self.refresh()
        lag, up = self._families()
        with self._lock:
            for row in self._cached:
                if row.lag is not None:
                    lag.add_metric([row.group, row.topic, str(row.partition)], float(row.lag))
            up.add_metric([], 1.0 if self._ok else 0.0)
        return [lag, up]


@dataclass
class _Streak:
    since: float  # clock reading at the first failure of the streak
    step: str
    error: str


class _AgentHealth(Collector):
    """Which agents are stuck retrying a failing step, since when, on what: read at scrape time."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._agents: set[str] = set()
        self._streaks: dict[str, _Streak] = {}

    def track(self, agents: Iterable[str]) -> None:
        with self._lock:
            self._agents.update(agents)

    def failed(self, agent: str, step: str, error: str) -> None:
        with self._lock:
            self._agents.add(agent)
            streak = self._streaks.get(agent)
            if streak is None:
                self._streaks[agent] = _Streak(self._clock(), step, error)
            else:
                streak.step, streak.error = step, error

    def recovered(self, agent: str) -> None:
        with self._lock:
            self._streaks.pop(agent, None)

    def stuck_s(self, agent: str) -> float:
        with self._lock:
            streak = self._streaks.get(agent)
            return 0.0 if streak is None else max(self._clock() - streak.since, 0.0)

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily]:
        stuck = GaugeMetricFamily(
            "thaw_agent_stuck_seconds",
            "Seconds the agent has been retrying a step that fails for an infrastructure reason (0: not stuck)",
            labels=["agent"],
        )
        failing = GaugeMetricFamily(
            "thaw_agent_failing", "1 for the failing step and last error class of a stuck agent",
            labels=["agent", "step", "error"],
        )
        return stuck, failing

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        stuck, failing = self._families()
        with self._lock:
            now = self._clock()
            for agent in sorted(self._agents):
                streak = self._streaks.get(agent)
                stuck.add_metric([agent], 0.0 if streak is None else max(now - streak.since, 0.0))
                if streak is not None:
                    failing.add_metric([agent, streak.step, streak.error], 1.0)
        return [stuck, failing]


@dataclass(frozen=True)
class StepHealth:
    """One agent's running batch steps as the worker's watchdog judges them when scraped."""

    agent: str
    stuck: bool  # its oldest running step is older than stream.stuck_after_s
    oldest_s: float  # that step's age (0: none runs)
    stage: str | None  # that step's stage (None: none runs)


#: the watchdog's view at scrape time (one :class:`StepHealth` per agent)
StepSource = Callable[[], Iterable[StepHealth]]


class _StepCollector(Collector):
    """``thaw_worker_*``: the watchdog's view of the running batch steps, read at scrape time."""

    def __init__(self, source: StepSource) -> None:
        self._source = source

    def _families(self) -> tuple[GaugeMetricFamily, GaugeMetricFamily, GaugeMetricFamily]:
        stuck = GaugeMetricFamily(
            "thaw_worker_stuck",
            "1 while the agent runs a batch step (retries included) older than stream.stuck_after_s",
            labels=["agent"],
        )
        age = GaugeMetricFamily(
            "thaw_worker_step_age_seconds", "Age of the agent's oldest running batch step (0: none runs)",
            labels=["agent"],
        )
        stage = GaugeMetricFamily(
            "thaw_worker_stuck_step", "1 for the stage of a stuck agent's oldest running batch step",
            labels=["agent", "stage"],
        )
        return stuck, age, stage

    def describe(self) -> Iterable[Metric]:
        return list(self._families())

    def collect(self) -> Iterable[Metric]:
        stuck, age, stage = self._families()
        try:
            rows = list(self._source())
        except Exception as exc:  # noqa: BLE001 - a scrape must not fail because the watchdog did
            log.warning("step watch read failed: %s: %s", type(exc).__name__, exc)
            rows = []
        for row in rows:
            stuck.add_metric([row.agent], 1.0 if row.stuck else 0.0)
            age.add_metric([row.agent], row.oldest_s)
            if row.stuck and row.stage is not None:
                stage.add_metric([row.agent, row.stage], 1.0)
        return [stuck, age, stage]


@dataclass(frozen=True)
class AgentState:
    """One agent's health as a worker's ``/metrics`` reports it."""

    agent: str
    stuck_s: float  # 0: not stuck
    step: str | None  # the failing step and its last error class while stuck
    error: str | None
    retries: int  # retries of failing steps since the worker started
    step_age_s: float = 0.0  # age of its oldest running batch step (thaw_worker_step_age_seconds)
    overdue: str | None = None  # the stage of that step while the watchdog finds the agent stuck (thaw_worker_stuck)


def parse_agent_states(text: str) -> list[AgentState]:
    """The ``thaw_agent_*`` families of a Prometheus text exposition, one :class:`AgentState` per agent."""
    stuck: dict[str, float] = {}
    failing: dict[str, tuple[str, str]] = {}
    retries: dict[str, float] = {}
    ages: dict[str, float] = {}
    overdue: dict[str, str] = {}
    watched: dict[str, bool] = {}
    for fam in text_string_to_metric_families(text):
        for sample in fam.samples:
            agent = sample.labels.get("agent")
            if agent is None:
                continue
            if sample.name == "thaw_agent_stuck_seconds":
                stuck[agent] = sample.value
            elif sample.name == "thaw_agent_failing" and sample.value:
                failing[agent] = (sample.labels.get("step", "?"), sample.labels.get("error", "?"))
            elif sample.name == "thaw_agent_retries_total":
                retries[agent] = retries.get(agent, 0.0) + sample.value
            elif sample.name == "thaw_worker_step_age_seconds":
                ages[agent] = sample.value
            elif sample.name == "thaw_worker_stuck":
                watched[agent] = bool(sample.value)
            elif sample.name == "thaw_worker_stuck_step" and sample.value:
                overdue[agent] = sample.labels.get("stage", "?")
    out = []
    for a in sorted(set(stuck) | set(failing) | set(retries) | set(ages) | set(watched)):
        step, error = failing.get(a, (None, None))
        late = overdue.get(a, "?") if watched.get(a) else None
        out.append(AgentState(a, stuck.get(a, 0.0), step, error, int(retries.get(a, 0.0)), ages.get(a, 0.0), late))
    return out


def read_agent_states(url: str, timeout_s: float = 2.0) -> list[AgentState]:
    """Scrape a worker's ``/metrics`` at ``url`` and parse its agents' health (httpx errors propagate)."""
    resp = httpx.get(url, timeout=timeout_s)
    resp.raise_for_status()
    return parse_agent_states(resp.text)


class _SettingsLagSource:
    """A lag source over one long-lived :class:`LagReader`, rebuilt after a failure."""

    def __init__(self, settings: Settings, group_ids: list[str] | None) -> None:
        self._settings = settings
        self._group_ids = group_ids
        self._reader: LagReader | None = None

    def __call__(self) -> list[PartitionLag]:
        if self._reader is None:
            self._reader = LagReader(self._settings.kafka)
        try:
            return self._reader.read(self._group_ids)
        except Exception:
            self.close()
            raise

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


class EngineMetrics:
    """The engine's counters, gauges and histograms on their own :class:`CollectorRegistry`.

    ``lag_source`` (e.g. ``lambda: consumer_lag(settings, [group])``) feeds ``thaw_consumer_lag`` when
    scraped; :meth:`for_settings` wires one to Kafka. Without a source the lag families are absent.
    """

    def __init__(
        self,
        lag_source: LagSource | None = None,
        *,
        lag_refresh_s: float = 5.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self._clock = clock
        self._closers: list[Callable[[], None]] = []
        self._server: Any = None
        self.events_total = Counter(
            "thaw_events",
            "Events handled by the engine, by topic and outcome",
            ["topic", "outcome"],
            registry=self.registry,
        )
        self.dlq_total = Counter(
            "thaw_dlq",
            "Events sent to the dead-letter topic, by source topic and error class",
            ["topic", "error"],
            registry=self.registry,
        )
        self.freshness_seconds = Histogram(
            "thaw_freshness_seconds",
            "Seconds from the event's produce timestamp until it is indexed/searchable",
            buckets=FRESHNESS_BUCKETS,
            registry=self.registry,
        )
        self.stage_seconds = Histogram(
            "thaw_stage_seconds",
            "Wall time of a pipeline stage",
            ["stage"],
            buckets=STAGE_BUCKETS,
            registry=self.registry,
        )
        self.ab_events_total = Counter(
            "thaw_ab_events",
            "Applied user events by the A/B serving arm echoed in their context, and action",
            ["variant", "action"],
            registry=self.registry,
        )
        self.agent_retries_total = Counter(
            "thaw_agent_retries",
            "Retries of agent steps that failed for an infrastructure reason, by agent, step and error class",
            ["agent", "step", "error"],
            registry=self.registry,
        )
        self._agents = _AgentHealth(clock)
        self.registry.register(self._agents)
        self._steps: _StepCollector | None = None
        self._lag: _LagCollector | None = None
        if lag_source is not None:
            self._lag = _LagCollector(lag_source, lag_refresh_s, clock)
            self.registry.register(self._lag)

    @classmethod
    def for_settings(
        cls, settings: Settings, group_ids: list[str] | None = None, *, lag_refresh_s: float = 5.0
    ) -> EngineMetrics:
        """Metrics whose ``thaw_consumer_lag`` comes from the Kafka in ``settings`` (all groups when None)."""
        source = _SettingsLagSource(settings, group_ids)
        metrics = cls(source, lag_refresh_s=lag_refresh_s)
        metrics._closers.append(source.close)
        return metrics

    # ------------------------------------------------------------------ recording helpers

    def event(self, topic: str, outcome: str, n: int = 1) -> None:
        self.events_total.labels(topic=topic, outcome=outcome).inc(n)

    def dlq(self, topic: str, error: str, n: int = 1) -> None:
        self.dlq_total.labels(topic=topic, error=error).inc(n)

    def ab_event(self, variant: str, action: str, n: int = 1) -> None:
        self.ab_events_total.labels(variant=variant, action=action).inc(n)

    def track_agents(self, agents: Iterable[str]) -> None:
        """Report ``thaw_agent_stuck_seconds`` for these agents from now on (0 until one gets stuck)."""
        self._agents.track(agents)

    def step_failed(self, agent: str, step: str, error: str) -> None:
        """``agent``'s ``step`` failed with error class ``error`` and is retried: the agent is stuck from its first
        such failure until :meth:`step_recovered`."""
        self.agent_retries_total.labels(agent=agent, step=step, error=error).inc()
        self._agents.failed(agent, step, error)

    def step_recovered(self, agent: str) -> None:
        """``agent``'s failing step succeeded (or was given up): the agent is no longer stuck."""
        self._agents.recovered(agent)

    def stuck_s(self, agent: str) -> float:
        """Seconds ``agent`` has been stuck (0 when it is not)."""
        return self._agents.stuck_s(agent)

    def watch_steps(self, source: StepSource) -> None:
        """Report the watchdog's view (``thaw_worker_stuck``, ``thaw_worker_step_age_seconds``,
        ``thaw_worker_stuck_step``) from ``source``, called at every scrape (from the HTTP server's thread)."""
        if self._steps is not None:
            raise RuntimeError("a step watch is already reported")
        self._steps = _StepCollector(source)
        self.registry.register(self._steps)

    def observe_freshness(self, seconds: float) -> None:
        self.freshness_seconds.observe(max(seconds, 0.0))

    def observe_stage(self, stage: str, seconds: float) -> None:
        self.stage_seconds.labels(stage=stage).observe(seconds)

    @contextlib.contextmanager
    def stage(self, stage: str) -> Iterator[None]:
        """``with metrics.stage("encode"): ...`` records the block's wall time (also when it raises)."""
        started = self._clock()
        try:
            yield
        finally:
            self.observe_stage(stage, self._clock() - started)

    def refresh_lag(self) -> None:
        """Read consumer lag now (otherwise it is read lazily at scrape time)."""
        if self._lag is not None:
            self._lag.refresh(force=True)

    # ------------------------------------------------------------------ exposition

    def render(self) -> bytes:
        """The registry in the Prometheus text format."""
        return generate_latest(self.registry)

    def start_http_server(self, port: int, addr: str = "127.0.0.1") -> int:
        """Serve ``/metrics`` on ``addr:port`` from a daemon thread; returns the bound port (0 picks one).

        Loopback by default; pass ``addr="0.0.0.0"`` for a Prometheus on another host.
        """
        if self._server is not None:
            raise RuntimeError("metrics HTTP server already started")
        server, _thread = _start_http_server(port, addr=addr, registry=self.registry)
        self._server = server
        return int(server.server_address[1])

    def close(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None
        for closer in self._closers:
            with contextlib.suppress(Exception):
                closer()
        self._closers.clear()
