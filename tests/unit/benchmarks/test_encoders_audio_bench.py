"""Helpers of the audio encoder benchmark: the exact random-ranking recall and the caption hit rule."""

import numpy as np

from benchmarks.encoders_audio import exact_random_recall, retrieval


def test_exact_random_recall_matches_a_simulation():
    rng = np.random.default_rng(0)
    n, k = 40, 10
    m = np.array([1, 3, 7])
    exact = exact_random_recall(n, m, k)
    sims = []
    for mi in m:
        hits = [(rng.permutation(n)[:k] < mi).any() for _ in range(20_000)]
        sims.append(np.mean(hits))
    assert abs(exact - float(np.mean(sims))) < 0.01
    assert (
        abs(exact_random_recall(5, np.array([1]), 1) - 0.2) < 1e-12 and exact_random_recall(5, np.array([5]), 1) == 1.0
    )


def test_retrieval_counts_every_clip_with_the_same_caption():
    # three clips, clips 0 and 1 share caption 0; clip 2 has caption 1
    audio = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    text = np.array([[1.0, 0.0], [0.0, 1.0]])
    r = retrieval(audio, text, np.array([0, 0, 1]), np.array([0, 1]))
    # clip 1 is closer to caption 1 than to its own: a->t R@1 = 2/3; text 0 retrieves clip 0 first: t->a R@1 = 1
    assert r["a2t_r1"] == 2 / 3 and r["t2a_r1"] == 1.0 and r["a2t_r10"] == 1.0
