"""One interface from new items to content features: the stream's and the offline models' view of the encoders.

Given a batch of new items of mixed kinds (their text + tags and, where they have them, a decoded image and audio),
:class:`ContentFeaturizer` runs every published encoder over the items that have its modality, batched per
encoder, and returns a :class:`FeatureBatch`: one fixed-width, L2-normalised vector per **field** and a presence
mask. Fields (dims come from the published manifests; the defaults of our training configs in brackets):

=============== ============================================================= ===================================
field           encoder                                                       present when
=============== ============================================================= ===================================
``text``        all-MiniLM-L6-v2 sentence embedding of ``text + tags`` (384)  always
``audio_clip``  MusicCLIP audio tower over the log-mel spectrogram            the item has decodable audio
``audio_mae``   Audio MAE encoder, mean-pooled, no masking                    the item has decodable audio
``image``       FLAVA-style image tower (frozen EfficientNet-lite0 + proj.)   the item has a decodable image
``image_text``  FLAVA-style fusion of the image with the item's text          the item has a decodable image
=============== ============================================================= ===================================

A missing modality is explicit: its rows are zeros **and** ``present`` is False there; consumers (CB2CF) read the
mask, never the zeros. An encoder that is not published in the model directory is not loaded and its fields are
absent from the batch (``FeatureBatch.names``), listed in :attr:`ContentFeaturizer.missing`; nothing is faked.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.media import DecodedAudio, DecodedImage
from encoders.registry import ModelNotFoundError, ModelRegistry
from encoders.text import TextEncoder, ensure_minilm

log = logging.getLogger(__name__)

FIELDS: tuple[str, ...] = ("text", "audio_clip", "audio_mae", "image", "image_text")
"""Every field the featuriser can produce, in model input order."""


@dataclass(frozen=True)
class ContentInput:
    """One item as the featuriser sees it.

    Attributes:
        text: The item's text and tags as one string (:func:`content_document`).
        image: The decoded image, or None.
        audio: The decoded audio, or None.
    """

    text: str
    image: DecodedImage | None = None
    audio: DecodedAudio | None = None


@dataclass(frozen=True, eq=False)
class FeatureBatch:
    """Content features of a batch of N items.

    Attributes:
        names: Fields produced, a subsequence of :data:`FIELDS`.
        values: Per field, ``float32[N, d_f]``; unit rows where present, zero rows where absent.
        present: ``bool[N, F]`` in the order of ``names``.
        model_versions: Per field, the ``name@version`` of the model that made it.
        stage_ms: Milliseconds per encoder for this batch.
        errors: Item index -> why an encoder refused that item's media (e.g. audio too short for the frontend);
            the stream dead-letters such items, offline users drop them.
    """

    names: tuple[str, ...]
    values: dict[str, np.ndarray]
    present: np.ndarray
    model_versions: dict[str, str]
    stage_ms: dict[str, float] = field(default_factory=dict)
    errors: dict[int, str] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.present.shape[0])

    def dims(self) -> dict[str, int]:
        return {n: int(self.values[n].shape[1]) for n in self.names}

    def modalities(self, i: int) -> list[str]:
        """The fields present for item ``i``."""
        return [n for k, n in enumerate(self.names) if self.present[i, k]]

    def row(self, i: int) -> dict[str, np.ndarray]:
        """Item ``i``'s present fields."""
        return {n: self.values[n][i] for k, n in enumerate(self.names) if self.present[i, k]}


DOC_MAX_TAGS = 20
"""Tags in the embedded document: the first 20 (an event lists its tags most important first). The sentence encoder
reads 256 word pieces at most, so more tags would mostly be cut anyway; every tag still counts in the ``words`` field
(:mod:`ranking.online.sparse`)."""


def content_document(text: str, tags: Sequence[str], fallback: str = "") -> str:
    """The one text an item's ``text`` field is embedded from, online and offline alike.

    ``"<text> | tag1, tag2, ..."`` with the first :data:`DOC_MAX_TAGS` non-blank tags, or just one of the two parts
    when the other is empty, or ``fallback`` (the stream passes the item's kind) when both are. It is the format of
    ``InteractionDataset.item_document`` (20 tags by default), so models trained offline on dataset items see the same
    inputs as the stream produces for new posts.
    """
    body = text.strip()
    tag_part = ", ".join([t.strip() for t in tags if t.strip()][:DOC_MAX_TAGS])
    if body and tag_part:
        return f"{body} | {tag_part}"
    return body or tag_part or fallback


def _unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    n = np.linalg.norm(x, axis=1, keepdims=True)
    return np.where(n > 0, x / np.maximum(n, 1e-12), 0.0).astype(np.float32)


