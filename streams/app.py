"""The composition of the streaming engine: ``create_app(settings)`` builds the Faust app, its clients and agents.

There is no module-level app. ``thaw worker`` calls :func:`create_app` and runs it; tests call it with their own
settings (unique topic prefix, consumer group and collection).

Agents are thin and all alike, so one factory builds them from a small :class:`AgentSpec` each (see
:func:`agent_specs`): take a batch (``stream.take_events``), run the matching :class:`~streams.engine.Engine` handler
in a worker thread (encoding and sink I/O never block the event loop, so heartbeats continue), send its DLQ records
(awaiting delivery) and traces, commit where the handler has a commit step, and only then let Faust ack the batch.
A step failing for an infrastructure reason (a sink down or timing out: :func:`streams.cores.retry.is_transient`)
is retried with a jittered backoff (tenacity, :data:`streams.cores.retry.SINK_WAIT`, at most 10 s apart) inside the
agent: the partition waits, nothing is acked, so nothing is lost, and the agent shows as stuck
(``thaw_agent_stuck_seconds{agent}`` on ``/metrics``, and in ``thaw lag``). Any other exception of a handling step is
the records' own (a poison record: a bug one input triggers, an id the index rejects, a model refusing an input):
the batch is bisected (:func:`streams.cores.poison.isolate`) until the failing records stand alone; each is
dead-lettered to the topic's DLQ with the exception's class and (redacted, truncated) message, and the rest of the
batch is handled as usual, in order. The user-events commit and the deliveries are always retried, never bisected:
by then the batch's parked events are delivered, so handling its halves again would park them twice.

Resuming: on every partition assignment the worker resumes each user-event partition (and each partition of their
retry topic) at its Redis offset fence + 1, not at Kafka's committed offset: the fence is written atomically with the
states, so it is the truth. :class:`FencedConsumer` does it where Faust positions stream partitions
(``perform_seek``), before the fetcher reads; the decision per partition, including partitions without a fence, is
:func:`streams.cores.fences.plan_resume` (its module docstring gives the cases and why a Redis that lost every
state replays from the earliest retained offset). Every seek is logged with both offsets. A poison record moves its
partition's fence once dead-lettered (:meth:`~streams.engine.Engine.fence_past`), so resuming does not read it
again.

Deadlines and the watchdog: every Redis and Milvus call of the worker has the ingest path's deadline
(:mod:`infra.clients`), so a hung sink turns into a timeout, a transient error, and a retried step; the Kafka
requests and deliveries of the app are bounded too (``KafkaSettings.request_timeout_s`` / ``delivery_timeout_s``).
Each retried step of a batch (handling, delivery, commit) runs under a :class:`StepWatchdog`: a step older than
``stream.stuck_after_s`` (from its first attempt, retries included) shows its agent as stuck
(``thaw_worker_stuck{agent}`` and ``thaw_worker_step_age_seconds{agent}`` on ``/metrics``, ``thaw lag``) and logs
one warning per stuck episode naming the agent, the stage and the partitions (the rule:
:mod:`streams.cores.watchdog`).

Stopping (SIGTERM) is bounded by :class:`Shutdown`: batches in flight get a short grace to finish, a failing step is
not retried any more, and a batch that did not finish is abandoned: it is never acked, so its offsets are not
committed and a restarted worker reads it again (the sinks' writes are idempotent: upserts, fenced Redis commits).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import threading
import time
import traceback
from collections.abc import Awaitable, Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from functools import partial
from typing import Any, Generic, TypeVar

import faust
from faust.transport.drivers.aiokafka import Consumer as AIOKafkaConsumer
from faust.types import TP, ConsumerT
from pydantic import BaseModel, SecretStr
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    retry_if_not_exception_type,
    stop_after_delay,
)
from tenacity.wait import wait_base

from contracts.events import RetryEnvelope
from contracts.topics import Topics, record_caps
from encoders.featurizer import ContentFeaturizer
from encoders.registry import ModelNotFoundError, ModelRegistry
from indexing.milvus_items import ItemIndex, collection_for, point_serving_alias
from indexing.redis_state import RedisState
from infra.clients import kafka_consumer
from infra.lag import wait_for_group_coordinator
from infra.metrics import EngineMetrics, StepHealth
from infra.settings import KafkaSettings, Settings
from infra.topics import ensure_topics, partition_counts
from streams.batches import open_channel, take_batches
from streams.cores.decode import Rejected, dead_letter, decode_event
from streams.cores.dlq import fit_dead_letter
from streams.cores.fences import Resume, plan_resume
from streams.cores.poison import describe, isolate
from streams.cores.retry import SINK_WAIT, error_name, hold_s, is_transient, unwrap
from streams.cores.watchdog import RunningStep, Watch, stuck_warning, watch
from streams.drain import drain_in_batches
from streams.engine import DEFAULT_DLQ_CAP, BatchResult, Engine, Outgoing, PreparedUserBatch, Record
from streams.models import load_cf_space

log = logging.getLogger(__name__)

P = TypeVar("P")
T = TypeVar("T")
Retry = Callable[[str, Callable[[], Awaitable[Any]]], Awaitable[Any]]
Send = Callable[[Sequence[Outgoing]], Awaitable[None]]

#: seconds a stopping worker waits for the batches in flight before abandoning them (``thaw worker --stop-grace``);
#: with Faust's own ~2 s of shutdown the worker exits well within 10 s, inside Kubernetes' 30 s grace period
STOP_GRACE_S = 4.0


class BatchAbandoned(Exception):
    """A batch given up because the worker is stopping: it is not acked, so it is read again after a restart."""


class RecordFailure(Exception):
    """A handling step failed for a reason that is not the infrastructure's (``cause``): not retried as is, the
    batch is bisected to find the records it fails on (:func:`run_batch`)."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(f"{type(cause).__name__}: {cause}")
        self.cause = cause


