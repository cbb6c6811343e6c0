"""Waiting until items are searchable in Milvus: what a producer does before it sends behaviour on new items.

Used by the replayer's composition (``thaw replay``) and the benchmarks; the replayer itself takes the waiter as
an argument (:data:`workloads.replay.IndexWaiter`), so producers do not depend on the index.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from infra.settings import Settings


def wait_indexed(settings: Settings, item_ids: list[str], timeout_s: float = 120.0, *, dim: int = 384,
                 notify: Callable[[str], None] | None = None, every_s: float = 5.0) -> int:
    """Wait until the given items are searchable in Milvus; returns how many are.

    Indexing is the worker's job: with ``notify``, it is told at once whether a worker is consuming (the stream's
    consumer group has members with partitions) and then, every ``every_s``, how many items are searchable.
    """
    from indexing.milvus_items import ItemIndex
    from infra.lag import group_is_active

    group = settings.stream.app_id
    if notify is not None:
        if group_is_active(settings, group):
            notify(f"waiting up to {timeout_s:.0f} s for the worker (consumer group {group!r}) to index "
                   f"{len(item_ids)} items")
        else:
            notify(f"no worker is consuming: consumer group {group!r} has no active members. Items are indexed only "
                   f"while a `thaw worker` runs on these topics (prefix {settings.kafka.topic_prefix!r}); start one "
                   f"in another shell. Waiting up to {timeout_s:.0f} s")
    ix = ItemIndex(settings.milvus, dim=dim)
    ix.ensure()
    pending = set(item_ids)
    t0 = time.monotonic()
    deadline = t0 + timeout_s
    next_note = t0 + every_s
    while pending and time.monotonic() < deadline:
        chunk = list(pending)[:1000]
        for r in ix.get_rows(chunk):
            pending.discard(str(r["item_id"]))
        now = time.monotonic()
        if pending and notify is not None and now >= next_note:
            active = group_is_active(settings, group)
            notify(f"{len(item_ids) - len(pending)}/{len(item_ids)} items searchable after {now - t0:.0f} s"
                   + ("" if active else f" (no active worker in consumer group {group!r}: start `thaw worker`)"))
            next_note = now + every_s
        if pending:
            time.sleep(0.2)
    ix.close()
    if pending and notify is not None:
        notify(f"gave up after {timeout_s:.0f} s: {len(item_ids) - len(pending)}/{len(item_ids)} items searchable")
    return len(item_ids) - len(pending)

