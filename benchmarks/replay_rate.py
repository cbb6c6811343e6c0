"""Replayer throughput: the sustained produce rate of ``thaw replay`` to the local Kafka, and the requested rate at
which it starts to fall behind.

Run: ``python -m benchmarks.replay_rate [--events 50000] [--rates 1000,5000,10000,20000,40000,0]
[--catalogue community|lastfm]`` (rate 0 = as fast as possible). Each phase publishes simulator user events
(validated contract events, stamped at send) through :class:`workloads.replay.Publisher` into a fresh topic and
records the achieved rate and how far behind its schedule the producer got. Also measures the simulator's own
generation rate. The simulator runs on the demo community's catalogue (registry data: ``thaw corpus music build
--clips 160``) unless ``--catalogue lastfm`` asks for Last.fm (``THAW_DATASETS_DIR``). Writes
``benchmarks/results/replay_rate.json`` and ``.png``.
"""

from __future__ import annotations

import argparse
import json
import time
import uuid
from pathlib import Path
from typing import Any

from contracts.topics import Topics
from infra import clients
from infra.settings import load_settings
from infra.stack import LocalStack
from infra.topics import ensure_topics
from workloads.community import SIM_CATALOGUES, sim_catalogue
from workloads.replay import Publisher
from workloads.simulator import Catalogue, CommunitySimulator, SimConfig


def _events(cat: Catalogue, n: int, seed: int = 0) -> list[dict[str, Any]]:
    sim = CommunitySimulator(cat, SimConfig(seed=seed))
    out = []
    for ev in sim.stream():
        if ev.topic == "user.events":
            d = dict(ev.data)
            d.pop("ts", None)
            out.append(d)
            if len(out) >= n:
                break
    return out


def run(events: int, rates: list[float], out_dir: Path, catalogue: str = "community",
        gen_events: int = 200_000) -> dict[str, Any]:
    base = load_settings()
    started = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    LocalStack(base).up()
    cat = sim_catalogue(catalogue)
    t0 = time.perf_counter()
    sim = CommunitySimulator(cat, SimConfig(seed=1))
    n_gen = sum(1 for _ in sim.stream(max_events=gen_events))
    gen_rate = n_gen / (time.perf_counter() - t0)
    evs = _events(cat, events)
    phases = []
    for rate in rates:
        s = base.namespaced("bench_replay_" + uuid.uuid4().hex[:8])
        topics = Topics.for_prefix(s.kafka.topic_prefix)
        ensure_topics(s.kafka, topics)
        pub = Publisher(s, rate=rate)
        t = time.perf_counter()
        for e in evs:
            pub.send_event(topics.user_events, e)
        send_s = time.perf_counter() - t
        pub.close()
        total_s = time.perf_counter() - t
        phases.append({
            "requested_rate": rate,
            "events": len(evs),
            "achieved_rate_send": round(len(evs) / send_s, 1),
            "achieved_rate_acked": round(len(evs) / total_s, 1),
            "max_behind_schedule_s": round(pub.max_behind_s, 3),
            "keeps_up": bool(rate > 0 and len(evs) / send_s >= 0.98 * rate and pub.max_behind_s < 1.0),
        })
        _drop_topics(s, topics)
    keeping = [p["requested_rate"] for p in phases if p["keeps_up"]]
    lagging = [p["requested_rate"] for p in phases if p["requested_rate"] > 0 and not p["keeps_up"]]
    report = {
        "benchmark": "replay_rate",
        "started_at": started,
        "config": {"events": events, "rates": rates, "catalogue": catalogue, "catalogue_sources": cat.sources},
        "simulator_events_per_s": round(gen_rate),
        "max_rate_events_per_s": max((p["achieved_rate_acked"] for p in phases), default=None),
        "highest_rate_kept_up": max(keeping, default=None),
        "lowest_rate_falling_behind": min(lagging, default=None),
        "phases": phases,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "replay_rate.json").write_text(json.dumps(report, indent=2))
    _plot(report, out_dir / "replay_rate.png")
    return report


def _drop_topics(s: Any, topics: Topics) -> None:

    admin = clients.kafka_admin(s.kafka)
    try:
        admin.delete_topics(topics.all())
    except Exception:  # noqa: BLE001 - cleanup only
        pass
    finally:
        admin.close()


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ph = [p for p in report["phases"] if p["requested_rate"] > 0]
    fig, ax = plt.subplots(figsize=(6, 4))
    req = [p["requested_rate"] for p in ph]
    ax.plot(req, req, "--", color="grey", label="requested")
    ax.plot(req, [p["achieved_rate_send"] for p in ph], "o-", label="achieved")
    ax.set_xlabel("requested events/s")
    ax.set_ylabel("achieved events/s")
    ax.set_title(f"thaw replay → local Kafka (max {report['max_rate_events_per_s']:.0f}/s)")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.replay_rate", description=__doc__.split("\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    ap.add_argument("--rates", default="1000,5000,10000,20000,40000,0")
    ap.add_argument("--catalogue", choices=SIM_CATALOGUES, default="community",
                    help="simulator catalogue: community (default, registry data) or lastfm (THAW_DATASETS_DIR)")
    ap.add_argument("--out", type=Path, default=Path(__file__).parent / "results")
    args = ap.parse_args(argv)
    rep = run(args.events, [float(x) for x in args.rates.split(",")], args.out, args.catalogue,
              gen_events=max(args.events, 50_000))
    print(json.dumps(rep, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
