"""The one place that builds Kafka, Redis and Milvus clients from :mod:`infra.settings`.

Every client of ours is made here, so TLS, SASL, tokens and database names are applied the same way everywhere:

* Kafka: :func:`kafka_options` (the keyword options kafka-python and aiokafka share), :func:`kafka_admin`,
  :func:`kafka_consumer`, :func:`kafka_producer` (kafka-python) and :func:`aiokafka_kwargs` (``AIOKafkaConsumer`` /
  ``AIOKafkaProducer``);
* Redis: :func:`redis_options`, :func:`redis_client`;
* Milvus: :func:`milvus_options`, :func:`milvus_client`.

Secrets (Kafka's SASL password, Redis's password, Milvus's token) stay :class:`pydantic.SecretStr` in the option
dicts, so printing, logging or raising with one shows ``'**********'``; :func:`reveal` unwraps them right at the
client call. Only :func:`aiokafka_kwargs` hands out revealed values (aiokafka clients are made inside the caller's
event loop): pass its result straight to the client and never log it.

The third-party packages are imported only when a client is made (this module is imported by light code paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from infra.settings import KafkaSettings, MilvusSettings, RedisSettings

if TYPE_CHECKING:
    from pymilvus import MilvusClient
    from redis import Redis


def reveal(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` with every :class:`SecretStr` value unwrapped: call it in the client call's argument list."""
    return {k: v.get_secret_value() if isinstance(v, SecretStr) else v for k, v in options.items()}


# ---------------------------------------------------------------------------------------------------------- Kafka


def kafka_options(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """Connection options in the keyword form kafka-python and aiokafka both accept, plus ``extra``.

    ``bootstrap_servers``, ``security_protocol`` and ``client_id``; ``sasl_mechanism`` with the SASL user and
    password (a ``SecretStr``) when SASL is set; an ``ssl_context`` for SSL / SASL_SSL. ``extra`` (timeouts, group
    ids, ...) is added last and wins.
    """
    opts: dict[str, Any] = dict(kafka.kafka_python_config())
    if kafka.sasl_mechanism:
        opts["sasl_plain_password"] = kafka.sasl_password  # stays a SecretStr until the client call
    ssl_context = kafka.ssl_context()
    if ssl_context is not None:
        opts["ssl_context"] = ssl_context
    opts.update(extra)
    return opts


def kafka_admin(kafka: KafkaSettings, **extra: Any) -> Any:
    """A kafka-python ``KafkaAdminClient`` (``extra``: e.g. ``request_timeout_ms``)."""
    from kafka import KafkaAdminClient  # type: ignore[import-untyped]

    return KafkaAdminClient(**reveal(kafka_options(kafka, **extra)))


def kafka_consumer(kafka: KafkaSettings, *topics: str, **extra: Any) -> Any:
    """A kafka-python ``KafkaConsumer`` subscribed to ``topics`` (``extra``: ``group_id``, offsets, timeouts...)."""
    from kafka import KafkaConsumer

    return KafkaConsumer(*topics, **reveal(kafka_options(kafka, **extra)))


def kafka_producer(kafka: KafkaSettings, **extra: Any) -> Any:
    """A kafka-python ``KafkaProducer`` (``extra``: ``acks``, ``linger_ms``, serializers...)."""
    from kafka import KafkaProducer

    return KafkaProducer(**reveal(kafka_options(kafka, **extra)))


def aiokafka_kwargs(kafka: KafkaSettings, **extra: Any) -> dict[str, Any]:
    """Keyword arguments for ``aiokafka.AIOKafkaConsumer`` / ``AIOKafkaProducer``, secrets revealed.

    Pass the result straight to the client (``AIOKafkaConsumer(*topics, **aiokafka_kwargs(k, group_id=...))``);
    never log or keep it.
    """
    return reveal(kafka_options(kafka, **extra))


# ---------------------------------------------------------------------------------------------------------- Redis


def redis_options(settings: RedisSettings, **extra: Any) -> dict[str, Any]:
    """``redis.Redis`` keyword options (host, port, db, user, password as ``SecretStr``, TLS), plus ``extra``."""
    opts: dict[str, Any] = {**settings.client_kwargs(), "password": settings.password}  # SecretStr until the call
    opts.update(extra)
    return opts


def redis_client(settings: RedisSettings, **extra: Any) -> Redis:
    """A ``redis.Redis`` client (``extra``: ``socket_timeout``, ``retry``, ...)."""
    import redis

    return redis.Redis(**reveal(redis_options(settings, **extra)))


# --------------------------------------------------------------------------------------------------------- Milvus


def milvus_options(settings: MilvusSettings, **extra: Any) -> dict[str, Any]:
    """``pymilvus.MilvusClient`` keyword options: the URI, the token (``SecretStr``) and database when set."""
    opts: dict[str, Any] = {"uri": settings.uri}
    if settings.token is not None:
        opts["token"] = settings.token
    if settings.db_name:
        opts["db_name"] = settings.db_name
    opts.update(extra)
    return opts


def milvus_client(settings: MilvusSettings, **extra: Any) -> MilvusClient:
    """A ``pymilvus.MilvusClient`` on a server URI or a Milvus Lite file (``extra``: e.g. ``timeout``)."""
    from pymilvus import MilvusClient

    return MilvusClient(**reveal(milvus_options(settings, **extra)))
