"""The Last.fm ranking log (:func:`ranking.training.rank_data.lastfm_log`) on the real HetRec 2011 data.

Labels and negatives, the split by user arrival, the online featuriser against the offline rows, and the published
tags / ids of ``thaw replay lastfm`` against the training log's.
"""

import json

import numpy as np
import pytest

from ranking.online.features import ItemContext, RankFeaturizer, UserContext
from ranking.training.rank_data import (
    SPARSE_FIELDS,
    TAG_COUNT_BINS,
    SplitConfig,
    build_rank_split,
    lastfm_log,
    tag_count_bucket,
)

pytestmark = pytest.mark.datasets  # Last.fm HetRec 2011 from THAW_DATASETS_DIR

STATUS = SPARSE_FIELDS.index("status")


@pytest.fixture(scope="module")
def ds():
    from workloads.datasets import load_dataset

    return load_dataset("lastfm")


@pytest.fixture(scope="module")
def data():
    log = lastfm_log(negatives=2, seed=0)
    split = build_rank_split(log, SplitConfig())
    feat = RankFeaturizer.from_split(log, split)
    shipped = RankFeaturizer.from_json(json.loads(json.dumps(feat.to_json())))  # as a service loads it
    return log, split, shipped


def test_labels_negatives_and_heavy(ds, data):
    log = data[0]
    n = ds.n_interactions
    assert log.tasks == ("play", "heavy") and log.labels.shape == (len(log.users), 2)
    # every pair is a play; (almost) two negatives per pair, none of them a real pair
    pos = log.labels[:, 0] > 0
    assert pos.sum() == n and 3 * n - 10 <= len(log.users) <= 3 * n
    assert log.labels[~pos].sum() == 0 and (log.labels[:, 1] <= log.labels[:, 0]).all()
    real = set((ds.users * np.int64(ds.n_items) + ds.items).tolist())
    neg_keys = (log.users[~pos] * np.int64(log.n_items) + log.items[~pos]).tolist()
    assert not real.intersection(neg_keys)
    # negatives are popularity-shaped: their items are more listened-to than a uniform draw's
    listeners = np.bincount(ds.items, minlength=ds.n_items)
    assert listeners[log.items[~pos]].mean() > 10 * listeners.mean()
    # heavy = play count above the user's own median: about half the pairs of every user
    plays = np.asarray(ds.meta["plays"])
    heavy = log.labels[:n, 1] > 0
    for u in (0, 1, 100, 1000):
        m = ds.users == u
        np.testing.assert_array_equal(heavy[m], plays[m] > np.median(plays[m]))
    assert 0.45 < heavy.mean() < 0.5
    assert abs(log.labels[:, 1].mean() - heavy.mean() / 3) < 0.01


def test_time_order_is_by_user_arrival_and_label_free(ds, data):
    log = data[0]
    n = ds.n_interactions
    ts, users = log.ts[:n], log.users[:n]
    # a user's pairs are one minute apart from their start, distinct times within the user
    for u in (0, 7, 500):
        t = np.sort(ts[users == u])
        np.testing.assert_allclose(np.diff(t), 60.0)
    # the within-user order is not the file's (artist id / play rank) order: position does not predict heavy
    rank = np.empty(n, np.int64)
    for u in range(ds.n_users):
        rows = np.flatnonzero(users == u)
        rank[rows[np.argsort(ts[rows])]] = np.arange(len(rows))
    heavy = log.labels[:n, 1] > 0
    assert abs(heavy[rank < 25].mean() - heavy[rank >= 25].mean()) < 0.03
    # negatives carry their pair's time
    assert np.isin(log.ts[n:], ts).all()
    assert log.meta["tag_assignments_before_2002_ignored"] == 5 and log.meta["users_without_dated_tag"] == 0


