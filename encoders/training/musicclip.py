"""Train MusicCLIP on the rendered music21 corpus (clip, caption) pairs, export both towers to ONNX and publish them.

Run: ``thaw train musicclip [--epochs 15] [--out-dir DIR] [--models-dir DIR] [--no-export]``
(``--help`` lists everything). Build the corpus first: ``thaw corpus music build --clips 1500``.

The caption embeddings come from the registry's MiniLM (``minilm-l6``; exported first if the registry has none)
and are cached with the log-mels (``--cache-dir``). Training uses random time crops of the log-mel
(``--crop-frames``, default 3 s) with SpecAugment masking; validation and serving use the full 10 s. Checkpoints
every epoch, resumable, loss curve ``<out-dir>/loss.png``, report ``<out-dir>/report.json``.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.audio_frontend import LogMelConfig
from encoders.models.musicclip import MusicCLIPConfig


@dataclass(frozen=True)
class MusicCLIPTrainConfig:
    """MusicCLIP training run.

    Attributes:
        out_dir: Run directory (None: ``~/.cache/thaw/runs/musicclip``).
        cache_dir: Log-mel cache (None: ``~/.cache/thaw/runs/logmel-cache``, shared by the audio trainers; files
            are keyed by frontend config and clip ids).
        models_dir: Registry root holding MiniLM and receiving the export (None: the settings' models dir).
        model: Model sizes (``input_mean``/``input_std`` are filled from the training data).
        frontend: Log-mel settings.
        epochs: Total epochs.
        batch_size: Pairs per step (the in-batch negatives).
        crop_frames: Random crop length in training (None or >= n_frames: full clips).
        spec_augment: SpecAugment-style masking of the training crops (:func:`spec_augment`).
        lr: Peak AdamW learning rate.
        weight_decay: AdamW weight decay.
        warmup_epochs: Linear warm-up.
        seed: Run seed.
        threads: torch intra-op threads.
        train_splits: Corpus splits trained on.
        val_split: Split for validation loss and recall.
        max_clips: Use only the first N clips of each split (None: all).
        resume: Continue from the last checkpoint of ``out_dir``.
        export: Export to ONNX and publish at the end.
        version: Registry version (None: UTC timestamp).
        progress: tqdm bars.
    """

    out_dir: str | None = None
    models_dir: str | None = None
    cache_dir: str | None = None
    model: MusicCLIPConfig = field(default_factory=MusicCLIPConfig)
    frontend: LogMelConfig = field(default_factory=LogMelConfig)
    epochs: int = 15
    batch_size: int = 64
    crop_frames: int | None = 300
    spec_augment: bool = True
    lr: float = 2e-3
    weight_decay: float = 0.01
    warmup_epochs: float = 1.0
    seed: int = 0
    threads: int = 1
    train_splits: tuple[str, ...] = ("train",)
    val_split: str = "val"
    max_clips: int | None = None
    resume: bool = True
    export: bool = True
    version: str | None = None
    progress: bool = True


def caption_embeddings(captions: list[str], text_encoder: Any, cache_dir: Path) -> np.ndarray:
    """MiniLM embeddings (``N x 384``) of the captions, cached by text model version and caption list."""
    key = hashlib.sha256(("|".join([text_encoder.model_version, *captions])).encode()).hexdigest()[:16]
    path = cache_dir / f"captions-{key}.npy"
    if path.is_file():
        return np.load(path)
    uniq = sorted(set(captions))
    emb = text_encoder.encode(uniq)
    pos = {c: i for i, c in enumerate(uniq)}
    out = emb[[pos[c] for c in captions]].astype(np.float32)
    cache_dir.mkdir(parents=True, exist_ok=True)
    np.save(path, out)
    return out


def spec_augment(
    x: torch.Tensor, fill: float, gen: torch.Generator, bands: int = 8, frames: int = 40, n_masks: int = 2
) -> torch.Tensor:
    """SpecAugment-style masking (Park et al., Interspeech 2019): per clip, ``n_masks`` random runs of up to
    ``bands`` mel bands and ``n_masks`` runs of up to ``frames`` frames are set to ``fill``. ``x``: B x F x T."""
    x = x.clone()
    b, f, t = x.shape
    for i in range(b):
        for _ in range(n_masks):
            w = int(torch.randint(0, bands + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, f - w), (1,), generator=gen))
            x[i, s : s + w, :] = fill
            w = int(torch.randint(0, frames + 1, (1,), generator=gen))
            s = int(torch.randint(0, max(1, t - w), (1,), generator=gen))
            x[i, :, s : s + w] = fill
    return x


def recall_at(sim: np.ndarray, hit: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict[int, float]:
    """Recall@k of a query x candidate similarity matrix.

    Args:
        sim: Q x C similarities.
        hit: Q x C bool, True where a candidate counts as correct for the query.
        ks: Cut-offs.

    Returns:
        ``k -> share of queries with a correct candidate among the top k`` (ties broken by candidate order).
    """
    order = np.argsort(-sim, axis=1, kind="stable")
    ranked_hits = np.take_along_axis(hit, order, axis=1)
    return {k: float(ranked_hits[:, :k].any(axis=1).mean()) for k in ks}


def train(cfg: MusicCLIPTrainConfig, corpus: Any) -> dict[str, Any]:
    """Train, checkpoint every epoch, plot, and (unless ``cfg.export`` is False) export + publish both towers.

    Returns:
        The report (also written to ``<out_dir>/report.json``).
    """
    from encoders.models.musicclip import MusicCLIP
    from encoders.registry import ModelRegistry
    from encoders.text import TextEncoder, ensure_minilm
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

    run = start_audio_run(cfg, corpus, "musicclip", min_train_clips=2)
    out, train_idx, val_idx, mean = run.out, run.train_idx, run.val_idx, run.mean
    t_text = time.perf_counter()
    reg = ModelRegistry(required_models_dir(cfg.models_dir))
    text_encoder = TextEncoder(ensure_minilm(reg), threads=cfg.threads)
    text = caption_embeddings(run.corpus.captions, text_encoder, run.cache_root)
    uniq = {c: i for i, c in enumerate(sorted(set(run.corpus.captions)))}
    cap_ids = np.array([uniq[c] for c in run.corpus.captions], dtype=np.int64)
    t_cache = run.t_cache + (time.perf_counter() - t_text)
    mcfg = replace(cfg.model, n_mels=cfg.frontend.n_mels, text_dim=text.shape[1], input_mean=mean, input_std=run.std)
    model = MusicCLIP(mcfg)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    data = run.cached.logmels
    n_frames = cfg.frontend.n_frames
    crop = cfg.crop_frames if cfg.crop_frames and cfg.crop_frames < n_frames else n_frames
    bs = min(cfg.batch_size, len(train_idx))

    def batches(epoch: int, gen: torch.Generator) -> list[np.ndarray]:
        return batch_indices(train_idx, bs, gen, drop_last=True)

    def step_loss(idx: np.ndarray, gen: torch.Generator) -> torch.Tensor:
        idx = np.sort(idx)
        starts = torch.randint(0, n_frames - crop + 1, (len(idx),), generator=gen).numpy()
        full = np.asarray(data[idx], dtype=np.float32)
        x = torch.from_numpy(np.stack([full[i, :, s : s + crop] for i, s in enumerate(starts)]))
        if cfg.spec_augment:
            x = spec_augment(x, mean, gen)
        return model(x, torch.from_numpy(text[idx]), torch.from_numpy(cap_ids[idx]))

    def validate() -> dict[str, float]:
        if len(val_idx) < 2:
            return {"val_loss": float("nan")}
        a = torch.cat(
            [
                model.audio(torch.from_numpy(np.asarray(data[val_idx[s : s + 64]], dtype=np.float32)))
                for s in range(0, len(val_idx), 64)
            ]
        )
        t = model.text(torch.from_numpy(text[val_idx]))
        from encoders.models.musicclip import clip_loss

        loss = float(clip_loss(a, t, model.scale(), torch.from_numpy(cap_ids[val_idx])))
        # audio -> caption retrieval over the distinct validation captions
        vcaps = sorted(set(cap_ids[val_idx].tolist()))
        first = {c: int(val_idx[np.nonzero(cap_ids[val_idx] == c)[0][0]]) for c in vcaps}
        tc = model.text(torch.from_numpy(text[[first[c] for c in vcaps]])).numpy()
        hit = cap_ids[val_idx][:, None] == np.array(vcaps)[None, :]
        r = recall_at(a.numpy() @ tc.T, hit)
        return {"val_loss": loss, "val_a2t_r1": r[1], "val_a2t_r10": r[10], "logit_scale": float(model.scale())}

    history, started, ckpt, train_s = fit_run(
        run, cfg, model, opt, batches=batches, step_loss=step_loss, validate=validate,
        meta={"model_config": mcfg.to_dict(), "frontend": cfg.frontend.to_dict(), "crop_frames": crop},
    )
    plot_history(history, out / "loss.png", "MusicCLIP (symmetric InfoNCE)")
    report = run_report(
        run, cfg, history=history, started=started, ckpt=ckpt, train_s=train_s, model_config=mcfg.to_dict(),
        batch_size=bs, extra_report={"cache_seconds": t_cache},
        extra_provenance={"crop_frames": crop, "text_model": text_encoder.model_version,
                          "duplicate_captions": "same-caption off-diagonal pairs masked out of the negatives"},
    )
    provenance = report["training"]
    if cfg.export:
        from encoders.training.export_audio import export_musicclip

        av, tv = export_musicclip(
            model, reg, cfg.version or new_version(), cfg.frontend, text_encoder.model_version, training=provenance
        )
        report["published"] = {
            "audio": {"name": av.manifest.name, "version": av.manifest.version, "path": str(av.path)},
            "text": {"name": tv.manifest.name, "version": tv.manifest.version, "path": str(tv.path)},
        }
    return write_report(run, report)
