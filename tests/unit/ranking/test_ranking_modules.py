"""Blocks and pure helpers of the ranking package: field projection, SENet, content fields, baselines, losses."""

import numpy as np
import pytest
import torch

from ranking.evaluation.baselines import content_knn_scorer, popularity_scorer, random_scorer
from ranking.models.cb2cf import CB2CF, CB2CFConfig
from ranking.models.dssm import DSSM, DSSMConfig, categorical_user_features
from ranking.modules import FieldProjection, FieldSpec, SENetLayer
from ranking.training.cb2cf import cb2cf_loss
from ranking.training.common import EarlyStopping, Interactions, evaluate_task, pairs_task
from ranking.training.content import text_fields
from ranking.training.dssm import in_batch_softmax_loss
from workloads.datasets import InteractionDataset

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out


def test_field_projection_marks_missing_fields_explicitly():
    torch.manual_seed(0)
    proj = FieldProjection([FieldSpec("a", 4), FieldSpec("b", 3)], dim=5).eval()
    a, b = torch.randn(2, 4), torch.randn(2, 3)
    present = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    out = proj([a, b], present)
    assert out.shape == (2, 2, 5)
    # a missing field's content is ignored and replaced by the learned "missing" embedding
    out2 = proj([a, b * 100], present)
    torch.testing.assert_close(out2[1, 1], proj.missing[1])
    torch.testing.assert_close(out[1], out2[1])
    with pytest.raises(ValueError):
        proj([a], present)


@pytest.mark.parametrize("n_fields,reduction", [(1, 2), (3, 2), (6, 3)])
def test_senet_gates_fields(n_fields, reduction):
    layer = SENetLayer(n_fields, reduction)
    x = torch.randn(7, n_fields, 8)
    y = layer(x)
    assert y.shape == x.shape
    w = layer.last_weights
    assert w.shape == (7, n_fields) and bool(((w > 0) & (w < 1)).all())
    torch.testing.assert_close(y, x * w.unsqueeze(-1))


def test_cb2cf_forward_is_unit_norm_and_losses_rank_correctly():
    cfg = CB2CFConfig(out_dim=8, field_dim=16, hidden=(16,))
    m = CB2CF([FieldSpec("text", 12), FieldSpec("audio", 6)], cfg).eval()
    out = m([torch.randn(5, 12), torch.randn(5, 6)], torch.ones(5, 2))
    np.testing.assert_allclose(out.norm(dim=1).detach().numpy(), 1.0, atol=1e-5)
    t = torch.nn.functional.normalize(torch.randn(6, 8), dim=1)
    for obj in ("regression", "contrastive", "combined"):
        c = CB2CFConfig(objective=obj)
        perfect, shuffled = cb2cf_loss(t, t, c), cb2cf_loss(t, t.roll(1, 0), c)
        assert float(perfect) < float(shuffled)
    assert float(cb2cf_loss(t, t, CB2CFConfig(objective="regression"))) == pytest.approx(0.0, abs=1e-6)


def test_in_batch_softmax_masks_duplicates_and_applies_logq():
    u = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    v = torch.nn.functional.normalize(torch.randn(4, 3), dim=1)
    items = torch.tensor([1, 2, 1, 3])
    base = in_batch_softmax_loss(u, v, items, 0.1, None)
    # changing the duplicate column's vector of row 0 (column 2, same item) must not change row 0's loss
    v2 = v.clone()
    v2[2] = -v2[0]
    logits_row0 = lambda vv: torch.nn.functional.cross_entropy(  # noqa: E731
        (u[:1] @ vv.T / 0.1).masked_fill(torch.tensor([[False, False, True, False]]), float("-inf")),
        torch.tensor([0]),
    )
    assert float(logits_row0(v)) == pytest.approx(float(logits_row0(v2)))
    lq = torch.log(torch.tensor([0.5, 0.1, 0.5, 0.01]))
    assert float(in_batch_softmax_loss(u, v, items, 0.1, lq)) != pytest.approx(float(base))


