"""The content featuriser over real (briefly trained) encoders: fields, presence masks, shared log-mels, versions,
and per-item refusal of audio the frontend cannot use."""

from __future__ import annotations

import numpy as np
import pytest

from encoders.featurizer import FIELDS, ContentFeaturizer, ContentInput
from encoders.media import DecodedAudio, decode_image
from encoders.registry import ModelRegistry
from encoders.text import TextEncoder, ensure_minilm
from tests.media_models import imagetext_corpus, music_clips, published_media_models
from workloads.imagetext import load_imagetext_corpus
from workloads.music import load_music_corpus

pytestmark = pytest.mark.train  # trains the media encoders briefly: `make test-fast` leaves it out


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    return ModelRegistry(published_media_models(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    mc = load_music_corpus(music_clips(base))
    ic = load_imagetext_corpus(imagetext_corpus(base))
    row = int(ic.splits["test"][0])
    img = decode_image(ic.png_paths[row].read_bytes())
    return [DecodedAudio(mc.waveform(i), 16_000) for i in range(len(mc))], img, ic.captions[row]


def test_mixed_batch_fields_and_masks(registry, media):
    audios, img, caption = media
    fz = ContentFeaturizer.from_registry(registry, threads=1)
    assert fz.fields == FIELDS and fz.missing == ()
    items = [
        ContentInput("a reel on fiddle. tags: irish, folk", audio=audios[0]),
        ContentInput(caption, image=img),
        ContentInput("just a comment about the chorus"),
        ContentInput("a chorale. tags: bach", audio=audios[2]),
    ]
    fb = fz.featurize(items)
    assert fb.names == FIELDS and fb.present.shape == (4, len(FIELDS)) and not fb.errors
    assert fb.modalities(0) == ["text", "audio_clip", "audio_mae"]
    assert fb.modalities(1) == ["text", "image", "image_text"]
    assert fb.modalities(2) == ["text"]
    assert fb.modalities(3) == ["text", "audio_clip", "audio_mae"]
    for k, name in enumerate(fb.names):
        v = fb.values[name]
        assert v.dtype == np.float32 and v.shape == (4, fz.dims()[name])
        norms = np.linalg.norm(v, axis=1)
        np.testing.assert_allclose(norms[fb.present[:, k]], 1.0, atol=1e-4)
        assert not v[~fb.present[:, k]].any(), f"absent rows of {name} must be zero"
    # the same input gives the same features as each encoder alone (batching changes nothing)
    np.testing.assert_allclose(fb.values["audio_mae"][[0, 3]], fz.audio_mae.encode([audios[0], audios[2]]),
                               atol=1e-5)
    np.testing.assert_allclose(fb.values["image"][1], fz.imagetext.encode_images([img])[0], atol=1e-5)
    np.testing.assert_allclose(fb.values["image_text"][1], fz.imagetext.fuse([img], [caption])[0][0], atol=1e-5)
    # both audio encoders share one frontend, so the log-mels are computed once per batch
    assert "audio_frontend" in fb.stage_ms and {"text", "audio_clip", "audio_mae", "image"} <= set(fb.stage_ms)
    assert fb.model_versions["audio_mae"] == "audio-mae@t1" and fb.model_versions["image"].startswith("flava")
    assert fz.featurize([]).present.shape == (0, len(FIELDS))


def test_audio_the_frontend_refuses_costs_only_its_item(registry, media):
    audios, _, _ = media
    fz = ContentFeaturizer.from_registry(registry, threads=1)
    silent = DecodedAudio(np.zeros(16_000 * 5, dtype=np.float32), 16_000)
    short = DecodedAudio(audios[1].samples[:800], 16_000)
    fb = fz.featurize([ContentInput("ok", audio=audios[1]), ContentInput("silent", audio=silent),
                       ContentInput("short", audio=short), ContentInput("text only")])
    assert set(fb.errors) == {1, 2} and all(m.startswith("audio:") for m in fb.errors.values())
    assert fb.modalities(0) == ["text", "audio_clip", "audio_mae"] and fb.modalities(3) == ["text"]
    assert not fb.present[1, 1:].any() and not fb.present[2, 1:].any()


def test_only_published_encoders_are_used(tmp_path, media):
    audios, img, _ = media
    reg = ModelRegistry(tmp_path)
    text = TextEncoder(ensure_minilm(reg), threads=1)
    fz = ContentFeaturizer.from_registry(reg, threads=1)
    assert fz.fields == ("text",) and set(fz.missing) == set(FIELDS) - {"text"}
    fb = fz.featurize([ContentInput("song", audio=audios[0]), ContentInput("pic", image=img)])
    assert fb.names == ("text",) and fb.present.all()
    np.testing.assert_allclose(fb.values["text"], text.encode(["song", "pic"]), atol=1e-5)
