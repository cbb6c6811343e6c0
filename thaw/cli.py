"""The ``thaw`` command line: the composition root that assembles every command.

Run ``thaw --help``. Settings come from ``THAW_*`` environment variables (see ``infra/settings.py``) and are built
once here, per command.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from infra.settings import Settings, load_settings

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Thaw: streaming real-time cold-start engine.")
stack_app = typer.Typer(no_args_is_help=True, help="The local stack: Kafka (KRaft), Redis, Milvus standalone.")
models_app = typer.Typer(no_args_is_help=True, help="The versioned model directory.")
app.add_typer(stack_app, name="stack")
app.add_typer(models_app, name="models")
cf_app = typer.Typer(no_args_is_help=True, help="The CF space: CB2CF + DSSM towers published together.")
app.add_typer(cf_app, name="cf")
train_app = typer.Typer(no_args_is_help=True, help="Train a model on its real data, export it to ONNX and publish it "
                        "into the model directory (THAW_MODELS__DIR unless --models-dir).")
evaluate_app = typer.Typer(no_args_is_help=True, help="Offline evaluations on the packaged or generic-format datasets.")
data_app = typer.Typer(no_args_is_help=True, help="The packaged interaction datasets (MovieLens-100k, Last.fm, "
                       "CiteULike-a).")
corpus_app = typer.Typer(no_args_is_help=True, help="The media corpora the encoders train on.")
music_app = typer.Typer(no_args_is_help=True, help="The music21 audio corpus: 10 s 16 kHz clips with tags.")
imagetext_app = typer.Typer(no_args_is_help=True, help="The OpenMoji image-text corpus with labelled misaligned pairs.")
sim_app = typer.Typer(no_args_is_help=True, help="The community simulator (workloads/simulator.py).")
app.add_typer(train_app, name="train")
app.add_typer(evaluate_app, name="evaluate")
app.add_typer(data_app, name="data")
app.add_typer(corpus_app, name="corpus")
corpus_app.add_typer(music_app, name="music")
corpus_app.add_typer(imagetext_app, name="imagetext")
app.add_typer(sim_app, name="sim")


def _settings() -> Settings:
    return load_settings()


def _logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    # kafka-python warns, with the raw bytes, on every describe of a Faust group (its member metadata is not the
    # plain consumer format); the group checks read only the state and the assignment, which it does decode
    logging.getLogger("kafka.admin._groups").setLevel(logging.ERROR)


# ---------------------------------------------------------------------------------------------------- stack
@stack_app.command("up")
def stack_up() -> None:
    """Start Kafka, Redis and Milvus locally (idempotent; reuses healthy services)."""
    from infra.stack import LocalStack, StackError, format_statuses

    t0 = time.perf_counter()
    try:
        st = LocalStack(_settings()).up()
    except StackError as exc:
        typer.echo(f"stack up failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(format_statuses(st))
    typer.echo(f"all healthy in {time.perf_counter() - t0:.1f}s")


@stack_app.command("down")
def stack_down() -> None:
    """Stop what ``thaw stack up`` started (services it found running are left alone)."""
    from infra.stack import LocalStack, format_statuses

    typer.echo(format_statuses(LocalStack(_settings()).down()))


@stack_app.command("status")
def stack_status(as_json: Annotated[bool, typer.Option("--json")] = False) -> None:
    """Health and address of each service."""
    from infra.stack import LocalStack, format_statuses

    st = LocalStack(_settings()).status()
    if as_json:
        typer.echo(json.dumps([vars(s) for s in st], default=str, indent=2))
    else:
        typer.echo(format_statuses(st))
    if not all(x.healthy for x in st):
        raise typer.Exit(1)


@stack_app.command("fetch")
def stack_fetch() -> None:
    """Fetch the Kafka jars of THAW_KAFKA__VERSION with Maven (once; cached under the stack dir); prints their dir."""
    from infra.stack import StackError, fetch_kafka

    _logging("WARNING")
    try:
        libs = fetch_kafka(_settings())
    except StackError as exc:
        typer.echo(f"stack fetch failed: {exc}", err=True)
        raise typer.Exit(1) from None
    typer.echo(str(libs))


# --------------------------------------------------------------------------------------------------- models
@models_app.command("export-text")
def models_export_text(version: str = "1") -> None:
    """Export the bundled all-MiniLM-L6-v2 to ONNX into the model directory."""
    from encoders.registry import ModelRegistry
    from encoders.text import MODEL_NAME
    from encoders.training.export_text import export_minilm

    reg = ModelRegistry(_settings().models.dir)
    if version in reg.versions(MODEL_NAME):
        typer.echo(f"{MODEL_NAME} version {version} already exists at {reg.root / MODEL_NAME / version}")
        return
    mv = export_minilm(reg, version)
    typer.echo(f"exported {MODEL_NAME}@{version} to {mv.path} (sha256 {mv.manifest.sha256[:12]})")


@models_app.command("install-bundled")
def models_install_bundled(
    force: Annotated[bool, typer.Option(help="export again even when the registry holds the version")] = False,
    current: Annotated[bool | None, typer.Option(help="make the bundled versions current (default: only models "
                                                      "without a current version)")] = None,
) -> None:
    """Export the encoders whose trained weights ship in the repo (MusicCLIP, Audio MAE, FLAVA-style) to ONNX."""
    from encoders.registry import ModelRegistry
    from encoders.training.bundled import install

    reg = ModelRegistry(_settings().models.dir)
    for family, r in install(reg, force=force, make_current=current).items():
        typer.echo(f"{family}@{r['version']}: {r['status']} ({r['seconds']} s)")


@models_app.command("list")
def models_list() -> None:
    """Published models, their versions and the current one."""
    from encoders.registry import ModelRegistry

    reg = ModelRegistry(_settings().models.dir)
    if not reg.root.is_dir():
        typer.echo(f"no models under {reg.root}")
        return
    for d in sorted(p for p in reg.root.iterdir() if p.is_dir()):
        typer.echo(f"{d.name}: versions {reg.versions(d.name)} current {reg.current_version(d.name)}")


@cf_app.command("load")
def cf_load(
    version: Annotated[str | None, typer.Option(help="CF version (default: the current cb2cf)")] = None,
    items: Annotated[bool, typer.Option("--items/--no-items", help="upsert the warm item vectors")] = True,
    users: Annotated[bool, typer.Option("--users/--no-users", help="store the warm user states")] = True,
    user_weight: float = 5.0,
    users_from: Annotated[str, typer.Option(help="dssm | lightgcn (published as lightgcn-user)")] = "dssm",
) -> None:
    """Load a published CF space's warm item vectors (Milvus) and warm user vectors (Redis).

    Publish one first: `thaw evaluate cold-items --dataset lastfm --models cb2cf --publish-dir ~/.cache/thaw/models`.
    """
    from streams.rollout.cf_load import load_warm_vectors

    rep = load_warm_vectors(_settings(), version=version, items=items, users=users, user_weight=user_weight,
                            users_from=users_from)
    typer.echo(json.dumps(rep))


@cf_app.command("flip")
def cf_flip(
    space: Annotated[str, typer.Argument(help="space to serve, e.g. cb2cf@20261201T0200Z")],
    group: Annotated[str | None, typer.Option(help="consumer group writing that space (checked for lag)")] = None,
    max_lag: int = 0,
) -> None:
    """Serve another space: the Milvus serving alias and the Redis space key move together (blue/green)."""
    from streams.rollout.cf_load import FlipRefused, flip_space

    try:
        rep = flip_space(_settings(), space, group=group, max_lag=max_lag)
    except FlipRefused as exc:
        typer.echo(f"flip refused: {exc}", err=True)
        raise typer.Exit(3) from None
    typer.echo(json.dumps(rep))


# --------------------------------------------------------------------------------------------------- training
# Every trainer's options map onto its config dataclass (built here, then handed to the library's ``train``). The
# defaults repeat the dataclasses' (importing them here would load torch for `thaw --help`); tests/unit/test_cli.py
# checks that a run without options builds exactly the dataclass defaults.
_RUN, _SCHEDULE, _MODEL = "Run", "Schedule", "Model"
CorpusDirOpt = Annotated[str | None, typer.Option(help="built corpus (default: the standard corpus dir)",
                                                  rich_help_panel=_RUN)]
OutDirOpt = Annotated[str | None, typer.Option(help="run dir: checkpoints, loss curve, report "
                                               "(default ~/.cache/thaw/runs/<model>)", rich_help_panel=_RUN)]
ModelsDirOpt = Annotated[str | None, typer.Option(help="model directory to publish into (default: THAW_MODELS__DIR)",
                                                  rich_help_panel=_RUN)]
LogMelCacheOpt = Annotated[str | None, typer.Option(help="log-mel cache (default ~/.cache/thaw/runs/logmel-cache)",
                                                    rich_help_panel=_RUN)]
VersionOpt = Annotated[str | None, typer.Option(help="registry version (default: a UTC timestamp / the run id)",
                                                rich_help_panel=_RUN)]
ResumeOpt = Annotated[bool, typer.Option("--resume/--no-resume", help="continue from the run dir's last checkpoint",
                                         rich_help_panel=_RUN)]
ExportOpt = Annotated[bool, typer.Option("--export/--no-export", help="export to ONNX and publish at the end",
                                         rich_help_panel=_RUN)]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="progress bars", rich_help_panel=_RUN)]
ThreadsOpt = Annotated[int, typer.Option(help="torch intra-op threads", rich_help_panel=_RUN)]
SeedOpt = Annotated[int, typer.Option(help="run seed (init, batch order, masks)", rich_help_panel=_SCHEDULE)]
EpochsOpt = Annotated[int, typer.Option(help="total epochs (a resumed run continues up to it)",
                                        rich_help_panel=_SCHEDULE)]
BatchSizeOpt = Annotated[int, typer.Option(help="examples per step", rich_help_panel=_SCHEDULE)]
LrOpt = Annotated[float, typer.Option(help="peak AdamW learning rate", rich_help_panel=_SCHEDULE)]
WeightDecayOpt = Annotated[float, typer.Option(help="AdamW weight decay", rich_help_panel=_SCHEDULE)]
MaxClipsOpt = Annotated[int | None, typer.Option(help="cap clips per split (quick runs)", rich_help_panel=_SCHEDULE)]
WarmupEpochsOpt = Annotated[float, typer.Option(help="linear learning-rate warm-up in epochs",
                                                rich_help_panel=_SCHEDULE)]


def _models_dir(value: str | Path | None) -> Path:
    """``value``, or the settings' model directory (``THAW_MODELS__DIR``)."""
    return Path(value).expanduser() if value is not None else Path(_settings().models.dir)


