"""The versioned model directory: every served model, exported to ONNX, with a manifest.

Layout::

    <models.dir>/<name>/<version>/model.onnx        the graph
    <models.dir>/<name>/<version>/manifest.json     name, version, inputs, outputs, dims, opset, sha256, files, extra
    <models.dir>/<name>/<version>/...               side files (tokenizer.json, schema.json, ids.json, ...)
    <models.dir>/<name>/CURRENT                     the version the worker serves

**Publishing** (:meth:`ModelRegistry.publish`) writes a version completely under a hidden temporary name, records
the sha256 of every file it holds in the manifest (``files``: relative path -> sha256; ``sha256`` is still the
graph's, for older readers), fsyncs the files and the directory, and renames it into place; ``CURRENT`` is
replaced the same way. A reader never sees half a version, and a crash leaves at most a hidden temporary directory
that :meth:`ModelRegistry.versions` does not list.

**Loading** (:meth:`ModelRegistry.load`) reads each recorded file once, checks its sha256 on the bytes it read and
refuses the whole version (:class:`ModelIntegrityError`, with a ``reason``) on a hash mismatch, a missing file or
a manifest that does not parse. With ``keep_bytes=True`` the version keeps those verified bytes and
:meth:`ModelVersion.read_bytes` hands them out, so a model is built from exactly the bytes that were checked, not
from a second open of the path (which a writer could have changed in between). Without kept bytes,
``read_bytes`` reads the file and checks it again before returning it; :attr:`ModelVersion.path` is still there
for readers that open files themselves, without that guarantee.

**Old manifests** (written before ``files`` existed) record only the graph's sha256: the graph is checked, side
files are read unchecked, and one warning per version and process says so (``republish the version to record its
side files``). A manifest with ``files`` never serves a file it does not name.

:class:`ModelWatcher` lets a worker notice a new ``CURRENT`` and swap models without a restart.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import Any

log = logging.getLogger("thaw.models")

MANIFEST = "manifest.json"
GRAPH = "model.onnx"
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ModelNotFoundError(FileNotFoundError):
    """No published version of a model exists (run the export/train command first)."""


class ModelIntegrityError(ValueError):
    """A published version failed verification; nothing of it may be served.

    Attributes:
        reason: ``hash_mismatch`` (a file's bytes differ from the manifest's sha256), ``missing_file`` (the
            manifest names a file that is not there), ``unrecorded_file`` (a reader asked for a file the manifest
            does not name) or ``corrupt_manifest`` (the manifest does not parse or is inconsistent).
        file: The file concerned (relative to the version directory), when there is one.
    """

    def __init__(self, message: str, reason: str, file: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.file = file


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
    files: dict[str, str] | None = None
    """Relative path -> sha256 of every file of the version (``None``: an old manifest, the graph's hash only)."""

    def to_json(self) -> str:
        d: dict[str, Any] = {
            "name": self.name,
            "version": self.version,
            "inputs": [vars(t) for t in self.inputs],
            "outputs": [vars(t) for t in self.outputs],
            "dim": self.dim,
            "opset": self.opset,
            "sha256": self.sha256,
            "created_at": self.created_at,
            "extra": self.extra,
        }
        if self.files is not None:
            d["files"] = dict(sorted(self.files.items()))
        return json.dumps(d, indent=2)

    @classmethod
    def from_json(cls, text: str) -> Manifest:
        d = json.loads(text)
        files = d.get("files")
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
            files=None if files is None else dict(files),
        )

    def recorded(self) -> dict[str, str]:
        """The files whose hashes the manifest records (an old manifest: the graph only)."""
        return dict(self.files) if self.files is not None else {GRAPH: self.sha256}

    def expected_sha256(self, file: str) -> str | None:
        """The recorded sha256 of ``file``; None when an old manifest does not record it.

        Raises:
            ModelIntegrityError: A manifest with ``files`` does not name ``file`` (``unrecorded_file``).
        """
        rec = self.recorded()
        if file in rec:
            return rec[file]
        if self.files is not None:
            raise ModelIntegrityError(f"model {self.name}/{self.version}: {file} is not recorded in the manifest",
                                      "unrecorded_file", file)
        return None


