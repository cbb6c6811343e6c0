"""Cold-item quality against the simulator's ground truth: does every content field beat text-only content-kNN?

Run::

    python -m benchmarks.sim_cold_start                  # default 240 steps: ~1,500 items of all five kinds
    python -m benchmarks.sim_cold_start --steps 120      # smaller (a check run)
    python -m benchmarks.sim_cold_start --steps 60 --objectives regression --bootstrap 200   # smoke run

Runs on registry data by default: the demo community's catalogue (``--catalogue community``: the first
``--clips`` (160) planned music21 clips, ``thaw corpus music build --clips 160``, their composer posts and the
OpenMoji moments); ``--catalogue lastfm`` asks for the Last.fm catalogue (``THAW_DATASETS_DIR``, plus every corpus
built). The media fields need the published encoders (``thaw models install-bundled``, or ``thaw train musicclip``,
``thaw train audio-mae``, ``thaw train flava``); a field without a published encoder is absent and listed under
``featurizer.missing``. A catalogue smaller than the run reuses its assets (the simulator cycles through each
kind's pool): 160 clips cover ~120 steps of tracks without reuse, so read ``--steps 240`` on the community
catalogue with that in mind (the measured numbers below are the Last.fm catalogue's, 600 clips).

The community simulator (``workloads.simulator``) builds items of all five kinds from real assets (tracks = rendered
music21 clips with their metadata tags, moments = OpenMoji images with captions, dynamics / fan groups / comments =
text) and users with latent tastes; a documented choice model draws the interactions, so the **true relevance** of
every item for every user is known (``p_engage >= relevance_threshold``).

Protocol: the newest 20% of items (by creation time) are the cold test items and the 10% before them the cold
validation items; every interaction on them is held out. Every warm user ranks all cold test items;
Precision/Recall/NDCG@k against (a) the ground-truth relevant set (``truth``) and (b) the user's held-out
interactions (``interactions``), plus truth NDCG@k when the candidates are only the test tracks (audio) or only the
test moments (images). **Every choice** (kNN neighbourhood sizes, CB2CF objective and early stopping, the hybrid's
weighting and weight, hybrid vs plain CB2CF) is made on the validation cold items against the ground truth
(``truth_val``); test items are scored once with the chosen settings.

Models:

* baselines: random; dense content-kNN over the MiniLM ``text`` field (and over every dense field); TF-IDF and BM25
  sparse item-kNN over the items' text and tag words (:func:`ranking.evaluation.baselines.sparse_knn_scorer`);
  neighbourhood size in (all, 10, 50) chosen on validation;
* learned, per field set: a DSSM is trained once on the warm positives; CB2CF maps the chosen content fields to its
  item space (the stream's featuriser: ``text`` MiniLM, ``audio_clip`` MusicCLIP, ``audio_mae`` Audio MAE, ``image``
  and ``image_text`` FLAVA-style; plus ``words``, the BM25 row over text and tag words fitted on the warm items);
  the **hybrid** adds ``w x`` sparse kNN over all of the user's warm items (TF-IDF or BM25 and ``w`` in
  :data:`ranking.evaluation.cold_items.HYBRID_WEIGHTS` chosen on validation,
  :func:`ranking.evaluation.cold_items.hybrid_scorer`); the **served** model of a
  field set is the hybrid or plain CB2CF, whichever wins on validation (as ``thaw evaluate cold-items`` picks it).
* field sets: ``text``; ``text+words``; ``every field`` (every featuriser field + ``words``) and its leave-one-out
  ablations (``every field - F`` for each non-text featuriser field ``F`` and for ``words``).

Every learned model is trained with ``--train-seeds`` CB2CF seeds (one DSSM) and reported as the mean over seeds
(with the seed standard deviation); each seed makes its own validation choices. The report's ``ablation`` table
gives, per field set, the served model's NDCG@k / Recall@k on truth and interactions and its difference to
``every field`` with a paired bootstrap 95% interval over test users (of the seed-averaged per-user NDCG);
``verdict`` compares the served every-field model with text-only content-kNN (and with the strongest baseline and
the served text-only models) on truth. Diagnostic: ``non_personal_truth_ndcg@k`` = the CB2CF item vectors scored
with one mean user vector, i.e. how much of its quality is item-level (which content the population engages with)
rather than personal taste.
Personal relevance per kind (``verdict.personal_by_kind``; :mod:`ranking.evaluation.personal`): for the served
models, the text-only models (served text+words, dense text content-kNN, TF-IDF / BM25 item-kNN) and random, truth
NDCG@k with the candidates restricted to one group (all cold test items, only tracks, only moments, and when the run
has both, the text-poor and the text-rich posts of a kind apart), each beside its **non-personal control** (the
same model's scores of one mean user for everyone), so ranking kinds or popular topics cannot pass for
personalisation.

Text-poor posts: ``--text-poor-share track=0.5,moment=0.5`` publishes that share of new posts without tags, with a
throwaway caption and opaquely named media (``SimConfig.text_poor_share``); the truth stays the real tags'.
``--sim-seeds N`` repeats the whole run on N simulator seeds and summarises the personal table over them
(``over_sim_seeds``: mean, sd, the served model minus each text-only model paired by seed); ``--no-ablations``
learns only the text, text+words and every-field variants. The quickest meaningful text-poor run::

    python -m benchmarks.sim_cold_start --text-poor-share track=0.5,moment=0.5 --steps 180 --sim-seeds 3 \
        --train-seeds 1 --objectives regression --no-ablations --bootstrap 200

Writes ``benchmarks/results/sim_cold_start.{json,png}`` (``sim_cold_start_text_poor.{json,png}`` with
``--text-poor-share``; ``--name`` elsewhere).
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, machine_info, write_json
from ranking.evaluation.personal import candidate_groups, personal_report

EVERY = "every field"
KNN_KS: tuple[int | None, ...] = (None, 10, 50)
MEDIA_KINDS = ("track", "moment")  # the kinds whose items carry audio / images
WIDE_EXTRA_WEIGHTS = (0.01, 0.02, 0.05, 0.1, 0.2)
"""Diagnostic only: hybrid weights below the served grid's smallest, tried on validation beside it."""


def simulate(steps: int, seed: int, catalogue: str = "community", n_clips: int = 160,
             text_poor_share: dict[str, float] | None = None) -> tuple[Any, list[tuple[str, str, float, float]], int]:
    """Run the simulator on the real corpora: ``(simulator, positive interactions (user, item, action weight, ts),
    number of user events)``; ``catalogue``: ``community`` (registry data) or ``lastfm``
    (:func:`workloads.community.sim_catalogue`)."""
    from contracts.actions import ACTION_WEIGHTS
    from workloads.community import sim_catalogue
    from workloads.simulator import CommunitySimulator, SimConfig

    cat = sim_catalogue(catalogue, n_clips=n_clips, require_corpora=True)
    sim = CommunitySimulator(cat, SimConfig(seed=seed, steps=steps, text_poor_share=dict(text_poor_share or {})))
    rows: list[tuple[str, str, float, float]] = []
    n_events = 0
    for ev in sim.stream():
        if ev.topic == "user.events":
            n_events += 1
            w = ACTION_WEIGHTS[ev.data["action"]]
            if w > 0:
                rows.append((ev.data["user_id"], ev.data["item_id"], w, ev.ts))
    return sim, rows, n_events


