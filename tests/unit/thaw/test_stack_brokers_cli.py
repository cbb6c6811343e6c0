"""``thaw stack up | status --brokers N`` hands the stack settings with N Kafka nodes (the stack itself is the e2e
test's, ``tests/e2e/test_broker_kill_e2e.py``)."""

from __future__ import annotations

from typing import Any

import pytest

from infra.stack import ServiceStatus
from tests.thaw_cli import thaw


class _Recorder:
    """Stands in for ``LocalStack``: records the settings it was built with, answers healthy."""

    seen: list[Any] = []

    def __init__(self, settings: Any) -> None:
        type(self).seen.append(settings)
        self.settings = settings

    def _statuses(self) -> list[ServiceStatus]:
        return [ServiceStatus("kafka", self.settings.kafka.bootstrap_servers, True, 1, True, "ok", 1.0)]

    def up(self) -> list[ServiceStatus]:
        return self._statuses()

    def status(self) -> list[ServiceStatus]:
        return self._statuses()


@pytest.fixture
def recorder(monkeypatch: pytest.MonkeyPatch) -> type[_Recorder]:
    import infra.stack

    monkeypatch.delenv("THAW_KAFKA__BROKERS", raising=False)
    monkeypatch.delenv("THAW_KAFKA__BOOTSTRAP_SERVERS", raising=False)
    _Recorder.seen = []
    monkeypatch.setattr(infra.stack, "LocalStack", _Recorder)
    return _Recorder


def test_up_with_three_brokers(recorder: type[_Recorder], capsys: pytest.CaptureFixture[str]) -> None:
    assert thaw("stack", "up", "--brokers", "3") == 0
    (s,) = recorder.seen
    assert s.kafka.brokers == 3
    assert s.kafka.bootstrap_servers == "127.0.0.1:19092,127.0.0.1:19094,127.0.0.1:19096"
    assert s.kafka.topic_replication_factor() == 3
    assert "export THAW_KAFKA__BROKERS=3" in capsys.readouterr().out


def test_up_and_status_without_the_flag_keep_one_broker(recorder: type[_Recorder],
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    assert thaw("stack", "up") == 0
    assert thaw("stack", "status", "--brokers", "3") == 0
    one, three = recorder.seen
    assert (one.kafka.brokers, one.kafka.bootstrap_servers) == (1, "127.0.0.1:19092")
    assert three.kafka.brokers == 3
    assert "export" not in capsys.readouterr().out
    with pytest.raises(SystemExit):
        thaw("stack", "up", "--brokers", "0")
