"""int8 variants of published models (encoders.quantize): published beside the fp32 version with their own hashes,
refused when they do not belong to the source graph, close to the fp32 outputs, and served only when asked."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from encoders.quantize import (
    VariantNotFoundError,
    base_version,
    check_scheme,
    check_setting,
    load_variant,
    quantize_all,
    quantize_version,
    scheme_for,
    variant_info,
    variant_version,
)
from encoders.registry import ModelIntegrityError, ModelNotFoundError, ModelRegistry, TensorSpec, sha256_file
from encoders.serving import OnnxModel

NAME = "tiny-mlp"


def _write_mlp(seed: int):
    """A two-layer MLP (MatMul + Gemm), x: B x 64 -> y: B x 32, as an ONNX writer for ModelRegistry.publish."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w1 = rng.normal(0, 0.2, (64, 128)).astype(np.float32)
    w2 = rng.normal(0, 0.2, (128, 32)).astype(np.float32)
    b2 = rng.normal(0, 0.1, (32,)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w1"], ["h"]), helper.make_node("Relu", ["h"], ["r"]),
         helper.make_node("Gemm", ["r", "w2", "b2"], ["y"])],
        "mlp",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 32])],
        [numpy_helper.from_array(w1, "w1"), numpy_helper.from_array(w2, "w2"), numpy_helper.from_array(b2, "b2")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8

    def write(tmp: Path) -> None:
        onnx.save(model, tmp / "model.onnx")
        (tmp / "vocab.txt").write_text("side file\n")

    return write


def _publish(reg: ModelRegistry, version: str = "1", seed: int = 0):
    return reg.publish(NAME, version, _write_mlp(seed), inputs=[TensorSpec("x", "float32", ["batch", 64])],
                       outputs=[TensorSpec("y", "float32", ["batch", 32])], dim=32, opset=17,
                       extra={"run_id": "r1"})


@pytest.fixture()
def reg(tmp_path):
    r = ModelRegistry(tmp_path / "models")
    _publish(r)
    return r


def test_variant_is_its_own_published_version(reg):
    out = quantize_version(reg, NAME)
    assert out["status"] == "published" and out["variant"] == "1-int8" and out["version"] == "1"
    assert reg.versions(NAME) == ["1", "1-int8"] and reg.current_version(NAME) == "1"  # CURRENT stays fp32
    mv = reg.load(NAME, "1-int8")  # the registry verifies every file of it
    src = reg.load(NAME, "1")
    assert mv.manifest.files is not None and set(mv.manifest.files) == {"model.onnx", "vocab.txt"}
    assert mv.manifest.sha256 == sha256_file(mv.onnx_path) != src.manifest.sha256
    info = variant_info(mv)
    assert info is not None and info["scheme"] == "int8" and info["of_version"] == "1"
    assert info["of_sha256"] == src.manifest.sha256 and info["per_channel"] and info["reduce_range"]
    assert mv.manifest.extra["run_id"] == "r1" and base_version(mv) == "1" and base_version(src) == "1"
    assert variant_info(src) is None
    assert mv.read_text("vocab.txt") == "side file\n"
    assert quantize_version(reg, NAME)["status"] == "exists"


def test_int8_outputs_track_fp32(reg):
    quantize_version(reg, NAME)
    x = np.random.default_rng(1).normal(size=(50, 64)).astype(np.float32)
    (ref,) = OnnxModel(load_variant(reg, NAME, "none"), threads=1).run({"x": x})
    q = OnnxModel(load_variant(reg, NAME, "int8"), threads=1)
    (got,) = q.run({"x": x})
    assert q.model_version == f"{NAME}@1-int8"
    cos = (ref * got).sum(1) / (np.linalg.norm(ref, axis=1) * np.linalg.norm(got, axis=1))
    assert cos.min() > 0.99 and not np.allclose(got, ref, atol=1e-6)  # close, and really another graph
    ops = {n.op_type for n in __import__("onnx").load(str(q.version.onnx_path)).graph.node}
    assert "DynamicQuantizeLinear" in ops or "MatMulInteger" in ops


def test_missing_variant_is_an_error_not_fp32(reg):
    with pytest.raises(VariantNotFoundError, match="thaw models quantize"):
        load_variant(reg, NAME, "int8")
    assert isinstance(VariantNotFoundError("x"), ModelNotFoundError)
    with pytest.raises(ModelNotFoundError):
        load_variant(reg, "no-such-model", "int8")


def test_variant_of_another_graph_is_refused(reg):
    quantize_version(reg, NAME)
    mf = reg.root / NAME / "1-int8" / "manifest.json"
    d = json.loads(mf.read_text())
    d["extra"]["variant"]["of_sha256"] = "0" * 64  # quantised from a graph this version no longer holds
    mf.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="another graph"):
        load_variant(reg, NAME, "int8")
    d["extra"].pop("variant")  # a version named like a variant that is none
    mf.write_text(json.dumps(d))
    with pytest.raises(ValueError, match="is not a int8 variant"):
        load_variant(reg, NAME, "int8")


