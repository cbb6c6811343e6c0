"""The one place that builds Kafka, Redis and Milvus clients from :mod:`infra.settings`.

Every client of ours is made here, so TLS, SASL, tokens and database names are applied the same way everywhere:

* Kafka: :func:`kafka_options` (the keyword options kafka-python and aiokafka share), :func:`kafka_admin`,
  :func:`kafka_consumer`, :func:`kafka_producer` (kafka-python) and :func:`aiokafka_kwargs` (``AIOKafkaConsumer`` /
  ``AIOKafkaProducer``);
* Redis: :func:`redis_options`, :func:`redis_retry`, :func:`redis_client` (a ``redis.cluster.RedisCluster``
  with ``RedisSettings.cluster``: :func:`redis_cluster_options`);
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

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from infra.settings import KafkaSettings, MilvusSettings, RedisSettings

if TYPE_CHECKING:
    from pymilvus import MilvusClient
    from redis import Redis
    from redis.cluster import RedisCluster
    from redis.connection import Connection
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
    """A kafka-python ``KafkaProducer``, ``acks=all`` and idempotent unless ``extra`` says otherwise (kafka-python
    2.x defaults to ``acks=1`` without idempotence: an acked record could be lost with its leader, or a retried one
    written twice); ``extra``: ``linger_ms``, serializers..."""
    from kafka import KafkaProducer

    extra = {"acks": "all", "enable_idempotence": True, **extra}
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
    command are each retried) with a backoff of at most :data:`REDIS_RETRY_CAP_S` between two, one when serving.

    On a Redis Cluster (``settings.cluster``) a node's connection never retries (the cluster client retries whole
    attempts): ``1 + retries`` tries on the ingest path; serving, a command gets one try and a pipeline
    ``1 + serving_retries`` (redis-py retries a cluster pipeline on a timeout too), so the larger. Not counted: a
    topology refresh the failed try asks for, which the next try runs first (it asks one node after another until
    one answers, see :func:`redis_cluster_client`)."""
    d = redis_deadlines(settings, serving=serving)
    if settings.cluster:
        tries = 1 + d.retries
    else:
        tries = (1 + d.retries) ** 2 if d.retry_timeouts else 1
    return tries * d.timeout_s + (tries - 1) * (REDIS_RETRY_CAP_S if d.retry_timeouts else 0.0)


def redis_client(settings: RedisSettings, *, serving: bool = False, **extra: Any) -> Redis | RedisCluster:
    """A ``redis.Redis`` client with the deadlines of the ingest path, or of the serving path with ``serving=True``
    (``extra``: other ``redis.Redis`` options, which win). With ``settings.cluster`` a ``RedisCluster`` with the
    same deadlines: :func:`redis_cluster_client` (it connects at once, unlike ``redis.Redis``)."""
    if settings.cluster:
        return redis_cluster_client(settings, serving=serving, **extra)
    import redis

    extra.setdefault("retry", redis_retry(settings, serving=serving))
    return redis.Redis(**reveal(redis_options(settings, serving=serving, **extra)))


