"""The engine's batch handlers, independent of Faust: the I/O shell over the pure cores in ``streams/cores``.

The agents that ``streams/app.py`` builds hand each batch of records to one of these (in a worker thread) and send
what comes back (DLQ records, retry-topic parks, freshness traces). The engine reaches Redis, Milvus and the
encoders only through the Protocols of :mod:`streams.ports`. Delivery semantics (idempotent upserts, offset fences
committed with the state, resume from the fences, DLQ before commit): ``docs/architecture.md``.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from operator import attrgetter
from typing import NamedTuple

import numpy as np
from cachetools import LRUCache

from contracts.events import ContentIndexed, ContentNew, RetryEnvelope, UserProfile
from contracts.topics import Topics
from encoders.featurizer import ContentFeaturizer, ContentInput
from indexing.milvus_items import ItemRow
from indexing.redis_state import (
    FenceKey,
    FenceMovedError,
    FencesRegressedError,
    ItemMeta,
    PackedStates,
    UserCommit,
    UserState,
    pack_state,
)
from infra.settings import Settings
from streams.cores import event_time, retry
from streams.cores.cache import split
from streams.cores.decode import (
    DecodedMedia,
    MediaCaps,
    Rejected,
    dead_letter,
    decode_event,
    decode_media,
    item_text,
)
from streams.cores.dedupe import last_wins, unique
from streams.cores.dlq import fit_dead_letter
from streams.cores.engagement import tally_columns
from streams.cores.fences import FenceSplit, fence_keys, split_by_fence
from streams.cores.freshness import content_start, freshness_s
from streams.cores.space import CFSpace
from streams.cores.user_event_decode import DecodedUserEvent, decode_user_event
from streams.cores.user_update import EventBatch, apply_packed, combine_priors, factorize, prior_state, profile_text
from streams.layout import shard_count
from streams.media_fetch import media_bytes
from streams.ports import EngineState, Featurizer, ItemVectors, PartitionEnds, TextEmbedder

log = logging.getLogger(__name__)

DEFAULT_DLQ_CAP = 1024 * 1024  # a DLQ topic this engine does not declare: the broker's default record cap


@dataclass(frozen=True)
class Record:
    """One Kafka record as the handlers see it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    timestamp_ms: int | None = None


@dataclass(frozen=True)
class Outgoing:
    topic: str
    key: bytes | None
    value: bytes


@dataclass
class BatchResult:
    """What a handler produced: messages to send, and counts for metrics."""

    out: list[Outgoing] = field(default_factory=list)
    dlq: list[Outgoing] = field(default_factory=list)
    ok: int = 0
    skipped: int = 0
    deferred: int = 0  # parked on the retry topic (their records travel with the DLQ ones, before the commit)
    rejected: dict[str, int] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)
    freshness_s: list[float] = field(default_factory=list)
    # (A/B variant echoed in the event's context, action) -> applied events: engagement per serving arm
    ab_actions: dict[tuple[str, str], int] = field(default_factory=dict)


#: a consumed record's position: (topic, partition, offset)
Position = tuple[str, int, int]


def position(rec: Record) -> Position:
    return (rec.topic, rec.partition, rec.offset)


@dataclass
class PreparedUserBatch:
    """A user-events batch up to its commit.

    ``routed``: the records whose outcome is a record of their own (a dead letter, a retry-topic park) that the
    agent delivers before the commit; ``vectors``: the item vectors the batch was prepared with. A batch prepared
    again after a lost commit race keeps both, so the same records are applied as before and none is routed twice
    or also applied (a park whose item got indexed in between would otherwise be applied now and again from the
    retry topic)."""

    result: BatchResult
    commit: UserCommit | None
    records: Sequence[Record]
    routed: frozenset[Position] = frozenset()
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    # parks of user-event records (registered in their parked sets by the commit) and claims of the retry-topic
    # copies the batch dead-lettered, both routed already: a batch prepared again keeps them
    parked: dict[FenceKey, list[int]] = field(default_factory=dict)
    routed_claims: dict[FenceKey, list[int]] = field(default_factory=dict)


class _Candidate(NamedTuple):
    """A fresh, valid record of a user-events batch, to be applied, parked or dead-lettered.

    ``rec`` is the user-events record (a retry-topic copy unwrapped to its source), ``consumed`` where it was read
    (the retry topic for a copy), ``envelope`` a copy's retry envelope, ``claims`` whether it is a claiming copy
    whose source offset is still parked (applying or dead-lettering it resolves the park). A tuple: one is built
    per event."""

    rec: Record
    ev: DecodedUserEvent
    consumed: Position
    envelope: RetryEnvelope | None = None
    claims: bool = False


