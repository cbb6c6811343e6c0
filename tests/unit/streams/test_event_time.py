"""Publisher-set event times cannot poison state: the worker refuses future-dated and stale events, the update rule
clamps state times past the clock, and the serving lists leave future-dated items out. No services."""

import json
from datetime import UTC, datetime, timedelta

import numpy as np

from contracts.actions import ACTION_WEIGHTS
from contracts.topics import Topics
from indexing.redis_state import UserState
from infra.settings import KafkaSettings, Settings
from streams.cores import event_time
from streams.cores.user_update import EventBatch, apply_events
from streams.engine import Engine, Record
from tests.fakes import FakeFeaturizer, FakeText, InMemoryEngineState, InMemoryItems

TOPICS = Topics.for_prefix("unit.")
NOW = 1_796_000_000.0  # the worker's clock in these tests
FAR = datetime(9999, 1, 1, tzinfo=UTC)


def _iso(t: float | datetime) -> str:
    return (t if isinstance(t, datetime) else datetime.fromtimestamp(t, UTC)).isoformat()


def _engine(users=None, items=None, settings=None):
    return Engine(settings or Settings(), TOPICS, FakeText(), items=items or InMemoryItems(known={"a", "b"}),
                  users=users or InMemoryEngineState(), group_id="g", clock=lambda: NOW,
                  featurizer=FakeFeaturizer())


def _user_rec(off, ts, item="a", user="u1", action="like"):
    ev = {"user_id": user, "item_id": item, "action": action, "ts": _iso(ts)}
    return Record(TOPICS.user_events, 0, off, user.encode(), json.dumps(ev).encode(), 0)


def _dead_letter_classes(res):
    return sorted(json.loads(o.value)["error_class"] for o in res.dlq)


# ------------------------------------------------------------------ the pure rule
def test_check_refuses_times_past_the_skew_and_older_than_the_age():
    now = datetime.fromtimestamp(NOW, UTC)
    assert event_time.check("ts", now + timedelta(seconds=299), NOW, 300, 3600) is None
    future = event_time.check("ts", now + timedelta(seconds=301), NOW, 300, 3600)
    assert future is not None and future.error_class == "FutureTimestamp" and "ts is 301 s ahead" in future.error
    stale = event_time.check("created_at", now - timedelta(seconds=3601), NOW, 300, 3600)
    assert stale is not None and stale.error_class == "StaleTimestamp" and stale.error.startswith("created_at")
    assert event_time.check("ts", now - timedelta(days=3000), NOW, 300, None) is None  # no age bound


def test_clamp_replaces_only_times_past_the_skew():
    t = np.array([-np.inf, NOW - 10, NOW + 299, NOW + 301, FAR.timestamp()])
    out = event_time.clamp(t, NOW, 300)
    assert out[0] == -np.inf and list(out[1:]) == [NOW - 10, NOW + 299, NOW, NOW]


# ------------------------------------------------------------------ the update rule
def _likes(n, vec, ts):
    return EventBatch(users=["u"] * n, item_vecs=np.tile(np.asarray(vec, np.float32), (n, 1)),
                      actions=["like"] * n, ts=np.full(n, ts))


def test_a_state_dated_in_the_future_decays_again_from_its_next_events():
    half_life = 7 * 24 * 3600.0
    # a state poisoned before the worker refused future-dated events: its time is year 9999, its vector item A
    poisoned = UserState(vec=np.array([10.0, 0.0], np.float32), weight=10.0, ts=FAR.timestamp(), n_events=10,
                         source="events")
    one_week_later = NOW + half_life
    # without the clock, the 50 real likes of item B count as ~8000 years old: the vector does not move
    frozen = apply_events({"u": poisoned}, _likes(50, [0.0, 1.0], one_week_later), half_life)["u"]
    assert abs(frozen.vec[1]) < 1e-6 and frozen.ts == FAR.timestamp()
    # with the clock the poisoned time counts as now: the likes count in full
    fixed = apply_events({"u": poisoned}, _likes(50, [0.0, 1.0], one_week_later), half_life,
                         now_s=one_week_later, max_ahead_s=300)["u"]
    assert fixed.ts == one_week_later
    np.testing.assert_allclose(fixed.vec, [10.0, 50 * ACTION_WEIGHTS["like"]], rtol=1e-5)
    cos = fixed.vec[1] / np.linalg.norm(fixed.vec)
    assert cos > 0.97  # the user's vector now points at item B


def test_an_event_dated_in_the_future_does_not_move_the_state_time_there():
    half_life = 3600.0
    st = apply_events({}, _likes(1, [1.0, 0.0], FAR.timestamp()), half_life, now_s=NOW, max_ahead_s=300)["u"]
    assert st.ts == NOW


# ------------------------------------------------------------------ the worker
def test_future_dated_and_stale_user_events_are_dead_lettered_and_not_applied():
    users = InMemoryEngineState()
    eng = _engine(users)
    recs = [_user_rec(0, FAR), _user_rec(1, NOW + 3600), _user_rec(2, NOW - 31 * 24 * 3600),
            _user_rec(3, NOW - 60, item="b"), _user_rec(4, NOW + 120, item="b")]
    res = eng.commit_user_events(eng.prepare_user_events(recs))
    assert res.ok == 2
    assert _dead_letter_classes(res) == ["FutureTimestamp", "FutureTimestamp", "StaleTimestamp"]
    st = users.state(eng.space, "u1")
    assert st is not None and st.n_events == 2 and st.ts == NOW + 120  # within the skew: kept as it is
    assert [i for i, _ in users.engaged["u1"]] == ["b", "b"]


