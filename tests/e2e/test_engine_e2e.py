"""End to end: plain kafka-python producers -> the Faust worker -> Milvus and Redis -> recall."""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import numpy as np
import pytest
from kafka import KafkaProducer

from contracts.events import ContentIndexed, DeadLetter
from contracts.topics import Topics
from encoders.registry import ModelRegistry
from encoders.text import MODEL_NAME, TextEncoder
from indexing.milvus_items import ItemIndex
from indexing.redis_state import RedisState
from ranking.online.recall import Recaller
from streams.cores.user_update import EventBatch, apply_events
from tests.e2e.conftest import random_events, read_topic, wait_for

pytestmark = pytest.mark.e2e


def _now() -> str:
    return datetime.now(UTC).isoformat()


def _producer(s):
    return KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", linger_ms=2,
                         max_request_size=s.kafka.max_message_bytes)


def _send(p, topic, key, obj):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    p.send(topic, key=key.encode(), value=raw)


GENRES = {
    "metal": "heavy metal guitar riffs with distortion and double bass drums",
    "piano": "gentle solo piano lullaby, soft and calm",
    "jazz": "smooth jazz saxophone improvisation with a walking bass line",
    "folk": "traditional Irish folk reel on fiddle and tin whistle",
}


def _items():
    out = []
    for g, text in GENRES.items():
        for i in range(5):
            out.append({"item_id": f"{g}{i}", "kind": ["track", "comment", "moment", "dynamic", "fan_group"][i],
                        "creator_id": f"artist-{g}", "created_at": _now(), "text": f"{text} (take {i})",
                        "tags": [g], "produced_at": _now()})
    return out


def _index_items(worker):
    """Publishes the genre items (:func:`_items`), waits until all are in Milvus; ``(topics, producer, items, ix)``."""
    s = worker.settings
    t = Topics.for_prefix(s.kafka.topic_prefix)
    p = _producer(s)
    items = _items()
    for it in items:
        _send(p, t.content_new, it["item_id"], it)
    p.flush()
    ix = ItemIndex(s.milvus, dim=384)
    wait_for(lambda: ix.count() == len(items), 60, "items", worker)
    return t, p, items, ix


def test_new_items_searchable_and_recall_follows_the_user(worker):
    s = worker.settings
    t = Topics.for_prefix(s.kafka.topic_prefix)
    p = _producer(s)
    items = _items()
    t0 = time.time()
    for it in items:
        _send(p, t.content_new, it["item_id"], it)
    p.flush()
    ix = ItemIndex(s.milvus, dim=384)
    wait_for(lambda: len(ix.get_rows([i["item_id"] for i in items])) == len(items), 60, "items in Milvus", worker)
    searchable_s = time.time() - t0
    traces = [ContentIndexed.model_validate_json(v) for v in read_topic(s, t.content_indexed, len(items), timeout_s=20)]
    assert {tr.item_id for tr in traces} == {i["item_id"] for i in items}
    assert all(tr.indexed_at >= tr.consumed_at >= tr.produced_at for tr in traces)
    assert {tr.kind.value for tr in traces} == {"track", "comment", "moment", "dynamic", "fan_group"}

    store = RedisState(s.redis)
    rec = Recaller(store, ix, space=f"{MODEL_NAME}@1")
    assert rec.recall("fan", 5).source == "fallback"
    for i in range(3):
        _send(p, t.user_events, "fan", {"user_id": "fan", "item_id": f"metal{i}", "action": "like", "ts": _now()})
    p.flush()
    r = wait_for(lambda: (x := rec.recall("fan", 5)).source == "vector" and x.user_state["n_events"] == 3 and x,
                 30, "the user's recall to reflect 3 likes", worker)
    # the rest of the metal items come first, and already-liked ones are excluded
    assert {h.item_id for h in r.items[:2]} == {"metal3", "metal4"}
    assert not {"metal0", "metal1", "metal2"} & {h.item_id for h in r.items}
    # the user changes taste: many piano plays move the recall
    for i in range(5):
        for _ in range(3):
            _send(p, t.user_events, "fan",
                  {"user_id": "fan", "item_id": f"piano{i}", "action": "complete", "ts": _now()})
    p.flush()
    wait_for(lambda: rec.recall("fan", 5).user_state["n_events"] == 18, 30, "18 events applied", worker)
    r2 = rec.recall("fan", 3, exclude_seen=False)
    assert all(h.item_id.startswith("piano") for h in r2.items)
    assert searchable_s < 60


def test_profile_prior_personalises_before_any_event(worker):
    s = worker.settings
    t = Topics.for_prefix(s.kafka.topic_prefix)
    p = _producer(s)
    for it in _items():
        _send(p, t.content_new, it["item_id"], it)
    _send(p, t.user_profile, "newbie", {"user_id": "newbie", "gender": "f", "age_bucket": "18-24",
                                        "genres": ["jazz", "saxophone"], "ts": _now()})
    p.flush()
    ix = ItemIndex(s.milvus, dim=384)
    rec = Recaller(RedisState(s.redis), ix, space=f"{MODEL_NAME}@1")
    wait_for(lambda: ix.count() == 20 and rec.recall("newbie", 5).source == "vector", 60, "prior", worker)
    r = rec.recall("newbie", 5)
    assert r.user_state["source"] == "prior"
    assert sum(h.item_id.startswith("jazz") for h in r.items) >= 4


