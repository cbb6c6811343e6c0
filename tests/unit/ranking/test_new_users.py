"""New users: the reveal split on a hand-made log, group priors, the niche slice, the blend, the harness on a small
ml-100k sample, and the ``new-users`` CLI on a tiny generic-format dataset written here."""

import json

import numpy as np
import pytest

from ranking.evaluation.new_users import METHODS, NewUserEvalConfig, run_new_users
from ranking.models.dssm import DSSMConfig
from ranking.models.lightgcn import LightGCNConfig
from ranking.training.content import minilm_text_fields
from ranking.training.user_priors import (
    UserGroups,
    age_bucket,
    blend,
    group_prior,
    item_sets,
    niche_users,
    reveal_split,
)
from tests.thaw_cli import thaw
from workloads.datasets import InteractionDataset, load_movielens_100k

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out


def _toy(n_users=12, per_user=7, n_items=30, seed=0):
    """Every user has ``per_user`` distinct items at timestamps 100*u + t (t = 0..per_user-1), rows shuffled."""
    rng = np.random.default_rng(seed)
    users, items, ts = [], [], []
    for u in range(n_users):
        its = rng.choice(n_items, per_user, replace=False)
        for t, i in enumerate(its):
            users.append(u)
            items.append(i)
            ts.append(100 * u + t)
    perm = rng.permutation(len(users))
    return InteractionDataset(
        name="toy",
        users=np.array(users)[perm],
        items=np.array(items)[perm],
        weights=np.ones(len(users), dtype=np.float32),
        timestamps=np.array(ts)[perm],
        n_users=n_users,
        n_items=n_items,
        user_ids=[str(u) for u in range(n_users)],
        item_ids=[str(i) for i in range(n_items)],
        item_text=[""] * n_items,
        item_tags=[[] for _ in range(n_items)],
    )


def test_reveal_split_reveals_the_earliest_interactions():
    ds = _toy()
    rs = reveal_split(ds, max_reveal=5, user_share=0.5, val_share=0.25, seed=1)
    val, test = rs.users("val"), rs.users("test")
    assert len(val) == 3 and len(test) == 3 and not np.intersect1d(val, test).size
    held = np.union1d(val, test)
    assert not np.isin(ds.users[rs.train], held).any()  # warm rows belong to warm users only
    assert np.isin(ds.users[rs.train], np.setdiff1d(np.arange(12), held)).all()
    for part, users in (("val", val), ("test", test)):
        previous = np.zeros(0, dtype=np.int64)
        for n in (0, 1, 3, 5):
            rev, tgt = rs.reveal(part, n)
            assert len(rev) == n * len(users) and len(tgt) == (7 - n) * len(users)
            for u in users:
                # timestamps 100u + t: the revealed rows are exactly t < n
                assert sorted(ds.timestamps[rev][ds.users[rev] == u] - 100 * u) == list(range(n))
                assert sorted(ds.timestamps[tgt][ds.users[tgt] == u] - 100 * u) == list(range(n, 7))
            assert np.isin(previous, rev).all()  # nested reveal sets
            previous = rev
    rev, _ = rs.reveal("test", 3)
    sets = item_sets(ds, rev, test)
    for u, s in zip(test, sets, strict=True):
        want = ds.items[(ds.users == u) & (ds.timestamps < 100 * u + 3)]
        assert sorted(s.tolist()) == sorted(want.tolist())


def test_reveal_order_is_seeded_without_timestamps():
    from dataclasses import replace

    ds = replace(_toy(), timestamps=None)
    a = reveal_split(ds, 3, user_share=0.5, val_share=0.25, seed=4)
    b = reveal_split(ds, 3, user_share=0.5, val_share=0.25, seed=4)
    np.testing.assert_array_equal(a.reveal("test", 2)[0], b.reveal("test", 2)[0])
    assert len(a.reveal("test", 2)[0]) == 2 * len(a.users("test"))


def test_group_prior_with_fallbacks():
    levels = [[["F|25-34"], ["F"]], [["F|25-34"], ["F"]], [["F|18-24"], ["F"]], [["M|25-34"], ["M"]],
              [["F|25-34"], ["F"]], [["X|1-17"], ["X"]]]
    groups = UserGroups(levels, "test")
    warm = np.array([0, 1, 2, 3])
    vec = np.array([[1.0, 0.0], [3.0, 0.0], [0.0, 4.0], [0.0, -8.0]], dtype=np.float32)
    prior, level = group_prior(groups, warm, vec, np.array([4, 5, 2]), min_members=2)
    np.testing.assert_allclose(prior[0], [2.0, 0.0])  # F|25-34 has 2 warm members
    np.testing.assert_allclose(prior[1], vec.mean(axis=0))  # unknown group: all warm users
    np.testing.assert_allclose(prior[2], [4 / 3, 4 / 3])  # F|18-24 has 1 member -> gender F (3 members)
    assert level.tolist() == [0, -1, 1]
    tags = UserGroups([[["rock", "pop"]], [["rock"]], [["pop"]], [[]]], "tags")
    p, _ = group_prior(tags, np.array([1, 2]), np.array([[2.0, 0.0], [0.0, 2.0]]), np.array([0, 3]), min_members=1)
    np.testing.assert_allclose(p, [[1.0, 1.0], [1.0, 1.0]])  # mean of the rock and pop means; no tags: global


def test_age_buckets():
    assert [age_bucket(a) for a in (7, 18, 24, 25, 49, 50, 56, 73)] == [
        "1-17", "18-24", "18-24", "25-34", "45-49", "50-55", "56+", "56+"]


