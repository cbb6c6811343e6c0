"""Cold-item evaluation harness: CB2CF and the hybrid against the baselines, on any generic-format dataset.

Protocols (``ColdEvalConfig.protocol``, :meth:`workloads.splits.ColdItemSplit.eval_task`). Items are split into warm
(training) and cold (validation, test) sets with *all* their interactions; models train on the warm interactions
only.

* ``standard`` (Heater / DropoutNet style): every test user (a user with at least one interaction on a test cold
  item) ranks the test cold items only. It measures how well a model orders new items among themselves, which is
  what the stream's freshness slot does.
* ``gar`` (GAR, SIGIR'22 / ALDI, SIGIR'23): the candidates are every item without training interactions, validation
  and test cold items together; a test user's validation positives are excluded (known). More candidates, and the
  numbers are comparable with those papers' cold-item setting. ``max_users`` keeps the first N users by index.

Precision/Recall/NDCG/Hit@K are averaged over the evaluated users (:mod:`workloads.metrics`). Validation cold items
are used for every choice the harness makes (early stopping of CB2CF and DropoutNet, the CB2CF objective, every
kNN's neighbourhood size, the hybrid's weighting and weight, what is served); test items are scored once, at the
end, with the chosen settings. The DSSM (the CF space) early-stops on a hold-out of its own warm pairs, not on cold
items. Every interaction counts as a positive unless ``min_weight`` is given.

Models (``models=``):

* ``random``: uniform random scores.
* ``popularity``: training interaction count. Cold items have none, so it degenerates to ``random`` (identical
  numbers by construction); reported to make that explicit.
* ``content-knn``: mean dense (MiniLM) content cosine of the item to the user's warm items (all, or the ``k`` most
  similar; ``k`` chosen on validation among ``knn_ks``).
* ``tfidf-knn`` / ``bm25-knn``: the same item-kNN over sparse TF-IDF / BM25 rows of the items' text and tag words
  (:mod:`ranking.online.sparse`; every word of the dataset's content, vocabulary fitted on the warm items; ``k``
  chosen on validation among ``sparse_ks``). The one that wins on validation is ``selected.best_sparse_knn``: the
  strongest simple baseline every learned model is read against.
* ``dropoutnet``: DropoutNet-style model over [DSSM vector, content] with input dropout on the CF part.
* ``cb2cf``: CB2CF trained on warm items to land on the DSSM item vectors; one entry per objective
  (``cb2cf-regression``, ``cb2cf-contrastive``, ``cb2cf-combined``) plus ``cb2cf`` = the objective that won on
  validation. Its content is the MiniLM fields plus, with ``words`` (default), the ``words`` field: the item's BM25
  row over the words of its published text and tags, read through a learned per-word projection
  (:func:`ranking.training.content.words_field`).
* ``hybrid``: a weighted hybrid (Burke, "Hybrid Recommender Systems: Survey and Experiments", UMUAI 2002) of the
  selected CB2CF and the sparse item-kNN over *all* of the user's warm items:
  ``u . cb2cf(i) + w * mean_j cos(c_i, c_j)``, the weighting (TF-IDF or BM25) and ``w`` chosen on validation
  among ``hybrid_weights``. With every neighbour the kNN is linear in the user's mean row, so the whole score is one
  inner product of ``[u ; sqrt(w) * mean row]`` and ``[cb2cf(i) ; sqrt(w) * c_i]``: that is how the stream serves it
  (:mod:`streams.cores.space`), the rows over a vocabulary capped at ``hybrid_max_features`` words, built from the
  content a ``content.new`` event carries.
* ``selected.served``: whichever of ``cb2cf`` and ``hybrid`` won on validation; what ``--publish-dir`` publishes.

Run (from code: :func:`evaluate_cold_items`)::

    thaw evaluate cold-items --dataset ml-100k --json
    thaw evaluate cold-items --interactions TRAIN.csv --item-content items.jsonl \\
        [--cold-test TEST.csv] [--cold-val VAL.csv] [--k 20] [--seed 0] [--out report.json] [--json]

With split files, ``--interactions`` holds the training interactions (rows on cold test/validation items, if any,
are dropped and counted in the report); without ``--cold-val`` a seeded 10% of the warm items is held out as
validation cold items; without ``--cold-test`` the harness makes the seeded 8:1:1 item split itself (or uses the
dataset's predefined split, e.g. CiteULike-a's). CiteULike-a is a held-out benchmark: the harness only ever selects on
validation, and its defaults were chosen on ml-100k / Last.fm validation.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from ranking.evaluation.baselines import (
    content_knn_scorer,
    popularity_scorer,
    random_scorer,
    sparse_knn_scorer,
)
from ranking.evaluation.personal import candidate_groups, personal_report
from ranking.models.cb2cf import OBJECTIVES, CB2CFConfig, Objective
from ranking.models.dropoutnet import DropoutNetConfig
from ranking.models.dssm import DSSM, DSSMConfig, categorical_user_features
from ranking.online.sparse import Weighting
from ranking.training.cb2cf import cb2cf_score, train_cb2cf
from ranking.training.common import Interactions, ScoreFn, evaluate_task
from ranking.training.content import WORDS_FIELD, ContentFields, minilm_text_fields, sparse_item_rows, words_field
from ranking.training.dropoutnet import train_dropoutnet
from ranking.training.dssm import train_dssm
from workloads.datasets import InteractionDataset, load_dataset, load_generic
from workloads.metrics import RankingMetrics
from workloads.splits import ColdItemSplit, ColdProtocol, EvalTask, default_cold_item_split

logger = logging.getLogger(__name__)

MODELS: tuple[str, ...] = (
    "random", "popularity", "content-knn", "tfidf-knn", "bm25-knn", "dropoutnet", "cb2cf", "hybrid"
)
SPARSE_MODELS: dict[str, Weighting] = {"tfidf-knn": "tfidf", "bm25-knn": "bm25"}
HYBRID_WEIGHTS: tuple[float, ...] = (0.0625, 0.125, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0)
PathLike = str | os.PathLike[str]
PROTOCOL_TEXT = {
    "standard": "each test user ranks the test cold items only; binary relevance; mean over test users",
    "gar": "each test user ranks every item without training interactions (validation and test cold items); its "
    "validation cold items are excluded (known positives); binary relevance; mean over test users",
}


@dataclass(frozen=True)
class ColdEvalConfig:
    """Everything the harness can be told beyond the data.

    Attributes:
        k: Cut-off of the reported metrics (and of every validation choice).
        seed: Seed of splits, initialisation and sampling.
        models: Which of :data:`MODELS` to run.
        objectives: CB2CF objectives to train and compare on validation.
        fields: Text content fields (see :data:`ranking.training.content.TEXT_FIELDS`).
        knn_ks: Content-kNN neighbourhood sizes tried on validation (``None`` = all of the user's items).
        sparse_ks: Sparse (TF-IDF / BM25) item-kNN neighbourhood sizes tried on validation.
        words: Add the bag-of-words ``words`` field (:func:`ranking.training.content.words_field`) to the content
            every learned model reads.
        hybrid_max_features: Vocabulary of the sparse half of ``hybrid`` (it is served as explicit vector
            dimensions, so it is capped; the most frequent words are kept).
        hybrid_weights: Weights of the sparse score in ``hybrid`` tried on validation.
        protocol: ``standard`` or ``gar`` (:meth:`workloads.splits.ColdItemSplit.eval_task`).
        max_users: Evaluate only the first N users by index (validation and test), ``None`` = all.
        min_weight: Interactions with a lower weight are neither training positives nor relevant.
        user_features: Feed the dataset's categorical user features to the DSSM user tower.
        val_share: Share of warm items held out as validation cold items when no validation split is given.
        dssm: DSSM hyper-parameters (``seed`` is overridden by ``seed``).
        cb2cf: CB2CF hyper-parameters (``objective``/``seed`` overridden).
        dropoutnet: DropoutNet hyper-parameters (``seed`` overridden).
        models_dir: Versioned model directory holding MiniLM (default ``~/.cache/thaw/models``).
        feature_cache: Text-embedding cache (default ``~/.cache/thaw/features``).
        threads: torch intra-op threads of every model (1 measured fastest on this shared 2-core machine).
        verbose: Progress lines on stderr.
    """

    k: int = field(default=20, metadata={"help": "cut-off of the metrics and of every validation choice"})
    seed: int = field(default=0, metadata={"help": "seed of splits, initialisation and sampling"})
    models: tuple[str, ...] = field(default=MODELS, metadata={"help": "comma-separated subset of the models"})
    objectives: tuple[Objective, ...] = field(default=OBJECTIVES, metadata={
        "help": "CB2CF objectives to compare on validation"})
    fields: tuple[str, ...] = field(default=("doc",), metadata={
        "help": "text content fields, comma-separated: doc,text,tags"})
    knn_ks: tuple[int | None, ...] = field(default=(None, 10, 50), metadata={
        "help": "content-kNN neighbourhood sizes tried on validation ('all' = every item of the user)"})
    sparse_ks: tuple[int | None, ...] = field(default=(None, 10, 20, 50, 100), metadata={
        "help": "TF-IDF/BM25 item-kNN neighbourhood sizes tried on validation"})
    hybrid_weights: tuple[float, ...] = HYBRID_WEIGHTS
    words: bool = field(default=True, metadata={
        "help": "add the bag-of-words (BM25) field to the content the learned models read"})
    hybrid_max_features: int | None = 4096
    protocol: ColdProtocol = field(default="standard", metadata={"help": (
        "standard: each test user ranks the test cold items; gar: every item without training interactions "
        "(validation + test cold items) is a candidate and the user's validation positives are excluded")})
    max_users: int | None = field(default=None, metadata={
        "help": "evaluate only the first N users by id (validation and test)"})
    min_weight: float | None = field(default=None, metadata={"help": "positives / relevant need weight >= this"})
    user_features: bool = field(default=True, metadata={
        "help": "feed the dataset's user features to the DSSM user tower"})
    val_share: float = 0.1
    dssm: DSSMConfig = field(default_factory=DSSMConfig)
    cb2cf: CB2CFConfig = field(default_factory=CB2CFConfig)
    dropoutnet: DropoutNetConfig = field(default_factory=DropoutNetConfig)
    models_dir: Path | None = None
    feature_cache: Path | None = None
    threads: int = field(default=1, metadata={"help": "torch intra-op threads"})
    verbose: bool = field(default=False, metadata={"help": "progress lines on stderr"})


@dataclass
class ColdEvalArtifacts:
    """The trained models of a run (for export / inspection); filled by :func:`run_cold_items`."""

    dssm: DSSM | None = None
    cb2cf: dict[str, Any] = field(default_factory=dict)
    selected_objective: str | None = None
    content: ContentFields | None = None
    user_ids: list[str] = field(default_factory=list)
    item_ids: list[str] = field(default_factory=list)
    dataset: InteractionDataset | None = None  # for the group priors published with the DSSM user tower
    train: Interactions | None = None  # the warm training pairs (for a LightGCN published with the space)
    hybrid: dict[str, Any] | None = None  # the selected hybrid's sparse vectorizer and weight
    words: Any = None  # the words field's SparseVectorizer


def _log(cfg: ColdEvalConfig, msg: str) -> None:
    if cfg.verbose:
        logger.info("%s", msg)


# ---------------------------------------------------------------------------------------------------- data


def _carve_val(ds: InteractionDataset, train_rows: np.ndarray, share: float, seed: int) -> tuple[np.ndarray, ...]:
    """Moves a seeded ``share`` of the warm items (with all their rows) from training to validation."""
    warm = np.unique(ds.items[train_rows])
    n_val = max(1, int(round(share * len(warm))))
    val_items = np.sort(np.random.default_rng(seed + 1).permutation(warm)[:n_val])
    is_val = np.isin(ds.items[train_rows], val_items)
    return train_rows[~is_val], train_rows[is_val], val_items


def load_cold_split(
    interactions: PathLike | InteractionDataset | None = None,
    item_content: PathLike | Sequence[PathLike] | None = None,
    cold_test: PathLike | None = None,
    cold_val: PathLike | None = None,
    seed: int = 0,
    dataset: str | None = None,
    val_share: float = 0.1,
) -> tuple[InteractionDataset, ColdItemSplit, dict[str, Any]]:
    """Builds the dataset and the cold-item split the harness evaluates.

    Args:
        interactions: Training (or all) interactions file in the generic format, or a loaded dataset.
        item_content: Tags / JSONL content file(s) (generic format).
        cold_test: Test cold-item interactions file; ``None`` = make or use the default split.
        cold_val: Validation cold-item interactions file; ``None`` with ``cold_test`` = carve a seeded
            ``val_share`` of the warm items.
        seed: Split seed.
        dataset: A built-in dataset name instead of files.
        val_share: See ``cold_val``.

    Returns:
        ``(dataset, split, info)``; ``info`` describes where the split came from.
    """
    info: dict[str, Any] = {}
    if dataset is not None:
        ds = load_dataset(dataset)
        split = default_cold_item_split(ds, seed=seed)
        info["source"] = "predefined" if split.seed is None else f"seeded 8:1:1 item split (seed {seed})"
        return ds, split, info
    if isinstance(interactions, InteractionDataset):
        if cold_test is not None or cold_val is not None:
            raise ValueError("split files go with an interactions file, not with a loaded dataset")
        split = default_cold_item_split(interactions, seed=seed)
        info["source"] = "predefined" if split.seed is None else f"seeded 8:1:1 item split (seed {seed})"
        return interactions, split, info
    if interactions is None:
        raise ValueError("need an interactions file, a dataset or a dataset name")
    if cold_test is None:
        ds = load_generic(interactions, item_content)
        split = default_cold_item_split(ds, seed=seed)
        info["source"] = f"seeded 8:1:1 item split (seed {seed})"
        return ds, split, info
    files: dict[str, PathLike] = {"train": interactions, "cold_item_test": cold_test}
    if cold_val is not None:
        files["cold_item_val"] = cold_val
    ds = load_generic(None, item_content, splits=files, name=Path(interactions).stem)
    test_rows = ds.splits["cold_item_test"]
    test_items = np.unique(ds.items[test_rows])
    train_rows = ds.splits["train"]
    if cold_val is not None:
        val_rows = ds.splits["cold_item_val"]
        val_items = np.unique(ds.items[val_rows])
        if np.intersect1d(val_items, test_items).size:
            raise ValueError("validation and test cold items overlap")
    else:
        val_items = np.zeros(0, dtype=np.int64)
    # rows of the training file on cold items (e.g. a file holding all interactions) are not training data
    leaked = np.isin(ds.items[train_rows], np.union1d(val_items, test_items))
    info["train_rows_dropped_on_cold_items"] = int(leaked.sum())
    train_rows = train_rows[~leaked]
    if cold_val is not None:
        info["source"] = "files (train, cold test, cold validation)"
    else:
        train_rows, val_rows, val_items = _carve_val(ds, train_rows, val_share, seed)
        info["source"] = f"files (train, cold test); validation = seeded {val_share:.0%} of the warm items"
    train_rows = np.sort(train_rows)
    split = ColdItemSplit(
        train=train_rows,
        val=np.sort(val_rows),
        test=np.sort(test_rows),
        warm_items=np.unique(ds.items[train_rows]),
        val_items=val_items,
        test_items=test_items,
        n_interactions=ds.n_interactions,
        seed=seed if cold_val is None else None,
    )
    return ds, split, info


# ---------------------------------------------------------------------------------------------------- harness


def _metrics(task: EvalTask, score: ScoreFn, k: int) -> tuple[dict[str, float], float]:
    t0 = time.perf_counter()
    m = evaluate_task(task, score, k=k)
    return {key: v for key, v in m.items() if key != "n_users"}, time.perf_counter() - t0


def _fixed_metrics(task: EvalTask, scores: np.ndarray, k: int) -> float:
    """NDCG@k of a precomputed ``users x candidates`` score matrix of ``task``."""
    acc = RankingMetrics(len(task.candidates), ks=(k,))
    acc.update(scores, task.relevant, task.exclude)
    return float(acc.result()[f"ndcg@{k}"])


def hybrid_scorer(cf: ScoreFn, knn: ScoreFn, weight: float) -> ScoreFn:
    """``cf(u, i) + weight * knn(u, i)``: the weighted hybrid of a CF-space score and a content-kNN score (Burke,
    UMUAI 2002; see the module docstring for how the stream serves it as one inner product)."""

    def score(users: np.ndarray, items: np.ndarray) -> np.ndarray:
        return cf(users, items) + np.float32(weight) * knn(users, items)

    return score


def _entry(
    val: EvalTask, test: EvalTask, score: ScoreFn, k: int, train_seconds: float,
    groups: dict[str, np.ndarray] | None = None, **extra: Any
) -> dict[str, Any]:
    vm, _ = _metrics(val, score, k)
    tm, secs = _metrics(test, score, k)
    if groups:  # per kind (and text-poor / text-rich), beside the non-personal control
        mat = np.asarray(score(test.users, test.candidates), dtype=np.float64)
        if test.exclude is not None:
            for r, ex in enumerate(test.exclude):
                mat[r, ex] = -np.inf
        extra = {**extra, "personal": personal_report(np.where(np.isfinite(mat), mat, np.nan), test.relevant, k,
                                                      groups)}
    return {
        **tm,
        f"val_ndcg@{k}": vm[f"ndcg@{k}"],
        f"val_recall@{k}": vm[f"recall@{k}"],
        "train_seconds": round(train_seconds, 3),
        "score_seconds": round(secs, 3),
        **extra,
    }


def run_cold_items(
    ds: InteractionDataset,
    split: ColdItemSplit,
    config: ColdEvalConfig = ColdEvalConfig(),  # noqa: B008 - frozen dataclass
    content: ContentFields | None = None,
    artifacts: ColdEvalArtifacts | None = None,
    item_kinds: Sequence[str] | None = None,
    item_text_poor: Sequence[bool] | None = None,
) -> dict[str, Any]:
    """Trains every requested model on the warm part of ``split`` and evaluates it on the cold items.

    Args:
        ds: The dataset.
        split: The cold-item split (``train`` rows must not touch cold items).
        config: Harness configuration.
        content: Precomputed content fields (default: MiniLM text fields of ``config.fields``).
        artifacts: If given, receives the trained DSSM and CB2CF models.
        item_kinds: Each item's kind (dataset index): every model's entry then has ``personal``
            (:func:`ranking.evaluation.personal.personal_report` on the test task: NDCG@k overall and within each
            kind, beside the non-personal control of one mean user).
        item_text_poor: With ``item_kinds``: which items published text-poor; ``personal`` then also splits each
            kind into text-poor and text-rich test items.

    Returns:
        The report (see :func:`evaluate_cold_items`).
    """
    t_start = time.perf_counter()
    k = config.k
    unknown = set(config.models) - set(MODELS)
    if unknown:
        raise ValueError(f"unknown models {sorted(unknown)}; known: {list(MODELS)}")
    if np.isin(ds.items[split.train], split.cold_items).any():
        raise ValueError("training rows include cold items")
    encode_seconds = 0.0
    if content is None:
        _log(config, f"embedding item text fields {config.fields} with MiniLM")
        content, encode_seconds = minilm_text_fields(
            ds, fields=config.fields, models_dir=config.models_dir, cache_dir=config.feature_cache
        )
    if config.words and WORDS_FIELD not in content.names:
        words, words_vec = words_field(ds, split.warm_items)
        content = content.merge(words)
        if artifacts is not None:
            artifacts.words = words_vec
    train_rows = split.train
    if config.min_weight is not None:
        train_rows = train_rows[ds.weights[train_rows] >= config.min_weight]
    train = Interactions(ds.users[train_rows], ds.items[train_rows], ds.n_users, ds.n_items)
    val_task = split.eval_task(ds, "val", config.min_weight, config.protocol, config.max_users)
    test_task = split.eval_task(ds, "test", config.min_weight, config.protocol, config.max_users)
    if val_task.n_rows == 0 or test_task.n_rows == 0:
        raise ValueError(f"empty evaluation: {val_task.n_rows} validation users, {test_task.n_rows} test users")
    groups = None
    if item_kinds is not None:
        cands = test_task.candidates
        groups = candidate_groups([item_kinds[int(i)] for i in cands],
                                  None if item_text_poor is None else [bool(item_text_poor[int(i)]) for i in cands])
    entry = partial(_entry, groups=groups)
    report: dict[str, Any] = {
        "dataset": {
            "name": ds.name,
            "users": ds.n_users,
            "items": ds.n_items,
            "interactions": ds.n_interactions,
        },
        "split": {
            "train_interactions": len(train),
            "warm_items": int(len(split.warm_items)),
            "val_items": int(len(split.val_items)),
            "test_items": int(len(split.test_items)),
            "val_users": val_task.n_rows,
            "test_users": test_task.n_rows,
        },
        "k": k,
        "seed": config.seed,
        "protocol": {
            "name": config.protocol,
            "description": PROTOCOL_TEXT[config.protocol],
            "max_users": config.max_users,
            "val_candidates": int(len(val_task.candidates)),
            "test_candidates": int(len(test_task.candidates)),
        },
        "content": {
            "fields": list(content.names),
            "dims": [int(v.shape[1]) for v in content.values],
            "present_share": [round(float(p), 4) for p in content.present.mean(axis=0)],
            "source": content.source,
            "encode_seconds": round(encode_seconds, 3),
        },
        "models": {},
        "selected": {},
    }
    models: dict[str, Any] = report["models"]

    if "random" in config.models:
        models["random"] = entry(val_task, test_task, random_scorer(config.seed), k, 0.0)
    if "popularity" in config.models:
        t0 = time.perf_counter()
        pop = popularity_scorer(train, config.seed)
        models["popularity"] = entry(
            val_task, test_task, pop, k, time.perf_counter() - t0,
            note="cold items have no training interactions: all scores tie and the seeded tie-break makes this "
            "the random ranking",
        )
    if "content-knn" in config.models:
        t0 = time.perf_counter()
        cvec = content.concatenated()
        per_k = {}
        for kk in config.knn_ks:
            per_k["all" if kk is None else str(kk)] = _metrics(val_task, content_knn_scorer(cvec, train, kk), k)[0][
                f"ndcg@{k}"
            ]
        best = max(per_k, key=lambda s: per_k[s])
        best_k = None if best == "all" else int(best)
        tune = time.perf_counter() - t0
        models["content-knn"] = entry(
            val_task, test_task, content_knn_scorer(cvec, train, best_k), k, tune,
            neighbours=best, val_ndcg_by_neighbours=per_k,
        )
        report["selected"]["content_knn_neighbours"] = best

    need_sparse = [m for m in SPARSE_MODELS if m in config.models]
    for name in need_sparse:
        t0 = time.perf_counter()
        rows, _ = sparse_item_rows(ds, split.warm_items, SPARSE_MODELS[name])
        per_k = {}
        for kk in config.sparse_ks:
            per_k["all" if kk is None else str(kk)] = _metrics(val_task, sparse_knn_scorer(rows, train, kk), k)[0][
                f"ndcg@{k}"
            ]
        best = max(per_k, key=lambda s_: per_k[s_])
        models[name] = entry(
            val_task, test_task, sparse_knn_scorer(rows, train, None if best == "all" else int(best)), k,
            time.perf_counter() - t0, neighbours=best, val_ndcg_by_neighbours=per_k,
            vocabulary=int(rows.shape[1]), fitted_on="warm items",
        )
    sparse_names = [m for m in SPARSE_MODELS if m in models]
    if sparse_names:
        best_sparse = max(sparse_names, key=lambda m: models[m][f"val_ndcg@{k}"])
        report["selected"]["best_sparse_knn"] = best_sparse

    dssm = None
    if "cb2cf" in config.models or "dropoutnet" in config.models or "hybrid" in config.models:
        _log(config, f"training DSSM on {len(train)} warm pairs")
        uf = categorical_user_features(ds.user_features, n_users=ds.n_users) if config.user_features else None
        dcfg_ = replace(config.dssm, seed=config.seed, eval_k=k, threads=config.threads)
        dssm, dlog = train_dssm(train, dcfg_, uf, verbose=config.verbose)
        report["dssm"] = {
            **dlog.to_dict(),
            f"holdout_ndcg@{k}": dlog.best_value,
            "user_features": list(uf.names) if uf is not None else [],
            "config": asdict(config.dssm),
        }
        if artifacts is not None:
            artifacts.dssm = dssm
            artifacts.content = content
            artifacts.user_ids = list(ds.user_ids)
            artifacts.item_ids = list(ds.item_ids)
            artifacts.dataset = ds
            artifacts.train = train

    if ("cb2cf" in config.models or "hybrid" in config.models) and dssm is not None:
        warm = np.flatnonzero(train.item_counts() > 0)
        targets = dssm.item_vectors(warm)
        results = {}
        for obj in config.objectives:
            cfg = replace(
                config.cb2cf, objective=obj, seed=config.seed, eval_k=k, out_dim=config.dssm.dim,
                threads=config.threads,
            )
            _log(config, f"training CB2CF ({obj}) on {len(warm)} warm items")
            res = train_cb2cf(content, warm, targets, cfg, val_task, dssm.user_vectors, verbose=config.verbose)
            results[obj] = res
            models[f"cb2cf-{obj}"] = entry(
                val_task, test_task, cb2cf_score(res.model, content, dssm.user_vectors), k,
                res.log.seconds, dssm_seconds=round(dlog.seconds, 3), objective=obj,
                best_epoch=res.log.best_epoch, epochs_run=res.log.epochs_run,
            )
        best_obj = max(results, key=lambda o: models[f"cb2cf-{o}"][f"val_ndcg@{k}"])
        models["cb2cf"] = {**models[f"cb2cf-{best_obj}"], "selected_on": "validation ndcg"}
        report["selected"]["cb2cf_objective"] = best_obj
        # diagnostic: the same item vectors scored with one mean user (no personalisation left)
        best_model = results[best_obj].model
        mean_user = dssm.user_vectors(np.unique(train.users)).mean(axis=0, keepdims=True)
        report["diagnostics"] = {
            f"cb2cf_non_personal_ndcg@{k}": _metrics(
                test_task,
                cb2cf_score(best_model, content, lambda u: np.repeat(mean_user, len(u), axis=0)),
                k,
            )[0][f"ndcg@{k}"],
            "note": "the selected CB2CF with every user replaced by the mean user vector: the share of its "
            "quality that is item quality/popularity predicted from content rather than personal taste",
        }
        if artifacts is not None:
            artifacts.cb2cf = {o: r.model for o, r in results.items()}
            artifacts.selected_objective = best_obj

    if "hybrid" in config.models and dssm is not None and "cb2cf" in models:
        # the CF-space score of the selected CB2CF plus w x the sparse kNN over all of the user's items (the linear
        # form, servable as one inner product); the weighting (TF-IDF / BM25) and w are chosen on validation
        t0 = time.perf_counter()
        cf_score = cb2cf_score(best_model, content, dssm.user_vectors)
        val_cf = cf_score(val_task.users, val_task.candidates)
        grid: dict[str, float] = {}
        hybrid_rows: dict[str, tuple[Any, Any]] = {}
        for name, weighting in SPARSE_MODELS.items():
            hybrid_rows[name] = sparse_item_rows(ds, split.warm_items, weighting, config.hybrid_max_features,
                                                 published=True)
            knn_val = sparse_knn_scorer(hybrid_rows[name][0], train, None)(val_task.users, val_task.candidates)
            for w in config.hybrid_weights:
                grid[f"{name}|{w:g}"] = _fixed_metrics(val_task, val_cf + w * knn_val, k)
        best_key = max(grid, key=lambda g: grid[g])
        h_name, h_w = best_key.split("|")[0], float(best_key.split("|")[1])
        h_rows, h_vec = hybrid_rows[h_name]
        h_score = hybrid_scorer(cf_score, sparse_knn_scorer(h_rows, train, None), h_w)
        models["hybrid"] = entry(
            val_task, test_task, h_score, k, time.perf_counter() - t0 + results[best_obj].log.seconds,
            sparse=h_name, weight=h_w, cb2cf_objective=best_obj, vocabulary=len(h_vec.vocab),
            val_ndcg_by_weight=grid,
        )
        report["selected"]["hybrid"] = {"sparse": h_name, "weight": h_w}
        if artifacts is not None:
            artifacts.hybrid = {"vectorizer": h_vec, "weight": h_w, "sparse": h_name, "rows": h_rows}

    if "dropoutnet" in config.models and dssm is not None:
        _log(config, "training DropoutNet")
        user_cf = dssm.user_vectors(np.arange(ds.n_users))
        item_cf = dssm.item_vectors(np.arange(ds.n_items))
        dcfg = replace(config.dropoutnet, seed=config.seed, eval_k=k, threads=config.threads)
        _, dscore, dnlog = train_dropoutnet(train, user_cf, item_cf, content, dcfg, val_task, verbose=config.verbose)
        models["dropoutnet"] = entry(
            val_task, test_task, dscore, k, dnlog.seconds,
            dssm_seconds=round(dlog.seconds, 3), best_epoch=dnlog.best_epoch, epochs_run=dnlog.epochs_run,
        )

    if "cb2cf" not in config.models:  # trained only as the hybrid's CF half
        for m in [m for m in models if m.startswith("cb2cf")]:
            del models[m]
    order: list[str] = [
        m for m in ("random", "popularity", "content-knn", "tfidf-knn", "bm25-knn", "dropoutnet") if m in models
    ]
    order += sorted(m for m in models if m.startswith("cb2cf-")) + (["cb2cf"] if "cb2cf" in models else [])
    order += ["hybrid"] if "hybrid" in models else []
    served = [m for m in ("cb2cf", "hybrid") if m in models]
    if served:
        report["selected"]["served"] = max(served, key=lambda m: models[m][f"val_ndcg@{k}"])
    report["models"] = {m: models[m] for m in order}
    report["total_seconds"] = round(time.perf_counter() - t_start, 3)
    return report


def evaluate_cold_items(
    interactions: PathLike | InteractionDataset | None,
    item_content: PathLike | Sequence[PathLike] | None = None,
    cold_test: PathLike | None = None,
    cold_val: PathLike | None = None,
    k: int = 20,
    seed: int = 0,
    models: Sequence[str] | None = None,
    *,
    dataset: str | None = None,
    config: ColdEvalConfig | None = None,
    content: ContentFields | None = None,
    artifacts: ColdEvalArtifacts | None = None,
) -> dict[str, Any]:
    """Evaluates cold-item recommenders on held-out cold items (see the module docstring for the protocol).

    Args:
        interactions: Interactions file (generic format: ``user,item[,weight][,ts]``) or a loaded
            :class:`InteractionDataset`; ``None`` with ``dataset``.
        item_content: Item content file(s) for an interactions file (tags file and/or JSONL).
        cold_test: Test cold-item interactions file (optional).
        cold_val: Validation cold-item interactions file (optional).
        k: Cut-off.
        seed: Seed.
        models: Subset of :data:`MODELS` (default: all).
        dataset: Built-in dataset name (``ml-100k``, ``lastfm``, ``citeulike-a``) instead of files.
        config: Further settings; ``k``, ``seed`` and ``models`` given here win over it.
        content: Precomputed content fields (skips MiniLM).
        artifacts: Receives the trained models.

    Returns:
        JSON-ready dict: ``dataset``, ``split`` (sizes, ``source``), ``content``, ``dssm`` (training log),
        ``models`` (per model ``precision@K``, ``recall@K``, ``ndcg@K``, ``hit@K``, ``coverage@K`` on test,
        ``val_ndcg@K``, ``train_seconds``, ``score_seconds``, ...), ``selected`` (choices made on validation),
        ``diagnostics`` and ``total_seconds``.
    """
    t0 = time.perf_counter()
    cfg = config or ColdEvalConfig()
    cfg = replace(cfg, k=k, seed=seed, models=tuple(models) if models is not None else cfg.models)
    ds, split, info = load_cold_split(
        interactions, item_content, cold_test, cold_val, seed=seed, dataset=dataset, val_share=cfg.val_share
    )
    load_seconds = time.perf_counter() - t0
    report = run_cold_items(ds, split, cfg, content=content, artifacts=artifacts)
    report["split"] = {**info, **report["split"]}
    report["load_seconds"] = round(load_seconds, 3)
    report["total_seconds"] = round(time.perf_counter() - t0, 3)
    return report


# ---------------------------------------------------------------------------------------------------- output


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width text table of the report's models."""
    k = report["k"]
    cols = [f"precision@{k}", f"recall@{k}", f"ndcg@{k}", f"val_ndcg@{k}", "train_seconds"]
    head = f"{'model':<20}" + "".join(f"{c:>15}" for c in cols)
    proto = report.get("protocol", {})
    lines = [f"{report['dataset']['name']}: {report['split'].get('source', '')}; protocol {proto.get('name', '?')} "
             f"({proto.get('test_candidates', '?')} test candidates)", head, "-" * len(head)]
    for name, m in report["models"].items():
        cells = []
        for c in cols:
            v = m.get(c, float("nan"))
            cells.append(f"{v:>15.1f}" if c == "train_seconds" else f"{v:>15.4f}")
        lines.append(f"{name:<20}" + "".join(cells))
    if "dssm" in report:
        d = report["dssm"]
        lines.append(f"DSSM: {d['seconds']:.1f}s, best epoch {d['best_epoch']}, warm hold-out ndcg@{k} "
                     f"{d['best_value']:.4f}")
    sel = report.get("selected", {})
    if sel:
        lines.append("selected on validation: " + ", ".join(f"{a}={b}" for a, b in sel.items()))
    lines.append(f"total {report['total_seconds']:.1f}s")
    return "\n".join(lines)
