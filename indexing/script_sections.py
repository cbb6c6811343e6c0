"""Named sections: a self-describing layout of a Redis script call's KEYS and ARGV.

``ARGV[1]`` is a JSON header; every value is an ARGV entry of its own, so binary values (packed vectors) travel as
they are and numbers keep the exact text Python gives them (``repr`` of a float)::

    {"format": 1, "params": {"seen_cap": 500},
     "sections": {"<name>": {"fields": ["score", "member"], "key": 3, "arg": 12, "counts": [2, 1]}, ...}}

Section ``<name>`` owns ``KEYS[key .. key + #counts - 1]``; its i-th key has ``counts[i]`` records, each
``#fields`` consecutive arguments, the records of all its keys laid out in order from ``ARGV[arg]``. A script
reads a section by its name and a record's values by field name (``indexing/user_commit.lua``);
:func:`decode_sections` is the same reading in Python.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

FORMAT = 1

Arg = bytes | str | int | float
Record = tuple[Arg, ...]


@dataclass(frozen=True)
class Section:
    """One named part of a call: per key, its records (each one value per field)."""

    name: str
    fields: tuple[str, ...]
    groups: Sequence[tuple[str, Sequence[Record]]]  # (key, records)


def encode_sections(
    sections: Sequence[Section], params: Mapping[str, int | float | str] | None = None
) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of a script call carrying ``sections`` (ARGV[1] is the header)."""
    keys: list[str] = []
    args: list[Arg] = [""]
    layout: dict[str, dict[str, object]] = {}
    for s in sections:
        if s.name in layout:
            raise ValueError(f"section {s.name!r} given twice")
        counts = [len(records) for _, records in s.groups]
        layout[s.name] = {"fields": list(s.fields), "key": len(keys) + 1, "arg": len(args) + 1, "counts": counts}
        keys += [key for key, _ in s.groups]
        start = len(args)
        for _, records in s.groups:
            for rec in records:
                args += rec
        if len(args) - start != len(s.fields) * sum(counts):
            raise ValueError(f"section {s.name!r}: a record does not have the fields {s.fields}")
    args[0] = json.dumps({"format": FORMAT, "params": dict(params or {}), "sections": layout},
                         separators=(",", ":"))
    return keys, args


def decode_sections(
    keys: Sequence[bytes | str], args: Sequence[Arg]
) -> tuple[dict[str, object], dict[str, Section]]:
    """The params and the sections of a call, values as the bytes Redis receives (the inverse of
    :func:`encode_sections`, for tests and debugging)."""
    header = json.loads(_wire(args[0]))
    if header.get("format") != FORMAT:
        raise ValueError(f"unknown sections format {header.get('format')!r}")
    out: dict[str, Section] = {}
    for name, s in header["sections"].items():
        fields = tuple(s["fields"])
        width, k, a = len(fields), s["key"] - 1, s["arg"] - 1
        groups: list[tuple[str, list[Record]]] = []
        for i, n in enumerate(s["counts"]):
            key = keys[k + i]
            recs: list[Record] = [tuple(_wire(x) for x in args[a + r * width : a + (r + 1) * width])
                                  for r in range(n)]
            groups.append((key.decode() if isinstance(key, bytes) else key, recs))
            a += n * width
        out[name] = Section(name, fields, groups)
    return dict(header["params"]), out


def _wire(x: Arg) -> bytes:
    """An argument as Redis receives it (redis-py's encoding: str as UTF-8, numbers as their ``repr``)."""
    if isinstance(x, bytes):
        return x
    if isinstance(x, str):
        return x.encode()
    return repr(x).encode()
