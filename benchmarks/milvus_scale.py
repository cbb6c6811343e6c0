"""The items collection at scale: search latency and recall@100 against brute force, HNSW vs IVF_FLAT, per layout.

Run::

    python -m benchmarks.milvus_scale                     # 100k and 1M rows (1M: ~20+ min on the 2 shared cores)
    python -m benchmarks.milvus_scale --sizes 100000      # one size
    python -m benchmarks.milvus_scale --quick             # 20k rows, fewer configurations (~3 min), into results/quick/

What it measures, on the local stack's Milvus (2.3.5 standalone), for each size:

* **Data**: ``n`` unit vectors of the CF space's dimension (64: the DSSM towers' width, ``DSSMConfig.dim``), drawn
  from a mixture of ``sqrt(n)`` clusters with Zipf-like popularity (item = its cluster's centre plus Gaussian noise,
  cosine to the centre ~0.64), kinds in the simulator's mix (35% track, 20% comment, 20% moment, 15% dynamic,
  10% fan_group) varying per cluster, creation times uniform over the 30 days before the run. Queries: 500 (or
  ``--queries``) user vectors, each the normalised mean of 5 items (from one cluster, or two for 30% of users), the
  shape of the engine's incremental user vector.
* **Ground truth**: the exact top-100 by inner product (numpy over the same vectors), per filter: none, ``kind =
  track`` (~35% of rows), and the fresh window (created in the last 24 h, ~3.3% of rows, the serving fresh recall's
  window).
* **Collections**: one per layout (:class:`indexing.milvus_items.Layout`): ``created_day`` (the partition key new
  collections get), ``none`` (the layout before partition keys) and ``kind`` (the alternative key); the first 50,000
  rows written through :meth:`ItemIndex.upsert` (the engine's path; its rate is recorded), the rest as plain inserts
  of the same rows (faster on these 2 cores), then flushed.
* **Indexes**: for each configuration the index is dropped and built again (build seconds: from ``create_index`` until
  every row is indexed), HNSW (``M``, ``efConstruction``) and IVF_FLAT (``nlist``), then loaded.
* **Searches**: single-query :meth:`ItemIndex.search` calls (what the API does per request: one vector, top-100,
  Bounded consistency, the output fields the ranker reads), ``--queries`` per cell after 20 warm-up queries; the
  p50/p99/mean latency and recall@100 (the share of the exact top-100 returned), for each search parameter (HNSW
  ``ef``, IVF ``nprobe``) and each filter.

Every collection is the benchmark's own (``bench_milvus_scale_<run>_<layout>``) and is dropped at the end, even when
the run fails. Writes ``<out>/milvus_scale.json`` and ``.png`` (recall@100 against p50 latency, per size and
filter). A size whose builds run past ``--max-size-s`` records the configurations it skipped.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, CpuMeter, base_settings, machine_info, stack_up, summarize, write_json
from indexing.milvus_items import DAY_MS, ItemIndex, ItemRow, row_dict
from infra.settings import MilvusSettings

DIM = 64
K = 100
KIND_NAMES = ("track", "comment", "moment", "dynamic", "fan_group")
KIND_MIX = (0.35, 0.2, 0.2, 0.15, 0.1)  # workloads.simulator.SimConfig.kind_mix
DAYS = 30
FRESH_MS = DAY_MS  # the serving fresh window (serve.fresh_window_s = 24 h)
FILTERS = ("none", "kind", "fresh")
WARMUP = 20


# ------------------------------------------------------------------------------------------------ data (pure)
@dataclass(frozen=True)
class Items:
    vectors: np.ndarray  # n x DIM float32, unit rows
    kinds: np.ndarray  # n int (index into KIND_NAMES)
    created_ms: np.ndarray  # n int64
    cluster: np.ndarray  # n int


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)).astype(np.float32)


def clustered_items(n: int, now_ms: int, seed: int = 0, dim: int = DIM, noise: float = 0.15) -> Items:
    """``n`` items as the module docstring describes (clusters, per-cluster kind mix, 30 days of creation times)."""
    rng = np.random.default_rng(seed)
    c = max(8, int(round(n ** 0.5)))
    centres = _unit(rng.normal(size=(c, dim)))
    pop = 1.0 / np.arange(1, c + 1) ** 0.8
    cluster = rng.choice(c, size=n, p=pop / pop.sum())
    vectors = _unit(centres[cluster] + rng.normal(scale=noise, size=(n, dim)))
    mixes = rng.dirichlet(np.asarray(KIND_MIX) * 20, size=c)  # each cluster its own mix around the global one
    cum = np.cumsum(mixes[cluster], axis=1)
    kinds = np.minimum((rng.random(n)[:, None] > cum).sum(axis=1), len(KIND_NAMES) - 1)
    created = now_ms - rng.integers(0, DAYS * DAY_MS, size=n)
    return Items(vectors, kinds.astype(np.int64), created.astype(np.int64), cluster.astype(np.int64))


def user_queries(items: Items, q: int, seed: int = 1, per_user: int = 5, two_cluster_share: float = 0.3) -> np.ndarray:
    """``q`` user vectors: each the normalised mean of ``per_user`` items of one cluster (two for some users)."""
    rng = np.random.default_rng(seed)
    order = np.argsort(items.cluster, kind="stable")
    bounds = np.searchsorted(items.cluster[order], np.arange(items.cluster.max() + 2))
    out = np.empty((q, items.vectors.shape[1]), np.float32)
    for u in range(q):
        anchors = rng.choice(len(items.cluster), size=2 if rng.random() < two_cluster_share else 1, replace=False)
        picks: list[int] = []
        for j, a in enumerate(anchors):
            c = items.cluster[a]
            members = order[bounds[c]:bounds[c + 1]]
            m = per_user - (len(anchors) - 1) * (per_user // 2) if j == 0 else per_user // 2
            picks.extend(rng.choice(members, size=m, replace=len(members) < m))
        out[u] = items.vectors[picks].mean(axis=0)
    return _unit(out)


def filter_mask(items: Items, which: str, now_ms: int) -> np.ndarray | None:
    """Rows a filter keeps (None: every row)."""
    if which == "none":
        return None
    if which == "kind":
        return items.kinds == KIND_NAMES.index("track")
    if which == "fresh":
        return items.created_ms >= now_ms - FRESH_MS
    raise ValueError(which)


def exact_topk(vectors: np.ndarray, queries: np.ndarray, k: int, mask: np.ndarray | None = None,
               chunk: int = 100_000) -> np.ndarray:
    """Row indices of the exact top-``k`` by inner product per query (``q x k``, best first), among ``mask`` rows."""
    best_s = np.full((len(queries), 0), -np.inf, np.float32)
    best_i = np.zeros((len(queries), 0), np.int64)
    for start in range(0, len(vectors), chunk):
        idx = np.arange(start, min(start + chunk, len(vectors)))
        if mask is not None:
            idx = idx[mask[idx]]
        if len(idx) == 0:
            continue
        s = queries @ vectors[idx].T
        take = min(k, s.shape[1])
        part = np.argpartition(-s, take - 1, axis=1)[:, :take]
        cand_s = np.concatenate([best_s, np.take_along_axis(s, part, axis=1)], axis=1)
        cand_i = np.concatenate([best_i, idx[part]], axis=1)
        keep = np.argsort(-cand_s, axis=1, kind="stable")[:, :k]
        best_s, best_i = np.take_along_axis(cand_s, keep, axis=1), np.take_along_axis(cand_i, keep, axis=1)
    return best_i


def recall_at_k(found: Sequence[Sequence[int]], truth: np.ndarray) -> float:
    """Mean share of each query's exact top-k that the search returned."""
    if len(truth) == 0:
        return float("nan")
    return float(np.mean([len(set(f) & set(t.tolist())) / max(len(t), 1) for f, t in zip(found, truth, strict=True)]))


