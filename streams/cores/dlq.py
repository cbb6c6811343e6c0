"""Dead letters after the fact: fitting one under its topic's record cap, reading them back, and the decisions of
``thaw dlq replay`` and ``thaw dlq stats``. Pure: records in, verdicts and records to write out; the Kafka I/O is
``thaw/commands/dlq.py``.

**Replaying** republishes a dead letter's original key and value (:class:`~contracts.events.DeadLetter`
``key_b64``/``value_b64``) to its source topic, to the partition it came from, with the header
:data:`REPLAY_HEADER` (``thaw-replay-of: <dlq topic>/<partition>/<offset>``). It is idempotent through a ledger
topic (``dlq.replays``, compacted, keyed by the dead letter's position): before a batch is published each of its
dead letters gets an *intent* entry (the target partition and its end offset then), after the broker acked the batch
a *done* entry (the target offset). A dead letter with a done entry, or whose source record was replayed already
(a crash can dead-letter a record twice; two consumer groups each dead-letter their copy), is not replayed again,
whatever the filters of the run that replayed it. An intent without a done entry (the replay stopped in between) is
settled by reading the target partition from the recorded end offset for the header: found, it was published; the
partition read to its end without it, it was not. A replayed record that fails again lands in the DLQ again under
its new position, which the done entry names: it is recognised (:attr:`Verdict.FAILED_AGAIN`) and replayed only
with ``--include-replayed``.

**Fitting**: a dead letter carries its record base64 (4/3 of the bytes), so one of a record as large as its topic
allows, or larger (a compressed batch passes the broker's cap; the worker decodes up to ``max_event_bytes``), can
exceed the DLQ's own cap, and a delivery the broker refuses would be retried forever. :func:`fit_dead_letter` keeps
what fits of the value and marks the error with :data:`TRUNCATED_MARK` (the original size and SHA-256); such a
dead letter is never replayed.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from enum import StrEnum

from kafka.partitioner import murmur2  # type: ignore[import-untyped]
from pydantic import ValidationError

from contracts.events import DeadLetter

#: the header on a replayed record: ``<dlq topic>/<partition>/<offset>`` of the dead letter it was replayed from
REPLAY_HEADER = "thaw-replay-of"
#: the start of a dead letter's error when its value (and maybe its key) was cut to fit the DLQ's cap
TRUNCATED_MARK = "[thaw: truncated to fit the DLQ]"
#: what a record takes on the wire besides its key, value and headers, alone in its batch (a v2 batch header is
#: 61 bytes, the record's own framing ~20), with room to spare
RECORD_OVERHEAD_BYTES = 256
#: the longest key a fitted dead letter keeps (as its Kafka key and in key_b64)
FITTED_KEY_BYTES = 1024
_MAX_ERROR_CHARS = 2000
LEDGER_VERSION = 1


# ------------------------------------------------------------------------------------------------------ positions
@dataclass(frozen=True, order=True)
class Position:
    """A record's place: topic, partition, offset; written ``topic/partition/offset`` (topic names have no ``/``)."""

    topic: str
    partition: int
    offset: int

    def __str__(self) -> str:
        return f"{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def parse(cls, text: str) -> Position | None:
        parts = text.rsplit("/", 2)
        if len(parts) != 3 or not parts[0] or not parts[1].isdigit() or not parts[2].isdigit():
            return None
        return cls(parts[0], int(parts[1]), int(parts[2]))


def source_of(dl: DeadLetter) -> Position:
    """The position of the record a dead letter was made of."""
    return Position(dl.source_topic, dl.partition, dl.offset)


# ----------------------------------------------------------------------------------------------------------- size
def record_bytes(key: bytes | None, value: bytes | None, headers: Iterable[tuple[str, bytes]] = ()) -> int:
    """An upper bound of the bytes a record takes against a topic's ``max.message.bytes`` when alone in a batch."""
    return (RECORD_OVERHEAD_BYTES + len(key or b"") + len(value or b"")
            + sum(len(k.encode()) + len(v) + 10 for k, v in headers))


