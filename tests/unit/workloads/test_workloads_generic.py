"""Generic bring-your-own-data loader on tiny files."""

import json
from pathlib import Path

import numpy as np
import pytest

from workloads.datasets import load_generic


def _w(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def test_headerless_csv_numeric_ids(tmp_path: Path) -> None:
    f = _w(tmp_path / "i.csv", "10,2\n3,2\n10,7\n")
    ds = load_generic(f)
    # numeric ids sort numerically: users [3, 10], items [2, 7]
    assert ds.user_ids == ["3", "10"] and ds.item_ids == ["2", "7"]
    assert ds.users.tolist() == [1, 0, 1] and ds.items.tolist() == [0, 0, 1]
    assert ds.weights.tolist() == [1.0, 1.0, 1.0] and ds.weights.dtype == np.float32
    assert ds.timestamps is None
    assert ds.n_pairs == 3


def test_header_detected_and_reordered_columns(tmp_path: Path) -> None:
    f = _w(tmp_path / "i.csv", "item,user,timestamp,rating\nb,alice,100,4.5\na,bob,50,2\n")
    ds = load_generic(f)
    assert ds.user_ids == ["alice", "bob"] and ds.item_ids == ["a", "b"]
    assert ds.items.tolist() == [1, 0]
    assert ds.weights.tolist() == [4.5, 2.0]
    assert ds.timestamps.tolist() == [100, 50]


def test_header_detected_by_numeric_weight_column(tmp_path: Path) -> None:
    # "w8" is not a known column name, but a non-numeric 3rd field over a numeric one marks a header...
    f = _w(tmp_path / "i.csv", "uid,iid,w8\n1,2,3\n")
    ds = load_generic(f)
    assert ds.n_interactions == 1 and ds.weights.tolist() == [1.0]  # unknown column ignored
    # ...and a header without user/item columns is a clear error
    g = _w(tmp_path / "g.csv", "customer,product,stars\nA,B,5\n")
    with pytest.raises(ValueError, match=r"g\.csv:1: header .* no user/item column"):
        load_generic(g)


def test_recbole_style_typed_header_tabs(tmp_path: Path) -> None:
    f = _w(tmp_path / "x.inter", "user_id:token\titem_id:token\trating:float\ttimestamp:float\n1\t5\t3\t881250949\n")
    ds = load_generic(f)
    assert ds.timestamps.tolist() == [881250949] and ds.weights.tolist() == [3.0]


def test_whitespace_separated_with_comments_and_forced_header(tmp_path: Path) -> None:
    f = _w(tmp_path / "i.txt", "# a comment\n\nu1   i1  2.0 10\nu2 i1 1 20.7\r\n")
    ds = load_generic(f)
    assert ds.n_interactions == 2 and ds.timestamps.tolist() == [10, 20]
    h = _w(tmp_path / "h.txt", "customer product\nA B\n")
    assert load_generic(h, has_header=False).n_interactions == 2
    with pytest.raises(ValueError, match="no user/item column"):
        load_generic(h, has_header=True)


def test_iso_timestamps(tmp_path: Path) -> None:
    f = _w(tmp_path / "i.csv", "user,item,weight,ts\na,x,1,1970-01-01T00:01:00\na,y,1,1970-01-01T00:00:00+00:00\n")
    assert load_generic(f).timestamps.tolist() == [60, 0]


@pytest.mark.parametrize(
    ("text", "pattern"),
    [
        ("user,item\n1,2\n3\n", r"i\.csv:3: expected 2 fields"),
        ("1,2,5\n1,3,abc\n", r"i\.csv:2: weight 'abc' is not a number"),
        ("1,2,5,10\n1,3,1,yesterday\n", r"i\.csv:2: timestamp 'yesterday'"),
        ("1,2,nan\n", r"i\.csv:1: weight 'nan' is not finite"),
        ("1,2\n,4\n", r"i\.csv:2: empty user or item id"),
        ("1,2,3,4,5\n", r"i\.csv:1: expected 2-4 fields"),
        ("# only a comment\n", r"no interactions"),
    ],
)
def test_malformed_interactions(tmp_path: Path, text: str, pattern: str) -> None:
    with pytest.raises(ValueError, match=pattern):
        load_generic(_w(tmp_path / "i.csv", text))


def test_item_content_tags_and_jsonl(tmp_path: Path) -> None:
    inter = _w(tmp_path / "i.csv", "u,i\nu1,a\nu1,b\nu2,b\n")
    tags = _w(tmp_path / "items.tags", "a\trock indie\nb\tjazz\nc\tnew age\tambient\n")
    jl = tmp_path / "items.jsonl"
    jl.write_text(
        "\n".join(
            json.dumps(o)
            for o in [
                {"item": "a", "text": "Alpha band", "tags": ["rock", "live"], "tag_counts": [3, 1]},
                {"item": "d", "text": "Delta", "image": "img/d.png", "audio": "clips/d.ogg"},
            ]
        )
        + "\n"
    )
    ds = load_generic(inter, item_content=[tags, jl])
    # content-only items c and d join the catalogue with zero interactions (true cold items)
    assert ds.item_ids == ["a", "b", "c", "d"] and ds.n_items == 4
    assert ds.item_counts().tolist() == [1, 2, 0, 0]
    assert ds.item_tags[0] == ["rock", "indie", "live"]
    assert ds.item_tag_counts is not None and ds.item_tag_counts[0] == [4, 1, 1]  # 1 from tags file + 3
    assert ds.item_tags[2] == ["new age", "ambient"]  # tab-separated multi-word tags
    assert ds.item_text[0] == "Alpha band" and ds.item_text[1] == ""
    assert ds.item_images == [None, None, None, "img/d.png"]
    assert ds.item_audio is not None and ds.item_audio[3] == "clips/d.ogg"
    assert ds.item_document(0) == "Alpha band | rock, indie, live"
    assert ds.item_document(1) == "jazz"


@pytest.mark.parametrize(
    ("line", "pattern"),
    [
        ('{"item": "a", "tags": "x"\n', r"c\.jsonl:2: invalid JSON"),
        ('{"text": "no id"}\n', r"c\.jsonl:2: missing or invalid 'item'"),
        ('{"item": "a", "tags": [1, 2]}\n', r"c\.jsonl:2: 'tags' must be a list of strings"),
        ('{"item": "a", "tags": ["x"], "tag_counts": [1, 2]}\n', r"c\.jsonl:2: 'tag_counts'"),
        ('["a"]\n', r"c\.jsonl:2: expected a JSON object"),
    ],
)
def test_malformed_jsonl(tmp_path: Path, line: str, pattern: str) -> None:
    inter = _w(tmp_path / "i.csv", "1,2\n")
    content = _w(tmp_path / "c.jsonl", '{"item": "2", "text": "ok"}\n' + line)
    with pytest.raises(ValueError, match=pattern):
        load_generic(inter, item_content=content)


def test_splits_map_to_rows(tmp_path: Path) -> None:
    inter = _w(tmp_path / "i.csv", "user,item\n0,0\n0,1\n1,1\n1,2\n2,2\n0,1\n")
    train = _w(tmp_path / "train.csv", "user,item\n0,0\n1,1\n")
    test = _w(tmp_path / "test.csv", "0 1\n2 2\n")
    ds = load_generic(inter, splits={"train": train, "test": test})
    assert ds.splits["train"].tolist() == [0, 2]
    assert ds.splits["test"].tolist() == [1, 4, 5]  # duplicate pair (0,1) maps to both rows
    bad = _w(tmp_path / "bad.csv", "user,item\n0,0\n2,0\n")
    with pytest.raises(ValueError, match=r"bad\.csv:3: pair \('2', '0'\) is not in the interactions"):
        load_generic(inter, splits={"bad": bad})


def test_splits_only_and_edges(tmp_path: Path) -> None:
    a = _w(tmp_path / "a.csv", "user,item\nx,1\ny,2\n")
    b = _w(tmp_path / "b.csv", "user,item\nx,2\n")
    friends = _w(tmp_path / "friends.csv", "user,friend\nx,y\ny,x\nz,x\n")
    cites = _w(tmp_path / "cites.csv", "1 2\n2 1\n3 3\n")
    ds = load_generic(None, splits={"a": a, "b": b}, user_edges=friends, item_edges=cites)
    assert ds.n_interactions == 3
    assert ds.splits["a"].tolist() == [0, 1] and ds.splits["b"].tolist() == [2]
    assert ds.user_ids == ["x", "y", "z"]  # z only appears in the friend graph
    assert ds.user_edges.tolist() == [[0, 1], [0, 2]]
    assert ds.item_ids == ["1", "2", "3"]
    assert ds.item_edges.tolist() == [[0, 1], [2, 2]]  # self-citation kept for items
    with pytest.raises(ValueError, match="needs an interactions file"):
        load_generic(None)


def test_string_ids_sort_lexicographically(tmp_path: Path) -> None:
    ds = load_generic(_w(tmp_path / "i.csv", "10,b\n9,a\n007,c\n"))
    assert ds.user_ids == ["007", "10", "9"]  # "007" is not canonical -> string order
