"""End-to-end fixtures: the local stack plus a real ``thaw worker`` subprocess in its own namespace."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from infra.settings import Settings
from tests.integration.conftest import made_namespaces, stack_settings, unique_name  # noqa: F401 - fixtures

__all__ = ["made_namespaces", "stack_settings", "unique_name"]


@dataclass
class Worker:
    settings: Settings
    proc: subprocess.Popen[bytes]
    log: Path
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        # a short grace for events on items that never arrive, so the DLQ test need not wait 30 s
        env = {**os.environ, **self.settings.env(), "THAW_STREAM__UNKNOWN_ITEM_GRACE_S": "3", **self.extra_env}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "thaw", "worker", "--loglevel", "warning", "--metrics-port", "0"],
            env=env, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, start_new_session=True,
        )

    def alive(self) -> bool:
        return self.proc.poll() is None

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.alive():
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill9()

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until the worker has created its collection and its consumer group has members with partitions."""
        from pymilvus import MilvusClient

        from infra.lag import group_is_active

        mc = MilvusClient(self.settings.milvus.uri)
        base = self.settings.milvus.items_collection
        wait_for(lambda: any(c == base or c.startswith(base + "__") for c in mc.list_collections()), timeout_s,
                 "collection", self)
        wait_for(lambda: group_is_active(self.settings, self.settings.stream.app_id), timeout_s,
                 "consumer group to be stable", self, poll_s=0.2)

    def metrics_url(self) -> str:
        """The worker's /metrics address (it logs the port it bound when started with --metrics-port 0)."""
        import re

        m = re.search(r"metrics on (http://\S+/metrics)", self.log.read_text(errors="replace"))
        assert m, f"worker did not log its metrics address:\n{self.log_tail()}"
        return m.group(1)

    def log_tail(self, n: int = 40) -> str:
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])


def wait_for(cond, timeout_s: float, what: str, worker: Worker | None = None, poll_s: float = 0.05):
    """Poll ``cond`` until truthy; fail with the worker's log tail otherwise."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        v = cond()
        if v:
            return v
        if worker is not None and not worker.alive():
            pytest.fail(f"worker died while waiting for {what}:\n{worker.log_tail()}")
        time.sleep(poll_s)
    tail = f"\n{worker.log_tail()}" if worker else ""
    pytest.fail(f"timed out after {timeout_s}s waiting for {what}{tail}")


def running_worker(s: Settings, log: Path, extra_env: dict[str, str] | None = None) -> Iterator[Worker]:
    """A started, ready worker in namespace ``s``; stopped and its namespace dropped afterwards."""
    from contracts.topics import Topics
    from infra.namespace import drop_namespace
    from infra.topics import ensure_topics

    ensure_topics(s.kafka, Topics.for_prefix(s.kafka.topic_prefix))
    # the text space unless a test asks for another: a CF model published in the developer's model directory
    # must not change what the text-space tests see
    env = {"THAW_STREAM__SPACE": "text", **(extra_env or {})}
    w = Worker(s, None, log, env)  # type: ignore[arg-type]
    w.start()
    try:
        w.wait_ready()
        yield w
    finally:
        w.stop()
    drop_namespace(s)  # topics, groups, collections, Redis keys: what the worker made in its namespace
    shutil.rmtree(s.stream.data_dir / s.stream.app_id, ignore_errors=True)


@pytest.fixture
def worker(stack_settings, unique_name, tmp_path) -> Iterator[Worker]:  # noqa: F811
    yield from running_worker(stack_settings.namespaced(unique_name), tmp_path / "worker.log")


def served_item_vectors(models_dir: Path, version: str, ds, rows, max_tags: int = 20):  # noqa: ANN001, ANN201
    """What a CF-space worker must upsert for dataset items ``rows`` published with their text and first
    ``max_tags`` tags: the version's CFSpace projection (MiniLM document, words field, hybrid part if any)."""
    import numpy as np

    from encoders.featurizer import FeatureBatch, content_document
    from encoders.registry import ModelRegistry
    from encoders.text import MODEL_NAME, TextEncoder
    from streams.models import load_cf_space

    reg = ModelRegistry(models_dir)
    cf = load_cf_space(reg, threads=1, version=version)
    assert cf is not None
    docs = [(ds.item_text[i], ds.item_tags[i][:max_tags]) for i in rows]
    text = TextEncoder(reg.load(MODEL_NAME), threads=1).encode([content_document(t, g) for t, g in docs])
    feats = FeatureBatch(("text",), {"text": text}, np.ones((len(docs), 1), dtype=bool), {})
    return cf.project(feats, list(range(len(docs))), docs)


def read_topic(s: Settings, topic: str, n: int, timeout_s: float = 30.0) -> list[bytes]:
    """Up to ``n`` record values of ``topic`` from the beginning (fewer when ``timeout_s`` passes first)."""
    from kafka import KafkaConsumer

    c = KafkaConsumer(topic, bootstrap_servers=s.kafka.bootstrap_servers, auto_offset_reset="earliest",
                      max_partition_fetch_bytes=s.kafka.dlq_max_message_bytes,
                      enable_auto_commit=False, group_id=None, consumer_timeout_ms=500)
    out: list[bytes] = []
    deadline = time.monotonic() + timeout_s
    while len(out) < n and time.monotonic() < deadline:
        out.extend(m.value for m in c)
    c.close()
    return out


def random_events(rng, users: list[str], item_ids: list[str], n: int,  # noqa: ANN001
                  actions: tuple[str, ...] = ("play", "like", "skip", "complete")) -> list[dict[str, str]]:
    """``n`` user events, 10 ms apart from now: a random user, item and action each (drawn in that order)."""
    base = time.time()
    return [{"user_id": users[int(rng.integers(len(users)))], "item_id": item_ids[int(rng.integers(len(item_ids)))],
             "action": actions[int(rng.integers(len(actions)))],
             "ts": datetime.fromtimestamp(base + j * 0.01, UTC).isoformat()} for j in range(n)]
