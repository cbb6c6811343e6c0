import base64
import json
from datetime import UTC, datetime

import pytest
from tenacity import RetryCallState, Retrying

from contracts.events import RetryEnvelope
from streams.cores.retry import (
    FENCE_COMMIT_TRIES,
    SINK_BACKOFF,
    GiveUp,
    Park,
    hold_s,
    retry_due,
    unknown_item,
    unknown_item_delay,
    unwrap,
)

NOW = 1_800_000_000.0
GRACE = 10.0


def _env(attempt, first_seen, retry_at=None, key=b"k", value=b'{"x": 1}', group="g"):
    return Park(attempt, first_seen, retry_at or first_seen).envelope(partition=3, offset=42, key=key, value=value,
                                                                      group=group)


def test_unknown_item_delays_double_from_a_quarter_second_to_five():
    assert [unknown_item_delay(a) for a in range(1, 8)] == [0.25, 0.5, 1.0, 2.0, 4.0, 5.0, 5.0]


def test_first_sight_parks_attempt_one():
    todo = unknown_item(None, NOW, GRACE)
    assert todo == Park(attempt=1, first_seen=NOW, retry_at=NOW + 0.25)


def test_a_returning_event_keeps_its_first_seen_and_backs_off():
    prev = _env(attempt=3, first_seen=NOW - 2.0)
    todo = unknown_item(prev, NOW, GRACE)
    assert todo == Park(attempt=4, first_seen=NOW - 2.0, retry_at=NOW + 2.0)


def test_gives_up_when_the_next_attempt_would_fall_after_the_grace_period():
    # attempt 5 waits 4 s: 7 + 4 - 0 > 10
    prev = _env(attempt=4, first_seen=NOW - 7.0)
    todo = unknown_item(prev, NOW, GRACE)
    assert todo == GiveUp(waited_s=7.0)
    assert todo.reason("ghost") == "item 'ghost' is not indexed after 7.0s of retries"
    # exactly at the grace period is still a retry
    assert isinstance(unknown_item(_env(attempt=4, first_seen=NOW - 6.0), NOW, GRACE), Park)


def test_without_grace_an_event_is_dead_lettered_at_once():
    todo = unknown_item(None, NOW, 0.0)
    assert todo == GiveUp(waited_s=None)
    assert todo.reason("it9") == "item 'it9' is not indexed"


def test_a_whole_retry_history_ends_within_the_grace_period():
    now, prev, attempts = NOW, None, 0
    while isinstance(todo := unknown_item(prev, now, GRACE), Park):
        attempts += 1
        now = todo.retry_at
        prev = todo.envelope(partition=0, offset=1, key=None, value=b"v", group="g")
    assert attempts == 5  # parked after 0, 0.25, 0.75, 1.75, 3.75 s; due at 7.75 s, when +5 s would pass 10
    assert todo.waited_s == pytest.approx(7.75)


def test_envelope_carries_the_source_record_and_unwraps_to_it():
    env = _env(attempt=2, first_seen=NOW, retry_at=NOW + 0.5, key=b"\x00key", value=b'{"a": 1}', group="blue")
    again = RetryEnvelope.model_validate_json(env.to_bytes())
    assert again.attempt == 2 and again.group == "blue"
    assert again.first_seen == datetime.fromtimestamp(NOW, UTC)
    assert again.retry_at == datetime.fromtimestamp(NOW + 0.5, UTC)
    assert unwrap(again) == (3, 42, b"\x00key", b'{"a": 1}')
    keyless = Park(1, NOW, NOW).envelope(partition=0, offset=7, key=None, value=None, group="g")
    assert keyless.key_b64 is None and base64.b64decode(keyless.value_b64) == b""
    assert unwrap(keyless) == (0, 7, None, b"")


def test_retry_due_reads_retry_at_and_zero_when_unreadable():
    env = _env(attempt=1, first_seen=NOW, retry_at=NOW + 1.5)
    assert retry_due(env.to_bytes()) == pytest.approx(NOW + 1.5)
    assert retry_due(b"{broken") == 0.0
    assert retry_due(None) == 0.0
    assert retry_due(json.dumps({"attempt": 1}).encode()) == 0.0
    assert retry_due(b"[1, 2]") == 0.0
    assert retry_due(b'{"retry_at": "yesterday"}') == 0.0
    assert retry_due(b"\xff\xfe") == 0.0


def test_hold_until_the_last_record_is_due_at_most_five_seconds():
    assert hold_s([NOW + 1.0, NOW + 2.5, NOW], NOW) == 2.5
    assert hold_s([NOW + 9.0], NOW) == 5.0
    assert hold_s([NOW + 60.0], NOW) == 0.0  # later than any worker parks: a forged retry_at (test_retry_forged)
    assert hold_s([NOW - 1.0, 0.0], NOW) == 0.0
    assert hold_s([], NOW) == 0.0


def _wait(strategy, attempt):
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempt
    return strategy(state)


def test_sink_backoff_doubles_from_a_fifth_of_a_second_to_ten():
    expected = [0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 10.0, 10.0, 10.0]
    assert [_wait(SINK_BACKOFF, a) for a in range(1, 10)] == pytest.approx(expected)
    assert _wait(SINK_BACKOFF, 100) == 10.0


def test_fence_commits_are_tried_eight_times():
    assert FENCE_COMMIT_TRIES == 8