def test_split_sizes_groups_and_schema(data):
    log, split, feat = data
    rows = split.info["rows"]
    assert sum(rows.values()) == len(log.users)
    assert abs(rows["test"] / len(log.users) - 0.2) < 0.001 and abs(rows["valid"] / len(log.users) - 0.1) < 0.001
    # split by user arrival: the test users are unseen in the fit period; ~10 of each user's ~49 pairs are new
    fit_users = set(log.users[split.rows["fit"]].tolist())
    test_users = set(log.users[split.rows["test"]].tolist())
    assert len(fit_users & test_users) <= 1 and split.info["test_unknown_user_share"] > 0.99
    assert 0.15 < split.info["test_new_share"] < 0.25
    assert log.ts[split.rows["fit"]].max() <= log.ts[split.rows["test"]].min()
    # no gender: the groups are new/old only; positive rates the same in fit and test
    assert split.group_names == ("new|unknown", "old|unknown") and split.schema.n_groups == 2
    assert set(split.test_groups()) == {"all", "new", "old"}
    for a, b in zip(split.info["positive_rate_fit"], split.info["positive_rate_test"], strict=True):
        assert abs(a - b) < 0.01
    cards = dict(split.schema.sparse)
    assert cards["gender"] == cards["age"] == cards["user_extra"] == cards["context"] == 1
    assert cards["item_extra"] == len(TAG_COUNT_BINS) + 2
    assert log.item_categories.shape[1] == 48 and feat.history_actions == ("play",)


def _item(log, i):
    return ItemContext(log.item_ids[i], "track", tuple(log.item_tags[i]), 0.0)


def test_features_equal_the_offline_test_rows(data):
    log, split, feat = data
    test_rows = split.rows["test"]
    pos_of_row = {int(r): p for p, r in enumerate(test_rows)}
    rng = np.random.default_rng(0)
    seen_new = seen_old = 0
    for p in rng.choice(len(test_rows), size=100, replace=False):
        r = int(test_rows[p])
        u, t = int(log.users[r]), float(log.ts[r])
        rows = [int(x) for x in np.flatnonzero((log.users == u) & (log.ts == t)) if int(x) in pos_of_row]
        assert len(rows) >= 2  # the pair and its negatives, one request
        # the user as a service sees them: the plays strictly before t, newest first; the profile the replayer sent
        hist = np.flatnonzero((log.users == u) & (log.labels[:, 0] > 0) & (log.ts < t))
        hist = hist[np.argsort(-log.ts[hist], kind="stable")]
        user = UserContext(log.user_ids[u], {}, [_item(log, i) for i in log.items[hist]])
        got = feat.features(user, [_item(log, i) for i in log.items[rows]], t)
        want = split.test.take(np.array([pos_of_row[x] for x in rows]))
        np.testing.assert_array_equal(got.sparse, want.sparse)  # no column the stream lacks: exact, user_extra too
        np.testing.assert_array_equal(got.categories, want.categories)
        np.testing.assert_allclose(got.dense, want.dense, rtol=1e-5, atol=1e-5)
        np.testing.assert_array_equal(got.group, want.group)
        assert got.is_new_user == bool(want.sparse[0, STATUS] == 1)
        seen_new += int(got.is_new_user)
        seen_old += int(not got.is_new_user)
    assert seen_new > 0 and seen_old > 0


def test_replayed_ids_tags_and_actions_match_the_log(ds, data):
    from workloads.replay import sample_dataset

    log, _, feat = data
    sample = sample_dataset(ds)  # what `thaw replay lastfm` publishes
    assert len(sample.items) == log.n_items and len(sample.profiles) == log.n_users
    for d in sample.items:
        j = sample.item_index[d["item_id"]]
        assert log.item_ids[j] == d["item_id"] and d["kind"] == "track"
        item = ItemContext(d["item_id"], d["kind"], tuple(d["tags"]), 0.0)
        np.testing.assert_array_equal(feat.categories_of(item), log.item_categories[j], err_msg=d["item_id"])
        x = feat.features(UserContext("x", {}, []), [item], 0.0)
        assert x.sparse[0, SPARSE_FIELDS.index("item_extra")] == log.item_extra[j]
    for prof in sample.profiles:
        assert log.user_ids[sample.user_index[prof["user_id"]]] == prof["user_id"]
        assert set(prof) == {"user_id"}  # no gender / age / friends on the stream
    # every replayed event is a play of a logged pair: the engaged history is exactly the replayed plays
    assert {e["action"] for e in sample.events} == set(feat.history_actions) == {"play"}
    pairs = {(log.user_ids[u], log.item_ids[i]) for u, i in zip(log.users[log.labels[:, 0] > 0],
                                                              log.items[log.labels[:, 0] > 0], strict=True)}
    assert {(e["user_id"], e["item_id"]) for e in sample.events} == pairs
    # the categories cover most plays
    assert log.item_categories[log.items[log.labels[:, 0] > 0]].any(1).mean() > 0.8


def test_tag_count_bucket():
    got = tag_count_bucket(np.array([0, 1, 2, 3, 5, 6, 10, 11, 19, 20, 25]))
    assert got.tolist() == [1, 2, 2, 3, 3, 4, 4, 5, 5, 6, 6]
