"""One table over the performance benchmarks' reports: benchmark, metric, value, raw limit, ratio, target, met?

``python -m benchmarks.summary [--results benchmarks/results] [--json]`` reads the JSON reports the performance
benchmarks wrote into ``--results`` (``make bench`` runs them, then this) and prints one Markdown table:

* **value**: the benchmark's headline figure (freshness: p99 produce → searchable; user throughput: events/s the
  worker applied; featuriser: items/s through every encoder; replayer: events/s acknowledged);
* **raw limit**: the same measure for what the engine is built on, where the benchmark measures one in the same
  run (raw aiokafka ``getmany`` for the user path, torch eager for the featuriser, fp32 for an int8 row);
* **ratio**: value / raw limit;
* **target** and **met?**: the goals of the performance issue (:data:`TARGETS`); ``-`` where there is none.
  A freshness row meets its target only when every encoder ran (every content field present in the traces).

A report that is missing is listed as ``not run``, one that failed as ``failed``. Pure functions build the rows
(:func:`rows_from_reports`, :func:`render_markdown`); only :func:`load_reports` and :func:`main` touch files.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

DEFAULT_RESULTS = Path(__file__).resolve().parent / "results"

EVERY_FIELD = ("text", "audio_clip", "audio_mae", "image", "image_text")
FRESHNESS_P99_MS = 1000.0
"""Goal 3: p99 produce -> searchable <= 1 s at 50 mixed items/s with every encoder on 2 cores."""
FRESHNESS_RATE = 50.0
USER_RATIO = 0.25
"""Goal 2: the user-event path at >= 0.25x raw aiokafka getmany on the same topic, in one run."""


@dataclass(frozen=True)
class Target:
    """A goal on one metric: ``value <= bound`` (``le``) or ``value >= bound`` (``ge``), on the value itself or on
    the ratio to the raw limit."""

    op: str  # "le" | "ge"
    bound: float
    on: str = "value"  # "value" | "ratio"
    unit: str = ""

    def met(self, value: float | None, ratio: float | None) -> bool | None:
        x = ratio if self.on == "ratio" else value
        if x is None or (isinstance(x, float) and math.isnan(x)):
            return None
        return x <= self.bound if self.op == "le" else x >= self.bound

    def text(self) -> str:
        sym = "<=" if self.op == "le" else ">="
        what = "ratio " if self.on == "ratio" else ""
        return f"{what}{sym} {_num(self.bound)}{self.unit}"


@dataclass(frozen=True)
class Row:
    benchmark: str
    metric: str
    value: float | None
    unit: str = ""
    raw_limit: float | None = None
    target: Target | None = None
    met: bool | None = None
    status: str = "ok"  # ok | not run | failed
    note: str = ""

    @property
    def ratio(self) -> float | None:
        if self.value is None or not self.raw_limit:
            return None
        return self.value / self.raw_limit

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["target"] = self.target.text() if self.target else None
        d["ratio"] = None if self.ratio is None else round(self.ratio, 4)
        return d


def _row(benchmark: str, metric: str, value: float | None, unit: str = "", raw_limit: float | None = None,
         target: Target | None = None, note: str = "", every_encoder: bool = True) -> Row:
    r = Row(benchmark, metric, value, unit, raw_limit, target, None, "ok", note)
    met = target.met(value, r.ratio) if target else None
    if met and not every_encoder:
        met = False
    return Row(benchmark, metric, value, unit, raw_limit, target, met, "ok", note)


def _num(x: float | None) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "-"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def _busy(d: dict[str, Any]) -> str:
    b = d.get("machine_busy_cores")
    return f"busy cores {b}" if b is not None else ""


def _date(report: dict[str, Any]) -> str:
    return str(report.get("started_at", ""))[:10]


# ------------------------------------------------------------------------------------------------ extractors
def freshness_rows(name: str, report: dict[str, Any]) -> list[Row]:
    """One row per phase: p99 searchable (the client's view). The goal applies to the mixed source at 50 items/s;
    it is met only when the phase's traces show every content field."""
    cfg = report.get("config", {})
    mixed = cfg.get("source") == "mixed" or name.startswith("freshness_mixed")
    quant = cfg.get("quantize", "none")
    rows: list[Row] = []
    for ph in report.get("phases", []):
        rate = float(ph.get("rate_requested", 0.0))
        bench = f"{name} @{rate:g}/s"
        if "error" in ph:
            rows.append(Row(bench, "p99 produce->searchable", None, "ms", status="failed",
                            note=str(ph["error"]).splitlines()[0][:120]))
            continue
        lat = ph.get("latency_ms", {}).get("searchable_external_poll", {})
        fields = ph.get("fields", {}).get("items_with_field_by_kind")
        have = {f for per in (fields or {}).values() for f in per}
        missing = [f for f in EVERY_FIELD if f not in have] if fields is not None else None
        goal = mixed and rate >= FRESHNESS_RATE
        notes = [f"{cfg.get('items', '?')} items", _date(report)]
        if quant != "none":
            notes.append(quant)
        if mixed and missing:
            notes.append("missing fields: " + ",".join(missing))
        elif mixed and missing is None:
            notes.append("fields not recorded")
        cores = ph.get("worker_cpu_cores")
        notes += [f"achieved {ph.get('produce', {}).get('achieved_rate', '?')}/s",
                  f"worker {cores} cores" if cores is not None else "", _busy(ph)]
        rows.append(_row(bench, "p99 produce->searchable", lat.get("p99"), "ms",
                         target=Target("le", FRESHNESS_P99_MS, unit=" ms") if goal else None,
                         note="; ".join(n for n in notes if n),
                         every_encoder=not mixed or missing == []))
    return rows


def user_throughput_rows(name: str, report: dict[str, Any]) -> list[Row]:
    agent, raw = report.get("agent", {}), report.get("raw_getmany", {})
    ok = report.get("correctness", {}).get("ok")
    cfg = report.get("config", {})
    note = "; ".join(x for x in (f"{cfg.get('events', '?')} events", _date(report),
                                 "correct" if ok else "CORRECTNESS FAILED" if ok is False else "",
                                 _busy(agent)) if x)
    row = _row(name, "events/s applied (raw: getmany)", agent.get("events_per_s"), "/s",
               raw_limit=raw.get("events_per_s"), target=Target("ge", USER_RATIO, on="ratio", unit="x"), note=note)
    if ok is False:
        row = Row(**{**row.__dict__, "met": False})
    return [row]


def featurizer_rows(name: str, report: dict[str, Any]) -> list[Row]:
    """Per batch size: ONNX items/s through every published encoder, against torch eager when it ran. The
    worker has to encode faster than it receives: the freshness rate is a floor (a necessary condition)."""
    cfg = report.get("config", {})
    missing = cfg.get("missing") or []
    rows = []
    for bs, res in report.get("results", {}).items():
        onnx = res.get("onnx", {})
        torch = res.get("torch", {})
        notes = [f"{cfg.get('items', '?')} mixed items", _date(report),
                 *([f"missing fields: {','.join(missing)}"] if missing else [])]
        rows.append(_row(f"{name} batch {bs}", "items/s, every encoder (raw: torch)", onnx.get("items_per_s"),
                         "/s", raw_limit=torch.get("items_per_s"),
                         target=Target("ge", FRESHNESS_RATE, unit="/s"), note="; ".join(notes),
                         every_encoder=not missing))
    return rows


def replay_rows(name: str, report: dict[str, Any]) -> list[Row]:
    kept = report.get("highest_rate_kept_up")
    note = "; ".join(x for x in (f"highest rate kept up {_num(kept)}/s" if kept else "no paced rate kept up",
                                 _date(report)) if x)
    return [_row(name, "events/s produced (acked, max)", report.get("max_rate_events_per_s"), "/s", note=note)]


def serve_rows(name: str, report: dict[str, Any]) -> list[Row]:
    load = report.get("load", {})
    overall = load.get("overall", {})
    note = "; ".join(x for x in (f"{load.get('clients', '?')} clients (closed loop)",
                                 f"{report.get('config', {}).get('items', '?')} items", _date(report), _busy(load))
                     if x)
    return [_row(name, "p99 /recommend", overall.get("p99_ms"), "ms", note=note),
            _row(name, "requests/s", overall.get("req_per_s"), "/s", note=note)]


def quantization_rows(name: str, report: dict[str, Any]) -> list[Row]:
    """int8 against fp32 in one run: featuriser items/s (raw limit: fp32) and each quality metric."""
    rows = []
    speed = report.get("speed", {})
    for label in ("int8", "int8-all"):
        if label in speed:
            med = speed.get("speedup_over_fp32", {}).get(label, {}).get("per_batch_median")
            rows.append(_row(name, f"featuriser items/s {label} (raw: fp32)", speed[label].get("items_per_s"),
                             "/s", raw_limit=speed.get("fp32", {}).get("items_per_s"),
                             note="; ".join(x for x in (f"batch {speed.get('batch_size', '?')}",
                                                        f"per-batch speed-up median {med}" if med else "",
                                                        _date(report), _busy(speed)) if x)))
    for graph, v in report.get("paired_speed", {}).items():
        if isinstance(v, dict) and "int8_ms_median" in v:
            rows.append(_row(name, f"{graph}: ms int8 (raw: fp32)", v["int8_ms_median"], "ms",
                             raw_limit=v["fp32_ms_median"],
                             note=f"median of {report['paired_speed'].get('rounds', '?')} paired rounds; "
                                  f"{_busy(report['paired_speed'])}"))
    for metric, v in sorted(report.get("quality", {}).items()):
        if isinstance(v, dict) and "int8" in v and "fp32" in v:
            rows.append(_row(name, f"{metric} int8 (raw: fp32)", v["int8"], "", raw_limit=v["fp32"],
                             note=str(v.get("note", ""))))
    return rows


EXTRACTORS: dict[str, Callable[[str, dict[str, Any]], list[Row]]] = {
    "freshness": freshness_rows,
    "user_throughput": user_throughput_rows,
    "featurizer_speed": featurizer_rows,
    "replay_rate": replay_rows,
    "serve": serve_rows,
    "quantization": quantization_rows,
}

PERFORMANCE_SET: tuple[str, ...] = ("freshness_mixed", "freshness", "user_throughput", "featurizer_speed",
                                    "replay_rate")
"""Reports ``make bench`` writes: each is listed, as ``not run`` when its file is missing."""


def extractor_for(name: str) -> Callable[[str, dict[str, Any]], list[Row]] | None:
    """The extractor of a report name: its own, or freshness for ``freshness*`` names."""
    if name in EXTRACTORS:
        return EXTRACTORS[name]
    if name.startswith("freshness"):
        return freshness_rows
    if name.startswith("featurizer_speed"):
        return featurizer_rows
    return None


def rows_from_reports(reports: dict[str, dict[str, Any]], expected: Iterable[str] = PERFORMANCE_SET) -> list[Row]:
    """Rows of every known report in ``reports`` (name -> parsed JSON), plus a ``not run`` row per ``expected``
    name that is absent; a report an extractor cannot read is a ``failed`` row, not an exception."""
    rows: list[Row] = []
    names = list(dict.fromkeys([*expected, *sorted(reports)]))
    for name in names:
        fn = extractor_for(name)
        if fn is None:
            continue
        if name not in reports:
            rows.append(Row(name, "-", None, status="not run", note="no report in the results folder"))
            continue
        try:
            got = fn(name, reports[name])
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            got = [Row(name, "-", None, status="failed", note=f"unreadable report ({type(exc).__name__})")]
        rows += got or [Row(name, "-", None, status="failed", note="the report holds no result")]
    return rows


def render_markdown(rows: list[Row]) -> str:
    """The table as Markdown (readable as plain text too)."""
    head = ["benchmark", "metric", "value", "raw limit", "ratio", "target", "met?", "note"]
    body = []
    for r in rows:
        if r.status != "ok":
            body.append([r.benchmark, r.metric, r.status, "-", "-", r.target.text() if r.target else "-", "-",
                         r.note])
            continue
        val = f"{_num(r.value)}{(' ' + r.unit) if r.unit and r.value is not None else ''}"
        met = "-" if r.met is None else ("yes" if r.met else "NO")
        body.append([r.benchmark, r.metric, val, _num(r.raw_limit),
                     "-" if r.ratio is None else f"{r.ratio:.3g}x", r.target.text() if r.target else "-", met,
                     r.note])
    widths = [max(len(h), *(len(b[i]) for b in body)) if body else len(h) for i, h in enumerate(head)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    return "\n".join([line(head), "|" + "|".join("-" * (w + 2) for w in widths) + "|", *map(line, body)])


# --------------------------------------------------------------------------------------------------- shell
def load_reports(results: Path) -> dict[str, dict[str, Any]]:
    """Every ``*.json`` report directly under ``results`` that has an extractor, by file stem; a file that does
    not parse is kept as ``{"_unreadable": reason}`` (its row says failed)."""
    out: dict[str, dict[str, Any]] = {}
    for p in sorted(results.glob("*.json")):
        if extractor_for(p.stem) is None:
            continue
        try:
            out[p.stem] = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            out[p.stem] = {"_unreadable": type(exc).__name__}
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.summary", description=__doc__.split("\n\n")[0])
    ap.add_argument("--results", type=Path, default=DEFAULT_RESULTS, help="folder with the JSON reports")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON instead of the table")
    ap.add_argument("--strict", action="store_true", help="exit 1 when a target is not met or a benchmark is "
                                                          "missing or failed")
    args = ap.parse_args(argv)
    rows = rows_from_reports(load_reports(args.results))
    if args.json:
        print(json.dumps([r.as_dict() for r in rows], indent=2))
    else:
        print(f"benchmarks in {args.results}:\n")
        print(render_markdown(rows))
    bad = [r for r in rows if r.status != "ok" or r.met is False]
    return 1 if args.strict and bad else 0


if __name__ == "__main__":
    sys.exit(main())
