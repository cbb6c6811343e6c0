"""A model directory with every encoder published, trained briefly on real data, for featuriser and stream tests.

Built once per base directory and test session: MiniLM exported from its wheel; Audio MAE and MusicCLIP trained
two epochs at toy sizes on three real rendered music21 clips; the FLAVA-style head trained two epochs at toy size on
48 real OpenMoji pairs (frozen EfficientNet-lite0 and MiniLM backbones). The models are tiny and barely trained,
so tests check plumbing (fields, masks, versions, dead-lettering), never quality.
"""

from __future__ import annotations

import functools
from pathlib import Path

TRACK_SOURCES = [("oneills1850/0001-0050.abc", "1"), ("essenFolksong/han1.abc", "6"), ("bach/bwv101.7.mxl", None)]


@functools.cache
def music_clips(base: Path) -> Path:
    """Corpus dir with three real clips rendered through fluidsynth."""
    from workloads.music import build_music_corpus, list_corpus_entries

    out = base / "media-music21"
    by_key = {(e.corpus_path, e.number): e for e in list_corpus_entries()}
    report = build_music_corpus(n_clips=len(TRACK_SOURCES), seconds=10.0, workers=1, out_dir=out, seed=0,
                                entries=[by_key[s] for s in TRACK_SOURCES], progress=False)
    assert report.failed == 0, report
    return out


@functools.cache
def imagetext_corpus(base: Path) -> Path:
    """The built OpenMoji corpus (setup builds it), or a small one built here."""
    from workloads.imagetext import build_imagetext_corpus, fetch_openmoji, load_imagetext_corpus, load_openmoji_entries

    try:
        return load_imagetext_corpus().root
    except FileNotFoundError:
        pkg = fetch_openmoji()
        ids = [e.id for e in load_openmoji_entries(pkg) if not e.is_skintone][:80]
        out = base / "media-imagetext"
        build_imagetext_corpus(out, ids=ids, workers=2, progress=False, package_dir=pkg)
        return out


@functools.cache
def published_media_models(base: Path) -> Path:
    """Registry root with minilm-l6, audio-mae, musicclip-audio/-text and flava-image/-text/-fusion published."""
    from encoders.models.audio_mae import AudioMAEConfig
    from encoders.models.flava import FlavaConfig
    from encoders.models.musicclip import MusicCLIPConfig
    from encoders.registry import ModelRegistry
    from encoders.training.audio_mae import AudioMAETrainConfig
    from encoders.training.audio_mae import train as train_mae
    from encoders.training.export_text import export_minilm
    from encoders.training.flava import FlavaTrainConfig
    from encoders.training.flava import train as train_flava
    from encoders.training.musicclip import MusicCLIPTrainConfig
    from encoders.training.musicclip import train as train_clip

    root = base / "media-models"
    export_minilm(ModelRegistry(root))
    from workloads.imagetext import load_imagetext_corpus
    from workloads.music import load_music_corpus

    clips = load_music_corpus(music_clips(base))
    splits = ("train", "val", "test")
    train_mae(AudioMAETrainConfig(
        out_dir=str(base / "run-mae"), models_dir=str(root), epochs=2, batch_size=3,
        model=AudioMAEConfig(dim=32, depth=1, heads=2, dec_dim=16, dec_depth=1, dec_heads=2),
        train_splits=splits, val_split="train", version="t1", progress=False), clips)
    train_clip(MusicCLIPTrainConfig(
        out_dir=str(base / "run-clip"), models_dir=str(root), epochs=2, batch_size=3,
        model=MusicCLIPConfig(channels=(4, 8, 8, 16), audio_hidden=32, text_hidden=32, embed_dim=16, dropout=0.0),
        train_splits=splits, val_split="train", version="t1", progress=False), clips)
    train_flava(FlavaTrainConfig(
        model=FlavaConfig(dim=32, fusion_depth=1, fusion_heads=4, mlp_ratio=2.0, dropout=0.0),
        out_dir=str(base / "run-flava"), models_dir=str(root),
        limit=48, batch_size=16, epochs=2, warmup_epochs=1, threads=2, version="t1", progress=False),
        load_imagetext_corpus(imagetext_corpus(base)))
    return root
