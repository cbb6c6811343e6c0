import pytest
from pydantic import ValidationError

from infra.settings import Settings, load_settings


def test_env_nested_and_frozen(monkeypatch):
    monkeypatch.setenv("THAW_KAFKA__BOOTSTRAP_SERVERS", "10.1.2.3:9093")
    monkeypatch.setenv("THAW_REDIS__PASSWORD", "hunter2")
    monkeypatch.setenv("THAW_MILVUS__TOKEN", "root:Milvus-secret")
    s = load_settings()
    assert s.kafka.bootstrap_servers == "10.1.2.3:9093" and s.kafka.port == 9093
    assert s.redis.password is not None and s.redis.password.get_secret_value() == "hunter2"
    for text in (repr(s), str(s), s.model_dump_json()):
        assert "hunter2" not in text and "Milvus-secret" not in text
    assert s.redis.client_kwargs()["password"] == "hunter2"
    with pytest.raises(ValidationError):
        s.kafka = s.kafka  # type: ignore[misc]


def test_sasl_config_and_namespace():
    s = Settings.model_validate({"kafka": {"security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN",
                                           "sasl_username": "svc", "sasl_password": "pw"}})
    cfg = s.kafka.kafka_python_config()
    assert cfg["sasl_plain_username"] == "svc" and cfg["sasl_plain_password"] == "pw"
    ns = s.namespaced("run_1")
    assert ns.kafka.topic_prefix == "run_1." and ns.milvus.items_collection == "thaw_run_1"
    assert ns.redis.key_prefix == "thaw:run_1:" and ns.stream.app_id == "thaw-run_1"
    assert ns.kafka.sasl_password is not None and ns.kafka.sasl_password.get_secret_value() == "pw"
    assert ns.env()["THAW_STREAM__APP_ID"] == "thaw-run_1"
    with pytest.raises(ValueError):
        s.namespaced("bad name")


def test_lite_detection():
    assert Settings.model_validate({"milvus": {"uri": "./x.db"}}).milvus.is_lite
    assert not Settings().milvus.is_lite
