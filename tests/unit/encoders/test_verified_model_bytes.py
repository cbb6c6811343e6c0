"""The encoders and the CF space are built from the registry's verified bytes, never from a second open of a path:
a file swapped on disk after its version was verified is not what gets served (the bytes kept at load are), and
without kept bytes the swapped file is refused (``ModelIntegrityError``), never run. No services, no torch."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from encoders.registry import ModelIntegrityError, ModelRegistry, TensorSpec
from encoders.serving import OnnxModel
from encoders.text import DIM, MODEL_NAME, TextEncoder
from ranking.online.sparse import SparseVectorizer
from streams.models import GROUP_PRIORS, group_priors


def _text_graph(c: float) -> bytes:
    """A stand-in for the exported MiniLM: ``embedding = sum(input_ids * attention_mask) * c`` in all 384 columns
    (so both the tokenizer's ids and the graph's constant show in the output)."""
    ids = helper.make_tensor_value_info("input_ids", TensorProto.INT64, ["batch", "tokens"])
    mask = helper.make_tensor_value_info("attention_mask", TensorProto.INT64, ["batch", "tokens"])
    out = helper.make_tensor_value_info("embedding", TensorProto.FLOAT, ["batch", DIM])
    inits = [numpy_helper.from_array(np.array([1], np.int64), "axes"),
             numpy_helper.from_array(np.full((1, DIM), c, np.float32), "w")]
    nodes = [helper.make_node("Mul", ["input_ids", "attention_mask"], ["masked"]),
             helper.make_node("ReduceSum", ["masked", "axes"], ["summed"], keepdims=1),
             helper.make_node("Cast", ["summed"], ["summed_f"], to=TensorProto.FLOAT),
             helper.make_node("MatMul", ["summed_f", "w"], ["embedding"])]
    graph = helper.make_graph(nodes, "text", [ids, mask], [out], initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model.SerializeToString()


def _tokenizer(vocab: dict[str, int]) -> str:
    from tokenizers import Tokenizer, models, pre_tokenizers

    tok = Tokenizer(models.WordLevel({"[UNK]": 0, **vocab}, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    return tok.to_str()


HELLO = {"hello": 1, "world": 2}  # "hello world" -> 1 + 2 = 3
OTHER = {"hello": 7, "world": 8}  # the swap's ids: 15


def _publish_text(root: Path) -> ModelRegistry:
    reg = ModelRegistry(root)

    def write(d: Path) -> None:
        (d / "model.onnx").write_bytes(_text_graph(1.0))
        (d / "tokenizer.json").write_text(_tokenizer(HELLO))

    reg.publish(MODEL_NAME, "1", write, inputs=[TensorSpec("input_ids", "int64", ["batch", "tokens"]),
                                                 TensorSpec("attention_mask", "int64", ["batch", "tokens"])],
                outputs=[TensorSpec("embedding", "float32", ["batch", DIM])], dim=DIM, opset=17)
    return reg


def _first(enc: TextEncoder) -> float:
    (row,) = enc.encode(["hello world"])
    assert np.all(row == row[0])
    return float(row[0])


@pytest.mark.parametrize("swapped", ["model.onnx", "tokenizer.json"])
def test_the_text_encoder_serves_the_verified_bytes_not_a_file_swapped_after(tmp_path, swapped):
    reg = _publish_text(tmp_path)
    assert _first(TextEncoder(reg.load(MODEL_NAME), threads=1)) == 3.0
    kept = reg.load(MODEL_NAME, keep_bytes=True)
    d = tmp_path / MODEL_NAME / "1"
    if swapped == "model.onnx":
        (d / swapped).write_bytes(_text_graph(5.0))  # would give 15
    else:
        (d / swapped).write_text(_tokenizer(OTHER))  # would give 15
    assert _first(TextEncoder(kept, threads=1)) == 3.0  # the bytes checked at load
    with pytest.raises(ModelIntegrityError) as info:  # read now: checked, and refused
        TextEncoder(reg.load(MODEL_NAME, verify=False), threads=1)
    assert info.value.reason == "hash_mismatch" and info.value.file == swapped


def test_an_onnx_model_runs_the_verified_graph(tmp_path):
    """The runner the image-text and audio encoders are built on (:class:`encoders.serving.OnnxModel`)."""
    reg = _publish_text(tmp_path)
    kept = reg.load(MODEL_NAME, keep_bytes=True)
    (tmp_path / MODEL_NAME / "1" / "model.onnx").write_bytes(_text_graph(5.0))
    feed = {"input_ids": np.array([[1, 2]], np.int64), "attention_mask": np.ones((1, 2), np.int64)}
    (emb,) = OnnxModel(kept, threads=1, prefer_gpu=False).run(feed)
    assert float(emb[0, 0]) == 3.0
    with pytest.raises(ModelIntegrityError, match="model.onnx"):
        OnnxModel(reg.load(MODEL_NAME, verify=False), threads=1, prefer_gpu=False)


def _publish_user_tower(reg: ModelRegistry, version: str, priors: dict[str, list[float]] | None) -> None:
    def write(d: Path) -> None:
        (d / "model.onnx").write_bytes(_text_graph(1.0))
        if priors is not None:
            (d / GROUP_PRIORS).write_text(json.dumps(priors))

    reg.publish("dssm-user", version, write, inputs=[], outputs=[], dim=2, opset=17)


def test_group_priors_are_read_checked_and_a_corrupted_file_is_refused(tmp_path):
    reg = ModelRegistry(tmp_path)
    _publish_user_tower(reg, "v1", {"gender=f": [1.0, 0.0], "*": [0.0, 1.0]})
    got = group_priors(reg, "v1")
    assert set(got) == {"gender=f", "*"} and got["gender=f"].dtype == np.float32
    np.testing.assert_array_equal(got["*"], [0.0, 1.0])
    # a writer swaps the priors (every new user of every group pulled towards one vector): refused, not served
    (tmp_path / "dssm-user" / "v1" / GROUP_PRIORS).write_text(json.dumps({"*": [1.0, 0.0], "gender=f": [1.0, 0.0]}))
    with pytest.raises(ModelIntegrityError) as info:
        group_priors(reg, "v1")
    assert info.value.reason == "hash_mismatch" and info.value.file == GROUP_PRIORS


def test_group_priors_are_empty_without_a_tower_or_a_priors_file(tmp_path):
    reg = ModelRegistry(tmp_path)
    assert group_priors(reg, "v1") == {}
    _publish_user_tower(reg, "v1", None)
    assert group_priors(reg, "v1") == {}
    # a priors file dropped beside a version whose manifest does not record it is never served
    (tmp_path / "dssm-user" / "v1" / GROUP_PRIORS).write_text(json.dumps({"*": [1.0, 0.0]}))
    assert group_priors(reg, "v1") == {}


def test_a_sparse_vectorizer_from_its_saved_text_equals_the_fitted_one(tmp_path):
    vec = SparseVectorizer.fit([["piano", "jazz"], ["jazz", "folk"], ["folk"]], weighting="bm25")
    f = tmp_path / "words.json"
    vec.save(f)
    got = SparseVectorizer.from_text(f.read_text(encoding="utf-8"))
    assert got.vocab == vec.vocab and got.weighting == vec.weighting and got.whole_tags == vec.whole_tags
    np.testing.assert_array_equal(got.df, vec.df)
    assert (got.n_docs, got.avg_len, got.k1, got.b) == (vec.n_docs, vec.avg_len, vec.k1, vec.b)
    assert got.vectorize("jazz piano", ["folk"]) == vec.vectorize("jazz piano", ["folk"])
    with pytest.raises(ValueError, match="words.json: not a sparse vectorizer"):
        SparseVectorizer.from_text(json.dumps({"format": "other"}), "words.json")
    with pytest.raises(ValueError, match="not a sparse vectorizer"):
        SparseVectorizer.from_text("[1, 2]")


def test_the_cf_space_s_vectorizers_come_from_checked_bytes(tmp_path):
    from streams.models import _vectorizer

    reg = ModelRegistry(tmp_path)
    vec = SparseVectorizer.fit([["piano", "jazz"], ["folk"]], weighting="tfidf")

    def write(d: Path) -> None:
        (d / "model.onnx").write_bytes(_text_graph(1.0))
        vec.save(d / "words.json")

    reg.publish("cb2cf", "v1", write, inputs=[], outputs=[], dim=2, opset=17)
    v = reg.load("cb2cf", "v1")  # verified
    assert _vectorizer(v, "words.json").vocab == vec.vocab
    other = SparseVectorizer.fit([["metal"], ["metal", "punk"]], weighting="tfidf")
    other.save(tmp_path / "cb2cf" / "v1" / "words.json")  # swapped after the verification
    with pytest.raises(ModelIntegrityError, match="words.json"):
        _vectorizer(v, "words.json")