def test_niche_slice_by_hand():
    ds = _toy(n_users=3, per_user=2, n_items=6)
    pop = np.array([10, 10, 10, 0, 0, 0])
    users = np.arange(3)
    mask, thr = niche_users(ds, users, np.arange(ds.n_interactions), pop, share=1 / 3)
    means = [pop[ds.items[ds.users == u]].mean() for u in users]
    assert thr == pytest.approx(np.quantile(means, 1 / 3))
    assert mask.tolist() == [m <= thr for m in means] and mask.sum() >= 1


def test_blend_shrinks_to_the_prior():
    f, t, p = np.array([[1.0, 0.0]]), np.array([[0.0, 2.0]]), np.array([[0.0, -3.0]])
    np.testing.assert_allclose(blend(0, f, t, p, k=2.0, beta=1.0), [[0.0, -1.0]])
    np.testing.assert_allclose(blend(2, f, t, p, k=2.0, beta=1.0), [[0.25, 0.25 - 0.5]])
    np.testing.assert_allclose(blend(3, f, None, p, k=0.0, beta=1.0), [[1.0, 0.0]])


def test_harness_on_a_small_ml100k_sample():
    ds = load_movielens_100k()
    small = ds.subset(np.flatnonzero(ds.users < 300), name="ml-100k-300u")
    content, _ = minilm_text_fields(small)
    cfg = NewUserEvalConfig(
        reveal=(0, 1, 5), user_share=0.4, val_share=0.15, shrink_ks=(1.0, 4.0), betas=(0.0, 0.5),
        taste_ridges=(1e-1,), fold_ins=("mean", "propagate", "regress"),
        lightgcn=LightGCNConfig(max_epochs=9, eval_every=3, patience=2), dssm=DSSMConfig(max_epochs=2, patience=2),
    )
    r = run_new_users(small, cfg, content=content)
    res = r["results"]
    assert set(res) == set(METHODS) and r["groups"]["test_coverage"] == 1.0
    for m in ("lightgcn", "multimodal-enhanced", "popularity"):
        assert res[m]["5"]["ndcg@20"] > 1.5 * res["random"]["5"]["ndcg@20"], m
    assert res["group-prior"]["0"]["ndcg@20"] > 1.5 * res["random"]["0"]["ndcg@20"]
    assert res["multimodal-enhanced"]["0"] == res["group-prior"]["0"]  # no interactions: the prior
    # the strong simple baselines: popularity within the group beats random; BM25 kNN has nothing at n = 0 and is it
    assert res["group-popularity"]["0"]["ndcg@20"] > 1.5 * res["random"]["0"]["ndcg@20"]
    assert res["bm25-knn"]["0"] == res["group-popularity"]["0"]
    assert res["bm25-knn"]["5"]["ndcg@20"] > res["random"]["5"]["ndcg@20"]
    assert r["selected"]["fold_in"] in ("mean", "propagate", "regress")
    assert {"lightgcn->dssm", "multimodal-enhanced->dssm"} <= set(r["dssm_alignment"]["results"])
    assert 0 < r["niche"]["test_users"] < r["split"]["test_users"]


@pytest.fixture()
def generic_files(tmp_path):
    """Two taste clusters (rock / classical), 60 users declaring their genre, items with matching text."""
    rng = np.random.default_rng(0)
    lines, groups = ["user,item,rating,timestamp"], ["user,group"]
    for u in range(60):
        genre = "rock" if u % 2 else "classical"
        own = np.arange(20) + (20 if genre == "classical" else 0)
        picks = list(rng.choice(own, 10, replace=False)) + [int(rng.integers(0, 40))]
        for t, i in enumerate(picks):
            lines.append(f"u{u},m{i},5,{1000 * u + t}")
        groups.append(f"u{u},{genre}")
    (tmp_path / "train.csv").write_text("\n".join(lines) + "\n")
    (tmp_path / "groups.csv").write_text("\n".join(groups) + "\n")
    with (tmp_path / "items.jsonl").open("w") as f:
        for i in range(40):
            text = f"loud electric guitar rock anthem {i}" if i < 20 else f"quiet piano sonata for orchestra {i}"
            f.write(json.dumps({"item": f"m{i}", "text": text, "tags": ["rock" if i < 20 else "classical"]}) + "\n")
    return tmp_path


def test_cli_new_users_on_generic_files(generic_files, capsys):
    d = generic_files
    out = d / "report.json"
    rc = thaw(
        "evaluate", "new-users", "--interactions", str(d / "train.csv"), "--item-content", str(d / "items.jsonl"),
        "--user-groups", str(d / "groups.csv"), "--reveal", "0,1,3", "--k", "10", "--no-dssm",
        "--max-epochs", "60", "--json", "--out", str(out),
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["results"].keys() == saved["results"].keys() == set(METHODS)
    res = saved["results"]
    for m in METHODS:
        assert set(res[m]) == {"0", "1", "3"}
        assert {"recall@10", "ndcg@10", "niche_recall@10", "niche_ndcg@10", "val_ndcg@10"} <= set(res[m]["1"])
    assert saved["groups"]["test_coverage"] == 1.0 and "groups.csv" in saved["groups"]["description"]
    # the declared genre alone separates the clusters
    assert res["group-prior"]["0"]["ndcg@10"] > res["random"]["0"]["ndcg@10"] + 0.2
    assert saved["split"]["order"].startswith("timestamp")


def test_cli_rejects_missing_data():
    with pytest.raises(SystemExit):
        thaw("evaluate", "new-users")
