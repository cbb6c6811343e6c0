"""Trains and evaluates the DeepFM + MMoE ranker with and without group-wise gating, per task and per user group.

Run (from code: :func:`evaluate_ranker_groups` with a :class:`RankGroupsConfig`)::

    thaw evaluate ranker-groups --dataset ml-100k                 # MovieLens-100k ratings -> watch / like
    thaw evaluate ranker-groups --dataset sim --sim-steps 240     # simulator exposures -> play / like
    thaw evaluate ranker-groups --dataset lastfm                  # Last.fm plays -> play / heavy
    thaw evaluate ranker-groups --dataset ml-100k --seeds 0 --seeds 1 --seeds 2 --json out.json \\
        --export ~/.cache/thaw/models

For every seed both variants (``group_gating`` off / on; with ``--ablate-interest`` also group gating without the
category-interest features) are trained with the same seed, the same rows and the same
hyper-parameters; the test period (latest 20% of rows, see :mod:`ranking.training.rank_data`) is scored and AUC /
logloss
are reported per task for all rows, new users, old users and each gender (Last.fm has no gender: new/old only;
its split is by user arrival, see :func:`ranking.training.rank_data.lastfm_log`). ``--export`` publishes the gated
model of
the first seed as ``deepfm-mmoe`` into a model directory and checks ONNX Runtime against torch (``allclose``).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch

from ranking.models.deepfm_mmoe import DeepFMMMoE, DeepFMMMoEConfig, RankData
from ranking.training.deepfm_mmoe import task_metrics, train_deepfm_mmoe
from ranking.training.rank_data import (
    EventLog,
    RankSplit,
    SplitConfig,
    build_rank_split,
    lastfm_log,
    movielens_log,
    simulator_log,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Variant:
    """One trained configuration: group-conditioned gates or not, category-interest features or not."""

    name: str
    group_gating: bool
    interest_features: bool = True


VARIANTS = (Variant("no_group_gating", False), Variant("group_gating", True))
"""The comparison every run makes (same seeds, rows and hyper-parameters)."""
ABLATION = Variant("group_gating_no_interest_features", True, interest_features=False)
"""Group gating with the ``interest_dev`` / ``affinity`` dense fields held at their mean (zero after scaling)."""


def without_interest_features(split: RankSplit) -> RankSplit:
    """The split with every dense column set to 0 (its fit-period mean after standardisation)."""

    def blank(d: RankData) -> RankData:
        return replace(d, dense=np.zeros_like(d.dense))

    return replace(split, fit=blank(split.fit), valid=blank(split.valid), test=blank(split.test))


@torch.no_grad()
def gate_usage(model: DeepFMMMoE, split: RankSplit, batch: int = 8192) -> dict[str, dict[str, list[float]]]:
    """Mean gate weight per expert on the test rows, per gating group (``new|f``, ...) and task."""
    model.eval()
    gates = torch.cat([model.gates(*split.test.tensors(slice(s, s + batch)))
                       for s in range(0, len(split.test), batch)], dim=1).numpy()  # T x N x n
    out: dict[str, dict[str, list[float]]] = {}
    for g, name in enumerate(split.group_names):
        m = split.test.group == g
        if m.sum() >= 50:
            out[name] = {t: [round(float(x), 4) for x in gates[k, m].mean(0)]
                         for k, t in enumerate(split.schema.tasks)}
    return out


def evaluate_groups(model: DeepFMMMoE, split: RankSplit) -> dict[str, dict[str, dict[str, float]]]:
    """``group -> task -> {auc, logloss, rows, positives}`` on the test rows."""
    probs = model.predict(split.test)
    out: dict[str, dict[str, dict[str, float]]] = {}
    for gname, mask in split.test_groups().items():
        if not mask.any():
            continue
        out[gname] = {task: task_metrics(split.test.labels[mask, t], probs[mask, t])
                      for t, task in enumerate(split.schema.tasks)}
    return out


def run_rank_eval(
    split: RankSplit,
    config: DeepFMMMoEConfig,
    seeds: list[int],
    verbose: bool = False,
    variants: tuple[Variant, ...] = VARIANTS,
) -> tuple[dict[str, Any], dict[tuple[str, int], DeepFMMMoE]]:
    """Trains every variant per seed and evaluates them per group.

    Returns:
        ``(report, models)``; ``report["runs"][variant][str(seed)]`` holds the per-group metrics and training log,
        ``report["mean"][variant]`` the mean over seeds; ``models[(variant, seed)]`` the trained models.
    """
    runs: dict[str, dict[str, Any]] = {v.name: {} for v in variants}
    models: dict[tuple[str, int], DeepFMMMoE] = {}
    blank = without_interest_features(split) if any(not v.interest_features for v in variants) else split
    for seed in seeds:
        for v in variants:
            variant, data = v.name, (split if v.interest_features else blank)
            cfg = replace(config, group_gating=v.group_gating, seed=seed)
            model, log = train_deepfm_mmoe(data.fit, data.valid, data.schema, cfg, verbose=verbose)
            metrics = evaluate_groups(model, data)
            runs[variant][str(seed)] = {"metrics": metrics, "train": log.to_dict(), "history": log.history,
                                        "gate_usage": gate_usage(model, data)}
            models[(variant, seed)] = model
            if verbose:
                brief = {g: {t: round(m[t]["auc"], 4) for t in m} for g, m in metrics.items()}
                logger.info("seed %s %s: %.1fs, epochs %s, AUC %s", seed, variant, log.seconds, log.epochs_run, brief)
    mean: dict[str, Any] = {}
    for variant, by_seed in runs.items():
        groups = next(iter(by_seed.values()))["metrics"]
        mean[variant] = {
            g: {t: {k: float(np.mean([r["metrics"][g][t][k] for r in by_seed.values()])) for k in ("auc", "logloss")}
                | {"rows": groups[g][t]["rows"], "positives": groups[g][t]["positives"]}
                for t in groups[g]}
            for g in groups
        }
        mean[variant]["train_seconds"] = float(np.mean([r["train"]["seconds"] for r in by_seed.values()]))
        mean[variant]["epochs_run"] = float(np.mean([r["train"]["epochs_run"] for r in by_seed.values()]))
    report = {"schema": {"sparse": [list(x) for x in split.schema.sparse], "n_categories": split.schema.n_categories,
                         "dense": [[f.name, f.dim] for f in split.schema.dense], "n_groups": split.schema.n_groups,
                         "groups": list(split.group_names), "tasks": list(split.schema.tasks)},
              "split": split.info, "config": {k: (list(v) if isinstance(v, tuple) else v)
                                              for k, v in config.__dict__.items() if k not in ("group_gating", "seed")},
              "seeds": seeds, "runs": runs, "mean": mean}
    return report, models


def load_log(dataset: str, seed: int = 0, sim_steps: int = 240, negatives: int = 2,
             sim_catalogue: str = "lastfm") -> EventLog:
    """The exposure log of ``ml-100k``, ``lastfm`` or ``sim`` (``negatives``: sampled per ml-100k / lastfm pair;
    ``sim_catalogue``: the simulator's catalogue, ``lastfm`` or ``community``)."""
    if dataset == "ml-100k":
        return movielens_log(negatives=negatives, seed=seed)
    if dataset == "lastfm":
        return lastfm_log(negatives=negatives, seed=seed)
    if dataset == "sim":
        return simulator_log(steps=sim_steps, seed=seed, catalogue=sim_catalogue)
    raise ValueError(f"unknown dataset {dataset!r} (ml-100k | lastfm | sim)")


def split_of(log: EventLog, split_config: SplitConfig) -> RankSplit:
    """:func:`build_rank_split` of ``log``, with the log's provenance in ``info["source"]``."""
    split = build_rank_split(log, split_config)
    split.info["source"] = {"name": log.name, **log.meta}
    return split


def load_split(dataset: str, split_config: SplitConfig, sim_steps: int = 240, negatives: int = 2,
               sim_catalogue: str = "lastfm") -> RankSplit:
    """The featurised split of ``ml-100k``, ``lastfm`` or ``sim``."""
    return split_of(load_log(dataset, split_config.seed, sim_steps, negatives, sim_catalogue), split_config)


def check_export(
    model: DeepFMMMoE, split: RankSplit, root: Path, version: str, extra: dict[str, Any]
) -> dict[str, Any]:
    """Publishes ``model`` as ``deepfm-mmoe`` and compares ONNX Runtime with torch on up to 4096 test rows."""
    import onnxruntime as ort

    from encoders.registry import ModelRegistry
    from ranking.training.rank_export import export_ranker

    mv = export_ranker(model, ModelRegistry(root), version, extra=extra, vocab={"groups": list(split.group_names)})
    sample = split.test.take(np.arange(min(4096, len(split.test))))
    ref = model.predict(sample)
    sess = ort.InferenceSession(str(mv.onnx_path), providers=["CPUExecutionProvider"])
    feeds = {"sparse": sample.sparse.astype(np.int64), "categories": sample.categories.astype(np.float32),
             "dense": sample.dense.astype(np.float32), "group": sample.group.astype(np.int64)}
    (got,) = sess.run(["scores"], feeds)
    return {"path": str(mv.path), "rows": len(sample), "max_abs_diff": float(np.abs(got - ref).max()),
            "allclose": bool(np.allclose(got, ref, rtol=1e-4, atol=1e-5))}


def format_table(report: dict[str, Any]) -> str:
    """Mean AUC / logloss per group and task, both variants side by side."""
    tasks = report["schema"]["tasks"]
    mean = report["mean"]
    head = f"{'group':<12}{'rows':>8}" + "".join(
        f"  {t + ' AUC off/on':>20}  {t + ' logloss off/on':>22}" for t in tasks)
    lines = [head]
    for g, by_task in mean["no_group_gating"].items():
        if not isinstance(by_task, dict):
            continue
        row = f"{g:<12}{int(by_task[tasks[0]]['rows']):>8}"
        for t in tasks:
            a0, a1 = by_task[t]["auc"], mean["group_gating"][g][t]["auc"]
            l0, l1 = by_task[t]["logloss"], mean["group_gating"][g][t]["logloss"]
            row += f"  {f'{a0:.4f}/{a1:.4f}':>20}  {f'{l0:.4f}/{l1:.4f}':>22}"
        lines.append(row)
    for extra in (v for v in mean if v not in ("no_group_gating", "group_gating")):
        lines.append(f"{extra}: " + ", ".join(
            f"{g} " + "/".join(f"{mean[extra][g][t]['auc']:.4f}" for t in tasks)
            for g in mean[extra] if isinstance(mean[extra][g], dict)) + " (AUC " + "/".join(tasks) + ")")
    lines.append("train seconds (mean over seeds): " + ", ".join(
        f"{v}={mean[v]['train_seconds']:.1f}" for v in mean))
    return "\n".join(lines)


@dataclass(frozen=True)
class RankGroupsConfig:
    """One group-gating evaluation (``thaw evaluate ranker-groups``).

    Attributes:
        dataset: ``ml-100k``, ``lastfm`` or ``sim``.
        seeds: Training seeds (every variant is trained once per seed).
        sim_steps: Simulator steps (``sim``).
        negatives: Sampled negatives per pair (``ml-100k`` / ``lastfm``).
        new_user_max_history: A user with at most this many earlier exposures counts as new.
        max_epochs: Epoch cap.
        patience: Epochs without improvement of the validation mean AUC before stopping.
        experts: MMoE experts.
        threads: torch threads (at most 2 are used).
        export_dir: Model directory to publish the gated model of the first seed into (None: no export).
        ablate_interest: Also train group gating without the category-interest features.
        verbose: Log each variant's training.
    """

    dataset: Literal["ml-100k", "lastfm", "sim"] = field(default="ml-100k", metadata={"help": "exposure log"})
    seeds: tuple[int, ...] = field(default=(0,), metadata={"help": "training seed (repeatable; default 0)"})
    sim_steps: int = field(default=240, metadata={"help": "simulator steps (sim)"})
    negatives: int = field(default=2, metadata={"help": "ml-100k / lastfm: sampled negatives per pair"})
    new_user_max_history: int = field(default=10, metadata={
        "help": "users with at most this many earlier exposures are new"})
    max_epochs: int = field(default=DeepFMMMoEConfig.max_epochs, metadata={"help": "epoch cap"})
    patience: int = field(default=DeepFMMMoEConfig.patience, metadata={
        "help": "epochs without validation improvement before stopping"})
    experts: int = field(default=DeepFMMMoEConfig.n_experts, metadata={"help": "MMoE experts"})
    threads: int = field(default=1, metadata={"help": "torch threads (at most 2 are used)"})
    export_dir: Path | None = field(default=None, metadata={"help": "model directory to publish the gated model into"})
    ablate_interest: bool = field(default=False, metadata={
        "help": "also train group gating without the category-interest features"})
    verbose: bool = field(default=False, metadata={"help": "log each variant's training"})


def evaluate_ranker_groups(cfg: RankGroupsConfig) -> dict[str, Any]:
    """Trains and evaluates the variants on ``cfg.dataset`` (see the module docstring).

    Returns:
        The :func:`run_rank_eval` report with ``dataset``, ``prepare_seconds`` and, with ``export_dir``, ``export``
        (:func:`check_export`).
    """
    t0 = time.perf_counter()
    split = load_split(cfg.dataset, SplitConfig(new_user_max_history=cfg.new_user_max_history), cfg.sim_steps,
                       cfg.negatives)
    prep = time.perf_counter() - t0
    mcfg = DeepFMMMoEConfig(max_epochs=cfg.max_epochs, patience=cfg.patience, n_experts=cfg.experts,
                            threads=min(2, cfg.threads))
    variants = (*VARIANTS, ABLATION) if cfg.ablate_interest else VARIANTS
    seeds = list(cfg.seeds)
    report, models = run_rank_eval(split, mcfg, seeds, verbose=cfg.verbose, variants=variants)
    report["dataset"] = cfg.dataset
    report["prepare_seconds"] = round(prep, 2)
    if cfg.export_dir is not None:
        model = models[("group_gating", seeds[0])]
        report["export"] = check_export(model, split, cfg.export_dir, time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()),
                                        {"dataset": cfg.dataset, "seed": seeds[0]})
    return report
