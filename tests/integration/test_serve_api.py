"""The recommendation API against real Redis and Milvus, a real trained ranker, and a simulated community.

A ranker is trained on a short simulation and published into a temporary model directory; the same simulation
(same seed) is pushed through the engine's real handlers (MiniLM text space in Milvus, user states, histories,
profiles and item attributes in Redis); the FastAPI app is then exercised over HTTP with its test client.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from fastapi.testclient import TestClient

from contracts.topics import Topics
from encoders.registry import ModelRegistry
from encoders.text import TextEncoder, ensure_minilm
from indexing.milvus_items import ItemIndex
from indexing.redis_state import RedisState
from infra.settings import ABVariant, AuthSettings, Settings
from ranking.online.ab import bucket_of
from ranking.online.features import ItemContext, UserContext
from ranking.online.pipeline import RankerPool, Recommender
from ranking.online.ranker import Ranker
from serving.api import create_app
from streams.engine import Engine, Record
from tests.thaw_cli import thaw
from workloads.simulator import CommunitySimulator, SimConfig, default_catalogue

# the world is the community simulator, whose catalogue carries Last.fm artists: run by `make test-datasets`
pytestmark = [pytest.mark.integration, pytest.mark.datasets]

STEPS = 30


def _in_process(s: Settings) -> Settings:
    """``s`` for an app driven in process by its test client: authentication off (``tests/unit/serving`` covers
    it) and a deadline far above a cold first request on a loaded machine (``tests/e2e`` covers the deadline)."""
    serve = s.serve.model_copy(update={"auth": AuthSettings(mode="local-dev"), "request_deadline_s": 30.0})
    return s.model_copy(update={"serve": serve})


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory: pytest.TempPathFactory, stack_settings: Settings) -> Path:
    d = tmp_path_factory.mktemp("models")
    src = ensure_minilm(ModelRegistry(stack_settings.models.dir)).path.parent
    os.symlink(src, d / src.name)  # the text encoder, as published in the project's model directory
    rc = thaw("train", "ranker", "--dataset", "sim", "--sim-steps", str(STEPS), "--epochs", "2", "--models-dir", str(d),
              "--version", "t1", "--check-rows", "64", "--json", str(d / "train.json"))
    assert rc == 0
    return d


def _records(topic: str, payloads: list[dict[str, Any]], start: int) -> list[Record]:
    return [Record(topic, 0, start + j, p.get("user_id", p.get("item_id", "")).encode(),
                   json.dumps(p).encode(), 0) for j, p in enumerate(payloads)]


@pytest.fixture(scope="module")
def world(stack_settings: Settings, models_dir: Path) -> Iterator[dict[str, Any]]:
    import uuid
    from datetime import UTC, datetime

    s = _in_process(stack_settings.namespaced("t" + uuid.uuid4().hex[:12]))
    text = TextEncoder(ModelRegistry(models_dir).load("minilm-l6"))
    items = ItemIndex(s.milvus, dim=text.dim)
    items.ensure()
    users = RedisState(s.redis)
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    sim = CommunitySimulator(default_catalogue(), SimConfig(seed=0, steps=STEPS))
    end_ts = sim.cfg.start_ts + STEPS * sim.cfg.step_s
    eng = Engine(s, topics, text, items, users, group_id=s.stream.app_id, clock=lambda: end_ts)
    eng.ensure_layout({topics.user_events: 1, topics.user_events_retry: 1})  # one partition, as the records say

    def iso(t: float) -> str:
        return datetime.fromtimestamp(t, UTC).isoformat()

    content: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for ev in sim.stream():
        d = dict(ev.data)
        if ev.topic == "content.new":
            d["created_at"] = iso(ev.ts)
            d.pop("audio", None)  # the text space needs no media; keep the fixture fast
            d.pop("image", None)
            content.append(d)
        elif ev.topic == "user.profile":
            d["ts"] = iso(ev.ts)
            profiles.append(d)
        else:
            d["ts"] = iso(ev.ts)
            events.append(d)
    for start in range(0, len(content), 256):
        res = eng.handle_content(_records(topics.content_new, content[start : start + 256], start))
        assert not res.dlq
    eng.handle_profiles(_records(topics.user_profile, profiles, 0))
    items.count()  # a Strong read: every upsert is visible to the user agent's lookups
    for start in range(0, len(events), 2000):
        prep = eng.prepare_user_events(_records(topics.user_events, events[start : start + 2000], start))
        assert not prep.result.dlq
        eng.commit_user_events(prep)
    variants = (ABVariant(name="gated", ranker="deepfm-mmoe"),
                ABVariant(name="plain", ranker="deepfm-mmoe-plain@t1"),
                ABVariant(name="recall", ranker="none", new_item_share=0.0))
    serve = s.serve.model_copy(update={"variants": variants, "fresh_window_s": 5 * sim.cfg.step_s})
    rec = Recommender(serve, users, items, eng.space, RankerPool(models_dir), clock=lambda: end_ts)
    app = create_app(s.model_copy(update={"serve": serve}), served=lambda: rec)
    engaged = {u.user_id: len(users.engaged(u.user_id)) for u in sim.users}
    with TestClient(app) as client:
        yield {"client": client, "sim": sim, "users": users, "rec": rec, "engaged": engaged, "end_ts": end_ts,
               "models_dir": models_dir, "serve": serve, "settings": s}
    items.drop()
    users.delete_prefix()


def _active(world: dict[str, Any]) -> str:
    return max(world["engaged"], key=lambda u: world["engaged"][u])


def test_health_readiness_openapi(world: dict[str, Any]) -> None:
    c = world["client"]
    assert c.get("/healthz").json() == {"status": "ok"}
    ready = c.get("/readyz")
    assert ready.status_code == 200, ready.text
    checks = ready.json()["checks"]
    assert checks["redis"] == "ok" and checks["milvus"]["rows"] >= 300
    assert checks["rankers"] == {"gated": "deepfm-mmoe@t1", "plain": "deepfm-mmoe-plain@t1", "recall": "none"}
    paths = c.get("/openapi.json").json()["paths"]
    assert {"/recommend", "/healthz", "/readyz", "/metrics", "/ab", "/ab/{user_id}"} <= set(paths)
    for path, ops in paths.items():  # every answer has its schema (serving/schemas.py)
        assert all(m["schema"] for m in ops["get"]["responses"]["200"]["content"].values()), path


def test_recommend_ranks_unseen_recalled_items(world: dict[str, Any]) -> None:
    c, users = world["client"], world["users"]
    uid = _active(world)
    r = c.get("/recommend", params={"user_id": uid, "k": 20, "debug": "true", "variant": "gated"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["ab"] == {"bucket": bucket_of(uid, "thaw-ab-1", 100), "variant": "gated"}
    assert body["ranker"] == "deepfm-mmoe@t1"
    ids = [it["item_id"] for it in body["items"]]
    assert len(ids) == 20 and len(set(ids)) == 20
    assert not set(ids) & set(users.seen(uid))  # already-seen items are excluded
    scores = [it["score"] for it in body["items"]]
    assert scores == sorted(scores, reverse=True)
    assert all(set(it["task_scores"]) == {"play", "like"} for it in body["items"])
    for it in body["items"]:  # list score = sum of the task probabilities (default weights 1)
        assert math.isclose(it["score"], sum(it["task_scores"].values()), abs_tol=2e-6)
    dbg = body["debug"]
    assert dbg["recall_source"] == "vector" and dbg["user"]["engaged"] == world["engaged"][uid]
    assert dbg["user"]["ranker_history"] == min(world["engaged"][uid], world["serve"].history_n)
    assert {"redis_user", "recall_vector", "recall_fresh", "redis_items", "rank", "total"} <= set(dbg["timings_ms"])
    # the scores are the ranker's own, computed from the same stream data the service read
    ranker = Ranker.load(world["models_dir"])
    meta = users.item_meta(ids + [i for i, _ in users.engaged(uid, 200)])
    hist = [ItemContext(i, meta[i].kind, meta[i].tags, meta[i].created_at_ms / 1000) for i, _ in
            users.engaged(uid, 200)]
    cands = [ItemContext(i, meta[i].kind, meta[i].tags, meta[i].created_at_ms / 1000) for i in ids]
    direct = ranker.score(UserContext(uid, users.profile(uid), hist), cands, world["end_ts"]).sum(1)
    np.testing.assert_allclose(direct, scores, atol=2e-6)


def test_recall_arm_keeps_the_recall_order_and_the_quota_places_new_items(world: dict[str, Any]) -> None:
    c = world["client"]
    uid = _active(world)
    recall = c.get("/recommend", params={"user_id": uid, "k": 20, "variant": "recall", "debug": "true"}).json()
    assert recall["ranker"] == "none" and recall["exposure"]["new_added_by_quota"] == 0
    sims = [it["score"] for it in recall["items"]]
    assert sims == sorted(sims, reverse=True)
    gated = c.get("/recommend", params={"user_id": uid, "k": 20, "variant": "gated"}).json()
    ex = gated["exposure"]
    want = min(math.ceil(world["serve"].new_item_share * 20), ex["recalled_new"])
    assert ex["recalled_new"] > 0
    assert ex["new_in_top_k"] >= want
    assert ex["new_in_top_k"] == ex["new_in_top_k_by_rank"] + ex["new_added_by_quota"]
    assert sum(it["new"] for it in gated["items"]) == ex["new_in_top_k"]
    window_ms = world["serve"].fresh_window_s * 1000
    assert all(it["new"] == (it["created_at_ms"] >= world["end_ts"] * 1000 - window_ms) for it in gated["items"])


def test_ab_assignment_is_deterministic_and_reported(world: dict[str, Any]) -> None:
    c = world["client"]
    split = c.get("/ab").json()
    assert [v["name"] for v in split["variants"]] == ["gated", "plain", "recall"]
    assert split["variants"][0]["buckets"] == [0, 33]
    for u in [u.user_id for u in world["sim"].users[:30]]:
        a = c.get(f"/ab/{u}").json()
        body = c.get("/recommend", params={"user_id": u, "k": 5}).json()
        assert body["ab"] == {"bucket": a["bucket"], "variant": a["variant"]}
        lo, hi = next(v["buckets"] for v in split["variants"] if v["name"] == a["variant"])
        assert lo <= a["bucket"] <= hi


def test_brand_new_user_gets_the_fallback(world: dict[str, Any]) -> None:
    r = world["client"].get("/recommend", params={"user_id": "never-seen-user", "k": 10, "debug": "true"})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["debug"]["recall_source"] == "fallback" and len(body["items"]) == 10


@pytest.mark.parametrize("params", [
    {"user_id": "u", "k": 0}, {"user_id": "u", "k": 10_000}, {"k": 5}, {"user_id": "", "k": 5},
    {"user_id": "x" * 200}, {"user_id": "u", "k": "many"}, {"user_id": "u", "variant": "nope"},
    {"user_id": "bad\nid"},
])
def test_invalid_requests_get_422(world: dict[str, Any], params: dict[str, Any]) -> None:
    r = world["client"].get("/recommend", params=params)
    assert r.status_code == 422, r.text
    assert "detail" in r.json()


def test_metrics_count_requests_per_arm_and_bucket(world: dict[str, Any]) -> None:
    c = world["client"]
    uid = _active(world)
    c.get("/recommend", params={"user_id": uid, "k": 20, "variant": "plain"})
    text = c.get("/metrics").text
    bucket = bucket_of(uid, "thaw-ab-1", 100)
    assert f'thaw_recommend_requests_total{{bucket="{bucket}",recall_source="vector",variant="plain"}}' in text
    assert 'thaw_recommend_items_total{new="true",variant="plain"}' in text
    assert 'thaw_recommend_stage_seconds_count{stage="rank"}' in text
    assert 'thaw_api_requests_total{endpoint="/recommend",status="200"}' in text


def test_redis_down_answers_503_without_secrets(world: dict[str, Any], stack_settings: Settings) -> None:
    from pydantic import SecretStr

    redis = stack_settings.redis.model_copy(update={"port": 1, "password": SecretStr("hunter2-secret")})
    dead = RedisState(redis)
    rec: Recommender = world["rec"]
    broken = Recommender(world["serve"], dead, rec.index, rec.space, rec.rankers)
    app = create_app(_in_process(stack_settings), served=lambda: broken)
    with TestClient(app) as client:
        r = client.get("/recommend", params={"user_id": "u1", "k": 5})
        assert r.status_code == 503
        assert r.json() == {"detail": "redis unavailable (ConnectionError); see /readyz", "dependency": "redis"}
        assert "hunter2" not in r.text
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["checks"]["redis"].startswith("error")


def test_fresh_recall_is_the_exact_top_of_the_window(world: dict[str, Any]) -> None:
    rec: Recommender = world["rec"]
    users: RedisState = world["users"]
    uid = _active(world)
    state, seen_ts, _, _ = users.request_view(rec.space, uid)
    assert state is not None
    vec = state.unit()
    assert vec is not None
    seen = [i for i, _ in seen_ts]
    now_ms = int(world["end_ts"] * 1000)
    since = now_ms - int(world["serve"].fresh_window_s * 1000)
    window = [i for i, _ in users.created_since(rec.space, since, 10_000) if i not in set(seen)]
    assert len(window) > world["serve"].fresh_k / 10
    vecs = rec.index.get_vectors(window)
    exact = sorted(window, key=lambda i: -float(vecs[i] @ vec))[: world["serve"].fresh_k]
    source, cands = rec._recall(vec, seen, now_ms, {})
    assert source == "vector"
    new_ids = {c.item_id for c in cands if c.is_new}
    assert set(exact) <= new_ids  # every window item the exact search ranks in the top fresh_k is a candidate
    assert not new_ids - set(window)  # and nothing outside the window is flagged new


def test_readiness_names_a_missing_collection(world: dict[str, Any], stack_settings: Settings) -> None:
    rec: Recommender = world["rec"]
    missing = ItemIndex(stack_settings.milvus, dim=rec.index.dim, collection="thaw_no_such_collection_x")
    app = create_app(_in_process(stack_settings),
                     served=lambda: Recommender(world["serve"], rec.users, missing, rec.space, rec.rankers))
    with TestClient(app) as client:
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert "thaw_no_such_collection_x does not exist" in ready.json()["checks"]["milvus"]
        assert ready.json()["checks"]["redis"] == "ok"
        r = client.get("/recommend", params={"user_id": _active(world), "k": 5})  # pymilvus' own exception
        assert r.status_code == 503, r.text
        assert r.json() == {"detail": "milvus unavailable (MilvusException); see /readyz", "dependency": "milvus"}


def _app_without_ranker(world: dict[str, Any], tmp_path: Path, mode: str, ranked: bool = True) -> tuple[Any, Path]:
    """``thaw serve``'s app over the world's Redis and Milvus and a model directory that holds the text encoder but
    no ranker (a fresh machine): default serve settings (one arm, ranker ``none``), or with ``ranked`` that arm
    naming ``deepfm-mmoe``."""
    s: Settings = world["settings"]
    bare = tmp_path / "models"
    bare.mkdir()
    src = ModelRegistry(world["models_dir"]).load("minilm-l6", verify=False).path.parent
    os.symlink(src, bare / src.name)
    assert [(v.name, v.ranker) for v in s.serve.variants] == [("control", "none")]  # the default arm
    serve = s.serve.model_copy(update={"missing_ranker": mode})
    if ranked:
        serve = serve.model_copy(update={"variants": (ABVariant(name="control", ranker="deepfm-mmoe"),)})
    return create_app(s.model_copy(update={"serve": serve, "models": s.models.model_copy(update={"dir": bare})})), bare


def test_a_fresh_serve_answers_in_the_recall_order(world: dict[str, Any], tmp_path: Path) -> None:
    """Default settings, no ranker published: the default arm is the recall order, so /recommend answers 200 and
    /readyz is ready (missing_ranker stays "error" for arms that name a ranker)."""
    app, _ = _app_without_ranker(world, tmp_path, "error", ranked=False)
    with TestClient(app) as client:
        r = client.get("/recommend", params={"user_id": _active(world), "k": 10})
        assert r.status_code == 200, r.text
        body = r.json()
        assert (body["ranker"], body["ranked_by"], body["degraded"]) == ("none", "recall_order", None)
        assert len(body["items"]) == 10
        ready = client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["rankers"] == {"control": "none"}


def test_missing_ranker_answers_503_naming_it(world: dict[str, Any], tmp_path: Path) -> None:
    app, bare = _app_without_ranker(world, tmp_path, "error")
    with TestClient(app) as client:
        r = client.get("/recommend", params={"user_id": _active(world), "k": 10})
        assert r.status_code == 503, r.text
        d = r.json()["detail"]
        assert d["model"] == "deepfm-mmoe" and d["version"] is None and d["variant"] == "control"
        assert d["models_dir"] == str(bare) and d["reason"] == "not_published"
        assert d["publish"].startswith("thaw train ranker") and "deepfm-mmoe" in d["message"]
        ready = client.get("/readyz")
        assert ready.status_code == 503 and "deepfm-mmoe" in ready.json()["checks"]["rankers"]
        assert 'thaw_api_requests_total{endpoint="/recommend",status="503"} 1.0' in client.get("/metrics").text


def test_missing_ranker_falls_back_to_the_recall_order_when_configured(world: dict[str, Any],
                                                                        tmp_path: Path) -> None:
    app, _ = _app_without_ranker(world, tmp_path, "recall_order")
    fallbacks = 'thaw_recommend_ranker_fallbacks_total{reason="not_published",variant="control"}'
    with TestClient(app) as client:
        assert fallbacks not in client.get("/metrics").text
        r = client.get("/recommend", params={"user_id": _active(world), "k": 10, "debug": "true"})
        assert r.status_code == 200, r.text
        body = r.json()
        assert body["ranker"] is None and body["ranked_by"] == "recall_order"
        assert body["degraded"] == "deepfm-mmoe not published"
        assert body["debug"]["recall_source"] == "vector" and len(body["items"]) == 10
        assert "task_scores" not in body["items"][0]
        scores = [it["score"] for it in body["items"]]
        assert scores == sorted(scores, reverse=True)
        assert f"{fallbacks} 1.0" in client.get("/metrics").text
        ready = client.get("/readyz")  # serving, degraded: ready, and it says so
        assert ready.status_code == 200, ready.text
        assert ready.json()["checks"]["rankers"] == {"control": "recall_order (deepfm-mmoe not published)"}
