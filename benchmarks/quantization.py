"""What int8 dynamic quantisation of the encoders costs in quality and gains in speed, fp32 and int8 in one run.

Run::

    python -m benchmarks.quantization                  # quantises what is missing, then measures (~3-5 min)
    python -m benchmarks.quantization --speed-items 96 --skip-quality

The int8 variants (:mod:`encoders.quantize`: ``onnxruntime.quantization.quantize_dynamic`` of MatMul/Gemm, per
channel, 7-bit weights) of MiniLM and of the FLAVA-style image and text graphs are published beside their fp32
versions when missing (``thaw models quantize`` does the same). Everything else runs on registry data only:

* **MiniLM sentence vectors** of the 1,682 MovieLens-100k documents (title | genres): cosine of each int8 vector with
  its fp32 one, and how many of each item's 10 nearest neighbours by fp32 the int8 vectors keep (overlap@10; the
  text space's recall is a nearest-neighbour search).
* **MusicCLIP retrieval through MiniLM** (the text tower reads MiniLM sentence vectors): audio->text and
  text->audio Recall@1/@10 over every clip of the rendered corpus (160 in a plain clone, one distinct caption
  each), with the fp32 and the int8 MiniLM under the same fp32 audio and text towers. The bundled model was trained
  on a larger render of the same plan, so most of these clips are its training clips: read the difference, not the
  level.
* **FLAVA-style retrieval**: image->text and text->image Recall@1/@10 on the OpenMoji test split (227 aligned
  pairs, distinct captions; a caption is correct for its own image), fp32 vs int8 image and text graphs (the
  fusion graph stays fp32), and the cosine of the int8 ``image`` / ``image_text`` vectors with the fp32 ones.
* **The image backbone's convolutions**: the published variant quantises MatMul/Gemm only, which in the
  FLAVA-style image graph is the projection, not the EfficientNet-lite0 backbone. ``conv_probe`` quantises the
  graph with ``Conv`` included (to a temporary file, never published) and measures images/s and the cosine of its
  embeddings with fp32 on OpenMoji test images.
* **Speed, per graph**: MiniLM on 32 MovieLens-100k documents and the FLAVA-style graphs on 16 moments, fp32 and
  int8 back to back 15 times; the median of the per-round time ratios.
* **Speed**: the whole featuriser (:class:`encoders.featurizer.ContentFeaturizer`, every encoder) over the same
  mixed items as the freshness benchmark (40% tracks, 30% moments, 30% community posts) in batches of
  ``--batch-size`` (32, the worker's content batch), under the three ``THAW_MODELS__QUANTIZE`` settings (``none``,
  ``int8`` = MiniLM, ``int8-all`` = MiniLM and the FLAVA-style graphs) in turn on each batch; items/s, the
  per-encoder milliseconds per batch, and the per-batch speed-up over fp32 (median).

Writes ``<out>/quantization.json`` and ``.png``. The machine's busy cores during the speed run are recorded:
other load on the 2 cores moves the speed numbers (the quality numbers do not depend on it).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, CpuMeter, machine_info, mixed_items, write_json


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def row_cosines(a: np.ndarray, b: np.ndarray) -> dict[str, float]:
    """Mean / min / 1st percentile of the row-wise cosine of ``a`` and ``b`` (same shape)."""
    c = np.sum(_unit(a) * _unit(b), axis=1)
    return {"mean": round(float(c.mean()), 4), "min": round(float(c.min()), 4),
            "p01": round(float(np.percentile(c, 1)), 4)}


def knn_overlap(ref: np.ndarray, got: np.ndarray, k: int = 10) -> float:
    """Mean share of each row's ``k`` nearest other rows by ``ref`` (cosine) that ``got`` also ranks in its top k."""
    def top(x: np.ndarray) -> np.ndarray:
        u = _unit(x)
        s = u @ u.T
        np.fill_diagonal(s, -np.inf)
        return np.argsort(-s, axis=1, kind="stable")[:, :k]

    a, b = top(ref), top(got)
    return float(np.mean([len(set(a[i]) & set(b[i])) / k for i in range(len(a))]))


def recall_at(sim: np.ndarray, correct: np.ndarray, ks: tuple[int, ...] = (1, 10)) -> dict[str, float]:
    """Recall@k of queries (rows of ``sim``) whose correct candidate is ``correct[i]`` (one each)."""
    order = np.argsort(-sim, axis=1, kind="stable")
    rank = np.argmax(order == np.asarray(correct)[:, None], axis=1)
    return {f"R@{k}": round(float(np.mean(rank < k)), 4) for k in ks}


