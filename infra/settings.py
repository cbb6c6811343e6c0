"""One frozen settings object for the whole engine.

Built once in the composition root (``thaw.cli``) with :func:`load_settings`; nothing reads the environment at
import time. Every field can be set from the environment with the ``THAW_`` prefix and ``__`` between sections,
e.g. ``THAW_KAFKA__BOOTSTRAP_SERVERS=10.0.0.5:9092`` or ``THAW_REDIS__PASSWORD=...``. Secrets are ``SecretStr`` and
never appear in ``repr``, logs or error messages.
"""

from __future__ import annotations

import ipaddress
import json
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


def _default_home() -> Path:
    return Path.home() / ".cache" / "thaw"


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


def local_bootstrap(bootstrap: str, brokers: int) -> str:
    """``bootstrap`` naming all ``brokers`` nodes of a local cluster: a single loopback ``host:port`` becomes the
    nodes' listeners ``port, port + 2, ...`` (:class:`KafkaSettings`); a list, or any other host, is kept."""
    addrs = [a.strip() for a in bootstrap.split(",") if a.strip()]
    if brokers <= 1 or len(addrs) != 1:
        return bootstrap
    host, _, port = addrs[0].rpartition(":")
    if host.strip("[]") not in ("127.0.0.1", "localhost", "::1") or not port.isdigit():
        return bootstrap
    return ",".join(f"{host}:{int(port) + 2 * i}" for i in range(brokers))


