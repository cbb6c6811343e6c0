"""OpenMoji image–text corpus: real npm package, a 20-emoji rendered sample, and the pair plan on the full catalogue.

The npm package is fetched once into the corpus cache (``$THAW_CORPUS_DIR`` or ``~/.cache/thaw/corpora``). A missing
tool (npm, cairosvg, rsvg-convert) fails the test with the install command: nothing is skipped.
"""

import hashlib
import json
import shutil
from collections import Counter, defaultdict

import numpy as np
import pytest
from PIL import Image

from tests.thaw_cli import thaw
from workloads.imagetext import (
    OPENMOJI_VERSION,
    build_imagetext_corpus,
    check_renderers,
    corpus_stats,
    default_corpus_dir,
    default_imagetext_dir,
    fetch_openmoji,
    load_imagetext_corpus,
    load_openmoji_entries,
    plan_pairs,
    render_svg,
)

WAVING_HAND = "1F44B"  # base emoji with five single skin-tone variants
CASTILE_FLAG = "1F3F4-E0065-E0073-E0063-E006D-E007F"  # the one SVG cairosvg 2.9 cannot render
BRAIN_PAIR = ("1F9E0", "E319")  # "brain" drawn twice: Unicode emoji and OpenMoji extra
FAMILY_PAIR = ("1F46A", "1F468-200D-1F469-200D-1F466")  # "family" and "family: man, woman, boy": identical PNGs


@pytest.fixture(scope="module")
def tools() -> None:
    found = check_renderers()
    if found["cairosvg"] is None:
        pytest.fail("cairosvg is not importable: pip install cairosvg", pytrace=False)
    if found["rsvg-convert"] is None:
        pytest.fail("rsvg-convert not found: apt-get install librsvg2-bin", pytrace=False)
    if shutil.which("npm") is None:
        pytest.fail("npm not found: apt-get install npm", pytrace=False)


@pytest.fixture(scope="module")
def pkg(tools):
    return fetch_openmoji()


@pytest.fixture(scope="module")
def entries(pkg):
    return load_openmoji_entries(pkg)


@pytest.fixture(scope="module")
def by_id(entries):
    return {e.id: e for e in entries}


@pytest.fixture(scope="module")
def sample_ids(entries):
    """20 emojis: fixed anchors (skin-tone family, duplicate concept, the fallback SVG) plus distinct subgroups."""
    anchors = ["1F600", WAVING_HAND, *[f"{WAVING_HAND}-{t}" for t in ("1F3FB", "1F3FC", "1F3FD", "1F3FE", "1F3FF")]]
    anchors += [*BRAIN_PAIR, *FAMILY_PAIR, CASTILE_FLAG]
    picked = list(anchors)
    seen_sub = {e.subgroup for e in entries if e.id in anchors}
    for e in entries:
        if len(picked) == 20:
            break
        if not e.is_skintone and e.subgroup not in seen_sub:
            picked.append(e.id)
            seen_sub.add(e.subgroup)
    assert len(picked) == 20
    return picked


@pytest.fixture(scope="module")
def built(tmp_path_factory, pkg, sample_ids):
    out = tmp_path_factory.mktemp("imagetext")
    report = build_imagetext_corpus(out, ids=sample_ids, workers=2, progress=False, package_dir=pkg)
    return out, report


def _manifest(out):
    return [json.loads(line) for line in (out / "manifest.jsonl").read_text().splitlines()]


def test_package_layout_and_counts(pkg, entries) -> None:
    assert json.loads((pkg / "package.json").read_text())["version"] == OPENMOJI_VERSION
    assert fetch_openmoji() == pkg  # idempotent: verified install is reused
    assert len(entries) == 4495
    assert sum(e.is_skintone for e in entries) == 2030
    assert sum(bool(e.tags) for e in entries) == 1923
    assert all(e.svg.is_file() for e in entries)
    assert len({e.id for e in entries}) == len(entries)