# ------------------------------------------------------------------------------------------------ configurations
@dataclass(frozen=True)
class IndexConfig:
    """One index build and the search parameters measured on it."""

    kind: str  # HNSW | IVF_FLAT
    build: tuple[tuple[str, int], ...]
    search: tuple[int, ...]  # ef (HNSW) or nprobe (IVF_FLAT) values

    @property
    def label(self) -> str:
        return f"{self.kind}(" + ",".join(f"{k}={v}" for k, v in self.build) + ")"

    def settings(self, base: MilvusSettings, value: int | None = None) -> MilvusSettings:
        b = dict(self.build)
        if self.kind == "HNSW":
            upd: dict[str, Any] = {"index_type": "HNSW", "hnsw_m": b["M"], "hnsw_ef_construction": b["efConstruction"]}
            if value is not None:
                upd["hnsw_ef"] = value
        else:
            upd = {"index_type": "IVF_FLAT", "ivf_nlist": b["nlist"]}
            if value is not None:
                upd["ivf_nprobe"] = value
        return base.model_copy(update=upd)


def plan(n: int, quick: bool) -> dict[str, list[IndexConfig]]:
    """Layout -> index configurations measured at size ``n``."""
    nlist = 1024 if n >= 500_000 else 256
    hnsw = IndexConfig("HNSW", (("M", 16), ("efConstruction", 200)), (100, 200, 400))
    if quick:
        return {"created_day": [hnsw, IndexConfig("IVF_FLAT", (("nlist", 128),), (8, 32))],
                "none": [IndexConfig("HNSW", (("M", 16), ("efConstruction", 200)), (100, 200))]}
    if n >= 500_000:  # the layouts' difference at the engine's index, and IVF on the layout the 100k run favoured
        return {"none": [hnsw],
                "kind": [hnsw, IndexConfig("IVF_FLAT", (("nlist", nlist),), (16, 64))],
                "created_day": [IndexConfig("HNSW", (("M", 16), ("efConstruction", 200)), (100, 200))]}
    return {
        "created_day": [hnsw,
                        IndexConfig("HNSW", (("M", 8), ("efConstruction", 64)), (100, 200, 400)),
                        IndexConfig("IVF_FLAT", (("nlist", nlist),), (8, 32, 128))],
        "none": [hnsw, IndexConfig("IVF_FLAT", (("nlist", nlist),), (8, 32, 128))],
        "kind": [IndexConfig("HNSW", (("M", 16), ("efConstruction", 200)), (100, 200))],
    }


