"""The Milvus items collection: schema, index, batched idempotent upsert, search, lookup.

Works on a Milvus server (the local stack's standalone server, or standalone/distributed elsewhere: change
``THAW_MILVUS__URI``) and on Milvus Lite (``THAW_MILVUS__URI=./thaw.db``) for single-process use. Lite's quirks are
hidden here: rows are flushed after each upsert batch (unflushed rows are slow to search there), a reopened
collection is loaded before use, and its index parameters are not relied on.

Upsert is keyed by ``item_id``, so replaying a ``content.new`` event rewrites the same row: at-least-once delivery
from Kafka becomes effectively-once in Milvus. On a partitioned collection of a server before 2.4 an upsert is sent
as a delete then an insert (:func:`split_upsert`: those servers route an upsert to the wrong partition).

Every call carries a deadline (``timeout=``; pymilvus waits without one as long as the server takes): the ingest
path's by default, the serving path's for an index built with ``serving=True`` (``MilvusSettings.timeout_s`` /
``load_timeout_s`` / ``serving_timeout_s``, :func:`infra.clients.milvus_deadlines`). A call past its deadline raises
a gRPC ``DEADLINE_EXCEEDED`` error, which the worker retries as transient (:func:`streams.cores.retry.is_transient`).

Layout (:class:`Layout`, read back from the collection's schema when it is opened): a collection this module
creates has a partition key (``THAW_MILVUS__PARTITION_KEY``), by default ``kind``: a search with ``kinds`` visits
only those kinds' partitions. With ``created_day`` (the UTC day of ``created_at``, a field of its own) a search with
``created_after_ms`` names the days of its window (``created_day in [...]``) and Milvus visits only their
partitions. Why ``kind`` is the default, measured: docs/operations.md, "Milvus at scale". A collection created
before partition keys keeps working as it is (rows are written without ``created_day``, searches without day
terms): a new CF version's collection gets the key through the usual blue/green roll-out, and
:func:`migrate_layout` rebuilds a collection in the current layout in place.

Query the collection yourself with pymilvus::

    from pymilvus import MilvusClient
    c = MilvusClient("http://127.0.0.1:19531")
    hits = c.search("thaw_items", data=[user_vector], limit=20, anns_field="vector",
                    output_fields=["kind", "creator_id", "created_at"], filter='kind in ["track", "moment"]')
"""

from __future__ import annotations

import contextlib
import logging
import re
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from infra import clients
from infra.settings import MilvusSettings

log = logging.getLogger(__name__)

MAX_ID = 128
_NOT_LOADED = 101  # Milvus' error code for a request on a collection that is not loaded
_NO_INDEX = 700  # Milvus' error code for loading a collection that has no index (yet)
#: how long :meth:`ItemIndex.ensure` waits for another process' new collection to get its index before building it
INDEX_WAIT_S = 15.0
DAY_MS = 86_400_000
DAY_FIELD = "created_day"
#: a search of a window dated up to this far past the clock still finds its rows (the worker refuses posts dated
#: more than ``stream.max_clock_skew_s`` ahead, at most a day)
DAY_AHEAD_MS = DAY_MS

T = TypeVar("T")


@dataclass(frozen=True)
class ItemRow:
    item_id: str
    vector: np.ndarray  # D float32
    kind: str
    creator_id: str
    created_at_ms: int
    model_version: str
    indexed_at_ms: int = 0


@dataclass(frozen=True)
class Hit:
    item_id: str
    score: float
    kind: str
    creator_id: str
    created_at_ms: int


def _quote(s: str) -> str:
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"') + '"'


def id_filter(ids: Iterable[str]) -> str:
    """A Milvus boolean expression ``item_id in [...]`` with safely quoted ids."""
    return "item_id in [" + ",".join(_quote(i) for i in ids) + "]"


# ------------------------------------------------------------------------------------- layout (pure)
def created_day(created_at_ms: int) -> int:
    """The partition key value of an item: the UTC day number of its creation time (days since the epoch)."""
    return int(created_at_ms) // DAY_MS


