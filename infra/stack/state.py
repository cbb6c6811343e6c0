"""Process bookkeeping of the local stack: detached launches, liveness, stopping, and ``<home>/state.json``.

``state.json`` maps a service name to the process ``up`` started for it (pid, a cmdline marker that identifies it,
its log, start time and startup seconds), so ``down`` stops exactly those processes and nothing else. ``up`` and
``down`` hold ``<home>/.stack.lock`` (an flock) so concurrent processes serialise.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from infra.stack.common import StackError, poll


@dataclass
class Launch:
    pid: int
    marker: str  # a substring of /proc/<pid>/cmdline that identifies our process
    log: Path


def pid_alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            state = fh.read().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    if state in ("Z", "X"):
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)  # reap it if it is our own child
        return False
    return True


def cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode("utf-8", "replace")
    except OSError:
        return ""


def spawn(cmd: list[str], out_log: Path, marker: str, cwd: Path, env: dict[str, str] | None = None) -> Launch:
    """Start ``cmd`` detached (own session, stdout+stderr appended to ``out_log``); it outlives this process."""
    out_log.parent.mkdir(parents=True, exist_ok=True)
    with open(out_log, "ab") as out:
        out.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting {Path(cmd[0]).name}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                cmd,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=cwd,
                env=env,
                start_new_session=True,
                close_fds=True,
            )
        except OSError as exc:
            raise StackError(f"could not start {cmd[0]}: {exc}") from exc
    # the child outlives us: forget the Popen without a "still running" ResourceWarning
    proc.returncode = 0
    return Launch(proc.pid, marker, out_log)


def signal_process(pid: int, sig: signal.Signals) -> None:
    """Signal the process group when ``pid`` leads one (our launches do), else the process alone."""
    try:
        if os.getpgid(pid) == pid:
            os.killpg(pid, sig)
        else:
            os.kill(pid, sig)
    except ProcessLookupError:
        pass


def terminate(pid: int, grace_s: float, clock: Callable[[], float]) -> bool:
    """SIGTERM ``pid``; SIGKILL its group if it still runs after ``grace_s``. True when it had to be killed."""
    signal_process(pid, signal.SIGTERM)
    poll(lambda: pid_alive(pid), lambda alive: not alive, until=clock() + grace_s, clock=clock, every_s=0.1)
    killed = pid_alive(pid)
    if killed:
        signal_process(pid, signal.SIGKILL)
        poll(lambda: pid_alive(pid), lambda alive: not alive, until=clock() + 10, clock=clock, every_s=0.1)
    return killed


class StateFile:
    """``<home>/state.json``: the processes ``up`` started, one entry per service; and the stack's flock."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        return self.home / "state.json"

    @contextlib.contextmanager
    def flock(self) -> Iterator[None]:
        """Serialise ``up``/``down`` across processes (two pytest sessions, a CLI and a test run...)."""
        with open(self.home / ".stack.lock", "w", encoding="utf-8") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def read(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _mutate(self, fn: Callable[[dict[str, dict[str, Any]]], None]) -> None:
        with self._lock:
            state = self.read()
            fn(state)
            tmp = self.path.with_suffix(f".tmp-{os.getpid()}-{threading.get_ident()}")
            tmp.write_text(json.dumps(state, indent=2, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)

    def write(self, name: str, entry: dict[str, Any]) -> None:
        self._mutate(lambda st: st.__setitem__(name, entry))

    def update(self, name: str, **fields: Any) -> None:
        self._mutate(lambda st: st.get(name, {}).update(fields))

    def drop(self, name: str) -> None:
        def drop(state: dict[str, dict[str, Any]]) -> None:
            state.pop(name, None)

        if name in self.read():
            self._mutate(drop)

    def record(self, name: str, launch: Launch) -> None:
        """Remember a fresh launch of ``name``."""
        self.write(
            name,
            {"pid": launch.pid, "marker": launch.marker, "log": str(launch.log), "started_at": time.time()},
        )

    def launch(self, name: str) -> Launch:
        """The recorded launch of ``name`` (KeyError when there is none)."""
        entry = self.read()[name]
        return Launch(int(entry["pid"]), entry["marker"], Path(entry["log"]))

    def managed_pid(self, name: str) -> int | None:
        """The pid of the process ``up`` started for ``name``, if it still runs (checked against its marker)."""
        entry = self.read().get(name)
        if not entry:
            return None
        pid = int(entry["pid"])
        if pid_alive(pid) and entry.get("marker", "\0") in cmdline(pid):
            return pid
        return None
