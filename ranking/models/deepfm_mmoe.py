"""DeepFM + MMoE ranker with group-wise gating: several engagement tasks scored from shared field embeddings.

* DeepFM — Guo et al., "DeepFM: A Factorization-Machine based Neural Network for CTR Prediction", IJCAI 2017: one
  embedding per field, shared by an FM component (first-order weights + second-order interactions, see
  :class:`~ranking.modules.fm.FactorizationMachine`) and a deep component over the concatenated embeddings.
* MMoE — Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate Mixture-of-Experts", KDD
  2018: the deep component is ``n`` experts; every task has its own softmax gate over them and its own tower.
* Group-wise gating (the "personalized grouping" of the NetEase Cloud Music talk): with ``group_gating`` each task's
  gate is a :class:`~ranking.modules.mmoe.GroupGate` conditioned on the user group (new/old user x gender), so a new
  user's and an old user's scores can route through different experts; without it the gates see the input only.

Fields (a :class:`RankSchema`): categorical fields (user id, item id, gender, age, user status, context, ... as
per-field indices, 0 = unknown), one multi-hot item-category field (mean of its category embeddings), and dense
fields (each a float vector projected to one field embedding, e.g. the user's category-interest deviation from
their group). Output per task ``t``::

    logit_t = b_t + a_t * (first_order + fm) + tower_t(sum_k gate_t(x, group)_k * expert_k(x))

with ``x`` the flattened field embeddings and ``a_t`` a learned per-task scale of the shared FM part.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ranking.modules.fields import FieldSpec
from ranking.modules.fm import FactorizationMachine
from ranking.modules.mlp import MLP
from ranking.modules.mmoe import Experts, GroupGate, SoftmaxGate, mix_experts


@dataclass(frozen=True)
class RankSchema:
    """The ranker's inputs.

    Attributes:
        sparse: Categorical fields ``(name, cardinality)``; index 0 of each means unknown.
        n_categories: Width ``C`` of the multi-hot item-category field (0 = no such field).
        dense: Dense fields (name, width); each is projected to one field embedding.
        n_groups: Number of user groups ``G`` the group gates know.
        tasks: Task names, in output order.
    """

    sparse: tuple[tuple[str, int], ...]
    n_categories: int
    dense: tuple[FieldSpec, ...]
    n_groups: int
    tasks: tuple[str, ...]

    @property
    def dense_dim(self) -> int:
        return sum(f.dim for f in self.dense)

    @property
    def n_fields(self) -> int:
        return len(self.sparse) + (1 if self.n_categories else 0) + len(self.dense)


@dataclass(frozen=True)
class DeepFMMMoEConfig:
    """Hyper-parameters of the ranker and its training.

    Attributes:
        embed_dim: Field embedding width ``E``.
        n_experts: Experts ``n``.
        expert_hidden: Hidden widths of each expert (last = expert output width).
        tower_hidden: Hidden widths of each task tower.
        dropout: Dropout in experts and towers.
        group_gating: Condition every task gate on the user group (:class:`GroupGate`); False = plain MMoE gates.
        batch_size: Rows per step.
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        embed_l2: L2 penalty on the embeddings of the rows in the batch.
        task_weights: Loss weight per task (empty = all 1).
        max_epochs: Epoch cap.
        patience: Epochs without improvement of the validation mean AUC before stopping.
        seed: Seed of initialisation and shuffling.
        threads: torch intra-op threads.
    """

    embed_dim: int = 16
    n_experts: int = 4
    expert_hidden: tuple[int, ...] = (128, 64)
    tower_hidden: tuple[int, ...] = (32,)
    dropout: float = 0.1
    group_gating: bool = True
    batch_size: int = 1024
    lr: float = 1e-3
    weight_decay: float = 0.0
    embed_l2: float = 1e-6
    task_weights: tuple[float, ...] = ()
    max_epochs: int = 20
    patience: int = 2
    seed: int = 0
    threads: int = 1


@dataclass(frozen=True, eq=False)
class RankData:
    """Rows to score or train on (numpy, aligned on the first axis).

    Attributes:
        sparse: ``int64[N, F_s]`` per-field categorical indices (0 = unknown).
        categories: ``float32[N, C]`` multi-hot item categories.
        dense: ``float32[N, D]`` dense fields, concatenated in schema order.
        group: ``int64[N]`` user group index.
        labels: ``float32[N, T]`` binary labels per task.
    """

    sparse: np.ndarray
    categories: np.ndarray
    dense: np.ndarray
    group: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return int(len(self.group))

    def take(self, rows: np.ndarray) -> RankData:
        """The rows at ``rows``."""
        return RankData(self.sparse[rows], self.categories[rows], self.dense[rows], self.group[rows],
                        self.labels[rows])

    def tensors(self, rows: np.ndarray | slice | None = None) -> tuple[torch.Tensor, ...]:
        """``(sparse, categories, dense, group)`` torch tensors of ``rows`` (all rows when ``None``)."""
        r = slice(None) if rows is None else rows
        return (torch.from_numpy(np.ascontiguousarray(self.sparse[r], dtype=np.int64)),
                torch.from_numpy(np.ascontiguousarray(self.categories[r], dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(self.dense[r], dtype=np.float32)),
                torch.from_numpy(np.ascontiguousarray(self.group[r], dtype=np.int64)))


class DeepFMMMoE(nn.Module):
    """DeepFM field interactions + MMoE experts with (group-wise) gates, one tower per task.

    Args:
        schema: Inputs and tasks.
        config: Hyper-parameters.

    Shapes:
        ``sparse: B x F_s`` int64, ``categories: B x C`` float, ``dense: B x D`` float, ``group: B`` int64
        ``-> B x T`` logits. :meth:`gates` returns the ``T x B x n`` gate weights.
    """

    def __init__(self, schema: RankSchema, config: DeepFMMMoEConfig) -> None:
        super().__init__()
        self.offsets: torch.Tensor
        self.schema = schema
        self.config = config
        e = config.embed_dim
        cards = [max(1, c) for _, c in schema.sparse]
        self.register_buffer("offsets", torch.tensor(np.concatenate([[0], np.cumsum(cards)[:-1]]), dtype=torch.long))
        total = int(sum(cards))
        self.embedding = nn.Embedding(total, e)
        nn.init.normal_(self.embedding.weight, std=0.01)
        self.first_order = nn.Embedding(total, 1)
        nn.init.zeros_(self.first_order.weight)
        self.category_embedding: nn.Parameter | None = None
        self.category_linear: nn.Linear | None = None
        if schema.n_categories:
            self.category_embedding = nn.Parameter(torch.randn(schema.n_categories, e) * 0.01)
            self.category_linear = nn.Linear(schema.n_categories, 1, bias=False)
            nn.init.zeros_(self.category_linear.weight)
        self.dense_proj = nn.ModuleList(nn.Linear(f.dim, e) for f in schema.dense)
        self.dense_linear = nn.Linear(schema.dense_dim, 1, bias=False) if schema.dense_dim else None
        self.fm = FactorizationMachine()
        n_tasks = len(schema.tasks)
        deep_in = schema.n_fields * e
        self.experts = Experts(deep_in, config.n_experts, config.expert_hidden, config.dropout)
        self.gate_modules = nn.ModuleList(
            GroupGate(deep_in, config.n_experts, schema.n_groups) if config.group_gating
            else SoftmaxGate(deep_in, config.n_experts)
            for _ in range(n_tasks)
        )
        self.towers = nn.ModuleList(MLP(self.experts.out_dim, config.tower_hidden, 1, dropout=config.dropout)
                                    for _ in range(n_tasks))
        self.task_bias = nn.Parameter(torch.zeros(n_tasks))
        self.fm_scale = nn.Parameter(torch.ones(n_tasks))

    def field_embeddings(
        self, sparse: torch.Tensor, categories: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(B x F x E field embeddings, B x 1 first-order term)``."""
        idx = sparse + self.offsets.unsqueeze(0)
        fields = [self.embedding(idx)]  # B x F_s x E
        linear = self.first_order(idx).sum(dim=1)  # B x 1
        if self.category_embedding is not None and self.category_linear is not None:
            norm = categories.sum(dim=1, keepdim=True).clamp(min=1.0)
            fields.append(((categories @ self.category_embedding) / norm).unsqueeze(1))
            linear = linear + self.category_linear(categories)
        start = 0
        for spec, proj in zip(self.schema.dense, self.dense_proj, strict=True):
            fields.append(proj(dense[:, start : start + spec.dim]).unsqueeze(1))
            start += spec.dim
        if self.dense_linear is not None:
            linear = linear + self.dense_linear(dense)
        return torch.cat(fields, dim=1), linear

    def _deep_input(
        self, sparse: torch.Tensor, categories: torch.Tensor, dense: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        emb, linear = self.field_embeddings(sparse, categories, dense)
        return emb, linear, emb.flatten(start_dim=1)

    def gates(
        self, sparse: torch.Tensor, categories: torch.Tensor, dense: torch.Tensor, group: torch.Tensor
    ) -> torch.Tensor:
        """``T x B x n`` gate weights of every task."""
        _, _, x = self._deep_input(sparse, categories, dense)
        return torch.stack([g(x, group) for g in self.gate_modules])

    def forward(
        self, sparse: torch.Tensor, categories: torch.Tensor, dense: torch.Tensor, group: torch.Tensor
    ) -> torch.Tensor:
        emb, linear, x = self._deep_input(sparse, categories, dense)
        shallow = linear + self.fm(emb)  # B x 1
        expert_out = self.experts(x)  # B x n x H
        logits = [tower(mix_experts(expert_out, gate(x, group)))
                  for gate, tower in zip(self.gate_modules, self.towers, strict=True)]
        deep = torch.cat(logits, dim=1)  # B x T
        return self.task_bias.unsqueeze(0) + self.fm_scale.unsqueeze(0) * shallow + deep

    @torch.no_grad()
    def predict(self, data: RankData, batch: int = 8192) -> np.ndarray:
        """``float32[N, T]`` probabilities (eval mode)."""
        self.eval()
        out = []
        for s in range(0, len(data), batch):
            out.append(torch.sigmoid(self(*data.tensors(slice(s, s + batch)))))
        return torch.cat(out).numpy() if out else np.zeros((0, len(self.schema.tasks)), np.float32)
