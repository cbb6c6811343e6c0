"""Sparse bag-of-words item vectors (TF-IDF or BM25 over tag and text words) and the item-kNN scores built on them.

This is the strongest simple content model for cold items on catalogues whose content is user-written tags: a new
item's score for a user is how close its words are to the words of the items the user consumed, keeping every tag's
identity (a dense sentence encoder squeezes them together). It is used twice:

* as the baseline every learned cold-item model is reported beside (:mod:`ranking.evaluation.cold_items`);
* as one half of the served hybrid (:mod:`ranking.online.hybrid`): the worker vectorises every new item with the
  exported :class:`SparseVectorizer`, and recall reranks its pool by the fused score.

Weighting (both rows are L2-normalised, so the dot product is a cosine):

* ``tfidf``: ``(1 + log tf) * idf``, ``idf = log((1 + N) / (1 + df)) + 1`` (the smoothed form of Salton & Buckley's
  TF-IDF, "Term-weighting approaches in automatic text retrieval", IP&M 1988).
* ``bm25``: ``idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len / avglen))`` with the Robertson–Spärck Jones
  ``idf = log(1 + (N - df + 0.5) / (df + 0.5))`` (Robertson & Zaragoza, "The Probabilistic Relevance Framework:
  BM25 and Beyond", FnTIR 2009).

Tokens: lower-cased word runs of the item text and of each tag (``words``), and each whole tag as one token
(``tags``, prefixed ``#``) so that multi-word tags keep their identity too. Statistics (vocabulary, ``df``, average
length) come from the items the vectorizer is fitted on (the warm catalogue at training time); words never seen there
are dropped, which loses nothing for item-kNN since they cannot match a warm item.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy import sparse

WORDS_FIELD = "words"
"""Name of the bag-of-words content field (CB2CF input; an item's BM25 row over its text and tag words)."""
Weighting = Literal["tfidf", "bm25"]
WEIGHTINGS: tuple[Weighting, ...] = ("tfidf", "bm25")
_WORD = re.compile(r"[^\W_]+", re.UNICODE)
MAX_TOKENS_PER_ITEM = 4096
"""Tokens read per item (an untrusted item cannot make vectorising unbounded)."""


def item_tokens(text: str, tags: Sequence[str], whole_tags: bool = True) -> list[str]:
    """The tokens of one item: words of its text and tags, plus ``#tag`` per whole tag (bounded, lower-case)."""
    out: list[str] = []
    out.extend(w.lower() for w in _WORD.findall(text[: 16 * MAX_TOKENS_PER_ITEM]))
    for t in tags[:MAX_TOKENS_PER_ITEM]:
        t = t.strip().lower()
        if not t:
            continue
        words = _WORD.findall(t)
        out.extend(words)
        if whole_tags and len(words) > 1:
            out.append("#" + " ".join(words))
        if len(out) >= MAX_TOKENS_PER_ITEM:
            break
    return out[:MAX_TOKENS_PER_ITEM]


@dataclass
class SparseVectorizer:
    """Fitted vocabulary and statistics; turns item token lists into L2-normalised sparse rows.

    Attributes:
        weighting: ``tfidf`` or ``bm25``.
        vocab: token -> column.
        df: ``int64[V]`` document frequency of each column among the fitted items.
        n_docs: Items fitted on.
        avg_len: Mean token count of the fitted items (BM25 length normalisation).
        k1, b: BM25 parameters.
        whole_tags: Whether whole multi-word tags are tokens too.
    """

    weighting: Weighting
    vocab: dict[str, int]
    df: np.ndarray
    n_docs: int
    avg_len: float
    k1: float = 1.2
    b: float = 0.75
    whole_tags: bool = True

    @classmethod
    def fit(
        cls,
        docs: Sequence[Sequence[str]],
        weighting: Weighting = "bm25",
        min_df: int = 1,
        max_features: int | None = None,
        k1: float = 1.2,
        b: float = 0.75,
        whole_tags: bool = True,
    ) -> SparseVectorizer:
        """Fits on token lists (one per item; see :func:`item_tokens`).

        Args:
            docs: Token lists of the items to fit on.
            weighting: ``tfidf`` or ``bm25``.
            min_df: Tokens in fewer items are not columns.
            max_features: Keep only this many columns, the most frequent tokens (ties by token); ``None``: all.
            k1, b: BM25 parameters.
            whole_tags: Recorded for :meth:`vectorize` (whether ``docs`` were made with whole-tag tokens).
        """
        if weighting not in WEIGHTINGS:
            raise ValueError(f"unknown weighting {weighting!r}; known: {WEIGHTINGS}")
        counts: dict[str, int] = {}
        total = 0
        for d in docs:
            total += len(d)
            for t in set(d):
                counts[t] = counts.get(t, 0) + 1
        kept = [t for t, c in counts.items() if c >= min_df]
        if max_features is not None and len(kept) > max_features:
            kept = sorted(kept, key=lambda t: (-counts[t], t))[:max_features]
        kept.sort()
        vocab = {t: j for j, t in enumerate(kept)}
        df = np.array([counts[t] for t in kept], dtype=np.int64)
        n = max(len(docs), 1)
        return cls(weighting, vocab, df, len(docs), total / n, k1, b, whole_tags)

    @property
    def idf(self) -> np.ndarray:
        return self._idf(self.df.astype(np.float64))

    def _idf(self, df: np.ndarray) -> np.ndarray:
        n = float(self.n_docs)
        if self.weighting == "bm25":
            return np.log1p((n - df + 0.5) / (df + 0.5))
        return np.log((1.0 + n) / (1.0 + df)) + 1.0

    def _weight(self, tf: int, idf: float, length: int) -> float:
        if self.weighting == "bm25":
            norm = self.k1 * (1.0 - self.b + self.b * length / max(self.avg_len, 1e-9))
            return float(idf * tf * (self.k1 + 1.0) / (tf + norm))
        return float((1.0 + math.log(tf)) * idf)

    def transform(self, docs: Sequence[Sequence[str]]) -> sparse.csr_matrix:
        """``float32[len(docs), V]`` CSR, rows L2-normalised (rows without known tokens are empty)."""
        idf = self.idf
        idf_unseen = float(self._idf(np.zeros(1))[0])
        indptr = [0]
        indices: list[int] = []
        data: list[float] = []
        for d in docs:
            tf: dict[int, int] = {}
            oov: dict[str, int] = {}
            for t in d:
                j = self.vocab.get(t)
                if j is not None:
                    tf[j] = tf.get(j, 0) + 1
                else:
                    oov[t] = oov.get(t, 0) + 1
            cols = sorted(tf)
            w = [self._weight(tf[j], idf[j], len(d)) for j in cols]
            # words unseen at fit time are maximally rare: no column (they match no fitted item) but they stay in
            # the row's norm, so an item mostly made of new words is not scored as if it were only its known ones
            unseen = [self._weight(c, idf_unseen, len(d)) for c in oov.values()]
            s = math.sqrt(sum(x * x for x in w) + sum(x * x for x in unseen)) or 1.0
            indices.extend(cols)
            data.extend(x / s for x in w)
            indptr.append(len(indices))
        return sparse.csr_matrix(
            (np.asarray(data, np.float32), np.asarray(indices, np.int64), np.asarray(indptr, np.int64)),
            shape=(len(docs), len(self.vocab)),
        )

    def vectorize(self, text: str, tags: Sequence[str]) -> dict[int, float]:
        """One item's row as ``{column: weight}`` (what the worker stores per new item)."""
        row = self.transform([item_tokens(text, tags, self.whole_tags)])
        return {int(j): float(v) for j, v in zip(row.indices, row.data, strict=True)}

    # ------------------------------------------------------------------------------------------- persistence

    def save(self, path: str | Path) -> None:
        """Writes the vectorizer as one JSON document (vocabulary in column order)."""
        tokens = [""] * len(self.vocab)
        for t, j in self.vocab.items():
            tokens[j] = t
        doc = {
            "format": "thaw-sparse-vectorizer/1",
            "weighting": self.weighting,
            "tokens": tokens,
            "df": self.df.tolist(),
            "n_docs": self.n_docs,
            "avg_len": self.avg_len,
            "k1": self.k1,
            "b": self.b,
            "whole_tags": self.whole_tags,
        }
        Path(path).write_text(json.dumps(doc, ensure_ascii=False), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> SparseVectorizer:
        return cls.from_text(Path(path).read_text(encoding="utf-8"), str(path))

    @classmethod
    def from_text(cls, text: str, what: str = "sparse vectorizer") -> SparseVectorizer:
        """The vectorizer from the text of the JSON document :meth:`save` writes (``what`` names it in errors): the
        serving side reads that text from a model version's verified bytes."""
        doc = json.loads(text)
        if not isinstance(doc, dict) or doc.get("format") != "thaw-sparse-vectorizer/1":
            raise ValueError(f"{what}: not a sparse vectorizer file")
        tokens = doc["tokens"]
        return cls(
            doc["weighting"], {t: j for j, t in enumerate(tokens)}, np.asarray(doc["df"], np.int64),
            int(doc["n_docs"]), float(doc["avg_len"]), float(doc["k1"]), float(doc["b"]), bool(doc["whole_tags"]),
        )


def topk_mean(sims: np.ndarray, k: int | None) -> np.ndarray:
    """Row-wise mean of the ``k`` largest values of ``sims`` (``I x H``); all of them when ``k`` is None or ``>= H``."""
    h = sims.shape[1]
    if h == 0:
        return np.zeros(sims.shape[0], np.float32)
    if k is None or h <= k:
        return sims.mean(axis=1).astype(np.float32)
    return np.partition(sims, h - k, axis=1)[:, h - k :].mean(axis=1).astype(np.float32)


def knn_scores(candidates: sparse.csr_matrix, history: sparse.csr_matrix, k: int | None) -> np.ndarray:
    """``float32[I]``: each candidate's mean cosine to its ``k`` most similar history items (0 without history)."""
    if history.shape[0] == 0:
        return np.zeros(candidates.shape[0], np.float32)
    sims = (candidates @ history.T).toarray()
    return topk_mean(sims, k)
