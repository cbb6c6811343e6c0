"""Opt-in int8 variants of the served encoders: ONNX Runtime dynamic quantisation, published next to the fp32 graph.

``THAW_MODELS__QUANTIZE`` (:data:`SETTINGS`) chooses which encoders
:meth:`encoders.featurizer.ContentFeaturizer.from_registry` serves as int8: ``none`` (default) serves every fp32
graph; ``int8`` the int8 MiniLM (the one that measured faster on the 2-core AVX2 machine); ``int8-all`` also the
FLAVA-style image and text graphs (measured slower there: kept for CPUs where int8 pays, e.g. with VNNI).
``thaw models quantize`` writes the variants of :data:`QUANTIZABLE`.

A variant is its own published version beside the one it was made from: ``<models.dir>/<name>/<version>-int8/``
(:func:`variant_version`), written with :meth:`encoders.registry.ModelRegistry.publish`, so its manifest records
the sha256 of its own graph and side files like every other version, and a published version is never rewritten.
Its manifest's ``extra`` is the source's plus ``variant``: the scheme, the source version and the sha256 of the
source graph, and the quantiser's options. :func:`load_variant` refuses a variant whose recorded source hash is
not the source version's current graph hash (a variant made from an older graph of the same version name).
``CURRENT`` keeps naming the fp32 version; the variant is chosen by the setting, never by ``CURRENT``.

The quantiser: ``onnxruntime.quantization.quantize_dynamic`` (weights int8 at export, activations quantised per
batch at run time) of the ``MatMul`` / ``Gemm`` nodes (:data:`DEFAULT_OP_TYPES`), per output channel, with
``reduce_range`` (7-bit weights). Both matter on CPUs without VNNI (AVX2 only, as on the benchmark machine):
the u8 x s8 multiply-add saturates with full-range weights, and on MiniLM per-tensor weights with that saturation
moved sentence vectors to a mean cosine of 0.88 with the fp32 ones, per-channel 7-bit weights to 0.99.
Convolutions are left in fp32 (quantised dynamically, the image backbone's embeddings kept a cosine of 0.46 with
fp32 and ran several times slower: ``conv_probe`` in the benchmark). What it costs in quality and gains in speed on
this machine: ``python -m benchmarks.quantization`` (results in ``benchmarks/results/quantization.json``).
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from encoders.registry import ModelNotFoundError, ModelRegistry, ModelVersion, TensorSpec

SCHEMES: tuple[str, ...] = ("none", "int8")
"""Kinds of variant: ``none`` is the fp32 version itself."""

QUANTIZABLE: tuple[str, ...] = ("minilm-l6", "flava-image", "flava-text")
"""The models ``thaw models quantize`` writes variants of: the largest encoder costs per item (MiniLM on every
item; the image graph and the FLAVA-style text tower on every moment). The audio graphs and the fusion graph are
small and stay fp32."""

SETTINGS: dict[str, dict[str, str]] = {
    "none": {},
    "int8": {"minilm-l6": "int8"},
    "int8-all": {name: "int8" for name in QUANTIZABLE},
}
"""``THAW_MODELS__QUANTIZE`` value -> the scheme served per model (a model not named serves fp32)."""

DEFAULT_OP_TYPES: tuple[str, ...] = ("MatMul", "Gemm")


class VariantNotFoundError(ModelNotFoundError):
    """The quantised variant of a version is not published (``thaw models quantize``)."""


def check_setting(setting: str) -> str:
    """``setting`` if it is one of :data:`SETTINGS`.

    Raises:
        ValueError: An unknown setting.
    """
    if setting not in SETTINGS:
        raise ValueError(f"unknown THAW_MODELS__QUANTIZE {setting!r}; known: {', '.join(SETTINGS)}")
    return setting


def scheme_for(setting: str, name: str) -> str:
    """The variant model ``name`` serves under ``setting`` (``none``: its fp32 version)."""
    return SETTINGS[check_setting(setting)].get(name, "none")


def check_scheme(scheme: str) -> str:
    """``scheme`` if it is one of :data:`SCHEMES`.

    Raises:
        ValueError: An unknown scheme.
    """
    if scheme not in SCHEMES:
        raise ValueError(f"unknown quantisation scheme {scheme!r}; known: {', '.join(SCHEMES)}")
    return scheme


def variant_version(version: str, scheme: str) -> str:
    """The version name of ``scheme``'s variant of ``version`` (``1`` -> ``1-int8``); ``none`` is the version."""
    check_scheme(scheme)
    return version if scheme == "none" else f"{version}-{scheme}"


def variant_info(mv: ModelVersion) -> dict[str, Any] | None:
    """The ``variant`` record of a published variant (scheme, source version and graph hash, options); None for a
    version that is not a variant."""
    v = mv.manifest.extra.get("variant")
    return dict(v) if isinstance(v, dict) else None


def base_version(mv: ModelVersion) -> str:
    """The version a variant was made from (a plain version: its own)."""
    info = variant_info(mv)
    return str(info["of_version"]) if info else mv.manifest.version


