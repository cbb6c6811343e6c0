"""New-user evaluation: group prior, LightGCN fold-in and the multimodal-enhanced user vector against baselines.

Protocol. A seeded ``user_share`` of the users with more than ``max(reveal)`` interactions is held out (a
``val_share`` of them for validation, the rest for test; :func:`ranking.training.user_priors.reveal_split`); models
train on the
other (warm) users' interactions only. Every held-out user's history is ordered (by timestamp on MovieLens; Last.fm
and timestamp-less files have no order, so a seeded random one). For each ``n`` in ``reveal`` the user reveals its
first ``n`` interactions; it then ranks **all catalogue items minus the ``n`` revealed ones**, and Recall@K and
NDCG@K are computed over its remaining interactions (binary relevance, every interaction counts unless
``min_weight``; :mod:`workloads.metrics`). The same users are evaluated at every ``n`` (the targets shrink as ``n``
grows; ``results_fixed_targets`` repeats the test scoring with one ground truth for every ``n``: the
interactions after the first ``max(reveal)``, all of the first ``max(reveal)`` excluded). The **niche slice** is
the third of the test (validation) users whose interactions' mean item popularity (warm training interactions per
item) is lowest; it is reported beside all users.

Methods (``results``):

* ``random``; ``popularity`` (warm training counts).
* Strong simple baselines: ``group-popularity`` (the items' popularity among the warm users of the user's group, at
  the same group level the group prior uses: popularity within the declared tastes / demographics; ties by global
  popularity) and ``bm25-knn`` (mean BM25 cosine between an item's text and tag words and the revealed items'; at
  ``n = 0`` it has nothing and is ``group-popularity``).
* ``group-prior``: the mean LightGCN vector of warm users in the user's group
(:func:`ranking.training.user_priors.default_groups`
  says what a group is per dataset); it ignores revealed items (the same vector at every ``n``).
* ``lightgcn``: the LightGCN fold-in of the revealed items (``mean`` / ``propagate`` / ``gradient`` / ``regress``,
  chosen on validation); at ``n = 0`` it has nothing and is the all-warm-users mean vector.
* ``multimodal-enhanced``: :func:`ranking.training.user_priors.blend` of the fold-in, the multimodal taste vector (ridge
  projection of the revealed items' mean content embedding, fitted on warm users) and the group prior, the prior's
  share shrinking as ``k / (n + k)``; ``k``, the taste weight ``beta`` and the projection's ridge are chosen on
  validation users. At ``n = 0`` it is the group prior.
* Ablations: ``lightgcn+prior`` (the blend with ``beta = 0``, its own ``k``) and ``taste-only`` (the taste vector
  alone; the group prior at ``n = 0``).

Every choice is made on validation users (mean NDCG@K over the ``n > 0`` reveal counts); test users are scored once
per method and ``n``. ``dssm_alignment`` maps the LightGCN user vectors into the DSSM space (the space Milvus
serves) by a ridge linear map fitted on warm users and scores the mapped vectors against the DSSM item vectors.

Measured (seed 0, ``benchmarks/results/new_users_<dataset>.json``; one seed, so differences of ~0.01 are within
noise; 189 / 375 test users on ml-100k / Last.fm, 63 / 125 of them niche):

* Last.fm: the tag-based group prior beats popularity at ``n = 0`` (NDCG@20 0.313 vs 0.237; niche 0.149 vs 0.036).
  The fold-in grows with ``n`` (0.302 / 0.396 / 0.409 at 1 / 3 / 5) and the blend with the prior helps at ``n = 1``
  (0.347). The MiniLM taste vector got weight ``beta = 0`` on validation, so ``multimodal-enhanced`` equals
  ``lightgcn+prior``; ``taste-only`` is below the fold-in at every ``n`` (0.294 / 0.341 / 0.343) and below the
  prior on the niche slice.
* ml-100k: popularity is the strongest method at every ``n`` (0.515 at ``n = 0``, 0.462 at ``n = 5``); the
  gender x age prior matches it at ``n = 0`` (0.514) and nothing personal from the first 1-5 ratings beats it: the
  validation choices shrink everything toward the mean user (ridge 10, prior ``k = 4``).
* Strong simple baselines (seed 0, same splits): popularity within the user's group is the best method at ``n = 0``
  on both datasets (Last.fm 0.329 vs the group prior 0.313; ml-100k 0.515 vs 0.514, a tie) and on ml-100k at every
  ``n`` (0.503 / 0.479 / 0.463 at 1 / 3 / 5 vs the blend 0.498 / 0.464 / 0.440). On Last.fm the blend wins from
  ``n = 1`` (0.347 / 0.399 / 0.409 vs group popularity 0.326 / 0.317 / 0.308 and BM25 kNN from the revealed items
  0.120 / 0.223 / 0.279); on the niche slice at ``n = 5`` BM25 kNN (0.195) is close to the blend (0.206).
* So the talk's claim (multimodal enhancement of the LightGCN user vector, largest for niche users) is **not**
  reproduced with text-only content (MiniLM over title/artist name + tags); audio and image fields will enter
  through :class:`ranking.training.content.ContentFields` unchanged and should be measured the same way.

Run (from code: :func:`evaluate_new_users`)::

    thaw evaluate new-users --dataset ml-100k --json
    thaw evaluate new-users --interactions TRAIN.csv --item-content items.jsonl [--user-groups groups.csv] \\
        [--reveal 0,1,3,5] [--k 20] [--seed 0] [--out report.json] [--json]
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from ranking.evaluation.baselines import popularity_scorer, random_scorer
from ranking.models.dssm import DSSMConfig, categorical_user_features
from ranking.models.lightgcn import FOLD_INS, LightGCNConfig, apply_linear_map, fit_linear_map, fold_in
from ranking.online.sparse import knn_scores
from ranking.training.common import Interactions, ScoreFn, evaluate_task
from ranking.training.content import ContentFields, minilm_text_fields, sparse_item_rows
from ranking.training.dssm import train_dssm
from ranking.training.lightgcn import train_lightgcn
from ranking.training.user_priors import (
    RevealSplit,
    UserGroups,
    blend,
    default_groups,
    fit_taste_projection,
    group_prior,
    item_sets,
    niche_users,
    reveal_split,
)
from workloads.datasets import InteractionDataset, load_dataset, load_generic
from workloads.splits import EvalTask, make_eval_task

logger = logging.getLogger(__name__)

PathLike = str | os.PathLike[str]
METHODS: tuple[str, ...] = (
    "random", "popularity", "group-popularity", "bm25-knn", "group-prior", "lightgcn", "multimodal-enhanced",
    "lightgcn+prior", "taste-only",
)


@dataclass(frozen=True)
class NewUserEvalConfig:
    """Everything the new-user harness can be told beyond the data.

    Attributes:
        reveal: Revealed interaction counts to evaluate.
        k: Cut-off of the reported metrics and of every validation choice.
        seed: Seed of the split, the models and the sampling.
        user_share: Share of eligible users held out (validation + test).
        val_share: Share of eligible users used for validation.
        niche_share: Bottom share of mean item popularity that makes the niche slice.
        min_weight: Interactions with a lower weight are neither training pairs nor targets (revealed rows are
            revealed whatever their weight).
        fields: Text content fields (see :data:`ranking.training.content.TEXT_FIELDS`).
        min_group: Smallest warm group trusted by the group prior.
        shrink_ks: Prior-shrinkage ``k`` values tried on validation.
        betas: Taste weights tried on validation.
        taste_ridges: Ridge weights of the taste projection tried on validation.
        fold_ins: Fold-in methods compared on validation: those of :func:`ranking.models.lightgcn.fold_in` and
            ``"regress"`` (a ridge map from the mean LightGCN vector of ``n`` of a warm user's items to the user's
            vector, fitted on warm users like the taste projection).
        align_dssm: Also train the DSSM and measure the LightGCN -> DSSM linear map.
        lightgcn: LightGCN hyper-parameters (``seed``/``eval_k``/``threads`` overridden).
        dssm: DSSM hyper-parameters for the alignment (``seed``/``eval_k``/``threads`` overridden).
        models_dir: Model directory holding MiniLM.
        feature_cache: Text-embedding cache.
        threads: torch intra-op threads.
        verbose: Progress lines on stderr.
    """

    reveal: tuple[int, ...] = field(default=(0, 1, 3, 5), metadata={
        "help": "revealed interaction counts, comma-separated"})
    k: int = field(default=20, metadata={"help": "cut-off of the metrics and of every validation choice"})
    seed: int = field(default=0, metadata={"help": "seed of splits, initialisation and sampling"})
    user_share: float = 0.3
    val_share: float = 0.1
    niche_share: float = 1 / 3
    min_weight: float | None = field(default=None, metadata={"help": "training pairs / targets need weight >= this"})
    fields: tuple[str, ...] = field(default=("doc",), metadata={
        "help": "text content fields, comma-separated: doc,text,tags"})
    min_group: int = 5
    shrink_ks: tuple[float, ...] = (0.5, 1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0)
    betas: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0, 4.0, 8.0)
    taste_ridges: tuple[float, ...] = (1e-2, 1e-1, 1.0, 10.0)
    fold_ins: tuple[str, ...] = (*FOLD_INS, "regress")
    align_dssm: bool = field(default=True, metadata={"help": "measure the LightGCN -> DSSM alignment"})
    lightgcn: LightGCNConfig = field(default_factory=LightGCNConfig)
    dssm: DSSMConfig = field(default_factory=DSSMConfig)
    models_dir: Path | None = None
    feature_cache: Path | None = None
    threads: int = field(default=1, metadata={"help": "torch intra-op threads"})
    verbose: bool = field(default=False, metadata={"help": "progress lines on stderr"})


def _log(cfg: NewUserEvalConfig, msg: str) -> None:
    if cfg.verbose:
        logger.info("%s", msg)


def _vector_scorer(users: np.ndarray, vectors: np.ndarray, item_vectors: np.ndarray) -> ScoreFn:
    """``score(u, i) = vectors[row of u] · item_vectors[i]`` for a fixed set of users."""
    row = {int(u): r for r, u in enumerate(users)}

    def score(us: np.ndarray, items: np.ndarray) -> np.ndarray:
        idx = np.array([row[int(u)] for u in us], dtype=np.int64)
        return vectors[idx] @ item_vectors[items].T

    return score


def _subtask(task: EvalTask, mask_users: np.ndarray) -> EvalTask:
    keep = np.isin(task.users, mask_users)
    rows = np.flatnonzero(keep)
    return EvalTask(
        users=task.users[keep],
        candidates=task.candidates,
        relevant=[task.relevant[r] for r in rows],
        exclude=None if task.exclude is None else [task.exclude[r] for r in rows],
    )


@dataclass
class _Part:
    """One side (validation or test) of the evaluation: per ``n`` its task, its users' revealed sets."""

    name: str
    users: np.ndarray
    niche: np.ndarray
    tasks: dict[int, EvalTask]
    revealed: dict[int, list[np.ndarray]]
    niche_threshold: float
    fixed: dict[int, EvalTask]


