"""End to end with every encoder published: tracks with real audio and moments with real images go through the
worker's featuriser; the freshness trace names the fields computed, and audio the frontend refuses is
dead-lettered while the rest of the batch is indexed."""

from __future__ import annotations

import base64
import io
import json
from datetime import UTC, datetime

import numpy as np
import pytest
import soundfile as sf
from kafka import KafkaProducer

from contracts.events import ContentIndexed, DeadLetter
from contracts.topics import Topics
from indexing.milvus_items import ItemIndex
from tests.e2e.conftest import read_topic, running_worker, wait_for
from tests.media_models import imagetext_corpus, music_clips, published_media_models
from workloads.imagetext import load_imagetext_corpus
from workloads.music import load_music_corpus

pytestmark = pytest.mark.e2e


@pytest.fixture
def media_worker(stack_settings, unique_name, tmp_path, tmp_path_factory):
    base = tmp_path_factory.getbasetemp()
    models = published_media_models(base)
    # the worker reads file:// media only under its media roots: the two corpora the test posts from
    s = stack_settings.namespaced(unique_name).with_media_roots(music_clips(base), imagetext_corpus(base))
    yield from running_worker(s, tmp_path / "worker.log", {"THAW_MODELS__DIR": str(models)})


def _wav_b64(x: np.ndarray) -> str:
    buf = io.BytesIO()
    sf.write(buf, x, 16_000, format="WAV", subtype="PCM_16")
    return base64.b64encode(buf.getvalue()).decode()


def test_tracks_and_moments_carry_their_media_features(media_worker, tmp_path_factory):
    s = media_worker.settings
    base = tmp_path_factory.getbasetemp()
    mc = load_music_corpus(music_clips(base))
    ic = load_imagetext_corpus(imagetext_corpus(base))
    now = datetime.now(UTC).isoformat()
    items = [
        {"item_id": "track:inline", "kind": "track", "creator_id": "a", "created_at": now, "text": mc.captions[0],
         "audio": {"data_b64": _wav_b64(mc.waveform(0))}},
        {"item_id": "track:uri", "kind": "track", "creator_id": "a", "created_at": now, "tags": ["chorale"],
         "audio": {"uri": f"file://{mc.paths[2]}"}},
        {"item_id": "moment:1", "kind": "moment", "creator_id": "b", "created_at": now, "text": ic.captions[0],
         "image": {"uri": f"file://{ic.png_paths[0]}"}},
        {"item_id": "comment:1", "kind": "comment", "creator_id": "c", "created_at": now, "parent_id": "track:uri",
         "text": "the second voice is lovely"},
        {"item_id": "track:silent", "kind": "track", "creator_id": "a", "created_at": now, "text": "nothing",
         "audio": {"data_b64": _wav_b64(np.zeros(16_000 * 3, dtype=np.float32))}},
    ]
    t = Topics.for_prefix(s.kafka.topic_prefix)
    p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all",
                      max_request_size=s.kafka.max_message_bytes)
    for it in items:
        p.send(t.content_new, key=it["item_id"].encode(), value=json.dumps(it).encode())
    p.flush()
    good = [it["item_id"] for it in items if it["item_id"] != "track:silent"]
    ix = ItemIndex(s.milvus, dim=384)
    wait_for(lambda: len(ix.get_rows(good)) == len(good), 90, "the four good items in Milvus", media_worker)
    traces = {tr.item_id: tr for tr in (ContentIndexed.model_validate_json(v)
                                        for v in read_topic(s, t.content_indexed, len(good), timeout_s=60))}
    assert set(traces) == set(good)
    assert traces["track:inline"].features == ["text", "audio_clip", "audio_mae"]
    assert traces["track:uri"].features == ["text", "audio_clip", "audio_mae"]
    assert traces["moment:1"].features == ["text", "image", "image_text"]
    assert traces["comment:1"].features == ["text"]
    mv = traces["moment:1"].model_versions
    assert mv["audio_mae"] == "audio-mae@t1" and mv["audio_clip"] == "musicclip-audio@t1"
    assert mv["image"] == mv["image_text"] == "flava@t1"
    assert "encode_audio_mae" in traces["track:uri"].stage_ms
    dl = [DeadLetter.model_validate_json(v) for v in read_topic(s, t.content_dlq, 1, timeout_s=60)]
    assert len(dl) == 1 and dl[0].error_class == "CorruptMedia" and "silent" in dl[0].error
    assert json.loads(base64.b64decode(dl[0].value_b64))["item_id"] == "track:silent"
    assert ix.get_rows(["track:silent"]) == []
