"""FM, experts and gates (ranking/modules/fm.py, mmoe.py) and the DeepFM + MMoE model's group routing."""

import numpy as np
import pytest
import torch

from ranking.models.deepfm_mmoe import DeepFMMMoE, DeepFMMMoEConfig, RankSchema
from ranking.modules import Experts, FactorizationMachine, FieldSpec, GroupGate, SoftmaxGate, mix_experts

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out


def test_fm_matches_hand_computed_pairwise_sum():
    # three fields, width 2: v1=(1,2), v2=(3,-1), v3=(0,4)
    # <v1,v2> = 3-2 = 1, <v1,v3> = 0+8 = 8, <v2,v3> = 0-4 = -4  -> 5
    x = torch.tensor([[[1.0, 2.0], [3.0, -1.0], [0.0, 4.0]]])
    out = FactorizationMachine()(x)
    assert out.shape == (1, 1)
    assert out.item() == pytest.approx(5.0)
    # per-dimension form: dim0 pairs 1*3 + 1*0 + 3*0 = 3; dim1 pairs 2*-1 + 2*4 + -1*4 = 2
    np.testing.assert_allclose(FactorizationMachine(reduce_sum=False)(x).numpy(), [[3.0, 2.0]])


def test_fm_equals_explicit_double_loop():
    torch.manual_seed(0)
    x = torch.randn(5, 6, 4)
    ref = torch.zeros(5)
    for i in range(6):
        for j in range(i + 1, 6):
            ref += (x[:, i] * x[:, j]).sum(-1)
    np.testing.assert_allclose(FactorizationMachine()(x).squeeze(1).numpy(), ref.numpy(), rtol=1e-5, atol=1e-5)


def test_experts_shape_and_mix():
    torch.manual_seed(0)
    ex = Experts(8, 3, (16, 5))
    out = ex(torch.randn(4, 8))
    assert out.shape == (4, 3, 5)
    gate = torch.tensor([[1.0, 0.0, 0.0]] * 4)
    np.testing.assert_allclose(mix_experts(out, gate).detach().numpy(), out[:, 0].detach().numpy())


@pytest.mark.parametrize("gate", [SoftmaxGate(8, 4), GroupGate(8, 4, 3)])
def test_gates_sum_to_one(gate):
    torch.manual_seed(0)
    g = gate(torch.randn(10, 8), torch.randint(0, 3, (10,)))
    assert g.shape == (10, 4)
    assert bool((g >= 0).all())
    np.testing.assert_allclose(g.sum(dim=1).detach().numpy(), np.ones(10), rtol=1e-6)


def test_group_gate_routes_by_group():
    torch.manual_seed(0)
    gate = GroupGate(8, 3, 2)
    x = torch.randn(6, 8)
    g0 = torch.zeros(6, dtype=torch.long)
    g1 = torch.ones(6, dtype=torch.long)
    with torch.no_grad():
        # zero-initialised group parts: both groups start at the shared gate
        np.testing.assert_allclose(gate(x, g0).numpy(), gate(x, g1).numpy())
        gate.group_bias[1] = torch.tensor([10.0, 0.0, 0.0])  # group 1 routes to expert 0
        w0, w1 = gate(x, g0), gate(x, g1)
        mixed = gate(x, torch.tensor([0, 1, 0, 1, 0, 1]))
    assert bool((w1[:, 0] > 0.99).all())
    assert not bool((w0[:, 0] > 0.99).all())
    np.testing.assert_allclose(mixed[0::2].numpy(), w0[0::2].numpy())
    np.testing.assert_allclose(mixed[1::2].numpy(), w1[1::2].numpy())


SCHEMA = RankSchema(sparse=(("user", 10), ("item", 12), ("gender", 3)), n_categories=5,
                    dense=(FieldSpec("dev", 5), FieldSpec("stats", 2)), n_groups=4, tasks=("click", "like"))


def _inputs(b=16):
    g = torch.Generator().manual_seed(1)
    sparse = torch.stack([torch.randint(0, c, (b,), generator=g) for _, c in SCHEMA.sparse], dim=1)
    cats = (torch.rand(b, 5, generator=g) < 0.4).float()
    dense = torch.randn(b, 7, generator=g)
    return sparse, cats, dense


@pytest.mark.parametrize("group_gating", [True, False])
def test_model_group_dependence(group_gating):
    torch.manual_seed(0)
    model = DeepFMMMoE(SCHEMA, DeepFMMMoEConfig(group_gating=group_gating, dropout=0.0)).eval()
    with torch.no_grad():
        for gate in model.gate_modules:
            if isinstance(gate, GroupGate):
                gate.group_weight.normal_(std=0.5)
        sparse, cats, dense = _inputs()
        a = model(sparse, cats, dense, torch.zeros(16, dtype=torch.long))
        b = model(sparse, cats, dense, torch.full((16,), 3, dtype=torch.long))
        gates = model.gates(sparse, cats, dense, torch.zeros(16, dtype=torch.long))
    assert a.shape == (16, 2)
    assert gates.shape == (2, 16, 4)
    np.testing.assert_allclose(gates.sum(-1).numpy(), np.ones((2, 16)), rtol=1e-6)
    if group_gating:
        assert float((a - b).abs().max()) > 1e-4
    else:
        np.testing.assert_allclose(a.numpy(), b.numpy())
