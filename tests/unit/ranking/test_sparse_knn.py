"""The sparse bag-of-words vectors (TF-IDF / BM25) and the item-kNN scores on them."""

import math

import numpy as np
import pytest
from scipy import sparse

from ranking.evaluation.baselines import sparse_knn_scorer
from ranking.online.sparse import MAX_TOKENS_PER_ITEM, SparseVectorizer, item_tokens, knn_scores, topk_mean
from ranking.training.common import Interactions


def test_item_tokens_words_whole_tags_and_bounds():
    toks = item_tokens("Blue Monday (1983)", ["New Wave", "synth-pop", "  ", "80s"])
    assert toks == ["blue", "monday", "1983", "new", "wave", "#new wave", "synth", "pop", "#synth pop", "80s"]
    assert "#80s" not in toks  # one-word tags are their word already
    assert len(item_tokens("x " * 100_000, ["t"] * 100_000)) == MAX_TOKENS_PER_ITEM


@pytest.mark.parametrize("weighting", ["tfidf", "bm25"])
def test_rows_are_unit_and_unseen_words_stay_in_the_norm(weighting):
    docs = [["rock", "indie"], ["rock", "metal"], ["jazz"], ["rock", "indie", "indie"]]
    vec = SparseVectorizer.fit(docs, weighting=weighting)
    assert sorted(vec.vocab) == ["indie", "jazz", "metal", "rock"] and vec.df[vec.vocab["rock"]] == 3
    rows = vec.transform(docs)
    np.testing.assert_allclose(sparse.linalg.norm(rows, axis=1), 1.0, rtol=1e-6)
    # a rarer word weighs more
    r0 = rows[0].toarray().ravel()
    assert r0[vec.vocab["indie"]] > r0[vec.vocab["rock"]]
    # a new word has no column but takes its share of the norm: the known part shrinks, below 1
    new = vec.transform([["rock", "indie", "neverseen"]])
    assert new.nnz == 2 and 0.0 < sparse.linalg.norm(new) < 1.0
    assert vec.transform([["neverseen"]]).nnz == 0


def test_idf_and_weights_follow_the_documented_formulas():
    docs = [["a", "b"], ["a"], ["c", "c", "a"]]
    t = SparseVectorizer.fit(docs, weighting="tfidf")
    idf = {w: math.log(4 / (1 + df)) + 1 for w, df in (("a", 3), ("b", 1), ("c", 1))}
    w = {"c": (1 + math.log(2)) * idf["c"], "a": idf["a"]}  # tf 2 -> 1 + log 2
    norm = math.sqrt(w["c"] ** 2 + w["a"] ** 2)
    row = t.transform([docs[2]]).toarray().ravel()
    assert row[t.vocab["c"]] == pytest.approx(w["c"] / norm, rel=1e-5)
    b = SparseVectorizer.fit(docs, weighting="bm25", k1=1.2, b=0.75)
    bidf = {w: math.log1p((3 - df + 0.5) / (df + 0.5)) for w, df in (("a", 3), ("c", 1))}
    avg = 6 / 3
    k = 1.2 * (1 - 0.75 + 0.75 * 3 / avg)
    wc, wa = bidf["c"] * 2 * 2.2 / (2 + k), bidf["a"] * 1 * 2.2 / (1 + k)
    row = b.transform([docs[2]]).toarray().ravel()
    assert row[b.vocab["c"]] == pytest.approx(wc / math.hypot(wc, wa), rel=1e-5)


def test_max_features_min_df_and_round_trip(tmp_path):
    docs = [["a", "b", "c"], ["a", "b"], ["a", "d"], ["e"]]
    v = SparseVectorizer.fit(docs, weighting="bm25", max_features=2)
    assert sorted(v.vocab) == ["a", "b"]
    assert sorted(SparseVectorizer.fit(docs, min_df=2).vocab) == ["a", "b"]
    v.save(tmp_path / "v.json")
    w = SparseVectorizer.load(tmp_path / "v.json")
    assert (w.transform(docs) != v.transform(docs)).nnz == 0
    assert v.vectorize("A b", ["new tag"]) == {
        int(j): pytest.approx(float(x)) for j, x in zip(v.transform([item_tokens("A b", ["new tag"])]).indices,
                                                         v.transform([item_tokens("A b", ["new tag"])]).data,
                                                         strict=True)}
    (tmp_path / "bad.json").write_text('{"format": "other"}')
    with pytest.raises(ValueError, match="not a sparse vectorizer"):
        SparseVectorizer.load(tmp_path / "bad.json")


def test_knn_scores_mean_of_top_k():
    sims = np.array([[0.9, 0.1, 0.5], [0.0, 0.2, 0.4]], dtype=np.float32)
    np.testing.assert_allclose(topk_mean(sims, 2), [0.7, 0.3], rtol=1e-6)
    np.testing.assert_allclose(topk_mean(sims, None), sims.mean(axis=1), rtol=1e-6)
    np.testing.assert_allclose(topk_mean(sims, 10), sims.mean(axis=1), rtol=1e-6)
    cand = sparse.csr_matrix(np.eye(3, dtype=np.float32))
    assert knn_scores(cand, sparse.csr_matrix((0, 3), dtype=np.float32), 2).tolist() == [0, 0, 0]


def test_sparse_knn_scorer_matches_brute_force():
    rng = np.random.default_rng(0)
    rows = sparse.random(30, 12, density=0.3, random_state=1, dtype=np.float32, format="csr")
    users = rng.integers(0, 8, 60)
    items = rng.integers(0, 20, 60)
    train = Interactions(users, items, 9, 30)  # user 8 has no history
    dense = rows.toarray()
    for k in (None, 3):
        got = sparse_knn_scorer(rows, train, k)(np.arange(9), np.arange(20, 30))
        for u in range(9):
            hist = np.unique(items[users == u])
            for c, i in enumerate(range(20, 30)):
                sims = np.sort(dense[hist] @ dense[i])[::-1] if len(hist) else np.zeros(0)
                want = sims[: (len(sims) if k is None else k)].mean() if len(sims) else 0.0
                assert got[u, c] == pytest.approx(want, abs=1e-6)
