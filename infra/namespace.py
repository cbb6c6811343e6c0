"""Namespaces: what one run made under :meth:`infra.settings.Settings.namespaced` (a test, a benchmark run, a demo
run), found and dropped as a whole.

A namespace ``ns`` owns

* the Kafka topics named ``<ns>.<topic>`` (its topic prefix) and the internal topics Faust makes for its app,
  ``thaw-<ns>-...`` (the app id and a dash);
* the consumer groups named after its app id (``thaw-<ns>``, ``thaw-<ns>-...``) or its topic prefix;
* the Milvus items collection ``thaw_<ns>`` and the collections a CF-space publish derives from it
  (``thaw_<ns>__<space>``);
* every Redis key under ``thaw:<ns>:``.

Nothing outside those names is touched, and the settings of the un-namespaced engine (empty topic prefix) are
refused: dropping them would mean every topic of the cluster. Each run that does not keep its data is expected to
drop its namespace afterwards; a broker that holds thousands of forgotten test topics loads every one of their logs
at start (measured on the 2-core development machine: ~2,300 leftover namespaces, 8,475 partition directories,
5.9 GB made the local broker take 62 s from launch to listening when idle, 128 s under load; 10 s from empty).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from infra import clients
from infra.settings import Settings

log = logging.getLogger(__name__)

_NS = re.compile(r"^[A-Za-z0-9_]+$")
_DELETE_BATCH = 100  # topics per DeleteTopics request


class NamespaceError(ValueError):
    """The settings do not name one namespace (nothing was dropped)."""


@dataclass
class Dropped:
    """What :func:`drop_namespace` removed (or, with ``dry_run``, would remove)."""

    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    collections: list[str] = field(default_factory=list)
    redis_keys: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _check(s: Settings) -> None:
    prefix = s.kafka.topic_prefix
    if not prefix or not prefix.endswith(".") or not _NS.match(prefix[:-1]):
        raise NamespaceError(
            f"not a namespace: topic prefix {prefix!r} (a namespace's is '<ns>.'; the un-namespaced engine's "
            "topics are never dropped this way)")
    if not s.redis.key_prefix.strip(":") or not s.milvus.items_collection:
        raise NamespaceError("not a namespace: empty Redis key prefix or Milvus collection name")


def owned_topics(s: Settings, names: Iterable[str]) -> list[str]:
    """The names among ``names`` that belong to the namespace of ``s``: its prefixed topics and its app's internal
    topics."""
    _check(s)
    app = s.stream.app_id + "-"
    return sorted(n for n in names if n.startswith(s.kafka.topic_prefix) or n.startswith(app))


def owned_groups(s: Settings, groups: Iterable[str]) -> list[str]:
    """The consumer groups among ``groups`` that belong to the namespace of ``s``."""
    _check(s)
    app = s.stream.app_id
    return sorted(g for g in groups
                  if g == app or g.startswith(app + "-") or g.startswith(s.kafka.topic_prefix))


def owned_collections(s: Settings, names: Iterable[str]) -> list[str]:
    """The Milvus collections among ``names`` that belong to the namespace of ``s``."""
    _check(s)
    base = s.milvus.items_collection
    return sorted(n for n in names if n == base or n.startswith(base + "__"))


def _chunks(xs: Sequence[str], n: int) -> Iterable[Sequence[str]]:
    for i in range(0, len(xs), n):
        yield xs[i:i + n]


def group_ids(admin: Any) -> list[str]:
    if hasattr(admin, "list_groups"):  # kafka-python 3.x: [{"group_id": ..., ...}, ...]
        return [g["group_id"] for g in admin.list_groups()]
    return [g[0] for g in admin.list_consumer_groups()]  # 2.x: [(group_id, protocol_type), ...]


def delete_groups(admin: Any, groups: list[str]) -> list[str]:
    """Delete ``groups``; returns the ones the broker refused (with its error), a group that does not exist left
    out."""
    delete = getattr(admin, "delete_groups", None) or admin.delete_consumer_groups
    result = delete(groups)
    # 3.x: {group: 'OK' | error class name} (or [(group, name)]); 2.x: [(group, error instance)]
    pairs = result.items() if isinstance(result, dict) else result
    refused = []
    for group, err in pairs:
        name = err if isinstance(err, str) or err is None else type(err).__name__
        if name not in (None, "OK", "NoError", "GroupIdNotFoundError"):
            refused.append(f"{group}: {name}")
    return refused


def drop_kafka(s: Settings, *, dry_run: bool = False) -> tuple[list[str], list[str]]:
    """Delete the namespace's topics and consumer groups; returns (topics, groups)."""
    from kafka.errors import UnknownTopicOrPartitionError

    admin = clients.kafka_admin(s.kafka)
    try:
        topics = owned_topics(s, admin.list_topics())
        groups = owned_groups(s, group_ids(admin))
        if dry_run:
            return topics, groups
        for batch in _chunks(topics, _DELETE_BATCH):
            try:
                admin.delete_topics(list(batch))
            except UnknownTopicOrPartitionError:  # another cleaner got there first: delete one by one
                for t in batch:
                    try:
                        admin.delete_topics([t])
                    except UnknownTopicOrPartitionError:
                        pass
        refused = delete_groups(admin, groups) if groups else []
        if refused:  # e.g. a group with members still running: its topics are gone, the group empties by itself
            log.warning("consumer groups not deleted: %s", ", ".join(refused[:5]))
        return topics, groups
    finally:
        admin.close()


