"""Loading the models the engine serves from the registry: the I/O side of :mod:`streams.cores.space`.

The worker (``streams/app.py``) and ``thaw cf load`` call :func:`load_cf_space` once per (re)load; the space it
returns is pure and is handed to the engine.
"""

from __future__ import annotations

import json

import numpy as np

from encoders.registry import ModelNotFoundError, ModelRegistry
from ranking.online.projector import CB2CFProjector
from ranking.online.sparse import SparseVectorizer
from streams.cores.space import CFSpace


def load_cf_space(registry: ModelRegistry, threads: int = 2, version: str | None = None) -> CFSpace | None:
    """A published CB2CF (``version``, default the current one) as a :class:`CFSpace`, or None when there is none.

    Raises:
        ModelNotFoundError: an explicitly requested version is not published.
    """
    try:
        v = registry.load("cb2cf", version)
    except ModelNotFoundError:
        if version is not None:
            raise
        return None
    extra = v.manifest.extra
    words = SparseVectorizer.load(v.path / extra["words"]["file"]) if extra.get("words") else None
    hybrid = SparseVectorizer.load(v.path / extra["hybrid"]["file"]) if extra.get("hybrid") else None
    weight = float(extra["hybrid"]["weight"]) if extra.get("hybrid") else 0.0
    priors: dict[str, np.ndarray] = {}
    try:
        f = registry.load("dssm-user", v.manifest.version, verify=False).path / "group_priors.json"
        if f.is_file():
            priors = {k: np.asarray(x, dtype=np.float32) for k, x in json.loads(f.read_text()).items()}
    except ModelNotFoundError:
        pass
    return CFSpace(CB2CFProjector(v, threads=threads), v.manifest.version, priors, words, hybrid, weight)