def _echo_train_report(report: dict[str, Any]) -> None:
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2, default=str))


@train_app.command("audio-mae")
def train_audio_mae(
    corpus_dir: CorpusDirOpt = None,
    out_dir: OutDirOpt = None,
    models_dir: ModelsDirOpt = None,
    cache_dir: LogMelCacheOpt = None,
    epochs: EpochsOpt = 12,
    batch_size: BatchSizeOpt = 32,
    lr: LrOpt = 1e-3,
    weight_decay: WeightDecayOpt = 0.05,
    warmup_epochs: WarmupEpochsOpt = 2.0,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    max_clips: MaxClipsOpt = None,
    resume: ResumeOpt = True,
    export: ExportOpt = True,
    version: VersionOpt = None,
    progress: ProgressOpt = True,
    dim: Annotated[int, typer.Option(help="encoder width", rich_help_panel=_MODEL)] = 128,
    depth: Annotated[int, typer.Option(help="encoder blocks", rich_help_panel=_MODEL)] = 4,
    heads: Annotated[int, typer.Option(help="attention heads", rich_help_panel=_MODEL)] = 4,
    dec_dim: Annotated[int, typer.Option(help="decoder width", rich_help_panel=_MODEL)] = 64,
    dec_depth: Annotated[int, typer.Option(help="decoder blocks", rich_help_panel=_MODEL)] = 1,
    mask_ratio: Annotated[float, typer.Option(help="share of patches masked", rich_help_panel=_MODEL)] = 0.8,
) -> None:
    """Audio MAE on the music corpus (`thaw corpus music build` first); published as `audio-mae`."""
    from encoders.models.audio_mae import AudioMAEConfig
    from encoders.training.audio_mae import AudioMAETrainConfig, train
    from workloads.music import load_music_corpus

    _logging("INFO")
    cfg = AudioMAETrainConfig(
        out_dir=out_dir, models_dir=str(_models_dir(models_dir)), cache_dir=cache_dir,
        model=AudioMAEConfig(dim=dim, depth=depth, heads=heads, dec_dim=dec_dim, dec_depth=dec_depth,
                             mask_ratio=mask_ratio),
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        seed=seed, threads=threads, max_clips=max_clips, resume=resume, export=export, version=version,
        progress=progress,
    )
    _echo_train_report(train(cfg, load_music_corpus(corpus_dir)))


