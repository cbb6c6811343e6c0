import base64
import io
import json

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from contracts.events import ContentNew, DeadLetter, UserEvent, example_events
from infra.settings import MediaSettings
from streams.cores.decode import MediaBytes, MediaCaps, Rejected, dead_letter, decode_event, decode_media, item_text
from streams.media_fetch import media_bytes

CAPS = {"max_image_bytes": 1 << 20, "max_audio_bytes": 1 << 22, "max_audio_s": 30.0}


def _media(ev: ContentNew, policy: MediaSettings | None = None, **caps):
    """The engine's two steps: the media bytes (inline or fetched: I/O), then the pure decoding."""
    raw = media_bytes(ev, max_image_bytes=caps["max_image_bytes"], max_audio_bytes=caps["max_audio_bytes"],
                      policy=policy)
    return raw if isinstance(raw, Rejected) else decode_media(raw, MediaCaps(**caps))


def _content(**kw) -> ContentNew:
    base = {k: v for k, v in example_events()["content.new"].items() if k != "audio"}
    return ContentNew.model_validate({**base, **kw})


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGBA", (8, 6), (255, 0, 0, 128)).save(buf, format="PNG")
    return buf.getvalue()


def _wav(seconds: float, sr: int = 16000) -> bytes:
    buf = io.BytesIO()
    t = np.arange(int(seconds * sr)) / sr
    sf.write(buf, np.stack([np.sin(2 * np.pi * 440 * t)] * 2, axis=1).astype(np.float32), sr, format="WAV")
    return buf.getvalue()


def test_invalid_json_schema_and_oversize_are_classified():
    assert decode_event(b"{not json", UserEvent, 1000).error_class == "InvalidJSON"
    bad = json.dumps({**example_events()["user.events"], "action": "dance"}).encode()
    r = decode_event(bad, UserEvent, 10_000)
    assert isinstance(r, Rejected) and r.error_class == "SchemaViolation" and "action" in r.error
    assert decode_event(b"x" * 101, UserEvent, 100).error_class == "Oversize"
    assert decode_event(None, UserEvent, 100).error_class == "InvalidJSON"
    good = decode_event(json.dumps(example_events()["user.events"]).encode(), UserEvent, 10_000)
    assert isinstance(good, UserEvent)


def test_media_decoding_inline_and_file(tmp_path):
    ev = _content(image={"data_b64": base64.b64encode(_png()).decode()},
                  audio={"data_b64": base64.b64encode(_wav(0.5)).decode()})
    m = _media(ev, **CAPS)
    assert not isinstance(m, Rejected)
    assert m.image.pixels.shape == (6, 8, 3)
    # half-transparent red on white
    assert tuple(m.image.pixels[0, 0]) == (255, 127, 127) or tuple(m.image.pixels[0, 0]) == (255, 128, 128)
    assert abs(m.audio.duration_s - 0.5) < 1e-3
    p = tmp_path / "a.png"
    p.write_bytes(_png())
    # file:// media is read only under a configured media root (none by default: see test_media_hostile)
    m2 = _media(_content(image={"uri": f"file://{p}"}), **CAPS, policy=MediaSettings(file_roots=(tmp_path,)))
    assert m2.image is not None


def test_corrupt_and_oversize_media_rejected(tmp_path):
    corrupt = _content(image={"data_b64": base64.b64encode(b"\x89PNG garbage").decode()})
    r = _media(corrupt, **CAPS)
    assert isinstance(r, Rejected) and r.error_class == "CorruptMedia"
    bad_audio = _content(audio={"data_b64": base64.b64encode(b"RIFF0000WAVEjunk").decode()})
    assert _media(bad_audio, **CAPS).error_class == "CorruptMedia"
    long_audio = _content(audio={"data_b64": base64.b64encode(_wav(2.0)).decode()})
    r = _media(long_audio, **{**CAPS, "max_audio_s": 1.0})
    assert r.error_class == "CorruptMedia" and "cap" in r.error
    missing = _content(image={"uri": f"file://{tmp_path}/nope.png"})
    assert _media(missing, **CAPS).error_class == "CorruptMedia"
    s3 = _content(image={"uri": "s3://user:secret@bucket/x.png"})
    r = _media(s3, **CAPS)
    assert r.error_class == "CorruptMedia" and "secret" not in r.error
    big = _content(image={"data_b64": base64.b64encode(_png()).decode()})
    assert _media(big, **{**CAPS, "max_image_bytes": 10}).error_class == "Oversize"


def test_decoding_is_pure_bytes_in():
    """The core decodes bytes it is given; a URI is never its business (an event with only a URI gives no bytes to
    the core unless the engine fetched them)."""
    m = decode_media(MediaBytes(_png(), _wav(0.25)), MediaCaps(**CAPS))
    assert not isinstance(m, Rejected) and m.image.pixels.shape == (6, 8, 3) and abs(m.audio.duration_s - 0.25) < 1e-3
    assert decode_media(MediaBytes(None, None), MediaCaps(**CAPS)) == type(m)(None, None)
    r = decode_media(MediaBytes(b"\x89PNG garbage", None), MediaCaps(**CAPS))
    assert isinstance(r, Rejected) and r.error_class == "CorruptMedia"
    r = decode_media(MediaBytes(None, _wav(0.25)), MediaCaps(**{**CAPS, "max_audio_bytes": 100}))
    assert isinstance(r, Rejected) and r.error_class == "Oversize"
    plain = _content(image=None)
    assert media_bytes(plain, max_image_bytes=1, max_audio_bytes=1) == MediaBytes(None, None)


def test_dead_letter_keeps_original_bytes():
    dl = dead_letter(topic="t", partition=2, offset=7, key=b"k", value=b"\xff\x00raw",
                     why=Rejected("InvalidJSON", "bad"))
    back = DeadLetter.model_validate_json(dl.to_bytes())
    assert base64.b64decode(back.value_b64) == b"\xff\x00raw"
    assert (back.partition, back.offset, back.error_class) == (2, 7, "InvalidJSON")


def test_item_text_is_the_offline_document_format():
    assert item_text(_content(text="hello", tags=["a", "b"])) == "hello | a, b"
    assert item_text(_content(text="", tags=["x"])) == "x"
    assert item_text(_content(text=" only text ", tags=[])) == "only text"


@pytest.mark.datasets  # Last.fm HetRec 2011 from THAW_DATASETS_DIR
def test_stream_documents_equal_the_offline_ones():
    """Models trained offline on dataset items see exactly the text the stream embeds for the same content."""
    from workloads.datasets import load_dataset

    ds = load_dataset("lastfm")
    for i in [0, 1, 2, 50, 500]:
        tags = ds.item_tags[i][:20]
        ev = _content(text=ds.item_text[i], tags=[t[:64] for t in tags])
        assert item_text(ev) == ds.item_document(i)
