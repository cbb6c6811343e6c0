"""The items collection's layout on the local Milvus 2.3.5 server: a new collection's partition key, partitions and
shards as the server reports them, rows routed to their day's partition, a fresh-window search that names its days,
a collection from before partition keys kept working and migrated in place, the replica setting reaching the server
(which has one query node), and a token that never shows in logs or errors. Each test uses collections of its own
and drops them."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import numpy as np
import pytest
from pydantic import SecretStr

from indexing.milvus_items import DAY_MS, ItemIndex, ItemRow, created_day, migrate_layout
from infra.settings import MilvusSettings, Settings
from tests.milvus_legacy import create_legacy_items

pytestmark = pytest.mark.integration

DIM = 16
NOW_MS = int(time.time() * 1000)


@pytest.fixture
def milvus(stack_settings: Settings, unique_name: str) -> Iterator[MilvusSettings]:
    s = stack_settings.milvus.model_copy(update={"items_collection": f"thaw_layout_{unique_name}"})
    yield s
    from pymilvus import MilvusClient

    c = MilvusClient(s.uri)
    for name in c.list_collections():
        if name.startswith(s.items_collection):
            for alias in c.list_aliases(name).get("aliases", []):
                c.drop_alias(alias)
            c.drop_collection(name)
    c.close()


def _rows(n: int, days: int = 30) -> tuple[np.ndarray, list[ItemRow]]:
    """``n`` unit vectors, item i created ``i % days`` days and ``i`` ms before now, kinds alternating."""
    rng = np.random.default_rng(1)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, [ItemRow(f"i{i}", v[i], ("track", "moment", "comment")[i % 3], "c", NOW_MS - (i % days) * DAY_MS - i,
                       "m@1") for i in range(n)]


def _partition_rows(ix: ItemIndex) -> dict[str, int]:
    ix.client.flush(ix.name)
    return {p: int(ix.client.get_partition_stats(ix.name, p)["row_count"]) for p in ix.client.list_partitions(ix.name)}


def test_a_new_collection_is_partitioned_by_kind_and_upserts_land_in_their_kinds_partition(
        milvus: MilvusSettings) -> None:
    ix = ItemIndex(milvus, dim=DIM)
    assert ix.ensure() is True
    desc = ix.client.describe_collection(ix.name)
    assert [f["name"] for f in desc["fields"] if f.get("is_partition_key")] == ["kind"]
    assert desc["num_partitions"] == 16 and desc["num_shards"] == 1
    v, rows = _rows(90)
    ix.upsert(rows)
    # the three kinds in three partitions of 30 rows: routed by the key (an upsert on 2.3.5 would route by item_id)
    assert sorted(n for n in _partition_rows(ix).values() if n) == [30, 30, 30]
    ix.upsert(rows[:30])  # a replay: the same rows again (partition stats count the deleted copies until compaction)
    assert ix.count() == 90
    for kind in ("track", "moment", "comment"):
        got = ix.client.query(ix.name, filter=f'kind == "{kind}"', output_fields=["item_id"],
                              consistency_level="Strong")
        assert {r["item_id"] for r in got} == {r.item_id for r in rows if r.kind == kind}
    hits = ix.search(v[:1], 90, kinds=["moment"], consistency="Strong")[0]
    assert {h.item_id for h in hits} == {r.item_id for r in rows if r.kind == "moment"}
    ix.close()


def test_a_collection_by_day_has_the_partitions_and_shards_of_the_settings(milvus: MilvusSettings) -> None:
    ix = ItemIndex(milvus.model_copy(update={"partition_key": "created_day", "partitions": 8, "shards": 2}), dim=DIM)
    assert ix.ensure() is True
    desc = ix.client.describe_collection(ix.name)
    key = [f["name"] for f in desc["fields"] if f.get("is_partition_key")]
    assert key == ["created_day"] and desc["num_partitions"] == 8 and desc["num_shards"] == 2
    assert len(ix.client.list_partitions(ix.name)) == 8
    v, rows = _rows(300)
    ix.upsert(rows)
    assert ix.count() == 300
    # 30 days hashed onto 8 partitions: every row is in one, and rows of one day share a partition
    per_partition = _partition_rows(ix)
    assert sum(per_partition.values()) == 300 and sum(1 for n in per_partition.values() if n) >= 2
    one_day = ix.client.query(ix.name, filter=f"created_day == {created_day(rows[0].created_at_ms)}",
                              output_fields=["item_id"], consistency_level="Strong")
    assert {r["item_id"] for r in one_day} == {r.item_id for r in rows if
                                               created_day(r.created_at_ms) == created_day(rows[0].created_at_ms)}
    # the fresh window: exactly its rows (asked for more than it holds), and the filter names its days
    since = NOW_MS - 2 * DAY_MS
    want = {r.item_id for r in rows if r.created_at_ms >= since}
    hits = ix.search(v[:1], 200, created_after_ms=since, consistency="Strong")[0]
    assert {h.item_id for h in hits} == want
    assert "created_day in [" in ix._filter(None, since)
    # an upsert that moves an item to another day keeps one row
    moved = rows[5]
    ix.upsert([ItemRow(moved.item_id, moved.vector, moved.kind, "c", NOW_MS - 100 * DAY_MS, "m@1")])
    assert ix.count() == 300
    ix.close()



def test_a_legacy_collection_keeps_working_and_migrates_in_place(milvus: MilvusSettings) -> None:
    old = ItemIndex(milvus, dim=DIM)
    create_legacy_items(old)
    assert old.ensure() is False and old.layout.partition_key is None
    v, rows = _rows(200)
    assert old.upsert(rows) == 200
    since = NOW_MS - DAY_MS
    window = {r.item_id for r in rows if r.created_at_ms >= since}
    assert {h.item_id for h in old.search(v[:1], 200, created_after_ms=since, consistency="Strong")[0]} == window
    alias = f"{milvus.items_collection}_serving"
    old.client.create_alias(old.name, alias)
    before = {r["item_id"]: r for r in old.get_rows([r.item_id for r in rows])}
    assert old.count() == 200  # Strong: every row is visible to the copy
    old.close()

    rep = migrate_layout(milvus, milvus.items_collection, DIM)
    assert rep["migrated"] is True and rep["rows"] == 200 and rep["aliases_moved"] == [alias]
    new = ItemIndex(milvus, dim=DIM, collection=alias)  # the serving alias follows
    assert new.layout.partition_key == "kind" and new.count() == 200
    assert {r["item_id"]: r for r in new.get_rows([r.item_id for r in rows])} == before
    assert {h.item_id for h in new.search(v[:1], 200, created_after_ms=since, consistency="Strong")[0]} == window
    assert new.search(v[7:8], 1)[0][0].item_id == "i7"
    legacy = ItemIndex(milvus, dim=DIM, collection=rep["legacy"])
    assert legacy.layout.partition_key is None and legacy.count() == 200
    new.close()
    legacy.close()


def test_replicas_reach_the_server_which_has_one_query_node(milvus: MilvusSettings) -> None:
    from pymilvus.exceptions import MilvusException

    ix = ItemIndex(milvus.model_copy(update={"replicas": 2}), dim=DIM)
    with pytest.raises(MilvusException, match="nodes not enough"):
        ix.ensure()
    assert ix.exists()  # created, with its index, but not loadable with 2 replicas here
    one = ItemIndex(milvus, dim=DIM)
    assert one.ensure() is False  # the same collection loads with one replica
    _, rows = _rows(10)
    assert one.upsert(rows) == 10 and one.count() == 10
    one.close()
    ix.close()


def test_a_token_reaches_the_server_and_never_the_logs(milvus: MilvusSettings,
                                                       caplog: pytest.LogCaptureFixture) -> None:
    secret = "thaw-user:pa55-" + "x" * 12
    caplog.set_level(logging.DEBUG)
    ix = ItemIndex(milvus.model_copy(update={"token": SecretStr(secret)}), dim=DIM)
    ix.ensure()  # the local server runs without authentication: a token is accepted and ignored
    v, rows = _rows(5)
    ix.upsert(rows)
    assert ix.search(v[:1], 1, consistency="Strong")[0][0].item_id == "i0"
    assert secret not in repr(ix.settings)
    # a call that fails (a collection that does not exist) names neither the token in its error nor in the logs
    from pymilvus.exceptions import MilvusException

    missing = ItemIndex(ix.settings, dim=DIM, collection=f"{milvus.items_collection}_missing")
    with pytest.raises(MilvusException) as err:
        missing.search(v[:1], 1)
    assert secret not in str(err.value) and "pa55" not in str(err.value)
    assert "pa55" not in caplog.text
    missing.close()
    ix.close()