def _build_part(ds: InteractionDataset, rs: RevealSplit, part: str, reveal: Sequence[int], item_pop: np.ndarray,
                cfg: NewUserEvalConfig) -> _Part:
    users = rs.users(part)
    niche_mask, thr = niche_users(ds, users, rs.rows(part), item_pop, cfg.niche_share)
    tasks, revealed = {}, {}
    for n in reveal:
        rev, tgt = rs.reveal(part, n)
        tasks[n] = make_eval_task(ds, tgt, exclude_rows=rev, min_weight=cfg.min_weight)
        revealed[n] = item_sets(ds, rev, users)
    # fixed targets: the interactions after the first max(reveal), which are excluded whatever n is
    rev_max, tgt_max = rs.reveal(part, max(reveal))
    fixed_task = make_eval_task(ds, tgt_max, exclude_rows=rev_max, min_weight=cfg.min_weight)
    return _Part(part, users, users[niche_mask], tasks, revealed, thr, {n: fixed_task for n in reveal})


def _metrics(task: EvalTask, score: ScoreFn, k: int) -> dict[str, float]:
    m = evaluate_task(task, score, k=k)
    return {f"recall@{k}": m[f"recall@{k}"], f"ndcg@{k}": m[f"ndcg@{k}"], "n_users": int(m["n_users"])}