def fits(key: bytes | None, value: bytes | None, cap: int, headers: Iterable[tuple[str, bytes]] = ()) -> bool:
    """Whether a record fits a topic capped at ``cap`` bytes."""
    return record_bytes(key, value, headers) <= cap


def fit_dead_letter(dl: DeadLetter, key: bytes | None, cap: int) -> tuple[bytes | None, DeadLetter]:
    """The DLQ record (Kafka key, dead letter) of ``dl`` under ``cap``: as it is when it fits, else with the value
    cut to what fits (whole base64 quanta), a key longer than :data:`FITTED_KEY_BYTES` cut to it, and the error
    starting with :data:`TRUNCATED_MARK`, the original sizes and the value's SHA-256."""
    if fits(key, dl.to_bytes(), cap):
        return key, dl
    raw_value = _b64(dl.value_b64) or b""
    raw_key = _b64(dl.key_b64) if dl.key_b64 is not None else None
    kept_key = key[:FITTED_KEY_BYTES] if key is not None else None
    digest = hashlib.sha256(raw_value).hexdigest()
    key_note = f", key {len(raw_key)} bytes" if raw_key is not None and len(raw_key) > FITTED_KEY_BYTES else ""

    def cut(n: int) -> DeadLetter:
        note = f"{TRUNCATED_MARK} value {n} of {len(raw_value)} bytes kept (sha256 {digest}){key_note}; "
        return dl.model_copy(update={
            "value_b64": base64.b64encode(raw_value[:n]).decode(),
            "key_b64": base64.b64encode(raw_key[:FITTED_KEY_BYTES]).decode() if raw_key is not None else None,
            "error": (note + dl.error)[:_MAX_ERROR_CHARS],
        })

    empty = cut(0)
    room = cap - record_bytes(kept_key, empty.to_bytes())
    keep = max(0, min(len(raw_value), room // 4 * 3))
    fitted = cut(keep)
    while keep > 0 and not fits(kept_key, fitted.to_bytes(), cap):  # the note's digits, the error's escaping
        over = record_bytes(kept_key, fitted.to_bytes()) - cap
        keep = max(0, keep - (over // 4 + 1) * 3)
        fitted = cut(keep)
    if not fits(kept_key, fitted.to_bytes(), cap):  # a cap smaller than the dead letter's own fields: the note only
        fitted = fitted.model_copy(update={"error": fitted.error[:fitted.error.index("; ") + 1]})
    return kept_key, fitted


def is_truncated(dl: DeadLetter) -> bool:
    """Whether a dead letter's bytes were cut to fit its DLQ (it cannot be replayed)."""
    return dl.error.startswith(TRUNCATED_MARK)


def _b64(text: str | None) -> bytes | None:
    if text is None:
        return None
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return None


# -------------------------------------------------------------------------------------------------------- reading
def read_dead_letter(value: bytes | None, max_bytes: int) -> DeadLetter | str:
    """A DLQ record's dead letter, or why it is not one (never raises; the reason carries none of its bytes).

    The dead letter of a record without a key has no ``key_b64`` on the wire (``to_bytes`` leaves None out, and the
    model has no default for it): read as None."""
    if value is None:
        return "empty record"
    if len(value) > max_bytes:
        return f"record of {len(value)} bytes, over the {max_bytes}-byte read cap"
    try:
        d = json.loads(value)
        if isinstance(d, dict) and "key_b64" not in d:
            d["key_b64"] = None
        return DeadLetter.model_validate_json(json.dumps(d))
    except ValidationError as exc:
        kinds = sorted({str(e.get("type")) for e in exc.errors(include_url=False, include_input=False)})
        return "not a dead letter (" + ", ".join(kinds[:3]) + ")"
    except (ValueError, UnicodeDecodeError):
        return "not a dead letter (unreadable)"


def label(text: str, limit: int = 64) -> str:
    """A name from a dead letter (its error class, its source topic) safe to print: printable ASCII, bounded."""
    clean = "".join(c if 32 <= ord(c) < 127 else "?" for c in text[:limit])
    return clean + ("..." if len(text) > limit else "") or "?"


# -------------------------------------------------------------------------------------------------------- filters
def parse_offset_range(text: str) -> tuple[int, int | None]:
    """``A-B`` (both included), ``A-`` (from A on) or ``A`` (just A) -> (first, last or None)."""
    a, sep, b = text.strip().partition("-")
    if not a.isdigit() or (b and not b.isdigit()) or (not sep and b):
        raise ValueError(f"an offset range is A-B, A- or A (offsets are integers >= 0), not {text!r}")
    first, last = int(a), (int(b) if b else (None if sep else int(a)))
    if last is not None and last < first:
        raise ValueError(f"offset range {text!r} ends before it starts")
    return first, last


def parse_time(text: str) -> datetime:
    """An ISO-8601 time with a timezone (``2026-11-25T10:00:00Z``, ``...+01:00``)."""
    try:
        t = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise ValueError(f"not an ISO-8601 time: {text!r}") from exc
    if t.tzinfo is None:
        raise ValueError(f"{text!r} has no timezone: add Z or an offset such as +01:00")
    return t


@dataclass(frozen=True)
class ReplayFilter:
    """Which dead letters a run takes; an empty field takes all. ``partitions`` and ``offsets`` are positions in
    the DLQ itself; ``source_topic`` is a full topic name; ``since``/``until`` bound ``failed_at`` (both included)."""

    error_classes: frozenset[str] = frozenset()
    source_topic: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    partitions: frozenset[int] = frozenset()
    offsets: tuple[int, int | None] | None = None

    def takes_position(self, partition: int, offset: int) -> bool:
        if self.partitions and partition not in self.partitions:
            return False
        if self.offsets is not None:
            first, last = self.offsets
            return offset >= first and (last is None or offset <= last)
        return True

    def takes(self, dl: DeadLetter) -> bool:
        if self.error_classes and dl.error_class not in self.error_classes:
            return False
        if self.source_topic is not None and dl.source_topic != self.source_topic:
            return False
        if self.since is not None and dl.failed_at < self.since:
            return False
        return not (self.until is not None and dl.failed_at > self.until)


# --------------------------------------------------------------------------------------------------------- ledger
@dataclass(frozen=True)
class LedgerEntry:
    """One ledger record: dead letter ``dlq`` (made of record ``source``) is being (intent) or was (done) replayed
    to ``target``'s partition; an intent has the partition's end offset before publishing, done the target offset."""

    dlq: Position
    source: Position
    state: str  # "intent" | "done"
    target: Position  # an intent's offset: the target partition's end offset before the batch was published
    run: str = ""
    at: str = ""

    def key(self) -> bytes:
        return str(self.dlq).encode()

    def value(self) -> bytes:
        return json.dumps({"v": LEDGER_VERSION, "state": self.state, "source": str(self.source),
                           "target": str(self.target), "run": self.run, "at": self.at},
                          separators=(",", ":")).encode()

    def done_at(self, offset: int) -> LedgerEntry:
        return replace(self, state="done", target=replace(self.target, offset=offset))


def parse_ledger_entry(key: bytes | None, value: bytes | None) -> LedgerEntry | None:
    """A ledger record, or None when it is not one (a tombstone, another writer's bytes)."""
    if key is None or value is None:
        return None
    try:
        d = json.loads(value)
        dlq = Position.parse(key.decode())
        source, target = Position.parse(str(d["source"])), Position.parse(str(d["target"]))
        state = d["state"]
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, AttributeError):
        return None
    if dlq is None or source is None or target is None or state not in ("intent", "done"):
        return None
    return LedgerEntry(dlq, source, state, target, str(d.get("run", "")), str(d.get("at", "")))


@dataclass
class Ledger:
    """The ledger read back: the latest entry of each dead letter."""

    entries: dict[Position, LedgerEntry] = field(default_factory=dict)

    @classmethod
    def of(cls, entries: Iterable[LedgerEntry | None]) -> Ledger:
        led = cls()
        for e in entries:
            if e is not None:
                led.add(e)
        return led

    def add(self, e: LedgerEntry) -> None:
        if e.state == "intent" and self.entries.get(e.dlq, e).state == "done":
            return  # a done entry stays done
        self.entries[e.dlq] = e

    def intents(self) -> dict[Position, LedgerEntry]:
        return {p: e for p, e in self.entries.items() if e.state == "intent"}

    def view(self) -> LedgerView:
        done = [e for e in self.entries.values() if e.state == "done"]
        return LedgerView(frozenset(e.dlq for e in done), frozenset(e.source for e in done),
                          frozenset(e.target for e in done))


@dataclass(frozen=True)
class LedgerView:
    """What the done entries say: the dead letters replayed, the source records replayed, and where the replays went
    (a dead letter of one of those is a replay that failed again)."""

    done: frozenset[Position] = frozenset()
    sources: frozenset[Position] = frozenset()
    targets: frozenset[Position] = frozenset()


def settle_intents(intents: Mapping[Position, LedgerEntry], found: Mapping[Position, int],
                   read_to_end: set[tuple[str, int]]) -> tuple[list[LedgerEntry], set[Position], set[Position]]:
    """Settle intents without a done entry after reading their target partitions for :data:`REPLAY_HEADER`.

    ``found``: dead letter -> offset of a record in its target partition (at or past the intent's end offset) that
    carries its header; ``read_to_end``: the (topic, partition) read to their end. Returns the done entries to
    write (published), the dead letters that were not published (replay them), and the undecided ones (their
    partition was not read to the end: not replayed this run)."""
    done, unpublished, undecided = [], set(), set()
    for pos, e in intents.items():
        if pos in found:
            done.append(e.done_at(found[pos]))
        elif (e.target.topic, e.target.partition) in read_to_end:
            unpublished.add(pos)
        else:
            undecided.add(pos)
    return done, unpublished, undecided


# ------------------------------------------------------------------------------------------------------- verdicts
class Verdict(StrEnum):
    REPLAY = "replay"
    FILTERED = "filtered"  # not taken by the run's filters
    INVALID = "invalid"  # not a dead letter, or its bytes are not base64
    ALREADY_REPLAYED = "already_replayed"  # a done entry in the ledger
    DUPLICATE = "duplicate"  # its source record was replayed already (from another dead letter of it)
    FAILED_AGAIN = "failed_again"  # the dead letter of a replayed record: only with --include-replayed
    UNDECIDED = "undecided"  # an intent whose target partition could not be read to its end
    NOT_REPLAYABLE = "not_replayable"  # its source is not an input topic of this DLQ (the retry topic, a forgery)
    TRUNCATED = "truncated"  # its bytes were cut to fit the DLQ
    TOO_LARGE = "too_large"  # over the target topic's cap


@dataclass(frozen=True)
class Candidate:
    """A dead letter to replay: where it is, what it was made of, and the record to publish."""

    dlq: Position
    dead_letter: DeadLetter
    key: bytes | None
    value: bytes

    @property
    def source(self) -> Position:
        return source_of(self.dead_letter)

    def headers(self) -> list[tuple[str, bytes]]:
        return [(REPLAY_HEADER, str(self.dlq).encode())]


@dataclass(frozen=True)
class ReplayRules:
    """What a run may do: the DLQ's source topics, an optional other target, the target caps, the ledger."""

    sources: frozenset[str]
    target_caps: Mapping[str, int]
    to_topic: str | None = None
    include_replayed: bool = False


def judge(pos: Position, dl: DeadLetter | str, flt: ReplayFilter, rules: ReplayRules, ledger: LedgerView,
          undecided: Iterable[Position] | frozenset[Position] = frozenset(),
          seen_sources: Iterable[Position] | frozenset[Position] = frozenset()) -> tuple[Verdict, Candidate | None]:
    """The verdict on the DLQ record at ``pos`` (``dl``: its dead letter, or why it is not one). ``undecided``: the
    dead letters whose intent could not be settled; ``seen_sources``: the sources this run replays already."""
    if isinstance(dl, str):
        return Verdict.INVALID, None
    if not flt.takes(dl):
        return Verdict.FILTERED, None
    if pos in ledger.done:
        return Verdict.ALREADY_REPLAYED, None
    if pos in undecided:
        return Verdict.UNDECIDED, None
    src = source_of(dl)
    if src in ledger.targets and not rules.include_replayed:
        return Verdict.FAILED_AGAIN, None
    if src in seen_sources or src in ledger.sources:
        return Verdict.DUPLICATE, None
    if dl.source_topic not in rules.sources:
        return Verdict.NOT_REPLAYABLE, None
    if is_truncated(dl):
        return Verdict.TRUNCATED, None
    value = _b64(dl.value_b64)
    key = _b64(dl.key_b64) if dl.key_b64 is not None else None
    if value is None or (dl.key_b64 is not None and key is None):
        return Verdict.INVALID, None
    cand = Candidate(pos, dl, key, value)
    target = rules.to_topic or dl.source_topic
    if not fits(key, value, rules.target_caps.get(target, 1024 * 1024), cand.headers()):
        return Verdict.TOO_LARGE, None
    return Verdict.REPLAY, cand


def target_partition(cand: Candidate, target: str, partitions: int) -> int:
    """Where a replayed record goes: the partition it came from when that is its own topic (so one user's or item's
    records stay in one partition, whatever partitioner its producer used), else by key like the Java client."""
    if target == cand.dead_letter.source_topic and cand.dead_letter.partition < partitions:
        return cand.dead_letter.partition
    if cand.key is not None:
        return (murmur2(cand.key) & 0x7FFFFFFF) % partitions
    return cand.dead_letter.partition % partitions


def intent(cand: Candidate, target: str, partition: int, end_offset: int, run: str) -> LedgerEntry:
    return LedgerEntry(cand.dlq, cand.source, "intent", Position(target, partition, end_offset), run,
                       datetime.now(UTC).isoformat())


# ---------------------------------------------------------------------------------------------------------- stats
@dataclass
class DlqStats:
    """Counts over the dead letters of a DLQ: by error class, by source topic, by verdict; the time span."""

    read: int = 0
    verdicts: Counter[str] = field(default_factory=Counter)
    error_classes: Counter[str] = field(default_factory=Counter)
    source_topics: Counter[str] = field(default_factory=Counter)
    replayed_by_error_class: Counter[str] = field(default_factory=Counter)
    oldest: datetime | None = None
    newest: datetime | None = None

    def add(self, dl: DeadLetter | str, verdict: Verdict) -> None:
        self.read += 1
        self.verdicts[verdict.value] += 1
        if isinstance(dl, str):
            return
        self.error_classes[label(dl.error_class)] += 1
        self.source_topics[label(dl.source_topic, 249)] += 1
        self.oldest = dl.failed_at if self.oldest is None else min(self.oldest, dl.failed_at)
        self.newest = dl.failed_at if self.newest is None else max(self.newest, dl.failed_at)

    def replayed(self, dl: DeadLetter) -> None:
        self.replayed_by_error_class[label(dl.error_class)] += 1

    def to_dict(self) -> dict[str, object]:
        return {
            "read": self.read,
            "verdicts": dict(sorted(self.verdicts.items())),
            "error_classes": dict(self.error_classes.most_common()),
            "source_topics": dict(self.source_topics.most_common()),
            "oldest_failed_at": self.oldest.isoformat() if self.oldest else None,
            "newest_failed_at": self.newest.isoformat() if self.newest else None,
        }
