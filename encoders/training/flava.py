"""Training of the FLAVA-style image–text model (:mod:`encoders.models.flava`) on the OpenMoji corpus.

Run: ``thaw train flava [--epochs 6] [--misaligned soft|drop|none] [--out DIR] [--no-export]``
(``--help`` lists everything). The corpus must be built first: ``thaw corpus imagetext build``.

* Both backbones are frozen, so their outputs are computed once per corpus and cached as ``.npy`` files
  (EfficientNet-lite0 7 x 7 x 1280 feature maps per image, MiniLM token states per caption, float16) under
  ``<cache dir>/<key>/``; an epoch then only runs the small trainable head.
* Misaligned pairs: after ``warmup_epochs``, every epoch starts by scoring all training pairs with the model's own
  ITM probability (detached, eval mode) and turns the scores into per-pair weights of the positive terms
  (:func:`encoders.models.flava.misalignment_weights`: ``soft`` = proportional to the probability, ``drop`` =
  the lowest-scored share gets weight 0). The corpus' truth labels are never used for training; they are only read
  for diagnostics (mean weight of truly misaligned vs clean pairs) and for the detection AUC.
* Determinism: epoch ``e`` draws its batch order and hard negatives from generators seeded with ``(seed, e)`` and
  reseeds torch (dropout) the same way, so a run resumed from the checkpoint of epoch ``e`` continues exactly as
  the uninterrupted run would have. A checkpoint is written after every epoch (``checkpoints/epoch-NNN.pt`` and
  ``last.pt``).
* The run ends with the held-out test evaluation, a loss-curve PNG, ``report.json`` and, unless ``export=False``,
  the ONNX export of the three graphs into the model registry (:func:`encoders.training.export_imagetext.export_flava`).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
import time
from dataclasses import asdict, dataclass, field, fields
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from encoders.models.flava import MISALIGNED_SCHEMES, FlavaConfig, FlavaModel, flava_loss, misalignment_weights
from encoders.training.common import required_models_dir

log = logging.getLogger(__name__)

CACHE_FORMAT = 1
CHECKPOINT_FORMAT = 1


@dataclass(frozen=True)
class FlavaTrainConfig:
    """Everything a training run depends on.

    Attributes:
        model: Sizes of the trainable head.
        out_dir: Run directory: checkpoints, report, loss curve.
        cache_dir: Backbone feature cache (default ``<out_dir>/cache``; share it between runs).
        models_dir: Registry root for the export (required when exporting; ``thaw train flava`` passes the settings'
            ``models.dir``).
        epochs: Passes over the training pairs.
        batch_size: Pairs per step (also the contrastive in-batch negatives).
        lr: Peak AdamW learning rate (linear warm-up over ``warmup_steps``, cosine decay to 10 %).
        warmup_steps: Learning-rate warm-up steps.
        weight_decay: AdamW weight decay.
        itm_weight: Weight of the matching loss next to the contrastive loss.
        misaligned: Misaligned-pair handling: ``"none"``, ``"soft"`` or ``"drop"``.
        warmup_epochs: Epochs trained with uniform weights before the weighting starts.
        drop_share: Share of training pairs dropped per epoch by ``"drop"``.
        soft_power: Exponent applied to the ITM probability by ``"soft"``.
        include_skintones: Use the skin-tone variants too (near-duplicates; off by default).
        limit: Use only the first ``limit`` training pairs and ``max(8, limit // 4)`` val/test images (smoke runs).
        max_steps: Stop after this many optimizer steps in total (smoke runs; the epoch is not checkpointed).
        seed: Seed of initialisation, batch order, negatives and dropout.
        threads: Torch intra-op threads.
        resume: Continue from ``<out_dir>/last.pt`` when it exists and was written with the same configuration.
        export: Export to ONNX and publish in the registry at the end.
        version: Registry version (default: the run id).
        progress: Show tqdm progress bars.
    """

    model: FlavaConfig = field(default_factory=FlavaConfig)
    out_dir: str = "~/.cache/thaw/runs/flava"
    cache_dir: str | None = None
    models_dir: str | None = None
    epochs: int = 6
    batch_size: int = 64
    lr: float = 5e-4
    warmup_steps: int = 30
    weight_decay: float = 0.01
    itm_weight: float = 1.0
    misaligned: str = "soft"
    warmup_epochs: int = 2
    drop_share: float = 0.1
    soft_power: float = 1.0
    include_skintones: bool = False
    limit: int | None = None
    max_steps: int | None = None
    seed: int = 0
    threads: int = 1
    resume: bool = True
    export: bool = True
    version: str | None = None
    progress: bool = True

    def signature(self) -> dict[str, Any]:
        """The fields that define the trained weights (a checkpoint resumes only under the same signature; the
        epoch count is part of it because the learning-rate schedule spans all epochs)."""
        skip = {"out_dir", "cache_dir", "models_dir", "threads", "resume", "export", "version", "progress", "max_steps"}
        d = {f.name: getattr(self, f.name) for f in fields(self) if f.name not in skip}
        d["model"] = asdict(self.model)
        return d


# ------------------------------------------------------------------------------------------------------- data
@dataclass
class PairData:
    """Training/evaluation pairs as indices into the feature cache.

    Attributes:
        rows: ``{split: corpus row indices}`` for train, val, val_detect, test, test_detect (possibly limited).
        image_of_row: Cache image index of every corpus row used (-1 for rows not used).
        caption_of_row: Cache caption index of every corpus row used (-1 otherwise).
        image_group: Per cache image, an id shared by pixel-identical images.
        misaligned: ``bool`` per corpus row (truth; diagnostics and AUC only).
    """

    rows: dict[str, np.ndarray]
    image_of_row: np.ndarray
    caption_of_row: np.ndarray
    image_group: np.ndarray
    misaligned: np.ndarray


@dataclass
class FeatureCache:
    """Frozen backbone outputs. ``image_tokens``: I x 49 x 1280, ``text_states``: C x T x 384 (float16, padded),
    ``text_mask``: C x T uint8; ``captions``: the C caption strings; ``png_names``: the I image file names."""

    image_tokens: np.ndarray
    text_states: np.ndarray
    text_mask: np.ndarray
    captions: list[str]
    png_names: list[str]
    dir: Path
    seconds: float = 0.0


def select_rows(corpus: Any, limit: int | None) -> dict[str, np.ndarray]:
    """The rows of each split used by a run: all, or the first ``limit`` train pairs and ``max(8, limit // 4)``
    val/test images (with their labelled misaligned pairs)."""
    splits = {k: np.asarray(v, dtype=np.int64) for k, v in corpus.splits.items()}
    if limit is None:
        return splits
    if limit < 2:
        raise ValueError(f"limit must be >= 2, got {limit}")
    out = {"train": splits["train"][:limit]}
    n_eval = max(8, limit // 4)
    for s in ("val", "test"):
        clean = splits[s][:n_eval]
        ids = {corpus.ids[i] for i in clean}
        out[s] = clean
        out[f"{s}_detect"] = np.asarray([i for i in splits[f"{s}_detect"] if corpus.ids[i] in ids], dtype=np.int64)
    return out


def _sha(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def build_feature_cache(
    corpus: Any,
    rows: dict[str, np.ndarray],
    cache_root: Path,
    cfg: FlavaConfig,
    threads: int = 1,
    progress: bool = True,
) -> tuple[FeatureCache, PairData]:
    """Computes (or loads) the frozen backbone outputs of every image and caption the rows use.

    Args:
        corpus: An ``ImageTextCorpus``.
        rows: From :func:`select_rows`.
        cache_root: Parent directory of the cache; the subdirectory is a hash of the inputs.
        cfg: Model sizes (``max_text_tokens``, ``image_tokens``).
        threads: Torch threads for the backbones.
        progress: tqdm bars.

    Returns:
        The cache and the row -> cache index mapping.
    """
    from tqdm import tqdm

    from encoders.imagetext import IMAGE_SIZE, load_tokenizer, tokenize
    from encoders.text import bundled_model_dir
    from encoders.training.export_imagetext import load_image_backbone, load_text_backbone

    used = np.unique(np.concatenate(list(rows.values())))
    png_names = sorted({corpus.png_paths[i].name for i in used})
    captions = sorted({corpus.captions[i] for i in used})
    png_dir = corpus.png_paths[int(used[0])].parent
    key = _sha(json.dumps([CACHE_FORMAT, str(png_dir), png_names, captions, cfg.max_text_tokens, IMAGE_SIZE]))[:16]
    d = cache_root / key
    t0 = time.perf_counter()
    files = {n: d / f"{n}.npy" for n in ("image_tokens", "text_states", "text_mask")}
    if not all(f.is_file() for f in files.values()):
        d.mkdir(parents=True, exist_ok=True)
        torch.set_num_threads(max(1, threads))
        ib = load_image_backbone()
        feats = np.zeros((len(png_names), cfg.image_tokens, cfg.image_feat_dim), dtype=np.float16)
        name_to_row = {corpus.png_paths[i].name: int(i) for i in used}
        from encoders.imagetext import preprocess_images

        bs = 8
        with torch.no_grad():
            for s in tqdm(range(0, len(png_names), bs), desc="EfficientNet features", disable=not progress):
                imgs = [corpus.image(name_to_row[n]) for n in png_names[s : s + bs]]
                f = ib(torch.from_numpy(preprocess_images(imgs, IMAGE_SIZE)))
                if f.shape[1] != cfg.image_tokens or f.shape[2] != cfg.image_feat_dim:
                    raise ValueError(
                        f"image backbone gives {tuple(f.shape[1:])}, config expects "
                        f"({cfg.image_tokens}, {cfg.image_feat_dim})"
                    )
                feats[s : s + bs] = f.numpy().astype(np.float16)
        tb = load_text_backbone()
        tok = load_tokenizer(bundled_model_dir() / "tokenizer.json", cfg.max_text_tokens)
        states = np.zeros((len(captions), cfg.max_text_tokens, cfg.text_feat_dim), dtype=np.float16)
        masks = np.zeros((len(captions), cfg.max_text_tokens), dtype=np.uint8)
        with torch.no_grad():
            for s in tqdm(range(0, len(captions), 64), desc="MiniLM token states", disable=not progress):
                ids, mask = tokenize(tok, captions[s : s + 64])
                h = tb(input_ids=torch.from_numpy(ids), attention_mask=torch.from_numpy(mask)).last_hidden_state
                w = ids.shape[1]
                states[s : s + 64, :w] = h.numpy().astype(np.float16)
                masks[s : s + 64, :w] = mask
        for name, arr in (("image_tokens", feats), ("text_states", states), ("text_mask", masks)):
            tmp = d / f".{name}.tmp.npy"
            np.save(tmp, arr)
            tmp.replace(files[name])
        (d / "index.json").write_text(
            json.dumps({"png_dir": str(png_dir), "png_names": png_names, "captions": captions}, ensure_ascii=False)
        )
    cache = FeatureCache(
        image_tokens=np.load(files["image_tokens"]),
        text_states=np.load(files["text_states"]),
        text_mask=np.load(files["text_mask"]),
        captions=captions,
        png_names=png_names,
        dir=d,
        seconds=time.perf_counter() - t0,
    )
    img_idx = {n: i for i, n in enumerate(png_names)}
    cap_idx = {c: i for i, c in enumerate(captions)}
    image_of_row = np.full(len(corpus), -1, dtype=np.int64)
    caption_of_row = np.full(len(corpus), -1, dtype=np.int64)
    for i in used:
        image_of_row[i] = img_idx[corpus.png_paths[i].name]
        caption_of_row[i] = cap_idx[corpus.captions[i]]
    md5 = {}
    for i in used:
        md5[img_idx[corpus.png_paths[i].name]] = hashlib.md5(corpus.png_paths[i].read_bytes()).hexdigest()  # noqa: S324
    groups: dict[str, int] = {}
    image_group = np.asarray([groups.setdefault(md5[i], len(groups)) for i in range(len(png_names))], dtype=np.int64)
    data = PairData(
        rows=rows,
        image_of_row=image_of_row,
        caption_of_row=caption_of_row,
        image_group=image_group,
        misaligned=np.asarray(corpus.misaligned, dtype=bool),
    )
    return cache, data


def _batch(cache: FeatureCache, data: PairData, rows: np.ndarray) -> tuple[torch.Tensor, ...]:
    img = data.image_of_row[rows]
    cap = data.caption_of_row[rows]
    mask = cache.text_mask[cap]
    t = max(1, int(mask.sum(axis=1).max()))
    return (
        torch.from_numpy(cache.image_tokens[img].astype(np.float32)),
        torch.from_numpy(cache.text_states[cap, :t].astype(np.float32)),
        torch.from_numpy(mask[:, :t].astype(np.int64)),
        torch.from_numpy(cap),
        torch.from_numpy(data.image_group[img]),
    )


# ------------------------------------------------------------------------------------------------- evaluation
@torch.no_grad()
def pair_scores(
    model: FlavaModel, cache: FeatureCache, data: PairData, rows: np.ndarray, batch: int = 128
) -> tuple[np.ndarray, np.ndarray]:
    """ITM probability and contrastive cosine of each (image, caption) row, in eval mode: two float arrays."""
    was = model.training
    model.eval()
    itm, cos = [], []
    for s in range(0, len(rows), batch):
        img, st, mask, _, _ = _batch(cache, data, rows[s : s + batch])
        ie, it = model.encode_image(img)
        te, tt = model.encode_text(st, mask)
        _, logit = model.fuse(it, torch.ones(it.shape[:2]), tt, mask)
        itm.append(torch.sigmoid(logit).numpy())
        cos.append((ie * te).sum(-1).numpy())
    model.train(was)
    if not itm:
        return np.zeros(0), np.zeros(0)
    return np.concatenate(itm).astype(np.float64), np.concatenate(cos).astype(np.float64)


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC of ``scores`` for the positive ``labels`` (ties count half); NaN without both classes."""
    from sklearn.metrics import roc_auc_score

    y = np.asarray(labels, dtype=bool)
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, np.asarray(scores, dtype=np.float64)))


