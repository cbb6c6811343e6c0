"""The OpenMoji image–text corpus: captions, splits, deliberately misaligned pairs, build and loader.

**Captions** come from the real metadata: the annotation, then up to ``max_tags`` keywords (OpenMoji's own tags
first, then the Unicode CLDR keywords, de-duplicated, the annotation itself dropped), then the group and subgroup,
e.g. ``"grinning face — smile, happy, cheerful, ...; group: smileys-emotion / face-smiling"``. Skin-tone variants
have no tags of their own and borrow those of their base emoji.

**Skin-tone variants** (2,030 of 4,495) are near-duplicates of their base emoji (same drawing, other skin colour).
They are kept in the manifest with ``is_skintone: true`` and a ``base_id``, but :func:`load_imagetext_corpus`
leaves them out unless ``include_skintones=True``: five recoloured copies of one hand would otherwise outweigh
the rest of the corpus and make in-batch negatives trivially confusable.

**Splits** (train/val/test, 80/10/10 by default) are drawn by a seeded hash of a *split group*: emojis sharing the
annotation of their base emoji (the *concept*) or a byte-identical rendered PNG are merged into one group. So every
skin-tone variant follows its base emoji, the 11 concepts OpenMoji draws twice (a Unicode emoji plus an older
OpenMoji extra, e.g. "brain", "donkey", "keyboard") stay together, and so do the 207 sets of pixel-identical images
(e.g. "farmer" / "man farmer", "family" / "family: man, woman, boy", "white flag" / "white rectangle"), which would
otherwise leak test images into train. The group's key is the smallest concept in it; hashing keeps an emoji's split
stable when the catalogue grows.

**Misaligned pairs** reproduce the noisy web image–text pairs a real encoder trains on. In the train split a
share (default 10 %, seeded, exact per stratum: ``round(share * n)`` among base emojis and separately among
skin-tone variants) of pairs get the caption of another train emoji, drawn from a different subgroup and a
different split group (neither the same concept nor an identical image) so it is really wrong; ``misaligned``,
``true_caption`` and ``caption_source_id`` record the truth. The clean pair of such an image is *not* in train (as
in real noisy data). Val and test keep every clean pair (``kind == "eval_clean"``) plus a labelled set of extra
misaligned pairs of the same images (``kind == "eval_misaligned"``; by default one per image, because AUC does not
depend on prevalence and more positives give a tighter estimate) with captions drawn from the same split. Detection
AUC is measured on ``splits["val_detect"]`` (clean + misaligned rows) with ``misaligned`` as the label.

Files of a build directory: ``manifest.jsonl`` (one pair per line), ``failures.jsonl`` (SVGs no renderer could
render), ``build.json`` (configuration, counts, timings), ``png-<size>-<background>/<HEXCODE>.png`` (plus that
directory's ``renders.jsonl`` log of which renderer produced each file) and ``LICENSE-openmoji.txt``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from workloads.imagetext.render import (
    RenderJob,
    background_tag,
    check_renderers,
    parse_background,
    render_pngs,
)
from workloads.imagetext.source import (
    OPENMOJI_LICENSE,
    OPENMOJI_VERSION,
    OpenMojiEntry,
    default_corpus_dir,
    fetch_openmoji,
    load_openmoji_entries,
)

SPLITS = ("train", "val", "test")
KIND_TRAIN = "train"
KIND_CLEAN = "eval_clean"
KIND_MISALIGNED = "eval_misaligned"
MANIFEST = "manifest.jsonl"
FAILURES = "failures.jsonl"
BUILD_INFO = "build.json"
RENDER_LOG = "renders.jsonl"


def default_imagetext_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Default build directory: ``<corpus cache>/imagetext/openmoji-<version>`` (see ``default_corpus_dir``)."""
    return default_corpus_dir(cache_dir) / "imagetext" / f"openmoji-{OPENMOJI_VERSION}"


# ---------------------------------------------------------------------------------------------------------------
# Captions, splits and the pair plan (pure functions of the metadata)
# ---------------------------------------------------------------------------------------------------------------


