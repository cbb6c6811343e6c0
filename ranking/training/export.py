"""ONNX export of the cold-item models into the versioned model directory, and the ONNX Runtime CB2CF projector.

Published models (``encoders.registry.ModelRegistry`` layout, manifest with name, version, inputs, outputs, dim,
opset, and the sha256 of every file). Every file of a version, side files included, is written by the writer the
registry calls inside its temporary directory, so the manifest records its hash and the version appears whole or
not at all; nothing is added to a version directory after it is published:

* ``dssm-user``: ``user_index`` (B int64; ``-1`` or any id outside the table = unknown/brand-new user)
  [+ ``user_features`` (B x n_features int64, 0 = unknown) when the tower has features] → ``user_vector`` (B x dim).
  Side file ``ids.json``: the raw user ids in index order, and the feature vocabularies.
* ``dssm-item``: ``item_index`` (B int64) → ``item_vector`` (B x dim), the CF space. Side file ``ids.json``.
* ``cb2cf``: one input per content field (``<field>``: B x d_f float32) + ``present`` (B x F float32, 1 = the
  field is present) → ``cf_vector`` (B x dim, unit norm), in the same space as ``dssm-item``.

:class:`ranking.online.projector.CB2CFProjector` (re-exported here) is what the content agent calls:
``project(fields, present) -> cf_vectors``; it needs ONNX Runtime only, not torch.
"""

from __future__ import annotations

import json
import warnings
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import sparse
from torch import nn

from encoders.registry import ModelRegistry, ModelVersion, TensorSpec
from ranking.models.cb2cf import CB2CF
from ranking.models.dssm import DSSM
from ranking.online.projector import CB2CFProjector
from ranking.online.sparse import WORDS_FIELD, SparseVectorizer

__all__ = ["CB2CFProjector", "export_cb2cf", "export_dssm", "publish_cold_item_models"]

OPSET = 17
DSSM_USER = "dssm-user"
DSSM_ITEM = "dssm-item"
CB2CF_NAME = "cb2cf"
HYBRID_PARTS = "hybrid_parts.npz"


class _UserTowerExport(nn.Module):
    def __init__(self, dssm: DSSM, with_features: bool) -> None:
        super().__init__()
        self.dssm = dssm
        self.with_features = with_features

    def forward(self, user_index: torch.Tensor, user_features: torch.Tensor | None = None) -> torch.Tensor:
        return self.dssm.users(user_index, user_features if self.with_features else None)


class _ItemTowerExport(nn.Module):
    def __init__(self, dssm: DSSM) -> None:
        super().__init__()
        self.dssm = dssm

    def forward(self, item_index: torch.Tensor) -> torch.Tensor:
        return self.dssm.items(item_index)


class _CB2CFExport(nn.Module):
    def __init__(self, model: CB2CF) -> None:
        super().__init__()
        self.model = model

    def forward(self, *args: torch.Tensor) -> torch.Tensor:
        return self.model(list(args[:-1]), args[-1])


def _onnx_export(module: nn.Module, args: tuple[torch.Tensor, ...], path: Path, inputs: list[str], output: str) -> None:
    module.eval()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # the TorchScript exporter, as encoders.text uses
        torch.onnx.export(
            module,
            args,
            str(path),
            input_names=inputs,
            output_names=[output],
            dynamic_axes={**{n: {0: "batch"} for n in inputs}, output: {0: "batch"}},
            opset_version=OPSET,
            dynamo=False,
        )


