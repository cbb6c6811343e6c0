"""The items collection's layout: the partition key a new collection gets, the filters that name a window's days,
collections created before partition keys, and the in-place migration; on Milvus Lite (the server path, with its
partitions and shards, is tests/integration/test_milvus_layout_server.py)."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import SecretStr

from indexing.milvus_items import (
    DAY_MS,
    ItemIndex,
    ItemRow,
    Layout,
    created_day,
    day_terms,
    index_spec,
    layout_of,
    migrate_layout,
    search_filter,
    search_params,
)
from infra.settings import MilvusSettings
from tests.milvus_legacy import create_legacy_items

NOW_MS = 20_000 * DAY_MS + 12 * 3600_000  # noon of day 20,000
DIM = 8


# ------------------------------------------------------------------------------------------------ pure parts
def test_created_day_is_the_utc_day_number() -> None:
    assert created_day(0) == 0
    assert created_day(DAY_MS - 1) == 0
    assert created_day(DAY_MS) == 1
    assert created_day(NOW_MS) == 20_000
    assert created_day(-1) == -1  # before the epoch: floor, not truncation


def test_day_terms_cover_the_window_or_give_up_when_it_spans_too_many_days() -> None:
    assert day_terms(NOW_MS - DAY_MS, NOW_MS + DAY_MS, 16) == [19_999, 20_000, 20_001]
    assert day_terms(NOW_MS, NOW_MS, 16) == [20_000]
    assert day_terms(NOW_MS, NOW_MS - DAY_MS, 16) == []
    assert day_terms(NOW_MS - 15 * DAY_MS, NOW_MS, 16) == list(range(19_985, 20_001))
    assert day_terms(NOW_MS - 16 * DAY_MS, NOW_MS, 16) is None
    assert day_terms(0, NOW_MS, 64) is None


def test_search_filter_combines_kinds_days_and_window() -> None:
    assert search_filter() == ""
    assert search_filter(["track"]) == 'kind in ["track"]'
    assert search_filter(None, 5) == "created_at >= 5"
    assert search_filter(['a"b'], 5, [1, 2]) == '(kind in ["a\\"b"]) and (created_day in [1,2]) and (created_at >= 5)'
    assert search_filter(None, 5, []) == "(created_day in []) and (created_at >= 5)"


def test_layout_is_read_from_the_schema() -> None:
    fields = [{"name": "item_id"}, {"name": "kind", "is_partition_key": False}]
    assert layout_of({"fields": fields}) == Layout(None, False, 1)
    day = fields + [{"name": "created_day", "is_partition_key": True}]
    assert layout_of({"fields": day, "num_partitions": 16}) == Layout("created_day", True, 16)
    assert layout_of({"fields": day, "num_partitions": 16}).by_day
    kind = [{"name": "kind", "is_partition_key": True}]
    assert layout_of({"fields": kind, "num_partitions": 8}) == Layout("kind", False, 8)
    assert not layout_of({"fields": kind}).by_day


def test_index_and_search_parameters_come_from_the_settings() -> None:
    s = MilvusSettings(hnsw_m=8, hnsw_ef_construction=64, hnsw_ef=128, ivf_nlist=256, ivf_nprobe=512)
    assert index_spec(s) == ("HNSW", {"M": 8, "efConstruction": 64})
    assert search_params(s, 100) == {"metric_type": "IP", "params": {"ef": 128}}
    assert search_params(s, 300) == {"metric_type": "IP", "params": {"ef": 300}}  # Milvus wants ef >= limit
    assert search_params(s, 300, lite=True) == {"metric_type": "IP"}
    ivf = s.model_copy(update={"index_type": "IVF_FLAT"})
    assert index_spec(ivf) == ("IVF_FLAT", {"nlist": 256})
    assert search_params(ivf, 100) == {"metric_type": "IP", "params": {"nprobe": 256}}  # nprobe <= nlist


def test_credentials_in_the_uri_move_into_the_token() -> None:
    s = MilvusSettings(uri="https://thaw:s3cr%40t@milvus.example.com:19530/prod")
    assert s.uri == "https://milvus.example.com:19530/prod"
    assert s.token is not None and s.token.get_secret_value() == "thaw:s3cr@t"
    assert "s3cr" not in repr(s) and "s3cr" not in str(s.model_dump())
    key = MilvusSettings(uri="https://an-api-key@h:443")
    assert (key.uri, key.token.get_secret_value() if key.token else None) == ("https://h:443", "an-api-key")
    explicit = MilvusSettings(uri="https://u:p@h", token=SecretStr("tok"))  # an explicit token wins
    assert explicit.uri == "https://h" and explicit.token is not None and explicit.token.get_secret_value() == "tok"
    assert MilvusSettings(uri="./a@b.db").uri == "./a@b.db"  # a Lite path is a path


# --------------------------------------------------------------------------------------------- on Milvus Lite
def _rows(n: int, days: int = 10) -> tuple[np.ndarray, list[ItemRow]]:
    """``n`` items spread over the ``days`` days before NOW_MS (item i created i % days days and i ms ago)."""
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, [ItemRow(f"i{i}", v[i], "track" if i % 2 else "moment", "c", NOW_MS - (i % days) * DAY_MS - i, "m@1")
               for i in range(n)]


def _index(tmp_path, name: str = "items", **kw) -> ItemIndex:
    s = MilvusSettings(uri=str(tmp_path / "lite.db"), items_collection=name, **kw)
    return ItemIndex(s, dim=DIM, clock=lambda: NOW_MS / 1000)



def test_a_new_collection_is_partitioned_by_kind_by_default(tmp_path) -> None:
    assert MilvusSettings().partition_key == "kind"
    ix = _index(tmp_path)
    assert ix.ensure() is True
    assert ix.layout.partition_key == "kind" and not ix.layout.has_day_field and not ix.layout.by_day
    v, rows = _rows(20)
    ix.upsert(rows)
    tracks = {h.item_id for h in ix.search(v[:1], 20, kinds=["track"])[0]}
    assert tracks == {r.item_id for r in rows if r.kind == "track"}
    assert ix._filter(["track"], NOW_MS) == f'(kind in ["track"]) and (created_at >= {NOW_MS})'  # no day terms
    ix.close()


def test_a_collection_partitioned_by_day_names_the_windows_days(tmp_path) -> None:
    ix = _index(tmp_path, "by_day", partition_key="created_day")
    assert ix.ensure() is True
    assert ix.layout.by_day
    v, rows = _rows(40)
    ix.upsert(rows)
    got = ix.client.query(ix.name, filter='item_id in ["i0", "i3"]', output_fields=["created_day", "created_at"])
    assert {r["item_id"]: r["created_day"] for r in got} == {"i0": 20_000, "i3": 19_997}
    # the fresh window (the last 2 days): exactly the rows created in it, whatever their score
    hits = ix.search(v[:1], 40, created_after_ms=NOW_MS - 2 * DAY_MS)[0]
    assert sorted(h.item_id for h in hits) == sorted(r.item_id for r in rows if r.created_at_ms >= NOW_MS - 2 * DAY_MS)
    assert ix._filter(None, NOW_MS - 2 * DAY_MS) == (
        "(created_day in [19998,19999,20000,20001]) and (created_at >= " + str(NOW_MS - 2 * DAY_MS) + ")")
    assert [h.item_id for h in ix.newest(2, since_ms=NOW_MS - DAY_MS)] == ["i0", "i10"]
    ix.close()


def test_the_none_layout_has_no_partition_key(tmp_path) -> None:
    none = _index(tmp_path, "flat", partition_key="none")
    none.ensure()
    assert none.layout == Layout(None, False, none.layout.partitions)
    assert none._filter(None, 5) == "created_at >= 5"
    none.close()


def test_a_collection_from_before_partition_keys_keeps_working(tmp_path) -> None:
    ix = _index(tmp_path, "old")
    create_legacy_items(ix)
    assert ix.ensure() is False  # opened as it is, not altered
    assert ix.layout == Layout(None, False, ix.layout.partitions)
    v, rows = _rows(30)
    assert ix.upsert(rows) == 30  # written without created_day
    window = {r.item_id for r in rows if r.created_at_ms >= NOW_MS - DAY_MS}
    assert {h.item_id for h in ix.search(v[:1], 30, created_after_ms=NOW_MS - DAY_MS)[0]} == window
    assert ix._filter(["track"], 7) == '(kind in ["track"]) and (created_at >= 7)'
    ix.close()


def test_migrate_layout_rebuilds_a_legacy_collection_in_place(tmp_path) -> None:
    old = _index(tmp_path, "mig")
    create_legacy_items(old)
    v, rows = _rows(25)
    old.upsert(rows)
    old.client.create_alias("mig", "mig_serving")
    before = {r["item_id"]: r for r in old.get_rows([r.item_id for r in rows])}
    old.close()

    rep = migrate_layout(old.settings, "mig", DIM, batch_size=7, clock=lambda: 1234.0)
    assert rep["migrated"] is True and rep["rows"] == 25 and rep["legacy"] == "mig__legacy_1234"
    assert rep["aliases_moved"] == ["mig_serving"]
    new = _index(tmp_path, "mig")
    new.ensure()
    assert new.layout.partition_key == "kind" and new.count() == 25
    after = {r["item_id"]: r for r in new.get_rows([r.item_id for r in rows])}
    assert after == before  # every field, indexed_at included
    assert new.client.list_aliases("mig")["aliases"] == ["mig_serving"]
    assert new.get_vectors(["i4"])["i4"] == pytest.approx(v[4], abs=1e-6)
    assert migrate_layout(old.settings, "mig", DIM)["migrated"] is False  # already in the layout
    legacy = _index(tmp_path, "mig__legacy_1234")
    assert legacy.count() == 25 and legacy.layout.partition_key is None
    new.close()
    legacy.close()


def test_upserts_are_split_where_the_server_routes_them_by_the_wrong_field() -> None:
    from indexing.milvus_items import server_version, split_upsert

    assert server_version("v2.3.5-lite") == (2, 3, 5)
    assert server_version("2.4.13") == (2, 4, 13)
    assert server_version("") is None and server_version("unknown") is None
    day, none = Layout("created_day", True, 16), Layout(None, False, 1)
    assert split_upsert(day, (2, 3, 5)) is True  # the local server: upsert misroutes on a partition key
    assert split_upsert(day, None) is True  # unknown: the safe way
    assert split_upsert(day, (2, 4, 0)) is False and split_upsert(day, (2, 5, 3)) is False
    assert split_upsert(Layout("kind", False, 16), (2, 3, 5)) is True
    assert split_upsert(none, (2, 3, 5)) is False  # no partition key: a native upsert routes right
    assert split_upsert(day, (2, 3, 5), lite=True) is False


def test_an_upsert_rewrites_an_item_on_a_partitioned_collection(tmp_path) -> None:
    ix = _index(tmp_path, "again", partition_key="created_day")
    ix.ensure()
    v, rows = _rows(10)
    ix.upsert(rows)
    r = rows[3]
    ix.upsert([ItemRow(r.item_id, v[4], "comment", "c2", NOW_MS - 20 * DAY_MS, "m@2")])  # another day
    assert ix.count() == 10
    (row,) = ix.get_rows([r.item_id])
    assert (row["kind"], row["created_at"], row["model_version"]) == ("comment", NOW_MS - 20 * DAY_MS, "m@2")
    ix.close()