def parse_manifest(data: bytes) -> Manifest:
    """The manifest in ``data``, checked: it parses, every recorded name is a plain relative path inside the
    version, every hash is a sha256 hex digest, and ``sha256`` agrees with ``files["model.onnx"]``.

    Raises:
        ModelIntegrityError: ``corrupt_manifest``.
    """
    try:
        m = Manifest.from_json(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ModelIntegrityError(f"the manifest does not parse ({type(exc).__name__})", "corrupt_manifest") from exc
    for name, digest in m.recorded().items():
        if not isinstance(name, str) or not _safe_relative(name) or name == MANIFEST:
            raise ModelIntegrityError(f"model {m.name}/{m.version}: the manifest names a file outside the version "
                                      f"({name!r})", "corrupt_manifest")
        if not isinstance(digest, str) or not _SHA256.match(digest):
            raise ModelIntegrityError(f"model {m.name}/{m.version}: the manifest's hash of {name} is not a sha256",
                                      "corrupt_manifest", name)
    if m.files is not None and m.files.get(GRAPH) != m.sha256:
        raise ModelIntegrityError(f"model {m.name}/{m.version}: sha256 and files[{GRAPH!r}] disagree",
                                  "corrupt_manifest", GRAPH)
    return m


def _safe_relative(name: str) -> bool:
    """A plain relative path inside the version: no empty, ``.`` or ``..`` part, not absolute, no backslash."""
    return (bool(name) and "\\" not in name and not PurePosixPath(name).is_absolute()
            and all(part not in ("", ".", "..") for part in name.split("/")))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


_legacy_warned: set[str] = set()
_legacy_lock = threading.Lock()


def _warn_legacy(path: Path, m: Manifest) -> None:
    key = str(path)
    with _legacy_lock:
        if key in _legacy_warned:
            return
        _legacy_warned.add(key)
    log.warning("model %s/%s: its manifest records no per-file hashes (published before they existed): %s is "
                "checked, its side files are not; republish the version to record them", m.name, m.version, GRAPH)


def _read_checked(path: Path, m: Manifest, file: str, expected: str | None) -> bytes:
    try:
        data = (path / file).read_bytes()
    except FileNotFoundError as exc:
        raise ModelIntegrityError(f"model {m.name}/{m.version}: {file} is missing", "missing_file", file) from exc
    except IsADirectoryError as exc:
        raise ModelIntegrityError(f"model {m.name}/{m.version}: {file} is not a file", "missing_file", file) from exc
    if expected is not None and hashlib.sha256(data).hexdigest() != expected:
        raise ModelIntegrityError(f"model {m.name}/{m.version}: {file} does not match the manifest's sha256",
                                  "hash_mismatch", file)
    return data


@dataclass(frozen=True)
class ModelVersion:
    """One published version: its directory, its manifest and, when loaded with ``keep_bytes``, the verified bytes
    of its files.

    Attributes:
        path: The version directory.
        manifest: Its manifest.
        manifest_digest: sha256 of the manifest's bytes as loaded ("" when built by :meth:`ModelRegistry.publish`
            before any load); what tells two publishes of the same version name apart.
    """

    path: Path
    manifest: Manifest
    manifest_digest: str = ""
    _blobs: dict[str, bytes] = field(default_factory=dict, repr=False, compare=False)

    @property
    def onnx_path(self) -> Path:
        return self.path / GRAPH

    @property
    def spec(self) -> str:
        return f"{self.manifest.name}@{self.manifest.version}"

    def read_bytes(self, file: str) -> bytes:
        """The verified bytes of ``file`` (relative to the version): the ones checked at load when they were kept,
        else read now and checked against the manifest before they are returned.

        Raises:
            ModelIntegrityError: A hash mismatch, a missing file, or a file the manifest does not name.
        """
        data = self._blobs.get(file)
        if data is not None:
            return data
        expected = self.manifest.expected_sha256(file)
        if expected is None:
            _warn_legacy(self.path, self.manifest)
        return _read_checked(self.path, self.manifest, file, expected)

    def read_text(self, file: str) -> str:
        """:meth:`read_bytes` decoded as UTF-8."""
        return self.read_bytes(file).decode("utf-8")

    def read_json(self, file: str) -> Any:
        """:meth:`read_bytes` parsed as JSON."""
        return json.loads(self.read_bytes(file))

    def release(self) -> None:
        """Drop the kept bytes (once the model is built from them); later reads read and check the files again."""
        self._blobs.clear()

    @property
    def kept(self) -> tuple[str, ...]:
        """The files whose verified bytes this version holds."""
        return tuple(sorted(self._blobs))


def _walk_files(root: Path) -> Iterator[str]:
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for f in sorted(filenames):
            yield (Path(dirpath) / f).relative_to(root).as_posix()


def _fsync_path(path: Path, directory: bool = False) -> None:
    fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _, filenames in os.walk(root):
        for f in filenames:
            _fsync_path(Path(dirpath) / f)
        _fsync_path(Path(dirpath), directory=True)


class ModelRegistry:
    """Reads and writes the versioned model directory rooted at ``root``."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser()

    def versions(self, name: str) -> list[str]:
        """Published versions (a hidden directory is a publish in progress or one a crash left: not listed)."""
        d = self.root / name
        if not d.is_dir():
            return []
        return sorted(p.name for p in d.iterdir()
                      if not p.name.startswith(".") and p.is_dir() and (p / MANIFEST).is_file())

    def current_version(self, name: str) -> str | None:
        f = self.root / name / "CURRENT"
        if not f.is_file():
            return None
        v = f.read_text().strip()
        return v or None

    def manifest_digest(self, name: str, version: str) -> str | None:
        """sha256 of the version's manifest bytes (None: no manifest): cheap, and it changes with any republish."""
        try:
            return hashlib.sha256((self.root / name / version / MANIFEST).read_bytes()).hexdigest()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def load(self, name: str, version: str | None = None, verify: bool = True,
             keep_bytes: bool = False) -> ModelVersion:
        """The given (default: current) version, every recorded file checked against the manifest.

        Args:
            name: Model name.
            version: Version (default: the one ``CURRENT`` names).
            verify: Read and check every recorded file now (False: the manifest only; :meth:`ModelVersion.
                read_bytes` still checks what it returns).
            keep_bytes: Keep the verified bytes in the returned version, for building the model from them
                (:meth:`ModelVersion.release` drops them).

        Raises:
            ModelNotFoundError: No such version (or no ``CURRENT``).
            ModelIntegrityError: The version failed verification (see its ``reason``).
        """
        version = version or self.current_version(name)
        if version is None:
            raise ModelNotFoundError(f"model {name!r} has no published version under {self.root}")
        path = self.root / name / version
        try:
            raw = (path / MANIFEST).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError) as exc:
            raise ModelNotFoundError(f"model {name!r} version {version!r} not found under {self.root}") from exc
        try:
            manifest = parse_manifest(raw)
        except ModelIntegrityError as exc:
            raise ModelIntegrityError(f"model {name}/{version}: {exc}", exc.reason, exc.file) from exc
        mv = ModelVersion(path=path, manifest=manifest, manifest_digest=hashlib.sha256(raw).hexdigest())
        if manifest.files is None:
            _warn_legacy(path, manifest)
        if verify:
            for file, digest in manifest.recorded().items():
                data = _read_checked(path, manifest, file, digest)
                if keep_bytes:
                    mv._blobs[file] = data
        return mv

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
        """Write a new version atomically: ``write(tmpdir)`` must create ``model.onnx`` and every side file; the
        manifest records the sha256 of each file it wrote (files added to the directory later are never served).
        """
        if not _safe_relative(version) or "/" in version or version.startswith("."):
            raise ValueError(f"version {version!r} is not a plain directory name")
        base = self.root / name
        base.mkdir(parents=True, exist_ok=True)
        final = base / version
        if final.exists():
            raise FileExistsError(f"model {name} version {version} already exists at {final}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{version}.", dir=base))
        try:
            write(tmp)
            if not (tmp / GRAPH).is_file():
                raise FileNotFoundError("the writer did not create model.onnx")
            if (tmp / MANIFEST).exists():
                raise FileExistsError("the writer must not create manifest.json (the registry writes it)")
            files = {f: sha256_file(tmp / f) for f in _walk_files(tmp)}
            manifest = Manifest(
                name=name,
                version=version,
                inputs=inputs,
                outputs=outputs,
                dim=dim,
                opset=opset,
                sha256=files[GRAPH],
                created_at=datetime.now(UTC).isoformat(),
                extra=extra or {},
                files=files,
            )
            raw = manifest.to_json().encode("utf-8")
            (tmp / MANIFEST).write_bytes(raw)
            _fsync_tree(tmp)
            os.replace(tmp, final)
            _fsync_path(base, directory=True)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        if make_current:
            self.set_current(name, version)
        return ModelVersion(path=final, manifest=manifest, manifest_digest=hashlib.sha256(raw).hexdigest())

    def set_current(self, name: str, version: str) -> None:
        if not (self.root / name / version / MANIFEST).is_file():
            raise ModelNotFoundError(f"model {name!r} version {version!r} not found")
        base = self.root / name
        fd, tmp_name = tempfile.mkstemp(prefix=".CURRENT.", dir=base)
        try:
            with os.fdopen(fd, "w") as f:
                f.write(version + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, base / "CURRENT")
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        _fsync_path(base, directory=True)


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