def _minilm_quality(reg: Any, threads: int) -> dict[str, Any]:
    from encoders.quantize import load_variant
    from encoders.text import TextEncoder, ensure_minilm
    from workloads.datasets import load_dataset

    fp = TextEncoder(ensure_minilm(reg), threads=threads)
    q = TextEncoder(load_variant(reg, "minilm-l6", "int8"), threads=threads)
    ds = load_dataset("ml-100k")
    docs = [ds.item_document(i) for i in range(ds.n_items)]
    a, b = fp.encode(docs), q.encode(docs)
    return {"encoders": (fp, q), "docs": len(docs), "cosine": row_cosines(a, b),
            "knn_overlap_at_10": round(knn_overlap(a, b, 10), 4)}


def _musicclip_quality(reg: Any, encoders: tuple[Any, Any], threads: int) -> dict[str, Any] | None:
    from encoders.audio import MUSICCLIP_AUDIO, MUSICCLIP_TEXT, MusicCLIPEncoder
    from encoders.audio_frontend import log_mel
    from workloads.music import load_music_corpus

    if reg.current_version(MUSICCLIP_AUDIO) is None:
        return None
    audio_v = reg.load(MUSICCLIP_AUDIO)
    text_v = reg.load(MUSICCLIP_TEXT, audio_v.manifest.version)
    mc = load_music_corpus()
    out: dict[str, Any] = {"clips": len(mc.clip_ids), "model": f"musicclip@{audio_v.manifest.version}"}
    caps = list(dict.fromkeys(mc.captions))
    correct = np.array([caps.index(c) for c in mc.captions])
    audio_vecs = None
    for label, text_enc in zip(("fp32", "int8"), encoders, strict=True):
        enc = MusicCLIPEncoder(audio_v, text_v, text_enc, threads=threads, micro_batch=16)
        if audio_vecs is None:
            mels = np.stack([log_mel(mc.waveform(i), mc.sample_rate, enc.frontend) for i in range(len(mc.clip_ids))])
            audio_vecs = _unit(enc.encode_logmel(mels))
        text_vecs = _unit(enc.encode_text(caps))
        sim = audio_vecs @ text_vecs.T
        a2t = recall_at(sim, correct)
        # text -> audio: each distinct caption ranks the clips; correct = its first clip (captions are distinct here)
        first = np.array([list(mc.captions).index(c) for c in caps])
        t2a = recall_at(sim.T, first)
        out[label] = {**{f"a2t_{k}": v for k, v in a2t.items()}, **{f"t2a_{k}": v for k, v in t2a.items()}}
    out["distinct_captions"] = len(caps)
    return out


def _flava_quality(reg: Any, threads: int) -> dict[str, Any] | None:
    from encoders.imagetext import load_imagetext_encoder
    from encoders.media import decode_image
    from workloads.imagetext import load_imagetext_corpus

    fp = load_imagetext_encoder(reg, threads=threads, quantize="none")
    if fp is None:
        return None
    q = load_imagetext_encoder(reg, threads=threads, quantize="int8-all")
    assert q is not None
    ic = load_imagetext_corpus()
    rows = [int(i) for i in ic.splits["test"] if not ic.misaligned[int(i)]]
    caps = list(dict.fromkeys(ic.captions[i] for i in rows))
    correct = np.array([caps.index(ic.captions[i]) for i in rows])
    first = np.array([next(j for j, i in enumerate(rows) if ic.captions[i] == c) for c in caps])
    images = [decode_image(ic.png_paths[i].read_bytes()) for i in rows]
    out: dict[str, Any] = {"pairs": len(rows), "distinct_captions": len(caps), "model": fp.model_version,
                           "model_int8": q.model_version}
    vecs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    for label, enc in (("fp32", fp), ("int8", q)):
        img = _unit(enc.encode_images(images))
        txt = _unit(enc.encode_texts(caps))
        _, fused = enc.encode_pair(images, [ic.captions[i] for i in rows])
        vecs[label] = (img, fused)
        sim = img @ txt.T
        i2t = recall_at(sim, correct)
        t2i = recall_at(sim.T, first)
        out[label] = {**{f"i2t_{k}": v for k, v in i2t.items()}, **{f"t2i_{k}": v for k, v in t2i.items()}}
    out["cosine_image"] = row_cosines(vecs["fp32"][0], vecs["int8"][0])
    out["cosine_image_text"] = row_cosines(vecs["fp32"][1], vecs["int8"][1])
    return out


