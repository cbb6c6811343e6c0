"""The pure rules of the DLQ tooling (streams.cores.dlq): fitting a dead letter under a cap, reading dead letters
back, the replay filters, the ledger and the verdicts."""

from __future__ import annotations

import base64
import hashlib
from datetime import UTC, datetime, timedelta

import pytest
from kafka.partitioner import murmur2

from contracts.events import DeadLetter
from streams.cores.dlq import (
    REPLAY_HEADER,
    TRUNCATED_MARK,
    DlqStats,
    Ledger,
    LedgerEntry,
    Position,
    ReplayFilter,
    ReplayRules,
    Verdict,
    fit_dead_letter,
    fits,
    is_truncated,
    judge,
    label,
    parse_ledger_entry,
    parse_offset_range,
    parse_time,
    read_dead_letter,
    record_bytes,
    settle_intents,
    target_partition,
)

T0 = datetime(2026, 11, 25, 10, 0, tzinfo=UTC)
DLQ = "p.user.dlq"
EVENTS = "p.user.events"
RULES = ReplayRules(frozenset({EVENTS, "p.user.profile"}), {EVENTS: 128 * 1024, "p.user.profile": 160 * 1024})


def _dl(value: bytes = b'{"user_id": "u1"}', *, key: bytes | None = b"u1", error_class: str = "UnknownItem",
        source: str = EVENTS, partition: int = 1, offset: int = 10, at: datetime = T0,
        error: str = "why") -> DeadLetter:
    return DeadLetter(source_topic=source, partition=partition, offset=offset,
                      key_b64=base64.b64encode(key).decode() if key is not None else None,
                      value_b64=base64.b64encode(value).decode(), error_class=error_class, error=error, failed_at=at)


# --------------------------------------------------------------------------------------------------- fitting
def test_a_dead_letter_that_fits_is_left_as_it_is():
    dl = _dl()
    assert fit_dead_letter(dl, b"u1", 64 * 1024) == (b"u1", dl)


@pytest.mark.parametrize("cap", [4096, 64 * 1024, 256 * 1024])
def test_a_dead_letter_over_its_dlq_cap_is_cut_to_fit_with_a_marker(cap):
    value = bytes(range(256)) * 2000  # 512,000 bytes: 683 KB as base64
    dl = _dl(value, error="pymilvus said no")
    assert not fits(b"u1", dl.to_bytes(), cap)  # delivered as it is, the broker refuses it
    key, cut = fit_dead_letter(dl, b"u1", cap)
    assert fits(key, cut.to_bytes(), cap)
    kept = base64.b64decode(cut.value_b64)
    assert value.startswith(kept) and 0 < len(kept) < len(value)
    assert is_truncated(cut) and not is_truncated(dl)
    assert cut.error.startswith(TRUNCATED_MARK) and cut.error.endswith("pymilvus said no")
    assert f"of {len(value)} bytes" in cut.error and hashlib.sha256(value).hexdigest() in cut.error
    assert (cut.source_topic, cut.partition, cut.offset, cut.error_class) == (dl.source_topic, 1, 10, dl.error_class)
    DeadLetter.model_validate_json(cut.to_bytes())  # still a valid dead letter


def test_a_huge_key_is_cut_too():
    big_key = b"k" * 300_000
    dl = _dl(b"v" * 10, key=big_key)
    key, cut = fit_dead_letter(dl, big_key, 64 * 1024)
    assert key is not None and len(key) == 1024 and fits(key, cut.to_bytes(), 64 * 1024)
    assert "key 300000 bytes" in cut.error


def test_a_long_error_keeps_the_marker_within_the_contracts_2000_characters():
    dl = _dl(b"v" * 100_000, error="\x01" * 2000)  # 6 bytes each as JSON
    _, cut = fit_dead_letter(dl, None, 16 * 1024)
    assert len(cut.error) == 2000 and is_truncated(cut)
    _, tiny = fit_dead_letter(dl, None, 2048)  # smaller than the error itself: the note is what is left
    assert fits(None, tiny.to_bytes(), 2048) and is_truncated(tiny) and tiny.value_b64 == ""


# --------------------------------------------------------------------------------------------------- reading
@pytest.mark.parametrize("raw", [None, b"", b"{broken", b"[1]", b'{"source_topic": "x"}', b"\xff\xfe" * 10])
def test_what_is_not_a_dead_letter_is_reported_without_its_bytes(raw):
    why = read_dead_letter(raw, 1024)
    assert isinstance(why, str) and "broken" not in why and "source_topic" not in why


def test_the_dead_letter_of_a_keyless_record_reads_back():
    from streams.cores.decode import Rejected, dead_letter

    raw = dead_letter(topic=EVENTS, partition=0, offset=1, key=None, value=b"{}", why=Rejected("X", "y")).to_bytes()
    assert b"key_b64" not in raw  # to_bytes leaves the None out, and DeadLetter has no default for it
    dl = read_dead_letter(raw, 10_000)
    assert isinstance(dl, DeadLetter) and dl.key_b64 is None


