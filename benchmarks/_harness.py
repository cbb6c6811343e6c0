"""Shared plumbing of the benchmarks: stack, namespace, worker subprocess, cleanup, statistics, reports.

Every benchmark run (or phase) gets its own namespace (:meth:`infra.settings.Settings.namespaced`): own topics,
consumer group, Milvus collection and Redis keys, so it never sees another run's data and can be cleaned up whole.
The worker is a real ``python -m thaw worker`` subprocess (the same pattern as the e2e tests), started in a
temporary working directory (Faust writes a ``<app_id>-data`` folder into its cwd) and stopped with SIGTERM.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import numpy as np

from infra import clients
from infra.procs import stop_process_group
from infra.settings import Settings, load_settings

T = TypeVar("T")

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


class BenchError(RuntimeError):
    """A benchmark step failed or timed out (the message carries the worker's log tail when relevant)."""


# ------------------------------------------------------------------------------------------------ settings
def new_namespace(tag: str) -> str:
    """A fresh namespace: letters, digits and ``_`` (``Settings.namespaced`` rule)."""
    return f"bench_{tag}_{uuid.uuid4().hex[:8]}"


def stack_up(settings: Settings) -> list[dict[str, Any]]:
    """``LocalStack(settings).up()`` (idempotent: a healthy running stack is reused); fail if unhealthy."""
    from infra.stack import LocalStack, format_statuses

    statuses = LocalStack(settings).up()
    if not all(s.healthy for s in statuses):
        raise BenchError("local stack unhealthy:\n" + format_statuses(statuses))
    return [{k: v for k, v in asdict(s).items() if k in ("name", "address", "healthy", "detail")} for s in statuses]


def base_settings() -> Settings:
    return load_settings()


# ------------------------------------------------------------------------------------------------- waiting
def wait_for(
    cond: Callable[[], T],
    timeout_s: float,
    what: str,
    worker: Worker | None = None,
    poll_s: float = 0.05,
) -> T:
    """Poll ``cond`` until truthy and return its value; raise :class:`BenchError` on timeout or worker death."""
    deadline = time.monotonic() + timeout_s
    while True:
        v = cond()
        if v:
            return v
        if worker is not None and not worker.alive():
            raise BenchError(f"worker died while waiting for {what}:\n{worker.log_tail()}")
        if time.monotonic() >= deadline:
            tail = f"\n{worker.log_tail()}" if worker is not None else ""
            raise BenchError(f"timed out after {timeout_s:.0f}s waiting for {what}{tail}")
        time.sleep(poll_s)


# -------------------------------------------------------------------------------------------------- worker
_METRICS_RE = re.compile(r"metrics on http://[^:]+:(\d+)/metrics")
_ISSUE_RE = re.compile(r"\b(ERROR|CRITICAL|WARNING|Traceback)\b")


@dataclass
class Worker:
    """A ``python -m thaw worker`` subprocess in ``settings``' namespace."""

    settings: Settings
    log: Path
    loglevel: str = "warning"
    proc: subprocess.Popen[bytes] | None = None
    workdir: Path | None = None
    starts: int = 0
    extra_env: dict[str, str] = field(default_factory=dict)

    def start(self) -> None:
        if self.workdir is None:
            self.workdir = Path(tempfile.mkdtemp(prefix="thaw-bench-worker-"))
        env = {**os.environ, **self.settings.env(), **self.extra_env}
        # the worker runs in a temp cwd; make sure it still imports this checkout's packages
        root = str(Path(__file__).resolve().parent.parent)
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        self.log.parent.mkdir(parents=True, exist_ok=True)
        with self.log.open("ab" if self.starts else "wb") as fh:
            fh.write(f"\n===== worker start #{self.starts + 1} at {time.strftime('%H:%M:%S')} =====\n".encode())
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "thaw", "worker", "--loglevel", self.loglevel, "--metrics-port", "0"],
                env=env,
                cwd=self.workdir,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.starts += 1

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self, timeout_s: float = 30.0) -> float:
        """SIGTERM, then SIGKILL of its process group after ``timeout_s``; returns seconds to stop."""
        if self.proc is None:
            return 0.0
        return stop_process_group(self.proc, timeout_s)

    def close(self) -> None:
        self.stop()
        if self.workdir is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self.workdir = None

    def cpu_seconds(self) -> float | None:
        """User+system CPU seconds of the worker process so far (all its threads)."""
        if not self.alive():
            return None
        try:
            with open(f"/proc/{self.pid}/stat", encoding="utf-8") as fh:
                fields = fh.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            return None

    def metrics_port(self, timeout_s: float = 120.0) -> int:
        """The /metrics port the current worker printed on start."""

        def find() -> int | None:
            text = self.log.read_text(errors="replace")
            marker = text.rfind("===== worker start")
            ports = _METRICS_RE.findall(text[marker:] if marker >= 0 else text)
            return int(ports[-1]) if ports else None

        port = wait_for(find, timeout_s, "the worker's metrics port", self, poll_s=0.1)
        assert port is not None
        return port

    def group_active(self, admin: Any) -> bool:
        """The worker's consumer group is Stable and some member holds partitions."""
        gid = self.settings.stream.app_id
        try:
            g = admin.describe_groups([gid]).get(gid) or {}
        except Exception:  # noqa: BLE001 - coordinator not ready yet
            return False
        return g.get("group_state") == "Stable" and any(
            m.get("member_assignment", {}).get("assigned_partitions") for m in g.get("members", [])
        )

    def wait_ready(self, timeout_s: float = 180.0, poll_s: float = 0.1) -> float:
        """Until the collection exists and the consumer group is active; returns the wall time it was seen."""
        from pymilvus import MilvusClient

        mc = MilvusClient(self.settings.milvus.uri)
        try:
            wait_for(lambda: has_items_collection(mc, self.settings), timeout_s, "collection", self, poll_s=0.2)
        finally:
            mc.close()
        admin = clients.kafka_admin(self.settings.kafka)
        try:
            wait_for(lambda: self.group_active(admin), timeout_s, "consumer group to be active", self, poll_s=poll_s)
        finally:
            admin.close()
        return time.time()

    def log_tail(self, n: int = 40) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])
        except OSError:
            return ""

    def log_issues(self, limit: int = 15) -> dict[str, Any]:
        """Counts of ERROR/WARNING/Traceback lines in the worker log and the first few distinct ones."""
        counts: dict[str, int] = {}
        first: list[str] = []
        try:
            lines = self.log.read_text(errors="replace").splitlines()
        except OSError:
            return {"counts": {}, "first": []}
        for line in lines:
            m = _ISSUE_RE.search(line)
            if not m:
                continue
            counts[m.group(1)] = counts.get(m.group(1), 0) + 1
            short = re.sub(r"^\S+ \S+ ", "", line.strip())[:300]  # drop the timestamp for de-duplication
            if short not in first and len(first) < limit:
                first.append(short)
        return {"counts": counts, "first": first}


