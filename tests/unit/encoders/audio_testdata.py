"""Real test data shared by the audio encoder tests, built once per test session (cached by base directory).

* :func:`music_clips`: three real music21 pieces rendered to 10 s 16 kHz clips with
  :func:`workloads.music.build_music_corpus` (an O'Neill reel, a Chinese Essen folksong, a Bach chorale).
* :func:`minilm_registry`: a registry holding the exported MiniLM (the frozen text model MusicCLIP is trained on).
"""

from __future__ import annotations

import functools
from pathlib import Path

import pytest

SOURCES = [
    ("oneills1850/0001-0050.abc", "1"),
    ("essenFolksong/han1.abc", "6"),
    ("bach/bwv101.7.mxl", None),
]


@functools.cache
def music_clips(base: Path) -> Path:
    """Corpus dir with the three rendered clips (fails with the install hint when a dependency is missing)."""
    from workloads.music import build_music_corpus, list_corpus_entries, load_music_corpus

    out = base / "audio-music21"
    by_key = {(e.corpus_path, e.number): e for e in list_corpus_entries()}
    missing = [s for s in SOURCES if s not in by_key]
    if missing:
        pytest.fail(f"music21 corpus entries not found: {missing}", pytrace=False)
    report = build_music_corpus(
        n_clips=len(SOURCES),
        seconds=10.0,
        workers=1,
        out_dir=out,
        seed=0,
        entries=[by_key[s] for s in SOURCES],
        progress=False,
    )
    assert report.failed == 0 and len(load_music_corpus(out)) == len(SOURCES)
    return out


@functools.cache
def minilm_registry(base: Path) -> Path:
    """Registry root with ``minilm-l6`` published."""
    from encoders.registry import ModelRegistry
    from encoders.training.export_text import export_minilm

    root = base / "audio-minilm-models"
    export_minilm(ModelRegistry(root))
    return root
