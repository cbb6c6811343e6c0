"""Core types and path helpers shared by every dataset loader.

Every loader returns one :class:`InteractionDataset`: a flat, columnar log of
user–item interactions (one row per interaction, with contiguous integer user
and item indices) plus item content and optional side information. Split
builders in :mod:`workloads.splits` and the metrics in :mod:`workloads.metrics`
only depend on this type.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

ENV_DATA_DIR = "THAW_DATA_DIR"
ENV_DATASETS_DIR = "THAW_DATASETS_DIR"


def default_cache_dir(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Resolves the writable cache directory used for downloaded/converted data.

    Args:
        cache_dir: Explicit directory. Wins over everything else when given.

    Returns:
        ``cache_dir`` if given, else ``$THAW_DATA_DIR`` if set, else
        ``~/.cache/thaw/datasets``. The directory is not created here.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get(ENV_DATA_DIR)
    if env:
        return Path(env).expanduser()
    return Path.home() / ".cache" / "thaw" / "datasets"


class DatasetsDirNotSetError(FileNotFoundError):
    """An optional dataset was asked for and no datasets folder is configured."""


DATASETS_HELP = (
    "Last.fm HetRec 2011 and CiteULike-a are optional datasets that Thaw does not ship (licences: Last.fm data is "
    "for non-commercial use only). Put them in one folder: lastfm-hetrec2011/ (the files of "
    "https://grouplens.org/datasets/hetrec-2011/ Last.fm-2k: artists.dat, tags.dat, user_artists.dat, "
    "user_friends.dat, user_taggedartists.dat) and citeulike-a/ (users.dat, item-tag.dat, tags.dat, citations.dat and "
    "the split-gar/ or split-aldi/ cold-start splits), then name it with "
    f"{ENV_DATASETS_DIR}=/path/to/folder. The README's demo and default tests need none of this "
    "(MovieLens-100k comes inside the recbole wheel)."
)


def datasets_dir(explicit: str | os.PathLike[str] | None = None) -> Path:
    """The folder the user named for the optional datasets: ``explicit``, else ``$THAW_DATASETS_DIR``.

    Nothing is read from an implicit place: without either, :class:`DatasetsDirNotSetError` says how to get the
    datasets.
    """
    if explicit is not None:
        return Path(explicit).expanduser()
    env = os.environ.get(ENV_DATASETS_DIR)
    if env:
        return Path(env).expanduser()
    raise DatasetsDirNotSetError(f"no datasets folder is configured. {DATASETS_HELP}")


def datasets_configured() -> bool:
    """True when the user named a datasets folder (``$THAW_DATASETS_DIR``)."""
    return bool(os.environ.get(ENV_DATASETS_DIR))


@dataclass(frozen=True, eq=False)
class InteractionDataset:
    """A user–item interaction log with item content and side information.

    Interactions are stored column-wise: row ``j`` is the interaction of user
    ``users[j]`` with item ``items[j]``, of strength ``weights[j]`` at time
    ``timestamps[j]``. Indices are contiguous (``0 <= users < n_users``,
    ``0 <= items < n_items``) and map back to raw ids via ``user_ids`` and
    ``item_ids``. Rows keep the source file order; duplicate (user, item)
    pairs are kept as separate events if the source has them.

    Attributes:
        name: Short dataset name, e.g. ``"ml-100k"``.
        users: ``int64[n]`` user index of each interaction.
        items: ``int64[n]`` item index of each interaction.
        weights: ``float32[n]`` interaction strength. Its meaning depends on
            the dataset and is documented in ``meta["weight"]``.
        timestamps: ``int64[n]`` Unix seconds of each interaction, or ``None``
            when the source has no per-interaction time.
        n_users: Number of users (may exceed the users seen in ``users``).
        n_items: Number of catalogue items (items with content but no
            interactions count: they are the coldest items of all).
        user_ids: Raw id of each user index.
        item_ids: Raw id of each item index.
        item_text: Free text per item (title, name, ...); ``""`` if none.
        item_tags: Tags/genres per item, most frequent first when counts exist.
        item_tag_counts: Per-item counts aligned with ``item_tags`` (how many
            times the tag was applied), or ``None``.
        item_images: Image path/URL per item (``None`` entries allowed), or
            ``None`` when the dataset has no images at all.
        item_audio: Audio path/URL per item, same conventions as images.
        item_features: Extra per-item columns (``name -> array[n_items]``).
        user_features: Per-user columns (``name -> array[n_users]``), or
            ``None``.
        user_edges: ``int64[E, 2]`` undirected user–user edges (each pair once,
            ``a < b``), e.g. a friendship graph, or ``None``.
        item_edges: ``int64[E, 2]`` undirected item–item edges (each pair
            once, ``a <= b``), e.g. citations, or ``None``.
        splits: Predefined splits shipped with the data, as ``name ->
            int64`` arrays of interaction row indices.
        meta: Free-form provenance/notes (source paths, weight definition,
            licence, data quirks).
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    weights: np.ndarray
    timestamps: np.ndarray | None
    n_users: int
    n_items: int
    user_ids: list[str]
    item_ids: list[str]
    item_text: list[str]
    item_tags: list[list[str]]
    item_tag_counts: list[list[int]] | None = None
    item_images: list[str | None] | None = None
    item_audio: list[str | None] | None = None
    item_features: dict[str, np.ndarray] = field(default_factory=dict)
    user_features: dict[str, np.ndarray] | None = None
    user_edges: np.ndarray | None = None
    item_edges: np.ndarray | None = None
    splits: dict[str, np.ndarray] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        n = len(self.users)
        if len(self.items) != n or len(self.weights) != n:
            raise ValueError("users, items and weights must have the same length")
        if self.timestamps is not None and len(self.timestamps) != n:
            raise ValueError("timestamps must have one entry per interaction")
        if len(self.user_ids) != self.n_users:
            raise ValueError(f"user_ids has {len(self.user_ids)} entries, n_users={self.n_users}")
        for attr in ("item_ids", "item_text", "item_tags"):
            if len(getattr(self, attr)) != self.n_items:
                raise ValueError(f"{attr} has {len(getattr(self, attr))} entries, n_items={self.n_items}")
        if n:
            if self.users.min() < 0 or self.users.max() >= self.n_users:
                raise ValueError("user index out of range")
            if self.items.min() < 0 or self.items.max() >= self.n_items:
                raise ValueError("item index out of range")

    @property
    def n_interactions(self) -> int:
        """Number of interaction rows."""
        return int(len(self.users))

    @property
    def density(self) -> float:
        """Distinct (user, item) pairs divided by ``n_users * n_items``."""
        if self.n_users == 0 or self.n_items == 0:
            return 0.0
        return self.n_pairs / (self.n_users * self.n_items)

    @property
    def n_pairs(self) -> int:
        """Number of distinct (user, item) pairs."""
        return int(np.unique(self.users * np.int64(self.n_items) + self.items).size)

    def item_counts(self) -> np.ndarray:
        """Returns ``int64[n_items]``: interactions per item."""
        return np.bincount(self.items, minlength=self.n_items).astype(np.int64)

    def user_counts(self) -> np.ndarray:
        """Returns ``int64[n_users]``: interactions per user."""
        return np.bincount(self.users, minlength=self.n_users).astype(np.int64)

    def item_document(self, item: int, max_tags: int | None = 20) -> str:
        """Builds one text document for an item from its text and tags.

        Args:
            item: Item index.
            max_tags: Keep at most this many tags (the most frequent first
                when counts are known); ``None`` keeps all.

        Returns:
            ``"<text> | tag1, tag2, ..."``, or just one of the two parts when
            the other is empty.
        """
        text = self.item_text[item].strip()
        tags = self.item_tags[item] if max_tags is None else self.item_tags[item][:max_tags]
        tag_part = ", ".join(tags)
        if text and tag_part:
            return f"{text} | {tag_part}"
        return text or tag_part

    def subset(self, rows: np.ndarray, name: str | None = None) -> InteractionDataset:
        """Returns a copy keeping only some interaction rows.

        Users, items, content and graphs are kept whole so indices stay valid;
        predefined ``splits`` are dropped (their row indices would be stale).

        Args:
            rows: Row indices (int) or a boolean mask over interactions.
            name: Name of the new dataset (defaults to the current one).
        """
        rows = np.asarray(rows)
        if rows.dtype == bool:
            rows = np.flatnonzero(rows)
        return replace(
            self,
            name=name or self.name,
            users=self.users[rows],
            items=self.items[rows],
            weights=self.weights[rows],
            timestamps=None if self.timestamps is None else self.timestamps[rows],
            splits={},
        )

    def summary(self) -> dict[str, Any]:
        """Basic statistics as a JSON-friendly dict."""
        ic = self.item_counts()
        uc = self.user_counts()
        return {
            "name": self.name,
            "users": self.n_users,
            "items": self.n_items,
            "interactions": self.n_interactions,
            "pairs": self.n_pairs,
            "density": self.density,
            "items_without_interactions": int((ic == 0).sum()),
            "users_without_interactions": int((uc == 0).sum()),
            "items_without_content": int(
                sum(1 for t, g in zip(self.item_text, self.item_tags, strict=True) if not t and not g)
            ),
            "has_timestamps": self.timestamps is not None,
            "median_user_interactions": float(np.median(uc)) if len(uc) else 0.0,
            "median_item_interactions": float(np.median(ic)) if len(ic) else 0.0,
            "predefined_splits": {k: int(len(v)) for k, v in self.splits.items()},
        }


def undirected_edges(a: np.ndarray, b: np.ndarray, allow_self: bool = False) -> np.ndarray:
    """Normalises an edge list to unique undirected pairs.

    Args:
        a: Source node indices.
        b: Target node indices.
        allow_self: Keep ``a == b`` loops when True.

    Returns:
        ``int64[E, 2]`` with ``row[0] <= row[1]``, sorted, without duplicates.
    """
    a = np.asarray(a, dtype=np.int64)
    b = np.asarray(b, dtype=np.int64)
    lo = np.minimum(a, b)
    hi = np.maximum(a, b)
    keep = np.ones(len(lo), dtype=bool) if allow_self else lo != hi
    pairs = np.stack([lo[keep], hi[keep]], axis=1)
    if len(pairs) == 0:
        return pairs.reshape(0, 2)
    return np.unique(pairs, axis=0)
