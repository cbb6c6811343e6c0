"""``thaw worker --follow-cf``: a worker that picks up new CF versions without a restart, rolling each out
blue/green.

The supervisor runs the engine as a child worker group pinned to the current ``cb2cf`` version (group
``<app_id>-<version>``). It polls the model directory; when ``cb2cf/CURRENT`` moves to a new version it

1. loads the new version's warm item and user vectors (:func:`streams.rollout.cf_load.load_warm_vectors`);
2. starts a second child group pinned to the new version, which consumes every topic from the beginning into the
   new space's own collection and user states while the old group keeps serving (both keep writing);
3. flips the Milvus serving alias and the Redis space key once the new group's lag is zero
   (:func:`streams.rollout.cf_load.flip_space`), and only then stops the old group.

Nothing is lost or applied twice: each group has its own offset fences and applies only its own retries; the flip
happens only when the new group has applied everything. The supervisor holds no state of its own: killed, it is
restarted like any worker (a group resumes from its committed offsets).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass
from pathlib import Path

from encoders.registry import ModelRegistry
from infra.settings import Settings
from streams.rollout.cf_load import FlipRefused, flip_space, load_warm_vectors

log = logging.getLogger(__name__)


@dataclass
class Child:
    version: str
    group: str
    proc: subprocess.Popen[bytes]

    @property
    def space(self) -> str:
        return f"cb2cf@{self.version}"


class CFFollower:
    """Runs and rolls the CF-space worker groups (see the module docstring).

    Args:
        settings: Engine settings (``stream.app_id`` is the prefix of the groups' ids).
        poll_s: Seconds between model-directory checks (and flip attempts during a roll-out).
        catchup_grace_s: Unknown-item grace of a catching-up group (its user agent outruns its content agent).
        log_dir: Where the children's output goes (default: the stack home).
        extra_args: Extra ``thaw worker`` arguments of the children.
        flip_max_lag: Largest per-partition lag of the new group at the flip (under live traffic the lag is rarely
            exactly zero at a poll; the few newest records are applied within a batch or two after the flip).
    """

    def __init__(self, settings: Settings, poll_s: float = 5.0, catchup_grace_s: float = 3600.0,
                 log_dir: Path | None = None, extra_args: list[str] | None = None, flip_max_lag: int = 100) -> None:
        self.s = settings
        self.poll_s = poll_s
        self.catchup_grace_s = catchup_grace_s
        self.log_dir = log_dir or settings.stack.home / "follow-logs"
        self.extra_args = extra_args or []
        self.flip_max_lag = flip_max_lag
        self.registry = ModelRegistry(settings.models.dir)
        self.serving: Child | None = None
        self.rolling: Child | None = None

    def group_of(self, version: str) -> str:
        return f"{self.s.stream.app_id}-{version}"

    def _start(self, version: str, catching_up: bool) -> Child:
        group = self.group_of(version)
        env = {**os.environ, **self.s.env(), "THAW_STREAM__SPACE": "cf", "THAW_STREAM__CF_VERSION": version,
               "THAW_STREAM__APP_ID": group, "THAW_MODELS__DIR": str(self.s.models.dir)}
        if catching_up:
            env["THAW_STREAM__UNKNOWN_ITEM_GRACE_S"] = str(self.catchup_grace_s)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        out = (self.log_dir / f"{group}.log").open("ab")
        proc = subprocess.Popen(  # noqa: S603 - our own CLI
            [sys.executable, "-m", "thaw", "worker", "--loglevel", "warning", *self.extra_args],
            env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True,
        )
        out.close()
        log.info("started group %s (space cb2cf@%s, pid %d)", group, version, proc.pid)
        return Child(version, group, proc)

    @staticmethod
    def _stop(child: Child, timeout_s: float = 30.0) -> None:
        if child.proc.poll() is None:
            child.proc.send_signal(signal.SIGTERM)
            try:
                child.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(child.proc.pid, signal.SIGKILL)
                child.proc.wait(timeout=10)
        log.info("stopped group %s", child.group)

    def step(self) -> None:
        """One supervision round: start, roll out, flip, restart a crashed child."""
        current = self.registry.current_version("cb2cf")
        if current is None:
            return
        if self.serving is None:
            load_warm_vectors(self.s, version=current)
            self.serving = self._start(current, catching_up=False)
            return
        if self.serving.proc.poll() is not None:  # crashed: the group resumes from its committed offsets
            log.warning("group %s exited with %s; restarting it", self.serving.group, self.serving.proc.returncode)
            self.serving = self._start(self.serving.version, catching_up=False)
        if self.rolling is None and current != self.serving.version:
            log.info("new CF version %s: rolling out beside %s", current, self.serving.version)
            load_warm_vectors(self.s, version=current)
            self.rolling = self._start(current, catching_up=True)
            return
        if self.rolling is not None:
            if self.rolling.proc.poll() is not None:
                log.warning("rolling group %s exited; restarting it", self.rolling.group)
                self.rolling = self._start(self.rolling.version, catching_up=True)
                return
            try:
                rep = flip_space(self.s, self.rolling.space, group=self.rolling.group, max_lag=self.flip_max_lag)
            except FlipRefused as exc:
                log.info("not flipping yet: %s", exc)
                return
            log.info("flipped: %s", rep)
            old, self.serving, self.rolling = self.serving, self.rolling, None
            self._stop(old)

    def run(self, stop: threading.Event | None = None) -> None:
        """Supervise until ``stop`` is set (or SIGTERM/SIGINT when run from the CLI); children are stopped."""
        stop = stop or threading.Event()
        try:
            while not stop.is_set():
                self.step()
                stop.wait(self.poll_s)
        finally:
            for c in (self.rolling, self.serving):
                if c is not None:
                    self._stop(c)
