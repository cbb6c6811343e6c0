"""End to end: an item id of 128 two-byte characters, once a poison record, goes to the DLQ, and the records after
it are indexed: its partition is not blocked.

The input used to pass the event contract (ids were at most 128 *characters*) and make Milvus refuse the whole batch
(its VARCHAR(128) primary key counts *bytes*: 256), which is what the poison isolation of the content agent was
tested with here. The contract now counts ids in UTF-8 bytes as Milvus does, so the same record is refused at
decoding (``SchemaViolation``) before it reaches a sink; the bisection of a batch a sink fails on is covered by
``tests/unit/streams/test_poison_isolate.py`` (no other real input that passes the contract and fails a sink is known
today).
"""

from __future__ import annotations

import base64
import json
import time
from datetime import UTC, datetime

import httpx
import pytest
from kafka import KafkaProducer
from prometheus_client.parser import text_string_to_metric_families

from contracts.events import DeadLetter
from contracts.topics import Topics
from indexing.milvus_items import ItemIndex
from infra.lag import consumer_lag
from tests.e2e.conftest import read_topic, wait_for

pytestmark = pytest.mark.e2e

POISON_ID = "é" * 128  # 128 characters, 256 UTF-8 bytes (over the contract's and Milvus' 128 bytes)


def _item(item_id: str, i: int) -> dict[str, object]:
    now = datetime.now(UTC).isoformat()
    return {"item_id": item_id, "kind": "track", "creator_id": "artist-p", "created_at": now,
            "text": f"a calm piano piece number {i}", "tags": ["piano"], "produced_at": now}


def _samples(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    body = httpx.get(url, timeout=10).text
    return {(x.name, tuple(sorted(x.labels.items()))): x.value
            for fam in text_string_to_metric_families(body) for x in fam.samples}


def test_a_poison_record_is_dead_lettered_and_the_next_100_are_indexed(worker):
    s = worker.settings
    t = Topics.for_prefix(s.kafka.topic_prefix)
    p = KafkaProducer(bootstrap_servers=s.kafka.bootstrap_servers, acks="all", linger_ms=20)
    poison = json.dumps(_item(POISON_ID, -1)).encode()
    meta = p.send(t.content_new, key=POISON_ID.encode(), value=poison).get(timeout=30)
    good = [f"calm{i:03d}" for i in range(100)]
    for i, item_id in enumerate(good):
        p.send(t.content_new, key=item_id.encode(), value=json.dumps(_item(item_id, i)).encode())
    p.flush()
    p.close()

    ix = ItemIndex(s.milvus, dim=384)
    t0 = time.monotonic()
    wait_for(lambda: len(ix.get_rows(good)) == len(good), 120, "the 100 good items in Milvus", worker, poll_s=0.5)
    took = time.monotonic() - t0

    (raw,) = read_topic(s, t.content_dlq, 1)
    dl = DeadLetter.model_validate_json(raw)
    assert (dl.source_topic, dl.partition, dl.offset) == (t.content_new, meta.partition, meta.offset)
    assert base64.b64decode(dl.value_b64) == poison and base64.b64decode(dl.key_b64 or "") == POISON_ID.encode()
    assert dl.error_class == "SchemaViolation"
    assert "UTF-8 bytes" in dl.error
    assert "Traceback" not in dl.error and len(dl.error) < 400
    assert ix.get_rows([POISON_ID]) == []
    assert read_topic(s, t.content_dlq, 2, timeout_s=3.0) == [raw]  # dead-lettered once

    # everything is acked: the content partitions' committed offsets reach their ends (Faust commits every 1 s)
    def caught_up() -> bool:
        rows = [r for r in consumer_lag(s, [s.stream.app_id]) if r.topic == t.content_new]
        return len(rows) == s.kafka.partitions and all(r.lag == 0 for r in rows)

    wait_for(caught_up, 30, "content.new committed to its end", worker, poll_s=0.5)

    m = _samples(worker.metrics_url())
    assert m[("thaw_events_total", (("outcome", "dlq"), ("topic", t.content_new)))] == 1
    assert m[("thaw_dlq_total", (("error", "SchemaViolation"), ("topic", t.content_new)))] == 1
    assert m[("thaw_events_total", (("outcome", "ok"), ("topic", t.content_new)))] == 100
    assert m[("thaw_agent_stuck_seconds", (("agent", "content"),))] == 0.0
    assert not any(name == "thaw_agent_failing" for name, _ in m)
    assert worker.alive()
    print(f"poison e2e: 100 items indexed {took:.1f}s after the produce, behind one refused record")
