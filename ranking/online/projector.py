"""Serving the published CF models with ONNX Runtime only (no torch): the CB2CF projector and the DSSM towers.

The worker imports this module; training and export (``ranking.training.export``) need torch, serving does not.
Both build their ONNX session (and the tower its ``ids.json``) from the version's verified bytes
(:meth:`encoders.registry.ModelVersion.read_bytes`), never from a second open of a path that was checked earlier.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from encoders.registry import ModelVersion
from ranking.online.onnx_bytes import VerifiedOnnxModel


class CB2CFProjector:
    """Runs a published ``cb2cf`` in ONNX Runtime: content fields → CF-space vectors.

    Args:
        version: The published model version.
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, version: ModelVersion, threads: int = 2) -> None:
        self.version = version
        self.fields = [(f["name"], int(f["dim"])) for f in version.manifest.extra["fields"]]
        self._model = VerifiedOnnxModel(version, threads=threads, micro_batch=1024)

    @property
    def dim(self) -> int:
        return int(self.version.manifest.dim)

    def project(self, fields: Mapping[str, np.ndarray | None], present: np.ndarray | None = None) -> np.ndarray:
        """CF vectors of a batch of items.

        Args:
            fields: ``name -> float32[B, d_f]``. A field that is absent from the mapping (or ``None``) is missing
                for the whole batch.
            present: Optional ``[B, F]`` presence flags (model field order); default: 1 for every given field.

        Returns:
            ``float32[B, dim]`` unit vectors.
        """
        given = [v for v in fields.values() if v is not None]
        if not given:
            raise ValueError("no content field given")
        b = int(np.asarray(given[0]).shape[0])
        feeds: dict[str, np.ndarray] = {}
        flags = np.zeros((b, len(self.fields)), dtype=np.float32)
        for k, (name, d) in enumerate(self.fields):
            v = fields.get(name)
            if v is None:
                feeds[name] = np.zeros((b, d), dtype=np.float32)
            else:
                arr = np.asarray(v, dtype=np.float32)
                if arr.shape != (b, d):
                    raise ValueError(f"field {name!r}: expected shape {(b, d)}, got {arr.shape}")
                feeds[name] = arr
                flags[:, k] = 1.0
        if present is not None:
            flags = np.asarray(present, dtype=np.float32).reshape(b, len(self.fields)) * flags
        feeds["present"] = flags
        (out,) = self._model.run(feeds, ["cf_vector"])
        return out


class DSSMTower:
    """A published DSSM tower (``dssm-user`` or ``dssm-item``) in ONNX Runtime: vectors of the ids it was trained on.

    Args:
        version: The published tower (``ids.json`` beside the graph lists the raw ids in index order).
        threads: ONNX Runtime intra-op threads.
    """

    def __init__(self, version: ModelVersion, threads: int = 2) -> None:
        self.version = version
        ids = version.read_json("ids.json")
        self.kind = "user" if "user_ids" in ids else "item"
        self.ids: list[str] = list(ids.get("user_ids") or ids.get("item_ids") or [])
        self.index = {x: i for i, x in enumerate(self.ids)}
        self.n_features = len(ids.get("features") or [])
        self._feature_rows = np.asarray(ids.get("user_feature_rows") or np.zeros((0, self.n_features)), dtype=np.int64)
        self._model = VerifiedOnnxModel(version, threads=threads, micro_batch=4096)

    @property
    def dim(self) -> int:
        return int(self.version.manifest.dim)

    def vectors(self, ids: list[str] | None = None) -> tuple[list[str], np.ndarray]:
        """``(known ids, float32[n, dim])`` for ``ids`` (default: all); ids the tower never saw are left out.

        A user tower with categorical user features is fed each user's own feature row (``ids.json``), so these are
        the vectors the DSSM scored with offline.
        """
        known = [x for x in (self.ids if ids is None else ids) if x in self.index]
        if not known:
            return known, np.zeros((0, self.dim), dtype=np.float32)
        idx = np.array([self.index[x] for x in known], dtype=np.int64)
        feeds: dict[str, np.ndarray] = {"user_index" if self.kind == "user" else "item_index": idx}
        if self.kind == "user" and self.n_features:
            if len(self._feature_rows) != len(self.ids):
                raise ValueError(f"{self.version.path}: ids.json lacks the users' feature rows")
            feeds["user_features"] = self._feature_rows[idx]
        (out,) = self._model.run(feeds)
        return known, out
