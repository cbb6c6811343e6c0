"""The README's folder table describes the tree as it is, and the project's documents link only to what exists."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# the packages the import contracts cover (pyproject.toml): every one has a row
PACKAGES = tuple(tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"])


def _table() -> dict[str, str]:
    rows = {}
    for line in (ROOT / "README.md").read_text().splitlines():
        m = re.match(r"^\| `([a-z_]+)/` \| (.*) \|$", line)
        if m:
            rows[m.group(1)] = m.group(2)
    return rows


def test_every_package_has_a_row():
    rows = _table()
    assert sorted(rows) == sorted(PACKAGES)


def test_every_path_the_table_names_exists():
    missing = []
    for folder, text in _table().items():
        for sub, names in re.findall(r"`([a-z_]+/)`: ([^)]*)\)", text):
            for name in re.findall(r"`([\w.]+\.(?:py|yml))`", names):
                if not (ROOT / folder / sub / name).exists():
                    missing.append(f"{folder}/{sub}{name}")
        top = re.sub(r"\(`[a-z_]+/`: [^)]*\)", "", text)
        for name in re.findall(r"`([\w.]+\.(?:py|yml))`", top):
            if not (ROOT / folder / name).exists() and not any((ROOT / folder).glob(f"*/{name}")):
                missing.append(f"{folder}/{name}")
    assert missing == []


def test_every_module_is_in_the_table():
    rows = _table()
    unnamed = []
    for folder in ("infra", "streams", "serving", "thaw", "ranking/online", "ranking/evaluation", "streams/cores"):
        text = rows[folder.split("/")[0]]
        for f in sorted((ROOT / folder).glob("*.py")):
            if f.name != "__init__.py" and f"`{f.name}`" not in text:
                unnamed.append(f"{folder}/{f.name}")
    assert unnamed == []


def _documents() -> list[Path]:
    return [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted((ROOT / "docs").glob("*.md"))]


def _anchors(text: str) -> set[str]:
    """GitHub's anchors of a Markdown document's headings."""
    out = set()
    prose = re.sub(r"^```.*?^```", "", text, flags=re.M | re.S)  # a `#` line in a code block is no heading
    for heading in re.findall(r"^#+ (.+)$", prose, re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        out.add(slug)
    return out


def test_every_relative_link_resolves():
    broken = []
    for doc in _documents():
        text = doc.read_text()
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"[a-z]+://", target) or target.startswith("mailto:"):
                continue
            path, _, anchor = target.partition("#")
            dest = (doc.parent / path).resolve() if path else doc
            if not dest.exists():
                broken.append(f"{doc.relative_to(ROOT)}: {target}")
            elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest.read_text()):
                broken.append(f"{doc.relative_to(ROOT)}: {target} (no such heading)")
    assert broken == []
