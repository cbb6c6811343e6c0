"""Per-topic record caps and ``thaw dlq replay`` / ``stats`` against the real local Kafka, in a fresh namespace."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time

import pytest
from kafka import KafkaProducer, TopicPartition
from kafka.admin import NewTopic
from kafka.errors import MessageSizeTooLargeError

from contracts.events import DeadLetter, UserEvent
from contracts.topics import Topics, record_caps
from infra import clients
from infra.topics import ensure_topics, read_caps
from streams.cores.decode import Rejected, dead_letter
from streams.cores.dlq import REPLAY_HEADER, TRUNCATED_MARK, LedgerEntry, Position, ReplayFilter, fit_dead_letter
from streams.dlq_replay import ReplayOptions, replay

pytestmark = pytest.mark.integration

SECRET = "PAYLOAD-BYTES-MUST-NOT-BE-PRINTED"


def _producer(s) -> KafkaProducer:
    return clients.kafka_producer(s.kafka, acks="all", max_request_size=32 * 1024 * 1024)


def _send(p: KafkaProducer, topic: str, value: bytes, key: bytes | None = None, partition: int | None = None):
    return p.send(topic, key=key, value=value, partition=partition).get(timeout=30)


def _read_all(s, topic: str) -> list:
    c = clients.kafka_consumer(s.kafka, group_id=None, enable_auto_commit=False, max_partition_fetch_bytes=32 << 20)
    try:
        tps = [TopicPartition(topic, p) for p in sorted(c.partitions_for_topic(topic) or ())]
        c.assign(tps)
        c.seek_to_beginning(*tps)
        end = c.end_offsets(tps)
        out: list = []
        deadline = time.monotonic() + 30
        while any(c.position(tp) < end[tp] for tp in tps) and time.monotonic() < deadline:
            for recs in c.poll(timeout_ms=500).values():
                out += recs
        return sorted(out, key=lambda r: (r.partition, r.offset))
    finally:
        c.close()


def _event(user: str, item: str) -> bytes:
    return UserEvent(user_id=user, item_id=item, action="play", ts="2026-11-25T10:00:00Z",
                     context={"note": SECRET}).to_bytes()


def _letter(topics: Topics, source: str, partition: int, offset: int, value: bytes, key: bytes | None,
            error_class: str = "UnknownItem") -> bytes:
    return dead_letter(topic=source, partition=partition, offset=offset, key=key, value=value,
                       why=Rejected(error_class, f"why: {SECRET}")).to_bytes()


@pytest.fixture
def ns(stack_settings, unique_name):
    s = stack_settings.namespaced(unique_name)
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    yield s, topics
    admin = clients.kafka_admin(s.kafka)
    try:
        admin.delete_topics([t for t in topics.all() if t in set(admin.list_topics())])
    finally:
        admin.close()


# -------------------------------------------------------------------------------------------------- size caps
def _caps(s, names: list[str], want: dict[str, int] | None = None, timeout_s: float = 15.0) -> dict[str, int | None]:
    """The topics' caps as the broker reports them, once it reports every one (or ``want``): a new topic's configs,
    and an altered one, show up a moment after the broker acknowledged them."""
    admin = clients.kafka_admin(s.kafka)
    try:
        deadline = time.monotonic() + timeout_s
        while True:
            caps = read_caps(admin, names)
            if (caps == want if want is not None else all(v is not None for v in caps.values())) \
                    or time.monotonic() > deadline:
                return caps
            time.sleep(0.2)
    finally:
        admin.close()


def test_topics_are_created_with_their_caps_and_the_broker_refuses_records_over_them(ns):
    s, topics = ns
    ensure_topics(s.kafka, topics)
    caps = _caps(s, topics.all())
    want = s.kafka.record_caps()
    assert caps == dict(zip(topics.all(), want.values(), strict=True))
    assert caps[topics.user_events] == 128 * 1024 and caps[topics.content_new] == 16 * 1024 * 1024
    def once(topic: str, value: bytes, key: bytes | None) -> None:
        p = _producer(s)  # a refused record leaves an idempotent kafka-python producer failed: one per send
        try:
            _send(p, topic, value, key)
        finally:
            p.close()

    once(topics.user_events, b"x" * (100 * 1024), b"u1")  # under the cap
    with pytest.raises(MessageSizeTooLargeError):
        once(topics.user_events, b"x" * (140 * 1024), b"u1")  # over it: the broker refuses
    once(topics.content_new, b"x" * (1024 * 1024), b"i1")  # content keeps its large cap
    # a dead letter of a record larger than user.dlq's cap would fail delivery forever; fitted, it is accepted
    dl = dead_letter(topic=topics.user_events, partition=0, offset=1, key=b"u1", value=b"y" * (400 * 1024),
                     why=Rejected("Oversize", "too big"))
    with pytest.raises(MessageSizeTooLargeError):
        once(topics.user_dlq, dl.to_bytes(), b"u1")
    key, fitted = fit_dead_letter(dl, b"u1", caps[topics.user_dlq] or 0)
    once(topics.user_dlq, fitted.to_bytes(), key)
    (rec,) = _read_all(s, topics.user_dlq)
    assert DeadLetter.model_validate_json(rec.value).error.startswith(TRUNCATED_MARK)


def test_ensure_topics_alters_an_existing_topic_whose_cap_differs(ns, caplog):
    s, topics = ns
    admin = clients.kafka_admin(s.kafka)
    try:  # as an older version made them: every input topic at 16 MiB, the profile topic at the broker default
        admin.create_topics([NewTopic(topics.user_events, 2, 1, topic_configs={"max.message.bytes": str(16 << 20)}),
                             NewTopic(topics.user_profile, 2, 1)])
        before = _caps(s, [topics.user_events, topics.user_profile])
        assert before[topics.user_events] == 16 << 20 and before[topics.user_profile] != 160 * 1024
        with caplog.at_level(logging.INFO, logger="infra.topics"):
            created = ensure_topics(s.kafka, topics)
        assert topics.user_events not in created and topics.user_profile not in created
    finally:
        admin.close()
    want = {topics.user_events: 128 * 1024, topics.user_profile: 160 * 1024}
    assert _caps(s, list(want), want) == want
    logged = caplog.text
    assert f"topic {topics.user_events}: max.message.bytes {16 << 20} -> {128 * 1024}" in logged
    assert f"topic {topics.user_profile}: max.message.bytes" in logged
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="infra.topics"):
        ensure_topics(s.kafka, topics)
    assert "max.message.bytes" not in caplog.text  # nothing differs any more: nothing altered


# -------------------------------------------------------------------------------------------------- replay
def _fill_dlq(s, topics: Topics) -> dict[str, tuple[bytes, bytes, int]]:
    """Dead letters on user.dlq partition 0 (offsets in order): returns the records to be replayed by name."""
    ensure_topics(s.kafka, topics)
    records = {f"u{i}": (f"u{i}".encode(), _event(f"u{i}", f"ghost{i}"), i % 4) for i in range(3)}
    profile = (b"u9", b'{"schema_version": 1, "user_id": "u9", "ts": "2026-11-25T10:00:00Z", "x": 1}', 2)
    p = _producer(s)
    try:
        for i, (key, value, part) in enumerate(records.values()):  # offsets 0..2: UnknownItem
            _send(p, topics.user_dlq, _letter(topics, topics.user_events, part, 100 + i, value, key), key, 0)
        _send(p, topics.user_dlq, _letter(topics, topics.user_profile, profile[2], 7, profile[1], profile[0],
                                          "SchemaViolation"), b"u9", 0)  # 3
        _send(p, topics.user_dlq, b"{not a dead letter " + SECRET.encode(), b"x", 0)  # 4
        _send(p, topics.user_dlq, _letter(topics, topics.user_events_retry, 0, 5, b"{}", b"u1"), b"u1", 0)  # 5
        key, cut = fit_dead_letter(DeadLetter.model_validate_json(
            _letter(topics, topics.user_events, 1, 300, b"z" * 300_000, b"u5")), b"u5", 64 * 1024)
        _send(p, topics.user_dlq, cut.to_bytes(), key, 0)  # 6: truncated
        k0, v0, p0 = records["u0"]  # 7: the same source record dead-lettered again (a crash repeated it)
        _send(p, topics.user_dlq, _letter(topics, topics.user_events, p0, 100, v0, k0), k0, 0)
        _send(p, topics.user_dlq, _letter(topics, "othertenant.user.events", 0, 1, v0, k0), k0, 0)  # 8: foreign
    finally:
        p.close()
    return {**records, "profile": profile}


def _replays(s, topic: str) -> list:
    return [r for r in _read_all(s, topic) if any(k == REPLAY_HEADER for k, _ in r.headers or ())]


def test_replay_republishes_each_dead_letter_once_whatever_the_filters(ns):
    s, topics = ns
    want = _fill_dlq(s, topics)
    first = replay(s, ReplayOptions(topics.user_dlq, ReplayFilter(error_classes=frozenset({"UnknownItem"}))))
    assert first.replayed == 3
    v = first.stats.verdicts
    assert v["replay"] == 3 and v["filtered"] == 1 and v["invalid"] == 1 and v["truncated"] == 1
    assert v["duplicate"] == 1 and v["not_replayable"] == 2  # the retry topic's envelope, another tenant's topic
    got = _replays(s, topics.user_events)
    assert sorted((r.partition, r.key, r.value) for r in got) == sorted(
        (part, key, value) for name, (key, value, part) in want.items() if name != "profile")
    assert {dict(r.headers)[REPLAY_HEADER] for r in got} == {f"{topics.user_dlq}/0/{i}".encode() for i in range(3)}

    assert replay(s, ReplayOptions(topics.user_dlq, ReplayFilter(error_classes=frozenset({"UnknownItem"})))
                  ).replayed == 0  # the same run again
    everything = replay(s, ReplayOptions(topics.user_dlq))  # other filters: only what was not replayed yet
    assert everything.replayed == 1 and everything.stats.verdicts["already_replayed"] == 3
    (prof,) = _replays(s, topics.user_profile)
    assert (prof.partition, prof.key, prof.value) == (want["profile"][2], want["profile"][0], want["profile"][1])
    assert replay(s, ReplayOptions(topics.user_dlq)).replayed == 0
    assert len(_replays(s, topics.user_events)) == 3 and len(_replays(s, topics.user_profile)) == 1


def test_bounds_limit_and_max_read_stop_a_run_where_it_says(ns):
    s, topics = ns
    _fill_dlq(s, topics)
    one = replay(s, ReplayOptions(topics.user_dlq, limit=1))
    assert one.replayed == 1 and one.stopped == "limit" and one.next_offsets[0] == 1
    two = replay(s, ReplayOptions(topics.user_dlq, max_read=2))
    assert two.replayed == 1 and two.stopped == "max_read" and two.stats.read == 2
    ranged = replay(s, ReplayOptions(topics.user_dlq, ReplayFilter(offsets=(3, 3))))
    assert ranged.replayed == 1 and ranged.stats.read == 1  # the profile at offset 3


def test_a_run_stopped_after_publishing_is_settled_by_the_next_not_repeated(ns):
    s, topics = ns
    _fill_dlq(s, topics)

    def crash(batch):
        raise RuntimeError("killed between the acks and the done entries")

    with pytest.raises(RuntimeError):
        replay(s, ReplayOptions(topics.user_dlq, ReplayFilter(error_classes=frozenset({"UnknownItem"}))),
               after_publish=crash)
    assert len(_replays(s, topics.user_events)) == 3  # published, but the ledger has only intents
    again = replay(s, ReplayOptions(topics.user_dlq))
    assert again.settled == {"published": 3, "unpublished": 0, "undecided": 0}
    assert again.replayed == 1  # the profile; the three are not published twice
    assert len(_replays(s, topics.user_events)) == 3


def test_an_intent_whose_record_never_went_out_is_replayed(ns):
    s, topics = ns
    want = _fill_dlq(s, topics)
    key, value, part = want["u1"]
    c = clients.kafka_consumer(s.kafka, group_id=None)
    try:
        end = c.end_offsets([TopicPartition(topics.user_events, part)])[TopicPartition(topics.user_events, part)]
    finally:
        c.close()
    entry = LedgerEntry(Position(topics.user_dlq, 0, 1), Position(topics.user_events, part, 101), "intent",
                        Position(topics.user_events, part, end), "stopped-run")
    p = _producer(s)
    try:  # a run that wrote its intent and died before publishing
        _send(p, topics.dlq_replays, entry.value(), entry.key())
    finally:
        p.close()
    rep = replay(s, ReplayOptions(topics.user_dlq, ReplayFilter(offsets=(1, 1))))
    assert rep.settled == {"published": 0, "unpublished": 1, "undecided": 0} and rep.replayed == 1
    (r,) = _replays(s, topics.user_events)
    assert (r.key, r.value, r.partition) == (key, value, part)


def test_a_replayed_record_that_fails_again_is_recognised(ns):
    s, topics = ns
    _fill_dlq(s, topics)
    replay(s, ReplayOptions(topics.user_dlq, ReplayFilter(offsets=(0, 0))))
    (r,) = _replays(s, topics.user_events)
    p = _producer(s)
    try:  # the worker dead-letters the replayed record again (its item is still not indexed)
        _send(p, topics.user_dlq, _letter(topics, topics.user_events, r.partition, r.offset, r.value, r.key), r.key,
              1)
    finally:
        p.close()
    flt = ReplayFilter(partitions=frozenset({1}))
    rep = replay(s, ReplayOptions(topics.user_dlq, flt))
    assert rep.replayed == 0 and rep.stats.verdicts["failed_again"] == 1
    assert replay(s, ReplayOptions(topics.user_dlq, flt, include_replayed=True)).replayed == 1
    assert replay(s, ReplayOptions(topics.user_dlq, flt, include_replayed=True)).replayed == 0
    assert len(_replays(s, topics.user_events)) == 2


def _thaw(s, *args):
    env = {**os.environ, **s.env()}
    return subprocess.run([sys.executable, "-m", "thaw", *args], env=env, capture_output=True, text=True,
                          timeout=120)


def test_the_cli_dry_run_and_stats_print_counts_and_write_nothing(ns):
    s, topics = ns
    _fill_dlq(s, topics)
    dry = _thaw(s, "dlq", "replay", "user", "--dry-run", "--error-class", "UnknownItem")
    assert dry.returncode == 0, dry.stderr
    assert "would replay 3 dead letter(s)" in dry.stdout and "UnknownItem" in dry.stdout
    st = _thaw(s, "dlq", "stats", "user", "--json")
    assert st.returncode == 0, st.stderr
    stats = json.loads(st.stdout)
    assert stats["read"] == 9 and stats["error_classes"] == {"UnknownItem": 7, "SchemaViolation": 1}
    assert stats["verdicts"]["replayable"] == 4 and stats["verdicts"]["invalid"] == 1
    for out in (dry, st):  # no record bytes, keys or error texts
        assert SECRET not in out.stdout + out.stderr
        assert "eyJ" not in out.stdout  # no base64 of a JSON value either
    assert _replays(s, topics.user_events) == [] and _read_all(s, topics.dlq_replays) == []
    real = _thaw(s, "dlq", "replay", "user", "--source-topic", "user.profile", "--json")
    assert real.returncode == 0, real.stderr
    assert json.loads(real.stdout)["replayed"] == 1 and SECRET not in real.stdout
    bad = _thaw(s, "dlq", "replay", "user", "--since", "2026-11-25T10:00:00")
    assert bad.returncode == 2 and "timezone" in bad.stderr


def test_record_caps_of_a_namespace_follow_the_settings(stack_settings):
    assert stack_settings.kafka.record_caps()["user.dlq"] == record_caps()["user.dlq"]
