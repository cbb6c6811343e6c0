"""The engine's item-vector cache: a cachetools LRU, and the one decision made over it (which ids to fetch)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from cachetools import LRUCache

V = TypeVar("V")


def split(cache: LRUCache[str, V], keys: Iterable[str]) -> tuple[dict[str, V], list[str]]:
    """The cached values of ``keys`` (each hit becomes the most recent) and, in order, the keys not cached.

    Give each key once (:func:`streams.cores.dedupe.unique`).
    """
    hit: dict[str, V] = {}
    missing: list[str] = []
    for k in keys:
        v = cache.get(k)
        if v is None:
            missing.append(k)
        else:
            hit[k] = v
    return hit, missing
