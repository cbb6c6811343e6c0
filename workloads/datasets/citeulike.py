"""CiteULike-a, converted to the generic format and loaded through it.

HELD-OUT BENCHMARK: load it and report on it, but never tune anything
(hyper-parameters, thresholds, model choice) on its ``cold_item_test`` split.
Use ``cold_item_val`` (or the warm splits) for any selection.

Source files (see the folder's PROVENANCE.md): ``users.dat`` (line u =
``n item...``, 0-based ids), ``item-tag.dat`` (line i = ``n tagid...``),
``tags.dat`` (line k = tag name), ``citations.dat`` (line i = ``n item...``)
and the cold-start splits ``split-gar/`` (1-based ids) and ``split-aldi/``
(0-based ids), both ``user,item`` CSV. The converter writes 0-based raw ids
everywhere, so item index == line index of ``users.dat``'s item ids.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from workloads.datasets.base import InteractionDataset, datasets_dir, default_cache_dir
from workloads.datasets.generic import load_generic

CITEULIKE_DIRNAME = "citeulike-a"
SplitSource = Literal["gar", "aldi"]
_SPLIT_FILES: dict[str, tuple[str, ...]] = {
    "gar": ("warm_emb", "warm_map", "warm_val", "warm_test", "cold_item_val", "cold_item_test"),
    "aldi": ("warm_emb", "warm_val", "warm_test", "cold_item_val", "cold_item_test"),
}
_ID_OFFSET = {"gar": 1, "aldi": 0}
_FORMAT_VERSION = 1


@dataclass(frozen=True)
class GenericFiles:
    """Paths of a dataset written in the generic format.

    Attributes:
        interactions: ``user,item`` CSV.
        item_content: Tags file (``item<TAB>tag tag ...``).
        item_edges: Item–item edge CSV (citations), or ``None``.
        splits: ``split name -> user,item CSV``.
    """

    interactions: Path
    item_content: Path
    item_edges: Path | None
    splits: dict[str, Path]


def _count_lines(path: Path) -> list[list[int]]:
    """Parses a ``n id id ...`` file and checks each line's leading count."""
    out: list[list[int]] = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").split("\n"), start=1):
        if not line.strip():
            continue
        nums = [int(x) for x in line.split()]
        if nums[0] != len(nums) - 1:
            raise ValueError(f"{path}:{lineno}: count {nums[0]} but {len(nums) - 1} ids")
        out.append(nums[1:])
    return out


def citeulike_to_generic(
    out_dir: str | os.PathLike[str],
    source_dir: str | os.PathLike[str] | None = None,
    split_source: SplitSource = "gar",
    overwrite: bool = False,
) -> GenericFiles:
    """Writes CiteULike-a as generic-format files (idempotent).

    Args:
        out_dir: Destination folder (created if needed).
        source_dir: The ``citeulike-a`` folder; defaults to
            ``<datasets folder>/citeulike-a`` (``THAW_DATASETS_DIR``).
        split_source: ``"gar"`` (1-based ids, shifted by -1 here; files
            warm_emb/warm_map/warm_val/warm_test/cold_item_val/cold_item_test)
            or ``"aldi"`` (0-based; no warm_map). Both have identical cold
            sets.
        overwrite: Rewrite even if a previous conversion is present.

    Returns:
        The written :class:`GenericFiles`. Item ids are the 0-based article
        indices, user ids the 0-based ``users.dat`` line indices.
    """
    src = Path(source_dir) if source_dir is not None else datasets_dir() / CITEULIKE_DIRNAME
    out = Path(out_dir)
    split_names = _SPLIT_FILES[split_source]
    files = GenericFiles(
        interactions=out / "interactions.csv",
        item_content=out / "items.tags",
        item_edges=out / "citations.csv",
        splits={s: out / "splits" / f"{s}.csv" for s in split_names},
    )
    marker = out / "converted.json"
    stamp = {"format": _FORMAT_VERSION, "source": str(src.resolve()), "split_source": split_source}
    paths = [files.interactions, files.item_content, out / "citations.csv", *files.splits.values()]
    if not overwrite and marker.exists() and all(p.exists() for p in paths):
        try:
            if json.loads(marker.read_text()) == stamp:
                return files
        except (OSError, ValueError):
            pass
    (out / "splits").mkdir(parents=True, exist_ok=True)

    user_items = _count_lines(src / "users.dat")
    _write(
        files.interactions,
        "user,item\n" + "".join(f"{u},{i}\n" for u, its in enumerate(user_items) for i in its),
    )

    tag_names = src.joinpath("tags.dat").read_text(encoding="utf-8").split("\n")
    item_tags = _count_lines(src / "item-tag.dat")
    lines = []
    for i, tags in enumerate(item_tags):
        lines.append(f"{i}\t" + " ".join(tag_names[t] for t in tags) + "\n")
    _write(files.item_content, "".join(lines))

    cites = _count_lines(src / "citations.dat")
    _write(
        out / "citations.csv",
        "citing,cited\n" + "".join(f"{i},{j}\n" for i, js in enumerate(cites) for j in js if i <= j),
    )

    off = _ID_OFFSET[split_source]
    for s in split_names:
        rows = (src / f"split-{split_source}" / f"{s}.csv").read_text(encoding="utf-8").split("\n")
        if rows[0].strip() != "user,item":
            raise ValueError(f"split-{split_source}/{s}.csv: unexpected header {rows[0]!r}")
        body = []
        for lineno, r in enumerate(rows[1:], start=2):
            if not r.strip():
                continue
            su, si = r.strip().split(",")
            uu, ii = int(su) - off, int(si) - off
            if uu < 0 or ii < 0:
                raise ValueError(f"split-{split_source}/{s}.csv:{lineno}: negative id after shifting by {off}")
            body.append(f"{uu},{ii}\n")
        _write(files.splits[s], "user,item\n" + "".join(body))
    _write(marker, json.dumps(stamp))
    return files


def _write(path: Path, text: str) -> None:
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def load_citeulike(
    source_dir: str | os.PathLike[str] | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    split_source: SplitSource = "gar",
) -> InteractionDataset:
    """Loads CiteULike-a (5,551 users, 16,980 articles, 204,986 pairs).

    Converts the staged files with :func:`citeulike_to_generic` into
    ``<cache>/citeulike-a-generic-<split_source>`` and loads them with
    :func:`load_generic`. HELD-OUT BENCHMARK: never tune on
    ``splits["cold_item_test"]``.

    Args:
        source_dir: The ``citeulike-a`` folder (default: ``<datasets folder>/citeulike-a``).
        cache_dir: Cache root (see :func:`default_cache_dir`).
        split_source: Which predefined split to attach (``"gar"`` or
            ``"aldi"``).

    Returns:
        An :class:`InteractionDataset` with unit ``weights``, no timestamps,
        no item text (the abstracts are not staged), tags as content,
        the citation graph as ``item_edges`` and the predefined splits in
        ``splits`` (row indices).
    """
    out = default_cache_dir(cache_dir) / f"citeulike-a-generic-{split_source}"
    files = citeulike_to_generic(out, source_dir=source_dir, split_source=split_source)
    return load_generic(
        files.interactions,
        item_content=files.item_content,
        splits=files.splits,
        name="citeulike-a",
        item_edges=files.item_edges,
        meta={
            "weight": "1.0 (implicit: article in the user's library)",
            "timestamps": "none",
            "split_source": split_source,
            "held_out": True,
            "note": "held-out benchmark: never tune on splits['cold_item_test']",
            "licence": "none stated; research/benchmarking only",
        },
    )
