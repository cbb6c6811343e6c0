"""Real music audio with text tags, for training and testing the audio encoders (MusicCLIP, Audio MAE).

* :func:`build_music_corpus` renders the music21 core corpus (folk tunes, chorales, masses, madrigals,
  quartets) through fluidsynth and the FluidR3 General MIDI soundfont into fixed-length 16 kHz mono clips,
  each tagged from the score's real metadata (composer, collection, region, era, key/mode, metre) and its
  render (instrument, tempo), with a caption built from the tags. Resumable and parallel; see
  :mod:`workloads.music.build`.
* :func:`load_music_corpus` loads a built corpus as a :class:`MusicCorpus`.
* :func:`load_singularity` lists the real recordings of Debian's ``singularity-music``; :func:`read_clip` /
  :func:`singularity_clips` cut 16 kHz mono clips from them.

Command line: ``thaw corpus music build [--clips 2000] [--seconds 10] [--workers N] [--out DIR]
[--seed 0]`` and ``thaw corpus music stats``.

Needs the Debian packages ``fluidsynth``, ``fluid-soundfont-gm`` (and ``singularity-music`` for the
recordings) and the PyPI package ``music21``.
"""

from __future__ import annotations

from workloads.music.build import (
    CORPUS_VERSION,
    ENV_CORPUS_DIR,
    BuildReport,
    ClipJob,
    CorpusEntry,
    build_music_corpus,
    corpus_stats,
    default_corpus_dir,
    list_corpus_entries,
    make_job,
    render_clip,
    stratified_order,
)
from workloads.music.loader import MusicCorpus, load_music_corpus
from workloads.music.render import SAMPLE_RATE, RenderError, render_midi_to_wav
from workloads.music.singularity import SingularityTrack, load_singularity, read_clip, singularity_clips
from workloads.music.tags import TAG_FIELDS, make_caption

__all__ = [
    "CORPUS_VERSION",
    "ENV_CORPUS_DIR",
    "SAMPLE_RATE",
    "TAG_FIELDS",
    "BuildReport",
    "ClipJob",
    "CorpusEntry",
    "MusicCorpus",
    "RenderError",
    "SingularityTrack",
    "build_music_corpus",
    "corpus_stats",
    "default_corpus_dir",
    "list_corpus_entries",
    "load_music_corpus",
    "load_singularity",
    "make_caption",
    "make_job",
    "read_clip",
    "render_clip",
    "render_midi_to_wav",
    "singularity_clips",
    "stratified_order",
]
