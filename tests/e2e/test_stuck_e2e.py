"""A hung Redis under a running ``thaw worker`` shows as stuck, and the worker catches up without losing anything.

The worker reaches Redis through the suite's freezable TCP proxy (``test_worker_stop.FreezableProxy``: every byte
held, a server that hangs). With ``THAW_STREAM__STUCK_AFTER_S=2``, content and user events published while Redis
hangs must turn ``thaw_worker_stuck{agent}`` to 1 on ``/metrics`` for the content and users agents (their batch
steps block on Redis, then time out at the ingest deadline and are retried), with one warning per agent naming the
stage and partitions. Once the proxy thaws, every item and event is applied exactly once (Milvus rows, item
attributes, the users' event counts), everything is committed, nothing is dead-lettered, and the gauges fall to 0.
"""

from __future__ import annotations

import time

import httpx
import numpy as np
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from contracts.topics import Topics
from encoders.text import MODEL_NAME
from indexing.milvus_items import ItemIndex
from indexing.redis_state import RedisState
from tests.e2e.conftest import random_events, read_topic, running_worker, wait_for
from tests.e2e.test_engine_e2e import _send
from tests.e2e.test_worker_stop import FreezableProxy, _items, _uncommitted, skip_on_a_redis_cluster

pytestmark = pytest.mark.e2e

STUCK_AFTER_S = 2.0
AGENTS = ("content", "users")


def _gauges(url: str, name: str) -> dict[str, float]:
    body = httpx.get(url, timeout=5).text
    return {x.labels["agent"]: x.value for fam in text_string_to_metric_families(body) for x in fam.samples
            if x.name == name}


def test_a_hung_redis_shows_the_worker_stuck_and_it_catches_up_losing_nothing(stack_settings, unique_name, tmp_path):
    skip_on_a_redis_cluster(stack_settings)
    s = stack_settings.namespaced(unique_name)
    t = Topics.for_prefix(s.kafka.topic_prefix)
    proxy = FreezableProxy(s.redis.host, s.redis.port)
    env = {"THAW_REDIS__HOST": "127.0.0.1", "THAW_REDIS__PORT": str(proxy.port),
           "THAW_STREAM__STUCK_AFTER_S": str(STUCK_AFTER_S)}
    log = tmp_path / "worker.log"
    run = running_worker(s, log, env)
    try:
        w = next(run)
        url = w.metrics_url()
        store = RedisState(s.redis)  # straight to Redis, not through the proxy
        ix = ItemIndex(s.milvus, dim=384)
        space = f"{MODEL_NAME}@1"
        p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
        rng = np.random.default_rng(5)
        users = [f"s{u}" for u in range(4)]

        def applied() -> int:
            return sum(st.n_events for st in store.read_states(space, users).values() if st)

        # before: a set of items and events on them go through
        first = _items("a", 4)
        for it in first:
            _send(p, t.content_new, it["item_id"], it)
        p.flush()
        wait_for(lambda: len(store.item_meta([i["item_id"] for i in first])) == 4, 60, "set a applied", w)
        early = random_events(rng, users, [i["item_id"] for i in first], 12)
        for e in early:
            _send(p, t.user_events, e["user_id"], e)
        p.flush()
        wait_for(lambda: applied() == 12, 60, "the first events applied", w)
        assert set(_gauges(url, "thaw_worker_stuck").values()) == {0.0}

        # Redis hangs: the next content and user batches block in their Redis steps
        proxy.frozen.set()
        frozen_at = time.monotonic()
        second = _items("b", 4)
        for it in second:
            _send(p, t.content_new, it["item_id"], it)
        late = random_events(rng, users, [i["item_id"] for i in first], 12)
        for e in late:
            _send(p, t.user_events, e["user_id"], e)
        p.flush()
        wait_for(lambda: all(_gauges(url, "thaw_worker_stuck").get(a) == 1.0 for a in AGENTS), 30,
                 "thaw_worker_stuck 1 for the content and users agents", w, poll_s=0.2)
        took = time.monotonic() - frozen_at
        ages = _gauges(url, "thaw_worker_step_age_seconds")
        print(f"stuck shown {took:.1f}s after the freeze (stuck_after_s {STUCK_AFTER_S}); step ages {ages}")
        assert took < STUCK_AFTER_S + 15.0
        assert all(ages[a] > STUCK_AFTER_S for a in AGENTS), ages
        # still hung past the ingest deadline (5 s): the steps time out and are retried, one episode each
        wait_for(lambda: all(v > 0 for a, v in _gauges(url, "thaw_agent_stuck_seconds").items() if a in AGENTS),
                 30, "the Redis steps timing out and retried", w, poll_s=0.2)
        assert _gauges(url, "thaw_worker_stuck")["users"] == 1.0
        text = log.read_text(errors="replace")
        # one warning per stuck episode, not one per check: the content agent has one episode; the users agent
        # prepares batch N+1 while N commits, and the prepare's own Redis read timing out ends its step, so one
        # freeze may show as two episodes there
        assert text.count("agent content is stuck") == 1, w.log_tail()
        assert 1 <= text.count("agent users is stuck") <= 2, w.log_tail()
        assert f"{t.user_events}[" in text and "step has been running for" in text
        assert store.item_meta([i["item_id"] for i in second]) == {} and applied() == 12  # nothing through yet

        # Redis answers again: everything is applied once, committed, nothing dead-lettered
        proxy.frozen.clear()
        thawed_at = time.monotonic()
        every = [i["item_id"] for i in first + second]
        wait_for(lambda: len(store.item_meta(every)) == 8, 90, "set b applied after the thaw", w)
        wait_for(lambda: applied() == 24, 90, "every event applied after the thaw", w)
        wait_for(lambda: _uncommitted(s, t.content_new) == 0 and _uncommitted(s, t.user_events) == 0, 60,
                 "everything committed", w)
        print(f"caught up {time.monotonic() - thawed_at:.1f}s after the thaw")
        assert ix.count() == 8
        assert applied() == 24  # exactly once: the held commits Redis ran late were refused by the fences
        wait_for(lambda: set(_gauges(url, "thaw_worker_stuck").values()) == {0.0}, 30, "the stuck gauges at 0", w)
        assert "no longer stuck" in log.read_text(errors="replace")
        assert read_topic(s, t.content_dlq, 1, timeout_s=3) == []
        assert read_topic(s, t.user_dlq, 1, timeout_s=3) == []
        p.close()
    finally:
        proxy.frozen.clear()
        next(run, None)  # stops the worker and drops the namespace
        proxy.close()
