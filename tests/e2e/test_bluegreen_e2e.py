"""Blue/green roll-out of a new CF version in the middle of a replay.

Group A serves CF version v1. Half-way through a stream of new items and user events, group B starts with v2
pinned: it consumes every topic from the beginning into v2's own collection and user states while A keeps serving.
When B has caught up, `flip_space` moves the Milvus serving alias and the Redis space key to v2; the replay goes
on and both groups keep writing. Checked: every item's vector in each collection is that version's projection
(vectors of two versions never meet), every user's state in each space equals the offline computation over all
events applied exactly once, and recall follows the flip."""

from __future__ import annotations

import json
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from kafka import KafkaProducer
from pymilvus import MilvusClient

from contracts.topics import Topics
from encoders.registry import ModelRegistry
from encoders.text import ensure_minilm
from indexing.milvus_items import ItemIndex, collection_for, serving_alias
from indexing.redis_state import RedisState
from ranking.evaluation.cold_items import ColdEvalArtifacts, ColdEvalConfig, run_cold_items
from ranking.models.cb2cf import CB2CFConfig
from ranking.models.dssm import DSSMConfig
from ranking.online.recall import Recaller, served_index
from ranking.training.export import publish_cold_item_models
from streams.cores.user_update import EventBatch, apply_events
from streams.rollout.cf_load import FlipRefused, flip_space
from tests.e2e.conftest import Worker, random_events, running_worker, served_item_vectors, wait_for
from workloads.datasets import load_movielens_100k
from workloads.splits import cold_item_split

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def two_versions(tmp_path_factory):
    """Two CF versions trained on the same small ml-100k sample with different seeds (different spaces)."""
    ds = load_movielens_100k()
    small = ds.subset(np.flatnonzero(ds.users < 300), name="ml-100k")
    split = cold_item_split(small, cold_share=0.3, val_share=0.15, seed=0)
    root = tmp_path_factory.mktemp("bg-models")
    ensure_minilm(ModelRegistry(root))
    for version, seed in (("v1", 0), ("v2", 1)):
        cfg = ColdEvalConfig(models=("cb2cf",), objectives=("regression",), models_dir=root, seed=seed,
                             dssm=DSSMConfig(max_epochs=3, patience=2), cb2cf=CB2CFConfig(max_epochs=5, patience=3))
        art = ColdEvalArtifacts()
        rep = run_cold_items(small, split, cfg, artifacts=art)
        publish_cold_item_models(art, root, version=version, report=rep)
    return root, small


