"""The user commit's encoding (named sections) and the key builder, without Redis: what ``user_commit.lua`` is sent
decodes back to the commit, section by section; a commit split by shard writes one hash slot per part; the key
strings are a storage format (layout 2) and stay as they are."""

from __future__ import annotations

import json
import re
from importlib import resources

import numpy as np
import pytest
from redis.connection import Encoder

from indexing.redis_keys import RedisKeys, shard_of
from indexing.redis_state import (
    SEEN_CAP,
    FenceKey,
    PackedStates,
    UserCommit,
    UserState,
    decode_commit,
    encode_commit,
    encode_commits,
    pack_state,
    split_commit,
)
from indexing.script_sections import Section, decode_sections, encode_sections

KEYS = RedisKeys("thaw:t1:", 4)  # users: sim:u:1 -> shard 3, "u é 2" -> 1, u3 -> 2 (murmur2 % 4)
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
        popularity={3: {"i1": 2.0}, 1: {"i:x": 0.5}},
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
        "popularity": (["increment", "member"], [1, 1]),
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
        ("thaw:t1:fence:{s0}:thaw-engine:user.events:0", [(b"-1", b"41")]),
        ("thaw:t1:fence:{s1}:thaw-engine:user.events:1", [(b"5", b"7")]),
        ("thaw:t1:fence:{s2}:thaw-engine:user.events.retry:2", [(b"2", b"3")]),
    ]
    assert [(k, d) for k, [(_, d)] in s["states"].groups] == [
        ("thaw:t1:u:{s3}:cb2cf@v2:sim:u:1", b""), ("thaw:t1:u:{s1}:cb2cf@v2:u é 2", b"a" * 40),
        ("thaw:t1:u:{s2}:cb2cf@v2:u3", b"-")]
    assert s["seen"].groups[0] == ("thaw:t1:seen:{s3}:sim:u:1", [(b"10.5", b"i1"), (b"11.0", b"i2")])
    assert s["engaged"].groups == [("thaw:t1:eng:{s3}:sim:u:1", [(b"10.5", b"i1")])]
    assert s["parked"].groups[0] == ("thaw:t1:parked:{s0}:thaw-engine:user.events:0", [(b"40",), (b"38",)])
    assert s["claims"].groups == [("thaw:t1:parked:{s2}:thaw-engine:user.events.retry:2", [(b"1",), (b"2",)])]
    assert s["popularity"].groups == [("thaw:t1:pop:{s1}:cb2cf@v2", [(b"0.5", b"i:x")]),
                                      ("thaw:t1:pop:{s3}:cb2cf@v2", [(b"2.0", b"i1")])]


def test_empty_lists_are_left_out() -> None:
    c = UserCommit("sp", {}, {E0: 1}, {E0: 0}, {"u": []}, {1: {}}, engaged={"u": []}, parked={E0: []}, claims={RT: []})
    keys, args = encode_commit(c, KEYS)
    header = json.loads(args[0])
    assert {n: s["counts"] for n, s in header["sections"].items()} == {
        "fences": [1], "states": [], "seen": [], "engaged": [], "parked": [], "claims": [], "popularity": []}
    assert keys == ["thaw:t1:fence:{s0}:thaw-engine:user.events:0"]
    got = decode_commit(KEYS, keys, args)
    assert (got.seen, got.engaged, got.parked, got.claims, got.popularity) == ({}, {}, {}, {}, {})


def _slot_tags(keys: list[str]) -> set[str]:
    """The hash tags of ``keys`` (the part of each between its first '{' and the next '}')."""
    return {k[k.index("{") + 1 : k.index("}", k.index("{"))] for k in keys}


