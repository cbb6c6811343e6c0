"""``user.events`` records to decoded events without pydantic on the common path. Pure.

The contract is :class:`contracts.events.UserEvent` (pydantic); validating every record with it costs ~25 us
(measured on this machine under load), most of a user-event batch's decode step. Here a record is parsed by a
msgspec ``Struct`` that mirrors the contract's fields and JSON types, then checked by plain Python against the same
rules, most of them taken from the contract itself (:func:`contracts.events._check_id` for the ids, the supported
versions, the dwell bounds and the context caps).

The fast path is deliberately narrower than the contract: it accepts only a record it can decide with certainty,
in the canonical form producers write (exact JSON types, ids and context strings without surrounding whitespace,
RFC 3339 times ``YYYY-MM-DDTHH:MM:SS[.f{1,6}](Z|+HH:MM)``). Anything else (every rejection, and every valid but
unusual record: a numeric string where an int belongs, a time with a space or 7 fractional digits, a padded id) is
decided by pydantic, which also writes the reason of a rejection. So the decoder accepts exactly what ``UserEvent``
accepts, with equal field values: a differential test (``tests/unit/streams/test_user_event_decode.py``) checks it
over the contract tests' cases and fuzzed variants.

A change of ``UserEvent``'s schema (its JSON schema, config, supported versions) turns the fast path off (every
record goes through pydantic, correct but slow) until it is re-checked here and :data:`CONTRACT_FINGERPRINT`
updated; a unit test fails meanwhile.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import logging
import re
from datetime import datetime
from typing import Annotated, Any

import msgspec

from contracts.events import (
    _BAD_ID_CHARS,
    MAX_CONTEXT_KEY_CHARS,
    MAX_CONTEXT_KEYS,
    MAX_CONTEXT_VALUE_CHARS,
    MAX_ID_CHARS,
    SCHEMA_VERSION,
    SUPPORTED_VERSIONS,
    Action,
    UserEvent,
    _check_id,
)
from streams.cores.decode import Rejected, decode_event

log = logging.getLogger(__name__)


class DecodedUserEvent(msgspec.Struct, frozen=True):
    """A validated user event, as the engine's user path uses it: :class:`UserEvent`'s fields with its values
    (``ts``, ``produced_at`` timezone-aware), plus ``ts_s``, ``ts`` in epoch seconds."""

    user_id: str
    item_id: str
    action: Action
    ts: datetime
    ts_s: float
    schema_version: int = SCHEMA_VERSION
    dwell_ms: int | None = None
    context: dict[str, str] = {}
    produced_at: datetime | None = None


def _bounds(field: str) -> tuple[int, int]:
    """The ``ge``/``le`` bounds of an int field of the contract."""
    ge = le = None
    for m in UserEvent.model_fields[field].metadata:
        ge = getattr(m, "ge", ge)
        le = getattr(m, "le", le)
    if ge is None or le is None:
        raise RuntimeError(f"UserEvent.{field} has no ge/le bounds; re-check the fast decoder")
    return int(ge), int(le)


_DWELL_MIN, _DWELL_MAX = _bounds("dwell_ms")
# RFC 3339 as producers write it (``datetime.isoformat()`` with an offset, or Z); pydantic decides every other form
_RFC3339 = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(?:\.[0-9]{1,6})?"
                      r"(?:Z|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])")


def _ascii_rule_is_printable_without_space() -> bool:
    """Whether the contract's id rule refuses, among ASCII characters, exactly the non-printable ones and space:
    then an ASCII id (its own NFC form, as many UTF-8 bytes as characters) is valid iff ``isprintable()``, without
    a space and 1..MAX_ID_CHARS long (checked at import: else every id goes through the rule itself)."""
    return all((c.isprintable() and c != " ") == (_BAD_ID_CHARS.search(c) is None) for c in map(chr, range(128)))


_ASCII_IDS = _ascii_rule_is_printable_without_space()


def _id(v: str) -> str | None:
    """``v`` as the contract's id rule returns it (None when the rule refuses it)."""
    if _ASCII_IDS and v.isascii():
        return v if 0 < len(v) <= MAX_ID_CHARS and v.isprintable() and " " not in v else None
    try:
        return _check_id(v)
    except ValueError:
        return None


def _time(s: str) -> datetime | None:
    if _RFC3339.fullmatch(s) is None:
        return None
    try:
        return datetime.fromisoformat(s)
    except ValueError:  # a day or an hour out of range: pydantic says why
        return None


