"""Music corpus: real renders of a few music21 corpus entries, the runaway-render guards, the singularity loader.

Needs fluidsynth + fluid-soundfont-gm + singularity-music (Debian) and music21 (PyPI). A missing dependency
fails the tests with the install hint: they are never skipped.
"""

import json
import shutil
import struct
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from tests.thaw_cli import thaw
from workloads.music import (
    SAMPLE_RATE,
    TAG_FIELDS,
    RenderError,
    build_music_corpus,
    list_corpus_entries,
    load_music_corpus,
    load_singularity,
    read_clip,
    render_midi_to_wav,
    singularity_clips,
    stratified_order,
)
from workloads.music.build import FAILURES, MANIFEST, read_jsonl
from workloads.music.render import extract_score, find_soundfont, loop_events, write_midi
from workloads.music.tags import (
    GM_INSTRUMENTS,
    MODES_BY_ERA,
    essen_region,
    key_and_mode,
    make_caption,
    normalize_composer,
)

SECONDS = 10.0
# (corpus path, number): an O'Neill ABC book tune (K:Gm), an Essen ABC book tune (Chinese), a Bach chorale
# (MusicXML, 4 parts), a Palestrina movement (Humdrum).
SOURCES = [
    ("oneills1850/0001-0050.abc", "1"),
    ("essenFolksong/han1.abc", "6"),
    ("bach/bwv101.7.mxl", None),
    ("palestrina/Agnus_01.krn", None),
]


@pytest.fixture(scope="session")
def music_deps() -> None:
    missing = []
    if shutil.which("fluidsynth") is None:
        missing.append("fluidsynth (apt-get install -y fluidsynth)")
    try:
        find_soundfont()
    except FileNotFoundError:
        missing.append("FluidR3_GM.sf2 (apt-get install -y fluid-soundfont-gm)")
    try:
        import music21  # noqa: F401
    except ImportError:
        missing.append("music21 (pip install music21)")
    if missing:
        pytest.fail("missing music corpus dependencies: " + "; ".join(missing), pytrace=False)


@pytest.fixture(scope="module")
def entries(music_deps):
    by_key = {(e.corpus_path, e.number): e for e in list_corpus_entries()}
    missing = [s for s in SOURCES if s not in by_key]
    assert not missing, f"corpus entries not found in music21's metadata bundle: {missing}"
    return [by_key[s] for s in SOURCES]


@pytest.fixture(scope="module")
def built(entries, tmp_path_factory):
    out = tmp_path_factory.mktemp("music21")
    report = build_music_corpus(
        n_clips=len(entries), seconds=SECONDS, workers=2, out_dir=out, seed=0, entries=entries, progress=False
    )
    return out, report


def _records(out: Path) -> dict[tuple[str, str | None], dict]:
    return {(r["source"]["corpus_path"], r["source"]["number"]): r for r in read_jsonl(out / MANIFEST)}


def test_build_renders_every_source(built):
    out, report = built
    assert report.failed == 0, read_jsonl(out / FAILURES)
    assert report.rendered == len(SOURCES) and report.total_in_manifest == len(SOURCES)
    assert set(_records(out)) == set(SOURCES)


def test_clips_are_16k_mono_fixed_length_and_not_silent(built):
    out, _ = built
    for rec in _records(out).values():
        info = sf.info(str(out / rec["path"]))
        assert (info.samplerate, info.channels, info.frames) == (SAMPLE_RATE, 1, int(SECONDS * SAMPLE_RATE))
        assert rec["sample_rate"] == SAMPLE_RATE and rec["duration"] == pytest.approx(SECONDS)
        x, _ = sf.read(str(out / rec["path"]), dtype="float32")
        rms = float(np.sqrt(np.mean(x**2)))
        assert rms > 0.02, (rec["clip_id"], rms)
        # music all along: no second of the clip (except the faded end) is silent
        per_second = np.sqrt(np.mean(x[: 9 * SAMPLE_RATE].reshape(9, SAMPLE_RATE) ** 2, axis=1))
        assert per_second.min() > 0.005, (rec["clip_id"], per_second)