def _conv_probe(reg: Any, threads: int, n_images: int = 32) -> dict[str, Any] | None:
    """The image graph with its convolutions quantised too (temporary file): images/s and cosine vs fp32."""
    import tempfile

    import onnxruntime as ort
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from encoders.imagetext import IMAGE_MODEL, preprocess_images
    from encoders.media import decode_image
    from encoders.serving import onnx_providers
    from workloads.imagetext import load_imagetext_corpus

    if reg.current_version(IMAGE_MODEL) is None:
        return None
    src = reg.load(IMAGE_MODEL)
    ic = load_imagetext_corpus()
    rows = [int(i) for i in ic.splits["test"]][:n_images]
    pix = preprocess_images([decode_image(ic.png_paths[i].read_bytes()) for i in rows])
    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    out: dict[str, Any] = {"images": len(rows), "op_types": ["Conv", "MatMul", "Gemm"], "per_channel": True,
                           "reduce_range": True}
    with tempfile.TemporaryDirectory() as tmp:
        qpath = Path(tmp) / "image.conv-int8.onnx"
        quantize_dynamic(src.onnx_path, qpath, weight_type=QuantType.QInt8, per_channel=True, reduce_range=True,
                         op_types_to_quantize=["Conv", "MatMul", "Gemm"])
        embs: dict[str, np.ndarray] = {}
        for label, path in (("fp32", src.onnx_path), ("int8_conv", qpath)):
            sess = ort.InferenceSession(str(path), so, providers=onnx_providers())
            sess.run(["embedding"], {"pixels": pix[:4]})  # warm-up
            t0 = time.perf_counter()
            embs[label] = np.concatenate([sess.run(["embedding"], {"pixels": pix[s : s + 16]})[0]
                                          for s in range(0, len(pix), 16)])
            out[f"{label}_images_per_s"] = round(len(pix) / (time.perf_counter() - t0), 2)
    out["cosine"] = row_cosines(embs["fp32"], embs["int8_conv"])
    return out


def _paired_speed(reg: Any, threads: int, rounds: int = 15, batch: int = 32) -> dict[str, Any]:
    """Per graph, the same input through fp32 and int8 back to back, ``rounds`` times: median of the per-round
    time ratios (fp32 / int8), which load that comes and goes moves less than a ratio of totals."""
    from encoders.imagetext import load_imagetext_encoder
    from encoders.media import decode_image
    from encoders.quantize import load_variant
    from encoders.text import TextEncoder, ensure_minilm
    from workloads.datasets import load_dataset
    from workloads.imagetext import load_imagetext_corpus

    ds = load_dataset("ml-100k")
    docs = [ds.item_document(i) for i in range(batch)]
    text = {"fp32": TextEncoder(ensure_minilm(reg), threads=threads),
            "int8": TextEncoder(load_variant(reg, "minilm-l6", "int8"), threads=threads)}
    calls: dict[str, dict[str, Any]] = {"minilm (32 MovieLens-100k documents)": {k: (lambda e=e: e.encode(docs))
                                                                                for k, e in text.items()}}
    fl = {"fp32": load_imagetext_encoder(reg, threads=threads, quantize="none"),
          "int8": load_imagetext_encoder(reg, threads=threads, quantize="int8-all")}
    if fl["fp32"] is not None and fl["int8"] is not None:
        ic = load_imagetext_corpus()
        rows = [int(i) for i in ic.splits["test"]][:16]
        imgs = [decode_image(ic.png_paths[i].read_bytes()) for i in rows]
        caps = [ic.captions[i] for i in rows]
        calls["flava image+text+fusion (16 moments)"] = {k: (lambda e=e: e.encode_pair(imgs, caps))
                                                         for k, e in fl.items()}
    out: dict[str, Any] = {"rounds": rounds}
    meter = CpuMeter()
    for name, fns in calls.items():
        for fn in fns.values():
            fn()  # warm-up
        ms: dict[str, list[float]] = {"fp32": [], "int8": []}
        for _ in range(rounds):
            for label in ("fp32", "int8"):
                t0 = time.perf_counter()
                fns[label]()
                ms[label].append((time.perf_counter() - t0) * 1000.0)
        r = np.asarray(ms["fp32"]) / np.asarray(ms["int8"])
        out[name] = {"fp32_ms_median": round(float(np.median(ms["fp32"])), 1),
                     "int8_ms_median": round(float(np.median(ms["int8"])), 1),
                     "speedup_median": round(float(np.median(r)), 3),
                     "speedup_p10_p90": [round(float(np.percentile(r, 10)), 3), round(float(np.percentile(r, 90)), 3)]}
    out["machine_busy_cores"] = meter.busy_cores()
    return out


