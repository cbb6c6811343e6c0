"""The summary table of `make bench` (benchmarks.summary) over sample reports shaped like the benchmarks' JSON."""

from __future__ import annotations

import json

import pytest

from benchmarks.summary import (
    PERFORMANCE_SET,
    Target,
    load_reports,
    main,
    render_markdown,
    rows_from_reports,
)

EVERY = {"track": {"text": 40, "audio_clip": 40, "audio_mae": 40}, "moment": {"text": 30, "image": 30,
                                                                             "image_text": 30},
         "dynamic": {"text": 30}}


def _fresh_phase(rate: float, p99: float, fields: dict | None = EVERY) -> dict:
    ph = {"rate_requested": rate, "produce": {"achieved_rate": rate}, "machine_busy_cores": 1.9,
          "latency_ms": {"searchable_external_poll": {"p50": p99 / 2, "p99": p99}}}
    if fields is not None:
        ph["fields"] = {"items_with_field_by_kind": fields}
    return ph


def _fresh(*phases: dict, source: str = "mixed", quantize: str = "none") -> dict:
    return {"benchmark": "freshness", "started_at": "2026-12-07T10:00:00+0000",
            "config": {"items": 100, "source": source, "quantize": quantize}, "phases": list(phases)}


USERS = {"benchmark": "user_throughput", "started_at": "2026-12-07T11:00:00+0000", "config": {"events": 100000},
         "raw_getmany": {"events_per_s": 400000.0}, "agent": {"events_per_s": 120000.0, "machine_busy_cores": 2.0},
         "correctness": {"ok": True}}
FEAT = {"benchmark": "featurizer_speed", "config": {"items": 64, "missing": []},
        "results": {"32": {"onnx": {"items_per_s": 60.0}, "torch": {"items_per_s": 30.0}}}}


def _by(rows, bench, metric=None):
    got = [r for r in rows if r.benchmark == bench and (metric is None or r.metric == metric)]
    assert len(got) == 1, [r.benchmark for r in rows]
    return got[0]


def test_freshness_goal_at_50_mixed_items_per_s():
    rows = rows_from_reports({"freshness_mixed": _fresh(_fresh_phase(20, 400.0), _fresh_phase(50, 900.0))})
    r20, r50 = _by(rows, "freshness_mixed @20/s"), _by(rows, "freshness_mixed @50/s")
    assert r20.target is None and r20.met is None  # the goal is at 50 items/s
    assert r50.value == 900.0 and r50.unit == "ms" and r50.target == Target("le", 1000.0, unit=" ms")
    assert r50.met is True
    slow = rows_from_reports({"freshness_mixed": _fresh(_fresh_phase(50, 3300.0))})
    assert _by(slow, "freshness_mixed @50/s").met is False


def test_freshness_is_not_met_without_every_encoder():
    text_only = {"track": {"text": 40}, "moment": {"text": 30}, "dynamic": {"text": 30}}
    r = _by(rows_from_reports({"freshness_mixed": _fresh(_fresh_phase(50, 500.0, text_only))}),
            "freshness_mixed @50/s")
    assert r.met is False and "missing fields: audio_clip,audio_mae,image,image_text" in r.note
    old = _by(rows_from_reports({"freshness_mixed": _fresh(_fresh_phase(50, 500.0, None))}), "freshness_mixed @50/s")
    assert old.met is False and "fields not recorded" in old.note


def test_text_freshness_and_variants_have_no_goal_but_are_listed():
    rows = rows_from_reports({"freshness": _fresh(_fresh_phase(50, 700.0), source="text"),
                              "freshness_mixed_int8": _fresh(_fresh_phase(50, 800.0), quantize="int8")})
    assert _by(rows, "freshness @50/s").target is None
    q = _by(rows, "freshness_mixed_int8 @50/s")
    assert q.met is True and "int8" in q.note


def test_user_throughput_ratio_against_raw_getmany():
    r = _by(rows_from_reports({"user_throughput": USERS}), "user_throughput")
    assert r.raw_limit == 400000.0 and r.ratio == pytest.approx(0.3) and r.met is True
    slow = {**USERS, "agent": {"events_per_s": 8000.0}}
    assert _by(rows_from_reports({"user_throughput": slow}), "user_throughput").met is False
    wrong = {**USERS, "correctness": {"ok": False}}  # fast but wrong is not met
    r = _by(rows_from_reports({"user_throughput": wrong}), "user_throughput")
    assert r.met is False and "CORRECTNESS FAILED" in r.note