# ------------------------------------------------------------------------------------------------ Milvus (I/O)
def _rows(items: Items, start: int, stop: int) -> Iterator[ItemRow]:
    for i in range(start, stop):
        yield ItemRow(f"b{i}", items.vectors[i], KIND_NAMES[int(items.kinds[i])], f"c{int(items.cluster[i])}",
                      int(items.created_ms[i]), "bench@1", indexed_at_ms=1)


def load_rows(ix: ItemIndex, items: Items, engine_rows: int = 50_000, batch: int = 5000) -> dict[str, Any]:
    """Write the first ``engine_rows`` items through ``ix.upsert`` (the engine's path: its rate is recorded), the
    rest as plain inserts of the same rows (they are all new, so an insert is what the upsert amounts to, without
    its per-batch delete where :func:`~indexing.milvus_items.split_upsert` applies), then flush."""
    n = len(items.vectors)
    head = min(n, engine_rows)
    t0 = time.perf_counter()
    for start in range(0, head, batch):
        ix.upsert(list(_rows(items, start, min(start + batch, head))), batch_size=batch)
    t1 = time.perf_counter()
    day_field = ix.layout.has_day_field
    for start in range(head, n, batch):
        data = [row_dict(r, DIM, 1, day_field=day_field) for r in _rows(items, start, min(start + batch, n))]
        ix.client.insert(ix.name, data, timeout=120)
    t2 = time.perf_counter()
    ix.client.flush(ix.name, timeout=600)
    t3 = time.perf_counter()
    return {"engine_upsert_rows": head, "engine_upsert_rows_per_s": round(head / max(t1 - t0, 1e-9), 1),
            "split_upsert": ix.splits_upserts(), "insert_rows": n - head,
            "insert_rows_per_s": round((n - head) / max(t2 - t1, 1e-9), 1) if n > head else None,
            "flush_s": round(t3 - t2, 2)}


