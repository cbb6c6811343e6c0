"""What the engine needs of its stores and encoders, as Protocols.

The engine (:class:`streams.engine.Engine`) talks to Redis, Milvus and the encoders only through these; the real
ones are :class:`indexing.redis_state.RedisState`, :class:`indexing.milvus_items.ItemIndex`,
:class:`encoders.text.TextEncoder` and :class:`encoders.featurizer.ContentFeaturizer`, and the unit tests use the
in-memory fakes in ``tests/fakes.py``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

import numpy as np

from encoders.featurizer import ContentInput, FeatureBatch
from indexing.milvus_items import ItemRow
from indexing.redis_state import FenceKey, ItemMeta, PackedStates, UserCommit, UserState


class TextEmbedder(Protocol):
    """A text encoder: ``encode`` maps ``B`` texts to unit vectors ``B x dim``."""

    @property
    def model_version(self) -> str: ...

    @property
    def dim(self) -> int: ...

    def encode(self, texts: Sequence[str]) -> np.ndarray: ...


class Featurizer(Protocol):
    """Every published content encoder over a batch of new posts (fields, presence mask, timings, errors)."""

    def featurize(self, items: Sequence[ContentInput]) -> FeatureBatch: ...


class ItemVectors(Protocol):
    """The items collection of the served space (Milvus): idempotent upserts keyed by item id, vector lookups."""

    @property
    def name(self) -> str: ...

    def upsert(self, rows: Sequence[ItemRow]) -> int: ...

    def get_vectors(self, ids: Sequence[str]) -> dict[str, np.ndarray]: ...


class EngineState(Protocol):
    """The engine's state outside Kafka (Redis): user states with offset fences and parked sets, committed
    atomically per batch (:class:`~indexing.redis_state.UserCommit`, compare-and-set on fences, states and claims:
    :class:`~indexing.redis_state.FenceMovedError` when one moved), the new-item set, item attributes and priors."""

    def shard_of(self, user: str) -> int:
        """The user-events partition ``user``'s keys belong to (``indexing.redis_keys``; LayoutError when the
        layout is not known yet)."""
        ...

    def ensure_layout(self, shards: int, *, legacy_check: Sequence[tuple[str, str]] = ()) -> int: ...

    def read_fences(self, keys: Iterable[FenceKey]) -> dict[FenceKey, int]: ...

    def read_parked(self, offsets: Mapping[FenceKey, Sequence[int]]) -> dict[FenceKey, set[int]]: ...

    def read_states_with_digests(
        self, space: str, users: Sequence[str]
    ) -> tuple[dict[str, UserState | None], dict[str, str]]: ...

    def read_packed_states(self, space: str, users: Sequence[str]) -> tuple[PackedStates, dict[str, str]]: ...

    def commit(self, c: UserCommit) -> None: ...

    def add_fresh(self, space: str, items: Mapping[str, int]) -> None: ...

    def put_item_meta(self, items: Mapping[str, ItemMeta]) -> None: ...

    def put_prior(self, space: str, user: str, state: UserState, profile: Mapping[str, str]) -> bool: ...

    def put_prior_profile_only(self, user: str, profile: Mapping[str, str]) -> None: ...


class PartitionEnds(Protocol):
    """The end offsets (high watermarks) of Kafka partitions, read from the broker within a deadline: the offset the
    next record written to each will take, so no record of a partition has an offset at or past it."""

    def end_offsets(self, partitions: Sequence[tuple[str, int]]) -> dict[tuple[str, int], int]: ...