@functools.cache
def _health_checked(tls: bool, interval_s: int) -> type[Connection]:
    """A redis-py connection class that PINGs a connection idle ``interval_s`` before its next command: a
    ``RedisCluster`` drops ``health_check_interval`` from the options it hands to its nodes' pools, but keeps
    ``connection_class``."""
    from redis.connection import Connection, SSLConnection

    base: type[Connection] = SSLConnection if tls else Connection

    def __init__(self: Connection, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("health_check_interval", interval_s)
        base.__init__(self, *args, **kwargs)

    return type(f"{base.__name__}HealthChecked{interval_s}s", (base,), {"__init__": __init__})


@functools.cache
def _serving_cluster_class() -> type[RedisCluster]:
    """``RedisCluster`` that retries a command after a connection error only (the serving rule: a timeout spent the
    call's budget already, and a CLUSTERDOWN lasts longer than a request's budget)."""
    from redis.cluster import RedisCluster
    from redis.exceptions import ConnectionError as RedisConnectionError

    class ServingRedisCluster(RedisCluster):
        ERRORS_ALLOW_RETRY = (RedisConnectionError,)  # type: ignore[assignment]

    return ServingRedisCluster


def redis_cluster_options(settings: RedisSettings, *, serving: bool = False, **extra: Any) -> dict[str, Any]:
    """``redis.cluster.RedisCluster`` keyword options: the startup node (host, port), user, password as
    ``SecretStr``, TLS, the path's socket timeouts, the health check (as the connection class, see
    :func:`_health_checked`), the cluster choices of :func:`redis_cluster_client` and its retry; plus ``extra``
    (which wins). No ``db``: a cluster has database 0 only."""
    d = redis_deadlines(settings, serving=serving)
    opts: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "username": settings.username,
        "password": settings.password,  # SecretStr until the call
        "ssl": settings.tls,
        "socket_timeout": d.timeout_s,
        "socket_connect_timeout": d.connect_timeout_s,
        "connection_class": _health_checked(settings.tls, settings.health_check_interval_s),
        "retry": redis_retry(settings, serving=serving),
        "require_full_coverage": True,
        "dynamic_startup_nodes": True,
        "reinitialize_steps": 5,
    }
    opts.update(extra)
    return opts


def redis_cluster_client(settings: RedisSettings, *, serving: bool = False, **extra: Any) -> RedisCluster:
    """A ``redis.cluster.RedisCluster`` on the cluster ``settings.host:settings.port`` belongs to, with the deadlines
    of the single-node client of the same path (``extra``: other ``RedisCluster`` options, which win).

    It reads the slot map from the startup node when it is made (``CLUSTER SLOTS``, within the path's socket
    timeouts; ``RedisClusterException`` when no node answers or the slots are not all covered) and then sends each
    command to the master of its key's slot, following MOVED and ASK redirects (at most 16 per command, redis-py's
    ``RedisClusterRequestTTL``). The choices, and why:

    * ``require_full_coverage=True``: refuse to start on a cluster with uncovered slots (a commit to one of them
      would fail anyway; the local cluster also runs ``cluster-require-full-coverage yes``).
    * reads go to masters only (``read_from_replicas`` False, no ``load_balancing_strategy``): the worker reads
      fences and states and then compare-and-sets them, and the API reads what the worker just committed; a replica
      answers with what it has replicated so far.
    * the retry is :func:`redis_retry`'s, the same count and backoff as a single Redis: a node's connections never
      retry (redis-py gives them none), the cluster client retries the whole attempt after a connection error, a
      timeout, a CLUSTERDOWN or an uncovered slot, asking for a topology refresh that the next attempt runs first.
      The deprecated ``cluster_error_retry_attempts`` (10 by default) is ignored once a retry is given. On the
      ingest path that is ``retries`` more attempts (0 by default: the worker retries the step, a failover included).
      Serving, a command is retried after a connection error only (``serving_retries`` times; a timeout or a
      CLUSTERDOWN ends the call), but redis-py retries a cluster *pipeline* on a timeout too, so a serving pipeline
      can take ``1 + serving_retries`` timeouts (:func:`redis_hung_server_s`).
    * a CLUSTERDOWN answer (a master lost and its replica not promoted yet) costs a fixed 0.25 s pause and a refresh
      inside redis-py before it is raised or retried.
    * a topology refresh asks the known nodes one after another (the failed node last) until one answers, each
      within the socket timeouts, at most once a second (redis-py's ``topology_refresh_min_interval``); with every
      node hung it costs a timeout per node.
    * ``dynamic_startup_nodes=True``: the nodes the cluster names (loopback addresses on the local stack) become the
      startup nodes of later refreshes, so a lost startup node does not matter. ``reinitialize_steps=5``: the whole
      slot map is read again after 5 MOVED redirects (each redirect already patches its slot).
    """
    from redis.cluster import RedisCluster

    cls = _serving_cluster_class() if serving else RedisCluster
    return cls(**reveal(redis_cluster_options(settings, serving=serving, **extra)))


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
