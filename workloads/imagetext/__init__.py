"""Image–text corpus for the FLAVA-style image–text encoder, built from OpenMoji (CC BY-SA 4.0).

* :func:`fetch_openmoji` — ``npm install`` the ``openmoji`` package into the corpus cache once.
* :func:`build_imagetext_corpus` — render the colour SVGs to PNG (cairosvg, ``rsvg-convert`` fallback, process
  pool, resumable), caption them from the real annotations and tags, split by concept and plant a controlled share
  of misaligned pairs; writes ``manifest.jsonl``.
* :func:`load_imagetext_corpus` — the pairs as an :class:`ImageTextCorpus`.

Command line: ``thaw corpus imagetext build [--size 128] [--misaligned 0.1] [--seed 0] [--out DIR]`` and
``thaw corpus imagetext stats [--dir DIR] [--json]``. See :mod:`workloads.imagetext.corpus` for the
caption, split and misalignment rules.
"""

from __future__ import annotations

from workloads.imagetext.corpus import (
    BuildReport,
    ImageTextCorpus,
    ManifestRow,
    build_imagetext_corpus,
    caption_tags,
    corpus_stats,
    default_imagetext_dir,
    load_imagetext_corpus,
    make_caption,
    plan_pairs,
)
from workloads.imagetext.render import check_renderers, render_svg
from workloads.imagetext.source import (
    ENV_CORPUS_DIR,
    OPENMOJI_VERSION,
    OpenMojiEntry,
    default_corpus_dir,
    fetch_openmoji,
    load_openmoji_entries,
)

__all__ = [
    "ENV_CORPUS_DIR",
    "OPENMOJI_VERSION",
    "BuildReport",
    "ImageTextCorpus",
    "ManifestRow",
    "OpenMojiEntry",
    "build_imagetext_corpus",
    "caption_tags",
    "check_renderers",
    "corpus_stats",
    "default_corpus_dir",
    "default_imagetext_dir",
    "fetch_openmoji",
    "load_imagetext_corpus",
    "load_openmoji_entries",
    "make_caption",
    "plan_pairs",
    "render_svg",
]