@pytest.mark.parametrize("packed", [False, True])
def test_a_split_commit_writes_one_slot_per_part_and_loses_nothing(packed: bool) -> None:
    c = _commit()
    if packed:
        c = UserCommit(**{**c.__dict__, "states": PackedStates({u: pack_state(st) for u, st in c.states.items()})})
    parts = split_commit(c, KEYS)
    calls = encode_commits(c, KEYS)
    assert len(parts) == len(calls) == 4  # shards 0 (E0), 1 (E1, "u é 2"), 2 (RT, u3), 3 (sim:u:1)
    for (keys, _), part in zip(calls, parts, strict=True):
        assert len(_slot_tags(keys)) == 1, keys
        assert isinstance(part.states, PackedStates) == packed
    assert _slot_tags(encode_commit(c, KEYS)[0]) == {"s0", "s1", "s2", "s3"}  # the whole commit spans four slots
    # the parts together are the commit
    merged_states = {u: pack_state(st) for p in parts for u, st in p.states.items()}
    assert merged_states == {u: pack_state(st) for u, st in c.states.items()}
    for name in ("fences", "expected_fences", "expected_states", "seen", "engaged", "parked", "claims"):
        merged: dict = {}
        for p in parts:
            assert not (set(getattr(p, name)) & set(merged)), name
            merged.update(getattr(p, name))
        lists = name in ("seen", "engaged", "parked", "claims")  # an empty list is left out
        assert merged == {k: v for k, v in getattr(c, name).items() if v or not lists}, name
    assert {s: pop for p in parts for s, pop in p.popularity.items()} == c.popularity
    # every user's keys are in the part of its shard
    for p in parts:
        shards = {f.partition for f in p.fences} | {shard_of(u, 4) for u in p.states} | set(p.popularity)
        assert len(shards) == 1


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
    k = RedisKeys("thaw:", 4)
    assert [
        k.user_state("minilm-l6@1", "sim:u:17"), k.profile("u1"), k.seen("u2"), k.engaged("u"), k.item_meta("i1"),
        k.popularity("sp", 2), k.fresh("sp"), k.fence("g", "user.events", 3), k.parked("g", "user.events", 3),
        k.space(), k.layout(), k.everything(),
    ] == [
        "thaw:u:{s0}:minilm-l6@1:sim:u:17", "thaw:prof:{s0}:u1", "thaw:seen:{s2}:u2", "thaw:eng:{s3}:u",
        "thaw:item:i1", "thaw:pop:{s2}:sp", "thaw:fresh:sp", "thaw:fence:{s3}:g:user.events:3",
        "thaw:parked:{s3}:g:user.events:3", "thaw:space", "thaw:layout", "thaw:*",
    ]
    assert k.popularity_shards("sp") == [f"thaw:pop:{{s{i}}}:sp" for i in range(4)]


def test_a_user_key_needs_the_shard_count_and_a_prefix_cannot_hold_braces() -> None:
    with pytest.raises(LookupError, match="not known"):
        RedisKeys("thaw:").user_state("sp", "u1")
    assert RedisKeys("thaw:").fence("g", "t", 1) == "thaw:fence:{s1}:g:t:1"  # a fence is tagged by its partition
    with pytest.raises(ValueError, match="brace|hash slot"):
        RedisKeys("thaw:{x}:", 4)


def test_keys_parse_back() -> None:
    assert KEYS.user_of_state("cb2cf@v2", KEYS.user_state("cb2cf@v2", "sim:u:1")) == "sim:u:1"
    assert KEYS.user_of_seen(KEYS.seen("a:b")) == "a:b" and KEYS.user_of_engaged(KEYS.engaged("a:b")) == "a:b"
    assert KEYS.space_of_popularity(KEYS.popularity("dssm@3", 1)) == "dssm@3"
    assert KEYS.space_of_state(KEYS.user_state("dssm@3", "a:b")) == "dssm@3"
    assert KEYS.shard_of_key(KEYS.user_state("dssm@3", "a:b")) == 3
    assert KEYS.partition_of_fence(KEYS.fence("grp:with:colons", "t.x", 12)) == ("grp:with:colons", "t.x", 12)
    assert KEYS.partition_of_parked(KEYS.parked("g", "t", 0)) == ("g", "t", 0)
    with pytest.raises(ValueError, match="not a"):
        KEYS.user_of_seen("other:seen:u")