def has_items_collection(client: Any, settings: Settings) -> bool:
    """Whether the worker created its items collection (of the text space or of a CF space)."""
    from infra.namespace import owned_collections

    return bool(owned_collections(settings, client.list_collections()))


# -------------------------------------------------------------------------------------------------- cleanup
def cleanup_namespace(settings: Settings, extra_groups: Sequence[str] = ()) -> dict[str, Any]:
    """Drop the namespace's Redis keys, Milvus collections, Kafka topics and consumer groups (best effort: each
    system's error is reported, never raised); ``extra_groups``: groups outside the namespace's names."""
    from infra import namespace

    out: dict[str, Any] = {}
    try:
        out["redis_keys_deleted"] = namespace.drop_redis(settings)
    except Exception as exc:  # noqa: BLE001
        out["redis_error"] = f"{type(exc).__name__}: {exc}"
    try:
        out["milvus_collections_dropped"] = namespace.drop_milvus(settings)
    except Exception as exc:  # noqa: BLE001
        out["milvus_error"] = f"{type(exc).__name__}: {exc}"
    try:
        topics, groups = namespace.drop_kafka(settings)
        extra = [g for g in extra_groups if g not in groups]
        if extra:
            admin = clients.kafka_admin(settings.kafka)
            try:
                namespace.delete_groups(admin, extra)
            finally:
                admin.close()
        out["topics_deleted"] = len(topics)
        out["groups_deleted"] = groups + extra
    except Exception as exc:  # noqa: BLE001
        out["kafka_error"] = f"{type(exc).__name__}: {exc}"
    return out


