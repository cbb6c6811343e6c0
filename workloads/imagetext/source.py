"""The OpenMoji source: fetching the npm package and reading its metadata.

The npm package ``openmoji`` ships one colour SVG per emoji in ``color/svg/<HEXCODE>.svg`` (line-art-only
versions are in ``black/svg``; they are not used here) and the metadata of all of them in
``data/openmoji.json``. Graphics are licensed CC BY-SA 4.0 (``LICENSE.txt`` in the package).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

ENV_CORPUS_DIR = "THAW_CORPUS_DIR"
OPENMOJI_VERSION = "17.0.0"
OPENMOJI_LICENSE = "CC BY-SA 4.0 (graphics); https://openmoji.org/"
_MARKER = ".thaw-complete"
_NPM_TIMEOUT_S = 600.0
# package.json + package-lock.json pinning OPENMOJI_VERSION with its sha512 integrity: `npm ci` installs exactly that
_NPM_LOCK_DIR = Path(__file__).with_name("npm")


def default_corpus_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolves the writable cache directory for corpora.

    Args:
        cache_dir: Explicit directory. Wins over everything else when given.

    Returns:
        ``cache_dir`` if given, else ``$THAW_CORPUS_DIR`` if set, else ``~/.cache/thaw/corpora``. The directory is
        not created here.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_CORPUS_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "thaw" / "corpora"


@contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    """Holds an exclusive ``flock`` on ``path`` (created if missing) for the duration of the block."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _package_ok(pkg: Path, version: str) -> bool:
    """True when ``pkg`` is a complete install of openmoji ``version`` (marker written after verification)."""
    marker = pkg / _MARKER
    return marker.is_file() and marker.read_text().strip() == version


def fetch_openmoji(cache_dir: str | os.PathLike[str] | None = None, version: str = OPENMOJI_VERSION) -> Path:
    """Installs the ``openmoji`` npm package into the cache once and returns its root.

    For :data:`OPENMOJI_VERSION`, runs ``npm ci --ignore-scripts`` in ``<cache>/npm`` over the lock file shipped in
    ``workloads/imagetext/npm/`` (the tarball's sha512 is checked against the lock; no install script of any
    package runs); another version is ``npm install --ignore-scripts openmoji@<version>`` (no lock). About 3 s,
    67 MB on disk, unless a verified install of that version is already there. A file lock makes concurrent callers
    wait for one install instead of racing.

    Args:
        cache_dir: Corpus cache directory (see :func:`default_corpus_dir`).
        version: Exact openmoji version.

    Returns:
        ``<cache>/npm/node_modules/openmoji``, holding ``data/openmoji.json`` and ``color/svg/*.svg``.

    Raises:
        RuntimeError: ``npm`` is missing, the install fails, or the package does not have the expected layout.
    """
    root = default_corpus_dir(cache_dir)
    prefix = root / "npm"
    pkg = prefix / "node_modules" / "openmoji"
    if _package_ok(pkg, version):
        return pkg
    with _file_lock(root / "npm.lock"):
        if _package_ok(pkg, version):
            return pkg
        npm = shutil.which("npm")
        if npm is None:
            raise RuntimeError("npm not found on PATH: install Node.js/npm (Debian: apt-get install -y npm)")
        prefix.mkdir(parents=True, exist_ok=True)
        quiet = ["--ignore-scripts", "--no-audit", "--no-fund"]
        if version == OPENMOJI_VERSION:
            for name in ("package.json", "package-lock.json"):
                shutil.copyfile(_NPM_LOCK_DIR / name, prefix / name)
            cmd = [npm, "ci", "--prefix", str(prefix), *quiet]
        else:
            cmd = [npm, "install", "--prefix", str(prefix), f"openmoji@{version}", *quiet]
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=_NPM_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            raise RuntimeError(f"npm install openmoji@{version} timed out after {_NPM_TIMEOUT_S:.0f} s") from exc
        if proc.returncode != 0:
            raise RuntimeError(f"npm install openmoji@{version} failed ({proc.returncode}): {proc.stderr[-2000:]}")
        _verify_package(pkg, version)
        (pkg / _MARKER).write_text(version + "\n")
    return pkg


