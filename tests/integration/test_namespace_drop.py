"""Dropping a namespace on the real stack: its topics, consumer group, Milvus collections and Redis keys go; a
neighbouring namespace whose name starts with the same letters keeps all of its own."""

from __future__ import annotations

import pytest

from contracts.topics import Topics
from indexing.milvus_items import ItemIndex
from infra import clients
from infra.namespace import drop_namespace, list_namespaces
from infra.topics import ensure_topics

pytestmark = pytest.mark.integration


def _make(s) -> None:  # noqa: ANN001
    ensure_topics(s.kafka, Topics.for_prefix(s.kafka.topic_prefix))
    ix = ItemIndex(s.milvus, dim=8)
    ix.ensure()
    ix.close()
    r = clients.redis_client(s.redis)
    r.set(s.redis.key_prefix + "probe", b"1")
    r.close()
    # a consumer group with a committed offset, as a worker leaves one
    from kafka import TopicPartition
    from kafka.structs import OffsetAndMetadata

    topic = Topics.for_prefix(s.kafka.topic_prefix).content_new
    c = clients.kafka_consumer(s.kafka, group_id=s.stream.app_id, enable_auto_commit=False)
    try:
        c.assign([TopicPartition(topic, 0)])
        c.commit({TopicPartition(topic, 0): OffsetAndMetadata(0, "", -1)})
    finally:
        c.close()


def _present(s) -> dict[str, object]:  # noqa: ANN001
    from infra.namespace import group_ids, owned_collections, owned_groups, owned_topics

    admin = clients.kafka_admin(s.kafka)
    try:
        topics = owned_topics(s, admin.list_topics())
        groups = owned_groups(s, group_ids(admin))
    finally:
        admin.close()
    mc = clients.milvus_client(s.milvus)
    try:
        cols = owned_collections(s, mc.list_collections())
    finally:
        mc.close()
    r = clients.redis_client(s.redis)
    try:
        keys = list(r.scan_iter(match=s.redis.key_prefix + "*"))
    finally:
        r.close()
    return {"topics": topics, "groups": groups, "collections": cols, "keys": keys}


def test_a_dropped_namespace_leaves_nothing_and_its_neighbour_everything(stack_settings, unique_name):
    mine, neighbour = stack_settings.namespaced(unique_name), stack_settings.namespaced(unique_name + "0")
    _make(mine)
    _make(neighbour)
    before = _present(neighbour)
    have = _present(mine)
    assert len(have["topics"]) == len(Topics.for_prefix("").all()) and have["groups"] == [mine.stream.app_id]
    assert have["collections"] == [mine.milvus.items_collection] and len(have["keys"]) == 1
    assert unique_name in list_namespaces(stack_settings)

    dry = drop_namespace(mine, dry_run=True)
    assert sorted(dry.topics) == sorted(have["topics"]) and dry.redis_keys == 1
    assert _present(mine) == have  # a dry run drops nothing

    out = drop_namespace(mine)
    assert sorted(out.topics) == sorted(have["topics"]) and out.groups == [mine.stream.app_id]
    assert out.collections == [mine.milvus.items_collection] and out.redis_keys == 1
    assert _present(mine) == {"topics": [], "groups": [], "collections": [], "keys": []}
    assert unique_name not in list_namespaces(stack_settings)
    assert _present(neighbour) == before
    drop_namespace(neighbour)