def export_dssm(
    dssm: DSSM,
    registry: ModelRegistry,
    version: str,
    user_ids: Sequence[str] | None = None,
    item_ids: Sequence[str] | None = None,
    extra: Mapping[str, Any] | None = None,
    make_current: bool = True,
    group_priors: Mapping[str, Sequence[float]] | None = None,
    hybrid_parts: tuple[sparse.csr_matrix, sparse.csr_matrix] | None = None,
) -> tuple[ModelVersion, ModelVersion]:
    """Publishes the DSSM user and item towers as ``dssm-user`` and ``dssm-item`` (same version).

    Args:
        dssm: Trained model.
        registry: Target model directory.
        version: Version name of both towers.
        user_ids: Raw user ids in index order (written to ``ids.json``).
        item_ids: Raw item ids in index order.
        extra: Extra manifest entries (e.g. metrics, dataset).
        make_current: Point ``CURRENT`` at the new versions.
        group_priors: Group key -> mean unit user vector (:func:`contract_group_priors`), written to
            ``group_priors.json`` beside the user tower: the prior of a brand-new user of that group.
        hybrid_parts: ``(users, items)``: the hybrid space's sparse parts of the warm users and items (already
            times ``sqrt(w)``), written as ``hybrid_parts.npz`` beside each tower for ``thaw cf load``.

    Returns:
        ``(user_version, item_version)``.
    """
    dssm = dssm.eval()
    dim = dssm.config.dim
    n_feat = dssm.user_tower.n_features
    base = {"space": f"dssm@{version}", **(dict(extra) if extra else {})}
    user_args: tuple[torch.Tensor, ...] = (torch.tensor([0, -1], dtype=torch.long),)
    user_inputs = [TensorSpec("user_index", "int64", ["batch"])]
    if n_feat:
        user_args = (*user_args, torch.zeros(2, n_feat, dtype=torch.long))
        user_inputs.append(TensorSpec("user_features", "int64", ["batch", n_feat]))

    def write_user(d: Path) -> None:
        _onnx_export(
            _UserTowerExport(dssm, bool(n_feat)), user_args, d / "model.onnx", [t.name for t in user_inputs],
            "user_vector",
        )
        table = dssm.user_feature_table[:-1].tolist() if n_feat else []  # per-user feature indices (last = unknown)
        (d / "ids.json").write_text(json.dumps({"user_ids": list(user_ids or []),
                                                "features": list(dssm.feature_names),
                                                "user_feature_rows": table}))
        if group_priors:
            (d / "group_priors.json").write_text(json.dumps({k: [round(float(x), 7) for x in v]
                                                             for k, v in group_priors.items()}))
        if hybrid_parts is not None:
            sparse.save_npz(d / HYBRID_PARTS, hybrid_parts[0].tocsr())

    uv = registry.publish(
        DSSM_USER, version, write_user, inputs=user_inputs,
        outputs=[TensorSpec("user_vector", "float32", ["batch", dim])], dim=dim, opset=OPSET,
        extra={**base, "user_features": list(dssm.feature_names), "unknown_user_index": -1},
        make_current=make_current,
    )

    def write_item(d: Path) -> None:
        _onnx_export(_ItemTowerExport(dssm), (torch.tensor([0, 1], dtype=torch.long),), d / "model.onnx",
                     ["item_index"], "item_vector")
        (d / "ids.json").write_text(json.dumps({"item_ids": list(item_ids or [])}))
        if hybrid_parts is not None:
            sparse.save_npz(d / HYBRID_PARTS, hybrid_parts[1].tocsr())

    iv = registry.publish(
        DSSM_ITEM, version, write_item, inputs=[TensorSpec("item_index", "int64", ["batch"])],
        outputs=[TensorSpec("item_vector", "float32", ["batch", dim])], dim=dim, opset=OPSET, extra=base,
        make_current=make_current,
    )
    return uv, iv


