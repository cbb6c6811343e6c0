"""Built-in loaders on the real data (ml-100k from the recbole wheel; Last.fm and CiteULike-a from the datasets
folder named by THAW_DATASETS_DIR, in the tests marked ``datasets``)."""

import json
import math

import numpy as np
import pytest

from tests.thaw_cli import thaw
from workloads.datasets import (
    DatasetsDirNotSetError,
    citeulike_to_generic,
    datasets_dir,
    load_citeulike,
    load_lastfm,
    load_movielens_100k,
)
from workloads.splits import default_cold_item_split, predefined_cold_item_split

# The optional datasets come from the folder THAW_DATASETS_DIR names (tests marked ``datasets``, run by
# `make test-datasets`). Missing data fails the test with the path it looked in: it is never skipped.


@pytest.fixture(scope="session")
def lastfm_present() -> None:
    if not (datasets_dir() / "lastfm-hetrec2011" / "user_artists.dat").exists():
        pytest.fail(f"no Last.fm data in {datasets_dir()} (THAW_DATASETS_DIR)", pytrace=False)


@pytest.fixture(scope="session")
def citeulike_present() -> None:
    if not (datasets_dir() / "citeulike-a" / "users.dat").exists():
        pytest.fail(f"no CiteULike-a data in {datasets_dir()} (THAW_DATASETS_DIR)", pytrace=False)


def needs_lastfm(f):  # noqa: ANN001, ANN201 - decorator
    return pytest.mark.datasets(pytest.mark.usefixtures("lastfm_present")(f))


def needs_citeulike(f):  # noqa: ANN001, ANN201 - decorator
    return pytest.mark.datasets(pytest.mark.usefixtures("citeulike_present")(f))


@pytest.fixture(scope="module")
def ml100k():
    return load_movielens_100k()


@pytest.fixture(scope="module")
def lastfm():
    return load_lastfm()


@pytest.fixture(scope="module")
def citeulike_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("thaw-data")


@pytest.fixture(scope="module")
def citeulike(citeulike_dir):
    return load_citeulike(cache_dir=citeulike_dir)


def test_movielens_counts_and_content(ml100k) -> None:
    ds = ml100k
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (943, 1682, 100000)
    assert ds.n_pairs == 100000
    assert ds.user_counts().min() >= 20  # ML-100k keeps users with >= 20 ratings
    assert set(np.unique(ds.weights).tolist()) == {1.0, 2.0, 3.0, 4.0, 5.0}
    assert ds.timestamps is not None and ds.timestamps.dtype == np.int64
    assert 8.7e8 < ds.timestamps.min() < ds.timestamps.max() < 9.0e8  # Sep 1997 - Apr 1998
    assert ds.item_ids[0] == "1" and ds.item_text[0] == "Toy Story (1995)"
    assert ds.item_tags[0] == ["Animation", "Children's", "Comedy"]
    assert ds.item_features["year"][0] == 1995
    assert ds.user_features is not None
    assert ds.user_features["age"][0] == 24 and ds.user_features["gender"][0] == "M"
    assert ds.user_features["occupation"][0] == "technician"
    assert all(len(v) == 943 for v in ds.user_features.values())
    # the first .inter row is user 196, item 242, rating 3
    assert ds.user_ids[ds.users[0]] == "196" and ds.item_ids[ds.items[0]] == "242" and ds.weights[0] == 3


@needs_lastfm
def test_lastfm_counts_and_content(lastfm) -> None:
    ds = lastfm
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (1892, 17632, 92834)
    assert ds.n_pairs == 92834
    plays = ds.meta["plays"]
    assert plays.min() == 1 and plays.max() == 352698
    np.testing.assert_allclose(ds.weights, np.log1p(plays).astype(np.float32))
    assert ds.timestamps is None
    assert ds.user_edges is not None and len(ds.user_edges) == 12717  # 25,434 symmetric rows / 2
    assert np.all(ds.user_edges[:, 0] < ds.user_edges[:, 1])
    assert ds.item_ids[0] == "1" and ds.item_text[0] == "MALICE MIZER"
    assert ds.item_tags[0][:2] == ["j-rock", "visual kei"]
    assert ds.item_tag_counts is not None and ds.item_tag_counts[0][:2] == [5, 3]
    # tags.dat is Latin-1: decoded correctly, not as mojibake
    all_tags = {t for tags in ds.item_tags for t in tags}
    assert "tropicália" in all_tags and not any("Ã" in t for t in all_tags)
    # the tagged-artist table names 390 artist ids absent from artists.dat; their rows are dropped
    assert ds.meta["tag_assignments_dropped_unknown_artist"] > 0
    assert sum(1 for tags in ds.item_tags if tags) == 12133
    assert ds.item_images is not None and ds.item_images[0].endswith(".jpg")


