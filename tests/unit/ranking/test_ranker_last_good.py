"""A bad ranker publish does not take ranking down: the last good version keeps serving, the refused version is
remembered (not read again on every request or refresh) and counted, and a new publish is tried.

Real rankers: each version is a real ONNX graph (a constant score per version, so the served version shows in the
scores) and a real featuriser in ``schema.json``, published by the real registry and loaded by the real
:meth:`Ranker.load` through a loader that only counts its calls. Redis and Milvus are small in-memory stand-ins,
as in ``test_pipeline_missing_ranker.py``.
"""

from __future__ import annotations

import base64
import json
import logging
import struct
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from encoders.registry import ModelIntegrityError, ModelRegistry, ModelVersion, TensorSpec
from indexing.milvus_items import Hit
from indexing.redis_state import UserState
from infra.settings import ABVariant, ServeSettings
from ranking.online.features import ItemContext, RankFeaturizer, UserContext
from ranking.online.onnx_bytes import VerifiedOnnxModel
from ranking.online.pipeline import RankerNotPublishedError, RankerPool, Recommender, fallback_versions
from ranking.online.ranker import RANKER_NAME, Ranker
from ranking.online.row_features import SPARSE_FIELDS

NOW = 1_700_000_000.0

# scores = sigmoid(0 * sum(dense) + c): an ONNX graph (opset 17) with one input "dense" [batch, d] and one output
# "scores" [batch, 1], written with onnx.helper (ReduceSum -> Mul by 0 -> Add c -> Sigmoid) and kept here as bytes
# so these tests need no onnx package; c is the 4-byte float after the initializer's name "c".
_GRAPH = base64.b64decode(
    "CAgSADrdAQosCgVkZW5zZQoEYXhlcxIBcyIJUmVkdWNlU3VtKg8KCGtlZXBkaW1zGAGgAQIKEQoBcwoEemVybxIBeiIDTXVsCg4KAXoKAWMS"
    "AWwiA0FkZAoUCgFsEgZzY29yZXMiB1NpZ21vaWQSA3RveSoOEAFCBHplcm9KBAAAAAAqCxABQgFjSgQAAAAAKhQIARAHQgRheGVzSggBAAAA"
    "AAAAAFodCgVkZW5zZRIUChIIARIOCgcSBWJhdGNoCgMSAWRiHQoGc2NvcmVzEhMKEQgBEg0KBxIFYmF0Y2gKAggBQgQKABAR")
_C_AT = _GRAPH.index(b"B\x01cJ\x04") + 5


def _graph(c: float) -> bytes:
    return _GRAPH[:_C_AT] + struct.pack("<f", c) + _GRAPH[_C_AT + 4:]


def _sigmoid(c: float) -> float:
    return float(1.0 / (1.0 + np.exp(-c)))


def _featurizer() -> RankFeaturizer:
    return RankFeaturizer(
        dataset="toy", tasks=("play",), category_names=("rock", "pop"), user_vocab={"u1": 1}, item_vocab={"i0": 1},
        genders=("f", "m"), ages=("18-24",), context_kind="none", step_s=0.0, age_bins=(),
        item_extra_kind="content_kind", kinds=("track",), item_extra_by_id={}, group_means=np.zeros((6, 2)),
        n_genders=2, shrinkage=1.0, new_user_max_history=3, dense_mu=np.zeros(7, np.float32),
        dense_sd=np.ones(7, np.float32), cardinalities=(2,) * len(SPARSE_FIELDS), group_names=tuple("abcdef"))


def _publish(models_dir: Path, version: str, c: float, featurizer: bool = True) -> ModelVersion:
    def write(d: Path) -> None:
        (d / "model.onnx").write_bytes(_graph(c))
        vocab = {"featurizer": _featurizer().to_json()} if featurizer else {}
        (d / "schema.json").write_text(json.dumps({"vocab": vocab}))

    return ModelRegistry(models_dir).publish(
        RANKER_NAME, version, write, inputs=[TensorSpec("dense", "float32", ["batch", "d"])],
        outputs=[TensorSpec("scores", "float32", ["batch", 1])], dim=1, opset=17, extra={"tasks": ["play"]})


