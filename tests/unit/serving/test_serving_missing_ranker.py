"""The API's answer when an arm's ranker is not published: 503 naming it, or the recall order, visibly and counted.

A real (empty) model directory behind a real :class:`RankerPool`; Redis and Milvus are small in-memory stand-ins
(the integration test ``tests/integration/test_serve_api.py`` runs the same against the real stack).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
from fastapi.testclient import TestClient

from indexing.milvus_items import Hit
from indexing.redis_state import UserState
from infra.settings import ABVariant
from ranking.online.pipeline import RankerPool, Recommender
from tests.unit.serving.helpers import serving, settings

NOW = 1_700_000_000.0


class _Users:
    def request_view(self, space: str, user_id: str, n_engaged: int = 200) -> tuple[Any, list[Any], list[Any],
                                                                                       dict[str, Any]]:
        return UserState(np.array([1.0, 0.0], np.float32), 1.0, NOW, n_events=3), [], [], {}

    def current_space(self) -> str:
        return "text@t"


class _Index:
    name = "thaw_test"

    def search(self, vectors: np.ndarray, k: int, **_: Any) -> list[list[Hit]]:
        return [[Hit(f"i{j}", 0.9 - 0.1 * j, "track", "c", int(NOW * 1000)) for j in range(min(k, 5))]]


@contextmanager
def _client(models_dir: Path, mode: str) -> Iterator[tuple[TestClient, TestClient]]:
    s = settings()
    serve = s.serve.model_copy(update={"variants": (ABVariant(name="control", ranker="deepfm-mmoe"),), "fresh_k": 0,
                                       "missing_ranker": mode})
    rec = Recommender(serve, _Users(), _Index(), "text@t", RankerPool(models_dir),  # type: ignore[arg-type]
                      clock=lambda: NOW)
    with serving(lambda: rec, s.model_copy(update={"serve": serve})) as pair:
        yield pair


def test_error_mode_answers_503_naming_the_model(tmp_path: Path) -> None:
    with _client(tmp_path, "error") as (c, ops):
        r = c.get("/recommend", params={"user_id": "u1", "k": 3})
        assert r.status_code == 503, r.text
        d = r.json()["detail"]
        assert d["error"] == "ranker_not_published" and d["model"] == "deepfm-mmoe" and d["version"] is None
        assert d["variant"] == "control" and d["models_dir"] == str(tmp_path)
        assert d["publish"] == f"thaw train ranker --models-dir {tmp_path}"
        assert 'thaw_api_requests_total{endpoint="/recommend",status="503"} 1.0' in ops.get("/metrics").text


def test_recall_order_mode_answers_200_and_counts_the_fallback(tmp_path: Path) -> None:
    with _client(tmp_path, "recall_order") as (c, ops):
        for _ in range(2):
            r = c.get("/recommend", params={"user_id": "u1", "k": 3})
            assert r.status_code == 200, r.text
            body = r.json()
            assert (body["ranker"], body["ranked_by"], body["degraded"]) == (
                None, "recall_order", "deepfm-mmoe not published")
            assert [it["item_id"] for it in body["items"]] == ["i0", "i1", "i2"]
        text = ops.get("/metrics").text
        assert 'thaw_recommend_ranker_fallbacks_total{reason="not_published",variant="control"} 2.0' in text
