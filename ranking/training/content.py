"""Item content as named feature fields, and the MiniLM text fields of an :class:`InteractionDataset`.

For now the content of an item is the MiniLM embedding (384-d, unit norm) of its document
(``InteractionDataset.item_document``: ``"<text> | tag, tag, ..."``). Optional extra text fields embed the text and
the tags separately. The multimodal encoders (audio, image-text) will plug in as further fields of
:class:`ContentFields`; every consumer (CB2CF, DropoutNet, content-kNN) takes any number of fields.

Embeddings are cached on disk under ``<cache>/features/<model>@<version>/<sha>.npy`` keyed by the model's sha256 and
the exact documents, so re-running an evaluation does not re-encode.
"""

from __future__ import annotations

import hashlib
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from scipy import sparse

from ranking.modules.fields import FieldSpec
from ranking.online.sparse import WORDS_FIELD, SparseVectorizer, Weighting, item_tokens
from workloads.datasets.base import InteractionDataset

TEXT_FIELDS = ("doc", "text", "tags")
"""Text fields :func:`text_fields` can build: ``doc`` = text + tags, ``text`` alone, ``tags`` alone."""


@dataclass(frozen=True, eq=False)
class ContentFields:
    """Per-item content as named fixed-width vectors with presence flags.

    Attributes:
        names: Field names, in model input order.
        values: Per field, ``float32[n_items, d_f]`` (rows of absent items are zeros and never read as content);
            a bag-of-words field (``words``) is a CSR matrix, densified per batch.
        present: ``bool[n_items, F]``; False where the item has no content for that field.
        source: Per field, how it was made (encoder name@version and what text), for model manifests.
    """

    names: tuple[str, ...]
    values: tuple[np.ndarray | sparse.csr_matrix, ...]
    present: np.ndarray
    source: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if len(self.names) != len(self.values) or self.present.shape != (self.n_items, len(self.names)):
            raise ValueError("names, values and present disagree")
        for v in self.values:
            if v.ndim != 2 or v.shape[0] != self.n_items:
                raise ValueError("every field needs one row per item")

    @property
    def n_items(self) -> int:
        return int(self.values[0].shape[0]) if self.values else 0

    @property
    def specs(self) -> tuple[FieldSpec, ...]:
        """One :class:`FieldSpec` per field (the model input layout)."""
        return tuple(FieldSpec(n, int(v.shape[1])) for n, v in zip(self.names, self.values, strict=True))

    def select(self, names: Sequence[str]) -> ContentFields:
        """A view with only the named fields, in the given order."""
        idx = [self.names.index(n) for n in names]
        src = {n: self.source[n] for n in names if n in self.source}
        return ContentFields(tuple(names), tuple(self.values[k] for k in idx), self.present[:, idx], src)

    def tensors(self, items: np.ndarray) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Model inputs for ``items``: per field ``B x d_f`` float32 tensors and the ``B x F`` presence mask."""
        return (
            [torch.from_numpy(_dense_rows(v, items)) for v in self.values],
            torch.from_numpy(self.present[items].astype(np.float32)),
        )

    def rows(self, items: np.ndarray) -> dict[str, np.ndarray]:
        """``name -> float32[len(items), d_f]`` dense rows of every field (what a projector is fed)."""
        return {n: _dense_rows(v, items) for n, v in zip(self.names, self.values, strict=True)}

    def merge(self, other: ContentFields) -> ContentFields:
        """These fields followed by ``other``'s (same items, distinct names)."""
        if other.n_items != self.n_items or set(self.names) & set(other.names):
            raise ValueError("can only merge fields of the same items with distinct names")
        return ContentFields(self.names + other.names, self.values + other.values,
                             np.concatenate([self.present, other.present], axis=1), {**self.source, **other.source})

    def concatenated(self, normalise: bool = True) -> np.ndarray:
        """``float32[n_items, sum d_f]``: present dense fields side by side (each unit-normalised when
        ``normalise``), absent ones zero; the whole row is then unit-normalised (rows without any content stay
        zero). Bag-of-words fields are left out (their kNN is :mod:`ranking.online.sparse`)."""
        parts = []
        for k, v in enumerate(self.values):
            if sparse.issparse(v):
                continue
            x = v.astype(np.float32, copy=True)
            if normalise:
                x /= np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
            x[~self.present[:, k]] = 0.0
            parts.append(x)
        out = np.concatenate(parts, axis=1)
        out /= np.maximum(np.linalg.norm(out, axis=1, keepdims=True), 1e-12)
        return out


def _dense_rows(v: np.ndarray | sparse.csr_matrix, items: np.ndarray) -> np.ndarray:
    if sparse.issparse(v):
        return np.asarray(v[items].toarray(), dtype=np.float32)
    return np.ascontiguousarray(v[items])