class Shutdown:
    """The worker's stop, shared by its agents: a stop flag and the batches in flight.

    :meth:`begin` runs first thing in the app's ``on_stop`` (before Faust stops the consumer): it sets
    :attr:`stopping`, so a batch taken afterwards is not started, a failing step is not retried and a delay-queue
    hold ends early, each raising :class:`BatchAbandoned`; then it waits up to ``grace_s`` for the batches in flight
    and cancels the rest (a cancelled batch raises :class:`BatchAbandoned` in its agent). An agent never acks an
    abandoned batch (:func:`never_ack`). A worker thread still inside a sink call keeps running until the process
    exits; what it writes is written again, idempotently, when the batch is re-read.
    """

    def __init__(self, grace_s: float = STOP_GRACE_S) -> None:
        self.grace_s = grace_s
        self.stopping = asyncio.Event()
        self._inflight: set[asyncio.Task[Any]] = set()

    async def run(self, batch: Callable[[], Awaitable[T]]) -> T:
        """Run one batch as a task :meth:`begin` can wait for and cancel; :class:`BatchAbandoned` when stopping."""
        if self.stopping.is_set():
            raise BatchAbandoned("the worker is stopping")
        task: asyncio.Task[T] = asyncio.ensure_future(batch())
        self._inflight.add(task)
        try:
            return await task
        except asyncio.CancelledError:
            me = asyncio.current_task()
            if task.cancelled() and (me is None or not me.cancelling()):  # cancelled by begin(), not the agent
                raise BatchAbandoned(f"still in flight {self.grace_s:g}s after the stop began") from None
            raise
        finally:
            self._inflight.discard(task)

    async def begin(self) -> int:
        """Stop starting and retrying batches, wait up to ``grace_s`` for those in flight, cancel the rest.

        Returns how many batches were cancelled."""
        self.stopping.set()
        pending = set(self._inflight)
        if pending:
            log.info("stopping: waiting up to %gs for %d batch(es) in flight", self.grace_s, len(pending))
            _, pending = await asyncio.wait(pending, timeout=self.grace_s)
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.wait(pending, timeout=1.0)  # let them unwind (a step in a thread returns at once)
        return len(pending)


#: reads the fences of a consumer's assigned fenced partitions and plans where they resume (see
#: :func:`fence_resumer`)
Resumer = Callable[["FencedConsumer"], Awaitable[list[Resume]]]

#: how long resuming waits for Redis to answer before the worker gives up (it cannot resume without the fences)
RESUME_REDIS_WAIT_S = 30.0

#: seconds between two checks that Redis did not go back in time under the worker (:meth:`Engine.check_fences`)
FENCE_CHECK_S = 1.0

#: the worker's exit status after it stopped because Redis went back in time (EX_TEMPFAIL: restart it; the restarted
#: worker resumes every partition from its fence)
EXIT_FENCES_REGRESSED = 75

#: seconds between two checks of the running batch steps (:meth:`StepWatchdog.check`)
WATCH_S = 1.0


