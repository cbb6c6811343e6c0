"""Smoke test per model: every cold-item model trains briefly on a small real sample of ml-100k (300
users, MiniLM text content) through the evaluation harness and beats random ranking; one parametrized test."""

import numpy as np
import pytest

from ranking.evaluation.baselines import random_scorer
from ranking.evaluation.cold_items import ColdEvalArtifacts, ColdEvalConfig, format_table, run_cold_items
from ranking.evaluation.report import report_json
from ranking.models.cb2cf import CB2CFConfig
from ranking.models.dropoutnet import DropoutNetConfig
from ranking.models.dssm import DSSMConfig
from ranking.training.common import evaluate_task
from ranking.training.content import minilm_text_fields
from workloads.datasets import load_movielens_100k
from workloads.splits import cold_item_split

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out

K = 20
MODELS = ["content-knn", "tfidf-knn", "bm25-knn", "dropoutnet", "cb2cf-regression", "cb2cf-contrastive",
          "cb2cf-combined", "cb2cf", "hybrid"]


@pytest.fixture(scope="module")
def sample():
    ds = load_movielens_100k()
    small = ds.subset(np.flatnonzero(ds.users < 300), name="ml-100k-300u")
    split = cold_item_split(small, cold_share=0.3, val_share=0.15, seed=0)
    content, _ = minilm_text_fields(small)
    return small, split, content


@pytest.fixture(scope="module")
def run(sample):
    ds, split, content = sample
    cfg = ColdEvalConfig(
        k=K,
        knn_ks=(None, 10),
        sparse_ks=(None, 10),
        dssm=DSSMConfig(max_epochs=5, patience=2),
        cb2cf=CB2CFConfig(max_epochs=10, patience=3),
        dropoutnet=DropoutNetConfig(max_epochs=3, patience=2),
    )
    artifacts = ColdEvalArtifacts()
    report = run_cold_items(ds, split, cfg, content=content, artifacts=artifacts)
    task = split.eval_task(ds, "test")
    rnd = [evaluate_task(task, random_scorer(s), k=K)[f"ndcg@{K}"] for s in range(20)]
    return report, artifacts, max(rnd)


@pytest.mark.parametrize("model", MODELS)
def test_model_beats_random(run, model):
    report, _, best_random = run
    m = report["models"][model]
    assert m[f"ndcg@{K}"] > best_random, f"{model} ndcg {m[f'ndcg@{K}']:.4f} <= best of 20 random {best_random:.4f}"
    assert m[f"recall@{K}"] > report["models"]["random"][f"recall@{K}"]


def test_dssm_beats_random_on_warm_holdout(run):
    report, _, _ = run
    d = report["dssm"]
    assert d[f"holdout_ndcg@{K}"] > 2 * d[f"holdout_random_ndcg@{K}"]


def test_report_shape(run):
    report, artifacts, _ = run
    assert set(report["models"]) >= {"random", "popularity", *MODELS}
    # strictly cold items: popularity degenerates to the (same-seed) random ranking
    assert report["models"]["popularity"][f"ndcg@{K}"] == report["models"]["random"][f"ndcg@{K}"]
    assert report["selected"]["cb2cf_objective"] in ("regression", "contrastive", "combined")
    for m in report["models"].values():
        assert {f"precision@{K}", f"recall@{K}", f"ndcg@{K}", f"val_ndcg@{K}", "train_seconds"} <= set(m)
    assert artifacts.dssm is not None and artifacts.selected_objective == report["selected"]["cb2cf_objective"]
    assert '"ndcg@20"' in report_json(report) and "cb2cf" in format_table(report)
    # choices are made on validation: the sparse baseline, the hybrid's weight, what is served
    sel = report["selected"]
    assert sel["best_sparse_knn"] == max(("tfidf-knn", "bm25-knn"), key=lambda m: report["models"][m][f"val_ndcg@{K}"])
    grid = report["models"]["hybrid"]["val_ndcg_by_weight"]
    assert f"{sel['hybrid']['sparse']}|{sel['hybrid']['weight']:g}" == max(grid, key=grid.get)
    assert sel["served"] == max(("cb2cf", "hybrid"), key=lambda m: report["models"][m][f"val_ndcg@{K}"])
    assert report["protocol"]["name"] == "standard"


