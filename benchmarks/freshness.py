"""Freshness: how long from producing a new item on ``content.new`` until it is searchable in Milvus.

``python -m benchmarks.freshness [--source text|mixed] [--dataset ml-100k|community|lastfm] [--items 1000]
[--rates 20[,50,...]] [--quantize none|int8] [--out benchmarks/results]``

Per rate (one phase each, fresh namespace and fresh worker): publish ``--items`` real items to ``content.new`` at
that rate and measure the latency two ways in the same run. ``--source text`` (default): text-only items, embedded
by MiniLM; ``--source mixed``: 40% tracks with audio (music21 renders), 30% moments with images (OpenMoji) and 30%
text posts, through every published encoder. The data is in a plain clone: text from MovieLens-100k (``text``) or
the demo community's composer posts (``mixed``); ``--dataset lastfm`` takes Last.fm artists from the optional
datasets folder (``THAW_DATASETS_DIR``) instead, only when asked. ``--quantize int8`` starts the worker with
``THAW_MODELS__QUANTIZE=int8`` (the int8 MiniLM; ``int8-all`` also the FLAVA-style image/text graphs; written by
``thaw models quantize``). The latency:

* trace: the worker's ``content.indexed`` freshness traces, ``indexed_at - produced_at`` (stamped after the upsert
  returned);
* searchable: a poller thread queries Milvus (``ItemIndex.get_rows`` for all pending ids, at the collection's
  consistency level, every ``--poll-ms`` with several queries in flight) and records ``found_at - produced_at``,
  where ``found_at`` is when the query that first returned the item came back. This is what a client sees; its
  resolution is the poll interval plus one query round trip (both reported). The gap to the trace is Milvus making
  the write visible to queries (one time tick, ~200 ms on 2.3). ``--extra-probe LEVEL`` adds a second poller at
  another consistency level (e.g. Strong).

Report: ``<out>/<name>.json`` (p50/p90/p99/max per definition and rate, achieved produce rate, per-batch stage ms
from the traces, where the time goes) and ``<out>/<name>.png`` (CDFs). ``<name>`` is ``freshness`` (text) or
``freshness_mixed``, with ``_<dataset>`` for a dataset other than the default and ``_int8`` when quantised
(:func:`report_name`; ``--name`` overrides it).
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import sys
import threading
import time
from collections import Counter
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from benchmarks._harness import (
    DEFAULT_OUT,
    TEXT_DATASETS,
    BenchError,
    CpuMeter,
    Worker,
    base_settings,
    cleanup_namespace,
    encoder_versions,
    machine_info,
    mixed_items,
    new_namespace,
    parse_rates,
    stack_up,
    summarize,
    text_items,
    wait_for,
    write_json,
)
from infra import clients
from infra.settings import Settings

log = logging.getLogger("benchmarks.freshness")


class SearchablePoller(threading.Thread):
    """Polls Milvus for every pending item id until it is returned; records when it was first found.

    A query is issued every ``interval_s`` for all still-pending ids, with up to ``max_inflight`` queries in flight
    (a Strong-consistency query waits for Milvus' time tick, ~200 ms here, so one query at a time would give a
    ~200 ms resolution instead of ``interval_s``). Each thread has its own :class:`ItemIndex` (an ItemIndex
    serialises calls on its client). ``consistency=None`` queries with ``ItemIndex.get_rows`` (the collection's
    consistency level, ``THAW_MILVUS__CONSISTENCY_LEVEL``); a level name queries ``client.get`` with that level.

    Per item it keeps the issue time and the answer time of the first query that returned it.
    """

    def __init__(self, settings: Settings, interval_s: float, consistency: str | None = None,
                 max_inflight: int = 16, dim: int = 384) -> None:
        super().__init__(name=f"poller-{consistency or 'default'}", daemon=True)
        self.settings = settings
        self.dim = dim
        self.consistency = consistency
        self.interval_s = interval_s
        self.max_inflight = max_inflight
        self.lock = threading.Lock()
        self.pending: dict[str, float] = {}  # item_id -> produced_at (epoch s)
        self.found_answer: dict[str, float] = {}  # item_id -> answer time of the first query returning it
        self.found_issue: dict[str, float] = {}  # item_id -> issue time of the first query returning it
        self.rtt_s: list[float] = []
        self.errors: list[str] = []
        self.skipped_ticks = 0
        self.stop_event = threading.Event()
        self._local = threading.local()
        self._indexes: list[Any] = []
        self._inflight = threading.Semaphore(max_inflight)

    def add(self, item_id: str, produced_at: float) -> None:
        with self.lock:
            self.pending[item_id] = produced_at

    def outstanding(self) -> int:
        with self.lock:
            return len(self.pending)

    def _index(self) -> Any:
        ix = getattr(self._local, "ix", None)
        if ix is None:
            from indexing.milvus_items import ItemIndex

            ix = ItemIndex(self.settings.milvus, dim=self.dim)
            self._local.ix = ix
            with self.lock:
                self._indexes.append(ix)
        return ix

    def _query(self, ids: list[str]) -> None:
        try:
            ix = self._index()
            t_issue = time.time()
            t0 = time.perf_counter()
            got: set[str] = set()
            for start in range(0, len(ids), 1000):
                chunk = ids[start : start + 1000]
                if self.consistency is None:
                    rows = ix.get_rows(chunk)
                else:
                    rows = ix.client.get(ix.name, ids=chunk, output_fields=["item_id"],
                                         consistency_level=self.consistency)
                got.update(str(r["item_id"]) for r in rows)
            t_answer = time.time()
            with self.lock:
                self.rtt_s.append(time.perf_counter() - t0)
                for i in got:
                    self.pending.pop(i, None)
                    self.found_answer[i] = min(self.found_answer.get(i, t_answer), t_answer)
                    self.found_issue[i] = min(self.found_issue.get(i, t_issue), t_issue)
        except Exception as exc:  # noqa: BLE001 - keep polling; report the errors
            with self.lock:
                if len(self.errors) < 20:
                    self.errors.append(f"{type(exc).__name__}: {str(exc)[:200]}")
        finally:
            self._inflight.release()

    def run(self) -> None:
        from concurrent.futures import ThreadPoolExecutor

        with ThreadPoolExecutor(self.max_inflight, thread_name_prefix=self.name) as pool:
            next_t = time.perf_counter()
            while not self.stop_event.is_set():
                with self.lock:
                    ids = list(self.pending)
                if ids:
                    if self._inflight.acquire(blocking=False):
                        pool.submit(self._query, ids)
                    else:
                        self.skipped_ticks += 1
                next_t += self.interval_s
                self.stop_event.wait(max(0.0, next_t - time.perf_counter()))
        for ix in self._indexes:
            with contextlib.suppress(Exception):
                ix.close()

    def summary(self) -> dict[str, Any]:
        return {
            "consistency": self.consistency or f"collection default ({self.settings.milvus.consistency_level})",
            "interval_ms": round(self.interval_s * 1000, 1),
            "max_inflight": self.max_inflight,
            "queries": len(self.rtt_s),
            "query_rtt_ms": summarize(self.rtt_s, 1000.0, digits=2),
            "ticks_skipped_all_inflight": self.skipped_ticks,
            "errors": self.errors,
        }


class TraceReader(threading.Thread):
    """Reads ``content.indexed`` from the beginning and keeps the first trace per item."""

    def __init__(self, settings: Settings, topic: str) -> None:
        super().__init__(name="trace-reader", daemon=True)

        self.consumer = clients.kafka_consumer(
            settings.kafka,
            topic,
            group_id=None,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
        )
        self.traces: dict[str, dict[str, Any]] = {}
        self.bad = 0
        self.stop_event = threading.Event()
        self.lock = threading.Lock()

    def count(self, ids: set[str] | None = None) -> int:
        with self.lock:
            return len(self.traces) if ids is None else sum(1 for i in ids if i in self.traces)

    def run(self) -> None:
        from contracts.events import ContentIndexed

        try:
            while not self.stop_event.is_set():
                polled = self.consumer.poll(timeout_ms=100)
                now = time.time()
                for msgs in polled.values():
                    for m in msgs:
                        try:
                            tr = ContentIndexed.model_validate_json(m.value)
                        except Exception:  # noqa: BLE001
                            self.bad += 1
                            continue
                        with self.lock:
                            self.traces.setdefault(
                                tr.item_id,
                                {
                                    "produced_at": tr.produced_at.timestamp() if tr.produced_at else None,
                                    "consumed_at": tr.consumed_at.timestamp(),
                                    "indexed_at": tr.indexed_at.timestamp(),
                                    "stage_ms": dict(tr.stage_ms),
                                    "received_at": now,
                                    "kind": str(getattr(tr.kind, "value", tr.kind)),
                                    "features": list(tr.features),
                                    "model_versions": dict(tr.model_versions),
                                },
                            )
        finally:
            self.consumer.close()


def run_phase(base: Settings, rate: float, warm_items: list[dict[str, Any]], items: list[dict[str, Any]],
              args: argparse.Namespace, log_dir: Path) -> dict[str, Any]:
    from contracts.topics import Topics
    from infra.topics import ensure_topics
    from workloads.replay import Publisher

    ns = new_namespace(f"fresh{int(rate)}")
    s = base.namespaced(ns)
    topics = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, topics)
    log_dir.mkdir(parents=True, exist_ok=True)
    worker = Worker(s, log_dir / f"{args.name}-worker-r{rate:g}.log",
                    extra_env={"THAW_MODELS__QUANTIZE": args.quantize})
    phase: dict[str, Any] = {"rate_requested": rate, "namespace": ns, "items": len(items)}
    pollers: list[SearchablePoller] = []
    trace = None
    print(f"[freshness] rate {rate:g}/s: namespace {ns}, starting worker", file=sys.stderr)
    try:
        t_spawn = time.time()
        worker.start()
        worker.wait_ready(timeout_s=args.ready_timeout)
        phase["worker_ready_s"] = round(time.time() - t_spawn, 2)
        poller = SearchablePoller(s, args.poll_ms / 1000.0, None, args.max_inflight)
        pollers = [poller]
        extra = None
        if args.extra_probe:
            extra = SearchablePoller(s, args.poll_ms / 1000.0, args.extra_probe, args.max_inflight)
            pollers.append(extra)
        trace = TraceReader(s, topics.content_indexed)
        for th in (*pollers, trace):
            th.start()

        def publish(pub: Any, batch: list[dict[str, Any]]) -> dict[str, float]:
            produced: dict[str, float] = {}
            for it in batch:
                r = pub.send_item(topics.content_new, it)
                produced[r["item_id"]] = r["produced_at"]
                for p in pollers:
                    p.add(r["item_id"], r["produced_at"])
            return produced

        def drained() -> bool:
            return all(p.outstanding() == 0 for p in pollers)

        # warm-up (not measured): first inference, first upsert into the new collection, the trace path
        warm = [{**it, "item_id": f"warmup:{it['item_id']}"} for it in warm_items]
        if warm:
            wpub = Publisher(s, rate=rate)
            publish(wpub, warm)
            wpub.close()
            wait_for(drained, 120, "warm-up items to be searchable", worker)

        cpu0, tw0, meter = worker.cpu_seconds(), time.perf_counter(), CpuMeter()
        print(f"[freshness] rate {rate:g}/s: publishing {len(items)} items", file=sys.stderr)
        pub = Publisher(s, rate=rate)
        produced = publish(pub, items)
        achieved = pub.achieved_rate()
        pub.close()
        phase["produce"] = {
            "achieved_rate": round(achieved, 2),
            "publish_s": round(len(items) / achieved, 2) if achieved else None,
            "max_behind_schedule_s": round(pub.max_behind_s, 3),
        }
        ids = set(produced)
        wait_for(lambda: drained() and trace.count(ids) == len(ids), args.drain_timeout,
                 "all items searchable and traced", worker, poll_s=0.1)
        cpu1, tw1 = worker.cpu_seconds(), time.perf_counter()
        if cpu0 is not None and cpu1 is not None:
            phase["worker_cpu_cores"] = round((cpu1 - cpu0) / (tw1 - tw0), 3)
        phase["machine_busy_cores"] = meter.busy_cores()
        phase["measured_window_s"] = round(tw1 - tw0, 2)

        # ---- results
        with trace.lock:
            traces = {i: trace.traces[i] for i in ids}
        with poller.lock:
            answered = {i: poller.found_answer[i] for i in ids}
            issued = {i: poller.found_issue[i] for i in ids}
        trace_lat = [t["indexed_at"] - t["produced_at"] for t in traces.values() if t["produced_at"] is not None]
        ext_lat = [answered[i] - produced[i] for i in ids]
        ext_issue = [issued[i] - produced[i] for i in ids]
        queue = [t["consumed_at"] - t["produced_at"] for t in traces.values() if t["produced_at"] is not None]
        process = [t["indexed_at"] - t["consumed_at"] for t in traces.values()]
        gap = [answered[i] - traces[i]["indexed_at"] for i in ids]
        trace_recv = [t["received_at"] - t["produced_at"] for t in traces.values() if t["produced_at"] is not None]
        batches: dict[tuple[float, float], dict[str, Any]] = {}
        for t in traces.values():
            b = batches.setdefault((t["consumed_at"], t["indexed_at"]), {"size": 0, "stage_ms": t["stage_ms"]})
            b["size"] += 1
        stage_names = sorted({k for b in batches.values() for k in b["stage_ms"]})
        cl = s.milvus.consistency_level
        phase["latency_ms"] = {
            "trace_indexed_minus_produced": summarize(trace_lat, 1000.0),
            "searchable_external_poll": summarize(ext_lat, 1000.0),
            "searchable_external_poll_query_issued": summarize(ext_issue, 1000.0),
        }
        phase["latency_definitions"] = {
            "trace_indexed_minus_produced": "content.indexed trace: indexed_at (after the upsert returned) - "
                                            "produced_at",
            "searchable_external_poll": f"ItemIndex.get_rows poll ({cl} consistency): answer time of the first "
                                        "query that returned the item - produce time (what a client sees)",
            "searchable_external_poll_query_issued": "same poll, issue time of that query - produce time (with "
                                                     "Strong consistency the item was visible when it was issued)",
        }
        if extra is not None:
            with extra.lock:
                ex_ans = [extra.found_answer[i] - produced[i] for i in ids]
                ex_iss = [extra.found_issue[i] - produced[i] for i in ids]
            lvl = args.extra_probe
            phase["latency_ms"][f"probe_{lvl}_answered"] = summarize(ex_ans, 1000.0)
            phase["latency_ms"][f"probe_{lvl}_issued"] = summarize(ex_iss, 1000.0)
            phase["latency_definitions"][f"probe_{lvl}_answered"] = (
                f"client.get with consistency_level={lvl}: answer time of the first query that returned the item - "
                "produce time")
            phase["latency_definitions"][f"probe_{lvl}_issued"] = "same probe, issue time of that query"
        phase["breakdown_ms"] = {
            "produced_to_consumed (producer linger, broker, fetch, batch window, waiting for previous batch)":
                summarize(queue, 1000.0),
            "consumed_to_indexed (decode+encode+upsert of its batch)": summarize(process, 1000.0),
            "indexed_to_found_by_poller (query wait + poll resolution)": summarize(gap, 1000.0),
            "produced_to_trace_received (trace delivered back to a consumer)": summarize(trace_recv, 1000.0),
        }
        phase["batches"] = {
            "count": len(batches),
            "size": summarize([b["size"] for b in batches.values()], digits=2),
            "stage_ms_per_batch": {
                k: summarize([b["stage_ms"].get(k, 0.0) for b in batches.values()], digits=2) for k in stage_names
            },
        }
        phase["fields"] = fields_by_kind(traces.values())
        phase["pollers"] = [p.summary() for p in pollers]
        phase["trace_decode_errors"] = trace.bad
        phase["_raw"] = {"trace_ms": sorted(round(x * 1000, 2) for x in trace_lat),
                         "searchable_ms": sorted(round(x * 1000, 2) for x in ext_lat)}
        if extra is not None:
            phase["_raw"]["probe_ms"] = sorted(round(x * 1000, 2) for x in ex_ans)
    finally:
        threads: list[SearchablePoller | TraceReader] = [*pollers, *([trace] if trace is not None else [])]
        for th in threads:
            th.stop_event.set()
            th.join(timeout=10)
        worker.close()
        phase["worker_log"] = str(worker.log)
        phase["worker_log_issues"] = worker.log_issues()
        phase["cleanup"] = cleanup_namespace(s)
    return phase


def fields_by_kind(traces: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """Per item kind, how many items got each content field, and the model versions the traces name: shows that
    every encoder ran (a field absent here had no published encoder, or its media failed)."""
    per: dict[str, Counter[str]] = {}
    n: Counter[str] = Counter()
    versions: dict[str, str] = {}
    for t in traces:
        kind = t.get("kind", "?")
        n[kind] += 1
        per.setdefault(kind, Counter()).update(t.get("features", []))
        versions.update(t.get("model_versions", {}))
    return {"items_by_kind": dict(sorted(n.items())),
            "items_with_field_by_kind": {k: dict(sorted(c.items())) for k, c in sorted(per.items())},
            "model_versions": dict(sorted(versions.items()))}


def check_variants(settings: Settings, setting: str) -> None:
    """Fail before any phase when the worker would not find the variants ``setting`` asks it to serve."""
    from encoders.quantize import QUANTIZABLE, load_variant, scheme_for
    from encoders.registry import ModelRegistry

    reg = ModelRegistry(settings.models.dir)
    for name in QUANTIZABLE:
        if reg.current_version(name) is not None:
            load_variant(reg, name, scheme_for(setting, name))


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    n_lines = sum(1 for ph in report["phases"] if ph.get("_raw")) * (3 if report["config"].get("extra_probe") else 2)
    fig, ax = plt.subplots(figsize=(9, 5.5 + 0.22 * n_lines))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for k, ph in enumerate(report["phases"]):
        raw = ph.get("_raw")
        if not raw:
            continue
        c = colors[k % len(colors)]
        for key, style, label in (("searchable_ms", "-", "searchable (get_rows poll, answered)"),
                                  ("trace_ms", "--", "trace (indexed_at − produced_at)"),
                                  ("probe_ms", ":", f"{report['config']['extra_probe']} probe, answered")):
            xs = np.sort(np.asarray(raw.get(key, [])))
            if xs.size == 0:
                continue
            ys = np.arange(1, xs.size + 1) / xs.size
            ax.step(xs, ys, where="post", linestyle=style, color=c,
                    label=f"{ph['rate_requested']:g}/s: {label}, p50 {np.percentile(xs, 50):.0f} ms, "
                          f"p99 {np.percentile(xs, 99):.0f} ms")
    ax.set_xscale("log")
    ax.set_xlabel("latency from produce (ms, log scale)")
    ax.set_ylabel("fraction of items")
    ax.set_ylim(0, 1.01)
    ax.grid(True, which="both", alpha=0.3)
    cfg = report["config"]
    what = "mixed items, every encoder" if cfg.get("source") == "mixed" else "text items, MiniLM"
    quant = f", {cfg['quantize']}" if cfg.get("quantize", "none") != "none" else ""
    ax.set_title(f"Thaw freshness: content.new → searchable ({cfg['items']} {what}{quant}, {cfg.get('dataset_name')})")
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.12), ncol=1, frameon=False)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)


DEFAULT_DATASET = {"text": "ml-100k", "mixed": "community"}
DATASET_LABEL = {
    "ml-100k": "MovieLens-100k movies (title + genres)",
    "community": "the demo community's composer posts",
    "lastfm": "Last.fm artists (name + tags)",
}


def report_name(source: str, dataset: str, quantize: str = "none") -> str:
    """``freshness`` / ``freshness_mixed``, ``_<dataset>`` when not the source's default, ``_<scheme>`` when
    quantised: each configuration writes its own report."""
    name = "freshness" if source == "text" else f"freshness_{source}"
    if dataset != DEFAULT_DATASET[source]:
        name += f"_{dataset.replace('-', '')}"
    if quantize != "none":
        name += f"_{quantize.replace('-', '')}"
    return name


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.freshness", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=1000, help="new items per rate (default 1000)")
    ap.add_argument("--rates", default="20", help="items/s, comma-separated; one phase per rate (default 20)")
    ap.add_argument("--poll-ms", type=float, default=20.0, help="Milvus poll interval of the searchable probe")
    ap.add_argument("--max-inflight", type=int, default=16, help="max concurrent poll queries (default 16)")
    ap.add_argument("--extra-probe", choices=["Strong", "Session", "Bounded", "Eventually"], default=None,
                    help="also poll with this consistency level (client.get), e.g. Strong for read-your-writes")
    ap.add_argument("--warmup", type=int, default=10, help="unmeasured items sent first (default 10)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--source", choices=["text", "mixed"], default="text",
                    help="text: text-only items (MiniLM); mixed: 40%% tracks with audio, 30%% moments with images, "
                         "30%% text posts, every encoder (needs the music corpus: thaw corpus music build)")
    ap.add_argument("--dataset", choices=TEXT_DATASETS, default=None,
                    help="where the text items come from: ml-100k (default for text), community (the demo "
                         "community's posts, default for mixed), or lastfm (needs THAW_DATASETS_DIR)")
    ap.add_argument("--quantize", choices=["none", "int8", "int8-all"], default=None,
                    help="THAW_MODELS__QUANTIZE for the worker (default: as configured, none unless set)")
    ap.add_argument("--name", default=None, help="report name (default from source, dataset and quantize)")
    ap.add_argument("--ready-timeout", type=float, default=180.0, help="worker start timeout (s)")
    ap.add_argument("--drain-timeout", type=float, default=120.0,
                    help="after the last item is produced, max seconds until all are searchable")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="report directory (default benchmarks/results)")
    ap.add_argument("--keep-raw", action="store_true", help="keep the per-item latencies in the JSON")
    args = ap.parse_args(argv)
    rates = parse_rates(args.rates)
    if args.items < 1:
        ap.error("--items must be >= 1")
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("kafka").setLevel(logging.ERROR)  # describe_groups can't decode Faust's member metadata

    base = base_settings()
    args.dataset = args.dataset or DEFAULT_DATASET[args.source]
    args.quantize = args.quantize or base.models.quantize
    args.name = args.name or report_name(args.source, args.dataset, args.quantize)
    t0 = time.time()
    if args.source == "mixed":
        from workloads.replay import media_roots

        items = mixed_items(args.items + args.warmup, seed=args.seed, text_dataset=args.dataset)
        base = base.with_media_roots(*media_roots())  # the workers read the items' file:// media there only
    else:
        items = text_items(args.items + args.warmup, args.dataset, seed=args.seed)
    if args.quantize != "none":
        check_variants(base, args.quantize)
    stack = stack_up(base)
    warm, measured = items[: args.warmup], items[args.warmup :]
    args.out.mkdir(parents=True, exist_ok=True)
    report: dict[str, Any] = {
        "benchmark": "freshness",
        "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"items": args.items, "rates": rates, "poll_ms": args.poll_ms, "extra_probe": args.extra_probe,
                   "milvus_consistency": base.milvus.consistency_level, "warmup": args.warmup,
                   "seed": args.seed, "encoders": encoder_versions(base), "quantize": args.quantize,
                   "source": args.source, "dataset_name": args.dataset,
                   "dataset": DATASET_LABEL[args.dataset] if args.source == "text" else
                   f"mixed: music21 tracks (audio), OpenMoji moments (image), {DATASET_LABEL[args.dataset]} (text)",
                   "kinds": dict(sorted(Counter(it["kind"] for it in measured).items())),
                   "batch_size": base.stream.content_batch_size, "batch_within_s": base.stream.batch_within_s,
                   "partitions": base.kafka.partitions},
        "machine": machine_info(),
        "stack": stack,
        "phases": [],
    }
    failed = False
    for rate in rates:
        try:
            ph = run_phase(base, rate, warm, measured, args, args.out / "logs")
        except BenchError as exc:
            print(f"[freshness] rate {rate:g}: FAILED: {exc}", file=sys.stderr)
            report["phases"].append({"rate_requested": rate, "error": str(exc)[-4000:]})
            failed = True
            continue
        report["phases"].append(ph)
        lat = ph["latency_ms"]
        print(f"[freshness] rate {rate:g}/s (achieved {ph['produce']['achieved_rate']}/s): "
              f"searchable p50 {lat['searchable_external_poll']['p50']} ms p99 "
              f"{lat['searchable_external_poll']['p99']} ms; trace p50 {lat['trace_indexed_minus_produced']['p50']}"
              f" ms p99 {lat['trace_indexed_minus_produced']['p99']} ms", file=sys.stderr)
    report["machine"]["loadavg_after"] = machine_info()["loadavg_1_5_15"]
    report["elapsed_s"] = round(time.time() - t0, 1)
    name = args.name
    png = args.out / f"{name}.png"
    plot(report, png)
    if not args.keep_raw:
        for ph in report["phases"]:
            ph.pop("_raw", None)
    js = args.out / f"{name}.json"
    write_json(js, report)
    print(f"[freshness] wrote {js} and {png} in {report['elapsed_s']} s", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