class StepWatchdog:
    """The batch steps running now, and the checks of :func:`streams.cores.watchdog.watch` over them.

    An agent runs each retried step of a batch inside :meth:`step`, from its first attempt until it succeeds (or is
    abandoned). :meth:`check` runs on a timer of the worker (every :data:`WATCH_S`): it warns once when an agent
    becomes stuck (a step older than ``stuck_after_s``; :func:`streams.cores.watchdog.stuck_warning` names the
    agent, the stage and the partitions, nothing of the records) and once when it is no longer. :meth:`health` is
    what ``/metrics`` reports (``thaw_worker_*``); it is read on the metrics server's thread, at every scrape, so a
    stuck step shows there even if the event loop stopped running timers. Thread-safe.
    """

    def __init__(self, stuck_after_s: float, agents: Iterable[str] = (),
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.stuck_after_s = stuck_after_s
        self._clock = clock
        self._lock = threading.Lock()
        self._agents = set(agents)
        self._running: dict[int, RunningStep] = {}
        self._next = 0
        self._was: frozenset[str] = frozenset()

    def track(self, agents: Iterable[str]) -> None:
        """Report these agents from now on, also while they run nothing."""
        with self._lock:
            self._agents.update(agents)

    @contextlib.contextmanager
    def step(self, agent: str, stage: str, partitions: Iterable[tuple[str, int]]) -> Iterator[None]:
        """The block is one running step of ``agent``'s batch on ``partitions`` (topic, partition)."""
        with self._lock:
            key = self._next
            self._next += 1
            self._running[key] = RunningStep(agent, stage, tuple(sorted(set(partitions))), self._clock())
        try:
            yield
        finally:
            with self._lock:
                self._running.pop(key, None)

    def _watch(self, was: frozenset[str]) -> Watch:
        with self._lock:
            running = list(self._running.values())
            agents = set(self._agents)
        return watch(agents, running, self._clock(), self.stuck_after_s, was)

    def check(self) -> Watch:
        """Judge the agents now; log the stuck episodes that began and ended since the previous check."""
        w = self._watch(self._was)
        for a in w.began:
            log.warning("%s", stuck_warning(a, self.stuck_after_s))
        for name in w.ended:
            log.warning("agent %s is no longer stuck: none of its steps has been running longer than "
                        "stuck_after_s=%gs", name, self.stuck_after_s)
        self._was = w.stuck
        return w

    def health(self) -> list[StepHealth]:
        """Every agent's state now, for ``/metrics``."""
        return [StepHealth(a.agent, a.stuck, round(a.oldest_s, 3), a.oldest.stage if a.oldest else None)
                for a in self._watch(frozenset()).agents]


class FencedConsumer(AIOKafkaConsumer):
    """Faust's aiokafka consumer, resuming the fenced partitions at their Redis fence + 1.

    Faust positions stream partitions in one place, :meth:`perform_seek` (seek to the committed offsets): once a
    rebalance's recovery is done, before the flow resumes and the fetcher starts, and when a fetch returns while
    the flow is stopped. The fence seek follows it inside the same call, so no fetch runs from a position the
    fences overrule, and a later seek to the committed offsets is followed by the fence seek again.
    """

    async def _drain_messages(self, fetcher: Any) -> None:
        """Faust's drain loop with one flow-suspension wait per fetched batch (:mod:`streams.drain`)."""
        await drain_in_batches(self, fetcher)

    async def perform_seek(self) -> None:
        await super().perform_seek()
        resumer = getattr(self.app, "resumer", None)
        if resumer is not None:
            await self.resume_at(await resumer(self))

    def committed_offsets(self, tps: Iterable[TP]) -> dict[TP, int | None]:
        """The group's committed offsets of ``tps`` as the last seek read them (None: none, or 0)."""
        return {tp: self._committed_offset.get(tp) for tp in tps}

    async def resume_at(self, plan: Sequence[Resume]) -> None:
        """Seek to the plan's targets (waiting for the positions) and log each partition's resume; commit the
        targets ahead of the committed offsets (already applied: Faust commits only a run of acked offsets that
        starts at the committed one, so it would never commit past them otherwise)."""
        for r in plan:
            level, msg = r.describe()
            log.log(level, msg)
        moves = {TP(r.topic, r.partition): r.target for r in plan if r.target is not None}
        if not moves:
            return
        await self.seek_wait(moves)
        ahead = {TP(r.topic, r.partition): r.target for r in plan
                 if r.case == "skip-applied" and r.target is not None}
        if ahead:
            try:
                await self._commit_offsets(ahead)
            except Exception as exc:  # noqa: BLE001 - the next periodic commit covers it
                log.warning("could not commit the fence offsets %s (%s: %s); the next commit does", ahead,
                            type(exc).__name__, exc)
                self._committed_offset.update(ahead)


def fence_resumer(engine: Engine) -> Resumer:
    """The :data:`Resumer` of the worker: one MGET of the group's fences on every partition of the fenced topics
    (retried up to :data:`RESUME_REDIS_WAIT_S` while Redis is down, then the error stands: the worker cannot resume
    without them), the assigned partitions' earliest and end offsets from the broker, and
    :func:`~streams.cores.fences.plan_resume`."""

    async def resume(consumer: FencedConsumer) -> list[Resume]:
        tps = sorted(tp for tp in consumer.assignment() if tp.topic in engine.fenced_topics)
        if not tps:
            return []
        counts = {t: n for t in engine.fenced_topics if (n := consumer.topic_partitions(t))}
        wanted = [(tp.topic, tp.partition) for tp in tps]
        retrying = AsyncRetrying(wait=SINK_WAIT, stop=stop_after_delay(RESUME_REDIS_WAIT_S), reraise=True,
                                 retry=retry_if_exception_type(Exception))
        read: tuple[dict[tuple[str, int], int], bool] = await retrying(asyncio.to_thread, engine.resume_fences,
                                                                         wanted, counts)
        fences, any_fence = read
        earliest = await consumer.earliest_offsets(*tps)
        end = await consumer.highwaters(*tps)
        committed = consumer.committed_offsets(tps)
        return plan_resume(
            fences,
            {(tp.topic, tp.partition): c for tp, c in committed.items()},
            {(tp.topic, tp.partition): int(o) for tp, o in earliest.items() if o is not None},
            {(tp.topic, tp.partition): int(o) for tp, o in end.items() if o is not None},
            group_has_fences=any_fence,
        )

    return resume


class ThawApp(faust.App):
    """The Faust app with a bounded stop and a consumer that resumes at the offset fences.

    :meth:`Shutdown.begin` runs before Faust stops the consumer. Faust's own wait for the streams to drain
    (``stream_wait_empty``) is off: it waits without a bound for every message handed to an agent to be acked,
    which with a sink down is forever (the retry loop never ends). The consumer is a :class:`FencedConsumer`; it
    resumes at the fences once :attr:`resumer` is set (:func:`create_app` sets it).
    """

    def __init__(self, *args: Any, stop_grace_s: float = STOP_GRACE_S, **kwargs: Any) -> None:
        self.shutdown = Shutdown(stop_grace_s)
        self.resumer: Resumer | None = None
        self.exit_code = 0  # the worker's exit status when it stops on its own (:data:`EXIT_FENCES_REGRESSED`)
        super().__init__(*args, **kwargs)

    def _new_consumer(self) -> ConsumerT:
        transport = self.transport
        if not issubclass(FencedConsumer, transport.Consumer):  # another driver (a test transport): as Faust
            return super()._new_consumer()
        return FencedConsumer(transport, callback=self.topics.on_message,
                              on_partitions_revoked=self._on_partitions_revoked,
                              on_partitions_assigned=self._on_partitions_assigned,
                              beacon=self.beacon, loop=transport.loop)

    async def on_stop(self) -> None:
        abandoned = await self.shutdown.begin()
        if abandoned:
            log.warning("stopping: abandoned %d batch(es) still in flight; their offsets are not committed and a "
                        "restarted worker reads them again", abandoned)
        await super().on_stop()


def never_ack(events: Iterable[faust.EventT]) -> None:
    """Keep Faust from ever acking these events' messages, so their offsets are never committed.

    Faust marks a message safe to commit when its last holder releases it (refcount 0). ``take_events`` releases a
    batch when the agent moves on, and also when the agent leaves the loop (its ``finally``), which would commit a
    batch that was not applied; one extra reference that is never released keeps the offset uncommitted (and the
    partition's later offsets too: Faust commits only up to the first unacked offset).
    """
    for e in events:
        e.message.incref()


def release(app: faust.App, events: Iterable[faust.EventT]) -> None:
    """Ack events read with :func:`streams.batches.take_batches` once their batch is committed: a message whose last
    holder this was is safe to commit (as ``Stream.ack`` does, then the sensors). An event never released is never
    committed."""
    for e in events:
        if e.ack():
            m = e.message
            app.sensors.on_message_out(m.tp, m.offset, m)


@dataclass
class Runtime:
    """Everything a running worker holds (for the CLI and tests)."""

    app: faust.App
    engine: Engine
    topics: Topics
    metrics: EngineMetrics
    steps: StepWatchdog | None = None


def _credentials(settings: Settings) -> Any:
    k = settings.kafka
    ctx = k.ssl_context()
    if k.security_protocol.startswith("SASL"):
        return faust.SASLCredentials(
            username=k.sasl_username,
            password=k.sasl_password.get_secret_value() if k.sasl_password else None,
            ssl_context=ctx,
            mechanism=k.sasl_mechanism or "PLAIN",
        )
    if ctx is not None:
        return faust.SSLCredentials(ctx)
    return None


class KafkaPartitionEnds:
    """:class:`streams.ports.PartitionEnds` from the broker: a kafka-python consumer without a group, made on the
    first read (the engine reads end offsets only for a claiming retry-topic copy whose park is not found), one read
    at a time, each bounded by ``timeout_s`` (default: the Kafka request timeout, at most 10 s; ``KafkaTimeoutError``
    past it, and the engine lets the copies wait)."""

    def __init__(self, kafka: KafkaSettings, timeout_s: float | None = None) -> None:
        self._kafka = kafka
        self._timeout_ms = int(1000 * (timeout_s if timeout_s is not None else min(kafka.request_timeout_s, 10.0)))
        self._consumer: Any = None
        self._lock = threading.Lock()

    def end_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        from kafka import TopicPartition  # type: ignore[import-untyped]

        with self._lock:
            if self._consumer is None:
                # kafka-python wants its request timeout above the (unused) session and fetch timeouts
                self._consumer = kafka_consumer(self._kafka, group_id=None, enable_auto_commit=False,
                                                request_timeout_ms=max(self._timeout_ms, 30_500))
            for topic in {t for t, _ in partitions}:  # a long-lived consumer learns a topic's partitions first
                self._consumer.partitions_for_topic(topic)
            got = self._consumer.end_offsets([TopicPartition(t, p) for t, p in partitions],
                                             timeout_ms=self._timeout_ms)
        return {(tp.topic, tp.partition): int(o) for tp, o in got.items() if o is not None}

    def close(self) -> None:
        with self._lock:
            if self._consumer is not None:
                with contextlib.suppress(Exception):
                    self._consumer.close()
                self._consumer = None


def build_engine(settings: Settings, topics: Topics, group_id: str) -> Engine:
    """Load the published encoders (exporting the text model on first use) and the served space, connect Milvus
    and Redis, build the engine."""
    registry = ModelRegistry(settings.models.dir)
    featurizer = ContentFeaturizer.from_registry(registry, threads=settings.models.onnx_threads)
    text = featurizer.text
    log.info("content fields: %s (missing encoders: %s)", featurizer.dims(), list(featurizer.missing) or "none")
    cf = None
    if settings.stream.space in ("auto", "cf"):
        cf = load_cf_space(registry, threads=settings.models.onnx_threads, version=settings.stream.cf_version)
        if cf is None and settings.stream.space == "cf":
            raise ModelNotFoundError(f"THAW_STREAM__SPACE=cf but no cb2cf model is published under {registry.root}")
        if cf is not None:
            lacking = [f for f in cf.needs() if f not in featurizer.fields]
            log.info("serving CF space %s (CB2CF reads %s%s)", cf.name, cf.needs(),
                     f"; without an encoder for {lacking}" if lacking else "")
    space = cf.name if cf is not None else text.model_version
    items = ItemIndex(settings.milvus, dim=cf.dim if cf is not None else text.dim,
                      collection=collection_for(settings.milvus, space))
    items.ensure()
    users = RedisState(settings.redis)
    current = users.current_space()
    if current is None:
        users.set_space(space)
        point_serving_alias(settings.milvus, collection_for(settings.milvus, space))
    elif current != space:
        # a worker never flips what is served: it writes its own space (a roll-out in progress, or a stale
        # deployment) and `thaw cf flip` switches recall once the space has caught up
        log.warning("this worker writes space %s while %s is served; recall switches on `thaw cf flip`", space,
                    current)
    return Engine(settings, topics, text, items, users, group_id=group_id, featurizer=featurizer, cf=cf,
                  ends=KafkaPartitionEnds(settings.kafka))


async def _pause(seconds: float, stopping: asyncio.Event | None, what: str) -> None:
    """Sleep ``seconds``; with ``stopping``, end early by raising :class:`BatchAbandoned` once it is set."""
    if stopping is None:
        await asyncio.sleep(seconds)
        return
    if not stopping.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stopping.wait(), seconds)
    if stopping.is_set():
        raise BatchAbandoned(f"{what}: the worker is stopping")


