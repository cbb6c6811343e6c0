"""The vector space the engine serves, and how new items and brand-new users get a vector in it.

Two kinds of space:

* the **text space** (``minilm-l6@<v>``, the baseline): an item's vector is its MiniLM ``text`` field; a new
  user's prior is the MiniLM embedding of their declared genres and artists;
* a **CF space** (``cb2cf@<v>``): the collaborative-filtering space of the DSSM twin tower published with the same
  version. A new item's vector is CB2CF's projection of its content fields (every field the featuriser made,
  with its presence mask); a new user's prior is CB2CF's projection of the text of their declared tastes, i.e. the
  CF vector an item described by those genres and artists would get. Warm users and warm items come from the DSSM
  towers (``thaw cf load``).

Vectors of two spaces are never compared: each space has its own Milvus collection
(:func:`indexing.milvus_items.collection_for`) and its own Redis user states (keys carry the space).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from encoders.featurizer import FeatureBatch

FIELD_ALIASES = {"doc": "text"}
"""CB2CF field name -> featuriser field. Offline, the item document (text | tags) field is called ``doc``; the
featuriser's ``text`` field is the same document (:func:`encoders.featurizer.content_document`)."""


@dataclass(frozen=True)
class CFSpace:
    """A published CB2CF version serving as the engine's space.

    Attributes:
        projector: ``ranking.online.projector.CB2CFProjector`` of the version (``fields``, ``dim``, ``project``).
        version: The published version (shared by ``cb2cf``, ``dssm-user`` and ``dssm-item``).
        group_priors: Group key (``gender=f|age=25-34``, ``gender=f``, ``age=25-34``, ``*``) -> mean unit DSSM
            vector of the warm users of that group (``group_priors.json`` of the user tower; may be empty).
    """

    projector: Any
    version: str
    group_priors: dict[str, np.ndarray] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"cb2cf@{self.version}"

    @property
    def dim(self) -> int:
        return int(self.projector.dim)

    def needs(self) -> list[str]:
        """Featuriser fields the model reads (after aliasing)."""
        return [FIELD_ALIASES.get(n, n) for n, _ in self.projector.fields]

    def project(self, feats: FeatureBatch, rows: Sequence[int]) -> np.ndarray:
        """CF vectors (``float32[len(rows), dim]``, unit) of items ``rows`` of a featurised batch.

        A model field the featuriser did not produce (its encoder is not published) is absent for every item; the
        model was trained with field dropout and reads the presence mask.
        """
        idx = np.asarray(rows, dtype=np.int64)
        fields: dict[str, np.ndarray | None] = {}
        present = np.zeros((len(idx), len(self.projector.fields)), dtype=np.float32)
        for k, (name, dim) in enumerate(self.projector.fields):
            src = FIELD_ALIASES.get(name, name)
            if src in feats.names:
                col = feats.names.index(src)
                v = feats.values[src][idx]
                if v.shape[1] != dim:
                    raise ValueError(f"field {src!r} is {v.shape[1]}-d but {self.name} expects {dim}-d for {name!r}")
                fields[name] = v
                present[:, k] = feats.present[idx, col]
            else:
                fields[name] = None
        if not any(v is not None for v in fields.values()):
            raise ValueError(f"{self.name} reads {self.needs()}, none of which the featuriser produces")
        return np.asarray(self.projector.project(fields, present), dtype=np.float32)

    def group_prior(self, gender: str | None, age_bucket: str | None) -> np.ndarray | None:
        """The prior of a brand-new user from their registration's gender and age bucket: the finest published
        group among gender x age, gender, age, everyone; None when no priors were published."""
        g = gender if gender in ("f", "m") else None
        a = age_bucket if age_bucket and age_bucket != "unknown" else None
        keys = ([f"gender={g}|age={a}"] if g and a else []) + ([f"gender={g}"] if g else [])
        keys += ([f"age={a}"] if a else []) + ["*"]
        for k in keys:
            if k in self.group_priors:
                return self.group_priors[k]
        return None

    def project_text(self, text_vectors: np.ndarray) -> np.ndarray:
        """CF vectors of texts alone (MiniLM ``text`` field present, every other field absent)."""
        n = len(text_vectors)
        fb = FeatureBatch(("text",), {"text": np.asarray(text_vectors, dtype=np.float32)},
                          np.ones((n, 1), dtype=bool), {})
        return self.project(fb, list(range(n)))


def load_cf_space(registry: Any, threads: int = 2, version: str | None = None) -> CFSpace | None:
    """A published CB2CF (``version``, default the current one) as a :class:`CFSpace`, or None when there is none.

    Raises:
        ModelNotFoundError: an explicitly requested version is not published.
    """
    import json

    from encoders.registry import ModelNotFoundError
    from ranking.online.projector import CB2CFProjector

    try:
        v = registry.load("cb2cf", version)
    except ModelNotFoundError:
        if version is not None:
            raise
        return None
    priors: dict[str, np.ndarray] = {}
    try:
        f = registry.load("dssm-user", v.manifest.version, verify=False).path / "group_priors.json"
        if f.is_file():
            priors = {k: np.asarray(x, dtype=np.float32) for k, x in json.loads(f.read_text()).items()}
    except ModelNotFoundError:
        pass
    return CFSpace(CB2CFProjector(v, threads=threads), v.manifest.version, priors)