def export_cb2cf(
    model: CB2CF,
    registry: ModelRegistry,
    version: str,
    extra: Mapping[str, Any] | None = None,
    make_current: bool = True,
    words: SparseVectorizer | None = None,
    hybrid: SparseVectorizer | None = None,
    hybrid_weight: float = 0.0,
) -> ModelVersion:
    """Publishes CB2CF as ``cb2cf``: inputs one ``B x d_f`` float32 per field + ``present`` ``B x F``.

    Args:
        model: The trained CB2CF.
        registry: Target model directory.
        version: Version name.
        extra: Extra manifest entries.
        make_current: Point ``CURRENT`` at the new version.
        words: The vectorizer of the model's ``words`` field (required when the model has one): ``words.json``.
        hybrid: The sparse half of a served hybrid (``hybrid_words.json``; manifest ``hybrid`` = file, weight,
            width, and ``space_dim`` = CF width + its vocabulary).
        hybrid_weight: The hybrid's weight ``w`` of the sparse score.
    """
    model = model.eval()
    specs = model.specs
    args = tuple(torch.randn(2, s.dim) for s in specs) + (torch.tensor([[1.0] * len(specs), [0.0] * len(specs)]),)
    names = [s.name for s in specs] + ["present"]
    if len(set(names)) != len(names):
        raise ValueError(f"field names must be unique and not 'present': {names}")
    inputs = [TensorSpec(s.name, "float32", ["batch", s.dim]) for s in specs]
    inputs.append(TensorSpec("present", "float32", ["batch", len(specs)]))
    dim = model.config.out_dim
    if any(s.name == WORDS_FIELD for s in specs) and words is None:
        raise ValueError("the model reads the words field: publish it with its vectorizer")
    more: dict[str, Any] = {}
    if words is not None:
        more["words"] = {"file": "words.json", "weighting": words.weighting, "vocabulary": len(words.vocab)}
    if hybrid is not None:
        more["hybrid"] = {"file": "hybrid_words.json", "weight": float(hybrid_weight), "weighting": hybrid.weighting,
                          "dim": len(hybrid.vocab)}
    more["space_dim"] = dim + (len(hybrid.vocab) if hybrid is not None else 0)

    def write(d: Path) -> None:
        _onnx_export(_CB2CFExport(model), args, d / "model.onnx", names, "cf_vector")
        if words is not None:
            words.save(d / "words.json")
        if hybrid is not None:
            hybrid.save(d / "hybrid_words.json")

    return registry.publish(
        CB2CF_NAME, version, write, inputs=inputs, outputs=[TensorSpec("cf_vector", "float32", ["batch", dim])],
        dim=dim, opset=OPSET,
        extra={"fields": [{"name": s.name, "dim": s.dim} for s in specs], "objective": model.config.objective,
               **more, **(dict(extra) if extra else {})},
        make_current=make_current,
    )


LIGHTGCN_USER = "lightgcn-user"


def user_profiles(train: Any, item_rows: sparse.csr_matrix) -> sparse.csr_matrix:
    """``[n_users, V]``: each user's mean row over their distinct warm training items (zero without any)."""
    pairs = np.unique(np.stack([train.users, train.items], axis=1), axis=0)
    a = sparse.csr_matrix((np.ones(len(pairs), np.float32), (pairs[:, 0], pairs[:, 1])),
                          shape=(train.n_users, item_rows.shape[0]))
    counts = np.maximum(np.asarray(a.sum(axis=1)).ravel(), 1.0).astype(np.float32)
    return sparse.csr_matrix(sparse.diags(1.0 / counts) @ a @ item_rows, dtype=np.float32)


