"""Reusable torch blocks of the ranking models (MLP, content-field projection, SENet field gate)."""

from ranking.modules.fields import FieldProjection, FieldSpec
from ranking.modules.mlp import MLP
from ranking.modules.senet import SENetLayer

__all__ = ["MLP", "FieldProjection", "FieldSpec", "SENetLayer"]