@train_app.command("musicclip")
def train_musicclip(
    corpus_dir: CorpusDirOpt = None,
    out_dir: OutDirOpt = None,
    models_dir: Annotated[str | None, typer.Option(help="model directory holding MiniLM and receiving the export "
                                                   "(default: THAW_MODELS__DIR)", rich_help_panel=_RUN)] = None,
    cache_dir: LogMelCacheOpt = None,
    epochs: EpochsOpt = 15,
    batch_size: Annotated[int, typer.Option(help="pairs per step (the in-batch negatives)",
                                            rich_help_panel=_SCHEDULE)] = 64,
    lr: LrOpt = 2e-3,
    weight_decay: WeightDecayOpt = 0.01,
    warmup_epochs: WarmupEpochsOpt = 1.0,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    max_clips: MaxClipsOpt = None,
    resume: ResumeOpt = True,
    export: ExportOpt = True,
    version: VersionOpt = None,
    progress: ProgressOpt = True,
    crop_frames: Annotated[int, typer.Option(help="random training crop in log-mel frames (0: full clips)",
                                             rich_help_panel=_SCHEDULE)] = 300,
    spec_augment: Annotated[bool, typer.Option("--spec-augment/--no-spec-augment",
                                               help="SpecAugment masking of the training crops",
                                               rich_help_panel=_SCHEDULE)] = True,
    dropout: Annotated[float, typer.Option(help="dropout", rich_help_panel=_MODEL)] = 0.1,
    embed_dim: Annotated[int, typer.Option(help="shared embedding width", rich_help_panel=_MODEL)] = 128,
    channels: Annotated[tuple[int, int, int, int], typer.Option(help="conv channels of the 4 audio stages",
                                                                rich_help_panel=_MODEL)] = (16, 32, 64, 128),
) -> None:
    """MusicCLIP (audio tower + text projection over MiniLM) on the music corpus's (clip, caption) pairs."""
    from encoders.models.musicclip import MusicCLIPConfig
    from encoders.training.musicclip import MusicCLIPTrainConfig, train
    from workloads.music import load_music_corpus

    _logging("INFO")
    cfg = MusicCLIPTrainConfig(
        out_dir=out_dir, models_dir=str(_models_dir(models_dir)), cache_dir=cache_dir,
        model=MusicCLIPConfig(embed_dim=embed_dim, channels=channels, dropout=dropout),
        epochs=epochs, batch_size=batch_size, crop_frames=crop_frames or None, spec_augment=spec_augment, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, seed=seed, threads=threads, max_clips=max_clips,
        resume=resume, export=export, version=version, progress=progress,
    )
    _echo_train_report(train(cfg, load_music_corpus(corpus_dir)))


@train_app.command("flava")
def train_flava(
    corpus_dir: Annotated[str | None, typer.Option(help="built OpenMoji corpus (default: the corpus cache)",
                                                   rich_help_panel=_RUN)] = None,
    out: Annotated[str, typer.Option(help="run directory (checkpoints, report, loss curve)",
                                     rich_help_panel=_RUN)] = "~/.cache/thaw/runs/flava",
    cache_dir: Annotated[str | None, typer.Option(help="backbone feature cache (default <out>/cache)",
                                                  rich_help_panel=_RUN)] = None,
    models_dir: ModelsDirOpt = None,
    epochs: EpochsOpt = 6,
    batch_size: Annotated[int, typer.Option(help="pairs per step (also the contrastive in-batch negatives)",
                                            rich_help_panel=_SCHEDULE)] = 64,
    lr: LrOpt = 5e-4,
    misaligned: Annotated[Literal["none", "soft", "drop"], typer.Option(
        help="misaligned-pair handling driven by the model's own ITM score", rich_help_panel=_SCHEDULE)] = "soft",
    warmup_epochs: Annotated[int, typer.Option(help="epochs before the weighting starts",
                                               rich_help_panel=_SCHEDULE)] = 2,
    drop_share: Annotated[float, typer.Option(help="share dropped by --misaligned drop",
                                              rich_help_panel=_SCHEDULE)] = 0.1,
    soft_power: Annotated[float, typer.Option(help="exponent of --misaligned soft", rich_help_panel=_SCHEDULE)] = 1.0,
    itm_weight: Annotated[float, typer.Option(help="weight of the matching loss next to the contrastive one",
                                              rich_help_panel=_SCHEDULE)] = 1.0,
    weight_decay: WeightDecayOpt = 0.01,
    limit: Annotated[int | None, typer.Option(help="only the first N training pairs (smoke run)",
                                              rich_help_panel=_SCHEDULE)] = None,
    seed: SeedOpt = 0,
    threads: ThreadsOpt = 1,
    version: VersionOpt = None,
    resume: ResumeOpt = True,
    export: ExportOpt = True,
    progress: ProgressOpt = True,
    dim: Annotated[int, typer.Option(help="shared embedding / fusion width", rich_help_panel=_MODEL)] = 128,
    fusion_depth: Annotated[int, typer.Option(help="fusion transformer blocks", rich_help_panel=_MODEL)] = 1,
    feature_dropout: Annotated[float, typer.Option(help="dropout on backbone features", rich_help_panel=_MODEL)] = 0.2,
    text_adapter_layers: Annotated[int, typer.Option(help="trainable blocks over the frozen MiniLM token states",
                                                     rich_help_panel=_MODEL)] = 1,
) -> None:
    """The FLAVA-style image-text model on the OpenMoji corpus (`thaw corpus imagetext build` first)."""
    from encoders.models.flava import FlavaConfig
    from encoders.training.flava import FlavaTrainConfig, train
    from workloads.imagetext import load_imagetext_corpus

    _logging("INFO")
    cfg = FlavaTrainConfig(
        model=FlavaConfig(dim=dim, fusion_depth=fusion_depth, text_adapter_layers=text_adapter_layers,
                          feature_dropout=feature_dropout),
        out_dir=out, cache_dir=cache_dir, models_dir=str(_models_dir(models_dir)),
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, itm_weight=itm_weight,
        misaligned=misaligned, warmup_epochs=warmup_epochs, drop_share=drop_share, soft_power=soft_power,
        limit=limit, seed=seed, threads=threads, resume=resume, export=export, version=version, progress=progress,
    )
    report = train(cfg, load_imagetext_corpus(corpus_dir, include_skintones=cfg.include_skintones))
    typer.echo(json.dumps({k: report.get(k) for k in ("run_id", "timing", "val", "test", "published")}, indent=2,
                          default=str))


@train_app.command("ranker")
def train_ranker(
    dataset: Annotated[Literal["sim", "ml-100k", "lastfm"], typer.Option(
        help="sim: simulator exposures (play / like); ml-100k: ratings (watch / like); lastfm: plays (play / heavy)",
    )] = "sim",
    sim_steps: Annotated[int, typer.Option(help="simulator steps (sim)")] = 240,
    negatives: Annotated[int, typer.Option(help="ml-100k / lastfm: sampled negatives per pair")] = 2,
    seed: Annotated[int, typer.Option(help="training seed (the data / split seed is 0)")] = 0,
    epochs: Annotated[int, typer.Option(help="epoch cap")] = 20,
    patience: Annotated[int, typer.Option(help="epochs without validation improvement before stopping")] = 2,
    threads: Annotated[int, typer.Option(help="torch threads (at most 2 are used)")] = 1,
    models_dir: Annotated[Path | None, typer.Option(help="model directory (default: THAW_MODELS__DIR)")] = None,
    version: Annotated[str | None, typer.Option(help="version name of both models (default: UTC timestamp)")] = None,
    check_rows: Annotated[int, typer.Option(help="test rows scored through the online path")] = 2000,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", help="log each variant's training")] = False,
) -> None:
    """DeepFM + MMoE ranker, group-gated and plain, published as `deepfm-mmoe` and `deepfm-mmoe-plain`.

    Both are checked after publishing (ONNX and the online request path against torch); exit 1 when a check fails.
    """
    from ranking.training.ranker import RankerTrainConfig, checks_passed, format_table
    from ranking.training.ranker import train_ranker as run

    _logging("INFO" if verbose else "WARNING")
    cfg = RankerTrainConfig(dataset=dataset, sim_steps=sim_steps, negatives=negatives, seed=seed, epochs=epochs,
                            patience=patience, threads=threads, models_dir=_models_dir(models_dir), version=version,
                            check_rows=check_rows, verbose=verbose)
    result = run(cfg)
    typer.echo(format_table(result))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(result, indent=2) + "\n")
    if not checks_passed(result):
        typer.echo("ONNX / online-path check failed", err=True)
        raise typer.Exit(1)


