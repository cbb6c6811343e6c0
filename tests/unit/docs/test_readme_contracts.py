"""The topic examples in docs/events.md are what producers copy: each must validate against the contract."""

import json
import re
from pathlib import Path

import pytest

from contracts.events import ContentNew, UserEvent, UserProfile, example_events

ROOT = Path(__file__).resolve().parents[3]
EVENTS_DOC = ROOT / "docs" / "events.md"
MODELS = {"content.new": ContentNew, "user.events": UserEvent, "user.profile": UserProfile}


def _examples() -> dict[str, str]:
    text = EVENTS_DOC.read_text()
    out = {}
    for topic in MODELS:
        m = re.search(rf"### `{re.escape(topic)}`.*?```json\n(.*?)```", text, re.S)
        assert m, f"docs/events.md has no JSON example for {topic}"
        out[topic] = m.group(1)
    return out


@pytest.mark.parametrize("topic", sorted(MODELS))
def test_readme_example_validates(topic):
    raw = _examples()[topic]
    ev = MODELS[topic].model_validate_json(raw)
    assert json.loads(raw) == example_events()[topic]
    assert ev.schema_version == 1


def test_readme_points_at_the_examples():
    """The README sends producers to the examples' file."""
    assert "(docs/events.md)" in (ROOT / "README.md").read_text()
