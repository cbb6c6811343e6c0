"""infra.clients builds every client from the settings; secrets stay SecretStr until the client call."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import SecretStr

from infra import clients
from infra.settings import KafkaSettings, MilvusSettings, RedisSettings

SECRET = "hunter2-very-secret"


class _Capture:
    """Stands in for a client class: records the keyword arguments it was called with."""

    calls: list[tuple[tuple[Any, ...], dict[str, Any]]]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        type(self).calls.append((args, kwargs))


def _capture(monkeypatch: pytest.MonkeyPatch, module: Any, name: str) -> type[_Capture]:
    cls = type(name, (_Capture,), {"calls": []})
    monkeypatch.setattr(module, name, cls)
    return cls


def _sasl() -> KafkaSettings:
    return KafkaSettings(
        bootstrap_servers="broker:9093",
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        sasl_username="thaw",
        sasl_password=SecretStr(SECRET),
        client_id="cid",
    )


def test_kafka_options_keep_the_password_secret_and_add_tls() -> None:
    opts = clients.kafka_options(_sasl(), request_timeout_ms=1234)
    assert opts["bootstrap_servers"] == "broker:9093"
    assert opts["security_protocol"] == "SASL_SSL"
    assert opts["client_id"] == "cid"
    assert opts["sasl_mechanism"] == "SCRAM-SHA-512"
    assert opts["sasl_plain_username"] == "thaw"
    assert isinstance(opts["sasl_plain_password"], SecretStr)
    assert opts["ssl_context"] is not None
    assert opts["request_timeout_ms"] == 1234
    assert SECRET not in repr(opts) and SECRET not in str(opts)


def test_plaintext_kafka_options_have_no_sasl_or_tls() -> None:
    opts = clients.kafka_options(KafkaSettings())
    assert set(opts) == {"bootstrap_servers", "security_protocol", "client_id"}


def test_kafka_clients_get_the_revealed_password(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka

    admin = _capture(monkeypatch, kafka, "KafkaAdminClient")
    consumer = _capture(monkeypatch, kafka, "KafkaConsumer")
    producer = _capture(monkeypatch, kafka, "KafkaProducer")
    clients.kafka_admin(_sasl(), request_timeout_ms=5000)
    clients.kafka_consumer(_sasl(), "t1", "t2", group_id="g")
    clients.kafka_producer(_sasl(), acks="all")
    (_, a), = admin.calls
    (c_args, c), = consumer.calls
    (_, p), = producer.calls
    for kw in (a, c, p):
        assert kw["sasl_plain_password"] == SECRET
        assert kw["ssl_context"] is not None
    assert a["request_timeout_ms"] == 5000
    assert c_args == ("t1", "t2") and c["group_id"] == "g"
    assert p["acks"] == "all"


def test_aiokafka_kwargs_are_revealed_for_the_call() -> None:
    kw = clients.aiokafka_kwargs(_sasl(), group_id="g")
    assert kw["sasl_plain_password"] == SECRET
    assert kw["group_id"] == "g"
    assert kw["bootstrap_servers"] == "broker:9093"


def test_redis_client_gets_the_password_only_at_the_call() -> None:
    settings = RedisSettings(host="10.1.2.3", port=7000, db=3, username="u", password=SecretStr(SECRET), tls=True)
    opts = clients.redis_options(settings, socket_timeout=2)
    assert isinstance(opts["password"], SecretStr) and SECRET not in repr(opts)
    client = clients.redis_client(settings, socket_timeout=2)  # no connection until the first command
    try:
        kw = client.connection_pool.connection_kwargs
        assert (kw["host"], kw["port"], kw["db"], kw["username"]) == ("10.1.2.3", 7000, 3, "u")
        assert kw["password"] == SECRET
        assert kw["socket_timeout"] == 2
        assert SECRET not in repr(client)
    finally:
        client.close()


def test_milvus_options_only_carry_what_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    assert clients.milvus_options(MilvusSettings(uri="http://h:1")) == {"uri": "http://h:1", "timeout": 5.0}
    settings = MilvusSettings(uri="http://h:1", token=SecretStr(SECRET), db_name="prod")
    opts = clients.milvus_options(settings, timeout=3.0)
    assert isinstance(opts["token"], SecretStr) and SECRET not in repr(opts)
    assert opts["db_name"] == "prod" and opts["timeout"] == 3.0

    import pymilvus

    milvus = _capture(monkeypatch, pymilvus, "MilvusClient")
    clients.milvus_client(settings, timeout=3.0)
    (_, kw), = milvus.calls
    assert kw == {"uri": "http://h:1", "token": SECRET, "db_name": "prod", "timeout": 3.0}


def test_reveal_leaves_other_values_alone() -> None:
    assert clients.reveal({"a": SecretStr("x"), "b": None, "c": 1}) == {"a": "x", "b": None, "c": 1}


# ------------------------------------------------------------------------------------------------ deadlines


def _deadline_settings() -> tuple[RedisSettings, MilvusSettings, KafkaSettings]:
    redis = RedisSettings(timeout_s=4.5, connect_timeout_s=1.5, retries=2, serving_timeout_s=0.25,
                          serving_connect_timeout_s=0.15, serving_retries=1, health_check_interval_s=7)
    milvus = MilvusSettings(uri="http://h:1", timeout_s=8.0, load_timeout_s=90.0, connect_timeout_s=4.0,
                            serving_timeout_s=0.35, serving_connect_timeout_s=0.75)
    return redis, milvus, KafkaSettings(request_timeout_s=12.5)


def test_redis_clients_get_the_timeouts_of_their_path() -> None:
    from redis.backoff import ExponentialBackoff, NoBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    settings, _, _ = _deadline_settings()
    ingest = clients.redis_client(settings)  # no connection until the first command
    serving = clients.redis_client(settings, serving=True)
    try:
        kw = ingest.connection_pool.connection_kwargs
        assert (kw["socket_timeout"], kw["socket_connect_timeout"], kw["health_check_interval"]) == (4.5, 1.5, 7)
        retry = ingest.get_retry()
        assert retry is not None and retry._retries == 2 and isinstance(retry._backoff, ExponentialBackoff)
        assert {RedisConnectionError, RedisTimeoutError} <= set(retry._supported_errors)

        kw = serving.connection_pool.connection_kwargs
        assert (kw["socket_timeout"], kw["socket_connect_timeout"], kw["health_check_interval"]) == (0.25, 0.15, 7)
        retry = serving.get_retry()
        assert retry is not None and retry._retries == 1 and isinstance(retry._backoff, NoBackoff)
        assert set(retry._supported_errors) == {RedisConnectionError}  # a timeout is never retried when serving
    finally:
        ingest.close()
        serving.close()


def test_the_defaults_bound_one_redis_command_on_a_hung_server_well_below_the_old_110_s() -> None:
    s = RedisSettings()
    assert clients.redis_hung_server_s(s) == 5.0  # one try: the worker retries the step itself
    assert clients.redis_hung_server_s(s, serving=True) == 0.3  # a timeout is never retried when serving
    # retries are squared on a hung server: redis-py retries the new connection's handshake and the command each
    assert clients.redis_hung_server_s(RedisSettings(timeout_s=1.0, retries=2)) == 9 * 1.0 + 8 * 0.5


def test_explicit_redis_options_still_win() -> None:
    settings, _, _ = _deadline_settings()
    client = clients.redis_client(settings, socket_timeout=2)
    try:
        assert client.connection_pool.connection_kwargs["socket_timeout"] == 2
    finally:
        client.close()


def test_redis_state_picks_the_serving_deadlines_when_asked() -> None:
    from indexing.redis_state import RedisState

    settings, _, _ = _deadline_settings()
    worker, api = RedisState(settings), RedisState(settings, serving=True)
    try:
        assert worker.r.connection_pool.connection_kwargs["socket_timeout"] == 4.5
        assert api.r.connection_pool.connection_kwargs["socket_timeout"] == 0.25
    finally:
        worker.r.close()
        api.r.close()


def test_milvus_clients_connect_within_their_path_deadline(monkeypatch: pytest.MonkeyPatch) -> None:
    import pymilvus

    _, settings, _ = _deadline_settings()
    assert clients.milvus_deadlines(settings) == clients.MilvusDeadlines(call_s=8.0, load_s=90.0, connect_s=4.0)
    # the serving path never waits longer for a load than for any call: the worker loads collections
    assert clients.milvus_deadlines(settings, serving=True) == clients.MilvusDeadlines(0.35, 0.35, 0.75)
    milvus = _capture(monkeypatch, pymilvus, "MilvusClient")
    clients.milvus_client(settings)
    clients.milvus_client(settings, serving=True)
    (_, ingest), (_, serving) = milvus.calls
    assert ingest["timeout"] == 4.0 and serving["timeout"] == 0.75


def test_kafka_admin_requests_time_out_from_the_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    import kafka

    _, _, settings = _deadline_settings()
    admin = _capture(monkeypatch, kafka, "KafkaAdminClient")
    clients.kafka_admin(settings)
    clients.kafka_admin(settings, request_timeout_ms=1000)
    (_, default), (_, explicit) = admin.calls
    assert default["request_timeout_ms"] == 12_500 and explicit["request_timeout_ms"] == 1000