def test_a_record_over_the_read_cap_is_not_decoded():
    assert "over the 100-byte read cap" in read_dead_letter(_dl(b"x" * 200).to_bytes(), 100)
    assert isinstance(read_dead_letter(_dl().to_bytes(), 10_000), DeadLetter)


def test_labels_are_printable_and_bounded():
    assert label("UnknownItem") == "UnknownItem"
    assert label("\x1b[31mred\x07") == "?[31mred?"
    assert label("x" * 100, 10) == "x" * 10 + "..."


# --------------------------------------------------------------------------------------------------- filters
def test_offset_ranges():
    assert parse_offset_range("3-7") == (3, 7)
    assert parse_offset_range("3-") == (3, None)
    assert parse_offset_range("5") == (5, 5)
    for bad in ("", "-3", "a-b", "7-3", "3-4-5", "1.5"):
        with pytest.raises(ValueError):
            parse_offset_range(bad)


def test_times_need_a_timezone():
    assert parse_time("2026-11-25T10:00:00Z") == T0
    assert parse_time("2026-11-25T11:00:00+01:00") == T0
    with pytest.raises(ValueError, match="timezone"):
        parse_time("2026-11-25T10:00:00")
    with pytest.raises(ValueError, match="ISO-8601"):
        parse_time("yesterday")


def test_filters_take_what_they_name():
    dl = _dl(at=T0)
    assert ReplayFilter().takes(dl)
    assert ReplayFilter(error_classes=frozenset({"UnknownItem", "X"})).takes(dl)
    assert not ReplayFilter(error_classes=frozenset({"SchemaViolation"})).takes(dl)
    assert not ReplayFilter(source_topic="p.user.profile").takes(dl)
    assert ReplayFilter(since=T0, until=T0).takes(dl)
    assert not ReplayFilter(since=T0 + timedelta(seconds=1)).takes(dl)
    assert not ReplayFilter(until=T0 - timedelta(seconds=1)).takes(dl)
    f = ReplayFilter(partitions=frozenset({2}), offsets=(5, 9))
    assert f.takes_position(2, 5) and f.takes_position(2, 9)
    assert not f.takes_position(2, 10) and not f.takes_position(1, 5)
    assert ReplayFilter(offsets=(5, None)).takes_position(0, 10**9)


# ---------------------------------------------------------------------------------------------------- ledger
def _entry(dlq_off: int, state: str = "done", source_off: int = 10, target_off: int = 500) -> LedgerEntry:
    return LedgerEntry(Position(DLQ, 0, dlq_off), Position(EVENTS, 1, source_off), state,
                       Position(EVENTS, 1, target_off), "run1", T0.isoformat())


def test_ledger_entries_round_trip_and_junk_is_ignored():
    e = _entry(3)
    assert parse_ledger_entry(e.key(), e.value()) == e
    for key, value in ((None, e.value()), (e.key(), None), (b"x", e.value()), (e.key(), b"{}"),
                       (e.key(), b'{"state": "gone", "source": "a/1/2", "target": "a/1/2"}'), (e.key(), b"\xff")):
        assert parse_ledger_entry(key, value) is None


def test_a_done_entry_stays_done():
    led = Ledger.of([_entry(3, "intent"), _entry(3, "done"), _entry(3, "intent"), _entry(4, "intent"), None])
    assert set(led.intents()) == {Position(DLQ, 0, 4)}
    v = led.view()
    assert v.done == {Position(DLQ, 0, 3)}
    assert v.sources == {Position(EVENTS, 1, 10)} and v.targets == {Position(EVENTS, 1, 500)}


def test_intents_are_settled_by_what_the_target_partition_holds():
    a, b, c = _entry(1, "intent", target_off=100), _entry(2, "intent", target_off=100), _entry(3, "intent")
    c = LedgerEntry(c.dlq, c.source, "intent", Position("p.user.profile", 0, 7))
    intents = {e.dlq: e for e in (a, b, c)}
    done, unpublished, undecided = settle_intents(intents, {a.dlq: 103}, read_to_end={(EVENTS, 1)})
    assert done == [a.done_at(103)] and done[0].state == "done" and done[0].target.offset == 103
    assert unpublished == {b.dlq}  # its partition was read to the end without it
    assert undecided == {c.dlq}  # its partition was not read to the end


# -------------------------------------------------------------------------------------------------- verdicts
def _judge(dl, pos=Position(DLQ, 0, 1), flt=ReplayFilter(), rules=RULES, ledger=None, **kw):
    return judge(pos, dl, flt, rules, (ledger or Ledger()).view(), **kw)


