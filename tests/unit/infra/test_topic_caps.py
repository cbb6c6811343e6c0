"""Per-topic record caps: each input topic admits the largest event the contract allows, the retry topic the
envelope of its largest record, each DLQ the dead letter of its sources' largest record."""

from __future__ import annotations

import base64
import json
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

import contracts.events as ev
from contracts.events import ContentNew, DeadLetter, UserEvent, UserProfile
from contracts.topics import (
    INPUT_MAX_MESSAGE_BYTES,
    TOPIC_NAMES,
    Topics,
    TopicSpec,
    base64_bytes,
    least_caps,
    record_caps,
    undersized_caps,
)
from infra.settings import KafkaSettings, load_settings
from infra.topics import cap_changes, topic_configs, topic_specs
from streams.cores.dlq import record_bytes
from streams.cores.retry import Park

ASTRAL = "\U0001f600"  # 4 bytes of UTF-8, 12 bytes as json.dumps escapes it (two \uXXXX)
TWO_BYTE = "\u00e9"  # 2 bytes of UTF-8, 6 escaped: the most escaping per byte of a byte-capped id
TS = "2026-11-25T10:00:00.123456+14:00"
ID = TWO_BYTE * (ev.MAX_ID_CHARS // 2)  # the contract caps ids in UTF-8 bytes


def _largest_user_event() -> dict:
    ctx = {f"{i:02d}" + ASTRAL * (ev.MAX_CONTEXT_KEY_CHARS - 2): ASTRAL * ev.MAX_CONTEXT_VALUE_CHARS
           for i in range(ev.MAX_CONTEXT_KEYS)}
    return {"schema_version": 1, "user_id": ID, "item_id": ID, "action": max((a.value for a in ev.Action), key=len),
            "ts": TS, "dwell_ms": 24 * 3600 * 1000, "context": ctx, "produced_at": TS}


def _largest_profile() -> dict:
    return {"schema_version": 1, "user_id": ID, "gender": "unknown", "age_bucket": "unknown", "region": ASTRAL * 64,
            "genres": [ASTRAL * ev.MAX_TAG_CHARS] * ev.MAX_TAGS, "artists": [ASTRAL * 128] * ev.MAX_TAGS,
            "ts": TS, "produced_at": TS}


def _largest_content() -> dict:
    image = base64.b64encode(b"\xff" * ev.MAX_INLINE_IMAGE_BYTES).decode()
    audio = base64.b64encode(b"\xff" * ev.MAX_INLINE_AUDIO_BYTES).decode()
    return {"schema_version": 1, "item_id": ID, "kind": "fan_group", "creator_id": ID, "created_at": TS,
            "text": ASTRAL * ev.MAX_TEXT_CHARS, "tags": [ASTRAL * ev.MAX_TAG_CHARS] * ev.MAX_TAGS,
            "image": {"data_b64": image, "mime": ASTRAL * 64},
            "audio": {"data_b64": audio, "mime": ASTRAL * 64, "duration_s": ev.MAX_AUDIO_SECONDS},
            "parent_id": ID, "produced_at": TS}


def _wire_sizes(event: dict, model: type) -> int:
    """The largest of the encodings producers use: json.dumps (ASCII escapes), json.dumps(ensure_ascii=False),
    the contract's own to_bytes."""
    parsed = model.model_validate_json(json.dumps(event))  # a valid event
    return max(len(json.dumps(event).encode()), len(json.dumps(event, ensure_ascii=False).encode()),
               len(parsed.to_bytes()))


@pytest.mark.parametrize(("topic", "build", "model"), [
    ("user.events", _largest_user_event, UserEvent),
    ("user.profile", _largest_profile, UserProfile),
    ("content.new", _largest_content, ContentNew),
])
def test_an_input_topic_admits_the_largest_valid_event(topic, build, model):
    event = build()
    assert set(event) == set(model.model_fields), "a field the worst case does not fill"
    size = _wire_sizes(event, model)
    key = event.get("user_id", event.get("item_id")).encode()
    cap = INPUT_MAX_MESSAGE_BYTES[topic]
    assert record_bytes(key, b"x" * size) <= cap
    if topic != "content.new":  # the user topics stay tight: within 1.3x their largest event
        assert cap <= 1.3 * size, (topic, size, cap)


def test_an_event_past_a_contract_cap_is_not_valid_so_the_caps_are_the_worst_case():
    too_long = _largest_user_event()
    too_long["context"]["extra"] = "x"  # a 33rd entry
    with pytest.raises(ValidationError):
        UserEvent.model_validate_json(json.dumps(too_long))
    profile = _largest_profile()
    profile["genres"] = profile["genres"] + ["one more"]
    with pytest.raises(ValidationError):
        UserProfile.model_validate_json(json.dumps(profile))


def test_the_retry_topic_admits_the_envelope_of_the_largest_user_events_record():
    caps = record_caps()
    room = caps["user.events"] - record_bytes(None, b"")  # key + value of the largest record user.events admits
    key, value = b"k" * 128, b"v" * (room - 128)
    now = datetime(2026, 11, 25, tzinfo=UTC).timestamp()
    env = Park(attempt=10**6, first_seen=now, retry_at=now).envelope(
        partition=2**31 - 1, offset=2**63 - 1, key=key, value=value, group="g" * 249, claim=True)
    assert record_bytes(key, env.to_bytes()) <= caps["user.events.retry"]


@pytest.mark.parametrize(("dlq", "sources"), [("user.dlq", ("user.events", "user.profile", "user.events.retry")),
                                              ("content.dlq", ("content.new",))])
def test_a_dlq_admits_the_dead_letter_of_its_sources_largest_record(dlq, sources):
    caps = record_caps()
    for src in sources:
        room = caps[src] - record_bytes(None, b"")
        key, value = b"k" * 512, b"v" * (room - 512)
        dl = DeadLetter(source_topic="t" * 249, partition=2**31 - 1, offset=2**63 - 1,
                        key_b64=base64.b64encode(key).decode(), value_b64=base64.b64encode(value).decode(),
                        error_class="pymilvus.MilvusException", error="\x01" * 2000,  # 6 bytes each as JSON
                        failed_at=datetime(2026, 11, 25, tzinfo=UTC))
        assert record_bytes(key, dl.to_bytes()) <= caps[dlq], src


def test_the_retry_topic_and_the_dlqs_grow_with_their_sources():
    base = record_caps()
    big = record_caps({"user.events": 1024 * 1024})
    assert big["user.events"] == 1024 * 1024
    assert big["user.events.retry"] >= base64_bytes(1024 * 1024) > base["user.events.retry"]
    assert big["user.dlq"] >= base64_bytes(big["user.events.retry"]) > base["user.dlq"]
    assert big["content.dlq"] == base["content.dlq"]
    assert record_caps({"user.dlq": 4096})["user.dlq"] == 4096  # an explicit cap wins
    with pytest.raises(ValueError, match="no such topic"):
        record_caps({"user.event": 1})


def test_specs_carry_the_caps_in_the_declared_order():
    t = Topics.for_prefix("p.")
    specs = t.specs()
    assert [s.name for s in specs] == [f"p.{n}" for n in TOPIC_NAMES] == t.all()
    assert {s.name: s.max_message_bytes for s in specs} == {f"p.{n}": c for n, c in record_caps().items()}
    assert [s.name for s in specs if s.dlq] == ["p.content.dlq", "p.user.dlq"]
    ledger = specs[-1]
    assert ledger.compact and topic_configs(ledger)["cleanup.policy"] == "compact,delete"
    assert topic_configs(specs[1]) == {"max.message.bytes": str(128 * 1024)}


def test_settings_override_a_topic_cap_and_refuse_unknown_names(monkeypatch):
    monkeypatch.setenv("THAW_KAFKA__TOPIC_MAX_MESSAGE_BYTES", '{"user.events": 262144}')
    s = load_settings()
    specs = {sp.name: sp.max_message_bytes for sp in topic_specs(s.kafka, Topics.for_prefix(""))}
    assert specs["user.events"] == 262144 and specs["user.events.retry"] > record_caps()["user.events.retry"]
    assert specs["content.new"] == s.kafka.max_message_bytes and specs["content.dlq"] == s.kafka.dlq_max_message_bytes
    for bad, match in (({"user.event": 4096}, "no topic"), ({"content.new": 4096}, "MAX_MESSAGE_BYTES"),
                       ({"user.events": 10}, "1024")):
        with pytest.raises(ValidationError, match=match):
            KafkaSettings(topic_max_message_bytes=bad)


def test_cap_changes_name_the_topics_whose_cap_differs():
    specs = [TopicSpec("a", "k", "", max_message_bytes=100), TopicSpec("b", "k", "", max_message_bytes=200),
             TopicSpec("c", "k", "", max_message_bytes=300)]
    assert cap_changes({"a": 100, "b": 16 << 20, "c": 1}, specs) == {"b": (16 << 20, 200), "c": (1, 300)}
    assert cap_changes({"b": None}, specs) == {}  # not reported (a topic created a moment ago): left alone
    assert cap_changes({}, specs) == {}


@pytest.mark.parametrize(("caps", "short"), [
    ({"user.events.retry": 128 * 1024}, "user.events.retry"),  # under 4/3 of user.events' 128 KiB
    ({"user.events": 256 * 1024, "user.events.retry": 176 * 1024}, "user.events.retry"),  # the source grew alone
    ({"user.dlq": 4096}, "user.dlq"),
    ({"user.profile": 512 * 1024, "user.dlq": 256 * 1024}, "user.dlq"),  # a larger source than the DLQ was cut for
])
def test_settings_refuse_a_retry_topic_or_dlq_that_cannot_hold_its_sources_largest_record(caps, short):
    with pytest.raises(ValidationError, match=f"{short} .* cannot hold"):
        KafkaSettings(topic_max_message_bytes=caps)


def test_settings_refuse_a_content_dlq_smaller_than_its_largest_dead_letter():
    with pytest.raises(ValidationError, match="content.dlq .* dead letter"):
        KafkaSettings(max_message_bytes=20 * 1024 * 1024)  # content.new grown past what the 24 MiB DLQ holds
    with pytest.raises(ValidationError, match="content.dlq"):
        KafkaSettings(dlq_max_message_bytes=16 * 1024 * 1024)
    ok = KafkaSettings(max_message_bytes=20 * 1024 * 1024, dlq_max_message_bytes=28 * 1024 * 1024)
    assert ok.record_caps()["content.dlq"] == 28 * 1024 * 1024


def test_the_least_caps_are_what_the_largest_records_wrapped_take():
    base = record_caps()
    assert undersized_caps(base) == {}  # the contract's caps hold what they carry, with a margin
    least = least_caps(base)
    assert all(least[n] <= base[n] < least[n] + 16 * 1024 for n in least)  # the margin is the rounding
    # the least caps themselves are accepted, one byte less is not
    exact = KafkaSettings(topic_max_message_bytes={"user.events.retry": least["user.events.retry"]})
    assert exact.record_caps()["user.events.retry"] == least["user.events.retry"]
    with pytest.raises(ValidationError, match="user.events.retry"):
        KafkaSettings(topic_max_message_bytes={"user.events.retry": least["user.events.retry"] - 1})
    # grown sources grow the derived caps with them: still accepted
    assert KafkaSettings(topic_max_message_bytes={"user.events": 1024 * 1024}).record_caps()["user.dlq"] > base[
        "user.dlq"]