def test_featurizer_rows_and_missing_encoders():
    r = _by(rows_from_reports({"featurizer_speed": FEAT}), "featurizer_speed batch 32")
    assert r.value == 60.0 and r.ratio == pytest.approx(2.0) and r.met is True
    part = {**FEAT, "config": {"items": 64, "missing": ["image", "image_text"]}}
    r = _by(rows_from_reports({"featurizer_speed": part}), "featurizer_speed batch 32")
    assert r.met is False and "missing fields: image,image_text" in r.note


def test_missing_and_failed_reports_are_rows_not_errors():
    rows = rows_from_reports({"freshness_mixed": _fresh({"rate_requested": 50, "error": "timed out\nlog"}),
                              "user_throughput": {"agent": "not a dict"}})
    assert {r.benchmark for r in rows if r.status == "not run"} == set(PERFORMANCE_SET) - {
        "freshness_mixed", "user_throughput"}
    assert _by(rows, "freshness_mixed @50/s").status == "failed"
    assert _by(rows, "freshness_mixed @50/s").note == "timed out"
    assert _by(rows, "user_throughput").status == "failed"


def test_quantization_rows_compare_int8_with_fp32():
    rep = {"started_at": "2026-12-07", "speed": {"batch_size": 32, "fp32": {"items_per_s": 50.0},
                                                 "int8": {"items_per_s": 60.0}},
           "quality": {"minilm ml-100k kNN@10 overlap": {"fp32": 1.0, "int8": 0.9}},
           "paired_speed": {"rounds": 15, "machine_busy_cores": 1.5,
                            "minilm": {"fp32_ms_median": 100.0, "int8_ms_median": 80.0}}}
    rows = rows_from_reports({"quantization": rep}, expected=())
    speed = _by(rows, "quantization", "featuriser items/s int8 (raw: fp32)")
    assert speed.ratio == pytest.approx(1.2)
    assert _by(rows, "quantization", "minilm ml-100k kNN@10 overlap int8 (raw: fp32)").value == 0.9
    paired = _by(rows, "quantization", "minilm: ms int8 (raw: fp32)")
    assert paired.ratio == pytest.approx(0.8) and "15 paired rounds" in paired.note


def test_markdown_table_has_every_column_and_row():
    rows = rows_from_reports({"freshness_mixed": _fresh(_fresh_phase(50, 3266.0)), "user_throughput": USERS,
                              "featurizer_speed": FEAT})
    text = render_markdown(rows)
    lines = text.splitlines()
    assert lines[0].split("|")[1:-1] == [c.ljust(len(c)) for c in lines[0].split("|")[1:-1]]
    assert [c.strip() for c in lines[0].strip("|").split("|")] == [
        "benchmark", "metric", "value", "raw limit", "ratio", "target", "met?", "note"]
    assert len(lines) == 2 + len(rows) and len({len(x) for x in lines}) == 1  # aligned
    row = next(x for x in lines if x.startswith("| freshness_mixed @50/s"))
    cells = [c.strip() for c in row.strip("|").split("|")]
    assert cells[2:7] == ["3,266 ms", "-", "-", "<= 1,000 ms", "NO"]
    u = [c.strip() for c in next(x for x in lines if x.startswith("| user_throughput")).strip("|").split("|")]
    assert u[2:7] == ["120,000 /s", "400,000", "0.3x", "ratio >= 0.25x", "yes"]
    assert "not run" in text  # replay_rate and the text freshness run are missing


def test_reads_the_results_folder(tmp_path, capsys):
    (tmp_path / "user_throughput.json").write_text(json.dumps(USERS))
    (tmp_path / "freshness_mixed.json").write_text("{not json")
    (tmp_path / "cold_item_quality.json").write_text("{}")  # not a performance report: ignored
    reports = load_reports(tmp_path)
    assert set(reports) == {"user_throughput", "freshness_mixed"}
    assert main(["--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "| user_throughput" in out and "cold_item_quality" not in out
    assert main(["--results", str(tmp_path), "--strict"]) == 1  # failed + not-run rows
    assert "| freshness_mixed" in capsys.readouterr().out  # the unreadable report is a row
    main(["--results", str(tmp_path), "--json"])
    rows = json.loads(capsys.readouterr().out)
    assert any(r["benchmark"] == "user_throughput" and r["met"] is True for r in rows)
