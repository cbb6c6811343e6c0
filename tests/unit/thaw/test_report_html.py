"""The demo report's HTML page: self-contained, every section a table, plots from ``series``, everything escaped."""

from __future__ import annotations

import base64
import json
import math
import re
from html.parser import HTMLParser

import pytest

from tests.thaw_cli import thaw
from thaw.report_html import render_html, write_report

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _report() -> dict:
    return {
        "ok": True,
        "problems": [],
        "series": {
            "freshness_s": {"content.new": [0.2 + 0.01 * i for i in range(50)],
                            "user.events": [0.02 + 0.001 * i for i in range(200)]},
            "lag": [[0.0, 120], [1.0, 80], [2.5, 10], [4.0, 0]],
            "quality": {
                "cold items": {"served": {"ndcg@20": 0.31, "recall@20": 0.42, "users": 40},
                               "popularity": {"ndcg@20": 0.12, "recall@20": 0.2}},
                "A/B arms": {"gated": {"NDCG@20": 0.2, "recall@20": 0.3}, "plain": {"ndcg@20": 0.18}},
            },
        },
        "freshness": {"content p50_s": 0.45, "content p99_s": 0.69, "n": 50, "nan stays": math.nan},
        "cf space": {"space": "cf", "version": "v3", "fields": ["text", "audio_clip"],
                     "encoders": {"musicclip": {"version": "1", "dim": 512}, "minilm": {"version": "1"}},
                     "deep": {"a": {"b": {"c": {"d": 1}}}}, "rows": [{"item": "x", "score": 0.5}]},
    }


class _Page(HTMLParser):
    """Collects the tags and the plain text of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data):
        self.text.append(data)


def _parse(page: str) -> _Page:
    p = _Page()
    p.feed(page)
    return p


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(m) for m in re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page)]


def test_the_page_has_the_result_every_section_and_three_plots() -> None:
    page = render_html(_report())
    parsed = _parse(page)
    text = " ".join(parsed.text)
    assert "RESULT: OK" in text
    for heading in ("freshness", "cf space", "Plots", "Freshness", "Quality per arm and per model", "Consumer lag"):
        assert heading in text
    assert "series" not in {t.strip() for t in parsed.text}  # the plot data is not a section
    imgs = _images(page)
    assert len(imgs) == 3 and all(i.startswith(PNG_MAGIC) and len(i) > 5000 for i in imgs)
    # tables: a row per key, nested dicts as nested tables, lists joined, deep nesting as JSON
    assert "<th>content p99_s</th><td class=num>0.69</td>" in page
    assert "<th>nan stays</th><td class=num>NaN</td>" in page
    assert "<th>fields</th><td>text, audio_clip</td>" in page
    assert "<th>musicclip</th><td><table><tr><th>version</th><td>1</td></tr><tr><th>dim</th><td class=num>512" in page
    assert "&quot;d&quot;: 1" in page
    assert "&quot;score&quot;: 0.5" in page
    assert "Plot left out" not in page


def test_the_page_is_self_contained() -> None:
    page = render_html(_report())
    tags = _parse(page).tags
    assert not [t for t, _ in tags if t in ("script", "link", "iframe", "object", "embed")]
    srcs = [a.get("src") or "" for t, a in tags if t == "img"]
    assert srcs and all(s.startswith("data:image/png;base64,") for s in srcs)
    assert not re.search(r"""(?:src|href)=["']?(?:https?:)?//""", page)
    assert "url(" not in page


def test_problems_are_listed() -> None:
    rep = _report() | {"ok": False, "problems": ["freshness p99 3.2 s > 2 s", "arm gated: 503"]}
    parsed = _parse(render_html(rep))
    items = [d for d in parsed.text if d.startswith(("freshness p99", "arm gated"))]
    assert "RESULT: PROBLEMS" in " ".join(parsed.text)
    assert items == ["freshness p99 3.2 s > 2 s", "arm gated: 503"]


HOSTILE = '<script>alert("x")</script><img src=x onerror=alert(1)>&amp;'


