"""Forged retry envelopes: whoever can write ``user.events.retry`` controls ``first_seen``, ``attempt`` and
``retry_at``; none of them may keep an event parking forever or hold the retry agent."""

from datetime import UTC, datetime

import pytest

from contracts.events import RetryEnvelope
from streams.cores.retry import (
    RETRY_HOLD_MAX_S,
    UNKNOWN_ITEM_MAX_DELAY_S,
    GiveUp,
    Park,
    hold_s,
    max_unknown_item_attempts,
    retry_due,
    unknown_item,
    unknown_item_attempts,
    unknown_item_delay,
)

NOW = 1_800_000_000.0
GRACE = 30.0


def _forged(attempt: int = 1, first_seen: float = NOW, retry_at: float = NOW) -> RetryEnvelope:
    return RetryEnvelope(attempt=attempt, first_seen=datetime.fromtimestamp(first_seen, UTC),
                         retry_at=datetime.fromtimestamp(retry_at, UTC), source_partition=0, source_offset=7,
                         key_b64=None, value_b64="e30=", group="g", claim=False)


def _history(prev: RetryEnvelope | None, now: float, grace: float, max_steps: int = 10_000) -> tuple[int, object]:
    """Runs an event through the retry topic (each pass at its retry_at) until it is given up; (parks, last)."""
    parks = 0
    while parks < max_steps:
        todo = unknown_item(prev, now, grace)
        if not isinstance(todo, Park):
            return parks, todo
        parks += 1
        now = todo.retry_at
        prev = todo.envelope(partition=0, offset=7, key=None, value=b"{}", group="g")
    return parks, None


def test_a_genuine_history_makes_as_many_parks_as_the_grace_allows():
    assert unknown_item_attempts(10.0) == 5  # 0.25 + 0.5 + 1 + 2 + 4 = 7.75 <= 10 < 12.75
    assert unknown_item_attempts(30.0) == 9  # 7.75 + 4 x 5 = 27.75 <= 30 < 32.75
    assert unknown_item_attempts(0.0) == 0
    assert unknown_item_attempts(0.25) == 1
    for grace in (0.0, 0.3, 10.0, 30.0, 61.0, 3600.0):
        parks, last = _history(None, NOW, grace)
        assert parks == unknown_item_attempts(grace) and isinstance(last, GiveUp) and last.forged is None
        assert max_unknown_item_attempts(grace) > unknown_item_attempts(grace)


def test_a_first_seen_in_the_future_is_clamped_to_now_so_the_grace_still_runs_out():
    # before the clamp, first_seen + grace never passed: the event re-parked forever
    parks, last = _history(_forged(attempt=1, first_seen=NOW + 365 * 24 * 3600.0), NOW, GRACE)
    assert isinstance(last, GiveUp)
    assert parks <= unknown_item_attempts(GRACE) + 1
    first = unknown_item(_forged(first_seen=NOW + 1e6), NOW, GRACE)
    assert isinstance(first, Park) and first.first_seen == NOW  # what the next envelope carries


def test_a_first_seen_far_in_the_past_gives_up_with_a_bounded_wait():
    todo = unknown_item(_forged(attempt=1, first_seen=0.0), NOW, GRACE)
    assert isinstance(todo, GiveUp) and todo.waited_s is not None and todo.waited_s <= 8 * 24 * 3600.0


@pytest.mark.parametrize("attempt", [1_000, 10**6, 10**9])
def test_an_attempt_past_any_genuine_history_is_dead_lettered_as_forged(attempt):
    # before: 2 ** (attempt - 1) overflowed (OverflowError, a poison record) or parked again
    todo = unknown_item(_forged(attempt=attempt, first_seen=NOW), NOW, GRACE)
    assert isinstance(todo, GiveUp) and todo.forged is not None
    reason = todo.reason("it1")
    assert reason.startswith("item 'it1' is not indexed") and "forged retry envelope" in reason
    assert str(attempt) in reason


def test_the_number_of_parks_is_bounded_whatever_the_envelope_says():
    for attempt in (1, 5, max_unknown_item_attempts(GRACE) - 1):
        parks, last = _history(_forged(attempt=attempt, first_seen=NOW + 1e9), NOW, GRACE)
        assert isinstance(last, GiveUp) and parks <= max_unknown_item_attempts(GRACE)


def test_delays_stay_finite_for_any_attempt():
    assert unknown_item_delay(10**9) == UNKNOWN_ITEM_MAX_DELAY_S
    assert unknown_item_delay(0) == unknown_item_delay(1) == 0.25


def test_a_retry_at_far_in_the_future_does_not_hold_the_batch():
    forged = _forged(retry_at=NOW + 10 * 365 * 24 * 3600.0)
    due = retry_due(forged.to_bytes())
    assert hold_s([due], NOW) == 0.0  # before: held RETRY_HOLD_MAX_S for every batch it was in
    assert hold_s([due, NOW + 2.0], NOW) == 2.0  # the genuine records of its batch are still waited for
    # the latest a genuine envelope can be due (its longest delay) still holds, within the cap
    assert hold_s([NOW + UNKNOWN_ITEM_MAX_DELAY_S], NOW) == RETRY_HOLD_MAX_S