# ----------------------------------------------------------------------------------------------- statistics
def summarize(values: Iterable[float], scale: float = 1.0, digits: int = 1) -> dict[str, float | int | None]:
    """n, mean, p50/p90/p99, min, max of ``values * scale`` (None fields when empty)."""
    a = np.asarray(list(values), dtype=np.float64) * scale
    keys = ("mean", "p50", "p90", "p99", "min", "max")
    if a.size == 0:
        return {"n": 0, **{k: None for k in keys}}
    p50, p90, p99 = np.percentile(a, [50, 90, 99])
    vals = (a.mean(), p50, p90, p99, a.min(), a.max())
    return {"n": int(a.size), **{k: round(float(v), digits) for k, v in zip(keys, vals, strict=True)}}


@dataclass
class Histogram:
    """One Prometheus histogram series: cumulative buckets (le -> count), sum and count."""

    buckets: list[tuple[float, float]] = field(default_factory=list)
    sum: float = 0.0
    count: float = 0.0

    def quantile(self, q: float) -> float | None:
        """Linear interpolation inside the bucket holding the q-quantile (Prometheus' histogram_quantile)."""
        if self.count <= 0 or not self.buckets:
            return None
        rank = q * self.count
        prev_le, prev_c = 0.0, 0.0
        for le, c in sorted(self.buckets):
            if c >= rank:
                if math.isinf(le):
                    return prev_le
                if c == prev_c:
                    return le
                return prev_le + (le - prev_le) * (rank - prev_c) / (c - prev_c)
            prev_le, prev_c = le, c
        return prev_le


def parse_prometheus(text: str) -> dict[str, Any]:
    """The worker's /metrics text: counters ``{name: {labels: value}}`` and histograms by label set."""
    from prometheus_client.parser import text_string_to_metric_families

    counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    hists: dict[str, dict[tuple[tuple[str, str], ...], Histogram]] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            labels = dict(s.labels)
            if fam.type == "histogram":
                le = labels.pop("le", None)
                key = tuple(sorted(labels.items()))
                h = hists.setdefault(fam.name, {}).setdefault(key, Histogram())
                if s.name.endswith("_bucket") and le is not None:
                    h.buckets.append((float(le), s.value))
                elif s.name.endswith("_sum"):
                    h.sum = s.value
                elif s.name.endswith("_count"):
                    h.count = s.value
            elif fam.type == "counter" and s.name.endswith("_total"):
                counters.setdefault(fam.name, {})[tuple(sorted(labels.items()))] = s.value
            elif fam.type == "gauge":
                counters.setdefault(fam.name, {})[tuple(sorted(labels.items()))] = s.value
    return {"counters": counters, "histograms": hists}


def scrape(port: int, timeout_s: float = 5.0) -> str:
    resp = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout_s)
    resp.raise_for_status()
    return resp.text


def stage_table(parsed: dict[str, Any]) -> dict[str, dict[str, float | None]]:
    """Per stage of ``thaw_stage_seconds``: batches, total and mean ms, and bucket-estimated p50/p90/p99 ms."""
    out: dict[str, dict[str, float | None]] = {}
    for key, h in sorted(parsed["histograms"].get("thaw_stage_seconds", {}).items()):
        stage = dict(key).get("stage", "?")
        if h.count <= 0:
            continue

        def ms(v: float | None) -> float | None:
            return None if v is None else round(v * 1000.0, 2)

        out[stage] = {
            "batches": int(h.count),
            "total_s": round(h.sum, 3),
            "mean_ms": ms(h.sum / h.count),
            "p50_ms_est": ms(h.quantile(0.5)),
            "p90_ms_est": ms(h.quantile(0.9)),
            "p99_ms_est": ms(h.quantile(0.99)),
        }
    return out


