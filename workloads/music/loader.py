"""Loader of a built music corpus (see :mod:`workloads.music.build`)."""

from __future__ import annotations

import hashlib
import os
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from workloads.music.build import MANIFEST, default_corpus_dir, read_jsonl
from workloads.music.render import SAMPLE_RATE


@dataclass(frozen=True, eq=False)
class MusicCorpus:
    """Rendered clips with their tags and captions, plus a deterministic train/val/test split.

    Clips are ordered by ``clip_id``. The split is by clip, assigned from a hash of ``(seed, group)`` where the
    group is the normalised title (or the clip id when untitled), so the same tune appearing twice (O'Neill's
    overlapping books, tunes shared between collections) never straddles two splits. Shares are therefore
    close to, not exactly, the requested fractions.

    Attributes:
        root: Corpus directory.
        clip_ids: Clip ids.
        paths: Absolute WAV paths.
        tags: Tags of each clip (``field -> value``, see :data:`workloads.music.tags.TAG_FIELDS`).
        captions: One English caption per clip.
        titles: Titles from the score metadata (``""`` if none).
        durations: ``float32`` clip lengths in seconds.
        sources: ``{"corpus_path", "number", ...}`` of each clip.
        splits: ``"train" | "val" | "test" -> int64`` clip indices.
        sample_rate: Always 16000.
        meta: Render parameters per clip and split settings.
    """

    root: Path
    clip_ids: list[str]
    paths: list[Path]
    tags: list[dict[str, str]]
    captions: list[str]
    titles: list[str]
    durations: np.ndarray
    sources: list[dict[str, Any]]
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    sample_rate: int = SAMPLE_RATE
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.clip_ids)

    def waveform(self, i: int) -> np.ndarray:
        """Returns clip ``i`` as ``float32`` mono samples in ``[-1, 1]`` at 16 kHz."""
        import soundfile as sf

        x, sr = sf.read(str(self.paths[i]), dtype="float32", always_2d=False)
        if sr != self.sample_rate:
            raise ValueError(f"{self.paths[i]} is {sr} Hz, expected {self.sample_rate}")
        if x.ndim == 2:
            x = x.mean(axis=1).astype(np.float32)
        return x

    def tag_values(self, name: str) -> list[str]:
        """Returns tag ``name`` of every clip (``""`` where missing)."""
        return [t.get(name, "") for t in self.tags]

    def tag_counts(self, name: str) -> Counter[str]:
        """Counts the values of tag ``name``."""
        return Counter(self.tag_values(name))


def _split_of(group: str, seed: int, val_fraction: float, test_fraction: float) -> str:
    h = int.from_bytes(hashlib.sha256(f"{seed}|{group}".encode()).digest()[:8], "big") / 2**64
    if h < test_fraction:
        return "test"
    if h < test_fraction + val_fraction:
        return "val"
    return "train"


def _group_key(record: dict[str, Any]) -> str:
    words = re.sub(r"[^a-z0-9]+", " ", str(record.get("title") or "").lower()).split()
    title = " ".join(w for w in words if w != "the")
    return f"title:{title}" if title else f"clip:{record['clip_id']}"


def load_music_corpus(
    dir: str | os.PathLike[str] | None = None,
    *,
    seed: int = 0,
    val_fraction: float = 0.1,
    test_fraction: float = 0.1,
) -> MusicCorpus:
    """Loads a corpus built by :func:`workloads.music.build_music_corpus`.

    Args:
        dir: Corpus directory (default ``$THAW_CORPUS_DIR`` or ``~/.cache/thaw/corpora/music21-v1``).
        seed: Seed of the train/val/test assignment.
        val_fraction: Expected share of validation clips.
        test_fraction: Expected share of test clips.

    Raises:
        FileNotFoundError: When the directory has no manifest (build it with ``thaw corpus music build``).
    """
    root = default_corpus_dir(dir)
    if not (root / MANIFEST).exists():
        raise FileNotFoundError(
            f"no music corpus manifest at {root / MANIFEST}; build it with `thaw corpus music build`"
        )
    records: dict[str, dict[str, Any]] = {}
    for r in read_jsonl(root / MANIFEST):
        if (root / r["path"]).is_file():
            records[r["clip_id"]] = r  # the last record of a re-rendered clip wins
    ordered = [records[k] for k in sorted(records)]
    split_names = [_split_of(_group_key(r), seed, val_fraction, test_fraction) for r in ordered]
    splits = {
        name: np.array([i for i, s in enumerate(split_names) if s == name], dtype=np.int64)
        for name in ("train", "val", "test")
    }
    return MusicCorpus(
        root=root,
        clip_ids=[r["clip_id"] for r in ordered],
        paths=[(root / r["path"]).resolve() for r in ordered],
        tags=[{str(k): str(v) for k, v in r["tags"].items()} for r in ordered],
        captions=[str(r["caption"]) for r in ordered],
        titles=[str(r.get("title") or "") for r in ordered],
        durations=np.array([float(r["duration"]) for r in ordered], dtype=np.float32),
        sources=[dict(r.get("source", {})) for r in ordered],
        splits=splits,
        meta={
            "render": [r.get("render", {}) for r in ordered],
            "split_seed": seed,
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
        },
    )
