"""Engine handlers against real Milvus (standalone server) and Redis, with the real MiniLM encoder.

Kafka is not involved here: records are built directly; the e2e tests drive the same code through the worker.
"""

import base64
import json
import time
from datetime import UTC, datetime

import pytest

from contracts.events import DeadLetter
from contracts.topics import Topics
from encoders.registry import ModelRegistry
from encoders.text import TextEncoder, ensure_minilm
from indexing.milvus_items import ItemIndex
from indexing.redis_state import RedisState
from streams.engine import Engine, Record

pytestmark = pytest.mark.integration

# event times relative to the real clock the engine runs on (it refuses events older than its max age), on a whole
# minute so the millisecond checks below are exact
_NOW_S = (int(time.time()) // 60) * 60 - 60
NOW = datetime.fromtimestamp(_NOW_S, UTC).isoformat()
LATER = datetime.fromtimestamp(_NOW_S + 300, UTC).isoformat()


@pytest.fixture(scope="module")
def encoder(stack_settings):
    return TextEncoder(ensure_minilm(ModelRegistry(stack_settings.models.dir)))


@pytest.fixture
def engine(stack_settings, unique_name, encoder):
    s = stack_settings.namespaced(unique_name)
    items = ItemIndex(s.milvus, dim=encoder.dim)
    items.ensure()
    users = RedisState(s.redis)
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    eng = Engine(s, topics, encoder, items, users, group_id=s.stream.app_id)
    # one partition per topic: every user on partition 0 (the worker reads the counts from the broker)
    eng.ensure_layout({topics.user_events: 1, topics.user_events_retry: 1})
    yield eng
    items.drop()
    users.delete_prefix()


def _rec(topic, off, obj, part=0):
    raw = obj if isinstance(obj, bytes) else json.dumps(obj).encode()
    return Record(topic, part, off, b"k", raw, 0)


def _item(i, text, tags=()):
    return {"item_id": f"it{i}", "kind": "track", "creator_id": "c1", "created_at": NOW, "text": text,
            "tags": list(tags), "produced_at": NOW}


def test_content_is_indexed_and_searchable(engine):
    t = engine.topics.content_new
    recs = [_rec(t, 0, _item(0, "heavy metal guitar riffs", ["metal"])),
            _rec(t, 1, _item(1, "soft piano lullaby", ["piano", "sleep"])),
            _rec(t, 2, b"{broken"),
            _rec(t, 3, _item(0, "heavy metal guitar riffs, remastered", ["metal"]))]
    res = engine.handle_content(recs)
    assert res.ok == 2 and res.rejected == {"InvalidJSON": 1}
    assert len(res.out) == 2 and all(o.topic == engine.topics.content_indexed for o in res.out)
    dl = DeadLetter.model_validate_json(res.dlq[0].value)
    assert dl.offset == 2 and dl.error_class == "InvalidJSON"
    assert engine.items.count() == 2
    q = engine.text.encode(["thrash metal"])
    assert engine.items.search(q, 1, consistency="Strong")[0][0].item_id == "it0"
    # the ranker's item attributes: the later version of it0 won
    meta = engine.users.item_meta(["it0", "it1", "missing"])
    assert set(meta) == {"it0", "it1"}
    assert meta["it1"].kind == "track" and meta["it1"].tags == ("piano", "sleep")
    assert meta["it1"].created_at_ms == _NOW_S * 1000
    # replaying the same batch is idempotent
    engine.handle_content(recs)
    assert engine.items.count() == 2


def test_user_events_fenced_and_unknown_items_retried_then_dead_lettered(engine):
    engine.handle_content([_rec(engine.topics.content_new, 0, _item(0, "metal", ["metal"]))])
    t = engine.topics.user_events
    ev = {"user_id": "u1", "item_id": "it0", "action": "like", "ts": NOW}
    recs = [_rec(t, 5, ev), _rec(t, 6, {**ev, "item_id": "itlater"}), _rec(t, 7, {**ev, "action": "dance"})]
    prep = engine.prepare_user_events(recs)
    assert prep.result.rejected == {"SchemaViolation": 1} and prep.result.deferred == 1
    (retry,) = [o for o in prep.result.dlq if o.topic == engine.topics.user_events_retry]
    res = engine.commit_user_events(prep)
    assert res.ok == 1
    assert engine.users.read_states(engine.space, ["u1"])["u1"].n_events == 1
    assert engine.users.engaged("u1") == [("it0", float(_NOW_S))]  # a like is engagement
    state, seen, engaged, profile = engine.users.request_view(engine.space, "u1")
    assert state is not None and state.n_events == 1 and engaged == [("it0", float(_NOW_S))]
    assert seen == [("it0", float(_NOW_S))]
    assert profile == {}
    # redelivery of the same records: all skipped, nothing applied twice
    again = engine.commit_user_events(engine.prepare_user_events(recs))
    assert again.skipped == 3 and again.ok == 0 and not again.dlq
    assert engine.users.read_states(engine.space, ["u1"])["u1"].n_events == 1
    skip = engine.commit_user_events(engine.prepare_user_events(
        [_rec(t, 9, {**ev, "action": "skip", "item_id": "it0", "ts": LATER,
                     "context": {"ab_variant": "control", "ab_bucket": "3"}}),
         _rec(t, 10, {**ev, "action": "click", "context": {"ab_variant": "x" * 40}})]))
    assert skip.ok == 2
    # engagement per serving arm (the configured one: the default "control")
    assert skip.ab_actions == {("control", "skip"): 1, ("invalid", "click"): 1}
    # a skip is seen, not engagement; the click (same item, same time) is
    assert engine.users.engaged("u1") == [("it0", float(_NOW_S))]
    assert engine.users.read_states(engine.space, ["u1"])["u1"].n_events == 3
    # the item arrives; the parked event, read back from the retry topic, now applies
    engine.handle_content([_rec(engine.topics.content_new, 1, _item("later", "metal too", ["metal"]))])
    engine.items.count()  # Strong read: the upsert is visible
    rt = engine.topics.user_events_retry
    ok = engine.commit_user_events(engine.prepare_user_events([Record(rt, 0, 0, retry.key, retry.value, 0)]))
    assert ok.ok == 1 and engine.users.read_states(engine.space, ["u1"])["u1"].n_events == 4
    assert {i for i, _ in engine.users.engaged("u1")} == {"itlater", "it0"}
    # an item that never arrives: retried until the grace period is over, then dead-lettered with the reason
    ghost = engine.prepare_user_events([_rec(t, 11, {**ev, "item_id": "ghost"})])
    engine.commit_user_events(ghost)
    (env,) = [o for o in ghost.result.dlq if o.topic == rt]
    real_clock = engine.clock
    engine.clock = lambda: real_clock() + engine.s.stream.unknown_item_grace_s + 1
    try:
        final = engine.prepare_user_events([Record(rt, 0, 1, env.key, env.value, 0)])
    finally:
        engine.clock = real_clock
    assert final.result.rejected == {"UnknownItem": 1} and final.result.deferred == 0
    dl = DeadLetter.model_validate_json(final.result.dlq[0].value)
    assert dl.source_topic == t and dl.offset == 11 and "after" in dl.error
    assert json.loads(base64.b64decode(dl.value_b64))["item_id"] == "ghost"


def test_profile_prior(engine):
    t = engine.topics.user_profile
    res = engine.handle_profiles([
        _rec(t, 0, {"user_id": "newbie", "genres": ["heavy metal"], "ts": NOW}),
        _rec(t, 1, {"user_id": "blank", "ts": NOW}),
        _rec(t, 2, {"user_id": "bad", "age_bucket": "old", "ts": NOW}),
    ])
    assert res.ok == 2 and res.rejected == {"SchemaViolation": 1}
    st = engine.users.read_states(engine.space, ["newbie", "blank"])
    assert st["newbie"].source == "prior" and st["blank"] is None
