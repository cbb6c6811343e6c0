"""FLAVA-style image–text encoder: the contract of its three ONNX graphs and their serving with ONNX Runtime.

This module imports no torch: its preprocessing (:func:`preprocess_images`, :func:`load_tokenizer`,
:func:`tokenize`) and constants are shared with training. The trainable head is
:class:`encoders.models.flava.FlavaModel`; :mod:`encoders.training.export_imagetext` (training extra,
``pip install 'thaw[train]'``) loads the frozen backbones, attaches them to it and turns the result into three
published models (:mod:`encoders.registry`), all with the same version string:

* ``flava-image``: ``pixels`` B x 3 x 224 x 224 uint8 RGB (resized and composited on the background colour by the
  caller: :func:`preprocess_images`) -> EfficientNet-lite0 (normalisation in-graph) -> projection ->
  ``embedding`` B x D (unit) and ``tokens`` B x 49 x D.
* ``flava-text``: ``input_ids``, ``attention_mask`` B x T int64 (MiniLM tokenizer, ``tokenizer.json`` in the
  version directory, truncated to ``max_text_tokens``) -> MiniLM -> adapter/projection -> ``embedding`` B x D
  (unit) and ``tokens`` B x T x D.
* ``flava-fusion``: ``image_tokens`` B x 49 x D, ``image_mask`` B x 49, ``text_tokens`` B x T x D, ``text_mask``
  B x T -> ``fused`` B x D (unit) and ``match`` B (image–text matching probability).

The manifests' ``extra`` carries the preprocessing (size, resize filter, mean/std, background colour), the
training run id (the three graphs of one run belong together) and the data provenance.
:class:`ImageTextEncoder` serves them; :func:`load_imagetext_encoder` returns None when nothing is published.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.media import DecodedImage, MediaError
from encoders.registry import ModelNotFoundError, ModelRegistry, ModelVersion
from encoders.serving import OnnxModel

IMAGE_MODEL = "flava-image"
TEXT_MODEL = "flava-text"
FUSION_MODEL = "flava-fusion"
MODEL_NAMES = (IMAGE_MODEL, TEXT_MODEL, FUSION_MODEL)
OPSET = 17
IMAGE_SIZE = 224
PIXEL_MEAN = 127.0  # EfficientNet-lite (TF) input convention: (x - 127) / 128 on 0..255 RGB
PIXEL_STD = 128.0
BACKGROUND = (255, 255, 255)


def tokenizer_from_json(text: str, max_tokens: int) -> Any:
    """The MiniLM fast tokenizer from the text of a ``tokenizer.json``, truncating to ``max_tokens``, without
    padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_str(text)
    tok.enable_truncation(max_length=max_tokens)
    tok.no_padding()
    return tok


def load_tokenizer(path: Path, max_tokens: int) -> Any:
    """:func:`tokenizer_from_json` of the file at ``path`` (a bundled tokenizer; a published version's comes from
    its verified bytes instead)."""
    return tokenizer_from_json(path.read_text(encoding="utf-8"), max_tokens)