def run_new_users(
    ds: InteractionDataset,
    config: NewUserEvalConfig = NewUserEvalConfig(),  # noqa: B008 - frozen dataclass
    content: ContentFields | None = None,
    groups: UserGroups | None = None,
) -> dict[str, Any]:
    """Trains on the warm users and evaluates every method on the held-out users (see the module docstring).

    Args:
        ds: The dataset.
        config: Harness configuration.
        content: Precomputed content fields (default: MiniLM text fields of ``config.fields``).
        groups: User groups for the prior (default: :func:`ranking.training.user_priors.default_groups`).

    Returns:
        The report (see :func:`evaluate_new_users`).
    """
    t_start = time.perf_counter()
    k, seed = config.k, config.seed
    reveal = tuple(sorted(set(config.reveal)))
    if not reveal or reveal[0] < 0:
        raise ValueError("reveal counts must be >= 0")
    rs = reveal_split(ds, max(reveal), config.user_share, config.val_share, seed)
    train_rows = rs.train
    if config.min_weight is not None:
        train_rows = train_rows[ds.weights[train_rows] >= config.min_weight]
    train = Interactions(ds.users[train_rows], ds.items[train_rows], ds.n_users, ds.n_items)
    item_pop = train.item_counts()
    val = _build_part(ds, rs, "val", reveal, item_pop, config)
    test = _build_part(ds, rs, "test", reveal, item_pop, config)
    if len(val.users) == 0 or len(test.users) == 0:
        raise ValueError(f"empty evaluation: {len(val.users)} validation users, {len(test.users)} test users")
    groups = groups if groups is not None else default_groups(ds)

    encode_seconds = 0.0
    if content is None:
        _log(config, f"embedding item text fields {config.fields} with MiniLM")
        content, encode_seconds = minilm_text_fields(
            ds, fields=config.fields, models_dir=config.models_dir, cache_dir=config.feature_cache
        )
    cvec = content.concatenated()

    _log(config, f"training LightGCN on {len(train)} warm pairs")
    lcfg = replace(config.lightgcn, seed=seed, eval_k=k, threads=config.threads)
    lgcn, llog = train_lightgcn(train, lcfg, verbose=config.verbose)
    item_vecs = lgcn.item_vectors(np.arange(ds.n_items))
    warm_users = np.flatnonzero(train.user_counts() > 0)
    warm_vecs = lgcn.user_vectors(warm_users)
    warm_sets = item_sets(ds, train_rows, warm_users)
    global_mean = warm_vecs.mean(axis=0, keepdims=True)

    priors: dict[str, np.ndarray] = {}
    prior_level: dict[str, np.ndarray] = {}
    for p in (val, test):
        priors[p.name], prior_level[p.name] = group_prior(groups, warm_users, warm_vecs, p.users, config.min_group)

    # ---- validation choices
    t_sel = time.perf_counter()
    pos_n = [n for n in reveal if n > 0]
    folds: dict[str, dict[str, dict[int, np.ndarray]]] = {"val": {}, "test": {}}
    val_fold: dict[str, dict[str, float]] = {}
    # "regress": the same ridge recipe as the taste vector, with the revealed items' LightGCN vectors as input (its
    # ridge chosen on validation among ``taste_ridges``)
    val_regress: dict[str, float] = {}
    cf_projs = {}
    for ridge in config.taste_ridges if "regress" in config.fold_ins else ():
        pr = fit_taste_projection(item_vecs, warm_sets, warm_vecs, sizes=pos_n or (1,), ridge=ridge, seed=seed)
        cf_projs[ridge] = pr
        val_regress[f"{ridge:g}"] = float(np.mean([
            _metrics(val.tasks[n], _vector_scorer(val.users, pr(item_vecs, val.revealed[n]), item_vecs), k)[
                f"ndcg@{k}"] for n in pos_n
        ])) if pos_n else 0.0
    cf_proj = cf_projs[max(cf_projs, key=lambda r: val_regress[f"{r:g}"])] if cf_projs else None

    def fold(part: _Part, method: str, n: int) -> np.ndarray:
        if method == "regress":
            assert cf_proj is not None
            return cf_proj(item_vecs, part.revealed[n])
        return fold_in(lgcn, part.revealed[n], method, seed=seed)  # type: ignore[arg-type]

    for fm in config.fold_ins:
        folds["val"][fm] = {n: fold(val, fm, n) for n in pos_n}
        val_fold[fm] = {
            str(n): _metrics(val.tasks[n], _vector_scorer(val.users, folds["val"][fm][n], item_vecs), k)[
                f"ndcg@{k}"] for n in pos_n
        }
    best_fold = max(config.fold_ins, key=lambda m: float(np.mean(list(val_fold[m].values()) or [0.0])))
    folds["test"][best_fold] = {n: fold(test, best_fold, n) for n in pos_n}

    val_taste: dict[str, float] = {}
    projections = {}
    for ridge in config.taste_ridges:
        proj = fit_taste_projection(cvec, warm_sets, warm_vecs, sizes=pos_n or (1,), ridge=ridge, seed=seed)
        projections[ridge] = proj
        val_taste[f"{ridge:g}"] = float(np.mean([
            _metrics(val.tasks[n], _vector_scorer(val.users, proj(cvec, val.revealed[n]), item_vecs), k)[f"ndcg@{k}"]
            for n in pos_n
        ])) if pos_n else 0.0
    best_ridge = max(config.taste_ridges, key=lambda r: val_taste[f"{r:g}"])
    taste = projections[best_ridge]

    def vectors(part: _Part, method: str, n: int, kk: float = 0.0, beta: float = 0.0) -> np.ndarray:
        prior = priors[part.name]
        if method == "group-prior" or (n == 0 and method in ("multimodal-enhanced", "lightgcn+prior", "taste-only")):
            return prior
        if method == "lightgcn":
            return np.repeat(global_mean, len(part.users), axis=0) if n == 0 else folds[part.name][best_fold][n]
        t = taste(cvec, part.revealed[n])
        if method == "taste-only":
            return t
        return blend(n, folds[part.name][best_fold][n], t if method == "multimodal-enhanced" else None, prior, kk,
                     beta)

    grid: dict[str, dict[str, float]] = {"multimodal-enhanced": {}, "lightgcn+prior": {}}
    for kk in config.shrink_ks:
        for beta in config.betas:
            grid["multimodal-enhanced"][f"k={kk:g},beta={beta:g}"] = float(np.mean([
                _metrics(val.tasks[n], _vector_scorer(val.users, vectors(val, "multimodal-enhanced", n, kk, beta),
                                                      item_vecs), k)[f"ndcg@{k}"] for n in pos_n
            ])) if pos_n else 0.0
        grid["lightgcn+prior"][f"k={kk:g},beta=0"] = float(np.mean([
            _metrics(val.tasks[n], _vector_scorer(val.users, vectors(val, "lightgcn+prior", n, kk), item_vecs), k)[
                f"ndcg@{k}"] for n in pos_n
        ])) if pos_n else 0.0

    def best_of(method: str) -> tuple[float, float]:
        key = max(grid[method], key=lambda s: grid[method][s])
        kv = dict(part.split("=") for part in key.split(","))
        return float(kv["k"]), float(kv["beta"])

    mm_k, mm_beta = best_of("multimodal-enhanced")
    lp_k, _ = best_of("lightgcn+prior")
    select_seconds = time.perf_counter() - t_sel
    params = {"multimodal-enhanced": (mm_k, mm_beta), "lightgcn+prior": (lp_k, 0.0)}

    # ---- scoring
    def method_vectors(part: _Part, method: str, n: int) -> np.ndarray:
        kk, beta = params.get(method, (0.0, 0.0))
        return vectors(part, method, n, kk, beta)

    # strong simple baselines: popularity within the user's group (the group prior of item-indicator rows), and
    # the sparse item-kNN from the revealed items' words
    indicator = np.zeros((len(warm_users), ds.n_items), dtype=np.float32)
    for r, items_ in enumerate(warm_sets):
        indicator[r, items_] = 1.0
    tie = item_pop.astype(np.float32) / max(float(item_pop.max()), 1.0) * 1e-3
    group_pop = {p.name: group_prior(groups, warm_users, indicator, p.users, config.min_group)[0] + tie[None, :]
                 for p in (val, test)}
    del indicator
    words, _ = sparse_item_rows(ds, np.arange(ds.n_items), "bm25")

    def group_pop_scorer(part: _Part) -> ScoreFn:
        rows = {int(u): r for r, u in enumerate(part.users)}

        def score(us: np.ndarray, items: np.ndarray) -> np.ndarray:
            return group_pop[part.name][[rows[int(u)] for u in us]][:, items]

        return score

    def bm25_scorer(part: _Part, n: int) -> ScoreFn:
        if n == 0:
            return group_pop_scorer(part)
        rows = {int(u): r for r, u in enumerate(part.users)}

        def score(us: np.ndarray, items: np.ndarray) -> np.ndarray:
            cand = words[items]
            return np.stack([knn_scores(cand, words[part.revealed[n][rows[int(u)]]], None) for u in us])

        return score

    def scorer(part: _Part, method: str, n: int) -> ScoreFn:
        if method == "random":
            return random_scorer(seed)
        if method == "popularity":
            return popularity_scorer(train, seed)
        if method == "group-popularity":
            return group_pop_scorer(part)
        if method == "bm25-knn":
            return bm25_scorer(part, n)
        return _vector_scorer(part.users, method_vectors(part, method, n), item_vecs)

    results: dict[str, dict[str, dict[str, Any]]] = {}
    for method in METHODS:
        results[method] = {}
        for n in reveal:
            vm = _metrics(val.tasks[n], scorer(val, method, n), k)
            tm = _metrics(test.tasks[n], scorer(test, method, n), k)
            nm = _metrics(_subtask(test.tasks[n], test.niche), scorer(test, method, n), k)
            results[method][str(n)] = {
                f"recall@{k}": tm[f"recall@{k}"],
                f"ndcg@{k}": tm[f"ndcg@{k}"],
                f"niche_recall@{k}": nm[f"recall@{k}"],
                f"niche_ndcg@{k}": nm[f"ndcg@{k}"],
                f"val_ndcg@{k}": vm[f"ndcg@{k}"],
                "n_users": tm["n_users"],
                "niche_users": nm["n_users"],
            }

    fixed: dict[str, dict[str, dict[str, Any]]] = {}
    for method in METHODS:
        fixed[method] = {}
        for n in reveal:
            tm = _metrics(test.fixed[n], scorer(test, method, n), k)
            nm = _metrics(_subtask(test.fixed[n], test.niche), scorer(test, method, n), k)
            fixed[method][str(n)] = {
                f"recall@{k}": tm[f"recall@{k}"],
                f"ndcg@{k}": tm[f"ndcg@{k}"],
                f"niche_recall@{k}": nm[f"recall@{k}"],
                f"niche_ndcg@{k}": nm[f"ndcg@{k}"],
            }

    report: dict[str, Any] = {
        "dataset": {"name": ds.name, "users": ds.n_users, "items": ds.n_items, "interactions": ds.n_interactions},
        "split": {
            "warm_users": int(len(warm_users)),
            "train_interactions": len(train),
            "val_users": int(len(val.users)),
            "test_users": int(len(test.users)),
            "eligible": f"users with > {max(reveal)} interactions",
            "order": "timestamp (ties seeded random)" if ds.timestamps is not None else "seeded random (no timestamps)",
            "user_share": config.user_share,
            "val_share": config.val_share,
        },
        "k": k,
        "seed": seed,
        "reveal": list(reveal),
        "protocol": "each held-out user reveals its first n interactions and ranks all items minus those n; "
        "recall/ndcg over its remaining interactions; mean over users",
        "niche": {
            "definition": f"bottom {config.niche_share:.3g} of held-out users by the mean warm-training popularity "
            "of the items of all their interactions (threshold per part)",
            "test_users": int(len(test.niche)),
            "val_users": int(len(val.niche)),
            "test_threshold_mean_item_interactions": round(test.niche_threshold, 3),
        },
        "groups": {
            "description": groups.description,
            "test_coverage": groups.coverage(test.users),
            "test_prior_level_share": {
                ("all-warm" if lvl < 0 else f"level{lvl}"): float(np.mean(prior_level["test"] == lvl))
                for lvl in sorted(set(prior_level["test"].tolist()))
            },
        },
        "content": {
            "fields": list(content.names),
            "dims": [int(v.shape[1]) for v in content.values],
            "source": content.source,
            "encode_seconds": round(encode_seconds, 3),
        },
        "lightgcn": {
            **llog.to_dict(),
            f"holdout_ndcg@{k}": llog.best_value,
            "bpr_first_epoch": llog.history[0]["bpr"] if llog.history else None,
            "bpr_best_epoch": llog.history[llog.best_epoch]["bpr"] if llog.best_epoch >= 0 else None,
            "config": asdict(lcfg),
        },
        "selected": {
            "fold_in": best_fold,
            "taste_ridge": best_ridge,
            "regress_ridge": None if cf_proj is None else cf_proj.ridge,
            "multimodal_k": mm_k,
            "multimodal_beta": mm_beta,
            "lightgcn_prior_k": lp_k,
            "on": f"validation users, mean ndcg@{k} over n in {pos_n}",
        },
        "validation": {
            f"fold_in_ndcg@{k}": val_fold,
            f"taste_ridge_ndcg@{k}": val_taste,
            f"regress_fold_in_ridge_ndcg@{k}": val_regress,
            f"blend_grid_ndcg@{k}": grid,
        },
        "results": results,
        "results_fixed_targets": {
            "protocol": f"same test users; targets = the interactions after the first {max(reveal)} for every n; "
            f"all of the first {max(reveal)} are excluded from the ranking, whatever n is (so the curves over n "
            "compare the same ground truth)",
            **fixed,
        },
        "selection_seconds": round(select_seconds, 3),
    }
    if config.align_dssm:
        report["dssm_alignment"] = _dssm_alignment(ds, train, config, warm_users, warm_vecs, test, val,
                                                    lambda part, m, n: method_vectors(part, m, n), reveal)
    report["total_seconds"] = round(time.perf_counter() - t_start, 3)
    return report


