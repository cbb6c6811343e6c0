"""The user commit's encoding (named sections) and the key builder, without Redis: what ``user_commit.lua`` is sent
decodes back to the commit, section by section; the key strings are a storage format and stay as they are."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pytest
from redis.connection import Encoder

from indexing.redis_keys import RedisKeys
from indexing.redis_state import SEEN_CAP, FenceKey, UserCommit, UserState, decode_commit, encode_commit, pack_state
from indexing.script_sections import Section, decode_sections, encode_sections

KEYS = RedisKeys("thaw:t1:")
E0, E1 = FenceKey("thaw-engine", "user.events", 0), FenceKey("thaw-engine", "user.events", 1)
RT = FenceKey("thaw-engine", "user.events.retry", 2)


def _state(*v: float, n: int = 1, source: str = "events") -> UserState:
    return UserState(np.array(v, np.float32), weight=1.5, ts=1_700_000_000.25, n_events=n, source=source)


def _commit() -> UserCommit:
    # a vector whose bytes hold NUL, 0xff and invalid UTF-8: the encoding must carry it as it is
    binary = UserState(np.frombuffer(b"\x00\xff\xfe\x80" * 2, dtype="<f4").copy(), 2.0, 3.0, 4, "prior")
    return UserCommit(
        space="cb2cf@v2",
        states={"sim:u:1": _state(1.0, 0.1), "u é 2": binary, "u3": _state(0.0, 1.0, n=9, source="dssm")},
        fences={E0: 41, E1: 7, RT: 3},
        expected_fences={E0: -1, E1: 5, RT: 2},
        seen={"sim:u:1": [("i1", 10.5), ("i2", 11.0)], "u é 2": [("i:x", 12.125)]},
        popularity={"i1": 2.0, "i:x": 0.5},
        expected_states={"sim:u:1": "", "u é 2": "a" * 40},  # u3 not checked
        engaged={"sim:u:1": [("i1", 10.5)]},
        parked={E0: [40, 38], E1: [6]},
        claims={RT: [1, 2]},
    )


def _as_sent(keys: list[str], args: list) -> tuple[list[bytes], list[bytes]]:
    """KEYS and ARGV as the bytes redis-py sends."""
    enc = Encoder("utf-8", "strict", False)
    return [enc.encode(k) for k in keys], [enc.encode(a) for a in args]


def _same_commit(got: UserCommit, want: UserCommit) -> None:
    assert got.space == want.space
    assert got.states.keys() == want.states.keys()
    for u, st in want.states.items():
        g = got.states[u]
        assert pack_state(g) == pack_state(st)  # bit for bit
        assert (g.weight, g.ts, g.n_events, g.source) == (st.weight, st.ts, st.n_events, st.source)
    for name in ("fences", "expected_fences", "expected_states", "popularity"):
        assert getattr(got, name) == getattr(want, name), name
    for name in ("seen", "engaged", "parked", "claims"):
        assert {k: list(v) for k, v in getattr(got, name).items()} == \
               {k: list(v) for k, v in getattr(want, name).items()}, name


def test_a_commit_decodes_back_to_itself_from_the_bytes_redis_receives() -> None:
    c = _commit()
    keys, args = encode_commit(c, KEYS)
    _same_commit(decode_commit(KEYS, *_as_sent(keys, args)), c)


def test_the_header_names_and_counts_every_section() -> None:
    keys, args = encode_commit(_commit(), KEYS)
    header = json.loads(args[0])
    assert header["format"] == 1 and header["params"] == {"seen_cap": SEEN_CAP}
    got = {n: (s["fields"], s["counts"]) for n, s in header["sections"].items()}
    assert got == {
        "fences": (["expected", "new"], [1, 1, 1]),
        "states": (["state", "expected_digest"], [1, 1, 1]),
        "seen": (["score", "member"], [2, 1]),
        "engaged": (["score", "member"], [1]),
        "parked": (["offset"], [2, 1]),
        "claims": (["offset"], [2]),
        "popularity": (["increment", "member"], [2]),
    }
    # each section owns a run of KEYS and of ARGV; together they are all of them
    n_keys = n_args = 0
    for s in header["sections"].values():
        assert s["key"] == n_keys + 1 and s["arg"] == n_args + 2  # ARGV[1] is the header
        n_keys += len(s["counts"])
        n_args += len(s["fields"]) * sum(s["counts"])
    assert (len(keys), len(args)) == (n_keys, n_args + 1)


def test_sections_hold_the_commit_by_name() -> None:
    params, s = decode_sections(*_as_sent(*encode_commit(_commit(), KEYS)))
    assert params == {"seen_cap": SEEN_CAP}
    assert s["fences"].groups == [
        ("thaw:t1:fence:thaw-engine:user.events:0", [(b"-1", b"41")]),
        ("thaw:t1:fence:thaw-engine:user.events:1", [(b"5", b"7")]),
        ("thaw:t1:fence:thaw-engine:user.events.retry:2", [(b"2", b"3")]),
    ]
    assert [(k, d) for k, [(_, d)] in s["states"].groups] == [
        ("thaw:t1:u:cb2cf@v2:sim:u:1", b""), ("thaw:t1:u:cb2cf@v2:u é 2", b"a" * 40), ("thaw:t1:u:cb2cf@v2:u3", b"-")]
    assert s["seen"].groups[0] == ("thaw:t1:seen:sim:u:1", [(b"10.5", b"i1"), (b"11.0", b"i2")])
    assert s["engaged"].groups == [("thaw:t1:eng:sim:u:1", [(b"10.5", b"i1")])]
    assert s["parked"].groups[0] == ("thaw:t1:parked:thaw-engine:user.events:0", [(b"40",), (b"38",)])
    assert s["claims"].groups == [("thaw:t1:parked:thaw-engine:user.events.retry:2", [(b"1",), (b"2",)])]
    assert s["popularity"].groups == [("thaw:t1:pop:cb2cf@v2", [(b"2.0", b"i1"), (b"0.5", b"i:x")])]


def test_empty_lists_are_left_out_and_popularity_always_has_its_key() -> None:
    c = UserCommit("sp", {}, {E0: 1}, {E0: 0}, {"u": []}, {}, engaged={"u": []}, parked={E0: []}, claims={RT: []})
    keys, args = encode_commit(c, KEYS)
    header = json.loads(args[0])
    assert {n: s["counts"] for n, s in header["sections"].items()} == {
        "fences": [1], "states": [], "seen": [], "engaged": [], "parked": [], "claims": [], "popularity": [0]}
    assert keys == ["thaw:t1:fence:thaw-engine:user.events:0", "thaw:t1:pop:sp"]
    got = decode_commit(KEYS, keys, args)
    assert (got.seen, got.engaged, got.parked, got.claims, got.popularity) == ({}, {}, {}, {}, {})


def test_a_fence_without_an_expectation_expects_none() -> None:
    _, s = decode_sections(*encode_commit(UserCommit("sp", {}, {E0: 4}, {}, {}, {}), KEYS))
    assert s["fences"].groups[0][1] == [(b"-1", b"4")]


def test_records_must_match_their_fields_and_names_are_unique() -> None:
    with pytest.raises(ValueError, match="fields"):
        encode_sections([Section("x", ("a", "b"), [("k", [(1, 2), (3,)])])])
    with pytest.raises(ValueError, match="twice"):
        encode_sections([Section("x", ("a",), []), Section("x", ("a",), [])])
    keys, args = encode_sections([Section("x", ("a",), [("k", [(1,)])])], {"p": 1})
    with pytest.raises(ValueError, match="format"):
        decode_sections(keys, [json.dumps({**json.loads(args[0]), "format": 99}), *args[1:]])


def test_the_script_reads_the_sections_the_encoder_writes() -> None:
    """Each ``section('name', {fields})`` of user_commit.lua is one the encoder sends, with the same fields."""
    lua = resources.files("indexing").joinpath("user_commit.lua").read_text(encoding="utf-8")
    read = {m[1]: re.findall(r"'(\w+)'", m[2]) for m in re.finditer(r"section\('(\w+)', \{([^}]*)\}\)", lua)}
    sent = {n: s["fields"] for n, s in json.loads(encode_commit(_commit(), KEYS)[1][0])["sections"].items()}
    assert read == sent
    assert "seen_cap" in lua


def test_keys_are_byte_for_byte_the_stored_layout() -> None:
    k = RedisKeys("thaw:")
    assert [
        k.user_state("minilm-l6@1", "sim:u:17"), k.profile("u1"), k.seen("u1"), k.engaged("u1"), k.item_meta("i1"),
        k.popularity("sp"), k.fresh("sp"), k.fence("g", "user.events", 3), k.parked("g", "user.events", 3),
        k.space(), k.everything(),
    ] == [
        "thaw:u:minilm-l6@1:sim:u:17", "thaw:prof:u1", "thaw:seen:u1", "thaw:eng:u1", "thaw:item:i1",
        "thaw:pop:sp", "thaw:fresh:sp", "thaw:fence:g:user.events:3", "thaw:parked:g:user.events:3",
        "thaw:space", "thaw:*",
    ]


def test_keys_parse_back() -> None:
    assert KEYS.user_of_state("cb2cf@v2", KEYS.user_state("cb2cf@v2", "sim:u:1")) == "sim:u:1"
    assert KEYS.user_of_seen(KEYS.seen("a:b")) == "a:b" and KEYS.user_of_engaged(KEYS.engaged("a:b")) == "a:b"
    assert KEYS.space_of_popularity(KEYS.popularity("dssm@3")) == "dssm@3"
    assert KEYS.partition_of_fence(KEYS.fence("grp:with:colons", "t.x", 12)) == ("grp:with:colons", "t.x", 12)
    assert KEYS.partition_of_parked(KEYS.parked("g", "t", 0)) == ("g", "t", 0)
    with pytest.raises(ValueError, match="not a"):
        KEYS.user_of_seen("other:seen:u")
