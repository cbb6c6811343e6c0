import base64
import json

import pytest
from pydantic import ValidationError

from contracts.events import (
    MAX_INLINE_IMAGE_BYTES,
    ContentNew,
    UserEvent,
    UserProfile,
    example_events,
)


@pytest.mark.parametrize(
    "topic,model", [("content.new", ContentNew), ("user.events", UserEvent), ("user.profile", UserProfile)]
)
def test_examples_validate_and_roundtrip(topic, model):
    ex = example_events()[topic]
    ev = model.model_validate_json(json.dumps(ex))
    again = model.model_validate_json(ev.to_bytes())
    assert again == ev
    assert ev.schema_version == 1


def test_every_content_kind_accepted():
    base = example_events()["content.new"]
    for kind in ["track", "comment", "moment", "dynamic", "fan_group"]:
        ev = ContentNew.model_validate({**base, "kind": kind})
        assert ev.kind.value == kind


def test_naive_datetime_rejected():
    ex = {**example_events()["user.events"], "ts": "2026-11-25T10:00:00"}
    with pytest.raises(ValidationError, match="timezone"):
        UserEvent.model_validate(ex)


def test_unknown_fields_and_versions_rejected():
    ex = example_events()["user.events"]
    with pytest.raises(ValidationError):
        UserEvent.model_validate({**ex, "surprise": 1})
    with pytest.raises(ValidationError, match="schema_version"):
        UserEvent.model_validate({**ex, "schema_version": 99})


def test_media_needs_exactly_one_source_and_is_capped():
    base = {k: v for k, v in example_events()["content.new"].items() if k != "audio"}
    with pytest.raises(ValidationError, match="exactly one"):
        ContentNew.model_validate({**base, "image": {}})
    with pytest.raises(ValidationError, match="exactly one"):
        ContentNew.model_validate({**base, "image": {"uri": "file:///x.png", "data_b64": "AAAA"}})
    big = base64.b64encode(b"\0" * (MAX_INLINE_IMAGE_BYTES + 3)).decode()
    with pytest.raises(ValidationError, match="exceeds"):
        ContentNew.model_validate({**base, "image": {"data_b64": big}})
    ok = base64.b64encode(b"\0" * 100).decode()
    ev = ContentNew.model_validate({**base, "image": {"data_b64": ok}})
    assert ev.image is not None and ev.image.inline_size() == 100


def test_empty_content_rejected():
    base = example_events()["content.new"]
    with pytest.raises(ValidationError, match="at least one"):
        ContentNew.model_validate({**base, "text": "", "tags": [], "audio": None})


def test_ids_without_whitespace():
    ex = example_events()["user.events"]
    with pytest.raises(ValidationError):
        UserEvent.model_validate({**ex, "user_id": "a b"})
    with pytest.raises(ValidationError):
        UserEvent.model_validate({**ex, "user_id": ""})


def test_ids_are_nfc_normalised_and_bounded_in_utf8_bytes():
    base = example_events()["user.events"]
    nfd, nfc = "u:cafe\u0301", "u:caf\u00e9"
    assert UserEvent.model_validate({**base, "user_id": nfd}).user_id == nfc  # one user, however it was typed
    assert UserEvent.model_validate({**base, "item_id": "x" * 128}).item_id == "x" * 128
    # 64 characters, 128 bytes: fits Milvus's VARCHAR(128); one more 2-byte character does not
    assert len(UserEvent.model_validate({**base, "item_id": "\u00e9" * 64}).item_id) == 64
    with pytest.raises(ValidationError, match="UTF-8 bytes"):
        UserEvent.model_validate({**base, "item_id": "\u00e9" * 65})
    with pytest.raises(ValidationError, match="UTF-8 bytes"):
        UserEvent.model_validate({**base, "user_id": "\U0001f3b5" * 33})  # 33 characters, 132 bytes


def test_context_is_bounded_in_keys_and_characters():
    base = example_events()["user.events"]
    ok = {f"k{i}": "v" * 256 for i in range(32)}
    assert len(UserEvent.model_validate({**base, "context": ok}).context) == 32
    for bad in ({f"k{i}": "v" for i in range(33)}, {"k" * 65: "v"}, {"k": "v" * 257}, {"": "v"}):
        with pytest.raises(ValidationError):
            UserEvent.model_validate({**base, "context": bad})


def test_dead_letters_and_envelopes_of_keyless_records_read_back():
    from contracts.events import DeadLetter, RetryEnvelope

    t = "2026-11-25T10:00:00Z"
    dl = DeadLetter(source_topic="user.events", partition=0, offset=1, key_b64=None, value_b64="e30=",
                    error_class="SchemaViolation", error="x", failed_at=t)
    assert DeadLetter.model_validate_json(dl.to_bytes()).key_b64 is None  # to_bytes drops the None key
    env = RetryEnvelope(attempt=1, first_seen=t, retry_at=t, source_partition=0, source_offset=1, key_b64=None,
                        value_b64="e30=")
    assert RetryEnvelope.model_validate_json(env.to_bytes()).key_b64 is None
