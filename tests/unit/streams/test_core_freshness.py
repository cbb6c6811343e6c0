from datetime import UTC, datetime

from streams.cores.freshness import content_start, freshness_s

PRODUCED = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)


def test_content_starts_at_produced_at_else_the_record_timestamp():
    assert content_start(PRODUCED, 1_000) == PRODUCED.timestamp()
    assert content_start(None, 1_795_600_800_500) == 1_795_600_800.5
    assert content_start(None, None) is None
    assert content_start(None, 0) is None  # no timestamp on the record


def test_freshness_is_never_negative():
    assert freshness_s(105.5, 100.0) == 5.5
    assert freshness_s(99.0, 100.0) == 0.0  # producer clock ahead