class KafkaSettings(_Section):
    """Kafka client and local-broker settings."""

    bootstrap_servers: str = "127.0.0.1:19092"
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    client_id: str = "thaw"
    partitions: int = Field(default=4, ge=1)
    # topic replication (infra.topics): unset = min(3, brokers), so 1 on the single-broker stack and 3 on a cluster
    # of three or more; min.insync.replicas unset = 2 where the replication factor is 3 or more, else 1 (a topic of
    # 3 replicas keeps taking acks=all writes with one broker down, and an acked write is on two of them)
    replication_factor: int | None = Field(default=None, ge=1)
    min_insync_replicas: int | None = Field(default=None, ge=1)
    topic_prefix: str = ""
    # per-topic record size caps (max.message.bytes), set at topic creation and kept by ensure_topics; the defaults
    # follow from the event contract (contracts.topics.record_caps, docs/operations.md "Record size caps"):
    # content.new's cap (inline media; also the most the worker fetches per partition) and content.dlq's (a dead
    # letter carries the original bytes base64-encoded; also the largest record the worker produces)
    max_message_bytes: int = Field(default=16 * 1024 * 1024, ge=1024, le=2**31 - 1)
    dlq_max_message_bytes: int = Field(default=24 * 1024 * 1024, ge=1024, le=2**31 - 1)
    # every other topic's cap by its name without the prefix, e.g. THAW_KAFKA__TOPIC_MAX_MESSAGE_BYTES=
    # '{"user.events": 262144}' (user.events 128 KiB, user.profile 160 KiB by default; the retry topic and
    # user.dlq grow with them)
    topic_max_message_bytes: dict[str, int] = Field(default_factory=dict)
    # bounded waits on the broker (docs/operations.md, "Deadlines"): one request of an admin client or of the
    # worker's consumer (Faust needs it >= stream.session_timeout_s and takes the larger), and the delivery of a
    # record the worker produces (a DLQ, retry-topic or trace record not acked by then fails with a KafkaTimeoutError,
    # and the step is retried)
    request_timeout_s: float = Field(default=30.0, gt=0, le=600)
    delivery_timeout_s: float = Field(default=60.0, gt=0, le=1200)
    # local broker (thaw stack): controller listener port and the Kafka version fetched from Maven Central
    controller_port: int = 19093
    # KRaft nodes of the local stack (`thaw stack up --brokers N`), each broker and controller: node i (0-based)
    # listens on port + 2i, its controller on controller_port + 2i (19092..19097 for 3 nodes); with more than one,
    # a single loopback bootstrap address stands for all the nodes (bootstrap_servers lists them)
    brokers: int = Field(default=1, ge=1, le=9)
    version: str = "4.4.0"

    @field_validator("topic_max_message_bytes")
    @classmethod
    def _known_topics(cls, v: dict[str, int]) -> dict[str, int]:
        from contracts.topics import TOPIC_NAMES

        for name, cap in v.items():
            if name in ("content.new", "content.dlq"):
                raise ValueError(f"{name}'s cap is THAW_KAFKA__{'DLQ_' if name == 'content.dlq' else ''}"
                                 "MAX_MESSAGE_BYTES")
            if name not in TOPIC_NAMES:
                raise ValueError(f"no topic {name!r} (topic names without the prefix: {', '.join(TOPIC_NAMES)})")
            if not 1024 <= cap <= 2**31 - 1:
                raise ValueError(f"{name}: a record cap is 1024 .. 2^31-1 bytes, not {cap}")
        return v

    @model_validator(mode="before")
    @classmethod
    def _bootstrap_lists_the_nodes(cls, data: object) -> object:
        if isinstance(data, dict) and "brokers" in data:
            try:
                n = int(data.get("brokers", 1))
            except (TypeError, ValueError):
                return data  # the field's own validation names the error
            bootstrap = str(data.get("bootstrap_servers", cls.model_fields["bootstrap_servers"].default))
            return {**data, "bootstrap_servers": local_bootstrap(bootstrap, n)}
        return data

    @model_validator(mode="after")
    def _min_insync_fits(self) -> KafkaSettings:
        rf, isr = self.topic_replication_factor(), self.topic_min_insync_replicas()
        if isr > rf:
            raise ValueError(f"min_insync_replicas {isr} is more than the replication factor {rf}: every acks=all "
                             "write would fail (NOT_ENOUGH_REPLICAS)")
        return self

    @model_validator(mode="after")
    def _wrappers_hold_their_sources(self) -> KafkaSettings:
        from contracts.topics import undersized_caps

        short = undersized_caps(self.record_caps())
        if short:
            raise ValueError("record caps too small for what their topics carry: " + "; ".join(
                f"{name} {cap} bytes cannot hold the {'envelope' if name.endswith('.retry') else 'dead letter'} "
                f"of its sources' largest record (at least {need})" for name, (cap, need) in short.items()))
        return self

    def topic_replication_factor(self) -> int:
        """The replication factor topics are created with: the setting, else min(3, brokers)."""
        return self.replication_factor or min(3, self.brokers)

    def topic_min_insync_replicas(self) -> int:
        """The topics' ``min.insync.replicas``: the setting, else 2 where they have 3+ replicas, else 1."""
        return self.min_insync_replicas or (2 if self.topic_replication_factor() >= 3 else 1)

    def record_caps(self) -> dict[str, int]:
        """Every topic's ``max.message.bytes`` by its name without the prefix (:func:`contracts.topics.record_caps`
        with these settings' caps)."""
        from contracts.topics import record_caps

        return record_caps({**self.topic_max_message_bytes, "content.new": self.max_message_bytes,
                            "content.dlq": self.dlq_max_message_bytes})

    @property
    def port(self) -> int:
        return int(self.bootstrap_servers.split(",")[0].rsplit(":", 1)[1])

    def kafka_python_config(self) -> dict[str, object]:
        """Connection options in the keyword form kafka-python and aiokafka both accept."""
        cfg: dict[str, object] = {
            "bootstrap_servers": self.bootstrap_servers,
            "security_protocol": self.security_protocol,
            "client_id": self.client_id,
        }
        if self.sasl_mechanism:
            cfg["sasl_mechanism"] = self.sasl_mechanism
            cfg["sasl_plain_username"] = self.sasl_username
            cfg["sasl_plain_password"] = self.sasl_password.get_secret_value() if self.sasl_password else None
        return cfg

    def ssl_context(self):  # type: ignore[no-untyped-def]
        """An ``ssl.SSLContext`` for SSL/SASL_SSL, else None."""
        if "SSL" not in self.security_protocol:
            return None
        import ssl

        ctx = ssl.create_default_context(cafile=str(self.ssl_cafile) if self.ssl_cafile else None)
        if self.ssl_certfile:
            ctx.load_cert_chain(str(self.ssl_certfile), str(self.ssl_keyfile) if self.ssl_keyfile else None)
        return ctx


