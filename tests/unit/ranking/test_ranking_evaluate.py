"""The generic evaluation entry point: split files in the generic format, the CLI, and the JSON report."""

import json

import numpy as np
import pytest

from ranking.evaluation.cold_items import load_cold_split
from tests.thaw_cli import thaw
from workloads.datasets import load_movielens_100k
from workloads.splits import cold_item_split


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """ml-100k (first 200 users) written as generic files: train / cold val / cold test + JSONL content."""
    d = tmp_path_factory.mktemp("generic")
    ds = load_movielens_100k()
    small = ds.subset(np.flatnonzero(ds.users < 200))
    split = cold_item_split(small, cold_share=0.3, val_share=0.15, seed=3)

    def write(name, rows):
        lines = ["user,item,rating"] + [
            f"{small.user_ids[u]},{small.item_ids[i]},{w:g}"
            for u, i, w in zip(small.users[rows], small.items[rows], small.weights[rows], strict=True)
        ]
        (d / name).write_text("\n".join(lines) + "\n")

    write("train.csv", split.train)
    write("train_leaky.csv", np.concatenate([split.train, split.test[:3]]))  # 3 rows on test cold items
    write("val.csv", split.val)
    write("test.csv", split.test)
    with (d / "items.jsonl").open("w") as f:
        for i in range(ds.n_items):
            f.write(json.dumps({"item": ds.item_ids[i], "text": ds.item_text[i], "tags": ds.item_tags[i]}) + "\n")
    return d, split


def test_split_files_are_respected(files):
    d, split = files
    ds, s, info = load_cold_split(d / "train.csv", d / "items.jsonl", d / "test.csv", d / "val.csv")
    assert len(s.test_items) == len(split.test_items) and len(s.val_items) == len(split.val_items)
    assert info["train_rows_dropped_on_cold_items"] == 0
    assert not np.isin(ds.items[s.train], s.cold_items).any()
    ds2, s2, info2 = load_cold_split(d / "train_leaky.csv", d / "items.jsonl", d / "test.csv", seed=1)
    assert info2["train_rows_dropped_on_cold_items"] == 3
    assert "validation = seeded" in info2["source"]
    assert np.intersect1d(s2.val_items, s2.test_items).size == 0
    assert not np.isin(ds2.items[s2.train], s2.cold_items).any()


def test_cli_cold_items_json(files, capsys):
    d, _ = files
    out = d / "report.json"
    rc = thaw(
        "evaluate", "cold-items", "--interactions", str(d / "train_leaky.csv"), "--item-content",
        str(d / "items.jsonl"), "--cold-test", str(d / "test.csv"), "--cold-val", str(d / "val.csv"), "--k", "10",
        "--models", "random,popularity,content-knn", "--knn-ks", "all,5", "--json", "--out", str(out),
    )
    assert rc == 0
    printed = json.loads(capsys.readouterr().out)
    saved = json.loads(out.read_text())
    assert printed["models"].keys() == saved["models"].keys() == {"random", "popularity", "content-knn"}
    knn = saved["models"]["content-knn"]
    assert {"precision@10", "recall@10", "ndcg@10", "val_ndcg@10", "train_seconds"} <= set(knn)
    assert knn["ndcg@10"] > saved["models"]["random"]["ndcg@10"]
    assert saved["split"]["train_rows_dropped_on_cold_items"] == 3
    assert saved["selected"]["content_knn_neighbours"] in ("all", "5")


def test_cli_rejects_missing_data():
    with pytest.raises(SystemExit):
        thaw("evaluate", "cold-items")


def test_cli_sparse_baselines_under_the_gar_protocol(files, capsys):
    """The generic path with the strong simple baselines, the GAR protocol and --max-users: every item without
    training interactions is a candidate, the report names the protocol, the sparse kNNs rank better than random."""
    d, split = files
    rc = thaw(
        "evaluate", "cold-items", "--interactions", str(d / "train.csv"), "--item-content", str(d / "items.jsonl"),
        "--cold-test", str(d / "test.csv"), "--cold-val", str(d / "val.csv"), "--k", "10",
        "--models", "random,tfidf-knn,bm25-knn", "--sparse-ks", "all,5", "--protocol", "gar", "--max-users", "40",
        "--json",
    )
    assert rc == 0
    rep = json.loads(capsys.readouterr().out)
    assert rep["protocol"]["name"] == "gar" and rep["protocol"]["max_users"] == 40
    assert rep["split"]["test_users"] <= 40 and rep["split"]["val_users"] <= 40
    n_cold = len(split.val_items) + len(split.test_items)
    assert rep["protocol"]["test_candidates"] == rep["protocol"]["val_candidates"] == n_cold
    for m in ("tfidf-knn", "bm25-knn"):
        assert rep["models"][m]["ndcg@10"] > rep["models"]["random"]["ndcg@10"], m
        assert rep["models"][m]["neighbours"] in ("all", "5") and rep["models"][m]["vocabulary"] > 0
    assert rep["selected"]["best_sparse_knn"] in ("tfidf-knn", "bm25-knn")