def test_tags_follow_the_notated_score(built):
    from music21 import corpus, key, meter

    out, _ = built
    recs = _records(out)
    for (path, number), rec in recs.items():
        tags = rec["tags"]
        assert set(TAG_FIELDS) <= set(tags) and all(tags[f] for f in TAG_FIELDS), tags
        score = corpus.parse(path, number=int(number)) if number else corpus.parse(path)
        first = score.parts[0]
        ks = first.recurse().getElementsByClass(key.KeySignature).first()
        sharps = ks.sharps if ks is not None else 0
        # the key tag is consistent with the notated key signature
        tonic = tags["key"][0] + tags["key"][1:].replace("b", "-")  # "Bb" -> "B-"
        assert key.Key(tonic, tags["mode"]).sharps == sharps, (path, tags)
        ts = first.recurse().getElementsByClass(meter.TimeSignature)
        assert tags["metre"] in {t.ratioString for t in ts}, (path, tags["metre"])
        assert tags["collection"] == path.split("/")[0]
        assert tags["instrument"] in {name for _, name in GM_INSTRUMENTS}
        assert rec["render"]["program"] in {p for p, name in GM_INSTRUMENTS if name == tags["instrument"]}
        assert tags["instrument"] in rec["caption"] and tags["key"] in rec["caption"]
    oneill = recs[SOURCES[0]]["tags"]
    assert (oneill["key"], oneill["mode"], oneill["key_signature"]) == ("G", "minor", "2b")  # K:Gm
    assert oneill["composer"] == "traditional" and oneill["region"] == "ireland" and oneill["era"] == "traditional"
    assert oneill["texture"] == "monophonic"
    han = recs[SOURCES[1]]["tags"]
    assert han["region"] == "china"  # from the tune's O: field "China, Shaanxi, Shanbei"
    bach = recs[SOURCES[2]]["tags"]
    assert (bach["composer"], bach["era"], bach["texture"]) == ("Johann Sebastian Bach", "baroque", "polyphonic")
    assert bach["key_signature"] == "1b" and bach["metre"] == "4/4"
    pal = recs[SOURCES[3]]["tags"]
    assert (pal["composer"], pal["era"]) == ("Giovanni Pierluigi da Palestrina", "renaissance")


def test_rebuild_renders_nothing_new(built, entries):
    out, _ = built
    lines = (out / MANIFEST).read_text().splitlines()
    again = build_music_corpus(
        n_clips=len(entries), seconds=SECONDS, workers=2, out_dir=out, seed=0, entries=entries, progress=False
    )
    assert (again.rendered, again.failed, again.already_present) == (0, 0, len(entries))
    assert (out / MANIFEST).read_text().splitlines() == lines


def test_loader_and_split(built):
    out, _ = built
    corpus = load_music_corpus(out)
    assert len(corpus) == len(SOURCES) and corpus.sample_rate == SAMPLE_RATE
    x = corpus.waveform(0)
    assert x.dtype == np.float32 and x.shape == (int(SECONDS * SAMPLE_RATE),)
    assert len(corpus.captions) == len(corpus.tags) == len(corpus.paths) == len(SOURCES)
    idx = np.sort(np.concatenate([corpus.splits[s] for s in ("train", "val", "test")]))
    assert idx.tolist() == list(range(len(SOURCES)))
    again = load_music_corpus(out)
    assert all(np.array_equal(corpus.splits[s], again.splits[s]) for s in corpus.splits)
    assert corpus.tag_counts("collection")["bach"] == 1


def test_stats_cli(built, capsys):
    out, _ = built
    assert thaw("corpus", "music", "stats", "--out", str(out), "--json") == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["clips"] == len(SOURCES) and stats["total_duration_s"] == pytest.approx(SECONDS * len(SOURCES))
    assert stats["disk_bytes"] > 0 and set(stats["tags"]) == set(TAG_FIELDS)


