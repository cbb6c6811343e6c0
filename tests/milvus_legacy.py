"""The items collection as ``indexing.milvus_items`` created it before partition keys (no partition key, no
``created_day``), for the tests of opening and migrating such a collection, on Milvus Lite and on a server."""

from __future__ import annotations

from indexing.milvus_items import MAX_ID, ItemIndex


def create_legacy_items(ix: ItemIndex) -> None:
    """Create ``ix.name`` in the legacy layout: FLAT on Milvus Lite, HNSW (M 16, efConstruction 200) on a server."""
    from pymilvus import DataType

    schema = ix.client.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("item_id", DataType.VARCHAR, is_primary=True, max_length=MAX_ID)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=ix.dim)
    schema.add_field("kind", DataType.VARCHAR, max_length=16)
    schema.add_field("creator_id", DataType.VARCHAR, max_length=MAX_ID)
    schema.add_field("created_at", DataType.INT64)
    schema.add_field("model_version", DataType.VARCHAR, max_length=64)
    schema.add_field("indexed_at", DataType.INT64)
    idx = ix.client.prepare_index_params()
    if ix.lite:
        idx.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
        ix.client.create_collection(ix.name, schema=schema, index_params=idx)
    else:
        idx.add_index(field_name="vector", index_type="HNSW", metric_type="IP",
                      params={"M": 16, "efConstruction": 200})
        ix.client.create_collection(ix.name, schema=schema, index_params=idx, consistency_level="Bounded")