def _dssm_alignment(
    ds: InteractionDataset,
    train: Interactions,
    config: NewUserEvalConfig,
    warm_users: np.ndarray,
    warm_vecs: np.ndarray,
    test: _Part,
    val: _Part,
    method_vectors: Callable[[_Part, str, int], np.ndarray],
    reveal: Sequence[int],
) -> dict[str, Any]:
    """Trains the DSSM on the same warm pairs, maps LightGCN user vectors into its space, scores DSSM items."""
    k = config.k
    _log(config, "training the DSSM for the alignment")
    uf = categorical_user_features(ds.user_features, n_users=ds.n_users)
    dcfg = replace(config.dssm, seed=config.seed, eval_k=k, threads=config.threads)
    dssm, dlog = train_dssm(train, dcfg, uf, verbose=config.verbose)
    t0 = time.perf_counter()
    target = dssm.user_vectors(warm_users)
    w = fit_linear_map(warm_vecs, target)
    fit_seconds = time.perf_counter() - t0
    fitted = apply_linear_map(warm_vecs, w)
    cos = float(np.mean(np.sum(fitted * target, 1) / np.maximum(
        np.linalg.norm(fitted, axis=1) * np.linalg.norm(target, axis=1), 1e-12)))
    d_items = dssm.item_vectors(np.arange(ds.n_items))
    out: dict[str, Any] = {
        "map": "ridge linear map (64+1 -> 64) from LightGCN user vectors to DSSM user vectors, fitted on warm users; "
        "new-user vectors are rescaled to the warm users' mean norm before the map",
        "fit_seconds": round(fit_seconds, 4),
        "warm_mean_cosine": round(cos, 4),
        "dssm_seconds": round(dlog.seconds, 3),
        f"dssm_holdout_ndcg@{k}": dlog.best_value,
        "results": {},
    }
    # the blend and the fold-ins are not on the warm users' scale (the blend is unit-normalised): bring every input
    # to the warm users' mean norm first, or the map's bias term would weigh differently per method
    scale = float(np.linalg.norm(warm_vecs, axis=1).mean())

    def mapped(x: np.ndarray) -> np.ndarray:
        return apply_linear_map(x * (scale / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)), w)

    for method in ("lightgcn", "multimodal-enhanced"):
        per: dict[str, Any] = {}
        for n in reveal:
            vec = mapped(method_vectors(test, method, n))
            vec_val = mapped(method_vectors(val, method, n))
            tm = _metrics(test.tasks[n], _vector_scorer(test.users, vec, d_items), k)
            nm = _metrics(_subtask(test.tasks[n], test.niche), _vector_scorer(test.users, vec, d_items), k)
            vm = _metrics(val.tasks[n], _vector_scorer(val.users, vec_val, d_items), k)
            per[str(n)] = {f"recall@{k}": tm[f"recall@{k}"], f"ndcg@{k}": tm[f"ndcg@{k}"],
                           f"niche_ndcg@{k}": nm[f"ndcg@{k}"], f"val_ndcg@{k}": vm[f"ndcg@{k}"]}
        out["results"][f"{method}->dssm"] = per
    # DSSM's own new-user answer: the unknown-user row with the user's categorical features (n = 0 only)
    dv = dssm.user_vectors(np.full(len(test.users), -1, dtype=np.int64)) if uf is None else None
    if uf is not None:
        import torch

        with torch.no_grad():
            feats = torch.from_numpy(uf.values[test.users])
            dv = dssm.users(torch.full((len(test.users),), -1, dtype=torch.long), feats).numpy()
    assert dv is not None
    out["results"]["dssm-unknown-user"] = {
        str(n): {f"ndcg@{k}": _metrics(test.tasks[n], _vector_scorer(test.users, dv, d_items), k)[f"ndcg@{k}"]}
        for n in reveal if n == 0
    }
    return out


