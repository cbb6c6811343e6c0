"""End to end: the nemesis harness' quick run (``python -m benchmarks.nemesis --quick``) loses, repeats and
misfiles nothing.

It brings up its own local stack on free ports under a temporary home (it kills that stack's broker, Redis and
Milvus, so never the suite's), runs a worker under ~10k user events and ~300 items (2% bad) while it kills the
worker, pauses and kills the broker, kills Redis and stops Milvus, then checks the final states against the
producer's history. A few minutes on two cores.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parents[2]


def test_quick_nemesis_loses_repeats_and_misfiles_nothing(tmp_path):
    out = tmp_path / "nemesis.json"
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.nemesis", "--quick", "--seed", "3", "--free-ports",
         "--home", str(tmp_path / "stack"), "--out", str(out)],
        cwd=ROOT, capture_output=True, text=True, timeout=840, check=False,
    )
    assert out.exists(), f"no report (exit {proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    res = json.loads(out.read_text())
    summary = {k: res[k] for k in ("lost", "duplicated", "misfiled", "state_mismatch")}
    detail = json.dumps({k: res.get(k) for k in ("lost_breakdown", "duplicated_breakdown", "misfiled_breakdown",
                                                  "faults", "worker_log_issues")}, indent=1)[:4000]
    assert summary == {"lost": 0, "duplicated": 0, "misfiled": 0, "state_mismatch": 0}, detail
    # every kind of fault happened, and the load was what the quick plan promises
    assert set(res["faults_done"]) == {"worker_kill", "broker_pause", "broker_restart", "redis_kill", "milvus_stop"}
    assert res["faults_done"]["worker_kill"] >= 2
    counts = res["counts"]
    assert counts["valid_user_events"] >= 10_000 and counts["bad_records"] > 0
    assert counts["dead_letters"] >= counts["bad_records"]
    assert proc.returncode == 0, proc.stdout[-2000:]