def _score(ranker: Any) -> float:
    return float(ranker.score(UserContext("u1", {}, []), [ItemContext("i0", "track", ("rock",), NOW)], NOW)[0, 0])


class _CountingLoader:
    """The real :meth:`Ranker.load`, counting its calls (which versions were read)."""

    def __init__(self) -> None:
        self.calls: list[str | None] = []

    def __call__(self, models_dir: Path, name: str, version: str | None) -> Ranker:
        self.calls.append(version)
        return Ranker.load(models_dir, version=version, name=name)


def _flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _corrupt_side_file(v: Path) -> None:  # still valid JSON: only the hash can tell
    schema = v / "schema.json"
    schema.write_text(schema.read_text().replace('"toy"', '"tox"'))


BREAKS: dict[str, tuple[Callable[[Path], None], str]] = {
    "side_file": (_corrupt_side_file, "hash_mismatch"),
    "graph": (lambda v: _flip_byte(v / "model.onnx"), "hash_mismatch"),
    "missing_file": (lambda v: (v / "schema.json").unlink(), "missing_file"),
    "corrupt_manifest": (lambda v: (v / "manifest.json").write_text('{"name": "deepfm-mmoe"'), "corrupt_manifest"),
}


class _Users:
    def request_view(self, space: str, user_id: str, n_engaged: int = 200) -> tuple[Any, list[Any], list[Any],
                                                                                       dict[str, Any]]:
        return UserState(np.array([1.0, 0.0], np.float32), 1.0, NOW, n_events=3), [], [], {}

    def item_meta(self, ids: list[str]) -> dict[str, Any]:
        return {}


class _Index:
    name = "thaw_test"

    def search(self, vectors: np.ndarray, k: int, **_: Any) -> list[list[Hit]]:
        return [[Hit(f"i{j}", 0.9 - 0.1 * j, "track", "c", int(NOW * 1000)) for j in range(min(k, 5))]]


