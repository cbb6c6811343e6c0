"""``thaw corpus``: the media corpora the encoders train on (music21 audio, OpenMoji image-text)."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer

from thaw.commands._common import ProgressOpt, setup_logging

app = typer.Typer(no_args_is_help=True, help="The media corpora the encoders train on.")
music_app = typer.Typer(no_args_is_help=True, help="The music21 audio corpus: 10 s 16 kHz clips with tags.")
imagetext_app = typer.Typer(no_args_is_help=True, help="The OpenMoji image-text corpus with labelled misaligned pairs.")
app.add_typer(music_app, name="music")
app.add_typer(imagetext_app, name="imagetext")


@music_app.command("build")
def corpus_music_build(
    clips: Annotated[int, typer.Option(help="target number of clips")] = 2000,
    seconds: Annotated[float, typer.Option(help="clip length in seconds")] = 10.0,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: cpu count)")] = None,
    out: Annotated[str | None, typer.Option(help="corpus directory (default $THAW_CORPUS_DIR or "
                                            "~/.cache/thaw/...)")] = None,
    seed: Annotated[int, typer.Option(help="seed of selection, instruments and tempi")] = 0,
    timeout: Annotated[float, typer.Option(help="fluidsynth wall-clock limit per clip (s)")] = 60.0,
    retry_failures: Annotated[bool, typer.Option(help="re-try clips listed in failures.jsonl")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Render the music21 corpus to tagged 16 kHz mono clips (resumable); prints the build report as JSON."""
    from workloads.music.build import build_music_corpus, report_dict

    setup_logging("WARNING")
    report = build_music_corpus(n_clips=clips, seconds=seconds, workers=workers, out_dir=out, seed=seed,
                                render_timeout_s=timeout, retry_failures=retry_failures, progress=progress)
    typer.echo(json.dumps(report_dict(report), indent=2))


def _music_stats_text(stats: dict[str, Any]) -> str:
    lines = [
        f"corpus: {stats['dir']}",
        f"clips: {stats['clips']:,}  duration: {stats['total_duration_s'] / 3600:.2f} h  "
        f"disk: {stats['disk_bytes'] / 2**20:.1f} MiB  failures: {stats['failures']:,} {stats['failures_by_reason']}",
    ]
    for name, info in stats["tags"].items():
        top = ", ".join(f"{v} {n}" for v, n in info["top"].items())
        lines.append(f"  {name} ({info['distinct']} values): {top}")
    return "\n".join(lines)


@music_app.command("stats")
def corpus_music_stats(
    out: Annotated[str | None, typer.Option(help="corpus directory")] = None,
    top: Annotated[int, typer.Option(help="values listed per tag field")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Counts per tag field, total duration, disk size and failures of the built music corpus."""
    from workloads.music.build import corpus_stats

    stats = corpus_stats(out, top=top)
    typer.echo(json.dumps(stats, indent=2) if as_json else _music_stats_text(stats))


def _imagetext_stats_text(stats: dict[str, Any]) -> str:
    mib = (stats.get("png_bytes") or 0) / 2**20
    mib_disk = (stats.get("png_bytes_on_disk") or 0) / 2**20
    lines = [
        f"openmoji {stats['version']} corpus in {stats['dir']}",
        f"  images {stats['images']:,} (base {stats['base']:,}, skin-tone {stats['skintone']:,}); "
        f"with CLDR tags {stats['with_cldr_tags']:,}, with any tags {stats['with_any_tags']:,}",
        f"  split groups {stats['split_groups']:,}; sets of pixel-identical images {stats['identical_image_sets']}",
        f"  renderers {stats['renderers']}; failures {stats['failures']}",
        f"  PNGs {mib:.1f} MiB ({mib_disk:.1f} MiB on disk); last build {stats['build_seconds']} s "
        f"(render {stats['render_seconds']} s)",
        f"  {'split':<6}{'images':>8}{'base':>7}{'pairs':>8}{'misal.':>8}{'base pairs':>12}{'base misal.':>13}",
    ]
    for name, s in stats["splits"].items():
        lines.append(
            f"  {name:<6}{s['images']:>8,}{s['base_images']:>7,}{s['pairs']:>8,}{s['misaligned']:>8,}"
            f"{s['base_pairs']:>12,}{s['base_misaligned']:>13,}"
        )
    return "\n".join(lines)


def _echo_imagetext_stats(stats: dict[str, Any], as_json: bool) -> None:
    typer.echo(json.dumps(stats, indent=2, ensure_ascii=False) if as_json else _imagetext_stats_text(stats))


@imagetext_app.command("build")
def corpus_imagetext_build(
    size: Annotated[int, typer.Option(help="PNG side in pixels")] = 128,
    misaligned: Annotated[float, typer.Option(help="share of train pairs with a wrong caption")] = 0.1,
    eval_misaligned: Annotated[float, typer.Option(help="extra misaligned val/test pairs per image")] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of the misalignment draws")] = 0,
    split_seed: Annotated[int, typer.Option(help="seed of the split hash")] = 0,
    background: Annotated[str, typer.Option(help="composite colour, or 'none' for RGBA PNGs")] = "#ffffff",
    out: Annotated[str | None, typer.Option(help="build directory (default: $THAW_CORPUS_DIR/imagetext/...)")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="corpus cache holding the npm install")] = None,
    workers: Annotated[int | None, typer.Option(help="render processes (default: all cores; 0: inline)")] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N emojis (smoke test)")] = None,
    progress: ProgressOpt = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the stats as JSON")] = False,
) -> None:
    """Fetch, render and caption the OpenMoji corpus (resumable), then print its stats."""
    from workloads.imagetext.corpus import build_imagetext_corpus, corpus_stats

    report = build_imagetext_corpus(out, size=size, background=background, misaligned_share=misaligned,
                                    eval_misaligned_share=eval_misaligned, seed=seed, split_seed=split_seed,
                                    workers=workers, limit=limit, cache_dir=cache_dir, progress=progress)
    typer.echo(f"rendered {report.rendered}, cached {report.cached}, failed {len(report.failures)}, "
               f"rsvg-convert fallback {report.fallback_ids}, {report.rows:,} pairs in {report.seconds:.1f} s",
               err=True)
    for f in report.failures:
        typer.echo(f"  failed {f['id']}: {f['error']}", err=True)
    _echo_imagetext_stats(corpus_stats(report.out_dir), as_json)


@imagetext_app.command("stats")
def corpus_imagetext_stats(
    dir: Annotated[str | None, typer.Option(help="build directory")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Image, pair and misaligned-pair counts per split of the built OpenMoji corpus."""
    from workloads.imagetext.corpus import corpus_stats

    _echo_imagetext_stats(corpus_stats(dir), as_json)