def published_tokens(ds: InteractionDataset) -> list[list[str]]:
    """Every item's tokens (:func:`ranking.online.sparse.item_tokens`) from its content as a ``content.new`` event
    carries it (:func:`workloads.replay.published_content`), so a served model sees what it was trained on."""
    from contracts.ids import published_content

    return [item_tokens(*published_content(ds.item_text[i], ds.item_tags[i])) for i in range(ds.n_items)]




def sparse_item_rows(
    ds: InteractionDataset,
    fit_items: np.ndarray,
    weighting: Weighting,
    max_features: int | None = None,
    published: bool = False,
    min_df: int = 1,
) -> tuple[sparse.csr_matrix, SparseVectorizer]:
    """``float32[n_items, V]`` TF-IDF/BM25 rows of every item and their vectorizer, fitted on ``fit_items`` (the
    warm items) with at most ``max_features`` words in at least ``min_df`` fitted items. ``published``: from the
    content as a ``content.new`` event carries it (what a served model sees) instead of everything the dataset has
    (what a baseline may use)."""
    if published:
        docs = published_tokens(ds)
    else:
        docs = [item_tokens(ds.item_text[i], ds.item_tags[i]) for i in range(ds.n_items)]
    vec = SparseVectorizer.fit([docs[i] for i in fit_items], weighting=weighting, min_df=min_df,
                               max_features=max_features)
    return vec.transform(docs), vec


def words_field(
    ds: InteractionDataset,
    fit_items: np.ndarray,
    weighting: Weighting = "bm25",
    min_df: int = 2,
    max_features: int | None = 50_000,
) -> tuple[ContentFields, SparseVectorizer]:
    """The ``words`` field of every item, the vectorizer fitted on ``fit_items`` (the warm items only).

    CB2CF reads it through a learned linear projection (one embedding per word, weighted by BM25), which keeps the
    identity of every tag that a sentence encoder blurs. The vectorizer is published with the model; the worker
    vectorises a new item's text and tags with it (:meth:`ranking.online.sparse.SparseVectorizer.vectorize`).

    Args:
        ds: The dataset.
        fit_items: Items whose words make the vocabulary and statistics.
        weighting: ``bm25`` or ``tfidf``.
        min_df: Words in fewer fitted items are not columns (a word of one item cannot generalise).
        max_features: Vocabulary cap (most frequent words).

    Returns:
        ``(content, vectorizer)``.
    """
    rows, vec = sparse_item_rows(ds, fit_items, weighting, max_features, published=True, min_df=min_df)
    present = np.asarray(rows.getnnz(axis=1) > 0)[:, None]
    src = {WORDS_FIELD: f"{weighting} over text and tag words, {len(vec.vocab)} words (min_df {min_df}) fitted on "
           f"{len(fit_items)} warm items"}
    return ContentFields((WORDS_FIELD,), (rows,), present, src), vec


Encode = Callable[[Sequence[str]], np.ndarray]


def field_documents(ds: InteractionDataset, field: str, max_tags: int | None = 20) -> list[str]:
    """The string per item that a text field embeds (``""`` = the item has no content for this field)."""
    if field == "doc":
        return [ds.item_document(i, max_tags=max_tags) for i in range(ds.n_items)]
    if field == "text":
        return [t.strip() for t in ds.item_text]
    if field == "tags":
        return [", ".join(t if max_tags is None else t[:max_tags]) for t in ds.item_tags]
    raise ValueError(f"unknown text field {field!r}; known: {TEXT_FIELDS}")


