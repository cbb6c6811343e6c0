"""The composition of the streaming engine: ``create_app(settings)`` builds the Faust app, its clients and agents.

There is no module-level app. ``thaw worker`` calls :func:`create_app` and runs it; tests call it with their own
settings (unique topic prefix, consumer group and collection).

Agents are thin: take a batch (``stream.take_events``), run the matching :class:`~streams.engine.Engine` handler in
a worker thread (encoding and sink I/O never block the event loop, so heartbeats continue), send its DLQ records
(awaiting delivery) and traces, and only then let Faust ack the batch. A sink that is down is retried with backoff
inside the agent: the partition waits (lag grows, visible in ``thaw lag``) and nothing is acked, so nothing is lost.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import faust

from encoders.featurizer import ContentFeaturizer
from encoders.registry import ModelNotFoundError, ModelRegistry
from indexing.milvus_items import ItemIndex, collection_for, point_serving_alias
from indexing.redis_users import UserStore
from infra.metrics import EngineMetrics
from infra.settings import Settings
from streams.cores.space import load_cf_space
from streams.engine import BatchResult, Engine, Outgoing, PreparedUserBatch, Record
from streams.topics import Topics, ensure_topics

log = logging.getLogger(__name__)


@dataclass
class Runtime:
    """Everything a running worker holds (for the CLI and tests)."""

    app: faust.App
    engine: Engine
    topics: Topics
    metrics: EngineMetrics


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
    users = UserStore(settings.redis)
    current = users.current_space()
    if current is None:
        users.set_space(space)
        point_serving_alias(settings.milvus, collection_for(settings.milvus, space))
    elif current != space:
        # a worker never flips what is served: it writes its own space (a roll-out in progress, or a stale
        # deployment) and `thaw cf flip` switches recall once the space has caught up
        log.warning("this worker writes space %s while %s is served; recall switches on `thaw cf flip`", space,
                    current)
    return Engine(settings, topics, text, items, users, group_id=group_id, featurizer=featurizer, cf=cf)


async def _retrying(what: str, fn: Callable[[], Awaitable[Any]], metrics: EngineMetrics) -> Any:
    """Run ``fn`` until it succeeds: sink outages hold the partition instead of losing the batch."""
    delay = 0.2
    while True:
        try:
            return await fn()
        except Exception as exc:  # noqa: BLE001 - any sink failure is retried; the batch is not acked meanwhile
            metrics.event(what, "retry")
            log.warning("%s failed (%s: %s); retrying in %.1fs", what, type(exc).__name__, str(exc)[:200], delay)
            await asyncio.sleep(delay)
            delay = min(delay * 2, 10.0)


def create_app(settings: Settings, *, topics: Topics | None = None, metrics: EngineMetrics | None = None,
               engine: Engine | None = None) -> Runtime:
    """Build the Faust app with the content, user and profile agents."""
    topics = topics or Topics.for_prefix(settings.kafka.topic_prefix)
    st = settings.stream
    metrics = metrics or EngineMetrics()
    k = settings.kafka
    st.data_dir.mkdir(parents=True, exist_ok=True)
    app = faust.App(
        st.app_id,
        broker=[f"kafka://{hp}" for hp in k.bootstrap_servers.split(",")],
        broker_credentials=_credentials(settings),
        store="memory://",
        datadir=str(st.data_dir / "{conf.name}"),
        web_enabled=False,
        topic_partitions=k.partitions,
        topic_replication_factor=k.replication_factor,
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        producer_max_request_size=k.dlq_max_message_bytes,
        consumer_max_fetch_size=k.max_message_bytes,
        key_serializer="raw",
        value_serializer="raw",
    )
    engine = engine or build_engine(settings, topics, group_id=st.app_id)
    ensure_topics(k, topics)

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

    def in_thread(fn: Callable[..., Any], *args: Any) -> Callable[[], Awaitable[Any]]:
        return partial(asyncio.to_thread, fn, *args)

    @app.agent(topic(topics.content_new), name="content")
    async def content_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(st.content_batch_size, within=st.batch_within_s):  # type: ignore[attr-defined]
            recs = to_records(events)
            res: BatchResult = await _retrying("content", in_thread(engine.handle_content, recs), metrics)
            await _retrying("send", partial(send_all, res.dlq + res.out), metrics)
            observe(topics.content_new, res)

    @app.agent(topic(topics.user_events), name="users")
    async def user_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(st.batch_size, within=st.batch_within_s):  # type: ignore[attr-defined]
            recs = to_records(events)
            prep: PreparedUserBatch = await _retrying("users", in_thread(engine.prepare_user_events, recs), metrics)
            await _retrying("send", partial(send_all, prep.result.dlq), metrics)
            res: BatchResult = await _retrying("commit", in_thread(engine.commit_user_events, prep), metrics)
            observe(topics.user_events, res)

    @app.agent(topic(topics.user_events_retry), name="users-retry")
    async def user_retry_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(st.batch_size, within=st.batch_within_s):  # type: ignore[attr-defined]
            recs = to_records(events)
            # a delay queue: wait until the batch's last record is due (bounded: records are at most 5 s apart)
            wait = max((engine.retry_due(r) for r in recs), default=0.0) - engine.clock()
            if wait > 0:
                await asyncio.sleep(min(wait, 5.0))
            prep: PreparedUserBatch = await _retrying("users", in_thread(engine.prepare_user_events, recs), metrics)
            await _retrying("send", partial(send_all, prep.result.dlq), metrics)
            res: BatchResult = await _retrying("commit", in_thread(engine.commit_user_events, prep), metrics)
            observe(topics.user_events_retry, res)

    @app.agent(topic(topics.user_profile), name="profiles")
    async def profile_agent(stream: faust.StreamT) -> None:
        async for events in stream.take_events(st.batch_size, within=st.batch_within_s):  # type: ignore[attr-defined]
            recs = to_records(events)
            res: BatchResult = await _retrying("profiles", in_thread(engine.handle_profiles, recs), metrics)
            await _retrying("send", partial(send_all, res.dlq), metrics)
            observe(topics.user_profile, res)

    _ = (content_agent, user_agent, user_retry_agent, profile_agent)
    return Runtime(app=app, engine=engine, topics=topics, metrics=metrics)