async def _retrying(what: str, fn: Callable[[], Awaitable[Any]], metrics: EngineMetrics,
                    stopping: asyncio.Event | None = None, *, agent: str | None = None,
                    wait: wait_base = SINK_WAIT) -> Any:
    """Run ``fn`` until it succeeds: sink outages hold the partition instead of losing the batch.

    Any ``Exception`` but :class:`RecordFailure` (a handling step's poison records: :func:`run_batch` isolates them)
    is retried (the batch is not acked meanwhile), waiting ``wait`` (:data:`SINK_WAIT`: jittered, its ceiling 0.2 s
    doubling to 10 s) between attempts, until it succeeds or ``stopping`` is set: then the backoff ends at once and
    :class:`BatchAbandoned` is raised instead of another attempt. A cancellation is not retried.

    While it retries, ``agent`` (default: ``what``) is stuck: ``thaw_agent_stuck_seconds{agent}`` counts from the
    first failure, ``thaw_agent_failing`` names the step and the last error class, until the step succeeds.
    """
    who = agent or what
    failures = 0

    def before_sleep(state: RetryCallState) -> None:
        nonlocal failures
        exc = state.outcome.exception() if state.outcome is not None else None
        name = error_name(exc) if exc is not None else "?"
        delay = state.next_action.sleep if state.next_action is not None else 0.0
        if stopping is not None and stopping.is_set():
            log.warning("%s failed (%s: %s); not retried, the worker is stopping", what, name, str(exc)[:200])
            return
        failures += 1
        metrics.event(what, "retry")
        metrics.step_failed(who, what, name)
        log.warning("%s failed (%s: %s); retrying in %.1fs (attempt %d, %s stuck %.0fs)", what, name, str(exc)[:200],
                    delay, state.attempt_number, who, metrics.stuck_s(who))

    async def sleep(seconds: float) -> None:
        await _pause(seconds, stopping, f"{what} not retried")

    retrying = AsyncRetrying(
        wait=wait,
        retry=retry_if_exception_type(Exception) & retry_if_not_exception_type((BatchAbandoned, RecordFailure)),
        before_sleep=before_sleep,
        sleep=sleep,
    )
    try:
        return await retrying(fn)
    finally:
        if failures:
            metrics.step_recovered(who)


