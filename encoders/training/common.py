"""Shared pieces of the audio encoder trainers: seeding, the log-mel cache, checkpoints, the epoch loop, plots.

Determinism: epoch ``e`` draws its batch order, crops and masks from a generator seeded with ``(seed, e)`` and
reseeds the global torch generator (dropout) the same way, and the learning rate is a function of the global step.
So a run resumed from the checkpoint of epoch ``e`` continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.audio_frontend import AudioInputError, LogMelConfig, log_mel

log = logging.getLogger(__name__)


def required_models_dir(models_dir: str | None) -> Path:
    """``models_dir`` as a path; the composition root (``thaw train ...``) passes the settings' ``models.dir``."""
    if not models_dir:
        raise ValueError("models_dir is required: `thaw train ...` passes THAW_MODELS__DIR (or --models-dir)")
    return Path(models_dir).expanduser()


def default_runs_dir() -> Path:
    return Path.home() / ".cache" / "thaw" / "runs"


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The random source of one epoch (batch order, crops, masks)."""
    return torch.Generator().manual_seed(seed * 100_003 + epoch)


def new_version() -> str:
    """A registry version string from the UTC time (sorts in publication order)."""
    return datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")


@dataclass
class CachedLogMels:
    """Log-mels of a whole corpus, computed once.

    Attributes:
        logmels: ``N x n_mels x n_frames`` float16 (memory-mapped from the cache file).
        valid: ``N`` bool; False for clips the frontend refused (silent, too short).
        path: The cache file.
    """

    logmels: np.ndarray
    valid: np.ndarray
    path: Path


def cache_logmels(
    waveform: Callable[[int], np.ndarray],
    clip_ids: list[str],
    sample_rate: int,
    frontend: LogMelConfig,
    cache_dir: Path,
    progress: bool = True,
) -> CachedLogMels:
    """Compute (or reuse) the log-mels of every clip, stored as ``.npy`` (float16) under ``cache_dir``.

    The cache file name hashes the frontend config and the clip ids, so a different corpus or frontend gets its
    own file. Writing goes to a temporary name first.
    """
    from tqdm import tqdm

    key = hashlib.sha256(
        (json.dumps(frontend.to_dict(), sort_keys=True) + "|" + "|".join(clip_ids)).encode()
    ).hexdigest()[:16]
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"logmels-{key}.npy"
    vpath = cache_dir / f"logmels-{key}.valid.npy"
    if path.is_file() and vpath.is_file():
        return CachedLogMels(np.load(path, mmap_mode="r"), np.load(vpath), path)
    out = np.zeros((len(clip_ids), frontend.n_mels, frontend.n_frames), dtype=np.float16)
    valid = np.ones(len(clip_ids), dtype=bool)
    for i in tqdm(range(len(clip_ids)), desc="log-mels", disable=not progress, unit="clip"):
        try:
            out[i] = log_mel(waveform(i), sample_rate, frontend)
        except AudioInputError as exc:
            log.warning("clip %s skipped: %s", clip_ids[i], exc)
            valid[i] = False
    tmp = path.with_suffix(".tmp.npy")
    np.save(tmp, out)
    tmp.replace(path)
    np.save(vpath, valid)
    return CachedLogMels(np.load(path, mmap_mode="r"), valid, path)


def input_stats(logmels: np.ndarray, idx: np.ndarray) -> tuple[float, float]:
    """Global mean and standard deviation of the log-mels of clips ``idx`` (the models' input normalisation)."""
    x = np.asarray(logmels[np.sort(idx)], dtype=np.float32)
    return float(x.mean()), float(x.std() + 1e-6)


def lr_at(step: int, total: int, warmup: int, base: float, min_ratio: float = 0.05) -> float:
    """Linear warm-up then cosine decay to ``min_ratio * base``."""
    if warmup > 0 and step < warmup:
        return base * (step + 1) / warmup
    frac = (step - warmup) / max(1, total - warmup)
    return base * (min_ratio + (1 - min_ratio) * 0.5 * (1 + math.cos(math.pi * min(1.0, frac))))


@dataclass
class History:
    """Per-epoch losses (and any extra per-epoch metrics) and the per-step training loss."""

    train: list[float] = field(default_factory=list)
    val: list[float] = field(default_factory=list)
    steps: list[float] = field(default_factory=list)
    epoch_seconds: list[float] = field(default_factory=list)
    metrics: dict[str, list[float]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {
            "train": self.train,
            "val": self.val,
            "steps": self.steps,
            "epoch_seconds": self.epoch_seconds,
            "metrics": self.metrics,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> History:
        return cls(
            train=list(d["train"]),
            val=list(d["val"]),
            steps=list(d["steps"]),
            epoch_seconds=list(d["epoch_seconds"]),
            metrics={k: list(v) for k, v in d.get("metrics", {}).items()},
        )


class Checkpointer:
    """``<dir>/epoch-NNN.pt`` after every epoch (the last ``keep`` are kept) and ``<dir>/last.pt``."""

    def __init__(self, directory: Path, keep: int = 2) -> None:
        self.dir = directory
        self.keep = keep

    @property
    def last(self) -> Path:
        return self.dir / "last.pt"

    def save(
        self, epoch: int, model: torch.nn.Module, opt: torch.optim.Optimizer, history: History, meta: dict
    ) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        state = {
            "epoch": epoch,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "history": history.to_dict(),
            "meta": meta,
        }
        path = self.dir / f"epoch-{epoch:03d}.pt"
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        tmp.replace(path)
        tmp2 = self.last.with_suffix(".tmp")
        torch.save(state, tmp2)
        tmp2.replace(self.last)
        for old in sorted(self.dir.glob("epoch-*.pt"))[: -self.keep]:
            old.unlink(missing_ok=True)

    def load(self) -> dict[str, Any] | None:
        if not self.last.is_file():
            return None
        state: dict[str, Any] = torch.load(self.last, map_location="cpu", weights_only=False)
        return state


def fit(
    model: torch.nn.Module,
    opt: torch.optim.Optimizer,
    *,
    epochs: int,
    steps_per_epoch: int,
    batches: Callable[[int, torch.Generator], Iterable[Any]],
    step_loss: Callable[[Any, torch.Generator], torch.Tensor],
    validate: Callable[[], dict[str, float]],
    seed: int,
    base_lr: float,
    warmup_epochs: float,
    ckpt: Checkpointer,
    resume: bool,
    meta: dict[str, Any],
    progress: bool,
    desc: str,
    grad_clip: float = 1.0,
) -> tuple[History, int]:
    """The epoch loop shared by the trainers: schedule, progress bar, validation, checkpoint every epoch.

    Args:
        model: Model in training.
        opt: Its optimizer (learning rate set per step).
        epochs: Total epochs of the run (a resumed run continues up to it).
        steps_per_epoch: Batches per epoch (for the schedule).
        batches: ``(epoch, generator) -> batches`` of that epoch.
        step_loss: ``(batch, generator) -> scalar loss``.
        validate: Returns ``{"val_loss": ..., other metrics}``; called in eval mode under ``torch.no_grad``.
        seed: Run seed.
        base_lr: Peak learning rate.
        warmup_epochs: Linear warm-up length in epochs.
        ckpt: Where checkpoints go.
        resume: Continue from ``ckpt.last`` when it exists.
        meta: Saved in every checkpoint (configs); a resume with a different ``meta["model_config"]`` fails.
        progress: Show tqdm bars.
        desc: Bar label.
        grad_clip: Max gradient norm.

    Returns:
        The history and the epoch the run started from (0 for a fresh run).
    """
    from tqdm import tqdm

    history = History()
    start = 0
    state = ckpt.load() if resume else None
    if state is not None:
        if state["meta"].get("model_config") != meta.get("model_config"):
            raise ValueError(f"checkpoint {ckpt.last} was trained with another model config; use a new --out-dir")
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        history = History.from_dict(state["history"])
        start = int(state["epoch"])
        log.info("resumed from %s at epoch %d", ckpt.last, start)
    total = epochs * steps_per_epoch
    warmup = int(warmup_epochs * steps_per_epoch)
    for epoch in range(start, epochs):
        t0 = time.perf_counter()
        gen = epoch_generator(seed, epoch)
        torch.manual_seed(seed * 100_003 + epoch)
        model.train()
        losses: list[float] = []
        bar = tqdm(
            batches(epoch, gen), total=steps_per_epoch, desc=f"{desc} {epoch + 1}/{epochs}", disable=not progress
        )
        for i, batch in enumerate(bar):
            for g in opt.param_groups:
                g["lr"] = lr_at(epoch * steps_per_epoch + i, total, warmup, base_lr)
            loss = step_loss(batch, gen)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"non-finite loss at epoch {epoch + 1}, step {i}")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
            opt.step()
            losses.append(float(loss.item()))
            bar.set_postfix(loss=f"{losses[-1]:.4f}")
        model.eval()
        with torch.no_grad():
            metrics = validate()
        history.train.append(float(np.mean(losses)) if losses else float("nan"))
        history.val.append(float(metrics.get("val_loss", float("nan"))))
        for k, v in metrics.items():
            if k != "val_loss":
                history.metrics.setdefault(k, []).append(float(v))
        history.steps.extend(losses)
        history.epoch_seconds.append(time.perf_counter() - t0)
        ckpt.save(epoch + 1, model, opt, history, meta)
        log.info("%s epoch %d: train %.4f val %.4f", desc, epoch + 1, history.train[-1], history.val[-1])
    model.eval()
    return history, start


def plot_history(history: History, path: Path, title: str) -> None:
    """Loss curves (per-step training loss, per-epoch train/val means) as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    axes[0].plot(history.steps, lw=0.6, alpha=0.7)
    axes[0].set_xlabel("step")
    axes[0].set_ylabel("training loss")
    axes[0].set_title(f"{title}: per step")
    ep = np.arange(1, len(history.train) + 1)
    axes[1].plot(ep, history.train, marker="o", label="train")
    axes[1].plot(ep, history.val, marker="o", label="val")
    axes[1].set_xlabel("epoch")
    axes[1].set_title(f"{title}: per epoch")
    axes[1].legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def batch_indices(idx: np.ndarray, batch_size: int, gen: torch.Generator, drop_last: bool) -> list[np.ndarray]:
    """Shuffle ``idx`` with ``gen`` and cut it into batches."""
    perm = idx[torch.randperm(len(idx), generator=gen).numpy()]
    n = len(perm) // batch_size * batch_size if drop_last and len(perm) >= batch_size else len(perm)
    return [perm[s : s + batch_size] for s in range(0, n, batch_size)]


def corpus_provenance(corpus: Any, splits: dict[str, np.ndarray]) -> dict[str, Any]:
    """What a model was trained on, for manifests and reports."""
    return {
        "corpus": "music21 core corpus rendered with fluidsynth (workloads.music)",
        "corpus_dir": str(corpus.root),
        "clips": len(corpus),
        "split_seed": corpus.meta.get("split_seed"),
        "split_sizes": {k: int(len(v)) for k, v in splits.items()},
    }


def split_indices(corpus: Any, names: tuple[str, ...], valid: np.ndarray, max_clips: int | None) -> np.ndarray:
    """Sorted clip indices of the named splits, refused clips removed, at most ``max_clips`` per split."""
    parts = []
    for n in names:
        idx = corpus.splits[n]
        idx = idx[valid[idx]]
        parts.append(idx[:max_clips] if max_clips else idx)
    return np.sort(np.concatenate(parts)) if parts else np.zeros(0, dtype=np.int64)


@dataclass
class AudioRun:
    """The set-up both audio trainers share: output dir, corpus, cached log-mels, splits and input statistics."""

    name: str
    out: Path
    corpus: Any
    cached: CachedLogMels
    cache_root: Path
    train_idx: np.ndarray
    val_idx: np.ndarray
    mean: float
    std: float
    t_start: float
    t_cache: float


def start_audio_run(cfg: Any, corpus: Any, name: str, min_train_clips: int = 1) -> AudioRun:
    """Threads, seeds, the run dir, the music corpus and its log-mel cache, train/val indices and input stats.

    ``cfg`` is an audio trainer config (``threads``, ``seed``, ``out_dir``, ``cache_dir``, ``frontend``,
    ``train_splits``, ``val_split``, ``max_clips``, ``progress``); ``corpus`` a built music corpus (the caller
    loads it: ``workloads.music.load_music_corpus``).
    """
    t_start = time.perf_counter()
    torch.set_num_threads(cfg.threads)
    seed_everything(cfg.seed)
    out = Path(cfg.out_dir).expanduser() if cfg.out_dir else default_runs_dir() / name
    cache_root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else default_runs_dir() / "logmel-cache"
    if cfg.frontend.sample_rate != corpus.sample_rate:
        raise ValueError("the corpus sample rate differs from the frontend's")
    cached = cache_logmels(corpus.waveform, corpus.clip_ids, corpus.sample_rate, cfg.frontend, cache_root, cfg.progress)
    t_cache = time.perf_counter() - t_start
    train_idx = split_indices(corpus, cfg.train_splits, cached.valid, cfg.max_clips)
    val_idx = split_indices(corpus, (cfg.val_split,), cached.valid, cfg.max_clips)
    if len(train_idx) < min_train_clips:
        raise ValueError(f"need at least {min_train_clips} training clip(s) in splits {cfg.train_splits}")
    mean, std = input_stats(cached.logmels, train_idx)
    return AudioRun(name, out, corpus, cached, cache_root, train_idx, val_idx, mean, std, t_start, t_cache)


def run_report(run: AudioRun, cfg: Any, *, history: History, started: int, ckpt: Checkpointer, train_s: float,
               model_config: dict[str, Any], batch_size: int, extra_provenance: dict[str, Any] | None = None,
               extra_report: dict[str, Any] | None = None) -> dict[str, Any]:
    """The report (and its ``training`` provenance, also written into the published manifests) of an audio run."""
    provenance = {
        **corpus_provenance(run.corpus, {"train": run.train_idx, "val": run.val_idx}),
        "trained_on_splits": list(cfg.train_splits),
        "epochs": cfg.epochs,
        "batch_size": batch_size,
        "seed": cfg.seed,
        **(extra_provenance or {}),
        "final_train_loss": history.train[-1] if history.train else None,
        "final_val_loss": history.val[-1] if history.val else None,
        "train_seconds_all_epochs": float(sum(history.epoch_seconds)),
    }
    return {
        "model": run.name,
        "out_dir": str(run.out),
        "checkpoint": str(ckpt.last),
        "loss_png": str(run.out / "loss.png"),
        "logmel_cache": str(run.cached.path),
        **(extra_report or {}),
        "resumed_from_epoch": started,
        "threads": cfg.threads,
        "train_seconds_this_run": train_s,
        "history": history.to_dict(),
        "model_config": model_config,
        "training": provenance,
        "published": None,
    }


def write_report(run: AudioRun, report: dict[str, Any]) -> dict[str, Any]:
    """Stamp the total time and write ``<out>/report.json``."""
    report["total_seconds"] = time.perf_counter() - run.t_start
    (run.out / "report.json").write_text(json.dumps(report, indent=2))
    return report


def fit_run(run: AudioRun, cfg: Any, model: torch.nn.Module, opt: torch.optim.Optimizer, *,
            batches: Callable[[int, torch.Generator], list[np.ndarray]],
            step_loss: Callable[[np.ndarray, torch.Generator], torch.Tensor],
            validate: Callable[[], dict[str, float]], meta: dict[str, Any]) -> tuple[History, int, Checkpointer, float]:
    """:func:`fit` with the run's checkpoint dir and the config's schedule; returns (history, epoch resumed from,
    checkpointer, seconds spent training in this process)."""
    ckpt = Checkpointer(run.out / "checkpoints")
    t0 = time.perf_counter()
    history, started = fit(
        model, opt, epochs=cfg.epochs, steps_per_epoch=len(batches(0, torch.Generator())), batches=batches,
        step_loss=step_loss, validate=validate, seed=cfg.seed, base_lr=cfg.lr, warmup_epochs=cfg.warmup_epochs,
        ckpt=ckpt, resume=cfg.resume, meta=meta, progress=cfg.progress, desc=run.name,
    )
    return history, started, ckpt, time.perf_counter() - t0
