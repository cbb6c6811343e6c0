"""DSSM twin tower: the model that defines Thaw's CF space.

Huang et al., "Learning Deep Structured Semantic Models for Web Search using Clickthrough Data", CIKM 2013 (two
towers scored by cosine, trained with a softmax over one positive and sampled negatives), in the two-tower
recommendation form of Yi et al., "Sampling-Bias-Corrected Neural Modeling for Large Corpus Item Recommendations",
RecSys 2019 (in-batch negatives with logQ correction, L2-normalised embeddings, temperature).

* User tower: user id embedding (+ optional categorical user features, e.g. gender/age bucket/occupation) → MLP →
  L2 norm. One extra "unknown user" id row is trained by randomly replacing a share of user ids with it, so a user
  without history (or brand-new) still gets a vector from its features.
* Item tower: item id embedding → MLP → L2 norm. **Its outputs are the CF space**: the vectors stored in Milvus, and
  the targets CB2CF learns to land on.
* Score: ``cos(u, i) / temperature``.

Loss: in-batch sampled softmax with logQ correction. For a batch of ``B`` positive pairs, row ``b`` is a ``B``-way
softmax whose logits are ``s(u_b, i_c) / tau - log q(i_c)``, where ``q(i)`` is the probability that item ``i`` is a
positive of a random batch row (its share of training interactions); other occurrences of the row's own item in the
batch are masked (they are not negatives). Why not a pair-wise loss (BPR / hinge on (pos, neg) pairs, which the
talk's Q&A discusses): a pair-wise loss compares each positive with one negative and only cares about their order,
so it spends most updates on easy negatives and says nothing about where the positive sits among the whole
catalogue, while retrieval (top-k inner-product search over all items in Milvus) needs exactly that. The sampled
softmax uses all ``B - 1`` in-batch items as negatives at the cost of one ``B x B`` matrix product, approximates the
full softmax (a listwise objective whose gradient concentrates on the hardest negatives), and logQ removes its
bias: in-batch negatives are drawn proportionally to popularity, so without the correction popular items are
over-penalised and the space encodes "popular vs not" instead of taste. Measured with
:mod:`ranking.evaluation.cold_items`
(seeded cold splits, validation only): without logQ the warm hold-out NDCG@20 fell from 0.27 to 0.07 (ml-100k) and
from 0.18 to 0.04 (Last.fm), and the cold validation NDCG@20 of CB2CF on top of it from 0.36 to 0.29 and from 0.31
to 0.15.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ranking.modules.mlp import MLP


@dataclass(frozen=True)
class DSSMConfig:
    """Hyper-parameters of the twin tower and its training.

    Attributes:
        dim: Output (CF space) width.
        id_dim: Width of the user and item id embeddings.
        feature_dim: Width of each categorical user-feature embedding.
        hidden: Hidden widths of both tower MLPs.
        dropout: Dropout inside the MLPs.
        temperature: Softmax temperature over cosine scores. 0.1 was chosen on validation (mean cold validation
            NDCG@20 of CB2CF over ml-100k and Last.fm, two seeds each: 0.336 at 0.05, 0.352 at 0.1, 0.354 at 0.2;
            0.1 was the better one on the sparser Last.fm).
        logq: Apply the logQ popularity correction.
        user_id_dropout: Training share of user ids replaced by the "unknown user" row.
        batch_size: Positive pairs per batch (= in-batch negatives + 1).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        max_epochs: Epoch cap.
        patience: Evaluations without improvement of the hold-out NDCG before stopping.
        holdout_share: Share of training pairs held out to early-stop on (warm items, NDCG@k).
        eval_k: Cut-off of the hold-out metric.
        seed: Seed of initialisation, shuffling and hold-out.
        threads: torch intra-op threads (see :func:`ranking.training.common.seed_everything`).
    """

    dim: int = 64
    id_dim: int = 64
    feature_dim: int = 16
    hidden: tuple[int, ...] = (128,)
    dropout: float = 0.0
    temperature: float = 0.1
    logq: bool = True
    user_id_dropout: float = 0.05
    batch_size: int = 1024
    lr: float = 2e-3
    weight_decay: float = 0.0
    max_epochs: int = 60
    patience: int = 4
    holdout_share: float = 0.05
    eval_k: int = 20
    seed: int = 0
    threads: int = 1


@dataclass(frozen=True, eq=False)
class CategoricalFeatures:
    """Per-user categorical features as indices (0 = unknown/missing in every column).

    Attributes:
        names: Feature names.
        values: ``int64[n_users, n_features]``.
        cardinalities: Per feature, number of index values including the 0 "unknown".
        vocab: Per feature, the raw value (or bucket edge description) of indices ``1..``.
    """

    names: tuple[str, ...]
    values: np.ndarray
    cardinalities: tuple[int, ...]
    vocab: tuple[tuple[str, ...], ...] = field(default_factory=tuple)


def categorical_user_features(
    user_features: Mapping[str, np.ndarray] | None,
    max_cardinality: int = 100,
    n_buckets: int = 8,
    n_users: int | None = None,
) -> CategoricalFeatures | None:
    """Turns raw user columns into categorical indices for the user tower.

    String/object columns become a vocabulary (columns with more than ``max_cardinality`` distinct values, e.g. zip
    codes, are skipped: they would be ids in disguise). Numeric columns with more than ``max_cardinality`` distinct
    values are bucketed into ``n_buckets`` quantile buckets, others are used as categories.

    Returns:
        The features, or ``None`` when there are none usable.
    """
    if not user_features:
        return None
    names, cols, cards, vocabs = [], [], [], []
    for name, raw in user_features.items():
        arr = np.asarray(raw)
        if n_users is not None and len(arr) != n_users:
            continue
        if arr.dtype.kind in "iuf" and len(np.unique(arr)) > max_cardinality:
            edges = np.unique(np.quantile(arr.astype(np.float64), np.linspace(0, 1, n_buckets + 1)[1:-1]))
            idx = np.searchsorted(edges, arr, side="right") + 1
            names.append(name)
            cols.append(idx.astype(np.int64))
            cards.append(len(edges) + 2)
            vocabs.append(tuple(f"<{e:g}" for e in edges) + ("rest",))
            continue
        keys = np.array([str(x) for x in arr])
        uniq = np.unique(keys[(keys != "") & (keys != "None") & (keys != "nan")])
        if len(uniq) < 2 or len(uniq) > max_cardinality:
            continue
        lookup = {k: j + 1 for j, k in enumerate(uniq.tolist())}
        names.append(name)
        cols.append(np.array([lookup.get(k, 0) for k in keys], dtype=np.int64))
        cards.append(len(uniq) + 1)
        vocabs.append(tuple(uniq.tolist()))
    if not names:
        return None
    return CategoricalFeatures(tuple(names), np.stack(cols, axis=1), tuple(cards), tuple(vocabs))


class UserTower(nn.Module):
    """User id embedding (+ categorical feature embeddings) → MLP → L2 norm.

    Index ``n_users`` is the "unknown user" row.

    Shapes:
        ``user: B`` int64, ``features: B x n_features`` int64 (ignored when the tower has none) ``-> B x dim``.
    """

    def __init__(self, n_users: int, config: DSSMConfig, cardinalities: Sequence[int] = ()) -> None:
        super().__init__()
        self.n_users = n_users
        self.unknown = n_users
        self.id_emb = nn.Embedding(n_users + 1, config.id_dim)
        nn.init.normal_(self.id_emb.weight, std=0.05)
        embs = [nn.Embedding(c, config.feature_dim) for c in cardinalities]
        for e in embs:
            nn.init.normal_(e.weight, std=0.05)
        self.feat_emb = nn.ModuleList(embs)
        in_dim = config.id_dim + config.feature_dim * len(self.feat_emb)
        self.mlp = MLP(in_dim, config.hidden, config.dim, dropout=config.dropout)

    @property
    def n_features(self) -> int:
        return len(self.feat_emb)

    def forward(self, user: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        parts = [self.id_emb(user)]
        if self.n_features:
            if features is None:
                raise ValueError("this user tower needs its categorical features")
            parts.extend(e(features[:, k]) for k, e in enumerate(self.feat_emb))
        return nn.functional.normalize(self.mlp(torch.cat(parts, dim=1)), dim=1)


class ItemTower(nn.Module):
    """Item id embedding → MLP → L2 norm: the CF-space vector of a warm item.

    Shapes:
        ``item: B`` int64 ``-> B x dim``.
    """

    def __init__(self, n_items: int, config: DSSMConfig) -> None:
        super().__init__()
        self.id_emb = nn.Embedding(n_items, config.id_dim)
        nn.init.normal_(self.id_emb.weight, std=0.05)
        self.mlp = MLP(config.id_dim, config.hidden, config.dim, dropout=config.dropout)

    def forward(self, item: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.mlp(self.id_emb(item)), dim=1)


class DSSM(nn.Module):
    """The twin tower. ``user_features`` (if any) is stored as a buffer so the model scores users by index alone.

    Buffers: ``user_feature_table`` (``(n_users + 1) x n_features``, last row = unknown) and ``seen_users``
    (``n_users`` bool, users with training pairs).

    Args:
        n_users: User index space.
        n_items: Item index space.
        config: Hyper-parameters.
        user_features: Categorical user features (``values`` has one row per user).
    """

    def __init__(
        self, n_users: int, n_items: int, config: DSSMConfig, user_features: CategoricalFeatures | None = None
    ) -> None:
        super().__init__()
        self.user_feature_table: torch.Tensor
        self.seen_users: torch.Tensor
        self.config = config
        self.feature_names = user_features.names if user_features is not None else ()
        cards = user_features.cardinalities if user_features is not None else ()
        self.user_tower = UserTower(n_users, config, cards)
        self.item_tower = ItemTower(n_items, config)
        feats = (
            torch.from_numpy(user_features.values.astype(np.int64))
            if user_features is not None
            else torch.zeros(n_users, 0, dtype=torch.long)
        )
        # the unknown-user row carries "unknown" (0) features
        self.register_buffer("user_feature_table", torch.cat([feats, torch.zeros(1, feats.shape[1], dtype=torch.long)]))
        self.register_buffer("seen_users", torch.ones(n_users, dtype=torch.bool))

    def _known(self, user: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n = self.user_tower.n_users
        in_range = (user >= 0) & (user < n)
        safe = torch.where(in_range, user, torch.full_like(user, n))  # row n of the table = unknown features
        seen = in_range & self.seen_users[safe.clamp(max=n - 1)]
        return safe, seen

    def user_features(self, user: torch.Tensor) -> torch.Tensor:
        """``B -> B x n_features`` stored categorical features (all 0 = unknown for out-of-range ids)."""
        return self.user_feature_table[self._known(user)[0]]

    def users(self, user: torch.Tensor, features: torch.Tensor | None = None) -> torch.Tensor:
        """``B -> B x dim`` user vectors.

        Users without training history (and ids outside ``[0, n_users)``, e.g. ``-1`` for a brand-new user) use
        the unknown-user id row. ``features`` (``B x n_features``, 0 = unknown) overrides the stored features,
        e.g. a new user's registration profile.
        """
        safe, seen = self._known(user)
        uid = torch.where(seen, user, torch.full_like(user, self.user_tower.unknown))
        return self.user_tower(uid, self.user_feature_table[safe] if features is None else features)

    def items(self, item: torch.Tensor) -> torch.Tensor:
        """``B -> B x dim`` item vectors (the CF space)."""
        return self.item_tower(item)

    @torch.no_grad()
    def user_vectors(self, users: np.ndarray, batch: int = 8192) -> np.ndarray:
        """``float32[U, dim]`` user vectors (eval mode)."""
        self.eval()
        out = [self.users(torch.from_numpy(users[s : s + batch])) for s in range(0, len(users), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.dim), np.float32)

    @torch.no_grad()
    def item_vectors(self, items: np.ndarray, batch: int = 8192) -> np.ndarray:
        """``float32[I, dim]`` item vectors (eval mode)."""
        self.eval()
        out = [self.items(torch.from_numpy(items[s : s + batch])) for s in range(0, len(items), batch)]
        return torch.cat(out).numpy() if out else np.zeros((0, self.config.dim), np.float32)