def test_tampered_variant_graph_fails_the_registry_check(reg):
    quantize_version(reg, NAME)
    g = reg.root / NAME / "1-int8" / "model.onnx"
    g.write_bytes(g.read_bytes() + b"\0")
    with pytest.raises(ModelIntegrityError):
        load_variant(reg, NAME, "int8")


def test_force_rewrites_and_quantize_all_reports_unpublished(reg):
    quantize_version(reg, NAME)
    assert quantize_version(reg, NAME, force=True)["status"] == "published"
    res = quantize_all(reg, names=(NAME, "not-there"))
    assert [r["status"] for r in res] == ["exists", "not published"]


def test_settings_choose_which_models_serve_int8():
    assert scheme_for("none", "minilm-l6") == "none"
    assert scheme_for("int8", "minilm-l6") == "int8" and scheme_for("int8", "flava-image") == "none"
    assert {n: scheme_for("int8-all", n) for n in ("minilm-l6", "flava-image", "flava-text", "flava-fusion",
                                                   "audio-mae")} == {
        "minilm-l6": "int8", "flava-image": "int8", "flava-text": "int8", "flava-fusion": "none", "audio-mae": "none"}
    with pytest.raises(ValueError, match="unknown THAW_MODELS__QUANTIZE"):
        check_setting("int4")
    from infra.settings import ModelSettings

    assert ModelSettings().quantize == "none" and ModelSettings(quantize="int8-all").quantize == "int8-all"


def test_schemes():
    assert variant_version("7", "int8") == "7-int8" and variant_version("7", "none") == "7"
    assert check_scheme("none") == "none"
    with pytest.raises(ValueError, match="unknown quantisation scheme"):
        check_scheme("fp16")
    with pytest.raises(ValueError):
        quantize_version(ModelRegistry(Path("/nonexistent")), NAME, scheme="none")


@pytest.mark.train  # exports MiniLM with torch: `make test-fast` leaves it out
def test_featurizer_serves_the_int8_minilm_only_when_asked(tmp_path, monkeypatch):
    from encoders.featurizer import ContentFeaturizer, ContentInput
    from encoders.text import MODEL_NAME
    from encoders.training.export_text import export_minilm

    reg = ModelRegistry(tmp_path / "models")
    export_minilm(reg)
    with pytest.raises(VariantNotFoundError):
        ContentFeaturizer.from_registry(reg, threads=1, quantize="int8")
    quantize_version(reg, MODEL_NAME)
    texts = ["a sad piano ballad | piano, ambient", "melancholic piano song", "football match results", ""]
    fp = ContentFeaturizer.from_registry(reg, threads=1, quantize="none")
    q = ContentFeaturizer.from_registry(reg, threads=1, quantize="int8")
    assert fp.model_versions["text"] == f"{MODEL_NAME}@1" and q.model_versions["text"] == f"{MODEL_NAME}@1-int8"
    a = fp.featurize([ContentInput(t) for t in texts])
    b = q.featurize([ContentInput(t) for t in texts])
    assert b.model_versions["text"] == f"{MODEL_NAME}@1-int8"
    cos = (a.values["text"] * b.values["text"]).sum(1)
    assert cos.min() > 0.97 and not np.allclose(a.values["text"], b.values["text"], atol=1e-4)
    e = b.values["text"]
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2  # still a sentence encoder
    monkeypatch.setenv("THAW_MODELS__QUANTIZE", "int8")  # quantize=None: the configured setting
    assert ContentFeaturizer.from_registry(reg, threads=1).model_versions["text"] == f"{MODEL_NAME}@1-int8"
    monkeypatch.setenv("THAW_MODELS__QUANTIZE", "none")
    assert ContentFeaturizer.from_registry(reg, threads=1).model_versions["text"] == f"{MODEL_NAME}@1"


def test_thaw_models_quantize_command(reg):
    import os
    import subprocess
    import sys

    env = {**os.environ, "THAW_MODELS__DIR": str(reg.root)}
    cmd = [sys.executable, "-m", "thaw", "models", "quantize", NAME, "not-there"]
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert f"{NAME}@1-int8: published" in out and "not-there: not published, skipped" in out
    again = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120, check=True).stdout
    assert f"{NAME}@1-int8: exists" in again
    assert load_variant(reg, NAME, "int8").manifest.version == "1-int8"
