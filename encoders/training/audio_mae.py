"""Train the Audio MAE on the rendered music21 corpus, export it to ONNX and publish it as ``audio-mae``.

Run: ``thaw train audio-mae [--epochs 12] [--out-dir DIR] [--models-dir DIR] [--no-export]``
(``--help`` lists everything). Build the corpus first: ``thaw corpus music build --clips 1500``.

Log-mels of the whole corpus are computed once and cached (``--cache-dir``); checkpoints go to
``<out-dir>/checkpoints`` every epoch and a rerun resumes from the last one (``--no-resume`` starts over); the loss
curve is ``<out-dir>/loss.png`` and the report ``<out-dir>/report.json``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from encoders.audio_frontend import LogMelConfig
from encoders.models.audio_mae import AudioMAEConfig


@dataclass(frozen=True)
class AudioMAETrainConfig:
    """Audio MAE training run.

    Attributes:
        out_dir: Run directory (cache, checkpoints, loss curve, report; None: ``~/.cache/thaw/runs/audio-mae``).
        cache_dir: Log-mel cache (None: ``~/.cache/thaw/runs/logmel-cache``, shared by the audio trainers; files
            are keyed by frontend config and clip ids).
        models_dir: Registry root to publish into (None: the settings' models dir).
        model: Model sizes (``input_mean``/``input_std`` are filled from the training data).
        frontend: Log-mel settings.
        epochs: Total epochs.
        batch_size: Clips per step.
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up.
        seed: Run seed (model init, batch order, masks).
        threads: torch intra-op threads (1 is polite on a shared machine).
        train_splits: Corpus splits trained on.
        val_split: Split for the validation loss.
        max_clips: Use only the first N clips of each split (None: all).
        resume: Continue from the last checkpoint of ``out_dir``.
        export: Export to ONNX and publish at the end.
        version: Registry version (None: UTC timestamp).
        progress: tqdm bars.
    """

    out_dir: str | None = None
    models_dir: str | None = None
    cache_dir: str | None = None
    model: AudioMAEConfig = field(default_factory=AudioMAEConfig)
    frontend: LogMelConfig = field(default_factory=LogMelConfig)
    epochs: int = 12
    batch_size: int = 32
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 2.0
    seed: int = 0
    threads: int = 1
    train_splits: tuple[str, ...] = ("train",)
    val_split: str = "val"
    max_clips: int | None = None
    resume: bool = True
    export: bool = True
    version: str | None = None
    progress: bool = True


def train(cfg: AudioMAETrainConfig, corpus: Any) -> dict[str, Any]:
    """Train, checkpoint every epoch, plot, and (unless ``cfg.export`` is False) export + publish.

    Returns:
        The report (also written to ``<out_dir>/report.json``): data sizes, losses per epoch, training time,
        the published version.
    """
    import torch

    from encoders.models.audio_mae import AudioMAE
    from encoders.training.common import (
        batch_indices,
        fit_run,
        new_version,
        plot_history,
        required_models_dir,
        run_report,
        start_audio_run,
        write_report,
    )

    run = start_audio_run(cfg, corpus, "audio-mae")
    out, train_idx, val_idx = run.out, run.train_idx, run.val_idx
    mcfg = replace(
        cfg.model, n_mels=cfg.frontend.n_mels, n_frames=cfg.frontend.n_frames, input_mean=run.mean, input_std=run.std
    )
    model = AudioMAE(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay)
    data = run.cached.logmels

    def batch_of(idx: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(data[np.sort(idx)], dtype=np.float32))

    bs = min(cfg.batch_size, len(train_idx))

    def batches(epoch: int, gen: torch.Generator) -> list[np.ndarray]:
        return batch_indices(train_idx, bs, gen, drop_last=True)

    def step_loss(idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        loss, _, _ = model(batch_of(idx), generator=gen)
        return loss

    def validate() -> dict[str, float]:
        if len(val_idx) == 0:
            return {"val_loss": float("nan")}
        g = torch.Generator().manual_seed(12345)  # the same masks every epoch
        losses, weights = [], []
        for s in range(0, len(val_idx), 64):
            chunk = val_idx[s : s + 64]
            loss, _, _ = model(batch_of(chunk), generator=g)
            losses.append(float(loss))
            weights.append(len(chunk))
        return {"val_loss": float(np.average(losses, weights=weights))}

    history, started, ckpt, train_s = fit_run(
        run, cfg, model, opt, batches=batches, step_loss=step_loss, validate=validate,
        meta={"model_config": mcfg.to_dict(), "frontend": cfg.frontend.to_dict()},
    )
    plot_history(history, out / "loss.png", "Audio MAE (masked-patch MSE)")
    report = run_report(run, cfg, history=history, started=started, ckpt=ckpt, train_s=train_s,
                        model_config=mcfg.to_dict(), batch_size=bs,
                        extra_report={"logmel_cache_seconds": run.t_cache})
    provenance = report["training"]
    if cfg.export:
        from encoders.registry import ModelRegistry
        from encoders.training.export_audio import export_audio_mae

        reg = ModelRegistry(required_models_dir(cfg.models_dir))
        mv = export_audio_mae(model, reg, cfg.version or new_version(), cfg.frontend, training=provenance)
        report["published"] = {"name": mv.manifest.name, "version": mv.manifest.version, "path": str(mv.path)}
    return write_report(run, report)
