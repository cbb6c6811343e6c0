from streams.cores.dedupe import last_wins, unique


def test_later_version_of_an_item_wins_in_arrival_order_of_the_kept():
    batch = [("it0", "v1"), ("it1", "a"), ("it0", "v2"), ("it2", "b"), ("it1", "a2")]
    assert last_wins(batch, key=lambda x: x[0]) == [("it0", "v2"), ("it2", "b"), ("it1", "a2")]


def test_no_duplicates_keeps_everything_and_empty_is_empty():
    assert last_wins([3, 1, 2], key=lambda x: x) == [3, 1, 2]
    assert last_wins([], key=lambda x: x) == []


def test_unique_keeps_first_seen_order():
    assert unique(["b", "a", "b", "c", "a"]) == ["b", "a", "c"]
    assert unique([]) == []
