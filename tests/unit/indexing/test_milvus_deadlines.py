"""Every Milvus call of the items index carries its path's deadline (pymilvus waits forever without one).

The index runs on a real Milvus Lite client; a thin recorder in front of it notes the ``timeout`` of each call. That
a deadline really ends a call to a hung server is ``tests/integration/test_deadlines.py`` (a frozen proxy)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from indexing import milvus_items
from indexing.milvus_items import ItemIndex, ItemRow
from infra import clients
from infra.settings import MilvusSettings

#: client methods that send nothing to the server
LOCAL = {"create_schema", "prepare_index_params", "close"}
#: calls that may wait for a collection to load
LOADING = {"load_collection", "create_collection"}


class Recorder:
    """A pymilvus client that notes each method call's name and ``timeout`` before making it."""

    def __init__(self, real: Any) -> None:
        self._real = real
        self.calls: list[tuple[str, float | None]] = []

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._real, name)
        if not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append((name, kwargs.get("timeout")))
            return attr(*args, **kwargs)

        return call


@pytest.fixture
def recorders(monkeypatch: pytest.MonkeyPatch) -> list[Recorder]:
    made: list[Recorder] = []
    real = clients.milvus_client

    def recording(settings: MilvusSettings, **kwargs: Any) -> Recorder:
        made.append(Recorder(real(settings, **kwargs)))
        return made[-1]

    monkeypatch.setattr(milvus_items.clients, "milvus_client", recording)
    return made


def _rows(n: int) -> tuple[np.ndarray, list[ItemRow]]:
    rng = np.random.default_rng(0)
    v = rng.normal(size=(n, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, [ItemRow(f"i{i}", v[i], "track", "c", 1000 + i, "m@1") for i in range(n)]


def _exercise(ix: ItemIndex) -> None:
    """Every method of the index that talks to Milvus."""
    v, rows = _rows(12)
    ix.ensure()
    ix.upsert(rows)
    assert ix.search(v[:2], 3, exclude=[["i0"], []], kinds=["track"], created_after_ms=0)[1][0].item_id == "i1"
    assert set(ix.get_vectors(["i1", "i2", "nope"])) == {"i1", "i2"}
    assert len(ix.get_rows(["i3"])) == 1
    assert ix.newest(2)[0].item_id == "i11"
    assert ix.exists() and ix.count() == 12
    ix.delete(["i4"])
    ix.drop()
    ix.close()


@pytest.mark.parametrize("serving", [False, True], ids=["ingest", "serving"])
def test_every_index_call_carries_the_deadline_of_its_path(tmp_path, recorders, serving):
    settings = MilvusSettings(uri=str(tmp_path / "lite.db"), items_collection="items_d", timeout_s=7.0,
                              load_timeout_s=70.0, serving_timeout_s=0.9)
    ix = ItemIndex(settings, dim=8, serving=serving)
    _exercise(ix)
    (rec,) = recorders
    rpcs = [(name, t) for name, t in rec.calls if name not in LOCAL]
    names = {name for name, _ in rpcs}
    assert {"has_collection", "create_collection", "load_collection", "upsert", "flush", "search", "query", "get",
            "delete", "drop_collection"} <= names, names
    call_s, load_s = (0.9, 0.9) if serving else (7.0, 70.0)
    for name, t in rpcs:
        assert t == (load_s if name in LOADING else call_s), (name, t)