class _Wire(msgspec.Struct, forbid_unknown_fields=True):
    """The JSON shape of a ``user.events`` record: the contract's fields with their exact JSON types (and its
    actions and dwell bounds, which msgspec checks in C)."""

    user_id: str
    item_id: str
    action: Action
    ts: str
    schema_version: int = SCHEMA_VERSION
    dwell_ms: Annotated[int, msgspec.Meta(ge=_DWELL_MIN, le=_DWELL_MAX)] | None = None
    context: dict[str, str] = {}
    produced_at: str | None = None


_DECODER = msgspec.json.Decoder(_Wire)


def _strip_prose(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {k: _strip_prose(v) for k, v in schema.items() if k not in ("title", "description")}
    if isinstance(schema, list):
        return [_strip_prose(v) for v in schema]
    return schema


def contract_fingerprint() -> str:
    """A digest of what the fast path mirrors of :class:`UserEvent`: its JSON schema (without titles and
    descriptions), its config, the id rule and the supported versions."""
    doc = {
        "schema": _strip_prose(UserEvent.model_json_schema()),
        "ids": [hashlib.sha256(inspect.getsource(_check_id).encode()).hexdigest(), _BAD_ID_CHARS.pattern,
                MAX_ID_CHARS],
        "config": {k: repr(v) for k, v in sorted(UserEvent.model_config.items())},
        "versions": sorted(SUPPORTED_VERSIONS),
        "context": [MAX_CONTEXT_KEYS, MAX_CONTEXT_KEY_CHARS, MAX_CONTEXT_VALUE_CHARS],
    }
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


#: the :func:`contract_fingerprint` the fast path was checked against
CONTRACT_FINGERPRINT = "af980e9fab04575d"
FAST_PATH = contract_fingerprint() == CONTRACT_FINGERPRINT
if not FAST_PATH:
    log.warning("contracts.events.UserEvent changed (fingerprint %s, the fast decoder was checked against %s): "
                "every user event is validated by pydantic until streams/cores/user_event_decode.py is re-checked",
                contract_fingerprint(), CONTRACT_FINGERPRINT)


def fast_user_event(raw: bytes) -> DecodedUserEvent | None:
    """The event ``raw`` holds when the fast path can decide it is valid; None when it cannot (pydantic decides).

    Never rejects: a None is "not sure", not "invalid"."""
    try:
        w = _DECODER.decode(raw)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    if w.schema_version not in SUPPORTED_VERSIONS:
        return None
    user_id, item_id = _id(w.user_id), _id(w.item_id)
    if user_id is None or item_id is None:
        return None
    ts = _time(w.ts)
    if ts is None:
        return None
    produced = None
    if w.produced_at is not None:
        produced = ts if w.produced_at == w.ts else _time(w.produced_at)  # often stamped together
        if produced is None:
            return None
    ctx = w.context
    if ctx:
        if len(ctx) > MAX_CONTEXT_KEYS:
            return None
        for k, v in ctx.items():
            if not 0 < len(k) <= MAX_CONTEXT_KEY_CHARS or len(v) > MAX_CONTEXT_VALUE_CHARS:
                return None
            if k.strip() != k or v.strip() != v:  # pydantic would strip it (Python strips a superset)
                return None
    return DecodedUserEvent(user_id, item_id, w.action, ts, ts.timestamp(), w.schema_version, w.dwell_ms, ctx,
                            produced)


def from_model(ev: UserEvent) -> DecodedUserEvent:
    """The decoded form of an event pydantic validated."""
    return DecodedUserEvent(ev.user_id, ev.item_id, ev.action, ev.ts, ev.ts.timestamp(), ev.schema_version,
                            ev.dwell_ms, dict(ev.context), ev.produced_at)


def decode_user_event(raw: bytes | None, max_bytes: int) -> DecodedUserEvent | Rejected:
    """Parse and validate one ``user.events`` record: :func:`streams.cores.decode.decode_event` with
    :class:`UserEvent`, the same outcome (and the same reason for a rejection), without pydantic when the record
    is in the canonical form."""
    if FAST_PATH and raw is not None and len(raw) <= max_bytes:
        ev = fast_user_event(raw)
        if ev is not None:
            return ev
    slow = decode_event(raw, UserEvent, max_bytes)
    return slow if isinstance(slow, Rejected) else from_model(slow)