@dataclass(frozen=True)
class Layout:
    """How an items collection is partitioned, as its schema says.

    ``partition_key`` is the partition key field (``created_day``, ``kind``) or None (a collection created before
    partition keys, or with ``partition_key = none``); ``partitions`` the number of hash partitions Milvus reported.
    """

    partition_key: str | None = None
    has_day_field: bool = False
    partitions: int = 1

    @property
    def by_day(self) -> bool:
        return self.partition_key == DAY_FIELD and self.has_day_field


def layout_of(description: Mapping[str, Any]) -> Layout:
    """The layout of a collection from its ``describe_collection`` answer."""
    fields = list(description.get("fields", []))
    key = next((str(f.get("name")) for f in fields if f.get("is_partition_key")), None)
    has_day = any(f.get("name") == DAY_FIELD for f in fields)
    return Layout(key, has_day, int(description.get("num_partitions") or 1))


def day_terms(since_ms: int, until_ms: int, max_terms: int) -> list[int] | None:
    """The ``created_day`` values of a window ``[since_ms, until_ms]``, or None when it spans more than
    ``max_terms`` days (then naming them prunes little: ``k`` days hash onto about ``P(1 - (1 - 1/P)^k)`` of ``P``
    partitions). An empty window has no days."""
    first, last = created_day(since_ms), created_day(until_ms)
    if last < first:
        return []
    if last - first + 1 > max_terms:
        return None
    return list(range(first, last + 1))


def search_filter(kinds: Sequence[str] | None = None, created_after_ms: int | None = None,
                  days: Sequence[int] | None = None) -> str:
    """The boolean expression of a search or query: the kinds, the window's start and, on a collection partitioned
    by day, the window's days (``created_day in [...]``, which lets Milvus skip the other days' partitions; it
    keeps the same rows, since every row's ``created_day`` is its ``created_at``'s day)."""
    parts = []
    if kinds:
        parts.append("kind in [" + ",".join(_quote(k) for k in kinds) + "]")
    if days is not None:
        parts.append(f"{DAY_FIELD} in [" + ",".join(str(int(d)) for d in days) + "]")
    if created_after_ms is not None:
        parts.append(f"created_at >= {int(created_after_ms)}")
    if len(parts) <= 1:
        return parts[0] if parts else ""
    return " and ".join(f"({p})" for p in parts)


#: Milvus servers before this one route an upsert by the wrong field on a collection with a partition key: rows land
#: in the partition of their primary key's hash, so a search that names the key's value misses them (measured on
#: 2.3.5: 2 of 10 rows of one day found; milvus-io/milvus#30607, fixed by #30772/#30773 in February 2024). 2.4.0
#: is the first release line that has the fix for certain.
UPSERT_ROUTES_BY_KEY_FROM = (2, 4, 0)


def server_version(text: str) -> tuple[int, ...] | None:
    """``"v2.3.5-lite"`` -> ``(2, 3, 5)``; None when the answer names no version."""
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", text or "")
    return tuple(int(x) for x in m.groups()) if m else None


def split_upsert(layout: Layout, version: tuple[int, ...] | None, *, lite: bool = False) -> bool:
    """Whether an upsert must be sent as a delete of the ids then an insert (which Milvus routes by the partition
    key): on a partitioned collection of a server older than :data:`UPSERT_ROUTES_BY_KEY_FROM`, or of unknown
    version. The delete and the insert go to the same shard in timestamp order, so the inserted row survives; a
    search between them may miss the item for that moment (a replayed item only: a new one has nothing to delete)."""
    if lite or layout.partition_key is None:
        return False
    return version is None or version < UPSERT_ROUTES_BY_KEY_FROM


def row_dict(r: ItemRow, dim: int, now_ms: int, *, day_field: bool) -> dict[str, Any]:
    """The Milvus row of an item (``created_day`` only for a collection that has the field)."""
    v = np.asarray(r.vector, dtype=np.float32).reshape(-1)
    if v.shape[0] != dim:
        raise ValueError(f"item {r.item_id}: vector has {v.shape[0]} dims, collection has {dim}")
    row: dict[str, Any] = {
        "item_id": r.item_id,
        "vector": v.tolist(),
        "kind": r.kind,
        "creator_id": r.creator_id,
        "created_at": int(r.created_at_ms),
        "model_version": r.model_version,
        "indexed_at": int(r.indexed_at_ms or now_ms),
    }
    if day_field:
        row[DAY_FIELD] = created_day(r.created_at_ms)
    return row