def rebuild_index(ix: ItemIndex, cfg: IndexConfig, timeout_s: float) -> dict[str, Any]:
    """Drop the vector index, build ``cfg`` and load: seconds to build (every row indexed) and to load."""
    c, name = ix.client, ix.name
    c.release_collection(name, timeout=120)
    for idx_name in c.list_indexes(name, timeout=60):
        c.drop_index(name, idx_name, timeout=60)
    params = c.prepare_index_params()
    params.add_index(field_name="vector", index_type=cfg.kind, metric_type="IP", params=dict(cfg.build))
    t0 = time.perf_counter()
    c.create_index(name, params, timeout=timeout_s)  # pymilvus waits for the build too, within the timeout
    state: dict[str, Any] = {}
    while time.perf_counter() - t0 < timeout_s:
        state = c.describe_index(name, "vector", timeout=60)
        if int(state.get("pending_index_rows", 1)) == 0 and int(state.get("indexed_rows", 0)) >= int(
                state.get("total_rows", 0)):
            break
        time.sleep(0.5)
    build_s = time.perf_counter() - t0
    done = int(state.get("indexed_rows", 0)) >= int(state.get("total_rows", 1))
    t1 = time.perf_counter()
    c.load_collection(name, timeout=max(timeout_s, 120))
    return {"build_s": round(build_s, 1), "load_s": round(time.perf_counter() - t1, 1), "complete": done,
            "indexed_rows": int(state.get("indexed_rows", 0)), "total_rows": int(state.get("total_rows", 0))}


def measure(ix: ItemIndex, queries: np.ndarray, which: str, now_ms: int, row_of: dict[str, int],
            truth: np.ndarray) -> dict[str, Any]:
    """``len(queries)`` single-query searches with one filter: latency and recall@100."""
    kw: dict[str, Any] = {}
    if which == "kind":
        kw["kinds"] = ["track"]
    elif which == "fresh":
        kw["created_after_ms"] = now_ms - FRESH_MS
    for i in range(min(WARMUP, len(queries))):
        ix.search(queries[i:i + 1], K, **kw)
    lat, found = [], []
    for i in range(len(queries)):
        t0 = time.perf_counter()
        hits = ix.search(queries[i:i + 1], K, **kw)[0]
        lat.append(time.perf_counter() - t0)
        found.append([row_of[h.item_id] for h in hits])
    return {"filter": which, "latency_ms": summarize(lat, scale=1000.0, digits=2),
            "recall_at_100": round(recall_at_k(found, truth), 4),
            "mean_returned": round(float(np.mean([len(f) for f in found])), 1)}


