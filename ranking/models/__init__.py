"""Assembled ranking models: DSSM twin tower (the CF space), CB2CF (content → CF space), DropoutNet baseline,
LightGCN (user vectors from behaviour, new-user fold-in), DeepFM + MMoE ranker with group-wise gating."""

from ranking.models.cb2cf import CB2CF, OBJECTIVES, CB2CFConfig, train_cb2cf
from ranking.models.deepfm_mmoe import DeepFMMMoE, DeepFMMMoEConfig, RankData, RankSchema, train_deepfm_mmoe
from ranking.models.dropoutnet import DropoutNet, DropoutNetConfig, train_dropoutnet
from ranking.models.dssm import DSSM, DSSMConfig, train_dssm
from ranking.models.lightgcn import LightGCN, LightGCNConfig, fold_in, train_lightgcn

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
    "train_cb2cf",
    "train_deepfm_mmoe",
    "train_dropoutnet",
    "train_dssm",
    "train_lightgcn",
]
