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
    assert clients.milvus_options(MilvusSettings(uri="http://h:1")) == {"uri": "http://h:1"}
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
