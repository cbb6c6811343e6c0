"""Generic bring-your-own-data format.

Interactions (and split files) are delimited text, one interaction per line::

    user,item[,weight][,ts]

* The delimiter is detected from the first data line: comma, tab, semicolon,
  else any run of whitespace. Comma lines may use CSV quoting.
* A header line is optional. It is detected when every field of the first line
  is a known column name (``user``/``user_id``/``userid``/``uid``,
  ``item``/``item_id``/``itemid``/``iid`` (or artist/track/song/movie
  variants), ``weight``/``rating``/``score``/
  ``plays``/``count``/``value``, ``ts``/``timestamp``/``time``/``date``; a
  RecBole-style ``:type`` suffix is ignored), or when the first line has a
  non-numeric weight/ts field where the second line has a number. Pass
  ``has_header`` to force either way. With a header, columns may come in any
  order and unknown columns are ignored; without one the order is
  ``user, item, weight, ts`` and every line must have the same field count.
* ``weight`` defaults to 1.0. ``ts`` is Unix seconds (int or float, floored)
  or an ISO-8601 date/time (naive values are taken as UTC).
* Blank lines and lines starting with ``#`` are skipped. Any malformed line
  raises ``ValueError("<path>:<line>: <reason>")``.

Item content is a tags file and/or a JSON-lines file (several may be given;
entries for the same item are merged):

* tags file: ``item<TAB>tag tag ...`` (tags separated by whitespace, or by
  tabs when the part after the first tab contains more tabs, which allows
  multi-word tags). A line with no tab is ``item tag tag ...``.
* JSONL (``.jsonl``/``.ndjson``/``.json`` suffix, or first character ``{``):
  ``{"item": ..., "text": ..., "tags": [...], "tag_counts": [...],
  "image": ..., "audio": ...}``; only ``item`` is required, other keys are
  ignored.

Optional edge files (``a,b`` per line, same delimiter rules) give a user–user
graph (e.g. friends) or an item–item graph (e.g. citations).

Ids are strings. Users/items are indexed in ascending numeric order when every
id is a canonical non-negative integer, else in ascending string order. The
catalogue is the union of items from interactions, splits, content and edges,
so content-only items (true cold items) are kept.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from workloads.datasets.base import InteractionDataset, undirected_edges

PathLike = str | os.PathLike[str]

# fmt: off
_ROLE_NAMES: dict[str, set[str]] = {
    "user": {"user", "user_id", "userid", "uid", "u", "users"},
    "item": {
        "item", "item_id", "itemid", "iid", "i", "items", "artist", "artist_id", "artistid",
        "track", "track_id", "trackid", "song", "song_id", "movie", "movie_id", "movieid",
    },
    "weight": {"weight", "rating", "score", "plays", "count", "playcount", "value", "w", "r"},
    "ts": {"ts", "timestamp", "time", "datetime", "date", "t"},
}
_EDGE_NAMES = {
    "src", "dst", "source", "target", "from", "to", "a", "b", "u", "v",
    "user", "friend", "item", "neighbor", "neighbour", "user_id", "friend_id", "item_id",
    "userid", "friendid", "itemid", "user1", "user2", "item1", "item2", "citing", "cited",
}
# fmt: on
_JSONL_SUFFIXES = {".jsonl", ".ndjson", ".json"}


def _norm_header(token: str) -> str:
    return token.strip().strip('"').split(":", 1)[0].strip().lower()


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


@dataclass
class _Table:
    """Parsed delimited file: optional header, rows of string fields, line numbers."""

    path: Path
    header: list[str] | None
    rows: list[list[str]]
    linenos: list[int]


def _detect_delimiter(line: str) -> str | None:
    for d in (",", "\t", ";"):
        if d in line:
            return d
    return None


def _split(line: str, delim: str | None) -> list[str]:
    if delim is None:
        return line.split()
    if delim == "," and '"' in line:
        return [f.strip() for f in next(csv.reader([line]))]
    return [f.strip() for f in line.split(delim)]


def _read_table(path: PathLike, has_header: bool | None, header_names: set[str]) -> _Table:
    """Reads a delimited text file, detecting the delimiter and a header line."""
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ValueError(f"{p}: not valid UTF-8 ({exc})") from exc
    lines = [
        (n, raw.rstrip("\r"))
        for n, raw in enumerate(text.split("\n"), start=1)
        if raw.strip() and not raw.lstrip().startswith("#")
    ]
    if not lines:
        return _Table(p, None, [], [])
    delim = _detect_delimiter(lines[0][1])
    first = _split(lines[0][1], delim)
    if has_header is None:
        normed = [_norm_header(t) for t in first]
        has_header = all(t in header_names for t in normed)
        if not has_header and len(first) >= 3 and len(lines) > 1:
            second = _split(lines[1][1], delim)
            has_header = any(not _is_number(a) and _is_number(b) for a, b in zip(first[2:], second[2:], strict=False))
    header = [_norm_header(t) for t in first] if has_header else None
    body = lines[1:] if has_header else lines
    rows = [_split(line, delim) for _, line in body]
    return _Table(p, header, rows, [n for n, _ in body])


def _parse_ts(token: str, where: str) -> int:
    try:
        return int(token)
    except ValueError:
        pass
    try:
        val = float(token)
    except ValueError:
        try:
            dt = datetime.fromisoformat(token)
        except ValueError:
            raise ValueError(f"{where}: timestamp {token!r} is neither a number nor ISO-8601") from None
        if dt.tzinfo is None:
            dt = dt.replace(tzinfo=UTC)
        return int(math.floor(dt.timestamp()))
    if not math.isfinite(val):
        raise ValueError(f"{where}: timestamp {token!r} is not finite")
    return int(math.floor(val))


@dataclass
class _Interactions:
    users: list[str]
    items: list[str]
    weights: np.ndarray
    ts: np.ndarray | None
    linenos: list[int]
    path: Path


def _read_interactions(path: PathLike, has_header: bool | None) -> _Interactions:
    """Parses an interactions/split file into raw-id columns."""
    known = set().union(*_ROLE_NAMES.values())
    table = _read_table(path, has_header, known)
    if table.header is not None:
        cols: dict[str, int] = {}
        for k, name in enumerate(table.header):
            for role, names in _ROLE_NAMES.items():
                if name in names and role not in cols:
                    cols[role] = k
        missing = [r for r in ("user", "item") if r not in cols]
        if missing:
            raise ValueError(f"{table.path}:1: header {table.header} has no {'/'.join(missing)} column")
        n_fields = len(table.header)
    else:
        if not table.rows:
            n_fields = 2
        else:
            n_fields = len(table.rows[0])
        if not 2 <= n_fields <= 4:
            line = table.linenos[0] if table.linenos else 1
            raise ValueError(f"{table.path}:{line}: expected 2-4 fields (user,item[,weight][,ts]), got {n_fields}")
        cols = dict(zip(("user", "item", "weight", "ts"), range(n_fields), strict=False))
    users: list[str] = []
    items: list[str] = []
    weights = np.ones(len(table.rows), dtype=np.float32)
    ts = np.zeros(len(table.rows), dtype=np.int64) if "ts" in cols else None
    cu, ci, cw, ct = cols["user"], cols["item"], cols.get("weight"), cols.get("ts")
    for j, (row, lineno) in enumerate(zip(table.rows, table.linenos, strict=True)):
        where = f"{table.path}:{lineno}"
        if len(row) != n_fields:
            raise ValueError(f"{where}: expected {n_fields} fields, got {len(row)}: {row!r}")
        u, i = row[cu], row[ci]
        if not u or not i:
            raise ValueError(f"{where}: empty user or item id")
        users.append(u)
        items.append(i)
        if cw is not None:
            try:
                w = float(row[cw])
            except ValueError:
                raise ValueError(f"{where}: weight {row[cw]!r} is not a number") from None
            if not math.isfinite(w):
                raise ValueError(f"{where}: weight {row[cw]!r} is not finite")
            weights[j] = w
        if ct is not None and ts is not None:
            ts[j] = _parse_ts(row[ct], where)
    return _Interactions(users, items, weights, ts, table.linenos, table.path)


@dataclass
class _Content:
    text: dict[str, str]
    tags: dict[str, list[str]]
    tag_counts: dict[str, list[int]]
    image: dict[str, str | None]
    audio: dict[str, str | None]
    order: list[str]
    has_counts: bool = False


def _merge_tags(content: _Content, item: str, tags: list[str], counts: list[int] | None) -> None:
    have = content.tags.setdefault(item, [])
    have_counts = content.tag_counts.setdefault(item, [])
    for k, t in enumerate(tags):
        if t in have:
            if counts is not None:
                have_counts[have.index(t)] += counts[k]
            continue
        have.append(t)
        have_counts.append(counts[k] if counts is not None else 1)


def _read_content(paths: Sequence[PathLike]) -> _Content:
    """Parses tags files and JSONL item-content files."""
    c = _Content({}, {}, {}, {}, {}, [])
    seen: set[str] = set()

    def touch(item: str) -> None:
        if item not in seen:
            seen.add(item)
            c.order.append(item)

    for path in paths:
        p = Path(path)
        text = p.read_text(encoding="utf-8-sig")
        is_jsonl = p.suffix.lower() in _JSONL_SUFFIXES or text.lstrip().startswith("{")
        for lineno, raw in enumerate(text.split("\n"), start=1):
            line = raw.rstrip("\r")
            if not line.strip():
                continue
            where = f"{p}:{lineno}"
            if is_jsonl:
                _parse_jsonl_line(c, line, where, touch)
                continue
            if line.lstrip().startswith("#"):
                continue
            if "\t" in line:
                item, rest = line.split("\t", 1)
                tags = [t.strip() for t in rest.split("\t")] if "\t" in rest else rest.split()
            else:
                item, *tags = line.split()
            item = item.strip()
            tags = [t for t in tags if t]
            if not item:
                raise ValueError(f"{where}: empty item id")
            touch(item)
            _merge_tags(c, item, tags, None)
    return c


def _parse_jsonl_line(c: _Content, line: str, where: str, touch: Any) -> None:
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        raise ValueError(f"{where}: invalid JSON ({exc.msg})") from None
    if not isinstance(obj, dict):
        raise ValueError(f"{where}: expected a JSON object")
    if "item" not in obj or obj["item"] is None or isinstance(obj["item"], bool | dict | list):
        raise ValueError(f"{where}: missing or invalid 'item'")
    item = str(obj["item"]).strip()
    if not item:
        raise ValueError(f"{where}: empty item id")
    touch(item)
    text = obj.get("text")
    if text is not None:
        if not isinstance(text, str):
            raise ValueError(f"{where}: 'text' must be a string")
        c.text[item] = f"{c.text[item]} {text}".strip() if c.text.get(item) else text
    tags = obj.get("tags")
    counts = obj.get("tag_counts")
    if tags is not None:
        if isinstance(tags, str):
            tags = tags.split()
        if not isinstance(tags, list) or not all(isinstance(t, str) for t in tags):
            raise ValueError(f"{where}: 'tags' must be a list of strings")
        if counts is not None and (
            not isinstance(counts, list)
            or len(counts) != len(tags)
            or not all(isinstance(n, int) and not isinstance(n, bool) for n in counts)
        ):
            raise ValueError(f"{where}: 'tag_counts' must be a list of ints as long as 'tags'")
        if counts is not None:
            c.has_counts = True
            kept = [(t.strip(), n) for t, n in zip(tags, counts, strict=True) if t.strip()]
            _merge_tags(c, item, [t for t, _ in kept], [n for _, n in kept])
        else:
            _merge_tags(c, item, [t.strip() for t in tags if t.strip()], None)
    for key, store in (("image", c.image), ("audio", c.audio)):
        val = obj.get(key)
        if val is not None:
            if not isinstance(val, str):
                raise ValueError(f"{where}: '{key}' must be a string")
            store[item] = val


def _read_edges(path: PathLike) -> tuple[list[str], list[str]]:
    table = _read_table(path, None, _EDGE_NAMES)
    a: list[str] = []
    b: list[str] = []
    for row, lineno in zip(table.rows, table.linenos, strict=True):
        if len(row) != 2 or not row[0] or not row[1]:
            raise ValueError(f"{table.path}:{lineno}: expected 2 fields (a,b), got {row!r}")
        a.append(row[0])
        b.append(row[1])
    return a, b


def _index_ids(ids: set[str]) -> list[str]:
    """Sorts raw ids numerically when all are canonical ints, else as strings."""
    if all(s.isdigit() and (s == "0" or not s.startswith("0")) for s in ids):
        return sorted(ids, key=int)
    return sorted(ids)


def _lookup(index: dict[str, int], raw: list[str]) -> np.ndarray:
    return np.fromiter((index[r] for r in raw), dtype=np.int64, count=len(raw))


def _pairs_to_rows(keys: np.ndarray, split_keys: np.ndarray, split: _Interactions) -> np.ndarray:
    """Maps split (user, item) keys to all matching interaction rows."""
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    left = np.searchsorted(sorted_keys, split_keys, side="left")
    right = np.searchsorted(sorted_keys, split_keys, side="right")
    counts = right - left
    missing = np.flatnonzero(counts == 0)
    if len(missing):
        j = int(missing[0])
        raise ValueError(
            f"{split.path}:{split.linenos[j]}: pair ({split.users[j]!r}, {split.items[j]!r}) "
            f"is not in the interactions file ({len(missing)} such pairs)"
        )
    starts = np.repeat(left, counts)
    offsets = np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)
    return np.unique(order[starts + offsets])


def load_generic(
    interactions: PathLike | None,
    item_content: PathLike | Sequence[PathLike] | None = None,
    splits: Mapping[str, PathLike] | None = None,
    *,
    name: str = "generic",
    has_header: bool | None = None,
    user_edges: PathLike | None = None,
    item_edges: PathLike | None = None,
    meta: Mapping[str, Any] | None = None,
) -> InteractionDataset:
    """Loads a dataset in the generic format described in this module.

    Args:
        interactions: Interactions file (``user,item[,weight][,ts]``). May be
            ``None`` when ``splits`` are given: the interactions are then the
            concatenation of the split files in mapping order.
        item_content: One path or a list of paths: tags files and/or JSONL.
        splits: Optional ``split name -> file`` (same format as
            interactions). Each split becomes ``dataset.splits[name]``, the
            sorted interaction rows whose (user, item) pair is listed in the
            file (all rows of the pair if it occurs several times). A pair
            absent from ``interactions`` raises ``ValueError``.
        name: Dataset name.
        has_header: Force header detection on (True) or off (False) for the
            interactions and split files; ``None`` auto-detects per file.
        user_edges: Optional user–user edge file (``a,b`` per line).
        item_edges: Optional item–item edge file (``a,b`` per line).
        meta: Extra entries for ``dataset.meta``.

    Returns:
        The :class:`InteractionDataset`. ``timestamps`` is set only when the
        interactions carry a ts column; ``item_tag_counts`` only when some
        JSONL entry gave ``tag_counts``; ``item_images``/``item_audio`` only
        when some item has one.

    Raises:
        ValueError: On malformed input, with ``path:line`` in the message.
    """
    split_data = {k: _read_interactions(v, has_header) for k, v in (splits or {}).items()}
    if interactions is not None:
        inter = _read_interactions(interactions, has_header)
    elif split_data:
        parts = list(split_data.values())
        with_ts = [p.ts is not None for p in parts]
        inter = _Interactions(
            users=[u for p in parts for u in p.users],
            items=[i for p in parts for i in p.items],
            weights=np.concatenate([p.weights for p in parts]),
            ts=np.concatenate([p.ts for p in parts if p.ts is not None]) if all(with_ts) else None,
            linenos=[n for p in parts for n in p.linenos],
            path=Path("<splits>"),
        )
    else:
        raise ValueError("load_generic needs an interactions file or split files")
    if not inter.users:
        raise ValueError(f"{inter.path}: no interactions")

    content_paths: list[PathLike]
    if item_content is None:
        content_paths = []
    elif isinstance(item_content, str | os.PathLike):
        content_paths = [item_content]
    else:
        content_paths = list(item_content)
    content = _read_content(content_paths)
    ue = _read_edges(user_edges) if user_edges is not None else None
    ie = _read_edges(item_edges) if item_edges is not None else None

    user_set = set(inter.users)
    item_set = set(inter.items) | set(content.order)
    for s in split_data.values():
        user_set.update(s.users)
        item_set.update(s.items)
    if ue is not None:
        user_set.update(ue[0])
        user_set.update(ue[1])
    if ie is not None:
        item_set.update(ie[0])
        item_set.update(ie[1])
    user_ids = _index_ids(user_set)
    item_ids = _index_ids(item_set)
    uidx = {u: k for k, u in enumerate(user_ids)}
    iidx = {i: k for k, i in enumerate(item_ids)}
    users = _lookup(uidx, inter.users)
    items = _lookup(iidx, inter.items)
    n_items = len(item_ids)

    split_rows: dict[str, np.ndarray] = {}
    if interactions is None:
        start = 0
        for k, s in split_data.items():
            split_rows[k] = np.arange(start, start + len(s.users), dtype=np.int64)
            start += len(s.users)
    else:
        keys = users * n_items + items
        for k, s in split_data.items():
            skeys = _lookup(uidx, s.users) * n_items + _lookup(iidx, s.items)
            split_rows[k] = _pairs_to_rows(keys, skeys, s).astype(np.int64)

    return InteractionDataset(
        name=name,
        users=users,
        items=items,
        weights=inter.weights,
        timestamps=inter.ts,
        n_users=len(user_ids),
        n_items=n_items,
        user_ids=user_ids,
        item_ids=item_ids,
        item_text=[content.text.get(i, "") for i in item_ids],
        item_tags=[content.tags.get(i, []) for i in item_ids],
        item_tag_counts=[content.tag_counts.get(i, []) for i in item_ids] if content.has_counts else None,
        item_images=[content.image.get(i) for i in item_ids] if content.image else None,
        item_audio=[content.audio.get(i) for i in item_ids] if content.audio else None,
        user_edges=undirected_edges(_lookup(uidx, ue[0]), _lookup(uidx, ue[1])) if ue else None,
        item_edges=(undirected_edges(_lookup(iidx, ie[0]), _lookup(iidx, ie[1]), allow_self=True) if ie else None),
        splits=split_rows,
        meta={
            "source": str(inter.path),
            "weight": "as given in the file (1.0 when absent)",
            **(dict(meta) if meta else {}),
        },
    )