def load_variant(registry: ModelRegistry, name: str, scheme: str, version: str | None = None) -> ModelVersion:
    """``scheme``'s variant of ``name``'s ``version`` (default: the current one), checked against its source.

    ``none`` loads the fp32 version itself. Every file of the variant is verified by the registry's load.

    Raises:
        ModelNotFoundError: ``name`` has no such (or no current) version.
        VariantNotFoundError: The variant is not published.
        ValueError: The variant was made from another graph than the source version's (its recorded hash differs),
            or its manifest does not describe a variant of ``scheme``.
    """
    check_scheme(scheme)
    source = registry.load(name, version, verify=False)
    if scheme == "none":
        return registry.load(name, source.manifest.version)
    vname = variant_version(source.manifest.version, scheme)
    if vname not in registry.versions(name):
        raise VariantNotFoundError(
            f"model {name}@{source.manifest.version} has no {scheme} variant under {registry.root}: run "
            f"`thaw models quantize --scheme {scheme} {name}` (or set THAW_MODELS__QUANTIZE=none)")
    mv = registry.load(name, vname)
    info = variant_info(mv)
    if not info or info.get("scheme") != scheme or info.get("of_version") != source.manifest.version:
        raise ValueError(f"model {name}/{vname} is not a {scheme} variant of version {source.manifest.version}")
    if info.get("of_sha256") != source.manifest.sha256:
        raise ValueError(f"model {name}/{vname} was quantised from another graph than {name}@"
                         f"{source.manifest.version} now holds (source sha256 differs): quantise it again")
    return mv


def quantize_version(
    registry: ModelRegistry,
    name: str,
    version: str | None = None,
    scheme: str = "int8",
    *,
    op_types: Sequence[str] = DEFAULT_OP_TYPES,
    per_channel: bool = True,
    reduce_range: bool = True,
    force: bool = False,
) -> dict[str, Any]:
    """Publish ``scheme``'s variant of ``name``'s ``version`` (default: current) unless it exists.

    The variant's directory holds the quantised ``model.onnx`` and copies of the source's side files
    (``tokenizer.json``, ...), so it loads like any version. ``force`` replaces an existing variant (it is removed
    first: a worker that has it open keeps its session; a worker loading it at that moment fails and retries).

    Returns:
        ``{"name", "version", "variant", "status": "published" | "exists", "seconds", "bytes", "source_bytes"}``.

    Raises:
        ModelNotFoundError: No such version.
        ValueError: ``scheme`` is ``none`` or unknown.
    """
    if check_scheme(scheme) == "none":
        raise ValueError("scheme 'none' has no variant to write")
    from onnxruntime.quantization import QuantType, quantize_dynamic

    t0 = time.perf_counter()
    src = registry.load(name, version)
    vname = variant_version(src.manifest.version, scheme)
    out: dict[str, Any] = {"name": name, "version": src.manifest.version, "variant": vname,
                           "source_bytes": src.onnx_path.stat().st_size}
    if vname in registry.versions(name):
        if not force:
            return {**out, "status": "exists", "seconds": round(time.perf_counter() - t0, 2),
                    "bytes": (registry.root / name / vname / "model.onnx").stat().st_size}
        shutil.rmtree(registry.root / name / vname)
    options = {"method": "onnxruntime.quantization.quantize_dynamic", "weight_type": "QInt8",
               "op_types": list(op_types), "per_channel": per_channel, "reduce_range": reduce_range}

    def write(tmp: Path) -> None:
        for f in _side_files(src):
                dst = tmp / f
                dst.parent.mkdir(parents=True, exist_ok=True)
                dst.write_bytes(src.read_bytes(f))  # the verified bytes of each side file
        graph = tmp / ".source.onnx"
        graph.write_bytes(src.read_bytes("model.onnx"))
        try:
            quantize_dynamic(graph, tmp / "model.onnx", weight_type=QuantType.QInt8, per_channel=per_channel,
                             reduce_range=reduce_range, op_types_to_quantize=list(op_types))
        finally:
            graph.unlink(missing_ok=True)
        for leftover in tmp.glob("*-opt.onnx"):  # the quantiser's pre-processing output, if any
            leftover.unlink()

    m = src.manifest
    extra = {**m.extra, "variant": {"scheme": scheme, "of_version": m.version, "of_sha256": m.sha256, **options}}
    mv = registry.publish(
        name, vname, write,
        inputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in m.inputs],
        outputs=[TensorSpec(t.name, t.dtype, list(t.shape)) for t in m.outputs],
        dim=m.dim, opset=m.opset, extra=extra, make_current=False,
    )
    return {**out, "status": "published", "seconds": round(time.perf_counter() - t0, 2),
            "bytes": mv.onnx_path.stat().st_size}


def _side_files(mv: ModelVersion) -> list[str]:
    """Every file of the version but its graph and manifest: the recorded ones, or (a manifest from before per-file
    hashes) the directory's files."""
    if mv.manifest.files is not None:
        return sorted(f for f in mv.manifest.files if f != "model.onnx")
    return sorted(p.relative_to(mv.path).as_posix() for p in mv.path.rglob("*")
                  if p.is_file() and p.name not in ("model.onnx", "manifest.json"))


def quantize_all(registry: ModelRegistry, scheme: str = "int8", names: Sequence[str] = QUANTIZABLE,
                 force: bool = False) -> list[dict[str, Any]]:
    """:func:`quantize_version` of the current version of every published model in ``names``; a model with no
    current version is reported as ``{"name", "status": "not published"}``."""
    out: list[dict[str, Any]] = []
    for name in names:
        if registry.current_version(name) is None:
            out.append({"name": name, "status": "not published"})
            continue
        out.append(quantize_version(registry, name, scheme=scheme, force=force))
    return out
