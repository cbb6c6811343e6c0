"""SVG → PNG rendering with cairosvg, falling back to ``rsvg-convert``, in a process pool.

cairosvg renders an OpenMoji SVG at 128 px in ~3–4 ms; in openmoji 17.0.0 it fails on exactly one file
(``1F3F4-E0065-E0073-E0063-E006D-E007F``, the Castile-La Mancha flag: ``AttributeError`` inside cairosvg), which
``rsvg-convert`` (Debian ``librsvg2-bin``) renders fine. A render that raises or comes out fully transparent is
retried with ``rsvg-convert``; a file both miss is reported as a failure.

OpenMoji SVGs have a transparent background. Each PNG is composited onto an opaque background colour (white by
default) and stored as RGB: image encoders expect opaque RGB, and dropping the alpha channel naively (what
``Image.convert("RGB")`` does) leaves the black outlines on black. ``background=None`` keeps RGBA PNGs instead.
PNGs are written to a temporary name and renamed, so an interrupted build never leaves a truncated file behind and
a re-run only renders what is missing.
"""

from __future__ import annotations

import io
import multiprocessing
import os
import shutil
import subprocess
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from PIL import Image, ImageColor

RSVG_TIMEOUT_S = 60.0
Renderer = Literal["auto", "cairosvg", "rsvg-convert"]
RGB = tuple[int, int, int]


def parse_background(background: str | None) -> RGB | None:
    """Parses a background colour.

    Args:
        background: Any PIL colour (``"#ffffff"``, ``"white"``, ``"rgb(0,0,0)"``), or ``None`` /
            ``"none"`` / ``"transparent"`` to keep transparency.

    Returns:
        An RGB triple, or ``None`` for transparent.
    """
    if background is None or background.strip().lower() in ("none", "transparent", ""):
        return None
    rgb = ImageColor.getrgb(background)
    return (int(rgb[0]), int(rgb[1]), int(rgb[2]))


def background_tag(background: RGB | None) -> str:
    """Short name of a background for directory names: ``"ffffff"`` or ``"rgba"``."""
    if background is None:
        return "rgba"
    return "".join(f"{c:02x}" for c in background)


def _render_cairosvg(svg: Path, size: int) -> Image.Image:
    try:
        import cairosvg
    except ImportError as exc:  # pragma: no cover - exercised only on a broken install
        raise RuntimeError("cairosvg is not installed: pip install cairosvg") from exc
    png = cairosvg.svg2png(bytestring=svg.read_bytes(), output_width=size, output_height=size)
    return Image.open(io.BytesIO(png)).convert("RGBA")


def _render_rsvg(svg: Path, size: int) -> Image.Image:
    exe = shutil.which("rsvg-convert")
    if exe is None:
        raise RuntimeError("rsvg-convert not found: apt-get install librsvg2-bin")
    cmd = [exe, "-w", str(size), "-h", str(size), "-f", "png", str(svg)]
    proc = subprocess.run(cmd, capture_output=True, check=False, timeout=RSVG_TIMEOUT_S)
    if proc.returncode != 0 or not proc.stdout:
        raise RuntimeError(f"rsvg-convert failed ({proc.returncode}): {proc.stderr.decode(errors='replace')[-500:]}")
    return Image.open(io.BytesIO(proc.stdout)).convert("RGBA")


def _finish(img: Image.Image, size: int, background: RGB | None) -> Image.Image:
    """Checks the raw RGBA render and composites it onto the background."""
    if img.size != (size, size):
        img = img.resize((size, size), Image.Resampling.LANCZOS)
    if int(np.asarray(img)[..., 3].max()) == 0:
        raise RuntimeError("render is fully transparent")
    if background is None:
        return img
    canvas = Image.new("RGBA", img.size, (*background, 255))
    return Image.alpha_composite(canvas, img).convert("RGB")


def render_svg(
    svg: str | os.PathLike[str],
    size: int = 128,
    background: RGB | None = (255, 255, 255),
    renderer: Renderer = "auto",
) -> tuple[Image.Image, str]:
    """Renders one SVG to a square image.

    Args:
        svg: Path of the SVG file.
        size: Output width and height in pixels.
        background: RGB colour to composite onto (RGB output), or ``None`` for an RGBA image.
        renderer: ``"auto"`` tries cairosvg then ``rsvg-convert``; the others force one renderer.

    Returns:
        ``(image, renderer_used)``.

    Raises:
        RuntimeError: Every renderer tried failed (the message lists each error).
    """
    path = Path(svg)
    order: list[str] = ["cairosvg", "rsvg-convert"] if renderer == "auto" else [renderer]
    errors: list[str] = []
    for name in order:
        try:
            raw = _render_cairosvg(path, size) if name == "cairosvg" else _render_rsvg(path, size)
            return _finish(raw, size, background), name
        except Exception as exc:  # any renderer error triggers the fallback
            errors.append(f"{name}: {type(exc).__name__}: {exc}")
    raise RuntimeError("; ".join(errors))


