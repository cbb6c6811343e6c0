"""LightGCN: linear propagation of id embeddings over the user-item graph, trained with BPR.

He, Deng, Wang, Li, Zhang & Wang, "LightGCN: Simplifying and Powering Graph Convolution Network for
Recommendation", SIGIR 2020. The only trainable parameters are the layer-0 ("ego") embeddings ``E^(0)`` of users and
items. With the bipartite adjacency ``A`` (``(U + I) x (U + I)``, a 1 for every distinct training pair, both
directions) and its symmetric normalisation ``Â = D^-1/2 A D^-1/2``, a layer is ``E^(k+1) = Â E^(k)`` (no weights,
no non-linearity, no self loop) and the final embedding is the layer mean ``E = 1/(K+1) sum_k E^(k)``. The score is
the inner product ``e_u · e_i``. Loss: BPR, ``-log sigmoid(e_u·e_i - e_u·e_j)`` for a positive ``i`` and a sampled
negative ``j``, plus ``reg * (|e_u^(0)|^2 + |e_i^(0)|^2 + |e_j^(0)|^2) / 2`` averaged over the batch (L2 on the
ego embeddings of the batch only, as in the paper).

Training early-stops on a hold-out of warm pairs exactly like the DSSM (:func:`ranking.models.dssm.train_dssm`):
a share of the pairs of users with >= 3 pairs is removed from the graph, and after every ``eval_every`` epochs the
hold-out users rank all warm items minus their graph items by NDCG@``eval_k``; the best state is restored.

New users (fold-in, :func:`fold_in`). A user who was not in the training graph and has revealed items ``R`` is
placed in the graph as a new node with edges to ``R``, keeping every trained embedding fixed. To first order (the
new edges' effect on the items' own propagation is ignored) its layers are::

    e_u^(0) = ego (zero, or learned by a few gradient steps with the items frozen)
    e_u^(k+1) = sum_{i in R} e_i^(k) / sqrt(|R| * (d_i + 1))

with ``e_i^(k)`` the item's layer-``k`` embedding of the trained graph and ``d_i`` its training degree, and the
final vector is the layer mean. ``"mean"`` (the mean of the revealed items' final vectors) is the cheap
alternative; :mod:`ranking.evaluation.new_users` measures all three on validation users and keeps the best.

Relation to the DSSM CF space (:mod:`ranking.models.dssm`). LightGCN lives in its own space (inner products with
its own item vectors), while Milvus serves the DSSM item space (warm items from the item tower, cold items through
CB2CF). The choice here is a **ridge linear map from LightGCN user vectors to DSSM user vectors, fitted on warm
users** (:func:`fit_linear_map`): a new user's LightGCN-side vector (fold-in, blend with the prior) is mapped and
searched against the DSSM item vectors, so the serving path keeps one item index. The alternative, LightGCN user
vectors as a DSSM user-tower input, was not built: it would tie the DSSM (and every CB2CF trained on its item space)
to a retrain whenever LightGCN is retrained, whereas the map is a ``(dim + 1) x dim`` matrix fitted in
milliseconds. Measured by :mod:`ranking.evaluation.new_users` (seed 0, ``benchmarks/results/new_users_*.json``,
``dssm_alignment``): the map reproduces warm DSSM user vectors with mean cosine 0.90 (ml-100k) / 0.82 (Last.fm);
test NDCG@20 of the multimodal-enhanced vector after 0/1/3/5 revealed interactions is 0.503/0.496/0.473/0.454
mapped vs 0.514/0.498/0.464/0.440 native on ml-100k, and 0.295/0.336/0.386/0.397 mapped vs 0.313/0.347/0.399/0.409
native on Last.fm: the map costs up to ~0.02 NDCG on Last.fm and nothing consistent on ml-100k. On the same warm
hold-out pairs, LightGCN reaches NDCG@20 0.280 vs the DSSM's 0.264 (ml-100k) and 0.182 vs 0.170 (Last.fm).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from torch import nn

FoldIn = Literal["mean", "propagate", "gradient"]
FOLD_INS: tuple[FoldIn, ...] = ("mean", "propagate", "gradient")


@dataclass(frozen=True)
class LightGCNConfig:
    """Hyper-parameters of LightGCN and its training.

    Attributes:
        dim: Embedding width.
        layers: Propagation layers ``K`` (the paper's default is 3).
        reg: L2 weight on the batch's ego embeddings (the paper's 1e-4).
        init_std: Standard deviation of the normal initialisation of the ego embeddings.
        batch_size: BPR triples per step (the paper's 2048).
        lr: Adam learning rate (the paper uses 1e-3 for up to 1000 epochs; 5e-3 is used to fit the 2-core time
            budget; the two were not compared).
        max_epochs: Epoch cap (an epoch = one pass over the graph's pairs, one sampled negative each).
        eval_every: Epochs between hold-out evaluations.
        patience: Evaluations without improvement before stopping.
        holdout_share: Share of training pairs held out of the graph to early-stop on (0 = no early stopping).
        eval_k: Cut-off of the hold-out metric.
        seed: Seed of initialisation, sampling and hold-out.
        threads: torch intra-op threads (see :func:`ranking.training.common.seed_everything`).
    """

    dim: int = 64
    layers: int = 3
    reg: float = 1e-4
    init_std: float = 0.1
    batch_size: int = 2048
    lr: float = 5e-3
    max_epochs: int = 200
    eval_every: int = 2
    patience: int = 5
    holdout_share: float = 0.05
    eval_k: int = 20
    seed: int = 0
    threads: int = 1


def normalized_adjacency(users: np.ndarray, items: np.ndarray, n_users: int, n_items: int) -> torch.Tensor:
    """The symmetric-normalised bipartite adjacency ``D^-1/2 A D^-1/2``.

    Nodes ``0..n_users-1`` are users and ``n_users + i`` is item ``i``. Duplicate pairs count once; nodes without
    edges have an all-zero row and column.

    Args:
        users: ``int64[N]`` user indices of the training pairs.
        items: ``int64[N]`` item indices.
        n_users: User index space.
        n_items: Item index space.

    Returns:
        A coalesced sparse COO ``float32`` tensor of shape ``(n_users + n_items) x (n_users + n_items)``.
    """
    n = n_users + n_items
    pairs = np.unique(np.stack([users, items], axis=1).astype(np.int64), axis=0) if len(users) else np.zeros((0, 2))
    u = pairs[:, 0].astype(np.int64)
    i = pairs[:, 1].astype(np.int64) + n_users
    rows = np.concatenate([u, i])
    cols = np.concatenate([i, u])
    deg = np.bincount(rows, minlength=n).astype(np.float64)
    inv = np.zeros(n, dtype=np.float64)
    inv[deg > 0] = deg[deg > 0] ** -0.5
    vals = (inv[rows] * inv[cols]).astype(np.float32)
    idx = torch.from_numpy(np.stack([rows, cols]))
    return torch.sparse_coo_tensor(idx, torch.from_numpy(vals), (n, n), check_invariants=True).coalesce()


class LightGCN(nn.Module):
    """Ego embeddings of users and items plus the fixed normalised graph.

    Args:
        n_users: User index space.
        n_items: Item index space.
        adjacency: ``(n_users + n_items)`` square sparse ``Â`` (see :func:`normalized_adjacency`).
        config: Hyper-parameters.

    Shapes:
        :meth:`layer_embeddings` returns ``K + 1`` tensors of ``(n_users + n_items) x dim``; :meth:`forward`
        returns the ``(n_users + n_items) x dim`` layer mean.
    """

    def __init__(self, n_users: int, n_items: int, adjacency: torch.Tensor, config: LightGCNConfig) -> None:
        super().__init__()
        self.adjacency: torch.Tensor
        self.n_users = n_users
        self.n_items = n_items
        self.config = config
        self.ego = nn.Embedding(n_users + n_items, config.dim)
        nn.init.normal_(self.ego.weight, std=config.init_std)
        self.register_buffer("adjacency", adjacency, persistent=False)
        self._final: torch.Tensor | None = None

    def layer_embeddings(self) -> list[torch.Tensor]:
        """``[E^(0), ..., E^(K)]``, each ``(n_users + n_items) x dim``."""
        out = [self.ego.weight]
        for _ in range(self.config.layers):
            out.append(torch.sparse.mm(self.adjacency, out[-1]))
        return out

    def forward(self) -> torch.Tensor:
        return torch.stack(self.layer_embeddings(), dim=0).mean(dim=0)

    def bpr_loss(self, user: torch.Tensor, pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """BPR loss and the L2 term for a batch of ``B`` (user, positive item, negative item) triples.

        Args:
            user: ``B`` user indices.
            pos: ``B`` positive item indices.
            neg: ``B`` sampled negative item indices.

        Returns:
            ``(bpr, l2)`` scalars; the training objective is ``bpr + reg * l2``.
        """
        final = self()
        eu, ep, en = final[user], final[self.n_users + pos], final[self.n_users + neg]
        bpr = -nn.functional.logsigmoid((eu * ep).sum(1) - (eu * en).sum(1)).mean()
        w = self.ego.weight
        l2 = 0.5 * (w[user].pow(2).sum() + w[self.n_users + pos].pow(2).sum() + w[self.n_users + neg].pow(2).sum())
        return bpr, l2 / len(user)

    @torch.no_grad()
    def refresh(self) -> None:
        """Recomputes the cached final embeddings (call after training steps, before scoring)."""
        self._final = self().detach()

    def _cached(self) -> torch.Tensor:
        if self._final is None:
            self.refresh()
        assert self._final is not None
        return self._final

    def user_vectors(self, users: np.ndarray) -> np.ndarray:
        """``float32[U, dim]`` final user vectors."""
        return self._cached()[torch.from_numpy(np.asarray(users, dtype=np.int64))].numpy()

    def item_vectors(self, items: np.ndarray) -> np.ndarray:
        """``float32[I, dim]`` final item vectors."""
        return self._cached()[self.n_users + torch.from_numpy(np.asarray(items, dtype=np.int64))].numpy()

    @torch.no_grad()
    def item_layers(self) -> np.ndarray:
        """``float32[K + 1, n_items, dim]``: every layer's item embeddings (what :func:`fold_in` propagates)."""
        return torch.stack([e[self.n_users :] for e in self.layer_embeddings()]).numpy()


def _flatten(item_sets: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(row, item, size)``: one entry per (set, item) pair and the size of every set."""
    sizes = np.array([len(s) for s in item_sets], dtype=np.int64)
    row = np.repeat(np.arange(len(item_sets)), sizes)
    items = np.concatenate([np.asarray(s, dtype=np.int64) for s in item_sets]) if len(row) else np.zeros(0, np.int64)
    return row, items, sizes


def propagated_layers(
    item_layers: np.ndarray, item_degree: np.ndarray, item_sets: Sequence[np.ndarray]
) -> np.ndarray:
    """Layers ``1..K`` of new user nodes whose only edges go to ``item_sets`` (trained graph kept fixed).

    ``e_u^(k+1) = sum_{i in R_u} e_i^(k) / sqrt(|R_u| * (d_i + 1))``; a user with no items gets zeros.

    Args:
        item_layers: ``float32[K + 1, n_items, dim]`` (:meth:`LightGCN.item_layers`).
        item_degree: ``int64[n_items]`` item degrees in the trained graph.
        item_sets: Per new user, the revealed item indices.

    Returns:
        ``float32[U, K, dim]``.
    """
    n_layers, _, dim = item_layers.shape
    row, items, sizes = _flatten(item_sets)
    out = np.zeros((len(item_sets), n_layers - 1, dim), dtype=np.float32)
    if len(row) == 0:
        return out
    w = 1.0 / np.sqrt(sizes[row] * (item_degree[items] + 1.0))
    for k in range(n_layers - 1):
        np.add.at(out[:, k], row, (item_layers[k][items] * w[:, None]).astype(np.float32))
    return out


def fold_in(
    model: LightGCN,
    item_sets: Sequence[np.ndarray],
    method: FoldIn = "propagate",
    item_degree: np.ndarray | None = None,
    steps: int = 30,
    lr: float = 0.05,
    reg: float = 1e-3,
    seed: int = 0,
) -> np.ndarray:
    """Final-layer LightGCN vectors of new users from their revealed items (every trained embedding frozen).

    Args:
        model: The trained LightGCN.
        item_sets: Per new user, the revealed item indices (may be empty: the vector is then zero).
        method: ``"mean"`` = mean of the revealed items' final vectors; ``"propagate"`` = the user as a new graph
            node with a zero ego embedding (see the module docstring); ``"gradient"`` = the same, with the ego
            embedding fitted by ``steps`` Adam steps of BPR (revealed items vs uniformly sampled items) + ``reg`` L2.
        item_degree: ``int64[n_items]`` training degrees (read from the model's graph when ``None``).
        steps: Gradient steps (``"gradient"`` only).
        lr: Adam learning rate (``"gradient"`` only).
        reg: L2 weight on the ego embedding (``"gradient"`` only).
        seed: Negative-sampling seed (``"gradient"`` only).

    Returns:
        ``float32[U, dim]``.
    """
    dim = model.config.dim
    if method == "mean":
        out = np.zeros((len(item_sets), dim), dtype=np.float32)
        final = model.item_vectors(np.arange(model.n_items))
        for r, s in enumerate(item_sets):
            if len(s):
                out[r] = final[np.asarray(s, dtype=np.int64)].mean(axis=0)
        return out
    if item_degree is None:
        adj = model.adjacency
        rows = adj.indices()[0].numpy()
        item_degree = np.bincount(rows, minlength=model.n_users + model.n_items)[model.n_users :]
    layers = model.item_layers()
    prop = propagated_layers(layers, item_degree, item_sets).sum(axis=1)  # U x dim
    n_layers = model.config.layers + 1
    if method == "propagate":
        return (prop / n_layers).astype(np.float32)
    if method != "gradient":
        raise ValueError(f"unknown fold-in method {method!r}; known: {FOLD_INS}")
    row, items, _ = _flatten(item_sets)
    if len(row) == 0:
        return (prop / n_layers).astype(np.float32)
    rng = np.random.default_rng(seed)
    final_items = torch.from_numpy(model.item_vectors(np.arange(model.n_items)))
    ego = torch.zeros(len(item_sets), dim, requires_grad=True)
    base = torch.from_numpy(prop)
    opt = torch.optim.Adam([ego], lr=lr)
    r_t, i_t = torch.from_numpy(row), torch.from_numpy(items)
    for _ in range(steps):
        neg = torch.from_numpy(rng.integers(0, model.n_items, len(row)))
        u = (ego + base) / n_layers
        diff = (u[r_t] * (final_items[i_t] - final_items[neg])).sum(1)
        loss = -nn.functional.logsigmoid(diff).mean() + reg * ego.pow(2).sum(1).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        return ((ego + base) / n_layers).numpy().astype(np.float32)


def fit_linear_map(x: np.ndarray, y: np.ndarray, ridge: float = 1e-2) -> np.ndarray:
    """Ridge least squares ``[x, 1] W ≈ y``.

    Args:
        x: ``float[N, d_in]`` inputs (e.g. LightGCN user vectors of warm users).
        y: ``float[N, d_out]`` targets (e.g. their DSSM user vectors).
        ridge: L2 weight (times ``N``) on ``W`` (the bias row is not penalised).

    Returns:
        ``float32[d_in + 1, d_out]``; apply with :func:`apply_linear_map`.
    """
    xb = np.concatenate([x, np.ones((len(x), 1))], axis=1).astype(np.float64)
    pen = ridge * len(x) * np.eye(xb.shape[1])
    pen[-1, -1] = 0.0
    w = np.linalg.solve(xb.T @ xb + pen, xb.T @ y.astype(np.float64))
    return w.astype(np.float32)


def apply_linear_map(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``float32[N, d_out] = [x, 1] W`` (see :func:`fit_linear_map`)."""
    return (x @ w[:-1] + w[-1]).astype(np.float32)
