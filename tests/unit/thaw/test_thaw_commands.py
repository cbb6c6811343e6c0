"""The ``thaw`` command tree: every command is a typed typer command, and its options build the library's configs."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import typer
from typer.testing import CliRunner

from tests.thaw_cli import thaw
from thaw.cli import app


def _leaf_commands(cmd: Any, path: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    if hasattr(cmd, "commands"):  # a group (typer ships its own click)
        return [p for name, sub in cmd.commands.items() for p in _leaf_commands(sub, (*path, name))]
    return [path]


LEAVES = _leaf_commands(typer.main.get_command(app))


def test_the_command_tree() -> None:
    assert {p[0] for p in LEAVES} >= {"stack", "models", "cf", "train", "evaluate", "data", "corpus", "sim", "serve",
                                      "worker", "replay", "demo"}
    assert {p for p in LEAVES if p[0] in ("train", "evaluate", "corpus", "stack")} == {
        ("train", "audio-mae"), ("train", "musicclip"), ("train", "flava"), ("train", "ranker"),
        ("evaluate", "cold-items"), ("evaluate", "new-users"), ("evaluate", "ranker-groups"),
        ("corpus", "music", "build"), ("corpus", "music", "stats"), ("corpus", "imagetext", "build"),
        ("corpus", "imagetext", "stats"), ("stack", "up"), ("stack", "down"), ("stack", "status"), ("stack", "fetch"),
    }


@pytest.mark.parametrize("path", LEAVES, ids=" ".join)
def test_every_command_has_its_own_help(path: tuple[str, ...]) -> None:
    res = CliRunner().invoke(app, [*path, "--help"], prog_name="thaw", env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert f"Usage: thaw {' '.join(path)}" in res.output


def test_help_and_the_engine_commands_do_not_load_the_training_stack() -> None:
    code = ("import sys; from typer.main import get_command; from thaw.cli import app; get_command(app); "
            "heavy = ('torch', 'ranking.training', 'encoders.training', 'workloads.music'); "
            "bad = [m for m in heavy if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


class _Stop(Exception):
    """Ends a command once it has built its config."""


def _capture(monkeypatch: pytest.MonkeyPatch, target: str) -> list[Any]:
    seen: list[Any] = []

    def fake(*args: Any, **kwargs: Any) -> None:
        seen.append((args, kwargs))
        raise _Stop

    monkeypatch.setattr(target, fake)
    return seen


@pytest.mark.parametrize(("command", "target", "config"), [
    ("audio-mae", "encoders.training.audio_mae.train", "encoders.training.audio_mae.AudioMAETrainConfig"),
    ("musicclip", "encoders.training.musicclip.train", "encoders.training.musicclip.MusicCLIPTrainConfig"),
    ("flava", "encoders.training.flava.train", "encoders.training.flava.FlavaTrainConfig"),
])
def test_encoder_trainer_defaults_are_the_config_defaults(monkeypatch, tmp_path, command, target, config) -> None:
    import importlib

    module, name = config.rsplit(".", 1)
    cls = getattr(importlib.import_module(module), name)
    seen = _capture(monkeypatch, target)
    loaded: list[Any] = []  # the command loads the corpus (from --corpus-dir) and hands it to the trainer
    for loader in ("workloads.music.load_music_corpus", "workloads.imagetext.load_imagetext_corpus"):
        monkeypatch.setattr(loader, lambda d=None, **kw: loaded.append((d, kw)) or f"corpus@{d}")
    with pytest.raises(_Stop):
        thaw("train", command, "--models-dir", str(tmp_path), "--corpus-dir", str(tmp_path / "corpus"))
    (cfg, corpus), _ = seen[0]
    assert cfg == cls(models_dir=str(tmp_path))
    assert corpus == f"corpus@{tmp_path / 'corpus'}" and len(loaded) == 1


def test_ranker_trainer_defaults_and_options(monkeypatch, tmp_path) -> None:
    from ranking.workflows.ranker import RankerTrainConfig

    seen = _capture(monkeypatch, "ranking.workflows.ranker.train_ranker")
    with pytest.raises(_Stop):
        thaw("train", "ranker", "--models-dir", str(tmp_path))
    with pytest.raises(_Stop):
        thaw("train", "ranker", "--models-dir", str(tmp_path), "--dataset", "ml-100k", "--epochs", "3", "--verbose")
    assert seen[0][0] == (RankerTrainConfig(models_dir=tmp_path),)
    assert seen[1][0] == (RankerTrainConfig(models_dir=tmp_path, dataset="ml-100k", epochs=3, verbose=True),)


def test_ranker_groups_defaults_and_repeated_seeds(monkeypatch, tmp_path) -> None:
    from ranking.evaluation.ranker_groups import RankGroupsConfig

    seen = _capture(monkeypatch, "ranking.evaluation.ranker_groups.evaluate_ranker_groups")
    with pytest.raises(_Stop):
        thaw("evaluate", "ranker-groups")
    with pytest.raises(_Stop):
        thaw("evaluate", "ranker-groups", "--seeds", "1", "--seeds", "2", "--export", str(tmp_path))
    assert seen[0][0] == (RankGroupsConfig(),)
    assert seen[1][0] == (RankGroupsConfig(seeds=(1, 2), export_dir=tmp_path),)


def test_evaluation_defaults_are_the_config_defaults(monkeypatch, tmp_path) -> None:
    from ranking.evaluation.cold_items import MODELS, ColdEvalConfig
    from ranking.evaluation.new_users import NewUserEvalConfig

    cold = _capture(monkeypatch, "ranking.evaluation.cold_items.evaluate_cold_items")
    with pytest.raises(_Stop):
        thaw("evaluate", "cold-items", "--dataset", "ml-100k", "--models-dir", str(tmp_path))
    args, kwargs = cold[0]
    assert args == (None, None, None, None) and kwargs["dataset"] == "ml-100k"
    assert (kwargs["k"], kwargs["seed"], kwargs["models"]) == (20, 0, list(MODELS))
    assert kwargs["config"] == ColdEvalConfig(models_dir=tmp_path) and kwargs["artifacts"] is None

    users = _capture(monkeypatch, "ranking.evaluation.new_users.evaluate_new_users")
    with pytest.raises(_Stop):
        thaw("evaluate", "new-users", "--interactions", "x.csv", "--item-content", "a.tags",
             "--item-content", "b.jsonl", "--models-dir", str(tmp_path))
    args, kwargs = users[0]
    assert args == (Path("x.csv"), [Path("a.tags"), Path("b.jsonl")])
    assert (kwargs["reveal"], kwargs["k"], kwargs["seed"]) == ([0, 1, 3, 5], 20, 0)
    assert kwargs["config"] == NewUserEvalConfig(models_dir=tmp_path)


@pytest.mark.parametrize("task", ["cold-items", "new-users"])
def test_an_evaluation_without_data_is_a_usage_error(task) -> None:
    with pytest.raises(SystemExit) as exc:
        thaw("evaluate", task)
    assert exc.value.code == 2


def test_stack_fetch_prints_the_jar_dir(monkeypatch, tmp_path, capsys) -> None:
    import infra.stack

    monkeypatch.setattr(infra.stack, "fetch_kafka", lambda settings: tmp_path / "libs")
    assert thaw("stack", "fetch") == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "libs")
