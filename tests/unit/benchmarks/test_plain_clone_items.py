"""The benchmarks' item sources and report naming for a plain clone (no THAW_DATASETS_DIR)."""

from __future__ import annotations

import pytest

from benchmarks._harness import TEXT_DATASETS, repeat_distinct, text_items
from benchmarks.freshness import DEFAULT_DATASET, fields_by_kind, report_name
from workloads.datasets import DatasetsDirNotSetError


def test_repeat_distinct_cycles_with_distinct_ids():
    pool = [{"item_id": f"a:{i}", "kind": "dynamic", "text": f"t{i}"} for i in range(3)]
    out = repeat_distinct(pool, 8, seed=1)
    ids = [x["item_id"] for x in out]
    assert len(out) == 8 and len(set(ids)) == 8
    assert sorted(ids[:3]) == ["a:0", "a:1", "a:2"] and all(i.endswith("#1") for i in ids[3:6])
    assert {x["text"] for x in out} == {"t0", "t1", "t2"}  # the payloads repeat, the ids do not
    assert repeat_distinct(pool, 8, seed=1) == out and repeat_distinct(pool, 8, seed=2) != out
    assert pool[0]["item_id"] == "a:0"  # the pool is not modified
    assert repeat_distinct([], 0) == []
    with pytest.raises(ValueError):
        repeat_distinct([], 1)


def test_report_names_keep_each_configuration_apart():
    assert report_name("text", DEFAULT_DATASET["text"]) == "freshness"
    assert report_name("mixed", DEFAULT_DATASET["mixed"]) == "freshness_mixed"
    assert report_name("mixed", DEFAULT_DATASET["mixed"], "int8") == "freshness_mixed_int8"
    assert report_name("text", "lastfm") == "freshness_lastfm"
    assert report_name("mixed", "ml-100k") == "freshness_mixed_ml100k"
    names = {report_name(s, d, q) for s in ("text", "mixed") for d in TEXT_DATASETS for q in ("none", "int8")}
    assert len(names) == 12


def test_fields_by_kind_counts_what_each_item_got():
    traces = [
        {"kind": "track", "features": ["text", "audio_clip", "audio_mae"], "model_versions": {"text": "m@1"}},
        {"kind": "track", "features": ["text"], "model_versions": {"text": "m@1"}},
        {"kind": "moment", "features": ["text", "image", "image_text"], "model_versions": {"image": "f@2"}},
    ]
    got = fields_by_kind(traces)
    assert got["items_by_kind"] == {"moment": 1, "track": 2}
    assert got["items_with_field_by_kind"]["track"] == {"audio_clip": 1, "audio_mae": 1, "text": 2}
    assert got["items_with_field_by_kind"]["moment"] == {"image": 1, "image_text": 1, "text": 1}
    assert got["model_versions"] == {"image": "f@2", "text": "m@1"}


def test_lastfm_only_when_asked_and_configured(monkeypatch):
    monkeypatch.delenv("THAW_DATASETS_DIR", raising=False)
    with pytest.raises(DatasetsDirNotSetError):
        text_items(3, "lastfm")
    with pytest.raises(ValueError, match="unknown text dataset"):
        text_items(3, "imdb")
