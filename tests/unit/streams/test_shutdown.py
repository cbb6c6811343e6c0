"""The worker's bounded stop, without services: the stop flag ends sink retries and holds, in-flight batches get a
grace period and are then abandoned, and an abandoned batch's messages are never released for commit."""

from __future__ import annotations

import asyncio
import time

import pytest
from faust.types.tuples import Message

from infra.metrics import EngineMetrics
from streams.app import BatchAbandoned, Shutdown, _retrying, never_ack


def test_a_failing_step_is_not_retried_once_the_stop_began():
    async def go() -> tuple[int, float]:
        stopping = asyncio.Event()
        calls = 0

        async def always_down() -> None:
            nonlocal calls
            calls += 1
            raise ConnectionError("redis is down")

        async def stop_soon() -> None:
            await asyncio.sleep(0.3)
            stopping.set()

        asyncio.get_running_loop().create_task(stop_soon())
        t0 = time.perf_counter()
        with pytest.raises(BatchAbandoned):
            await _retrying("users", always_down, EngineMetrics(), stopping)
        return calls, time.perf_counter() - t0

    calls, took = asyncio.run(go())
    # 0.2 s then 0.4 s backoff: the second wait is cut short by the stop, no attempt after it
    assert 2 <= calls <= 3
    assert took < 1.5


def test_no_new_batch_starts_after_the_stop():
    async def go() -> None:
        sd = Shutdown(grace_s=1.0)
        await sd.begin()

        async def batch() -> int:
            return 1

        with pytest.raises(BatchAbandoned):
            await sd.run(batch)

    asyncio.run(go())


def test_in_flight_batches_finish_within_the_grace_and_the_rest_are_abandoned():
    async def go() -> tuple[int, list[str]]:
        sd = Shutdown(grace_s=0.3)
        outcomes: list[str] = []

        async def quick() -> str:
            await asyncio.sleep(0.1)
            return "done"

        async def stuck() -> str:
            await asyncio.sleep(60)
            return "never"

        async def agent(batch) -> None:  # noqa: ANN001
            try:
                outcomes.append(await sd.run(batch))
            except BatchAbandoned:
                outcomes.append("abandoned")

        tasks = [asyncio.ensure_future(agent(quick)), asyncio.ensure_future(agent(stuck))]
        await asyncio.sleep(0.01)
        t0 = time.perf_counter()
        cancelled = await sd.begin()
        await asyncio.gather(*tasks)
        assert time.perf_counter() - t0 < 1.0
        return cancelled, sorted(outcomes)

    cancelled, outcomes = asyncio.run(go())
    assert cancelled == 1
    assert outcomes == ["abandoned", "done"]


class _Event:
    """Just what take_events hands an agent: an event holding a real Faust message."""

    def __init__(self, offset: int) -> None:
        self.message = Message("t.user.events", 0, offset, 0.0, 0, None, b"u:1", b"{}", None)


def test_an_abandoned_batch_keeps_a_reference_so_faust_never_commits_it():
    events = [_Event(5), _Event(6)]
    for e in events:  # take_events holds each message while the agent has the batch
        e.message.incref()
    never_ack(events)
    for e in events:  # ... and releases it when the agent leaves its loop
        e.message.decref()
    assert [e.message.refcount for e in events] == [1, 1]  # still held: Faust does not count it as acked


def test_a_batch_read_from_the_channel_is_acked_only_when_released_after_its_commit():
    """The users agent reads its batches from the channel (streams.batches): the conductor's reference is the only
    one, so nothing is acked until the agent releases the batch after its commit."""
    from streams.app import release

    class Sensors:
        out: list[int] = []

        def on_message_out(self, tp, offset, message):
            self.out.append(offset)

    class App:
        sensors = Sensors()

    class Read(_Event):
        def ack(self):  # faust.Event.ack: the message's, for the app's consumer
            return self.message.ack(None)

    events = [Read(5), Read(6)]
    for e in events:  # the conductor's reference, taken when it queued the event
        e.message.incref()
    assert [(e.message.acked, e.message.refcount) for e in events] == [(False, 1), (False, 1)]
    release(App(), events)  # after the commit
    assert [(e.message.acked, e.message.refcount) for e in events] == [(True, 0), (True, 0)]
    assert App.sensors.out == [5, 6]