# ------------------------------------------------------------------------------------------------- evaluation
InteractionsOpt = Annotated[Path | None, typer.Option(help="interactions file: user,item[,weight][,ts]")]
ItemContentOpt = Annotated[list[Path] | None, typer.Option(help="item tags file / JSONL (repeatable)")]
KOpt = Annotated[int, typer.Option(help="cut-off of the metrics and of every validation choice")]
EvalSeedOpt = Annotated[int, typer.Option(help="seed of splits, initialisation and sampling")]
FieldsOpt = Annotated[str, typer.Option(help="text content fields, comma-separated: doc,text,tags")]
EvalThreadsOpt = Annotated[int, typer.Option(help="torch intra-op threads")]
MiniLMDirOpt = Annotated[Path | None, typer.Option(help="model directory holding MiniLM (default: THAW_MODELS__DIR)")]
ReportOutOpt = Annotated[Path | None, typer.Option(help="also write the JSON report here")]
AsJsonOpt = Annotated[bool, typer.Option("--json", help="print JSON instead of a table")]
VerboseOpt = Annotated[bool, typer.Option("-v", "--verbose", help="progress lines on stderr")]


def _csv(text: str) -> tuple[str, ...]:
    return tuple(t.strip() for t in text.split(",") if t.strip())


def _need_data(command: str, interactions: Path | None, dataset: str | None) -> None:
    if interactions is None and dataset is None:
        raise typer.BadParameter(f"{command} needs --interactions or --dataset", param_hint="--interactions")


