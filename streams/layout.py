"""The Redis key layout's shard count from the broker: the partitions of ``user.events`` (see
``indexing.redis_keys``). :func:`shard_count` decides (pure); :func:`ensure_layout` reads the broker's metadata and
stores or checks the layout, for a writer that is not a worker (the CF rollout loading user states)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from contracts.topics import Topics
from indexing.redis_state import LayoutError, RedisState
from infra.settings import Settings


def shard_count(topics: Topics, partition_counts: Mapping[str, int]) -> int:
    """The shard count a deployment with these partition counts needs: ``user.events``' partitions, which its retry
    topic must match (a retry copy stays on its user's partition). LayoutError otherwise."""
    n = partition_counts.get(topics.user_events)
    if not n:
        raise LayoutError(f"{topics.user_events} has no partitions the broker reports (create the topics first)")
    retry_n = partition_counts.get(topics.user_events_retry)
    if retry_n is not None and retry_n != n:
        raise LayoutError(f"{topics.user_events_retry} has {retry_n} partitions, {topics.user_events} {n}: a retry "
                          "copy must stay on its user's partition (give both the same count)")
    return n


def fenced_topics(topics: Topics) -> tuple[str, str]:
    return (topics.user_events, topics.user_events_retry)


def ensure_layout(settings: Settings, users: RedisState, group: str | None = None,
                  topics: Topics | None = None) -> int:
    """Store (or check) the layout of ``users`` for the deployment's topics, as the worker does at its start;
    ``group``: check for layout-1 fences of this consumer group too."""
    from infra.topics import partition_counts

    t = topics or Topics.for_prefix(settings.kafka.topic_prefix)
    n = shard_count(t, partition_counts(settings.kafka, fenced_topics(t)))
    legacy: Sequence[tuple[str, str]] = [(group, x) for x in fenced_topics(t)] if group else ()
    return users.ensure_layout(n, legacy_check=legacy)
