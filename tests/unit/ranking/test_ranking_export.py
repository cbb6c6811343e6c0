"""Export contract: every served ranking model exports to ONNX via the model registry, its manifest
describes it, and ONNX Runtime reproduces the torch outputs."""

import json

import numpy as np
import onnxruntime as ort
import pytest
import torch

from encoders.registry import ModelRegistry
from ranking.models.cb2cf import CB2CF, CB2CFConfig
from ranking.models.dssm import DSSM, DSSMConfig, categorical_user_features
from ranking.modules import FieldSpec
from ranking.training.export import CB2CF_NAME, DSSM_ITEM, DSSM_USER, CB2CFProjector, export_cb2cf, export_dssm

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out


def _session(version):
    return ort.InferenceSession(str(version.onnx_path), providers=["CPUExecutionProvider"])


def _check_manifest(version, name, inputs, dim):
    m = version.manifest
    assert m.name == name and m.dim == dim and m.opset >= 14 and len(m.sha256) == 64
    assert [t.name for t in m.inputs] == inputs


@pytest.mark.parametrize("with_features", [True, False])
def test_dssm_towers_match_torch(tmp_path, with_features):
    torch.manual_seed(0)
    n_users, n_items = 30, 40
    feats = (
        categorical_user_features({"gender": np.array(["F", "M"] * 15), "age": np.arange(30)}, max_cardinality=5)
        if with_features
        else None
    )
    model = DSSM(n_users, n_items, DSSMConfig(dim=16, id_dim=8, hidden=(12,)), feats).eval()
    model.seen_users[5] = False
    reg = ModelRegistry(tmp_path)
    uv, iv = export_dssm(model, reg, "1", [f"u{i}" for i in range(n_users)], [f"i{i}" for i in range(n_items)])
    assert reg.current_version(DSSM_USER) == "1" and reg.current_version(DSSM_ITEM) == "1"
    user_inputs = ["user_index", "user_features"] if with_features else ["user_index"]
    _check_manifest(reg.load(DSSM_USER), DSSM_USER, user_inputs, 16)
    _check_manifest(reg.load(DSSM_ITEM), DSSM_ITEM, ["item_index"], 16)
    assert json.loads((iv.path / "ids.json").read_text())["item_ids"][3] == "i3"

    users = np.array([0, 5, 29, -1, 7, 3, 1000], dtype=np.int64)
    with torch.no_grad():
        ref_u = model.users(torch.from_numpy(users)).numpy()
    feeds = {"user_index": users}
    if with_features:
        feeds["user_features"] = model.user_feature_table[torch.from_numpy(np.clip(users, 0, n_users))].numpy()
        feeds["user_features"][users < 0] = 0
        feeds["user_features"][users >= n_users] = 0
    (got_u,) = _session(uv).run(["user_vector"], feeds)
    np.testing.assert_allclose(got_u, ref_u, atol=1e-5)

    items = np.arange(n_items, dtype=np.int64)
    (got_i,) = _session(iv).run(["item_vector"], {"item_index": items})
    np.testing.assert_allclose(got_i, model.item_vectors(items), atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(got_i, axis=1), 1.0, atol=1e-5)


@pytest.mark.parametrize("fields", [[("doc", 384)], [("doc", 384), ("audio", 32), ("image_text", 64)]])
def test_cb2cf_matches_torch_with_missing_fields(tmp_path, fields):
    torch.manual_seed(1)
    specs = [FieldSpec(n, d) for n, d in fields]
    model = CB2CF(specs, CB2CFConfig(out_dim=24, field_dim=32, hidden=(48,))).eval()
    reg = ModelRegistry(tmp_path)
    version = export_cb2cf(model, reg, "7")
    _check_manifest(reg.load(CB2CF_NAME), CB2CF_NAME, [s.name for s in specs] + ["present"], 24)
    assert [f["name"] for f in version.manifest.extra["fields"]] == [s.name for s in specs]

    b = 9
    rng = np.random.default_rng(0)
    xs = [rng.standard_normal((b, s.dim)).astype(np.float32) for s in specs]
    present = (rng.random((b, len(specs))) > 0.3).astype(np.float32)
    present[0] = 0.0  # an item with no content at all
    with torch.no_grad():
        ref = model([torch.from_numpy(x) for x in xs], torch.from_numpy(present)).numpy()
    feeds = {s.name: x for s, x in zip(specs, xs, strict=True)} | {"present": present}
    (got,) = _session(version).run(["cf_vector"], feeds)
    np.testing.assert_allclose(got, ref, atol=1e-5)

    proj = CB2CFProjector(reg.load(CB2CF_NAME))
    np.testing.assert_allclose(proj.project({s.name: x for s, x in zip(specs, xs, strict=True)}, present), ref,
                               atol=1e-5)
    # a modality absent from the batch altogether equals present = 0 for it
    only_first = proj.project({specs[0].name: xs[0]})
    flags = np.zeros((b, len(specs)), np.float32)
    flags[:, 0] = 1.0
    with torch.no_grad():
        ref_first = model([torch.from_numpy(x) for x in xs], torch.from_numpy(flags)).numpy()
    np.testing.assert_allclose(only_first, ref_first, atol=1e-5)
    with pytest.raises(ValueError):
        proj.project({specs[0].name: xs[0][:, :5]})


def test_lightgcn_users_export_runs_as_a_user_tower(tmp_path):
    """LightGCN user vectors mapped into a DSSM space serve like the DSSM user tower (ids in, mapped vectors out)."""
    from encoders.registry import ModelRegistry
    from ranking.models.lightgcn import apply_linear_map, fit_linear_map
    from ranking.online.projector import DSSMTower
    from ranking.training.export import LIGHTGCN_USER, export_lightgcn_users

    rng = np.random.default_rng(0)
    lg = rng.normal(size=(6, 4)).astype(np.float32)
    target = rng.normal(size=(6, 3)).astype(np.float32)
    w = fit_linear_map(lg, target)
    reg = ModelRegistry(tmp_path)
    export_lightgcn_users(reg, "1", lg, w, [f"u{i}" for i in range(6)])
    tower = DSSMTower(reg.load(LIGHTGCN_USER, "1"))
    ids, vecs = tower.vectors(["u4", "nobody", "u1"])
    assert ids == ["u4", "u1"] and tower.dim == 3
    np.testing.assert_allclose(vecs, apply_linear_map(lg[[4, 1]], w), atol=1e-5)
