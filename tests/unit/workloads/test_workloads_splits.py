"""Split builders: determinism, disjointness and cold-start properties."""

import numpy as np
import pytest

from workloads.datasets import InteractionDataset
from workloads.splits import (
    cold_item_split,
    default_cold_item_split,
    make_eval_task,
    new_user_split,
    predefined_cold_item_split,
    temporal_split,
)


def _toy(n_users: int = 60, n_items: int = 45, n: int = 900, with_ts: bool = True, seed: int = 0):
    rng = np.random.default_rng(seed)
    users = rng.integers(0, n_users, n)
    items = rng.integers(0, n_items - 3, n)  # last 3 items never interacted with
    return InteractionDataset(
        name="toy",
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        weights=rng.integers(1, 6, n).astype(np.float32),
        timestamps=rng.integers(0, 300, n).astype(np.int64) if with_ts else None,  # many ties
        n_users=n_users,
        n_items=n_items,
        user_ids=[f"u{i}" for i in range(n_users)],
        item_ids=[f"i{i}" for i in range(n_items)],
        item_text=[""] * n_items,
        item_tags=[[] for _ in range(n_items)],
    )


def _assert_partition(n: int, *parts: np.ndarray) -> None:
    allrows = np.concatenate(parts)
    assert len(allrows) == n
    assert np.array_equal(np.sort(allrows), np.arange(n))
    for p in parts:
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates


def test_cold_item_split_properties() -> None:
    ds = _toy()
    sp = cold_item_split(ds, cold_share=0.2, val_share=0.1, seed=3)
    _assert_partition(ds.n_interactions, sp.train, sp.val, sp.test)
    observed = np.flatnonzero(ds.item_counts() > 0)
    assert len(observed) == 42
    # round(0.1 * 42) = 4 val items, round(0.2 * 42) - 4 = 4 test items
    assert len(sp.val_items) == 4 and len(sp.test_items) == 4
    assert len(sp.warm_items) == 42 - 8
    assert not np.intersect1d(sp.val_items, sp.test_items).size
    assert not np.intersect1d(sp.cold_items, sp.warm_items).size
    # cold items have zero training interactions, and all their rows are held out
    assert not np.isin(ds.items[sp.train], sp.cold_items).any()
    assert np.isin(ds.items[sp.val], sp.val_items).all()
    assert np.isin(ds.items[sp.test], sp.test_items).all()
    assert sp.mask("val").sum() == len(sp.val)
    assert sp.cold_interaction_share == pytest.approx((len(sp.val) + len(sp.test)) / ds.n_interactions)
    # never-seen items are in no set
    assert not np.isin([42, 43, 44], np.concatenate([sp.warm_items, sp.cold_items])).any()


def test_cold_item_split_is_deterministic() -> None:
    ds = _toy()
    a = cold_item_split(ds, seed=11)
    b = cold_item_split(ds, seed=11)
    c = cold_item_split(ds, seed=12)
    for f in ("train", "val", "test", "val_items", "test_items", "warm_items"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.test_items, c.test_items)


def test_cold_item_split_rejects_bad_shares() -> None:
    with pytest.raises(ValueError):
        cold_item_split(_toy(), cold_share=0.1, val_share=0.2)


def test_cold_item_eval_task() -> None:
    ds = _toy()
    sp = cold_item_split(ds, seed=0)
    task = sp.eval_task(ds, "test")
    assert np.array_equal(task.candidates, sp.test_items)
    assert task.exclude is None
    # every (user, cold test item) pair of the test rows appears as relevant, and only those
    pairs = {(int(u), int(i)) for u, i in zip(ds.users[sp.test], ds.items[sp.test])}
    got = {(int(u), int(task.candidates[c])) for u, rel in zip(task.users, task.relevant) for c in rel}
    assert got == pairs
    # min_weight drops weaker targets
    strong = sp.eval_task(ds, "test", min_weight=4)
    assert sum(len(r) for r in strong.relevant) <= sum(len(r) for r in task.relevant)


def test_new_user_split_by_time() -> None:
    ds = _toy()
    k = 3
    sp = new_user_split(ds, user_share=0.3, reveal_k=k, seed=5, val_share=0.1)
    assert sp.by_time
    _assert_partition(ds.n_interactions, sp.train, sp.val_reveal, sp.val_target, sp.test_reveal, sp.test_target)
    held = np.concatenate([sp.val_users, sp.test_users])
    assert not np.intersect1d(sp.val_users, sp.test_users).size
    assert not np.isin(ds.users[sp.train], held).any()
    assert not np.intersect1d(sp.train_users, held).size
    for users, reveal, target in (
        (sp.val_users, sp.val_reveal, sp.val_target),
        (sp.test_users, sp.test_reveal, sp.test_target),
    ):
        for u in users:
            r = reveal[ds.users[reveal] == u]
            t = target[ds.users[target] == u]
            assert len(r) == k and len(t) >= 1
            assert ds.timestamps[r].max() <= ds.timestamps[t].min()  # first k by time
    task = sp.eval_task(ds, "test")
    assert set(task.users.tolist()) <= set(sp.test_users.tolist())
    assert task.exclude is not None


