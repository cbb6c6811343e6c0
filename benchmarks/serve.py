"""The recommendation API end to end: latency under load and recommendation quality against simulator ground truth.

Run::

    python -m benchmarks.serve                       # 50,000 items in Milvus, 16 clients for 30 s, 300 users
    python -m benchmarks.serve --quick               # smoke run: 3,000 items, 5 s of load, 50 users
    python -m benchmarks.serve --items 20000 --clients 8 --duration 60 --out /tmp/serve
    python -m benchmarks.serve --catalogue lastfm    # the simulator on Last.fm artists (THAW_DATASETS_DIR)

The simulator runs on the demo community's catalogue by default (registry data only: ``thaw corpus music build
--clips 160``); ``--catalogue lastfm`` is the Last.fm one (the committed ``serve.json`` was measured on it).

Phases (each bounded in time; everything runs on this machine's 2 cores):

1. **Ranker.** ``thaw train ranker --dataset sim --sim-steps T1`` trains the DeepFM + MMoE ranker on the
   community simulator (seed 0, ``T1`` steps) and publishes ``deepfm-mmoe`` (group-gated) and ``deepfm-mmoe-plain``
   into a temporary model directory, next to a symlink of the configured MiniLM text encoder. Its test AUCs are
   copied from its JSON report.
2. **Catalogue and users** in a fresh namespace. First the *filler* catalogue: a second simulator (another seed, only
   initial items, ids ``fill:i:N``) tops the collection up to ``--items`` rows; its real texts/tags (and media
   references) go through :meth:`streams.engine.Engine.handle_content` in ``content_batch_size`` batches, i.e. the
   MiniLM ONNX encoder and the Milvus upsert of the worker (timed). The simulator reuses its assets, so documents
   repeat: each distinct document is encoded once (:class:`DedupTextEncoder`), repeats reuse its vector. Then the
   *same* simulator as the ranker's (seed 0, same ``SimConfig``) run for ``T2 > T1`` steps: items, registrations and
   behaviour go through ``handle_content``, ``handle_profiles`` and ``prepare_user_events`` + ``commit_user_events``
   as contract JSON records, in stream order. Items and users created after step ``T1`` were never seen by the
   ranker. The served space is the MiniLM text space (the engine's default when no CF model is published). Simulated
   time is **rebased** so that the end of the simulation is the wall-clock time the push starts (the simulator's own
   epoch is months in the past); filler items are dated in the 7 days before the simulation starts.
3. **Quality.** The API (``python -m thaw serve``, a real subprocess) with arms ``recall`` (ranker ``none``),
   ``plain``, ``gated``, the gated ranker at ``new_item_share`` 0.0 / 0.1 / 0.2 / 0.4 and at ``recall_blend``
   0.25 / 0.5 / 0.75 (rank fusion with the recall similarity); a stratified sample of
   simulator users (>= 10 engaged events, fewer, joined after T1) is asked for ``k=20`` per arm (``variant=``).
   NDCG@20 / Precision@20 / Recall@20 against the simulator's ground truth at the end of the T2 simulation (binary
   relevance ``p_engage >= relevance_threshold`` over every item in Milvus, filler items included, minus the user's
   Redis seen set, which the service excludes), new-item exposure per arm, per user group.
4. **Load.** A fresh API process with the three arms split by the A/B hash; ``--clients`` concurrent aiohttp
   clients request ``/recommend?user_id=U&k=20`` (users: simulator users with history, users joined after T1, and
   ids never seen) for ``--duration`` seconds after ``--warmup`` seconds; every 10th request asks ``debug=true``
   for the server-side stage timings. Latency percentiles and throughput overall / per arm / per user kind, the
   server's CPU (``/proc``) and the machine's busy cores. The load generator shares the 2 cores with the server,
   Redis, Milvus and Kafka.

A **new item** is one created within ``ServeSettings.fresh_window_s`` of the request; here the window is
``--fresh-window-steps`` (10) simulator steps of 60 s = 600 s, the last ~10 steps (~50 items) of the simulation,
a third of the simulator's own feed window (30 steps). Real time passes between the rebase anchor and the requests
(recorded as ``seconds_after_anchor``), which shrinks the effective window by that much.

Writes ``<out>/serve.json`` and ``<out>/serve.png`` (default ``benchmarks/results/``) and the API logs under
``<out>/logs/``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, cast

import httpx
import numpy as np

from benchmarks._harness import (
    DEFAULT_OUT,
    BenchError,
    CpuMeter,
    base_settings,
    cleanup_namespace,
    machine_info,
    new_namespace,
    stack_up,
    write_json,
)
from infra.procs import stop_process_group

RANK_VERSION = "serve-bench"
MAIN_ARMS = ("recall", "plain", "gated")
SHARES = (0.0, 0.1, 0.2, 0.4)
BLENDS = (0.25, 0.5, 0.75)  # ServeSettings.recall_blend of the gated ranker (at the default new-item share)


# ------------------------------------------------------------------------------------------------- pure helpers
def ndcg_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> float | None:
    """Binary-relevance NDCG@k: DCG of ``ranked[:k]`` over the ideal DCG of ``min(k, |relevant|)`` hits.

    None when nothing is relevant (the user is left out of the mean).
    """
    rel = set(relevant)
    if not rel:
        return None
    dcg = sum(1.0 / math.log2(i + 2) for i, it in enumerate(ranked[:k]) if it in rel)
    ideal = sum(1.0 / math.log2(i + 2) for i in range(min(k, len(rel))))
    return dcg / ideal


def hits_at_k(ranked: Sequence[str], relevant: Iterable[str], k: int) -> tuple[float, float] | None:
    """(Precision@k, Recall@k) with Recall@k = hits / min(k, |relevant|) (1.0 = the list is as good as it can be;
    the plain hits / |relevant| is meaningless when thousands of items are relevant). None when nothing is relevant.
    """
    rel = set(relevant)
    if not rel:
        return None
    hits = sum(1 for it in ranked[:k] if it in rel)
    return hits / k, hits / min(k, len(rel))


def latency_summary(latencies_ms: Sequence[float], duration_s: float) -> dict[str, float | int | None]:
    """n, requests/s over ``duration_s``, mean and p50/p90/p99/max latency (ms, 2 decimals)."""
    a = np.asarray(latencies_ms, dtype=np.float64)
    keys = ("mean_ms", "p50_ms", "p90_ms", "p99_ms", "max_ms")
    if a.size == 0:
        return {"n": 0, "req_per_s": 0.0, **{k: None for k in keys}}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    vals = (a.mean(), p50, p90, p99, a.max())
    return {"n": int(a.size), "req_per_s": round(a.size / duration_s, 2) if duration_s > 0 else None,
            **{k: round(float(v), 2) for k, v in zip(keys, vals, strict=True)}}


def mean_se(values: Iterable[float | None]) -> dict[str, float | int | None]:
    """Mean and standard error of the non-None values."""
    a = np.asarray([v for v in values if v is not None], dtype=np.float64)
    if a.size == 0:
        return {"n": 0, "mean": None, "se": None}
    se = float(a.std(ddof=1) / math.sqrt(a.size)) if a.size > 1 else None
    return {"n": int(a.size), "mean": round(float(a.mean()), 4), "se": None if se is None else round(se, 4)}


def sim_relevance(tastes: np.ndarray, topics: np.ndarray, quality: np.ndarray, mu: float, sd: float, alpha: float,
                  beta: float) -> np.ndarray:
    """The simulator's choice model ``sigmoid(alpha + beta * (taste . topic - mu) / sd + quality)`` for users x
    items (``workloads.simulator``): the ground truth of items the main simulator did not create (filler)."""
    aff = (tastes.astype(np.float64) @ topics.astype(np.float64).T - mu) / sd
    return 1.0 / (1.0 + np.exp(-(alpha + beta * aff + quality.astype(np.float64)[None, :])))


def iso(ts: float) -> str:
    """Epoch seconds as ISO-8601 UTC (the contracts reject naive times)."""
    return datetime.fromtimestamp(ts, UTC).isoformat()


def contract_payload(data: Mapping[str, Any], offset_s: float, id_prefix: str | None = None) -> dict[str, Any]:
    """A simulator event's payload as contract JSON: epoch-second times shifted by ``offset_s`` and written ISO;
    ``id_prefix`` replaces the ``sim:`` of item ids (the filler catalogue's distinct ids)."""
    d = dict(data)
    for key in ("created_at", "ts"):
        if key in d:
            d[key] = iso(float(d[key]) + offset_s)
    if id_prefix is not None:
        for key in ("item_id", "parent_id"):
            if isinstance(d.get(key), str) and d[key].startswith("sim:"):
                d[key] = id_prefix + d[key][len("sim:"):]
    return d


def stratify(groups: Mapping[str, Sequence[str]], n_total: int, seed: int = 0) -> dict[str, list[str]]:
    """Up to ``n_total // len(groups)`` ids per group, drawn without replacement (seeded, sorted input order)."""
    rng = random.Random(seed)
    per = max(1, n_total // max(1, len(groups)))
    return {g: rng.sample(list(ids), min(per, len(ids))) for g, ids in groups.items()}


def cdf(values: Sequence[float], points: int = 200) -> tuple[list[float], list[float]]:
    """(x, F(x)) of the empirical CDF, thinned to about ``points`` points."""
    a = np.sort(np.asarray(values, dtype=np.float64))
    if a.size == 0:
        return [], []
    idx = np.unique(np.linspace(0, a.size - 1, min(points, a.size)).astype(int))
    return [float(a[i]) for i in idx], [float((i + 1) / a.size) for i in idx]


class DedupTextEncoder:
    """The real text encoder with a cache by document text: an identical document is encoded once.

    Used for the filler catalogue only: the simulator reuses its assets, so tens of thousands of filler items carry
    a few thousand distinct documents; every distinct one goes through the ONNX encoder (timed in ``encode_s``),
    repeats get the same (deterministic) vector. Everything else of ``Engine.handle_content`` runs per item.
    """

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.dim: int = inner.dim
        self.model_version: str = inner.model_version
        self.cache: dict[str, np.ndarray] = {}
        self.encoded = 0
        self.hits = 0
        self.encode_s = 0.0

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        self.hits += len(texts) - len(todo)
        if todo:
            t0 = time.perf_counter()
            vecs = self.inner.encode(todo)
            self.encode_s += time.perf_counter() - t0
            self.encoded += len(todo)
            for t, v in zip(todo, vecs, strict=True):
                self.cache[t] = np.asarray(v, dtype=np.float32)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self.cache[t] for t in texts])


