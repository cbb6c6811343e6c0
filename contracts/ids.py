"""Id rules and the text a producer publishes: what every producer, the trainers and the worker agree on.

The event models (:mod:`contracts.events`) refuse ids and texts outside these rules; these helpers make a raw
dataset id or a dataset item's text contract-valid, the same way for the replayer, the demo and the training
data, so a model trained offline sees exactly the text the stream embeds.

Example::

    >>> safe_id("lfm-i", "Björk Guðmundsdóttir")
    'lfm-iBj_rk_Gu_mundsd_ttir'
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from contracts.events import MAX_ID_CHARS, MAX_TAG_CHARS, MAX_TAGS, MAX_TEXT_CHARS

_ID_BAD = re.compile(r"[^\x21-\x7e]")

AGE_BUCKETS = ("<18", "18-24", "25-34", "35-44", "45-54", "55+", "unknown")


def safe_id(prefix: str, raw: str) -> str:
    """A contract-valid id (printable ASCII, no whitespace, at most ``MAX_ID_CHARS``) from a raw dataset id."""
    return (prefix + _ID_BAD.sub("_", raw))[:MAX_ID_CHARS]


def published_content(text: str, tags: Iterable[str]) -> tuple[str, list[str]]:
    """An item's text and tags as a ``content.new`` event carries them: text cut at ``MAX_TEXT_CHARS``, the first
    ``MAX_TAGS`` non-blank tags, each stripped and cut at ``MAX_TAG_CHARS``. The replayer publishes exactly this,
    and the models the stream serves are trained on exactly this."""
    kept = [t.strip()[:MAX_TAG_CHARS] for t in tags if t.strip()][:MAX_TAGS]
    return text[:MAX_TEXT_CHARS], kept


def age_bucket(age: Any) -> str:
    """The ``user.profile`` age bucket of a raw age (one of :data:`AGE_BUCKETS`; ``"unknown"`` when unparsable)."""
    try:
        x = int(age)
    except (TypeError, ValueError):
        return "unknown"
    for hi, b in ((18, "<18"), (25, "18-24"), (35, "25-34"), (45, "35-44"), (55, "45-54")):
        if x < hi:
            return b
    return "55+"
