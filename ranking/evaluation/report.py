"""One report writer for every offline evaluation: JSON on disk (NaN/inf as ``null``) and a table or JSON on stdout."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import numpy as np


def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o)}")


def _clean(x: Any) -> Any:
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_clean(v) for v in x]
    return x


def report_json(report: dict[str, Any]) -> str:
    """The report as JSON (NaN/inf become ``null``)."""
    return json.dumps(_clean(report), indent=2, default=_json_default)


def emit_report(report: dict[str, Any], out: Path | None, as_json: bool, table: Any) -> None:
    """Writes the JSON report to ``out`` (when given) and prints it as JSON or as ``table(report)``."""
    text = report_json(report)
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n")
    print(text if as_json else table(report))
