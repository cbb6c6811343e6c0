"""The shared fit loop (ranking/training/trainer.py) on a tiny linear regression: early stopping stops and restores
the best epoch's weights, the history has one entry per epoch, the seed makes two runs equal."""

from dataclasses import dataclass, field

import numpy as np
import pytest
import torch
from torch import nn

from ranking.training.trainer import FitConfig, Generators, fit

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out

_data = torch.Generator().manual_seed(123)
X = torch.randn(40, 3, generator=_data)  # 40 x 3
Y = X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.1 * torch.randn(40, 1, generator=_data)  # 40 x 1


@dataclass
class TinyFit:
    """``nn.Linear(3, 1)`` under MSE, shuffled batches of 8 rows; ``validate`` replays ``scripted`` when given, else
    returns the MSE on all rows."""

    module: nn.Linear
    gen: torch.Generator
    scripted: list[float] = field(default_factory=list)
    validations: int = 0
    penalty: float = 0.0
    losses: list[tuple[float, float]] = field(default_factory=list)  # (optimised, logged) per batch

    def batches(self, epoch: int):
        perm = torch.randperm(len(X), generator=self.gen)
        for start in range(0, len(X), 8):
            yield perm[start : start + 8]

    def loss(self, batch: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        mse = nn.functional.mse_loss(self.module(X[batch]), Y[batch])
        if self.penalty:
            total = mse + self.penalty * self.module.weight.pow(2).sum()
            self.losses.append((total.item(), mse.item()))
            return total, mse
        return mse

    def validate(self) -> dict[str, float]:
        self.validations += 1
        if self.scripted:
            return {"val_score": self.scripted[self.validations - 1]}
        with torch.no_grad():
            return {"val_mse": float(nn.functional.mse_loss(self.module(X), Y))}


def _builder(**kwargs):
    return lambda rand: TinyFit(nn.Linear(3, 1), rand.torch, **kwargs)


def _weights(module: nn.Module) -> list[np.ndarray]:
    return [p.detach().numpy().copy() for p in module.parameters()]


def test_early_stopping_stops_and_restores_the_best_epoch():
    snapshots: list[list[np.ndarray]] = []
    cfg = FitConfig(max_epochs=20, patience=2, monitor="val_score", lr=0.05)
    scripted = [0.1, 0.5, 0.4, 0.3, 0.9, 0.9]  # best after epoch 1, then two evaluations without improvement
    trained, log = fit(_builder(scripted=scripted), cfg, on_epoch=lambda e, t: snapshots.append(_weights(t.module)))
    assert log.epochs_run == 4 and len(log.history) == 4 and len(snapshots) == 4
    assert log.best_epoch == 1 and log.best_value == 0.5
    for restored, best in zip(_weights(trained.module), snapshots[1], strict=True):
        np.testing.assert_array_equal(restored, best)
    assert not np.array_equal(snapshots[1][0], snapshots[3][0])  # training did move on after the best epoch
    assert not trained.module.training


def test_min_mode_early_stops_on_a_validation_loss():
    scripted = [3.0, 2.0, 2.5, 2.4, 1.0]
    trained, log = fit(_builder(scripted=scripted), FitConfig(max_epochs=10, patience=2, monitor="val_score",
                                                              mode="min"))
    assert log.epochs_run == 4 and log.best_epoch == 1 and log.best_value == 2.0


def test_history_has_one_entry_per_epoch_and_validates_on_schedule():
    cfg = FitConfig(max_epochs=5, patience=1, monitor="val_mse", mode="min", eval_every=2, eval_last=True, lr=0.05)
    trained, log = fit(_builder(), cfg)
    assert [h["epoch"] for h in log.history] == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert all("loss" in h for h in log.history)
    assert [("val_mse" in h) for h in log.history] == [False, True, False, True, True]
    assert trained.validations == 3
    assert log.history[-1]["loss"] < log.history[0]["loss"]


def test_without_a_monitor_the_last_epoch_counts_and_the_logged_part_is_recorded():
    snapshots: list[list[np.ndarray]] = []
    cfg = FitConfig(max_epochs=3, patience=1, loss_key="mse", lr=0.05)
    trained, log = fit(_builder(penalty=10.0), cfg, on_epoch=lambda e, t: snapshots.append(_weights(t.module)))
    assert log.epochs_run == 3 and log.best_epoch == 2 and np.isnan(log.best_value)
    np.testing.assert_array_equal(_weights(trained.module)[0], snapshots[-1][0])
    assert all(set(h) == {"epoch", "mse", "val_mse"} for h in log.history)
    # the history holds the mean MSE part of the epoch's 5 batches, not the optimised MSE + penalty
    last = trained.losses[-5:]
    assert len(trained.losses) == 15
    assert log.history[-1]["mse"] == sum(m for _, m in last) / 5
    assert log.history[-1]["mse"] < sum(t for t, _ in last) / 5


def test_the_seed_makes_two_runs_equal():
    def run(seed: int):
        seen: list[Generators] = []

        def build(rand: Generators) -> TinyFit:
            seen.append(rand)
            return TinyFit(nn.Linear(3, 1), rand.torch)

        trained, log = fit(build, FitConfig(max_epochs=4, patience=2, monitor="val_mse", mode="min", seed=seed))
        return _weights(trained.module), log.history, seen[0].numpy.random()

    a, b, c = run(0), run(0), run(1)
    for wa, wb in zip(a[0], b[0], strict=True):
        np.testing.assert_array_equal(wa, wb)
    assert a[1] == b[1] and a[2] == b[2]
    assert not np.array_equal(a[0][0], c[0][0]) and a[1] != c[1]
