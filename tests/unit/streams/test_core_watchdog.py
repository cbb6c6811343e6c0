"""The watchdog rule (``streams.cores.watchdog``) and the worker's shell over it (``streams.app.StepWatchdog``):
a batch step older than ``stuck_after_s`` shows its agent as stuck, on ``/metrics`` and in one warning per episode.
Fake clock, no services."""

from __future__ import annotations

import asyncio
import logging

import pytest
from tenacity import wait_none

from infra.metrics import EngineMetrics, StepHealth, parse_agent_states
from streams.app import StepWatchdog, _retrying
from streams.cores.watchdog import RunningStep, stuck_warning, watch

UE = "ns.user.events"


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


def _step(agent: str, stage: str, started: float, *parts: int) -> RunningStep:
    return RunningStep(agent, stage, tuple((UE, p) for p in parts), started)


# ------------------------------------------------------------------------------------------------ the pure rule


def test_an_agent_is_stuck_once_its_oldest_step_is_older_than_the_limit():
    steps = [_step("users", "commit", 100.0, 0), _step("users", "send", 125.0, 1), _step("content", "content", 128.0)]
    at_limit = watch(["users", "content", "profiles"], steps, 130.0, 30.0)
    assert not at_limit.stuck  # 30 s old is not older than 30 s
    w = watch(["users", "content", "profiles"], steps, 130.5, 30.0)
    by = {a.agent: a for a in w.agents}
    assert w.stuck == {"users"}
    assert by["users"].oldest == steps[0] and by["users"].oldest_s == 30.5
    assert not by["content"].stuck and by["content"].oldest_s == 2.5
    assert not by["profiles"].stuck and by["profiles"].oldest_s == 0.0 and by["profiles"].oldest is None


def test_an_episode_begins_once_and_ends_once():
    steps = [_step("users", "commit", 0.0, 3)]
    first = watch(["users"], steps, 31.0, 30.0)
    assert [a.agent for a in first.began] == ["users"] and first.ended == ()
    again = watch(["users"], steps, 60.0, 30.0, first.stuck)
    assert again.began == () and again.ended == () and again.stuck == {"users"}  # the same episode: no new warning
    done = watch(["users"], [], 61.0, 30.0, again.stuck)
    assert done.began == () and done.ended == ("users",) and not done.stuck
    quiet = watch(["users"], [], 62.0, 30.0, done.stuck)
    assert quiet.began == () and quiet.ended == ()


def test_a_step_that_replaces_an_overdue_one_within_a_check_keeps_the_episode():
    # the commit finished, the next batch's handling is already overdue too: still one episode
    w1 = watch(["users"], [_step("users", "commit", 0.0)], 40.0, 30.0)
    w2 = watch(["users"], [_step("users", "users", 5.0)], 41.0, 30.0, w1.stuck)
    assert w2.stuck == {"users"} and w2.began == () and w2.ended == ()


def test_a_step_started_after_now_counts_as_just_started():
    w = watch([], [_step("users", "send", 10.0)], 9.5, 1.0)
    assert w.agents[0].oldest_s == 0.0 and not w.stuck


def test_an_agent_running_a_step_is_reported_even_when_not_tracked():
    w = watch([], [_step("profiles", "profiles", 0.0)], 5.0, 1.0)
    assert [a.agent for a in w.agents] == ["profiles"] and w.stuck == {"profiles"}


def test_the_warning_names_the_agent_stage_partitions_and_age_only():
    w = watch(["users"], [_step("users", "commit", 0.0, 2, 0)], 45.25, 30.0)
    msg = stuck_warning(w.agents[0], 30.0)
    assert msg.startswith("agent users is stuck: its commit step has been running for 45.2s")
    assert "stuck_after_s=30s" in msg and "ns.user.events[2]" in msg and "ns.user.events[0]" in msg


# ------------------------------------------------------------------------------------------------ the worker's shell


