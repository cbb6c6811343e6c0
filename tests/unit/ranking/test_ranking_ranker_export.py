"""Export contract of the DeepFM + MMoE ranker: ONNX Runtime reproduces the torch probabilities."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from encoders.registry import ModelRegistry
from ranking.models.deepfm_mmoe import DeepFMMMoE, DeepFMMMoEConfig, RankSchema
from ranking.modules import FieldSpec
from ranking.online.ranker import RANKER_NAME
from ranking.training.rank_export import export_ranker

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out


@pytest.mark.parametrize("group_gating", [True, False])
def test_ranker_onnx_matches_torch(tmp_path, group_gating):
    torch.manual_seed(0)
    schema = RankSchema(sparse=(("user", 20), ("item", 30), ("gender", 3), ("status", 3)), n_categories=6,
                        dense=(FieldSpec("dev", 6), FieldSpec("stats", 3)), n_groups=6, tasks=("click", "like"))
    model = DeepFMMMoE(schema, DeepFMMMoEConfig(group_gating=group_gating)).eval()
    with torch.no_grad():
        for gate in model.gate_modules:
            if hasattr(gate, "group_weight"):
                gate.group_weight.normal_(std=0.3)
                gate.group_bias.normal_(std=0.3)
    reg = ModelRegistry(tmp_path)
    version = export_ranker(model, reg, "1", extra={"dataset": "toy"}, vocab={"groups": ["a"] * 6})
    assert reg.current_version(RANKER_NAME) == "1"
    m = reg.load(RANKER_NAME).manifest
    assert [t.name for t in m.inputs] == ["sparse", "categories", "dense", "group"]
    assert m.extra["tasks"] == ["click", "like"] and m.extra["group_gating"] is group_gating
    assert json.loads((version.path / "schema.json").read_text())["n_groups"] == 6

    rng = np.random.default_rng(0)
    n = 37
    sparse = np.stack([rng.integers(0, c, n) for _, c in schema.sparse], axis=1).astype(np.int64)
    cats = (rng.random((n, 6)) < 0.3).astype(np.float32)
    dense = rng.normal(size=(n, 9)).astype(np.float32)
    group = rng.integers(0, 6, n).astype(np.int64)
    with torch.no_grad():
        ref = torch.sigmoid(model(torch.from_numpy(sparse), torch.from_numpy(cats), torch.from_numpy(dense),
                                  torch.from_numpy(group))).numpy()
    sess = ort.InferenceSession(str(version.onnx_path), providers=["CPUExecutionProvider"])
    (got,) = sess.run(["scores"], {"sparse": sparse, "categories": cats, "dense": dense, "group": group})
    assert got.shape == (n, 2)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
