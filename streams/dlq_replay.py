"""``thaw dlq replay`` and ``thaw dlq stats`` against Kafka: the thin I/O shell over :mod:`streams.cores.dlq`
(which holds every decision and the ledger's rules; read its docstring first).

A run: read the ledger (``dlq.replays``) to its end; settle the intents a stopped run left, by reading their target
partitions for the replay header; read the DLQ's chosen partitions from their start (or ``--offset-range``, or the
first offset at ``--since``) to the end offsets they had when the run began, at most ``max_read`` records; judge each
record; publish the replays in batches (intents acked, then the records acked, then the done entries). Nothing is
written in a dry run. The producer is idempotent with ``acks=all``; a send that fails stops the run (its intents
remain and the next run settles them). Run one replay per DLQ at a time: two at once can both replay a record
neither has a ledger entry for yet.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from contracts.topics import TOPIC_NAMES, Topics
from infra import clients
from infra.settings import Settings
from infra.topics import ensure_topics, read_caps, topic_specs
from streams.cores.dlq import (
    REPLAY_HEADER,
    Candidate,
    DlqStats,
    Ledger,
    LedgerEntry,
    LedgerView,
    Position,
    ReplayFilter,
    ReplayRules,
    intent,
    judge,
    parse_ledger_entry,
    read_dead_letter,
    settle_intents,
    target_partition,
)

log = logging.getLogger(__name__)

#: records a run reads from its DLQ by default, and published per batch
MAX_READ = 100_000
BATCH = 256
#: records read from one target partition to settle a stopped run's intents
MAX_SCAN = 1_000_000
#: how long a read may see no progress before it is given up (a broker gone away)
READ_STALL_S = 30.0
#: a dead letter's failed_at is set before its record is produced: --since seeks this much earlier
SINCE_SLACK = timedelta(minutes=10)


class ReplayError(Exception):
    """A run that cannot start (no such DLQ, a target it may not write) or that stopped on a failed send."""


class SendFailed(ReplayError):
    """A send the broker did not acknowledge: the run stopped; the next run settles its batch from the ledger."""


@dataclass(frozen=True)
class ReplayOptions:
    dlq: str  # the full DLQ topic name
    flt: ReplayFilter = ReplayFilter()
    limit: int | None = None  # replays at most this many
    max_read: int = MAX_READ
    max_record_bytes: int | None = None  # default: the DLQ's cap
    dry_run: bool = False
    to_topic: str | None = None
    include_replayed: bool = False
    batch: int = BATCH
    max_scan: int = MAX_SCAN


@dataclass
class ReplayReport:
    dlq: str
    dry_run: bool
    stats: DlqStats = field(default_factory=DlqStats)
    replayed: int = 0
    settled: dict[str, int] = field(default_factory=dict)  # stopped runs' intents: published / unpublished / undecided
    stopped: str | None = None  # "limit" | "max_read" | None (read to the end)
    next_offsets: dict[int, int] = field(default_factory=dict)  # per DLQ partition: the first record not read

    def to_dict(self) -> dict[str, Any]:
        return {"dlq": self.dlq, "dry_run": self.dry_run, "replayed": self.replayed,
                "replayed_by_error_class": dict(self.stats.replayed_by_error_class.most_common()),
                "settled_intents": self.settled, "stopped": self.stopped,
                "next_offsets": {str(p): o for p, o in sorted(self.next_offsets.items())}, **self.stats.to_dict()}


def dlq_topic(topics: Topics, which: str) -> str:
    """``content`` / ``user`` (or a full DLQ name of this deployment) -> the DLQ topic."""
    names = {"content": topics.content_dlq, "user": topics.user_dlq}
    if which in names:
        return names[which]
    if which in names.values():
        return which
    raise ReplayError(f"no DLQ {which!r}: content ({topics.content_dlq}) or user ({topics.user_dlq})")


def full_topic(topics: Topics, name: str) -> str:
    """A topic's base name (``user.events``) with this deployment's prefix; other names as they are."""
    return dict(zip(TOPIC_NAMES, topics.all(), strict=True)).get(name, name)


# ----------------------------------------------------------------------------------------------------- reading
def _consumer(settings: Settings, fetch_bytes: int) -> Any:
    return clients.kafka_consumer(settings.kafka, group_id=None, enable_auto_commit=False,
                                  max_partition_fetch_bytes=fetch_bytes, fetch_max_bytes=max(fetch_bytes, 52428800),
                                  request_timeout_ms=int(settings.kafka.request_timeout_s * 1000) + 5000)


def read_ranges(consumer: Any, ranges: dict[Any, tuple[int, int]], max_records: int | None = None,
                stall_s: float = READ_STALL_S) -> Iterator[Any]:
    """The records of each partition from its start (included) to its end (excluded), at most ``max_records`` in
    all. Offsets may have gaps (compaction, transaction markers): a partition is done once its position reaches its
    end."""
    live = {tp: se for tp, se in ranges.items() if se[0] < se[1]}
    if not live:
        return
    consumer.assign(list(live))
    for tp, (start, _) in live.items():
        consumer.seek(tp, start)
    n, last_progress = 0, time.monotonic()
    while live:
        batch = consumer.poll(timeout_ms=500, max_records=500)
        for tp, recs in batch.items():
            end = live.get(tp, (0, 0))[1]
            for r in recs:
                if r.offset >= end:
                    break
                yield r
                n += 1
                if max_records is not None and n >= max_records:
                    return
        progressed = bool(batch)
        for tp in list(live):
            if consumer.position(tp) >= live[tp][1]:
                del live[tp]
                progressed = True
        if progressed:
            last_progress = time.monotonic()
        elif time.monotonic() - last_progress > stall_s:
            raise ReplayError(f"no progress reading {sorted(str(tp) for tp in live)} for {stall_s:.0f}s")


def _partitions(consumer: Any, topic: str) -> list[Any]:
    from kafka import TopicPartition  # type: ignore[import-untyped]

    parts = consumer.partitions_for_topic(topic)
    return [TopicPartition(topic, p) for p in sorted(parts or ())]


def read_ledger(consumer: Any, topic: str) -> Ledger:
    tps = _partitions(consumer, topic)
    if not tps:
        return Ledger()
    start, end = consumer.beginning_offsets(tps), consumer.end_offsets(tps)
    return Ledger.of(parse_ledger_entry(r.key, r.value)
                     for r in read_ranges(consumer, {tp: (start[tp], end[tp]) for tp in tps}))


def _replay_marks(headers: Sequence[tuple[str, bytes]] | None) -> list[Position]:
    out = []
    for k, v in headers or ():
        if k == REPLAY_HEADER and v is not None:
            pos = Position.parse(v.decode("utf-8", "replace"))
            if pos is not None:
                out.append(pos)
    return out


def settle(consumer: Any, ledger: Ledger, max_scan: int) -> tuple[list[LedgerEntry], set[Position], set[Position]]:
    """Settle the ledger's open intents (:func:`streams.cores.dlq.settle_intents`) by reading their targets."""
    from kafka import TopicPartition

    intents = ledger.intents()
    if not intents:
        return [], set(), set()
    starts: dict[Any, int] = {}
    for e in intents.values():
        tp = TopicPartition(e.target.topic, e.target.partition)
        starts[tp] = min(starts.get(tp, e.target.offset), e.target.offset)
    known = {tp for tp in starts if tp.partition in (consumer.partitions_for_topic(tp.topic) or set())}
    ends = consumer.end_offsets(list(known)) if known else {}
    found: dict[Position, int] = {}
    read_to_end: set[tuple[str, int]] = set()
    for tp in known:
        n = 0
        for r in read_ranges(consumer, {tp: (starts[tp], ends[tp])}, max_scan):
            n += 1
            for pos in _replay_marks(r.headers):
                mine = intents.get(pos)
                if mine is not None and (mine.target.topic, mine.target.partition) == (r.topic, r.partition) \
                        and r.offset >= mine.target.offset and pos not in found:
                    found[pos] = r.offset
        if n < max_scan:  # the read ended at the partition's end, not at the scan's bound
            read_to_end.add((tp.topic, tp.partition))
    return settle_intents(intents, found, read_to_end)


