"""Stopping a child process that runs in its own session (``start_new_session=True``): the engine's CLI
processes started by the demo, the benchmarks and the end-to-end tests."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time


def stop_process_group(proc: subprocess.Popen[bytes], timeout_s: float = 20.0) -> float:
    """SIGTERM the process group; SIGKILL it after ``timeout_s``. Returns the seconds it took.

    A process that already exited is left alone. The returned process has been reaped (``proc.returncode`` set).
    """
    t0 = time.perf_counter()
    if proc.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
    return time.perf_counter() - t0