def _verify_package(pkg: Path, version: str) -> None:
    """Checks the installed version and that every metadata entry has a colour SVG."""
    meta = pkg / "package.json"
    if not meta.is_file():
        raise RuntimeError(f"npm install left no {meta}")
    got = json.loads(meta.read_text()).get("version")
    if got != version:
        raise RuntimeError(f"{pkg} holds openmoji {got}, expected {version}")
    entries = json.loads((pkg / "data" / "openmoji.json").read_text())
    svgs = {p.name for p in (pkg / "color" / "svg").iterdir()}
    missing = [e["hexcode"] for e in entries if f"{e['hexcode']}.svg" not in svgs]
    if missing:
        raise RuntimeError(f"{len(missing)} entries of openmoji.json have no color/svg file, e.g. {missing[:5]}")


def _split_tags(text: str) -> list[str]:
    """Splits a comma-separated tag string, dropping blanks."""
    return [t.strip() for t in text.split(",") if t.strip()]


@dataclass(frozen=True)
class OpenMojiEntry:
    """One emoji of ``data/openmoji.json``.

    Attributes:
        id: The hexcode, e.g. ``"1F600"`` or ``"1F44B-1F3FB"``; also the SVG file stem.
        emoji: The emoji character sequence (private-use code points for OpenMoji extras).
        annotation: Unicode CLDR short name, or OpenMoji's name for extras, e.g. ``"grinning face"``.
        tags: Unicode CLDR keywords (empty for skin-tone variants and OpenMoji extras).
        openmoji_tags: OpenMoji's own keywords (also empty for skin-tone variants).
        group: Emoji group, e.g. ``"smileys-emotion"``; OpenMoji extras use ``"extras-openmoji"`` and
            ``"extras-unicode"``.
        subgroup: Emoji subgroup, e.g. ``"face-smiling"`` (``subgroups`` in the source).
        skintone: ``""`` for base emojis, else the tone(s) ``"1"``..``"5"`` or ``"1,2"`` for two people.
        skintone_combination: ``""``, ``"single"`` or ``"multiple"``.
        base_id: Hexcode of the base emoji for skin-tone variants, else ``id``.
        order: Position in the OpenMoji ordering.
        svg: Path of the colour SVG.
    """

    id: str
    emoji: str
    annotation: str
    tags: tuple[str, ...]
    openmoji_tags: tuple[str, ...]
    group: str
    subgroup: str
    skintone: str
    skintone_combination: str
    base_id: str
    order: int
    svg: Path

    @property
    def is_skintone(self) -> bool:
        """True for skin-tone variants of another emoji."""
        return bool(self.skintone)


def load_openmoji_entries(package_dir: str | os.PathLike[str]) -> list[OpenMojiEntry]:
    """Reads ``data/openmoji.json`` of an installed package.

    Args:
        package_dir: Package root as returned by :func:`fetch_openmoji`.

    Returns:
        All entries in the source order (4,495 for 17.0.0).
    """
    pkg = Path(package_dir)
    raw = json.loads((pkg / "data" / "openmoji.json").read_text(encoding="utf-8"))
    out: list[OpenMojiEntry] = []
    for e in raw:
        hexcode = str(e["hexcode"])
        skintone = str(e.get("skintone") or "")
        out.append(
            OpenMojiEntry(
                id=hexcode,
                emoji=str(e.get("emoji") or ""),
                annotation=str(e.get("annotation") or "").strip(),
                tags=tuple(_split_tags(str(e.get("tags") or ""))),
                openmoji_tags=tuple(_split_tags(str(e.get("openmoji_tags") or ""))),
                group=str(e.get("group") or ""),
                subgroup=str(e.get("subgroups") or ""),
                skintone=skintone,
                skintone_combination=str(e.get("skintone_combination") or ""),
                base_id=str(e.get("skintone_base_hexcode") or "") if skintone else hexcode,
                order=int(e.get("order") or 0),
                svg=pkg / "color" / "svg" / f"{hexcode}.svg",
            )
        )
    return out
