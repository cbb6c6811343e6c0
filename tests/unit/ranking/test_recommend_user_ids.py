"""``Recommender.recommend`` takes the user ids the stream takes (the wire contract's check: NFC, at most 128 UTF-8
bytes, no whitespace or control characters) and serves a decomposed id as its NFC form: the user the worker wrote.
In-memory stand-ins for Redis and Milvus; no services."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from indexing.milvus_items import Hit
from indexing.redis_state import UserState
from infra.settings import ABVariant, ServeSettings
from ranking.online.pipeline import (
    MAX_RAW_ID_CHARS,
    USER_ID_RULE,
    RankerPool,
    Recommender,
    UnknownUserIdError,
    checked_user_id,
)

NOW = 1_796_000_000.0


class _Users:
    """One user's state, keyed by the id as stored (the worker stores the NFC form)."""

    def __init__(self, stored: str) -> None:
        self.stored = stored
        self.asked: list[str] = []

    def request_view(self, space: str, user_id: str, n_engaged: int = 200) -> tuple[Any, list[Any], list[Any],
                                                                                       dict[str, Any]]:
        self.asked.append(user_id)
        if user_id != self.stored:
            return None, [], [], {}
        return UserState(np.array([1.0, 0.0], np.float32), 1.0, NOW, n_events=3), [], [], {}

    def item_meta(self, ids: list[str]) -> dict[str, Any]:
        return {}


class _Index:
    def search(self, vectors: np.ndarray, k: int, **_: Any) -> list[list[Hit]]:
        return [[Hit("i0", 0.9, "track", "c", int(NOW * 1000) - 86_400_000 * 30)]]


def _recommender(users: _Users) -> Recommender:
    serve = ServeSettings(variants=(ABVariant(name="recall", ranker="none"),), fresh_k=0)
    return Recommender(serve, users, _Index(), "text@t", RankerPool(Path("/nonexistent")),  # type: ignore[arg-type]
                       clock=lambda: NOW)


def test_a_decomposed_id_is_the_nfc_user() -> None:
    users = _Users("jos\u00e9")
    out = _recommender(users).recommend("jose\u0301", 1)
    assert out.user_id == "jos\u00e9" and users.asked == ["jos\u00e9"]
    assert out.recall_source == "vector"  # the stored user's state was found


REFUSED = ["", "\u20ac" * 43, "\u20ac" * 100, "a b", "a\u2028b", "x" * (MAX_RAW_ID_CHARS + 1)]


@pytest.mark.parametrize("user_id", REFUSED,
                         ids=["empty", "129-bytes", "300-bytes", "space", "line-separator", "too-long-raw"])
def test_an_id_the_stream_refuses_is_refused_before_any_read(user_id: str) -> None:
    users = _Users("u1")
    with pytest.raises(UnknownUserIdError) as info:
        _recommender(users).recommend(user_id, 1)
    assert str(info.value) == USER_ID_RULE and users.asked == []


def test_the_byte_bound_is_the_contracts() -> None:
    assert checked_user_id("\u20ac" * 42) == "\u20ac" * 42  # 126 bytes
    assert checked_user_id("e\u0301" * 64) == "\u00e9" * 64  # 192 bytes raw, 128 once composed
    with pytest.raises(UnknownUserIdError):
        checked_user_id("e\u0301" * 65)  # 130 bytes once composed
