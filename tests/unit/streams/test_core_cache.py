from cachetools import LRUCache

from streams.cores.cache import split


def test_split_into_hits_and_misses_in_order():
    c: LRUCache[str, str] = LRUCache(maxsize=10)
    c["x"] = "vx"
    c["z"] = "vz"
    hit, missing = split(c, ["w", "x", "y", "z"])
    assert hit == {"x": "vx", "z": "vz"}
    assert missing == ["w", "y"]


def test_hits_become_the_most_recent():
    c: LRUCache[str, int] = LRUCache(maxsize=2)
    c["a"] = 1
    c["b"] = 2
    split(c, ["a"])  # a is now the most recent
    c["c"] = 3
    assert "b" not in c and c["a"] == 1 and c["c"] == 3
