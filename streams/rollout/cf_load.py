"""Loading a published CF space's warm vectors into the sinks: ``thaw cf load``.

A CF space (``cb2cf@<v>``) is published together with the DSSM towers it was trained against (``dssm-item``,
``dssm-user``, same version; ``ids.json`` beside each graph lists the dataset ids in index order). New items get
their vectors in the stream (CB2CF); the items and users the DSSM was trained on get theirs from the towers here:

* warm items: their DSSM item vectors are upserted into the space's Milvus collection, so recall ranks warm and
  cold items together in one space;
* warm users: their DSSM user vectors become their starting state in Redis (weight ``user_weight``, i.e. as strong
  as that many events; later events move it incrementally). A user that already has events in this space is left
  alone, so loading is safe to repeat.

Dataset ids are mapped to stream ids the way the replayer publishes them (``workloads.replay.safe_id`` with the
dataset name the models were trained on, e.g. ``lastfm:i:<artist id>``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import numpy as np

from contracts.ids import safe_id
from encoders.registry import ModelRegistry
from indexing.milvus_items import ItemIndex, ItemRow, collection_for
from indexing.redis_state import RedisState, UserState, pack_state
from infra.settings import Settings
from ranking.online.projector import DSSMTower
from streams.cores.space import CFSpace
from streams.layout import ensure_layout
from streams.models import load_cf_space

log = logging.getLogger(__name__)


def load_warm_vectors(
    settings: Settings,
    *,
    version: str | None = None,
    items: bool = True,
    users: bool = True,
    user_weight: float = 5.0,
    item_kind: str = "track",
    batch: int = 2000,
    users_from: str = "dssm",
) -> dict[str, Any]:
    """Upsert the warm item vectors and store the warm user states of a published CF version.

    Args:
        settings: Engine settings (Milvus, Redis, model directory).
        version: The CF version (default: the current ``cb2cf``).
        items: Load the item vectors.
        users: Load the user states.
        user_weight: Weight of a warm user's DSSM vector in their incremental state.
        item_kind: ``kind`` recorded for warm items (datasets do not say).
        batch: Rows per Milvus upsert / Redis pipeline.
        users_from: ``dssm`` (the DSSM user tower) or ``lightgcn`` (LightGCN vectors mapped into the DSSM space,
            published as ``lightgcn-user`` with the same version).

    Returns:
        A report: space, collection, counts, seconds.
    """
    reg = ModelRegistry(settings.models.dir)
    cf: CFSpace | None = load_cf_space(reg) if version is None else None
    if version is None:
        if cf is None:
            raise FileNotFoundError(f"no cb2cf model is published under {reg.root}")
        version = cf.version
    cb = reg.load("cb2cf", version)
    dataset = str(cb.manifest.extra.get("dataset", "")).replace(" ", "_")
    if not dataset:
        raise ValueError(f"cb2cf@{version} does not record the dataset it was trained on")
    space = f"cb2cf@{version}"
    report: dict[str, Any] = {"space": space, "dataset": dataset, "collection": collection_for(settings.milvus, space)}
    hybrid = bool(cb.manifest.extra.get("hybrid"))
    space_dim = int(cb.manifest.extra.get("space_dim", cb.manifest.dim))
    report["hybrid"] = hybrid
    now = time.time()
    if items:
        t0 = time.perf_counter()
        tower = DSSMTower(reg.load("dssm-item", version))
        ids, vecs = tower.vectors()
        vecs = vecs / np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        if hybrid:
            vecs = _with_sparse_part(vecs, tower, ids)
        ix = ItemIndex(settings.milvus, dim=space_dim, collection=report["collection"])
        ix.ensure()
        for s in range(0, len(ids), batch):
            rows = [
                ItemRow(item_id=safe_id(f"{dataset}:i:", raw), vector=vecs[s + j], kind=item_kind,
                        creator_id=safe_id(f"{dataset}:creator:", raw), created_at_ms=0, model_version=space,
                        indexed_at_ms=int(now * 1000))
                for j, raw in enumerate(ids[s : s + batch])
            ]
            ix.upsert(rows)
        report["items"] = len(ids)
        report["items_seconds"] = round(time.perf_counter() - t0, 3)
    if users:
        t0 = time.perf_counter()
        if users_from not in ("dssm", "lightgcn"):
            raise ValueError(f"users_from must be dssm or lightgcn, not {users_from!r}")
        utower = DSSMTower(reg.load("dssm-user" if users_from == "dssm" else "lightgcn-user", version))
        uids, uvecs = utower.vectors()
        uvecs = uvecs / np.maximum(np.linalg.norm(uvecs, axis=1, keepdims=True), 1e-12)
        if hybrid:
            parts_from = utower if users_from == "dssm" else DSSMTower(reg.load("dssm-user", version))
            uvecs = _with_sparse_part(uvecs, parts_from, uids)
        store = RedisState(settings.redis)
        ensure_layout(settings, store)  # the user keys' shards (indexing.redis_keys), as a worker stores them
        loaded = kept = 0
        for s in range(0, len(uids), batch):
            chunk = [safe_id(f"{dataset}:u:", raw) for raw in uids[s : s + batch]]
            cur = store.read_states(space, chunk)
            with store.r.pipeline(transaction=False) as pipe:
                for j, uid in enumerate(chunk):
                    st = cur.get(uid)
                    if st is not None and st.n_events > 0:
                        kept += 1
                        continue
                    v = uvecs[s + j]  # unit CF part (+ the hybrid's sparse part)
                    state = UserState(vec=(v * user_weight).astype(np.float32), weight=user_weight, ts=now,
                                      n_events=0, source="dssm")  # "dssm": a warm start from the CF space
                    pipe.set(store.user_key(space, uid), pack_state(state))
                    loaded += 1
                pipe.execute()
        report["users"] = loaded
        report["users_from"] = users_from
        report["users_with_events_kept"] = kept
        report["users_seconds"] = round(time.perf_counter() - t0, 3)
    log.info("loaded %s", report)
    return report


def _with_sparse_part(vecs: np.ndarray, tower: DSSMTower, ids: list[str]) -> np.ndarray:
    """``[vecs ; sparse part]`` of a hybrid space: the published rows (times sqrt(w)) of ``ids`` beside ``tower``."""
    from scipy import sparse

    f = tower.version.path / "hybrid_parts.npz"
    if not f.is_file():
        raise FileNotFoundError(f"{f}: a hybrid space publishes its warm sparse parts beside the DSSM towers")
    parts = sparse.load_npz(f).tocsr()
    rows = np.array([tower.index[x] for x in ids], dtype=np.int64)
    return np.concatenate([vecs, parts[rows].toarray().astype(np.float32)], axis=1)


class FlipRefused(RuntimeError):
    """The space cannot be served yet (missing collection, or its worker group has not caught up)."""


def flip_space(settings: Settings, space: str, group: str | None = None, max_lag: int = 0) -> dict[str, Any]:
    """Make ``space`` the served one: the Milvus serving alias and the Redis space key move together.

    Blue/green roll-out of a new CF version ``V``: ``thaw cf load --version V`` (warm vectors), then a second worker
    group serving nothing yet (``THAW_STREAM__CF_VERSION=V THAW_STREAM__APP_ID=<new group> thaw worker``) consumes
    every topic from the beginning into V's own collection and user states while the old group keeps serving;
    when it has caught up, this flips recall to V; the old group can then be stopped.

    Args:
        settings: Engine settings.
        space: The space to serve (``cb2cf@<version>`` or the text space's ``minilm-l6@<v>``).
        group: The consumer group writing ``space``; when given, the flip is refused while its lag on any input
            topic partition exceeds ``max_lag``.
        max_lag: Largest tolerated lag per partition.

    Returns:
        ``{"space", "previous", "collection", "alias", "rows", "max_lag_seen"}``.
    """
    from contracts.topics import Topics
    from indexing.milvus_items import point_serving_alias
    from infra import clients
    from infra.lag import consumer_lag

    collection = collection_for(settings.milvus, space)
    mc = clients.milvus_client(settings.milvus)
    deadline_s = clients.milvus_deadlines(settings.milvus).call_s
    try:
        if not mc.has_collection(collection, timeout=deadline_s):
            raise FlipRefused(f"space {space} has no collection {collection!r}: start its worker group first")
        rows = int(mc.query(collection, filter="", output_fields=["count(*)"],
                            timeout=deadline_s)[0]["count(*)"])
    finally:
        mc.close()
    worst = 0
    if group is not None:
        t = Topics.for_prefix(settings.kafka.topic_prefix)
        inputs = {t.content_new, t.user_events, t.user_events_retry, t.user_profile}
        lags = [p for p in consumer_lag(settings, [group]) if p.topic in inputs]
        if not lags:
            raise FlipRefused(f"group {group!r} has committed nothing yet")
        worst = max((p.lag if p.lag is not None else (0 if p.end_offset == 0 else 1 << 62)) for p in lags)
        if worst > max_lag:
            raise FlipRefused(f"group {group!r} is {worst} records behind on some partition (max {max_lag})")
    users = RedisState(settings.redis)
    previous = users.current_space()
    alias = point_serving_alias(settings.milvus, collection)
    users.set_space(space)
    return {"space": space, "previous": previous, "collection": collection, "alias": alias, "rows": rows,
            "max_lag_seen": worst}
