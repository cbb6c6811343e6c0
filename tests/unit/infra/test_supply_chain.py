"""The supply chain the setup script installs from: the Python lock covers what pyproject.toml asks for, every
pin carries hashes, every dependency is bounded below its next major version; the npm lock pins the OpenMoji version
the corpus code expects, with its integrity hash; Maven verifies checksums. No network."""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[3]


def _locked() -> dict[str, tuple[Version, int]]:
    """Package -> (pinned version, number of hashes) from requirements.lock."""
    out: dict[str, tuple[Version, int]] = {}
    name = None
    for line in (ROOT / "requirements.lock").read_text().splitlines():
        m = re.match(r"^([A-Za-z0-9_.\-]+)==([^\s\\;]+)", line)
        if m:
            name = canonicalize_name(m.group(1))
            out[name] = (Version(m.group(2)), 0)
        elif name is not None and line.strip().startswith("--hash=sha256:"):
            v, n = out[name]
            out[name] = (v, n + 1)
    return out


def _requirements() -> list[Requirement]:
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = list(proj["dependencies"])
    for extra in ("train", "stack", "dev"):
        reqs += proj["optional-dependencies"][extra]
    return [Requirement(r) for r in reqs]


def test_every_requirement_is_locked_at_a_version_it_allows():
    locked = _locked()
    assert len(locked) > 50
    for req in _requirements():
        name = canonicalize_name(req.name)
        assert name in locked, f"{req.name} is in pyproject.toml but not in requirements.lock: run make lock"
        version, _ = locked[name]
        assert req.specifier.contains(version, prereleases=True), (
            f"requirements.lock pins {req.name}=={version}, pyproject.toml asks {req.specifier}: run make lock")


def test_every_pin_carries_a_sha256():
    missing = [n for n, (_, hashes) in _locked().items() if hashes == 0]
    assert missing == []


def test_every_dependency_has_an_upper_bound():
    proj = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    reqs = [Requirement(r) for r in proj["dependencies"]]
    for extra in ("train", "stack", "dev", "gpu"):
        reqs += [Requirement(r) for r in proj["optional-dependencies"][extra]]
    bounded = ("<", "<=", "==", "~=")
    unbounded = [str(r) for r in reqs
                 if not any(s.operator in bounded for s in r.specifier) and not r.name.startswith("types-")]
    assert unbounded == []


def test_the_npm_lock_pins_the_openmoji_version_with_its_integrity():
    from workloads.imagetext.source import _NPM_LOCK_DIR, OPENMOJI_VERSION

    pkg = json.loads((_NPM_LOCK_DIR / "package.json").read_text())
    lock = json.loads((_NPM_LOCK_DIR / "package-lock.json").read_text())
    assert pkg["dependencies"] == {"openmoji": OPENMOJI_VERSION}
    entry = lock["packages"]["node_modules/openmoji"]
    assert entry["version"] == OPENMOJI_VERSION and entry["integrity"].startswith("sha512-")
    assert set(lock["packages"]) == {"", "node_modules/openmoji"}  # nothing else gets installed


def test_maven_fetch_enforces_checksums():
    src = (ROOT / "infra" / "stack" / "kafka.py").read_text()
    assert '"--strict-checksums"' in src
