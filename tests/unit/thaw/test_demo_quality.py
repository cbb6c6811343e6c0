"""The demo's live per-kind section: tables per group with each model's non-personal control, as plot series."""

import numpy as np

from thaw.quality import RANDOM, SERVED, TEXT_ONLY, personal_tables, quality_series
from thaw.report_html import quality_series as html_series


def test_per_kind_tables_and_their_plot_series():
    rng = np.random.default_rng(0)
    n_users, n = 40, 60
    kinds = ["track" if j % 2 else "moment" for j in range(n)]
    poor = [j % 4 == 1 for j in range(n)]
    taste = rng.integers(0, 3, n_users)
    topic = rng.integers(0, 3, n)
    truth = taste[:, None] == topic[None, :]
    served = truth + rng.normal(0, 0.1, truth.shape)  # personal: knows each user's topic
    same = np.repeat(rng.normal(size=(1, n)), n_users, axis=0)  # one ranking for everyone
    t = personal_tables(served, same, rng.normal(size=truth.shape), truth, kinds, poor, 5)
    assert {"all", "track", "moment", "track|text-poor", "track|text-rich"} <= set(t)
    assert t["track"][SERVED]["ndcg@5"] > 0.9 > t["track"][SERVED]["non_personal_ndcg@5"]
    assert t["track"][TEXT_ONLY]["ndcg@5"] == t["track"][TEXT_ONLY]["non_personal_ndcg@5"]
    series = quality_series({"by_group": t}, 5)
    assert len(series) == len(t)
    first = next(iter(series.values()))
    assert set(first) == {SERVED, TEXT_ONLY, RANDOM} | {f"{m}, non-personal" for m in (SERVED, TEXT_ONLY, RANDOM)}
    assert {k: v for k, v in first.items() if "ndcg@5" in v}  # plottable shape (section -> model -> metric)
    html_series({"quality": {"x": {m: {"ndcg@20": 0.1} for m in first}}})