def _speed(reg: Any, n_items: int, batch: int, threads: int, seed: int) -> dict[str, Any]:
    from benchmarks.featurizer_speed import _decode
    from encoders.featurizer import ContentFeaturizer

    fz = {"fp32": ContentFeaturizer.from_registry(reg, threads=threads, quantize="none"),
          "int8": ContentFeaturizer.from_registry(reg, threads=threads, quantize="int8"),
          "int8-all": ContentFeaturizer.from_registry(reg, threads=threads, quantize="int8-all")}
    items = _decode(mixed_items(n_items, seed=seed))
    batches = [items[s : s + batch] for s in range(0, len(items), batch)]
    for f in fz.values():
        f.featurize(batches[0])  # warm-up
    lat: dict[str, list[float]] = {k: [] for k in fz}
    stages: dict[str, dict[str, float]] = {k: {} for k in fz}
    meter = CpuMeter()
    for b in batches:
        for label, f in fz.items():
            t0 = time.perf_counter()
            fb = f.featurize(b)
            lat[label].append((time.perf_counter() - t0) * 1000.0)
            for st, ms in fb.stage_ms.items():
                stages[label][st] = stages[label].get(st, 0.0) + ms
    out: dict[str, Any] = {"batch_size": batch, "items": len(items), "batches": len(batches),
                           "machine_busy_cores": meter.busy_cores(),
                           "models": {k: f.model_versions for k, f in fz.items()}}
    for label in fz:
        a = np.asarray(lat[label])
        out[label] = {"items_per_s": round(len(items) / (a.sum() / 1000.0), 2),
                      "batch_ms_p50": round(float(np.percentile(a, 50)), 1),
                      "batch_ms_p99": round(float(np.percentile(a, 99)), 1),
                      "stage_ms_per_batch": {k: round(v / len(batches), 1) for k, v in sorted(stages[label].items())}}
    out["speedup_over_fp32"] = {}
    for label in ("int8", "int8-all"):
        # per batch, fp32 ms / quantised ms of the same batch run back to back: less exposed to load that changes
        # over the run than the ratio of the totals
        ratios = np.asarray(lat["fp32"]) / np.asarray(lat[label])
        out["speedup_over_fp32"][label] = {
            "total": round(out[label]["items_per_s"] / out["fp32"]["items_per_s"], 3),
            "per_batch_median": round(float(np.median(ratios)), 3),
            "per_batch_p10_p90": [round(float(np.percentile(ratios, 10)), 3),
                                  round(float(np.percentile(ratios, 90)), 3)]}
    return out


