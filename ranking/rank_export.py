"""ONNX export of the DeepFM + MMoE ranker into the versioned model directory.

Published model ``deepfm-mmoe`` (``encoders.registry.ModelRegistry`` layout): inputs ``sparse`` (B x F_s int64,
per-field indices, 0 = unknown), ``categories`` (B x C float32 multi-hot), ``dense`` (B x D float32) and ``group``
(B int64 user group) → ``scores`` (B x T float32 probabilities, one column per task). The manifest's ``extra``
carries the schema (field names and cardinalities, dense field widths, tasks, number of groups) and whether the
gates are group-conditioned; side file ``schema.json`` holds the same plus any vocabularies passed in.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from encoders.registry import ModelRegistry, ModelVersion, TensorSpec
from ranking.models.deepfm_mmoe import DeepFMMMoE

RANKER_NAME = "deepfm-mmoe"
OPSET = 17
INPUTS = ("sparse", "categories", "dense", "group")


class _Probabilities(nn.Module):
    def __init__(self, model: DeepFMMMoE) -> None:
        super().__init__()
        self.model = model

    def forward(
        self, sparse: torch.Tensor, categories: torch.Tensor, dense: torch.Tensor, group: torch.Tensor
    ) -> torch.Tensor:
        scores = torch.sigmoid(self.model(sparse, categories, dense, group))
        if not self.model.config.group_gating:
            # keep ``group`` a graph input of every variant (same serving contract); the exporter prunes unused ones
            scores = scores + 0.0 * group.unsqueeze(1).to(scores.dtype)
        return scores


def ranker_schema(model: DeepFMMMoE) -> dict[str, Any]:
    """The JSON description of the model's inputs and tasks."""
    s = model.schema
    return {"sparse": [{"name": n, "cardinality": c} for n, c in s.sparse], "n_categories": s.n_categories,
            "dense": [{"name": f.name, "dim": f.dim} for f in s.dense], "n_groups": s.n_groups,
            "tasks": list(s.tasks), "group_gating": model.config.group_gating}


def export_ranker(
    model: DeepFMMMoE,
    registry: ModelRegistry,
    version: str,
    extra: Mapping[str, Any] | None = None,
    vocab: Mapping[str, Any] | None = None,
    make_current: bool = True,
) -> ModelVersion:
    """Publishes the ranker as ``deepfm-mmoe``.

    Args:
        model: Trained model (exported in eval mode).
        registry: Target model directory.
        version: Version name.
        extra: Extra manifest entries (e.g. dataset, test metrics).
        vocab: Vocabularies / group definitions written to ``schema.json`` (e.g. raw ids per index).
        make_current: Point ``CURRENT`` at the new version.
    """
    model = model.eval()
    s = model.schema
    n_sparse = len(s.sparse)
    args = (torch.zeros(2, n_sparse, dtype=torch.long), torch.zeros(2, s.n_categories),
            torch.zeros(2, s.dense_dim), torch.tensor([0, max(0, s.n_groups - 1)], dtype=torch.long))
    schema = ranker_schema(model)

    def write(d: Path) -> None:
        module = _Probabilities(model).eval()
        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.onnx.export(
                module, args, str(d / "model.onnx"), input_names=list(INPUTS), output_names=["scores"],
                dynamic_axes={**{n: {0: "batch"} for n in INPUTS}, "scores": {0: "batch"}},
                opset_version=OPSET, dynamo=False,
            )
        (d / "schema.json").write_text(json.dumps({**schema, "vocab": dict(vocab or {})}))

    inputs = [TensorSpec("sparse", "int64", ["batch", n_sparse]),
              TensorSpec("categories", "float32", ["batch", s.n_categories]),
              TensorSpec("dense", "float32", ["batch", s.dense_dim]),
              TensorSpec("group", "int64", ["batch"])]
    return registry.publish(
        RANKER_NAME, version, write, inputs=inputs,
        outputs=[TensorSpec("scores", "float32", ["batch", len(s.tasks)])], dim=len(s.tasks), opset=OPSET,
        extra={**schema, **(dict(extra) if extra else {})}, make_current=make_current,
    )