def test_a_valid_dead_letter_of_an_input_topic_is_replayed_with_its_original_bytes():
    verdict, cand = _judge(_dl(b'{"a": 1}', key=b"u9"))
    assert verdict is Verdict.REPLAY and cand is not None
    assert (cand.key, cand.value) == (b"u9", b'{"a": 1}')
    assert cand.headers() == [(REPLAY_HEADER, b"p.user.dlq/0/1")]
    keyless = _judge(_dl(key=None))[1]
    assert keyless is not None and keyless.key is None


def test_verdicts_of_what_is_not_replayed():
    led = Ledger.of([_entry(1), _entry(7, source_off=99, target_off=500)])
    assert _judge("not a dead letter")[0] is Verdict.INVALID
    assert _judge(_dl(), flt=ReplayFilter(error_classes=frozenset({"X"})))[0] is Verdict.FILTERED
    assert _judge(_dl(offset=55), pos=Position(DLQ, 0, 1), ledger=led)[0] is Verdict.ALREADY_REPLAYED
    # another dead letter of a source record that was replayed already (a repeated dead letter, another group's)
    assert _judge(_dl(offset=10), pos=Position(DLQ, 0, 2), ledger=led)[0] is Verdict.DUPLICATE
    assert _judge(_dl(offset=11), pos=Position(DLQ, 0, 2), seen_sources={Position(EVENTS, 1, 11)})[0] \
        is Verdict.DUPLICATE
    assert _judge(_dl(), undecided={Position(DLQ, 0, 1)})[0] is Verdict.UNDECIDED
    assert _judge(_dl(source="p.user.events.retry"))[0] is Verdict.NOT_REPLAYABLE
    assert _judge(_dl(source="other-tenant.user.events"))[0] is Verdict.NOT_REPLAYABLE
    _, cut = fit_dead_letter(_dl(b"v" * 100_000), None, 8192)
    assert _judge(cut)[0] is Verdict.TRUNCATED
    bad_b64 = _dl().model_copy(update={"value_b64": "!!not base64!!"})
    assert _judge(bad_b64)[0] is Verdict.INVALID
    assert _judge(_dl(b"v" * 200_000))[0] is Verdict.TOO_LARGE
    small = ReplayRules(RULES.sources, {EVENTS: 128 * 1024, "elsewhere": 1024}, to_topic="elsewhere")
    assert _judge(_dl(b"v" * 2000), rules=small)[0] is Verdict.TOO_LARGE


def test_a_replayed_record_that_failed_again_is_replayed_only_when_asked():
    led = Ledger.of([_entry(1, source_off=10, target_off=500)])
    again = _dl(offset=500)  # the dead letter of the replay (user.events/1/500)
    assert _judge(again, pos=Position(DLQ, 0, 9), ledger=led)[0] is Verdict.FAILED_AGAIN
    with_it = ReplayRules(RULES.sources, RULES.target_caps, include_replayed=True)
    assert _judge(again, pos=Position(DLQ, 0, 9), ledger=led, rules=with_it)[0] is Verdict.REPLAY


def test_a_replay_goes_to_the_partition_it_came_from_or_by_key():
    cand = _judge(_dl(partition=3, key=b"u1"))[1]
    assert cand is not None
    assert target_partition(cand, EVENTS, 4) == 3
    by_key = murmur2(b"u1") & 0x7FFFFFFF  # what the Java client and kafka-python's default partitioner do
    assert target_partition(cand, "elsewhere", 4) == by_key % 4
    assert target_partition(cand, EVENTS, 2) == by_key % 2  # its partition is not there any more
    keyless = _judge(_dl(partition=5, key=None))[1]
    assert keyless is not None and target_partition(keyless, EVENTS, 4) == 1


def test_record_bytes_count_key_value_and_headers():
    base = record_bytes(None, None)
    assert record_bytes(b"k" * 10, b"v" * 20, [("h", b"x" * 5)]) >= base + 36
    assert fits(None, b"v" * 100, base + 100) and not fits(None, b"v" * 101, base + 100)


def test_stats_count_by_class_source_and_time():
    st = DlqStats()
    st.add(_dl(at=T0), Verdict.REPLAY)
    st.add(_dl(error_class="SchemaViolation", at=T0 + timedelta(hours=1)), Verdict.FILTERED)
    st.add("not a dead letter", Verdict.INVALID)
    st.replayed(_dl())
    d = st.to_dict()
    assert d["read"] == 3 and d["verdicts"] == {"filtered": 1, "invalid": 1, "replay": 1}
    assert d["error_classes"] == {"UnknownItem": 1, "SchemaViolation": 1}
    assert d["source_topics"] == {EVENTS: 2}
    assert d["oldest_failed_at"] == T0.isoformat() and d["newest_failed_at"] == (T0 + timedelta(hours=1)).isoformat()
    assert dict(st.replayed_by_error_class) == {"UnknownItem": 1}
