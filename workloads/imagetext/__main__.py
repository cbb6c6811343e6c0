"""Command line: ``python -m workloads.imagetext {build,stats}``.

``build [--size 128] [--misaligned 0.1] [--eval-misaligned 1.0] [--seed 0] [--split-seed 0] [--background
'#ffffff'] [--out DIR] [--workers N] [--limit N]`` renders and writes the corpus (resumable), then prints its
stats; ``stats [--dir DIR] [--json]`` prints the stats of an existing build.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from workloads.imagetext.corpus import build_imagetext_corpus, corpus_stats


def _format(stats: dict[str, Any]) -> str:
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


def main(argv: list[str] | None = None) -> int:
    """Runs the CLI; returns the exit code."""
    parser = argparse.ArgumentParser(prog="python -m workloads.imagetext", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="fetch, render and caption the OpenMoji corpus (resumable)")
    b.add_argument("--size", type=int, default=128, help="PNG side in pixels")
    b.add_argument("--misaligned", type=float, default=0.1, help="share of train pairs with a wrong caption")
    b.add_argument("--eval-misaligned", type=float, default=1.0, help="extra misaligned val/test pairs per image")
    b.add_argument("--seed", type=int, default=0, help="seed of the misalignment draws")
    b.add_argument("--split-seed", type=int, default=0, help="seed of the split hash")
    b.add_argument("--background", default="#ffffff", help="composite colour, or 'none' for RGBA PNGs")
    b.add_argument("--out", default=None, help="build directory (default: $THAW_CORPUS_DIR/imagetext/...)")
    b.add_argument("--cache-dir", default=None, help="corpus cache holding the npm install")
    b.add_argument("--workers", type=int, default=None, help="render processes (default: all cores; 0: inline)")
    b.add_argument("--limit", type=int, default=None, help="only the first N emojis (smoke test)")
    b.add_argument("--no-progress", action="store_true", help="no progress bar")
    b.add_argument("--json", action="store_true", help="print the stats as JSON")
    s = sub.add_parser("stats", help="print the stats of a build")
    s.add_argument("--dir", default=None, help="build directory")
    s.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)

    if args.cmd == "build":
        report = build_imagetext_corpus(
            args.out,
            size=args.size,
            background=args.background,
            misaligned_share=args.misaligned,
            eval_misaligned_share=args.eval_misaligned,
            seed=args.seed,
            split_seed=args.split_seed,
            workers=args.workers,
            limit=args.limit,
            cache_dir=args.cache_dir,
            progress=not args.no_progress,
        )
        print(
            f"rendered {report.rendered}, cached {report.cached}, failed {len(report.failures)}, "
            f"rsvg-convert fallback {report.fallback_ids}, {report.rows:,} pairs in {report.seconds:.1f} s",
            file=sys.stderr,
        )
        for f in report.failures:
            print(f"  failed {f['id']}: {f['error']}", file=sys.stderr)
        stats = corpus_stats(report.out_dir)
    else:
        stats = corpus_stats(args.dir)
    print(json.dumps(stats, indent=2, ensure_ascii=False) if args.json else _format(stats))
    return 0


if __name__ == "__main__":
    sys.exit(main())