# ---------------------------------------------------------------------------------------------------- items
def lastfm_items(n: int, seed: int = 0, max_tags: int = 20) -> list[dict[str, Any]]:
    """``n`` content.new payloads (kind track) from real Last.fm artists: name as text, user tags as tags.

    Tagged artists first (in a seeded random order), then untagged ones; past the catalogue, ids repeat with a
    ``#k`` suffix so every payload is a distinct item.
    """
    from workloads.datasets import load_dataset

    ds = load_dataset("lastfm")
    rng = np.random.default_rng(seed)
    tagged = [i for i in range(ds.n_items) if any(t.strip() for t in ds.item_tags[i])]
    untagged = [i for i in range(ds.n_items) if not any(t.strip() for t in ds.item_tags[i])]
    order = list(rng.permutation(tagged)) + list(rng.permutation(untagged))
    out: list[dict[str, Any]] = []
    k = 0
    while len(out) < n:
        for i in order:
            if len(out) >= n:
                break
            raw = ds.item_ids[i]
            suffix = f"#{k}" if k else ""
            tags = [t.strip()[:64] for t in ds.item_tags[i] if t.strip()][:max_tags]
            out.append(
                {
                    "item_id": f"lastfm:{raw}{suffix}",
                    "kind": "track",
                    "creator_id": f"lastfm:artist:{raw}",
                    "text": (ds.item_text[i].strip() or f"artist {raw}")[:10_000],
                    "tags": tags,
                }
            )
        k += 1
    return out


TEXT_DATASETS: tuple[str, ...] = ("ml-100k", "community", "lastfm")
"""Where text-only items come from: ``ml-100k`` (MovieLens-100k from the recbole wheel: title as text, genres as
tags) and ``community`` (the demo community's composer posts over the rendered music21 clips) are in a plain clone;
``lastfm`` (artists with their users' tags) needs the optional datasets folder (``THAW_DATASETS_DIR``)."""