def caption_tags(entry: OpenMojiEntry, base: OpenMojiEntry | None = None) -> list[str]:
    """Keywords used in an entry's caption.

    Args:
        entry: The emoji.
        base: Its base emoji; a skin-tone variant without tags of its own borrows the base's.

    Returns:
        OpenMoji tags then CLDR tags, de-duplicated case-insensitively, without the annotation itself.
    """
    src = entry
    if not entry.tags and not entry.openmoji_tags and base is not None:
        src = base
    seen = {entry.annotation.lower(), src.annotation.lower()}
    out: list[str] = []
    for tag in (*src.openmoji_tags, *src.tags):
        key = tag.lower()
        if key not in seen:
            seen.add(key)
            out.append(tag)
    return out


def make_caption(annotation: str, tags: Sequence[str], group: str, subgroup: str, max_tags: int | None = 10) -> str:
    """Formats a caption: ``"<annotation> — <tag>, <tag>; group: <group> / <subgroup>"``.

    Args:
        annotation: Emoji name.
        tags: Keywords, most useful first.
        group: Emoji group.
        subgroup: Emoji subgroup.
        max_tags: Keep at most this many tags; ``None`` keeps all.
    """
    kept = list(tags) if max_tags is None else list(tags)[:max_tags]
    head = f"{annotation} — {', '.join(kept)}" if kept else annotation
    return f"{head}; group: {group} / {subgroup}"


def concept_key(entry: OpenMojiEntry, by_id: dict[str, OpenMojiEntry]) -> str:
    """Concept of an entry: the lower-cased annotation of its base emoji."""
    base = by_id.get(entry.base_id, entry)
    return base.annotation.strip().lower() or base.id