def test_flip_in_the_middle_of_a_replay(stack_settings, unique_name, tmp_path, two_versions):
    root, ds = two_versions
    s0 = stack_settings.namespaced(unique_name)
    s = s0.model_copy(update={"models": s0.models.model_copy(update={"dir": root})})
    env_a = {"THAW_MODELS__DIR": str(root), "THAW_STREAM__SPACE": "cf", "THAW_STREAM__CF_VERSION": "v1",
             "THAW_STREAM__UNKNOWN_ITEM_GRACE_S": "60"}
    gen_a = running_worker(s, tmp_path / "a.log", env_a)
    worker_a = next(gen_a)
    group_b = s.stream.app_id + "-v2"
    sb = s.model_copy(update={"stream": s.stream.model_copy(update={"app_id": group_b})})
    worker_b = Worker(sb, None, tmp_path / "b.log",  # type: ignore[arg-type]
                      {"THAW_STREAM__SPACE": "cf", "THAW_MODELS__DIR": str(root), "THAW_STREAM__CF_VERSION": "v2",
                       # catching up from the beginning, user events outrun the (slower) content agent: a long
                       # grace keeps events on not-yet-re-indexed items parked instead of dead-lettered
                       "THAW_STREAM__UNKNOWN_ITEM_GRACE_S": "600"})
    try:
        store = RedisState(s.redis)
        assert store.current_space() == "cb2cf@v1"
        t = Topics.for_prefix(s.kafka.topic_prefix)
        p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", linger_ms=2)
        rng = np.random.default_rng(3)
        item_rows = [int(i) for i in rng.choice(ds.n_items, 40, replace=False)]
        items = [{"item_id": f"bg:{ds.item_ids[i]}", "kind": "track", "creator_id": "c",
                  "created_at": datetime.now(UTC).isoformat(), "text": ds.item_text[i], "tags": ds.item_tags[i][:20]}
                 for i in item_rows]
        users = [f"bgu{u}" for u in range(8)]
        evs = random_events(rng, users, [it["item_id"] for it in items], 900)

        ix_a = ItemIndex(s.milvus, dim=ModelRegistry(root).load("cb2cf", "v1").manifest.dim,
                         collection=collection_for(s.milvus, "cb2cf@v1"))

        def publish(its, es):
            for it in its:
                p.send(t.content_new, key=it["item_id"].encode(), value=json.dumps(it).encode())
            p.flush()
            if its:  # live users react to posts the serving group has indexed
                wait_for(lambda: len(ix_a.get_rows([i["item_id"] for i in its])) == len(its), 60, "items", worker_a)
            for e in es:
                p.send(t.user_events, key=e["user_id"].encode(), value=json.dumps(e).encode())
            p.flush()

        def applied(space):
            return sum(st.n_events for st in store.read_states(space, users).values() if st)

        publish(items[:20], [e for e in evs[:300] if e["item_id"] in {i["item_id"] for i in items[:20]}])
        first = sum(1 for e in evs[:300] if e["item_id"] in {i["item_id"] for i in items[:20]})
        wait_for(lambda: applied("cb2cf@v1") == first, 60, "phase 1 applied by A", worker_a)
        # roll-out starts: group B with v2 pinned, from the beginning of every topic
        worker_b.start()
        worker_b.wait_ready()
        assert store.current_space() == "cb2cf@v1"  # starting a group never flips what is served
        assert Recaller(store, served_index(s.milvus, root, store)).recall(users[0], 5).space == "cb2cf@v1"
        with pytest.raises(FlipRefused):
            flip_space(s, "cb2cf@v3")  # never published: no collection
        rest = [e for e in evs if e not in evs[:300] or e["item_id"] not in {i["item_id"] for i in items[:20]}]
        publish(items[20:], rest[:300])
        try:
            wait_for(lambda: applied("cb2cf@v2") == first + 300, 180, "B caught up", worker_b)
        except BaseException:
            import urllib.request

            m = urllib.request.urlopen(worker_b.metrics_url()).read().decode()  # noqa: S310
            print("DEBUG applied", applied("cb2cf@v2"), first + 300)
            print("\n".join(x for x in m.splitlines() if x.startswith("thaw_events_total") or x.startswith("thaw_dlq")))
            raise
        wait_for(lambda: _try_flip(s, group_b), 60, "B's committed offsets caught up", worker_b)
        assert store.current_space() == "cb2cf@v2"
        mc = MilvusClient(s.milvus.uri)
        assert mc.describe_alias(serving_alias(s.milvus))["collection_name"] == collection_for(s.milvus, "cb2cf@v2")
        # the replay goes on after the flip: both groups keep writing their own space
        publish([], rest[300:])
        n_all = len(evs)
        wait_for(lambda: applied("cb2cf@v2") == n_all, 180, "every event in v2", worker_b)
        wait_for(lambda: applied("cb2cf@v1") == n_all, 180, "every event in v1", worker_a)
        time.sleep(2.0)
        reg = ModelRegistry(root)
        ids = [it["item_id"] for it in items]
        pos = {i: k for k, i in enumerate(ids)}
        order = [pos[e["item_id"]] for e in evs]
        for v in ("v1", "v2"):
            space = f"cb2cf@{v}"
            cb = reg.load("cb2cf", v)
            want = served_item_vectors(root, v, ds, item_rows)
            ix = ItemIndex(s.milvus, dim=cb.manifest.dim, collection=collection_for(s.milvus, space))
            got = ix.get_vectors(ids)
            assert len(got) == len(ids)
            np.testing.assert_allclose(np.stack([got[i] for i in ids]), want, atol=1e-4)
            ref = apply_events({}, EventBatch(users=[e["user_id"] for e in evs], item_vecs=want[order],
                                              actions=[e["action"] for e in evs],
                                              ts=np.array([datetime.fromisoformat(e["ts"]).timestamp() for e in evs])),
                               s.stream.user_half_life_s)
            states = store.read_states(space, users)
            for u in users:
                assert states[u].n_events == ref[u].n_events
                np.testing.assert_allclose(states[u].vec, ref[u].vec, rtol=1e-4, atol=1e-4)
        r = Recaller(store, served_index(s.milvus, root, store)).recall(users[0], 5)
        assert r.space == "cb2cf@v2" and r.source == "vector"
    finally:
        if worker_b.proc is not None:
            worker_b.stop()
        next(gen_a, None)  # stops A, drops the namespace's collections and Redis keys


def _try_flip(s, group):
    try:
        return flip_space(s, "cb2cf@v2", group=group)
    except FlipRefused:
        return None
