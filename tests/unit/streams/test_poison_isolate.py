"""Poison records, without services: the bisection core, and a batch through an agent's steps (``run_batch``) where
some records make the handling step raise: exactly those are dead-lettered, the others handled once each, in order;
infrastructure errors are retried instead, and the user-events commit is never bisected."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import math
from typing import Any, cast

import pytest
from tenacity import wait_none

from contracts.events import DeadLetter
from contracts.topics import Topics, record_caps
from infra.metrics import EngineMetrics
from infra.settings import Settings
from streams.app import RecordFailure, _retrying, _secret_values, agent_specs, poison_dead_letters, run_batch
from streams.cores.dlq import fits, is_truncated
from streams.cores.poison import describe, isolate, redact
from streams.cores.retry import Park, error_name
from streams.engine import BatchResult, Outgoing, PreparedUserBatch, Record

TOPICS = Topics.for_prefix("unit.")


class Poison(ValueError):
    pass


POISON = error_name(Poison())  # "<this test module>.Poison"


# ------------------------------------------------------------------------------------------------- the core


def _isolate(n, bad, fail=None):
    """Run ``isolate`` over records 0..n-1 where a sub-batch containing any of ``bad`` raises."""
    runs, handled, trail = [], [], []

    async def run(sub):
        runs.append(list(sub))
        if any(r in bad for r in sub):
            raise (fail or Poison)(f"record {min(r for r in sub if r in bad)}")
        handled.extend(sub)
        trail.append(("ok", list(sub)))
        return ("ok", list(sub))

    async def poisoned(rec, exc):
        trail.append(("dlq", rec))
        return ("dlq", rec, str(exc))

    out = asyncio.run(isolate(list(range(n)), run, poisoned, is_poison=lambda e: isinstance(e, Poison)))
    return out, runs, handled, trail


@pytest.mark.parametrize("bad", [set(), {37}, {0}, {99}, {3, 88}, {49, 50}, {10, 11}, {0, 99}],
                         ids=lambda b: "+".join(map(str, sorted(b))) or "none")
def test_exactly_the_poison_records_are_isolated_and_the_rest_handled_once_in_order(bad):
    out, runs, handled, trail = _isolate(100, bad)
    assert [o[1] for o in out if o[0] == "dlq"] == sorted(bad)
    assert all(o[2] == f"record {o[1]}" for o in out if o[0] == "dlq")  # each with its own exception
    assert handled == [r for r in range(100) if r not in bad]  # once each, in record order
    # results and dead letters come back in record order, each dead letter before any later record is handled
    flat = [r for o in out for r in (o[1] if o[0] == "ok" else [o[1]])]
    assert flat == list(range(100))
    assert [t[0] for t in trail] == [o[0] for o in out]
    if not bad:
        assert runs == [list(range(100))]  # no failure: the batch runs once, whole
    else:
        assert len(runs) <= 1 + 2 * len(bad) * math.ceil(math.log2(100))


def test_one_poison_record_among_100_costs_a_dozen_runs():
    _, runs, _, _ = _isolate(100, {37})
    assert len(runs) <= 14
    # the batch, then the half that holds it, and so on, down to the record: 259 record runs, 2.6 per record
    assert sum(len(r) for r in runs) <= 3 * 100


def test_a_batch_of_one_poison_record_is_dead_lettered():
    out, runs, handled, _ = _isolate(1, {0})
    assert out == [("dlq", 0, "record 0")] and runs == [[0]] and handled == []


def test_every_record_poisoned():
    out, _, handled, _ = _isolate(8, set(range(8)))
    assert [o[1] for o in out] == list(range(8)) and handled == []


def test_another_exception_is_not_bisected():
    with pytest.raises(KeyError):
        _isolate(100, {37}, fail=KeyError)


# -------------------------------------------------------------------------------------- describe and redact


def test_a_dead_letter_reason_names_the_exception_and_hides_secrets():
    exc = ValueError("cannot reach redis://thaw:hunter2@10.0.0.5:6379/0 with password=hunter2 token: abc123 "
                     "sk-live-" + "x" * 500)
    why = describe(exc, "content", secrets=["sk-live-"])
    assert why.error_class == "ValueError"
    assert why.error.startswith("poison record: content raised ValueError: cannot reach redis://***@10.0.0.5")
    assert "hunter2" not in why.error and "abc123" not in why.error and "sk-live-" not in why.error
    assert len(why.error) < 400 and why.error.endswith("...")
    assert "Traceback" not in why.error and "\n" not in why.error


def test_redact_leaves_ordinary_messages_alone():
    msg = "the length (256) of 0th string exceeds max length (128): invalid parameter[expected=valid length string]"
    assert redact(msg) == msg


def test_the_settings_secrets_are_collected():
    s = Settings.model_validate({"redis": {"password": "r-pw"}, "kafka": {"sasl_password": "k-pw"},
                                 "milvus": {"token": "m-tok"}})
    assert set(_secret_values(s)) == {"r-pw", "k-pw", "m-tok"}
    assert _secret_values(Settings()) == []


# ------------------------------------------------------------------------------------------- through run_batch


def _value(i, poison=False):
    return (b'{"poison": true, "i": %d}' if poison else b'{"i": %d}') % i


class Engine:
    """The handler surface, raising :class:`Poison` for a batch that holds a poison record (and optionally a
    transient error first), and recording what it applied."""

    def __init__(self, transient_failures=0, commit_failures=0, commit_exc=ValueError):
        self.applied: list[int] = []  # offsets handled (content, profiles) or committed (users), in order
        self.calls: list[tuple[str, list[Any]]] = []  # offsets handled/committed, values sent
        self.transient_failures = transient_failures
        self.commit_failures = commit_failures
        self.commit_exc = commit_exc

    def _check(self, recs):
        self.calls.append(("handle", [r.offset for r in recs]))
        if self.transient_failures:
            self.transient_failures -= 1
            raise ConnectionError("redis is restarting")
        bad = [r.offset for r in recs if (r.key or b"").startswith(b"bad")]
        if bad:
            raise Poison(f"cannot featurise record at offset {bad[0]}; password=s3cret")

    def handle_content(self, recs):
        self._check(recs)
        self.applied += [r.offset for r in recs]
        return BatchResult(out=[Outgoing(TOPICS.content_indexed, r.key, b"trace%d" % r.offset) for r in recs],
                           ok=len(recs), stage_ms={"encode": 1.0})

    def prepare_user_events(self, recs):
        self._check(recs)
        res = BatchResult(dlq=[Outgoing(TOPICS.user_events_retry, r.key, b"park%d" % r.offset) for r in recs
                               if r.offset % 10 == 0], ok=len(recs))
        return PreparedUserBatch(res, None, recs)

    def commit_user_events(self, prep):
        self.calls.append(("commit", [r.offset for r in prep.records]))
        if self.commit_failures:
            self.commit_failures -= 1
            raise self.commit_exc("a state that does not pack")
        self.applied += [r.offset for r in prep.records]
        return prep.result

    def handle_profiles(self, recs):
        self._check(recs)
        self.applied += [r.offset for r in recs]
        return BatchResult(ok=len(recs))

    def retry_due(self, rec):
        return 0.0

    def clock(self):
        return 0.0


def _batch(topic, n, poison_at):
    return [Record(topic, 2, 1000 + i, b"%s%d" % (b"bad" if i in poison_at else b"k", i),
                   _value(1000 + i, i in poison_at), 0) for i in range(n)]


def _run(spec_index, eng, recs, *, metrics=None, secrets=("s3cret",), caps=None):
    metrics = metrics or EngineMetrics()
    spec = agent_specs(Settings(), TOPICS, cast(Any, eng))[spec_index]
    sent: list[Outgoing] = []

    async def send(msgs):
        eng.calls.append(("send", [m.value for m in msgs]))
        sent.extend(msgs)

    async def retrying(what, fn):
        return await _retrying(what, fn, metrics, agent=spec.name, wait=wait_none())

    letters = poison_dead_letters(TOPICS, metrics, secrets, caps)
    res = asyncio.run(run_batch(spec, recs, send=send, retrying=retrying, poison=letters))
    return res, sent, metrics


def _dead_letters(sent, topic):
    return [DeadLetter.model_validate_json(m.value) for m in sent if m.topic == topic]


@pytest.mark.parametrize("poison_at", [{41}, {5, 77}], ids=["one", "two"])
def test_content_batch_of_100_dead_letters_exactly_the_poison_records(poison_at):
    eng = Engine()
    recs = _batch(TOPICS.content_new, 100, poison_at)
    res, sent, metrics = _run(0, eng, recs)
    good = [r.offset for i, r in enumerate(recs) if i not in poison_at]
    assert eng.applied == good  # once each, in order
    dls = _dead_letters(sent, TOPICS.content_dlq)
    assert [d.offset for d in dls] == [1000 + i for i in sorted(poison_at)]
    for d in dls:
        assert d.source_topic == TOPICS.content_new and d.partition == 2 and d.error_class == POISON
        assert base64.b64decode(d.value_b64) == _value(d.offset, True)  # the original bytes
        assert d.error.startswith(f"poison record: content raised {POISON}: cannot featurise record at offset "
                                  f"{d.offset}")
        assert "s3cret" not in d.error
    traces = [m.value for m in sent if m.topic == TOPICS.content_indexed]
    assert traces == [b"trace%d" % o for o in good]  # one trace per handled record, in order
    assert res.ok == len(good) and res.rejected == {POISON: len(poison_at)} and len(res.dlq) == len(poison_at)
    assert metrics.registry.get_sample_value("thaw_events_total",
                                             {"topic": TOPICS.content_new, "outcome": "poison"}) == len(poison_at)
    # the poison records were never retried as they were: no retries, nobody stuck
    assert metrics.registry.get_sample_value("thaw_agent_stuck_seconds", {"agent": "content"}) is None
    assert metrics.stuck_s("content") == 0.0


def test_user_events_halves_deliver_then_commit_in_order_and_a_dead_letter_precedes_later_commits():
    eng = Engine()
    recs = _batch(TOPICS.user_events, 100, {30, 31})
    res, sent, _ = _run(1, eng, recs)
    assert eng.applied == [r.offset for i, r in enumerate(recs) if i not in (30, 31)]
    dls = _dead_letters(sent, TOPICS.user_dlq)
    assert [d.offset for d in dls] == [1030, 1031]
    # every committed half's parked records were delivered before its commit, and each dead letter before the
    # commit of any record after it
    order = [c for c in eng.calls if c[0] != "handle"]
    for k, (kind, _) in enumerate(order):
        if kind == "commit":
            assert order[k - 1][0] == "send"
    first_later_commit = next(k for k, c in enumerate(order) if c[0] == "commit" and c[1][0] > 1031)
    dlq_sends = [k for k, c in enumerate(order) if c[0] == "send" and any(b'"error_class"' in v for v in c[1])]
    assert len(dlq_sends) == 2 and max(dlq_sends) < first_later_commit
    parked = [m.value for m in sent if m.topic == TOPICS.user_events_retry]
    assert parked == [b"park%d" % o for o in range(1000, 1100, 10) if o not in (1030,)]  # 1030 is poison
    assert res.ok == 98 and res.rejected == {POISON: 2}


def test_a_poison_retry_envelope_is_dead_lettered_as_the_user_event_it_carries():
    eng = Engine()
    inner = _value(7, poison=True)
    env = Park(attempt=2, first_seen=1.0, retry_at=2.0).envelope(partition=5, offset=77, key=b"bad-u1",
                                                                 value=inner, group="g")
    recs = [Record(TOPICS.user_events_retry, 0, 9, b"bad-u1", env.to_bytes(), 0)]
    _, sent, _ = _run(2, eng, recs)
    (d,) = _dead_letters(sent, TOPICS.user_dlq)
    assert (d.source_topic, d.partition, d.offset) == (TOPICS.user_events, 5, 77)
    assert base64.b64decode(d.value_b64) == inner and d.key_b64 == base64.b64encode(b"bad-u1").decode()


@pytest.mark.parametrize("spec_index", [1, 2], ids=["user.events", "user.events.retry"])
def test_a_poison_dead_letter_is_cut_to_its_dlq_s_cap(spec_index):
    """A user.dlq capped at 4096 bytes and a 20 KB poison record: its dead letter (27 KB as base64) would be
    refused by the broker and the delivery retried forever, holding the partition; it is cut to fit instead."""
    eng = Engine()
    value = b"x" * 20_000
    if spec_index == 1:
        recs = [Record(TOPICS.user_events, 3, 41, b"bad-u1", value, 0)]
    else:
        env = Park(attempt=1, first_seen=1.0, retry_at=2.0).envelope(partition=3, offset=41, key=b"bad-u1",
                                                                     value=value, group="g")
        recs = [Record(TOPICS.user_events_retry, 3, 9, b"bad-u1", env.to_bytes(), 0)]
    caps = {**record_caps(), "user.dlq": 4096}
    res, sent, _ = _run(spec_index, eng, recs, caps=caps)
    (out,) = [m for m in sent if m.topic == TOPICS.user_dlq]
    assert fits(out.key, out.value, 4096)
    (d,) = _dead_letters(sent, TOPICS.user_dlq)
    assert is_truncated(d) and (d.source_topic, d.partition, d.offset) == (TOPICS.user_events, 3, 41)
    assert f"of {len(value)} bytes kept (sha256 {hashlib.sha256(value).hexdigest()})" in d.error
    assert value.startswith(base64.b64decode(d.value_b64)) and d.error_class == POISON
    assert "s3cret" not in d.error and res.rejected == {POISON: 1}
    # under the contract's caps (user.dlq 256 KiB) the same dead letter is whole
    _, whole, _ = _run(spec_index, Engine(), recs)
    (d,) = _dead_letters(whole, TOPICS.user_dlq)
    assert not is_truncated(d) and base64.b64decode(d.value_b64) == value


def test_profiles_poison_goes_to_the_user_dlq():
    eng = Engine()
    recs = _batch(TOPICS.user_profile, 10, {9})
    _, sent, _ = _run(3, eng, recs)
    assert eng.applied == [r.offset for r in recs[:9]]
    assert [d.offset for d in _dead_letters(sent, TOPICS.user_dlq)] == [1009]


def test_an_infrastructure_error_is_retried_not_bisected_and_the_agent_shows_stuck_meanwhile():
    eng = Engine(transient_failures=3)
    metrics = EngineMetrics()
    recs = _batch(TOPICS.content_new, 20, set())
    res, sent, _ = _run(0, eng, recs, metrics=metrics)
    assert eng.calls[:4] == [("handle", [r.offset for r in recs])] * 4  # the whole batch, four times
    assert eng.applied == [r.offset for r in recs] and res.ok == 20 and not _dead_letters(sent, TOPICS.content_dlq)
    assert metrics.registry.get_sample_value(
        "thaw_agent_retries_total", {"agent": "content", "step": "content", "error": "ConnectionError"}) == 3
    assert metrics.stuck_s("content") == 0.0  # recovered


def test_a_failing_commit_is_retried_never_bisected():
    eng = Engine(commit_failures=2)
    recs = _batch(TOPICS.user_events, 10, set())
    _, sent, metrics = _run(1, eng, recs)
    assert [c[0] for c in eng.calls] == ["handle", "send", "commit", "commit", "commit"]
    assert eng.applied == [r.offset for r in recs] and not _dead_letters(sent, TOPICS.user_dlq)
    assert metrics.registry.get_sample_value(
        "thaw_agent_retries_total", {"agent": "users", "step": "commit", "error": "ValueError"}) == 2


def test_without_a_dead_letterer_every_failure_is_retried_as_before():
    eng = Engine(transient_failures=0)
    spec = agent_specs(Settings(), TOPICS, cast(Any, eng))[0]
    attempts = []

    def handle(recs):
        attempts.append(len(recs))
        if len(attempts) < 3:
            raise ValueError("flaky")
        return BatchResult(ok=len(recs))

    spec = type(spec)(**{**spec.__dict__, "handle": handle})

    async def send(msgs):
        pass

    async def retrying(what, fn):
        return await _retrying(what, fn, EngineMetrics(), wait=wait_none())

    res = asyncio.run(run_batch(spec, _batch(TOPICS.content_new, 4, set()), send=send, retrying=retrying))
    assert attempts == [4, 4, 4] and res.ok == 4


def test_record_failure_is_never_retried_by_the_sink_loop():
    metrics = EngineMetrics()
    calls = []

    async def fails():
        calls.append(1)
        raise RecordFailure(ValueError("x"))

    with pytest.raises(RecordFailure):
        asyncio.run(_retrying("content", fails, metrics, wait=wait_none()))
    assert calls == [1]