@evaluate_app.command("cold-items")
def evaluate_cold_items(
    interactions: Annotated[Path | None, typer.Option(
        help="training (or all) interactions: user,item[,weight][,ts]")] = None,
    item_content: ItemContentOpt = None,
    cold_test: Annotated[Path | None, typer.Option(help="test cold-item interactions")] = None,
    cold_val: Annotated[Path | None, typer.Option(help="validation cold-item interactions")] = None,
    dataset: Annotated[Literal["ml-100k", "lastfm", "citeulike-a"] | None, typer.Option(
        help="built-in dataset instead of files")] = None,
    k: KOpt = 20,
    seed: EvalSeedOpt = 0,
    models: Annotated[str, typer.Option(help="comma-separated subset of the models")] = (
        "random,popularity,content-knn,tfidf-knn,bm25-knn,dropoutnet,cb2cf,hybrid"),
    objectives: Annotated[str, typer.Option(help="CB2CF objectives to compare on validation")] = (
        "regression,contrastive,combined"),
    fields: FieldsOpt = "doc",
    words: Annotated[bool, typer.Option("--words/--no-words", help="add the bag-of-words (BM25) field to the "
                                        "content the learned models read")] = True,
    knn_ks: Annotated[str, typer.Option(help="content-kNN neighbourhood sizes tried on validation ('all' = every "
                                        "item of the user)")] = "all,10,50",
    sparse_ks: Annotated[str, typer.Option(help="TF-IDF/BM25 item-kNN neighbourhood sizes tried on validation")] = (
        "all,10,20,50,100"),
    protocol: Annotated[Literal["standard", "gar"], typer.Option(
        help="standard: each test user ranks the test cold items; gar: every item without training interactions "
             "(validation + test cold items) is a candidate and the user's validation positives are excluded")] = (
        "standard"),
    max_users: Annotated[int | None, typer.Option(help="evaluate only the first N users by id (validation and "
                                                  "test)")] = None,
    min_weight: Annotated[float | None, typer.Option(help="positives / relevant need weight >= this")] = None,
    user_features: Annotated[bool, typer.Option("--user-features/--no-user-features",
                                                help="feed the dataset's user features to the DSSM user tower")] = True,
    threads: EvalThreadsOpt = 1,
    models_dir: MiniLMDirOpt = None,
    publish_dir: Annotated[Path | None, typer.Option(
        help="export the trained DSSM towers and the selected CB2CF (and the hybrid's sparse half when the hybrid "
             "won on validation) to this model directory (ONNX)")] = None,
    publish_version: Annotated[str | None, typer.Option(help="version name for --publish-dir (default: timestamp)")] = (
        None),
    publish_lightgcn: Annotated[bool, typer.Option(
        help="with --publish-dir: also train LightGCN on the warm pairs and publish its user vectors mapped into the "
             "DSSM space (lightgcn-user; thaw cf load --users-from lightgcn)")] = False,
    out: ReportOutOpt = None,
    as_json: AsJsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """Cold items: CB2CF (each objective) and the hybrid against the baselines on held-out cold items.

    Baselines: random, popularity, dense content-kNN, TF-IDF and BM25 item-kNN, DropoutNet. Protocols and models:
    `ranking.evaluation.cold_items`. With --publish-dir, what validation selected to serve is published.
    """
    _need_data("cold-items", interactions, dataset)
    from ranking.evaluation.cold_items import ColdEvalArtifacts, ColdEvalConfig, format_table
    from ranking.evaluation.cold_items import evaluate_cold_items as run
    from ranking.evaluation.report import emit_report

    _logging("INFO" if verbose else "WARNING")
    cfg = ColdEvalConfig(
        objectives=_csv(objectives),  # type: ignore[arg-type]  # checked by the harness
        fields=_csv(fields),
        knn_ks=tuple(None if t == "all" else int(t) for t in _csv(knn_ks)),
        sparse_ks=tuple(None if t == "all" else int(t) for t in _csv(sparse_ks)),
        words=words,
        protocol=protocol,
        max_users=max_users,
        min_weight=min_weight,
        user_features=user_features,
        models_dir=_models_dir(models_dir),
        threads=threads,
        verbose=verbose,
    )
    artifacts = ColdEvalArtifacts() if publish_dir is not None else None
    report = run(interactions, item_content or None, cold_test, cold_val, k=k, seed=seed, models=list(_csv(models)),
                 dataset=dataset, config=cfg, artifacts=artifacts)
    if artifacts is not None and publish_dir is not None:
        from ranking.training.export import publish_cold_item_models

        report["published"] = publish_cold_item_models(artifacts, publish_dir, version=publish_version, report=report,
                                                       lightgcn=publish_lightgcn)
    emit_report(report, out, as_json, format_table)


@evaluate_app.command("new-users")
def evaluate_new_users(
    interactions: InteractionsOpt = None,
    item_content: ItemContentOpt = None,
    dataset: Annotated[Literal["ml-100k", "lastfm"] | None, typer.Option(help="built-in dataset instead of files")] = (
        None),
    user_groups: Annotated[Path | None, typer.Option(help="user,group CSV for the group prior")] = None,
    reveal: Annotated[str, typer.Option(help="revealed interaction counts, comma-separated")] = "0,1,3,5",
    k: KOpt = 20,
    seed: EvalSeedOpt = 0,
    fields: FieldsOpt = "doc",
    min_weight: Annotated[float | None, typer.Option(help="training pairs / targets need weight >= this")] = None,
    dssm: Annotated[bool, typer.Option("--dssm/--no-dssm", help="measure the LightGCN -> DSSM alignment")] = True,
    max_epochs: Annotated[int | None, typer.Option(help="LightGCN epoch cap")] = None,
    threads: EvalThreadsOpt = 1,
    models_dir: MiniLMDirOpt = None,
    out: ReportOutOpt = None,
    as_json: AsJsonOpt = False,
    verbose: VerboseOpt = False,
) -> None:
    """New users: group prior, LightGCN fold-in and the multimodal-enhanced user vector against the baselines.

    Scored per revealed-interaction count. Protocol: `ranking.evaluation.new_users`.
    """
    _need_data("new-users", interactions, dataset)
    from ranking.evaluation.new_users import NewUserEvalConfig, format_table
    from ranking.evaluation.new_users import evaluate_new_users as run
    from ranking.evaluation.report import emit_report
    from ranking.models.lightgcn import LightGCNConfig

    _logging("INFO" if verbose else "WARNING")
    cfg = NewUserEvalConfig(
        fields=_csv(fields),
        min_weight=min_weight,
        align_dssm=dssm,
        lightgcn=LightGCNConfig() if max_epochs is None else LightGCNConfig(max_epochs=max_epochs),
        models_dir=_models_dir(models_dir),
        threads=threads,
        verbose=verbose,
    )
    report = run(interactions, item_content or None, dataset=dataset, user_groups=user_groups,
                 reveal=[int(x) for x in _csv(reveal)], k=k, seed=seed, config=cfg)
    emit_report(report, out, as_json, format_table)


@evaluate_app.command("ranker-groups")
def evaluate_ranker_groups(
    dataset: Annotated[Literal["ml-100k", "lastfm", "sim"], typer.Option(help="exposure log")] = "ml-100k",
    seeds: Annotated[list[int] | None, typer.Option("--seeds", help="training seed (repeatable; default 0)")] = None,
    sim_steps: Annotated[int, typer.Option(help="simulator steps (sim)")] = 240,
    negatives: Annotated[int, typer.Option(help="ml-100k / lastfm: sampled negatives per pair")] = 2,
    new_user_max_history: Annotated[int, typer.Option(help="users with at most this many earlier exposures are "
                                                      "new")] = 10,
    max_epochs: Annotated[int, typer.Option(help="epoch cap")] = 20,
    patience: Annotated[int, typer.Option(help="epochs without validation improvement before stopping")] = 2,
    experts: Annotated[int, typer.Option(help="MMoE experts")] = 4,
    threads: Annotated[int, typer.Option(help="torch threads (at most 2 are used)")] = 1,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
    export: Annotated[Path | None, typer.Option(help="model directory to publish the gated model into")] = None,
    ablate_interest: Annotated[bool, typer.Option(
        help="also train group gating without the category-interest features")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", help="log each variant's training")] = False,
) -> None:
    """The DeepFM + MMoE ranker with and without group-wise gating: AUC / logloss per task and user group."""
    from ranking.evaluation.ranker_groups import RankGroupsConfig, format_table
    from ranking.evaluation.ranker_groups import evaluate_ranker_groups as run

    _logging("INFO" if verbose else "WARNING")
    report = run(RankGroupsConfig(
        dataset=dataset, seeds=tuple(seeds or [0]), sim_steps=sim_steps, negatives=negatives,
        new_user_max_history=new_user_max_history, max_epochs=max_epochs, patience=patience, experts=experts,
        threads=threads, export_dir=export, ablate_interest=ablate_interest, verbose=verbose,
    ))
    typer.echo(format_table(report))
    if json_out is not None:
        json_out.parent.mkdir(parents=True, exist_ok=True)
        json_out.write_text(json.dumps(report, indent=2) + "\n")


# ------------------------------------------------------------------------------------------ data and corpora
class DatasetName(StrEnum):
    """The packaged interaction datasets (``workloads.datasets.DATASETS``)."""

    ml_100k = "ml-100k"
    lastfm = "lastfm"
    citeulike_a = "citeulike-a"


def _datasets_table(rows: list[dict[str, Any]]) -> str:
    cols = [
        ("dataset", "name", "{}"),
        ("users", "users", "{:,}"),
        ("items", "items", "{:,}"),
        ("interactions", "interactions", "{:,}"),
        ("density", "density", "{:.4%}"),
        ("cold items", "cold_item_share", "{:.1%}"),
        ("cold inter.", "cold_interaction_share", "{:.1%}"),
        ("val/test inter.", None, ""),
        ("split", "split", "{}"),
        ("load s", "load_seconds", "{:.2f}"),
    ]
    cells = [[c[0] for c in cols]]
    for r in rows:
        cells.append([f"{r['val_interactions']:,}/{r['test_interactions']:,}" if key is None else fmt.format(r[key])
                      for _, key, fmt in cols])
    widths = [max(len(row[j]) for row in cells) for j in range(len(cols))]
    out = ["  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)) for row in cells]
    out.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(out)


@data_app.command("stats")
def data_stats(
    as_json: AsJsonOpt = False,
    dataset: Annotated[list[DatasetName] | None, typer.Option(help="only this dataset (repeatable)")] = None,
    seed: Annotated[int, typer.Option(help="seed of the default random cold-item split")] = 0,
) -> None:
    """Users, items, interactions, density and cold-item shares per dataset (fetched on first use)."""
    from workloads.dataset_stats import dataset_stats

    names = [d.value for d in dataset] if dataset else [d.value for d in DatasetName]
    rows = [dataset_stats(name, seed=seed) for name in names]
    typer.echo(json.dumps(rows, indent=2) if as_json else _datasets_table(rows))


@music_app.command("build")
def corpus_music_build(
    clips: Annotated[int, typer.Option(help="target number of clips")] = 2000,
    seconds: Annotated[float, typer.Option(help="clip length in seconds")] = 10.0,
    workers: Annotated[int | None, typer.Option(help="worker processes (default: cpu count)")] = None,
    out: Annotated[str | None, typer.Option(help="corpus directory (default $THAW_CORPUS_DIR or "
                                            "~/.cache/thaw/...)")] = None,
    seed: Annotated[int, typer.Option(help="seed of selection, instruments and tempi")] = 0,
    timeout: Annotated[float, typer.Option(help="fluidsynth wall-clock limit per clip (s)")] = 60.0,
    retry_failures: Annotated[bool, typer.Option(help="re-try clips listed in failures.jsonl")] = False,
    progress: ProgressOpt = True,
) -> None:
    """Render the music21 corpus to tagged 16 kHz mono clips (resumable); prints the build report as JSON."""
    from workloads.music.build import build_music_corpus, report_dict

    _logging("WARNING")
    report = build_music_corpus(n_clips=clips, seconds=seconds, workers=workers, out_dir=out, seed=seed,
                                render_timeout_s=timeout, retry_failures=retry_failures, progress=progress)
    typer.echo(json.dumps(report_dict(report), indent=2))


def _music_stats_text(stats: dict[str, Any]) -> str:
    lines = [
        f"corpus: {stats['dir']}",
        f"clips: {stats['clips']:,}  duration: {stats['total_duration_s'] / 3600:.2f} h  "
        f"disk: {stats['disk_bytes'] / 2**20:.1f} MiB  failures: {stats['failures']:,} {stats['failures_by_reason']}",
    ]
    for name, info in stats["tags"].items():
        top = ", ".join(f"{v} {n}" for v, n in info["top"].items())
        lines.append(f"  {name} ({info['distinct']} values): {top}")
    return "\n".join(lines)


@music_app.command("stats")
def corpus_music_stats(
    out: Annotated[str | None, typer.Option(help="corpus directory")] = None,
    top: Annotated[int, typer.Option(help="values listed per tag field")] = 8,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Counts per tag field, total duration, disk size and failures of the built music corpus."""
    from workloads.music.build import corpus_stats

    stats = corpus_stats(out, top=top)
    typer.echo(json.dumps(stats, indent=2) if as_json else _music_stats_text(stats))


def _imagetext_stats_text(stats: dict[str, Any]) -> str:
    mib = (stats.get("png_bytes") or 0) / 2**20
    mib_disk = (stats.get("png_bytes_on_disk") or 0) / 2**20
    lines = [
        f"openmoji {stats['version']} corpus in {stats['dir']}",
        f"  images {stats['images']:,} (base {stats['base']:,}, skin-tone {stats['skintone']:,}); "
        f"with CLDR tags {stats['with_cldr_tags']:,}, with any tags {stats['with_any_tags']:,}",
        f"  split groups {stats['split_groups']:,}; sets of pixel-identical images {stats['identical_image_sets']}",
        f"  renderers {stats['renderers']}; failures {stats['failures']}",
        f"  PNGs {mib:.1f} MiB ({mib_disk:.1f} MiB on disk); last build {stats['build_seconds']} s "
        f"(render {stats['render_seconds']} s)",
        f"  {'split':<6}{'images':>8}{'base':>7}{'pairs':>8}{'misal.':>8}{'base pairs':>12}{'base misal.':>13}",
    ]
    for name, s in stats["splits"].items():
        lines.append(
            f"  {name:<6}{s['images']:>8,}{s['base_images']:>7,}{s['pairs']:>8,}{s['misaligned']:>8,}"
            f"{s['base_pairs']:>12,}{s['base_misaligned']:>13,}"
        )
    return "\n".join(lines)


def _echo_imagetext_stats(stats: dict[str, Any], as_json: bool) -> None:
    typer.echo(json.dumps(stats, indent=2, ensure_ascii=False) if as_json else _imagetext_stats_text(stats))


@imagetext_app.command("build")
def corpus_imagetext_build(
    size: Annotated[int, typer.Option(help="PNG side in pixels")] = 128,
    misaligned: Annotated[float, typer.Option(help="share of train pairs with a wrong caption")] = 0.1,
    eval_misaligned: Annotated[float, typer.Option(help="extra misaligned val/test pairs per image")] = 1.0,
    seed: Annotated[int, typer.Option(help="seed of the misalignment draws")] = 0,
    split_seed: Annotated[int, typer.Option(help="seed of the split hash")] = 0,
    background: Annotated[str, typer.Option(help="composite colour, or 'none' for RGBA PNGs")] = "#ffffff",
    out: Annotated[str | None, typer.Option(help="build directory (default: $THAW_CORPUS_DIR/imagetext/...)")] = None,
    cache_dir: Annotated[str | None, typer.Option(help="corpus cache holding the npm install")] = None,
    workers: Annotated[int | None, typer.Option(help="render processes (default: all cores; 0: inline)")] = None,
    limit: Annotated[int | None, typer.Option(help="only the first N emojis (smoke test)")] = None,
    progress: ProgressOpt = True,
    as_json: Annotated[bool, typer.Option("--json", help="print the stats as JSON")] = False,
) -> None:
    """Fetch, render and caption the OpenMoji corpus (resumable), then print its stats."""
    from workloads.imagetext.corpus import build_imagetext_corpus, corpus_stats

    report = build_imagetext_corpus(out, size=size, background=background, misaligned_share=misaligned,
                                    eval_misaligned_share=eval_misaligned, seed=seed, split_seed=split_seed,
                                    workers=workers, limit=limit, cache_dir=cache_dir, progress=progress)
    typer.echo(f"rendered {report.rendered}, cached {report.cached}, failed {len(report.failures)}, "
               f"rsvg-convert fallback {report.fallback_ids}, {report.rows:,} pairs in {report.seconds:.1f} s",
               err=True)
    for f in report.failures:
        typer.echo(f"  failed {f['id']}: {f['error']}", err=True)
    _echo_imagetext_stats(corpus_stats(report.out_dir), as_json)


@imagetext_app.command("stats")
def corpus_imagetext_stats(
    dir: Annotated[str | None, typer.Option(help="build directory")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="print JSON")] = False,
) -> None:
    """Image, pair and misaligned-pair counts per split of the built OpenMoji corpus."""
    from workloads.imagetext.corpus import corpus_stats

    _echo_imagetext_stats(corpus_stats(dir), as_json)


@sim_app.command("stats")
def sim_stats(
    events: Annotated[int | None, typer.Option(help="stop after this many events")] = None,
    steps: Annotated[int, typer.Option(help="at least this many steps")] = 60,
    seed: Annotated[int, typer.Option(help="simulator seed")] = 0,
) -> None:
    """Generate the community simulator's event stream; print its statistics and events/s as JSON."""
    from workloads.simulator import generate_stats

    typer.echo(json.dumps(generate_stats(events=events, steps=steps, seed=seed), indent=2))


# --------------------------------------------------------------------------------------------------- engine
@app.command("topics")
def topics_create(partitions: int | None = None) -> None:
    """Create the engine's Kafka topics (idempotent)."""
    from contracts.topics import Topics
    from infra.topics import ensure_topics

    s = _settings()
    created = ensure_topics(s.kafka, Topics.for_prefix(s.kafka.topic_prefix), partitions)
    typer.echo(f"created: {created or 'nothing (all exist)'}")


def _exit_past_stuck_threads(code: int, join_s: float = 0.5) -> None:
    """Exit with ``code`` without waiting on a thread stuck in a sink call.

    Python joins the asyncio executor's threads at exit, so one still inside a step of a batch the stop abandoned
    (a hung Redis or Milvus call) would hold the exit as long as the call hangs. That batch was not acked (it is read
    again after a restart), so exiting past it loses nothing.
    """
    import os
    import threading

    deadline = time.monotonic() + join_s
    others = [t for t in threading.enumerate() if t is not threading.main_thread() and not t.daemon]
    for t in others:
        t.join(max(0.0, deadline - time.monotonic()))
    stuck = [t.name for t in others if t.is_alive()]
    if not stuck:
        raise SystemExit(code)
    logging.getLogger("thaw.worker").warning(
        "exiting past %d thread(s) still inside an abandoned batch step (%s)", len(stuck), ", ".join(stuck))
    logging.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


def _raise_exit(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@app.command("worker")
def worker(
    loglevel: str = "info",
    metrics_port: int | None = None,
    follow_cf: Annotated[bool, typer.Option("--follow-cf", help="supervise CF-space worker groups: pick up each "
                                            "new cb2cf version without a restart, rolled out blue/green")] = False,
    poll_s: Annotated[float, typer.Option(help="with --follow-cf: seconds between model-directory checks")] = 5.0,
    stop_grace: Annotated[float | None, typer.Option(min=0, help="seconds a stopping worker waits for its batches "
                                                     "in flight before abandoning them unacked (default 4)")] = None,
) -> None:
    """Run the streaming engine (Faust worker: content, user and profile agents) with /metrics.

    SIGTERM/SIGINT stop it promptly: batches in flight get ``--stop-grace`` seconds, a batch that does not finish
    is abandoned unacked (a restarted worker reads it again), the worker leaves its consumer group and exits 0.
    """
    import signal

    import faust

    from infra.metrics import EngineMetrics
    from streams.app import STOP_GRACE_S, create_app

    _logging(loglevel.upper())
    s = _settings()
    if follow_cf:
        import threading

        from streams.rollout.follow import CFFollower

        stop = threading.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
        typer.echo(f"following cb2cf versions under {s.models.dir} (groups {s.stream.app_id}-<version>)", err=True)
        CFFollower(s, poll_s=poll_s, extra_args=["--metrics-port", "0"]).run(stop)
        return
    # a SIGTERM while the engine loads (before Faust installs its handler) exits at once: nothing is consumed yet
    signal.signal(signal.SIGTERM, _raise_exit)
    metrics = EngineMetrics.for_settings(s, [s.stream.app_id])
    code = 0
    rt = None
    try:
        port = metrics.start_http_server(metrics_port if metrics_port is not None else s.stream.metrics_port)
        rt = create_app(s, metrics=metrics, stop_grace_s=STOP_GRACE_S if stop_grace is None else stop_grace)
        typer.echo(f"metrics on http://127.0.0.1:{port}/metrics; space {rt.engine.space}", err=True)
        faust.Worker(rt.app, loglevel=loglevel).execute_from_commandline()
    except SystemExit as exc:  # Faust's worker always ends with one (0 after a clean stop)
        code = exc.code if isinstance(exc.code, int) else int(exc.code is not None)
        code = getattr(rt.app, "exit_code", 0) or code if rt is not None else code  # it stopped on its own
    finally:
        metrics.close()
    _exit_past_stuck_threads(code)


@app.command("recall")
def recall(
    user: Annotated[str, typer.Option("--user", help="user id")],
    k: int = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Top-k items for a user from Milvus (user vector from Redis), or the fallback for a user without one."""
    from indexing.redis_users import UserStore
    from ranking.online.recall import Recaller, served_index

    s = _settings()
    users = UserStore(s.redis)
    items = served_index(s.milvus, s.models.dir, users)
    items.ensure()
    res = Recaller(users, items).recall(user, k)
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=2))
        return
    typer.echo(f"user {user}: source={res.source} space={res.space} state={res.user_state} "
               f"timings_ms={ {k: round(v, 1) for k, v in res.timings_ms.items()} }")
    for i, it in enumerate(res.items, 1):
        typer.echo(f"{i:3d}. {it.item_id:40s} {it.score:8.4f} {it.kind}")


@app.command("serve")
def serve(
    host: Annotated[str | None, typer.Option(help="bind address (default THAW_SERVE__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default THAW_SERVE__PORT)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    log_level: str = "info",
) -> None:
    """Run the recommendation API: GET /recommend, /ab, /healthz, /readyz, /metrics, /docs (OpenAPI)."""
    import uvicorn

    s = _settings()
    _logging(log_level.upper())
    h, p = host or s.serve.host, port or s.serve.port
    if workers > 1:  # every worker process builds its own app from the THAW_* environment
        uvicorn.run("serving.api:app_from_env", factory=True, host=h, port=p, workers=workers, log_level=log_level)
        return
    from serving.api import create_app

    uvicorn.run(create_app(s), host=h, port=p, log_level=log_level, access_log=False)


@app.command("lag")
def lag(
    group: Annotated[list[str] | None, typer.Option("--group")] = None,
    as_json: Annotated[bool, typer.Option("--json")] = False,
    watch: Annotated[bool, typer.Option("--watch")] = False,
    interval: float = 2.0,
    metrics: Annotated[list[str] | None, typer.Option(
        "--metrics", help="a worker's /metrics URL to read its agents' health from (repeat for several workers; "
        "default: http://127.0.0.1:<THAW_STREAM__METRICS_PORT>/metrics)")] = None,
) -> None:
    """Consumer lag per group/topic/partition (committed offset, end offset, lag) from the Kafka admin API, then the
    worker's agents: stuck (seconds an agent has been retrying a failing sink step, the step and the last error
    class) and retries, read from the worker's /metrics (``--json`` prints the lag rows only)."""
    from infra.lag import consumer_lag
    from infra.metrics import read_agent_states

    s = _settings()
    urls = metrics or [f"http://127.0.0.1:{s.stream.metrics_port}/metrics"]
    while True:
        rows = consumer_lag(s, group or None)
        if as_json:
            typer.echo(json.dumps([vars(r) for r in rows]))
        else:
            typer.echo(f"{'GROUP':24s} {'TOPIC':28s} {'PART':>4s} {'COMMITTED':>10s} {'END':>10s} {'LAG':>8s}")
            for r in rows:
                committed = "-" if r.committed is None else str(r.committed)
                lag_s = "-" if r.lag is None else str(r.lag)
                typer.echo(f"{r.group:24s} {r.topic:28s} {r.partition:4d} {committed:>10s} "
                           f"{r.end_offset:10d} {lag_s:>8s}")
            typer.echo(f"total lag {sum(r.lag or 0 for r in rows)} (partitions without a committed offset: "
                       f"{sum(r.lag is None for r in rows)})")
            for url in urls:
                try:
                    agents = read_agent_states(url)
                except Exception as exc:  # noqa: BLE001 - no worker there is an answer, not a failure
                    typer.echo(f"agents: no worker metrics at {url} ({type(exc).__name__}); agent health not shown "
                               "(pass --metrics URL of a running worker)")
                    continue
                typer.echo(f"agents of the worker at {url}:")
                typer.echo(f"  {'AGENT':14s} {'STATE':8s} {'STUCK_S':>8s} {'STEP':10s} {'LAST_ERROR':28s} "
                           f"{'RETRIES':>8s}")
                for a in agents:
                    state = "STUCK" if a.step is not None else "ok"
                    typer.echo(f"  {a.agent:14s} {state:8s} {a.stuck_s:8.1f} {a.step or '-':10s} "
                               f"{a.error or '-':28s} {a.retries:8d}")
        if not watch:
            return
        time.sleep(interval)


@app.command("replay")
def replay(
    source: Annotated[str, typer.Argument(help="lastfm | ml-100k | sim (the simulator) | a generic interactions CSV")],
    rate: Annotated[float, typer.Option(help="events per second (0 = as fast as possible)")] = 200.0,
    limit: Annotated[int | None, typer.Option(help="at most this many user events")] = None,
    items_limit: Annotated[int | None, typer.Option(help="at most this many items")] = None,
    item_content: Annotated[Path | None, typer.Option(help="item content file for a generic CSV")] = None,
    seed: int = 0,
    bad_share: Annotated[float, typer.Option(help="share of deliberately bad records to inject (0..0.5)")] = 0.0,
    speedup: Annotated[float, typer.Option(help="keep the source's own timing, this many times faster "
                                           "(datasets with timestamps, the simulator); 0 = use --rate")] = 0.0,
) -> None:
    """Publish a dataset or the simulator to the Kafka topics as contract events."""
    from indexing.wait import wait_indexed
    from workloads.replay import replay_dataset

    _logging("WARNING")
    s = _settings()
    stats = replay_dataset(s, source, rate=rate, limit=limit, items_limit=items_limit,
                           item_content=item_content, seed=seed, bad_share=bad_share, speedup=speedup,
                           notify=lambda msg: typer.echo(f"replay: {msg}", err=True), wait_indexed=wait_indexed)
    typer.echo(json.dumps(stats, indent=2))


@app.command("demo")
def demo(
    clips: Annotated[int, typer.Option(help="music21 clips the community's tracks are made of (rendered once)")] = 160,
    steps: Annotated[int, typer.Option(help="simulated community steps (minutes of community life)")] = 120,
    rate: Annotated[float, typer.Option(help="new posts published per second")] = 20.0,
    keep: Annotated[bool, typer.Option(help="leave the stack and worker running afterwards")] = False,
    out: Annotated[Path, typer.Option(help="folder for report.json and report.html")] = Path("demo-report"),
) -> None:
    """The main job: local stack + the whole engine + a replay of a real-data community, then a freshness/quality
    report (printed, and written as JSON and HTML)."""
    from thaw.demo import run_demo
    from thaw.demo_space import CommunityPlan
    from thaw.report_html import write_report

    _logging("WARNING")
    rep = run_demo(_settings(), plan=CommunityPlan(n_clips=clips, steps=steps), rate=rate, keep=keep)
    typer.echo(rep.render())
    out.mkdir(parents=True, exist_ok=True)
    write_report(rep.to_dict(), out / "report.json", out / "report.html")
    typer.echo(f"report: {out / 'report.json'} and {out / 'report.html'}")
    if not rep.ok:
        raise typer.Exit(1)


# ---------------------------------------------------------------------------------------------------- pictures
report_app = typer.Typer(no_args_is_help=True, help="Render saved reports.")
app.add_typer(report_app, name="report")
observability_app = typer.Typer(no_args_is_help=True, help="Prometheus scrape config and Grafana dashboard over the "
                                "worker's and the API's /metrics.")
app.add_typer(observability_app, name="observability")


@report_app.command("html")
def report_html(
    in_path: Annotated[Path, typer.Option("--in", exists=True, dir_okay=False, help="the JSON report")],
    out: Annotated[Path, typer.Option("--out", dir_okay=False, help="the HTML page to write")],
) -> None:
    """A JSON report (``thaw demo``'s report.json) as one self-contained HTML page: result, tables, plots."""
    from thaw.report_html import render_html

    try:
        report = json.loads(in_path.read_text())
    except json.JSONDecodeError as exc:
        raise typer.BadParameter(f"{in_path} is not JSON: {exc}", param_hint="--in") from exc
    if not isinstance(report, dict):
        raise typer.BadParameter(f"{in_path} holds a {type(report).__name__}, not a report object", param_hint="--in")
    out.write_text(render_html(report), encoding="utf-8")
    typer.echo(f"wrote {out}", err=True)


def _write_or_echo(text: str, out: Path | None) -> None:
    if out is None:
        typer.echo(text, nl=False)
        return
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)
    typer.echo(f"wrote {out}", err=True)


@observability_app.command("prometheus-config")
def observability_prometheus_config(
    out: Annotated[Path | None, typer.Option(help="write here (default: stdout)")] = None,
    scrape_interval: Annotated[float, typer.Option(min=0.1, help="seconds between scrapes")] = 15.0,
) -> None:
    """Prometheus scrape config for the worker (THAW_STREAM__METRICS_PORT) and the API (THAW_SERVE__HOST/PORT)."""
    from infra.observability.scrape_config import render_prometheus_config

    _write_or_echo(render_prometheus_config(_settings(), scrape_interval_s=scrape_interval), out)


@observability_app.command("grafana-dashboard")
def observability_grafana_dashboard(
    out: Annotated[Path | None, typer.Option(help="write here (default: stdout); the shipped one is "
                                             "infra/observability/grafana/thaw.json")] = None,
) -> None:
    """The Grafana dashboard JSON, built with grafanalib (the dev extra)."""
    try:
        from infra.observability.dashboard import dashboard_json
    except ImportError as exc:
        typer.echo(f"error: {exc}: grafanalib comes with the dev extra: pip install 'thaw[dev]'", err=True)
        raise typer.Exit(2) from exc
    _write_or_echo(dashboard_json(), out)


def _service_errors() -> tuple[type[BaseException], ...]:
    import redis
    from kafka.errors import KafkaError
    from pymilvus.exceptions import MilvusException

    from encoders.registry import ModelNotFoundError
    from infra.lag import CoordinatorNotReadyError
    from infra.stack import StackError

    return (redis.exceptions.ConnectionError, redis.exceptions.AuthenticationError, redis.exceptions.TimeoutError,
            KafkaError, MilvusException, StackError, ModelNotFoundError, CoordinatorNotReadyError)


def main() -> None:
    """Entry point: unreachable services and missing models end in one clear line, not a traceback."""
    from workloads.datasets import DatasetsDirNotSetError

    try:
        app(prog_name="thaw")
    except DatasetsDirNotSetError as exc:
        typer.echo(f"error: {exc}", err=True)
        sys.exit(2)
    except Exception as exc:  # noqa: BLE001 - classified below, re-raised when unknown
        if isinstance(exc, _service_errors()):
            s = load_settings()
            where = f"(kafka {s.kafka.bootstrap_servers}, redis {s.redis.display()}, milvus {s.milvus.uri})"
            typer.echo(f"error: {type(exc).__name__}: {str(exc)[:300]} {where}", err=True)
            typer.echo("hint: is the stack up? `thaw stack status`", err=True)
            sys.exit(2)
        raise