def run_size(base: MilvusSettings, n: int, q: int, quick: bool, run_id: str, max_size_s: float,
             seed: int = 0, save: Callable[[dict[str, Any]], None] = lambda _: None,
             layouts: Sequence[str] | None = None, prior: Sequence[dict[str, Any]] = (),
             command: str = "") -> dict[str, Any]:
    """One size: the layouts of :func:`plan` (those of ``layouts`` only, when given; ``prior`` entries of an
    earlier run are kept in front) and their configurations; ``save(partial)`` after each configuration (a failed
    configuration is recorded with its error and the next one runs)."""
    t_size = time.perf_counter()
    now_ms = int(time.time() * 1000)
    items = clustered_items(n, now_ms, seed=seed)
    queries = user_queries(items, q, seed=seed + 1)
    t0 = time.perf_counter()
    truth = {f: exact_topk(items.vectors, queries, K, filter_mask(items, f, now_ms)) for f in FILTERS}
    truth_s = time.perf_counter() - t0
    row_of = {f"b{i}": i for i in range(n)}
    shares = {f: round(float(m.mean()), 4) if (m := filter_mask(items, f, now_ms)) is not None else 1.0
              for f in FILTERS}
    out: dict[str, Any] = {"rows": n, "queries": q, "dim": DIM, "filter_share": shares,
                           "brute_force_truth_s": round(truth_s, 2), "layouts": list(prior), "skipped": []}
    for layout, configs in plan(n, quick).items():
        if layouts is not None and layout not in layouts:
            continue
        name = f"bench_milvus_scale_{run_id}_{n}_{layout}"
        # created with a FLAT index (nothing to build) so the rows can be written and loaded; each measured
        # configuration is then built from scratch on the flushed segments
        flat = base.model_copy(update={"items_collection": name, "partition_key": layout, "index_type": "FLAT",
                                       "timeout_s": 120.0})
        ix = ItemIndex(flat, DIM)
        entry: dict[str, Any] = {"layout": layout, "collection": name, "command": command, "configs": []}
        out["layouts"].append(entry)
        try:
            ix.ensure()
            entry["partitions"] = ix.layout.partitions if ix.layout.partition_key else 1
            entry["ingest"] = load_rows(ix, items)
            for cfg in configs:
                if time.perf_counter() - t_size > max_size_s:
                    out["skipped"].append(f"{layout} {cfg.label}: past --max-size-s {max_size_s:.0f}")
                    continue
                meter = CpuMeter()
                try:
                    build = rebuild_index(ix, cfg, timeout_s=max(60.0, max_size_s - (time.perf_counter() - t_size)))
                except Exception as exc:  # noqa: BLE001 - recorded, the next configuration runs
                    entry["configs"].append({"index": cfg.label, "error": f"{type(exc).__name__}: {exc}"[:400]})
                    save(out)
                    continue
                cells = []
                for value in cfg.search:
                    sx = ItemIndex(cfg.settings(flat, value), DIM)
                    try:
                        for f in FILTERS:
                            cell = measure(sx, queries, f, now_ms, row_of, truth[f])
                            cell["param"] = {"ef" if cfg.kind == "HNSW" else "nprobe": value}
                            cells.append(cell)
                            print(f"  {n:>8} {layout:<11} {cfg.label:<32} {value:>4} {f:<5} "
                                  f"p50 {cell['latency_ms']['p50']:>7} ms  p99 {cell['latency_ms']['p99']:>7} ms  "
                                  f"recall@100 {cell['recall_at_100']:.3f}", flush=True)
                    finally:
                        sx.close()
                entry["configs"].append({"index": cfg.label, "index_type": cfg.kind, "build_params": dict(cfg.build),
                                         "build": build, "busy_cores": meter.busy_cores(), "cells": cells})
                save(out)
        finally:
            ix.drop()
            ix.close()
    out["wall_s"] = round(time.perf_counter() - t_size, 1)
    return out


