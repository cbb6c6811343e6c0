"""The new-item quota of the served list."""

from __future__ import annotations

from ranking.online.pipeline import Candidate, select_with_quota


def _cands(scores: list[float], new: list[bool]) -> list[Candidate]:
    return [Candidate(f"i{j}", s, j, "vector", "track", 0, n, score=s) for j, (s, n) in enumerate(zip(scores, new,
                                                                                                      strict=True))]


def test_zero_share_is_the_ranking_order() -> None:
    c = _cands([0.9, 0.8, 0.7, 0.6, 0.5], [False, False, False, True, True])
    top, rep = select_with_quota(c, 3, 0.0)
    assert [x.item_id for x in top] == ["i0", "i1", "i2"]
    assert rep["new_in_top_k"] == 0 and rep["new_added_by_quota"] == 0 and rep["recalled_new"] == 2


def test_quota_replaces_the_lowest_old_items_with_the_best_new_ones() -> None:
    c = _cands([0.9, 0.8, 0.7, 0.6, 0.5, 0.4], [False, False, False, False, True, True])
    top, rep = select_with_quota(c, 4, 0.5)
    assert [x.item_id for x in top] == ["i0", "i1", "i4", "i5"]
    assert rep["new_in_top_k_by_rank"] == 0 and rep["new_added_by_quota"] == 2 and rep["new_in_top_k"] == 2
    assert [x.by_quota for x in top] == [False, False, True, True]


def test_quota_counts_new_items_the_ranking_already_kept() -> None:
    c = _cands([0.9, 0.8, 0.7, 0.6, 0.5], [True, False, False, False, True])
    top, rep = select_with_quota(c, 3, 0.6)  # ceil(1.8) = 2 new wanted, 1 kept by rank
    assert {x.item_id for x in top} == {"i0", "i1", "i4"}
    assert rep["new_in_top_k_by_rank"] == 1 and rep["new_added_by_quota"] == 1


def test_quota_is_capped_by_what_was_recalled() -> None:
    c = _cands([0.9, 0.8, 0.7], [False, False, True])
    top, rep = select_with_quota(c, 3, 1.0)
    assert len(top) == 3 and rep["new_in_top_k"] == 1
    top, rep = select_with_quota(_cands([0.9], [False]), 5, 1.0)
    assert len(top) == 1 and rep["new_in_top_k"] == 0


def test_blend_zero_keeps_the_ranker_order_and_one_the_recall_order() -> None:
    from ranking.online.pipeline import blend_ranks

    def cands() -> list[Candidate]:
        # ranker order i0 > i1 > i2 > i3; recall order i3 > i2 > i1 > i0
        return [Candidate(f"i{j}", recall, j, "vector", "track", 0, False, score=rank)
                for j, (rank, recall) in enumerate([(0.9, 0.1), (0.8, 0.2), (0.7, 0.3), (0.6, 0.4)])]

    c = cands()
    blend_ranks(c, 0.0)
    assert [x.item_id for x in sorted(c, key=lambda x: -x.score)] == ["i0", "i1", "i2", "i3"]
    assert [round(x.score, 9) for x in c] == [1.0, round(2 / 3, 9), round(1 / 3, 9), 0.0]
    c = cands()
    blend_ranks(c, 1.0)
    assert [x.item_id for x in sorted(c, key=lambda x: -x.score)] == ["i3", "i2", "i1", "i0"]


def test_blend_fuses_rank_percentiles() -> None:
    from ranking.online.pipeline import blend_ranks

    # i0 first by the ranker, last by recall; i1 second by both; i2 last by the ranker, first by recall
    c = [Candidate("i0", 0.1, 0, "vector", "track", 0, False, score=0.9),
         Candidate("i1", 0.5, 1, "vector", "track", 0, False, score=0.5),
         Candidate("i2", 0.9, 2, "fresh", "track", 0, True, score=0.1)]
    blend_ranks(c, 0.25)
    assert [round(x.score, 6) for x in c] == [0.75, 0.5, 0.25]
    blend_ranks([], 0.5)  # nothing to do
