"""FLAVA-style image–text model: frozen unimodal backbones, trainable projections, a multimodal fusion transformer.

Singh et al., "FLAVA: A Foundational Language And Vision Alignment Model", CVPR 2022: unimodal image and text
encoders whose pooled outputs are aligned by a contrastive loss, and a multimodal encoder over the concatenated
hidden states with a ``[CLS_M]`` token. Image–text matching with hard negatives sampled from the contrastive
similarities follows Li et al., "Align before Fuse: Vision and Language Representation Learning with Momentum
Distillation" (ALBEF), NeurIPS 2021. The contrastive loss with a learnable temperature is CLIP's (Radford et al.,
"Learning Transferable Visual Models From Natural Language Supervision", ICML 2021).

Differences from the paper, chosen for this project (the seed fixes the image encoder and trains the text side):

* The image encoder is a frozen, ImageNet-pretrained EfficientNet-lite0 (Tan & Le, "EfficientNet", ICML 2019)
  instead of a ViT: its final 7 x 7 x 1280 feature map gives 49 image tokens, their mean the pooled vector.
* The text encoder is the frozen all-MiniLM-L6-v2 (:mod:`encoders.text`); its token states go through a small
  trainable adapter (``text_adapter_layers`` pre-norm blocks at MiniLM's width) and a projection. Measured on val
  (OpenMoji, 6 epochs, ``soft`` weighting): projection only i2t/t2i R@1 0.267/0.267, R@10 0.654/0.654; one adapter
  block 0.325/0.321, 0.667/0.667; plus 0.2 dropout on the backbone features 0.329/0.313, 0.688/0.675 (the
  default). The MiniLM weights themselves stay frozen (no tuned last layer).
* One projection per modality serves tokens and pooled vector: the unimodal embedding is the normalised mean of the
  projected tokens (attention-masked for text, MiniLM's own pooling), as in CLIP where the projection is linear.
* The fusion input gets one extra *agreement* token (projected elementwise product of the two unimodal
  embeddings), and the ITM logit is ``head(CLS_M) + a * (cosine - c)`` with learnable ``a``, ``c``: measured here,
  the matching head over ``[CLS_M, image, text]`` alone stayed at chance level (ITM loss 0.637-0.638, the entropy of
  the 1:2 label prior, after 3-5 epochs, with or without the agreement token) on this ~2k-pair corpus, while the
  contrastive cosine separated misaligned val pairs with AUC 0.93. The fusion transformer now refines the
  contrastive agreement instead of having to rediscover it from a few hundred steps.
* No masked-modelling objectives: the corpus is small and the backbones are frozen.

This module holds only the trainable head (:class:`FlavaModel`, operating on backbone features) and the losses.
The backbones are attached for export in :mod:`encoders.imagetext`; training on cached backbone features is in
:mod:`encoders.training.flava`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from encoders.modules.transformer import Block, Encoder, sincos_1d

MISALIGNED_SCHEMES = ("none", "soft", "drop")


@dataclass(frozen=True)
class FlavaConfig:
    """Sizes of the trainable part.

    Attributes:
        image_feat_dim: Channels of the image backbone's final feature map (EfficientNet-lite0: 1280).
        image_tokens: Spatial positions of that map (7 x 7 at a 224-pixel input).
        text_feat_dim: Width of the text backbone's token states (MiniLM: 384).
        max_text_tokens: Token budget of a caption (tokenizer truncation, incl. ``[CLS]``/``[SEP]``).
        dim: Shared embedding and fusion width ``D``.
        text_adapter_layers: Trainable pre-norm blocks over the frozen text token states (0: projection only).
        fusion_depth: Blocks of the multimodal fusion transformer.
        fusion_heads: Attention heads (``dim`` must be divisible by it).
        mlp_ratio: Hidden width of the blocks' MLP relative to ``dim``.
        dropout: Dropout in the adapter and fusion blocks.
        feature_dropout: Dropout on the frozen backbone features before the projections (training only).
        init_temperature: Initial contrastive temperature (learnable, as ``log(1/T)``, capped at 1/100).
    """

    image_feat_dim: int = 1280
    image_tokens: int = 49
    text_feat_dim: int = 384
    max_text_tokens: int = 40
    dim: int = 128
    text_adapter_layers: int = 1
    fusion_depth: int = 1
    fusion_heads: int = 4
    mlp_ratio: float = 2.0
    dropout: float = 0.1
    feature_dropout: float = 0.2
    init_temperature: float = 0.07


def _masked_mean(x: torch.Tensor, m: torch.Tensor) -> torch.Tensor:
    """Mean over tokens of ``x`` (B x T x D) where ``m`` (B x T float) is 1; B x D."""
    return (x * m.unsqueeze(-1)).sum(dim=1) / m.sum(dim=1, keepdim=True).clamp(min=1.0)


class _TextAdapter(nn.Module):
    """Pre-norm blocks over frozen token states. ``x``: B x T x C, ``key_pad``: B x T bool -> B x T x C."""

    def __init__(self, width: int, layers: int, dropout: float) -> None:
        super().__init__()
        self.blocks = nn.ModuleList([Block(width, 6, 2.0, dropout) for _ in range(layers)])

    def forward(self, x: torch.Tensor, key_pad: torch.Tensor) -> torch.Tensor:
        for blk in self.blocks:
            x = blk(x, key_pad)
        return x


class FlavaModel(nn.Module):
    """The trainable FLAVA-style head over frozen backbone features.

    Args:
        cfg: Sizes (see :class:`FlavaConfig`).
    """

    def __init__(self, cfg: FlavaConfig) -> None:
        super().__init__()
        if cfg.dim % cfg.fusion_heads:
            raise ValueError(f"dim {cfg.dim} is not divisible by fusion_heads {cfg.fusion_heads}")
        self.cfg = cfg
        d = cfg.dim
        self.feat_drop = nn.Dropout(cfg.feature_dropout)
        self.image_norm = nn.LayerNorm(cfg.image_feat_dim)
        self.image_proj = nn.Linear(cfg.image_feat_dim, d)
        self.text_adapter = (
            _TextAdapter(cfg.text_feat_dim, cfg.text_adapter_layers, cfg.dropout) if cfg.text_adapter_layers else None
        )
        self.text_norm = nn.LayerNorm(cfg.text_feat_dim)
        self.text_proj = nn.Linear(cfg.text_feat_dim, d)
        self.cls_mm = nn.Parameter(torch.zeros(1, 1, d))
        self.type_embed = nn.Parameter(torch.zeros(3, d))  # image, text, agreement token
        self.agree_proj = nn.Linear(d, d)
        self.image_pos: torch.Tensor
        self.text_pos: torch.Tensor
        self.register_buffer("image_pos", sincos_1d(cfg.image_tokens, d), persistent=False)
        self.register_buffer("text_pos", sincos_1d(cfg.max_text_tokens, d), persistent=False)
        self.fusion = Encoder(d, cfg.fusion_depth, cfg.fusion_heads, cfg.mlp_ratio, cfg.dropout)
        self.fused_proj = nn.Linear(d, d)
        self.itm_head = nn.Linear(d, 1)
        # ITM logit = head(CLS_M) + a * (cosine - c): the fusion refines the contrastive agreement
        self.itm_cos_scale = nn.Parameter(torch.tensor(10.0))
        self.itm_cos_shift = nn.Parameter(torch.tensor(0.3))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))
        nn.init.normal_(self.cls_mm, std=0.02)
        nn.init.normal_(self.type_embed, std=0.02)

    # ----------------------------------------------------------------------------------------------- unimodal
    def encode_image(self, feats: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Image side.

        Args:
            feats: B x N x C_img backbone feature map, flattened row-major (N = ``image_tokens``).

        Returns:
            ``(embedding, tokens)``: B x D unit vectors (the normalised token mean; contrastive space) and
            B x N x D fusion tokens.
        """
        tokens = self.image_proj(self.feat_drop(self.image_norm(feats)))
        return F.normalize(tokens.mean(dim=1), dim=-1), tokens

    def encode_text(self, states: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Text side.

        Args:
            states: B x T x C_txt frozen backbone token states (T <= ``max_text_tokens``).
            mask: B x T attention mask (1 for tokens, 0 for padding; any integer or bool dtype).

        Returns:
            ``(embedding, tokens)``: B x D unit vectors (normalised masked token mean) and B x T x D fusion tokens
            (padding rows are not zeroed; the fusion masks them).
        """
        m = mask.to(states.dtype)
        if self.text_adapter is not None:
            states = self.text_adapter(states, m < 0.5)
        tokens = self.text_proj(self.feat_drop(self.text_norm(states)))
        return F.normalize(_masked_mean(tokens, m), dim=-1), tokens

    # --------------------------------------------------------------------------------------------- multimodal
    def fuse(
        self,
        image_tokens: torch.Tensor,
        image_mask: torch.Tensor,
        text_tokens: torch.Tensor,
        text_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Fusion transformer over ``[CLS_M, agreement, image tokens, text tokens]``.

        The agreement token is a projection of the elementwise product of the two unimodal embeddings (the
        normalised token means), and the matching logit adds a learnable affine function of their cosine, so the
        matching head starts from the contrastive agreement and the attention layers add the token-level evidence.

        Args:
            image_tokens: B x N x D (from :meth:`encode_image`).
            image_mask: B x N (1 for a token, 0 for padding).
            text_tokens: B x T x D (from :meth:`encode_text`).
            text_mask: B x T.

        Returns:
            ``(fused, match_logit)``: B x D unit multimodal vectors and B image–text matching logits.
        """
        b, n, _ = image_tokens.shape
        t = text_tokens.shape[1]
        im = image_mask.to(image_tokens.dtype)
        tm = text_mask.to(image_tokens.dtype)
        # the unimodal embeddings are the normalised token means (shared projection), so their product is the
        # contrastive agreement; it enters as one extra token
        agree = F.normalize(_masked_mean(image_tokens, im), dim=-1) * F.normalize(_masked_mean(text_tokens, tm), dim=-1)
        img = image_tokens + self.image_pos[:n] + self.type_embed[0]
        txt = text_tokens + self.text_pos[:t] + self.type_embed[1]
        agr = (self.agree_proj(agree) + self.type_embed[2]).unsqueeze(1)
        cls = self.cls_mm.expand(b, -1, -1)
        x = torch.cat([cls, agr, img, txt], dim=1)
        keep = torch.cat([torch.ones_like(im[:, :2]), im, tm], dim=1)
        h = self.fusion(x, keep < 0.5)[:, 0]
        logit = self.itm_head(h).squeeze(-1) + self.itm_cos_scale * (agree.sum(dim=-1) - self.itm_cos_shift)
        return F.normalize(self.fused_proj(h), dim=-1), logit

    @property
    def temperature(self) -> float:
        return float(1.0 / self.logit_scale.detach().exp().clamp(max=100.0))


# ---------------------------------------------------------------------------------------------------------- losses
@dataclass(frozen=True)
class FlavaLoss:
    """Loss terms of one batch (``total`` carries the gradient; the rest are detached floats)."""

    total: torch.Tensor
    itc: float
    itm: float
    itm_acc: float


def _masked_logits(sim: torch.Tensor, same: torch.Tensor) -> torch.Tensor:
    """Removes in-batch false negatives: off-diagonal pairs marked ``same`` (identical caption/image) get -inf."""
    eye = torch.eye(sim.shape[0], dtype=torch.bool, device=sim.device)
    return sim.masked_fill(same & ~eye, float("-inf"))


def sample_hard_negatives(sim: torch.Tensor, same: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """For each row, one column drawn with probability ``softmax(sim)`` over the valid negatives (ALBEF).

    Args:
        sim: B x B similarity logits (row = anchor, column = candidate).
        same: B x B bool, True where the candidate is not a negative (the diagonal, identical caption or image).
        generator: Torch RNG for reproducible draws.

    Returns:
        B int64 column indices; a row without any valid negative gets a uniformly random other column (or itself
        for B = 1).
    """
    b = sim.shape[0]
    w = torch.softmax(sim.detach().float(), dim=1).masked_fill(same, 0.0)
    empty = w.sum(dim=1) <= 0
    if empty.any():
        fallback = (~torch.eye(b, dtype=torch.bool, device=sim.device)).float() if b > 1 else torch.ones(1, 1)
        w = torch.where(empty[:, None], fallback, w)
    return torch.multinomial(w, 1, generator=generator).squeeze(1)


def flava_loss(
    model: FlavaModel,
    image_feats: torch.Tensor,
    text_states: torch.Tensor,
    text_mask: torch.Tensor,
    caption_ids: torch.Tensor,
    image_ids: torch.Tensor,
    weights: torch.Tensor | None = None,
    itm_weight: float = 1.0,
    generator: torch.Generator | None = None,
) -> FlavaLoss:
    """Contrastive (ITC) + image–text matching (ITM, hard negatives) loss of one batch of pairs.

    Args:
        model: The head.
        image_feats: B x N x C_img backbone features of the pairs' images.
        text_states: B x T x C_txt backbone token states of the pairs' captions.
        text_mask: B x T attention mask.
        caption_ids: B ids of the caption strings (equal ids = identical text: not used as each other's negative).
        image_ids: B ids of the images up to pixel identity (same rule).
        weights: B non-negative per-pair weights for the positive terms (misaligned-pair handling); None = 1.
        itm_weight: Weight of the ITM term.
        generator: RNG for the hard-negative draws.

    Returns:
        :class:`FlavaLoss`. ITC is the weighted mean over pairs of the symmetric cross-entropy; ITM is binary
        cross-entropy over B positives (weighted) and 2B hard negatives (one text per image, one image per text).
    """
    b = image_feats.shape[0]
    w = torch.ones(b) if weights is None else weights.to(torch.float32)
    img_emb, img_tok = model.encode_image(image_feats)
    txt_emb, txt_tok = model.encode_text(text_states, text_mask)
    scale = model.logit_scale.exp().clamp(max=100.0)
    sim = scale * img_emb @ txt_emb.t()  # B x B, row = image
    same_cap = caption_ids[:, None] == caption_ids[None, :]
    same_img = image_ids[:, None] == image_ids[None, :]
    same = same_cap | same_img
    target = torch.arange(b)
    l_i2t = F.cross_entropy(_masked_logits(sim, same), target, reduction="none")
    l_t2i = F.cross_entropy(_masked_logits(sim.t(), same), target, reduction="none")
    itc = ((l_i2t + l_t2i) / 2 * w).sum() / w.sum().clamp(min=1e-6)

    img_mask = torch.ones(img_tok.shape[:2], dtype=text_mask.dtype)
    neg_txt = sample_hard_negatives(sim, same, generator)  # a hard text for every image
    neg_img = sample_hard_negatives(sim.t(), same, generator)  # a hard image for every text
    all_img = torch.cat([img_tok, img_tok, img_tok[neg_img]], dim=0)
    all_txt = torch.cat([txt_tok, txt_tok[neg_txt], txt_tok], dim=0)
    all_mask = torch.cat([text_mask, text_mask[neg_txt], text_mask], dim=0)
    _, logits = model.fuse(all_img, torch.cat([img_mask] * 3, dim=0), all_txt, all_mask)
    labels = torch.cat([torch.ones(b), torch.zeros(2 * b)])
    itm_w = torch.cat([w, torch.ones(2 * b)])
    per = F.binary_cross_entropy_with_logits(logits, labels, reduction="none")
    itm = (per * itm_w).sum() / itm_w.sum().clamp(min=1e-6)
    acc = ((logits > 0).float() == labels).float().mean()
    total = itc + itm_weight * itm
    return FlavaLoss(total=total, itc=float(itc.detach()), itm=float(itm.detach()), itm_acc=float(acc))


# -------------------------------------------------------------------------------------------- misaligned pairs
def misalignment_weights(scores: np.ndarray, scheme: str, drop_share: float = 0.1, power: float = 1.0) -> np.ndarray:
    """Per-pair training weights from the model's own (detached) matching probabilities.

    Args:
        scores: n ITM probabilities in [0, 1] of the training pairs, scored by the current model.
        scheme: ``"none"`` (all 1), ``"soft"`` (weight proportional to ``score ** power``, rescaled to mean 1 so
            the loss scale is unchanged), ``"drop"`` (the ``round(drop_share * n)`` lowest-scored pairs get 0, the
            rest 1; ties broken by position).
        drop_share: Share of pairs dropped by ``"drop"``, in [0, 1).
        power: Sharpening exponent of ``"soft"`` (> 0).

    Returns:
        n float32 non-negative weights.

    Raises:
        ValueError: Unknown scheme, bad parameters, or scores that are not finite probabilities.
    """
    s = np.asarray(scores, dtype=np.float64)
    if s.ndim != 1:
        raise ValueError(f"scores must be 1-D, got shape {s.shape}")
    if scheme not in MISALIGNED_SCHEMES:
        raise ValueError(f"unknown misaligned-pair scheme {scheme!r} (one of {MISALIGNED_SCHEMES})")
    if s.size and (not np.all(np.isfinite(s)) or s.min() < 0.0 or s.max() > 1.0):
        raise ValueError("scores must be finite probabilities in [0, 1]")
    n = s.size
    if scheme == "none" or n == 0:
        return np.ones(n, dtype=np.float32)
    if scheme == "soft":
        if power <= 0:
            raise ValueError(f"power must be > 0, got {power}")
        raw = s**power
        mean = raw.mean()
        if mean <= 0:
            return np.ones(n, dtype=np.float32)
        return (raw / mean).astype(np.float32)
    if not 0.0 <= drop_share < 1.0:
        raise ValueError(f"drop_share must be in [0, 1), got {drop_share}")
    k = int(round(drop_share * n))
    w = np.ones(n, dtype=np.float32)
    if k:
        w[np.argsort(s, kind="stable")[:k]] = 0.0
    return w
