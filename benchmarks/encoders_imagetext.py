"""Benchmark of the FLAVA-style image–text encoder on held-out OpenMoji pairs.

Run: ``python -m benchmarks.encoders_imagetext [--epochs 6] [--schemes none,soft,drop] [--threads 1]``
(needs the built corpus: ``thaw corpus imagetext build``). Writes
``benchmarks/results/encoders_imagetext.json`` and ``.png`` (change with ``--out``).

What it measures, all on the test split (images and concepts never seen in training):

* image→text and text→image Recall@1/@10 with the contrastive embeddings, ranking all distinct test captions
  (resp. all test images). Duplicates: candidates are the distinct caption strings; a caption counts as correct
  for every image pixel-identical to an image it belongs to (OpenMoji draws some concepts twice with the same
  pixels), and a text query is correct when any such image is retrieved.
* baselines: the exact expected recall of a random ranking, and a frozen-features baseline: ridge regression from
  the EfficientNet-lite0 pooled features to the MiniLM sentence embedding of the caption, fitted on the (noisy)
  training pairs, ridge strength chosen on val.
* the trained model with each misaligned-pair scheme (``none`` = plain training on the noisy pairs; ``soft`` /
  ``drop`` = weighting by the model's own ITM probability after the warm-up epochs).
* misaligned-pair detection AUC on ``test_detect`` (clean pairs + one labelled misaligned pair per image): the
  ITM probability, the contrastive cosine, and the ridge cosine.
* training time (backbone feature cache and head training, separately) on this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np

from encoders.training.flava import (
    FeatureCache,
    FlavaTrainConfig,
    PairData,
    auc,
    fit,
    random_recall,
    relevance,
    retrieval_recall,
)

DEFAULT_OUT = Path(__file__).resolve().parent / "results"


def _sentence(cache: FeatureCache, caps: np.ndarray) -> np.ndarray:
    """MiniLM sentence vectors (masked mean of the last hidden states, L2-normalised) of cached captions."""
    st = cache.text_states[caps].astype(np.float32)
    m = cache.text_mask[caps].astype(np.float32)[..., None]
    v = (st * m).sum(1) / np.maximum(m.sum(1), 1.0)
    return v / np.linalg.norm(v, axis=1, keepdims=True)


def _pooled(cache: FeatureCache, imgs: np.ndarray) -> np.ndarray:
    return cache.image_tokens[imgs].astype(np.float32).mean(axis=1)


def ridge_baseline(cache: FeatureCache, data: PairData) -> dict[str, Any]:
    """Ridge from EfficientNet pooled features to MiniLM caption embeddings (train pairs; lambda chosen on val)."""
    tr = data.rows["train"]
    x = _pooled(cache, data.image_of_row[tr])
    mu, sd = x.mean(0), x.std(0) + 1e-6
    xs = (x - mu) / sd
    y = _sentence(cache, data.caption_of_row[tr])
    xtx, xty = xs.T @ xs, xs.T @ y

    def scores(w: np.ndarray, split: str) -> tuple[np.ndarray, np.ndarray]:
        img, caps, rel = relevance(data, data.rows[split])
        p = ((_pooled(cache, img) - mu) / sd) @ w
        p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-12
        return p @ _sentence(cache, caps).T, rel

    best: tuple[float, float, np.ndarray] | None = None
    for lam in (1.0, 10.0, 100.0, 1e3, 1e4, 1e5):
        w = np.linalg.solve(xtx + lam * np.eye(len(xtx)), xty)
        sim, rel = scores(w, "val")
        r = retrieval_recall(sim, rel)
        val = (r["i2t_R@1"] + r["t2i_R@1"] + r["i2t_R@10"] + r["t2i_R@10"]) / 4
        if best is None or val > best[0]:
            best = (val, lam, w)
    assert best is not None
    _, lam, w = best
    sim, rel = scores(w, "test")
    out: dict[str, Any] = {"lambda": lam, **retrieval_recall(sim, rel)}
    det = data.rows["test_detect"]
    p = ((_pooled(cache, data.image_of_row[det]) - mu) / sd) @ w
    p /= np.linalg.norm(p, axis=1, keepdims=True) + 1e-12
    cos = (p * _sentence(cache, data.caption_of_row[det])).sum(1)
    out["detect_auc_cosine"] = auc(-cos, data.misaligned[det])
    return out


def run(epochs: int, schemes: list[str], threads: int, runs_dir: Path, out_dir: Path,
        base: FlavaTrainConfig | None = None, corpus_dir: str | None = None) -> dict[str, Any]:
    """Trains one model per scheme (shared feature cache), evaluates them and the baselines, writes JSON + PNG."""
    from encoders.training.flava import build_feature_cache, select_rows
    from workloads.imagetext import load_imagetext_corpus

    cfg0 = base or FlavaTrainConfig()
    cfg0 = replace(cfg0, epochs=epochs, threads=threads, export=False, resume=False,
                   cache_dir=str(runs_dir / "cache"))
    corpus = load_imagetext_corpus(corpus_dir, include_skintones=cfg0.include_skintones)
    results: dict[str, Any] = {}
    for scheme in schemes:
        t0 = time.perf_counter()
        _, rep = fit(replace(cfg0, misaligned=scheme, out_dir=str(runs_dir / f"bench-{scheme}")), corpus)
        results[scheme] = {
            "test": rep["test"],
            "val": rep["val"],
            "timing": {**rep["timing"], "wall_seconds": time.perf_counter() - t0},
            "history": [{k: h[k] for k in ("epoch", "total", "itc", "itm", "val", "weights", "seconds")}
                        for h in rep["history"]],
            "run_id": rep["run_id"],
        }
        print(f"{scheme}: test {json.dumps({k: round(v, 3) for k, v in rep['test'].items()})}", file=sys.stderr)
    rows = select_rows(corpus, cfg0.limit)
    cache, data = build_feature_cache(corpus, rows, Path(cfg0.cache_dir or runs_dir / "cache"), cfg0.model,
                                      threads, progress=False)
    _, _, rel = relevance(data, rows["test"])
    report: dict[str, Any] = {
        "benchmark": "encoders_imagetext",
        "machine": {"cpus": os.cpu_count(), "torch_threads": threads, "python": platform.python_version()},
        "data": {
            "corpus": str(corpus.root),
            "openmoji_version": corpus.meta.get("source", {}).get("version"),
            "pairs": {k: int(len(v)) for k, v in rows.items()},
            "train_misaligned_pairs": int(data.misaligned[rows["train"]].sum()),
            "test_images": int(rel.shape[0]),
            "test_distinct_captions": int(rel.shape[1]),
            "test_images_with_several_correct_captions": int((rel.sum(1) > 1).sum()),
            "duplicates": "candidates are the distinct caption strings; a caption is correct for every image "
                          "pixel-identical to one it belongs to; ties count in the query's favour",
        },
        "config": {"epochs": epochs, "model": asdict(cfg0.model),
                   "batch_size": cfg0.batch_size, "lr": cfg0.lr, "warmup_epochs": cfg0.warmup_epochs,
                   "drop_share": cfg0.drop_share, "soft_power": cfg0.soft_power},
        "random": random_recall(rel),
        "ridge_frozen_features": ridge_baseline(cache, data),
        "flava": results,
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "encoders_imagetext.json").write_text(json.dumps(report, indent=2))
    _plot(report, out_dir / "encoders_imagetext.png")
    return report


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = {"random": report["random"], "ridge (frozen)": report["ridge_frozen_features"]}
    for scheme, r in report["flava"].items():
        methods[f"FLAVA {scheme}"] = r["test"]
    keys = ["i2t_R@1", "i2t_R@10", "t2i_R@1", "t2i_R@10"]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(16, 4.2))
    width = 0.8 / len(methods)
    for j, (name, m) in enumerate(methods.items()):
        a.bar(np.arange(len(keys)) + j * width, [m[k] for k in keys], width, label=name)
    a.set_xticks(np.arange(len(keys)) + 0.4 - width / 2, keys)
    a.set_title(f"test retrieval ({report['data']['test_images']} images)")
    a.set_ylim(0, 1)
    a.legend(fontsize=8)
    names, vals = [], []
    for scheme, r in report["flava"].items():
        names += [f"{scheme}\nITM", f"{scheme}\ncosine"]
        vals += [r["test"]["detect_auc_itm"], r["test"]["detect_auc_cosine"]]
    names.append("ridge\ncosine")
    vals.append(report["ridge_frozen_features"]["detect_auc_cosine"])
    b.bar(range(len(vals)), vals, color="tab:purple")
    b.set_xticks(range(len(vals)), names, fontsize=8)
    b.axhline(0.5, color="grey", ls="--", lw=1)
    b.set_ylim(0, 1)
    b.set_title("misaligned-pair detection AUC (test_detect)")
    for scheme, r in report["flava"].items():
        e = [h["epoch"] for h in r["history"]]
        c.plot(e, [h["val"]["i2t_R@1"] for h in r["history"]], marker="o", label=f"{scheme} val i2t R@1")
        c.plot(e, [h["val"]["detect_auc_itm"] for h in r["history"]], ls="--", label=f"{scheme} val AUC")
    c.set_xlabel("epoch")
    c.set_ylim(0, 1)
    c.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.encoders_imagetext", description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=FlavaTrainConfig().epochs)
    p.add_argument("--schemes", default="none,soft,drop", help="misaligned-pair schemes to train and compare")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--runs-dir", default=str(Path.home() / ".cache" / "thaw" / "runs" / "flava-bench"))
    p.add_argument("--out", default=str(DEFAULT_OUT))
    a = p.parse_args(argv)
    rep = run(a.epochs, [s for s in a.schemes.split(",") if s], a.threads, Path(a.runs_dir), Path(a.out))
    summary = {"random": rep["random"], "ridge": rep["ridge_frozen_features"],
               **{k: {"test": v["test"], "train_seconds": v["timing"]["train_seconds"]}
                  for k, v in rep["flava"].items()}}
    print(json.dumps(summary, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
