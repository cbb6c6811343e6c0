"""Loading the models the engine serves from the registry: the I/O side of :mod:`streams.cores.space`.

The worker (``streams/app.py``) and ``thaw cf load`` call :func:`load_cf_space` once per (re)load; the space it
returns is pure and is handed to the engine. Every file is read through the registry's checked reads
(:meth:`~encoders.registry.ModelVersion.read_bytes`): what is served is exactly the bytes that matched the
manifest, never a second open of a path a writer could have swapped in between.
"""

from __future__ import annotations

import numpy as np

from encoders.registry import ModelNotFoundError, ModelRegistry, ModelVersion
from ranking.online.projector import CB2CFProjector
from ranking.online.sparse import SparseVectorizer
from streams.cores.space import CFSpace

GROUP_PRIORS = "group_priors.json"


def _vectorizer(v: ModelVersion, file: str) -> SparseVectorizer:
    return SparseVectorizer.from_text(v.read_text(file), f"{v.spec}: {file}")


def group_priors(registry: ModelRegistry, version: str) -> dict[str, np.ndarray]:
    """The group priors beside the user tower of ``version`` (``dssm-user``), checked against its manifest; empty
    when there is no such tower or it has no priors file.

    Raises:
        encoders.registry.ModelIntegrityError: The priors file does not match the manifest's sha256.
    """
    try:
        user = registry.load("dssm-user", version, verify=False)  # the manifest: only the priors file is read
    except ModelNotFoundError:
        return {}
    m = user.manifest
    has = GROUP_PRIORS in m.files if m.files is not None else (user.path / GROUP_PRIORS).is_file()
    if not has:
        return {}
    return {k: np.asarray(x, dtype=np.float32) for k, x in user.read_json(GROUP_PRIORS).items()}


def load_cf_space(registry: ModelRegistry, threads: int = 2, version: str | None = None) -> CFSpace | None:
    """A published CB2CF (``version``, default the current one) as a :class:`CFSpace`, or None when there is none.

    Raises:
        ModelNotFoundError: an explicitly requested version is not published.
        encoders.registry.ModelIntegrityError: a file of the version (or its group priors) does not match its
            manifest.
    """
    try:
        v = registry.load("cb2cf", version)
    except ModelNotFoundError:
        if version is not None:
            raise
        return None
    extra = v.manifest.extra
    words = _vectorizer(v, extra["words"]["file"]) if extra.get("words") else None
    hybrid = _vectorizer(v, extra["hybrid"]["file"]) if extra.get("hybrid") else None
    weight = float(extra["hybrid"]["weight"]) if extra.get("hybrid") else 0.0
    priors = group_priors(registry, v.manifest.version)
    return CFSpace(CB2CFProjector(v, threads=threads), v.manifest.version, priors, words, hybrid, weight)
