"""The fast user-event decoder against the contract: over the contract tests' cases and fuzzed variants, it accepts
exactly what pydantic's ``UserEvent`` accepts, with equal field values, and rejects the rest with pydantic's own
reason."""

from __future__ import annotations

import json
import random
import re
import sys
from datetime import UTC, datetime
from typing import Any

import msgspec
import pytest
from pydantic import ConfigDict, TypeAdapter

from benchmarks.user_throughput import make_events
from contracts.events import UserEvent, example_events
from streams.cores import user_event_decode as fast
from streams.cores.decode import Rejected, decode_event

MAX = 64 * 1024
BASE: dict[str, Any] = {**example_events()["user.events"], "produced_at": "2026-11-25T10:00:00.250+00:00"}
MISSING = object()

IDS = ["u:1", "", " ", " u:1", "u:1 ", "u:1\n", "\nu:1", "u:\n1",
       "a b", "u:\t1", "u:\x00", "u:\x7f", "u:\x85", "u:\u00a0", "u:\u2028",
       "u:\ufeff", "u:\u200b", "u:\u180e", "u:\u3000x", "x" * 128, "x" * 129, "\u00e9" * 64, "\u00e9" * 65,
       "u:cafe\u0301", "u:caf\u00e9", "\U0001f3b5" * 32, "\U0001f3b5" * 33, "e\u0301" * 60, "\u212b", "u:\u2000",
       "u:\x1c", "\u2000u", 1, 1.5, None, True, [], {}]
TIMES = ["2026-11-25T10:00:00Z", "2026-11-25T10:00:00+00:00", "2026-11-25T10:00:00-05:30", "2026-11-25T10:00:00.1Z",
         "2026-11-25T10:00:00.123456+01:00", "2026-11-25T10:00:00.1234567Z", "2026-11-25T10:00:00.123456789Z",
         "2026-11-25T10:00:00", "2026-11-25T10:00:00.5", "2026-11-25 10:00:00Z", "2026-11-25t10:00:00z",
         "2026-11-25T10:00:00+0100", "2026-11-25T10:00:00+01", "2026-11-25T10:00Z", "2026-11-25", "2026-11-25Z",
         "2026-11-25T10:00:60Z", "2026-11-25T24:00:00Z", "2026-02-29T10:00:00Z", "2028-02-29T10:00:00Z",
         "2026-13-01T10:00:00Z", "0000-01-01T00:00:00Z", "0001-01-01T00:00:00Z", "0001-01-01T00:30:00+01:00",
         "9999-12-31T23:59:59Z", "9999-12-31T23:30:00-01:00", "2026-11-25T10:00:00+23:59", "2026-11-25T10:00:00+24:00",
         "2026-11-25T10:00:00-00:00", "2026-11-25T10:00:00+01:60", "2026-W48-3T10:00:00Z", "20261125T100000Z",
         "2026-11-25T10:00:00,5Z", " 2026-11-25T10:00:00Z", "2026-11-25T10:00:00Z ", "2026-11-25T10:00:00.Z",
         "2026-11-25T10:00:00\u00b2Z", "２０２６-11-25T10:00:00Z", "1700000000", "1700000000.5", 1700000000,
         1700000000.25, -1, 0, True, None, "", "now", [], {}]
VERSIONS = [1, 0, 2, -1, "1", 1.0, 1.5, True, None, "x", 2**70]
ACTIONS = ["play", "impression", "skip", "follow", "dance", "PLAY", " play", "play ", "", 1, None, True]
DWELLS = [0, 1, 95000, 86_400_000, 86_400_001, -1, 1.0, 1.5, "5", " 5", True, None, 2**63, 2**70, -(2**70)]
CONTEXTS: list[Any] = [
    {}, {"surface": "feed"}, {"ab_variant": "gated", "ab_bucket": "17"}, {f"k{i}": "v" * 256 for i in range(32)},
    {f"k{i}": "v" for i in range(33)}, {"k" * 64: "v"}, {"k" * 65: "v"}, {"k": "v" * 257}, {"": "v"}, {" ": "v"},
    {" k ": " v "}, {"k": " "}, {"k": ""}, {"k": "v\u3000"}, {"k\u00a0": "v"}, {"k": 1}, {"k": None}, {"k": ["v"]},
    {"k": {"n": "v"}}, {"k": "\x00"}, {"k": "e\u0301"}, {"k": "v" * 255 + " "}, None, [], "feed", 1,
]
PRODUCED = [MISSING, None, *TIMES[:12]]