def test_every_string_is_escaped() -> None:
    rep = {
        "ok": False,
        "problems": [HOSTILE],
        "series": {"freshness_s": {HOSTILE: [0.1, 0.2, 0.3]},
                   "quality": {HOSTILE: {HOSTILE: {"ndcg@20": 0.1, "recall@20": 0.2}}},
                   "lag": [[0, 1], [1, 0]]},
        HOSTILE: {HOSTILE: HOSTILE, "list": [HOSTILE, 1], "nested": {HOSTILE: [{"t": HOSTILE}]}},
        "plain": HOSTILE,
    }
    page = render_html(rep, title=HOSTILE)
    parsed = _parse(page)
    assert [t for t, _ in parsed.tags if t == "script"] == []
    assert [a for t, a in parsed.tags if t == "img" and "onerror" in a] == []
    assert all((a.get("src") or "").startswith("data:image/png;base64,") for t, a in parsed.tags if t == "img")
    text = "".join(parsed.text)
    assert text.count(HOSTILE) >= 6  # title x2, problem, section title, key, value, plain section: all as text
    assert "&lt;script&gt;" in page and "<script>" not in page
    assert len(_images(page)) == 3  # the hostile names were drawn as text, not parsed as markup or mathtext


def test_dollar_signs_in_names_do_not_break_the_plots() -> None:
    rep = {"ok": True, "series": {"freshness_s": {"$\\frac{": [0.1, 0.2]},
                                  "quality": {"$x^$": {"a$b": {"ndcg@20": 0.1}}}}}
    assert len(_images(render_html(rep))) == 2


@pytest.mark.parametrize("series", [
    None,
    {},
    {"freshness_s": {}, "quality": {}, "lag": []},
    {"freshness_s": {"a": []}, "quality": {"s": {"m": {"hits": 3}}}, "lag": [[1]]},
    {"freshness_s": [1, 2], "quality": [1], "lag": {"t": 1}},
    {"freshness_s": {"a": ["x", None, math.nan]}, "quality": {"s": "text"}, "lag": [["a", "b"], [math.inf, 1]]},
])
def test_missing_or_malformed_series_leave_the_plot_out_with_a_note(series) -> None:
    rep = {"ok": True, "problems": [], "counts": {"items": 4}}
    if series is not None:
        rep["series"] = series
    page = render_html(rep)
    assert _images(page) == []
    notes = re.findall(r'<p class="note">Plot left out: ([^<]*)</p>', page)
    assert len(notes) == 3
    assert any("series.freshness_s" in n for n in notes)
    assert any("series.quality" in n for n in notes)
    assert any("series.lag" in n for n in notes)
    assert "<th>items</th><td class=num>4</td>" in page


def test_one_missing_series_leaves_the_others() -> None:
    rep = _report()
    del rep["series"]["lag"]
    rep["series"]["freshness_s"]["empty"] = []  # an empty curve is left out, the others drawn
    page = render_html(rep)
    assert len(_images(page)) == 2
    assert re.findall(r'Plot left out: ([^<]*)</p>', page) == [
        "no lag series (series.lag: [[t_seconds_since_start, total_lag], ...])."]


def test_a_report_without_ok_or_sections_renders() -> None:
    page = render_html({})
    assert "RESULT: unknown" in page
    assert page.count("Plot left out") == 3


def test_write_report_and_the_command(tmp_path) -> None:
    rep = _report()
    j, h = tmp_path / "r.json", tmp_path / "r.html"
    write_report(rep, j, h)
    assert json.loads(j.read_text())["freshness"]["n"] == 50
    assert h.read_text().startswith("<!DOCTYPE html>")
    out = tmp_path / "again.html"
    assert thaw("report", "html", "--in", str(j), "--out", str(out)) == 0
    assert _images(out.read_text()) and len(_images(out.read_text())) == 3
    assert "<th>content p50_s</th><td class=num>0.45</td>" in out.read_text()


def test_the_command_refuses_what_is_not_a_report(tmp_path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    with pytest.raises(SystemExit) as exc:
        thaw("report", "html", "--in", str(bad), "--out", str(tmp_path / "x.html"))
    assert exc.value.code == 2
    assert not (tmp_path / "x.html").exists()


def test_a_plot_that_fails_to_draw_is_a_note_not_a_crash(monkeypatch) -> None:
    import thaw.report_html as rh

    def broken(*_a, **_k):
        raise RuntimeError("no <canvas>")

    monkeypatch.setattr(rh, "plot_lag", broken)
    page = render_html(_report())
    assert len(_images(page)) == 2
    assert "Plot left out: drawing failed: RuntimeError: no &lt;canvas&gt;." in page
