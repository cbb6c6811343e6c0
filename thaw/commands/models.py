"""``thaw models``: the versioned model directory."""

from __future__ import annotations

from typing import Annotated

import typer

from thaw.commands._common import settings

app = typer.Typer(no_args_is_help=True, help="The versioned model directory.")


@app.command("export-text")
def models_export_text(version: str = "1") -> None:
    """Export the bundled all-MiniLM-L6-v2 to ONNX into the model directory."""
    from encoders.registry import ModelRegistry
    from encoders.text import MODEL_NAME
    from encoders.training.export_text import export_minilm

    reg = ModelRegistry(settings().models.dir)
    if version in reg.versions(MODEL_NAME):
        typer.echo(f"{MODEL_NAME} version {version} already exists at {reg.root / MODEL_NAME / version}")
        return
    mv = export_minilm(reg, version)
    typer.echo(f"exported {MODEL_NAME}@{version} to {mv.path} (sha256 {mv.manifest.sha256[:12]})")


@app.command("install-bundled")
def models_install_bundled(
    force: Annotated[bool, typer.Option(help="export again even when the registry holds the version")] = False,
    current: Annotated[bool | None, typer.Option(help="make the bundled versions current (default: only models "
                                                      "without a current version)")] = None,
) -> None:
    """Export the encoders whose trained weights ship in the repo (MusicCLIP, Audio MAE, FLAVA-style) to ONNX."""
    from encoders.registry import ModelRegistry
    from encoders.training.bundled import install

    reg = ModelRegistry(settings().models.dir)
    for family, r in install(reg, force=force, make_current=current).items():
        typer.echo(f"{family}@{r['version']}: {r['status']} ({r['seconds']} s)")


@app.command("list")
def models_list() -> None:
    """Published models, their versions and the current one."""
    from encoders.registry import ModelRegistry

    reg = ModelRegistry(settings().models.dir)
    if not reg.root.is_dir():
        typer.echo(f"no models under {reg.root}")
        return
    for d in sorted(p for p in reg.root.iterdir() if p.is_dir()):
        typer.echo(f"{d.name}: versions {reg.versions(d.name)} current {reg.current_version(d.name)}")


@app.command("quantize")
def models_quantize(
    names: Annotated[list[str] | None, typer.Argument(help="models to quantise (default: minilm-l6, flava-image, "
                                                           "flava-text)")] = None,
    scheme: Annotated[str, typer.Option(help="the variant to write")] = "int8",
    force: Annotated[bool, typer.Option(help="write the variant again even when it exists")] = False,
) -> None:
    """Publish int8 variants of the current encoders beside their fp32 versions (`<version>-int8`; served when
    THAW_MODELS__QUANTIZE=int8)."""
    from encoders.quantize import QUANTIZABLE, quantize_all
    from encoders.registry import ModelRegistry

    reg = ModelRegistry(settings().models.dir)
    for r in quantize_all(reg, scheme=scheme, names=tuple(names or QUANTIZABLE), force=force):
        if r["status"] == "not published":
            typer.echo(f"{r['name']}: not published, skipped")
            continue
        typer.echo(f"{r['name']}@{r['variant']}: {r['status']} ({r['source_bytes'] / 1e6:.1f} MB -> "
                   f"{r['bytes'] / 1e6:.1f} MB, {r['seconds']} s)")
