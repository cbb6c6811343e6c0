"""The worker consumer's drain loop: Faust's, with one wait per fetched batch instead of one per message.

Faust's consumer hands every fetched message to the app's conductor inside ``Service.wait_first(callback(message),
suspend_flow.wait())``, so that a rebalance (which sets ``suspend_flow``), a stop or a crash interrupts a delivery
that blocks (a full stream buffer). ``wait_first`` creates four tasks and an ``asyncio.wait`` per message: on the
users agent's path it was the largest single cost (a do-nothing ``take_events`` agent over pre-produced user
events: ~280 -> ~135 us of CPU per event on this repository's 2-core machine, measured with this loop).

:func:`drain_in_batches` keeps the loop's rules (fetch with ``getmany``; per message: drop one below the read
offset, record a gap in the offsets, commit every ``broker_commit_every`` acks, hand it to the callback, move the
read offset) and puts one ``wait_first`` around the delivery of each fetched batch. What a suspension, a stop or a
crash interrupts is then the rest of that batch instead of one message, and the rest is treated as Faust's loop
treats a message whose wait returns before its delivery: not delivered, its read offset moved on (so no gap is
recorded over it later, which would count it as acked). Faust's loop does that to every message it still holds once
the flow is suspended (each wait returns at once, the delivery is cancelled), so nothing is dropped that Faust would
have delivered: the flow is suspended only for a rebalance or a seek, after which every assigned partition is read
again from its committed offset (a user-events partition from its fence + 1, :class:`streams.app.FencedConsumer`).

``FAUST_DRAIN_SHA256`` is the digest of the Faust method this replaces (``Consumer._drain_messages`` of the pinned
faust-streaming); a unit test fails when Faust's changes, so an upgrade re-checks the rules above.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from faust.transport.consumer import CONSUMER_FETCHING

#: sha256 of the source of ``faust.transport.consumer.Consumer._drain_messages`` this loop was checked against
FAUST_DRAIN_SHA256 = "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417"

log = logging.getLogger(__name__)

#: messages delivered between two yields to the event loop (as Faust's loop)
YIELD_EVERY = 100


async def drain_in_batches(consumer: Any, fetcher: Any) -> None:
    """``consumer``'s drain loop (``Consumer._drain_messages``), stopped with ``fetcher``; see the module docstring."""
    callback = consumer.callback
    consumer_stopped = consumer._stopped.is_set
    fetcher_stopped = fetcher._stopped.is_set
    read_offset = consumer._read_offset
    acks_enabled_for = consumer.app.topics.acks_enabled_for
    commit_every = consumer._commit_every
    diag = consumer.diag

    async def admit(tp: Any, message: Any) -> bool:
        """Faust's bookkeeping before a message is handed over: False for one read already; else a gap in the
        offsets is recorded and the periodic commit runs when due."""
        offset = message.offset
        last = read_offset.get(tp)
        if last is not None and offset < last:
            return False  # read already (the fetcher went back): dropped, as Faust does
        if last and offset - last > 1 and acks_enabled_for(message.topic):
            await consumer._add_gap(tp, last + 1, offset)
        if commit_every is not None and consumer._n_acked >= commit_every:
            consumer._n_acked = 0
            await consumer.commit()
        return True

    async def deliver(fetched: list[tuple[Any, Any]], done: list[int]) -> None:
        for k, (tp, message) in enumerate(fetched):
            if k and k % YIELD_EVERY == 0:
                await asyncio.sleep(0)
            if await admit(tp, message):
                await callback(message)
                read_offset[tp] = message.offset
            done[0] = k + 1

    try:
        while not (consumer_stopped() or fetcher_stopped()):
            diag.set_flag(CONSUMER_FETCHING)
            pending = consumer.getmany(timeout=1.0)
            await consumer.sleep(0)  # getmany can return at once, again and again: let the loop run
            if not consumer.should_stop:
                fetched = [item async for item in pending]  # the fetch itself, outside the wait (as Faust's loop)
                done = [0]
                if fetched:
                    await consumer.wait_first(deliver(fetched, done), consumer.suspend_flow.wait())
                # interrupted (flow suspended, stop, crash): what Faust's loop does with a message whose wait returns
                # before its delivery (cancelled): the read offset moves on, so no gap is recorded over it later
                for tp, message in fetched[done[0]:]:
                    if await admit(tp, message):
                        read_offset[tp] = message.offset
            diag.unset_flag(CONSUMER_FETCHING)
    except consumer.consumer_stopped_errors:
        if consumer.transport.app.should_stop:
            return  # stopping anyway
        raise
    except asyncio.CancelledError:
        if consumer.transport.app.should_stop:
            return
        raise
    except Exception as exc:
        log.exception("drain loop raised: %r", exc)
        raise
    finally:
        diag.unset_flag(CONSUMER_FETCHING)