@pytest.mark.parametrize(
    ("reason", "kwargs"), [("size_cap", {"max_wav_bytes": 4096}), ("timeout", {"render_timeout_s": 0.001})]
)
def test_render_guard_failures_are_recorded_not_raised(entries, tmp_path, reason, kwargs):
    report = build_music_corpus(
        n_clips=1, seconds=SECONDS, workers=1, out_dir=tmp_path, entries=entries[:1], progress=False, **kwargs
    )
    assert (report.rendered, report.failed, report.failures_by_reason) == (0, 1, {reason: 1})
    fails = read_jsonl(tmp_path / FAILURES)
    assert [f["reason"] for f in fails] == [reason] and fails[0]["source"]["corpus_path"] == SOURCES[0][0]
    assert read_jsonl(tmp_path / MANIFEST) == [] and not list((tmp_path / "clips").glob("*.wav"))
    # a known failure is not re-tried by a rerun
    again = build_music_corpus(n_clips=1, out_dir=tmp_path, entries=entries[:1], workers=1, progress=False, **kwargs)
    assert (again.rendered, again.failed) == (0, 0)


def _stuck_note_midi(path: Path) -> None:
    """An organ note-on that is never released: fluidsynth then renders forever (~60 MB/s of audio)."""
    track = bytes([0, 0xC0, 19, 0, 0x90, 60, 100, 0x83, 0x60]) + b"\xff\x2f\x00"
    path.write_bytes(b"MThd" + struct.pack(">IHHH", 6, 0, 1, 480) + b"MTrk" + struct.pack(">I", len(track)) + track)


def test_stuck_note_is_stopped_by_the_size_cap(music_deps, tmp_path):
    _stuck_note_midi(tmp_path / "stuck.mid")
    t0 = time.perf_counter()
    with pytest.raises(RenderError) as err:
        render_midi_to_wav(tmp_path / "stuck.mid", tmp_path / "out.wav", timeout_s=60, max_bytes=2 * 2**20)
    assert err.value.reason == "size_cap"
    assert time.perf_counter() - t0 < 30
    assert (tmp_path / "out.wav").stat().st_size <= 2 * 2**20


def test_stuck_note_is_stopped_by_the_timeout(music_deps, tmp_path):
    _stuck_note_midi(tmp_path / "stuck.mid")
    t0 = time.perf_counter()
    with pytest.raises(RenderError) as err:
        render_midi_to_wav(tmp_path / "stuck.mid", tmp_path / "out.wav", timeout_s=1.5, max_bytes=2**30)
    assert err.value.reason == "timeout"
    assert time.perf_counter() - t0 < 15


def test_grace_notes_are_dropped_and_every_note_is_released(music_deps, tmp_path):
    from music21 import note, stream

    part = stream.Part()
    part.append(note.Note("C4", quarterLength=1))
    part.append(note.Note("D4").getGrace())
    part.append(note.Note("E4", quarterLength=1))
    ex = extract_score(stream.Score([part]))
    assert [e.pitch for e in ex.events] == [60, 64] and all(e.duration > 0 for e in ex.events)
    looped, passes = loop_events(ex.events, ex.period, span=5.0)
    assert passes == 3 and [e.onset for e in looped] == [0.0, 1.0, 2.0, 3.0, 4.0]
    write_midi(tmp_path / "x.mid", looped, 120.0, 0)
    data = (tmp_path / "x.mid").read_bytes()
    assert data.count(bytes([0x90, 60, 80])) == data.count(bytes([0x80, 60, 0])) == 3


def test_stratified_order_caps_collections(music_deps):
    entries = list_corpus_entries()
    assert len(entries) > 14_000
    order = stratified_order(entries, seed=0)
    assert sorted(order, key=id) == sorted(entries, key=id)
    head = order[:2000]
    shares = {c: sum(e.collection == c for e in head) / len(head) for c in {e.collection for e in head}}
    assert max(shares.values()) < 0.15, shares  # Essen is 57% of the entries, ~13% here
    assert shares["essenFolksong"] > 0.1
    assert [e.corpus_path for e in stratified_order(entries, seed=0)[:50]] == [e.corpus_path for e in order[:50]]
    assert [e.corpus_path for e in stratified_order(entries, seed=1)[:50]] != [e.corpus_path for e in order[:50]]


