"""Deterministic A/B traffic split: user id -> bucket -> variant.

A user's bucket is ``int(sha256(salt + ":" + user_id)[:8], 16) mod n_buckets``: stable across processes, machines
and restarts (no state), uniform over users, and independent between experiments that use different salts.
Variants own contiguous bucket ranges sized by their weights (largest-remainder rounding, every variant at least one
bucket), so a 50/50 split of 100 buckets is buckets 0-49 / 50-99. Changing the weights moves only the buckets at
the boundaries; changing the salt reshuffles every user (a new experiment).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

from infra.settings import ABVariant


@dataclass(frozen=True)
class Assignment:
    bucket: int
    variant: ABVariant


def bucket_of(user_id: str, salt: str, n_buckets: int) -> int:
    """The user's bucket in ``[0, n_buckets)``."""
    digest = hashlib.sha256(f"{salt}:{user_id}".encode()).hexdigest()
    return int(digest[:8], 16) % n_buckets


def allocate(weights: Sequence[float], n_buckets: int) -> list[int]:
    """Buckets per variant: proportional to ``weights``, summing to ``n_buckets``, each at least 1."""
    if not weights:
        raise ValueError("at least one variant is needed")
    if any(w <= 0 for w in weights):
        raise ValueError("variant weights must be positive")
    if len(weights) > n_buckets:
        raise ValueError(f"{len(weights)} variants do not fit in {n_buckets} buckets")
    total = float(sum(weights))
    exact = [w / total * n_buckets for w in weights]
    counts = [max(1, int(e)) for e in exact]
    # hand out (or take back) the remainder by largest fractional part
    order = sorted(range(len(weights)), key=lambda i: exact[i] - int(exact[i]), reverse=True)
    i = 0
    while sum(counts) < n_buckets:
        counts[order[i % len(order)]] += 1
        i += 1
    while sum(counts) > n_buckets:
        j = max((k for k in range(len(counts)) if counts[k] > 1), key=lambda k: counts[k] - exact[k])
        counts[j] -= 1
    return counts


class ABSplit:
    """Maps user ids to (bucket, variant).

    Args:
        variants: The arms, in bucket order.
        salt: Experiment salt.
        n_buckets: Number of hash buckets.
    """

    def __init__(self, variants: Sequence[ABVariant], salt: str, n_buckets: int) -> None:
        names = [v.name for v in variants]
        if len(set(names)) != len(names):
            raise ValueError(f"variant names must be unique: {names}")
        self.variants = tuple(variants)
        self.salt = salt
        self.n_buckets = n_buckets
        counts = allocate([v.weight for v in variants], n_buckets)
        self._variant_of_bucket: list[ABVariant] = []
        self.ranges: dict[str, tuple[int, int]] = {}
        for v, c in zip(self.variants, counts, strict=True):
            start = len(self._variant_of_bucket)
            self._variant_of_bucket.extend([v] * c)
            self.ranges[v.name] = (start, start + c - 1)

    def assign(self, user_id: str) -> Assignment:
        b = bucket_of(user_id, self.salt, self.n_buckets)
        return Assignment(b, self._variant_of_bucket[b])

    def variant(self, name: str) -> ABVariant:
        for v in self.variants:
            if v.name == name:
                return v
        raise KeyError(name)