def evaluate_new_users(
    interactions: PathLike | InteractionDataset | None = None,
    item_content: PathLike | Sequence[PathLike] | None = None,
    *,
    dataset: str | None = None,
    user_groups: PathLike | None = None,
    reveal: Sequence[int] = (0, 1, 3, 5),
    k: int = 20,
    seed: int = 0,
    config: NewUserEvalConfig | None = None,
    content: ContentFields | None = None,
) -> dict[str, Any]:
    """Evaluates new-user recommenders (see the module docstring for the protocol).

    Args:
        interactions: Interactions file in the generic format (``user,item[,weight][,ts]``) or a loaded dataset;
            ``None`` with ``dataset``.
        item_content: Item content file(s) for an interactions file (tags file and/or JSONL).
        dataset: Built-in dataset name (``ml-100k``, ``lastfm``).
        user_groups: ``user,group`` CSV for the group prior (default: the dataset's own groups, if any).
        reveal: Revealed interaction counts.
        k: Cut-off.
        seed: Seed.
        config: Further settings; ``reveal``, ``k`` and ``seed`` given here win over it.
        content: Precomputed content fields (skips MiniLM).

    Returns:
        JSON-ready dict: ``dataset``, ``split``, ``niche``, ``groups``, ``content``, ``lightgcn`` (training log),
        ``selected`` and ``validation`` (the choices and their validation NDCG), ``results[method][n]`` with
        ``recall@K``, ``ndcg@K``, ``niche_recall@K``, ``niche_ndcg@K``, ``val_ndcg@K``, ``n_users``,
        ``niche_users`` on test users, ``dssm_alignment`` and timings.
    """
    t0 = time.perf_counter()
    cfg = replace(config or NewUserEvalConfig(), reveal=tuple(reveal), k=k, seed=seed)
    if dataset is not None:
        ds = load_dataset(dataset)
    elif isinstance(interactions, InteractionDataset):
        ds = interactions
    elif interactions is not None:
        ds = load_generic(interactions, item_content)
    else:
        raise ValueError("need an interactions file, a dataset or a dataset name")
    groups = default_groups(ds, user_groups)
    load_seconds = time.perf_counter() - t0
    report = run_new_users(ds, cfg, content=content, groups=groups)
    report["load_seconds"] = round(load_seconds, 3)
    report["total_seconds"] = round(time.perf_counter() - t0, 3)
    return report