@dataclass(frozen=True)
class RenderJob:
    """One SVG to render to ``png``."""

    id: str
    svg: str
    png: str


@dataclass(frozen=True)
class RenderResult:
    """Outcome of one :class:`RenderJob`.

    Attributes:
        id: Job id (the emoji hexcode).
        ok: True when the PNG was written.
        renderer: ``"cairosvg"`` or ``"rsvg-convert"`` when ok, else ``""``.
        seconds: Wall time of the render and write.
        error: Error text when not ok (one entry per renderer tried).
    """

    id: str
    ok: bool
    renderer: str
    seconds: float
    error: str = ""


def _run_job(job: RenderJob, size: int, background: RGB | None) -> RenderResult:
    t0 = time.perf_counter()
    try:
        img, used = render_svg(job.svg, size=size, background=background)
        out = Path(job.png)
        tmp = out.with_name(f".{out.name}.{os.getpid()}.tmp")
        img.save(tmp, format="PNG")
        os.replace(tmp, out)
    except Exception as exc:  # recorded per file; the build goes on
        return RenderResult(job.id, False, "", time.perf_counter() - t0, str(exc))
    return RenderResult(job.id, True, used, time.perf_counter() - t0)


def _run_chunk(jobs: list[RenderJob], size: int, background: RGB | None) -> list[RenderResult]:
    return [_run_job(j, size, background) for j in jobs]


def check_renderers() -> dict[str, str | None]:
    """Reports the renderers available in this environment.

    Returns:
        ``{"cairosvg": version or None, "rsvg-convert": path or None}``.
    """
    try:
        import cairosvg

        cairo_version: str | None = str(cairosvg.__version__)
    except Exception:  # ImportError, or OSError when libcairo is missing
        cairo_version = None
    return {"cairosvg": cairo_version, "rsvg-convert": shutil.which("rsvg-convert")}


def render_pngs(
    jobs: Sequence[RenderJob],
    size: int = 128,
    background: RGB | None = (255, 255, 255),
    workers: int | None = None,
    chunk: int = 32,
    progress: bool = True,
) -> list[RenderResult]:
    """Renders many SVGs, in a process pool when ``workers > 0``.

    Jobs whose PNG already exists are not passed in by the caller (see the build); here every job is rendered.

    Args:
        jobs: What to render; the PNG directories must exist.
        size: Output width and height in pixels.
        background: Composite colour or ``None`` for RGBA.
        workers: Pool size; ``None`` uses ``os.cpu_count()``, ``0`` renders in this process.
        chunk: Jobs per pool task (a render takes ~3 ms, so single-job tasks would be dominated by IPC).
        progress: Show a tqdm progress bar.

    Returns:
        One result per job, in job order.
    """
    from tqdm import tqdm

    if not jobs:
        return []
    n_workers = (os.cpu_count() or 1) if workers is None else max(0, workers)
    n_workers = min(n_workers, max(1, len(jobs) // chunk + 1)) if n_workers else 0
    by_id: dict[str, RenderResult] = {}
    bar = tqdm(total=len(jobs), desc="render openmoji", unit="svg", disable=not progress)
    try:
        if n_workers == 0:
            for job in jobs:
                res = _run_job(job, size, background)
                by_id[job.id] = res
                bar.update(1)
        else:
            # forkserver: a clean worker even if the parent already runs torch/BLAS threads (fork could deadlock).
            ctx = multiprocessing.get_context("forkserver")
            with ProcessPoolExecutor(max_workers=n_workers, mp_context=ctx) as pool:
                futures = [
                    pool.submit(_run_chunk, list(jobs[i : i + chunk]), size, background)
                    for i in range(0, len(jobs), chunk)
                ]
                for fut in as_completed(futures):
                    results = fut.result()
                    for res in results:
                        by_id[res.id] = res
                    bar.update(len(results))
    finally:
        bar.close()
    return [by_id[j.id] for j in jobs]
