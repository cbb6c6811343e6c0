"""The versioned model directory: every served model, exported to ONNX, with a manifest.

Layout::

    <models.dir>/<name>/<version>/model.onnx        the graph
    <models.dir>/<name>/<version>/manifest.json     name, version, inputs, outputs, dims, opset, sha256, extra
    <models.dir>/<name>/<version>/...               side files (tokenizer.json, ...)
    <models.dir>/<name>/CURRENT                     the version the worker serves

A version directory is written completely under a temporary name and renamed into place, and ``CURRENT`` is
replaced atomically, so a running worker never sees half a model. :class:`ModelWatcher` lets a worker notice a new
``CURRENT`` and swap models without a restart.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any


class ModelNotFoundError(FileNotFoundError):
    """No published version of a model exists (run the export/train command first)."""


@dataclass(frozen=True)
class TensorSpec:
    name: str
    dtype: str
    shape: list[int | str]


@dataclass(frozen=True)
class Manifest:
    name: str
    version: str
    inputs: list[TensorSpec]
    outputs: list[TensorSpec]
    dim: int
    opset: int
    sha256: str
    created_at: str
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "name": self.name,
                "version": self.version,
                "inputs": [vars(t) for t in self.inputs],
                "outputs": [vars(t) for t in self.outputs],
                "dim": self.dim,
                "opset": self.opset,
                "sha256": self.sha256,
                "created_at": self.created_at,
                "extra": self.extra,
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        return cls(
            name=d["name"],
            version=d["version"],
            inputs=[TensorSpec(**t) for t in d["inputs"]],
            outputs=[TensorSpec(**t) for t in d["outputs"]],
            dim=int(d["dim"]),
            opset=int(d["opset"]),
            sha256=d["sha256"],
            created_at=d["created_at"],
            extra=d.get("extra", {}),
        )


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass(frozen=True)
class ModelVersion:
    path: Path
    manifest: Manifest

    @property
    def onnx_path(self) -> Path:
        return self.path / "model.onnx"


class ModelRegistry:
    """Reads and writes the versioned model directory rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def versions(self, name: str) -> list[str]:
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir() if p.is_dir() and (p / "manifest.json").is_file())

    def current_version(self, name: str) -> str | None:
        f = self.root / name / "CURRENT"
        if not f.is_file():
            return None
        v = f.read_text().strip()
        return v or None

    def load(self, name: str, version: str | None = None, verify: bool = True) -> ModelVersion:
        """The given (default: current) version; checks the ONNX file against the manifest's sha256."""
        version = version or self.current_version(name)
        if version is None:
            raise ModelNotFoundError(f"model {name!r} has no published version under {self.root}")
        path = self.root / name / version
        mf = path / "manifest.json"
        if not mf.is_file():
            raise ModelNotFoundError(f"model {name!r} version {version!r} not found under {self.root}")
        manifest = Manifest.from_json(mf.read_text())
        if verify and sha256_file(path / "model.onnx") != manifest.sha256:
            raise ValueError(f"model {name}/{version}: model.onnx does not match the manifest's sha256")
        return ModelVersion(path=path, manifest=manifest)

    def publish(
        self,
        name: str,
        version: str,
        write: Callable[[Path], None],
        *,
        inputs: list[TensorSpec],
        outputs: list[TensorSpec],
        dim: int,
        opset: int,
        extra: dict[str, Any] | None = None,
        make_current: bool = True,
    ) -> ModelVersion:
        """Write a new version atomically: ``write(tmpdir)`` must create ``model.onnx`` (and any side files)."""
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        final = base / version
        if final.exists():
            raise FileExistsError(f"model {name} version {version} already exists at {final}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=base))
        try:
            write(tmp)
            onnx_file = tmp / "model.onnx"
            if not onnx_file.is_file():
                raise FileNotFoundError("the writer did not create model.onnx")
            manifest = Manifest(
                name=name,
                version=version,
                inputs=inputs,
                outputs=outputs,
                dim=dim,
                opset=opset,
                sha256=sha256_file(onnx_file),
                created_at=datetime.now(UTC).isoformat(),
                extra=extra or {},
            )
            (tmp / "manifest.json").write_text(manifest.to_json())
            os.replace(tmp, final)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if make_current:
            self.set_current(name, version)
        return ModelVersion(path=final, manifest=manifest)

    def set_current(self, name: str, version: str) -> None:
        if not (self.root / name / version / "manifest.json").is_file():
            raise ModelNotFoundError(f"model {name!r} version {version!r} not found")
        cur = self.root / name / "CURRENT"
        tmp = cur.with_suffix(".tmp")
        tmp.write_text(version + "\n")
        os.replace(tmp, cur)


class ModelWatcher:
    """Tells whether a model's ``CURRENT`` moved since the last check (cheap: one small file read)."""

    def __init__(self, registry: ModelRegistry, name: str) -> None:
        self.registry = registry
        self.name = name
        self.seen = registry.current_version(name)

    def changed(self) -> str | None:
        """The new current version if it changed since the last call, else None."""
        v = self.registry.current_version(self.name)
        if v is not None and v != self.seen:
            self.seen = v
            return v
        return None
