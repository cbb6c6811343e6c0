"""Reusable torch blocks of the ranking models (MLP, content-field projection, SENet field gate, FM, MMoE experts
and gates)."""

from ranking.modules.fields import FieldProjection, FieldSpec
from ranking.modules.fm import FactorizationMachine
from ranking.modules.mlp import MLP
from ranking.modules.mmoe import Experts, GroupGate, SoftmaxGate, mix_experts
from ranking.modules.senet import SENetLayer

__all__ = [
    "MLP",
    "Experts",
    "FactorizationMachine",
    "FieldProjection",
    "FieldSpec",
    "GroupGate",
    "SENetLayer",
    "SoftmaxGate",
    "mix_experts",
]
