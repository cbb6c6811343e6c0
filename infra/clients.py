"""The one place that builds Kafka, Redis and Milvus clients from :mod:`infra.settings`.

Every client of ours is made here, so TLS, SASL, tokens and database names are applied the same way everywhere:

* Kafka: :func:`kafka_options` (the keyword options kafka-python and aiokafka share), :func:`kafka_admin`,
  :func:`kafka_consumer`, :func:`kafka_producer` (kafka-python) and :func:`aiokafka_kwargs` (``AIOKafkaConsumer`` /
  ``AIOKafkaProducer``);
* Redis: :func:`redis_options`, :func:`redis_retry`, :func:`redis_client`;
* Milvus: :func:`milvus_options`, :func:`milvus_deadlines`, :func:`milvus_client`.

Every Redis and Milvus client gets deadlines from the settings, for one of two paths: the **ingest** path (the
worker, the CLI, the benchmarks: seconds per call, a retry or two, since the worker retries a failing step anyway)
or the **serving** path (``serving=True``, the recommendation API: a few hundred milliseconds per call and no retry
of a timeout, so one request stays inside its budget). Redis applies its deadlines itself (socket timeouts, a
bounded :class:`redis.retry.Retry`); pymilvus takes a deadline per call, which :class:`indexing.milvus_items.ItemIndex`
passes on every call from :func:`milvus_deadlines`. Kafka admin clients get ``request_timeout_ms`` from
``KafkaSettings.request_timeout_s`` unless the caller passes its own.

Secrets (Kafka's SASL password, Redis's password, Milvus's token) stay :class:`pydantic.SecretStr` in the option
dicts, so printing, logging or raising with one shows ``'**********'``; :func:`reveal` unwraps them right at the
client call. Only :func:`aiokafka_kwargs` hands out revealed values (aiokafka clients are made inside the caller's
event loop): pass its result straight to the client and never log it.

The third-party packages are imported only when a client is made (this module is imported by light code paths).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from infra.settings import KafkaSettings, MilvusSettings, RedisSettings

if TYPE_CHECKING:
    from pymilvus import MilvusClient
    from redis import Redis
    from redis.retry import Retry


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
    """A kafka-python ``KafkaAdminClient`` whose requests time out after ``kafka.request_timeout_s`` (``extra``:
    e.g. its own ``request_timeout_ms``, which wins)."""
    from kafka import KafkaAdminClient  # type: ignore[import-untyped]

    extra.setdefault("request_timeout_ms", int(kafka.request_timeout_s * 1000))
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


@dataclass(frozen=True)
class RedisDeadlines:
    """What one Redis command may take on one path: each try's read/write and connect timeouts, and the retries."""

    timeout_s: float
    connect_timeout_s: float
    retries: int
    retry_timeouts: bool  # whether a timed-out command is tried again (the ingest path) or not (serving)


def redis_deadlines(settings: RedisSettings, *, serving: bool = False) -> RedisDeadlines:
    """The ingest (default) or serving deadlines of ``settings``."""
    if serving:
        return RedisDeadlines(settings.serving_timeout_s, settings.serving_connect_timeout_s,
                              settings.serving_retries, retry_timeouts=False)
    return RedisDeadlines(settings.timeout_s, settings.connect_timeout_s, settings.retries, retry_timeouts=True)


def redis_options(settings: RedisSettings, *, serving: bool = False, **extra: Any) -> dict[str, Any]:
    """``redis.Redis`` keyword options (host, port, db, user, password as ``SecretStr``, TLS), the path's socket
    timeouts and the health-check interval, plus ``extra`` (which wins). The retry is :func:`redis_retry`'s."""
    d = redis_deadlines(settings, serving=serving)
    opts: dict[str, Any] = {**settings.client_kwargs(), "password": settings.password}  # SecretStr until the call
    opts.update(socket_timeout=d.timeout_s, socket_connect_timeout=d.connect_timeout_s,
                health_check_interval=settings.health_check_interval_s)
    opts.update(extra)
    return opts


#: the backoff between two tries of a Redis command on the ingest path: 50 ms doubling, at most 0.5 s
REDIS_RETRY_BASE_S = 0.05
REDIS_RETRY_CAP_S = 0.5


