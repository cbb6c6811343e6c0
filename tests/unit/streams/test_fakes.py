"""The shared fakes (``tests/fakes.py``) have every member of the Protocols the engine is typed with, and the state
store's commit refuses what the Redis script refuses."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.redis_state import FenceKey, FenceMovedError, UserCommit, UserState
from streams import ports
from tests.fakes import FakeFeaturizer, FakeText, InMemoryEngineState, InMemoryItems, InMemoryPartitionEnds


def _members(proto: type) -> set[str]:
    return {n for n in vars(proto) if not n.startswith("_")}


@pytest.mark.parametrize(("fake", "proto"), [
    (FakeText(), ports.TextEmbedder),
    (FakeFeaturizer(), ports.Featurizer),
    (InMemoryItems(), ports.ItemVectors),
    (InMemoryEngineState(), ports.EngineState),
    (InMemoryPartitionEnds(), ports.PartitionEnds),
])
def test_each_fake_has_its_protocol(fake, proto) -> None:
    missing = {m for m in _members(proto) if not hasattr(fake, m)}
    assert _members(proto) and not missing, missing


F = FenceKey("g", "user.events", 0)


def _commit(fence: int, expected: int, **kw) -> UserCommit:
    st = UserState(np.array([1.0, 0.0], np.float32), 1.0, 0.0, 1)
    return UserCommit(space="s", states={"u": st}, fences={F: fence}, expected_fences={F: expected}, seen={},
                      popularity={0: {"i": 2.0}}, **kw)


def test_the_state_commit_is_compare_and_set() -> None:
    store = InMemoryEngineState()
    store.commit(_commit(3, -1, parked={F: [1]}))
    assert store.fences == {F: 3} and store.parked == {F: {1}} and store.popularity == {("s", "i"): 2.0}
    with pytest.raises(FenceMovedError):  # the fence is 3 now, not -1
        store.commit(_commit(4, -1))
    _, digests = store.read_states_with_digests("s", ["u"])
    with pytest.raises(FenceMovedError):  # the user's state changed since it was read
        store.commit(_commit(4, 3, expected_states={"u": "not-" + digests["u"]}))
    with pytest.raises(FenceMovedError):  # offset 2 was never parked
        store.commit(_commit(4, 3, claims={F: [2]}))
    store.commit(_commit(4, 3, expected_states=digests, claims={F: [1]}))
    assert store.fences == {F: 4} and store.parked == {F: set()} and store.state("s", "u").n_events == 1
    assert store.commit_calls == 5 and len(store.commits) == 2