def repeat_distinct(pool: Sequence[dict[str, Any]], n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` payloads from ``pool`` in a seeded random order; past the pool, the payloads repeat with a ``#k``
    suffix on ``item_id`` so that every payload is a distinct item.

    Raises:
        ValueError: ``pool`` is empty and ``n > 0``.
    """
    if n <= 0:
        return []
    if not pool:
        raise ValueError("no items to draw from")
    order = np.random.default_rng(seed).permutation(len(pool))
    out: list[dict[str, Any]] = []
    k = 0
    while len(out) < n:
        for i in order[: n - len(out)]:
            it = pool[int(i)]
            out.append({**it, "item_id": f"{it['item_id']}#{k}" if k else it["item_id"]})
        k += 1
    return out


def movielens_items(n: int, seed: int = 0, kind: str = "dynamic") -> list[dict[str, Any]]:
    """``n`` content.new payloads from MovieLens-100k (the recbole wheel, fetched by setup): title as text, genres
    as tags; ids ``ml:<movie id>``, repeating with ``#k`` past the 1,682 movies."""
    from contracts.ids import published_content, safe_id
    from workloads.datasets import load_dataset

    ds = load_dataset("ml-100k")
    pool = []
    for i in range(ds.n_items):
        text, tags = published_content(ds.item_text[i].strip() or f"movie {ds.item_ids[i]}", ds.item_tags[i])
        pool.append({"item_id": safe_id("ml:", ds.item_ids[i]), "kind": kind, "creator_id": "ml:studio",
                     "text": text, "tags": tags})
    return repeat_distinct(pool, n, seed)


def community_items(n: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n`` text-only content.new payloads from the demo community (:mod:`workloads.community`): per composer of
    the rendered music21 clips one fan group and per clip one post about that recording, with their tags; ids
    repeat with ``#k`` past them.

    Raises:
        FileNotFoundError: The music corpus is not built (``thaw corpus music build --clips 160``).
    """
    from contracts.ids import published_content, safe_id
    from workloads.community import composer_posts
    from workloads.simulator import music_assets

    try:
        tracks = music_assets()
    except FileNotFoundError as exc:
        raise FileNotFoundError(f"the demo community's posts need the music corpus: thaw corpus music build "
                                f"--clips 160 ({exc})") from exc
    pool = []
    for j, a in enumerate(composer_posts(tracks)):
        text, tags = published_content(a.text, a.tags)
        pool.append({"item_id": safe_id(f"{a.kind}:", f"{a.source}:{j}"), "kind": a.kind,
                     "creator_id": "community", "text": text, "tags": tags})
    return repeat_distinct(pool, n, seed)


def text_items(n: int, dataset: str = "ml-100k", seed: int = 0) -> list[dict[str, Any]]:
    """``n`` text-only content.new payloads from one of :data:`TEXT_DATASETS`.

    Raises:
        ValueError: An unknown dataset.
        DatasetsDirNotSetError: ``lastfm`` without ``THAW_DATASETS_DIR``.
    """
    if dataset == "ml-100k":
        return movielens_items(n, seed)
    if dataset == "community":
        return community_items(n, seed)
    if dataset == "lastfm":
        return [{**it, "kind": "dynamic", "item_id": it["item_id"].replace("lastfm:", "dynamic:", 1)}
                for it in lastfm_items(n, seed=seed)]
    raise ValueError(f"unknown text dataset {dataset!r}; known: {', '.join(TEXT_DATASETS)}")


def media_pool(n_tracks: int, n_moments: int, seed: int = 0) -> list[dict[str, Any]]:
    """``n_tracks`` tracks with audio and ``n_moments`` moments with images (``workloads.replay.media_items``),
    reusing clips and images with distinct ids when a corpus is smaller than asked (a plain clone renders 160
    clips): every item is still decoded and encoded on its own.

    Raises:
        FileNotFoundError: A corpus that is needed is not built.
    """
    from workloads.replay import media_items

    out: list[dict[str, Any]] = []
    for kind, want in (("track", n_tracks), ("moment", n_moments)):
        got: list[dict[str, Any]] = []
        k = 0
        while len(got) < want:
            left = want - len(got)
            batch = media_items(left if kind == "track" else 0, left if kind == "moment" else 0,
                                seed=seed + k, tag=f"r{k}:" if k else "")
            if not batch:
                hint = "thaw corpus music build --clips 160" if kind == "track" else "thaw corpus imagetext build"
                raise FileNotFoundError(f"no {kind}s: the corpus is not built ({hint})")
            got += batch
            k += 1
        out += got[:want]
    return out


def encoder_versions(settings: Settings) -> dict[str, str | None]:
    """The current version of every encoder in the model directory the worker will load."""
    from encoders.registry import ModelRegistry

    reg = ModelRegistry(settings.models.dir)
    names = ("minilm-l6", "musicclip-audio", "audio-mae", "flava-image", "flava-text", "flava-fusion")
    return {n: reg.current_version(n) for n in names}


def mixed_items(n: int, seed: int = 0, shares: tuple[float, float, float] = (0.4, 0.3, 0.3),
                text_dataset: str = "community") -> list[dict[str, Any]]:
    """``n`` content.new payloads of mixed kinds with real media, interleaved in a seeded order: tracks with audio
    and moments with images (:func:`media_pool`) and text-only posts from ``text_dataset`` (:func:`text_items`;
    default the demo community's composer posts, so a plain clone runs it).

    Raises:
        FileNotFoundError: A corpus is not built (``thaw corpus music build``, ``thaw corpus imagetext build``).
    """
    rng = np.random.default_rng(seed)
    n_track = round(n * shares[0])
    n_moment = round(n * shares[1])
    media = media_pool(n_track, n_moment, seed=seed)
    texts = text_items(n - len(media), text_dataset, seed=seed)
    out = media + texts
    return [out[i] for i in rng.permutation(len(out))]


# --------------------------------------------------------------------------------------------------- output
def machine_info() -> dict[str, Any]:
    load = os.getloadavg()
    return {
        "cpus": os.cpu_count(),
        "loadavg_1_5_15": [round(x, 2) for x in load],
        "python": sys.version.split()[0],
    }


class CpuMeter:
    """Machine-wide busy CPU cores over a window (from /proc/stat): shows when other load shared the machine."""

    def __init__(self) -> None:
        self.t0 = self._read()

    @staticmethod
    def _read() -> tuple[float, float] | None:
        try:
            with open("/proc/stat", encoding="utf-8") as fh:
                vals = [int(x) for x in fh.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = vals[3] + (vals[4] if len(vals) > 4 else 0)  # idle + iowait
        return float(sum(vals[:8])), float(idle)

    def busy_cores(self) -> float | None:
        t1 = self._read()
        if self.t0 is None or t1 is None or t1[0] <= self.t0[0]:
            return None
        total, idle = t1[0] - self.t0[0], t1[1] - self.t0[1]
        return round((total - idle) / total * (os.cpu_count() or 1), 2)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(obj, indent=2, default=str) + "\n", encoding="utf-8")


def parse_rates(text: str) -> list[float]:
    rates = [float(x) for x in text.replace(" ", "").split(",") if x]
    if not rates or any(r <= 0 for r in rates):
        raise ValueError("rates are positive numbers, comma-separated (e.g. 20,50)")
    return rates
