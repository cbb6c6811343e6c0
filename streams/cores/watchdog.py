"""The worker's watchdog rule: which agents are stuck, judged from the batch steps they are running. Pure.

A batch step is one of an agent's retried steps (:func:`streams.app.run_batch`): handling a batch (``content``,
``users``, ``profiles``), delivering its records (``send``) or committing it (``commit``). A step runs from its first
attempt until it succeeds, its retries included, so a sink that hangs (a call that never returns) and a sink that
keeps failing (each call timing out at its deadline, then retried) look alike: a step that does not end.

An agent is **stuck** while one of its running steps is older than ``stuck_after_s``. A stuck **episode** lasts from
the first check that finds the agent stuck to the first that does not; :func:`watch` says which agents began and
ended an episode since the previous check, so the worker warns once per episode (:func:`stuck_warning`) and not on
every check. The worker reports every agent's state as ``thaw_worker_stuck{agent}`` and the age of its oldest
running step (``streams.app.StepWatchdog``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class RunningStep:
    """One batch step in progress."""

    agent: str
    stage: str  # content, users, profiles, send, commit
    partitions: tuple[tuple[str, int], ...]  # (topic, partition) of the batch's records, sorted
    started: float  # clock reading at the step's first attempt


@dataclass(frozen=True)
class AgentWatch:
    """One agent at one check."""

    agent: str
    stuck: bool
    oldest_s: float  # age of its oldest running step (0 when none runs)
    oldest: RunningStep | None  # that step


@dataclass(frozen=True)
class Watch:
    """One check of every agent."""

    agents: tuple[AgentWatch, ...]  # every agent tracked or running a step, by name
    began: tuple[AgentWatch, ...]  # stuck now and not at the previous check: a new episode (warn once)
    ended: tuple[str, ...]  # stuck at the previous check and not now

    @property
    def stuck(self) -> frozenset[str]:
        """The agents stuck at this check (the ``was_stuck`` of the next one)."""
        return frozenset(a.agent for a in self.agents if a.stuck)


def watch(agents: Iterable[str], running: Iterable[RunningStep], now: float, stuck_after_s: float,
          was_stuck: frozenset[str] = frozenset()) -> Watch:
    """Judge every agent at ``now``: stuck when its oldest running step started more than ``stuck_after_s`` ago.

    ``agents``: the agents to report even while they run nothing; ``was_stuck``: the agents stuck at the previous
    check (:attr:`Watch.stuck`). A step started in the future (a clock read on another thread just before ``now``)
    counts as 0 s old.
    """
    oldest: dict[str, RunningStep] = {}
    for step in running:
        have = oldest.get(step.agent)
        if have is None or step.started < have.started:
            oldest[step.agent] = step
    out = []
    for name in sorted(set(agents) | set(oldest)):
        first = oldest.get(name)
        age = max(now - first.started, 0.0) if first is not None else 0.0
        out.append(AgentWatch(name, first is not None and age > stuck_after_s, age, first))
    began = tuple(a for a in out if a.stuck and a.agent not in was_stuck)
    stuck_now = {a.agent for a in out if a.stuck}
    ended = tuple(sorted(was_stuck - stuck_now))
    return Watch(tuple(out), began, ended)


def stuck_warning(agent: AgentWatch, stuck_after_s: float) -> str:
    """The warning of a stuck agent: which step, how long, on which partitions (names and numbers only: nothing of
    the records or the error, so nothing secret)."""
    step = agent.oldest
    if step is None:
        return f"agent {agent.agent} runs no step"
    parts = ", ".join(f"{t}[{p}]" for t, p in step.partitions) or "no partition"
    return (f"agent {agent.agent} is stuck: its {step.stage} step has been running for {agent.oldest_s:.1f}s "
            f"(more than stuck_after_s={stuck_after_s:g}s) on {parts}; its partitions wait, nothing is acked")
