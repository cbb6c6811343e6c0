"""The demo's JSON report as one self-contained HTML page: the result, every section as a table, and plots.

``thaw report html --in report.json --out report.html`` renders a saved report; the demo calls
:func:`write_report`. The page needs nothing beside itself: the plots are PNGs drawn with matplotlib's Agg canvas
and embedded as base64, the style is inline, there is no script. Every string of the report is HTML-escaped
(section values carry user-controlled text: item titles, tags, error messages).

The report (what the demo writes)::

    {
      "ok": true,                      # the RESULT line
      "problems": ["...", ...],        # why not ok
      "series": {                      # the data behind the plots; any part may be missing
        "freshness_s": {"<series name>": [seconds, ...], ...},       # one CDF curve per series
        "lag": [[t_seconds_since_start, total_lag], ...],              # consumer lag over time
        "quality": {"<section title>": {"<model or arm>": {"ndcg@20": x, "recall@20": y, ...}, ...}, ...}
      },
      "<section>": {"<name>": value, ...},   # every other key: a table (values: numbers, strings, lists, dicts)
      ...
    }

A missing or malformed series leaves its plot out with a note saying what was expected; it never fails the page.
Plots need matplotlib (the ``train`` extra); without it the page still has every table and says why the plots are
missing.
"""

from __future__ import annotations

import base64
import html
import io
import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