# ------------------------------------------------------------------------------------------------ report
def best_cells(report: dict[str, Any], min_recall: float = 0.95) -> list[dict[str, Any]]:
    """Per size, layout and filter: the fastest cell (p50) with recall@100 >= ``min_recall``, if any."""
    out = []
    for size in report.get("sizes", []):
        for lay in size["layouts"]:
            for f in FILTERS:
                ok = [(c["latency_ms"]["p50"], cfg["index"], c) for cfg in lay["configs"] for c in cfg.get("cells", [])
                      if c["filter"] == f and c["recall_at_100"] >= min_recall]
                if ok:
                    p50, index, c = min(ok, key=lambda t: t[0])
                    out.append({"rows": size["rows"], "layout": lay["layout"], "filter": f, "index": index,
                                "param": c["param"], "p50_ms": p50, "p99_ms": c["latency_ms"]["p99"],
                                "recall_at_100": c["recall_at_100"]})
    return out


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = report["sizes"]
    labels = sorted({f"{lay['layout']} {cfg['index']}" for size in sizes for lay in size["layouts"]
                     for cfg in lay["configs"] if cfg.get("cells")})
    colour = {lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(labels)}  # one colour per line everywhere
    marker = {"created_day": "o-", "none": "s--", "kind": "^:"}
    fig, axes = plt.subplots(len(sizes), len(FILTERS), figsize=(5 * len(FILTERS), 3.8 * len(sizes)), squeeze=False)
    for r, size in enumerate(sizes):
        for c, f in enumerate(FILTERS):
            ax = axes[r][c]
            for lay in size["layouts"]:
                for cfg in lay["configs"]:
                    cells = [x for x in cfg.get("cells", []) if x["filter"] == f]
                    if not cells:
                        continue
                    lab = f"{lay['layout']} {cfg['index']}"
                    ax.plot([x["latency_ms"]["p50"] for x in cells], [x["recall_at_100"] for x in cells],
                            marker.get(lay["layout"], "x-"), color=colour[lab], label=lab)
                    for x in cells:
                        ax.annotate(str(next(iter(x["param"].values()))), (x["latency_ms"]["p50"], x["recall_at_100"]),
                                    fontsize=6, xytext=(2, 2), textcoords="offset points")
            ax.set_title(f"{size['rows']:,} rows, filter {f} ({size['filter_share'][f]:.1%} of rows)", fontsize=9)
            ax.set_xlabel("p50 latency per single-query search (ms)")
            ax.set_ylabel("recall@100")
            ax.grid(alpha=0.3)
            if c == 0:
                ax.legend(fontsize=6)
    fig.suptitle(f"Milvus {report.get('server', '')} items collection, {DIM}-d, labels: ef / nprobe", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes", default="100000,1000000", help="comma-separated row counts")
    ap.add_argument("--queries", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="20k rows, fewer configurations, into <out>/quick/")
    ap.add_argument("--max-size-s", type=float, default=1800.0,
                    help="per size: configurations not started within this many seconds are skipped (recorded)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--merge", action="store_true",
                    help="keep the sizes (and, with --layouts, the layouts) of an existing report that this run does "
                         "not measure, each with its command")
    ap.add_argument("--layouts", default="", help="comma-separated layouts to measure (default: every layout)")
    a = ap.parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # a stopped run still drops its collections
    sizes = [20_000] if a.quick else [int(x) for x in a.sizes.split(",") if x.strip()]
    out_dir = a.out / "quick" if a.quick else a.out
    settings = base_settings()
    stack_up(settings)
    run_id = uuid.uuid4().hex[:8]
    probe = ItemIndex(settings.milvus.model_copy(update={"items_collection": f"bench_milvus_scale_{run_id}_p"}), DIM)
    server = str(probe.client.get_server_version(timeout=30))
    probe.close()
    report: dict[str, Any] = {
        "benchmark": "milvus_scale", "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "server": server,
        "command": "python -m benchmarks.milvus_scale " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": machine_info(), "k": K, "dim": DIM, "quick": a.quick,
        "data": "clustered unit vectors (sqrt(n) clusters, Zipf-like sizes, noise 0.15), simulator kind mix, "
                "30 days of creation times; queries = mean of 5 items of 1-2 clusters",
        "sizes": [],
    }
    only = [x for x in a.layouts.split(",") if x.strip()] or None
    kept: list[dict[str, Any]] = []
    prior: dict[int, list[dict[str, Any]]] = {}
    if a.merge and (out_dir / "milvus_scale.json").exists():
        old = json.loads((out_dir / "milvus_scale.json").read_text())
        for x in old.get("sizes", []):
            cmd = x.get("command", old.get("command"))
            if x["rows"] not in sizes:
                kept.append({**x, "command": cmd, "started": x.get("started", old.get("started"))})
            elif only is not None:
                prior[x["rows"]] = [{**lay, "command": lay.get("command") or cmd} for lay in x["layouts"]
                                    if lay["layout"] not in only and lay.get("configs")]
    report["sizes"] = kept
    meter = CpuMeter()
    for n in sizes:
        print(f"size {n:,}", flush=True)
        done = list(report["sizes"])

        def save(partial: dict[str, Any], done: list[dict[str, Any]] = done) -> None:
            write_json(out_dir / "milvus_scale.json", {**report, "sizes": [*done, partial], "partial": True})

        measured = run_size(settings.milvus, n, a.queries, a.quick, run_id, a.max_size_s, a.seed, save,
                            layouts=only, prior=prior.get(n, ()), command=report["command"])
        report["sizes"].append({**measured, "command": report["command"], "started": report["started"]})
        report["sizes"].sort(key=lambda x: x["rows"])
        report["best_at_recall_0.95"] = best_cells(report)
        write_json(out_dir / "milvus_scale.json", report)  # each size as soon as it is measured
    report["machine_busy_cores"] = meter.busy_cores()
    report["machine_end"] = machine_info()
    write_json(out_dir / "milvus_scale.json", report)
    _plot(report, out_dir / "milvus_scale.png")
    print(f"wrote {out_dir / 'milvus_scale.json'} and .png")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