@dataclass
class _UserBatch:
    """The working state of one user-events batch while :meth:`Engine.prepare_user_events` runs its steps.

    A batch prepared again after a lost commit race starts from its earlier attempt's routed records, parks and
    routed claims (all delivered already)."""

    records: Sequence[Record]
    earlier: PreparedUserBatch | None
    after: UserCommit | None = None  # the commit this batch is prepared on top of (see prepare_user_events)
    res: BatchResult = field(default_factory=BatchResult)
    routed: set[Position] = field(default_factory=set)
    candidates: list[_Candidate] = field(default_factory=list)
    vectors: dict[str, np.ndarray] = field(default_factory=dict)
    known: list[DecodedUserEvent] = field(default_factory=list)  # events applied, in batch order
    parked: dict[FenceKey, list[int]] = field(default_factory=dict)
    routed_claims: dict[FenceKey, list[int]] = field(default_factory=dict)
    claims: dict[FenceKey, list[int]] = field(default_factory=dict)

    @classmethod
    def start(cls, records: Sequence[Record], earlier: PreparedUserBatch | None,
              after: UserCommit | None = None) -> _UserBatch:
        if earlier is None:
            return cls(records, None, after)
        return cls(records, earlier, after, routed=set(earlier.routed),
                   parked={k: list(v) for k, v in earlier.parked.items()},
                   routed_claims={k: list(v) for k, v in earlier.routed_claims.items()})

    def count_earlier(self) -> None:
        """What the lost attempt routed was delivered: it counts, once."""
        if self.earlier is None:
            return
        before = self.earlier.result
        self.res.dlq = before.dlq + self.res.dlq
        self.res.deferred += before.deferred
        for cls, n in before.rejected.items():
            self.res.rejected[cls] = self.res.rejected.get(cls, 0) + n


class ParkPendingError(FenceMovedError):
    """A claiming retry-topic copy whose source record is neither parked nor behind its partition's fence yet: the
    user-events batch that parked it has not committed; retried until it has."""


_USER, _ITEM, _ACTION, _TS, _CONTEXT = (attrgetter(f) for f in ("user_id", "item_id", "action", "ts_s", "context"))


def _ms(t0: float) -> float:
    return (time.perf_counter() - t0) * 1000.0


