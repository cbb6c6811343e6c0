"""Deduplication within one batch. Pure."""

from __future__ import annotations

from collections.abc import Callable, Hashable, Iterable, Sequence
from typing import TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


def last_wins(items: Sequence[T], key: Callable[[T], K]) -> list[T]:
    """The last item of each key, in the order the kept items arrived.

    A batch can hold two versions of one item: the later record wins, as it would one batch later.
    """
    latest = {key(x): i for i, x in enumerate(items)}
    return [x for i, x in enumerate(items) if latest[key(x)] == i]


def unique(keys: Iterable[K]) -> list[K]:
    """Each key once, in first-seen order."""
    return list(dict.fromkeys(keys))