def test_env_overrides_cache_dir(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("THAW_CORPUS_DIR", str(tmp_path))
    assert default_corpus_dir() == tmp_path
    assert default_imagetext_dir().parent.parent == tmp_path
    assert default_corpus_dir(tmp_path / "x") == tmp_path / "x"


def test_sample_pngs_decode_with_content(built, sample_ids) -> None:
    out, report = built
    assert report.failures == [] and report.rendered == 20
    corpus = load_imagetext_corpus(out, include_skintones=True)
    assert set(corpus.ids) == set(sample_ids)
    for i in range(len(corpus)):
        img = corpus.image(i)
        assert img.shape == (128, 128, 3) and img.dtype == np.uint8
        colours = np.unique(img.reshape(-1, 3), axis=0)
        assert len(colours) > 3, f"{corpus.ids[i]} renders as {len(colours)} colour(s)"
        assert (img == 255).all(axis=2).mean() > 0.2, f"{corpus.ids[i]}: white background expected"
        assert (img.sum(axis=2) < 100).any(), f"{corpus.ids[i]}: black outline missing"
    with Image.open(corpus.png_paths[0]) as im:
        assert im.mode == "RGB" and im.size == (128, 128)
    assert corpus.images([0, 1]).shape == (2, 128, 128, 3)


def test_fallback_to_rsvg(built, by_id) -> None:
    out, _ = built
    svg = by_id[CASTILE_FLAG].svg
    img, used = render_svg(svg, size=64, renderer="rsvg-convert")
    assert used == "rsvg-convert" and img.size == (64, 64)
    assert len(np.unique(np.asarray(img).reshape(-1, 3), axis=0)) > 3
    try:
        render_svg(svg, size=64, renderer="cairosvg")
        cairo_ok = True
    except RuntimeError:
        cairo_ok = False
    row = next(r for r in _manifest(out) if r["id"] == CASTILE_FLAG)
    assert row["renderer"] == ("cairosvg" if cairo_ok else "rsvg-convert")


def test_captions_from_real_metadata(built, by_id) -> None:
    out, _ = built
    for r in _manifest(out):
        e = by_id[r["id"]]
        assert r["annotation"] == e.annotation
        assert r["true_caption"].startswith(e.annotation)
        assert r["true_caption"].endswith(f"; group: {e.group} / {e.subgroup}")
        if not r["misaligned"]:
            assert r["caption"] == r["true_caption"] and r["caption_source_id"] == r["id"]
    grin = next(r for r in _manifest(out) if r["id"] == "1F600")
    assert grin["true_caption"].startswith("grinning face — smile, happy, ")
    variant = next(r for r in _manifest(out) if r["id"] == f"{WAVING_HAND}-1F3FD")
    assert variant["is_skintone"] and variant["skintone"] == "3" and variant["base_id"] == WAVING_HAND
    assert variant["true_caption"].startswith("waving hand: medium skin tone — ")  # tags borrowed from the base
    assert "wave" in variant["true_caption"]


def test_sample_misaligned_pairs_are_wrong(built, by_id) -> None:
    out, _ = built
    rows = _manifest(out)
    fam = [r for r in rows if r["id"] in FAMILY_PAIR and r["kind"] != "eval_misaligned"]
    assert fam[0]["image_md5"] == fam[1]["image_md5"] and fam[0]["split"] == fam[1]["split"]
    md5 = {r["id"]: r["image_md5"] for r in rows}
    mis = [r for r in rows if r["misaligned"]]
    assert mis, "the sample should contain misaligned pairs (eval sets get one per image)"
    for r in mis:
        src = by_id[r["caption_source_id"]]
        assert r["caption"] != r["true_caption"]
        assert src.id != r["id"] and src.subgroup != r["subgroup"]
        assert r["caption"].startswith(src.annotation)
        assert md5.get(src.id) != md5[r["id"]]


@pytest.fixture(scope="module")
def svg_keys(entries):
    """Identical SVG files stand in for identical PNGs (the build hashes the PNGs)."""
    return {e.id: hashlib.md5(e.svg.read_bytes()).hexdigest() for e in entries}


def test_full_catalogue_plan(entries, by_id, svg_keys) -> None:
    rows = plan_pairs(entries, misaligned_share=0.1, seed=0, image_keys=svg_keys)
    assert plan_pairs(entries, misaligned_share=0.1, seed=0, image_keys=svg_keys) == rows  # deterministic
    assert [r.caption for r in plan_pairs(entries, seed=1)] != [r.caption for r in rows]
    true_caption = {r.id: r.true_caption for r in rows}

    # Train: exactly round(10 %) misaligned per stratum.
    for skin in (False, True):
        train = [r for r in rows if r.split == "train" and r.is_skintone == skin]
        share = sum(r.misaligned for r in train) / len(train)
        assert abs(share - 0.1) <= 1 / len(train), (skin, share)
    # Val/test: one clean pair per image plus one labelled misaligned pair per image (default share 1.0).
    for s in ("val", "test"):
        kinds = Counter(r.kind for r in rows if r.split == s)
        assert kinds["eval_clean"] == kinds["eval_misaligned"] > 100
        assert not any(r.misaligned for r in rows if r.split == s and r.kind == "eval_clean")
    assert not any(r.kind.startswith("eval") for r in rows if r.split == "train")

    split_of = {r.id: r.split for r in rows}
    for r in rows:
        if not r.misaligned:
            continue
        src = by_id[r.caption_source_id]
        assert r.caption != r.true_caption and r.caption == true_caption[src.id]
        assert src.subgroup != r.subgroup, r.pair_id
        assert not src.is_skintone and split_of[src.id] == r.split  # no caption text crosses splits
        assert src.annotation.lower() != by_id[r.base_id].annotation.lower()
        assert svg_keys[src.id] != svg_keys[r.id], f"{r.pair_id}: wrong caption of an identical image"
    assert len({r.pair_id for r in rows}) == len(rows)


def test_split_disjoint_by_base_emoji_and_image(entries, svg_keys) -> None:
    rows = plan_pairs(entries, image_keys=svg_keys)
    splits_of_base = defaultdict(set)
    splits_of_image = defaultdict(set)
    for r in rows:
        splits_of_base[r.base_id].add(r.split)
        splits_of_image[svg_keys[r.id]].add(r.split)
    assert all(len(s) == 1 for s in splits_of_base.values())
    assert all(len(s) == 1 for s in splits_of_image.values()), "identical images straddle splits"
    assert sum(1 for r in rows if r.image_md5) == len(rows)
    split_of = {r.id: r.split for r in rows}
    assert split_of[BRAIN_PAIR[0]] == split_of[BRAIN_PAIR[1]]  # same concept drawn twice stays together
    base_counts = Counter(r.split for r in rows if not r.is_skintone and r.kind != "eval_misaligned")
    n = sum(base_counts.values())
    assert 0.75 < base_counts["train"] / n < 0.85
    assert 0.07 < base_counts["val"] / n < 0.13 and 0.07 < base_counts["test"] / n < 0.13
    # another split seed moves emojis
    other = {r.id: r.split for r in plan_pairs(entries, split_seed=1)}
    assert other != split_of


def test_loader_views(built) -> None:
    out, _ = built
    base = load_imagetext_corpus(out)
    full = load_imagetext_corpus(out, include_skintones=True)
    assert not base.is_skintone.any()
    assert full.is_skintone.sum() == 5
    assert len(full) - len(base) == int(full.is_skintone.sum())
    for c in (base, full):
        assert len(c.captions) == len(c.ids) == len(c.png_paths) == len(c.misaligned) == len(c.split)
        train, val, val_detect = c.splits["train"], c.splits["val"], c.splits["val_detect"]
        assert set(val) <= set(val_detect)
        assert not c.misaligned[val].any() and not c.misaligned[c.splits["test"]].any()
        assert c.misaligned[val_detect].sum() == len(val_detect) - len(val)
        assert set(train).isdisjoint(val_detect) and set(train).isdisjoint(c.splits["test_detect"])
        ids_by_split = {s: {c.ids[i] for i in c.splits[s]} for s in ("train", "val", "test")}
        assert ids_by_split["train"].isdisjoint(ids_by_split["val"] | ids_by_split["test"])
        assert ids_by_split["val"].isdisjoint(ids_by_split["test"])
    assert base.size == 128 and base.meta["source"]["version"] == OPENMOJI_VERSION


def test_rebuild_is_resumable(built, pkg, sample_ids) -> None:
    out, _ = built
    before = (out / "manifest.jsonl").read_bytes()
    again = build_imagetext_corpus(out, ids=sample_ids, workers=2, progress=False, package_dir=pkg)
    assert again.rendered == 0 and again.cached == 20 and again.failures == []
    assert (out / "manifest.jsonl").read_bytes() == before
    (out / "png-128-ffffff" / "1F600.png").unlink()
    third = build_imagetext_corpus(out, ids=sample_ids, workers=0, progress=False, package_dir=pkg)
    assert third.rendered == 1 and third.cached == 19
    assert (out / "manifest.jsonl").read_bytes() == before


def test_stats_cli(built, capsys) -> None:
    out, _ = built
    assert thaw("corpus", "imagetext", "stats", "--dir", str(out), "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats == corpus_stats(out)
    assert stats["images"] == 20 and stats["skintone"] == 5 and stats["failures"] == 0
    # variants follow their base; the two "brain" drawings and the two identical family images are one group each
    assert stats["split_groups"] == 20 - 5 - 1 - 1 and stats["identical_image_sets"] == 1
    assert sum(s["images"] for s in stats["splits"].values()) == 20
    assert thaw("corpus", "imagetext", "stats", "--dir", str(out)) == 0
    assert "skin-tone 5" in capsys.readouterr().out