def split_groups(
    entries: Sequence[OpenMojiEntry],
    by_id: dict[str, OpenMojiEntry],
    image_keys: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Merges emojis that must share a split: same concept, or same image key (union–find).

    Args:
        entries: Emojis to group.
        by_id: All known entries by id (to find base emojis).
        image_keys: Optional ``id -> image hash``; equal hashes are merged.

    Returns:
        ``id -> split key``, the smallest concept of the id's group.
    """
    parent = {e.id: e.id for e in entries}

    def find(x: str) -> str:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    def union_all(buckets: dict[str, list[str]]) -> None:
        for members in buckets.values():
            root = find(members[0])
            for m in members[1:]:
                other = find(m)
                if other != root:
                    parent[other] = root

    concept = {e.id: concept_key(e, by_id) for e in entries}
    by_concept: dict[str, list[str]] = {}
    for e in entries:
        by_concept.setdefault(concept[e.id], []).append(e.id)
    union_all(by_concept)
    if image_keys:
        by_image: dict[str, list[str]] = {}
        for e in entries:
            if image_keys.get(e.id):
                by_image.setdefault(image_keys[e.id], []).append(e.id)
        union_all(by_image)
    smallest: dict[str, str] = {}
    for e in entries:
        root = find(e.id)
        smallest[root] = min(smallest.get(root, concept[e.id]), concept[e.id])
    return {e.id: smallest[find(e.id)] for e in entries}


def assign_split(key: str, split_seed: int = 0, val_share: float = 0.1, test_share: float = 0.1) -> str:
    """Deterministic split of one split key from a seeded SHA-256 hash.

    Args:
        key: Split key (see :func:`split_groups`).
        split_seed: Seed mixed into the hash.
        val_share: Expected share of split groups in val.
        test_share: Expected share of split groups in test.

    Returns:
        ``"train"``, ``"val"`` or ``"test"``.
    """
    digest = hashlib.sha256(f"{split_seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2.0**64
    if u < test_share:
        return "test"
    if u < test_share + val_share:
        return "val"
    return "train"


@dataclass(frozen=True)
class ManifestRow:
    """One image–caption pair of the manifest.

    Attributes:
        pair_id: Unique row id: the hexcode, or ``"<hexcode>~mis"`` for an extra misaligned eval pair.
        id: Hexcode of the image.
        emoji: The emoji character sequence.
        png: PNG path relative to the build directory (``""`` before rendering).
        annotation: Real annotation of the image's emoji.
        tags: Its CLDR keywords (as in the source; empty for variants and extras).
        openmoji_tags: Its OpenMoji keywords.
        group: Emoji group.
        subgroup: Emoji subgroup.
        is_skintone: True for skin-tone variants.
        skintone: ``""`` or the tone(s), e.g. ``"3"`` or ``"1,2"``.
        skintone_combination: ``""``, ``"single"`` or ``"multiple"``.
        base_id: Hexcode of the base emoji (``id`` for base emojis).
        split: ``"train"``, ``"val"`` or ``"test"``.
        split_key: Key of the split group (see :func:`split_groups`); rows sharing it are near-identical.
        image_md5: MD5 of the PNG file (``""`` when unknown); equal values mean pixel-identical images.
        kind: ``"train"``, ``"eval_clean"`` or ``"eval_misaligned"``.
        caption: The caption paired with the image (wrong when ``misaligned``).
        misaligned: True when ``caption`` describes another emoji.
        true_caption: The correct caption of the image (equals ``caption`` when aligned).
        caption_source_id: Hexcode whose caption is used (``id`` when aligned).
        renderer: ``"cairosvg"`` or ``"rsvg-convert"`` (``""`` when unknown).
    """

    pair_id: str
    id: str
    emoji: str
    png: str
    annotation: str
    tags: list[str]
    openmoji_tags: list[str]
    group: str
    subgroup: str
    is_skintone: bool
    skintone: str
    skintone_combination: str
    base_id: str
    split: str
    split_key: str
    image_md5: str
    kind: str
    caption: str
    misaligned: bool
    true_caption: str
    caption_source_id: str
    renderer: str = ""

    def to_json(self) -> str:
        """One JSON line (UTF-8 text, not ASCII-escaped)."""
        return json.dumps(asdict(self), ensure_ascii=False)


def _pick_source(
    target: OpenMojiEntry,
    pools: Sequence[Sequence[OpenMojiEntry]],
    group: dict[str, str],
    rng: np.random.Generator,
) -> OpenMojiEntry | None:
    """Draws the emoji whose caption replaces ``target``'s.

    Tries, in order: another subgroup and split group within the first pool (the same split), another split group
    within it, then the same two rules over the other pools. Returns ``None`` only when there is a single group.
    """
    tg = group[target.id]
    rules = (
        lambda e: e.subgroup != target.subgroup and group[e.id] != tg,
        lambda e: group[e.id] != tg,
    )
    for pool in pools:
        for rule in rules:
            cands = [e for e in pool if rule(e)]
            if cands:
                return cands[int(rng.integers(len(cands)))]
    return None


def plan_pairs(
    entries: Sequence[OpenMojiEntry],
    *,
    misaligned_share: float = 0.1,
    eval_misaligned_share: float = 1.0,
    seed: int = 0,
    split_seed: int = 0,
    val_share: float = 0.1,
    test_share: float = 0.1,
    max_tags: int | None = 10,
    image_keys: Mapping[str, str] | None = None,
) -> list[ManifestRow]:
    """Turns OpenMoji entries into manifest rows: captions, splits and misaligned pairs (no rendering).

    Deterministic for fixed arguments. Misaligned captions always come from a *base* emoji of the same split (so
    no caption text leaks across splits) with another subgroup and split group whenever one exists.

    Args:
        entries: Emojis to include (e.g. the successfully rendered ones), in any order.
        misaligned_share: Share of train pairs whose caption is replaced, per stratum (base / skin-tone).
        eval_misaligned_share: Extra misaligned pairs in val and test per clean image, per stratum
            (at most one per image, so values above 1 act as 1).
        seed: Seed of the misalignment draws.
        split_seed: Seed of the split hash.
        val_share: Share of split groups in val.
        test_share: Share of split groups in test.
        max_tags: Tags kept per caption.
        image_keys: Optional ``id -> image hash`` (the build passes PNG MD5s): identical images share a split and
            are never used as each other's wrong caption.

    Returns:
        Rows in source order; an extra misaligned eval row follows its clean row.
    """
    if not 0.0 <= misaligned_share <= 1.0:
        raise ValueError(f"misaligned_share must be in [0, 1], got {misaligned_share}")
    if eval_misaligned_share < 0.0:
        raise ValueError(f"eval_misaligned_share must be >= 0, got {eval_misaligned_share}")
    if val_share < 0 or test_share < 0 or val_share + test_share >= 1.0:
        raise ValueError(f"need val_share, test_share >= 0 with a sum below 1, got {val_share}, {test_share}")
    ordered = sorted(entries, key=lambda e: (e.order, e.id))
    by_id = {e.id: e for e in ordered}
    group = split_groups(ordered, by_id, image_keys)
    split = {e.id: assign_split(group[e.id], split_seed, val_share, test_share) for e in ordered}
    captions = {
        e.id: make_caption(e.annotation, caption_tags(e, by_id.get(e.base_id)), e.group, e.subgroup, max_tags)
        for e in ordered
    }
    base_pool = {s: [e for e in ordered if not e.is_skintone and split[e.id] == s] for s in SPLITS}

    rng = np.random.default_rng(seed)
    swapped: dict[str, str] = {}  # train id -> caption source id
    extra: dict[str, str] = {}  # eval id -> caption source id of its extra misaligned pair
    for s in SPLITS:
        share = misaligned_share if s == "train" else min(1.0, eval_misaligned_share)
        other_pools = [base_pool[o] for o in SPLITS if o != s]
        for skin in (False, True):
            stratum = [e for e in ordered if split[e.id] == s and e.is_skintone == skin]
            k = int(round(share * len(stratum)))
            if k == 0:
                continue
            chosen = np.sort(rng.choice(len(stratum), size=k, replace=False))
            for j in chosen:
                target = stratum[int(j)]
                src = _pick_source(target, [base_pool[s], *other_pools], group, rng)
                if src is None:
                    continue
                (swapped if s == "train" else extra)[target.id] = src.id

    rows: list[ManifestRow] = []
    for e in ordered:
        s = split[e.id]
        row = ManifestRow(
            pair_id=e.id,
            id=e.id,
            emoji=e.emoji,
            png="",
            annotation=e.annotation,
            tags=list(e.tags),
            openmoji_tags=list(e.openmoji_tags),
            group=e.group,
            subgroup=e.subgroup,
            is_skintone=e.is_skintone,
            skintone=e.skintone,
            skintone_combination=e.skintone_combination,
            base_id=e.base_id,
            split=s,
            split_key=group[e.id],
            image_md5=(image_keys or {}).get(e.id, ""),
            kind=KIND_TRAIN if s == "train" else KIND_CLEAN,
            caption=captions[e.id],
            misaligned=False,
            true_caption=captions[e.id],
            caption_source_id=e.id,
        )
        if e.id in swapped:
            src_id = swapped[e.id]
            row = replace(row, caption=captions[src_id], misaligned=True, caption_source_id=src_id)
        rows.append(row)
        if e.id in extra:
            src_id = extra[e.id]
            rows.append(
                replace(
                    row,
                    pair_id=f"{e.id}~mis",
                    kind=KIND_MISALIGNED,
                    caption=captions[src_id],
                    misaligned=True,
                    caption_source_id=src_id,
                )
            )
    return rows


# ---------------------------------------------------------------------------------------------------------------
# Build
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class BuildReport:
    """What one :func:`build_imagetext_corpus` call did.

    Attributes:
        out_dir: Build directory.
        manifest: Path of ``manifest.jsonl``.
        entries: Emojis selected for the build.
        rendered: PNGs rendered by this call.
        cached: PNGs already present (skipped).
        failures: One dict per SVG that no renderer could render (also in ``failures.jsonl``).
        fallback_ids: Emojis whose PNG came from ``rsvg-convert`` (this or an earlier build).
        rows: Manifest rows written.
        seconds: Wall time of the whole call.
        render_seconds: Wall time of the rendering step.
    """

    out_dir: Path
    manifest: Path
    entries: int
    rendered: int
    cached: int
    failures: list[dict[str, Any]]
    fallback_ids: list[str]
    rows: int
    seconds: float
    render_seconds: float


def _read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)


def _disk_bytes(path: Path) -> tuple[int, int]:
    """``(apparent bytes, allocated bytes)`` of all files below ``path``."""
    apparent = allocated = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.stat(os.path.join(root, name))
            apparent += st.st_size
            allocated += st.st_blocks * 512
    return apparent, allocated


def build_imagetext_corpus(
    out_dir: str | os.PathLike[str] | None = None,
    *,
    size: int = 128,
    background: str | None = "#ffffff",
    misaligned_share: float = 0.1,
    eval_misaligned_share: float = 1.0,
    seed: int = 0,
    split_seed: int = 0,
    val_share: float = 0.1,
    test_share: float = 0.1,
    max_tags: int | None = 10,
    ids: Sequence[str] | None = None,
    limit: int | None = None,
    workers: int | None = None,
    cache_dir: str | os.PathLike[str] | None = None,
    package_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> BuildReport:
    """Fetches OpenMoji, renders the missing PNGs and writes the manifest. Resumable and idempotent.

    Only PNGs missing from ``png-<size>-<background>/`` are rendered, so an interrupted build picks up where it
    stopped and a repeated build renders nothing. SVGs no renderer manages are left out of the manifest and listed
    in ``failures.jsonl`` (they are retried by the next build). The pair plan (:func:`plan_pairs`) runs on the
    rendered emojis only.

    Args:
        out_dir: Build directory (default :func:`default_imagetext_dir`).
        size: PNG width and height in pixels.
        background: Colour composited under the transparent SVGs (white by default), or ``None`` for RGBA PNGs.
        misaligned_share: Share of train pairs with a wrong caption.
        eval_misaligned_share: Extra misaligned val/test pairs per clean image.
        seed: Seed of the misalignment draws.
        split_seed: Seed of the split hash.
        val_share: Share of split groups in val.
        test_share: Share of split groups in test.
        max_tags: Tags kept per caption.
        ids: Build only these hexcodes (e.g. a small sample for tests).
        limit: Build only the first ``limit`` emojis (after ``ids``).
        workers: Render processes (``None``: all cores; ``0``: in this process).
        cache_dir: Corpus cache holding the npm install (see ``default_corpus_dir``).
        package_dir: Use this openmoji package root instead of fetching.
        progress: Show a progress bar.

    Returns:
        A :class:`BuildReport`.

    Raises:
        RuntimeError: cairosvg cannot be imported (``pip install cairosvg``), or the npm fetch fails.
        KeyError: ``ids`` names an unknown hexcode.
    """
    t0 = time.perf_counter()
    if size < 8:
        raise ValueError(f"size must be >= 8, got {size}")
    tools = check_renderers()
    if tools["cairosvg"] is None:
        raise RuntimeError("cairosvg cannot be imported: pip install cairosvg (and Debian libcairo2)")
    out = default_imagetext_dir(cache_dir) if out_dir is None else Path(out_dir).expanduser()
    pkg = Path(package_dir) if package_dir is not None else fetch_openmoji(cache_dir)
    entries = load_openmoji_entries(pkg)
    if ids is not None:
        by_id = {e.id: e for e in entries}
        unknown = [i for i in ids if i not in by_id]
        if unknown:
            raise KeyError(f"unknown openmoji hexcodes: {unknown[:10]}")
        wanted = set(ids)
        entries = [e for e in entries if e.id in wanted]
    if limit is not None:
        entries = entries[:limit]

    bg = parse_background(background)
    png_dir_name = f"png-{size}-{background_tag(bg)}"
    png_dir = out / png_dir_name
    png_dir.mkdir(parents=True, exist_ok=True)
    log_path = png_dir / RENDER_LOG
    renderer_of = {r["id"]: r["renderer"] for r in _read_jsonl(log_path)}

    todo = [e for e in entries if not (png_dir / f"{e.id}.png").is_file()]
    jobs = [RenderJob(e.id, str(e.svg), str(png_dir / f"{e.id}.png")) for e in todo]
    t_render = time.perf_counter()
    results = render_pngs(jobs, size=size, background=bg, workers=workers, progress=progress)
    render_seconds = time.perf_counter() - t_render
    with open(log_path, "a", encoding="utf-8") as fh:
        for r in results:
            if r.ok:
                renderer_of[r.id] = r.renderer
                fh.write(json.dumps({"id": r.id, "renderer": r.renderer, "seconds": round(r.seconds, 5)}) + "\n")
    svg_of = {e.id: str(e.svg) for e in todo}
    failures = [{"id": r.id, "svg": svg_of[r.id], "error": r.error} for r in results if not r.ok]
    _write_text_atomic(out / FAILURES, "".join(json.dumps(f, ensure_ascii=False) + "\n" for f in failures))

    failed = {f["id"] for f in failures}
    ok_entries = [e for e in entries if e.id not in failed]
    image_keys = {
        e.id: hashlib.md5((png_dir / f"{e.id}.png").read_bytes(), usedforsecurity=False).hexdigest() for e in ok_entries
    }
    rows = plan_pairs(
        ok_entries,
        misaligned_share=misaligned_share,
        eval_misaligned_share=eval_misaligned_share,
        seed=seed,
        split_seed=split_seed,
        val_share=val_share,
        test_share=test_share,
        max_tags=max_tags,
        image_keys=image_keys,
    )
    rows = [replace(r, png=f"{png_dir_name}/{r.id}.png", renderer=renderer_of.get(r.id, "")) for r in rows]
    manifest = out / MANIFEST
    _write_text_atomic(manifest, "".join(r.to_json() + "\n" for r in rows))
    licence = pkg / "LICENSE.txt"
    if licence.is_file():
        shutil.copyfile(licence, out / "LICENSE-openmoji.txt")

    fallback = sorted(e.id for e in ok_entries if renderer_of.get(e.id) == "rsvg-convert")
    seconds = time.perf_counter() - t0
    apparent, allocated = _disk_bytes(png_dir)
    info = {
        "source": {
            "package": "openmoji",
            "version": json.loads((pkg / "package.json").read_text()).get("version", OPENMOJI_VERSION),
            "license": OPENMOJI_LICENSE,
            "package_dir": str(pkg),
        },
        "config": {
            "size": size,
            "background": None if bg is None else "#" + background_tag(bg),
            "png_dir": png_dir_name,
            "misaligned_share": misaligned_share,
            "eval_misaligned_share": eval_misaligned_share,
            "seed": seed,
            "split_seed": split_seed,
            "val_share": val_share,
            "test_share": test_share,
            "max_tags": max_tags,
            "subset": ids is not None or limit is not None,
        },
        "build": {
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "seconds": round(seconds, 3),
            "render_seconds": round(render_seconds, 3),
            "entries": len(entries),
            "rendered": sum(1 for r in results if r.ok),
            "cached": len(entries) - len(todo),
            "failed": len(failures),
            "fallback_ids": fallback,
            "png_bytes": apparent,
            "png_bytes_on_disk": allocated,
            "renderers": tools,
        },
    }
    _write_text_atomic(out / BUILD_INFO, json.dumps(info, indent=2, ensure_ascii=False) + "\n")
    return BuildReport(
        out_dir=out,
        manifest=manifest,
        entries=len(entries),
        rendered=info["build"]["rendered"],
        cached=info["build"]["cached"],
        failures=failures,
        fallback_ids=fallback,
        rows=len(rows),
        seconds=seconds,
        render_seconds=render_seconds,
    )


# ---------------------------------------------------------------------------------------------------------------
# Loader
# ---------------------------------------------------------------------------------------------------------------


@dataclass(frozen=True, eq=False)
class ImageTextCorpus:
    """Image–caption pairs of a build, column-wise (row ``i`` is one pair).

    An image can appear in two rows in val/test (its clean pair and an extra misaligned pair); in train it appears
    once, with a wrong caption when ``misaligned[i]``.

    Attributes:
        root: Build directory.
        pair_ids: Unique row ids (``"<hexcode>"`` or ``"<hexcode>~mis"``).
        ids: Hexcode of each row's image.
        base_ids: Hexcode of the base emoji (equals ``ids`` for base emojis).
        png_paths: Absolute PNG path of each row.
        captions: Caption paired with the image (wrong when misaligned).
        true_captions: Correct caption of the image.
        caption_source_ids: Hexcode whose caption is in ``captions``.
        annotations: Real annotation of the image's emoji.
        tags: CLDR keywords of the image's emoji.
        openmoji_tags: OpenMoji keywords of the image's emoji.
        groups: Emoji group per row.
        subgroups: Emoji subgroup per row.
        skintones: ``""`` or tone(s) per row.
        is_skintone: ``bool[n]`` skin-tone variant flag.
        misaligned: ``bool[n]`` caption describes another emoji.
        split: ``str[n]`` ``"train"``/``"val"``/``"test"``.
        kind: ``str[n]`` ``"train"``/``"eval_clean"``/``"eval_misaligned"``.
        splits: Row indices (``int64``): ``"train"`` (noisy train pairs), ``"val"``/``"test"`` (clean pairs only),
            ``"val_detect"``/``"test_detect"`` (clean + misaligned pairs, label = ``misaligned``).
        size: PNG side in pixels.
        meta: Contents of ``build.json`` plus ``include_skintones``.
    """

    root: Path
    pair_ids: list[str]
    ids: list[str]
    base_ids: list[str]
    png_paths: list[Path]
    captions: list[str]
    true_captions: list[str]
    caption_source_ids: list[str]
    annotations: list[str]
    tags: list[list[str]]
    openmoji_tags: list[list[str]]
    groups: list[str]
    subgroups: list[str]
    skintones: list[str]
    is_skintone: np.ndarray
    misaligned: np.ndarray
    split: np.ndarray
    kind: np.ndarray
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    size: int = 128
    meta: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.pair_ids)

    def image(self, i: int) -> np.ndarray:
        """Decodes the image of row ``i``.

        Returns:
            ``uint8[H, W, 3]``. RGBA builds (``background=None``) are composited onto white here.
        """
        with Image.open(self.png_paths[i]) as img:
            if img.mode in ("RGBA", "LA", "P"):
                rgba = img.convert("RGBA")
                canvas = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
                return np.asarray(Image.alpha_composite(canvas, rgba).convert("RGB"))
            return np.asarray(img.convert("RGB"))

    def images(self, rows: Sequence[int] | np.ndarray) -> np.ndarray:
        """Decodes several rows into ``uint8[len(rows), H, W, 3]``."""
        if not len(rows):
            return np.zeros((0, self.size, self.size, 3), np.uint8)
        return np.stack([self.image(int(i)) for i in rows])

    def summary(self) -> dict[str, Any]:
        """Counts per split: images, pairs, misaligned pairs (JSON-friendly)."""
        out: dict[str, Any] = {
            "pairs": len(self),
            "images": len(set(self.ids)),
            "skintone_images": len({i for i, s in zip(self.ids, self.is_skintone, strict=True) if s}),
        }
        for s in SPLITS:
            m = self.split == s
            out[s] = {
                "images": len({i for i, keep in zip(self.ids, m, strict=True) if keep}),
                "pairs": int(m.sum()),
                "misaligned": int((m & self.misaligned).sum()),
            }
        return out


def _splits_of(split: np.ndarray, kind: np.ndarray) -> dict[str, np.ndarray]:
    out = {"train": np.flatnonzero(split == "train")}
    for s in ("val", "test"):
        out[s] = np.flatnonzero((split == s) & (kind == KIND_CLEAN))
        out[f"{s}_detect"] = np.flatnonzero(split == s)
    return {k: v.astype(np.int64) for k, v in out.items()}


def load_imagetext_corpus(
    dir: str | os.PathLike[str] | None = None,
    include_skintones: bool = False,
) -> ImageTextCorpus:
    """Loads a built corpus.

    Args:
        dir: Build directory (default :func:`default_imagetext_dir`, honouring ``$THAW_CORPUS_DIR``).
        include_skintones: Keep the skin-tone variants (near-duplicates of their base emoji; left out by default).

    Returns:
        An :class:`ImageTextCorpus` in manifest order.

    Raises:
        FileNotFoundError: No ``manifest.jsonl`` (run ``thaw corpus imagetext build``).
    """
    root = default_imagetext_dir() if dir is None else Path(dir).expanduser()
    manifest = root / MANIFEST
    if not manifest.is_file():
        raise FileNotFoundError(f"no {manifest}: build it with `thaw corpus imagetext build --out {root}`")
    rows = [r for r in _read_jsonl(manifest) if include_skintones or not r["is_skintone"]]
    info_path = root / BUILD_INFO
    meta: dict[str, Any] = json.loads(info_path.read_text()) if info_path.is_file() else {}
    meta["include_skintones"] = include_skintones
    split = np.array([r["split"] for r in rows], dtype="<U5")
    kind = np.array([r["kind"] for r in rows], dtype="<U15")
    return ImageTextCorpus(
        root=root,
        pair_ids=[r["pair_id"] for r in rows],
        ids=[r["id"] for r in rows],
        base_ids=[r["base_id"] for r in rows],
        png_paths=[root / r["png"] for r in rows],
        captions=[r["caption"] for r in rows],
        true_captions=[r["true_caption"] for r in rows],
        caption_source_ids=[r["caption_source_id"] for r in rows],
        annotations=[r["annotation"] for r in rows],
        tags=[list(r["tags"]) for r in rows],
        openmoji_tags=[list(r["openmoji_tags"]) for r in rows],
        groups=[r["group"] for r in rows],
        subgroups=[r["subgroup"] for r in rows],
        skintones=[r["skintone"] for r in rows],
        is_skintone=np.array([bool(r["is_skintone"]) for r in rows], dtype=bool),
        misaligned=np.array([bool(r["misaligned"]) for r in rows], dtype=bool),
        split=split,
        kind=kind,
        splits=_splits_of(split, kind),
        size=int(meta.get("config", {}).get("size", 128)),
        meta=meta,
    )


def corpus_stats(dir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Statistics of a build: emoji counts, per-split pairs and misaligned counts, failures, timings, disk size.

    Args:
        dir: Build directory (default :func:`default_imagetext_dir`).
    """
    root = default_imagetext_dir() if dir is None else Path(dir).expanduser()
    full = load_imagetext_corpus(root, include_skintones=True)
    rows = _read_jsonl(root / MANIFEST)
    images = {r["id"]: r for r in rows if r["kind"] != KIND_MISALIGNED}
    per_split: dict[str, Any] = {}
    for s in SPLITS:
        sel = [r for r in rows if r["split"] == s]
        base = [r for r in sel if not r["is_skintone"]]
        per_split[s] = {
            "images": len({r["id"] for r in sel}),
            "base_images": len({r["id"] for r in base}),
            "split_groups": len({r["split_key"] for r in sel}),
            "pairs": len(sel),
            "misaligned": sum(r["misaligned"] for r in sel),
            "base_pairs": len(base),
            "base_misaligned": sum(r["misaligned"] for r in base),
        }
    renderers = Counter(r["renderer"] or "unknown" for r in images.values())
    build = full.meta.get("build", {})
    return {
        "dir": str(root),
        "version": full.meta.get("source", {}).get("version"),
        "config": full.meta.get("config", {}),
        "images": len(images),
        "base": sum(1 for r in images.values() if not r["is_skintone"]),
        "skintone": sum(1 for r in images.values() if r["is_skintone"]),
        "with_cldr_tags": sum(1 for r in images.values() if r["tags"]),
        "with_any_tags": sum(1 for r in images.values() if r["tags"] or r["openmoji_tags"]),
        "identical_image_sets": sum(
            1 for c in Counter(r["image_md5"] for r in images.values() if r["image_md5"]).values() if c > 1
        ),
        "split_groups": len({r["split_key"] for r in images.values()}),
        "groups": dict(Counter(r["group"] for r in images.values()).most_common()),
        "renderers": dict(renderers),
        "failures": len(_read_jsonl(root / FAILURES)),
        "splits": per_split,
        "build_seconds": build.get("seconds"),
        "render_seconds": build.get("render_seconds"),
        "png_bytes": build.get("png_bytes"),
        "png_bytes_on_disk": build.get("png_bytes_on_disk"),
    }
