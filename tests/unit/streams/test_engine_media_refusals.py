"""Engine.handle_content with hostile media URIs (docs/THREAT_MODEL.md): each refused item is dead-lettered with a
reason naming the rule, promptly, and the rest of the batch (the partition) is indexed. No services: in-memory
fakes for the encoder, Milvus and Redis; real files, a real FIFO and a real HTTP server on 127.0.0.1."""

from __future__ import annotations

import base64
import io
import json
import os
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from PIL import Image

from contracts.events import ContentNew, DeadLetter, example_events
from contracts.topics import Topics
from infra.settings import MediaSettings, Settings
from streams.cores.decode import Rejected
from streams.engine import Engine, Record
from streams.media_fetch import media_bytes
from tests.fakes import FakeFeaturizer, FakeText, InMemoryEngineState, InMemoryItems

TOPICS = Topics.for_prefix("unit.")


def _png() -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 6), (10, 20, 30)).save(buf, format="PNG")
    return buf.getvalue()


class _Drip(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):  # noqa: N802
        self.send_response(200)
        self.end_headers()
        try:
            for _ in range(200):
                self.wfile.write(b"\x00")
                self.wfile.flush()
                time.sleep(0.05)
        except OSError:
            pass


@pytest.fixture
def drip_server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Drip)
    srv.daemon_threads = True
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{srv.server_address[1]}"
    srv.shutdown()
    srv.server_close()


def _item(item_id: str, **media) -> dict:
    base = {k: v for k, v in example_events()["content.new"].items() if k not in ("audio", "image")}
    return {**base, "item_id": item_id, **media}


def test_hostile_media_is_dead_lettered_by_rule_and_the_batch_flows_on(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    (root / "ok.png").write_bytes(_png())
    os.mkfifo(root / "pipe.wav")
    (tmp_path / "secret.png").write_bytes(_png())
    eng = Engine(Settings(media=MediaSettings(file_roots=(root,), fetch_timeout_s=1.0)), TOPICS, FakeText(),
                 items=InMemoryItems(), users=InMemoryEngineState(), group_id="g", featurizer=FakeFeaturizer())
    hostile = {
        "zero": ({"audio": {"uri": "file:///dev/zero"}}, "media.file_outside_root"),
        "fifo": ({"audio": {"uri": f"file://{root}/pipe.wav"}}, "media.not_regular_file"),
        "outside": ({"image": {"uri": f"file://{tmp_path}/secret.png"}}, "media.file_outside_root"),
        "environ": ({"image": {"uri": "file:///proc/self/environ"}}, "media.file_outside_root"),
        "loopback": ({"image": {"uri": "http://127.0.0.1:9/x.png"}}, "media.private_address"),
        "metadata": ({"image": {"uri": "http://169.254.169.254/latest/meta-data/"}}, "media.private_address"),
    }
    payloads = [_item(f"bad:{k}", **m) for k, (m, _) in hostile.items()]
    payloads += [_item("good:text"), _item("good:file", image={"uri": f"file://{root}/ok.png"})]
    records = [Record(TOPICS.content_new, 0, off, p["item_id"].encode(), json.dumps(p).encode(), None)
               for off, p in enumerate(payloads)]
    t0 = time.monotonic()
    res = eng.handle_content(records)
    assert time.monotonic() - t0 < 5.0
    assert res.ok == 2 and sorted(eng.items.rows) == ["good:file", "good:text"]
    dls = [DeadLetter.model_validate_json(o.value) for o in res.dlq]
    assert all(o.topic == TOPICS.content_dlq for o in res.dlq)
    got = {json.loads(base64.b64decode(d.value_b64))["item_id"]: d for d in dls}
    assert sorted(got) == sorted(f"bad:{k}" for k in hostile)
    for k, (_, rule) in hostile.items():
        d = got[f"bad:{k}"]
        assert d.error_class == "CorruptMedia" and d.error.startswith(f"{rule}: "), (k, d.error)
    assert res.rejected == {"CorruptMedia": len(hostile)}


def test_one_time_budget_per_item_covers_its_image_and_audio(drip_server):
    """Two slow-drip URIs on one item share the item's budget: refused after ~one budget, not two."""
    pol = MediaSettings(allowed_private_networks=("127.0.0.1/32",), fetch_timeout_s=1.0)
    ev = ContentNew.model_validate(_item("slow", image={"uri": f"{drip_server}/a.png"},
                                         audio={"uri": f"{drip_server}/b.wav"}))
    t0 = time.monotonic()
    r = media_bytes(ev, max_image_bytes=1 << 20, max_audio_bytes=1 << 20, policy=pol)
    took = time.monotonic() - t0
    assert isinstance(r, Rejected) and r.error.startswith("media.timeout: "), r
    assert 0.9 < took < 1.8, took  # two budgets would be 2 s