# --------------------------------------------------------------------------------------------------- publishing
class _Publisher:
    def __init__(self, settings: Settings, ledger_topic: str, max_bytes: int) -> None:
        self.ledger_topic = ledger_topic
        self.producer = clients.kafka_producer(
            settings.kafka, acks="all", enable_idempotence=True, linger_ms=5, max_request_size=max_bytes,
            request_timeout_ms=int(settings.kafka.request_timeout_s * 1000))

    def _all_acked(self, futures: Sequence[Any], what: str) -> list[Any]:
        self.producer.flush()
        out = []
        for f in futures:
            try:
                out.append(f.get(timeout=60))
            except Exception as exc:  # noqa: BLE001 - the run stops; the message names no record bytes
                raise SendFailed(f"{what} not acknowledged ({type(exc).__name__}); stopped: the next run "
                                  "settles this batch from the ledger") from None
        return out

    def ledger(self, entries: Sequence[LedgerEntry], what: str) -> None:
        self._all_acked([self.producer.send(self.ledger_topic, key=e.key(), value=e.value()) for e in entries], what)

    def records(self, batch: Sequence[tuple[Candidate, str, int]]) -> list[int]:
        futs = [self.producer.send(target, key=c.key, value=c.value, partition=p, headers=c.headers())
                for c, target, p in batch]
        return [md.offset for md in self._all_acked(futs, "a replayed record")]

    def close(self) -> None:
        self.producer.close(timeout=10)