def _same(res: BatchResult) -> BatchResult:
    return res


def _prepared(prep: PreparedUserBatch) -> BatchResult:
    return prep.result


def dlq_only(res: BatchResult) -> list[Outgoing]:
    """Route a batch's dead letters and retry-topic records."""
    return res.dlq


def dlq_and_traces(res: BatchResult) -> list[Outgoing]:
    """Route a batch's dead letters, then its freshness traces (``content.indexed``)."""
    return res.dlq + res.out


@dataclass(frozen=True)
class AgentSpec(Generic[P]):
    """One agent: what it consumes, how it batches, which engine step handles a batch, what it delivers.

    A batch runs: ``hold`` (wait, a delay queue) -> ``handle`` -> deliver ``route(result(handled))`` -> ``commit``
    (when there is one) -> metrics; each step but ``hold`` is retried until it succeeds, except a ``handle`` that
    fails for a reason of the records' own: its poison records go to ``dlq`` (see :func:`run_batch`). Faust acks
    the batch only after all of them.
    """

    name: str  # the Faust agent's name
    topic: str
    batch_size: int
    within_s: float
    stage: str  # the handling step's label in retry metrics and logs
    handle: Callable[[Sequence[Record]], P]  # runs in a worker thread
    result: Callable[[P], BatchResult]  # the BatchResult of what ``handle`` returned
    route: Callable[[BatchResult], list[Outgoing]]  # delivered (acks=all) before the commit and the ack
    commit: Callable[[P], BatchResult] | None = None  # runs in a worker thread after delivery
    hold: Callable[[Sequence[Record]], float] | None = None  # seconds to wait before handling a batch
    dlq: str | None = None  # where poison records go (None: a failing handling step is retried, never bisected)
    # runs in a worker thread after a poison record's dead letter is delivered: moves its offset fence past it
    passed: Callable[[Sequence[Record]], None] | None = None
    # ``handle`` on top of the previous batch's handled value, whose delivery and commit may still run: with it the
    # agent prepares a batch while the previous one commits (:func:`run_overlapped`)
    overlap: Callable[[Sequence[Record], P | None], P] | None = None


def agent_specs(settings: Settings, topics: Topics, engine: Engine) -> list[AgentSpec[Any]]:
    """The worker's four agents: content, user events, their retry topic (a delay queue), profiles."""
    st = settings.stream

    def until_due(records: Sequence[Record]) -> float:
        # a delay queue: wait until the batch's last record is due (bounded: records are at most 5 s apart)
        return hold_s([engine.retry_due(r) for r in records], engine.clock())

    content: AgentSpec[BatchResult] = AgentSpec(
        "content", topics.content_new, st.content_batch_size, st.batch_within_s, "content",
        handle=engine.handle_content, result=_same, route=dlq_and_traces, dlq=topics.content_dlq,
    )
    users: AgentSpec[PreparedUserBatch] = AgentSpec(
        "users", topics.user_events, st.user_batch_size, st.batch_within_s, "users",
        handle=engine.prepare_user_events, result=_prepared, route=dlq_only, commit=engine.commit_user_events,
        dlq=topics.user_dlq, overlap=lambda records, after: engine.prepare_user_events(records, after=after),
    )
    retries: AgentSpec[PreparedUserBatch] = AgentSpec(
        "users-retry", topics.user_events_retry, st.batch_size, st.batch_within_s, "users",
        handle=engine.prepare_user_events, result=_prepared, route=dlq_only, commit=engine.commit_user_events,
        hold=until_due, dlq=topics.user_dlq,
    )
    profiles: AgentSpec[BatchResult] = AgentSpec(
        "profiles", topics.user_profile, st.batch_size, st.batch_within_s, "profiles",
        handle=engine.handle_profiles, result=_same, route=dlq_only, dlq=topics.user_dlq,
    )
    return [content, users, retries, profiles]


def fenced_poison(specs: Sequence[AgentSpec[Any]], engine: Engine) -> list[AgentSpec[Any]]:
    """``specs`` with the fenced agents (those with a commit step: user events and their retries) moving the fence
    past each poison record they dead-letter (:meth:`Engine.fence_past`), so resuming at the fence + 1 does not read
    it again."""
    return [replace(s, passed=engine.fence_past) if s.commit is not None else s for s in specs]


