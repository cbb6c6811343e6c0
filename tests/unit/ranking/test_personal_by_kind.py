"""Within-kind NDCG and the non-personal control (ranking.evaluation.personal) on small synthetic matrices."""

import numpy as np
import pytest

from ranking.evaluation.personal import (
    candidate_groups,
    group_ndcg,
    ndcg_rows,
    non_personal_scores,
    personal_report,
)
from workloads.metrics import RankingMetrics


def test_ndcg_rows_matches_the_ranking_metrics_means():
    rng = np.random.default_rng(0)
    s = rng.normal(size=(30, 40))
    rel = [rng.choice(40, size=int(rng.integers(1, 6)), replace=False) for _ in range(30)]
    acc = RankingMetrics(40, ks=(5,))
    acc.update(s, rel)
    assert ndcg_rows(s, rel, 5).mean() == pytest.approx(acc.result()["ndcg@5"])


def test_within_kind_ranks_only_same_kind_items():
    # tracks and moments interleaved; the user's scores put every moment above every track
    kinds = ["moment", "track", "moment", "track", "moment", "track"]
    s = np.array([[10.0, 1.0, 11.0, 3.0, 12.0, 2.0]])
    rel = [np.array([3])]  # a relevant track, ranked first among the tracks
    groups = candidate_groups(kinds)
    assert groups["track"].tolist() == [1, 3, 5] and groups["moment"].tolist() == [0, 2, 4]
    pers, _ = group_ndcg(s, rel, 1, groups["track"])
    assert pers[0] == 1.0  # among tracks only it is first
    assert ndcg_rows(s, rel, 1)[0] == 0.0  # among all candidates a moment beats it
    moment_pers, _ = group_ndcg(s, rel, 1, groups["moment"])
    assert np.isnan(moment_pers[0])  # no relevant moment: the user is not counted for moments
    # a relevant moment never counts within tracks
    pers2, _ = group_ndcg(s, [np.array([4])], 3, groups["track"])
    assert np.isnan(pers2[0])


def test_non_personal_control_equals_personal_score_when_all_users_are_identical():
    rng = np.random.default_rng(1)
    row = rng.normal(size=12)
    s = np.repeat(row[None, :], 8, axis=0)
    rel = [rng.choice(12, size=3, replace=False) for _ in range(8)]
    kinds = ["track"] * 6 + ["moment"] * 6
    rep = personal_report(s, rel, 3, candidate_groups(kinds), min_candidates=0)
    assert set(rep) == {"all", "track", "moment"}
    for v in rep.values():
        assert v["ndcg@3"] == v["non_personal_ndcg@3"]
        assert v["personal_gain@3"] == 0.0


def test_non_personal_control_falls_below_a_truly_personal_ranking():
    # two taste groups, each user's scores rank exactly their own group's items first
    n = 10
    s = np.zeros((n, 8))
    rel = []
    for u in range(n):
        own = np.arange(4) if u % 2 == 0 else np.arange(4, 8)
        s[u, own] = 1.0 + np.arange(4) * 0.01
        rel.append(own)
    assert np.allclose(non_personal_scores(s), s.mean(axis=0))
    rep = personal_report(s, rel, 4, {"all": np.arange(8)}, min_candidates=0)
    assert rep["all"]["ndcg@4"] == 1.0
    assert rep["all"]["non_personal_ndcg@4"] < 0.7
    assert rep["all"]["personal_gain@4"] > 0.3


def test_text_poor_groups_only_where_a_kind_has_both_and_small_groups_are_left_out():
    kinds = ["track"] * 4 + ["moment"] * 3
    poor = [True, False, True, False, False, False, False]
    g = candidate_groups(kinds, poor)
    assert g["track|text-poor"].tolist() == [0, 2] and g["track|text-rich"].tolist() == [1, 3]
    assert "moment|text-poor" not in g and "all|text-poor" in g
    assert "comment" not in candidate_groups(kinds + ["comment"], only=("track", "moment"))
    s = np.arange(7, dtype=float)[None, :]
    rep = personal_report(s, [np.array([0, 6])], 2, g)  # default floor k=2: groups of 2 candidates left out
    assert "track|text-poor" not in rep and "track" in rep


def test_the_offline_harness_reports_within_kind_and_the_non_personal_control():
    from ranking.evaluation.cold_items import ColdEvalConfig, run_cold_items
    from workloads.community import time_split
    from workloads.datasets import InteractionDataset

    rng = np.random.default_rng(3)
    n_items, n_users = 240, 60
    kinds = ["track" if i % 2 else "moment" for i in range(n_items)]
    poor = [bool(i % 4 == 1) for i in range(n_items)]  # half the tracks
    topic = rng.integers(0, 4, n_items)
    taste = rng.integers(0, 4, n_users)
    rows = [(u, i) for u in range(n_users) for i in range(n_items) if topic[i] == taste[u] and rng.random() < 0.5]
    arr = np.array(rows)
    ds = InteractionDataset(
        name="synthetic", users=arr[:, 0].astype(np.int64), items=arr[:, 1].astype(np.int64),
        weights=np.ones(len(arr), np.float32), timestamps=arr[:, 1].astype(np.int64), n_users=n_users,
        n_items=n_items, user_ids=[f"u{u}" for u in range(n_users)], item_ids=[f"i{i}" for i in range(n_items)],
        item_text=[f"topic{topic[i]} post" if not poor[i] else "new demo" for i in range(n_items)],
        item_tags=[[f"topic{topic[i]}"] if not poor[i] else [] for i in range(n_items)], item_tag_counts=None)
    split = time_split(ds, np.arange(n_items, dtype=float), cold_share=0.4, val_share=0.1)
    rep = run_cold_items(ds, split, ColdEvalConfig(models=("random", "tfidf-knn"), words=False, k=5,
                                                   sparse_ks=(None,)),
                         content=_no_dense(n_items), item_kinds=kinds, item_text_poor=poor)
    knn = rep["models"]["tfidf-knn"]["personal"]
    assert {"all", "track", "moment", "track|text-poor", "track|text-rich"} <= set(knn)
    assert "moment|text-poor" not in knn  # no text-poor moment
    test_tracks = sum(kinds[i] == "track" for i in split.test_items)
    assert knn["track"]["candidates"] == test_tracks
    # the topic words make text-rich tracks personal; text-poor tracks publish no topic: nothing to rank them by
    assert knn["track|text-rich"]["personal_gain@5"] > 0.3
    assert knn["track|text-poor"]["ndcg@5"] == pytest.approx(knn["track|text-poor"]["non_personal_ndcg@5"])


def _no_dense(n):
    from ranking.training.content import ContentFields

    return ContentFields(("text",), (np.zeros((n, 2), np.float32),), np.ones((n, 1), bool), {"text": "none"})
