"""What the worker retries (infrastructure errors) and what it isolates as poison records (everything else), and
the jittered backoff of the retries. No services."""

from __future__ import annotations

import socket

import grpc
import pytest
import redis.exceptions as rx
from aiokafka.errors import KafkaConnectionError, RequestTimedOutError
from kafka.errors import BrokerNotAvailableError, KafkaTimeoutError
from pymilvus.exceptions import DataNotMatchException, MilvusException, MilvusUnavailableException, ParamError
from tenacity import RetryCallState, Retrying

from indexing.redis_state import FenceMovedError
from streams.cores.retry import SINK_BACKOFF, SINK_MAX_DELAY_S, SINK_WAIT, error_name, is_transient


class _Rpc(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode) -> None:
        self._code = code

    def code(self) -> grpc.StatusCode:
        return self._code


def _chained(outer: Exception, cause: Exception) -> Exception:
    try:
        try:
            raise cause
        except Exception as c:
            raise outer from c
    except Exception as e:
        return e


TRANSIENT = {
    "builtin ConnectionError": ConnectionError("reset"),
    "connection refused": ConnectionRefusedError(111, "refused"),
    "builtin TimeoutError": TimeoutError(),
    "broken pipe": BrokenPipeError(32, "Broken pipe"),
    "dns failure": socket.gaierror(-2, "Name or service not known"),
    "redis connection": rx.ConnectionError("Error 111 connecting to 127.0.0.1:6379"),
    "redis timeout": rx.TimeoutError("Timeout reading from socket"),
    "redis loading": rx.BusyLoadingError("Redis is loading the dataset in memory"),
    "redis auth": rx.AuthenticationError("invalid password"),
    "redis read-only replica": rx.ReadOnlyError("You can't write against a read only replica."),
    "redis oom": rx.OutOfMemoryError("command not allowed when used memory > 'maxmemory'"),
    "redis MISCONF reply": rx.ResponseError("MISCONF Redis is configured to save RDB snapshots, but it's failing"),
    "redis BUSY reply": rx.ResponseError("BUSY Redis is busy running a script."),
    "redis cluster down": rx.ClusterDownError("CLUSTERDOWN The cluster is down"),
    "milvus unavailable": MilvusUnavailableException(message="server unavailable"),
    "milvus gave up on UNAVAILABLE": MilvusException(grpc.StatusCode.UNAVAILABLE, "Retry run out of 75 retry times"),
    "milvus rate limit": MilvusException(code=8, message="rate limit exceeded"),
    "milvus collection not loaded": MilvusException(code=101, message="collection not loaded"),
    # the local Milvus shutting down: its proxy cannot reach its query node (seen by the nemesis harness)
    "milvus component unreachable": MilvusException(code=65535, message="empty grpc client: failed to connect "
                                                    "127.0.0.1:29544, reason: connection error: desc = \"transport: "
                                                    "error while dialing: connect: connection refused\""),
    "grpc unavailable": _Rpc(grpc.StatusCode.UNAVAILABLE),
    "grpc deadline": _Rpc(grpc.StatusCode.DEADLINE_EXCEEDED),
    "grpc future timeout": grpc.FutureTimeoutError(),
    "aiokafka connection": KafkaConnectionError("Unable to bootstrap"),
    "aiokafka request timed out": RequestTimedOutError(),
    "kafka-python broker not available": BrokerNotAvailableError(),
    "kafka-python timeout": KafkaTimeoutError(),
    "fence race": FenceMovedError("moved"),
    "milvus wrapping a connection error": _chained(MilvusException(message="Unexpected error"), ConnectionError()),
}

POISON = {
    "a bug": ValueError("could not broadcast input array from shape (3,) into shape (4,)"),
    "a missing key": KeyError("genre"),
    "an onnx runtime refusal": RuntimeError("[ONNXRuntimeError] : 2 : INVALID_ARGUMENT : Got invalid dimensions"),
    "an index error": IndexError("index 7 is out of bounds"),
    # what the local Milvus 2.3.5 answers to a 128-character id of 2-byte characters (VARCHAR(128) counts bytes)
    "milvus invalid parameter": MilvusException(code=1100, message="the length (256) of 0th string exceeds max "
                                                "length (128): invalid parameter"),
    "milvus dimension mismatch": ParamError(message="the dim (3) of field data(vector) is not equal to schema dim"),
    "milvus data mismatch": DataNotMatchException(message="The data doesn't match with schema fields"),
    "milvus unexpected": MilvusException(message="Unexpected error, message=<list index out of range>"),
    "grpc invalid argument": _Rpc(grpc.StatusCode.INVALID_ARGUMENT),
    "redis data error": rx.DataError("Invalid input of type: 'NoneType'"),
    "redis wrong arguments": rx.ResponseError("ERR wrong number of arguments for 'zadd' command"),
    "a path that is not there": FileNotFoundError(2, "No such file", "/media/x.png"),
    "arithmetic": ZeroDivisionError("division by zero"),
    "a bug while handling a bug": _chained(TypeError("bad"), KeyError("x")),
}


@pytest.mark.parametrize("exc", TRANSIENT.values(), ids=TRANSIENT.keys())
def test_infrastructure_errors_are_retried(exc):
    assert is_transient(exc)


@pytest.mark.parametrize("exc", POISON.values(), ids=POISON.keys())
def test_other_errors_are_the_records_own(exc):
    assert not is_transient(exc)


def test_a_cycle_in_the_exception_chain_ends():
    a, b = ValueError("a"), KeyError("b")
    a.__context__, b.__context__ = b, a
    assert not is_transient(a)


def _wait(strategy, attempt):
    state = RetryCallState(Retrying(), None, (), {})
    state.attempt_number = attempt
    return strategy(state)


def test_sink_wait_is_jittered_under_the_doubling_ceiling():
    for attempt in range(1, 15):
        ceiling = _wait(SINK_BACKOFF, attempt)
        waits = [_wait(SINK_WAIT, attempt) for _ in range(200)]
        assert all(ceiling / 2 - 1e-9 <= w <= ceiling + 1e-9 for w in waits), attempt
        assert max(waits) - min(waits) > ceiling / 10  # really spread, not a fixed delay
    assert max(_wait(SINK_WAIT, 100) for _ in range(200)) <= SINK_MAX_DELAY_S


def test_error_names_say_which_library_raised():
    assert error_name(ValueError()) == "ValueError"
    assert error_name(ConnectionError()) == "ConnectionError"
    assert error_name(rx.ConnectionError()) == "redis.ConnectionError"
    assert error_name(MilvusException(code=1100, message="x")) == "pymilvus.MilvusException"
    assert error_name(KafkaConnectionError()) == "aiokafka.KafkaConnectionError"
