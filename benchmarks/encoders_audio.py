"""Benchmark of the audio encoders (MusicCLIP, Audio MAE) on held-out clips of the rendered music21 corpus.

Run: ``python -m benchmarks.encoders_audio [--models-dir DIR] [--mae-run DIR] [--clip-run DIR] [--out DIR]``
after training both (``thaw train audio-mae`` and ``thaw train musicclip``).
Writes ``benchmarks/results/encoders_audio.json`` and ``.png``.

What it measures, on the corpus ``test`` split (tune titles never seen in training: the split is by title):

* MusicCLIP retrieval with the *published ONNX* towers. audio->text: each test clip ranks all distinct test
  caption strings; text->audio: each distinct test caption ranks all test clips. A hit is a retrieved caption
  whose text equals the clip's own caption text (so clips sharing a caption are all correct for it).
  Recall@1 and @10.
* Random ranking: computed exactly (audio->text: ``k / #captions``; text->audio with ``m`` correct clips among
  ``N``: ``1 - C(N - m, k) / C(N, k)``, averaged over queries).
* Log-mel statistics baseline: ridge regression from the standardised per-band mean+std of the log-mel (128-d) to
  the MiniLM caption embedding, fitted on train (strength chosen on val by audio->text R@10), then the same
  retrieval with cosine against the MiniLM embeddings of the test captions.
* Audio MAE masked reconstruction MSE on test clips (per-patch normalised targets, mask ratio of the model, 5
  fixed mask draws) vs predicting the per-patch mean (zero in that normalised space), from the trained torch
  checkpoint.
* Linear probes (logistic regression on standardised features, fitted on train, scored on test) for the tags
  ``instrument`` (14 General MIDI timbres), ``collection`` (33 corpus folders), ``era`` (7), ``mode`` (6) and
  ``tempo`` bucket (4): Audio MAE (ONNX) embeddings vs log-mel statistics vs MusicCLIP audio embeddings vs the
  majority class of train. (MusicCLIP saw these tags through its captions in training; the other two did not.)
* Training times from the runs' ``report.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, machine_info, write_json

PROBE_TAGS = ("instrument", "collection", "era", "mode", "tempo")


def exact_random_recall(n_candidates: int, n_correct: np.ndarray, k: int) -> float:
    """Expected Recall@k of a uniformly random ranking: mean over queries of ``1 - C(N-m, k) / C(N, k)``."""
    n = n_candidates
    vals = [1.0 - (math.comb(n - int(m), k) / math.comb(n, k) if n - int(m) >= k else 0.0) for m in n_correct]
    return float(np.mean(vals))


def retrieval(audio: np.ndarray, text: np.ndarray, clip_caps: np.ndarray, cap_ids: np.ndarray) -> dict[str, float]:
    """Recall@1/@10 both ways.

    Args:
        audio: N x D unit audio vectors of the test clips.
        text: C x D unit vectors of the distinct test captions.
        clip_caps: N caption ids of the clips.
        cap_ids: C ids of the candidate captions (distinct).
    """
    from encoders.training.musicclip import recall_at

    sim = audio @ text.T  # N x C
    hit = clip_caps[:, None] == cap_ids[None, :]
    a2t = recall_at(sim, hit)
    t2a = recall_at(sim.T, hit.T)
    return {"a2t_r1": a2t[1], "a2t_r10": a2t[10], "t2a_r1": t2a[1], "t2a_r10": t2a[10]}


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def probe(train_x: np.ndarray, train_y: list[str], test_x: np.ndarray, test_y: list[str]) -> float:
    """Test accuracy of a logistic regression fitted on standardised train features."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    clf = make_pipeline(StandardScaler(), LogisticRegression(max_iter=3000, C=1.0))
    clf.fit(train_x, train_y)
    return float(np.mean(clf.predict(test_x) == np.array(test_y)))


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    from encoders.audio import AUDIO_MAE, MUSICCLIP_AUDIO, MUSICCLIP_TEXT, AudioMAEEncoder, MusicCLIPEncoder
    from encoders.audio_frontend import LogMelConfig, log_mel_stats
    from encoders.models.audio_mae import AudioMAE, AudioMAEConfig
    from encoders.registry import ModelRegistry
    from encoders.text import TextEncoder, ensure_minilm
    from encoders.training.common import cache_logmels, default_runs_dir, split_indices
    from encoders.training.musicclip import caption_embeddings
    from infra.settings import load_settings
    from workloads.music import load_music_corpus

    torch.set_num_threads(args.threads)
    t0 = time.perf_counter()
    reg = ModelRegistry(Path(args.models_dir).expanduser() if args.models_dir else Path(load_settings().models.dir))
    mae_v = reg.load(AUDIO_MAE)
    ca_v = reg.load(MUSICCLIP_AUDIO)
    ct_v = reg.load(MUSICCLIP_TEXT, ca_v.manifest.version)
    frontend = LogMelConfig.from_dict(mae_v.manifest.extra["frontend"])
    if LogMelConfig.from_dict(ca_v.manifest.extra["frontend"]) != frontend:
        raise ValueError("the two models were trained with different frontends")
    text_enc = TextEncoder(ensure_minilm(reg), threads=args.threads)
    mae_enc = AudioMAEEncoder(mae_v, threads=args.threads, micro_batch=16)
    clip_enc = MusicCLIPEncoder(ca_v, ct_v, text_enc, threads=args.threads, micro_batch=16)

    corpus = load_music_corpus(args.corpus_dir)
    runs = default_runs_dir()
    mae_run = Path(args.mae_run).expanduser() if args.mae_run else runs / "audio-mae"
    clip_run = Path(args.clip_run).expanduser() if args.clip_run else runs / "musicclip"
    cache_root = Path(args.cache_dir).expanduser() if args.cache_dir else runs / "logmel-cache"
    cached = cache_logmels(
        corpus.waveform, corpus.clip_ids, corpus.sample_rate, frontend, cache_root, not args.no_progress
    )
    tr = split_indices(corpus, ("train",), cached.valid, None)
    va = split_indices(corpus, ("val",), cached.valid, None)
    te = split_indices(corpus, ("test",), cached.valid, None)

    def mels(idx: np.ndarray) -> np.ndarray:
        return np.asarray(cached.logmels[idx], dtype=np.float32)

    t_emb = time.perf_counter()
    feats: dict[str, dict[str, np.ndarray]] = {"mae": {}, "clip": {}, "stats": {}}
    for name, idx in (("train", tr), ("val", va), ("test", te)):
        x = mels(idx)
        feats["mae"][name] = mae_enc.encode_logmel(x)
        feats["clip"][name] = clip_enc.encode_logmel(x)
        feats["stats"][name] = log_mel_stats(x)
    emb_s = time.perf_counter() - t_emb

    # ---------------------------------------------------------------- retrieval
    caps = np.array(corpus.captions, dtype=object)
    minilm = caption_embeddings(corpus.captions, text_enc, cache_root)

    def candidates(idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        uniq = sorted(set(caps[idx].tolist()))
        pos = {c: i for i, c in enumerate(uniq)}
        first = [int(idx[np.nonzero(caps[idx] == c)[0][0]]) for c in uniq]
        return np.array([pos[c] for c in caps[idx]]), np.arange(len(uniq)), np.array(first)

    te_caps, te_ids, te_first = candidates(te)
    clip_text = clip_enc.encode_text([corpus.captions[i] for i in te_first])
    res_clip = retrieval(feats["clip"]["test"], clip_text, te_caps, te_ids)
    n_correct_t2a = np.bincount(te_caps, minlength=len(te_ids))
    res_random = {
        "a2t_r1": exact_random_recall(len(te_ids), np.ones(len(te), int), 1),
        "a2t_r10": exact_random_recall(len(te_ids), np.ones(len(te), int), 10),
        "t2a_r1": exact_random_recall(len(te), n_correct_t2a, 1),
        "t2a_r10": exact_random_recall(len(te), n_correct_t2a, 10),
    }
    from sklearn.linear_model import Ridge
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(feats["stats"]["train"])
    va_caps, va_ids, va_first = candidates(va)
    best: tuple[float, float] = (-1.0, 1.0)
    alphas = [0.001, 0.01, 0.1, 1.0, 10.0, 100.0, 1000.0, 10000.0]
    val_scores = {}
    for a in alphas:
        rid = Ridge(alpha=a).fit(scaler.transform(feats["stats"]["train"]), minilm[tr])
        pv = _unit(rid.predict(scaler.transform(feats["stats"]["val"])))
        r = retrieval(pv, minilm[va_first], va_caps, va_ids)["a2t_r10"]
        val_scores[str(a)] = r
        if r > best[0]:
            best = (r, a)
    ridge = Ridge(alpha=best[1]).fit(scaler.transform(feats["stats"]["train"]), minilm[tr])
    pred_te = _unit(ridge.predict(scaler.transform(feats["stats"]["test"])))
    res_ridge = retrieval(pred_te, minilm[te_first], te_caps, te_ids)

    # ---------------------------------------------------------------- MAE reconstruction
    state = torch.load(mae_run / "checkpoints" / "last.pt", map_location="cpu", weights_only=False)
    mcfg = AudioMAEConfig.from_dict(state["meta"]["model_config"])
    if mcfg.to_dict() != mae_v.manifest.extra["model_config"]:
        raise ValueError(f"{mae_run} is not the run that published {mae_enc.model_version}")
    mae = AudioMAE(mcfg)
    mae.load_state_dict(state["model"])
    mae.eval()
    mse, base = [], []
    with torch.no_grad():
        xt = torch.from_numpy(mels(te))
        for draw in range(5):
            g = torch.Generator().manual_seed(1000 + draw)
            for s in range(0, len(te), 64):
                xb = xt[s : s + 64]
                loss, pred, mask = mae(xb, generator=g)
                target = mae.target(mae.patchify(xb))
                m = mask.bool()
                mse.append((((pred - target) ** 2).mean(-1)[m]).numpy())
                base.append(((target**2).mean(-1)[m]).numpy())
    recon = {
        "masked_patch_mse": float(np.concatenate(mse).mean()),
        "per_patch_mean_baseline_mse": float(np.concatenate(base).mean()),
        "mask_ratio": mcfg.mask_ratio,
        "mask_draws": 5,
        "target": "per-patch normalised log-mel patches (16 bands x 16 frames)",
    }

    # ---------------------------------------------------------------- linear probes
    probes: dict[str, dict[str, float | int]] = {}
    for tag in PROBE_TAGS:
        ytr = [corpus.tags[i].get(tag, "") for i in tr]
        yte = [corpus.tags[i].get(tag, "") for i in te]
        values, counts = np.unique(ytr, return_counts=True)
        majority = str(values[np.argmax(counts)])
        probes[tag] = {
            "classes_in_train": len(values),
            "audio_mae": probe(feats["mae"]["train"], ytr, feats["mae"]["test"], yte),
            "logmel_stats": probe(feats["stats"]["train"], ytr, feats["stats"]["test"], yte),
            "musicclip_audio": probe(feats["clip"]["train"], ytr, feats["clip"]["test"], yte),
            "majority_class": float(np.mean(np.array(yte) == majority)),
        }

    def train_info(run_dir: Path) -> dict[str, Any]:
        f = run_dir / "report.json"
        if not f.is_file():
            return {}
        r = json.loads(f.read_text())
        h = r.get("history", {})
        return {
            "epochs": len(h.get("train", [])),
            "train_seconds": float(sum(h.get("epoch_seconds", []))),
            "logmel_cache_seconds": r.get("logmel_cache_seconds", r.get("cache_seconds")),
            "train_clips": r.get("training", {}).get("split_sizes", {}).get("train"),
            "final_train_loss": h.get("train", [None])[-1],
            "final_val_loss": h.get("val", [None])[-1],
            "threads": r.get("threads"),
            "published": r.get("published"),
        }

    return {
        "corpus": {
            "dir": str(corpus.root),
            "clips": len(corpus),
            "train": int(len(tr)),
            "val": int(len(va)),
            "test": int(len(te)),
            "distinct_test_captions": int(len(te_ids)),
            "split": "by normalised tune title (leak-free), seed 0",
        },
        "models": {
            "audio_mae": mae_enc.model_version,
            "musicclip_audio": clip_enc.model_version,
            "musicclip_text": clip_enc.text.model_version,
            "text": text_enc.model_version,
        },
        "retrieval": {
            "hit_rule": "retrieved caption text equals the clip's own caption text",
            "musicclip": res_clip,
            "random_exact": res_random,
            "logmel_stats_ridge": {**res_ridge, "alpha": best[1], "val_a2t_r10_by_alpha": val_scores},
        },
        "audio_mae_reconstruction": recon,
        "linear_probe_accuracy": probes,
        "training": {"audio_mae": train_info(mae_run), "musicclip": train_info(clip_run)},
        "embedding_seconds_onnx": emb_s,
        "benchmark_seconds": time.perf_counter() - t0,
        "machine": machine_info(),
        "torch_threads": args.threads,
    }


def plot(res: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.2))
    r = res["retrieval"]
    keys = ["a2t_r1", "a2t_r10", "t2a_r1", "t2a_r10"]
    w = 0.27
    for j, (name, label) in enumerate(
        [("musicclip", "MusicCLIP"), ("logmel_stats_ridge", "log-mel stats + ridge"), ("random_exact", "random")]
    ):
        axes[0].bar(np.arange(4) + (j - 1) * w, [r[name][k] for k in keys], w, label=label)
    axes[0].set_xticks(np.arange(4), ["a→t R@1", "a→t R@10", "t→a R@1", "t→a R@10"])
    axes[0].set_title(f"test retrieval ({res['corpus']['distinct_test_captions']} captions)")
    axes[0].legend(fontsize=8)
    rec = res["audio_mae_reconstruction"]
    axes[1].bar(["Audio MAE", "per-patch mean"], [rec["masked_patch_mse"], rec["per_patch_mean_baseline_mse"]])
    axes[1].set_title("masked-patch MSE on test (lower is better)")
    p = res["linear_probe_accuracy"]
    feats = [("audio_mae", "Audio MAE"), ("logmel_stats", "log-mel stats"), ("musicclip_audio", "MusicCLIP"),
             ("majority_class", "majority")]  # fmt: skip
    for j, (k, label) in enumerate(feats):
        axes[2].bar(np.arange(len(p)) + (j - 1.5) * 0.2, [p[t][k] for t in p], 0.2, label=label)
    axes[2].set_xticks(np.arange(len(p)), list(p))
    axes[2].set_title("linear probe accuracy on test")
    axes[2].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.encoders_audio", description=__doc__.split("\n")[0])
    p.add_argument("--models-dir", default=None, help="registry root (default: settings' models dir)")
    p.add_argument("--corpus-dir", default=None)
    p.add_argument("--mae-run", default=None, help="Audio MAE run dir (default ~/.cache/thaw/runs/audio-mae)")
    p.add_argument("--clip-run", default=None, help="MusicCLIP run dir (default ~/.cache/thaw/runs/musicclip)")
    p.add_argument("--cache-dir", default=None, help="log-mel cache (default ~/.cache/thaw/runs/logmel-cache)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", default=str(DEFAULT_OUT))
    p.add_argument("--no-progress", action="store_true")
    args = p.parse_args(argv)
    res = run(args)
    out = Path(args.out)
    write_json(out / "encoders_audio.json", res)
    plot(res, out / "encoders_audio.png")
    print(json.dumps({k: res[k] for k in ("corpus", "retrieval", "audio_mae_reconstruction", "linear_probe_accuracy")},
                     indent=2))  # fmt: skip
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
