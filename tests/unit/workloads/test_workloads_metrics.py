"""Ranking metrics against hand-computed examples."""

import math

import numpy as np
import pytest

from workloads.metrics import RankingMetrics, ranking_metrics, topk

L3 = 1 / math.log2(3)  # discount at rank 2 = 0.6309297535714575
L5 = 1 / math.log2(5)  # discount at rank 4 = 0.43067655807339306


def test_two_users_hand_computed() -> None:
    # user 0: scores rank columns 0,1,2,3,4; relevant {1, 3}
    # user 1: scores rank columns 4,3,2,1,0; relevant {4}
    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5], [0.1, 0.2, 0.3, 0.4, 0.5]])
    relevant = [[1, 3], [4]]
    m = ranking_metrics(scores, relevant, ks=(2, 4))
    # K=2. user 0: top [0,1], one hit at rank 2 -> P=1/2, R=1/2,
    #   DCG=1/log2(3)=0.63093, IDCG (min(2,2)=2 hits) = 1+1/log2(3) = 1.63093, NDCG=0.386853
    # user 1: top [4,3], hit at rank 1 -> P=1/2, R=1, NDCG=1
    # mean: P=0.5, R=0.75, NDCG=(0.386853+1)/2=0.693426, hit=1
    assert m["precision@2"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx(0.75)
    assert m["ndcg@2"] == pytest.approx((L3 / (1 + L3) + 1) / 2)
    assert m["ndcg@2"] == pytest.approx(0.6934264, abs=1e-6)
    assert m["hit@2"] == pytest.approx(1.0)
    # coverage@2: {0,1} U {4,3} = 4 of 5 candidates
    assert m["coverage@2"] == pytest.approx(0.8)
    # K=4. user 0: hits at ranks 2 and 4 -> P=2/4, R=1,
    #   DCG=1/log2(3)+1/log2(5)=1.061606, IDCG=1.630930, NDCG=0.650920
    # user 1: P=1/4, R=1, NDCG=1
    # mean: P=0.375, R=1, NDCG=0.825460; coverage {0,1,2,3}U{4,3,2,1} = 5/5
    assert m["precision@4"] == pytest.approx(0.375)
    assert m["recall@4"] == pytest.approx(1.0)
    assert m["ndcg@4"] == pytest.approx(((L3 + L5) / (1 + L3) + 1) / 2)
    assert m["ndcg@4"] == pytest.approx(0.8254602, abs=1e-6)
    assert m["coverage@4"] == pytest.approx(1.0)
    assert m["n_users"] == 2


def test_exclusion_nan_and_users_without_relevant() -> None:
    # user 0: relevant {0, 2} but 0 is excluded (seen in training) -> relevant {2};
    #   ranking without col 0 is 1,2,3,4 -> K=2 top [1,2]: hit at rank 2
    #   P=1/2, R=1/1, NDCG = (1/log2 3) / 1 = 0.630930
    # user 1: no relevant item -> skipped
    # user 2: col 1 is NaN (treated as -inf) -> top [0,2], relevant {1} not hit: all 0
    # mean over 2 users: P=0.25, R=0.5, NDCG=0.315465, hit=0.5
    # coverage@2: {1,2} U {0,2} = 3 of 5 = 0.6
    scores = np.array(
        [
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [0.9, 0.8, 0.7, 0.6, 0.5],
            [0.5, np.nan, 0.4, 0.3, 0.2],
        ]
    )
    relevant = [[0, 2], [], [1]]
    exclude = [[0], [], []]
    m = ranking_metrics(scores, relevant, ks=2, exclude=exclude)
    assert m["n_users"] == 2
    assert m["precision@2"] == pytest.approx(0.25)
    assert m["recall@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(L3 / 2)
    assert m["hit@2"] == pytest.approx(0.5)
    assert m["coverage@2"] == pytest.approx(0.6)


def test_idcg_is_capped_at_k() -> None:
    # relevant {0,1,2}, ranking 0,3,1,2 -> top-2 [0,3]: one hit at rank 1.
    # DCG = 1; IDCG uses min(K=2, |R|=3) = 2 ideal hits = 1 + 1/log2(3) = 1.630930
    # NDCG = 0.613147, P = 1/2, R = 1/3
    scores = np.array([[0.9, 0.7, 0.6, 0.8]])
    m = ranking_metrics(scores, [[0, 1, 2]], ks=2)
    assert m["ndcg@2"] == pytest.approx(1 / (1 + L3))
    assert m["ndcg@2"] == pytest.approx(0.6131472, abs=1e-6)
    assert m["precision@2"] == pytest.approx(0.5)
    assert m["recall@2"] == pytest.approx(1 / 3)


def test_k_larger_than_candidates_and_short_lists() -> None:
    # 3 candidates, K=5, relevant {2}, ranking 0,1,2: hit at rank 3
    # P@5 = 1/5 (denominator stays K), R = 1, NDCG = 1/log2(4) = 0.5, coverage 3/3
    m = ranking_metrics(np.array([[0.3, 0.2, 0.1]]), [[2]], ks=5)
    assert m["precision@5"] == pytest.approx(0.2)
    assert m["recall@5"] == pytest.approx(1.0)
    assert m["ndcg@5"] == pytest.approx(0.5)
    assert m["coverage@5"] == pytest.approx(1.0)
    # exclude {0,1}: only column 2 is rankable -> hit at rank 1, P@2 = 1/2, NDCG = 1;
    # excluded columns are not "recommended", so coverage@2 = 1/3
    m = ranking_metrics(np.array([[0.3, 0.2, 0.1]]), [[2]], ks=2, exclude=[[0, 1]])
    assert m["precision@2"] == pytest.approx(0.5)
    assert m["ndcg@2"] == pytest.approx(1.0)
    assert m["coverage@2"] == pytest.approx(1 / 3)


def test_no_evaluable_user_gives_nan() -> None:
    m = ranking_metrics(np.zeros((2, 3)), [[], []], ks=1)
    assert m["n_users"] == 0
    assert math.isnan(m["ndcg@1"]) and math.isnan(m["coverage@1"])


def test_dense_masks_equal_index_lists_and_batching() -> None:
    rng = np.random.default_rng(1)
    scores = rng.random((37, 23))
    rel = rng.random((37, 23)) < 0.15
    exc = (rng.random((37, 23)) < 0.2) & ~rel
    rel_lists = [np.flatnonzero(r) for r in rel]
    exc_lists = [np.flatnonzero(r) for r in exc]
    a = ranking_metrics(scores, rel, ks=(1, 5, 10), exclude=exc)
    b = ranking_metrics(scores, rel_lists, ks=(1, 5, 10), exclude=exc_lists, batch_size=4)
    assert a == pytest.approx(b)
    acc = RankingMetrics(23, ks=(1, 5, 10))
    acc.update(scores[:10], rel[:10], exc[:10])
    acc.update(scores[10:], rel[10:], exc[10:])
    assert acc.result() == pytest.approx(a)


def _brute_force(scores: np.ndarray, rel: np.ndarray, k: int) -> dict[str, float]:
    p = r = n = h = 0.0
    users = 0
    for s, rr in zip(scores, rel):
        if not rr.any():
            continue
        users += 1
        ranked = sorted(range(len(s)), key=lambda j: -s[j])[:k]
        hits = [rr[j] for j in ranked]
        p += sum(hits) / k
        r += sum(hits) / rr.sum()
        dcg = sum(1 / math.log2(i + 2) for i, x in enumerate(hits) if x)
        idcg = sum(1 / math.log2(i + 2) for i in range(min(k, int(rr.sum()))))
        n += dcg / idcg
        h += float(any(hits))
    return {f"precision@{k}": p / users, f"recall@{k}": r / users, f"ndcg@{k}": n / users, f"hit@{k}": h / users}


def test_matches_brute_force_on_random_data() -> None:
    rng = np.random.default_rng(7)
    scores = rng.random((50, 40))  # continuous -> no ties
    rel = rng.random((50, 40)) < 0.1
    for k in (1, 3, 10, 40):
        got = ranking_metrics(scores, rel, ks=k)
        want = _brute_force(scores, rel, k)
        for key, val in want.items():
            assert got[key] == pytest.approx(val), key


def test_topk_order_and_validity() -> None:
    cols, valid = topk(np.array([[0.1, 0.5, 0.3, 0.5]]), 3, exclude=np.array([[False, False, True, False]]))
    # 0.5 tie between cols 1 and 3 -> lower index first; col 2 excluded; then col 0
    assert cols.tolist() == [[1, 3, 0]]
    assert valid.tolist() == [[True, True, True]]
    cols, valid = topk(np.array([[0.1, 0.5]]), 2, exclude=np.array([[True, False]]))
    assert cols[0, 0] == 1 and valid.tolist() == [[True, False]]


def test_shape_errors() -> None:
    with pytest.raises(ValueError):
        ranking_metrics(np.zeros((2, 3)), [[0]], ks=1)
    with pytest.raises(ValueError):
        ranking_metrics(np.zeros((1, 3)), [[5]], ks=1)
    with pytest.raises(ValueError):
        ranking_metrics(np.zeros((1, 3)), [[0]], ks=0)


def test_list_metrics_hand_computed():
    from workloads.metrics import list_metrics

    # user A: top-3 [a, b, c], relevant {a, c, z}: hits at ranks 1 and 3
    #   P = 2/3, R = 2/3, DCG = 1 + 1/log2(4) = 1.5, IDCG = 1 + 1/log2(3) + 1/log2(4) = 2.130930
    #   NDCG = 0.703918
    # user B: [x], relevant {y}: all zero.  user C: no relevant items -> skipped.
    m = list_metrics([["a", "b", "c"], ["x"], ["q"]], [{"a", "c", "z"}, {"y"}, set()], k=3)
    assert m["precision@3"] == pytest.approx(1 / 3, abs=1e-5)
    assert m["recall@3"] == pytest.approx(1 / 3, abs=1e-5)
    assert m["ndcg@3"] == pytest.approx(0.703918 / 2, abs=1e-5)
    assert m["hit@3"] == 0.5 and m["n_users"] == 2 and m["coverage@3"] == 4
    with pytest.raises(ValueError):
        list_metrics([["a"]], [], k=3)
