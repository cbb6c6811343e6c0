"""Last.fm HetRec 2011 (hetrec2011-lastfm-2k), read from the staged ``.dat`` files.

Files are tab-separated with one header line; ``tags.dat`` is Latin-1, the
others UTF-8; line endings are a mix of CRLF and LF. See the folder's
PROVENANCE.md. Licence: non-commercial research/benchmarking only.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

import numpy as np

from workloads.datasets.base import InteractionDataset, datasets_dir, undirected_edges

LASTFM_DIRNAME = "lastfm-hetrec2011"


def _read_dat(path: Path, n_fields: int, encoding: str = "utf-8") -> list[list[str]]:
    """Reads a HetRec ``.dat`` table, skipping the header line."""
    text = path.read_bytes().decode(encoding)
    rows: list[list[str]] = []
    for lineno, line in enumerate(text.split("\n")[1:], start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != n_fields:
            raise ValueError(f"{path}:{lineno}: expected {n_fields} tab-separated fields, got {len(parts)}")
        rows.append(parts)
    return rows


def load_lastfm(
    data_dir: str | os.PathLike[str] | None = None,
    root: str | os.PathLike[str] | None = None,
) -> InteractionDataset:
    """Loads Last.fm HetRec 2011: 1,892 users, 17,632 artists, 92,834 pairs.

    Args:
        data_dir: Folder holding the ``.dat`` files. Defaults to
            ``<datasets folder>/lastfm-hetrec2011``.
        root: The datasets folder (see :func:`datasets_dir`: else
            ``$THAW_DATASETS_DIR``), used when ``data_dir`` is not given.

    Returns:
        An :class:`InteractionDataset` with one row per (user, artist) pair:

        * ``weights = log1p(plays)`` (float32), the implicit-feedback
          strength (plays span 1..352,698, median 260, so the log keeps a
          few heavy listeners from dominating).
        * ``timestamps`` is ``None``: the listening counts are aggregates.
        * ``item_text`` is the artist name; ``item_tags`` are the tag names
          users applied to the artist (from ``user_taggedartists.dat`` +
          ``tags.dat``), most applied first; ``item_tag_counts`` the number
          of (user, tag) applications; ``item_images`` the picture URL
          (``None`` when empty).
        * ``user_edges`` is the (symmetric) friendship graph as 12,717
          undirected pairs.
        * ``item_features["plays_total"]`` sums listening counts per artist;
          ``meta["plays"]`` keeps the raw per-row play counts (int64).

        Users and artists are indexed in ascending raw-id order. Tag
        assignments for the 390 artist ids absent from ``artists.dat`` are
        dropped (counted in ``meta``).
    """
    folder = Path(data_dir) if data_dir is not None else datasets_dir(root) / LASTFM_DIRNAME
    artists = _read_dat(folder / "artists.dat", 4)
    tag_names = {int(r[0]): r[1] for r in _read_dat(folder / "tags.dat", 2, encoding="latin-1")}
    ua = _read_dat(folder / "user_artists.dat", 3)
    friends = _read_dat(folder / "user_friends.dat", 2)
    tagged = _read_dat(folder / "user_taggedartists.dat", 6)

    artists.sort(key=lambda r: int(r[0]))
    item_raw = np.array([int(r[0]) for r in artists], dtype=np.int64)
    raw_u = np.array([int(r[0]) for r in ua], dtype=np.int64)
    raw_i = np.array([int(r[1]) for r in ua], dtype=np.int64)
    plays = np.array([int(r[2]) for r in ua], dtype=np.int64)
    user_raw = np.unique(np.concatenate([raw_u, np.array([int(x) for r in friends for x in r], dtype=np.int64)]))

    users = np.searchsorted(user_raw, raw_u)
    items = np.searchsorted(item_raw, raw_i)
    if np.any(item_raw[np.minimum(items, len(item_raw) - 1)] != raw_i):
        raise ValueError("user_artists.dat references an artist missing from artists.dat")

    item_pos = {int(a): k for k, a in enumerate(item_raw)}
    tag_counter: list[Counter[str]] = [Counter() for _ in artists]
    dropped = 0
    for r in tagged:
        k = item_pos.get(int(r[1]))
        if k is None:
            dropped += 1
            continue
        tag_counter[k][tag_names[int(r[2])]] += 1
    item_tags: list[list[str]] = []
    item_tag_counts: list[list[int]] = []
    for c in tag_counter:
        ordered = sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))
        item_tags.append([t for t, _ in ordered])
        item_tag_counts.append([n for _, n in ordered])

    fa = np.searchsorted(user_raw, np.array([int(r[0]) for r in friends], dtype=np.int64))
    fb = np.searchsorted(user_raw, np.array([int(r[1]) for r in friends], dtype=np.int64))
    plays_total = np.bincount(items, weights=plays, minlength=len(artists)).astype(np.int64)

    return InteractionDataset(
        name="lastfm",
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        weights=np.log1p(plays).astype(np.float32),
        timestamps=None,
        n_users=len(user_raw),
        n_items=len(artists),
        user_ids=[str(u) for u in user_raw],
        item_ids=[str(i) for i in item_raw],
        item_text=[r[1] for r in artists],
        item_tags=item_tags,
        item_tag_counts=item_tag_counts,
        item_images=[r[3] or None for r in artists],
        item_features={"plays_total": plays_total},
        user_edges=undirected_edges(fa, fb),
        meta={
            "source": str(folder),
            "weight": "log1p(listening count); raw counts in meta['plays']",
            "plays": plays,
            "timestamps": "none (aggregated listening counts)",
            "tag_assignments_dropped_unknown_artist": dropped,
            "artist_urls": [r[2] for r in artists],
            "licence": "non-commercial research/benchmarking only",
        },
    )
