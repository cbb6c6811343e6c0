"""The local stack's pieces without the services: polling, state file, process stops, config and port checks."""

from __future__ import annotations

import os
import socket
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from infra.settings import KafkaSettings, MilvusSettings, RedisSettings, Settings, StackSettings
from infra.stack import REDIS, SERVICES, LocalStack, StackError, fetch_kafka, format_statuses, kafka_classpath
from infra.stack import kafka as stack_kafka
from infra.stack.common import ServiceStatus, poll
from infra.stack.state import Launch, StateFile, pid_alive, spawn, terminate


def _free_ports(n: int) -> list[int]:
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    """Settings on ports nothing listens on, under a temporary home."""
    kafka, ctrl, redis, milvus = _free_ports(4)
    return Settings(
        kafka=KafkaSettings(bootstrap_servers=f"127.0.0.1:{kafka}", controller_port=ctrl),
        redis=RedisSettings(port=redis),
        milvus=MilvusSettings(uri=f"http://127.0.0.1:{milvus}"),
        stack=StackSettings(home=tmp_path / "stack", milvus_port=milvus, ready_timeout_s=0.6, stop_timeout_s=5),
    )


@pytest.fixture
def sleeper(tmp_path: Path) -> Iterator[Launch]:
    cmd = [sys.executable, "-c", "import time; time.sleep(60)"]
    launch = spawn(cmd, tmp_path / "sleep.out", "time.sleep", tmp_path)
    yield launch
    if pid_alive(launch.pid):
        terminate(launch.pid, 5, time.monotonic)


# ------------------------------------------------------------------------------------------------- poll


def test_poll_returns_the_first_done_result() -> None:
    answers = iter([1, 2, 3, 4])
    assert poll(lambda: next(answers), lambda v: v >= 3, until=time.monotonic() + 5, clock=time.monotonic,
                every_s=0.01) == 3


def test_poll_gives_up_at_the_deadline_with_the_last_result() -> None:
    now = [0.0]
    calls = []

    def check() -> int:
        calls.append(now[0])
        now[0] += 1.0  # each check takes a second on the fake clock
        return len(calls)

    assert poll(check, lambda v: False, until=3.0, clock=lambda: now[0], every_s=0.0) == 3
    assert calls == [0.0, 1.0, 2.0]


def test_poll_lets_an_exception_through_at_once() -> None:
    calls = []

    def check() -> bool:
        calls.append(1)
        raise StackError("boom")

    with pytest.raises(StackError, match="boom"):
        poll(check, bool, until=time.monotonic() + 5, clock=time.monotonic, every_s=0.01)
    assert len(calls) == 1


# ------------------------------------------------------------------------------------------- state file


def test_state_file_round_trip(tmp_path: Path) -> None:
    state = StateFile(tmp_path)
    assert state.read() == {}
    me = Launch(os.getpid(), "python", tmp_path / "x.log")
    state.record(REDIS, me)
    state.update(REDIS, startup_s=1.5)
    entry = state.read()[REDIS]
    assert entry["pid"] == os.getpid() and entry["startup_s"] == 1.5 and entry["log"] == str(me.log)
    assert state.launch(REDIS) == me
    assert state.managed_pid(REDIS) == os.getpid()  # alive, and "python" is in this process's cmdline
    state.write(REDIS, {**entry, "marker": "not-in-any-cmdline-\u2603"})
    assert state.managed_pid(REDIS) is None
    state.drop(REDIS)
    assert state.read() == {}
    with state.flock():
        assert (tmp_path / ".stack.lock").exists()


def test_terminate_stops_with_sigterm(sleeper: Launch) -> None:
    assert pid_alive(sleeper.pid)
    assert terminate(sleeper.pid, 5, time.monotonic) is False
    assert not pid_alive(sleeper.pid)


def test_terminate_kills_what_ignores_sigterm(tmp_path: Path) -> None:
    code = (
        "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN); print('ready', flush=True); "
        "time.sleep(60)"
    )
    out = tmp_path / "stubborn.out"
    launch = spawn([sys.executable, "-c", code], out, "SIG_IGN", tmp_path)
    poll(lambda: "ready" in out.read_text(), bool, until=time.monotonic() + 20, clock=time.monotonic, every_s=0.05)
    t0 = time.monotonic()
    assert terminate(launch.pid, 0.3, time.monotonic) is True
    assert not pid_alive(launch.pid)
    assert time.monotonic() - t0 < 10