def quality_table(q: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The flat ``metric -> {fp32, int8, note}`` table the summary reads."""
    out: dict[str, dict[str, Any]] = {}
    m = q.get("minilm")
    if m:
        out["minilm ml-100k cosine to fp32 (mean)"] = {"fp32": 1.0, "int8": m["cosine"]["mean"],
                                                       "note": f"{m['docs']} documents; min {m['cosine']['min']}"}
        out["minilm ml-100k kNN@10 overlap"] = {"fp32": 1.0, "int8": m["knn_overlap_at_10"],
                                                "note": "share of fp32 top-10 neighbours kept"}
    mc = q.get("musicclip")
    if mc:
        for k in ("a2t_R@1", "a2t_R@10", "t2a_R@1", "t2a_R@10"):
            out[f"musicclip {k}"] = {"fp32": mc["fp32"][k], "int8": mc["int8"][k],
                                     "note": f"{mc['clips']} clips, MiniLM int8 under fp32 towers"}
    fl = q.get("flava")
    if fl:
        for k in ("i2t_R@1", "i2t_R@10", "t2i_R@1", "t2i_R@10"):
            out[f"flava {k}"] = {"fp32": fl["fp32"][k], "int8": fl["int8"][k],
                                 "note": f"OpenMoji test, {fl['pairs']} pairs"}
        out["flava image cosine to fp32 (mean)"] = {"fp32": 1.0, "int8": fl["cosine_image"]["mean"], "note": ""}
        out["flava image_text cosine to fp32 (mean)"] = {"fp32": 1.0, "int8": fl["cosine_image_text"]["mean"],
                                                         "note": ""}
    cp = q.get("conv_probe")
    if cp:
        out["image graph with Conv int8: cosine to fp32 (mean)"] = {
            "fp32": 1.0, "int8": cp["cosine"]["mean"],
            "note": f"not published; images/s {cp['fp32_images_per_s']} fp32 vs {cp['int8_conv_images_per_s']}"}
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    sp = report.get("speed")
    if sp:
        labels = [k for k in ("fp32", "int8", "int8-all") if k in sp]
        stages = sorted({st for k in labels for st in sp[k]["stage_ms_per_batch"]})
        x = np.arange(len(stages))
        w = 0.8 / len(labels)
        for j, label in enumerate(labels):
            axes[0].bar(x + w * j, [sp[label]["stage_ms_per_batch"].get(s, 0.0) for s in stages], w,
                        label=f"{label}: {sp[label]['items_per_s']} items/s")
        axes[0].set_xticks(x + 0.4 - w / 2, stages, rotation=30, ha="right", fontsize=8)
        axes[0].set_ylabel(f"ms per batch of {sp['batch_size']}")
        axes[0].set_title(f"featuriser stages (busy cores {sp.get('machine_busy_cores')})")
        axes[0].legend(fontsize=8)
    table = report.get("quality", {})
    names = [k for k in table if "cosine" not in k]
    if names:
        y = np.arange(len(names))
        axes[1].barh(y - 0.2, [table[k]["fp32"] for k in names], 0.4, label="fp32")
        axes[1].barh(y + 0.2, [table[k]["int8"] for k in names], 0.4, label="int8")
        axes[1].set_yticks(y, names, fontsize=8)
        axes[1].invert_yaxis()
        axes[1].set_xlim(0, 1.05)
        axes[1].set_title("quality, fp32 vs int8")
        axes[1].legend(fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.quantization", description=__doc__.split("\n\n")[0])
    ap.add_argument("--models-dir", type=Path, default=None, help="model directory (default: the settings')")
    ap.add_argument("--speed-items", type=int, default=192, help="mixed items of the speed run (default 192)")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--skip-quality", action="store_true")
    ap.add_argument("--skip-speed", action="store_true")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)

    from encoders.quantize import quantize_all
    from encoders.registry import ModelRegistry
    from infra.settings import load_settings

    reg = ModelRegistry(args.models_dir or load_settings().models.dir)
    t_all = time.perf_counter()
    report: dict[str, Any] = {"benchmark": "quantization", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                              "config": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
                              "machine": machine_info(), "variants": quantize_all(reg)}
    print(f"[quantization] variants: {[(v['name'], v['status']) for v in report['variants']]}", file=sys.stderr)
    if not args.skip_quality:
        t0 = time.perf_counter()
        q: dict[str, Any] = {}
        m = _minilm_quality(reg, args.threads)
        encs = m.pop("encoders")
        q["minilm"] = m
        q["musicclip"] = _musicclip_quality(reg, encs, args.threads)
        q["flava"] = _flava_quality(reg, args.threads)
        q["conv_probe"] = _conv_probe(reg, args.threads)
        report["quality_detail"] = q
        report["quality"] = quality_table(q)
        report["quality_seconds"] = round(time.perf_counter() - t0, 1)
        for k, v in report["quality"].items():
            print(f"[quantization] {k}: fp32 {v['fp32']} int8 {v['int8']}", file=sys.stderr)
    if not args.skip_speed:
        report["paired_speed"] = _paired_speed(reg, args.threads)
        for k, v in report["paired_speed"].items():
            if isinstance(v, dict):
                print(f"[quantization] {k}: fp32 {v['fp32_ms_median']} ms, int8 {v['int8_ms_median']} ms, speed-up "
                      f"median {v['speedup_median']}", file=sys.stderr)
        report["speed"] = _speed(reg, args.speed_items, args.batch_size, args.threads, args.seed)
        sp = report["speed"]
        print(f"[quantization] featuriser items/s fp32 {sp['fp32']['items_per_s']} int8 {sp['int8']['items_per_s']} "
              f"int8-all {sp['int8-all']['items_per_s']} (per-batch speed-up medians "
              f"{ {k: v['per_batch_median'] for k, v in sp['speedup_over_fp32'].items()} }; busy cores "
              f"{sp['machine_busy_cores']})", file=sys.stderr)
    report["elapsed_s"] = round(time.perf_counter() - t_all, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "quantization.json", report)
    plot(report, args.out / "quantization.png")
    print(args.out / "quantization.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
