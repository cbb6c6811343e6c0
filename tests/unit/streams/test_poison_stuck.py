"""The stuck signal of an agent whose sink step keeps failing: ``thaw_agent_*`` on ``/metrics`` (fake clock), read
back over HTTP, and shown by ``thaw lag``. No services (Kafka's lag read is replaced)."""

from __future__ import annotations

import asyncio

import pytest
from tenacity import wait_none
from typer.testing import CliRunner

import infra.lag
from infra.lag import PartitionLag
from infra.metrics import AgentState, EngineMetrics, parse_agent_states, read_agent_states
from streams.app import BatchAbandoned, _retrying
from thaw.cli import app


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _sample(m: EngineMetrics, name: str, **labels: str) -> float | None:
    return m.registry.get_sample_value(name, labels)


def test_stuck_seconds_grow_from_the_first_failure_until_the_step_succeeds():
    clock = Clock()
    m = EngineMetrics(clock=clock)
    m.track_agents(["content", "users"])
    assert _sample(m, "thaw_agent_stuck_seconds", agent="content") == 0.0
    m.step_failed("users", "commit", "ConnectionError")
    clock.t += 7.5
    m.step_failed("users", "commit", "TimeoutError")  # the streak goes on; the last error class is shown
    clock.t += 2.5
    assert _sample(m, "thaw_agent_stuck_seconds", agent="users") == 10.0
    assert _sample(m, "thaw_agent_failing", agent="users", step="commit", error="TimeoutError") == 1.0
    assert _sample(m, "thaw_agent_failing", agent="users", step="commit", error="ConnectionError") is None
    assert _sample(m, "thaw_agent_retries_total", agent="users", step="commit", error="ConnectionError") == 1.0
    assert _sample(m, "thaw_agent_stuck_seconds", agent="content") == 0.0
    m.step_recovered("users")
    assert _sample(m, "thaw_agent_stuck_seconds", agent="users") == 0.0
    assert _sample(m, "thaw_agent_failing", agent="users", step="commit", error="TimeoutError") is None


def test_the_retry_loop_marks_its_agent_stuck_while_it_retries():
    m = EngineMetrics()
    seen = []

    async def flaky():
        seen.append(m.stuck_s("users") > 0 or _sample(m, "thaw_agent_failing", agent="users", step="commit",
                                                       error="ConnectionError") == 1.0)
        if len(seen) < 3:
            raise ConnectionError("redis down")
        return "ok"

    assert asyncio.run(_retrying("commit", flaky, m, agent="users", wait=wait_none())) == "ok"
    assert seen == [False, True, True]  # stuck from the first failure on
    assert m.stuck_s("users") == 0.0 and _sample(m, "thaw_events_total", topic="commit", outcome="retry") == 2


def test_a_stop_during_the_retries_clears_the_stuck_state():
    m = EngineMetrics()

    stuck_before_stop = []

    async def go():
        stopping = asyncio.Event()
        calls = 0

        async def down():
            nonlocal calls
            calls += 1
            if calls == 3:
                stuck_before_stop.append(m.stuck_s("content") > 0)
                stopping.set()
            raise ConnectionError("milvus down")

        await _retrying("content", down, m, stopping, agent="content", wait=wait_none())

    with pytest.raises(BatchAbandoned):
        asyncio.run(go())
    assert stuck_before_stop == [True] and m.stuck_s("content") == 0.0


def test_agent_states_round_trip_through_the_exposition_and_http():
    clock = Clock()
    m = EngineMetrics(clock=clock)
    m.track_agents(["content", "profiles", "users"])
    m.step_failed("users", "commit", "ConnectionError")
    m.step_failed("content", "send", "KafkaTimeoutError")
    m.step_recovered("content")
    clock.t += 42.0
    want = [AgentState("content", 0.0, None, None, 1), AgentState("profiles", 0.0, None, None, 0),
            AgentState("users", 42.0, "commit", "ConnectionError", 1)]
    assert parse_agent_states(m.render().decode()) == want
    port = m.start_http_server(0)
    try:
        assert read_agent_states(f"http://127.0.0.1:{port}/metrics") == want
    finally:
        m.close()


def test_thaw_lag_shows_the_agents_of_the_worker(monkeypatch):
    m = EngineMetrics()
    m.track_agents(["content", "users"])
    m.step_failed("users", "commit", "ConnectionError")
    rows = [PartitionLag("thaw-engine", "user.events", 0, 10, 250, 240)]
    monkeypatch.setattr(infra.lag, "consumer_lag", lambda s, groups: rows)
    port = m.start_http_server(0)
    try:
        res = CliRunner().invoke(app, ["lag", "--metrics", f"http://127.0.0.1:{port}/metrics"], prog_name="thaw")
    finally:
        m.close()
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "total lag 240" in res.output
    users = next(line for line in lines if line.strip().startswith("users"))
    assert users.split()[:2] == ["users", "STUCK"] and "commit" in users and "ConnectionError" in users
    content = next(line for line in lines if line.strip().startswith("content"))
    assert content.split()[:3] == ["content", "ok", "0.0"]


def test_thaw_lag_says_when_no_worker_metrics_are_there(monkeypatch):
    monkeypatch.setattr(infra.lag, "consumer_lag", lambda s, groups: [])
    res = CliRunner().invoke(app, ["lag", "--metrics", "http://127.0.0.1:9/metrics"], prog_name="thaw")
    assert res.exit_code == 0, res.output
    assert "agents: no worker metrics at http://127.0.0.1:9/metrics (ConnectError)" in res.output
    json_out = CliRunner().invoke(app, ["lag", "--json", "--metrics", "http://127.0.0.1:9/metrics"])
    assert json_out.output.strip() == "[]"  # --json stays the lag rows only
