"""Assembled ranking models: DSSM twin tower (the CF space), CB2CF (content → CF space), DropoutNet baseline,
LightGCN (user vectors from behaviour, new-user fold-in), DeepFM + MMoE ranker with group-wise gating."""

from ranking.models.cb2cf import CB2CF, OBJECTIVES, CB2CFConfig
from ranking.models.deepfm_mmoe import DeepFMMMoE, DeepFMMMoEConfig, RankData, RankSchema
from ranking.models.dropoutnet import DropoutNet, DropoutNetConfig
from ranking.models.dssm import DSSM, DSSMConfig
from ranking.models.lightgcn import LightGCN, LightGCNConfig, fold_in

__all__ = [
    "CB2CF",
    "DSSM",
    "OBJECTIVES",
    "CB2CFConfig",
    "DSSMConfig",
    "DeepFMMMoE",
    "DeepFMMMoEConfig",
    "DropoutNet",
    "DropoutNetConfig",
    "LightGCN",
    "LightGCNConfig",
    "RankData",
    "RankSchema",
    "fold_in",
]