@dataclass
class _InFlight:
    """A batch of an overlapping agent whose delivery and commit run (``task``), with what its prepare returned."""

    events: Sequence[faust.EventT]
    records: Sequence[Record]
    task: asyncio.Future[BatchResult]
    handled: Any


def _in_thread(fn: Callable[..., Any], *args: Any) -> Callable[[], Awaitable[Any]]:
    return partial(asyncio.to_thread, fn, *args)


#: the dead letter of a poison record of an agent: (spec, record, exception) -> the DLQ record
DeadLetterer = Callable[[AgentSpec[Any], Record, Exception], Outgoing]


def merge_results(parts: Sequence[BatchResult]) -> BatchResult:
    """One result of a batch handled in parts (bisected around poison records), for metrics."""
    if len(parts) == 1:
        return parts[0]
    out = BatchResult()
    for p in parts:
        out.out += p.out
        out.dlq += p.dlq
        out.ok += p.ok
        out.skipped += p.skipped
        out.deferred += p.deferred
        for cls, n in p.rejected.items():
            out.rejected[cls] = out.rejected.get(cls, 0) + n
        for stage, ms in p.stage_ms.items():
            out.stage_ms[stage] = out.stage_ms.get(stage, 0.0) + ms
        out.freshness_s += p.freshness_s
        for key, n in p.ab_actions.items():
            out.ab_actions[key] = out.ab_actions.get(key, 0) + n
    return out


async def run_batch(spec: AgentSpec[P], records: Sequence[Record], *, send: Send, retrying: Retry,
                    stopping: asyncio.Event | None = None, poison: DeadLetterer | None = None) -> BatchResult:
    """One batch through ``spec``'s steps (see :class:`AgentSpec`); returns the batch's result for metrics.

    With ``stopping``, a hold ends early once it is set (:class:`BatchAbandoned`). With ``poison`` (and a
    ``spec.dlq``), a handling step that raises anything but an infrastructure error (:func:`is_transient`) is not
    retried: the batch is bisected (:func:`isolate`), each half running all of the steps on its own (handle, send,
    commit) in record order, until every record it fails on is alone; those are dead-lettered (delivered before any
    later record is handled) and the others handled once each. Without, every failure is retried.
    """
    if spec.hold is not None:
        wait = spec.hold(records)
        if wait > 0:
            await _pause(wait, stopping, f"{spec.name} hold")
    isolating = poison is not None and spec.dlq is not None

    async def handle(sub: Sequence[Record]) -> P:
        try:
            handled: P = await asyncio.to_thread(spec.handle, sub)
        except Exception as exc:
            if isolating and not is_transient(exc):
                raise RecordFailure(exc) from exc
            raise
        return handled

    async def run(sub: Sequence[Record]) -> BatchResult:
        handled: P = await retrying(spec.stage, partial(handle, sub))
        await retrying("send", partial(send, spec.route(spec.result(handled))))
        if spec.commit is None:
            return spec.result(handled)
        res: BatchResult = await retrying("commit", _in_thread(spec.commit, handled))
        return res

    if poison is None or spec.dlq is None:
        return await run(records)
    letter = poison

    async def poisoned(rec: Record, exc: Exception) -> BatchResult:
        cause = exc.cause if isinstance(exc, RecordFailure) else exc
        out = letter(spec, rec, cause)
        await retrying("send", partial(send, [out]))
        if spec.passed is not None:  # a fenced topic: the record is handled, resuming must not read it again
            await retrying("commit", _in_thread(spec.passed, [rec]))
        return BatchResult(dlq=[out], rejected={error_name(cause): 1})

    parts = await isolate(records, run, poisoned, is_poison=lambda e: isinstance(e, RecordFailure))
    return merge_results(parts)


def _secret_values(model: BaseModel) -> list[str]:
    """Every ``SecretStr`` value in a settings object (kept out of dead letters)."""
    out: list[str] = []
    for name in type(model).model_fields:
        v = getattr(model, name)
        if isinstance(v, SecretStr):
            out.append(v.get_secret_value())
        elif isinstance(v, BaseModel):
            out += _secret_values(v)
    return [s for s in out if s]


def poison_dead_letters(topics: Topics, metrics: EngineMetrics, secrets: Sequence[str] = (),
                        caps: Mapping[str, int] | None = None) -> DeadLetterer:
    """The :data:`DeadLetterer` of the worker: the record as consumed (a retry-topic envelope: the user event it
    carries, like an ``UnknownItem`` dead letter), the exception's class as the error class, the stage and the
    redacted, truncated message as the error (:func:`streams.cores.poison.describe`); never a traceback or
    ``secrets``. Logs one warning per record (the traceback's frames, without locals or message, at INFO) and
    counts ``thaw_events_total{outcome="poison"}``.

    ``caps``: every topic's record cap by base name (``settings.kafka.record_caps()``; default: the contract's).
    A dead letter over its DLQ's cap would be refused by the broker and retried forever, holding the partition:
    it is cut to fit (:func:`streams.cores.dlq.fit_dead_letter`), like the engine's own rejects."""
    by_base = record_caps() if caps is None else caps
    dlq_caps = {topics.content_dlq: by_base["content.dlq"], topics.user_dlq: by_base["user.dlq"]}

    def source(rec: Record) -> Record:
        if rec.topic != topics.user_events_retry or rec.value is None:
            return rec
        env = decode_event(rec.value, RetryEnvelope, len(rec.value) + 1)
        if isinstance(env, Rejected):
            return rec
        return Record(topics.user_events, *unwrap(env), rec.timestamp_ms)

    def letter(spec: AgentSpec[Any], rec: Record, exc: Exception) -> Outgoing:
        assert spec.dlq is not None
        why = describe(exc, spec.stage, secrets)
        src = source(rec)
        dl = dead_letter(topic=src.topic, partition=src.partition, offset=src.offset, key=src.key, value=src.value,
                         why=why)
        metrics.event(spec.topic, "poison")
        log.warning("%s: poison record %s[%d]@%d dead-lettered to %s: %s", spec.name, rec.topic, rec.partition,
                    rec.offset, spec.dlq, why.error)
        log.info("%s: where %s was raised:\n%s", spec.name, why.error_class,
                 "".join(traceback.format_tb(exc.__traceback__)).rstrip())
        key, dl = fit_dead_letter(dl, src.key, dlq_caps.get(spec.dlq, DEFAULT_DLQ_CAP))
        return Outgoing(spec.dlq, key, dl.to_bytes())

    return letter


