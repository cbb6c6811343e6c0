"""MusicCLIP: contrastive audio-text embeddings in one shared space.

Radford et al., "Learning Transferable Visual Models From Natural Language Supervision" (CLIP), ICML 2021: two
towers, L2-normalised outputs, a symmetric InfoNCE loss over the in-batch similarity matrix with a learnable
temperature (logit scale clamped at 100). Audio-text as in CLAP (Elizalde et al., "CLAP: Learning Audio Concepts
from Natural Language Supervision", ICASSP 2023): an audio tower over log-mels and a pretrained, frozen text model
whose sentence embedding is projected by a small trainable MLP.

* Audio tower: a small CNN over the log-mel (``B x F x T``): four conv-BN-ReLU blocks with pooling (time is pooled
  4x first, the 10 ms frames are finer than timbre and rhythm need), then mean over frequency, mean and max over
  time, and an MLP to the shared space. It is length-agnostic, so training uses random crops and serving the full
  clip.
* Text tower: the frozen all-MiniLM-L6-v2 sentence embedding (384-d, precomputed with
  :class:`encoders.text.TextEncoder`) through a trainable MLP.
* Duplicate captions: many clips share a caption (same tags), so a batch can hold the same caption twice. Such
  pairs are *not* used as negatives: :func:`clip_loss` masks every off-diagonal entry whose captions are equal
  (logit set to a large negative number) in both directions, so the loss never pushes a clip away from a text
  identical to its own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn
from torch.nn import functional as fn


@dataclass(frozen=True)
class MusicCLIPConfig:
    """MusicCLIP sizes.

    Attributes:
        n_mels: Mel bands of the input.
        channels: Output channels of the four conv blocks.
        audio_hidden: Hidden width of the audio head MLP.
        text_dim: Width of the frozen text embedding (MiniLM: 384).
        text_hidden: Hidden width of the text projection MLP.
        embed_dim: Shared space width (D).
        dropout: Dropout in both heads.
        init_temperature: Initial softmax temperature (logit scale = 1 / temperature).
        max_logit_scale: Clamp of the learnable logit scale (CLIP: 100).
        input_mean: Global log-mel mean of the training data (set by the trainer).
        input_std: Global log-mel standard deviation of the training data.
    """

    n_mels: int = 64
    channels: tuple[int, int, int, int] = (16, 32, 64, 128)
    audio_hidden: int = 256
    text_dim: int = 384
    text_hidden: int = 256
    embed_dim: int = 128
    dropout: float = 0.1
    init_temperature: float = 0.07
    max_logit_scale: float = 100.0
    input_mean: float = 0.0
    input_std: float = 1.0

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["channels"] = list(self.channels)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MusicCLIPConfig:
        names = set(cls.__dataclass_fields__)
        kw = {k: v for k, v in d.items() if k in names}
        if "channels" in kw:
            kw["channels"] = tuple(kw["channels"])
        return cls(**kw)


def _conv_block(cin: int, cout: int, pool: tuple[int, int]) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(pool),
    )


class AudioTower(nn.Module):
    """Log-mel ``B x F x T`` -> ``B x D`` unit vectors."""

    in_mean: torch.Tensor
    in_std: torch.Tensor
    POOLS: tuple[tuple[int, int], ...] = ((2, 4), (2, 2), (2, 2), (2, 2))

    def __init__(self, cfg: MusicCLIPConfig) -> None:
        super().__init__()
        self.register_buffer("in_mean", torch.tensor(float(cfg.input_mean)))
        self.register_buffer("in_std", torch.tensor(float(cfg.input_std)))
        chans = (1, *cfg.channels)
        self.blocks = nn.Sequential(*[_conv_block(chans[i], chans[i + 1], p) for i, p in enumerate(self.POOLS)])
        last = cfg.channels[-1]
        self.head = nn.Sequential(
            nn.Linear(2 * last, cfg.audio_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.audio_hidden, cfg.embed_dim),
        )

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        x = ((logmel - self.in_mean) / self.in_std)[:, None]  # B x 1 x F x T
        h = self.blocks(x).mean(dim=2)  # B x C x T'
        pooled = torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)  # B x 2C
        return fn.normalize(self.head(pooled), p=2.0, dim=1)


class TextTower(nn.Module):
    """Frozen sentence embedding ``B x text_dim`` -> ``B x D`` unit vectors."""

    def __init__(self, cfg: MusicCLIPConfig) -> None:
        super().__init__()
        self.mlp = nn.Sequential(
            nn.Linear(cfg.text_dim, cfg.text_hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout),
            nn.Linear(cfg.text_hidden, cfg.embed_dim),
        )

    def forward(self, text_emb: torch.Tensor) -> torch.Tensor:
        return fn.normalize(self.mlp(text_emb), p=2.0, dim=1)


class MusicCLIP(nn.Module):
    """The two towers and the learnable logit scale."""

    def __init__(self, cfg: MusicCLIPConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.audio = AudioTower(cfg)
        self.text = TextTower(cfg)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / cfg.init_temperature)))

    def scale(self) -> torch.Tensor:
        """exp(logit scale), clamped to ``[1, max_logit_scale]``."""
        return self.logit_scale.clamp(0.0, math.log(self.cfg.max_logit_scale)).exp()

    def forward(
        self, logmel: torch.Tensor, text_emb: torch.Tensor, caption_ids: torch.Tensor | None = None
    ) -> torch.Tensor:
        """Symmetric InfoNCE loss of a batch.

        Args:
            logmel: B x F x T log-mels.
            text_emb: B x text_dim frozen caption embeddings.
            caption_ids: B int64 caption identities (equal ids = identical caption text), or None.

        Returns:
            Scalar loss.
        """
        a = self.audio(logmel)
        t = self.text(text_emb)
        return clip_loss(a, t, self.scale(), caption_ids)


def clip_loss(
    audio: torch.Tensor, text: torch.Tensor, scale: torch.Tensor, caption_ids: torch.Tensor | None = None
) -> torch.Tensor:
    """Symmetric InfoNCE: cross-entropy audio->text and text->audio, averaged.

    Args:
        audio: B x D unit vectors.
        text: B x D unit vectors (row i is the caption of clip i).
        scale: Logit scale (1 / temperature).
        caption_ids: B ids; off-diagonal pairs with equal ids are removed from the negatives (see module doc).

    Returns:
        Scalar loss.
    """
    logits = scale * audio @ text.T  # B x B
    target = torch.arange(logits.shape[0], device=logits.device)
    if caption_ids is not None:
        same = caption_ids[:, None] == caption_ids[None, :]
        same = same & ~torch.eye(len(caption_ids), dtype=torch.bool, device=logits.device)
        logits = logits.masked_fill(same, -1e4)
    return 0.5 * (fn.cross_entropy(logits, target) + fn.cross_entropy(logits.T, target))