def encode(d: dict[str, Any]) -> bytes:
    return json.dumps({k: v for k, v in d.items() if v is not MISSING}, separators=(",", ":")).encode()


def variants() -> list[bytes]:
    """The contract tests' cases, one field at a time, and JSON-level oddities."""
    out = [encode(BASE), encode({k: v for k, v in BASE.items() if k != "produced_at"})]
    for field, values in (("user_id", IDS), ("item_id", IDS), ("ts", TIMES), ("produced_at", PRODUCED),
                          ("schema_version", VERSIONS), ("action", ACTIONS), ("dwell_ms", DWELLS),
                          ("context", CONTEXTS)):
        out += [encode({**BASE, field: v}) for v in values]
        out.append(encode({k: v for k, v in BASE.items() if k != field}))  # missing
    out += [
        encode({**BASE, "extra": 1}), encode({**BASE, "extra": None}), encode({**BASE, "Action": "play"}),
        b'{"user_id":"u:1","user_id":"u:2","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"}',
        b'{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z","context":{"a":"1","a":"2"}}',
        b'{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z","dwell_ms":1e3}',
        b'{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z","dwell_ms":-0}',
        b'{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z","dwell_ms":10.0}',
        b'{"user_id":"u:\\u0031","item_id":"i:\\u00e9","action":"pl\\u0061y","ts":"2026-11-25T10:00:00\\u005a"}',
        b'{"user_id":"u:\\ud83c\\udfb5","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"}',
        b'{"user_id":"u:\\ud800","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"}',
        b'{"user_id":"u:\xff","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"}',
        b'{"user_id":"u:\xc3\xa9","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"}',
        b'\xef\xbb\xbf{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"}',
        b' \n{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"}\n ',
        b'{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"} x',
        b'{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z"}{}',
        b'{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z",}',
        b"{'user_id':'u:1'}", b"", b" ", b"null", b"[]", b"1", b'"x"', b"{}", b"{not json", b"[" * 5000 + b"]" * 5000,
        b'{"user_id":"u:1","item_id":"i:1","action":"play","ts":"2026-11-25T10:00:00Z","context":' + b'{"a":' * 300,
    ]
    return out


def fuzzed(n: int, seed: int = 0) -> list[bytes]:
    """Seeded variants: several fields replaced at once, and byte-level edits of valid records."""
    rng = random.Random(seed)
    pools = {"user_id": IDS, "item_id": IDS, "ts": TIMES, "produced_at": PRODUCED, "schema_version": VERSIONS,
             "action": ACTIONS, "dwell_ms": DWELLS, "context": CONTEXTS, "extra": [MISSING, MISSING, MISSING, 1]}
    out = []
    for _ in range(n):
        d = dict(BASE)
        for field in rng.sample(list(pools), rng.randint(1, 3)):
            d[field] = rng.choice(pools[field])
        raw = bytearray(encode(d))
        if rng.random() < 0.3:  # a byte-level edit: flip, insert or delete
            i = rng.randrange(len(raw))
            op = rng.randrange(3)
            if op == 0:
                raw[i] = rng.randrange(256)
            elif op == 1:
                raw.insert(i, rng.choice(b' "{}:,\\0aZT+-.\x00\xff\xc3'))
            else:
                del raw[i]
        out.append(bytes(raw))
    return out


FIELDS = ("user_id", "item_id", "action", "ts", "schema_version", "dwell_ms", "context", "produced_at")


def assert_same_event(got: fast.DecodedUserEvent, want: UserEvent, raw: bytes) -> None:
    for f in FIELDS:
        a, b = getattr(got, f), getattr(want, f)
        assert a == b and type(a) is type(b), (f, a, b, raw)
        if isinstance(a, datetime):
            assert a.utcoffset() == b.utcoffset() and a.timestamp() == b.timestamp(), (f, a, b, raw)
    assert got.ts_s == want.ts.timestamp()


def check(raw: bytes | None, max_bytes: int = MAX) -> str:
    """Compare the decoder with pydantic on one payload; returns which path decided it."""
    want = decode_event(raw, UserEvent, max_bytes)
    got = fast.decode_user_event(raw, max_bytes)
    quick = fast.fast_user_event(raw) if raw is not None and len(raw) <= max_bytes else None
    if isinstance(want, Rejected):
        assert got == want, raw
        assert quick is None, raw  # the fast path never accepts what pydantic refuses
        return "rejected"
    assert isinstance(got, fast.DecodedUserEvent), (raw, got)
    assert_same_event(got, want, raw or b"")
    if quick is None:
        return "slow"
    assert_same_event(quick, want, raw or b"")
    return "fast"


