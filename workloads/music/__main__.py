"""Command line: ``python -m workloads.music build|stats``."""

from __future__ import annotations

import argparse
import json
import logging
import sys

from workloads.music.build import build_music_corpus, corpus_stats, report_dict


def _print_stats(stats: dict) -> None:
    print(f"corpus: {stats['dir']}")
    print(
        f"clips: {stats['clips']:,}  duration: {stats['total_duration_s'] / 3600:.2f} h  "
        f"disk: {stats['disk_bytes'] / 2**20:.1f} MiB  failures: {stats['failures']:,} {stats['failures_by_reason']}"
    )
    for name, info in stats["tags"].items():
        top = ", ".join(f"{v} {n}" for v, n in info["top"].items())
        print(f"  {name} ({info['distinct']} values): {top}")


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the process exit code."""
    parser = argparse.ArgumentParser(prog="python -m workloads.music")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="render the music21 corpus to tagged 16 kHz mono clips (resumable)")
    b.add_argument("--clips", type=int, default=2000, help="target number of clips")
    b.add_argument("--seconds", type=float, default=10.0, help="clip length in seconds")
    b.add_argument("--workers", type=int, default=None, help="worker processes (default: cpu count)")
    b.add_argument("--out", default=None, help="corpus directory (default $THAW_CORPUS_DIR or ~/.cache/thaw/...)")
    b.add_argument("--seed", type=int, default=0, help="seed of selection, instruments and tempi")
    b.add_argument("--timeout", type=float, default=60.0, help="fluidsynth wall-clock limit per clip (s)")
    b.add_argument("--retry-failures", action="store_true", help="re-try clips listed in failures.jsonl")
    b.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    s = sub.add_parser("stats", help="counts per tag field, total duration, disk size")
    s.add_argument("--out", default=None, help="corpus directory")
    s.add_argument("--top", type=int, default=8, help="values listed per tag field")
    s.add_argument("--json", action="store_true", help="print JSON")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    if args.cmd == "build":
        report = build_music_corpus(
            n_clips=args.clips,
            seconds=args.seconds,
            workers=args.workers,
            out_dir=args.out,
            seed=args.seed,
            render_timeout_s=args.timeout,
            retry_failures=args.retry_failures,
            progress=not args.no_progress,
        )
        json.dump(report_dict(report), sys.stdout, indent=2)
        sys.stdout.write("\n")
        return 0
    stats = corpus_stats(args.out, top=args.top)
    if args.json:
        json.dump(stats, sys.stdout, indent=2)
        sys.stdout.write("\n")
    else:
        _print_stats(stats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
