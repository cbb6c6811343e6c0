"""Creating the declared topics on a broker (:class:`contracts.topics.Topics`), idempotently.

Partition counts and replication come from settings (``THAW_KAFKA__PARTITIONS``, ``THAW_KAFKA__REPLICATION_FACTOR``).
"""

from __future__ import annotations

import logging

from contracts.topics import Topics
from infra import clients
from infra.settings import KafkaSettings

log = logging.getLogger(__name__)


def ensure_topics(kafka: KafkaSettings, topics: Topics, partitions: int | None = None) -> list[str]:
    """Create the topics that do not exist yet; returns the names created."""
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    admin = clients.kafka_admin(kafka)
    try:
        existing = set(admin.list_topics())
        new = []
        for spec in topics.specs():
            if spec.name in existing:
                continue
            cfg: dict[str, str] = {
                "max.message.bytes": str(kafka.dlq_max_message_bytes if spec.dlq else kafka.max_message_bytes)
            }
            if spec.retention_ms is not None:
                cfg["retention.ms"] = str(spec.retention_ms)
            new.append(
                NewTopic(
                    name=spec.name,
                    num_partitions=partitions or kafka.partitions,
                    replication_factor=kafka.replication_factor,
                    topic_configs=cfg,
                )
            )
        created: list[str] = []
        for t in new:
            try:
                admin.create_topics([t], validate_only=False)
                created.append(t.name)
            except TopicAlreadyExistsError:
                pass
        if created:
            log.info("created topics %s", created)
        return created
    finally:
        admin.close()
