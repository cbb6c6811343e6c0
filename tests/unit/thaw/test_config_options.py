"""The options bound to config dataclasses (``thaw/commands/_config.py``) read each class's fields from its source:
the reading equals the imported class (names, order, defaults) for every bound command's config."""

from __future__ import annotations

import dataclasses
import importlib

import pytest

from thaw.commands._config import ConfigSourceError, source_fields

TARGETS = [
    "ranking.evaluation.cold_items:ColdEvalConfig",
    "ranking.evaluation.new_users:NewUserEvalConfig",
    "ranking.evaluation.ranker_groups:RankGroupsConfig",
    "ranking.workflows.ranker:RankerTrainConfig",
]


@pytest.mark.parametrize("target", TARGETS)
def test_the_source_reading_equals_the_class(target: str) -> None:
    module, _, name = target.partition(":")
    cls = getattr(importlib.import_module(module), name)
    real = dataclasses.fields(cls)
    read = source_fields(target)
    assert [f.name for f in read] == [f.name for f in real]
    for r, f in zip(read, real, strict=True):
        if f.default is not dataclasses.MISSING:
            assert r.default == f.default, f.name
        else:
            assert r.default is dataclasses.MISSING, f.name


def test_every_bound_command_names_a_target_here() -> None:
    import re
    from pathlib import Path

    src = "".join(p.read_text() for p in Path("thaw/commands").glob("*.py") if p.name != "_config.py")
    assert sorted(set(re.findall(r'"([\w.]+:\w+Config)"', src))) == sorted(TARGETS)


def test_a_class_that_is_not_a_plain_dataclass_is_refused() -> None:
    with pytest.raises(ConfigSourceError):
        source_fields("ranking.evaluation.cold_items:NoSuchConfig")
