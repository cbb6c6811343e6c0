"""The worker's drain loop (``streams.drain``) against Faust's own (``Consumer._drain_messages``), on one fake
consumer: the same messages delivered in the same order, the same read offsets, gaps and commits; and a flow
suspension interrupts a batch whose delivery blocks, as it interrupts Faust's delivery of one message."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import defaultdict
from types import SimpleNamespace

from faust.transport.consumer import Consumer
from mode import Service

from streams.drain import FAUST_DRAIN_SHA256, drain_in_batches


class FakeConsumer(Service):
    """What a drain loop reads of a Faust consumer; ``batches``: what each ``getmany`` call yields."""

    consumer_stopped_errors = (RuntimeError,)

    def __init__(self, batches, commit_every=None, block_at=None, resume_after=None):
        super().__init__()
        self.batches = list(batches)
        self.resume_after = resume_after  # getmany calls after which the flow resumes (the rebalance is over)
        self.fetches = 0
        self.delivered: list[tuple[str, int]] = []
        self.gaps: list[tuple[str, int, int]] = []
        self.commits = 0
        self._read_offset: defaultdict[str, int | None] = defaultdict(lambda: None)  # as Faust's
        self._commit_every = commit_every
        self._n_acked = 0
        self.block_at = block_at
        self.suspend_flow = asyncio.Event()
        self.app = SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: True))
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
        self.diag = SimpleNamespace(set_flag=lambda f: None, unset_flag=lambda f: None)
        self.fetcher = SimpleNamespace(_stopped=asyncio.Event())

    async def callback(self, message):
        if message.offset == self.block_at:
            self.suspend_flow.set()  # a rebalance begins while this delivery waits (a full stream buffer)
        if self.suspend_flow.is_set():
            await asyncio.sleep(10)  # the conductor waits for the flow to resume (acquire_flow_control)
        self.delivered.append((message.tp, message.offset))
        self._n_acked += 1

    async def getmany(self, timeout):
        self.fetches += 1
        if self.resume_after is not None and self.fetches > self.resume_after:
            self.suspend_flow.clear()
        if not self.batches:
            self.fetcher._stopped.set()
            return
        for tp, offset in self.batches.pop(0):
            yield tp, SimpleNamespace(tp=tp, offset=offset, topic=tp, key=None, value=None)

    async def _add_gap(self, tp, first, last):
        self.gaps.append((tp, first, last))

    async def commit(self):
        self.commits += 1


BATCHES = [
    [("a", 0), ("a", 1), ("b", 5), ("a", 2)],
    [("b", 6), ("a", 1), ("a", 5), ("b", 9)],  # a seek back (a@1 read already) and gaps (a 3..5, b 7..9)
    [("a", 6), ("b", 10), ("b", 12)] + [("c", k) for k in range(250)],  # a gap of one; past the yield interval
]


def _run(drain, consumer: FakeConsumer) -> FakeConsumer:
    async def go():
        await asyncio.wait_for(drain(consumer, consumer.fetcher), timeout=5)
    asyncio.run(go())
    return consumer


def test_the_same_deliveries_offsets_gaps_and_commits_as_faust():
    faust = _run(Consumer._drain_messages, FakeConsumer(BATCHES, commit_every=3))
    ours = _run(drain_in_batches, FakeConsumer(BATCHES, commit_every=3))
    assert ours.delivered == faust.delivered and len(ours.delivered) == 260
    assert ours._read_offset == faust._read_offset == {"a": 6, "b": 12, "c": 249}
    assert ours.gaps == faust.gaps == [("a", 3, 5), ("b", 7, 9), ("b", 11, 12)]
    assert ours.commits == faust.commits > 0


def test_a_suspension_interrupts_the_batch_as_faust_interrupts_each_message():
    """A rebalance while a delivery blocks: neither loop delivers that message or the rest of the batch (the
    rebalance's seek reads them again), and both move the read offsets past them, so the next fetch records no gap
    over them (a gap counts as acked)."""
    batches = [[("a", 10), ("a", 11), ("b", 15), ("a", 12)], [("a", 13), ("b", 16)]]
    faust = _run(Consumer._drain_messages, FakeConsumer(batches, block_at=11, resume_after=1))
    ours = _run(drain_in_batches, FakeConsumer(batches, block_at=11, resume_after=1))
    assert ours.delivered == faust.delivered == [("a", 10), ("a", 13), ("b", 16)]
    assert ours._read_offset == faust._read_offset == {"a": 13, "b": 16}
    assert ours.gaps == faust.gaps == []


def test_the_faust_loop_it_replaces_is_the_one_it_was_checked_against():
    src = inspect.getsource(Consumer._drain_messages)
    assert hashlib.sha256(src.encode()).hexdigest() == FAUST_DRAIN_SHA256, (
        "faust-streaming's Consumer._drain_messages changed: re-check streams/drain.py against it, then update "
        "FAUST_DRAIN_SHA256")
