"""benchmarks.user_throughput from a plain clone: its defaults (the issue's size, a catalogue with no optional
dataset), and the Redis cost window it reports. No stack needed."""

from __future__ import annotations

import pytest

from benchmarks.user_throughput import parser, redis_window
from contracts.events import ContentNew


def test_the_items_come_from_a_plain_clone_unless_asked(monkeypatch):
    """The default catalogue needs no optional dataset; Last.fm is taken only when asked for (and then needs the
    datasets folder)."""
    from benchmarks._harness import text_items
    from workloads.datasets import DatasetsDirNotSetError

    monkeypatch.delenv("THAW_DATASETS_DIR", raising=False)
    args = parser().parse_args([])
    assert (args.catalogue, args.events, args.users) == ("ml-100k", 100_000, 5_000)  # the size
    items = text_items(5, args.catalogue, seed=args.seed)
    for it in items:
        ContentNew.model_validate({**it, "created_at": "2026-11-25T10:00:00Z"})
    assert parser().parse_args(["--catalogue", "lastfm"]).catalogue == "lastfm"
    with pytest.raises(DatasetsDirNotSetError):
        text_items(3, "lastfm")


def test_the_redis_window_per_event():
    before = {"cpu_s": 10.0, "evalsha_calls": 2, "evalsha_usec": 1000, "mget_calls": 5, "mget_usec": 200,
              "zadd_calls": 10, "zadd_usec": 50, "get_calls": 0, "get_usec": 0, "set_calls": 0, "set_usec": 0}
    after = {**before, "cpu_s": 12.0, "evalsha_calls": 12, "evalsha_usec": 201_000, "mget_usec": 20_200,
             "zadd_calls": 2010}
    w = redis_window(before, after, seconds=4.0, events=10_000)
    assert w["cpu_cores"] == 0.5 and w["commit_scripts"] == 10 and w["commit_script_ms_mean"] == 20.0
    assert w["commit_script_us_per_event"] == 20.0 and w["mget_us_per_event"] == 2.0
    assert w["zadd_calls_per_event"] == 0.2 and w["cpu_us_per_event"] == 200.0
