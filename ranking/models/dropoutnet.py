"""DropoutNet-style cold-item model.

Volkovs, Yu & Poutanen, "DropoutNet: Addressing Cold Start in Recommender Systems", NeurIPS 2017. A pretrained CF
model gives user vectors ``U_u`` and item vectors ``V_i`` (here: the DSSM towers, so every model in the harness
shares one CF space; the paper used WMF, and says any latent model works). Two networks are trained:

* ``f_U(U_u)``: MLP over the user's CF vector.
* ``f_V([V_i, content_i])``: MLP over the item's CF vector concatenated with its content (all content fields side
  by side, absent fields zeroed, plus the presence mask).

The loss regresses the original CF score: ``(f_U(U_u) · f_V(V_i, x_i) - U_u · V_i)^2`` over the user's positive
pairs and sampled warm items. **Input dropout**: with probability ``dropout_rate`` an item's ``V_i`` is replaced by
zeros during training, so ``f_V`` must reproduce the CF score from content alone. At test time a cold item enters
with ``V_i = 0`` and only its content, exactly the dropped-out training condition.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ranking.modules.mlp import MLP
from ranking.training.common import EarlyStopping, Interactions, TrainLog, evaluate_task, seed_everything
from ranking.training.content import ContentFields
from workloads.splits import EvalTask


@dataclass(frozen=True)
class DropoutNetConfig:
    """Hyper-parameters.

    Attributes:
        hidden: Hidden widths of both MLPs.
        out_dim: Output width of ``f_U`` and ``f_V``.
        dropout_rate: Probability of zeroing the item CF input (the paper's item dropout, 0.5).
        negatives: Sampled warm items per positive pair.
        batch_size: Pairs per batch (positives + negatives).
        lr: Adam learning rate.
        weight_decay: Adam weight decay.
        max_epochs: Epoch cap (an epoch = one pass over the positives).
        patience: Validation checks without improvement before stopping.
        eval_k: Cut-off of the validation metric.
        seed: Seed.
        threads: torch intra-op threads (see :func:`ranking.training.common.seed_everything`).
    """

    hidden: tuple[int, ...] = (256,)
    out_dim: int = 64
    dropout_rate: float = 0.5
    negatives: int = 2
    batch_size: int = 2048
    lr: float = 1e-3
    weight_decay: float = 1e-6
    max_epochs: int = 60
    patience: int = 5
    eval_k: int = 20
    seed: int = 0
    threads: int = 1


class DropoutNet(nn.Module):
    """``f_U`` and ``f_V``; content enters as one concatenated vector (see :meth:`ContentFields.concatenated`).

    Shapes:
        ``user(U: B x D) -> B x out``; ``item(V: B x D, x: B x C, present: B x F) -> B x out``.
    """

    def __init__(self, cf_dim: int, content_dim: int, n_fields: int, config: DropoutNetConfig) -> None:
        super().__init__()
        self.config = config
        self.f_user = MLP(cf_dim, config.hidden, config.out_dim)
        self.f_item = MLP(cf_dim + content_dim + n_fields, config.hidden, config.out_dim)

    def user(self, u: torch.Tensor) -> torch.Tensor:
        return self.f_user(u)

    def item(self, v: torch.Tensor, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        return self.f_item(torch.cat([v, x, present], dim=1))


def train_dropoutnet(
    train: Interactions,
    user_cf: np.ndarray,
    item_cf: np.ndarray,
    content: ContentFields,
    config: DropoutNetConfig = DropoutNetConfig(),  # noqa: B008
    val_task: EvalTask | None = None,
    verbose: bool = False,
) -> tuple[DropoutNet, Callable[[np.ndarray, np.ndarray], np.ndarray], TrainLog]:
    """Trains DropoutNet on warm pairs; early-stops on the cold validation task when given.

    Args:
        train: Warm positive pairs.
        user_cf: ``float32[n_users, D]`` pretrained user vectors (DSSM user tower).
        item_cf: ``float32[n_items, D]`` pretrained item vectors (DSSM item tower; rows of cold items unused).
        content: Content fields of all items.
        config: Hyper-parameters.
        val_task: Cold validation task (items scored with ``V_i = 0``).
        verbose: Print progress.

    Returns:
        ``(model, cold_score, log)``: ``cold_score(users, items)`` scores items from content only.
    """
    t0 = time.perf_counter()
    gen = seed_everything(config.seed, config.threads)
    rng = np.random.default_rng(config.seed)
    x_all = torch.from_numpy(content.concatenated())
    p_all = torch.from_numpy(content.present.astype(np.float32))
    U = torch.from_numpy(np.ascontiguousarray(user_cf, dtype=np.float32))
    V = torch.from_numpy(np.ascontiguousarray(item_cf, dtype=np.float32))
    model = DropoutNet(U.shape[1], x_all.shape[1], p_all.shape[1], config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
    warm = np.flatnonzero(train.item_counts() > 0)
    stopper = EarlyStopping(config.patience)
    log = TrainLog()

    @torch.no_grad()
    def cold_score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        model.eval()
        it = torch.from_numpy(items)
        iv = model.item(torch.zeros(len(items), V.shape[1]), x_all[it], p_all[it])
        return (model.user(U[torch.from_numpy(users)]) @ iv.T).numpy()

    for epoch in range(config.max_epochs):
        model.train()
        n_pos = len(train)
        users = np.concatenate([train.users] + [train.users] * config.negatives)
        items = np.concatenate([train.items] + [rng.choice(warm, n_pos) for _ in range(config.negatives)])
        perm = rng.permutation(len(users))
        total, steps = 0.0, 0
        for start in range(0, len(perm), config.batch_size):
            idx = perm[start : start + config.batch_size]
            u = torch.from_numpy(users[idx])
            i = torch.from_numpy(items[idx])
            uv, iv = U[u], V[i]
            target = (uv * iv).sum(1)
            keep = (torch.rand(len(idx), 1, generator=gen) >= config.dropout_rate).to(iv.dtype)
            pred = (model.user(uv) * model.item(iv * keep, x_all[i], p_all[i])).sum(1)
            loss = nn.functional.mse_loss(pred, target)
            opt.zero_grad()
            loss.backward()
            opt.step()
            total += loss.item()
            steps += 1
        log.epochs_run = epoch + 1
        entry = {"epoch": float(epoch), "loss": total / max(steps, 1)}
        stop = False
        if val_task is not None:
            m = evaluate_task(val_task, cold_score, k=config.eval_k)
            entry[f"val_ndcg@{config.eval_k}"] = m[f"ndcg@{config.eval_k}"]
            stop = stopper.step(m[f"ndcg@{config.eval_k}"], epoch, model)
        log.history.append(entry)
        if verbose:
            print(f"dropoutnet epoch {epoch}: {entry}", flush=True)
        if stop:
            break
    if stopper.best_state is not None:
        stopper.restore(model)
        log.best_epoch, log.best_value = stopper.best_epoch, stopper.best
    else:
        log.best_epoch = log.epochs_run - 1
    model.eval()
    log.seconds = time.perf_counter() - t0
    return model, cold_score, log