class RedisSettings(_Section):
    """Redis (user vectors, seen sets, offset fences)."""

    host: str = "127.0.0.1"
    port: int = 16379
    db: int = 0
    username: str | None = None
    password: SecretStr | None = None
    tls: bool = False
    key_prefix: str = "thaw:"
    # Redis Cluster (THAW_REDIS__CLUSTER=1): host/port is one startup node, the client (infra.clients.redis_client)
    # is redis-py's RedisCluster and discovers the others; `thaw stack up --redis-cluster` starts 3 masters +
    # 3 replicas on port .. port+5 (cluster bus on port+6 .. port+11). A cluster has database 0 only
    cluster: bool = False
    # deadlines per command (infra.clients, docs/operations.md "Deadlines"): the ingest path (the worker, the CLI;
    # retries on a connection error or a timeout, none by default: the worker retries the whole step with backoff,
    # and redis-py retries the connection handshake and the command each, so a hung server costs
    # (1 + retries)^2 timeouts) and the serving path (the API: a request's Redis reads must fit its budget, so a
    # timeout is never retried there, a connection error, e.g. a pooled connection Redis closed, serving_retries times)
    timeout_s: float = Field(default=5.0, gt=0, le=300)
    connect_timeout_s: float = Field(default=2.0, gt=0, le=60)
    retries: int = Field(default=0, ge=0, le=5)
    serving_timeout_s: float = Field(default=0.3, gt=0, le=30)
    serving_connect_timeout_s: float = Field(default=0.2, gt=0, le=30)
    serving_retries: int = Field(default=1, ge=0, le=3)
    # a pooled connection idle this long is PINGed before its next command (0: never)
    health_check_interval_s: int = Field(default=15, ge=0, le=3600)

    def client_kwargs(self) -> dict[str, object]:
        return {
            "host": self.host,
            "port": self.port,
            "db": self.db,
            "username": self.username,
            "password": self.password.get_secret_value() if self.password else None,
            "ssl": self.tls,
        }

    @field_validator("cluster")
    @classmethod
    def _cluster_has_db_0(cls, v: bool, info: ValidationInfo) -> bool:
        if v and info.data.get("db", 0) != 0:
            raise ValueError("a Redis Cluster has database 0 only: unset THAW_REDIS__DB with THAW_REDIS__CLUSTER")
        return v

    def display(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        if self.cluster:
            return f"{scheme}://{self.host}:{self.port} (cluster)"
        return f"{scheme}://{self.host}:{self.port}/{self.db}"


class MilvusSettings(_Section):
    """Milvus: a server URI (standalone/distributed) or a local Milvus Lite ``.db`` path.

    A cluster is the same code with another URI and a token (``user:password``, or an API key): the token is a
    ``SecretStr`` and goes only to the client call (:func:`infra.clients.milvus_options`); credentials written into
    the URI are moved out of it into the token, since the URI is printed in error messages.
    """

    uri: str = "http://127.0.0.1:19531"
    token: SecretStr | None = None
    db_name: str = ""
    items_collection: str = "thaw_items"
    # Measured on the local Milvus 2.3.5: a Strong search waits for the next time tick (p50 200 ms), Bounded answers
    # in ~3 ms; either way a write becomes visible to other clients ~200 ms after the upsert returns.
    consistency_level: Literal["Strong", "Session", "Bounded", "Eventually"] = "Bounded"
    index_type: str = "HNSW"
    metric_type: Literal["IP", "COSINE", "L2"] = "IP"
    # the layout of a NEW items collection (indexing.milvus_items; an existing one keeps its schema, read back when
    # opened): the partition key (kind: a kind filter visits only its kind's partition, and an unfiltered search
    # only 5 partitions; created_day: the UTC day of created_at, so a fresh-window search visits only the window's
    # days' partitions; none: the layout before partition keys; why kind is the default: docs/operations.md,
    # "Milvus at scale"), the hash partitions Milvus spreads the key over (at 16 the five kinds land in five
    # different ones), the shards (DML channels: a cluster spreads writes over its data nodes by shard) and the
    # in-memory replicas it is loaded with (one per query node survives a query node's loss; a standalone server
    # has one query node and refuses more than 1)
    partition_key: Literal["kind", "created_day", "none"] = "kind"
    partitions: int = Field(default=16, ge=1, le=1024)
    shards: int = Field(default=1, ge=1, le=16)
    replicas: int = Field(default=1, ge=1, le=16)
    # index build parameters of a new collection (HNSW: M, efConstruction; IVF_FLAT: nlist) and search parameters
    # (HNSW: ef, raised to k + excluded ids when that is larger; IVF_FLAT: nprobe); benchmarks.milvus_scale
    # measures recall@100 and latency over them
    hnsw_m: int = Field(default=16, ge=2, le=2048)
    hnsw_ef_construction: int = Field(default=200, ge=1, le=65536)
    hnsw_ef: int = Field(default=64, ge=1, le=32768)
    ivf_nlist: int = Field(default=1024, ge=1, le=65536)
    ivf_nprobe: int = Field(default=32, ge=1, le=65536)
    # deadlines per call (infra.clients, docs/operations.md "Deadlines"): pymilvus retries a call that fails for the
    # server's state (UNAVAILABLE, rate limit) within its deadline, then raises. The ingest path (the worker, the CLI:
    # upserts, queries, schema calls), loading a collection (startup, after a Milvus restart), the connection (channel
    # ready), and the serving path (the API's searches and queries, and its connection)
    timeout_s: float = Field(default=10.0, gt=0, le=600)
    load_timeout_s: float = Field(default=120.0, gt=0, le=3600)
    connect_timeout_s: float = Field(default=5.0, gt=0, le=120)
    serving_timeout_s: float = Field(default=0.4, gt=0, le=30)
    serving_connect_timeout_s: float = Field(default=1.0, gt=0, le=30)

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_uri(cls, data: object) -> object:
        """``http(s)://user:password@host`` becomes the URI without them and, unless a token is set (which wins, as
        in pymilvus), the token ``user:password``: the URI is printed in error messages, the token never is."""
        if not isinstance(data, dict) or not isinstance(data.get("uri"), str):
            return data
        from urllib.parse import unquote, urlsplit, urlunsplit

        parts = urlsplit(data["uri"])
        if parts.scheme not in ("http", "https", "tcp") or "@" not in parts.netloc:
            return data
        creds, _, hostport = parts.netloc.rpartition("@")
        out = {**data, "uri": urlunsplit(parts._replace(netloc=hostport))}
        if out.get("token") is None:
            user, _, password = creds.partition(":")
            out["token"] = SecretStr(f"{unquote(user)}:{unquote(password)}" if password else unquote(user))
        return out

    @property
    def is_lite(self) -> bool:
        return not self.uri.startswith(("http://", "https://", "tcp://", "unix:"))


class ModelSettings(_Section):
    """Where versioned, exported models live and which ones the worker serves."""

    dir: Path = Field(default_factory=lambda: _default_home() / "models")
    text_encoder: str = "minilm-l6"
    onnx_threads: int = Field(default=2, ge=1)
    # which encoders serve their int8 variant (written by `thaw models quantize`; encoders/quantize.py): none (fp32),
    # int8 (MiniLM), int8-all (MiniLM and the FLAVA-style image and text graphs)
    quantize: Literal["none", "int8", "int8-all"] = "none"


class StreamSettings(_Section):
    """Worker behaviour: batching, payload caps, decay."""

    app_id: str = "thaw-engine"
    batch_size: int = Field(default=256, ge=1)
    # the users agent's batches (user.events): larger, since its per-batch costs (the fence and state reads, one
    # commit script) are shared by more events; one commit script ran ~74 ms in Redis at 2,048 events on the shared
    # 2-core machine (benchmarks.user_throughput), and other Redis clients wait meanwhile
    user_batch_size: int = Field(default=2048, ge=1, le=8192)
    batch_within_s: float = Field(default=0.05, gt=0)
    content_batch_size: int = Field(default=32, ge=1)
    max_event_bytes: int = 8 * 1024 * 1024
    max_inline_image_bytes: int = 2 * 1024 * 1024
    max_inline_audio_bytes: int = 6 * 1024 * 1024
    max_audio_seconds: float = 600.0
    max_text_chars: int = 10_000
    user_half_life_s: float = 7 * 24 * 3600.0
    # event times an untrusted publisher set (streams.cores.event_time): an event more than max_clock_skew_s ahead
    # of the worker's clock, or older than its max age (None: no bound), is dead-lettered; user states never take
    # a time past the clock plus the skew
    max_clock_skew_s: float = Field(default=300.0, ge=0, le=24 * 3600.0)
    max_user_event_age_s: float | None = Field(default=30 * 24 * 3600.0, gt=0)
    max_content_age_s: float | None = Field(default=365 * 24 * 3600.0, gt=0)
    # a user event on an item not indexed yet is retried (backoff 0.25 s doubling, at most 5 s) for this long
    unknown_item_grace_s: float = Field(default=30.0, ge=0)
    # the served vector space: "cf" = the published CB2CF/DSSM version (required), "text" = MiniLM,
    # "auto" = cf when a cb2cf model is published, else text
    space: Literal["auto", "text", "cf"] = "auto"
    # pin the CF version this worker serves/writes (default: the cb2cf model's CURRENT); a blue/green roll-out
    # runs a second worker group with the new version pinned
    cf_version: str | None = None
    # consumer-group liveness: a worker that sends no heartbeat for this long (killed, frozen) is dropped from the
    # group and its partitions move on; a restarted worker waits for the old member's session to expire before the
    # group rebalances (Faust's default, 60 s, stalled every partition of a kill -9'd worker for a minute). The event
    # loop never blocks (handlers run in threads), so heartbeats every session/4 keep a live worker in.
    session_timeout_s: float = Field(default=10.0, ge=6.0, le=300.0)
    data_dir: Path = Field(default_factory=lambda: _default_home() / "faust")  # Faust's per-app working data
    web_port: int = 16066
    metrics_port: int = 19108
    # a batch step (handling, delivery, commit: from its first attempt to its success, retries included) running
    # longer than this shows its agent as stuck: thaw_worker_stuck{agent} 1 and one warning per stuck episode
    stuck_after_s: float = Field(default=30.0, gt=0, le=3600)


class MediaSettings(_Section):
    """What the worker may fetch when a ``content.new`` event names media by URI (see ``docs/THREAT_MODEL.md``).

    The publisher of an event controls every byte of it, URIs included: ``file://`` is refused unless the path
    resolves (symlinks followed) inside one of ``file_roots`` and is a regular file; ``http(s)://`` reaches public
    addresses only (checked after DNS, and the checked address is the one connected to), of ``allowed_hosts`` when
    set. Set as JSON, e.g. ``THAW_MEDIA__FILE_ROOTS='["/srv/media"]'``,
    ``THAW_MEDIA__ALLOWED_HOSTS='["cdn.example.com", "*.media.example.com"]'``. The byte caps are
    ``StreamSettings.max_inline_image_bytes`` / ``max_inline_audio_bytes`` (inline or fetched alike).
    """

    # file:// only under these directories (absolute; resolved when checked); none: every file:// URI is refused
    file_roots: tuple[Path, ...] = ()
    # http(s) hosts media may come from: exact names (punycode for IDNs), or "*.example.com" for its subdomains;
    # empty: any public host
    allowed_hosts: tuple[str, ...] = ()
    # networks (CIDR) exempt from the private-address rule, e.g. "10.20.0.0/16" for an in-house media store;
    # "127.0.0.1/32" only deliberately (tests): loopback, private, link-local and multicast are refused otherwise
    allowed_private_networks: tuple[str, ...] = ()
    # total wall-clock budget per item for fetching its media: DNS, connects, redirects and every body byte
    fetch_timeout_s: float = Field(default=5.0, gt=0, le=300)
    max_redirects: int = Field(default=3, ge=0, le=20)
    # images larger than this (width x height, read from the header before decoding) are refused as pixel bombs
    max_image_pixels: int = Field(default=40_000_000, ge=1)
    # audio whose decoded float32 samples (frames x channels x 4 bytes, from the header) would exceed this is
    # refused before decoding (600 s of 48 kHz stereo is 230 MB)
    max_audio_decoded_bytes: int = Field(default=256 * 1024 * 1024, ge=1)

    @field_validator("file_roots")
    @classmethod
    def _absolute_roots(cls, v: tuple[Path, ...]) -> tuple[Path, ...]:
        for p in v:
            if not p.is_absolute():
                raise ValueError(f"media file root {str(p)!r} is not an absolute path")
        return v

    @field_validator("allowed_hosts")
    @classmethod
    def _hosts(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        out = []
        for h in v:
            name = h.strip().lower().rstrip(".")
            if name.startswith("[") and name.endswith("]"):
                name = name[1:-1]
            bare = name[2:] if name.startswith("*.") else name
            if not bare or any(c in bare for c in "*/@?# ") or (":" in bare and not _is_ip(bare)):
                raise ValueError(f"allowed media host {h!r}: a host name, or *.domain for its subdomains")
            out.append(name)
        return tuple(out)

    @field_validator("allowed_private_networks")
    @classmethod
    def _networks(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for n in v:
            ipaddress.ip_network(n, strict=False)  # ValueError names the bad entry
        return v


def _is_ip(s: str) -> bool:
    try:
        ipaddress.ip_address(s)
    except ValueError:
        return False
    return True


class StackSettings(_Section):
    """The local no-Docker stack (``thaw stack up``)."""

    home: Path = Field(default_factory=lambda: _default_home() / "stack")
    milvus_port: int = 19531
    # Milvus makes writes visible to searches one time tick after the upsert (the package default is 200 ms);
    # a shorter tick is fresher for a little more background work
    milvus_time_tick_ms: int = Field(default=50, ge=10, le=1000)
    ready_timeout_s: float = 120.0
    # Milvus standalone also listens on 11 internal ports (embedded etcd client/peer, metrics/healthz, and the
    # coordinator/node gRPC ports), allocated consecutively from this base: 19540..19550 by default.
    milvus_port_base: int = 19540
    kafka_heap_mb: int = Field(default=512, ge=128)
    kafka_auto_create_topics: bool = False
    # SIGTERM, then SIGKILL of the process group after this many seconds (``thaw stack down``)
    stop_timeout_s: float = Field(default=30.0, gt=0)


class ABVariant(_Section):
    """One arm of the A/B split of the serving API.

    ``ranker`` names a published ranker (``deepfm-mmoe`` at its CURRENT version, or ``name@version``), or ``none``
    (the default) to serve the recall order; ``new_item_share`` overrides the service-wide quota of new items in the
    top-k. The default is the recall order because that is what the measurements support (simulator NDCG@20: recall
    order .367, the ranker alone .349; docs/results.md) and it needs no published model, so a fresh ``thaw serve``
    serves; a ranked arm names its ranker.
    """

    name: str = Field(min_length=1, max_length=32, pattern=r"^[A-Za-z0-9_.-]+$")
    weight: float = Field(default=1.0, gt=0)
    ranker: str = "none"
    new_item_share: float | None = Field(default=None, ge=0, le=1)
    recall_blend: float | None = Field(default=None, ge=0, le=1)


class ApiKey(_Section):
    """A service caller's API key: a name (logged and counted, never the key), the key's SHA-256 and its scopes.

    ``recommend`` lets the caller ask for any user; ``admin`` adds ``debug=true`` and ``variant=`` (and implies
    ``recommend``). ``thaw serve-key`` makes a key and prints its entry.
    """

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")  # hex digest of the key; the key itself is never configured
    scopes: tuple[Literal["recommend", "admin"], ...] = ("recommend",)


class AuthSettings(_Section):
    """Who may call the recommendation API (``serving/auth.py``, ``docs/serving.md``).

    ``mode="on"`` (the default): every ``/recommend`` and ``/ab`` request needs a JWT bearer token (HS256 with
    ``jwt_secret``, or RS256/ES256 verified with ``jwt_public_key`` or the keys of the ``jwt_jwks`` file) whose
    ``sub`` is the user, or an ``X-API-Key`` listed in ``api_keys``; the API refuses to start with neither
    configured. ``mode="local-dev"`` turns authentication off (every caller is an admin): ``thaw serve`` logs a
    warning and refuses to bind anything but loopback. Set e.g. ``THAW_SERVE__AUTH__MODE=local-dev`` or
    ``THAW_SERVE__AUTH__API_KEYS='[{"name":"web","sha256":"<hex>","scopes":["recommend"]}]'``.
    """

    mode: Literal["on", "local-dev"] = "on"
    jwt_secret: SecretStr | None = Field(default=None, min_length=32)  # HS256 shared secret, 32+ characters
    jwt_public_key: Path | None = None  # PEM public key: RSA (RS256) or P-256 (ES256)
    jwt_jwks: Path | None = None  # a JWKS file (an OIDC provider's keys), read again when it changes
    jwt_issuer: str | None = None  # when set, the token's iss must equal it
    jwt_audience: str | None = None  # when set, the token's aud must name it (a token with an aud needs it set)
    jwt_leeway_s: float = Field(default=30.0, ge=0, le=300)  # clock skew allowed on exp, nbf and iat
    api_keys: tuple[ApiKey, ...] = ()


class ServeSettings(_Section):
    """The recommendation API (``thaw serve``): recall sizes, freshness mixing, exposure quota, A/B split.

    Variants are set as JSON, e.g.
    ``THAW_SERVE__VARIANTS='[{"name":"gated","weight":1,"ranker":"deepfm-mmoe@v1-gated"},
    {"name":"plain","weight":1,"ranker":"deepfm-mmoe@v1-plain"}]'``.
    """

    host: str = "127.0.0.1"
    port: int = 18080  # public: /recommend, /ab, /ab/{user_id}, /healthz
    # the ops server in the same process: /metrics, /readyz, /healthz, /docs, /openapi.json
    ops_host: str = "127.0.0.1"
    ops_port: int = 18081
    # a /recommend or /ab request not answered within this answers 503 naming the stuck dependency (its thread is
    # left to finish); above the loaded p99 of the pipeline (docs/results.md: 439 ms with the ranker, 16 clients)
    request_deadline_s: float = Field(default=1.0, gt=0, le=60)
    ready_deadline_s: float = Field(default=5.0, gt=0, le=120)  # the same for /readyz (not ready on expiry)
    # requests in flight, abandoned ones included, beyond which /recommend and /ab answer 503 at once
    max_concurrency: int = Field(default=32, ge=1, le=1024)
    # per caller (a token's sub, an API key's name, the client address with auth off): a token bucket of
    # rate_limit_burst refilled at rate_limit_rps; an empty bucket answers 429 (serving.rate_limit). 0: no limit
    rate_limit_rps: float = Field(default=50.0, ge=0)
    rate_limit_burst: float = Field(default=100.0, ge=1)
    # per client address, before credentials are verified: auth_failure_burst failed authentications (401s),
    # refilled at auth_failure_rps; beyond them the address answers 429 (serving.rate_limit). 0 rps: no limit
    auth_failure_rps: float = Field(default=1.0, ge=0)
    auth_failure_burst: float = Field(default=20.0, ge=1)
    # a /readyz answer (a Strong count on Milvus, a ranker load check) is reused for this long
    ready_cache_s: float = Field(default=2.0, ge=0, le=60)
    auth: AuthSettings = AuthSettings()
    recall_k: int = Field(default=200, ge=1, le=2000)  # nearest items to the user vector
    fresh_k: int = Field(default=50, ge=0, le=1000)  # nearest among items created within fresh_window_s
    fresh_window_s: float = Field(default=24 * 3600.0, gt=0)
    # the fresh recall scores the window's newest fresh_exact_max items exactly (their vectors cached in the API
    # process); a filtered approximate search misses most rows of a very selective window on Milvus 2.3
    fresh_exact_max: int = Field(default=20_000, ge=1, le=200_000)
    # the fresh window (ids, times, stacked vectors) and the fallback list are rebuilt at most this often and
    # shared by every request meanwhile (0: per request); a new post reaches the fresh recall that much later
    fresh_cache_s: float = Field(default=1.0, ge=0, le=60)
    new_item_share: float = Field(default=0.2, ge=0, le=1)  # minimum share of new items in the top-k, if recalled
    # list score = (1 - b) * rank percentile by the ranker + b * rank percentile by recall similarity (0: the ranker)
    recall_blend: float = Field(default=0.0, ge=0, le=1)
    history_n: int = Field(default=200, ge=0, le=500)  # engaged items read for the ranker's interest features
    max_k: int = Field(default=100, ge=1, le=1000)
    task_weights: dict[str, float] = Field(default_factory=dict)  # ranking score = sum_t w_t p_t (default: 1 each)
    ab_salt: str = "thaw-ab-1"
    ab_buckets: int = Field(default=100, ge=1, le=10_000)
    variants: tuple[ABVariant, ...] = (ABVariant(name="control"),)
    # a variant names a ranker with no loadable version (not published, or refused by verification with no earlier
    # version loaded): "error" answers 503 naming the model and the command that publishes it; "recall_order"
    # serves that arm in the recall order, saying so in the response ("ranked_by", "degraded") and counting it
    # (thaw_recommend_ranker_fallbacks_total{variant,reason}). The default arm (ranker "none") never needs one.
    missing_ranker: Literal["error", "recall_order"] = "error"
    request_log: Path | None = None  # JSON lines, one per served request (bucket, variant, items); None: logger only


class Settings(BaseSettings):
    """All engine settings. Frozen; build once with :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_prefix="THAW_", env_nested_delimiter="__", frozen=True, extra="ignore"
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    milvus: MilvusSettings = MilvusSettings()
    models: ModelSettings = ModelSettings()
    stream: StreamSettings = StreamSettings()
    media: MediaSettings = MediaSettings()
    stack: StackSettings = StackSettings()
    serve: ServeSettings = ServeSettings()

    def namespaced(self, ns: str) -> Settings:
        """A copy isolated under ``ns``: own topic prefix, consumer group, Milvus collection and Redis keys.

        Used by the demo (one namespace per run) and the tests (one per test); ``ns`` is letters, digits, ``_``.
        """
        if not ns or not ns.replace("_", "").isalnum():
            raise ValueError("a namespace is letters, digits and '_'")
        d = self.model_dump()
        d["kafka"]["topic_prefix"] = f"{ns}."
        d["milvus"]["items_collection"] = f"thaw_{ns}"
        d["redis"]["key_prefix"] = f"thaw:{ns}:"
        d["stream"]["app_id"] = f"thaw-{ns}"
        return type(self).model_validate(d)

    def env(self) -> dict[str, str]:
        """The ``THAW_*`` variables that make another process (a worker) use this namespace."""
        return {
            "THAW_KAFKA__TOPIC_PREFIX": self.kafka.topic_prefix,
            "THAW_MILVUS__ITEMS_COLLECTION": self.milvus.items_collection,
            "THAW_REDIS__KEY_PREFIX": self.redis.key_prefix,
            "THAW_STREAM__APP_ID": self.stream.app_id,
            # the media roots set on this object (with_media_roots), or none: a worker reads file:// media only there
            **({"THAW_MEDIA__FILE_ROOTS": json.dumps([str(p) for p in self.media.file_roots])}
               if self.media.file_roots else {}),
        }

    def with_media_roots(self, *roots: str | Path) -> Settings:
        """A copy whose ``media.file_roots`` also holds ``roots`` (resolved): the demo and the tests publish
        ``file://`` media from their corpus directories, and :meth:`env` hands these roots to the worker."""
        have = list(self.media.file_roots)
        for r in roots:
            p = Path(r).expanduser().resolve()
            if p not in have:
                have.append(p)
        d = self.model_dump()
        d["media"]["file_roots"] = tuple(have)
        return type(self).model_validate(d)


def load_settings(**overrides: object) -> Settings:
    """Build the settings from the environment (``THAW_*``) plus explicit overrides."""
    return Settings(**overrides)  # type: ignore[arg-type]