def format_table(report: dict[str, Any]) -> str:
    """A fixed-width text table: per method and reveal count, test Recall/NDCG@K, all users and the niche slice."""
    k = report["k"]
    head = f"{'method':<22}{'n':>3}" + "".join(
        f"{c:>14}" for c in (f"recall@{k}", f"ndcg@{k}", f"niche_rec@{k}", f"niche_ndcg@{k}", f"val_ndcg@{k}"))
    lines = [f"{report['dataset']['name']}: {report['split']['test_users']} test users "
             f"({report['niche']['test_users']} niche), {report['split']['val_users']} validation users", head,
             "-" * len(head)]
    for method, per in report["results"].items():
        for n, m in per.items():
            cells = [m[f"recall@{k}"], m[f"ndcg@{k}"], m[f"niche_recall@{k}"], m[f"niche_ndcg@{k}"],
                     m[f"val_ndcg@{k}"]]
            lines.append(f"{method:<22}{n:>3}" + "".join(f"{v:>14.4f}" for v in cells))
    lg = report["lightgcn"]
    lines.append(f"LightGCN: {lg['seconds']:.1f}s, best epoch {lg['best_epoch']}, warm hold-out ndcg@{k} "
                 f"{lg['best_value']:.4f}")
    lines.append("selected on validation: " + ", ".join(f"{a}={b}" for a, b in report["selected"].items()
                                                         if a != "on"))
    lines.append(f"total {report['total_seconds']:.1f}s")
    return "\n".join(lines)