def tokenize(tok: Any, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Token ids and attention mask, padded to the longest text: two int64 arrays N x T (T >= 1).

    Raises:
        ValueError: A text is not a ``str``.
    """
    bad = [i for i, t in enumerate(texts) if not isinstance(t, str)]
    if bad:
        raise ValueError(f"texts must be str; got {type(texts[bad[0]]).__name__} at position {bad[0]}")
    encs = tok.encode_batch(list(texts))
    width = max([len(e.ids) for e in encs] + [1])
    ids = np.zeros((len(encs), width), dtype=np.int64)
    mask = np.zeros((len(encs), width), dtype=np.int64)
    for r, e in enumerate(encs):
        ids[r, : len(e.ids)] = e.ids
        mask[r, : len(e.ids)] = 1
    return ids, mask


def preprocess_images(images: Sequence[DecodedImage | np.ndarray], size: int = IMAGE_SIZE) -> np.ndarray:
    """Validates and resizes RGB images to the graph's input: uint8 N x 3 x size x size.

    Images are already composited on white by :func:`encoders.media.decode_image` (the OpenMoji corpus is
    rendered on the same background), so only a bilinear resize to ``size`` x ``size`` happens here.

    Raises:
        MediaError: An image is not H x W x 3 uint8 with a positive size.
    """
    from PIL import Image

    out = np.zeros((len(images), 3, size, size), dtype=np.uint8)
    for i, im in enumerate(images):
        px = im.pixels if isinstance(im, DecodedImage) else im
        if not isinstance(px, np.ndarray) or px.dtype != np.uint8 or px.ndim != 3 or px.shape[2] != 3:
            desc = f"{px.dtype} {px.shape}" if isinstance(px, np.ndarray) else type(px).__name__
            raise MediaError(f"image {i}: expected H x W x 3 uint8 RGB pixels, got {desc}")
        if px.shape[0] == 0 or px.shape[1] == 0:
            raise MediaError(f"image {i}: empty image {px.shape[1]}x{px.shape[0]}")
        if px.shape[:2] != (size, size):
            px = np.asarray(Image.fromarray(px).resize((size, size), Image.Resampling.BILINEAR))
        out[i] = px.transpose(2, 0, 1)
    return out


# ----------------------------------------------------------------------------------------------------- serving
class ImageTextEncoder:
    """Serves the three FLAVA-style graphs of one training run with ONNX Runtime.

    Args:
        image: Published ``flava-image`` version.
        text: Published ``flava-text`` version (with ``tokenizer.json``).
        fusion: Published ``flava-fusion`` version.
        threads: Intra-op threads per session.
        micro_batch: Rows per ONNX Runtime call.

    Raises:
        ValueError: The three versions come from different training runs or disagree on the dimension.
    """

    def __init__(
        self, image: ModelVersion, text: ModelVersion, fusion: ModelVersion, threads: int = 2, micro_batch: int = 16
    ) -> None:
        runs = {v.manifest.extra.get("run_id") for v in (image, text, fusion)}
        if len(runs) != 1:
            raise ValueError(f"flava graphs come from different training runs: {sorted(map(str, runs))}")
        dims = {v.manifest.dim for v in (image, text, fusion)}
        if len(dims) != 1:
            raise ValueError(f"flava graphs disagree on the dimension: {sorted(dims)}")
        self._image = OnnxModel(image, threads=threads, micro_batch=micro_batch)
        self._text = OnnxModel(text, threads=threads, micro_batch=micro_batch)
        self._fusion = OnnxModel(fusion, threads=threads, micro_batch=micro_batch)
        pre = image.manifest.extra.get("preprocessing", {})
        self.image_size = int(pre.get("image_size", IMAGE_SIZE))
        self.max_text_tokens = int(text.manifest.extra.get("preprocessing", {}).get("max_text_tokens", 40))
        self._tok = tokenizer_from_json(text.read_text("tokenizer.json"), self.max_text_tokens)  # verified
        self.dim = int(image.manifest.dim)
        self.versions = (image, text, fusion)

    @property
    def model_version(self) -> str:
        """``flava@<version>`` when the three graphs come from one version (``flava@<version>-int8`` when some of
        them are its int8 variants, :mod:`encoders.quantize`), else the three ``name@version``."""
        from encoders.quantize import base_version, variant_info

        bases = {base_version(v) for v in self.versions}
        if len(bases) == 1:
            schemes = sorted({str(info["scheme"]) for v in self.versions if (info := variant_info(v))})
            return f"flava@{bases.pop()}" + "".join(f"-{s}" for s in schemes)
        return "+".join(f"{v.manifest.name}@{v.manifest.version}" for v in self.versions)

    @property
    def last_batch_ms(self) -> dict[str, float]:
        """Latency of the last call of each graph, in milliseconds."""
        return {"image": self._image.last_batch_ms, "text": self._text.last_batch_ms,
                "fusion": self._fusion.last_batch_ms}

    def _image_outputs(self, images: Sequence[DecodedImage]) -> tuple[np.ndarray, np.ndarray]:
        pix = preprocess_images(images, self.image_size)
        emb, tokens = self._image.run({"pixels": pix}, ["embedding", "tokens"])
        return emb.astype(np.float32), tokens.astype(np.float32)

    def _text_outputs(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ids, mask = tokenize(self._tok, texts)
        emb, tokens = self._text.run({"input_ids": ids, "attention_mask": mask}, ["embedding", "tokens"])
        return emb.astype(np.float32), tokens.astype(np.float32), mask

    def encode_images(self, images: Sequence[DecodedImage]) -> np.ndarray:
        """Image embeddings in the shared space: float32 N x D, unit rows.

        Raises:
            MediaError: An image is not H x W x 3 uint8.
        """
        if not len(images):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._image_outputs(images)[0]

    def encode_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Text embeddings in the shared space: float32 N x D, unit rows (an empty text embeds [CLS][SEP])."""
        if not len(texts):
            return np.zeros((0, self.dim), dtype=np.float32)
        return self._text_outputs(texts)[0]

    def fuse(self, images: Sequence[DecodedImage], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """Multimodal vectors of image–text pairs.

        Args:
            images: N images.
            texts: N texts, ``texts[i]`` paired with ``images[i]``.

        Returns:
            ``(fused, match)``: float32 N x D unit vectors and float32 N matching probabilities.

        Raises:
            ValueError: ``images`` and ``texts`` differ in length.
        """
        _, fused, match = self._pair(images, texts)
        return fused, match

    def encode_pair(self, images: Sequence[DecodedImage], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(image embeddings, fused vectors)``, both float32 N x D unit rows, running the image tower once
        (what the content featuriser needs for its ``image`` and ``image_text`` fields)."""
        img, fused, _ = self._pair(images, texts)
        return img, fused

    def _pair(self, images: Sequence[DecodedImage], texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if len(images) != len(texts):
            raise ValueError(f"fuse needs one text per image, got {len(images)} images and {len(texts)} texts")
        if not len(images):
            z = np.zeros((0, self.dim), dtype=np.float32)
            return z, z.copy(), np.zeros((0,), dtype=np.float32)
        img_emb, img_tok = self._image_outputs(images)
        _, txt_tok, mask = self._text_outputs(texts)
        imask = np.ones(img_tok.shape[:2], dtype=np.int64)
        fused, match = self._fusion.run(
            {"image_tokens": img_tok, "image_mask": imask, "text_tokens": txt_tok, "text_mask": mask},
            ["fused", "match"],
        )
        return img_emb, fused.astype(np.float32), match.astype(np.float32)


def load_imagetext_encoder(registry: ModelRegistry, threads: int = 2, micro_batch: int = 16,
                           quantize: str = "none") -> ImageTextEncoder | None:
    """The current FLAVA-style encoder of ``registry``, or None when any of its three graphs is not published.

    ``quantize`` is a ``THAW_MODELS__QUANTIZE`` value (:data:`encoders.quantize.SETTINGS`): ``int8-all`` serves
    the int8 variants of the image and text graphs (the small fusion graph stays fp32); a missing variant raises
    :class:`encoders.quantize.VariantNotFoundError`."""
    from encoders.quantize import VariantNotFoundError, load_variant, scheme_for

    if any(registry.current_version(n) is None for n in MODEL_NAMES):
        return None
    try:
        image, text, fusion = (load_variant(registry, n, scheme_for(quantize, n)) for n in MODEL_NAMES)
    except VariantNotFoundError:
        raise
    except ModelNotFoundError:
        return None
    return ImageTextEncoder(image, text, fusion, threads=threads, micro_batch=micro_batch)
