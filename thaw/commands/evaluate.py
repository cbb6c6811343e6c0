"""``thaw evaluate``: offline evaluations on the packaged or generic-format datasets.

Each command's options beyond the data are read from its config dataclass (:mod:`thaw.commands._config`): a field
added there is an option here.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import typer

from thaw.commands._common import AsJsonOpt, resolve_models_dir, setup_logging, write_json
from thaw.commands._config import BoundConfig, Opt, config_options

app = typer.Typer(no_args_is_help=True, help="Offline evaluations on the packaged or generic-format datasets.")

InteractionsOpt = Annotated[Path | None, typer.Option(help="interactions file: user,item[,weight][,ts]")]
ItemContentOpt = Annotated[list[Path] | None, typer.Option(help="item tags file / JSONL (repeatable)")]
ReportOutOpt = Annotated[Path | None, typer.Option(help="also write the JSON report here")]
# how the harnesses' shared fields differ on the command line
_MINILM_DIR = Opt(help="model directory holding MiniLM (default: THAW_MODELS__DIR)", to_field=resolve_models_dir)
_VERBOSE = Opt(decls=("-v", "--verbose"))


def _need_data(command: str, interactions: Path | None, dataset: str | None) -> None:
    if interactions is None and dataset is None:
        raise typer.BadParameter(f"{command} needs --interactions or --dataset", param_hint="--interactions")


@app.command("cold-items")
@config_options(
    "ranking.evaluation.cold_items:ColdEvalConfig",
    skip=("hybrid_weights", "hybrid_max_features", "val_share", "dssm", "cb2cf", "dropoutnet", "feature_cache"),
    options={"models_dir": _MINILM_DIR, "verbose": _VERBOSE},
    order=("interactions", "item_content", "cold_test", "cold_val", "dataset", "k", "seed", "models", "objectives",
           "fields", "words", "knn_ks", "sparse_ks", "protocol", "max_users", "min_weight", "user_features",
           "threads", "models_dir", "publish_dir", "publish_version", "publish_lightgcn", "out", "as_json",
           "verbose"),
)
def evaluate_cold_items(
    config: BoundConfig,
    interactions: Annotated[Path | None, typer.Option(
        help="training (or all) interactions: user,item[,weight][,ts]")] = None,
    item_content: ItemContentOpt = None,
    cold_test: Annotated[Path | None, typer.Option(help="test cold-item interactions")] = None,
    cold_val: Annotated[Path | None, typer.Option(help="validation cold-item interactions")] = None,
    dataset: Annotated[Literal["ml-100k", "lastfm", "citeulike-a"] | None, typer.Option(
        help="built-in dataset instead of files")] = None,
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
) -> None:
    """Cold items: CB2CF (each objective) and the hybrid against the baselines on held-out cold items.

    Baselines: random, popularity, dense content-kNN, TF-IDF and BM25 item-kNN, DropoutNet. Protocols and models:
    `ranking.evaluation.cold_items`. With --publish-dir, what validation selected to serve is published.
    """
    _need_data("cold-items", interactions, dataset)
    from ranking.evaluation.cold_items import ColdEvalArtifacts, ColdEvalConfig, format_table
    from ranking.evaluation.cold_items import evaluate_cold_items as run
    from ranking.evaluation.report import emit_report

    cfg = config.build(ColdEvalConfig)
    setup_logging("INFO" if cfg.verbose else "WARNING")
    artifacts = ColdEvalArtifacts() if publish_dir is not None else None
    report = run(interactions, item_content or None, cold_test, cold_val, k=cfg.k, seed=cfg.seed,
                 models=list(cfg.models), dataset=dataset, config=cfg, artifacts=artifacts)
    if artifacts is not None and publish_dir is not None:
        from ranking.training.export import publish_cold_item_models

        report["published"] = publish_cold_item_models(artifacts, publish_dir, version=publish_version, report=report,
                                                       lightgcn=publish_lightgcn)
    emit_report(report, out, as_json, format_table)


@app.command("new-users")
@config_options(
    "ranking.evaluation.new_users:NewUserEvalConfig",
    skip=("user_share", "val_share", "niche_share", "min_group", "shrink_ks", "betas", "taste_ridges", "fold_ins",
          "lightgcn", "dssm", "feature_cache"),
    options={"align_dssm": Opt(param="dssm"), "models_dir": _MINILM_DIR, "verbose": _VERBOSE},
    order=("interactions", "item_content", "dataset", "user_groups", "reveal", "k", "seed", "fields", "min_weight",
           "dssm", "max_epochs", "threads", "models_dir", "out", "as_json", "verbose"),
)
def evaluate_new_users(
    config: BoundConfig,
    interactions: InteractionsOpt = None,
    item_content: ItemContentOpt = None,
    dataset: Annotated[Literal["ml-100k", "lastfm"] | None, typer.Option(help="built-in dataset instead of files")] = (
        None),
    user_groups: Annotated[Path | None, typer.Option(help="user,group CSV for the group prior")] = None,
    max_epochs: Annotated[int | None, typer.Option(help="LightGCN epoch cap")] = None,
    out: ReportOutOpt = None,
    as_json: AsJsonOpt = False,
) -> None:
    """New users: group prior, LightGCN fold-in and the multimodal-enhanced user vector against the baselines.

    Scored per revealed-interaction count. Protocol: `ranking.evaluation.new_users`.
    """
    _need_data("new-users", interactions, dataset)
    from ranking.evaluation.new_users import NewUserEvalConfig, format_table
    from ranking.evaluation.new_users import evaluate_new_users as run
    from ranking.evaluation.report import emit_report
    from ranking.models.lightgcn import LightGCNConfig

    cfg = config.build(NewUserEvalConfig, lightgcn=LightGCNConfig() if max_epochs is None
                       else LightGCNConfig(max_epochs=max_epochs))
    setup_logging("INFO" if cfg.verbose else "WARNING")
    report = run(interactions, item_content or None, dataset=dataset, user_groups=user_groups,
                 reveal=list(cfg.reveal), k=cfg.k, seed=cfg.seed, config=cfg)
    emit_report(report, out, as_json, format_table)


@app.command("ranker-groups")
@config_options(
    "ranking.evaluation.ranker_groups:RankGroupsConfig",
    options={"seeds": Opt(repeat=True), "export_dir": Opt(param="export"), "verbose": Opt(decls=("--verbose",))},
    order=("dataset", "seeds", "sim_steps", "negatives", "new_user_max_history", "max_epochs", "patience", "experts",
           "threads", "json_out", "export", "ablate_interest", "verbose"),
)
def evaluate_ranker_groups(
    config: BoundConfig,
    json_out: Annotated[Path | None, typer.Option("--json", help="write the report here")] = None,
) -> None:
    """The DeepFM + MMoE ranker with and without group-wise gating: AUC / logloss per task and user group."""
    from ranking.evaluation.ranker_groups import RankGroupsConfig, format_table
    from ranking.evaluation.ranker_groups import evaluate_ranker_groups as run

    cfg = config.build(RankGroupsConfig)
    setup_logging("INFO" if cfg.verbose else "WARNING")
    report = run(cfg)
    typer.echo(format_table(report))
    write_json(report, json_out)