def test_new_user_split_deterministic_without_timestamps() -> None:
    ds = _toy(with_ts=False)
    a = new_user_split(ds, user_share=0.2, reveal_k=2, seed=9)
    b = new_user_split(ds, user_share=0.2, reveal_k=2, seed=9)
    c = new_user_split(ds, user_share=0.2, reveal_k=2, seed=10)
    assert not a.by_time
    for f in ("train", "test_reveal", "test_target", "val_reveal", "test_users"):
        assert np.array_equal(getattr(a, f), getattr(b, f))
    assert not np.array_equal(a.test_reveal, c.test_reveal)


def test_new_user_split_eligibility() -> None:
    ds = _toy()
    k = 20
    sp = new_user_split(ds, user_share=1.0, reveal_k=k, seed=0, val_share=0.0)
    counts = ds.user_counts()
    assert np.array_equal(sp.test_users, np.flatnonzero(counts > k))
    assert len(sp.val_users) == 0


def test_temporal_split() -> None:
    ds = _toy()
    sp = temporal_split(ds, test_share=0.2, val_share=0.1)
    _assert_partition(ds.n_interactions, sp.train, sp.val, sp.test)
    ts = ds.timestamps
    assert ts[sp.train].max() < ts[sp.val].min() <= ts[sp.val].max() < ts[sp.test].min()
    assert len(sp.test) >= 0.2 * ds.n_interactions  # ties at the cut go to test
    before = np.concatenate([sp.train, sp.val])
    for i in sp.test_new_items:
        assert i not in set(ds.items[before].tolist())
    task = sp.eval_task(ds, "test")
    assert len(task.users) > 0
    with pytest.raises(ValueError):
        temporal_split(_toy(with_ts=False))


def test_predefined_split_and_default() -> None:
    ds = _toy()
    ref = cold_item_split(ds, seed=1)
    with_splits = InteractionDataset(
        **{**ds.__dict__, "splits": {"warm_emb": ref.train, "cold_item_val": ref.val, "cold_item_test": ref.test}}
    )
    sp = default_cold_item_split(with_splits)
    assert sp.seed is None
    assert np.array_equal(sp.train, ref.train) and np.array_equal(sp.test_items, ref.test_items)
    bad = InteractionDataset(
        **{
            **ds.__dict__,
            "splits": {"warm_emb": np.arange(ds.n_interactions), "cold_item_val": ref.val, "cold_item_test": ref.test},
        }
    )
    with pytest.raises(ValueError, match="training"):
        predefined_cold_item_split(bad)
    assert default_cold_item_split(ds, seed=1).seed == 1


def test_make_eval_task_groups_and_excludes() -> None:
    ds = _toy()
    rows = np.arange(100)
    task = make_eval_task(ds, rows, candidates=np.arange(20), exclude_rows=np.arange(100, 400))
    assert task.exclude is not None and len(task.exclude) == task.n_rows
    for u, rel in zip(task.users, task.relevant):
        items = ds.items[rows][ds.users[rows] == u]
        assert set(rel.tolist()) == {int(i) for i in items if i < 20}


def test_cold_item_gar_protocol() -> None:
    """GAR protocol: candidates are the validation and test cold items together; a test user's validation positives
    are excluded (known), nothing is excluded on validation; max_users keeps the first users by index."""
    ds = _toy()
    sp = cold_item_split(ds, cold_share=0.3, val_share=0.15, seed=3)
    std = sp.eval_task(ds, "test")
    gar = sp.eval_task(ds, "test", protocol="gar")
    assert np.array_equal(gar.candidates, np.union1d(sp.val_items, sp.test_items))
    assert np.array_equal(gar.users, std.users)
    for r, u in enumerate(gar.users):
        rel = set(gar.candidates[gar.relevant[r]].tolist())
        assert rel == set(ds.items[sp.test][ds.users[sp.test] == u].tolist())
        excl = set(gar.candidates[gar.exclude[r]].tolist())
        assert excl == set(ds.items[sp.val][ds.users[sp.val] == u].tolist())
        assert not rel & excl
    assert any(len(e) for e in gar.exclude)  # the toy has users with both validation and test positives
    val = sp.eval_task(ds, "val", protocol="gar")
    assert np.array_equal(val.candidates, gar.candidates) and all(len(e) == 0 for e in val.exclude)
    few = sp.eval_task(ds, "test", protocol="gar", max_users=5)
    assert few.n_rows == 5 and np.array_equal(few.users, gar.users[:5]) and len(few.exclude) == 5
    with pytest.raises(ValueError, match="protocol"):
        sp.eval_task(ds, "test", protocol="nope")  # type: ignore[arg-type]
