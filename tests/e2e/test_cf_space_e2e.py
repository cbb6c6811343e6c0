"""End to end in a CF space: a worker serving a published CB2CF/DSSM version projects new items into that space
(own collection), loads warm users, projects a new user's declared tastes, and recall searches the CF space."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import numpy as np
import pytest
from kafka import KafkaProducer

from contracts.ids import safe_id
from contracts.topics import Topics
from encoders.registry import ModelRegistry
from encoders.text import MODEL_NAME, ensure_minilm
from indexing.milvus_items import ItemIndex, collection_for
from indexing.redis_state import RedisState
from ranking.evaluation.cold_items import ColdEvalArtifacts, ColdEvalConfig, run_cold_items
from ranking.models.cb2cf import CB2CFConfig
from ranking.models.dssm import DSSMConfig
from ranking.online.projector import CB2CFProjector, DSSMTower
from ranking.online.recall import Recaller, served_index
from ranking.online.sparse import item_tokens
from ranking.training.export import publish_cold_item_models
from streams.models import load_cf_space
from streams.rollout.cf_load import load_warm_vectors
from tests.e2e.conftest import running_worker, wait_for
from workloads.datasets import load_movielens_100k
from workloads.splits import cold_item_split

pytestmark = pytest.mark.e2e
VERSION = "e2e"
HYBRID = "e2e-hybrid"


@pytest.fixture(scope="module")
def cf_models(tmp_path_factory):
    """A small real CF space: DSSM + CB2CF trained briefly on 300 ml-100k users, published with MiniLM."""
    ds = load_movielens_100k()
    small = ds.subset(np.flatnonzero(ds.users < 300), name="ml-100k")
    split = cold_item_split(small, cold_share=0.3, val_share=0.15, seed=0)
    root = tmp_path_factory.mktemp("cf-models")
    reg = ModelRegistry(root)
    ensure_minilm(reg)
    cfg = ColdEvalConfig(models=("cb2cf", "hybrid"), objectives=("regression",), models_dir=root,
                         dssm=DSSMConfig(max_epochs=4, patience=2), cb2cf=CB2CFConfig(max_epochs=6, patience=3))
    art = ColdEvalArtifacts()
    report = run_cold_items(small, split, cfg, artifacts=art)
    publish_cold_item_models(art, root, version=VERSION, report=report, serve_hybrid=False)
    # the same run published as the hybrid space, in a model directory of its own (its own CURRENT)
    hroot = tmp_path_factory.mktemp("hybrid-models")
    ensure_minilm(ModelRegistry(hroot))
    publish_cold_item_models(art, hroot, version=HYBRID, report=report, serve_hybrid=True)
    return root, small, split, hroot


def _publish_new_items(s, ds, rows):
    """Publishes dataset items ``rows`` as new posts (text + first 20 tags); ``(items, topics, producer, now)``."""
    now = datetime.now(UTC).isoformat()
    items = [{"item_id": f"new:{ds.item_ids[i]}", "kind": "track", "creator_id": "c", "created_at": now,
              "text": ds.item_text[i], "tags": ds.item_tags[i][:20]} for i in rows]
    t = Topics.for_prefix(s.kafka.topic_prefix)
    p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all")
    for it in items:
        p.send(t.content_new, key=it["item_id"].encode(), value=json.dumps(it).encode())
    return items, t, p, now


def _cf_space_worker(stack_settings, unique_name, tmp_path, root):
    """A worker serving the current CF version of model directory ``root``, in its own namespace."""
    s0 = stack_settings.namespaced(unique_name)
    s = s0.model_copy(update={"models": s0.models.model_copy(update={"dir": root})})
    yield from running_worker(s, tmp_path / "worker.log", {"THAW_MODELS__DIR": str(root), "THAW_STREAM__SPACE": "cf"})


@pytest.fixture
def cf_worker(stack_settings, unique_name, tmp_path, cf_models):
    yield from _cf_space_worker(stack_settings, unique_name, tmp_path, cf_models[0])


def test_items_users_and_recall_live_in_the_cf_space(cf_worker, cf_models):
    root, ds, split, _ = cf_models
    s = cf_worker.settings
    space = f"cb2cf@{VERSION}"
    users = RedisState(s.redis)
    assert users.current_space() == space
    rep = load_warm_vectors(s, version=VERSION)
    assert rep["users"] == ds.n_users and rep["items"] == ds.n_items
    cold = [int(i) for i in split.test_items[:12]]
    items, t, p, now = _publish_new_items(s, ds, cold)
    p.send(t.user_profile, key=b"newbie", value=json.dumps(
        {"user_id": "newbie", "gender": "f", "age_bucket": "25-34", "genres": ["Comedy", "Romance"], "ts": now}
    ).encode())
    p.send(t.user_profile, key=b"groupie", value=json.dumps(
        {"user_id": "groupie", "gender": "m", "age_bucket": "35-44", "ts": now}).encode())
    p.flush()
    reg = ModelRegistry(root)
    dim = reg.load("cb2cf", VERSION).manifest.dim
    ix = ItemIndex(s.milvus, dim=dim, collection=collection_for(s.milvus, space))
    ids = [it["item_id"] for it in items]
    wait_for(lambda: len(ix.get_rows(ids)) == len(ids), 60, "new items in the CF collection", cf_worker)
    # the stream's vector of a new item is CB2CF's projection of its MiniLM document and its words
    from encoders.featurizer import content_document
    from encoders.text import TextEncoder

    text = TextEncoder(reg.load(MODEL_NAME), threads=1)
    docs = [content_document(ds.item_text[i], ds.item_tags[i][:20]) for i in cold]
    cf = load_cf_space(reg, threads=1, version=VERSION)
    assert cf is not None and cf.words is not None and cf.hybrid is None
    words = cf.words.transform([item_tokens(ds.item_text[i], ds.item_tags[i][:20]) for i in cold]).toarray()
    want = CB2CFProjector(reg.load("cb2cf", VERSION)).project({"doc": text.encode(docs), "words": words})
    got = ix.get_vectors(ids)
    np.testing.assert_allclose(np.stack([got[i] for i in ids]), want, atol=1e-4)
    # a CF-space worker never creates the text space's collection: the two spaces never share a search
    assert not ix.client.has_collection(s.milvus.items_collection)
    # a warm user's state is their DSSM vector; recall searches the CF space (warm + new items)
    uid = safe_id("ml-100k:u:", ds.user_ids[0])
    vec, st = users.user_vector(space, uid)
    known, uvecs = DSSMTower(reg.load("dssm-user", VERSION)).vectors([ds.user_ids[0]])
    assert st is not None and st.source == "dssm" and known == [ds.user_ids[0]]
    np.testing.assert_allclose(vec, uvecs[0] / np.linalg.norm(uvecs[0]), atol=1e-5)
    rec = Recaller(users, served_index(s.milvus, root, users))
    r = rec.recall(uid, 10)
    assert r.source == "vector" and r.space == space and len(r.items) == 10
    # the brand-new user's prior is the projection of their declared tastes, in the CF space
    wait_for(lambda: users.user_vector(space, "newbie")[0] is not None, 30, "the new user's prior", cf_worker)
    nv, nst = users.user_vector(space, "newbie")
    assert nst.source == "prior" and nv.shape == (dim,)
    # declared tastes and the gender x age group prior together
    priors = json.loads((reg.load("dssm-user", VERSION).path / "group_priors.json").read_text())
    declared = text.encode(["music genres: Comedy, Romance"])
    taste = cf.project_text(declared, ["music genres: Comedy, Romance"])[0]
    both = taste / np.linalg.norm(taste) + np.asarray(priors["gender=f|age=25-34"])
    np.testing.assert_allclose(nv, both / np.linalg.norm(both), atol=1e-4)
    # a registration with only gender and age starts from that group's prior (mean DSSM vector of its warm users)
    wait_for(lambda: users.user_vector(space, "groupie")[0] is not None, 30, "the group prior", cf_worker)
    gv, _ = users.user_vector(space, "groupie")
    np.testing.assert_allclose(gv, np.asarray(priors["gender=m|age=35-44"]), atol=1e-5)
    assert rec.recall("newbie", 5).source == "vector"
    # the recommendation API serves the same CF space: the served collection, the user's DSSM vector, no ranker
    from fastapi.testclient import TestClient

    from infra.settings import ABVariant, AuthSettings
    from serving.api import create_app

    serve = s.serve.model_copy(update={"variants": (ABVariant(name="recall", ranker="none", new_item_share=0.0),),
                                       "fresh_k": 0,  # the vector recall alone, to compare with Recaller
                                       # in process, no credentials; a deadline far above a cold first build
                                       "auth": AuthSettings(mode="local-dev"), "request_deadline_s": 30.0})
    with TestClient(create_app(s.model_copy(update={"serve": serve}))) as client:
        ready = client.get("/readyz").json()
        assert ready["ready"] and ready["checks"]["space"] == space
        assert ready["checks"]["milvus"]["collection"] == ix.name
        body = client.get("/recommend", params={"user_id": uid, "k": 10, "debug": "true"}).json()
        assert body["space"] == space and body["debug"]["recall_source"] == "vector"
        assert [it["item_id"] for it in body["items"]] == [h.item_id for h in rec.recall(uid, 10).items]


@pytest.fixture
def hybrid_worker(stack_settings, unique_name, tmp_path, cf_models):
    yield from _cf_space_worker(stack_settings, unique_name, tmp_path, cf_models[3])


def test_hybrid_space_through_the_stream(hybrid_worker, cf_models):
    """The hybrid space end to end: the worker appends sqrt(w) x the sparse row to CB2CF's vector of a new item,
    `thaw cf load` appends the warm users' sparse parts, recall's one Milvus search ranks by cf + w x sparse kNN."""
    _, ds, split, hroot = cf_models
    s = hybrid_worker.settings
    space = f"cb2cf@{HYBRID}"
    users = RedisState(s.redis)
    assert users.current_space() == space
    reg = ModelRegistry(hroot)
    cf = load_cf_space(reg, threads=1, version=HYBRID)
    assert cf is not None and cf.hybrid is not None and cf.dim > cf.cf_dim
    rep = load_warm_vectors(s, version=HYBRID)
    assert rep["hybrid"] and rep["users"] == ds.n_users
    cold = [int(i) for i in split.test_items[:10]]
    items, t, p, _ = _publish_new_items(s, ds, cold)
    p.flush()
    ix = ItemIndex(s.milvus, dim=cf.dim, collection=collection_for(s.milvus, space))
    ids = [it["item_id"] for it in items]
    wait_for(lambda: len(ix.get_rows(ids)) == len(ids), 60, "new items in the hybrid collection", hybrid_worker)
    got = np.stack([ix.get_vectors(ids)[i] for i in ids])
    part = cf.hybrid_part([(ds.item_text[i], ds.item_tags[i][:20]) for i in cold])
    np.testing.assert_allclose(got[:, cf.cf_dim:], part, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got[:, : cf.cf_dim], axis=1), 1.0, atol=1e-4)
    assert (np.abs(part).sum(axis=1) > 0).all()  # every MovieLens title/genre has known words
    # a warm user's state: [unit DSSM vector ; sqrt(w) x mean row of their training items]
    uid = safe_id("ml-100k:u:", ds.user_ids[0])
    vec, st = users.user_vector(space, uid)
    assert st is not None and st.source == "dssm" and vec.shape == (cf.dim,)
    assert np.linalg.norm(vec[cf.cf_dim:]) > 0
    rec = Recaller(users, served_index(s.milvus, hroot, users))
    r = rec.recall(uid, 10)
    assert r.source == "vector" and r.space == space and len(r.items) == 10
    # the search ranks by the full inner product: the top hit among the new items is the best by cf + w x sparse
    new = [h for h in ix.search(vec[None, :], 2000)[0] if h.item_id in set(ids)]
    best = ids[int(np.argmax(got @ vec))]
    assert new[0].item_id == best