# ----------------------------------------------------------------------------------------------------------- run
def replay(settings: Settings, opts: ReplayOptions,
           after_publish: Callable[[Sequence[Candidate]], None] | None = None) -> ReplayReport:
    """One replay run (see the module docstring); ``after_publish`` runs after each batch's records are acked and
    before its done entries are written (tests stop a run there)."""
    topics = Topics.for_prefix(settings.kafka.topic_prefix)
    sources = frozenset(topics.dlq_sources(opts.dlq))
    caps = {s.name: s.max_message_bytes for s in topic_specs(settings.kafka, topics)}
    if opts.to_topic is not None:
        own = {topics.content_dlq, topics.user_dlq, topics.user_events_retry, topics.dlq_replays,
               topics.content_indexed}
        if opts.to_topic in own or opts.to_topic.startswith("__"):
            raise ReplayError(f"--to-topic {opts.to_topic}: replays go to input topics, not the worker's own or "
                              "Kafka's internal topics")
    if not opts.dry_run:
        ensure_topics(settings.kafka, topics)
    fetch = max(caps.values())
    consumer = _consumer(settings, fetch)
    publisher: _Publisher | None = None
    report = ReplayReport(opts.dlq, opts.dry_run)
    try:
        dlq_parts = _partitions(consumer, opts.dlq)
        if not dlq_parts:
            raise ReplayError(f"no topic {opts.dlq} on the broker")
        if opts.to_topic is not None:
            if not _partitions(consumer, opts.to_topic):
                raise ReplayError(f"--to-topic {opts.to_topic}: no such topic")
            if opts.to_topic not in caps:
                admin = clients.kafka_admin(settings.kafka)
                try:
                    caps[opts.to_topic] = read_caps(admin, [opts.to_topic]).get(opts.to_topic) or 1024 * 1024
                finally:
                    admin.close()
        rules = ReplayRules(sources, caps, opts.to_topic, opts.include_replayed)
        ledger = read_ledger(consumer, topics.dlq_replays)
        done, unpublished, undecided = settle(consumer, ledger, opts.max_scan)
        report.settled = {"published": len(done), "unpublished": len(unpublished), "undecided": len(undecided)}
        for e in done:
            ledger.add(e)
        if not opts.dry_run:
            publisher = _Publisher(settings, topics.dlq_replays, fetch)
            if done:
                publisher.ledger(done, "a settled ledger entry")
        _run(consumer, publisher, opts, rules, ledger.view(), frozenset(undecided), dlq_parts, report,
             after_publish)
        return report
    finally:
        if publisher is not None:
            publisher.close()
        consumer.close()


