"""Several ``thaw worker`` processes in one consumer group, handled as one unit.

The nemesis (``--workers N``) and the scaling benchmark start, watch, kill, pause and stop their workers through a
:class:`WorkerGroup`: each member is a :class:`benchmarks._harness.Worker` (its own subprocess, log file, temporary
working directory and Faust data directory) in the same namespace, so all of them join the same consumer group and
Kafka splits the partitions between them. The decisions (which member a fault hits, whether the group's assignment
covers every partition) are the pure functions at the bottom.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import BenchError, Worker, wait_for
from infra import clients
from infra.settings import Settings


@dataclass
class WorkerGroup:
    """``n`` workers of ``settings``' consumer group (more can join later with :meth:`add`).

    With a single member the log is ``<log_dir>/worker.log`` and the Faust data directory ``data_dir`` itself (what
    the one-worker nemesis always used); with several, member ``i`` logs to ``worker-<i>.log`` and keeps its Faust
    data under ``data_dir/w<i>``.
    """

    settings: Settings
    log_dir: Path
    n: int = 1
    loglevel: str = "warning"
    extra_env: dict[str, str] = field(default_factory=dict)
    data_dir: Path | None = None
    members: list[Worker] = field(init=False, default_factory=list)
    retired: list[Worker] = field(init=False, default_factory=list)  # killed on purpose, never restarted
    made: int = field(init=False, default=0)
    last_seen: str = field(init=False, default="")  # the last group description (for a wait that times out)

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ValueError("a worker group has at least one member")
        for _ in range(self.n):
            self._new()

    def _new(self) -> Worker:
        i = self.made
        single = self.n == 1 and i == 0
        env = dict(self.extra_env)
        if self.data_dir is not None:
            env["THAW_STREAM__DATA_DIR"] = str(self.data_dir if single else self.data_dir / f"w{i}")
        w = Worker(self.settings, self.log_dir / ("worker.log" if single else f"worker-{i}.log"),
                   loglevel=self.loglevel, extra_env=env)
        self.members.append(w)
        self.made += 1
        return w

    # ------------------------------------------------------------------------------------------ lifecycle
    def start(self) -> list[Worker]:
        """Start every member that is not running; returns the ones started."""
        started = [w for w in self.members if not w.alive()]
        for w in started:
            w.start()
        return started

    def add(self) -> Worker:
        """A new member joins the group (a rebalance follows)."""
        w = self._new()
        w.start()
        return w

    def alive(self) -> bool:
        """Every member is running."""
        return all(w.alive() for w in self.members)

    def dead(self) -> list[Worker]:
        return [w for w in self.members if not w.alive()]

    def kill9(self, w: Worker) -> None:
        """SIGKILL ``w``'s process group and reap it (it stays a member: :meth:`start` restarts it)."""
        if w.alive():
            assert w.proc is not None
            with contextlib.suppress(ProcessLookupError):
                os.killpg(w.proc.pid, signal.SIGKILL)
            w.proc.wait(timeout=30)

    def retire(self, w: Worker) -> None:
        """``w`` leaves the group for good (after :meth:`kill9`): nothing restarts it."""
        self.members.remove(w)
        self.retired.append(w)

    def pause(self, members: Iterable[Worker] | None = None) -> None:
        """SIGSTOP (the whole group by default): the processes freeze, heartbeats included."""
        for w in self.members if members is None else members:
            if w.alive():
                assert w.proc is not None
                os.killpg(w.proc.pid, signal.SIGSTOP)

    def resume(self, members: Iterable[Worker] | None = None) -> None:
        for w in self.members if members is None else members:
            if w.proc is not None and w.proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGCONT)

    def stop(self, timeout_s: float = 30.0) -> float:
        """SIGTERM every member at once, then wait for each (SIGKILL past ``timeout_s``); returns the seconds."""
        t0 = time.perf_counter()
        for w in self.members:
            if w.alive():
                assert w.proc is not None
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(w.proc.pid, signal.SIGTERM)
        for w in self.members:
            w.stop(timeout_s)
        return time.perf_counter() - t0

    def close(self) -> None:
        self.resume()  # a stopped process ignores SIGTERM until continued
        self.stop()
        for w in self.members + self.retired:
            w.close()

    # -------------------------------------------------------------------------------------------- watching
    @property
    def starts(self) -> int:
        return sum(w.starts for w in self.members + self.retired)

    def assignment(self, admin: Any, topic: str) -> dict[str, tuple[int, ...]] | None:
        """Per member of the consumer group, its partitions of ``topic``; None while the group is not Stable."""
        gid = self.settings.stream.app_id
        try:
            desc = admin.describe_groups([gid]).get(gid) or {}
        except Exception as exc:  # noqa: BLE001 - coordinator not ready, broker busy: not known now
            self.last_seen = f"describe_groups failed: {type(exc).__name__}: {str(exc)[:200]}"
            return None
        got = member_partitions(desc, topic)
        self.last_seen = f"{desc.get('group_state')}: {sorted(got.values())}"
        if desc.get("group_state") != "Stable":
            return None
        return got

    def wait_ready(self, topic: str, partitions: int, timeout_s: float = 240.0) -> float:
        """Until the items collection exists and the group is Stable with every running member holding some of
        ``topic``'s ``partitions`` and all of them covered; returns the seconds waited."""
        t0 = time.perf_counter()
        self.members[0].wait_ready(timeout_s=timeout_s)
        admin = clients.kafka_admin(self.settings.kafka)
        try:
            def ready() -> bool:
                if not self.alive():
                    raise BenchError("a worker died while the group formed:\n" + self.log_tail())
                got = self.assignment(admin, topic)
                return got is not None and covers(got, len(self.members), partitions)

            try:
                wait_for(ready, timeout_s, f"{len(self.members)} workers to share {partitions} partitions", None,
                         poll_s=0.2)
            except BenchError as exc:
                raise BenchError(f"{exc}; last seen {self.last_seen}") from exc
        finally:
            admin.close()
        return time.perf_counter() - t0

    def cpu_seconds(self) -> dict[str, float | None]:
        """User+system CPU seconds so far of each running member, by log file stem (``worker-0``, ...)."""
        return {w.log.stem: w.cpu_seconds() for w in self.members}

    def log_tail(self, n: int = 20) -> str:
        return "\n".join(f"--- {w.log.name}\n{w.log_tail(n)}" for w in self.members + self.retired)

    def log_issues(self, limit: int = 15) -> dict[str, Any]:
        """ERROR/WARNING/Traceback counts over every member's log, and the first distinct lines (named by log)."""
        counts: dict[str, int] = {}
        first: list[str] = []
        many = len(self.members) + len(self.retired) > 1
        for w in self.members + self.retired:
            got = w.log_issues(limit)
            for k, v in got["counts"].items():
                counts[k] = counts.get(k, 0) + v
            for line in got["first"]:
                if len(first) < limit:
                    first.append(f"{w.log.stem}: {line}" if many else line)
        return {"counts": counts, "first": first}