def drop_milvus(s: Settings, *, dry_run: bool = False) -> list[str]:
    """Drop the namespace's Milvus collections; returns their names."""
    t = clients.milvus_deadlines(s.milvus).call_s
    mc = clients.milvus_client(s.milvus)
    try:
        names = owned_collections(s, mc.list_collections(timeout=t))
        if not dry_run:
            for name in names:
                mc.drop_collection(name, timeout=t)
        return names
    finally:
        mc.close()


def drop_redis(s: Settings, *, dry_run: bool = False) -> int:
    """Delete every Redis key under the namespace's prefix (on a cluster: on every master); returns how many (with
    ``dry_run``: how many exist)."""
    _check(s)
    r = clients.redis_client(s.redis)
    try:
        pattern = s.redis.key_prefix + "*"
        if dry_run:
            return sum(1 for _ in r.scan_iter(match=pattern, count=1000))
        return delete_matching(r, pattern)
    finally:
        r.close()


def delete_matching(r: Any, pattern: str, batch: int = 500) -> int:
    """Delete the keys matching ``pattern`` (a SCAN, then pipelined DELs of ``batch`` keys, one key per command, so
    keys of different slots work on a cluster); returns how many were deleted."""
    n, keys = 0, []
    for key in r.scan_iter(match=pattern, count=1000):
        keys.append(key)
        if len(keys) >= batch:
            n += _delete_keys(r, keys)
            keys = []
    return n + (_delete_keys(r, keys) if keys else 0)


def _delete_keys(r: Any, keys: list[Any]) -> int:
    with r.pipeline(transaction=False) as pipe:
        for k in keys:
            pipe.delete(k)
        return sum(int(x) for x in pipe.execute())


def drop_namespace(s: Settings, *, kafka: bool = True, milvus: bool = True, redis: bool = True,
                   dry_run: bool = False) -> Dropped:
    """Drop what the namespace of ``s`` owns in each system asked for (see the module docstring).

    Stop the namespace's workers first: a running worker recreates its topics. Raises :class:`NamespaceError`
    before touching anything when ``s`` is not namespaced."""
    _check(s)
    out = Dropped()
    if kafka:
        out.topics, out.groups = drop_kafka(s, dry_run=dry_run)
    if milvus:
        out.collections = drop_milvus(s, dry_run=dry_run)
    if redis:
        out.redis_keys = drop_redis(s, dry_run=dry_run)
    if not dry_run:
        log.info("dropped namespace %s: %d topics, %d groups, %d collections, %d Redis keys",
                 s.kafka.topic_prefix[:-1], len(out.topics), len(out.groups), len(out.collections), out.redis_keys)
    return out


def list_namespaces(s: Settings) -> list[str]:
    """The namespaces that have topics on the broker of ``s``: every ``<ns>`` with a ``<ns>.<content.new>`` topic."""
    from contracts.topics import Topics

    suffix = "." + Topics.for_prefix("").content_new
    admin = clients.kafka_admin(s.kafka)
    try:
        names = admin.list_topics()
    finally:
        admin.close()
    return sorted({n[:-len(suffix)] for n in names
                   if n.endswith(suffix) and _NS.match(n[:-len(suffix)] or "-")})
