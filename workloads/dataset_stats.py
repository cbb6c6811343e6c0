"""Per-dataset statistics (``thaw data stats``): size, density and the default cold-item split's shares."""

from __future__ import annotations

import time
from typing import Any

from workloads.datasets import load_dataset
from workloads.splits import default_cold_item_split


def dataset_stats(name: str, seed: int = 0) -> dict[str, Any]:
    """Loads one dataset and returns its stats and default cold-item split shares.

    Args:
        name: Dataset name from ``DATASETS``.
        seed: Seed of the default split (ignored for predefined splits).
    """
    t0 = time.perf_counter()
    ds = load_dataset(name)
    load_s = time.perf_counter() - t0
    split = default_cold_item_split(ds, seed=seed)
    stats = ds.summary()
    stats.update(
        {
            "load_seconds": round(load_s, 3),
            "split": "predefined" if split.seed is None else f"random items 8:1:1 seed={seed}",
            "cold_items": int(len(split.cold_items)),
            "cold_item_share": len(split.cold_items) / ds.n_items,
            "cold_interaction_share": split.cold_interaction_share,
            "train_interactions": int(len(split.train)),
            "val_interactions": int(len(split.val)),
            "test_interactions": int(len(split.test)),
        }
    )
    return stats