# ------------------------------------------------------------------------------------------------- API process
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class ApiServer:
    """A ``python -m thaw serve`` subprocess."""

    env: dict[str, str]
    log: Path
    port: int = field(default_factory=free_port)
    ops_port: int = field(default_factory=free_port)  # /readyz and /metrics
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        # on loopback with authentication off (said explicitly), and a deadline far above the pipeline's tail: the
        # benchmark measures the whole latency distribution, cold caches included, rather than 503s at 1 s
        env = {**os.environ, "THAW_SERVE__AUTH__MODE": "local-dev", "THAW_SERVE__REQUEST_DEADLINE_S": "30",
               "THAW_SERVE__RATE_LIMIT_RPS": "0",  # one load generator is one caller
               **self.env}
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab") as fh:
            fh.write(f"\n===== api start at {time.strftime('%H:%M:%S')} port {self.port} =====\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "thaw", "serve", "--host", "127.0.0.1", "--port", str(self.port),
                 "--ops-host", "127.0.0.1", "--ops-port", str(self.ops_port), "--log-level", "warning"],
                env=env, stdout=fh, stderr=subprocess.STDOUT, start_new_session=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_ready(self, timeout_s: float = 180.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout_s
        last = ""
        while time.monotonic() < deadline:
            if not self.alive():
                raise BenchError(f"the API died while starting:\n{self.log_tail()}")
            try:
                resp = httpx.get(f"http://127.0.0.1:{self.ops_port}/readyz", timeout=10)
                if resp.status_code == 200:
                    body: dict[str, Any] = resp.json()
                    return body
                last = resp.text[:500]
            except httpx.HTTPError as exc:
                last = str(exc)
            time.sleep(0.3)
        raise BenchError(f"the API was not ready after {timeout_s:.0f}s (last: {last}):\n{self.log_tail()}")

    def cpu_seconds(self) -> float | None:
        if not self.alive() or self.proc is None:
            return None
        try:
            with open(f"/proc/{self.proc.pid}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def threads(self) -> int | None:
        if self.proc is None:
            return None
        try:
            return len(os.listdir(f"/proc/{self.proc.pid}/task"))
        except OSError:
            return None

    def stop(self, timeout_s: float = 20.0) -> None:
        if self.proc is not None:
            stop_process_group(self.proc, timeout_s)

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""


# --------------------------------------------------------------------------------------------------- phase 1
def train_ranker(models_dir: Path, t1: int, epochs: int | None, log: Path,
                 catalogue: str = "community") -> dict[str, Any]:
    """``thaw train ranker`` into ``models_dir`` (the simulator on ``catalogue``); returns the AUCs and timings of
    its report."""
    out_json = models_dir.parent / "rank_train.json"
    cmd = [sys.executable, "-m", "thaw", "train", "ranker", "--dataset", "sim", "--sim-steps", str(t1),
           "--sim-catalogue", catalogue, "--threads", "2", "--models-dir", str(models_dir), "--version", RANK_VERSION,
           "--json", str(out_json)]
    if epochs is not None and epochs > 0:
        cmd += ["--epochs", str(epochs)]
    t0 = time.perf_counter()
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as fh:
        rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=1800, check=False).returncode
    if not out_json.exists():
        raise BenchError(f"rank_train wrote no report (exit {rc}); see {log}")
    rep = json.loads(out_json.read_text())
    variants = {}
    for v in rep["variants"]:
        m = v["metrics"]
        variants[v["name"]] = {
            "variant": v["variant"], "group_gating": v["group_gating"],
            "test_auc": {g: {t: m[g][t]["auc"] for t in rep["tasks"]} for g in ("all", "new", "old") if g in m},
            "epochs_run": v.get("epochs_run"), "train_seconds": v.get("train_seconds"),
            "onnx_vs_torch_allclose": v["checks"]["onnx_vs_torch"].get("allclose"),
            "online_path_allclose": v["checks"]["online_path"].get("allclose_exact"),
            "score_ms_median_batch200": v.get("score_ms_median"),
        }
    return {"command": " ".join(cmd[1:]).replace(str(models_dir), "<tmp>/models"), "exit_code": rc,
            "wall_seconds": round(time.perf_counter() - t0, 1), "version": rep["version"], "tasks": rep["tasks"],
            "sim_steps": rep["sim_steps"], "split": {k: rep["split"][k] for k in list(rep["split"])[:12]
                                                    if not isinstance(rep["split"][k], dict | list)},
            "variants": variants}


def link_text_encoder(src_dir: Path, dst_dir: Path) -> str:
    """Symlink the current MiniLM version of ``src_dir`` into ``dst_dir`` and point its CURRENT at it."""
    from encoders.registry import ModelRegistry
    from encoders.text import MODEL_NAME, ensure_minilm

    src = ModelRegistry(src_dir)
    mv = ensure_minilm(src)
    (dst_dir / MODEL_NAME).mkdir(parents=True, exist_ok=True)
    os.symlink(mv.path, dst_dir / MODEL_NAME / mv.manifest.version)
    ModelRegistry(dst_dir).set_current(MODEL_NAME, mv.manifest.version)
    return f"{MODEL_NAME}@{mv.manifest.version}"


# --------------------------------------------------------------------------------------------------- phase 2
@dataclass
class Pusher:
    """Feeds contract records to the engine's batch handlers, in stream order (one partition per topic)."""

    engine: Any
    batch_events: int = 256
    offsets: dict[str, int] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    stage_ms: dict[str, float] = field(default_factory=dict)

    def _records(self, topic: str, payloads: Sequence[dict[str, Any]], key: str) -> list[Any]:
        from streams.engine import Record

        out = []
        for p in payloads:
            off = self.offsets.get(topic, 0)
            self.offsets[topic] = off + 1
            raw = json.dumps({"schema_version": 1, **p}, separators=(",", ":")).encode()
            out.append(Record(topic, 0, off, str(p[key]).encode(), raw, int(time.time() * 1000)))
        return out

    def _count(self, kind: str, res: Any) -> None:
        c = self.counts.setdefault(kind, {"ok": 0, "rejected": 0, "deferred": 0, "skipped": 0})
        c["ok"] += res.ok
        c["rejected"] += sum(res.rejected.values())
        c["deferred"] += res.deferred
        c["skipped"] += res.skipped
        for why, n in res.rejected.items():
            c[f"rejected_{why}"] = c.get(f"rejected_{why}", 0) + n
        for k, v in res.stage_ms.items():
            self.stage_ms[f"{kind}.{k}"] = self.stage_ms.get(f"{kind}.{k}", 0.0) + v

    def content(self, payloads: Sequence[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        bs = self.engine.s.stream.content_batch_size
        recs = self._records(self.engine.topics.content_new, payloads, "item_id")
        for i in range(0, len(recs), bs):
            self._count("content", self.engine.handle_content(recs[i:i + bs]))
        self.seconds["content"] = self.seconds.get("content", 0.0) + time.perf_counter() - t0

    def profiles(self, payloads: Sequence[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        recs = self._records(self.engine.topics.user_profile, payloads, "user_id")
        for i in range(0, len(recs), self.batch_events):
            self._count("profile", self.engine.handle_profiles(recs[i:i + self.batch_events]))
        self.seconds["profile"] = self.seconds.get("profile", 0.0) + time.perf_counter() - t0

    def events(self, payloads: Sequence[dict[str, Any]]) -> None:
        t0 = time.perf_counter()
        recs = self._records(self.engine.topics.user_events, payloads, "user_id")
        for i in range(0, len(recs), self.batch_events):
            prepared = self.engine.prepare_user_events(recs[i:i + self.batch_events])
            self._count("events", self.engine.commit_user_events(prepared))
        self.seconds["events"] = self.seconds.get("events", 0.0) + time.perf_counter() - t0

    def stream(self, evs: Iterable[Any], offset_s: float) -> None:
        """Simulator events in order; consecutive events of one topic are handled as batches."""
        handlers = {"content.new": self.content, "user.profile": self.profiles, "user.events": self.events}
        topic, buf = "", cast(list[dict[str, Any]], [])
        for ev in evs:
            if ev.topic != topic and buf:
                handlers[topic](buf)
                buf = []
            topic = ev.topic
            buf.append(contract_payload(ev.data, offset_s))
        if buf:
            handlers[topic](buf)


# --------------------------------------------------------------------------------------------------- HTTP client
async def _get_json(session: Any, url: str, params: dict[str, str]) -> tuple[int, dict[str, Any] | None, float]:
    t0 = time.perf_counter()
    try:
        async with session.get(url, params=params) as resp:
            body = await resp.read()
            ms = (time.perf_counter() - t0) * 1000
            try:
                data = json.loads(body) if resp.status == 200 else None
            except ValueError:
                data = None
            return resp.status, data, ms
    except Exception:  # noqa: BLE001 - a transport error is a failed request (status 0)
        return 0, None, (time.perf_counter() - t0) * 1000


async def run_load(url: str, users: Sequence[tuple[str, str]], clients: int, warmup_s: float, duration_s: float,
                   debug_every: int = 10, seed: int = 0) -> dict[str, Any]:
    """``clients`` closed-loop clients requesting random users for ``warmup_s + duration_s``; the measured window
    is the last ``duration_s``. Returns per-request records of the measured window."""
    import aiohttp

    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    debug: list[dict[str, Any]] = []
    conn = aiohttp.TCPConnector(limit=clients, force_close=False)
    timeout = aiohttp.ClientTimeout(total=30)
    t_start = time.perf_counter()
    t_measure = t_start + warmup_s
    t_end = t_measure + duration_s
    n_sent = 0

    async def client(j: int) -> None:
        nonlocal n_sent
        r = random.Random(rng.random() + j)
        while True:
            now = time.perf_counter()
            if now >= t_end:
                return
            uid, kind = users[r.randrange(len(users))]
            n_sent += 1
            want_debug = debug_every > 0 and n_sent % debug_every == 0
            params = {"user_id": uid, "k": "20"}
            if want_debug:
                params["debug"] = "true"
            status, data, ms = await _get_json(session, url + "/recommend", params)
            if now < t_measure:
                continue
            arm = (data or {}).get("ab", {}).get("variant", "?")
            records.append({"t": now - t_measure, "ms": ms, "status": status, "arm": arm, "user_kind": kind,
                            "recall_source": ((data or {}).get("debug") or {}).get("recall_source"),
                            "debug": want_debug})
            if want_debug and data is not None and "debug" in data:
                debug.append({"arm": arm, "user_kind": kind, "timings_ms": data["debug"]["timings_ms"],
                              "recall_source": data["debug"]["recall_source"]})

    async with aiohttp.ClientSession(connector=conn, timeout=timeout) as session:
        await asyncio.gather(*(client(j) for j in range(clients)))
    return {"records": records, "debug": debug, "wall_s": time.perf_counter() - t_measure}


async def fetch_lists(url: str, requests: Sequence[tuple[str, str]], concurrency: int = 4
                      ) -> dict[tuple[str, str], tuple[int, dict[str, Any] | None, float]]:
    """``/recommend?user_id=U&k=20&variant=A`` for every (user, arm), ``concurrency`` at a time."""
    import aiohttp

    out: dict[tuple[str, str], tuple[int, dict[str, Any] | None, float]] = {}
    queue = list(requests)

    async def worker(session: Any) -> None:
        while queue:
            uid, arm = queue.pop()
            out[(uid, arm)] = await _get_json(session, url + "/recommend",
                                              {"user_id": uid, "k": "20", "variant": arm})

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=60)) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return out


# --------------------------------------------------------------------------------------------------------- main
def _arm_share(share: float) -> str:
    return f"gated_s{int(round(share * 100)):02d}"


def _arm_blend(blend: float) -> str:
    return f"gated_b{int(round(blend * 100)):02d}"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.serve", description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    ap.add_argument("--items", type=int, default=50_000, help="rows in Milvus (simulator items + filler)")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--duration", type=float, default=30.0, help="measured load seconds")
    ap.add_argument("--warmup", type=float, default=5.0)
    ap.add_argument("--t1", type=int, default=120, help="simulator steps the ranker is trained on")
    ap.add_argument("--t2", type=int, default=180, help="simulator steps served (> t1)")
    ap.add_argument("--epochs", type=int, default=12, help="ranker epoch cap (early stopping on validation AUC)")
    ap.add_argument("--users", type=int, default=300, help="quality sample (stratified in 3 groups)")
    ap.add_argument("--fresh-window-steps", type=float, default=10.0, help="ServeSettings.fresh_window_s in steps")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--catalogue", choices=("community", "lastfm"), default="community",
                    help="the simulator's catalogue: community (default, registry data: thaw corpus music build "
                         "--clips 160) or lastfm (needs THAW_DATASETS_DIR)")
    ap.add_argument("--quick", action="store_true", help="3k items, 5 s load, 50 users, T1/T2 = 60/90, 3 epochs")
    args = ap.parse_args(argv)
    if args.quick:
        args.items, args.duration, args.warmup, args.users = 3000, 5.0, 2.0, 50
        args.t1, args.t2, args.epochs = 60, 90, 3
    if args.t2 <= args.t1:
        ap.error("--t2 must be greater than --t1")

    from contracts.topics import Topics
    from encoders.registry import ModelRegistry
    from encoders.text import MODEL_NAME, TextEncoder
    from indexing.milvus_items import ItemIndex
    from indexing.redis_state import RedisState
    from streams.engine import Engine
    from workloads.community import sim_catalogue
    from workloads.replay import media_roots
    from workloads.simulator import ENGAGE_ACTIONS, CommunitySimulator, SimConfig

    t_all = time.perf_counter()
    base = base_settings()
    cfg_out = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}
    report: dict[str, Any] = {"benchmark": "serve", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "config": cfg_out, "machine": machine_info()}
    log_dir = args.out / "logs"
    tmp = Path(tempfile.mkdtemp(prefix="thaw-serve-bench-"))
    models_dir = tmp / "models"
    models_dir.mkdir()
    servers: list[ApiServer] = []
    s = None
    try:
        # ---- 1. ranker
        text_space = link_text_encoder(base.models.dir, models_dir)
        print(f"[serve] training the ranker on {args.t1} simulator steps ...", file=sys.stderr)
        report["ranker"] = train_ranker(models_dir, args.t1, args.epochs, log_dir / "serve-rank_train.log",
                                        args.catalogue)
        aucs = {k: v["test_auc"].get("all") for k, v in report["ranker"]["variants"].items()}
        print(f"[serve] ranker test AUC: {json.dumps(aucs)}", file=sys.stderr)

        # ---- 2. catalogue + users
        report["stack"] = stack_up(base)
        # the simulator's catalogue posts file:// media of the corpora: the engine reads them there only
        s0 = base.namespaced(new_namespace("serve")).with_media_roots(*media_roots())
        s = s0.model_copy(update={"models": s0.models.model_copy(update={"dir": models_dir})})
        encoder = TextEncoder(ModelRegistry(models_dir).load(MODEL_NAME), threads=2)
        items = ItemIndex(s.milvus, dim=encoder.dim)
        items.ensure()
        store = RedisState(s.redis)
        store.set_space(encoder.model_version)
        engine = Engine(s, Topics.for_prefix(s.kafka.topic_prefix), encoder, items, store, group_id=s.stream.app_id)

        cat = sim_catalogue(args.catalogue)
        sim_cfg = SimConfig(seed=args.seed, steps=args.t2)
        sim = CommunitySimulator(cat, sim_cfg)
        t0 = time.perf_counter()
        evs = list(sim.stream())
        sim_s = time.perf_counter() - t0
        t_t1 = sim_cfg.start_ts + args.t1 * sim_cfg.step_s
        n_fill = max(0, args.items - len(sim.items))

        # filler first (old catalogue): a second simulator's initial items, distinct ids, dated before the sim
        fill = CommunitySimulator(cat, SimConfig(seed=args.seed + 1000, initial_items=n_fill, initial_users=0,
                                                 steps=0))
        fill_evs = [ev for ev in fill.stream() if ev.topic == "content.new"]
        dedup = DedupTextEncoder(encoder)
        fill_engine = Engine(s, engine.topics, cast(Any, dedup), items, store, group_id=s.stream.app_id)
        pusher = Pusher(fill_engine)
        week = 7 * 24 * 3600.0
        now0 = time.time()
        offset = now0 - sim.t  # the simulation ends now
        rng = np.random.default_rng(args.seed)
        fill_payloads = []
        for ev in fill_evs:
            p = contract_payload(ev.data, 0.0, id_prefix="fill:")
            p["created_at"] = iso(sim_cfg.start_ts + offset - float(rng.uniform(60.0, week)))
            fill_payloads.append(p)
        print(f"[serve] embedding {len(fill_payloads)} filler items ...", file=sys.stderr)
        t0 = time.perf_counter()
        pusher.content(fill_payloads)
        fill_s = time.perf_counter() - t0
        fill_stage = dict(pusher.stage_ms)
        fill_counts = dict(pusher.counts.get("content", {}))
        print(f"[serve] filler: {len(fill_payloads)} items in {fill_s:.0f}s ({dedup.encoded} distinct documents "
              f"encoded in {dedup.encode_s:.0f}s)", file=sys.stderr)

        # the ranker's simulator, rebased so that it ends when its push starts
        now1 = time.time()
        offset = now1 - sim.t
        pusher_main = Pusher(engine)
        t0 = time.perf_counter()
        pusher_main.stream(evs, offset)
        push_s = time.perf_counter() - t0
        n_rows = items.count()
        report["catalogue"] = {
            "served_space": text_space,
            "space_note": "MiniLM text space (text + tags of every item), the engine's default with no CF model",
            "milvus_rows": n_rows,
            "sim": {"config": {"seed": sim_cfg.seed, "steps_t2": args.t2, "steps_t1": args.t1,
                               "step_s": sim_cfg.step_s, "relevance_threshold": sim_cfg.relevance_threshold},
                    "items": len(sim.items), "users": len(sim.users), "events": len(evs),
                    "items_after_t1": sum(it.created_ts > t_t1 for it in sim.items),
                    "users_after_t1": sum(u.joined_ts > t_t1 for u in sim.users),
                    "generate_s": round(sim_s, 2), "push_s": round(push_s, 1),
                    "push_seconds_by_topic": {k: round(v, 1) for k, v in pusher_main.seconds.items()},
                    "handler_counts": pusher_main.counts,
                    "rebase_offset_s": round(offset, 1), "anchor_wall_time": iso(now1)},
            "filler": {"items": len(fill_payloads), "seconds": round(fill_s, 1),
                       "items_per_s": round(len(fill_payloads) / fill_s, 1) if fill_s > 0 else None,
                       "handler_counts": fill_counts,
                       "distinct_documents_encoded": dedup.encoded, "repeated_documents_from_cache": dedup.hits,
                       "encoder_seconds": round(dedup.encode_s, 1),
                       "encoder_documents_per_s": round(dedup.encoded / dedup.encode_s, 1)
                       if dedup.encode_s > 0 else None,
                       "stage_seconds": {k: round(v / 1000, 1) for k, v in fill_stage.items()},
                       "kinds": {k: sum(1 for it in fill.items if it.kind == k)
                                 for k in ("track", "comment", "moment", "dynamic", "fan_group")},
                       "distinct_texts": len({it.asset.text for it in fill.items}),
                       "note": "a second simulator (seed +1000), initial items only, ids fill:i:N, dated in the "
                               "7 days before the simulation; every item through Engine.handle_content in "
                               "content_batch_size batches (validation, media fetched and decoded as the worker "
                               "does, Milvus upsert, Redis item meta); the simulator reuses its assets, so "
                               "documents repeat: each distinct document is encoded once by MiniLM ONNX (2 threads) "
                               "and repeats reuse its vector (DedupTextEncoder)"},
        }
        print(f"[serve] catalogue: {n_rows} rows in Milvus; sim pushed in {push_s:.0f}s "
              f"{pusher_main.counts}", file=sys.stderr)

        # ground truth: every item in Milvus, per sim user
        main_ids = [it.item_id for it in sim.items]
        fill_ids = ["fill:" + it.item_id[len("sim:"):] for it in fill.items]
        fill_topics = np.stack([it.topic for it in fill.items]) if fill.items else np.zeros((0, sim.T), np.float32)
        fill_quality = np.array([it.quality for it in fill.items], dtype=np.float64)
        new_after = {it.item_id for it in sim.items if it.created_ts > t_t1}
        engaged = {u.user_id: 0 for u in sim.users}
        for ev in evs:
            if ev.topic == "user.events" and ev.data["action"] in ENGAGE_ACTIONS:
                engaged[ev.data["user_id"]] += 1
        uidx = {u.user_id: j for j, u in enumerate(sim.users)}
        groups = {
            "old_heavy": sorted(u.user_id for u in sim.users if u.joined_ts <= t_t1 and engaged[u.user_id] >= 10),
            "old_light": sorted(u.user_id for u in sim.users if u.joined_ts <= t_t1 and engaged[u.user_id] < 10),
            "new_after_t1": sorted(u.user_id for u in sim.users if u.joined_ts > t_t1),
        }
        sample = stratify(groups, args.users, seed=args.seed)

        # ---- 3. quality
        window_s = args.fresh_window_steps * sim_cfg.step_s
        variants: list[dict[str, Any]] = [{"name": "recall", "ranker": "none"},
                    {"name": "plain", "ranker": f"deepfm-mmoe-plain@{RANK_VERSION}"},
                    {"name": "gated", "ranker": f"deepfm-mmoe@{RANK_VERSION}"}]
        sweep: list[dict[str, Any]] = [
            {"name": _arm_share(x), "ranker": f"deepfm-mmoe@{RANK_VERSION}", "new_item_share": x} for x in SHARES]
        sweep += [{"name": _arm_blend(b), "ranker": f"deepfm-mmoe@{RANK_VERSION}", "recall_blend": b}
                  for b in BLENDS]
        env = {**s.env(), "THAW_MODELS__DIR": str(models_dir), "THAW_SERVE__FRESH_WINDOW_S": str(window_s),
               "THAW_SERVE__MAX_CONCURRENCY": str(max(32, 2 * args.clients))}  # load, not shedding, is measured
        srv = ApiServer({**env, "THAW_SERVE__VARIANTS": json.dumps(variants + sweep)}, log_dir / "serve-api.log")
        servers.append(srv)
        srv.start()
        ready = srv.wait_ready()
        arms = [str(v["name"]) for v in variants + sweep]
        sample_users = [u for g in sample.values() for u in g]
        reqs = [(u, a) for u in sample_users for a in arms]
        t_q = time.time()
        print(f"[serve] quality: {len(reqs)} requests ...", file=sys.stderr)
        lists = asyncio.run(fetch_lists(srv.url, reqs))
        t_q_end = time.time()
        seen = {u: set(store.seen(u)) for u in sample_users}
        rel_main = sim.true_relevance([uidx[u] for u in sample_users])
        tastes = np.stack([sim.users[uidx[u]].taste for u in sample_users])
        rel_fill = sim_relevance(tastes, fill_topics, fill_quality, sim.mu, sim.sd, sim_cfg.alpha, sim_cfg.beta)
        thr = sim_cfg.relevance_threshold
        relevant: dict[str, set[str]] = {}
        for r, u in enumerate(sample_users):
            rs = {main_ids[j] for j in np.flatnonzero(rel_main[r] >= thr)}
            rs |= {fill_ids[j] for j in np.flatnonzero(rel_fill[r] >= thr)}
            relevant[u] = rs - seen[u]
        report["quality"] = quality_report(sample, lists, relevant, new_after, arms, sim, uidx)
        report["quality"]["ready"] = ready
        report["fresh_recall_check"] = fresh_recall_check(items, store, encoder.model_version, sample_users[::10],
                                                          window_s, s.serve.fresh_k)
        report["quality"]["seconds_after_anchor"] = [round(t_q - now1, 1), round(t_q_end - now1, 1)]
        report["quality"]["relevant_per_user"] = {
            "mean": round(float(np.mean([len(relevant[u]) for u in sample_users])), 1),
            "filler_share": round(float(np.mean([
                sum(1 for i in relevant[u] if i.startswith("fill:")) / max(1, len(relevant[u]))
                for u in sample_users])), 3),
            "users_without_relevant": sum(1 for u in sample_users if not relevant[u])}
        report["new_item_definition"] = {
            "fresh_window_s": window_s, "fresh_window_steps": args.fresh_window_steps, "step_s": sim_cfg.step_s,
            "meaning": "created within fresh_window_s of the request (ServeSettings.fresh_window_s, the service's "
                       "own 'new' flag per served item); simulated time is rebased so the simulation ends at "
                       "anchor_wall_time, so at a request made s seconds after the anchor the new items are those "
                       "of the last fresh_window_s - s simulated seconds",
            "items_in_window_at_anchor": sum(1 for it in sim.items if it.created_ts > sim.t - window_s),
            "recall_fresh_k": s.serve.fresh_k, "recall_k": s.serve.recall_k,
            "default_new_item_share": s.serve.new_item_share,
        }
        srv.stop()
        print(f"[serve] quality: {json.dumps({a: report['quality']['arms'][a]['ndcg@20'] for a in arms})}",
              file=sys.stderr)

        # ---- 4. load
        srv2 = ApiServer({**env, "THAW_SERVE__VARIANTS": json.dumps(variants)}, log_dir / "serve-api.log")
        servers.append(srv2)
        srv2.start()
        srv2.wait_ready()
        hist_users = [u.user_id for u in sim.users if u.joined_ts <= t_t1 and engaged[u.user_id] > 0]
        new_users = groups["new_after_t1"]
        unknown = [f"nobody:{j}" for j in range(1000)]
        pool = balance_pool(hist_users, new_users, unknown, shares=(0.7, 0.2, 0.1))
        cpu0, meter = srv2.cpu_seconds(), CpuMeter()
        self_cpu0 = time.process_time()
        t_l = time.time()
        load = asyncio.run(run_load(srv2.url, pool, args.clients, args.warmup, args.duration, seed=args.seed))
        cpu1 = srv2.cpu_seconds()
        busy = meter.busy_cores()
        self_cpu = time.process_time() - self_cpu0
        report["load"] = load_report(load, args.duration)
        report["load"].update({
            "clients": args.clients, "warmup_s": args.warmup, "duration_s": args.duration,
            "user_mix": {"history": 0.7, "joined_after_t1": 0.2, "unknown_id": 0.1},
            "server_cpu_cores": round((cpu1 - cpu0) / (args.duration + args.warmup), 2)
            if cpu0 is not None and cpu1 is not None else None,
            "server_threads": srv2.threads(),
            "client_cpu_cores": round(self_cpu / (args.duration + args.warmup), 2),
            "machine_busy_cores": busy,
            "seconds_after_anchor": round(t_l - now1, 1),
            "note": "client, API server, Redis, Milvus and Kafka share the machine's 2 cores; latency is measured "
                    "by the client (request sent -> body read); the API is one uvicorn process (the async /recommend "
                    "handler runs the pipeline on its own pool of serve.max_concurrency threads)",
        })
        print(f"[serve] load: {json.dumps(report['load']['overall'])}", file=sys.stderr)
        report["api_log_tail"] = srv2.log_tail(15)
    finally:
        for sv in servers:
            sv.stop()
        if s is not None:
            report["cleanup"] = cleanup_namespace(s)
        shutil.rmtree(tmp, ignore_errors=True)
    report["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "serve.json", report)
    plot(report, args.out / "serve.png")
    print(json.dumps(headline(report), indent=2))
    return 0


def balance_pool(hist: Sequence[str], new: Sequence[str], unknown: Sequence[str],
                 shares: tuple[float, float, float]) -> list[tuple[str, str]]:
    """A request pool where a uniform draw picks a user of each kind with the given shares (lists repeated to
    1000 slots in proportion)."""
    out: list[tuple[str, str]] = []
    for ids, kind, share in ((hist, "history", shares[0]), (new, "joined_after_t1", shares[1]),
                             (unknown, "unknown_id", shares[2])):
        if not ids:
            continue
        n = round(1000 * share)
        out += [(ids[j % len(ids)], kind) for j in range(n)]
    return out


def fresh_recall_check(index: Any, store: Any, space: str, users: Sequence[str], window_s: float, fresh_k: int
                       ) -> dict[str, Any]:
    """The service's fresh-items recall (a Milvus search filtered on ``created_at``) against the exact answer: every
    item of the window (a Milvus query with the same filter) scored by inner product with the user's vector."""
    now_ms = int(time.time() * 1000)
    after = now_ms - int(window_s * 1000)
    rows = index.client.query(index.name, filter=f"created_at >= {after}", output_fields=["item_id", "vector"],
                              limit=16384)
    ids = [str(r["item_id"]) for r in rows]
    mat = np.asarray([r["vector"] for r in rows], dtype=np.float32).reshape(len(rows), -1)
    per_user = []
    for u in users:
        vec, _ = store.user_vector(space, u)
        if vec is None or not ids:
            continue
        got = {h.item_id for h in index.search(vec[None, :], fresh_k, created_after_ms=after)[0]}
        exact = {ids[j] for j in np.argsort(-(mat @ vec))[:fresh_k]}
        per_user.append({"returned": len(got), "exact": len(exact), "overlap": len(got & exact)})
    return {"items_in_window_by_query": len(ids), "fresh_k": fresh_k, "users": len(per_user),
            "mean_returned_by_filtered_search": round(float(np.mean([p["returned"] for p in per_user])), 2)
            if per_user else None,
            "mean_recall_vs_exact": round(float(np.mean([p["overlap"] / max(1, p["exact"]) for p in per_user])), 3)
            if per_user else None,
            "note": "Milvus 2.3.5 search with filter created_at >= now - fresh_window_s (what "
                    "ranking.online.pipeline did before it scored the window exactly) "
                    "vs the exact top fresh_k of the same rows from a query"}


def quality_report(sample: Mapping[str, Sequence[str]], lists: Mapping[tuple[str, str], tuple[int, Any, float]],
                   relevant: Mapping[str, set[str]], new_after_t1: set[str], arms: Sequence[str], sim: Any,
                   uidx: Mapping[str, int], k: int = 20) -> dict[str, Any]:
    """NDCG/Precision/Recall@k, exposure of new items per arm, overall and per user group."""
    group_of = {u: g for g, us in sample.items() for u in us}
    gender_of = {u: sim.users[uidx[u]].gender for u in group_of}
    out: dict[str, Any] = {"k": k, "users": {g: len(us) for g, us in sample.items()}, "arms": {}, "errors": 0}
    per_user: dict[str, dict[str, dict[str, float | None]]] = {}
    for arm in arms:
        rows: dict[str, dict[str, float | None]] = {}
        expo: list[dict[str, Any]] = []
        for u in group_of:
            status, data, _ = lists[(u, arm)]
            if status != 200 or data is None:
                out["errors"] += 1
                continue
            ids = [it["item_id"] for it in data["items"]]
            n = max(1, len(ids))
            ph = hits_at_k(ids, relevant[u], k)
            rows[u] = {"ndcg": ndcg_at_k(ids, relevant[u], k), "precision": ph[0] if ph else None,
                       "recall": ph[1] if ph else None,
                       "new_share": sum(1 for it in data["items"] if it["new"]) / n,
                       "after_t1_share": sum(1 for i in ids if i in new_after_t1) / n,
                       "filler_share": sum(1 for i in ids if i.startswith("fill:")) / n,
                       "listed": len(ids)}
            expo.append(data["exposure"])
        per_user[arm] = rows

        def agg(users: Iterable[str], rows: dict[str, dict[str, float | None]] = rows) -> dict[str, Any]:
            us = [u for u in users if u in rows]
            return {f"{m}@{k}": mean_se(rows[u][m] for u in us) for m in ("ndcg", "precision", "recall")} | {
                "new_item_share": mean_se(rows[u]["new_share"] for u in us),
                "after_t1_item_share": mean_se(rows[u]["after_t1_share"] for u in us),
                "filler_item_share": mean_se(rows[u]["filler_share"] for u in us)}

        a = agg(group_of)
        a["exposure_mean"] = {key: round(float(np.mean([e[key] for e in expo])), 2) if expo else None
                              for key in ("recalled", "recalled_new", "new_in_top_k_by_rank", "new_added_by_quota",
                                          "new_in_top_k")}
        a["new_item_share_setting"] = expo[0]["new_item_share"] if expo else None
        a["by_group"] = {g: agg(us) for g, us in sample.items()}
        a["by_gender"] = {g: agg([u for u in group_of if gender_of[u] == g])
                          for g in sorted(set(gender_of.values()))}
        out["arms"][arm] = a
    # paired differences of NDCG against the recall-only arm (same users)
    out["ndcg_diff_vs_recall"] = {}
    for arm in arms:
        if arm == "recall":
            continue
        d = [per_user[arm][u]["ndcg"] - per_user["recall"][u]["ndcg"]  # type: ignore[operator]
             for u in per_user[arm] if u in per_user["recall"] and per_user[arm][u]["ndcg"] is not None
             and per_user["recall"][u]["ndcg"] is not None]
        out["ndcg_diff_vs_recall"][arm] = mean_se(d)
    return out


def load_report(load: Mapping[str, Any], duration_s: float) -> dict[str, Any]:
    recs = load["records"]
    ok = [r for r in recs if r["status"] == 200]
    out: dict[str, Any] = {
        "overall": latency_summary([r["ms"] for r in ok], duration_s),
        "errors": sum(1 for r in recs if r["status"] != 200),
        "status_counts": {str(st): sum(1 for r in recs if r["status"] == st) for st in sorted({r["status"]
                                                                                               for r in recs})},
        "by_arm": {a: latency_summary([r["ms"] for r in ok if r["arm"] == a], duration_s)
                   for a in sorted({r["arm"] for r in ok})},
        "by_user_kind": {k: latency_summary([r["ms"] for r in ok if r["user_kind"] == k], duration_s)
                         for k in sorted({r["user_kind"] for r in ok})},
        "cdf_ms": {a: cdf([r["ms"] for r in ok if r["arm"] == a]) for a in sorted({r["arm"] for r in ok})},
    }
    dbg = load["debug"]
    stages = sorted({st for d in dbg for st in d["timings_ms"]})
    out["server_stage_ms"] = {
        "n_debug_responses": len(dbg),
        "all": {st: latency_summary([d["timings_ms"][st] for d in dbg if st in d["timings_ms"]], duration_s)
                for st in stages},
        "by_arm": {a: {st: latency_summary([d["timings_ms"][st] for d in dbg
                                            if d["arm"] == a and st in d["timings_ms"]], duration_s)
                       for st in stages} for a in sorted({d["arm"] for d in dbg})},
    }
    for block in [out["server_stage_ms"]["all"], *out["server_stage_ms"]["by_arm"].values()]:
        for v in block.values():
            v.pop("req_per_s", None)
    out["recall_source_counts"] = {str(k): sum(1 for d in dbg if d["recall_source"] == k)
                                   for k in sorted({str(d["recall_source"]) for d in dbg})}
    return out


def headline(report: Mapping[str, Any]) -> dict[str, Any]:
    q, ld = report.get("quality", {}), report.get("load", {})
    return {
        "items": report.get("catalogue", {}).get("milvus_rows"),
        "latency": {a: {k: v[k] for k in ("p50_ms", "p99_ms", "req_per_s")} for a, v in ld.get("by_arm", {}).items()},
        "overall": ld.get("overall"), "errors": ld.get("errors"),
        "ndcg@20": {a: v["ndcg@20"]["mean"] for a, v in q.get("arms", {}).items()},
        "new_item_share": {a: v["new_item_share"]["mean"] for a, v in q.get("arms", {}).items()},
    }


def plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.6))
    ax = axes[0]
    for arm, (xs, ys) in report.get("load", {}).get("cdf_ms", {}).items():
        st = report["load"]["by_arm"][arm]
        ax.plot(xs, ys, label=f"{arm}: p50 {st['p50_ms']:.0f} / p99 {st['p99_ms']:.0f} ms, {st['req_per_s']:.0f}/s")
    ax.set_xscale("log")
    ax.set_xlabel("latency (ms, client side)")
    ax.set_ylabel("CDF")
    ld = report.get("load", {})
    ax.set_title(f"/recommend k=20, {ld.get('clients')} clients, {report.get('catalogue', {}).get('milvus_rows')} "
                 "items", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)

    q = report.get("quality", {})
    arms = [a for a in MAIN_ARMS if a in q.get("arms", {})]
    groups = list(q.get("users", {}))
    ax = axes[1]
    width = 0.8 / (len(groups) + 1)
    x = np.arange(len(arms))
    for gi, g in enumerate(["all", *groups]):
        vals, errs = [], []
        for a in arms:
            m = q["arms"][a]["ndcg@20"] if g == "all" else q["arms"][a]["by_group"][g]["ndcg@20"]
            vals.append(m["mean"] or 0.0)
            errs.append(m["se"] or 0.0)
        ax.bar(x + (gi - len(groups) / 2) * width, vals, width, yerr=errs, capsize=2, label=g)
    ax.set_xticks(x, arms)
    ax.set_ylabel("NDCG@20 (simulator ground truth)")
    ax.set_title("recall only vs recall → rank (± s.e.)", fontsize=10)
    ax.legend(fontsize=8)

    ax = axes[2]
    pts = [(q["arms"][_arm_share(x)]["new_item_share"]["mean"], q["arms"][_arm_share(x)]["ndcg@20"]["mean"], x)
           for x in SHARES if _arm_share(x) in q.get("arms", {})]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], "o-", label="gated, new_item_share sweep")
        for ex, nd, sh in pts:
            ax.annotate(f"share {sh:.1f}", (ex, nd), textcoords="offset points", xytext=(4, 4), fontsize=8)
    for a in [*arms, *(_arm_blend(b) for b in BLENDS if _arm_blend(b) in q.get("arms", {}))]:
        ax.plot([q["arms"][a]["new_item_share"]["mean"]], [q["arms"][a]["ndcg@20"]["mean"]], "s", label=a)
    ax.set_xlabel("share of new items in the served top-20")
    ax.set_ylabel("NDCG@20")
    ax.set_title("new-item exposure vs quality", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
