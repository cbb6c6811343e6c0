"""ONNX export of the DeepFM + MMoE ranker into the versioned model directory.

Published models (``encoders.registry.ModelRegistry`` layout): ``deepfm-mmoe`` is the variant with group-wise
gating, ``deepfm-mmoe-plain`` the one with plain MMoE gates (:func:`ranker_name`); a trainer publishes both under
the same version name, each with its own ``CURRENT``, so a service can A/B them by name
(:class:`ranking.online.ranker.Ranker`). Inputs ``sparse`` (B x F_s int64, per-field indices, 0 = unknown),
``categories`` (B x C float32 multi-hot), ``dense`` (B x D float32) and ``group`` (B int64 user group; an input of
the plain variant too) → ``scores`` (B x T float32 probabilities, one column per task). The manifest's ``extra``
carries the schema (field names and cardinalities, dense field widths, tasks, number of groups) and whether the
gates are group-conditioned; side file ``schema.json`` holds the same plus ``vocab``: any vocabularies passed in
and, under ``vocab["featurizer"]``, the online featuriser (:class:`ranking.online.features.RankFeaturizer` JSON) that
turns a request into these inputs exactly as training did.
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
from ranking.online.features import RankFeaturizer
from ranking.online.ranker import PLAIN_RANKER_NAME, RANKER_NAME

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


def ranker_name(group_gating: bool) -> str:
    """The published model name of a variant: ``deepfm-mmoe`` (group gating) or ``deepfm-mmoe-plain``."""
    return RANKER_NAME if group_gating else PLAIN_RANKER_NAME


def check_featurizer(model: DeepFMMMoE, featurizer: RankFeaturizer) -> None:
    """Raises ``ValueError`` unless ``featurizer`` produces inputs of ``model``'s schema."""
    s = model.schema
    problems = []
    if list(featurizer.cardinalities) != [c for _, c in s.sparse]:
        problems.append(f"sparse cardinalities {list(featurizer.cardinalities)} vs {[c for _, c in s.sparse]}")
    if featurizer.n_categories != s.n_categories:
        problems.append(f"categories {featurizer.n_categories} vs {s.n_categories}")
    if len(featurizer.dense_mu) != s.dense_dim:
        problems.append(f"dense width {len(featurizer.dense_mu)} vs {s.dense_dim}")
    if len(featurizer.group_means) != s.n_groups or tuple(featurizer.tasks) != tuple(s.tasks):
        problems.append("groups or tasks differ")
    if problems:
        raise ValueError("featuriser does not match the model: " + "; ".join(problems))


def export_ranker(
    model: DeepFMMMoE,
    registry: ModelRegistry,
    version: str,
    extra: Mapping[str, Any] | None = None,
    vocab: Mapping[str, Any] | None = None,
    make_current: bool = True,
    featurizer: RankFeaturizer | None = None,
    name: str = RANKER_NAME,
) -> ModelVersion:
    """Publishes the ranker as ``name`` (pass :func:`ranker_name` of the variant to publish both side by side).

    Args:
        model: Trained model (exported in eval mode).
        registry: Target model directory.
        version: Version name.
        extra: Extra manifest entries (e.g. dataset, test metrics).
        vocab: Vocabularies / group definitions written to ``schema.json`` (e.g. raw ids per index).
        make_current: Point ``CURRENT`` at the new version.
        featurizer: The online featuriser of the model's training split, written to
            ``schema.json["vocab"]["featurizer"]`` (checked against the model's schema).
        name: Published model name.
    """
    model = model.eval()
    s = model.schema
    vocab = dict(vocab or {})
    if featurizer is not None:
        check_featurizer(model, featurizer)
        vocab["featurizer"] = featurizer.to_json()
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
        (d / "schema.json").write_text(json.dumps({**schema, "vocab": vocab}))

    inputs = [TensorSpec("sparse", "int64", ["batch", n_sparse]),
              TensorSpec("categories", "float32", ["batch", s.n_categories]),
              TensorSpec("dense", "float32", ["batch", s.dense_dim]),
              TensorSpec("group", "int64", ["batch"])]
    return registry.publish(
        name, version, write, inputs=inputs,
        outputs=[TensorSpec("scores", "float32", ["batch", len(s.tasks)])], dim=len(s.tasks), opset=OPSET,
        extra={**schema, **(dict(extra) if extra else {})}, make_current=make_current,
    )
