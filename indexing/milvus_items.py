"""The Milvus items collection: schema, index, batched idempotent upsert, search, lookup.

Works on a Milvus server (the local stack's standalone server, or standalone/distributed elsewhere: change
``THAW_MILVUS__URI``) and on Milvus Lite (``THAW_MILVUS__URI=./thaw.db``) for single-process use. Lite's quirks are
hidden here: rows are flushed after each upsert batch (unflushed rows are slow to search there), a reopened
collection is loaded before use, and its index parameters are not relied on.

Upsert is keyed by ``item_id``, so replaying a ``content.new`` event rewrites the same row: at-least-once delivery
from Kafka becomes effectively-once in Milvus.

Every call carries a deadline (``timeout=``; pymilvus waits without one as long as the server takes): the ingest
path's by default, the serving path's for an index built with ``serving=True`` (``MilvusSettings.timeout_s`` /
``load_timeout_s`` / ``serving_timeout_s``, :func:`infra.clients.milvus_deadlines`). A call past its deadline raises
a gRPC ``DEADLINE_EXCEEDED`` error, which the worker retries as transient (:func:`streams.cores.retry.is_transient`).

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
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, TypeVar

import numpy as np

from infra import clients
from infra.settings import MilvusSettings

log = logging.getLogger(__name__)

MAX_ID = 128
_NOT_LOADED = 101  # Milvus' error code for a request on a collection that is not loaded

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
    """

    def __init__(self, settings: MilvusSettings, dim: int, collection: str | None = None, *,
                 serving: bool = False) -> None:
        self.settings = settings
        self.dim = dim
        self.name = collection or settings.items_collection
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
        """Create the collection and its index if missing, and load it. Returns True when created."""
        from pymilvus import DataType

        with self._lock:
            created = False
            if not self.client.has_collection(self.name, timeout=self.deadlines.call_s):
                schema = self.client.create_schema(auto_id=False, enable_dynamic_field=False)
                schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
                schema.add_field("vector", DataType.FLOAT_VECTOR, dim=self.dim)
                schema.add_field("kind", DataType.VARCHAR, max_length=16)
                schema.add_field("creator_id", DataType.VARCHAR, max_length=MAX_ID)
                schema.add_field("created_at", DataType.INT64)
                schema.add_field("model_version", DataType.VARCHAR, max_length=64)
                schema.add_field("indexed_at", DataType.INT64)
                idx = self.client.prepare_index_params()
                if self.lite:
                    idx.add_index(field_name="vector", index_type="FLAT", metric_type=self.settings.metric_type)
                else:
                    idx.add_index(
                        field_name="vector",
                        index_type=self.settings.index_type,
                        metric_type=self.settings.metric_type,
                        params={"M": 16, "efConstruction": 200} if self.settings.index_type == "HNSW" else {},
                    )
                # creating also builds the index and loads the (empty) collection: the load deadline
                self.client.create_collection(
                    self.name,
                    schema=schema,
                    index_params=idx,
                    consistency_level=self.settings.consistency_level,
                    timeout=self.deadlines.load_s,
                )
                created = True
            else:
                self._check_dim()
            self.client.load_collection(self.name, timeout=self.deadlines.load_s)
            return created

    def _check_dim(self) -> None:
        desc = self.client.describe_collection(self.name, timeout=self.deadlines.call_s)
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
        n = 0
        for start in range(0, len(rows), batch_size):
            chunk = rows[start : start + batch_size]
            data = []
            for r in chunk:
                v = np.asarray(r.vector, dtype=np.float32).reshape(-1)
                if v.shape[0] != self.dim:
                    raise ValueError(f"item {r.item_id}: vector has {v.shape[0]} dims, collection has {self.dim}")
                data.append(
                    {
                        "item_id": r.item_id,
                        "vector": v.tolist(),
                        "kind": r.kind,
                        "creator_id": r.creator_id,
                        "created_at": int(r.created_at_ms),
                        "model_version": r.model_version,
                        "indexed_at": int(r.indexed_at_ms or now_ms),
                    }
                )
            self._loaded(partial(self._locked, self.client.upsert, self.name, data, timeout=self.deadlines.call_s))
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
        ``created_after_ms`` keeps only items created at or after that time. ``max_extra`` caps how many results
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
        expr = ""
        if kinds:
            expr = "kind in [" + ",".join(_quote(k) for k in kinds) + "]"
        if created_after_ms is not None:
            expr = (f"({expr}) and " if expr else "") + f"created_at >= {int(created_after_ms)}"
        params = {"metric_type": self.settings.metric_type}
        if not self.lite and self.settings.index_type == "HNSW":
            params["params"] = {"ef": max(64, k + extra)}  # type: ignore[assignment]
        res = self._loaded(partial(
            self._locked,
            self.client.search,
            self.name,
            data=q.tolist(),
            limit=min(k + extra, 16384),
            anns_field="vector",
            filter=expr,
            output_fields=["kind", "creator_id", "created_at"],
            search_params=params,
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
        with self._lock:
            rows = self.client.query(
                self.name,
                filter=f"created_at >= {int(since_ms)}",
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
