"""Poison records: find the records of a batch that a step keeps failing on, so the rest of the batch goes through.

A batch step (featurise, project, write the sinks) that raises something other than an infrastructure error
(:func:`streams.cores.retry.is_transient`) fails because of what is in the batch: a bug one input triggers, an id
the index rejects, a model refusing one input. Retrying the batch would fail forever and block its partition, so
:func:`isolate` bisects it: the failing batch is split in halves, each half runs on its own (left first, so records
are applied in their order), and a half that fails again is split again, until each failing record stands alone. A
record that fails alone is poisoned: the caller dead-letters it (:func:`describe` gives the DLQ reason) before any
later record runs. With ``k`` poison records in ``n``, that costs about ``2 k log2(n)`` extra runs of sub-batches.

Pure: no I/O here; the caller's ``run`` and ``poisoned`` do the work (and retry infrastructure errors themselves).
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TypeVar

from streams.cores.decode import Rejected
from streams.cores.retry import error_name

R = TypeVar("R")
T = TypeVar("T")

#: the longest exception message a dead letter carries (after redaction); the DLQ keeps the input, not a stack
MAX_ERROR_CHARS = 300

_URL_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s:@]+(?::[^/\s@]*)?@")
_KEY_VALUE_SECRET = re.compile(
    r"(?i)\b(password|passwd|pwd|secret|token|api[_-]?key|auth(?:orization)?|credentials?)(\s*[=:]\s*)"
    r"(\"[^\"]*\"|'[^']*'|[^\s,;&)}\]]+)"
)


async def isolate(
    records: Sequence[R],
    run: Callable[[Sequence[R]], Awaitable[T]],
    poisoned: Callable[[R, Exception], Awaitable[T]],
    *,
    is_poison: Callable[[Exception], bool],
) -> list[T]:
    """Run ``records`` through ``run``, isolating the records it fails on; the results, in record order.

    ``run(sub)`` handles a sub-batch completely (and retries infrastructure errors itself); an exception for which
    ``is_poison`` is true means "something in ``sub`` makes it fail", any other exception propagates (and so ends
    the batch unfinished). The whole batch runs first: without a failure that is the only call. A record that fails
    alone goes to ``poisoned(record, exc)``, which is awaited before any later record runs (a dead letter must be
    delivered before a later record's commit moves the partition past it).
    """
    out: list[T] = []

    async def go(sub: Sequence[R], known_bad: bool) -> bool:
        """Run ``sub`` (or split it at once when a failure in it is already known); True when it had poison."""
        if not known_bad:
            try:
                out.append(await run(sub))
                return False
            except Exception as exc:
                if not is_poison(exc):
                    raise
                if len(sub) == 1:
                    out.append(await poisoned(sub[0], exc))
                    return True
        elif len(sub) == 1:  # failed before as part of a pair whose other half succeeded: run it alone once more
            return await go(sub, known_bad=False)
        mid = len(sub) // 2
        left_bad = await go(sub[:mid], known_bad=False)
        # the batch failed, the left half did not: the failure is in the right half, split it without a re-run
        right_bad = await go(sub[mid:], known_bad=not left_bad)
        return left_bad or right_bad

    await go(records, known_bad=False)
    return out


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """``text`` without the given secret values, URL credentials (``scheme://user:pass@``) and ``password=...``-style
    pairs."""
    for s in sorted({s for s in secrets if s}, key=len, reverse=True):
        text = text.replace(s, "***")
    text = _URL_USERINFO.sub(r"\1***@", text)
    return _KEY_VALUE_SECRET.sub(r"\1\2***", text)


def describe(exc: BaseException, stage: str, secrets: Iterable[str] = ()) -> Rejected:
    """The dead-letter reason of a record that ``stage`` failed on alone: the exception's class as the error class
    (:func:`~streams.cores.retry.error_name`: ``pymilvus.MilvusException``, ``ValueError``), the stage and the
    exception's message (redacted, at most :data:`MAX_ERROR_CHARS`) as the error; never a traceback."""
    message = " ".join(str(exc).split())  # one line
    message = redact(message, secrets)
    if len(message) > MAX_ERROR_CHARS:
        message = message[: MAX_ERROR_CHARS - 3] + "..."
    name = error_name(exc)
    return Rejected(name, f"poison record: {stage} raised {name}: {message or '-'}")