def index_spec(settings: MilvusSettings) -> tuple[str, dict[str, int]]:
    """The index type and build parameters of a new collection's vector field."""
    if settings.index_type == "HNSW":
        return "HNSW", {"M": settings.hnsw_m, "efConstruction": settings.hnsw_ef_construction}
    if settings.index_type == "IVF_FLAT":
        return "IVF_FLAT", {"nlist": settings.ivf_nlist}
    return settings.index_type, {}


def search_params(settings: MilvusSettings, limit: int, *, lite: bool = False) -> dict[str, Any]:
    """The search parameters of a top-``limit`` search (HNSW: ``ef`` at least ``limit``, which Milvus requires)."""
    params: dict[str, Any] = {"metric_type": settings.metric_type}
    if lite:
        return params
    if settings.index_type == "HNSW":
        params["params"] = {"ef": max(settings.hnsw_ef, limit)}
    elif settings.index_type == "IVF_FLAT":
        params["params"] = {"nprobe": min(settings.ivf_nprobe, settings.ivf_nlist)}
    return params


def collection_for(settings: MilvusSettings, space: str) -> str:
    """The items collection of a vector space.

    The MiniLM text space (``minilm-*``, the engine's baseline) uses the configured ``items_collection``; every
    other space (a CF space such as ``cb2cf@<version>``) has its own collection
    ``<items_collection>__<space with non-alphanumerics as _>``, so vectors of two spaces never meet in one search.
    """
    base = settings.items_collection
    if not space or space.startswith("minilm"):
        return base
    return f"{base}__{re.sub(r'[^0-9A-Za-z]', '_', space)}"


def serving_alias(settings: MilvusSettings) -> str:
    """The Milvus alias that always names the served space's collection: ``<items_collection>_serving``."""
    return f"{settings.items_collection}_serving"


def point_serving_alias(settings: MilvusSettings, collection: str) -> str:
    """Point the serving alias at ``collection`` (create it, or move it atomically from the previous space).

    Returns the alias. Clients that query Milvus directly search the alias and follow a flip without a change.
    Each call has the ingest path's deadline.
    """
    from pymilvus.exceptions import MilvusException

    client = clients.milvus_client(settings)
    timeout = clients.milvus_deadlines(settings).call_s
    alias = serving_alias(settings)
    quiet = logging.getLogger("pymilvus")
    level = quiet.level
    try:
        if alias in client.list_aliases(collection, timeout=timeout).get("aliases", []):
            return alias
        quiet.setLevel(logging.CRITICAL)  # pymilvus logs a traceback for the expected "alias not found"
        try:
            client.alter_alias(collection, alias, timeout=timeout)
        except MilvusException:
            client.create_alias(collection, alias, timeout=timeout)
    finally:
        quiet.setLevel(level)
        client.close()
    return alias


