"""The A/B split is deterministic, proportional to the weights, and stable when weights move."""

from __future__ import annotations

from collections import Counter

import pytest

from infra.settings import ABVariant
from ranking.online.ab import ABSplit, allocate, bucket_of


def test_bucket_is_deterministic_and_salted() -> None:
    assert bucket_of("u1", "exp-a", 100) == bucket_of("u1", "exp-a", 100)
    moved = sum(bucket_of(f"u{i}", "exp-a", 100) != bucket_of(f"u{i}", "exp-b", 100) for i in range(1000))
    assert moved > 900  # a new salt reshuffles almost everyone (1% stay by chance)


def test_buckets_are_uniform() -> None:
    counts = Counter(bucket_of(f"user-{i}", "s", 10) for i in range(20_000))
    assert set(counts) == set(range(10))
    assert max(counts.values()) - min(counts.values()) < 0.1 * 2000  # binomial sd ~42 per bucket


@pytest.mark.parametrize(("weights", "n", "want"), [
    ([1, 1], 100, [50, 50]), ([9, 1], 100, [90, 10]), ([1, 1, 1], 100, [34, 33, 33]), ([1000, 1], 10, [9, 1]),
])
def test_allocate(weights: list[float], n: int, want: list[int]) -> None:
    assert allocate(weights, n) == want


def test_allocate_refuses_impossible_splits() -> None:
    with pytest.raises(ValueError, match="do not fit"):
        allocate([1, 1, 1], 2)
    with pytest.raises(ValueError, match="positive"):
        allocate([1, 0], 10)


def test_split_shares_follow_weights() -> None:
    split = ABSplit([ABVariant(name="a", weight=3), ABVariant(name="b", weight=1)], "s", 100)
    assert split.ranges == {"a": (0, 74), "b": (75, 99)}
    names = Counter(split.assign(f"user-{i}").variant.name for i in range(20_000))
    assert abs(names["a"] / 20_000 - 0.75) < 0.02
    a = split.assign("someone")
    assert split.ranges[a.variant.name][0] <= a.bucket <= split.ranges[a.variant.name][1]


def test_moving_weights_only_moves_boundary_buckets() -> None:
    before = ABSplit([ABVariant(name="a", weight=50), ABVariant(name="b", weight=50)], "s", 100)
    after = ABSplit([ABVariant(name="a", weight=60), ABVariant(name="b", weight=40)], "s", 100)
    users = [f"user-{i}" for i in range(5000)]
    changed = [u for u in users if before.assign(u).variant.name != after.assign(u).variant.name]
    assert all(before.assign(u).variant.name == "b" and after.assign(u).variant.name == "a" for u in changed)
    assert 0.05 < len(changed) / len(users) < 0.15


def test_duplicate_names_are_refused() -> None:
    with pytest.raises(ValueError, match="unique"):
        ABSplit([ABVariant(name="a"), ABVariant(name="a")], "s", 10)
