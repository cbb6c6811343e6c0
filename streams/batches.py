"""Batches of events read straight from an agent's channel, without Faust's per-event stream.

Faust hands a ``take_events`` agent each event through its stream: a channel queue read per event, the stream's
processors (``take_events``' own buffer among them), sensors, the current-event context, an ack per event. For the
users agent that path cost more than everything the engine does with an event: a do-nothing ``take_events``
agent over pre-produced user events kept up with ~6,400 events/s on the 2-core machine (``benchmarks/README.md``).

:func:`take_batches` reads the agent's channel queue itself, the queue Faust's conductor fills: all that is queued
at once, then what arrives within ``within_s`` of the batch's first event, up to ``max_n``. Per event it keeps what
Faust's stream does before yielding a value (``faust.Stream.__aiter__``): an event of another consumer generation,
or one read while the flow is suspended (a rebalance began), is skipped and acked; an event of an acking topic is
tracked as pending ack (the consumer's unacked set, the ``on_message_in`` sensor). It does not ack a batch: the
caller acks each event once its batch is committed (:func:`streams.app.release`), and an event it never acks is
never committed. Faust still runs everything else: the group membership and rebalances, fetching, the conductor
and its flow control (a suspension clears the queue; what was cleared is fetched again from the seek), the offset
commits.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import faust


def open_channel(stream: faust.StreamT) -> Any:
    """The iterator of ``stream``'s channel: the clone of the agent's topic that the conductor delivers into (as
    ``take_events`` opens it); its ``queue`` is what :func:`take_batches` reads."""
    return stream.channel.__aiter__()


async def take_batches(app: faust.App, channel: Any, max_n: int, within_s: float
                       ) -> AsyncIterator[list[faust.EventT]]:
    """Batches of at most ``max_n`` events of ``channel`` (:func:`open_channel`), each closed ``within_s`` after
    its first event at the latest; see the module docstring."""
    queue = channel.queue
    loop = asyncio.get_running_loop()
    while True:
        batch: list[faust.EventT] = []
        try:
            keep(app, await queue.get(), batch)
            deadline = loop.time() + within_s
            while len(batch) < max_n:
                while len(batch) < max_n and not queue.empty():
                    keep(app, queue.get_nowait(), batch)
                left = deadline - loop.time()
                if len(batch) >= max_n or left <= 0:
                    break
                try:
                    keep(app, await asyncio.wait_for(queue.get(), left), batch)
                except TimeoutError:
                    break
        except StopAsyncIteration:  # the channel stops (the worker stops): the batch taken so far is not handled
            return
        if batch:
            yield batch


def keep(app: faust.App, event: Any, batch: list[faust.EventT]) -> None:
    """Add a queued event to ``batch`` as Faust's stream would hand it over, or skip it (and ack it) as the stream
    does: another consumer generation, or read while the flow is suspended."""
    message = event.message
    if not app.flow_control.is_active() or message.generation_id != app.consumer_generation_id:
        if event.ack():
            app.sensors.on_message_out(message.tp, message.offset, message)
        return
    if message.topic in app.topics.acking_topics and not message.tracked:
        message.tracked = True
        app.consumer.track_message(message)
    batch.append(event)