def _recommender(pool: RankerPool, mode: str = "error") -> Recommender:
    serve = ServeSettings(variants=(ABVariant(name="gated", ranker=RANKER_NAME),), fresh_k=0, new_item_share=0.0,
                          missing_ranker=mode)  # type: ignore[arg-type]
    return Recommender(serve, _Users(), _Index(), "text@t", pool, clock=lambda: NOW)  # type: ignore[arg-type]


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name == "thaw.serve"]


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_a_bad_new_version_keeps_the_last_good_one_serving_and_is_not_read_again(
        tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    breaks, failure = BREAKS[how]
    loader = _CountingLoader()
    pool = RankerPool(tmp_path, refresh_s=0, loader=loader)  # refresh_s=0: every call looks at CURRENT
    _publish(tmp_path, "v1", c=0.0)
    v1 = pool.get(RANKER_NAME)
    assert v1 is not None and v1.version == "v1" and _score(v1) == pytest.approx(_sigmoid(0.0))

    breaks(_publish(tmp_path, "v2", c=2.0).path)
    with caplog.at_level(logging.WARNING, logger="thaw.serve"):
        for _ in range(5):
            assert pool.get(RANKER_NAME) is v1
    assert loader.calls == ["v1", "v2"]  # v2 was read once, then remembered by its manifest
    logged = _warnings(caplog)
    assert len(logged) == 1 and "v2" in logged[0] and failure in logged[0]
    assert "still serving deepfm-mmoe@v1" in logged[0]
    assert pool.load_failures == {(RANKER_NAME, failure): 1}
    kept = pool.serving_last_good()[RANKER_NAME]
    assert kept[0] == "v1" and (kept[1].version, kept[1].failure) == ("v2", failure)

    rec = _recommender(pool)
    out = rec.recommend("u1", 3)
    assert (out.ranker, out.ranked_by, out.degraded) == ("deepfm-mmoe@v1", "ranker", None)
    assert [c.score for c in out.items] == pytest.approx([_sigmoid(0.0)] * 3)
    assert rec.preload() == {"gated": f"deepfm-mmoe@v1 (last good; v2 refused: {failure})"}
    assert loader.calls == ["v1", "v2"]

    _publish(tmp_path, "v3", c=2.0)  # a new publish is tried, and served
    v3 = pool.get(RANKER_NAME)
    assert v3 is not None and v3.version == "v3" and _score(v3) == pytest.approx(_sigmoid(2.0))
    assert loader.calls == ["v1", "v2", "v3"] and pool.serving_last_good() == {}


def test_a_load_exception_is_a_refused_version_too(tmp_path: Path) -> None:
    loader = _CountingLoader()
    failures: list[tuple[str, str | None, str]] = []
    pool = RankerPool(tmp_path, refresh_s=0, loader=loader, on_load_failure=lambda *a: failures.append(a))
    _publish(tmp_path, "v1", c=0.0)
    v1 = pool.get(RANKER_NAME)
    _publish(tmp_path, "v2", c=2.0, featurizer=False)  # hashes fine, Ranker.load raises
    assert pool.get(RANKER_NAME) is v1 and pool.get(RANKER_NAME) is v1
    assert loader.calls == ["v1", "v2"]
    assert failures == [(RANKER_NAME, "v2", "load_error")]
    assert pool.load_failures == {(RANKER_NAME, "load_error"): 1}


def test_current_moving_back_to_the_served_version_clears_the_refusal(tmp_path: Path) -> None:
    pool = RankerPool(tmp_path, refresh_s=0, loader=_CountingLoader())
    _publish(tmp_path, "v1", c=0.0)
    v1 = pool.get(RANKER_NAME)
    _corrupt_side_file(_publish(tmp_path, "v2", c=2.0).path)
    assert pool.get(RANKER_NAME) is v1 and RANKER_NAME in pool.serving_last_good()
    ModelRegistry(tmp_path).set_current(RANKER_NAME, "v1")  # the operator rolls back
    assert pool.get(RANKER_NAME) is v1 and pool.serving_last_good() == {}
    assert pool.load_failures == {(RANKER_NAME, "hash_mismatch"): 1}  # what happened stays counted


def test_a_refused_version_without_a_last_good_one_is_the_arms_missing_ranker(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    loader = _CountingLoader()
    pool = RankerPool(tmp_path, refresh_s=0, loader=loader)
    _corrupt_side_file(_publish(tmp_path, "v1", c=0.0).path)
    with caplog.at_level(logging.WARNING, logger="thaw.serve"):
        out = _recommender(pool, "recall_order").recommend("u1", 3)
        assert (out.ranker, out.ranked_by) == (None, "recall_order")
        assert out.degraded == "deepfm-mmoe@v1 refused (hash_mismatch)" and out.fallback_reason == "load_failed"
        assert [c.item_id for c in out.items] == ["i0", "i1", "i2"]
        with pytest.raises(RankerNotPublishedError) as info:
            _recommender(pool, "error").recommend("u1", 3)
    err = info.value
    assert (err.reason, err.failure, err.failed_version, err.variant) == ("load_failed", "hash_mismatch", "v1", "gated")
    assert "failed to load (hash_mismatch)" in str(err) and err.to_dict()["reason"] == "load_failed"
    assert loader.calls == ["v1"] and len(_warnings(caplog)) == 1
    assert pool.load_failures == {(RANKER_NAME, "hash_mismatch"): 1}
    _publish(tmp_path, "v2", c=2.0)
    v2 = pool.get(RANKER_NAME)
    assert v2 is not None and v2.version == "v2" and loader.calls == ["v1", "v2"]


# ------------------------------------------------------------------------------------------------ a fresh process
@pytest.mark.parametrize("how", sorted(BREAKS))
def test_a_fresh_pool_on_a_bad_newest_publish_serves_the_newest_older_good_one(
        tmp_path: Path, how: str, caplog: pytest.LogCaptureFixture) -> None:
    """A restarted replica: nothing loaded in memory, CURRENT names a refused version; the older good one serves and
    is reported as the last good version (log, count, hook, /readyz)."""
    breaks, failure = BREAKS[how]
    _publish(tmp_path, "v1", c=0.0)
    breaks(_publish(tmp_path, "v2", c=2.0).path)
    loader = _CountingLoader()
    failures: list[tuple[str, str | None, str]] = []
    pool = RankerPool(tmp_path, refresh_s=0, loader=loader, on_load_failure=lambda *a: failures.append(a))
    with caplog.at_level(logging.WARNING, logger="thaw.serve"):
        got = pool.get(RANKER_NAME)
        assert got is not None and got.version == "v1" and _score(got) == pytest.approx(_sigmoid(0.0))
        for _ in range(3):
            assert pool.get(RANKER_NAME) is got
    assert loader.calls == ["v2", "v1"]  # neither read again
    logged = _warnings(caplog)
    assert len(logged) == 1 and "v2" in logged[0] and failure in logged[0]
    assert "still serving deepfm-mmoe@v1" in logged[0]
    assert pool.load_failures == {(RANKER_NAME, failure): 1} and failures == [(RANKER_NAME, "v2", failure)]
    kept = pool.serving_last_good()[RANKER_NAME]
    assert kept[0] == "v1" and (kept[1].version, kept[1].failure) == ("v2", failure)
    rec = _recommender(pool)
    out = rec.recommend("u1", 3)
    assert (out.ranker, out.ranked_by, out.degraded) == ("deepfm-mmoe@v1", "ranker", None)
    assert rec.preload() == {"gated": f"deepfm-mmoe@v1 (last good; v2 refused: {failure})"}

    _publish(tmp_path, "v3", c=2.0)  # a new publish is tried, and served
    v3 = pool.get(RANKER_NAME)
    assert v3 is not None and v3.version == "v3" and pool.serving_last_good() == {}
    assert loader.calls == ["v2", "v1", "v3"]


def test_the_fallback_goes_by_creation_time_not_by_name(tmp_path: Path) -> None:
    _publish(tmp_path, "v9", c=0.0)
    _publish(tmp_path, "v10", c=1.0)  # "v10" < "v9" by name: by name, v9 would look the newest
    _corrupt_side_file(_publish(tmp_path, "v11", c=2.0).path)
    loader = _CountingLoader()
    got = RankerPool(tmp_path, refresh_s=0, loader=loader).get(RANKER_NAME)
    assert got is not None and got.version == "v10" and _score(got) == pytest.approx(_sigmoid(1.0))
    assert loader.calls == ["v11", "v10"]


def test_a_fresh_pool_skips_refused_older_versions_and_raises_when_none_loads(
        tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    _corrupt_side_file(_publish(tmp_path, "v1", c=0.0).path)
    _flip_byte(_publish(tmp_path, "v2", c=1.0).path / "model.onnx")
    loader = _CountingLoader()
    failures: list[tuple[str, str | None, str]] = []
    pool = RankerPool(tmp_path, refresh_s=0, loader=loader, on_load_failure=lambda *a: failures.append(a))
    with caplog.at_level(logging.WARNING, logger="thaw.serve"):
        for _ in range(2):  # the error of the CURRENT version, as without a fallback; nothing read twice
            with pytest.raises(RankerNotPublishedError) as info:
                pool.get(RANKER_NAME)
            err = info.value
            assert (err.reason, err.failure, err.failed_version) == ("load_failed", "hash_mismatch", "v2")
        assert loader.calls == ["v2", "v1"]
        assert failures == [(RANKER_NAME, "v1", "hash_mismatch"), (RANKER_NAME, "v2", "hash_mismatch")]
        assert pool.load_failures == {(RANKER_NAME, "hash_mismatch"): 2}
        out = _recommender(pool, "recall_order").recommend("u1", 3)
        assert (out.ranker, out.degraded) == (None, "deepfm-mmoe@v2 refused (hash_mismatch)")

        _corrupt_side_file(_publish(tmp_path, "v3", c=2.0).path)  # another bad publish: v2 and v1 are not reread
        with pytest.raises(RankerNotPublishedError) as info:
            pool.get(RANKER_NAME)
        assert info.value.failed_version == "v3" and loader.calls == ["v2", "v1", "v3"]
    assert len(_warnings(caplog)) == 3  # one per refused version
    _publish(tmp_path, "v4", c=3.0)
    v4 = pool.get(RANKER_NAME)
    assert v4 is not None and v4.version == "v4" and loader.calls == ["v2", "v1", "v3", "v4"]


def test_a_pinned_version_or_a_rollback_never_falls_on_another_version(tmp_path: Path) -> None:
    _publish(tmp_path, "v1", c=0.0)
    _corrupt_side_file(_publish(tmp_path, "v2", c=1.0).path)
    _publish(tmp_path, "v3", c=2.0)
    loader = _CountingLoader()
    with pytest.raises(RankerNotPublishedError) as info:  # a pinned spec asks for that version only
        RankerPool(tmp_path, loader=loader).get(f"{RANKER_NAME}@v2")
    assert info.value.failed_version == "v2" and loader.calls == ["v2"]
    ModelRegistry(tmp_path).set_current(RANKER_NAME, "v2")  # rolled back from v3 to v2: never forward to v3
    got = RankerPool(tmp_path, loader=loader).get(RANKER_NAME)
    assert got is not None and got.version == "v1" and loader.calls == ["v2", "v2", "v1"]


def test_fallback_versions_by_created_at() -> None:
    created = {"v9": "2026-01-01T00:00:09+00:00", "v10": "2026-01-01T00:00:10+00:00",
               "v11": "2026-01-01T00:00:11+00:00", "v8": "2026-01-01T00:00:08", "bad": None, "odd": "yesterday"}
    assert fallback_versions("v11", created) == ["v10", "v9", "v8"]  # a naive time counts as UTC
    assert fallback_versions("v10", created) == ["v9", "v8"]  # only older than the refused one
    assert fallback_versions("bad", created) == ["v11", "v10", "v9", "v8"]  # its time unknown: every dated one
    assert fallback_versions("v8", created) == [] and fallback_versions("v1", {}) == []
    same = "2026-01-01T00:00:00+00:00"
    assert fallback_versions("z", {"a": same, "b": same, "z": "2026-01-02T00:00:00+00:00"}) == ["b", "a"]


def test_the_session_is_built_from_the_verified_bytes(tmp_path: Path) -> None:
    """Verified, then swapped on disk before the session is built: the session runs the verified bytes (kept at
    load), and without kept bytes the swap is refused, never run."""
    reg = ModelRegistry(tmp_path)
    _publish(tmp_path, "v1", c=0.0)
    kept = reg.load(RANKER_NAME, keep_bytes=True)
    (tmp_path / RANKER_NAME / "v1" / "model.onnx").write_bytes(_graph(5.0))  # the swap
    (scores,) = VerifiedOnnxModel(kept, threads=1, prefer_gpu=False).run({"dense": np.zeros((2, 7), np.float32)})
    assert scores.ravel().tolist() == pytest.approx([_sigmoid(0.0)] * 2)
    with pytest.raises(ModelIntegrityError) as info:
        VerifiedOnnxModel(reg.load(RANKER_NAME, verify=False), threads=1, prefer_gpu=False)
    assert info.value.reason == "hash_mismatch" and info.value.file == "model.onnx"


def test_ranker_load_builds_from_bytes_read_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every file of the version is read once; the session and the featuriser come from those bytes."""
    _publish(tmp_path, "v1", c=0.0)
    reads: list[str] = []
    real = Path.read_bytes

    def counting(self: Path) -> bytes:
        reads.append(self.name)
        return real(self)

    monkeypatch.setattr(Path, "read_bytes", counting)
    r = Ranker.load(tmp_path)
    assert sorted(reads) == ["manifest.json", "model.onnx", "schema.json"]
    assert r.model_version.kept == ()  # released once built
    assert _score(r) == pytest.approx(_sigmoid(0.0))


def test_the_api_counts_a_refused_version_on_its_metrics(tmp_path: Path) -> None:
    from infra.settings import Settings
    from serving.metrics import ServeMetrics
    from serving.space import ServedSpace

    m = ServeMetrics()
    s = Settings().model_copy(update={"models": Settings().models.model_copy(update={"dir": tmp_path})})
    space = ServedSpace(s, on_ranker_refused=m.count_refused_ranker)  # what serving.api wires
    space.rankers.refresh_s = 0  # look at CURRENT on every call
    _publish(tmp_path, "v1", c=0.0)
    assert space.rankers.get(RANKER_NAME) is not None
    _corrupt_side_file(_publish(tmp_path, "v2", c=2.0).path)
    for _ in range(3):
        space.rankers.get(RANKER_NAME)
    text = m.render().decode()
    assert 'thaw_ranker_refused_total{failure="hash_mismatch",model="deepfm-mmoe"} 1.0' in text