class _MappedTableExport(nn.Module):
    def __init__(self, table: np.ndarray, w: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("table", torch.from_numpy(np.ascontiguousarray(table, dtype=np.float32)))
        self.register_buffer("w", torch.from_numpy(np.ascontiguousarray(w[:-1], dtype=np.float32)))
        self.register_buffer("b", torch.from_numpy(np.ascontiguousarray(w[-1], dtype=np.float32)))

    def forward(self, user_index: torch.Tensor) -> torch.Tensor:
        return self.table[user_index] @ self.w + self.b  # type: ignore[operator,index]


def export_lightgcn_users(
    registry: ModelRegistry,
    version: str,
    user_vectors: np.ndarray,
    linear_map: np.ndarray,
    user_ids: Sequence[str],
    extra: Mapping[str, Any] | None = None,
    make_current: bool = True,
) -> ModelVersion:
    """Publishes warm users' LightGCN vectors mapped into a DSSM space as ``lightgcn-user`` (same version as the
    CF space it serves): ``user_index`` (B int64) -> ``user_vector`` (B x dim), the table and the ridge map
    (:func:`ranking.models.lightgcn.fit_linear_map`) in the graph, ``ids.json`` with the raw user ids. It runs like a
    DSSM user tower (:class:`ranking.online.projector.DSSMTower`), so ``thaw cf load --users-from lightgcn`` starts warm
    users from their LightGCN vectors instead of the DSSM user tower's."""
    module = _MappedTableExport(user_vectors, linear_map).eval()
    dim = int(linear_map.shape[1])

    def write(d: Path) -> None:
        _onnx_export(module, (torch.tensor([0, 1], dtype=torch.long),), d / "model.onnx", ["user_index"],
                     "user_vector")
        (d / "ids.json").write_text(json.dumps({"user_ids": list(user_ids), "features": []}))

    return registry.publish(
        LIGHTGCN_USER, version, write, inputs=[TensorSpec("user_index", "int64", ["batch"])],
        outputs=[TensorSpec("user_vector", "float32", ["batch", dim])], dim=dim, opset=OPSET,
        extra={"space": f"dssm@{version}", "lightgcn_dim": int(user_vectors.shape[1]),
               **(dict(extra) if extra else {})},
        make_current=make_current,
    )


def contract_group_priors(
    user_features: Mapping[str, np.ndarray] | None,
    user_vectors: np.ndarray,
    min_users: int = 5,
    sparse_part: Any = None,
) -> dict[str, list[float]]:
    """Mean unit user vector per group, keyed in the ``user.profile`` contract's vocabulary.

    Keys: ``gender=<f|m>|age=<bucket>``, ``gender=<g>``, ``age=<bucket>`` (the stream's age buckets, from a numeric
    ``age`` column) and ``*`` (every user). Groups with fewer than ``min_users`` users are left out; a new user
    falls back to the next coarser key.

    Args:
        user_features: The dataset's raw user columns (``gender``, ``age`` used when present).
        user_vectors: ``float32[n_users, dim]`` DSSM user vectors.
        min_users: Smallest group kept.
        sparse_part: For a hybrid space, ``[n_users, V]`` (CSR) of the users' sparse parts, appended to each
            group's unit CF prior as the group mean.
    """
    from contracts.ids import age_bucket

    n = len(user_vectors)
    unit = user_vectors / np.maximum(np.linalg.norm(user_vectors, axis=1, keepdims=True), 1e-12)
    uf = user_features or {}
    genders = [str(x).lower() for x in uf["gender"]] if "gender" in uf and len(uf["gender"]) == n else None
    ages = [age_bucket(x) for x in uf["age"]] if "age" in uf and len(uf["age"]) == n else None
    groups: dict[str, list[int]] = {"*": list(range(n))}
    for u in range(n):
        g = genders[u] if genders is not None and genders[u] in ("f", "m") else None
        a = ages[u] if ages is not None and ages[u] != "unknown" else None
        keys = [f"gender={g}"] if g else []
        keys += [f"age={a}"] if a else []
        keys += [f"gender={g}|age={a}"] if g and a else []
        for k in keys:
            groups.setdefault(k, []).append(u)
    out: dict[str, list[float]] = {}
    for k, members in groups.items():
        if len(members) >= min_users:
            m = unit[members].mean(axis=0)
            m = m / max(float(np.linalg.norm(m)), 1e-12)
            if sparse_part is not None:
                m = np.concatenate([m, np.asarray(sparse_part[members].mean(axis=0)).ravel()])
            out[k] = m.astype(np.float32).tolist()
    return out


def publish_cold_item_models(
    artifacts: Any, root: Path, version: str | None = None, report: Mapping[str, Any] | None = None,
    lightgcn: bool = False,
    lightgcn_config: Any | None = None,
    serve_hybrid: bool | None = None,
) -> dict[str, str]:
    """Exports a harness run's DSSM towers and selected CB2CF (see
    :class:`ranking.evaluation.cold_items.ColdEvalArtifacts`).

    With ``serve_hybrid`` (default: when the run selected ``hybrid`` as the model to serve), the CF space is the
    hybrid one (:mod:`streams.cores.space`): the sparse vectorizer and weight go with ``cb2cf``, the warm users' and
    items' sparse parts (``hybrid_parts.npz``, rows times ``sqrt(w)``) beside the DSSM towers.

    Returns:
        ``model name -> version directory``.
    """
    if artifacts.dssm is None or not artifacts.cb2cf or artifacts.selected_objective is None:
        raise ValueError("publishing needs a run that trained the DSSM and CB2CF")
    version = version or datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    if serve_hybrid is None:
        serve_hybrid = artifacts.hybrid is not None and (report or {}).get("selected", {}).get("served") == "hybrid"
    reg = ModelRegistry(Path(root))
    extra: dict[str, Any] = {}
    if report is not None:
        extra = {"dataset": report["dataset"]["name"], "k": report["k"]}
        sel = report["models"].get("cb2cf", {})
        extra["test_ndcg"] = sel.get(f"ndcg@{report['k']}")
    hybrid = artifacts.hybrid if serve_hybrid else None
    if serve_hybrid and hybrid is None:
        raise ValueError("serving the hybrid needs a run that selected one (model 'hybrid')")
    user_part = item_part = None
    if hybrid is not None:
        if artifacts.train is None:
            raise ValueError("the hybrid's user parts need the run's warm training pairs")
        item_part = sparse.csr_matrix(hybrid["rows"], dtype=np.float32) * np.float32(np.sqrt(hybrid["weight"]))
        user_part = user_profiles(artifacts.train, item_part)
        extra["test_ndcg"] = report["models"]["hybrid"].get(f"ndcg@{report['k']}") if report is not None else None
        extra["served_model"] = "hybrid"
    priors = None
    if artifacts.dataset is not None:
        ds = artifacts.dataset
        priors = contract_group_priors(ds.user_features, artifacts.dssm.user_vectors(np.arange(ds.n_users)),
                                       sparse_part=user_part)
    # the hybrid's sparse parts of the warm users and items (already times sqrt(w)), for `thaw cf load`: written
    # inside the publish, so the manifests record them
    parts = (user_part, item_part) if user_part is not None and item_part is not None else None
    uv, iv = export_dssm(artifacts.dssm, reg, version, artifacts.user_ids, artifacts.item_ids, extra,
                         group_priors=priors, hybrid_parts=parts)
    content_source = artifacts.content.source if artifacts.content is not None else {}
    cv = export_cb2cf(artifacts.cb2cf[artifacts.selected_objective], reg, version,
                      {**extra, "space": f"dssm@{version}", "field_sources": content_source},
                      words=artifacts.words, hybrid=hybrid["vectorizer"] if hybrid else None,
                      hybrid_weight=hybrid["weight"] if hybrid else 0.0)
    out = {DSSM_USER: str(uv.path), DSSM_ITEM: str(iv.path), CB2CF_NAME: str(cv.path)}
    if lightgcn:
        if artifacts.train is None:
            raise ValueError("publishing LightGCN users needs the run's warm training pairs")
        from ranking.models.lightgcn import LightGCNConfig, fit_linear_map
        from ranking.training.lightgcn import train_lightgcn

        lg, _ = train_lightgcn(artifacts.train, lightgcn_config or LightGCNConfig())
        everyone = np.arange(artifacts.train.n_users)
        warm = np.unique(artifacts.train.users)
        lv = lg.user_vectors(everyone)
        w = fit_linear_map(lv[warm], artifacts.dssm.user_vectors(warm))
        lu = export_lightgcn_users(reg, version, lv, w, artifacts.user_ids, extra)
        out[LIGHTGCN_USER] = str(lu.path)
    return out
