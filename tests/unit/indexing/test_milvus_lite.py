"""The items collection on Milvus Lite (the zero-setup backend); the server path is in tests/integration."""

import numpy as np
import pytest

from indexing.milvus_items import ItemIndex, ItemRow
from infra.settings import MilvusSettings


@pytest.fixture
def index(tmp_path):
    ix = ItemIndex(MilvusSettings(uri=str(tmp_path / "lite.db"), items_collection="items_t"), dim=8)
    ix.ensure()
    yield ix
    ix.close()


def _rows(n, seed=0, version="m@1"):
    rng = np.random.default_rng(seed)
    v = rng.normal(size=(n, 8)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, [ItemRow(f"i{i}", v[i], "track" if i % 2 else "moment", f"c{i % 3}", 1000 + i, version)
               for i in range(n)]


def test_upsert_is_idempotent_and_searchable(index):
    v, rows = _rows(50)
    index.upsert(rows)
    index.upsert(rows[:10])
    assert index.count() == 50
    hits = index.search(v[:3], 5)
    assert [h[0].item_id for h in hits] == ["i0", "i1", "i2"]
    assert hits[0][0].score == pytest.approx(1.0, abs=1e-4)


def test_exclude_kinds_lookup_and_newest(index):
    v, rows = _rows(20)
    index.upsert(rows)
    hits = index.search(v[:1], 5, exclude=[["i0"]])[0]
    assert "i0" not in [h.item_id for h in hits] and len(hits) == 5
    tracks = index.search(v[:1], 5, kinds=["track"])[0]
    assert all(h.kind == "track" for h in tracks)
    got = index.get_vectors(["i3", "missing"])
    assert list(got) == ["i3"]
    np.testing.assert_allclose(got["i3"], v[3], atol=1e-6)
    assert [h.item_id for h in index.newest(3)] == ["i19", "i18", "i17"]


def test_wrong_dimension_refused(index, tmp_path):
    with pytest.raises(ValueError, match="dims"):
        index.upsert([ItemRow("x", np.ones(4, np.float32), "track", "c", 0, "m")])


def test_reopen_loads_existing_collection(tmp_path):
    s = MilvusSettings(uri=str(tmp_path / "re.db"), items_collection="items_r")
    ix = ItemIndex(s, dim=8)
    ix.ensure()
    v, rows = _rows(5)
    ix.upsert(rows)
    ix.close()
    again = ItemIndex(s, dim=8)
    assert again.ensure() is False
    assert again.search(v[:1], 1)[0][0].item_id == "i0"
    with pytest.raises(ValueError, match="never mixed"):
        ItemIndex(s, dim=16).ensure()
    again.close()