def retrieval_recall(sim: np.ndarray, relevant: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Recall@k of both directions from an image x caption score matrix.

    Args:
        sim: I x C scores.
        relevant: I x C bool, True where the caption correctly describes the image (every row and column has one).
        ks: Cut-offs.

    Returns:
        ``{"i2t_R@k": ..., "t2i_R@k": ...}``: share of queries whose best-scored relevant candidate is among the
        top k (ties counted in the query's favour).
    """
    out: dict[str, float] = {}
    for name, s, r in (("i2t", sim, relevant), ("t2i", sim.T, relevant.T)):
        best = np.where(r, s, -np.inf).max(axis=1)
        rank = (np.where(r, -np.inf, s) > best[:, None]).sum(axis=1)
        for k in ks:
            out[f"{name}_R@{k}"] = float((rank < k).mean()) if len(rank) else float("nan")
    return out


def random_recall(relevant: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Expected Recall@k of a random ranking for the same relevance matrix (exact, hypergeometric)."""
    out: dict[str, float] = {}
    for name, r in (("i2t", relevant), ("t2i", relevant.T)):
        n = r.shape[1]
        m = r.sum(axis=1)
        for k in ks:
            kk = min(k, n)
            miss = np.array([math.comb(n - int(mi), kk) / math.comb(n, kk) for mi in m])
            out[f"{name}_R@{k}"] = float((1.0 - miss).mean()) if len(m) else float("nan")
    return out


def relevance(data: PairData, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Retrieval set of clean rows: query images (one per row), candidate captions (the distinct caption strings of
    the rows) and the relevance matrix. A caption is relevant to every image pixel-identical to one it belongs to.

    Returns:
        ``(image_idx I, caption_idx C, relevant I x C)``.
    """
    img = data.image_of_row[rows]
    cap_all = data.caption_of_row[rows]
    caps = np.unique(cap_all)
    col = {int(c): j for j, c in enumerate(caps)}
    grp = data.image_group[img]
    rel = np.zeros((len(rows), len(caps)), dtype=bool)
    for g in np.unique(grp):
        members = grp == g
        cols = [col[int(c)] for c in cap_all[members]]
        rel[np.ix_(members, cols)] = True
    return img, caps, rel


@torch.no_grad()
def evaluate(model: FlavaModel, cache: FeatureCache, data: PairData, split: str) -> dict[str, float]:
    """Retrieval Recall@1/@10 on ``split``'s clean pairs and detection AUC on ``<split>_detect``."""
    was = model.training
    model.eval()
    img, caps, rel = relevance(data, data.rows[split])
    ie, _ = model.encode_image(torch.from_numpy(cache.image_tokens[img].astype(np.float32)))
    te, _ = model.encode_text(
        torch.from_numpy(cache.text_states[caps].astype(np.float32)),
        torch.from_numpy(cache.text_mask[caps].astype(np.int64)),
    )
    out = retrieval_recall((ie @ te.T).numpy(), rel)
    det = data.rows[f"{split}_detect"]
    itm, cos = pair_scores(model, cache, data, det)
    y = data.misaligned[det]
    out["detect_auc_itm"] = auc(-itm, y)
    out["detect_auc_cosine"] = auc(-cos, y)
    out["images"] = float(len(img))
    out["captions"] = float(len(caps))
    model.train(was)
    return out


# ---------------------------------------------------------------------------------------------------- training
def _lr_lambda(total_steps: int, warmup: int) -> Any:
    def f(step: int) -> float:
        if step < warmup:
            return (step + 1) / max(1, warmup)
        p = (step - warmup) / max(1, total_steps - warmup)
        return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, p)))

    return f


