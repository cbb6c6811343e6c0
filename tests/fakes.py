"""One in-memory fake of each store and encoder the engine uses (the Protocols of ``streams/ports.py``).

Unit tests build an :class:`~streams.engine.Engine` on these instead of writing their own; a test that needs a
scenario (a commit that loses a race, an item indexed late) subclasses the fake and overrides one method. The
fakes keep the real stores' rules: the state store's ``commit`` is the compare-and-set the Redis script does
(fences, state digests, claims) and applies everything a :class:`~indexing.redis_state.UserCommit` carries.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from encoders.featurizer import ContentInput, FeatureBatch
from indexing.milvus_items import ItemRow
from indexing.redis_keys import shard_of
from indexing.redis_state import (
    FenceKey,
    FenceMovedError,
    ItemMeta,
    LayoutError,
    PackedStates,
    UserCommit,
    UserState,
    pack_state,
    unpack_state,
)


def unit_vector(text: str, dim: int) -> np.ndarray:
    """A deterministic unit vector of ``text`` (``dim`` float32)."""
    seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little")
    v = np.random.default_rng(seed).standard_normal(dim).astype(np.float32)
    return v / np.linalg.norm(v)


class FakeText:
    """A text encoder: the same text always gets the same unit vector."""

    def __init__(self, dim: int = 2, model_version: str = "text-v1") -> None:
        self.dim, self.model_version = dim, model_version
        self.calls: list[list[str]] = []

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        self.calls.append(list(texts))
        return np.stack([unit_vector(t, self.dim) for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


class FakeFeaturizer:
    """Content features: the ``text`` field only, from a :class:`FakeText`."""

    def __init__(self, text: FakeText | None = None) -> None:
        self.text = text or FakeText()

    def featurize(self, items: Sequence[ContentInput]) -> FeatureBatch:
        n = len(items)
        vecs = self.text.encode([it.text for it in items])
        return FeatureBatch(names=("text",), values={"text": vecs}, present=np.ones((n, 1), dtype=bool),
                            model_versions={"text": self.text.model_version})


class InMemoryItems:
    """The items collection: upserts keyed by item id (idempotent), vector lookups of what was upserted.

    ``known``: item ids indexed from the start, each with the vector ``[1, 0, ...]`` (``dim`` wide)."""

    def __init__(self, known: Iterable[str] = (), dim: int = 2, name: str = "thaw_unit") -> None:
        self.name, self.dim = name, dim
        self.rows: dict[str, ItemRow] = {}
        self.vectors: dict[str, np.ndarray] = {i: self._basis() for i in known}
        self.lookups: list[list[str]] = []

    def _basis(self) -> np.ndarray:
        v = np.zeros(self.dim, dtype=np.float32)
        v[0] = 1.0
        return v

    def index(self, item_id: str) -> None:
        """Make ``item_id`` known (as if the content agent indexed it)."""
        self.vectors[item_id] = self._basis()

    def upsert(self, rows: Sequence[ItemRow]) -> int:
        for r in rows:
            self.rows[r.item_id] = r
            self.vectors[r.item_id] = np.asarray(r.vector, dtype=np.float32)
        return len(rows)

    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]:
        self.lookups.append(list(ids))
        return {i: self.vectors[i] for i in ids if i in self.vectors}


class InMemoryEngineState:
    """The engine's Redis state in memory, with the commit's compare-and-set rules.

    Attributes:
        fences: Fence key -> highest applied offset.
        parked: Fence key -> parked source offsets.
        states: (space, user) -> packed state bytes (their sha1 is the digest, as in Redis).
        seen / engaged: user -> [(item, ts)] in commit order; popularity: (space, item) -> weight.
        commits: The commits applied, in order; ``commit_calls`` counts every call (refused ones too).
        fence_reads: The key lists of every ``read_fences`` call.
    """

    def __init__(self, fences: Mapping[FenceKey, int] | None = None, shards: int = 1) -> None:
        # shards: the user-events partitions of the key layout (1: every user on partition 0, like most tests)
        self.shards = shards
        self.layout: int | None = None
        self.fences: dict[FenceKey, int] = dict(fences or {})
        self.parked: dict[FenceKey, set[int]] = {}
        self.states: dict[tuple[str, str], bytes] = {}
        self.seen: dict[str, list[tuple[str, float]]] = {}
        self.engaged: dict[str, list[tuple[str, float]]] = {}
        self.popularity: dict[tuple[str, str], float] = {}
        self.fresh: dict[str, dict[str, int]] = {}
        self.item_meta: dict[str, ItemMeta] = {}
        self.profiles: dict[str, dict[str, str]] = {}
        self.commits: list[UserCommit] = []
        self.commit_calls = 0
        self.fence_reads: list[list[FenceKey]] = []

    def state(self, space: str, user: str) -> UserState | None:
        raw = self.states.get((space, user))
        return unpack_state(raw) if raw else None

    def shard_of(self, user: str) -> int:
        return shard_of(user, self.shards)

    def ensure_layout(self, shards: int, *, legacy_check: Sequence[tuple[str, str]] = ()) -> int:
        if self.layout is None:
            self.layout = shards
        if self.layout != shards:
            raise LayoutError(f"the layout has {self.layout} shards, not {shards}")
        self.shards = shards
        return shards

    def read_fences(self, keys: Iterable[FenceKey]) -> dict[FenceKey, int]:
        keys = list(keys)
        self.fence_reads.append(keys)
        return {k: self.fences.get(k, -1) for k in keys}

    def read_parked(self, offsets: Mapping[FenceKey, Sequence[int]]) -> dict[FenceKey, set[int]]:
        return {k: {o for o in offs if o in self.parked.get(k, set())} for k, offs in offsets.items()}

    def read_states_with_digests(
        self, space: str, users: Sequence[str]
    ) -> tuple[dict[str, UserState | None], dict[str, str]]:
        raw = {u: self.states.get((space, u)) for u in users}
        return ({u: unpack_state(v) if v else None for u, v in raw.items()},
                {u: hashlib.sha1(v, usedforsecurity=False).hexdigest() if v else "" for u, v in raw.items()})

    def read_packed_states(self, space: str, users: Sequence[str]) -> tuple[PackedStates, dict[str, str]]:
        raw = {u: v for u in users if (v := self.states.get((space, u)))}
        return PackedStates(raw), {u: hashlib.sha1(raw[u], usedforsecurity=False).hexdigest() if u in raw else ""
                                   for u in users}

    def commit(self, c: UserCommit) -> None:
        self.commit_calls += 1
        if any(self.fences.get(k, -1) != c.expected_fences.get(k, -1) for k in c.fences):
            raise FenceMovedError("a partition fence moved")
        _, digests = self.read_states_with_digests(c.space, list(c.states))
        if any(c.expected_states.get(u, digests[u]) != digests[u] for u in c.states):
            raise FenceMovedError("a user state moved")
        if any(o not in self.parked.get(k, set()) for k, offs in c.claims.items() for o in offs):
            raise FenceMovedError("a parked record was resolved by another copy")
        self.fences.update(c.fences)
        for k, offs in c.parked.items():
            self.parked.setdefault(k, set()).update(offs)
        for k, offs in c.claims.items():
            self.parked[k] -= set(offs)
        for u, st in c.states.items():
            self.states[(c.space, u)] = pack_state(st)
        for u, items in c.seen.items():
            self.seen.setdefault(u, []).extend(items)
        for u, items in c.engaged.items():
            self.engaged.setdefault(u, []).extend(items)
        for pop in c.popularity.values():
            for item, w in pop.items():
                self.popularity[(c.space, item)] = self.popularity.get((c.space, item), 0.0) + w
        self.commits.append(c)

    def add_fresh(self, space: str, items: Mapping[str, int]) -> None:
        self.fresh.setdefault(space, {}).update(items)

    def put_item_meta(self, items: Mapping[str, ItemMeta]) -> None:
        self.item_meta.update(items)

    def put_prior(self, space: str, user: str, state: UserState, profile: Mapping[str, str]) -> bool:
        if profile:
            self.profiles[user] = dict(profile)
        cur = self.state(space, user)
        if cur is not None and cur.n_events > 0:
            return False
        self.states[(space, user)] = pack_state(state)
        return True

    def put_prior_profile_only(self, user: str, profile: Mapping[str, str]) -> None:
        if profile:
            self.profiles[user] = dict(profile)


class InMemoryPartitionEnds:
    """The broker's end offsets: ``ends`` maps (topic, partition) to the offset the next record written takes
    (a partition not named has none yet: 0). ``calls`` holds the partitions of every read; ``fail`` makes the next
    reads raise it (a broker out of reach)."""

    def __init__(self, ends: Mapping[tuple[str, int], int] | None = None) -> None:
        self.ends: dict[tuple[str, int], int] = dict(ends or {})
        self.calls: list[list[tuple[str, int]]] = []
        self.fail: Exception | None = None

    def end_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]:
        self.calls.append(list(partitions))
        if self.fail is not None:
            raise self.fail
        return {tp: self.ends.get(tp, 0) for tp in partitions}