def _ranges(consumer: Any, opts: ReplayOptions, parts: list[Any]) -> dict[Any, tuple[int, int]]:
    parts = [tp for tp in parts if not opts.flt.partitions or tp.partition in opts.flt.partitions]
    start, end = consumer.beginning_offsets(parts), consumer.end_offsets(parts)
    ranges = {tp: (start[tp], end[tp]) for tp in parts}
    if opts.flt.offsets is not None:
        first, last = opts.flt.offsets
        ranges = {tp: (max(s, first), min(e, last + 1) if last is not None else e) for tp, (s, e) in ranges.items()}
    if opts.flt.since is not None:
        at = int((opts.flt.since - SINCE_SLACK).timestamp() * 1000)
        found = consumer.offsets_for_times({tp: at for tp in ranges})
        ranges = {tp: (max(s, found[tp].offset) if found.get(tp) is not None else e, e)
                  for tp, (s, e) in ranges.items()}
    return ranges


def _run(consumer: Any, publisher: _Publisher | None, opts: ReplayOptions, rules: ReplayRules, view: LedgerView,
         undecided: frozenset[Position], parts: list[Any], report: ReplayReport,
         after_publish: Callable[[Sequence[Candidate]], None] | None) -> None:
    ranges = _ranges(consumer, opts, parts)
    report.next_offsets = {tp.partition: s for tp, (s, _) in ranges.items()}
    max_bytes = opts.max_record_bytes or rules.target_caps.get(opts.dlq, 1024 * 1024)
    seen: set[Position] = set()
    batch: list[Candidate] = []
    taken = 0
    for r in read_ranges(consumer, ranges, opts.max_read):
        report.next_offsets[r.partition] = r.offset + 1
        pos = Position(r.topic, r.partition, r.offset)
        dl = read_dead_letter(r.value, max_bytes)
        verdict, cand = judge(pos, dl, opts.flt, rules, view, undecided, seen)
        report.stats.add(dl, verdict)
        if cand is None:
            continue
        seen.add(cand.source)
        batch.append(cand)
        taken += 1
        if len(batch) >= opts.batch:
            _publish(consumer, publisher, batch, rules, report, after_publish)
            batch = []
        if opts.limit is not None and taken >= opts.limit:
            report.stopped = "limit"
            break
    else:
        if report.stats.read >= opts.max_read:
            report.stopped = "max_read"
    _publish(consumer, publisher, batch, rules, report, after_publish)


def _publish(consumer: Any, publisher: _Publisher | None, batch: list[Candidate], rules: ReplayRules,
             report: ReplayReport, after_publish: Callable[[Sequence[Candidate]], None] | None) -> None:
    if not batch:
        return
    if publisher is None:  # a dry run
        for c in batch:
            report.stats.replayed(c.dead_letter)
        return
    from kafka import TopicPartition

    run = uuid.uuid4().hex[:12]
    placed: list[tuple[Candidate, str, int]] = []
    for c in batch:
        target = rules.to_topic or c.dead_letter.source_topic
        placed.append((c, target, target_partition(c, target, len(consumer.partitions_for_topic(target) or [0]))))
    ends = consumer.end_offsets(list({TopicPartition(t, p) for _, t, p in placed}))
    intents = [intent(c, t, p, ends[TopicPartition(t, p)], run) for c, t, p in placed]
    publisher.ledger(intents, "an intent entry")
    offsets = publisher.records(placed)
    if after_publish is not None:
        after_publish(batch)
    publisher.ledger([e.done_at(o) for e, o in zip(intents, offsets, strict=True)], "a done entry")
    for c in batch:
        report.stats.replayed(c.dead_letter)
    report.replayed += len(batch)
    log.info("replayed %d dead letter(s) from %s", len(batch), report.dlq)