def test_bad_input_goes_to_dlq_and_the_partition_keeps_flowing(worker):
    s = worker.settings
    t = Topics.for_prefix(s.kafka.topic_prefix)
    p = _producer(s)
    junk_png = base64.b64encode(b"\x89PNG\r\n\x1a\n" + b"\x00" * 40).decode()
    bad_content = [
        b"{not json",
        json.dumps({"item_id": "x", "kind": "podcast", "creator_id": "c", "created_at": _now(), "text": "t"}).encode(),
        json.dumps({"item_id": "y", "kind": "moment", "creator_id": "c", "created_at": _now(), "text": "t",
                    "image": {"data_b64": junk_png}}).encode(),
        b"x" * (s.stream.max_event_bytes + 1),
    ]
    for i, raw in enumerate(bad_content):
        p.send(t.content_new, key=f"bad{i}".encode(), value=raw)
    good = _items()[0]
    _send(p, t.content_new, good["item_id"], good)
    naive = "2026-01-01T00:00:00"
    bad_user = [b"\xff\xfe",
                json.dumps({"user_id": "u", "item_id": "ghost", "action": "play", "ts": _now()}).encode(),
                json.dumps({"user_id": "u", "item_id": "metal0", "action": "play", "ts": naive}).encode()]
    p.flush()
    ix = ItemIndex(s.milvus, dim=384)
    wait_for(lambda: ix.get_rows([good["item_id"]]), 60, "the good item after the bad ones", worker)
    for raw in bad_user:
        p.send(t.user_events, key=b"u", value=raw)
    _send(p, t.user_events, "u", {"user_id": "u", "item_id": good["item_id"], "action": "play", "ts": _now()})
    p.flush()
    store = RedisState(s.redis)
    wait_for(lambda: store.read_states(f"{MODEL_NAME}@1", ["u"])["u"], 30, "the good user event", worker)
    cdl = [DeadLetter.model_validate_json(v) for v in read_topic(s, t.content_dlq, 4, timeout_s=20)]
    udl = [DeadLetter.model_validate_json(v) for v in read_topic(s, t.user_dlq, 3, timeout_s=20)]
    assert sorted(d.error_class for d in cdl) == ["CorruptMedia", "InvalidJSON", "Oversize", "SchemaViolation"]
    assert sorted(d.error_class for d in udl) == ["InvalidJSON", "SchemaViolation", "UnknownItem"]
    assert {base64.b64decode(d.value_b64) for d in cdl} == set(bad_content)
    assert worker.alive()
    # the same counts on the worker's Prometheus endpoint
    import httpx
    from prometheus_client.parser import text_string_to_metric_families

    body = httpx.get(worker.metrics_url(), timeout=10).text
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value
               for fam in text_string_to_metric_families(body) for s in fam.samples}
    dlq = {lab: v for (name, lab), v in samples.items() if name == "thaw_dlq_total"}
    assert dlq[(("error", "Oversize"), ("topic", t.content_new))] == 1
    assert dlq[(("error", "UnknownItem"), ("topic", t.user_events_retry))] == 1  # given up after retries
    assert samples[("thaw_events_total", (("outcome", "ok"), ("topic", t.content_new)))] >= 1
    assert any(name == "thaw_freshness_seconds_count" and v >= 1 for (name, _), v in samples.items())
    assert any(name == "thaw_consumer_lag" for (name, _) in samples)


def test_kill9_loses_nothing_and_applies_nothing_twice(worker):
    """Kill -9 the worker in the middle of a stream of user events; after restart the state is exact."""
    s = worker.settings
    t, p, items, ix = _index_items(worker)
    rng = np.random.default_rng(7)
    users = [f"k{u}" for u in range(6)]
    evs = random_events(rng, users, [it["item_id"] for it in items], 3000)
    store = RedisState(s.redis)
    space = f"{MODEL_NAME}@1"

    def applied():
        return sum(st.n_events for st in store.read_states(space, users).values() if st)

    for e in evs[:1500]:
        _send(p, t.user_events, e["user_id"], e)
    p.flush()
    wait_for(lambda: applied() > 0, 30, "some events applied", worker, poll_s=0.005)
    worker.kill9()
    for e in evs[1500:]:
        _send(p, t.user_events, e["user_id"], e)
    p.flush()
    worker.start()
    wait_for(lambda: applied() == len(evs), 90, f"all {len(evs)} events applied exactly once", worker)
    time.sleep(2.0)
    assert applied() == len(evs)
    # the final state equals the offline computation over every event exactly once
    enc = TextEncoder(ModelRegistry(s.models.dir).load(MODEL_NAME))
    vecs = ix.get_vectors([i["item_id"] for i in items])
    ref = apply_events({}, EventBatch(users=[e["user_id"] for e in evs],
                                      item_vecs=np.stack([vecs[e["item_id"]] for e in evs]),
                                      actions=[e["action"] for e in evs],
                                      ts=np.array([datetime.fromisoformat(e["ts"]).timestamp() for e in evs])),
                       s.stream.user_half_life_s)
    got = store.read_states(space, users)
    for u in users:
        np.testing.assert_allclose(got[u].vec, ref[u].vec, rtol=1e-4, atol=1e-4)
        assert got[u].weight == pytest.approx(ref[u].weight, rel=1e-5)
    assert enc.dim == 384