# -------------------------------------------------------------------------------------------- LocalStack


def test_wait_ready_reports_a_process_that_exited(settings: Settings, tmp_path: Path) -> None:
    stack = LocalStack(settings)
    stack.home.mkdir(parents=True)
    launch = spawn([sys.executable, "-c", "print('bye')"], tmp_path / "quick.out", "bye", tmp_path)
    poll(lambda: pid_alive(launch.pid), lambda alive: not alive, until=time.monotonic() + 20, clock=time.monotonic,
         every_s=0.05)
    with pytest.raises(StackError, match="exited during startup"):
        stack._wait_ready(REDIS, launch)


def test_wait_ready_times_out_on_a_silent_process(settings: Settings, sleeper: Launch) -> None:
    stack = LocalStack(settings)
    t0 = time.monotonic()
    sleeper.log.write_text("starting\nstill loading 8475 partitions\n")
    with pytest.raises(StackError, match=r"not healthy after .*thaw stack down") as err:
        stack._wait_ready(REDIS, sleeper)
    assert time.monotonic() - t0 < 10
    assert pid_alive(sleeper.pid)  # left running
    # the error carries the log's last lines: a CI runner shows why the service was not ready, not only where to look
    assert f"last lines of {sleeper.log}" in str(err.value) and "still loading 8475 partitions" in str(err.value)


def test_down_and_status_without_services(settings: Settings) -> None:
    stack = LocalStack(settings)
    down = stack.down()
    assert [s.name for s in down] == list(SERVICES)
    assert all(not s.healthy and not s.managed and s.detail == "not running" for s in down)
    status = stack.status()
    assert all(not s.healthy and "nothing listening" in s.detail for s in status)
    with pytest.raises(StackError, match="unknown services"):
        stack.down(["zookeeper"])


def test_check_config_refuses_what_the_local_stack_cannot_be(settings: Settings) -> None:
    d = settings.model_dump()
    d["kafka"]["security_protocol"] = "SSL"
    with pytest.raises(StackError, match="PLAINTEXT only"):
        LocalStack(Settings.model_validate(d)).up()
    d = settings.model_dump()
    d["redis"]["tls"] = True
    with pytest.raises(StackError, match="no TLS"):
        LocalStack(Settings.model_validate(d)).up()
    d = settings.model_dump()
    d["stack"]["milvus_port"] = settings.stack.milvus_port + 1
    with pytest.raises(StackError, match="THAW_STACK__MILVUS_PORT"):
        LocalStack(Settings.model_validate(d)).up()


def test_a_busy_port_is_named(settings: Settings) -> None:
    with socket.socket() as busy:
        busy.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        busy.bind(("127.0.0.1", settings.redis.port))
        busy.listen()
        with pytest.raises(StackError, match=f"port\\(s\\) {settings.redis.port} needed by redis are in use"):
            LocalStack(settings)._check_ports_free(REDIS, "PING failed")


def test_kafka_properties_and_jars(settings: Settings) -> None:
    props = stack_kafka.server_properties(settings, Path("/data"))
    port, cport = settings.kafka.port, settings.kafka.controller_port
    assert f"listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{cport}\n" in props
    assert "log.dirs=/data\n" in props and "auto.create.topics.enable=false\n" in props
    assert stack_kafka._POM.exists()
    assert kafka_classpath(settings) == str(settings.stack.home / "kafka-libs" / settings.kafka.version / "*")
    libs = settings.stack.home / "kafka-libs" / settings.kafka.version
    libs.mkdir(parents=True)
    (libs / ".complete").write_text("x")
    assert fetch_kafka(settings) == libs  # already fetched: no Maven


def test_format_statuses() -> None:
    table = format_statuses([ServiceStatus("kafka", "127.0.0.1:1", True, 42, True, "ok", 1.25)])
    header, row = table.splitlines()
    assert header.split()[:6] == ["SERVICE", "HEALTHY", "MANAGED", "PID", "STARTUP", "ADDRESS"]
    assert row.split() == ["kafka", "yes", "yes", "42", "1.2s", "127.0.0.1:1", "ok"]