def test_published_models_reproduce_the_harness_scores(run, sample, tmp_path):
    """The exported towers + CB2CF, run in ONNX Runtime, score cold items as the evaluated torch models did."""
    import onnxruntime as ort

    from encoders.registry import ModelRegistry
    from ranking.training.cb2cf import cb2cf_score
    from ranking.training.export import CB2CF_NAME, DSSM_USER, CB2CFProjector, publish_cold_item_models

    report, artifacts, _ = run
    ds, split, content = sample
    paths = publish_cold_item_models(artifacts, tmp_path, version="1", report=report, serve_hybrid=False)
    assert set(paths) == {"dssm-user", "dssm-item", "cb2cf"}
    reg = ModelRegistry(tmp_path)
    cb = reg.load(CB2CF_NAME)
    assert cb.manifest.extra["space"] == "dssm@1" and "minilm" in cb.manifest.extra["field_sources"]["doc"]
    users, items = np.unique(ds.users[split.test])[:50], split.test_items
    used = artifacts.content  # the MiniLM doc field + the words field the harness added
    assert used.names == ("doc", "words") and cb.manifest.extra["words"]["file"] == "words.json"
    item_vecs = CB2CFProjector(cb).project(used.rows(items), used.present[items])
    sess = ort.InferenceSession(str(reg.load(DSSM_USER).onnx_path), providers=["CPUExecutionProvider"])
    feats = artifacts.dssm.user_feature_table[users].numpy()
    (user_vecs,) = sess.run(["user_vector"], {"user_index": users, "user_features": feats})
    model = artifacts.cb2cf[artifacts.selected_objective]
    ref = cb2cf_score(model, used, artifacts.dssm.user_vectors)(users, items)
    np.testing.assert_allclose(user_vecs @ item_vecs.T, ref, atol=1e-4)


def test_published_lightgcn_users_live_in_the_dssm_space(run, sample, tmp_path):
    """``--publish-lightgcn``: LightGCN user vectors mapped into the DSSM space rank cold items better than random."""
    from encoders.registry import ModelRegistry
    from ranking.online.projector import DSSMTower
    from ranking.training.cb2cf import cb2cf_score
    from ranking.training.export import LIGHTGCN_USER, publish_cold_item_models

    report, artifacts, best_random = run
    ds, split, content = sample
    from ranking.models.lightgcn import LightGCNConfig

    paths = publish_cold_item_models(artifacts, tmp_path, version="lg", report=report, lightgcn=True,
                                     lightgcn_config=LightGCNConfig(max_epochs=12, eval_every=3, patience=2))
    assert LIGHTGCN_USER in paths
    tower = DSSMTower(ModelRegistry(tmp_path).load(LIGHTGCN_USER, "lg"))
    ids, vecs = tower.vectors()
    assert ids == list(ds.user_ids) and vecs.shape == (ds.n_users, artifacts.dssm.config.dim)
    model = artifacts.cb2cf[artifacts.selected_objective]
    score = cb2cf_score(model, artifacts.content, lambda u: vecs[u])
    ndcg = evaluate_task(split.eval_task(ds, "test"), score, k=K)[f"ndcg@{K}"]
    assert ndcg > best_random


def test_published_hybrid_space_reproduces_the_harness_scores(run, sample, tmp_path):
    """The hybrid as the stream serves it: the worker's CFSpace projects new items from their text and tags into
    [CB2CF ; sqrt(w) * sparse row], warm users are [DSSM user ; sqrt(w) * mean sparse row of their items], and the
    inner products are the harness's hybrid scores (cf + w * sparse kNN)."""
    from contracts.ids import published_content
    from encoders.featurizer import FeatureBatch
    from encoders.registry import ModelRegistry
    from ranking.evaluation.baselines import sparse_knn_scorer
    from ranking.evaluation.cold_items import hybrid_scorer
    from ranking.online.projector import DSSMTower
    from ranking.training.cb2cf import cb2cf_score
    from ranking.training.export import publish_cold_item_models
    from streams.models import load_cf_space
    from streams.rollout.cf_load import _with_sparse_part

    report, artifacts, _ = run
    ds, split, _ = sample
    publish_cold_item_models(artifacts, tmp_path, version="h", report=report, serve_hybrid=True)
    reg = ModelRegistry(tmp_path)
    for tower_name in ("dssm-user", "dssm-item"):  # written inside the publish: hashed like every other file
        files = reg.load(tower_name, "h").manifest.files
        assert files is not None and {"model.onnx", "ids.json", "hybrid_parts.npz"} <= set(files)
    space = load_cf_space(reg, threads=1)
    h = artifacts.hybrid
    assert space is not None and space.hybrid is not None and space.words is not None
    assert space.hybrid_weight == h["weight"] and space.dim == artifacts.dssm.config.dim + len(h["vectorizer"].vocab)
    assert reg.load("cb2cf", "h").manifest.extra["space_dim"] == space.dim
    items = split.test_items
    doc = artifacts.content.rows(items)["doc"]
    feats = FeatureBatch(("text",), {"text": doc}, np.ones((len(items), 1), dtype=bool), {})
    item_vecs = space.project(feats, list(range(len(items))),
                              [published_content(ds.item_text[int(i)], ds.item_tags[int(i)]) for i in items])
    tower = DSSMTower(reg.load("dssm-user", "h"))
    users = np.unique(ds.users[split.test])[:50]
    ids, uv = tower.vectors([ds.user_ids[u] for u in users])
    uv = _with_sparse_part(uv / np.linalg.norm(uv, axis=1, keepdims=True), tower, ids)
    model = artifacts.cb2cf[artifacts.selected_objective]
    train = artifacts.train
    ref = hybrid_scorer(cb2cf_score(model, artifacts.content, artifacts.dssm.user_vectors),
                        sparse_knn_scorer(h["rows"], train, None), h["weight"])(users, items)
    np.testing.assert_allclose(uv @ item_vecs.T, ref, atol=1e-4)