def redis_retry(settings: RedisSettings, *, serving: bool = False) -> Retry:
    """The bounded retry of one Redis command on the path (redis-py's default retries 3 times with up to 10 s of
    backoff). Ingest: ``retries`` more tries after a connection error or a timeout, exponential backoff. Serving:
    ``serving_retries`` more tries after a connection error only, at once (a pooled connection Redis closed fails
    fast; a timeout already spent the call's budget). redis-py applies the retry to a new connection's handshake
    and to the command, each: see :func:`redis_hung_server_s`."""
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError
    from redis.retry import Retry

    d = redis_deadlines(settings, serving=serving)
    if d.retry_timeouts:
        return Retry(ExponentialBackoff(cap=REDIS_RETRY_CAP_S, base=REDIS_RETRY_BASE_S), d.retries,
                     supported_errors=(RedisConnectionError, RedisTimeoutError, TimeoutError))
    return Retry(NoBackoff(), d.retries, supported_errors=(RedisConnectionError,))


def redis_hung_server_s(settings: RedisSettings, *, serving: bool = False) -> float:
    """The longest one command waits on a Redis that accepts connections and never answers (a hung process, a
    frozen network path): each try times out, ``(1 + retries)^2`` tries on the ingest path (the handshake and the
    command are each retried) with a backoff of at most :data:`REDIS_RETRY_CAP_S` between two, one when serving."""
    d = redis_deadlines(settings, serving=serving)
    tries = (1 + d.retries) ** 2 if d.retry_timeouts else 1
    return tries * d.timeout_s + (tries - 1) * REDIS_RETRY_CAP_S


def redis_client(settings: RedisSettings, *, serving: bool = False, **extra: Any) -> Redis:
    """A ``redis.Redis`` client with the deadlines of the ingest path, or of the serving path with ``serving=True``
    (``extra``: other ``redis.Redis`` options, which win)."""
    import redis

    extra.setdefault("retry", redis_retry(settings, serving=serving))
    return redis.Redis(**reveal(redis_options(settings, serving=serving, **extra)))


# --------------------------------------------------------------------------------------------------------- Milvus


@dataclass(frozen=True)
class MilvusDeadlines:
    """What one Milvus call may take on one path (pymilvus takes ``timeout=`` per call, and retries a call that
    fails for the server's state only within it)."""

    call_s: float  # a search, query, upsert, flush, describe, has/create/drop ...
    load_s: float  # load_collection (it waits until the collection is loaded)
    connect_s: float  # the client's channel becoming ready


def milvus_deadlines(settings: MilvusSettings, *, serving: bool = False) -> MilvusDeadlines:
    """The ingest (default) or serving deadlines of ``settings``; the serving path never waits longer to load a
    collection than for any other call (the worker loads it)."""
    if serving:
        return MilvusDeadlines(settings.serving_timeout_s, settings.serving_timeout_s,
                               settings.serving_connect_timeout_s)
    return MilvusDeadlines(settings.timeout_s, settings.load_timeout_s, settings.connect_timeout_s)


def milvus_options(settings: MilvusSettings, *, serving: bool = False, **extra: Any) -> dict[str, Any]:
    """``pymilvus.MilvusClient`` keyword options: the URI, the token (``SecretStr``) and database when set, and the
    path's connect deadline as ``timeout``; plus ``extra`` (which wins)."""
    opts: dict[str, Any] = {"uri": settings.uri, "timeout": milvus_deadlines(settings, serving=serving).connect_s}
    if settings.token is not None:
        opts["token"] = settings.token
    if settings.db_name:
        opts["db_name"] = settings.db_name
    opts.update(extra)
    return opts


def milvus_client(settings: MilvusSettings, *, serving: bool = False, **extra: Any) -> MilvusClient:
    """A ``pymilvus.MilvusClient`` on a server URI or a Milvus Lite file, connected within the path's connect
    deadline (``extra``: e.g. ``timeout``). Pass ``timeout=milvus_deadlines(settings, serving=...).call_s`` on each
    call: a call without one waits as long as the server takes."""
    from pymilvus import MilvusClient

    return MilvusClient(**reveal(milvus_options(settings, serving=serving, **extra)))