def _plot(history: list[dict[str, Any]], steps: list[dict[str, float]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(11, 4))
    if steps:
        x = [s["step"] for s in steps]
        for key in ("total", "itc", "itm"):
            a.plot(x, [s[key] for s in steps], label=key, lw=1)
    a.set_xlabel("step")
    a.set_ylabel("loss")
    a.legend()
    a.set_title(title)
    if history:
        e = [h["epoch"] for h in history]
        for key in ("i2t_R@1", "t2i_R@1", "i2t_R@10", "detect_auc_itm"):
            b.plot(e, [h["val"][key] for h in history], marker="o", label=f"val {key}")
    b.set_xlabel("epoch")
    b.set_ylim(0, 1)
    b.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _save(path: Path, obj: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    torch.save(obj, tmp)
    tmp.replace(path)


def train(cfg: FlavaTrainConfig, corpus: Any) -> dict[str, Any]:
    """Trains (or resumes), evaluates, plots, and exports/publishes unless ``cfg.export`` is False.

    Returns:
        The JSON-friendly report of :func:`fit` (also written to ``<out_dir>/report.json``).
    """
    return fit(cfg, corpus)[1]


def fit(cfg: FlavaTrainConfig, corpus: Any) -> tuple[FlavaModel, dict[str, Any]]:
    """:func:`train`, also returning the trained head.

    ``corpus`` is a built OpenMoji corpus, loaded by the caller with ``cfg.include_skintones``
    (``workloads.imagetext.load_imagetext_corpus``).

    Returns:
        ``(model, report)``; the report is JSON-friendly: configuration, data counts, timings, per-epoch history
        (losses, val metrics, weight diagnostics), final val/test metrics, output paths and, when exported, the
        published versions.

    Raises:
        FileNotFoundError: The corpus is not built.
        ValueError: Bad configuration.
    """
    from tqdm import tqdm

    if cfg.misaligned not in MISALIGNED_SCHEMES:
        raise ValueError(f"misaligned must be one of {MISALIGNED_SCHEMES}, got {cfg.misaligned!r}")
    if cfg.epochs < 1 or cfg.batch_size < 2:
        raise ValueError("need epochs >= 1 and batch_size >= 2")
    torch.set_num_threads(max(1, cfg.threads))
    out = Path(cfg.out_dir).expanduser()
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    rows = select_rows(corpus, cfg.limit)
    if len(rows["train"]) < 2:
        raise ValueError("the corpus has fewer than 2 training pairs")
    cache_root = Path(cfg.cache_dir).expanduser() if cfg.cache_dir else out / "cache"
    cache, data = build_feature_cache(corpus, rows, cache_root, cfg.model, cfg.threads, cfg.progress)

    torch.manual_seed(cfg.seed)
    model = FlavaModel(cfg.model)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    train_rows = rows["train"]
    steps_per_epoch = math.ceil(len(train_rows) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, _lr_lambda(cfg.epochs * steps_per_epoch, cfg.warmup_steps))
    signature = cfg.signature()
    run_id = f"{datetime.now(UTC).strftime('%Y%m%dT%H%M%SZ')}-{_sha(json.dumps(signature, sort_keys=True))[:8]}"
    history: list[dict[str, Any]] = []
    steps: list[dict[str, float]] = []
    start_epoch, global_step, train_seconds = 0, 0, 0.0
    resumed_from = None
    last = out / "last.pt"
    if cfg.resume and last.is_file():
        ck = torch.load(last, map_location="cpu", weights_only=False)
        if ck.get("format") == CHECKPOINT_FORMAT and ck.get("signature") == signature:
            model.load_state_dict(ck["model"])
            opt.load_state_dict(ck["optimizer"])
            sched.load_state_dict(ck["scheduler"])
            start_epoch, global_step = int(ck["epoch"]), int(ck["global_step"])
            history, steps = list(ck["history"]), list(ck["steps"])
            train_seconds = float(ck["train_seconds"])
            run_id = str(ck["run_id"])
            resumed_from = str(last)
        else:
            log.warning("flava: %s was written with another configuration; starting afresh", last)

    weights = np.ones(len(train_rows), dtype=np.float32)
    stopped_early = False
    for epoch in range(start_epoch, cfg.epochs):
        t0 = time.perf_counter()
        diag: dict[str, float] = {}
        if cfg.misaligned != "none" and epoch >= cfg.warmup_epochs:
            scores, _ = pair_scores(model, cache, data, train_rows)
            weights = misalignment_weights(scores, cfg.misaligned, cfg.drop_share, cfg.soft_power)
            mis = data.misaligned[train_rows]  # diagnostics only
            if mis.any() and (~mis).any():
                diag = {
                    "mean_weight_misaligned": float(weights[mis].mean()),
                    "mean_weight_clean": float(weights[~mis].mean()),
                    "train_detect_auc_itm": auc(-scores, mis),
                }
        else:
            weights = np.ones(len(train_rows), dtype=np.float32)
        rng = np.random.default_rng([cfg.seed, epoch])
        gen = torch.Generator().manual_seed(int(rng.integers(2**62)))
        torch.manual_seed(int(rng.integers(2**62)))
        perm = rng.permutation(len(train_rows))
        model.train()
        sums = {"total": 0.0, "itc": 0.0, "itm": 0.0, "itm_acc": 0.0}
        n_batches = 0
        bar = tqdm(
            range(0, len(perm), cfg.batch_size),
            desc=f"epoch {epoch + 1}/{cfg.epochs}",
            disable=not cfg.progress,
            leave=False,
        )
        for s in bar:
            idx = perm[s : s + cfg.batch_size]
            if len(idx) < 2:
                continue
            img, st, mask, cap, grp = _batch(cache, data, train_rows[idx])
            loss = flava_loss(model, img, st, mask, cap, grp, torch.from_numpy(weights[idx]), cfg.itm_weight, gen)
            opt.zero_grad(set_to_none=True)
            loss.total.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            opt.step()
            sched.step()
            global_step += 1
            rec = {
                "step": float(global_step),
                "total": float(loss.total.detach()),
                "itc": loss.itc,
                "itm": loss.itm,
                "itm_acc": loss.itm_acc,
            }
            steps.append(rec)
            for k in sums:
                sums[k] += rec[k]
            n_batches += 1
            bar.set_postfix(loss=f"{rec['total']:.3f}")
            if cfg.max_steps is not None and global_step >= cfg.max_steps:
                stopped_early = True
                break
        train_seconds += time.perf_counter() - t0
        if stopped_early:
            break
        val = evaluate(model, cache, data, "val")
        history.append(
            {
                "epoch": epoch + 1,
                "seconds": time.perf_counter() - t0,
                **{k: v / max(1, n_batches) for k, v in sums.items()},
                "temperature": model.temperature,
                "val": val,
                "weights": diag,
            }
        )
        ck = {
            "format": CHECKPOINT_FORMAT,
            "signature": signature,
            "run_id": run_id,
            "epoch": epoch + 1,
            "global_step": global_step,
            "model": model.state_dict(),
            "optimizer": opt.state_dict(),
            "scheduler": sched.state_dict(),
            "history": history,
            "steps": steps,
            "train_seconds": train_seconds,
        }
        _save(out / "checkpoints" / f"epoch-{epoch + 1:03d}.pt", ck)
        shutil.copy2(out / "checkpoints" / f"epoch-{epoch + 1:03d}.pt", last)
        if cfg.progress:
            log.info(
                "epoch %d: loss %.3f (itc %.3f, itm %.3f) val i2t R@1 %.3f R@10 %.3f t2i R@1 %.3f detect AUC %.3f",
                epoch + 1, history[-1]["total"], history[-1]["itc"], history[-1]["itm"], val["i2t_R@1"],
                val["i2t_R@10"], val["t2i_R@1"], val["detect_auc_itm"],
            )

    _plot(history, steps, out / "loss_curve.png", f"FLAVA-style, misaligned={cfg.misaligned}")
    report: dict[str, Any] = {
        "run_id": run_id,
        "config": {**signature, "threads": cfg.threads, "max_steps": cfg.max_steps},
        "data": {
            "corpus_dir": str(corpus.root),
            "openmoji_version": corpus.meta.get("source", {}).get("version"),
            "pairs": {k: int(len(v)) for k, v in rows.items()},
            "train_misaligned_pairs": int(data.misaligned[rows["train"]].sum()),
            "images_cached": len(cache.png_names),
            "captions_cached": len(cache.captions),
            "duplicates": "retrieval candidates are the distinct caption strings; a caption counts as correct for "
            "every pixel-identical image of an image it belongs to",
        },
        "timing": {
            "cache_seconds": cache.seconds,
            "train_seconds": train_seconds,
            "seconds_per_epoch": train_seconds / max(1, len(history)),
        },
        "resumed_from": resumed_from,
        "stopped_early": stopped_early,
        "epochs_done": len(history),
        "steps_done": global_step,
        "history": history,
        "steps": steps,
        "paths": {
            "out_dir": str(out),
            "cache_dir": str(cache.dir),
            "loss_curve": str(out / "loss_curve.png"),
            "last_checkpoint": str(last) if last.is_file() else None,
        },
    }
    if not stopped_early:
        report["val"] = evaluate(model, cache, data, "val")
        report["test"] = evaluate(model, cache, data, "test")
    if cfg.export and not stopped_early:
        from encoders.registry import ModelRegistry
        from encoders.training.export_imagetext import export_flava

        models_dir = required_models_dir(cfg.models_dir)
        provenance = {
            "run_id": run_id,
            "data": {
                **report["data"],
                "build": {k: corpus.meta.get(k) for k in ("source", "config") if k in corpus.meta},
                "truth_labels_used_for_training": False,
            },
            "training": {
                "config": report["config"],
                "train_seconds": train_seconds,
                "val": report.get("val"),
                "test": report.get("test"),
            },
        }
        from encoders.imagetext import MODEL_NAMES

        registry = ModelRegistry(models_dir)
        version = cfg.version or run_id
        if all(version in registry.versions(n) for n in MODEL_NAMES):  # a finished run re-entered via resume
            report["published"] = {n: str(registry.root / n / version) for n in MODEL_NAMES}
        else:
            published = export_flava(model, registry, version, extra=provenance)
            report["published"] = {n: str(v.path) for n, v in published.items()}
    (out / "report.json").write_text(json.dumps(report, indent=2, default=str))
    return model, report
