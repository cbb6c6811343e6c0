"""sim_cold_start's personal table: option parsing and the summary over simulator seeds (paired by seed)."""

import argparse

import pytest

from benchmarks.sim_cold_start import over_seeds, parse_shares


def test_parse_shares():
    assert parse_shares("track=0.5, moment=0.25") == {"track": 0.5, "moment": 0.25}
    assert parse_shares("") == {}
    with pytest.raises(argparse.ArgumentTypeError):
        parse_shares("track")


def _run(seed, served, knn):
    cell = lambda v: {"ndcg@20": v, "non_personal_ndcg@20": v / 2, "personal_gain@20": v / 2}  # noqa: E731
    return {"config": {"seed": seed}, "verdict": {"personal_by_kind": {"groups": {
        "track|text-poor": {"served (every field)": cell(served), "content-knn (text)": cell(knn), "users": 5,
                            "candidates": 30}}}}}


def test_over_seeds_pairs_the_served_model_with_each_text_model_by_seed():
    out = over_seeds([_run(0, 0.30, 0.20), _run(1, 0.50, 0.45), _run(2, 0.40, 0.30)], 20)
    row = out["groups"]["track|text-poor"]
    assert out["sim_seeds"] == [0, 1, 2]
    assert row["served (every field)"]["ndcg@20"] == pytest.approx(0.4)
    assert row["served (every field)"]["ndcg@20_sd"] == pytest.approx(0.1)
    assert row["served (every field)"]["non_personal_ndcg@20"] == pytest.approx(0.2)
    d = row["served_minus"]["content-knn (text)"]
    assert d["by_seed"] == [0.1, 0.05, 0.1] and d["mean"] == pytest.approx(0.25 / 3, abs=1e-5)
    assert d["t95"][0] < d["mean"] < d["t95"][1]