def test_dssm_unknown_users_and_features():
    feats = categorical_user_features(
        {"gender": np.array(["F", "M", "M", "F"]), "age": np.arange(4) * 10, "zip": np.array(["a", "b", "c", "d"])},
        max_cardinality=3, n_buckets=2,
    )
    assert feats is not None and feats.names == ("gender", "age")  # zip has too many values
    m = DSSM(4, 5, DSSMConfig(dim=8, id_dim=8, hidden=(8,)), feats).eval()
    m.seen_users[2] = False
    with torch.no_grad():
        v = m.users(torch.tensor([0, 2, -1, 99]))
        unknown = m.user_tower(torch.tensor([4]), m.user_feature_table[2:3])
    torch.testing.assert_close(v[1:2], unknown)  # no history: unknown id row with its own features
    torch.testing.assert_close(v[2], v[3])  # out-of-range ids: unknown id, unknown features


def test_content_fields_cache_and_presence(tmp_path):
    ds = InteractionDataset(
        name="t", users=np.array([0, 1]), items=np.array([0, 1]), weights=np.ones(2, np.float32), timestamps=None,
        n_users=2, n_items=3, user_ids=["a", "b"], item_ids=["x", "y", "z"],
        item_text=["Song one", "", "Song one"], item_tags=[["rock"], [], ["rock"]],
    )
    calls = []

    def encode(texts):
        calls.append(list(texts))
        return np.stack([np.full(4, len(t), np.float32) for t in texts])

    c, _ = text_fields(ds, encode, fields=("doc", "tags"), cache_dir=tmp_path)
    assert c.present.tolist() == [[True, True], [False, False], [True, True]]
    assert calls == [["Song one | rock"], ["rock"]]  # identical documents are encoded once, empty never
    assert not c.values[0][1].any()
    c2, _ = text_fields(ds, encode, fields=("doc", "tags"), cache_dir=tmp_path)
    assert len(calls) == 2 and np.array_equal(c2.values[0], c.values[0])
    cat = c.concatenated()
    np.testing.assert_allclose(np.linalg.norm(cat, axis=1), [1.0, 0.0, 1.0], atol=1e-6)
    assert c.select(["tags"]).names == ("tags",)


def test_baselines():
    train = Interactions(np.array([0, 0, 1]), np.array([0, 1, 2]), n_users=2, n_items=5)
    users, cold = np.array([0, 1]), np.array([3, 4])
    r = random_scorer(3)
    np.testing.assert_array_equal(r(users, cold), np.concatenate([r(users[:1], cold), r(users[1:], cold)]))
    np.testing.assert_array_equal(popularity_scorer(train, 3)(users, cold), r(users, cold))  # cold: all ties
    c = np.eye(5, dtype=np.float32)
    c[3] = [0.6, 0.8, 0, 0, 0]
    c[4] = [0, 0, 1.0, 0, 0]
    s_all = content_knn_scorer(c, train)(users, cold)
    np.testing.assert_allclose(s_all, [[0.7, 0.0], [0.0, 1.0]], atol=1e-6)
    s_1 = content_knn_scorer(c, train, k=1)(users, cold)
    np.testing.assert_allclose(s_1, [[0.8, 0.0], [0.0, 1.0]], atol=1e-6)


def test_pairs_task_and_evaluate_task_and_early_stopping():
    target = Interactions(np.array([0, 1, 1]), np.array([2, 3, 4]), 2, 6)
    excl = Interactions(np.array([0]), np.array([3]), 2, 6)
    task = pairs_task(target, np.array([2, 3, 4, 5]), exclude=excl)
    assert task.users.tolist() == [0, 1] and [r.tolist() for r in task.relevant] == [[0], [1, 2]]
    assert task.exclude is not None and task.exclude[0].tolist() == [1]
    oracle = lambda u, i: np.array([[1, 9, 0, 0], [0, 1, 1, 0]], dtype=np.float32)[: len(u)]  # noqa: E731
    m = evaluate_task(task, oracle, k=1)
    assert m["precision@1"] == 1.0
    stop = EarlyStopping(patience=2)
    lin = torch.nn.Linear(1, 1)
    assert not stop.step(0.5, 0, lin)
    assert not stop.step(0.4, 1, lin) and stop.step(0.3, 2, lin) and stop.best_epoch == 0
