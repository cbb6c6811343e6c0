"""Several processes open one new items collection at once on the Milvus server (the workers of a group, the
readers): the one that creates it builds its index a moment later, and the server refuses to load a collection
without an index (error 700). ``ItemIndex.ensure`` must wait for that index, and build it itself only when its
creator stopped between the collection and the index. Each test uses a collection of its own and drops it."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import numpy as np
import pytest

import indexing.milvus_items as milvus_items
from indexing.milvus_items import ItemIndex, ItemRow
from infra.settings import MilvusSettings, Settings

pytestmark = pytest.mark.integration

DIM = 8


@pytest.fixture
def milvus(stack_settings: Settings, unique_name: str) -> Iterator[MilvusSettings]:
    s = stack_settings.milvus.model_copy(update={"items_collection": f"thaw_race_{unique_name}"})
    yield s
    ix = ItemIndex(s, dim=DIM)
    ix.drop()
    ix.close()


def _without_index(ix: ItemIndex) -> None:
    """The collection as its creator leaves it between ``create_collection`` and ``create_index``."""
    from pymilvus import DataType

    schema = ix.client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=128)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    schema.add_field("kind", DataType.VARCHAR, max_length=16, is_partition_key=True)
    schema.add_field("creator_id", DataType.VARCHAR, max_length=128)
    schema.add_field("created_at", DataType.INT64)
    schema.add_field("model_version", DataType.VARCHAR, max_length=64)
    schema.add_field("indexed_at", DataType.INT64)
    ix.client.create_collection(ix.name, schema=schema, num_partitions=16)


def _usable(ix: ItemIndex) -> None:
    v = np.ones(DIM, np.float32) / np.sqrt(DIM)
    ix.upsert([ItemRow("a1", v, "track", "c", int(time.time() * 1000), "m@1")])
    hits = ix.search(v[None, :], k=1, consistency="Strong")[0]
    assert [h.item_id for h in hits] == ["a1"]


def test_the_server_refuses_to_load_a_collection_without_an_index(milvus):
    from pymilvus.exceptions import MilvusException

    ix = ItemIndex(milvus, dim=DIM)
    _without_index(ix)
    with pytest.raises(MilvusException) as exc:  # what the other openers met before ensure() waited
        ix.client.load_collection(ix.name)
    assert exc.value.code == 700
    ix.close()


def test_an_opener_waits_for_the_creators_index(milvus, caplog):
    creator, opener = ItemIndex(milvus, dim=DIM), ItemIndex(milvus, dim=DIM)
    _without_index(creator)

    def build_later() -> None:
        time.sleep(1.5)
        creator.client.create_index(creator.name, creator._index_params())

    t = threading.Thread(target=build_later)
    t.start()
    with caplog.at_level(logging.WARNING, logger="indexing.milvus_items"):
        assert opener.ensure() is False  # it existed: opened, not created
    t.join()
    assert not [r for r in caplog.records if "building it" in r.getMessage()]  # waited, did not build its own
    assert len(opener.client.list_indexes(opener.name)) == 1
    _usable(opener)
    creator.close()
    opener.close()


def test_an_opener_builds_the_index_a_stopped_creator_left_out(milvus, caplog, monkeypatch):
    monkeypatch.setattr(milvus_items, "INDEX_WAIT_S", 1.0)
    ix = ItemIndex(milvus, dim=DIM)
    _without_index(ix)
    with caplog.at_level(logging.WARNING, logger="indexing.milvus_items"):
        ix.ensure()
    assert [r for r in caplog.records if "building it" in r.getMessage()]
    assert len(ix.client.list_indexes(ix.name)) == 1
    _usable(ix)
    ix.close()
