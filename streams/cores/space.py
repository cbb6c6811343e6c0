"""The vector space the engine serves, and how new items and brand-new users get a vector in it.

Two kinds of space:

* the **text space** (``minilm-l6@<v>``, the baseline): an item's vector is its MiniLM ``text`` field; a new
  user's prior is the MiniLM embedding of their declared genres and artists;
* a **CF space** (``cb2cf@<v>``): the collaborative-filtering space of the DSSM twin tower published with the same
  version. A new item's vector is CB2CF's projection of its content fields (every field the featuriser made,
  with its presence mask); a new user's prior is CB2CF's projection of the text of their declared tastes, i.e. the
  CF vector an item described by those genres and artists would get. Warm users and warm items come from the DSSM
  towers (``thaw cf load``).

A CF space may carry two bag-of-words parts, both published with the CB2CF version and both computed from the
item's text and tags exactly as in training (:mod:`ranking.online.sparse`):

* ``words.json``: the vectorizer of CB2CF's ``words`` input field (BM25 over text and tag words);
* ``hybrid.json`` + ``hybrid_words.json``: the **hybrid** space. An item's vector is ``[cb2cf(content) ;
  sqrt(w) * c]`` where ``c`` is its L2-normalised TF-IDF/BM25 row over a capped vocabulary; a warm user's is
  ``[dssm_user ; sqrt(w) * mean of their training items' rows]``, and events fold item vectors in as in any space.
  The inner product is then ``cf score + w * sparse item-kNN score`` (the kNN over all of the user's items), the
  model :mod:`ranking.evaluation.cold_items` selects on validation as ``hybrid``, served by one Milvus search.

Pure: a :class:`CFSpace` is built from loaded models (``streams.models.load_cf_space`` reads them from the
registry); projecting is arithmetic on arrays.

Vectors of two spaces are never compared: each space has its own Milvus collection
(:func:`indexing.milvus_items.collection_for`) and its own Redis user states (keys carry the space).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

from encoders.featurizer import FeatureBatch
from ranking.online.sparse import WORDS_FIELD, SparseVectorizer, item_tokens

FIELD_ALIASES = {"doc": "text"}
"""CB2CF field name -> featuriser field. Offline, the item document (text | tags) field is called ``doc``; the
featuriser's ``text`` field is the same document (:func:`encoders.featurizer.content_document`)."""


class Projector(Protocol):
    """What :class:`CFSpace` needs of a CB2CF model (``ranking.online.projector.CB2CFProjector`` serves one).

    ``fields``: the model's input fields as (name, width); ``project`` maps the fields (``B x width`` each, None
    when absent for every item) and the presence mask (``B x len(fields)``) to unit CF vectors (``B x dim``)."""

    @property
    def fields(self) -> Sequence[tuple[str, int]]: ...

    @property
    def dim(self) -> int: ...

    def project(self, fields: Mapping[str, np.ndarray | None], present: np.ndarray) -> np.ndarray: ...


class _Tokens:
    """The token lists of a batch's ``(text, tags)`` documents, made once per ``whole_tags`` setting."""

    def __init__(self, docs: Sequence[tuple[str, Sequence[str]]]) -> None:
        self.docs = docs
        self._made: dict[bool, list[list[str]]] = {}

    def __call__(self, whole_tags: bool) -> list[list[str]]:
        if whole_tags not in self._made:
            self._made[whole_tags] = [item_tokens(t, g, whole_tags) for t, g in self.docs]
        return self._made[whole_tags]


