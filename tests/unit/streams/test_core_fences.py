from indexing.redis_state import FenceKey
from streams.cores.fences import fence_keys, split_by_fence
from streams.engine import Record

T = "user.events"
R = "user.events.retry"


def _r(topic, part, off):
    return Record(topic, part, off, b"k", b"{}", 0)


def test_keys_per_topic_partition_for_the_group():
    keys = fence_keys("g1", [_r(T, 0, 5), _r(T, 0, 6), _r(T, 1, 2), _r(R, 0, 0)])
    assert keys == {(T, 0): FenceKey("g1", T, 0), (T, 1): FenceKey("g1", T, 1), (R, 0): FenceKey("g1", R, 0)}


def test_records_at_or_below_the_fence_are_skipped():
    recs = [_r(T, 0, 4), _r(T, 0, 5), _r(T, 0, 6), _r(T, 1, 0), _r(T, 0, 8), _r(T, 1, 1)]
    keys = fence_keys("g", recs)
    p0, p1 = keys[(T, 0)], keys[(T, 1)]
    split = split_by_fence(recs, keys, {p0: 5, p1: -1})
    assert [(r.partition, r.offset) for r in split.fresh] == [(0, 6), (1, 0), (0, 8), (1, 1)]
    assert split.skipped == 2
    # each touched fence moves to the highest fresh offset; the commit expects the fences it read
    assert split.advance == {p0: 8, p1: 1}
    assert split.expected == {p0: 5, p1: -1}


def test_fully_applied_batch_touches_no_fence():
    recs = [_r(T, 0, 1), _r(T, 0, 2)]
    keys = fence_keys("g", recs)
    split = split_by_fence(recs, keys, {keys[(T, 0)]: 2})
    assert split.fresh == [] and split.skipped == 2
    assert split.advance == {} and split.expected == {}


def test_out_of_order_offsets_advance_to_the_maximum():
    recs = [_r(T, 0, 9), _r(T, 0, 7)]
    keys = fence_keys("g", recs)
    split = split_by_fence(recs, keys, {keys[(T, 0)]: -1})
    assert split.advance == {keys[(T, 0)]: 9} and len(split.fresh) == 2


def test_fences_are_per_group():
    recs = [_r(T, 0, 3)]
    mine, other = fence_keys("blue", recs), fence_keys("green", recs)
    assert mine[(T, 0)] != other[(T, 0)]
    applied = {mine[(T, 0)]: 3, other[(T, 0)]: -1}
    assert split_by_fence(recs, mine, applied).skipped == 1
    assert split_by_fence(recs, other, applied).skipped == 0