QUALITY_METRICS: tuple[str, ...] = ("ndcg@20", "recall@20")  # the bars of the quality plot, when present
RESERVED = ("ok", "problems", "series")
_MAX_DEPTH = 3  # nested dicts deeper than this are shown as JSON

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 70em; color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 1.8em; border-bottom: 1px solid #ccc; }
.result { padding: .8em 1em; border-radius: 4px; font-weight: 600; }
.ok { background: #e3f4e1; border: 1px solid #7bb872; } .problems { background: #fbe4e2; border: 1px solid #d9776d; }
.unknown { background: #eee; border: 1px solid #aaa; }
table { border-collapse: collapse; margin: .4em 0; } td, th { border: 1px solid #ccc; padding: .25em .6em;
  vertical-align: top; text-align: left; } th { background: #f4f4f4; font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
pre { margin: 0; white-space: pre-wrap; font-size: .9em; }
.note { color: #8a5a00; font-style: italic; } figure { margin: 1em 0; } img { max-width: 100%; }
"""


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _number(v: float | int) -> str:
    if isinstance(v, bool):
        return str(v).lower()
    if isinstance(v, int):
        return str(v)
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return f"{v:.6g}"


def _is_number(v: object) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _json(value: object) -> str:
    return f"<pre>{_e(json.dumps(value, indent=1, default=str, ensure_ascii=False))}</pre>"


def _value(value: object, depth: int = 0) -> tuple[str, bool]:
    """One value as HTML, and whether it is a number (right-aligned)."""
    if value is None:
        return "<i>null</i>", False
    if isinstance(value, bool):
        return _number(value), False
    if _is_number(value):
        return _number(value), True  # type: ignore[arg-type]
    if isinstance(value, str):
        return _e(value), False
    if isinstance(value, Mapping):
        if depth >= _MAX_DEPTH or not value:
            return _json(value), False
        return _table(value, depth + 1), False
    if isinstance(value, list | tuple):
        if all(v is None or isinstance(v, str | bool) or _is_number(v) for v in value):
            return ", ".join(_value(v)[0] for v in value), False
        return _json(value), False
    return _e(repr(value)), False


def _table(rows: Mapping[str, Any], depth: int = 0) -> str:
    out = ["<table>"]
    for k, v in rows.items():
        cell, num = _value(v, depth)
        out.append(f"<tr><th>{_e(k)}</th><td{' class=num' if num else ''}>{cell}</td></tr>")
    out.append("</table>")
    return "".join(out)


def _section(title: str, body: object) -> str:
    content = _table(body) if isinstance(body, Mapping) and body else _value(body)[0]
    return f"<section><h2>{_e(title)}</h2>{content}</section>"


def _result(report: Mapping[str, Any]) -> str:
    ok = report.get("ok")
    problems = report.get("problems") or []
    if not isinstance(problems, list):
        problems = [problems]
    if ok is True and not problems:
        return '<div class="result ok">RESULT: OK</div>'
    if ok is None and not problems:
        return '<div class="result unknown">RESULT: unknown (the report has no "ok")</div>'
    items = "".join(f"<li>{_e(p)}</li>" for p in problems) or "<li>(no problem named)</li>"
    return f'<div class="result problems">RESULT: PROBLEMS<ul>{items}</ul></div>'


# ---------------------------------------------------------------------------------------------------- series


class SeriesError(ValueError):
    """A series of the report is missing or not in the documented shape (the message says what was expected)."""


def _finite(xs: object, what: str) -> list[float]:
    if not isinstance(xs, list | tuple):
        raise SeriesError(f"{what} is not a list of numbers")
    out = [float(x) for x in xs if _is_number(x) and math.isfinite(x)]
    if not out:
        raise SeriesError(f"{what} holds no finite number")
    return out


def freshness_series(series: Mapping[str, Any]) -> dict[str, list[float]]:
    """``series.freshness_s`` as name -> finite seconds (series without one are left out)."""
    raw = series.get("freshness_s")
    if not isinstance(raw, Mapping) or not raw:
        raise SeriesError("no freshness series (series.freshness_s: {name: [seconds, ...]})")
    out: dict[str, list[float]] = {}
    for name, xs in raw.items():
        try:
            out[str(name)] = _finite(xs, f"series.freshness_s[{name!r}]")
        except SeriesError:
            continue
    if not out:
        raise SeriesError("series.freshness_s has no series with a finite number of seconds")
    return out


def lag_series(series: Mapping[str, Any]) -> tuple[list[float], list[float]]:
    """``series.lag`` as (t seconds, total lag), sorted by time, non-finite points left out."""
    raw = series.get("lag")
    if not isinstance(raw, list | tuple) or not raw:
        raise SeriesError("no lag series (series.lag: [[t_seconds_since_start, total_lag], ...])")
    pts = sorted(
        (float(p[0]), float(p[1])) for p in raw
        if isinstance(p, list | tuple) and len(p) == 2 and all(_is_number(x) and math.isfinite(x) for x in p)
    )
    if not pts:
        raise SeriesError("series.lag has no [t_seconds_since_start, total_lag] pair of finite numbers")
    return [t for t, _ in pts], [v for _, v in pts]


def quality_series(series: Mapping[str, Any]) -> dict[str, dict[str, dict[str, float]]]:
    """``series.quality`` as section -> model -> metric -> value, keeping :data:`QUALITY_METRICS` only."""
    raw = series.get("quality")
    if not isinstance(raw, Mapping) or not raw:
        raise SeriesError("no quality series (series.quality: {section: {model: {'ndcg@20': x, 'recall@20': y}}})")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for title, models in raw.items():
        if not isinstance(models, Mapping):
            continue
        sec: dict[str, dict[str, float]] = {}
        for model, metrics in models.items():
            if not isinstance(metrics, Mapping):
                continue
            low = {str(k).lower(): v for k, v in metrics.items()}
            vals = {m: float(low[m]) for m in QUALITY_METRICS
                    if _is_number(low.get(m)) and math.isfinite(low[m])}
            if vals:
                sec[str(model)] = vals
        if sec:
            out[str(title)] = sec
    if not out:
        raise SeriesError(f"series.quality has no model with a finite {' or '.join(QUALITY_METRICS)}")
    return out


# ---------------------------------------------------------------------------------------------------- plots


def _label(text: object) -> str:
    """Report text as matplotlib text: a ``$`` would start mathtext (and a malformed one fails the drawing)."""
    return str(text).replace("$", r"\$")


def _figure(width: float, height: float) -> Figure:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=100)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _pct(xs: Sequence[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, max(0, math.ceil(q / 100 * len(s)) - 1))]


def plot_freshness(curves: Mapping[str, list[float]]) -> str:
    fig = _figure(8, 4.5)
    ax = fig.add_subplot()
    lo = min(min(xs) for xs in curves.values())
    hi = max(max(xs) for xs in curves.values())
    for name, xs in curves.items():
        s = sorted(xs)
        n = len(s)
        ax.step(s, [(i + 1) / n for i in range(n)], where="post",
                label=f"{_label(name)} (n={n}, p50 {_pct(s, 50):.3g} s, p99 {_pct(s, 99):.3g} s)")
    if lo > 0 and hi / lo > 100:
        ax.set_xscale("log")
    ax.set_xlabel("seconds from produce to searchable / applied")
    ax.set_ylabel("share of events")
    ax.set_ylim(0, 1.02)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    ax.set_title("Freshness CDF")
    return _png(fig)


def plot_quality(quality: Mapping[str, Mapping[str, Mapping[str, float]]]) -> str:
    n = len(quality)
    fig = _figure(max(6.0, 1.2 * max(len(m) for m in quality.values()) + 2), 3.6 * n)
    for row, (title, models) in enumerate(quality.items()):
        ax = fig.add_subplot(n, 1, row + 1)
        metrics = [m for m in QUALITY_METRICS if any(m in v for v in models.values())]
        width = 0.8 / len(metrics)
        names = list(models)
        for j, metric in enumerate(metrics):
            xs = [i + (j - (len(metrics) - 1) / 2) * width for i in range(len(names))]
            ys = [models[nm].get(metric, math.nan) for nm in names]
            bars = ax.bar(xs, ys, width, label=metric)
            ax.bar_label(bars, fmt="%.3f", fontsize=7)
        ax.set_xticks(range(len(names)), [_label(nm) for nm in names], rotation=20, ha="right", fontsize=8)
        ax.set_title(_label(title), fontsize=10)
        ax.margins(y=0.15)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return _png(fig)


def plot_lag(t: Sequence[float], lag: Sequence[float]) -> str:
    fig = _figure(8, 3.5)
    ax = fig.add_subplot()
    ax.plot(t, lag, marker=".", linewidth=1)
    ax.set_xlabel("seconds since start")
    ax.set_ylabel("consumer lag (records)")
    ax.set_ylim(bottom=0)
    ax.grid(True, alpha=0.3)
    ax.set_title("Consumer lag over time")
    return _png(fig)


def _plot(title: str, draw: Callable[[], str]) -> str:
    try:
        png = draw()
    except SeriesError as exc:
        return f'<h3>{_e(title)}</h3><p class="note">Plot left out: {_e(exc)}.</p>'
    except Exception as exc:  # noqa: BLE001 - a plot that cannot be drawn must not cost the page
        return f'<h3>{_e(title)}</h3><p class="note">Plot left out: drawing failed: {_e(type(exc).__name__)}: ' \
               f'{_e(exc)}.</p>'
    return f'<h3>{_e(title)}</h3><figure><img alt="{_e(title)}" src="data:image/png;base64,{png}"></figure>'


def _plots(series: object) -> str:
    data: Mapping[str, Any] = series if isinstance(series, Mapping) else {}
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return ('<p class="note">No plots: matplotlib is not installed (it comes with the train extra: '
                "pip install 'thaw[train]').</p>")
    parts = [
        _plot("Freshness", lambda: plot_freshness(freshness_series(data))),
        _plot("Quality per arm and per model", lambda: plot_quality(quality_series(data))),
        _plot("Consumer lag", lambda: plot_lag(*lag_series(data))),
    ]
    return "<section><h2>Plots</h2>" + "".join(parts) + "</section>"


# ---------------------------------------------------------------------------------------------------- page


def render_html(report: Mapping[str, Any], title: str = "Thaw demo report") -> str:
    """The report as a self-contained HTML page (see the module docstring for the report's shape)."""
    body = [f"<h1>{_e(title)}</h1>", _result(report), _plots(report.get("series"))]
    body += [_section(str(name), sec) for name, sec in report.items() if name not in RESERVED]
    return (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head>\n<body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def write_report(report: Mapping[str, Any], json_path: Path | None, html_path: Path | None) -> None:
    """Write the report as JSON and/or as its HTML page (either path may be None)."""
    if json_path is not None:
        json_path.write_text(json.dumps(report, indent=2, default=str))
    if html_path is not None:
        html_path.write_text(render_html(report), encoding="utf-8")