def create_app(settings: Settings, *, topics: Topics | None = None, metrics: EngineMetrics | None = None,
               engine: Engine | None = None, stop_grace_s: float = STOP_GRACE_S,
               steps: StepWatchdog | None = None) -> Runtime:
    """Build the Faust app with the agents of :func:`agent_specs`.

    ``stop_grace_s``: how long a stopping worker waits for its batches in flight (see :class:`Shutdown`);
    ``steps``: the watchdog of the batch steps (default: one with ``stream.stuck_after_s``), reported on
    ``metrics``."""
    topics = topics or Topics.for_prefix(settings.kafka.topic_prefix)
    st = settings.stream
    metrics = metrics or EngineMetrics()
    steps = steps or StepWatchdog(st.stuck_after_s)
    k = settings.kafka
    st.data_dir.mkdir(parents=True, exist_ok=True)
    app = ThawApp(
        st.app_id,
        stop_grace_s=stop_grace_s,
        broker=[f"kafka://{hp}" for hp in k.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(st.data_dir / "{conf.name}"),
        web_enabled=False,
        topic_partitions=k.partitions,
        topic_replication_factor=k.topic_replication_factor(),
        broker_commit_interval=1.0,
        # bounded Kafka waits: a request (Faust refuses one shorter than the session timeout) and a delivery (1200 s
        # by default; a DLQ, retry or trace record not acked by then fails its send step, which is retried)
        broker_request_timeout=max(k.request_timeout_s, st.session_timeout_s),
        producer_request_timeout=k.delivery_timeout_s,
        broker_session_timeout=st.session_timeout_s,
        broker_heartbeat_interval=st.session_timeout_s / 4,
        consumer_auto_offset_reset="earliest",
        stream_wait_empty=False,  # the stop waits for batches in flight with a bound instead (ThawApp.on_stop)
        # acks=all, and deliberately not idempotent: aiokafka 0.14 treats OutOfOrderSequenceNumber as fatal (its
        # sender task ends and every later send fails), which an idempotent producer met after a partition's only
        # leader was down for minutes (measured: a worker wedged until restarted); a send this worker retries may
        # be written twice, which its readers tolerate (a retry-topic copy is applied only while its source offset
        # is parked, a dead letter names its source position, a trace is informational)
        producer_acks=-1,
        producer_max_request_size=k.dlq_max_message_bytes,
        consumer_max_fetch_size=k.max_message_bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    shutdown = app.shutdown
    engine = engine or build_engine(settings, topics, group_id=st.app_id)
    app.resumer = fence_resumer(engine)
    ensure_topics(k, topics)
    # the Redis key layout (shard count = user.events partitions) before any agent writes a key
    engine.ensure_layout(partition_counts(k, engine.fenced_topics))
    wait_for_group_coordinator(settings, st.app_id)  # Faust's group is the app id; a fresh broker needs ~0.4 s

    def topic(name: str) -> faust.TopicT:
        return app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")

    out_topics = {
        n: topic(n) for n in (topics.content_indexed, topics.content_dlq, topics.user_dlq, topics.user_events_retry)
    }

    async def send_all(msgs: Sequence[Outgoing]) -> None:
        futs = [await out_topics[m.topic].send(key=m.key, value=m.value) for m in msgs]
        for f in futs:
            await f  # delivered (acks=all) before the batch is acked

    def to_records(events: Sequence[faust.EventT]) -> list[Record]:
        out = []
        for e in events:
            m = e.message
            out.append(Record(m.topic, m.partition, m.offset, m.key, m.value, int(m.timestamp * 1000)))
        return out

    def observe(topic_name: str, res: BatchResult) -> None:
        metrics.event(topic_name, "ok", res.ok)
        if res.skipped:
            metrics.event(topic_name, "skipped", res.skipped)
        if res.deferred:
            metrics.event(topic_name, "deferred", res.deferred)
        for cls, n in res.rejected.items():
            metrics.event(topic_name, "dlq", n)
            metrics.dlq(topic_name, cls, n)
        for stage, ms in res.stage_ms.items():
            metrics.observe_stage(stage, ms / 1000.0)
        for (arm, action), n in res.ab_actions.items():
            metrics.ab_event(arm, action, n)
        if topic_name == topics.content_new:
            for f in res.freshness_s:
                metrics.observe_freshness(f)

    letters = poison_dead_letters(topics, metrics, _secret_values(settings), k.record_caps())

    def agent_for(spec: AgentSpec[Any]) -> Callable[[faust.StreamT], Awaitable[None]]:
        def retrying_for(records: Sequence[Record]) -> Retry:
            partitions = {(r.topic, r.partition) for r in records}

            async def retrying(what: str, fn: Callable[[], Awaitable[Any]]) -> Any:
                with steps.step(spec.name, what, partitions):  # the watchdog sees the step, retries included
                    return await _retrying(what, fn, metrics, shutdown.stopping, agent=spec.name)

            return retrying

        async def agent(stream: faust.StreamT) -> None:
            async for events in stream.take_events(spec.batch_size, within=spec.within_s):  # type: ignore[attr-defined]
                records = to_records(events)
                batch = partial(run_batch, spec, records, send=send_all, retrying=retrying_for(records),
                                stopping=shutdown.stopping, poison=letters)
                try:
                    res = await shutdown.run(batch)
                except BatchAbandoned as exc:
                    never_ack(events)
                    metrics.event(spec.topic, "abandoned", len(events))
                    log.warning("%s: batch of %d record(s) abandoned, not acked (%s)", spec.name, len(events), exc)
                    continue
                except BaseException:
                    never_ack(events)  # a batch that did not finish is never acked, whatever stopped it
                    raise
                observe(spec.topic, res)

        async def overlapped(stream: faust.StreamT) -> None:
            """Batches read from the agent's channel (:func:`streams.batches.take_batches`, not Faust's per-event
            stream); a batch is prepared while the previous one delivers and commits (``spec.overlap``, on top of
            it); it is delivered and committed once the previous one committed, and acked after its own commit. A
            batch whose prepare failed runs the usual way (:func:`run_batch`: retries, poison isolation); one that
            follows a batch that did not commit is abandoned with it (never committed before it, never acked)."""
            assert spec.overlap is not None
            overlap = spec.overlap
            prev: _InFlight | None = None
            try:
                async for events in take_batches(app, open_channel(stream), spec.batch_size, spec.within_s):
                    records = to_records(events)
                    after = prev.handled if prev is not None and not prev.task.done() else None
                    handled = None
                    try:
                        with steps.step(spec.name, spec.stage, {(r.topic, r.partition) for r in records}):
                            handled = await shutdown.run(partial(asyncio.to_thread, overlap, records, after))
                    except BatchAbandoned as exc:
                        _abandoned(records, exc)
                        continue
                    except Exception as exc:  # noqa: BLE001 - handled the usual way below, retried or isolated
                        log.debug("%s: overlapped prepare failed (%s); the batch runs the usual way", spec.name,
                                  type(exc).__name__)
                    if prev is not None:
                        done, prev = await _settle(prev), None
                        if not done:
                            _abandoned(records, BatchAbandoned("the batch before it did not commit"))
                            continue
                    task = asyncio.ensure_future(shutdown.run(partial(_finish, events, records, handled)))
                    task.add_done_callback(_crashed)  # seen at once, not only when the next batch arrives
                    prev = _InFlight(events, records, task, handled)
                if prev is not None:
                    await _settle(prev)
            finally:
                if prev is not None and not prev.task.done():
                    prev.task.cancel()  # not acked: read again after a restart

        async def _finish(events: Sequence[faust.EventT], records: Sequence[Record], handled: Any) -> BatchResult:
            """Deliver and commit a prepared batch (or run it the usual way), then ack and count it."""
            retrying = retrying_for(records)
            if handled is None:
                res = await run_batch(spec, records, send=send_all, retrying=retrying, stopping=shutdown.stopping,
                                      poison=letters)
            else:
                await retrying("send", partial(send_all, spec.route(spec.result(handled))))
                assert spec.commit is not None
                res = await retrying("commit", _in_thread(spec.commit, handled))
            release(app, events)
            observe(spec.topic, res)
            return res

        async def _settle(prev: _InFlight) -> bool:
            """Wait for an in-flight batch (acked and counted when it committed). False when it did not commit."""
            try:
                await prev.task
            except BatchAbandoned as exc:
                _abandoned(prev.records, exc)
                return False
            return True

        def _crashed(task: asyncio.Future[BatchResult]) -> None:
            exc = None if task.cancelled() else task.exception()
            if exc is not None and not isinstance(exc, BatchAbandoned):
                log.error("%s: a batch failed: %s: %s (the agent stops at its next batch)", spec.name,
                          type(exc).__name__, str(exc)[:300])

        def _abandoned(records: Sequence[Record], exc: Exception) -> None:
            metrics.event(spec.topic, "abandoned", len(records))
            log.warning("%s: batch of %d record(s) abandoned, not acked (%s)", spec.name, len(records), exc)

        chosen = overlapped if spec.overlap is not None else agent
        chosen.__qualname__ = chosen.__name__ = f"{spec.name.replace('-', '_')}_agent"
        return chosen

    async def watch_fences() -> None:
        """Stop the worker (:data:`EXIT_FENCES_REGRESSED`) once Redis went back in time under it: the check here
        (an idle partition) or a batch's own fence read found a fence below what the worker resumed from or
        committed. Every fenced step refuses to run from then on; the restarted worker resumes from the fences."""
        try:
            why = await asyncio.to_thread(engine.check_fences)
        except Exception as exc:  # noqa: BLE001 - Redis down: the next check, or a batch, sees what it lost
            log.debug("fence check failed: %s: %s", type(exc).__name__, exc)
            return
        if why is None or app.exit_code:
            return
        app.exit_code = EXIT_FENCES_REGRESSED
        log.critical("stopping the worker (exit %d): %s; nothing more is applied, and a restarted worker resumes "
                     "every partition from its Redis fence", EXIT_FENCES_REGRESSED, why)
        os.kill(os.getpid(), signal.SIGTERM)  # the worker's own prompt stop (batches in flight are abandoned)

    app.timer(FENCE_CHECK_S, name="watch_fences")(watch_fences)

    async def watch_steps() -> None:
        steps.check()  # logs the stuck episodes; /metrics reads the steps itself

    app.timer(WATCH_S, name="watch_steps")(watch_steps)

    specs = fenced_poison(agent_specs(settings, topics, engine), engine)
    metrics.track_agents(spec.name for spec in specs)
    steps.track(spec.name for spec in specs)
    metrics.watch_steps(steps.health)
    for spec in specs:
        app.agent(topic(spec.topic), name=spec.name)(agent_for(spec))
    return Runtime(app=app, engine=engine, topics=topics, metrics=metrics, steps=steps)