def _featurize(items: list[Any], batch: int = 32, threads: int = 2) -> tuple[Any, dict[str, Any]]:
    """ContentFields of every sim item through the stream's featuriser (media decoded from the asset files)."""
    from infra.settings import load_settings
    from ranking.training.content import featurizer_fields

    a = [it.asset for it in items]
    return featurizer_fields([x.text for x in a], [list(x.tags) for x in a], [it.kind for it in items],
                             [x.image for x in a], [x.audio for x in a], load_settings().models.dir,
                             threads=threads, batch=batch)


def _sparse_rows(docs: list[list[str]], fit_items: np.ndarray, weighting: Any, min_df: int = 1,
                 max_features: int | None = None) -> tuple[Any, Any]:
    """TF-IDF/BM25 rows of every item, the vectorizer fitted on ``fit_items`` only (the warm items)."""
    from ranking.online.sparse import SparseVectorizer

    vec = SparseVectorizer.fit([docs[i] for i in fit_items], weighting=weighting, min_df=min_df,
                               max_features=max_features)
    return vec.transform(docs), vec


# ------------------------------------------------------------------------------------------------- metrics


def per_user(task: Any, scores: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user NDCG/Recall/Precision@k of a ``users x candidates`` score matrix (the same top-k and tie-breaking
    as :class:`workloads.metrics.RankingMetrics`, whose means these are; every task row has a relevant item)."""
    from workloads.metrics import topk

    cols, valid = topk(scores, k)
    rel = np.zeros(scores.shape, dtype=bool)
    for r, c in enumerate(task.relevant):
        rel[r, c] = True
    hits = np.take_along_axis(rel, cols, axis=1) & valid
    n_rel = rel.sum(axis=1)
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    idcg = np.cumsum(disc)[np.minimum(n_rel, k) - 1]
    dcg = (hits * disc[: cols.shape[1]]).sum(axis=1)
    nh = hits.sum(axis=1)
    return {"ndcg": dcg / idcg, "recall": nh / n_rel, "precision": nh / k}


def _mean_metrics(entries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean over seeds of the metric leaves (``truth``, ``interactions``, ``truth_by_kind``, ``val_ndcg@k``)."""
    out: dict[str, Any] = {}
    for key, v in entries[0].items():
        if isinstance(v, dict) and key == "personal":  # group -> metrics, the non-personal control included
            out[key] = {g: {m: round(float(np.mean([e[key][g][m] for e in entries])), 5) for m in gv
                            if isinstance(gv[m], float)} | {"users": gv["users"], "candidates": gv["candidates"]}
                        for g, gv in v.items()}
        elif isinstance(v, dict) and key in ("truth", "interactions", "truth_by_kind", *MEDIA_KINDS):
            out[key] = _mean_metrics([e[key] for e in entries])
        elif isinstance(v, float) and "@" in key and not key.startswith("non_personal"):
            out[key] = round(float(np.mean([e[key] for e in entries])), 5)
    return out


def seed_interval(values: Sequence[float]) -> list[float]:
    """Mean +- Student-t 95% half-width over training seeds (nan with fewer than two)."""
    from scipy import stats

    x = np.asarray(values, np.float64)
    if len(x) < 2:
        return [float("nan"), float("nan")]
    h = float(stats.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / np.sqrt(len(x)))
    return [round(float(x.mean()) - h, 5), round(float(x.mean()) + h, 5)]


def paired_ci(a: np.ndarray, b: np.ndarray, n_boot: int, seed: int) -> list[float]:
    """95% paired bootstrap interval (over users) of ``mean(a) - mean(b)``."""
    d = np.asarray(a, np.float64) - np.asarray(b, np.float64)
    if n_boot <= 0 or len(d) == 0:
        return [float("nan"), float("nan")]
    rng = np.random.default_rng(seed)
    means = np.array([d[rng.integers(0, len(d), len(d))].mean() for _ in range(n_boot)])
    return [round(float(np.percentile(means, 2.5)), 5), round(float(np.percentile(means, 97.5)), 5)]


class Scorer:
    """Scores models on the fixed tasks once and keeps the per-user test values (for paired intervals).

    Args:
        tasks: ``name -> EvalTask``; ``truth_val`` drives every choice; the rest are reported.
        k: Cut-off.
    """

    def __init__(self, tasks: dict[str, Any], k: int, groups: dict[str, np.ndarray] | None = None) -> None:
        self.tasks = tasks
        self.k = k
        self.groups = groups or {}  # column groups of the truth task (ranking.evaluation.personal)
        self.per_user: dict[str, dict[str, np.ndarray]] = {}

    def matrices(self, score: Callable[[np.ndarray, np.ndarray], np.ndarray]) -> dict[str, np.ndarray]:
        return {n: np.asarray(score(t.users, t.candidates), dtype=np.float32) for n, t in self.tasks.items()}

    def val_ndcg(self, m: np.ndarray) -> float:
        return float(per_user(self.tasks["truth_val"], m, self.k)["ndcg"].mean())

    def entry(self, name: str, mats: dict[str, np.ndarray], **extra: Any) -> dict[str, Any]:
        """Metrics of one model from its score matrices; the per-user test values are kept under ``name``."""
        k = self.k
        out: dict[str, Any] = {}
        for tname, task in self.tasks.items():
            pu = per_user(task, mats[tname], k)
            if tname == "truth_val":
                out[f"val_ndcg@{k}"] = round(float(pu["ndcg"].mean()), 5)
            elif tname in ("truth", "interactions"):
                out[tname] = {f"{m}@{k}": round(float(v.mean()), 5) for m, v in pu.items()}
                if tname == "truth":
                    self.per_user[name] = pu
                    if self.groups:
                        out["personal"] = personal_report(mats[tname], task.relevant, k, self.groups)
            else:  # truth restricted to one kind
                out.setdefault("truth_by_kind", {})[tname.split(":", 1)[1]] = {
                    f"ndcg@{k}": round(float(pu["ndcg"].mean()), 5)}
        return {**out, **extra}


# ---------------------------------------------------------------------------------------------------- main
def add_catalogue_options(ap: argparse.ArgumentParser) -> None:
    """``--catalogue`` (community: registry data, default; lastfm: ``THAW_DATASETS_DIR``) and ``--clips``."""
    from workloads.community import SIM_CATALOGUES

    ap.add_argument("--catalogue", choices=SIM_CATALOGUES, default="community",
                    help="simulator catalogue: community (default: music21 clips, composer posts, OpenMoji) or "
                         "lastfm (needs THAW_DATASETS_DIR)")
    ap.add_argument("--clips", type=int, default=160, help="music21 clips of the community catalogue (default 160)")



def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.sim_cold_start", description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=240, help="simulated steps (default 240)")
    ap.add_argument("--seed", type=int, default=0)
    add_catalogue_options(ap)
    ap.add_argument("--k", type=int, default=20)
    ap.add_argument("--objectives", default="regression,contrastive,combined",
                    help="CB2CF objectives tried per field set, the best on validation is kept")
    ap.add_argument("--train-seeds", type=int, default=5,
                    help="CB2CF training seeds per field set (seed, seed+1, ...); metrics are their mean")
    ap.add_argument("--bootstrap", type=int, default=2000, help="paired bootstrap resamples (0: no intervals)")
    ap.add_argument("--threads", type=int, default=1, help="torch / ONNX Runtime threads")
    ap.add_argument("--text-poor-share", type=parse_shares, default={},
                    help="kind=share,... of new posts published text-poor (no tags, a throwaway caption), e.g. "
                         "track=0.5,moment=0.5 (default: none, the text-rich case)")
    ap.add_argument("--sim-seeds", type=int, default=1,
                    help="simulator seeds (seed, seed+1, ...): the whole run per seed, the personal table "
                         "summarised over them (mean, sd) under 'over_sim_seeds'")
    ap.add_argument("--no-ablations", action="store_true",
                    help="learn only the text, text+words and every-field variants (no leave-one-out ablations)")
    ap.add_argument("--name", default=None,
                    help="result file stem (default sim_cold_start, sim_cold_start_text_poor with --text-poor-share)")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    from ranking.models.cb2cf import OBJECTIVES

    if not objectives or set(objectives) - set(OBJECTIVES):
        ap.error(f"--objectives: any of {OBJECTIVES}")
    name = args.name or ("sim_cold_start_text_poor" if args.text_poor_share else "sim_cold_start")
    t_all = time.perf_counter()
    runs = [run(args, args.seed + j) for j in range(max(1, args.sim_seeds))]
    report = runs[0] if len(runs) == 1 else {**runs[0], "over_sim_seeds": over_seeds(runs, args.k),
                                               "runs_by_sim_seed": [_condensed(r) for r in runs]}
    report["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", report)
    _plot(report, args.out / f"{name}.png", args.k)
    print(_table(report, args.k), file=sys.stderr)
    print(args.out / f"{name}.json")
    return 0


def parse_shares(text: str) -> dict[str, float]:
    """``track=0.5,moment=0.5`` -> ``{"track": 0.5, "moment": 0.5}``."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in text.split(",") if p.strip()):
        kind, _, val = part.partition("=")
        try:
            out[kind.strip()] = float(val)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{part!r}: kind=share") from None
    return out


def run(args: argparse.Namespace, sim_seed: int) -> dict[str, Any]:
    """One whole run (simulation, features, baselines, learned variants) on simulator seed ``sim_seed``."""

    from ranking.evaluation.baselines import content_knn_scorer, random_scorer, sparse_knn_scorer
    from ranking.evaluation.cold_items import HYBRID_WEIGHTS, SPARSE_MODELS
    from ranking.models.cb2cf import CB2CFConfig
    from ranking.models.dssm import DSSMConfig
    from ranking.online.sparse import WORDS_FIELD, item_tokens
    from ranking.training.cb2cf import cb2cf_score, train_cb2cf
    from ranking.training.common import Interactions
    from ranking.training.content import ContentFields
    from ranking.training.dssm import train_dssm
    from workloads.splits import EvalTask

    objectives = tuple(o.strip() for o in args.objectives.split(",") if o.strip())
    k = args.k
    timings: dict[str, float] = {}
    t_all = time.perf_counter()
    t0 = time.perf_counter()
    args = argparse.Namespace(**{**vars(args), "seed": sim_seed})
    sim, rows, n_events = simulate(args.steps, args.seed, args.catalogue, args.clips, args.text_poor_share)
    timings["simulate"] = round(time.perf_counter() - t0, 1)
    pos_u = [r[0] for r in rows]
    pos_i = [r[1] for r in rows]
    items, users = sim.items, sim.users
    item_ix = {it.item_id: j for j, it in enumerate(items)}
    user_ix = {u.user_id: j for j, u in enumerate(users)}
    pu = np.array([user_ix[u] for u in pos_u], dtype=np.int64)
    pi = np.array([item_ix[i] for i in pos_i], dtype=np.int64)
    order = np.argsort([it.created_ts for it in items], kind="stable")
    n = len(items)
    test_items = np.sort(order[int(0.8 * n):])
    val_items = np.sort(order[int(0.7 * n) : int(0.8 * n)])
    cold = np.zeros(n, dtype=bool)
    cold[test_items] = cold[val_items] = True
    warm_rows = ~cold[pi]
    train = Interactions(pu[warm_rows], pi[warm_rows], len(users), n)
    warm_users = np.unique(train.users)
    kinds = np.array([it.kind for it in items])
    report: dict[str, Any] = {
        "benchmark": "sim_cold_start", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"steps": args.steps, "seed": args.seed, "catalogue": args.catalogue, "clips": args.clips,
                   "text_poor_share": dict(args.text_poor_share), "train_seeds": args.train_seeds,
                   "ablations": not args.no_ablations,
                   "k": k, "objectives": list(objectives),
                   "bootstrap": args.bootstrap, "threads": args.threads, "knn_ks": ["all", 10, 50],
                   "hybrid_weights": list(HYBRID_WEIGHTS), "selection": "every choice on truth_val (validation "
                   "cold items, ground-truth relevance); test scored once"},
        "data": {"items": n, "items_by_kind": {kd: int((kinds == kd).sum()) for kd in
                                               ("track", "comment", "moment", "dynamic", "fan_group")},
                 "catalogue_sources": dict(getattr(sim.cat, "sources", {})),
                 "users": len(users), "events": n_events, "positive_interactions": int(len(pu)),
                 "warm_interactions": int(warm_rows.sum()), "warm_users": int(len(warm_users)),
                 "cold_test_items": int(len(test_items)), "cold_val_items": int(len(val_items)),
                 "cold_test_items_by_kind": {kd: int((kinds[test_items] == kd).sum()) for kd in MEDIA_KINDS},
                 "distinct_audio_assets": len({it.asset.audio for it in items if it.asset.audio}),
                 "items_with_audio": sum(1 for it in items if it.asset.audio),
                 "text_poor_items_by_kind": {kd: int(sum(it.text_poor for it in items if it.kind == kd))
                                             for kd in ("track", "comment", "moment")},
                 "cold_test_text_poor_by_kind": {kd: int(sum(items[i].text_poor for i in test_items
                                                             if items[i].kind == kd)) for kd in MEDIA_KINDS}},
        "machine": machine_info(),
    }
    print(f"[sim_cold_start] {report['data']}", file=sys.stderr)

    def task(cands: np.ndarray, truth: bool) -> EvalTask:
        col = {int(c): j for j, c in enumerate(cands)}
        if truth:
            rel_sets = sim.true_relevance(list(warm_users), list(cands)) >= sim.cfg.relevance_threshold
            rel = [np.flatnonzero(r) for r in rel_sets]
        else:
            on = np.isin(pi, cands)
            by_user: dict[int, set[int]] = {}
            for u, i in zip(pu[on], pi[on], strict=True):
                by_user.setdefault(int(u), set()).add(col[int(i)])
            rel = [np.array(sorted(by_user.get(int(u), set())), dtype=np.int64) for u in warm_users]
        keep = [r for r in range(len(warm_users)) if len(rel[r])]
        return EvalTask(users=warm_users[keep], candidates=cands, relevant=[rel[r] for r in keep])

    tasks = {"truth_val": task(val_items, True), "truth": task(test_items, True),
             "interactions": task(test_items, False)}
    for kd in MEDIA_KINDS:
        sub_items = test_items[kinds[test_items] == kd]
        if len(sub_items) > k:
            tasks[f"truth:{kd}"] = task(sub_items, True)
    report["data"]["users_per_task"] = {nm: t.n_rows for nm, t in tasks.items()}
    # personal relevance per kind (and text-poor vs text-rich): column groups of the truth task's candidates
    groups = candidate_groups(kinds[test_items].tolist(), [items[i].text_poor for i in test_items], only=MEDIA_KINDS)
    sc = Scorer(tasks, k, groups)

    # ------------------------------------------------------------------------------------ content fields
    t0 = time.perf_counter()
    dense, finfo = _featurize(items, threads=args.threads)
    timings["featurize"] = round(time.perf_counter() - t0, 1)
    report["featurizer"] = finfo
    print(f"[sim_cold_start] features: {finfo}", file=sys.stderr)
    docs = [item_tokens(it.asset.text, list(it.asset.tags)) for it in items]
    fit_items = np.flatnonzero(~cold)  # the warm catalogue: every item older than the cold ones
    words_rows, words_vec = _sparse_rows(docs, fit_items, "bm25", min_df=2, max_features=50_000)
    words = ContentFields((WORDS_FIELD,), (words_rows,), np.asarray(words_rows.getnnz(axis=1) > 0)[:, None],
                          {WORDS_FIELD: f"bm25 over text and tag words, {len(words_vec.vocab)} words (min_df 2) "
                           f"fitted on {len(fit_items)} warm items"})
    content = dense.merge(words)
    report["featurizer"]["words"] = {"vocabulary": len(words_vec.vocab),
                                     "present_share": round(float(words.present.mean()), 3)}

    # -------------------------------------------------------------------------------------------- baselines
    t0 = time.perf_counter()
    baselines: dict[str, Any] = {"random": sc.entry("random", sc.matrices(random_scorer(args.seed)))}

    def knn_baseline(name: str, make: Callable[[int | None], Any], **extra: Any) -> None:
        mats_by_k = {kk: sc.matrices(make(kk)) for kk in KNN_KS}
        val = {("all" if kk is None else str(kk)): sc.val_ndcg(m["truth_val"]) for kk, m in mats_by_k.items()}
        best = max(val, key=lambda s: val[s])
        baselines[name] = sc.entry(name, mats_by_k[None if best == "all" else int(best)], neighbours=best,
                                   val_ndcg_by_neighbours={s: round(v, 5) for s, v in val.items()}, **extra)

    text_vec = dense.select(("text",)).concatenated()
    knn_baseline("content-knn (text)", lambda kk: content_knn_scorer(text_vec, train, kk), fields=["text"])
    if len(dense.names) > 1:
        all_vec = dense.concatenated()
        knn_baseline("content-knn (every dense field)", lambda kk: content_knn_scorer(all_vec, train, kk),
                     fields=list(dense.names))
    sparse_rows: dict[str, Any] = {}
    for name, weighting in SPARSE_MODELS.items():
        rows_w, vec_w = _sparse_rows(docs, fit_items, weighting)
        sparse_rows[name] = rows_w

        def make_sparse(kk: int | None, r: Any = rows_w) -> Any:
            return sparse_knn_scorer(r, train, kk)

        knn_baseline(name, make_sparse, vocabulary=len(vec_w.vocab), fitted_on="warm items",
                     tokens="item text + tag words + whole tags")
    timings["baselines"] = round(time.perf_counter() - t0, 1)
    for nm, e in baselines.items():
        print(f"[sim_cold_start] {nm}: truth ndcg {e['truth'][f'ndcg@{k}']} val {e[f'val_ndcg@{k}']}",
              file=sys.stderr)

    # ------------------------------------------------------------------------------------------------- DSSM
    t0 = time.perf_counter()
    dssm, dlog = train_dssm(train, DSSMConfig(seed=args.seed, eval_k=k, threads=args.threads))
    timings["dssm"] = round(time.perf_counter() - t0, 1)
    report["dssm"] = {"seconds": timings["dssm"], "best_epoch": dlog.best_epoch,
                      f"warm_holdout_ndcg@{k}": round(float(dlog.best_value), 5)}
    warm_items = np.flatnonzero(train.item_counts() > 0)
    targets = dssm.item_vectors(warm_items)

    # the hybrid's sparse half: kNN over all of the user's items, rows capped at the served vocabulary (4096)
    hybrid_knn = {}
    for name, weighting in SPARSE_MODELS.items():
        rows_h, _ = _sparse_rows(docs, fit_items, weighting, max_features=4096)
        hybrid_knn[name] = sc.matrices(sparse_knn_scorer(rows_h, train, None))

    # ------------------------------------------------------------------------------------- learned variants
    others = [f for f in dense.names if f != "text"]
    variants: dict[str, tuple[str, ...]] = {"text": ("text",), "text+words": ("text", WORDS_FIELD),
                                            EVERY: (*dense.names, WORDS_FIELD)}
    if not args.no_ablations:
        for f in others:
            variants[f"{EVERY} - {f}"] = tuple(x for x in variants[EVERY] if x != f)
        variants[f"{EVERY} - {WORDS_FIELD}"] = tuple(dense.names)
    train_seeds = [args.seed + j for j in range(args.train_seeds)]
    mean_user = dssm.user_vectors(warm_users).mean(axis=0, keepdims=True)

    def non_personal(users: np.ndarray) -> np.ndarray:
        return np.repeat(mean_user, len(users), axis=0)

    def fit_variant(label: str, fields: tuple[str, ...], seed: int) -> dict[str, Any]:
        """CB2CF (objective and early stopping on validation) and its hybrid for one field set and seed."""
        sub = content.select(fields)
        per_obj: dict[str, Any] = {}
        for obj in objectives:
            cfg = replace(CB2CFConfig(), seed=seed, eval_k=k, out_dim=DSSMConfig().dim, threads=args.threads,
                          objective=obj)
            res = train_cb2cf(sub, warm_items, targets, cfg, tasks["truth_val"], dssm.user_vectors)
            mats = sc.matrices(cb2cf_score(res.model, sub, dssm.user_vectors))
            per_obj[obj] = (sc.val_ndcg(mats["truth_val"]), mats, res)
        best_obj = max(per_obj, key=lambda o: per_obj[o][0])
        _, cf_mats, res = per_obj[best_obj]
        np_mats = sc.matrices(cb2cf_score(res.model, sub, non_personal))
        np_truth = float(per_user(tasks["truth"], np_mats["truth"], k)["ndcg"].mean())
        cb2cf = sc.entry(f"cb2cf|{label}|{seed}", cf_mats, objective=best_obj, best_epoch=res.log.best_epoch,
                         epochs_run=res.log.epochs_run, **{f"non_personal_truth_ndcg@{k}": round(np_truth, 5)},
                         val_ndcg_by_objective={o: round(v[0], 5) for o, v in per_obj.items()})
        grid: dict[str, float] = {}

        def best_weight(weights: tuple[float, ...]) -> tuple[str, float]:
            """Adds ``weights`` to ``grid`` (validation NDCG per sparse model x weight); the best key so far."""
            for name in SPARSE_MODELS:
                for w in weights:
                    knn_val = hybrid_knn[name]["truth_val"]
                    grid[f"{name}|{w:g}"] = sc.val_ndcg(cf_mats["truth_val"] + np.float32(w) * knn_val)
            key = max(grid, key=lambda g: grid[g])
            return key.split("|")[0], float(key.split("|")[1])

        h_name, h_w = best_weight(HYBRID_WEIGHTS)
        h_mats = {tn: cf_mats[tn] + np.float32(h_w) * hybrid_knn[h_name][tn] for tn in tasks}
        hybrid = sc.entry(f"hybrid|{label}|{seed}", h_mats, sparse=h_name, weight=h_w,
                          val_ndcg_by_weight={g: round(v, 5) for g, v in grid.items()})
        # diagnostic, not served: the same hybrid with weights below the served grid's smallest too
        x_name, x_w = best_weight(WIDE_EXTRA_WEIGHTS)
        wide = sc.entry(f"hybrid-wide|{label}|{seed}",
                        {tn: cf_mats[tn] + np.float32(x_w) * hybrid_knn[x_name][tn] for tn in tasks},
                        sparse=x_name, weight=x_w)
        served = "hybrid" if hybrid[f"val_ndcg@{k}"] > cb2cf[f"val_ndcg@{k}"] else "cb2cf"
        sc.per_user[f"served|{label}|{seed}"] = sc.per_user[f"{served}|{label}|{seed}"]
        print(f"[sim_cold_start] {label} seed {seed}: cb2cf truth {cb2cf['truth'][f'ndcg@{k}']} (val "
              f"{cb2cf[f'val_ndcg@{k}']}, {best_obj}, non-personal {np_truth:.4f}), hybrid truth "
              f"{hybrid['truth'][f'ndcg@{k}']} (val {hybrid[f'val_ndcg@{k}']}, {h_name} w={h_w:g}) served={served}",
              file=sys.stderr)
        return {"seed": seed, "served": served, "cb2cf": cb2cf, "hybrid": hybrid, "hybrid-wide": wide}

    models: dict[str, Any] = {}
    t_learn = time.perf_counter()
    done: dict[tuple[str, ...], str] = {}
    for label, fields in variants.items():
        if fields in done:  # e.g. without media encoders 'every field' is 'text+words'
            models[label] = {**models[done[fields]], "same_as": done[fields]}
            for kind in ("cb2cf", "hybrid", "served", "hybrid-wide"):
                sc.per_user[f"{kind}|{label}"] = sc.per_user[f"{kind}|{done[fields]}"]
            continue
        done[fields] = label
        t0 = time.perf_counter()
        runs = [fit_variant(label, fields, sd) for sd in train_seeds]
        agg: dict[str, Any] = {"fields": list(fields), "served_by_seed": [r["served"] for r in runs]}
        for kind in ("cb2cf", "hybrid", "served", "hybrid-wide"):
            entries = [r[r["served"]] if kind == "served" else r[kind] for r in runs]
            agg[kind] = {**_mean_metrics(entries), f"truth_ndcg@{k}_seed_sd": round(float(np.std(
                [e["truth"][f"ndcg@{k}"] for e in entries])), 5)}
            users_by_seed = [sc.per_user[f"{kind}|{label}|{sd}"] for sd in train_seeds]
            sc.per_user[f"{kind}|{label}"] = {m: np.mean([u[m] for u in users_by_seed], axis=0)
                                              for m in users_by_seed[0]}
        agg["cb2cf"][f"non_personal_truth_ndcg@{k}"] = round(float(np.mean(
            [r["cb2cf"][f"non_personal_truth_ndcg@{k}"] for r in runs])), 5)
        agg["runs"] = runs
        agg["seconds"] = round(time.perf_counter() - t0, 1)
        models[label] = agg
    timings["learned_variants"] = round(time.perf_counter() - t_learn, 1)

    # ----------------------------------------------------------------------------------- ablation, verdict
    nb, bs = args.bootstrap, args.seed

    def served_entry(label: str) -> dict[str, Any]:
        return dict(models[label]["served"])

    def served_by_seed(label: str, j: int) -> dict[str, Any]:
        run = models[label]["runs"][j]
        return dict(run[run["served"]])

    ref = served_entry(EVERY)
    ablation = []
    for label, m in models.items():
        e = served_entry(label)
        row: dict[str, Any] = {
            "variant": label, "fields": m["fields"], "served_by_seed": m["served_by_seed"],
            f"truth_ndcg@{k}_seed_sd": e[f"truth_ndcg@{k}_seed_sd"],
            f"cb2cf_non_personal_truth_ndcg@{k}": m["cb2cf"][f"non_personal_truth_ndcg@{k}"],
            f"truth_ndcg@{k}": e["truth"][f"ndcg@{k}"], f"truth_recall@{k}": e["truth"][f"recall@{k}"],
            f"interactions_ndcg@{k}": e["interactions"][f"ndcg@{k}"],
            f"interactions_recall@{k}": e["interactions"][f"recall@{k}"],
            f"val_ndcg@{k}": e[f"val_ndcg@{k}"],
            f"delta_truth_ndcg@{k}": round(e["truth"][f"ndcg@{k}"] - ref["truth"][f"ndcg@{k}"], 5),
            f"delta_truth_recall@{k}": round(e["truth"][f"recall@{k}"] - ref["truth"][f"recall@{k}"], 5),
            f"delta_interactions_ndcg@{k}": round(e["interactions"][f"ndcg@{k}"] - ref["interactions"][f"ndcg@{k}"],
                                                  5),
            f"delta_interactions_recall@{k}": round(
                e["interactions"][f"recall@{k}"] - ref["interactions"][f"recall@{k}"], 5),
            f"delta_truth_ndcg@{k}_ci95": paired_ci(sc.per_user[f"served|{label}"]["ndcg"],
                                                   sc.per_user[f"served|{EVERY}"]["ndcg"], nb, bs),
            f"cb2cf_truth_ndcg@{k}": m["cb2cf"]["truth"][f"ndcg@{k}"],
            f"cb2cf_delta_truth_ndcg@{k}": round(m["cb2cf"]["truth"][f"ndcg@{k}"]
                                                 - models[EVERY]["cb2cf"]["truth"][f"ndcg@{k}"], 5),
            f"cb2cf_delta_truth_ndcg@{k}_ci95": paired_ci(sc.per_user[f"cb2cf|{label}"]["ndcg"],
                                                         sc.per_user[f"cb2cf|{EVERY}"]["ndcg"], nb, bs),
        }
        hw = m["hybrid-wide"]
        row[f"diagnostic_hybrid_wide_grid_truth_ndcg@{k}"] = hw["truth"][f"ndcg@{k}"]
        for kd, v in hw.get("truth_by_kind", {}).items():
            row[f"diagnostic_hybrid_wide_grid_truth_ndcg@{k}_{kd}_only"] = v[f"ndcg@{k}"]
        # training noise: the same seeds are paired across field sets
        by_seed = [served_by_seed(label, j)["truth"][f"ndcg@{k}"] - served_by_seed(EVERY, j)["truth"][f"ndcg@{k}"]
                   for j in range(len(train_seeds))]
        row[f"delta_truth_ndcg@{k}_by_seed"] = [round(x, 5) for x in by_seed]
        row[f"delta_truth_ndcg@{k}_seed_t95"] = seed_interval(by_seed)
        for kd, v in e.get("truth_by_kind", {}).items():
            row[f"truth_ndcg@{k}_{kd}_only"] = v[f"ndcg@{k}"]
            row[f"truth_ndcg@{k}_{kd}_only_by_seed"] = [
                served_by_seed(label, j)["truth_by_kind"][kd][f"ndcg@{k}"] for j in range(len(train_seeds))]
            row[f"delta_truth_ndcg@{k}_{kd}_only"] = round(v[f"ndcg@{k}"] - ref["truth_by_kind"][kd][f"ndcg@{k}"], 5)
            row[f"delta_truth_ndcg@{k}_{kd}_only_seed_t95"] = seed_interval(
                [served_by_seed(label, j)["truth_by_kind"][kd][f"ndcg@{k}"]
                 - served_by_seed(EVERY, j)["truth_by_kind"][kd][f"ndcg@{k}"] for j in range(len(train_seeds))])
        ablation.append(row)
    report["ablation"] = {
        "reference": EVERY,
        "note": f"served model per field set (hybrid or plain CB2CF, chosen on validation per seed), mean over "
                f"{len(train_seeds)} CB2CF training seeds; delta = variant - '{EVERY}' on the test users; "
                f"*_seed_t95 = mean +- t 95% half-width of the per-seed deltas (seeds paired across field sets: "
                f"training noise); *_ci95 = paired bootstrap over test users of the seed-averaged per-user NDCG "
                f"({nb} resamples; user sampling only); *_only = truth NDCG when the candidates are only the cold "
                f"test items of that kind",
        "rows": ablation,
    }

    knn_text = baselines["content-knn (text)"]
    strongest = max((b for b in baselines if b != "random"), key=lambda b: baselines[b][f"val_ndcg@{k}"])
    served_k = ref["truth"][f"ndcg@{k}"]

    def versus(name: str, entry: dict[str, Any], key: str) -> dict[str, Any]:
        v = entry["truth"][f"ndcg@{k}"]
        return {"model": name, f"truth_ndcg@{k}": v, f"truth_recall@{k}": entry["truth"][f"recall@{k}"],
                "ratio": round(served_k / v, 3) if v > 0 else None, "difference": round(served_k - v, 5),
                "difference_ci95": paired_ci(sc.per_user[f"served|{EVERY}"]["ndcg"], sc.per_user[key]["ndcg"], nb,
                                             bs)}

    text_served = served_entry("text+words")
    report["verdict"] = {
        "served_every_field": {"model": f"served ({EVERY}): {'/'.join(models[EVERY]['served_by_seed'])} by seed",
                               "fields": models[EVERY]["fields"],
                               f"truth_ndcg@{k}": served_k, f"truth_recall@{k}": ref["truth"][f"recall@{k}"],
                               f"interactions_ndcg@{k}": ref["interactions"][f"ndcg@{k}"],
                               "missing_fields": finfo["missing"]},
        "vs_text_content_knn": versus("content-knn (text)", knn_text, "content-knn (text)"),
        "vs_strongest_baseline_on_validation": versus(strongest, baselines[strongest], strongest),
        "vs_served_text_and_words": versus("served (text+words)", text_served, "served|text+words"),
        "vs_served_text": versus("served (text)", served_entry("text"), "served|text"),
        "note": f"every learned number is the mean over {len(train_seeds)} CB2CF training seeds (one DSSM); "
                f"difference_ci95 = paired bootstrap over test users of the seed-averaged per-user NDCG",
    }
    hw = models[EVERY]["hybrid-wide"]
    report["verdict"]["diagnostic_hybrid_wide_grid"] = {
        f"truth_ndcg@{k}": hw["truth"][f"ndcg@{k}"],
        "truth_by_kind": hw.get("truth_by_kind", {}),
        "weights_by_seed": [f"{r['hybrid-wide']['sparse']} x {r['hybrid-wide']['weight']:g}"
                            for r in models[EVERY]["runs"]],
        "note": f"not served: the every-field CB2CF + w x sparse kNN with w also in {list(WIDE_EXTRA_WEIGHTS)} "
                f"(the served grid starts at {min(HYBRID_WEIGHTS):g}), chosen on validation",
    }
    sparse_best = max(SPARSE_MODELS, key=lambda b: baselines[b][f"val_ndcg@{k}"])
    report["verdict"]["within_kind"] = {
        kd: {f"served_every_field_ndcg@{k}": ref["truth_by_kind"][kd][f"ndcg@{k}"],
             f"served_text_and_words_ndcg@{k}": text_served["truth_by_kind"][kd][f"ndcg@{k}"],
             f"content_knn_text_ndcg@{k}": knn_text["truth_by_kind"][kd][f"ndcg@{k}"],
             f"{sparse_best}_ndcg@{k}": baselines[sparse_best]["truth_by_kind"][kd][f"ndcg@{k}"],
             f"random_ndcg@{k}": baselines["random"]["truth_by_kind"][kd][f"ndcg@{k}"],
             "candidates": f"only the cold test items of kind {kd!r} (where the {'audio' if kd == 'track' else 'image'}"
                           f" fields exist), truth relevance"}
        for kd in ref.get("truth_by_kind", {})
    }
    vt = report["verdict"]["vs_text_content_knn"]
    report["verdict"]["beats_text_content_knn"] = bool(vt["difference"] > 0)
    report["verdict"]["beats_text_content_knn_ci95_excludes_0"] = bool(vt["difference_ci95"][0] > 0)
    report["baselines"] = baselines
    report["models"] = models
    report["verdict"]["personal_by_kind"] = personal_table(report, k)
    report["timings_s"] = timings
    report["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    return report


PERSONAL_MODELS: tuple[tuple[str, str], ...] = (
    ("served (every field)", f"served|{EVERY}"), ("served (text+words)", "served|text+words"),
    ("served (text)", "served|text"), ("content-knn (text)", "baseline|content-knn (text)"),
    ("content-knn (every dense field)", "baseline|content-knn (every dense field)"),
    ("tfidf-knn", "baseline|tfidf-knn"), ("bm25-knn", "baseline|bm25-knn"), ("random", "baseline|random"),
)
"""The models of the personal table: the served media model, the text-only models and random."""
TEXT_ONLY = ("served (text+words)", "content-knn (text)", "tfidf-knn", "bm25-knn")


def _personal_of(report: dict[str, Any], key: str) -> dict[str, Any] | None:
    where, _, name = key.partition("|")
    if where == "baseline":
        return report["baselines"].get(name, {}).get("personal")
    m = report["models"].get(name)
    return m["served"].get("personal") if m else None


def personal_table(report: dict[str, Any], k: int) -> dict[str, Any]:
    """Truth NDCG@k per candidate group (all, each media kind, text-poor / text-rich) and model: personal, the
    non-personal control (one mean user) and their difference; the served every-field model per training seed."""
    groups: dict[str, dict[str, Any]] = {}
    for label, key in PERSONAL_MODELS:
        per = _personal_of(report, key)
        for g, v in (per or {}).items():
            groups.setdefault(g, {})[label] = {x: v[x] for x in (f"ndcg@{k}", f"non_personal_ndcg@{k}",
                                                                 f"personal_gain@{k}")}
            groups[g]["users"], groups[g]["candidates"] = v["users"], v["candidates"]
    by_seed = {g: [r[r["served"]]["personal"][g][f"ndcg@{k}"] for r in report["models"][EVERY]["runs"]
                   if g in r[r["served"]].get("personal", {})] for g in groups}
    return {"groups": groups, f"served_every_field_ndcg@{k}_by_training_seed": by_seed,
            "note": "truth NDCG@k with the candidates restricted to the group (all cold test items, one kind, or the "
                    "text-poor / text-rich posts of a kind); non_personal = the same model's scores of one mean user "
                    "(column mean over the test users) for everyone; personal_gain = personal - non_personal"}


def over_seeds(runs: list[dict[str, Any]], k: int) -> dict[str, Any]:
    """The personal table over simulator seeds: per group and model the mean, sd and values of NDCG@k and of the
    non-personal control, and per group the served every-field model minus each text-only model and random (mean,
    Student-t 95% interval over the seeds, paired by seed)."""
    tables = [r["verdict"]["personal_by_kind"]["groups"] for r in runs]
    common = [g for g in tables[0] if all(g in t for t in tables)]
    out: dict[str, Any] = {"sim_seeds": [r["config"]["seed"] for r in runs], "groups": {}}
    for g in common:
        row: dict[str, Any] = {"users_by_seed": [t[g]["users"] for t in tables],
                               "candidates_by_seed": [t[g]["candidates"] for t in tables]}
        for label, _ in PERSONAL_MODELS:
            if not all(label in t[g] for t in tables):
                continue
            cell: dict[str, Any] = {}
            for metric in (f"ndcg@{k}", f"non_personal_ndcg@{k}"):
                vals = [t[g][label][metric] for t in tables]
                cell[metric] = round(float(np.mean(vals)), 5)
                cell[f"{metric}_sd"] = round(float(np.std(vals, ddof=1)) if len(vals) > 1 else float("nan"), 5)
                cell[f"{metric}_by_seed"] = vals
            row[label] = cell
        served = "served (every field)"
        if served in row:
            row["served_minus"] = {}
            for other in (*TEXT_ONLY, "random"):
                if other in row:
                    d = [t[g][served][f"ndcg@{k}"] - t[g][other][f"ndcg@{k}"] for t in tables]
                    row["served_minus"][other] = {"mean": round(float(np.mean(d)), 5), "t95": seed_interval(d),
                                                  "by_seed": [round(x, 5) for x in d]}
        out["groups"][g] = row
    out["note"] = (f"mean / sd (ddof 1) over {len(runs)} simulator seeds (each its own community, split, DSSM and "
                   f"CB2CF training seeds); served_minus = served every-field NDCG@{k} minus the model's, paired "
                   f"by simulator seed, t95 = mean +- Student-t 95% half-width")
    return out


def _condensed(report: dict[str, Any]) -> dict[str, Any]:
    return {key: report[key] for key in ("config", "data", "featurizer", "dssm", "verdict", "timings_s",
                                         "elapsed_s") if key in report}


def _table(report: dict[str, Any], k: int) -> str:
    lines = [f"{'model':<40}{'truth ndcg':>11}{'seed sd':>8}{'truth rec':>10}{'inter ndcg':>11}{'val ndcg':>10}"
             f"{'delta':>9}{'  delta seed t95':<20}{'cb2cf non-personal':>19}"]
    for name, b in report["baselines"].items():
        lines.append(f"{name:<40}{b['truth'][f'ndcg@{k}']:>11.4f}{'':>8}{b['truth'][f'recall@{k}']:>10.4f}"
                     f"{b['interactions'][f'ndcg@{k}']:>11.4f}{b[f'val_ndcg@{k}']:>10.4f}")
    for r in report["ablation"]["rows"]:
        name = f"served ({r['variant']})"
        ci = "[{:+.4f}, {:+.4f}]".format(*r[f"delta_truth_ndcg@{k}_seed_t95"])
        lines.append(f"{name:<40}{r[f'truth_ndcg@{k}']:>11.4f}{r[f'truth_ndcg@{k}_seed_sd']:>8.4f}"
                     f"{r[f'truth_recall@{k}']:>10.4f}{r[f'interactions_ndcg@{k}']:>11.4f}{r[f'val_ndcg@{k}']:>10.4f}"
                     f"{r[f'delta_truth_ndcg@{k}']:>+9.4f}  {ci:<18}{r[f'cb2cf_non_personal_truth_ndcg@{k}']:>19.4f}")
    pt = report["verdict"].get("personal_by_kind", {}).get("groups", {})
    if pt:
        labels = [lb for lb, _ in PERSONAL_MODELS if any(lb in row for row in pt.values())]
        lines.append(f"truth NDCG@{k} by group, personal / non-personal (first sim seed):")
        lines.append(f"{'group':<22}" + "".join(f"{lb[:21]:>22}" for lb in labels))
        for g, row in pt.items():
            cells = [f"{row[lb][f'ndcg@{k}']:.4f}/{row[lb][f'non_personal_ndcg@{k}']:.4f}" if lb in row else "-"
                     for lb in labels]
            lines.append(f"{g:<22}" + "".join(f"{c:>22}" for c in cells))
    v = report["verdict"]["vs_text_content_knn"]
    lines.append(f"verdict: served every field {report['verdict']['served_every_field'][f'truth_ndcg@{k}']:.4f} vs "
                 f"text content-kNN {v[f'truth_ndcg@{k}']:.4f} (x{v['ratio']}, diff CI95 {v['difference_ci95']})")
    return "\n".join(lines)


def _plot_personal(report: dict[str, Any], path: Path, k: int) -> None:
    """Per group (all, tracks, moments; text-poor / text-rich): personal truth NDCG@k of the served model, the
    text-only models and random (bars, sd over simulator seeds where there are several) and each one's
    non-personal control (hatched)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    over = report.get("over_sim_seeds")
    table = over["groups"] if over else report["verdict"]["personal_by_kind"]["groups"]
    groups = [g for g in table if g != "all"] or list(table)
    labels = [lb for lb, _ in PERSONAL_MODELS if any(lb in table[g] for g in groups)]
    fig, ax = plt.subplots(figsize=(max(9.0, 1.6 * len(groups) + 4), 5.5))
    width = 0.8 / max(len(labels), 1)
    x = np.arange(len(groups))
    for j, lb in enumerate(labels):
        vals = [table[g][lb][f"ndcg@{k}"] if lb in table[g] else np.nan for g in groups]
        ctrl = [table[g][lb][f"non_personal_ndcg@{k}"] if lb in table[g] else np.nan for g in groups]
        sd = [table[g][lb].get(f"ndcg@{k}_sd", 0.0) if lb in table[g] else 0.0 for g in groups] if over else None
        ax.bar(x + j * width, vals, width, yerr=sd, capsize=2, label=lb)
        ax.bar(x + j * width, ctrl, width * 0.45, color="none", edgecolor="black", hatch="///", lw=0.5)
    ax.set_xticks(x + width * (len(labels) - 1) / 2, groups, fontsize=8)
    ax.set_ylabel(f"truth NDCG@{k} (hatched: non-personal control, one mean user)")
    seeds = (f"mean +- sd over simulator seeds {over['sim_seeds']}" if over
             else f"simulator seed {report['config']['seed']}")
    share = report["config"].get("text_poor_share") or {}
    ax.set_title(f"cold test items ranked within a group; text-poor share {share or 'none'}; {seeds}", fontsize=9)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _plot(report: dict[str, Any], path: Path, k: int) -> None:
    if report.get("over_sim_seeds") or report["config"].get("text_poor_share"):
        _plot_personal(report, path, k)
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names: list[str] = []
    truth: list[float] = []
    inter: list[float] = []
    colors: list[str] = []
    for name, b in report["baselines"].items():
        names.append(name)
        truth.append(b["truth"][f"ndcg@{k}"])
        inter.append(b["interactions"][f"ndcg@{k}"])
        colors.append("tab:gray")
    for label, m in report["models"].items():
        for kind in ("cb2cf", "hybrid"):
            names.append(f"{kind} ({label})" + (" *" * m["served_by_seed"].count(kind)))
            truth.append(m[kind]["truth"][f"ndcg@{k}"])
            inter.append(m[kind]["interactions"][f"ndcg@{k}"])
            colors.append("tab:blue" if kind == "cb2cf" else "tab:orange")
    rows: Sequence[dict[str, Any]] = report["ablation"]["rows"]
    fig, axes = plt.subplots(1, 4, figsize=(23, 0.32 * len(names) + 2.0))
    for ax, vals, rel in ((axes[0], truth, "ground truth"), (axes[1], inter, "held-out interactions")):
        ax.barh(names, vals, color=colors)
        ax.set_title(f"NDCG@{k}, relevance = {rel}")
        ax.invert_yaxis()
        ax.tick_params(axis="y", labelsize=8)
    labels = [r["variant"] for r in rows]
    d = np.array([r[f"delta_truth_ndcg@{k}"] for r in rows])
    ci = np.array([r[f"delta_truth_ndcg@{k}_seed_t95"] for r in rows], dtype=np.float64)
    err = np.abs(np.stack([d - ci[:, 0], ci[:, 1] - d])) if np.isfinite(ci).all() else None
    axes[2].barh(labels, d, xerr=err, color="tab:green", capsize=3)
    axes[2].axvline(0.0, color="black", lw=0.8)
    axes[2].set_title(f"served, truth NDCG@{k} minus '{EVERY}'\n(mean over seeds, seed t 95%)")
    axes[2].invert_yaxis()
    axes[2].tick_params(axis="y", labelsize=8)
    within = report["verdict"].get("within_kind", {})
    if within:
        keys = [key for key in next(iter(within.values())) if key.endswith(f"ndcg@{k}")]
        width = 0.8 / max(len(within), 1)
        ypos = np.arange(len(keys))
        for j, (kd, vals) in enumerate(within.items()):
            axes[3].barh(ypos + j * width, [vals[key] for key in keys], height=width, label=f"{kd}s only")
        axes[3].set_yticks(ypos + width * (len(within) - 1) / 2,
                           [key.removesuffix(f"_ndcg@{k}").replace("_", " ") for key in keys], fontsize=8)
        axes[3].invert_yaxis()
        axes[3].legend(fontsize=8)
    axes[3].set_title(f"truth NDCG@{k} within one kind\n(cold test tracks / moments only)")
    missing = report["featurizer"]["missing"]
    fig.suptitle(f"simulator cold items (newest 20%): content fields and baselines; one * per training seed where "
                 f"it is served (chosen on validation); learned = mean over seeds"
                 f"{'; missing fields: ' + ', '.join(missing) if missing else ''}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
