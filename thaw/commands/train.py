"""``thaw train``: train a model on its real data, export it to ONNX and publish it into the model directory.

The encoder trainers' options map field by field onto their config dataclasses (built here, then handed to the
library's ``train``); the defaults repeat the dataclasses' (importing them here would load torch for ``thaw --help``)
and tests/unit/thaw/test_thaw_commands.py checks that a run without options builds exactly the dataclass defaults.
``thaw train ranker``'s options are read from its config's fields (:mod:`thaw.commands._config`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import typer

from thaw.commands._common import RUN_PANEL, ProgressOpt, resolve_models_dir, setup_logging, write_json
from thaw.commands._config import BoundConfig, Opt, config_options

app = typer.Typer(no_args_is_help=True, help="Train a model on its real data, export it to ONNX and publish it "
                  "into the model directory (THAW_MODELS__DIR unless --models-dir).")
_RUN, _SCHEDULE, _MODEL = RUN_PANEL, "Schedule", "Model"
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


def _echo_train_report(report: dict[str, Any]) -> None:
    typer.echo(json.dumps({k: v for k, v in report.items() if k != "history"}, indent=2, default=str))


@app.command("audio-mae")
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

    setup_logging("INFO")
    cfg = AudioMAETrainConfig(
        out_dir=out_dir, models_dir=str(resolve_models_dir(models_dir)), cache_dir=cache_dir,
        model=AudioMAEConfig(dim=dim, depth=depth, heads=heads, dec_dim=dec_dim, dec_depth=dec_depth,
                             mask_ratio=mask_ratio),
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, warmup_epochs=warmup_epochs,
        seed=seed, threads=threads, max_clips=max_clips, resume=resume, export=export, version=version,
        progress=progress,
    )
    _echo_train_report(train(cfg, load_music_corpus(corpus_dir)))


@app.command("musicclip")
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

    setup_logging("INFO")
    cfg = MusicCLIPTrainConfig(
        out_dir=out_dir, models_dir=str(resolve_models_dir(models_dir)), cache_dir=cache_dir,
        model=MusicCLIPConfig(embed_dim=embed_dim, channels=channels, dropout=dropout),
        epochs=epochs, batch_size=batch_size, crop_frames=crop_frames or None, spec_augment=spec_augment, lr=lr,
        weight_decay=weight_decay, warmup_epochs=warmup_epochs, seed=seed, threads=threads, max_clips=max_clips,
        resume=resume, export=export, version=version, progress=progress,
    )
    _echo_train_report(train(cfg, load_music_corpus(corpus_dir)))


@app.command("flava")
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

    setup_logging("INFO")
    cfg = FlavaTrainConfig(
        model=FlavaConfig(dim=dim, fusion_depth=fusion_depth, text_adapter_layers=text_adapter_layers,
                          feature_dropout=feature_dropout),
        out_dir=out, cache_dir=cache_dir, models_dir=str(resolve_models_dir(models_dir)),
        epochs=epochs, batch_size=batch_size, lr=lr, weight_decay=weight_decay, itm_weight=itm_weight,
        misaligned=misaligned, warmup_epochs=warmup_epochs, drop_share=drop_share, soft_power=soft_power,
        limit=limit, seed=seed, threads=threads, resume=resume, export=export, version=version, progress=progress,
    )
    report = train(cfg, load_imagetext_corpus(corpus_dir, include_skintones=cfg.include_skintones))
    typer.echo(json.dumps({k: report.get(k) for k in ("run_id", "timing", "val", "test", "published")}, indent=2,
                          default=str))


@app.command("ranker")
@config_options(
    "ranking.workflows.ranker:RankerTrainConfig",
    options={"models_dir": Opt(help="model directory (default: THAW_MODELS__DIR)", to_field=resolve_models_dir),
             "verbose": Opt(decls=("--verbose",))},
    order=("dataset", "sim_steps", "negatives", "seed", "epochs", "patience", "threads", "models_dir", "version",
           "check_rows", "json_out", "verbose"),
)
def train_ranker(
    config: BoundConfig,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
) -> None:
    """DeepFM + MMoE ranker, group-gated and plain, published as `deepfm-mmoe` and `deepfm-mmoe-plain`.

    Both are checked after publishing (ONNX and the online request path against torch); exit 1 when a check fails.
    """
    from ranking.workflows.ranker import RankerTrainConfig, checks_passed, format_table
    from ranking.workflows.ranker import train_ranker as run

    cfg = config.build(RankerTrainConfig)
    setup_logging("INFO" if cfg.verbose else "WARNING")
    result = run(cfg)
    typer.echo(format_table(result))
    write_json(result, json_out)
    if not checks_passed(result):
        typer.echo("ONNX / online-path check failed", err=True)
        raise typer.Exit(1)