class Engine:
    """Batch handlers for the three input topics.

    Args:
        settings: engine settings.
        topics: topic names.
        text: the text encoder (its space is the items' vector space until the CF projection is served).
        items: the Milvus items collection of that space.
        users: the engine's Redis state (user states, fences, parked sets, new items, item attributes, priors).
        group_id: the consumer group the offset fences belong to.
        clock: wall clock (epoch seconds), injectable for tests.
        featurizer: the content featuriser (every published encoder); default: text only.
        cf: the CF space to serve (CB2CF projection of new items); default: the text space of ``text``.
        ends: the end offsets of the source partitions (the broker), to tell a forged claiming retry-topic copy
            (a source offset no record has) from one whose park is not committed yet; default: not read, every such
            copy waits for its park.
    """

    def __init__(
        self,
        settings: Settings,
        topics: Topics,
        text: TextEmbedder,
        items: ItemVectors,
        users: EngineState,
        group_id: str,
        clock: Callable[[], float] = time.time,
        featurizer: Featurizer | None = None,
        cf: CFSpace | None = None,
        ends: PartitionEnds | None = None,
    ) -> None:
        self.s = settings
        self.featurizer: Featurizer = featurizer or ContentFeaturizer(text)  # type: ignore[arg-type]
        self.cf = cf
        self.topics = topics
        self.text = text
        self.items = items
        self.users = users
        self.group_id = group_id
        self.clock = clock
        self.space = cf.name if cf is not None else text.model_version
        self._vec_cache: LRUCache[str, np.ndarray] = LRUCache(maxsize=200_000)
        # the lowest value each assigned partition's fence may have: what this worker resumed from or committed
        # since (a fence below it means Redis went back in time, see :meth:`check_fences`)
        self._floor: dict[FenceKey, int] = {}
        self._floor_lock = threading.Lock()
        self.regressed: str | None = None  # why this worker stopped applying (it must resume from the fences)
        self.ends = ends
        # (topic, partition) -> (end offset, time.monotonic() of its read): see retry.stale_ends
        self._ends: dict[tuple[str, int], tuple[int, float]] = {}
        self._ends_lock = threading.Lock()
        caps = settings.kafka.record_caps()  # max.message.bytes by topic base name (contracts.topics)
        self._dlq_caps = {topics.content_dlq: caps["content.dlq"], topics.user_dlq: caps["user.dlq"]}
        self._arms = frozenset(v.name for v in settings.serve.variants)  # A/B metric labels (engagement.ab_arm)
        st = settings.stream
        self._caps = MediaCaps(st.max_inline_image_bytes, st.max_inline_audio_bytes, st.max_audio_seconds,
                               settings.media.max_image_pixels, settings.media.max_audio_decoded_bytes)

    # ------------------------------------------------------------------ common
    def _reject(self, res: BatchResult, rec: Record, why: Rejected, dlq_topic: str) -> None:
        dl = dead_letter(
            topic=rec.topic, partition=rec.partition, offset=rec.offset, key=rec.key, value=rec.value, why=why
        )
        # a dead letter the DLQ's cap would refuse would be retried forever and hold the partition: cut to fit
        key, dl = fit_dead_letter(dl, rec.key, self._dlq_caps.get(dlq_topic, DEFAULT_DLQ_CAP))
        res.dlq.append(Outgoing(dlq_topic, key, dl.to_bytes()))
        res.rejected[why.error_class] = res.rejected.get(why.error_class, 0) + 1
        log.info(
            "dead-lettered %s[%d]@%d: %s: %s", rec.topic, rec.partition, rec.offset, why.error_class, why.error
        )

    def _check_time(self, field: str, t: datetime, max_age_s: float | None) -> Rejected | None:
        """Why an event's publisher-set time cannot be used (:mod:`streams.cores.event_time`), or None."""
        return event_time.check(field, t, self.clock(), self.s.stream.max_clock_skew_s, max_age_s)

    # ----------------------------------------------------------------- content
    def handle_content(self, records: Sequence[Record]) -> BatchResult:
        """Validate, decode media, embed, upsert into Milvus; returns DLQ records and freshness traces."""
        st = self.s.stream
        res = BatchResult()
        consumed_at = datetime.fromtimestamp(self.clock(), UTC)
        t0 = time.perf_counter()
        good: list[tuple[Record, ContentNew, DecodedMedia]] = []
        for rec in records:
            ev = decode_event(rec.value, ContentNew, st.max_event_bytes)
            if isinstance(ev, Rejected):
                self._reject(res, rec, ev, self.topics.content_dlq)
                continue
            if len(ev.text) > st.max_text_chars:
                self._reject(res, rec, Rejected("Oversize", f"text over {st.max_text_chars} chars"),
                             self.topics.content_dlq)
                continue
            bad_time = self._check_time("created_at", ev.created_at, st.max_content_age_s)
            if bad_time is not None:
                self._reject(res, rec, bad_time, self.topics.content_dlq)
                continue
            raw = media_bytes(  # I/O: what the event's media URIs may reach (an untrusted publisher names them)
                ev, max_image_bytes=st.max_inline_image_bytes, max_audio_bytes=st.max_inline_audio_bytes,
                policy=self.s.media,
            )
            media = raw if isinstance(raw, Rejected) else decode_media(raw, self._caps)
            if isinstance(media, Rejected):
                self._reject(res, rec, media, self.topics.content_dlq)
                continue
            good.append((rec, ev, media))
        good = last_wins(good, key=lambda g: g[1].item_id)  # two versions of one item: the later record wins
        res.stage_ms["decode"] = _ms(t0)
        if not good:
            return res

        t1 = time.perf_counter()
        feats = self.featurizer.featurize([ContentInput(item_text(ev), m.image, m.audio) for _, ev, m in good])
        res.stage_ms["encode"] = _ms(t1)
        for name, ms in feats.stage_ms.items():
            res.stage_ms[f"encode_{name}"] = ms
        if feats.errors:
            for i, why in sorted(feats.errors.items()):
                self._reject(res, good[i][0], Rejected("CorruptMedia", why), self.topics.content_dlq)
        keep = [i for i in range(len(good)) if i not in feats.errors]
        good = [good[i] for i in keep]
        present = feats.present[keep]
        if not good:
            return res
        if self.cf is not None:
            t_p = time.perf_counter()
            vecs = self.cf.project(feats, keep, [(ev.text or "", list(ev.tags or [])) for _, ev, _ in good])
            res.stage_ms["project"] = _ms(t_p)
        else:
            vecs = feats.values["text"][keep]

        t2 = time.perf_counter()
        now_ms = int(self.clock() * 1000)
        rows = [
            ItemRow(
                item_id=ev.item_id,
                vector=vecs[i],
                kind=ev.kind.value,
                creator_id=ev.creator_id,
                created_at_ms=int(ev.created_at.timestamp() * 1000),
                model_version=self.space,
                indexed_at_ms=now_ms,
            )
            for i, (_, ev, _) in enumerate(good)
        ]
        self.items.upsert(rows)
        self.users.add_fresh(self.space, {r.item_id: r.created_at_ms for r in rows})
        self.users.put_item_meta(
            {ev.item_id: ItemMeta(ev.kind.value, tuple(ev.tags), int(ev.created_at.timestamp() * 1000))
             for _, ev, _ in good}
        )
        for r in rows:
            self._vec_cache[r.item_id] = np.asarray(r.vector, dtype=np.float32)
        res.stage_ms["upsert"] = _ms(t2)

        indexed_at = datetime.fromtimestamp(self.clock(), UTC)
        versions = {**feats.model_versions, "space": self.space}
        for j, (rec, ev, media) in enumerate(good):
            mods = ["text"] + (["image"] if media.image is not None else []) + (
                ["audio"] if media.audio is not None else []
            )
            trace = ContentIndexed(
                item_id=ev.item_id,
                kind=ev.kind,
                collection=self.items.name,
                model_versions=versions,
                created_at=ev.created_at,
                produced_at=ev.produced_at,
                consumed_at=consumed_at,
                indexed_at=indexed_at,
                stage_ms={k: round(v, 3) for k, v in res.stage_ms.items()},
                modalities=mods,
                features=[n for k, n in enumerate(feats.names) if present[j, k]],
            )
            res.out.append(Outgoing(self.topics.content_indexed, rec.key, trace.to_bytes()))
            start = content_start(ev.produced_at, rec.timestamp_ms)
            if start is not None:
                res.freshness_s.append(freshness_s(indexed_at.timestamp(), start))
        res.ok = len(good)
        return res

    # -------------------------------------------------------------- user events
    def prepare_user_events(
        self, records: Sequence[Record], earlier: PreparedUserBatch | None = None,
        after: PreparedUserBatch | None = None,
    ) -> PreparedUserBatch:
        """Everything up to the commit, in named steps over one :class:`_UserBatch`: fence filtering, decoding
        (retry-topic copies unwrapped), claim resolution, item lookup, parking or dead-lettering events on unknown
        items, the new states.

        ``earlier``: this batch as prepared before a commit that lost a fence race. Its routed records (dead
        letters and parks, already delivered) are handled: they are neither applied nor routed again, and its
        dead-letter counts carry over; the other records are looked up in its item vectors, so a record is applied
        now only if it would have been then (see :class:`PreparedUserBatch`).

        ``after``: the batch before this one, whose commit may still be running (the users agent prepares a batch
        while the previous one commits). The batch is prepared as if that commit had landed: the fences and user
        states it writes are read from it instead of Redis, and this batch's commit expects exactly them. Nothing
        depends on it for correctness, only for speed: the commit's compare-and-set refuses a batch whose
        expectations do not hold (that commit failed, or wrote something else), and it is prepared again from
        Redis. A batch with retry-topic records is never prepared on top of another (its claims read the parked
        sets, which the other commit changes)."""
        if after is not None and (after.commit is None or after.commit.parked or after.commit.claims
                                  or any(r.topic != self.topics.user_events for r in records)):
            after = None
        b = _UserBatch.start(records, earlier, after.commit if after is not None else None)
        t0 = time.perf_counter()
        fenced = self._split_by_fence(b)
        self._decode_user_records(b, fenced.fresh)
        self._resolve_claims(b)
        b.res.stage_ms["decode"] = _ms(t0)
        t1 = time.perf_counter()
        self._look_up_items(b)
        b.res.stage_ms["lookup"] = _ms(t1)
        self._route_unknown_items(b)
        t2 = time.perf_counter()
        commit = self._next_state(b, fenced)
        b.res.stage_ms["update"] = _ms(t2)
        now = self.clock()
        b.res.freshness_s += [freshness_s(now, p.timestamp()) for ev in b.known if (p := ev.produced_at) is not None]
        b.count_earlier()
        return PreparedUserBatch(b.res, commit, records, frozenset(b.routed), b.vectors, b.parked, b.routed_claims)

    def _split_by_fence(self, b: _UserBatch) -> FenceSplit[Record]:
        """Read the batch's fences (after copying the floors: see :meth:`check_fences`), refuse to go on if Redis
        went back in time, and count the records at or below their fence as skipped (those an earlier attempt
        routed count as routed, not again as skipped)."""
        fkeys = fence_keys(self.group_id, b.records)
        floor = self._floors()  # before the fences are read (see check_fences)
        applied = self.users.read_fences(fkeys.values())
        self._check_floor(applied, floor)
        if b.after is not None:  # as if the previous batch's commit had landed
            moved = b.after.fences
            applied = {k: moved.get(k, v) for k, v in applied.items()}
        fenced = split_by_fence(b.records, fkeys, applied)
        b.res.skipped += fenced.skipped
        if b.routed:  # the earlier attempt's routed records behind the fence count as routed, not as skipped
            behind = b.routed - {position(r) for r in fenced.fresh}
            b.res.skipped -= sum(1 for r in b.records if position(r) in behind)
        return fenced

    def _decode_user_records(self, b: _UserBatch, fresh: Sequence[Record]) -> None:
        """Validate the fresh records into :attr:`_UserBatch.candidates`: a retry-topic copy is unwrapped to its
        source record (another group's copy is skipped); what does not validate is dead-lettered."""
        st = self.s.stream
        max_bytes = st.max_event_bytes
        # the event-time window (streams.cores.event_time.check) at one reading of the clock for the batch: an event
        # inside it is fine, one outside is checked (and dead-lettered with the check's reason)
        now = self.clock()
        lo = -np.inf if st.max_user_event_age_s is None else now - st.max_user_event_age_s
        hi = now + st.max_clock_skew_s
        routed = b.routed
        for rec in fresh:
            consumed = (rec.topic, rec.partition, rec.offset)
            if routed and consumed in routed:
                continue
            envelope = None
            if rec.topic == self.topics.user_events_retry:
                wrapped = decode_event(rec.value, RetryEnvelope, max_bytes * 2)
                if isinstance(wrapped, Rejected):
                    self._reject(b.res, rec, wrapped, self.topics.user_dlq)
                    b.routed.add(consumed)
                    continue
                if wrapped.group is not None and wrapped.group != self.group_id:
                    b.res.skipped += 1  # another group's retry (roll-out): that group applies it
                    continue
                rec = Record(self.topics.user_events, *retry.unwrap(wrapped), rec.timestamp_ms)
                envelope = wrapped
            ev = decode_user_event(rec.value, max_bytes)
            if not isinstance(ev, Rejected) and not lo <= ev.ts_s <= hi:
                ev = event_time.check("ts", ev.ts, now, st.max_clock_skew_s, st.max_user_event_age_s) or ev
            if not isinstance(ev, Rejected):
                ev = self._misrouted(ev.user_id, rec.partition, consumed) or ev
            if isinstance(ev, Rejected):
                self._reject(b.res, rec, ev, self.topics.user_dlq)
                b.routed.add(consumed)
                continue
            b.candidates.append(_Candidate(rec, ev, consumed, envelope))

    def _misrouted(self, user: str, partition: int, consumed: tuple[str, int, int]) -> Rejected | None:
        """``Misrouted`` when a user event is not on its user's partition (a retry-topic copy: its source or its
        own partition): its state lives in that partition's shard and could not be committed with this partition's
        fence on a Redis Cluster (``indexing.redis_keys``). The producer did not key it by user id with Kafka's
        default partitioner (murmur2; librdkafka clients need ``partitioner=murmur2_random``)."""
        shard = self.users.shard_of(user)
        if shard == partition and consumed[1] == shard:
            return None
        where = consumed[1] if consumed[1] != shard else partition
        return Rejected("Misrouted", f"user {user[:64]!r} belongs to partition {shard} (murmur2 of the user id, "
                        f"Kafka's default partitioner); the record is on partition {where}: publish user events "
                        "keyed by user_id with the default partitioner")

    def _resolve_claims(self, b: _UserBatch) -> None:
        """Keep the claiming retry-topic copies whose source offset is still parked (the first of a batch's copies
        of one source; marked :attr:`_Candidate.claims`); skip those whose source is resolved (not parked, at or
        below its partition's fence: applied directly, or through another copy); :class:`ParkPendingError` for one
        whose park is not committed yet, unless its source offset is at or past its source partition's end offset:
        no worker parked that (a forged envelope), it is dead-lettered (``ForgedEnvelope``) instead of waiting
        forever."""
        origins: dict[FenceKey, list[int]] = {}
        for c in b.candidates:
            if c.envelope is not None and c.envelope.claim:
                origins.setdefault(self._origin(c), []).append(c.rec.offset)
        if not origins:
            return
        # the fences first, then the parked sets: a park and its fence move are one commit, so a fence read at or
        # past an offset means its park was committed before the parked set is read (absent then: resolved by
        # another copy). The other order loses the event when that commit lands between the two reads: not parked
        # yet, then already fenced, so skipped as resolved.
        fences = self.users.read_fences(origins)
        parked = self.users.read_parked(origins)
        keep: list[_Candidate] = []
        taken: set[tuple[FenceKey, int]] = set()
        pending: list[_Candidate] = []
        for c in b.candidates:
            if c.envelope is None or not c.envelope.claim:
                keep.append(c)
                continue
            origin, offset = self._origin(c), c.rec.offset
            if offset in parked.get(origin, set()) and (origin, offset) not in taken:
                taken.add((origin, offset))
                keep.append(c._replace(claims=True))
            elif offset <= fences[origin] or (origin, offset) in taken:
                b.res.skipped += 1
            else:
                pending.append(c)
        for c, why in self._forged_claims(pending):
            self._reject(b.res, c.rec, Rejected("ForgedEnvelope", f"forged retry envelope: {why}"),
                         self.topics.user_dlq)
            b.routed.add(c.consumed)
        b.candidates = keep

    def _forged_claims(self, pending: Sequence[_Candidate]) -> list[tuple[_Candidate, str]]:
        """The claiming copies of ``pending`` (neither parked nor behind their fence) whose source offset no record
        of the source partition has (:func:`streams.cores.retry.past_the_end`), with why; :class:`ParkPendingError`
        when another one's park may just not be committed yet (or the end offsets cannot be read now)."""
        if not pending:
            return []
        c0 = pending[0]
        waiting = ParkPendingError(f"{c0.rec.topic}[{c0.rec.partition}]@{c0.rec.offset}: its park is not committed "
                                   "yet")
        if self.ends is None:
            raise waiting
        wanted: dict[tuple[str, int], int] = {}
        for c in pending:
            tp = (c.rec.topic, c.rec.partition)
            wanted[tp] = max(wanted.get(tp, -1), c.rec.offset)
        try:
            ends = self._end_offsets(wanted)
        except Exception as exc:  # noqa: BLE001 - the broker is unreachable: the copies wait, as for a pending park
            log.warning("could not read the end offsets of %s (%s); the claiming copies wait", sorted(wanted),
                        type(exc).__name__)
            raise waiting from exc
        forged = []
        for c in pending:
            end = ends.get((c.rec.topic, c.rec.partition))
            why = retry.past_the_end(c.rec.offset, end) if end is not None else None
            if why is None:
                raise ParkPendingError(f"{c.rec.topic}[{c.rec.partition}]@{c.rec.offset}: its park is not "
                                       "committed yet")
            forged.append((c, why))
        return forged

    def _end_offsets(self, wanted: Mapping[tuple[str, int], int]) -> dict[tuple[str, int], int]:
        """The end offsets of ``wanted``'s partitions (-> the highest offset asked about), read from :attr:`ends`
        only where the cache cannot answer (:func:`streams.cores.retry.stale_ends`): one read per batch at most."""
        assert self.ends is not None
        now = time.monotonic()
        with self._ends_lock:
            todo = retry.stale_ends(wanted, self._ends, now)
        if todo:
            read = self.ends.end_offsets(todo)
            with self._ends_lock:
                self._ends.update({tp: (int(end), now) for tp, end in read.items()})
        with self._ends_lock:
            return {tp: self._ends[tp][0] for tp in wanted if tp in self._ends}

    def _look_up_items(self, b: _UserBatch) -> None:
        """The vectors of the candidates' items; a batch prepared again uses the lookups of its first attempt."""
        if b.earlier is not None:  # the same lookups as before the lost race (see prepare_user_events)
            had = b.earlier.vectors
            b.vectors = {c.ev.item_id: had[c.ev.item_id] for c in b.candidates if c.ev.item_id in had}
        else:
            b.vectors = self._item_vectors([c.ev.item_id for c in b.candidates])

    def _route_unknown_items(self, b: _UserBatch) -> None:
        """Split the candidates: events on known items are applied (a claiming copy's offset is claimed); an event
        on an item not indexed yet is parked on the retry topic (a first park registers its source offset in the
        parked set: the commit does, with the fence) or, once its grace ran out, dead-lettered (a claiming copy's
        offset is claimed too, so its park is resolved)."""
        grace = self.s.stream.unknown_item_grace_s
        now = self.clock()
        vectors, known = b.vectors, b.known
        for c in b.candidates:
            if c.ev.item_id in vectors:
                known.append(c.ev)
                if c.claims:
                    b.claims.setdefault(self._origin(c), []).append(c.rec.offset)
                continue
            rec, origin = c.rec, self._origin(c)
            b.routed.add(c.consumed)
            todo = retry.unknown_item(c.envelope, now, grace)
            if isinstance(todo, retry.Park):
                env = todo.envelope(partition=rec.partition, offset=rec.offset, key=rec.key, value=rec.value,
                                    group=self.group_id, claim=c.envelope.claim if c.envelope is not None else True)
                if c.envelope is None:
                    b.parked.setdefault(origin, []).append(rec.offset)
                # keyed by user id: the copy lands on the retry partition of the user's shard (same count)
                b.res.dlq.append(Outgoing(self.topics.user_events_retry, c.ev.user_id.encode(), env.to_bytes()))
                b.res.deferred += 1
            else:
                if c.claims:
                    b.routed_claims.setdefault(origin, []).append(rec.offset)
                self._reject(b.res, rec, Rejected("UnknownItem", todo.reason(c.ev.item_id)), self.topics.user_dlq)
        for k, offs in b.routed_claims.items():
            b.claims.setdefault(k, []).extend(offs)

    def _next_state(self, b: _UserBatch, fenced: FenceSplit[Record]) -> UserCommit | None:
        """The applied events' new user states (read with their digests, for the commit's compare-and-set) and
        engagement, as the commit that writes them with the batch's fences (None when no fence moves)."""
        known = b.known
        users = list(map(_USER, known))
        items = list(map(_ITEM, known))
        actions = [a.value for a in map(_ACTION, known)]
        ts = list(map(_TS, known))
        states: Mapping[str, UserState] = {}
        digests: dict[str, str] = {}
        if known:
            cur, digests = self.users.read_packed_states(self.space, sorted(set(users)))
            if b.after is not None and b.after.space == self.space:  # as if the previous commit had landed
                self._overlay(cur, digests, b.after.states)
            distinct, at = factorize(items)  # a batch has few items: each vector is gathered once
            item_vecs = np.stack([b.vectors[i] for i in distinct])[at]
            batch = EventBatch(users=users, item_vecs=item_vecs, actions=actions, ts=np.asarray(ts))
            states = apply_packed(cur, batch, self.s.stream.user_half_life_s, now_s=self.clock(),
                                  max_ahead_s=self.s.stream.max_clock_skew_s)
        variants = [ctx.get("ab_variant") if ctx else None for ctx in map(_CONTEXT, known)]
        shard_of = self.users.shard_of
        engagement = tally_columns(users, items, actions, ts, variants, self._arms, [shard_of(u) for u in users])
        b.res.ab_actions.update(engagement.ab_actions)
        b.res.ok = len(b.known)
        if not fenced.advance:
            return None
        return UserCommit(
            space=self.space,
            states=states,
            fences=fenced.advance,
            expected_fences=fenced.expected,
            seen=engagement.seen,
            engaged=engagement.engaged,
            popularity=engagement.popularity,
            expected_states={u: digests[u] for u in states},
            parked=b.parked,
            claims=b.claims,
        )

    @staticmethod
    def _overlay(cur: PackedStates, digests: dict[str, str], written: Mapping[str, UserState]) -> None:
        """Read the states another commit writes from it: ``cur``'s and ``digests``' users that it writes."""
        raw = written.raw if isinstance(written, PackedStates) else None
        for u in digests:
            if u in written:
                v = raw[u] if raw is not None else pack_state(written[u])
                cur.raw[u] = v
                digests[u] = hashlib.sha1(v, usedforsecurity=False).hexdigest()

    def _origin(self, c: _Candidate) -> FenceKey:
        """The fence of a candidate's user-events partition (a retry-topic copy's source partition)."""
        return FenceKey(self.group_id, c.rec.topic, c.rec.partition)

    def _floors(self) -> dict[FenceKey, int]:
        with self._floor_lock:
            return dict(self._floor)

    def _check_floor(self, applied: dict[FenceKey, int], floor: dict[FenceKey, int]) -> None:
        """:class:`FencesRegressedError` when a fence ``applied`` is below its ``floor`` (a copy of the floors taken
        before the fences were read: a commit of another agent in between raises the floors, not what was read)
        or the worker stopped applying."""
        if self.regressed is not None:
            raise FencesRegressedError(self.regressed)
        low = {k: (v, floor[k]) for k, v in applied.items() if k in floor and v < floor[k]}
        if low:
            self.regressed = "Redis went back in time: " + ", ".join(
                f"{k.topic}[{k.partition}] fence {v} below {f}" for k, (v, f) in sorted(
                    low.items(), key=lambda kv: (kv[0].topic, kv[0].partition)))
            log.critical("%s; applying nothing more: the worker must resume from the fences", self.regressed)
            raise FencesRegressedError(self.regressed)

    def _raise_floor(self, fences: dict[FenceKey, int] | Mapping[FenceKey, int]) -> None:
        with self._floor_lock:
            for k, v in fences.items():
                if k in self._floor and v > self._floor[k]:
                    self._floor[k] = v

    def check_fences(self) -> str | None:
        """Whether Redis went back in time under this worker: a fence of an assigned partition below what the worker
        resumed from or committed since (a Redis restart that lost its last second, a failover, a restore). Reads
        the floors first, then the fences (one MGET), so a commit in between cannot look like a regression.

        Returns the reason (also kept in :attr:`regressed`, after which every fenced step raises
        :class:`FencesRegressedError`), or None."""
        if self.regressed is not None:
            return self.regressed
        floor = self._floors()
        if not floor:
            return None
        try:
            self._check_floor(self.users.read_fences(floor), floor)
        except FencesRegressedError:
            return self.regressed
        return None

    @property
    def fenced_topics(self) -> tuple[str, ...]:
        """The topics whose partitions have offset fences: user events and their retry topic."""
        return (self.topics.user_events, self.topics.user_events_retry)

    def ensure_layout(self, partition_counts: Mapping[str, int]) -> int:
        """Check (or store, the first time) the Redis key layout against the partitions of the fenced topics
        (``partition_counts``: topic -> partitions, from the broker): the retry topic must have as many partitions
        as ``user.events`` (a copy stays in its user's shard), the stored shard count must be that number, and no
        layout-1 data may be left. Returns the shard count; LayoutError otherwise."""
        n = shard_count(self.topics, partition_counts)
        return self.users.ensure_layout(n, legacy_check=[(self.group_id, t) for t in self.fenced_topics])

    def resume_fences(
        self, partitions: Sequence[tuple[str, int]], partition_counts: dict[str, int] | None = None
    ) -> tuple[dict[tuple[str, int], int], bool]:
        """The fences of ``partitions`` ((topic, partition) -> fence, -1 for none) and whether the group has a fence
        on any partition of the fenced topics (``partition_counts``: topic -> partitions; default: ``partitions``
        only). One MGET."""
        every = set(partitions)
        if partition_counts and self.topics.user_events in partition_counts:  # partitions added since the start?
            self.ensure_layout(partition_counts)
        for topic, n in (partition_counts or {}).items():
            every |= {(topic, i) for i in range(n)}
        keys = {tp: FenceKey(self.group_id, *tp) for tp in sorted(every)}
        read = self.users.read_fences(keys.values())
        fences = {tp: read[keys[tp]] for tp in partitions}
        with self._floor_lock:  # the assigned partitions resume here: their floors start at these fences
            self._floor = {keys[tp]: read[keys[tp]] for tp in partitions}
        return fences, any(v >= 0 for v in read.values())

    def fence_past(self, records: Sequence[Record]) -> None:
        """Move the fences of ``records``' partitions past them without changing any state: records handled
        without a commit (poison records, once dead-lettered) must not be read again on resume. Compare-and-set
        like a commit (:class:`FenceMovedError` when a fence moved meanwhile: retried by the caller)."""
        fkeys = fence_keys(self.group_id, records)
        floor = self._floors()
        applied = self.users.read_fences(fkeys.values())
        self._check_floor(applied, floor)
        fenced = split_by_fence(records, fkeys, applied)
        if fenced.advance:
            self.users.commit(UserCommit(space=self.space, states={}, fences=fenced.advance,
                                         expected_fences=fenced.expected, seen={}, popularity={}))
            self._raise_floor(fenced.advance)

    def retry_due(self, rec: Record) -> float:
        """Epoch seconds at which a retry-topic record is due (0 when it cannot be read: handled as a reject)."""
        return retry.retry_due(rec.value)

    def commit_user_events(
        self, prepared: PreparedUserBatch, max_retries: int = retry.FENCE_COMMIT_TRIES
    ) -> BatchResult:
        """Commit a prepared batch; if a fence moved meanwhile, prepare it again (skipping what is now applied) and
        try again at once, ``max_retries`` commits at most.

        Raises:
            FenceMovedError: The fences kept moving (another worker writes the same partitions).
            FencesRegressedError: Redis went back in time under this worker.
        """
        p = prepared
        for _ in range(max_retries):
            commit = p.commit
            if commit is None:
                return p.result
            if self.regressed is not None:
                raise FencesRegressedError(self.regressed)
            t0 = time.perf_counter()
            try:
                self.users.commit(commit)
            except FenceMovedError:
                log.warning("offset fence moved during commit; re-reading the batch")
                try:
                    p = self.prepare_user_events(p.records, earlier=p)
                except FenceMovedError:  # a claimed park is not committed yet: the same commit is tried again
                    pass
                continue
            self._raise_floor(commit.fences)
            p.result.stage_ms["commit"] = _ms(t0)
            return p.result
        raise FenceMovedError("offset fences kept moving; another worker is writing the same partitions")

    def _item_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        out, missing = split(self._vec_cache, unique(ids))
        if missing:
            found = self.items.get_vectors(missing)
            for k, v in found.items():
                self._vec_cache[k] = v
                out[k] = v
        return out

    # ---------------------------------------------------------------- profiles
    def _prior(self, taste: np.ndarray | None, p: UserProfile) -> np.ndarray | None:
        """A new user's prior: declared tastes and, in a CF space, the group prior of their gender and age
        (the two unit vectors summed when both exist)."""
        group = self.cf.group_prior(p.gender, p.age_bucket) if self.cf is not None else None
        return combine_priors(taste, group)

    def handle_profiles(self, records: Sequence[Record]) -> BatchResult:
        """A brand-new user's prior vector from their declared genres and artists."""
        st = self.s.stream
        res = BatchResult()
        t0 = time.perf_counter()
        good: list[UserProfile] = []
        for rec in records:
            ev = decode_event(rec.value, UserProfile, st.max_event_bytes)
            if not isinstance(ev, Rejected):
                ev = self._check_time("ts", ev.ts, st.max_user_event_age_s) or ev
            if isinstance(ev, Rejected):
                self._reject(res, rec, ev, self.topics.user_dlq)
                continue
            good.append(ev)
        texts = [profile_text(p.genres, p.artists) for p in good]
        with_text = [i for i, t in enumerate(texts) if t]
        vecs = self.text.encode([texts[i] for i in with_text]) if with_text else np.zeros((0, self.text.dim))
        if self.cf is not None and len(vecs):
            # the vector of an item described by the declared tastes
            vecs = self.cf.project_text(vecs, [texts[i] for i in with_text])
        vec_of = {i: vecs[j] for j, i in enumerate(with_text)}
        for i, p in enumerate(good):
            prof = {"gender": p.gender, "age": p.age_bucket, "region": p.region or ""}
            prior = self._prior(vec_of.get(i), p)
            if prior is not None:
                self.users.put_prior(self.space, p.user_id, prior_state(prior, p.ts.timestamp()), prof)
            else:
                self.users.put_prior_profile_only(p.user_id, prof)
        res.ok = len(good)
        res.stage_ms["profile"] = _ms(t0)
        return res