class ItemIndex:
    """One items collection in one CF/content space.

    Args:
        settings: Milvus connection settings.
        dim: vector dimension of the space.
        collection: collection (or alias) name; defaults to ``settings.items_collection``.
        serving: the serving path's deadlines (the API) instead of the ingest path's (the worker, the CLI).
        clock: epoch-seconds clock (the upper end of a fresh window's days).

    The collection's :class:`Layout` is read from its schema on :meth:`ensure` or the first call that needs it, and
    kept: an index object over an alias reads the layout of the collection the alias named then.
    """

    def __init__(self, settings: MilvusSettings, dim: int, collection: str | None = None, *,
                 serving: bool = False, clock: Callable[[], float] = time.time) -> None:
        self.settings = settings
        self.dim = dim
        self.name = collection or settings.items_collection
        self.clock = clock
        self._layout: Layout | None = None
        self._split_upsert: bool | None = None
        self.deadlines = clients.milvus_deadlines(settings, serving=serving)
        self.client = clients.milvus_client(settings, serving=serving)
        self.lite = settings.is_lite
        # Milvus Lite is single-process and not thread-safe: serialise calls on one client there. A server client
        # talks gRPC, whose channel is thread-safe: concurrent requests (the serving API's threads) go in parallel.
        self._lock: contextlib.AbstractContextManager[object] = (
            threading.Lock() if self.lite else contextlib.nullcontext()
        )

    def _locked(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        with self._lock:
            return fn(*args, **kwargs)

    def _loaded(self, call: Callable[[], T]) -> T:
        """``call()`` (a request on the collection); when the server answers that the collection is not loaded
        (a restarted Milvus does not load it again by itself: error code 101), load it and ask once more."""
        from pymilvus.exceptions import MilvusException

        try:
            return call()
        except MilvusException as exc:
            if exc.code != _NOT_LOADED or self.lite:
                raise
            log.warning("collection %s is not loaded (a restarted Milvus?): loading it", self.name)
            with self._lock:
                self.client.load_collection(self.name, timeout=self.deadlines.load_s)
            return call()

    # ---------------------------------------------------------------- schema
    def ensure(self) -> bool:
        """Create the collection and its index if missing, and load it. Returns True when created.

        A new collection gets the settings' layout (partition key, partitions, shards); an existing one is opened
        as it is, whatever its layout (its vectors' dimension must match). Both are loaded with
        ``settings.replicas`` in-memory replicas when that is more than 1.
        """
        with self._lock:
            created = False
            if not self.client.has_collection(self.name, timeout=self.deadlines.call_s):
                try:
                    self._create()
                    created = True
                except Exception:
                    # another process created it between the check and the create: open that one
                    if not self.client.has_collection(self.name, timeout=self.deadlines.call_s):
                        raise
            desc = self.client.describe_collection(self.name, timeout=self.deadlines.call_s)
            self._check_dim(desc)
            self._layout = layout_of(desc)
            self._split_upsert = None
            self._load_indexed()
            return created

    def _load_indexed(self, wait_s: float | None = None) -> None:
        """Load the collection. Several processes open it at once (the workers of a group, a reader): one creates
        it and then its index, and a server refuses to load a collection without an index (error 700), so the
        others wait for the index (``wait_s``, default :data:`INDEX_WAIT_S`); if none appears (its creator stopped
        in between), build the index this module builds and load."""
        from pymilvus.exceptions import MilvusException

        wait_s = INDEX_WAIT_S if wait_s is None else wait_s
        deadline = time.monotonic() + wait_s
        built = False
        while True:
            try:
                self.client.load_collection(self.name, timeout=self.deadlines.load_s, **self._replica_kw())
                return
            except MilvusException as exc:
                if exc.code != _NO_INDEX or self.lite or built:
                    raise
            if self.client.list_indexes(self.name, timeout=self.deadlines.call_s):
                continue  # its creator built it meanwhile: load again
            if time.monotonic() < deadline:
                time.sleep(0.2)
                continue
            log.warning("collection %s has no index after %.0f s (its creator stopped?): building it", self.name,
                        wait_s)
            try:
                self.client.create_index(self.name, self._index_params(), timeout=self.deadlines.load_s)
            except MilvusException:
                if not self.client.list_indexes(self.name, timeout=self.deadlines.call_s):
                    raise  # not another creator's index landing at the same moment
            built = True

    def _replica_kw(self) -> dict[str, int]:
        return {"replica_number": self.settings.replicas} if self.settings.replicas > 1 and not self.lite else {}

    def _create(self) -> None:
        from pymilvus import DataType

        key = self.settings.partition_key
        schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
        schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
        schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
        schema.add_field("kind", DataType.VARCHAR, max_length=16, is_partition_key=key == "kind")
        schema.add_field("creator_id", DataType.VARCHAR, max_length=MAX_ID)
        schema.add_field("created_at", DataType.INT64)
        schema.add_field("model_version", DataType.VARCHAR, max_length=64)
        schema.add_field("indexed_at", DataType.INT64)
        if key == DAY_FIELD:
            schema.add_field(DAY_FIELD, DataType.INT64, is_partition_key=True,
                             description="UTC day of created_at (created_at // 86400000): the partition key")
        idx = self._index_params()
        layout: dict[str, int] = {}
        if key != "none":
            layout["num_partitions"] = self.settings.partitions
        if not self.lite:
            layout["shards_num"] = self.settings.shards
        # creating builds the index and loads the (empty) collection: the load deadline; with more than one replica
        # it is loaded by ensure() instead (pymilvus' create loads one)
        self.client.create_collection(
            self.name,
            schema=schema,
            index_params=idx if not self._replica_kw() else None,
            consistency_level=self.settings.consistency_level,
            timeout=self.deadlines.load_s,
            **layout,
        )
        if self._replica_kw():
            self.client.create_index(self.name, idx, timeout=self.deadlines.call_s)

    def _index_params(self) -> Any:
        """The vector index of a collection this module creates (FLAT on Milvus Lite, else the settings')."""
        idx = self.client.prepare_index_params()
        if self.lite:
            idx.add_index(field_name="vector", index_type="FLAT", metric_type=self.settings.metric_type)
        else:
            index_type, params = index_spec(self.settings)
            idx.add_index(field_name="vector", index_type=index_type, metric_type=self.settings.metric_type,
                          params=params)
        return idx

    @property
    def layout(self) -> Layout:
        """The collection's layout (read from its schema once)."""
        if self._layout is None:
            with self._lock:
                desc = self.client.describe_collection(self.name, timeout=self.deadlines.call_s)
            self._layout = layout_of(desc)
        return self._layout

    def splits_upserts(self) -> bool:
        """Whether this collection's upserts go as delete + insert (:func:`split_upsert`), decided once."""
        if self._split_upsert is None:
            layout = self.layout
            version = None
            if not self.lite and layout.partition_key is not None:
                with self._lock:
                    version = server_version(str(self.client.get_server_version(timeout=self.deadlines.call_s)))
            self._split_upsert = split_upsert(layout, version, lite=self.lite)
        return self._split_upsert

    def _check_dim(self, desc: Mapping[str, Any]) -> None:
        for f in desc.get("fields", []):
            if f.get("name") == "vector":
                d = int(f.get("params", {}).get("dim", self.dim))
                if d != self.dim:
                    raise ValueError(
                        f"collection {self.name!r} holds {d}-d vectors but this space is {self.dim}-d; "
                        "vectors of two spaces are never mixed: use a new collection"
                    )

    def drop(self) -> None:
        t = self.deadlines.call_s
        with self._lock:
            if self.client.has_collection(self.name, timeout=t):
                self.client.drop_collection(self.name, timeout=t)

    # ---------------------------------------------------------------- writes
    def upsert(self, rows: Sequence[ItemRow], batch_size: int = 512) -> int:
        """Idempotent upsert keyed by item_id, in batches. Returns rows written."""
        if not rows:
            return 0
        now_ms = int(time.time() * 1000)
        day_field = self.layout.has_day_field
        split = self.splits_upserts()
        n = 0
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            data = [row_dict(r, self.dim, now_ms, day_field=day_field) for r in chunk]
            if split:
                ids = [d["item_id"] for d in data]
                self._loaded(partial(self._locked, self.client.delete, self.name, filter=id_filter(ids),
                                     timeout=self.deadlines.call_s))
                self._loaded(partial(self._locked, self.client.insert, self.name, data,
                                     timeout=self.deadlines.call_s))
            else:
                self._loaded(partial(self._locked, self.client.upsert, self.name, data,
                                     timeout=self.deadlines.call_s))
            n += len(data)
        if self.lite:
            with self._lock:
                self.client.flush(self.name, timeout=self.deadlines.call_s)
        return n

    def delete(self, ids: Sequence[str]) -> None:
        if ids:
            with self._lock:
                self.client.delete(self.name, filter=id_filter(ids), timeout=self.deadlines.call_s)

    # ---------------------------------------------------------------- reads
    def search(
        self,
        vectors: np.ndarray,
        k: int,
        *,
        exclude: Sequence[Sequence[str]] | None = None,
        kinds: Sequence[str] | None = None,
        consistency: str | None = None,
        created_after_ms: int | None = None,
        max_extra: int | None = None,
    ) -> list[list[Hit]]:
        """Top-k by inner product for each query vector (Q x D). ``exclude[i]`` drops ids for query i.

        ``consistency`` overrides the collection's level for this call (e.g. "Strong" to read your own writes);
        ``created_after_ms`` keeps only items created at or after that time (on a collection partitioned by day, the
        window's days are named too, so only their partitions are searched: rows dated more than a day past the
        clock are then left out, see :data:`DAY_AHEAD_MS`). ``max_extra`` caps how many results
        beyond ``k`` are fetched to make up for excluded ids (default: as many as are excluded, so the answer is
        always k when the collection has them; a cap makes the search cheaper and may return fewer than k).

        Note (measured on Milvus 2.3.5 standalone): a *very selective* ``created_after_ms`` filter (tens of rows out
        of tens of thousands) returns only a fraction of the matching rows, whatever ``ef``; score such small sets
        exactly instead (``ranking.online.pipeline`` does for the fresh-items recall).
        """
        q = np.atleast_2d(np.asarray(vectors, dtype=np.float32))
        if q.shape[0] == 0:
            return []
        extra = max((len(e) for e in exclude), default=0) if exclude else 0
        if max_extra is not None:
            extra = min(extra, max_extra)
        expr = self._filter(kinds, created_after_ms)
        limit = min(k + extra, 16384)
        res = self._loaded(partial(
            self._locked,
            self.client.search,
            self.name,
            data=q.tolist(),
            limit=limit,
            anns_field="vector",
            filter=expr,
            output_fields=["kind", "creator_id", "created_at"],
            search_params=search_params(self.settings, limit, lite=self.lite),
            timeout=self.deadlines.call_s,
            **({"consistency_level": consistency} if consistency and not self.lite else {}),
        ))
        out: list[list[Hit]] = []
        for i, hits in enumerate(res):
            ex = set(exclude[i]) if exclude else set()
            row = []
            for h in hits:
                iid = h.get("id") if "id" in h else h.get("item_id")
                if iid in ex:
                    continue
                ent = h.get("entity", {})
                row.append(
                    Hit(
                        item_id=str(iid),
                        score=float(h.get("distance", 0.0)),
                        kind=str(ent.get("kind", "")),
                        creator_id=str(ent.get("creator_id", "")),
                        created_at_ms=int(ent.get("created_at", 0)),
                    )
                )
                if len(row) >= k:
                    break
            out.append(row)
        return out

    def _filter(self, kinds: Sequence[str] | None, created_after_ms: int | None) -> str:
        days = None
        if created_after_ms is not None and self.layout.by_day:
            until_ms = int(self.clock() * 1000) + DAY_AHEAD_MS
            days = day_terms(int(created_after_ms), max(until_ms, int(created_after_ms)),
                             max(self.layout.partitions, 1))
        return search_filter(kinds, created_after_ms, days)

    def get_vectors(self, ids: Sequence[str], strong_retry: bool = True) -> dict[str, np.ndarray]:
        """Vectors of the given items that exist (missing ids are simply absent).

        Read at the collection's consistency level first; ids not found are asked again with Strong consistency,
        so an item upserted a moment ago by another worker is not reported missing (Strong costs one time tick,
        ~200 ms on Milvus 2.3, and is only paid for misses). ``strong_retry=False`` skips that second read (a
        caller that can do without a row for a moment, such as a request path).
        """
        if not ids:
            return {}
        uniq = list(dict.fromkeys(ids))
        out = self._get_vectors(uniq, None)
        missing = [i for i in uniq if i not in out]
        if strong_retry and missing and not self.lite and self.settings.consistency_level != "Strong":
            out.update(self._get_vectors(missing, "Strong"))
        return out

    def _get_vectors(self, ids: list[str], consistency: str | None) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        extra = {"consistency_level": consistency} if consistency else {}
        for start in range(0, len(ids), 1000):
            chunk = ids[start : start + 1000]
            rows = self._loaded(partial(self._locked, self.client.query, self.name, filter=id_filter(chunk),
                                        output_fields=["item_id", "vector"], timeout=self.deadlines.call_s,
                                        **extra))
            for r in rows:
                out[str(r["item_id"])] = np.asarray(r["vector"], dtype=np.float32)
        return out

    def get_rows(self, ids: Sequence[str]) -> list[dict[str, object]]:
        if not ids:
            return []
        with self._lock:
            return list(
                self.client.get(
                    self.name,
                    ids=list(ids),
                    output_fields=["item_id", "kind", "creator_id", "created_at", "model_version", "indexed_at"],
                    timeout=self.deadlines.call_s,
                )
            )

    def newest(self, n: int, since_ms: int = 0) -> list[Hit]:
        """The ``n`` most recently created items (created_at >= since_ms), newest first."""
        expr = self._filter(None, since_ms)
        with self._lock:
            rows = self.client.query(
                self.name,
                filter=expr,
                output_fields=["item_id", "kind", "creator_id", "created_at"],
                limit=16384,
                timeout=self.deadlines.call_s,
            )
        rows.sort(key=lambda r: int(r["created_at"]), reverse=True)
        return [
            Hit(str(r["item_id"]), 0.0, str(r["kind"]), str(r["creator_id"]), int(r["created_at"]))
            for r in rows[:n]
        ]

    def exists(self) -> bool:
        """Whether the collection (or alias) exists."""
        with self._lock:
            return bool(self.client.has_collection(self.name, timeout=self.deadlines.call_s))

    def count(self) -> int:
        """Number of rows, read with Strong consistency (includes every acknowledged write)."""
        extra = {} if self.lite else {"consistency_level": "Strong"}
        res = self._loaded(partial(self._locked, self.client.query, self.name, filter="",
                                   output_fields=["count(*)"], timeout=self.deadlines.call_s, **extra))
        return int(res[0]["count(*)"])

    def close(self) -> None:
        with self._lock:
            self.client.close()


def migrate_layout(settings: MilvusSettings, collection: str, dim: int, *, batch_size: int = 2000,
                   clock: Callable[[], float] = time.time) -> dict[str, Any]:
    """Rebuild ``collection`` in the settings' layout (e.g. a collection created before partition keys), in place.

    Copies every row into ``<collection>__relayout`` (created with the current layout; a leftover of an interrupted
    run is dropped first), checks the row counts agree, then renames the old collection to
    ``<collection>__legacy_<epoch s>``, the copy to ``collection``, and moves the old collection's aliases (the
    serving alias) to it. The old collection is kept for the operator to drop. Stop the writers (the workers of this
    space) first and start them after: a row upserted during the copy may be missing from it (the count check then
    refuses to swap). Readers see the collection missing for the moment between the two renames. Returns what it
    did; nothing when the layout is already the settings'.
    """
    src = ItemIndex(settings, dim, collection)
    try:
        if not src.exists():
            raise ValueError(f"no collection {collection!r} to migrate")
        src.ensure()  # loads it (and reads its layout)
        want = None if settings.partition_key == "none" else settings.partition_key
        if src.layout.partition_key == want:
            return {"collection": collection, "migrated": False, "partition_key": want}
        tmp = f"{collection}__relayout"
        dst = ItemIndex(settings, dim, tmp)
        try:
            dst.drop()
            dst.ensure()
            copied = 0
            it = src.client.query_iterator(
                collection, batch_size=batch_size, filter="", timeout=src.deadlines.call_s,
                output_fields=["item_id", "vector", "kind", "creator_id", "created_at", "model_version",
                               "indexed_at"],
                **({} if src.lite else {"consistency_level": "Strong"}))
            try:
                while rows := it.next():
                    copied += dst.upsert([
                        ItemRow(str(r["item_id"]), np.asarray(r["vector"], np.float32), str(r["kind"]),
                                str(r["creator_id"]), int(r["created_at"]), str(r["model_version"]),
                                int(r["indexed_at"]))
                        for r in rows])
            finally:
                it.close()
            n_src, n_dst = src.count(), dst.count()
            if n_src != n_dst:
                raise RuntimeError(f"{collection}: {n_src} rows but {n_dst} copied into {tmp} (writers running?); "
                                   f"{collection} is unchanged, {tmp} is left to inspect")
            t = src.deadlines.call_s
            aliases = list(src.client.list_aliases(collection, timeout=t).get("aliases", []))
            legacy = f"{collection}__legacy_{int(clock())}"
            src.client.rename_collection(collection, legacy, timeout=t)
            src.client.rename_collection(tmp, collection, timeout=t)
            for alias in aliases:
                src.client.alter_alias(collection, alias, timeout=t)
            # a server keeps a renamed collection loaded, Milvus Lite releases it
            src.client.load_collection(collection, timeout=src.deadlines.load_s, **dst._replica_kw())
        finally:
            dst.close()
        return {"collection": collection, "migrated": True, "partition_key": want, "rows": n_dst,
                "legacy": legacy, "aliases_moved": aliases}
    finally:
        src.close()
