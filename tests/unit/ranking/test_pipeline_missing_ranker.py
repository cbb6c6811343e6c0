"""An arm whose ranker is not published: refused with the model named, or served in the recall order when configured.

The rankers come from a real (empty, or partly published) model directory read by the real registry; only Redis and
Milvus are replaced by small in-memory stand-ins (the decision does not depend on them).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders.registry import ModelNotFoundError, ModelRegistry, ModelVersion, TensorSpec
from indexing.milvus_items import Hit
from indexing.redis_state import UserState
from infra.settings import ABVariant, ServeSettings, load_settings
from ranking.online.pipeline import RankerNotPublishedError, RankerPool, Recommender

NOW = 1_700_000_000.0


class _Users:
    """The two calls the pipeline makes for a user with a vector and no history (no ranker scoring)."""

    def request_view(self, space: str, user_id: str, n_engaged: int = 200) -> tuple[Any, list[Any], list[Any],
                                                                                       dict[str, Any]]:
        return UserState(np.array([1.0, 0.0], np.float32), 1.0, NOW, n_events=3), [("seen", NOW)], [], {}

    def current_space(self) -> str:
        return "text@t"


class _Index:
    name = "thaw_test"

    def search(self, vectors: np.ndarray, k: int, **_: Any) -> list[list[Hit]]:
        hits = [Hit(f"i{j}", 0.9 - 0.1 * j, "track", "c", int(NOW * 1000) - j * 3_600_000) for j in range(5)]
        return [hits[:k]]


def _recommender(models_dir: Path, mode: str, *variants: ABVariant) -> Recommender:
    serve = ServeSettings(variants=variants or (ABVariant(name="control", ranker="deepfm-mmoe"),), fresh_k=0,
                          new_item_share=0.0, missing_ranker=mode)  # type: ignore[arg-type]
    return Recommender(serve, _Users(), _Index(), "text@t", RankerPool(models_dir),  # type: ignore[arg-type]
                       clock=lambda: NOW)


def _publish_dummy(models_dir: Path, name: str, version: str) -> None:
    ModelRegistry(models_dir).publish(name, version, lambda d: (d / "model.onnx").write_bytes(b"not a graph"),
                                      inputs=[TensorSpec("x", "float32", [1])],
                                      outputs=[TensorSpec("scores", "float32", [1])], dim=1, opset=17)


def test_an_empty_model_directory_names_the_missing_ranker(tmp_path: Path) -> None:
    pool = RankerPool(tmp_path)
    assert pool.get("none") is None
    with pytest.raises(RankerNotPublishedError) as info:
        pool.get("deepfm-mmoe")
    err = info.value
    assert isinstance(err, ModelNotFoundError)  # callers that catch the registry's error still do
    assert (err.model, err.version, err.models_dir, err.reason) == ("deepfm-mmoe", None, tmp_path, "not_published")
    assert err.degraded == "deepfm-mmoe not published"
    assert "thaw train ranker" in str(err) and str(tmp_path) in str(err)


def test_a_pinned_version_that_is_not_there(tmp_path: Path) -> None:
    _publish_dummy(tmp_path, "deepfm-mmoe", "v1")
    with pytest.raises(RankerNotPublishedError) as info:
        RankerPool(tmp_path).get("deepfm-mmoe@v2")
    err = info.value
    assert (err.model, err.version, err.reason) == ("deepfm-mmoe", "v2", "version_not_found")
    assert err.degraded == "deepfm-mmoe@v2 not published"
    assert err.publish_command == f"thaw train ranker --models-dir {tmp_path} --version v2"


def test_a_miss_is_remembered_for_refresh_s_then_the_published_ranker_is_served(tmp_path: Path) -> None:
    def loader(d: Path, name: str, version: str | None) -> Any:  # the real registry; no ONNX session needed here
        mv: ModelVersion = ModelRegistry(d).load(name, version)
        return type("R", (), {"name": name, "version": mv.manifest.version, "tasks": ("play",)})()

    slow = RankerPool(tmp_path, refresh_s=3600, loader=loader)
    fast = RankerPool(tmp_path, refresh_s=0, loader=loader)
    for pool in (slow, fast):
        with pytest.raises(RankerNotPublishedError):
            pool.get("deepfm-mmoe")
    _publish_dummy(tmp_path, "deepfm-mmoe", "v1")
    with pytest.raises(RankerNotPublishedError):
        slow.get("deepfm-mmoe")
    r = fast.get("deepfm-mmoe")
    assert r is not None and r.version == "v1"


def test_error_mode_refuses_the_arm_and_names_what_to_publish(tmp_path: Path) -> None:
    rec = _recommender(tmp_path, "error")
    with pytest.raises(RankerNotPublishedError) as info:
        rec.recommend("u1", 3)
    body = info.value.to_dict()
    assert body["model"] == "deepfm-mmoe" and body["version"] is None and body["variant"] == "control"
    assert body["models_dir"] == str(tmp_path) and body["reason"] == "not_published"
    assert body["publish"].startswith("thaw train ranker")
    assert "'control'" in body["message"]
    with pytest.raises(RankerNotPublishedError):  # readiness reports it as before
        rec.preload()


def test_recall_order_mode_serves_the_recall_order_and_says_so(tmp_path: Path) -> None:
    rec = _recommender(tmp_path, "recall_order", ABVariant(name="gated", ranker="deepfm-mmoe"),
                       ABVariant(name="recall", ranker="none"))
    out = rec.recommend("u1", 3, variant="gated")
    assert out.ranker is None and out.ranked_by == "recall_order"
    assert out.degraded == "deepfm-mmoe not published" and out.fallback_reason == "not_published"
    assert [c.item_id for c in out.items] == ["i0", "i1", "i2"]
    assert [c.score for c in out.items] == [c.recall_score for c in out.items]
    d = out.to_dict()
    assert (d["ranker"], d["ranked_by"], d["degraded"]) == (None, "recall_order", "deepfm-mmoe not published")
    assert rec.preload() == {"gated": "recall_order (deepfm-mmoe not published)", "recall": "none"}
    # the control arm ranker = none is the recall order by choice, not degraded
    ctl = rec.recommend("u1", 3, variant="recall").to_dict()
    assert (ctl["ranker"], ctl["ranked_by"], ctl["degraded"]) == ("none", "recall_order", None)
    assert [it["item_id"] for it in ctl["items"]] == [it["item_id"] for it in d["items"]]


def test_a_fresh_model_directory_serves_the_default_arm_in_the_recall_order(tmp_path: Path) -> None:
    """A fresh ``thaw serve``: default serve settings, no ranker published. The default arm is the recall order
    (the measured better list), so it serves, and it is not a degraded answer; "error" stays the default for arms
    that do name a ranker."""
    serve = ServeSettings(fresh_k=0, new_item_share=0.0)
    assert [(v.name, v.ranker) for v in serve.variants] == [("control", "none")]
    assert serve.missing_ranker == "error"
    rec = Recommender(serve, _Users(), _Index(), "text@t", RankerPool(tmp_path),  # type: ignore[arg-type]
                      clock=lambda: NOW)
    assert rec.preload() == {"control": "none"}
    out = rec.recommend("u1", 3)
    assert (out.variant, out.ranker, out.ranked_by, out.degraded) == ("control", "none", "recall_order", None)
    assert [c.item_id for c in out.items] == ["i0", "i1", "i2"]
    assert [c.score for c in out.items] == [c.recall_score for c in out.items]


def test_missing_ranker_is_set_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    assert ServeSettings().missing_ranker == "error"
    monkeypatch.setenv("THAW_SERVE__MISSING_RANKER", "recall_order")
    assert load_settings().serve.missing_ranker == "recall_order"
    monkeypatch.setenv("THAW_SERVE__MISSING_RANKER", "ignore")
    with pytest.raises(ValueError, match="missing_ranker"):
        load_settings()