def default_feature_cache() -> Path:
    """``$THAW_FEATURE_CACHE`` or ``~/.cache/thaw/features``."""
    env = os.environ.get("THAW_FEATURE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "thaw" / "features"


def _cached_encode(docs: list[str], encode: Encode, key: str, cache_dir: Path | None) -> np.ndarray:
    """Encodes the non-empty documents (each distinct text once), caching the matrix by content hash."""
    h = hashlib.sha256(key.encode())
    for d in docs:
        h.update(d.encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
    path = None if cache_dir is None else cache_dir / f"{h.hexdigest()[:32]}.npy"
    if path is not None and path.is_file():
        return np.load(path)
    uniq = sorted({d for d in docs if d})
    emb = encode(uniq) if uniq else np.zeros((0, 1), dtype=np.float32)
    dim = emb.shape[1] if len(uniq) else 1
    row = {d: k for k, d in enumerate(uniq)}
    out = np.zeros((len(docs), dim), dtype=np.float32)
    for i, d in enumerate(docs):
        if d:
            out[i] = emb[row[d]]
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".{os.getpid()}.tmp.npy")
        np.save(tmp, out)
        tmp.replace(path)
    return out


def text_fields(
    ds: InteractionDataset,
    encode: Encode,
    fields: Sequence[str] = ("doc",),
    model_key: str = "minilm",
    cache_dir: Path | None = None,
    max_tags: int | None = 20,
) -> tuple[ContentFields, float]:
    """Embeds each item's text fields.

    Args:
        ds: The dataset (content of every catalogue item is embedded, cold ones included).
        encode: ``texts -> float32[N, D]`` (e.g. ``TextEncoder.encode``).
        fields: Any of :data:`TEXT_FIELDS`.
        model_key: Identifies the encoder in the cache key (e.g. ``"minilm-l6@1:<sha256>"``).
        cache_dir: Embedding cache folder, or ``None`` for no caching.
        max_tags: Tags kept per item (most frequent first).

    Returns:
        ``(content, seconds)``: the fields and the wall time spent (encoding or loading the cache).
    """
    t0 = time.perf_counter()
    values, present = [], []
    for f in fields:
        docs = field_documents(ds, f, max_tags=max_tags)
        values.append(_cached_encode(docs, encode, f"{model_key}|{f}|{max_tags}", cache_dir))
        present.append(np.array([bool(d) for d in docs]))
    what = {"doc": f"item_document (text | tags, <= {max_tags} tags)", "text": "item text", "tags": "tags joined"}
    source = {f: f"{model_key.split(':')[0]}: {what.get(f, f)}" for f in fields}
    content = ContentFields(tuple(fields), tuple(values), np.stack(present, axis=1), source)
    return content, time.perf_counter() - t0


def minilm_text_fields(
    ds: InteractionDataset,
    fields: Sequence[str] = ("doc",),
    models_dir: Path | None = None,
    cache_dir: Path | None = None,
    threads: int = 2,
) -> tuple[ContentFields, float]:
    """:func:`text_fields` with the exported MiniLM (``encoders.text``), exporting it first if needed.

    Args:
        ds: The dataset.
        fields: Text fields to build.
        models_dir: The versioned model directory (default ``~/.cache/thaw/models``).
        cache_dir: Embedding cache (default :func:`default_feature_cache`).
        threads: ONNX Runtime intra-op threads.
    """
    from encoders.registry import ModelRegistry
    from encoders.text import TextEncoder, ensure_minilm

    root = Path(models_dir) if models_dir is not None else Path.home() / ".cache" / "thaw" / "models"
    version = ensure_minilm(ModelRegistry(root))
    m = version.manifest
    key = f"{m.name}@{m.version}:{m.sha256}"
    cache = cache_dir if cache_dir is not None else default_feature_cache() / f"{m.name}@{m.version}"
    holder: dict[str, TextEncoder] = {}

    def encode(texts: Sequence[str]) -> np.ndarray:
        if "enc" not in holder:
            holder["enc"] = TextEncoder(version, threads=threads, micro_batch=32)
        return holder["enc"].encode(texts)

    return text_fields(ds, encode, fields=fields, model_key=key, cache_dir=cache)


def featurizer_fields(
    texts: Sequence[str],
    tags: Sequence[Sequence[str]],
    kinds: Sequence[str],
    images: Sequence[str | None],
    audio: Sequence[str | None],
    models_dir: Path,
    threads: int = 2,
    batch: int = 32,
    max_audio_s: float = 600.0,
) -> tuple[ContentFields, dict[str, object]]:
    """Every item's content fields through the stream's featuriser (``encoders.featurizer``); one entry per item in
    every sequence: the ``text`` field from the item's document as the stream builds it (text | tags, or the kind
    when both are empty), ``audio_clip`` / ``audio_mae`` from its audio file and ``image`` / ``image_text`` from its
    image file (local paths, decoded as the stream decodes media; None: the item has none), each field only where a
    published encoder exists.

    Returns ``(content, info)``; ``info``: fields, encoders missing, model versions, seconds, share of items that
    have each field."""
    from encoders.featurizer import ContentFeaturizer, ContentInput, content_document
    from encoders.media import decode_audio, decode_image
    from encoders.registry import ModelRegistry

    fz = ContentFeaturizer.from_registry(ModelRegistry(Path(models_dir)), threads=threads)
    names = fz.fields
    dims = fz.dims()
    n = len(texts)
    values = {f: np.zeros((n, dims[f]), dtype=np.float32) for f in names}
    present = np.zeros((n, len(names)), dtype=bool)
    t0 = time.perf_counter()
    for s in range(0, n, batch):
        inputs = []
        for i in range(s, min(n, s + batch)):
            doc = content_document(texts[i], tags[i], fallback=kinds[i].replace("_", " "))
            img_path, aud_path = images[i], audio[i]
            img = decode_image(Path(img_path).read_bytes()) if img_path else None
            aud = decode_audio(Path(aud_path).read_bytes(), max_audio_s) if aud_path else None
            inputs.append(ContentInput(doc, img, aud))
        fb = fz.featurize(inputs)
        for f in names:
            values[f][s : s + len(inputs)] = fb.values[f]
        present[s : s + len(inputs)] = fb.present
    info: dict[str, object] = {
        "fields": list(names), "missing": list(fz.missing), "models": dict(fz.model_versions),
        "seconds": round(time.perf_counter() - t0, 1),
        "present_share": {f: round(float(present[:, k].mean()), 3) for k, f in enumerate(names)},
    }
    source = {f: fz.model_versions[f] for f in names}
    return ContentFields(tuple(names), tuple(values[f] for f in names), present, source), info
