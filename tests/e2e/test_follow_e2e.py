"""`thaw worker --follow-cf`: a running worker picks up a new CF version without a restart. The supervisor serves
v1 through a child group; when ``cb2cf/CURRENT`` moves to v2 mid-stream it rolls v2 out blue/green and flips; every
event ends up applied exactly once in v2's user states."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from kafka import KafkaProducer
from pymilvus import MilvusClient

from contracts.topics import Topics
from encoders.registry import ModelRegistry
from indexing.milvus_items import ItemIndex, collection_for
from indexing.redis_state import RedisState
from infra.topics import ensure_topics
from streams.cores.user_update import EventBatch, apply_events
from tests.e2e.conftest import random_events, served_item_vectors, wait_for
from tests.e2e.test_bluegreen_e2e import two_versions  # noqa: F401 - fixture

pytestmark = pytest.mark.e2e


def test_new_cf_version_is_picked_up_without_a_restart(stack_settings, unique_name, tmp_path, two_versions):  # noqa: F811
    root, ds = two_versions
    reg = ModelRegistry(root)
    reg.set_current("cb2cf", "v1")
    s0 = stack_settings.namespaced(unique_name)
    s = s0.model_copy(update={"models": s0.models.model_copy(update={"dir": root})})
    t = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, t)
    env = {**os.environ, **s.env(), "THAW_MODELS__DIR": str(root), "THAW_STREAM__UNKNOWN_ITEM_GRACE_S": "60",
           "THAW_STACK__HOME": str(tmp_path)}
    log = (tmp_path / "follow.log").open("wb")
    proc = subprocess.Popen([sys.executable, "-m", "thaw", "worker", "--follow-cf", "--poll-s", "1"], env=env,
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    store = RedisState(s.redis)
    try:
        wait_for(lambda: store.current_space() == "cb2cf@v1", 120, "v1 served by the first group")
        dim = reg.load("cb2cf", "v1").manifest.dim
        ix1 = ItemIndex(s.milvus, dim=dim, collection=collection_for(s.milvus, "cb2cf@v1"))
        rng = np.random.default_rng(5)
        rows = [int(i) for i in rng.choice(ds.n_items, 20, replace=False)]
        items = [{"item_id": f"fw:{ds.item_ids[i]}", "kind": "track", "creator_id": "c",
                  "created_at": datetime.now(UTC).isoformat(), "text": ds.item_text[i], "tags": ds.item_tags[i][:20]}
                 for i in rows]
        ids = [it["item_id"] for it in items]
        users = [f"fwu{u}" for u in range(6)]
        evs = random_events(rng, users, ids, 400, actions=("play", "like", "complete"))
        p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", linger_ms=2)
        for it in items:
            p.send(t.content_new, key=it["item_id"].encode(), value=json.dumps(it).encode())
        p.flush()
        wait_for(lambda: len(ix1.get_rows(ids)) == len(ids), 90, "items in v1")

        def applied(space):
            return sum(st.n_events for st in store.read_states(space, users).values() if st)

        for e in evs[:200]:
            p.send(t.user_events, key=e["user_id"].encode(), value=json.dumps(e).encode())
        p.flush()
        wait_for(lambda: applied("cb2cf@v1") == 200, 90, "first half applied in v1")
        reg.set_current("cb2cf", "v2")  # a new version is published: the running supervisor picks it up
        for e in evs[200:300]:
            p.send(t.user_events, key=e["user_id"].encode(), value=json.dumps(e).encode())
        p.flush()
        wait_for(lambda: store.current_space() == "cb2cf@v2", 240, "the flip to v2")
        assert proc.poll() is None  # the supervisor itself never restarted
        for e in evs[300:]:
            p.send(t.user_events, key=e["user_id"].encode(), value=json.dumps(e).encode())
        p.flush()
        wait_for(lambda: applied("cb2cf@v2") == len(evs), 90, "every event applied in v2")
        time.sleep(2.0)
        assert applied("cb2cf@v2") == len(evs)
        want = served_item_vectors(reg.root, "v2", ds, rows)
        got = ItemIndex(s.milvus, dim=dim, collection=collection_for(s.milvus, "cb2cf@v2")).get_vectors(ids)
        np.testing.assert_allclose(np.stack([got[i] for i in ids]), want, atol=1e-4)
        pos = {i: k for k, i in enumerate(ids)}
        ref = apply_events({}, EventBatch(users=[e["user_id"] for e in evs],
                                          item_vecs=want[[pos[e["item_id"]] for e in evs]],
                                          actions=[e["action"] for e in evs],
                                          ts=np.array([datetime.fromisoformat(e["ts"]).timestamp() for e in evs])),
                           s.stream.user_half_life_s)
        got_states = store.read_states("cb2cf@v2", users)
        for u in users:
            assert got_states[u].n_events == ref[u].n_events
            np.testing.assert_allclose(got_states[u].vec, ref[u].vec, rtol=1e-4, atol=1e-4)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
        log.close()
        store.delete_prefix()
        mc = MilvusClient(s.milvus.uri)
        for name in mc.list_collections():
            if name.startswith(s.milvus.items_collection):
                mc.drop_collection(name)
    assert proc.returncode is not None