def test_key_and_mode_rules():
    # Essen notates only the signature (K: G read as G major); a tune ending on E is E minor
    assert key_and_mode(1, 4, "G", "major") == ("E", "minor", "final")
    assert key_and_mode(-2, 7, "G", "minor") == ("G", "minor", "notated")
    # modal repertoire: final on the 2nd degree is dorian; later art music falls back to the signature
    assert key_and_mode(0, 2, None, None, MODES_BY_ERA["renaissance"]) == ("D", "dorian", "final")
    assert key_and_mode(0, 2, None, None) == ("C", "major", "signature")
    assert key_and_mode(0, 4, None, None, MODES_BY_ERA["renaissance"]) == ("E", "phrygian", "final")
    # a folk melody ending on the 3rd of its major key stays major (ABC K:C)
    assert key_and_mode(0, 4, "C", "major", MODES_BY_ERA["traditional"]) == ("C", "major", "notated")
    assert key_and_mode(2, 9, "D", "major", MODES_BY_ERA["traditional"]) == ("A", "mixolydian", "final")
    assert key_and_mode(3, 6, None, None) == ("F#", "minor", "final")
    assert key_and_mode(-3, 3, None, None) == ("Eb", "major", "final")


def test_metadata_normalisation():
    assert normalize_composer("bach", "J. S. Bach") == "Johann Sebastian Bach"
    assert normalize_composer("monteverdi", "G.B. Guarini") == "Claudio Monteverdi"  # the poet, not the composer
    assert normalize_composer("oneills1850", '"collected by F.O\'Neill"') == "traditional"
    assert normalize_composer("oneills1850", "O'Carolan") == "Turlough O'Carolan"
    assert normalize_composer("trecento", "Anonymous I-Rvat 1419") == "anonymous"
    assert normalize_composer("trecento", None) == "anonymous"
    assert essen_region("Europa, Mitteleuropa, Deutschland, Hessen ?", "essenFolksong/kinder0.abc") == "germany"
    assert essen_region("Lothringen", "essenFolksong/lot.abc") == "lorraine"
    assert essen_region("Deutschland; Frankreich", "essenFolksong/erk10.abc") == "germany"
    assert essen_region(None, "essenFolksong/han2.abc") == "china"
    caption = make_caption(
        {
            "composer": "traditional",
            "collection": "essenFolksong",
            "region": "lorraine",
            "era": "traditional",
            "instrument": "flute",
            "tempo": "fast",
            "key": "G",
            "mode": "major",
            "metre": "3/4",
            "texture": "monophonic",
        }
    )
    assert caption.startswith("A traditional folk tune from Lorraine") and "flute" in caption and "G major" in caption


def test_singularity_tracks_and_clips():
    try:
        tracks = load_singularity()
    except FileNotFoundError as exc:
        pytest.fail(str(exc), pytrace=False)
    assert len(tracks) == 16
    total = sum(t.duration for t in tracks)
    assert 60 * 60 < total < 68 * 60  # ~64 minutes
    assert {t.group for t in tracks} == {"main", "win", "lose"}
    x = read_clip(tracks[0], start_s=60.0, seconds=5.0)
    assert x.dtype == np.float32 and x.shape == (5 * SAMPLE_RATE,) and np.sqrt(np.mean(x**2)) > 0.01
    tail = read_clip(tracks[-1], start_s=tracks[-1].duration - 1.0, seconds=2.0)
    assert tail.shape == (2 * SAMPLE_RATE,)  # zero-padded past the end
    clips = list(singularity_clips(tracks[:2], seconds=3.0, max_per_track=2))
    assert [(c[0].title, c[1]) for c in clips] == [
        (tracks[0].title, 0.0),
        (tracks[0].title, 3.0),
        (tracks[1].title, 0.0),
        (tracks[1].title, 3.0),
    ]