@needs_citeulike
def test_citeulike_counts_and_predefined_split(citeulike) -> None:
    ds = citeulike
    assert (ds.n_users, ds.n_items, ds.n_interactions) == (5551, 16980, 204986)
    assert ds.n_pairs == 204986
    assert ds.timestamps is None and np.all(ds.weights == 1.0)
    # raw ids are the 0-based users.dat line / item indices
    assert ds.user_ids[:3] == ["0", "1", "2"] and ds.item_ids[-1] == "16979"
    sizes = {k: len(v) for k, v in ds.splits.items()}
    assert sizes == {
        "warm_emb": 107418,
        "warm_map": 24699,
        "warm_val": 16427,
        "warm_test": 16482,
        "cold_item_val": 19802,
        "cold_item_test": 20158,
    }
    # the six GAR files partition all pairs
    allrows = np.concatenate(list(ds.splits.values()))
    assert np.array_equal(np.sort(allrows), np.arange(ds.n_interactions))
    sp = predefined_cold_item_split(ds)
    assert len(sp.val_items) == 1698 and len(sp.test_items) == 1698
    assert len(sp.warm_items) == 13584
    assert not np.isin(ds.items[sp.train], sp.cold_items).any()  # cold items: zero training rows
    assert set(sp.extra) == {"warm_val", "warm_test"}
    assert default_cold_item_split(ds).seed is None
    # content: item 0's first tag is tags.dat line 4276 (0-based) = "dissertation"; 3,461 items untagged
    assert len(ds.item_tags[0]) == 17 and ds.item_tags[0][0] == "dissertation"
    assert sum(1 for t in ds.item_tags if not t) == 3461
    assert ds.item_edges is not None and len(ds.item_edges) > 44000
    assert ds.meta["held_out"] is True


@needs_citeulike
def test_citeulike_aldi_has_same_cold_sets(citeulike, citeulike_dir) -> None:
    aldi = load_citeulike(cache_dir=citeulike_dir, split_source="aldi")
    assert set(aldi.splits) == {"warm_emb", "warm_val", "warm_test", "cold_item_val", "cold_item_test"}
    for k in ("cold_item_val", "cold_item_test", "warm_test"):
        assert np.array_equal(aldi.splits[k], citeulike.splits[k])
    assert len(aldi.splits["warm_emb"]) == 132073


@needs_citeulike
def test_citeulike_converter_is_idempotent(citeulike, citeulike_dir) -> None:
    out = citeulike_dir / "citeulike-a-generic-gar"
    files = citeulike_to_generic(out)
    before = files.interactions.stat().st_mtime_ns
    again = citeulike_to_generic(out)
    assert again == files and files.interactions.stat().st_mtime_ns == before
    assert files.interactions.read_text().startswith("user,item\n0,")
    assert files.splits["cold_item_test"].read_text().splitlines()[1] == "619,9085"  # GAR "620,9086" - 1


def test_stats_cli_json(capsys) -> None:
    assert thaw("data", "stats", "--json", "--dataset", "ml-100k") == 0
    rows = json.loads(capsys.readouterr().out)
    assert len(rows) == 1 and rows[0]["name"] == "ml-100k"
    r = rows[0]
    assert (r["users"], r["items"], r["interactions"]) == (943, 1682, 100000)
    assert math.isclose(r["density"], 100000 / (943 * 1682))
    assert r["cold_item_share"] == pytest.approx(0.2, abs=0.001)
    assert r["val_interactions"] + r["test_interactions"] + r["train_interactions"] == 100000


def test_stats_cli_table(capsys) -> None:
    assert thaw("data", "stats", "--dataset", "ml-100k") == 0
    out = capsys.readouterr().out
    assert "ml-100k" in out and "100,000" in out and "cold items" in out


def test_path_resolution_env_overrides(monkeypatch, tmp_path) -> None:
    from workloads.datasets import default_cache_dir, fetch_recbole_wheel

    monkeypatch.setenv("THAW_DATA_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("THAW_DATASETS_DIR", str(tmp_path / "shared"))
    assert default_cache_dir() == tmp_path / "cache"
    assert default_cache_dir(tmp_path / "x") == tmp_path / "x"  # explicit argument wins
    assert datasets_dir() == tmp_path / "shared"
    with pytest.raises(FileNotFoundError):
        fetch_recbole_wheel(download=False)
    monkeypatch.delenv("THAW_DATASETS_DIR")
    # no implicit place: the error says how to get the optional datasets and which variable names them
    with pytest.raises(DatasetsDirNotSetError, match="THAW_DATASETS_DIR=") as err:
        datasets_dir()
    assert "hetrec-2011" in str(err.value) and "MovieLens-100k" in str(err.value)
    assert datasets_dir(tmp_path / "mine") == tmp_path / "mine"