def test_the_bounds_follow_the_settings():
    s = Settings.model_validate({"stream": {"max_clock_skew_s": 7200, "max_user_event_age_s": None}})
    eng = _engine(settings=s)
    res = eng.commit_user_events(eng.prepare_user_events([_user_rec(0, NOW + 3600),
                                                           _user_rec(1, NOW - 400 * 24 * 3600)]))
    assert res.ok == 2 and res.dlq == []


def _post(off, created_at, item="p1"):
    ev = {"item_id": item, "kind": "track", "creator_id": "c", "created_at": _iso(created_at), "text": "a song"}
    return Record(TOPICS.content_new, 0, off, item.encode(), json.dumps(ev).encode(), 0)


def test_future_dated_posts_are_dead_lettered_and_never_enter_the_fresh_set():
    users, items = InMemoryEngineState(), InMemoryItems()
    eng = _engine(users, items)
    res = eng.handle_content([_post(0, FAR, "p-far"), _post(1, NOW + 3600, "p-hour"),
                              _post(2, NOW - 2 * 365 * 24 * 3600, "p-old"), _post(3, NOW - 5, "p-ok")])
    assert res.ok == 1
    assert _dead_letter_classes(res) == ["FutureTimestamp", "FutureTimestamp", "StaleTimestamp"]
    assert set(items.rows) == {"p-ok"} and set(users.fresh[eng.space]) == {"p-ok"}


def test_future_dated_profiles_are_dead_lettered():
    users = InMemoryEngineState()
    eng = _engine(users)
    recs = [Record(TOPICS.user_profile, 0, i, b"k", json.dumps(
        {"user_id": f"n{i}", "gender": "f", "genres": ["jazz"], "ts": _iso(t)}).encode(), 0)
        for i, t in enumerate([FAR, NOW])]
    res = eng.handle_profiles(recs)
    assert res.ok == 1 and _dead_letter_classes(res) == ["FutureTimestamp"]
    assert users.state(eng.space, "n1") is not None and users.state(eng.space, "n0") is None


def test_a_dead_letter_over_its_dlq_cap_is_cut_to_fit():
    """Not an event-time rule, but the same reject path: a dead letter the DLQ topic's cap would refuse is cut."""
    from contracts.events import DeadLetter
    from streams.cores.dlq import TRUNCATED_MARK

    # a cap the settings refuse (KafkaSettings checks that a DLQ holds its sources' largest dead letter), built
    # without validation: a dead letter can still outgrow its DLQ (a compressed record larger than its topic's cap)
    small = KafkaSettings.model_construct(topic_max_message_bytes={"user.dlq": 4096})
    s = Settings().model_copy(update={"kafka": small})
    assert s.kafka.record_caps()["user.dlq"] == 4096
    eng = _engine(settings=s)
    big = Record(TOPICS.user_events, 0, 7, b"u1", b"{" + b"x" * 20_000, 0)  # invalid JSON, 20 KB
    small = Record(TOPICS.user_events, 0, 8, b"u1", b"{broken", 0)
    res = eng.commit_user_events(eng.prepare_user_events([big, small]))
    assert res.rejected == {"InvalidJSON": 2}
    cut, kept = (DeadLetter.model_validate_json(o.value) for o in res.dlq)
    assert len(res.dlq[0].value) + len(res.dlq[0].key or b"") <= 4096
    assert cut.error.startswith(TRUNCATED_MARK) and cut.offset == 7
    assert kept.error_class == "InvalidJSON" and not kept.error.startswith(TRUNCATED_MARK)


# ------------------------------------------------------------------ the engine's wiring of the rules
def test_the_engine_clamps_a_state_dated_year_9999_to_its_clock_and_the_like_moves_it():
    """The update rule clamps only when the engine passes its clock (``now_s``): without it the poisoned state's
    time stays in year 9999 and one like counts ~8000 years old."""
    from indexing.redis_state import pack_state

    users = InMemoryEngineState()
    items = InMemoryItems(known={"a"})
    items.vectors["b"] = np.array([0.0, 1.0], np.float32)
    eng = _engine(users, items)
    poisoned = UserState(vec=np.array([10.0, 0.0], np.float32), weight=10.0, ts=FAR.timestamp(), n_events=10,
                         source="events")
    users.states[(eng.space, "u1")] = pack_state(poisoned)
    res = eng.commit_user_events(eng.prepare_user_events([_user_rec(0, NOW, item="b", action="like")]))
    assert res.ok == 1 and res.dlq == []
    st = users.state(eng.space, "u1")
    assert st is not None and st.n_events == 11
    assert st.ts == NOW  # the engine clock's now, not year 9999
    np.testing.assert_allclose(st.vec, [10.0, ACTION_WEIGHTS["like"]], rtol=1e-5)  # the like counts in full


def test_the_engine_tallies_a_variant_that_is_no_configured_arm_as_other():
    """The A/B label of an event's ``ab_variant`` is itself only for the configured arms (``serve.variants``): a
    client-chosen name is ``other``, so clients cannot mint metric labels."""
    s = Settings.model_validate({"serve": {"variants": [{"name": "control"}, {"name": "random-0"}]}})
    eng = _engine(settings=s)
    recs = [Record(TOPICS.user_events, 0, i, b"u1", json.dumps(
        {"user_id": "u1", "item_id": "a", "action": "like", "ts": _iso(NOW), "context": {"ab_variant": v}}).encode(),
        0) for i, v in enumerate(["random-1", "random-0", "random-1"])]
    res = eng.commit_user_events(eng.prepare_user_events(recs))
    assert res.ok == 3
    assert res.ab_actions == {("other", "like"): 2, ("random-0", "like"): 1}