def test_the_watchdog_reports_on_metrics_and_warns_once_per_episode(caplog: pytest.LogCaptureFixture):
    clock = Clock()
    dog = StepWatchdog(5.0, ["content", "users"], clock=clock)
    m = EngineMetrics(clock=clock)
    m.watch_steps(dog.health)

    def sample(name: str, **labels: str) -> float | None:
        return m.registry.get_sample_value(name, labels)

    caplog.set_level(logging.WARNING, logger="streams.app")
    assert sample("thaw_worker_stuck", agent="users") == 0.0
    with dog.step("users", "commit", [(UE, 1), (UE, 0), (UE, 1)]):
        clock.t += 4.0
        dog.check()
        assert sample("thaw_worker_stuck", agent="users") == 0.0
        assert sample("thaw_worker_step_age_seconds", agent="users") == 4.0
        clock.t += 2.0
        for _ in range(3):
            dog.check()
            clock.t += 1.0
        assert sample("thaw_worker_stuck", agent="users") == 1.0
        assert sample("thaw_worker_step_age_seconds", agent="users") == 9.0
        assert sample("thaw_worker_stuck_step", agent="users", stage="commit") == 1.0
        assert sample("thaw_worker_stuck", agent="content") == 0.0
        stuck_logs = [r.getMessage() for r in caplog.records if "is stuck" in r.getMessage()]
        assert len(stuck_logs) == 1, stuck_logs  # once per episode, not once per check
        assert "agent users" in stuck_logs[0] and "commit" in stuck_logs[0]
        assert f"{UE}[0], {UE}[1]" in stuck_logs[0]
        state = {a.agent: a for a in parse_agent_states(m.render().decode())}["users"]
        assert state.overdue == "commit" and state.step_age_s == 9.0
    dog.check()
    assert sample("thaw_worker_stuck", agent="users") == 0.0
    assert sample("thaw_worker_step_age_seconds", agent="users") == 0.0
    assert sample("thaw_worker_stuck_step", agent="users", stage="commit") is None
    assert sum("no longer stuck" in r.getMessage() for r in caplog.records) == 1
    assert {a.agent: a for a in parse_agent_states(m.render().decode())}["users"].overdue is None


def test_a_step_retried_past_the_limit_is_stuck_though_each_attempt_fails_fast():
    """A sink that answers every call with a timeout at its deadline: no attempt is long, the step is."""
    clock = Clock()
    dog = StepWatchdog(3.0, ["users"], clock=clock)
    m = EngineMetrics(clock=clock)
    seen: list[bool] = []

    async def attempt() -> str:
        clock.t += 1.0  # each attempt ends at its 1 s deadline
        seen.append(any(h.stuck for h in dog.health()))
        if len(seen) < 6:
            raise TimeoutError("redis read timed out")
        return "ok"

    async def run() -> str:
        with dog.step("users", "commit", [(UE, 0)]):
            return str(await _retrying("commit", attempt, m, agent="users", wait=wait_none()))

    assert asyncio.run(run()) == "ok"
    assert seen == [False, False, False, True, True, True]  # stuck once the step is older than 3 s
    assert dog.health() == [StepHealth("users", False, 0.0, None)]  # over: nothing runs


def test_a_failing_watch_does_not_fail_the_scrape():
    m = EngineMetrics()

    def broken() -> list[StepHealth]:
        raise RuntimeError("bug")

    m.watch_steps(broken)
    body = m.render()  # raises if the collector let the error through
    assert b"thaw_events_total" in body or b"thaw_agent_stuck_seconds" in body
    assert b"thaw_worker_stuck{" not in body
    with pytest.raises(RuntimeError):
        m.watch_steps(broken)  # one watch per metrics object


def test_thaw_lag_shows_an_agent_the_watchdog_finds_stuck(monkeypatch: pytest.MonkeyPatch):
    from typer.testing import CliRunner

    import infra.lag
    from thaw.cli import app

    clock = Clock()
    dog = StepWatchdog(5.0, ["content", "users"], clock=clock)
    m = EngineMetrics(clock=clock)
    m.track_agents(["content", "users"])
    m.watch_steps(dog.health)
    monkeypatch.setattr(infra.lag, "consumer_lag", lambda s, groups: [])
    port = m.start_http_server(0)
    try:
        with dog.step("users", "send", [(UE, 0)]):
            clock.t += 12.0
            res = CliRunner().invoke(app, ["lag", "--metrics", f"http://127.0.0.1:{port}/metrics"],
                                     prog_name="thaw")
    finally:
        m.close()
    assert res.exit_code == 0, res.output
    lines = res.output.splitlines()
    assert "STEP_AGE_S" in res.output
    users = next(line for line in lines if line.strip().startswith("users")).split()
    assert users[:2] == ["users", "STUCK"] and users[3] == "send" and users[-1] == "12.0"  # hung, no failure yet
    content = next(line for line in lines if line.strip().startswith("content")).split()
    assert content[:2] == ["content", "ok"] and content[-1] == "0.0"
