"""ONNX export of the audio encoders (Audio MAE, MusicCLIP); needs the training extra (``pip install 'thaw[train]'``).

:func:`export_audio_mae` and :func:`export_musicclip` trace the trained torch models (:mod:`encoders.models`) to
opset-17 graphs and publish them in the model registry under the names and contracts documented in
:mod:`encoders.audio`, which serves them with ONNX Runtime only. Called by the trainers
(:mod:`encoders.training.audio_mae`, :mod:`encoders.training.musicclip`) when ``export`` is on.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from encoders.audio import AUDIO_MAE, MUSICCLIP_AUDIO, MUSICCLIP_TEXT, OPSET
from encoders.audio_frontend import LogMelConfig
from encoders.registry import ModelRegistry, ModelVersion, TensorSpec

if TYPE_CHECKING:
    from encoders.models.audio_mae import AudioMAE
    from encoders.models.musicclip import MusicCLIP


def _export(module: Any, example: Any, path: Path, input_name: str, dynamic_time: bool) -> None:
    import torch

    axes: dict[str, dict[int, str]] = {input_name: {0: "batch"}, "embedding": {0: "batch"}}
    if dynamic_time:
        axes[input_name][2] = "frames"
    with torch.no_grad():
        torch.onnx.export(
            module,
            (example,),
            str(path),
            input_names=[input_name],
            output_names=["embedding"],
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )


def export_audio_mae(
    model: AudioMAE,
    registry: ModelRegistry,
    version: str,
    frontend: LogMelConfig,
    training: dict[str, Any] | None = None,
    make_current: bool = True,
) -> ModelVersion:
    """Export :meth:`AudioMAE.embed` (+ L2 norm) to ONNX and publish it as ``audio-mae``/``version``."""
    import torch

    from encoders.models.audio_mae import AudioMAEEmbedding

    cfg = model.cfg
    wrapped = AudioMAEEmbedding(model).eval()
    example = torch.zeros(2, cfg.n_mels, cfg.n_frames)
    return registry.publish(
        AUDIO_MAE,
        version,
        lambda d: _export(wrapped, example, d / "model.onnx", "logmel", dynamic_time=False),
        inputs=[TensorSpec("logmel", "float32", ["batch", cfg.n_mels, cfg.n_frames])],
        outputs=[TensorSpec("embedding", "float32", ["batch", cfg.dim])],
        dim=cfg.dim,
        opset=OPSET,
        extra={
            "frontend": frontend.to_dict(),
            "model_config": cfg.to_dict(),
            "training": training or {},
            "pooling": "mean of encoder tokens, no masking, L2-normalised",
        },
        make_current=make_current,
    )


def export_musicclip(
    model: MusicCLIP,
    registry: ModelRegistry,
    version: str,
    frontend: LogMelConfig,
    text_model: str,
    training: dict[str, Any] | None = None,
    make_current: bool = True,
) -> tuple[ModelVersion, ModelVersion]:
    """Export both MusicCLIP towers and publish them as ``musicclip-audio`` and ``musicclip-text`` ``version``.

    Args:
        model: Trained model (put in eval mode here).
        registry: Target registry.
        version: Version string of both graphs.
        frontend: Log-mel settings the audio tower was trained on.
        text_model: ``name@version`` of the MiniLM whose embeddings the text tower takes.
        training: Provenance recorded in both manifests.
        make_current: Make them the served versions.
    """
    import torch

    model = model.eval()
    cfg = model.cfg
    extra = {
        "frontend": frontend.to_dict(),
        "model_config": cfg.to_dict(),
        "training": training or {},
        "text_model": text_model,
        "logit_scale": float(model.scale().item()),
    }
    audio = registry.publish(
        MUSICCLIP_AUDIO,
        version,
        lambda d: _export(
            model.audio, torch.zeros(2, cfg.n_mels, frontend.n_frames), d / "model.onnx", "logmel", dynamic_time=True
        ),
        inputs=[TensorSpec("logmel", "float32", ["batch", cfg.n_mels, "frames"])],
        outputs=[TensorSpec("embedding", "float32", ["batch", cfg.embed_dim])],
        dim=cfg.embed_dim,
        opset=OPSET,
        extra={**extra, "pair": f"{MUSICCLIP_TEXT}@{version}"},
        make_current=make_current,
    )
    text = registry.publish(
        MUSICCLIP_TEXT,
        version,
        lambda d: _export(
            model.text, torch.zeros(2, cfg.text_dim), d / "model.onnx", "text_embedding", dynamic_time=False
        ),
        inputs=[TensorSpec("text_embedding", "float32", ["batch", cfg.text_dim])],
        outputs=[TensorSpec("embedding", "float32", ["batch", cfg.embed_dim])],
        dim=cfg.embed_dim,
        opset=OPSET,
        extra={**extra, "pair": f"{MUSICCLIP_AUDIO}@{version}"},
        make_current=make_current,
    )
    return audio, text