class ContentFeaturizer:
    """Runs the published encoders over batches of items.

    Args:
        text: The MiniLM text encoder (always required: every item has text or tags or its kind as text).
        musicclip: A ``MusicCLIPEncoder`` (``encode_audio``), or None.
        audio_mae: An ``AudioMAEEncoder`` (``encode``), or None.
        imagetext: An ``ImageTextEncoder`` (``encode_pair(images, texts) -> (image N x D, fused N x D)``), or None.
    """

    def __init__(self, text: TextEncoder, musicclip: Any = None, audio_mae: Any = None, imagetext: Any = None) -> None:
        self.text = text
        self.musicclip = musicclip
        self.audio_mae = audio_mae
        self.imagetext = imagetext

    @classmethod
    def from_registry(cls, registry: ModelRegistry, threads: int = 2, quantize: str | None = None) -> ContentFeaturizer:
        """Load the current version of every published encoder (MiniLM is exported on first use).

        Args:
            registry: The model directory.
            threads: Intra-op threads of every ONNX Runtime session.
            quantize: Which encoders serve their int8 variant (:data:`encoders.quantize.SETTINGS`: ``none``,
                ``int8`` = MiniLM, ``int8-all`` = MiniLM and the FLAVA-style image and text graphs); a missing
                variant is an error, never a silent fp32 fallback. None: the configured ``THAW_MODELS__QUANTIZE``
                (``none`` unless set).
        """
        from encoders.quantize import VariantNotFoundError, check_setting, load_variant, scheme_for

        if quantize is None:
            from infra.settings import load_settings

            quantize = load_settings().models.quantize
        check_setting(quantize)
        minilm = ensure_minilm(registry)
        if scheme_for(quantize, minilm.manifest.name) != "none":
            minilm = load_variant(registry, minilm.manifest.name, scheme_for(quantize, minilm.manifest.name),
                                  minilm.manifest.version)
        text = TextEncoder(minilm, threads=threads)
        musicclip = audio_mae = imagetext = None
        try:
            from encoders.audio import load_audio_encoders

            audio_mae, musicclip = load_audio_encoders(registry, text_encoder=text, threads=threads)
        except (ImportError, ModelNotFoundError) as exc:
            log.warning("audio encoders not loaded: %s", exc)
        try:
            from encoders.imagetext import load_imagetext_encoder

            imagetext = load_imagetext_encoder(registry, threads=threads, quantize=quantize)
        except VariantNotFoundError:
            raise
        except (ImportError, ModelNotFoundError) as exc:
            log.warning("image-text encoder not loaded: %s", exc)
        fz = cls(text, musicclip=musicclip, audio_mae=audio_mae, imagetext=imagetext)
        if fz.missing:
            log.warning("content fields without a published encoder (absent from features): %s", fz.missing)
        return fz

    @property
    def fields(self) -> tuple[str, ...]:
        """The fields this featuriser produces."""
        have = {
            "text": True,
            "audio_clip": self.musicclip is not None,
            "audio_mae": self.audio_mae is not None,
            "image": self.imagetext is not None,
            "image_text": self.imagetext is not None,
        }
        return tuple(f for f in FIELDS if have[f])

    @property
    def missing(self) -> tuple[str, ...]:
        return tuple(f for f in FIELDS if f not in self.fields)

    @property
    def model_versions(self) -> dict[str, str]:
        out = {"text": self.text.model_version}
        if self.musicclip is not None:
            out["audio_clip"] = self.musicclip.model_version
        if self.audio_mae is not None:
            out["audio_mae"] = self.audio_mae.model_version
        if self.imagetext is not None:
            out["image"] = out["image_text"] = self.imagetext.model_version
        return out

    def dims(self) -> dict[str, int]:
        out = {"text": self.text.dim}
        if self.musicclip is not None:
            out["audio_clip"] = int(self.musicclip.dim)
        if self.audio_mae is not None:
            out["audio_mae"] = int(self.audio_mae.dim)
        if self.imagetext is not None:
            out["image"] = out["image_text"] = int(self.imagetext.dim)
        return out

    def featurize(self, items: Sequence[ContentInput]) -> FeatureBatch:
        """Features of ``items``: every encoder runs once over the items that have its modality."""
        n = len(items)
        names = self.fields
        dims = self.dims()
        values = {f: np.zeros((n, dims[f]), dtype=np.float32) for f in names}
        present = np.zeros((n, len(names)), dtype=bool)
        col = {f: k for k, f in enumerate(names)}
        stage: dict[str, float] = {}

        t0 = time.perf_counter()
        if n:
            values["text"] = _unit_rows(self.text.encode([it.text for it in items]))
            present[:, col["text"]] = True
        stage["text"] = (time.perf_counter() - t0) * 1000.0

        errors: dict[int, str] = {}
        with_audio = [i for i, it in enumerate(items) if it.audio is not None]
        audio_encoders = [(n, e) for n, e in (("audio_clip", self.musicclip), ("audio_mae", self.audio_mae)) if e]
        if with_audio and audio_encoders:
            # one log-mel per item and frontend config, shared by the encoders trained on the same frontend
            mels: dict[Any, dict[int, np.ndarray]] = {}
            for name, enc in audio_encoders:
                cfg = enc.frontend
                t = time.perf_counter()
                if cfg not in mels:
                    mels[cfg] = self._log_mels(items, with_audio, cfg, errors)
                    stage["audio_frontend"] = stage.get("audio_frontend", 0.0) + (time.perf_counter() - t) * 1000.0
                t = time.perf_counter()
                per = mels[cfg]

                def encode(m: list[np.ndarray], enc: Any = enc) -> np.ndarray:
                    return np.asarray(enc.encode_logmel(np.stack(m)))

                def args_of(i: int, per: dict[int, np.ndarray] = per) -> tuple[np.ndarray]:
                    return (per[i],)

                rows = self._run(encode, [i for i in with_audio if i in per], args_of, errors)
                for i, (v,) in rows.items():
                    values[name][i] = v
                    present[i, col[name]] = True
                stage[name] = (time.perf_counter() - t) * 1000.0

        with_image = [i for i, it in enumerate(items) if it.image is not None]
        if with_image and self.imagetext is not None:
            t = time.perf_counter()
            it_enc = self.imagetext
            pair = getattr(it_enc, "encode_pair", None)
            if pair is None:  # an encoder without the one-pass method: image tower twice

                def pair(images: list[Any], texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
                    return it_enc.encode_images(images), it_enc.fuse(images, texts)[0]

            rows = self._run(pair, with_image, lambda i: (items[i].image, items[i].text), errors)
            for i, (img, fused) in rows.items():
                values["image"][i] = img
                values["image_text"][i] = fused
                present[i, col["image"]] = present[i, col["image_text"]] = True
            stage["image"] = (time.perf_counter() - t) * 1000.0

        return FeatureBatch(names, values, present, {f: self.model_versions[f] for f in names}, stage, errors)

    @staticmethod
    def _log_mels(
        items: Sequence[ContentInput], idx: list[int], cfg: Any, errors: dict[int, str]
    ) -> dict[int, np.ndarray]:
        """Log-mel spectrograms of the items' audio; audio the frontend refuses is recorded in ``errors``."""
        from encoders.audio_frontend import AudioInputError, log_mel

        out: dict[int, np.ndarray] = {}
        for i in idx:
            a = items[i].audio
            if a is None or i in errors:
                continue
            try:
                out[i] = log_mel(a.samples, a.sample_rate, cfg)
            except AudioInputError as exc:
                errors[i] = f"audio: {str(exc)[:300]}"
        return out

    @staticmethod
    def _run(
        fn: Callable[..., Any],
        idx: list[int],
        args_of: Callable[[int], tuple[Any, ...]],
        errors: dict[int, str],
    ) -> dict[int, tuple[np.ndarray, ...]]:
        """``fn`` over the items ``idx`` in one batch (per-argument lists in, one array or a tuple of arrays out,
        rows in input order). If the batch fails, each item is retried alone so one bad input costs only itself;
        the items that still fail are recorded in ``errors``. Returns item index -> unit rows."""
        todo = [i for i in idx if i not in errors]
        if not todo:
            return {}

        def call(ids: list[int]) -> tuple[np.ndarray, ...]:
            cols = list(zip(*[args_of(i) for i in ids], strict=True))
            out = fn(*[list(c) for c in cols])
            outs = out if isinstance(out, tuple) else (out,)
            return tuple(_unit_rows(o) for o in outs)

        try:
            outs = call(todo)
            return {i: tuple(o[r] for o in outs) for r, i in enumerate(todo)}
        except (ValueError, RuntimeError) as exc:
            log.info("encoder batch failed (%s); encoding its %d items one by one", type(exc).__name__, len(todo))
        got: dict[int, tuple[np.ndarray, ...]] = {}
        for i in todo:
            try:
                outs = call([i])
                got[i] = tuple(o[0] for o in outs)
            except (ValueError, RuntimeError) as exc:
                errors[i] = f"{getattr(fn, '__qualname__', 'encoder')}: {str(exc)[:300]}"
        return got
