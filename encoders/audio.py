"""Audio encoders in production: the ONNX Runtime serving classes of Audio MAE and MusicCLIP (no torch here).

The graphs are exported from the trained torch models by :mod:`encoders.training.export_audio` (training extra,
``pip install 'thaw[train]'``); this module holds their contract and serves them.

Registry names (see :mod:`encoders.registry`), all opset 17, all outputs L2-normalised float32:

* ``audio-mae``: input ``logmel`` (B x 64 x 1000 float32, :func:`encoders.audio_frontend.log_mel`) -> output
  ``embedding`` (B x D).
* ``musicclip-audio``: input ``logmel`` (B x 64 x T) -> ``embedding`` (B x D), in the shared audio-text space.
* ``musicclip-text``: input ``text_embedding`` (B x 384, the MiniLM sentence vector of ``minilm-l6``) ->
  ``embedding`` (B x D), in the same space.

Every manifest's ``extra`` carries the frontend config (``frontend``), the model config (``model_config``) and the
training provenance (``training``: corpus, clips, splits, epochs, ...), so serving recomputes the exact
spectrogram the model was trained on. The two MusicCLIP graphs are published with the same version string.

Serving: :class:`AudioMAEEncoder` and :class:`MusicCLIPEncoder` take decoded audio
(:class:`encoders.media.DecodedAudio`), compute the log-mels with the manifest's frontend config and run the graph
with :class:`encoders.serving.OnnxModel`. Bad audio (empty, silent, NaN, too short) raises
:class:`encoders.audio_frontend.AudioInputError`, naming the offending item.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from encoders.audio_frontend import AudioInputError, LogMelConfig, log_mel
from encoders.media import DecodedAudio
from encoders.registry import ModelNotFoundError, ModelRegistry, ModelVersion
from encoders.serving import OnnxModel

if TYPE_CHECKING:
    from encoders.text import TextEncoder

log = logging.getLogger(__name__)

AUDIO_MAE = "audio-mae"
MUSICCLIP_AUDIO = "musicclip-audio"
MUSICCLIP_TEXT = "musicclip-text"
OPSET = 17


def _frontend_of(version: ModelVersion) -> LogMelConfig:
    fe = version.manifest.extra.get("frontend")
    if not isinstance(fe, dict):
        raise ValueError(f"{version.manifest.name}@{version.manifest.version}: manifest has no frontend config")
    return LogMelConfig.from_dict(fe)


def logmels_of(audios: Sequence[DecodedAudio], cfg: LogMelConfig) -> np.ndarray:
    """``B x n_mels x n_frames`` log-mels of decoded clips; bad input raises :class:`AudioInputError` naming it."""
    out = np.zeros((len(audios), cfg.n_mels, cfg.n_frames), dtype=np.float32)
    for i, a in enumerate(audios):
        try:
            out[i] = log_mel(a.samples, a.sample_rate, cfg)
        except AudioInputError as exc:
            raise AudioInputError(f"audio item {i}: {exc}") from None
    return out


class AudioMAEEncoder:
    """Audio MAE clip embeddings served by ONNX Runtime.

    Args:
        version: A published ``audio-mae`` version.
        threads: ONNX Runtime intra-op threads.
        micro_batch: Clips per ``session.run``.
    """

    def __init__(self, version: ModelVersion, threads: int = 2, micro_batch: int = 16) -> None:
        self.frontend = _frontend_of(version)
        self.model = OnnxModel(version, threads=threads, micro_batch=micro_batch)

    @property
    def model_version(self) -> str:
        return self.model.model_version

    @property
    def dim(self) -> int:
        return self.model.dim

    def encode_logmel(self, logmel: np.ndarray) -> np.ndarray:
        """``B x n_mels x n_frames`` float32 log-mels -> ``B x D`` unit vectors."""
        x = np.ascontiguousarray(logmel, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.model.run({"logmel": x})[0]

    def encode(self, audios: Sequence[DecodedAudio]) -> np.ndarray:
        """Decoded clips -> ``N x D`` float32 unit vectors (raises :class:`AudioInputError` on bad audio)."""
        return self.encode_logmel(logmels_of(audios, self.frontend))


class MusicCLIPEncoder:
    """MusicCLIP audio and text embeddings (one shared space) served by ONNX Runtime.

    Args:
        audio_version: A published ``musicclip-audio`` version.
        text_version: The ``musicclip-text`` version trained with it (same version string).
        text_encoder: The MiniLM encoder the text tower was trained on.
        threads: ONNX Runtime intra-op threads.
        micro_batch: Rows per ``session.run``.
    """

    def __init__(
        self,
        audio_version: ModelVersion,
        text_version: ModelVersion,
        text_encoder: TextEncoder,
        threads: int = 2,
        micro_batch: int = 16,
    ) -> None:
        if audio_version.manifest.version != text_version.manifest.version:
            raise ValueError(
                f"MusicCLIP towers come from different runs: audio {audio_version.manifest.version}, "
                f"text {text_version.manifest.version}"
            )
        want = text_version.manifest.extra.get("text_model")
        if want and want != text_encoder.model_version:
            log.warning("musicclip-text was trained on %s but is fed %s", want, text_encoder.model_version)
        self.frontend = _frontend_of(audio_version)
        self.audio = OnnxModel(audio_version, threads=threads, micro_batch=micro_batch)
        self.text = OnnxModel(text_version, threads=threads, micro_batch=max(micro_batch, 64))
        self.text_encoder = text_encoder

    @property
    def model_version(self) -> str:
        return self.audio.model_version

    @property
    def dim(self) -> int:
        return self.audio.dim

    def encode_logmel(self, logmel: np.ndarray) -> np.ndarray:
        """``B x n_mels x T`` float32 log-mels -> ``B x D`` unit vectors."""
        x = np.ascontiguousarray(logmel, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.audio.run({"logmel": x})[0]

    def encode_audio(self, audios: Sequence[DecodedAudio]) -> np.ndarray:
        """Decoded clips -> ``N x D`` float32 unit vectors (raises :class:`AudioInputError` on bad audio)."""
        return self.encode_logmel(logmels_of(audios, self.frontend))

    def encode_text_embedding(self, text_emb: np.ndarray) -> np.ndarray:
        """``N x 384`` MiniLM sentence vectors -> ``N x D`` unit vectors."""
        x = np.ascontiguousarray(text_emb, dtype=np.float32)
        if x.shape[0] == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return self.text.run({"text_embedding": x})[0]

    def encode_text(self, texts: Sequence[str]) -> np.ndarray:
        """Texts -> ``N x D`` float32 unit vectors in the audio space."""
        return self.encode_text_embedding(self.text_encoder.encode(list(texts)))


def load_audio_encoders(
    registry: ModelRegistry,
    text_encoder: TextEncoder | None = None,
    threads: int = 2,
    micro_batch: int = 16,
) -> tuple[AudioMAEEncoder | None, MusicCLIPEncoder | None]:
    """The current ``audio-mae`` and MusicCLIP encoders, None for one that is not published.

    MusicCLIP needs both towers of the same version and a ``text_encoder``; without one of them it is None (and the
    reason is logged). Never returns a stand-in model.
    """
    mae: AudioMAEEncoder | None = None
    clip: MusicCLIPEncoder | None = None
    try:
        mae = AudioMAEEncoder(registry.load(AUDIO_MAE), threads=threads, micro_batch=micro_batch)
    except ModelNotFoundError as exc:
        log.info("no Audio MAE: %s", exc)
    try:
        audio_v = registry.load(MUSICCLIP_AUDIO)
        text_v = registry.load(MUSICCLIP_TEXT, audio_v.manifest.version)
        if text_encoder is None:
            log.info("MusicCLIP is published but no text encoder was given: not loaded")
        else:
            clip = MusicCLIPEncoder(audio_v, text_v, text_encoder, threads=threads, micro_batch=micro_batch)
    except ModelNotFoundError as exc:
        log.info("no MusicCLIP: %s", exc)
    return mae, clip