# ------------------------------------------------------------------------------------------- pure decisions
def member_partitions(desc: Mapping[str, Any], topic: str) -> dict[str, tuple[int, ...]]:
    """From one group of kafka-python's ``describe_groups``: each member's sorted partitions of ``topic``."""
    out: dict[str, tuple[int, ...]] = {}
    for m in desc.get("members") or []:
        parts: set[int] = set()
        for entry in (m.get("member_assignment") or {}).get("assigned_partitions") or []:
            name, ps = (entry["topic"], entry["partitions"]) if isinstance(entry, Mapping) else entry
            if name == topic:
                parts.update(int(p) for p in ps)
        out[str(m.get("member_id"))] = tuple(sorted(parts))
    return out


def covers(assignment: Mapping[str, tuple[int, ...]], members: int, partitions: int) -> bool:
    """The assignment has exactly ``members`` members, each holding some partitions, none held twice, all of
    ``0..partitions-1`` held (with more members than partitions, some hold none: then only the cover counts)."""
    if len(assignment) != members:
        return False
    held = [p for ps in assignment.values() for p in ps]
    if len(held) != len(set(held)) or set(held) != set(range(partitions)):
        return False
    return members > partitions or all(assignment.values())


def pick_member(rng: np.random.Generator, n: int) -> int:
    """Which of ``n`` members a fault hits: uniform; with one member, that one (and no draw, so a one-worker run
    uses its generator exactly as before)."""
    if n < 1:
        raise ValueError("no member to pick")
    return 0 if n == 1 else int(rng.integers(n))
