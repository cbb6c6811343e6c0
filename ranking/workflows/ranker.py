"""Trains the DeepFM + MMoE ranker (group-gated and plain) and publishes both for online serving.

Run (from code: :func:`train_ranker` with a :class:`RankerTrainConfig`)::

    thaw train ranker --dataset sim --sim-steps 40 --epochs 5     # CI-sized, well under a minute
    thaw train ranker --dataset sim                               # full size (240 steps)
    thaw train ranker --dataset ml-100k --json out.json           # MovieLens-100k, watch / like
    thaw train ranker --dataset lastfm --json out.json            # Last.fm plays, play / heavy

Steps: build the exposure log and its temporal split (:mod:`ranking.training.rank_data`), keep the split's online
featuriser (:class:`ranking.online.features.RankFeaturizer`), train both variants with the same seed, rows and
hyper-parameters (:func:`ranking.evaluation.ranker_groups.run_rank_eval`), report test AUC / logloss per task (all
rows, new and
old users), then publish the gated model as ``deepfm-mmoe`` and the plain one as ``deepfm-mmoe-plain`` (one version
name for both; ``CURRENT`` of each moved to it) into the model directory (default: the configured ``models.dir``)
with the featuriser in ``schema.json``. Two checks per variant, through :class:`ranking.online.ranker.Ranker` loaded
back
from the directory:

* ``onnx_vs_torch``: ONNX Runtime vs torch on up to 4096 offline test rows (``allclose`` rtol 1e-4, atol 1e-5);
* ``online_path``: up to ``--check-rows`` test rows rebuilt from the log as requests (raw ids, tags, profile,
  engaged history) and scored by :meth:`Ranker.score`, against torch on the offline rows — ``max_abs_diff_exact``
  compares with the offline rows where the column the stream does not carry (``user_extra``, the MovieLens
  occupation) is unknown, as online; ``max_abs_diff_offline`` with the offline rows as trained (the train/serve
  skew of that column). ``test_online_inputs`` is the test AUC / logloss of every test row with ``user_extra``
  unknown, i.e. what the online path scores.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np

from encoders.registry import ModelRegistry
from ranking.evaluation.ranker_groups import VARIANTS, load_log, run_rank_eval, split_of
from ranking.models.deepfm_mmoe import DeepFMMMoE, DeepFMMMoEConfig, RankData
from ranking.online.features import RankFeaturizer, RankInputs, requests_for_rows
from ranking.online.ranker import Ranker
from ranking.training.deepfm_mmoe import task_metrics
from ranking.training.rank_data import SPARSE_FIELDS, EventLog, RankSplit, SplitConfig
from ranking.training.rank_export import export_ranker, ranker_name

USER_EXTRA = SPARSE_FIELDS.index("user_extra")
RankDataset = Literal["sim", "ml-100k", "lastfm"]
SimCatalogue = Literal["lastfm", "community"]


@dataclass(frozen=True)
class RankerTrainConfig:
    """One ranker training run (``thaw train ranker``).

    Attributes:
        dataset: ``sim`` (simulator exposures), ``ml-100k`` (MovieLens-100k ratings) or ``lastfm`` (Last.fm plays).
        sim_steps: Simulator steps (``sim``).
        sim_catalogue: The simulator's catalogue (``sim``): ``lastfm`` (Last.fm artists, ``THAW_DATASETS_DIR``)
            or ``community`` (the demo community: registry data only).
        negatives: Sampled negatives per pair (``ml-100k`` / ``lastfm``).
        seed: Training seed (the data / split seed is 0, as in :mod:`ranking.evaluation.ranker_groups`).
        epochs: Epoch cap.
        patience: Epochs without improvement of the validation mean AUC before stopping.
        threads: torch threads (at most 2 are used).
        models_dir: Model directory to publish into (None: the settings' ``models.dir``).
        version: Version name of both published models (None: a UTC timestamp).
        check_rows: Test rows scored through the online path.
        verbose: Log each variant's training.
    """

    dataset: RankDataset = field(default="sim", metadata={"help": (
        "sim: simulator exposures (play / like); ml-100k: ratings (watch / like); lastfm: plays (play / heavy)")})
    sim_steps: int = field(default=240, metadata={"help": "simulator steps (sim)"})
    sim_catalogue: SimCatalogue = field(default="lastfm", metadata={"help": (
        "simulator catalogue (sim): lastfm (needs THAW_DATASETS_DIR) or community (registry data only)")})
    negatives: int = field(default=2, metadata={"help": "ml-100k / lastfm: sampled negatives per pair"})
    seed: int = field(default=0, metadata={"help": "training seed (the data / split seed is 0)"})
    epochs: int = field(default=DeepFMMMoEConfig.max_epochs, metadata={"help": "epoch cap"})
    patience: int = field(default=DeepFMMMoEConfig.patience, metadata={
        "help": "epochs without validation improvement before stopping"})
    threads: int = field(default=1, metadata={"help": "torch threads (at most 2 are used)"})
    models_dir: Path | None = None
    version: str | None = field(default=None, metadata={"help": "version name of both models (default: UTC timestamp)"})
    check_rows: int = field(default=2000, metadata={"help": "test rows scored through the online path"})
    verbose: bool = field(default=False, metadata={"help": "log each variant's training"})


def as_online(data: RankData) -> RankData:
    """The rows with the fields the stream does not carry set to unknown (``user_extra`` = 0)."""
    sparse = data.sparse.copy()
    sparse[:, USER_EXTRA] = 0
    return replace(data, sparse=sparse)


def check_published(
    ranker: Ranker, model: DeepFMMMoE, log: EventLog, split: RankSplit, check_rows: int, seed: int
) -> dict[str, Any]:
    """ONNX vs torch on offline test rows, and the online request path vs torch (see the module docstring)."""
    test = split.test
    sample = test.take(np.arange(min(4096, len(test))))
    ref = model.predict(sample)
    got = ranker.score_inputs(RankInputs(sample.sparse, sample.categories, sample.dense, sample.group, False))
    onnx = {"rows": len(sample), "max_abs_diff": float(np.abs(got - ref).max()),
            "allclose": bool(np.allclose(got, ref, rtol=1e-4, atol=1e-5))}
    rng = np.random.default_rng(seed)
    pos = np.sort(rng.choice(len(test), size=min(check_rows, len(test)), replace=False))
    requests = requests_for_rows(log, split.rows["test"][pos])
    t0 = time.perf_counter()
    online = np.concatenate([ranker.score(u, [it], ts) for u, it, ts in requests])
    per_request_ms = (time.perf_counter() - t0) * 1000.0 / max(1, len(pos))
    exact = model.predict(as_online(test.take(pos)))
    offline = model.predict(test.take(pos))
    path = {"rows": len(pos), "max_abs_diff_exact": float(np.abs(online - exact).max()),
            "allclose_exact": bool(np.allclose(online, exact, rtol=1e-4, atol=1e-5)),
            "max_abs_diff_offline": float(np.abs(online - offline).max()),
            "mean_abs_diff_offline": float(np.abs(online - offline).mean()),
            "ms_per_single_item_request": round(per_request_ms, 3)}
    probs = model.predict(as_online(test))
    metrics = {t: task_metrics(test.labels[:, k], probs[:, k]) for k, t in enumerate(split.schema.tasks)}
    return {"onnx_vs_torch": onnx, "online_path": path, "test_online_inputs": metrics}


def batch_latency(ranker: Ranker, log: EventLog, split: RankSplit, batch: int = 200, repeats: int = 20) -> float:
    """Median milliseconds of :meth:`Ranker.score` for one user x ``batch`` candidates (featurise + ONNX)."""
    reqs = requests_for_rows(log, split.rows["test"][-batch:])
    user, ts = reqs[-1][0], reqs[-1][2]
    items = [it for _, it, _ in reqs]
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        ranker.score(user, items, ts)
        times.append((time.perf_counter() - t0) * 1000.0)
    return float(np.median(times))


def format_table(result: dict[str, Any]) -> str:
    tasks = result["tasks"]
    lines = [f"{'model':<20}{'group':<7}" + "".join(f"{t + ' AUC':>11}{t + ' logloss':>14}" for t in tasks)]
    for v in result["variants"]:
        for g in ("all", "new", "old"):
            m = v["metrics"].get(g)
            if m is None:
                continue
            lines.append(f"{v['name']:<20}{g:<7}" + "".join(
                f"{m[t]['auc']:>11.4f}{m[t]['logloss']:>14.4f}" for t in tasks))
        c = v["checks"]
        lines.append(f"{'':<20}online-input AUC (user_extra unknown): " + ", ".join(
            f"{t} {c['test_online_inputs'][t]['auc']:.4f}" for t in tasks)
            + f"; onnx-vs-torch max {c['onnx_vs_torch']['max_abs_diff']:.2e}"
            + f"; online path vs torch max {c['online_path']['max_abs_diff_exact']:.2e}"
            + f" (vs offline-as-trained {c['online_path']['max_abs_diff_offline']:.2e})"
            + f"; score 1 user x {result['latency_batch']} items {v['score_ms_median']:.2f} ms")
    lines.append(f"published {', '.join(v['name'] for v in result['variants'])} version {result['version']} "
                 f"in {result['models_dir']}")
    return "\n".join(lines)


def train_ranker(cfg: RankerTrainConfig) -> dict[str, Any]:
    """Trains both variants, publishes them into ``cfg.models_dir`` and checks them (see the module docstring).

    Returns:
        The JSON-ready report: dataset, version, model directory, split, schema, training config and, per published
        variant, its test metrics, checks (:func:`check_published`) and scoring latency.
    """
    models_dir = cfg.models_dir
    if models_dir is None:
        raise ValueError("models_dir is required: `thaw train ranker` passes THAW_MODELS__DIR (or --models-dir)")
    version = cfg.version or time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    t0 = time.perf_counter()
    split_config = SplitConfig()
    log = load_log(cfg.dataset, split_config.seed, cfg.sim_steps, cfg.negatives, cfg.sim_catalogue)
    split = split_of(log, split_config)
    featurizer = RankFeaturizer.from_split(log, split)
    prep = time.perf_counter() - t0
    mcfg = DeepFMMMoEConfig(max_epochs=cfg.epochs, patience=cfg.patience, threads=min(2, cfg.threads))
    report, models = run_rank_eval(split, mcfg, [cfg.seed], verbose=cfg.verbose, variants=VARIANTS)
    registry = ModelRegistry(Path(models_dir))
    sim_steps = cfg.sim_steps if cfg.dataset == "sim" else None
    variants = []
    for v in VARIANTS:
        model = models[(v.name, cfg.seed)]
        metrics = report["mean"][v.name]
        name = ranker_name(v.group_gating)
        brief = {g: {t: {k: m[t][k] for k in ("auc", "logloss")} for t in split.schema.tasks}
                 for g, m in metrics.items() if g in ("all", "new", "old")}
        mv = export_ranker(model, registry, version, featurizer=featurizer, name=name,
                           extra={"dataset": cfg.dataset, "seed": cfg.seed, "variant": v.name, "test": brief,
                                  "sim_steps": sim_steps,
                                  "sim_catalogue": cfg.sim_catalogue if cfg.dataset == "sim" else None},
                           vocab={"groups": list(split.group_names)})
        ranker = Ranker.load(registry.root, version=version, name=name)
        checks = check_published(ranker, model, log, split, cfg.check_rows, cfg.seed)
        variants.append({"name": name, "variant": v.name, "group_gating": v.group_gating, "path": str(mv.path),
                         "metrics": {g: m for g, m in metrics.items() if isinstance(m, dict)},
                         "train_seconds": metrics["train_seconds"], "epochs_run": metrics["epochs_run"],
                         "checks": checks, "score_ms_median": batch_latency(ranker, log, split)})
    return {"dataset": cfg.dataset, "sim_steps": sim_steps,
            "seed": cfg.seed, "version": version, "models_dir": str(registry.root),
            "tasks": list(split.schema.tasks), "latency_batch": 200, "prepare_seconds": round(prep, 2),
            "total_seconds": round(time.perf_counter() - t0, 2), "split": split.info, "schema": report["schema"],
            "config": report["config"], "variants": variants}


def checks_passed(result: dict[str, Any]) -> bool:
    """Whether every published variant passed the ONNX-vs-torch and the online-path checks."""
    return all(v["checks"]["onnx_vs_torch"]["allclose"] and v["checks"]["online_path"]["allclose_exact"]
               for v in result["variants"])
