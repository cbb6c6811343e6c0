"""LightGCN: the normalised propagation on a hand-computed graph, new-user fold-in, the linear map, and a smoke run
on a small real sample of ml-100k (BPR loss falls, the warm hold-out beats random)."""

import math

import numpy as np
import pytest
import torch

from ranking.models.lightgcn import (
    LightGCN,
    LightGCNConfig,
    apply_linear_map,
    fit_linear_map,
    fold_in,
    normalized_adjacency,
    propagated_layers,
)
from ranking.training.common import Interactions
from ranking.training.lightgcn import train_lightgcn
from workloads.datasets import load_movielens_100k

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out

# users u0, u1; items i0, i1, i2; edges u0-i0, u0-i1, u1-i1, u1-i2 (u0-i0 given twice: counts once)
USERS = np.array([0, 0, 0, 1, 1])
ITEMS = np.array([0, 1, 0, 1, 2])
R2 = math.sqrt(2.0)


def test_normalized_adjacency_by_hand():
    a = normalized_adjacency(USERS, ITEMS, 2, 4).to_dense().numpy()  # item 3 has no edge
    # degrees: u0 = 2, u1 = 2, i0 = 1, i1 = 2, i2 = 1, i3 = 0; node order u0 u1 i0 i1 i2 i3
    expected = np.zeros((6, 6))
    for u, i, w in [(0, 2, 1 / R2), (0, 3, 0.5), (1, 3, 0.5), (1, 4, 1 / R2)]:
        expected[u, i] = expected[i, u] = w
    np.testing.assert_allclose(a, expected, atol=1e-7)


def test_propagation_and_layer_mean_by_hand():
    cfg = LightGCNConfig(dim=1, layers=2)
    model = LightGCN(2, 3, normalized_adjacency(USERS, ITEMS, 2, 3), cfg)
    with torch.no_grad():
        model.ego.weight.copy_(torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]]))  # u0 u1 i0 i1 i2
    # layer 1
    u0_1, u1_1 = 3 / R2 + 4 * 0.5, 4 * 0.5 + 5 / R2
    i0_1, i1_1, i2_1 = 1 / R2, 0.5 * 1 + 0.5 * 2, 2 / R2
    # layer 2
    u0_2, u1_2 = i0_1 / R2 + 0.5 * i1_1, 0.5 * i1_1 + i2_1 / R2
    i0_2, i1_2, i2_2 = u0_1 / R2, 0.5 * u0_1 + 0.5 * u1_1, u1_1 / R2
    layers = [e.detach().numpy().ravel() for e in model.layer_embeddings()]
    np.testing.assert_allclose(layers[1], [u0_1, u1_1, i0_1, i1_1, i2_1], rtol=1e-6)
    np.testing.assert_allclose(layers[2], [u0_2, u1_2, i0_2, i1_2, i2_2], rtol=1e-6)
    model.refresh()
    np.testing.assert_allclose(model.user_vectors(np.array([0, 1])).ravel(),
                               [(1 + u0_1 + u0_2) / 3, (2 + u1_1 + u1_2) / 3], rtol=1e-6)
    np.testing.assert_allclose(model.item_vectors(np.array([2])).ravel(), [(5 + i2_1 + i2_2) / 3], rtol=1e-6)


def test_fold_in_by_hand():
    cfg = LightGCNConfig(dim=1, layers=2)
    model = LightGCN(2, 3, normalized_adjacency(USERS, ITEMS, 2, 3), cfg)
    with torch.no_grad():
        model.ego.weight.copy_(torch.tensor([[1.0], [2.0], [3.0], [4.0], [5.0]]))
    model.refresh()
    layers = model.item_layers()  # K+1 x n_items x dim
    degree = np.array([1, 2, 1])
    sets = [np.array([0, 1]), np.array([], dtype=np.int64)]
    prop = propagated_layers(layers, degree, sets)
    # new user with R = {i0, i1}: e^(k+1) = e_i0^(k) / sqrt(2 * 2) + e_i1^(k) / sqrt(2 * 3)
    for k in range(2):
        want = layers[k, 0, 0] / 2 + layers[k, 1, 0] / math.sqrt(6)
        assert prop[0, k, 0] == pytest.approx(want, rel=1e-6)
    assert np.all(prop[1] == 0)
    got = fold_in(model, sets, "propagate", item_degree=degree)
    assert got[0, 0] == pytest.approx(prop[0, :, 0].sum() / 3, rel=1e-6) and got[1, 0] == 0
    mean = fold_in(model, sets, "mean")
    assert mean[0, 0] == pytest.approx(model.item_vectors(np.array([0, 1])).mean(), rel=1e-6)
    grad = fold_in(model, sets, "gradient", item_degree=degree, steps=20)
    assert np.isfinite(grad).all() and grad.shape == (2, 1)


def test_linear_map_recovers_an_exact_map():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 5))
    w = rng.normal(size=(5, 3))
    y = x @ w + np.array([0.5, -1.0, 2.0])
    m = fit_linear_map(x, y, ridge=0.0)
    np.testing.assert_allclose(apply_linear_map(x, m), y, atol=1e-3)


@pytest.fixture(scope="module")
def trained():
    ds = load_movielens_100k()
    keep = ds.users < 300
    train = Interactions(ds.users[keep], ds.items[keep], ds.n_users, ds.n_items)
    cfg = LightGCNConfig(max_epochs=16, eval_every=2, patience=3, lr=5e-3)
    return train_lightgcn(train, cfg)


def test_bpr_loss_decreases(trained):
    _, log = trained
    bpr = [h["bpr"] for h in log.history]
    assert bpr[-1] < 0.8 * bpr[0], bpr
    assert bpr[0] == pytest.approx(math.log(2), abs=0.05)  # small random init: sigmoid(~0)


def test_beats_random_on_held_out_pairs(trained):
    model, log = trained
    assert log.best_value > 3 * log.reference["holdout_random_ndcg@20"], (log.best_value, log.reference)
    assert model.user_vectors(np.arange(5)).shape == (5, 64)