@dataclass(frozen=True)
class CFSpace:
    """A published CB2CF version serving as the engine's space.

    Attributes:
        projector: The version's CB2CF model (:class:`Projector`).
        version: The published version (shared by ``cb2cf``, ``dssm-user`` and ``dssm-item``).
        group_priors: Group key (``gender=f|age=25-34``, ``gender=f``, ``age=25-34``, ``*``) -> mean unit DSSM
            vector of the warm users of that group (``group_priors.json`` of the user tower; may be empty).
    """

    projector: Projector
    version: str
    group_priors: dict[str, np.ndarray] = field(default_factory=dict)
    words: SparseVectorizer | None = None
    hybrid: SparseVectorizer | None = None
    hybrid_weight: float = 0.0

    @property
    def name(self) -> str:
        return f"cb2cf@{self.version}"

    @property
    def cf_dim(self) -> int:
        """Width of the CF part (the DSSM space)."""
        return int(self.projector.dim)

    @property
    def dim(self) -> int:
        """Width of the served vectors: the CF part, plus the hybrid's sparse part when there is one."""
        return self.cf_dim + (len(self.hybrid.vocab) if self.hybrid is not None else 0)

    def needs(self) -> list[str]:
        """Featuriser fields the model reads (after aliasing; ``words`` is made here, not by the featuriser)."""
        return [FIELD_ALIASES.get(n, n) for n, _ in self.projector.fields if n != WORDS_FIELD]

    def hybrid_part(self, docs: Sequence[tuple[str, Sequence[str]]], tokens: _Tokens | None = None) -> np.ndarray:
        """``float32[len(docs), V]``: ``sqrt(w)`` times each document's row (zero-width without a hybrid)."""
        if self.hybrid is None:
            return np.zeros((len(docs), 0), dtype=np.float32)
        rows = self.hybrid.transform((tokens or _Tokens(docs))(self.hybrid.whole_tags))
        return (rows.toarray() * np.float32(np.sqrt(self.hybrid_weight))).astype(np.float32)

    def project(
        self, feats: FeatureBatch, rows: Sequence[int], docs: Sequence[tuple[str, Sequence[str]]] | None = None
    ) -> np.ndarray:
        """Served vectors (``float32[len(rows), dim]``) of items ``rows`` of a featurised batch.

        The CF part is unit. A model field the featuriser did not produce (its encoder is not published) is absent
        for every item; the model was trained with field dropout and reads the presence mask. ``docs`` are the
        items' ``(text, tags)`` (one per row), needed by the ``words`` field and the hybrid part.
        """
        idx = np.asarray(rows, dtype=np.int64)
        if docs is not None and len(docs) != len(idx):
            raise ValueError("one (text, tags) per row")
        if docs is None and (self.words is not None or self.hybrid is not None):
            raise ValueError(f"{self.name} reads the items' words: pass their (text, tags)")
        tokens = _Tokens(docs or ())  # each document is tokenised once for the words field and the hybrid part
        fields: dict[str, np.ndarray | None] = {}
        present = np.zeros((len(idx), len(self.projector.fields)), dtype=np.float32)
        for k, (name, dim) in enumerate(self.projector.fields):
            src = FIELD_ALIASES.get(name, name)
            if name == WORDS_FIELD and self.words is not None and docs is not None:
                w = self.words.transform(tokens(self.words.whole_tags))
                fields[name] = w.toarray().astype(np.float32)
                present[:, k] = (w.getnnz(axis=1) > 0).astype(np.float32)
            elif src in feats.names:
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
        cf = np.asarray(self.projector.project(fields, present), dtype=np.float32)
        if self.hybrid is None:
            return cf
        assert docs is not None
        return np.concatenate([cf, self.hybrid_part(docs, tokens)], axis=1)

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

    def project_text(self, text_vectors: np.ndarray, texts: Sequence[str] | None = None) -> np.ndarray:
        """Served vectors of texts alone (MiniLM ``text`` field present, every other feature field absent; the
        words of ``texts`` feed the ``words`` field and the hybrid part)."""
        n = len(text_vectors)
        fb = FeatureBatch(("text",), {"text": np.asarray(text_vectors, dtype=np.float32)},
                          np.ones((n, 1), dtype=bool), {})
        docs = None if texts is None else [(t, ()) for t in texts]
        if docs is None and (self.words is not None or self.hybrid is not None):
            docs = [("", ())] * n
        return self.project(fb, list(range(n)), docs)