def test_the_fast_path_is_on_for_this_contract():
    assert fast.contract_fingerprint() == fast.CONTRACT_FINGERPRINT, (
        "contracts.events.UserEvent changed: re-check streams/cores/user_event_decode.py against it (and this "
        "test's cases), then update CONTRACT_FINGERPRINT")
    assert fast.FAST_PATH


def test_contract_cases_decide_as_pydantic():
    paths = [check(raw) for raw in variants()]
    assert paths.count("fast") >= 40 and paths.count("slow") >= 10 and paths.count("rejected") >= 80, (
        {p: paths.count(p) for p in set(paths)})


def test_fuzzed_payloads_decide_as_pydantic():
    paths = [check(raw) for raw in fuzzed(6000)]
    counts = {p: paths.count(p) for p in set(paths)}
    assert counts.get("fast", 0) > 300 and counts.get("slow", 0) > 100 and counts.get("rejected", 0) > 2000, counts


def test_tombstones_and_oversize_records_as_pydantic():
    raw = encode(BASE)
    for payload, cap in ((None, MAX), (raw, len(raw)), (raw, len(raw) - 1), (b"x" * 101, 100)):
        check(payload, cap)
    assert fast.decode_user_event(raw, len(raw) - 1) == Rejected(
        "Oversize", f"record is {len(raw)} bytes, over the {len(raw) - 1}-byte cap")


def test_what_producers_write_takes_the_fast_path():
    """The benchmark's records (datetime.isoformat() with +00:00) and the replayer's (Z) are all decided without
    pydantic."""
    records, _ = make_events(500, 50, [f"ml:i:{k}" for k in range(20)], seed=3)
    assert all(check(v) == "fast" for _, v in records)
    now = datetime.now(UTC)
    for ts in (now.isoformat(), now.isoformat().replace("+00:00", "Z"), now.replace(microsecond=0).isoformat()):
        assert check(encode({**BASE, "ts": ts, "produced_at": ts})) == "fast"


def test_pydantic_strips_nothing_that_python_keeps():
    """The fast path takes a string as is only when ``s == s.strip()``: that needs Python's whitespace to cover
    every character pydantic's ``str_strip_whitespace`` removes."""
    strip = TypeAdapter(str, config=ConfigDict(str_strip_whitespace=True))
    for cp in range(sys.maxunicode + 1):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        s = chr(cp) + "x"
        if strip.validate_python(s) != s:
            assert s.strip() != s, hex(cp)


def _lax(field: str, kind: Any) -> msgspec.json.Decoder:
    """The fast path's decoder with one field's rules dropped (its bare JSON type instead)."""
    fields = []
    for f in msgspec.structs.fields(fast._Wire):
        t = kind if f.name == field else f.type
        default = f.default if f.default_factory is msgspec.NODEFAULT else f.default_factory()
        fields.append((f.name, t) if default is msgspec.NODEFAULT else (f.name, t, default))
    lax = msgspec.defstruct("LaxWire", fields, forbid_unknown_fields=True)
    return msgspec.json.Decoder(lax)


@pytest.mark.parametrize("lax", ["dwell_ms", "action", "ts", "ascii_ids", "ids", "context"])
def test_the_differential_check_notices_a_lax_fast_path(monkeypatch, lax):
    """The comparison above can fail: a fast path that drops one of its checks accepts what pydantic refuses."""
    if lax == "dwell_ms":
        monkeypatch.setattr(fast, "_DECODER", _lax("dwell_ms", int | None))
    elif lax == "action":
        monkeypatch.setattr(fast, "_DECODER", _lax("action", str))
    elif lax == "ts":
        monkeypatch.setattr(fast, "_RFC3339", re.compile(r".*"))
    elif lax == "ascii_ids":
        monkeypatch.setattr(fast, "MAX_ID_CHARS", 10**6)
    elif lax == "ids":
        monkeypatch.setattr(fast, "_check_id", lambda v: v)
    else:
        monkeypatch.setattr(fast, "MAX_CONTEXT_VALUE_CHARS", 10**6)
    with pytest.raises(AssertionError):
        for raw in variants():
            check(raw)
