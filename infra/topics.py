"""Creating the declared topics on a broker (:class:`contracts.topics.Topics`), idempotently, and keeping their record
size caps in line.

Partition counts and replication come from settings (``THAW_KAFKA__PARTITIONS``, ``THAW_KAFKA__REPLICATION_FACTOR``,
``THAW_KAFKA__MIN_INSYNC_REPLICAS``; unset: 3 replicas with ``min.insync.replicas`` 2 on a cluster of three or more
brokers, 1 replica on one: :meth:`infra.settings.KafkaSettings.topic_replication_factor`); a replicated topic is
created with its ``min.insync.replicas``, so an ``acks=all`` write is acknowledged only once it is on two replicas
(a topic that already exists keeps the replication it has). Each topic's ``max.message.bytes`` comes from
:meth:`infra.settings.KafkaSettings.record_caps` (the contract's caps, or the ``THAW_KAFKA__*MAX_MESSAGE_BYTES``
overrides). A topic that exists with another cap is altered to it
(IncrementalAlterConfigs), and each change is logged; a broker that refuses the change (no ALTER_CONFIGS permission)
is logged as a warning and the topic keeps its cap.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from contracts.topics import Topics, TopicSpec
from infra import clients
from infra.settings import KafkaSettings

log = logging.getLogger(__name__)

MAX_MESSAGE_BYTES = "max.message.bytes"
MIN_INSYNC = "min.insync.replicas"


@dataclass
class TopicSync:
    """What :func:`sync_topics` did: topics created, caps changed (name -> (was, now)), changes refused."""

    created: list[str] = field(default_factory=list)
    resized: dict[str, tuple[int, int]] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)


def topic_specs(kafka: KafkaSettings, topics: Topics) -> list[TopicSpec]:
    """The declarations with this deployment's caps."""
    return topics.specs(kafka.record_caps())


def topic_configs(spec: TopicSpec, replication: tuple[int, int] = (1, 1)) -> dict[str, str]:
    """The configs a topic is created with; ``replication``: (replication factor, ``min.insync.replicas``), the
    latter set on the topic when it has more than one replica (one replica: the broker's default, unchanged)."""
    cfg = {MAX_MESSAGE_BYTES: str(spec.max_message_bytes)}
    if replication[0] > 1:
        cfg[MIN_INSYNC] = str(replication[1])
    if spec.retention_ms is not None:
        cfg["retention.ms"] = str(spec.retention_ms)
    if spec.compact:
        cfg["cleanup.policy"] = "compact,delete"
    return cfg


def cap_changes(current: Mapping[str, int | None], specs: Sequence[TopicSpec]) -> dict[str, tuple[int, int]]:
    """The topics of ``specs`` whose ``current`` cap is not the declared one: name -> (was, wanted). A cap the broker
    did not report (None: a topic created a moment ago, whose configs are not visible yet) is left alone."""
    out: dict[str, tuple[int, int]] = {}
    for s in specs:
        was = current.get(s.name)
        if was is not None and was != s.max_message_bytes:
            out[s.name] = (was, s.max_message_bytes)
    return out


def ensure_topics(kafka: KafkaSettings, topics: Topics, partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet and align the caps of those that do; returns the names created."""
    return sync_topics(kafka, topics, partitions).created


def sync_topics(kafka: KafkaSettings, topics: Topics, partitions: int | None = None) -> TopicSync:
    """Create the missing topics (with their caps, retention, cleanup policy) and alter the ``max.message.bytes`` of
    existing ones that differ from the declared cap."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    specs = topic_specs(kafka, topics)
    replication = (kafka.topic_replication_factor(), kafka.topic_min_insync_replicas())
    out = TopicSync()
    admin = clients.kafka_admin(kafka)
    try:
        existing = set(admin.list_topics())
        for spec in specs:
            if spec.name in existing:
                continue
            t = NewTopic(name=spec.name, num_partitions=partitions or kafka.partitions,
                         replication_factor=replication[0], topic_configs=topic_configs(spec, replication))
            try:
                admin.create_topics([t], validate_only=False)
                out.created.append(t.name)
            except TopicAlreadyExistsError:  # another process made it meanwhile: align it below
                existing.add(spec.name)
        if out.created:
            log.info("created topics %s", out.created)
        present = [s for s in specs if s.name in existing]
        if present:
            try:
                _align_caps(admin, present, out)
            except Exception as exc:  # noqa: BLE001 - no DESCRIBE_CONFIGS permission: the topics keep their caps
                log.warning("could not read the %s of the existing topics: %s", MAX_MESSAGE_BYTES,
                            type(exc).__name__)
        return out
    finally:
        admin.close()


def _align_caps(admin: Any, specs: Sequence[TopicSpec], out: TopicSync) -> None:
    from kafka.admin import ConfigResource, ConfigResourceType

    current = read_caps(admin, [s.name for s in specs])
    changes = cap_changes(current, specs)
    if not changes:
        return
    resources = [ConfigResource(ConfigResourceType.TOPIC, name, configs={MAX_MESSAGE_BYTES: str(want)})
                 for name, (_, want) in changes.items()]
    try:
        answer = admin.alter_configs(resources, incremental=True)
    except Exception as exc:  # noqa: BLE001 - a broker refusing the request must not stop a worker's start
        for name in changes:
            out.refused[name] = type(exc).__name__
        log.warning("could not alter the %s of %s: %s", MAX_MESSAGE_BYTES, sorted(changes), type(exc).__name__)
        return
    results = answer.get("topic", {}) if isinstance(answer, dict) else {}
    for name, (was, want) in changes.items():
        res = results.get(name, "no answer")
        if res == "OK":
            out.resized[name] = (was, want)
            log.info("topic %s: %s %d -> %d", name, MAX_MESSAGE_BYTES, was, want)
        else:
            out.refused[name] = str(res)[:200]
            log.warning("topic %s: could not set %s %d -> %d: %s", name, MAX_MESSAGE_BYTES, was, want,
                        str(res)[:200])


def read_caps(admin: Any, names: Sequence[str]) -> dict[str, int | None]:
    """Each topic's ``max.message.bytes`` as the broker reports it (None where it reports none)."""
    from kafka.admin import ConfigResource, ConfigResourceType

    answer = admin.describe_configs(
        [ConfigResource(ConfigResourceType.TOPIC, n, {MAX_MESSAGE_BYTES: None}) for n in names], config_filter="all")
    topics = answer.get("topic", {}) if isinstance(answer, dict) else {}
    out: dict[str, int | None] = {}
    for n in names:
        value = (topics.get(n) or {}).get(MAX_MESSAGE_BYTES, {}).get("value")
        out[n] = int(value) if value is not None and str(value).isdigit() else None
    return out



def partition_counts(kafka: KafkaSettings, names: Sequence[str]) -> dict[str, int]:
    """The partition count of each of ``names`` that exists, from the broker's metadata."""
    admin = clients.kafka_admin(kafka)
    try:
        answer = admin.describe_topics(list(names))
    finally:
        admin.close()
    return {d["name"]: len(d["partitions"]) for d in answer if not d.get("error_code") and d.get("partitions")}
