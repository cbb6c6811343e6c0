"""The ``thaw`` command line against the real stack, in a fresh namespace."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration


def _thaw(settings, *args, check=True):
    env = {**os.environ, **settings.env()}
    p = subprocess.run([sys.executable, "-m", "thaw", *args], env=env, capture_output=True, text=True, timeout=120)
    if check and p.returncode != 0:
        raise AssertionError(f"thaw {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def test_stack_status_topics_lag_recall(stack_settings, unique_name):
    s = stack_settings.namespaced(unique_name)
    st = json.loads(_thaw(s, "stack", "status", "--json").stdout)
    assert {x["name"] for x in st} == {"kafka", "redis", "milvus"} and all(x["healthy"] for x in st)
    out = _thaw(s, "topics").stdout
    assert f"{unique_name}.content.new" in out
    assert "nothing" in _thaw(s, "topics").stdout  # idempotent
    lag = json.loads(_thaw(s, "lag", "--group", s.stream.app_id, "--json").stdout)
    assert lag == []  # the group has committed nothing yet
    rec = json.loads(_thaw(s, "recall", "--user", "nobody", "--k", "5", "--json").stdout)
    assert rec["source"] == "fallback" and rec["items"] == []
    from indexing.milvus_items import ItemIndex

    ItemIndex(s.milvus, dim=384).drop()


def test_bad_settings_give_a_clear_error_without_secrets(stack_settings, unique_name):
    s = stack_settings.namespaced(unique_name)
    env = {**os.environ, **s.env(), "THAW_REDIS__PORT": "1", "THAW_REDIS__PASSWORD": "s3cr3t-value"}
    p = subprocess.run([sys.executable, "-m", "thaw", "recall", "--user", "u"], env=env, capture_output=True,
                       text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    shown = s.redis.model_copy(update={"port": 1}).display()  # redis://127.0.0.1:1/0, or "... (cluster)"
    assert "Traceback" not in p.stderr and shown in p.stderr
    assert "s3cr3t-value" not in p.stdout + p.stderr


def test_stack_fetch_prints_the_kafka_jar_dir(stack_settings):
    libs = Path(_thaw(stack_settings, "stack", "fetch").stdout.strip())  # the stack is up, so the jars are there
    assert (libs / ".complete").exists() and any(libs.glob("kafka_2.13-*.jar"))
