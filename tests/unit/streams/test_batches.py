"""Batches read straight from an agent's channel queue (``streams.batches.take_batches``): sizes and the time
window, and the per-event rules of Faust's stream (stale generations and a suspended flow skipped and acked, acking
topics tracked). A real mode flow-control queue, fake app and events, no services."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace

from faust.types import Message
from mode.utils.queues import FlowControlEvent, ThrowableQueue

from streams.batches import take_batches


class FakeEvent:
    def __init__(self, offset: int, generation: int = 1, topic: str = "t.user.events") -> None:
        self.message = Message(topic, 0, offset, 0.0, 0, None, b"k", b"{}", None, generation_id=generation)
        self.message.incref()  # the conductor's reference
        self.message.tracked = False  # a consumer's message (ConsumerMessage) starts untracked

    def ack(self) -> bool:
        return self.message.ack(None)


def _app(flow: FlowControlEvent):
    tracked: list[int] = []
    out: list[int] = []
    return SimpleNamespace(
        flow_control=flow, consumer_generation_id=1,
        topics=SimpleNamespace(acking_topics={"t.user.events"}),
        consumer=SimpleNamespace(track_message=lambda m: tracked.append(m.offset)),
        sensors=SimpleNamespace(on_message_out=lambda tp, offset, m: out.append(offset)),
        tracked=tracked, out=out,
    )


def _run(events_then, max_n, within_s, n_batches, suspended=False):
    async def go():
        flow = FlowControlEvent()
        flow.resume()
        queue = ThrowableQueue(maxsize=100, flow_control=flow, clear_on_resume=True)
        app = _app(flow)
        if suspended:
            flow.suspend()
        channel = SimpleNamespace(queue=queue)

        async def feed():
            for delay, events in events_then:
                await asyncio.sleep(delay)
                for e in events:
                    queue.put_nowait(e)

        feeder = asyncio.ensure_future(feed())
        got = []
        async for batch in take_batches(app, channel, max_n, within_s):  # type: ignore[arg-type]
            got.append([e.message.offset for e in batch])
            if len(got) == n_batches:
                break
        await feeder
        return got, app

    return asyncio.run(asyncio.wait_for(go(), timeout=5))


def test_what_is_queued_is_taken_at_once_up_to_the_batch_size():
    got, app = _run([(0, [FakeEvent(k) for k in range(10)])], max_n=4, within_s=1.0, n_batches=3)
    assert got == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    assert app.tracked == list(range(10))


def test_a_batch_closes_within_the_window_after_its_first_event():
    late = [(0, [FakeEvent(0), FakeEvent(1)]), (0.3, [FakeEvent(2)])]
    got, _ = _run(late, max_n=100, within_s=0.1, n_batches=2)
    assert got == [[0, 1], [2]]  # the third event came after the first batch's window
    joined, _ = _run([(0, [FakeEvent(0)]), (0.05, [FakeEvent(1)])], max_n=100, within_s=0.5, n_batches=1)
    assert joined == [[0, 1]]


def test_stale_generations_and_a_suspended_flow_are_skipped_and_acked_as_faust_does():
    stale = [FakeEvent(0, generation=0), FakeEvent(1), FakeEvent(2, generation=0), FakeEvent(3)]
    got, app = _run([(0, stale)], max_n=10, within_s=0.05, n_batches=1)
    assert got == [[1, 3]]
    assert [e.message.acked for e in stale] == [True, False, True, False]  # the skipped ones are acked at once
    assert app.out == [0, 2] and app.tracked == [1, 3]


def test_events_are_not_acked_by_taking_them():
    events = [FakeEvent(k) for k in range(3)]
    got, _ = _run([(0, events)], max_n=10, within_s=0.05, n_batches=1)
    assert got == [[0, 1, 2]] and not any(e.message.acked for e in events)
    assert all(e.message.refcount == 1 for e in events)  # released by the agent after its commit


def test_the_batches_end_when_the_channel_stops():
    """Faust stops a channel by throwing StopAsyncIteration into its queue: the batches end (the events taken
    for an unfinished batch are not handed over, so never acked)."""
    async def go():
        flow = FlowControlEvent()
        flow.resume()
        queue = ThrowableQueue(maxsize=100, flow_control=flow, clear_on_resume=True)
        app = _app(flow)
        got = []

        async def stop_soon():
            await asyncio.sleep(0.05)
            await queue.throw(StopAsyncIteration())

        stopper = asyncio.ensure_future(stop_soon())
        async for batch in take_batches(app, SimpleNamespace(queue=queue), 10, 0.01):  # type: ignore[arg-type]
            got.append(batch)
        await stopper
        return got

    assert asyncio.run(asyncio.wait_for(go(), timeout=5)) == []
