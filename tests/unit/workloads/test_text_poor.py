"""Text-poor new posts in the simulator: nothing hidden is published, the truth is unchanged, the share is kept."""

import json
import os
from collections import Counter

import numpy as np
import pytest
from scipy import stats

from contracts.events import ContentNew
from workloads.simulator import (
    TEXT_POOR_CAPTIONS,
    Asset,
    CommunitySimulator,
    SimConfig,
    build_catalogue,
    opaque_media_path,
    pick_caption,
    words,
)

COMPOSERS = ("bach", "mozart", "chopin", "satie", "ravel", "brahms")
INSTRUMENTS = ("organ", "piano", "flute", "harp")
GROUPS = ("food-drink", "animals-nature", "travel-places", "activities")
CFG = dict(seed=11, initial_users=60, initial_items=150, steps=25, items_per_step=6, users_per_step=1)
SHARE = {"track": 0.5, "moment": 0.5}


@pytest.fixture(scope="module")
def catalogue(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpora")
    (root / "music" / "clips").mkdir(parents=True)
    (root / "emoji" / "png").mkdir(parents=True)
    assets = []
    for j in range(48):
        comp, inst = COMPOSERS[j % 6], INSTRUMENTS[j % 4]
        wav = root / "music" / "clips" / f"{comp}_{inst}_{j}.wav"
        wav.write_bytes(b"RIFF")
        assets.append(Asset("track", f"A baroque piece by {comp.title()}, played on {inst}; D minor, slow tempo.",
                            (f"composer:{comp}", f"instrument:{inst}", f"era:era{j % 3}"), audio=str(wav),
                            source=f"music21:{comp}_{j}"))
        assets.append(Asset("dynamic", f"{comp.title()} on {inst}: our new recording is up",
                            (f"composer:{comp}", f"instrument:{inst}")))
    for j in range(40):
        g = GROUPS[j % 4]
        png = root / "emoji" / "png" / f"{1000 + j:X}.png"
        png.write_bytes(b"\x89PNG")
        assets.append(Asset("moment", f"emoji {j} sparkle heart — smile, joy; group: {g}", (f"moment:{g}",),
                            image=str(png)))
    return build_catalogue(assets, max_topics=64)


def _run(cat, **extra):
    sim = CommunitySimulator(cat, SimConfig(**CFG, **extra))
    return sim, list(sim.stream())


def test_a_text_poor_post_publishes_nothing_of_its_hidden_tags_or_real_text(catalogue):
    sim, evs = _run(catalogue, text_poor_share=SHARE)
    content = [e for e in evs if e.topic == "content.new"]
    poor = [(it, e) for it, e in zip(sim.items, content, strict=True) if it.text_poor]
    assert {it.kind for it, _ in poor} >= {"track", "moment", "comment"}
    template = words("Comment on : love it the")
    for it, ev in poor:
        assert ev.text_poor and "text_poor" not in ev.data
        ContentNew.model_validate({**ev.data, "created_at": "2026-12-04T00:00:00+00:00"})
        published = json.dumps(ev.data, ensure_ascii=False)
        hidden = it.true_tags if it.kind != "comment" else sim.items[int(it.parent_id.split(":")[-1])].true_tags
        assert hidden, it
        for tag in hidden:
            assert tag not in published
            assert tag.split(":", 1)[1] not in published  # not even the tag's value (e.g. in a media file name)
        real = (it.real or it.asset) if it.kind != "comment" else sim.items[int(it.parent_id.split(":")[-1])].real
        shown = words(ev.data["text"] + " " + " ".join(ev.data["tags"]))
        for m in ("audio", "image"):
            if m in ev.data:
                shown |= words(os.path.basename(ev.data[m]["uri"]))
                target = os.path.realpath(ev.data[m]["uri"].removeprefix("file://"))
                assert target == os.path.realpath(getattr(real, m))  # the same media bytes, an opaque name
        assert not (shown - template) & words(real.text + " " + " ".join(real.tags))
        assert ev.data["tags"] == []
        if it.kind != "comment":
            assert ev.data["text"] in TEXT_POOR_CAPTIONS
    # text-rich posts publish their real text and tags, as before
    rich = [(it, e) for it, e in zip(sim.items, content, strict=True) if not it.text_poor]
    assert rich and all(e.data["tags"] == list(it.asset.tags) and it.real is None for it, e in rich)


def test_relevance_and_behaviour_are_unchanged_by_the_share(catalogue):
    rich_sim, rich = _run(catalogue)
    poor_sim, poor = _run(catalogue, text_poor_share=SHARE)
    assert any(it.text_poor for it in poor_sim.items) and not any(it.text_poor for it in rich_sim.items)
    assert np.array_equal(rich_sim.true_relevance(), poor_sim.true_relevance())
    assert [(e.topic, e.data) for e in rich if e.topic != "content.new"] == \
           [(e.topic, e.data) for e in poor if e.topic != "content.new"]
    assert [it.true_tags for it in rich_sim.items if it.kind != "comment"] == \
           [it.true_tags for it in poor_sim.items if it.kind != "comment"]
    # and the same seed draws the same posts text-poor
    again, _ = _run(catalogue, text_poor_share=SHARE)
    assert [it.text_poor for it in again.items] == [it.text_poor for it in poor_sim.items]


@pytest.mark.parametrize("share", [0.2, 0.5, 0.9])
def test_the_share_is_honoured(catalogue, share):
    sim, _ = _run(catalogue, text_poor_share={"track": share, "moment": share})
    for kind in ("track", "moment"):
        flags = [it.text_poor for it in sim.items if it.kind == kind]
        n, x = len(flags), sum(flags)
        lo, hi = stats.binom.ppf([0.0005, 0.9995], n, share)
        assert lo <= x <= hi, (kind, x, n, share)
    counts = Counter(it.kind for it in sim.items if it.text_poor)
    assert counts["dynamic"] == counts["fan_group"] == 0  # kinds not named stay text-rich


def test_the_default_is_text_rich_and_bad_shares_are_refused(catalogue):
    sim, _ = _run(catalogue)
    assert not any(it.text_poor for it in sim.items)
    with pytest.raises(ValueError, match="text_poor_share"):
        SimConfig(text_poor_share={"track": 1.5})
    with pytest.raises(ValueError, match="text_poor_share"):
        SimConfig(text_poor_share={"song": 0.5})


def test_captions_avoid_the_real_words_and_media_names_are_opaque():
    assert len(TEXT_POOR_CAPTIONS) >= 20
    hidden = "new demo " + " ".join(w for c in TEXT_POOR_CAPTIONS[:4] for w in words(c))
    for d in np.linspace(0, 0.999, 50):
        assert not words(pick_caption(float(d), hidden)) & words(hidden)
    a = opaque_media_path("/corpus/clips/bach_organ_1.wav")
    assert a.startswith("/corpus/opaque/") and a.endswith(".wav") and "bach" not in a
    assert a == opaque_media_path("/corpus/clips/bach_organ_1.wav") != opaque_media_path("/corpus/clips/b.wav")
