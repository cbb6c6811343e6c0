"""The agent factory of streams/app.py: the four agents' specs and one batch through a spec, without Kafka."""

import asyncio

import pytest

from contracts.topics import Topics
from infra.metrics import EngineMetrics
from infra.settings import Settings
from streams import app as app_module
from streams.app import _retrying, agent_specs, dlq_and_traces, dlq_only, run_batch
from streams.engine import BatchResult, Outgoing, PreparedUserBatch, Record

TOPICS = Topics.for_prefix("unit.")


class FakeEngine:
    """The engine's handler surface, recording calls (in the worker thread the agents use)."""

    def __init__(self, due=0.0, now=100.0):
        self.calls = []
        self.due, self.now = due, now

    def handle_content(self, recs):
        self.calls.append(("content", len(recs)))
        return BatchResult(out=[Outgoing("indexed", b"k", b"trace")], dlq=[Outgoing("content.dlq", b"k", b"dl")],
                           ok=len(recs) - 1)

    def prepare_user_events(self, recs):
        self.calls.append(("prepare", len(recs)))
        res = BatchResult(dlq=[Outgoing("retry", b"k", b"parked")], out=[Outgoing("never", None, b"x")], deferred=1)
        return PreparedUserBatch(res, None, recs)

    def commit_user_events(self, prep):
        self.calls.append(("commit", len(prep.records)))
        prep.result.ok = len(prep.records) - 1
        return prep.result

    def handle_profiles(self, recs):
        self.calls.append(("profiles", len(recs)))
        return BatchResult(ok=len(recs), dlq=[Outgoing("user.dlq", None, b"dl")], out=[Outgoing("never", None, b"x")])

    def retry_due(self, rec):
        return self.due

    def clock(self):
        return self.now


def _settings():
    s = Settings()
    return s.model_copy(update={"stream": s.stream.model_copy(update={"batch_size": 7, "content_batch_size": 3,
                                                                      "user_batch_size": 11,
                                                                      "batch_within_s": 0.5})})


def _recs(topic, n=2):
    return [Record(topic, 0, i, b"k", b"{}", 0) for i in range(n)]


async def _no_retry(what, fn):
    return await fn()


def test_four_agents_from_one_spec_table():
    eng = FakeEngine()
    specs = {s.name: s for s in agent_specs(_settings(), TOPICS, eng)}
    assert list(specs) == ["content", "users", "users-retry", "profiles"]
    content, users, retries, profiles = specs.values()
    assert (content.topic, content.batch_size, content.within_s, content.stage) == (TOPICS.content_new, 3, 0.5,
                                                                                     "content")
    assert (users.topic, users.batch_size, users.stage) == (TOPICS.user_events, 11, "users")
    assert (retries.topic, retries.batch_size, retries.stage) == (TOPICS.user_events_retry, 7, "users")
    assert (profiles.topic, profiles.batch_size, profiles.stage) == (TOPICS.user_profile, 7, "profiles")
    # output routing: traces only from content; user events commit after delivery; only the retry topic waits
    assert content.route is dlq_and_traces and users.route is retries.route is profiles.route is dlq_only
    assert content.commit is None and profiles.commit is None
    assert users.commit == eng.commit_user_events and retries.commit == eng.commit_user_events
    assert users.hold is None and content.hold is None and profiles.hold is None and retries.hold is not None
    # only the users agent prepares a batch while the previous one commits
    assert users.overlap is not None and content.overlap is retries.overlap is profiles.overlap is None


def test_retry_agent_holds_until_the_last_record_is_due_at_most_five_seconds():
    recs = _recs(TOPICS.user_events_retry)
    assert agent_specs(_settings(), TOPICS, FakeEngine(due=101.5, now=100.0))[2].hold(recs) == 1.5
    assert agent_specs(_settings(), TOPICS, FakeEngine(due=108.0, now=100.0))[2].hold(recs) == 5.0
    # later than any worker parks a record (5 s + 5 s of clock skew): a forged retry_at, handled at once
    assert agent_specs(_settings(), TOPICS, FakeEngine(due=200.0, now=100.0))[2].hold(recs) == 0.0
    assert agent_specs(_settings(), TOPICS, FakeEngine(due=0.0, now=100.0))[2].hold(recs) == 0.0


def _run(spec_index, eng, recs):
    spec = agent_specs(_settings(), TOPICS, eng)[spec_index]
    sent = []

    async def send(msgs):
        eng.calls.append(("send", [m.value for m in msgs]))
        sent.extend(msgs)

    res = asyncio.run(run_batch(spec, recs, send=send, retrying=_no_retry))
    return res, sent


def test_content_batch_delivers_dead_letters_then_traces():
    eng = FakeEngine()
    res, _ = _run(0, eng, _recs(TOPICS.content_new, 3))
    assert eng.calls == [("content", 3), ("send", [b"dl", b"trace"])]
    assert res.ok == 2


def test_user_batch_delivers_parked_records_before_the_commit():
    eng = FakeEngine()
    res, _ = _run(1, eng, _recs(TOPICS.user_events, 4))
    assert eng.calls == [("prepare", 4), ("send", [b"parked"]), ("commit", 4)]
    assert res.ok == 3 and res.deferred == 1


def test_profile_batch_delivers_dead_letters_only():
    eng = FakeEngine()
    res, _ = _run(3, eng, _recs(TOPICS.user_profile, 2))
    assert eng.calls == [("profiles", 2), ("send", [b"dl"])]
    assert res.ok == 2


def test_retry_batch_waits_then_runs_like_user_events(monkeypatch):
    slept = []
    real_sleep = asyncio.sleep

    async def fake_sleep(s, *a, **kw):
        slept.append(s)
        await real_sleep(0)

    monkeypatch.setattr(app_module.asyncio, "sleep", fake_sleep)
    eng = FakeEngine(due=102.0, now=100.0)
    _run(2, eng, _recs(TOPICS.user_events_retry, 2))
    assert slept == [2.0]
    assert eng.calls == [("prepare", 2), ("send", [b"parked"]), ("commit", 2)]


def test_sink_failures_are_retried_with_backoff_and_counted(monkeypatch):
    slept = []

    async def fake_sleep(s, *a, **kw):
        slept.append(s)

    monkeypatch.setattr(asyncio, "sleep", fake_sleep)
    metrics = EngineMetrics()
    attempts = []

    async def flaky():
        attempts.append(1)
        if len(attempts) < 4:
            raise ConnectionError("milvus down")
        return "done"

    assert asyncio.run(_retrying("send", flaky, metrics)) == "done"
    # capped exponential backoff with jitter: each wait between half and all of 0.2 * 2^n
    assert len(slept) == 3 and all(b / 2 <= s <= b for s, b in zip(slept, [0.2, 0.4, 0.8], strict=True))
    assert metrics.registry.get_sample_value("thaw_events_total", {"topic": "send", "outcome": "retry"}) == 3


def test_cancellation_is_not_retried():
    metrics = EngineMetrics()

    async def cancelled():
        raise asyncio.CancelledError

    with pytest.raises(asyncio.CancelledError):
        asyncio.run(_retrying("commit", cancelled, metrics))
    assert metrics.registry.get_sample_value("thaw_events_total", {"topic": "commit", "outcome": "retry"}) is None
