"""Audio MAE: a masked autoencoder over log-mel spectrogram patches.

He et al., "Masked Autoencoders Are Scalable Vision Learners", CVPR 2022 (random masking of most patches, a ViT
encoder that sees only the visible ones, a light decoder that fills mask tokens back in, MSE on the masked patches
with per-patch normalised targets); Huang et al., "Masked Autoencoders that Listen", NeurIPS 2022 (the same on
audio spectrograms, ~0.8 masking). The encoder is the pre-norm transformer of :mod:`encoders.modules.transformer`
(Dosovitskiy et al., ICLR 2021), with fixed 2-D sine-cosine positions.

Shapes: a log-mel is ``B x F x T`` (F = 64 mel bands, T = 1000 frames for 10 s). It is cut into
``(F / patch_f) x (T // patch_t)`` patches of ``patch_f x patch_t`` (the last ``T % patch_t`` frames are dropped:
8 frames = 80 ms with the defaults), flattened frequency-major to ``B x N x P``.
:meth:`AudioMAE.embed` (no masking, mean of the encoder tokens) is what is exported and served.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import nn

from encoders.modules.transformer import Encoder, sincos_1d


@dataclass(frozen=True)
class AudioMAEConfig:
    """Audio MAE sizes. The defaults train to a useful model in a few minutes on one CPU core.

    Attributes:
        n_mels: Mel bands of the input (F).
        n_frames: Frames of the input (T).
        patch_f: Patch height in mel bands.
        patch_t: Patch width in frames.
        dim: Encoder width.
        depth: Encoder blocks.
        heads: Encoder attention heads.
        dec_dim: Decoder width.
        dec_depth: Decoder blocks.
        dec_heads: Decoder attention heads.
        mlp_ratio: Hidden width of the block MLPs over their width.
        mask_ratio: Share of patches hidden from the encoder in training.
        norm_pix_loss: Normalise each target patch to zero mean, unit variance (He et al., Sec. 4).
        input_mean: Global log-mel mean of the training data (set by the trainer).
        input_std: Global log-mel standard deviation of the training data.
    """

    n_mels: int = 64
    n_frames: int = 1000
    patch_f: int = 16
    patch_t: int = 16
    dim: int = 128
    depth: int = 4
    heads: int = 4
    dec_dim: int = 64
    dec_depth: int = 1
    dec_heads: int = 4
    mlp_ratio: float = 4.0
    mask_ratio: float = 0.8
    norm_pix_loss: bool = True
    input_mean: float = 0.0
    input_std: float = 1.0

    def __post_init__(self) -> None:
        if self.n_mels % self.patch_f:
            raise ValueError(f"n_mels {self.n_mels} is not divisible by patch_f {self.patch_f}")
        if self.n_frames < self.patch_t:
            raise ValueError("n_frames is shorter than one patch")
        if not 0.0 < self.mask_ratio < 1.0:
            raise ValueError("mask_ratio must be in (0, 1)")
        if self.dim % 4 or self.dec_dim % 4:
            raise ValueError("dim and dec_dim must be multiples of 4 (2-D sine-cosine positions)")

    @property
    def grid(self) -> tuple[int, int]:
        """Patches along frequency and time."""
        return self.n_mels // self.patch_f, self.n_frames // self.patch_t

    @property
    def n_patches(self) -> int:
        gf, gt = self.grid
        return gf * gt

    @property
    def patch_size(self) -> int:
        return self.patch_f * self.patch_t

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> AudioMAEConfig:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def sincos_2d(gf: int, gt: int, dim: int) -> torch.Tensor:
    """Fixed 2-D positions, ``(gf * gt) x dim``: half the channels encode the band row, half the time column."""
    f = sincos_1d(gf, dim // 2)  # gf x dim/2
    t = sincos_1d(gt, dim // 2)  # gt x dim/2
    return torch.cat([f[:, None, :].expand(gf, gt, dim // 2), t[None, :, :].expand(gf, gt, dim // 2)], dim=-1).reshape(
        gf * gt, dim
    )


class AudioMAE(nn.Module):
    """Masked autoencoder over log-mel patches (see the module docstring)."""

    in_mean: torch.Tensor
    in_std: torch.Tensor
    pos: torch.Tensor
    dec_pos: torch.Tensor

    def __init__(self, cfg: AudioMAEConfig) -> None:
        super().__init__()
        self.cfg = cfg
        gf, gt = cfg.grid
        self.register_buffer("in_mean", torch.tensor(float(cfg.input_mean)))
        self.register_buffer("in_std", torch.tensor(float(cfg.input_std)))
        self.patch_embed = nn.Linear(cfg.patch_size, cfg.dim)
        self.register_buffer("pos", sincos_2d(gf, gt, cfg.dim)[None])  # 1 x N x D
        self.encoder = Encoder(cfg.dim, cfg.depth, cfg.heads, cfg.mlp_ratio)
        self.dec_embed = nn.Linear(cfg.dim, cfg.dec_dim)
        self.mask_token = nn.Parameter(torch.zeros(1, 1, cfg.dec_dim))
        self.register_buffer("dec_pos", sincos_2d(gf, gt, cfg.dec_dim)[None])  # 1 x N x Dd
        self.decoder = Encoder(cfg.dec_dim, cfg.dec_depth, cfg.dec_heads, cfg.mlp_ratio)
        self.dec_pred = nn.Linear(cfg.dec_dim, cfg.patch_size)
        self._init_weights()

    def _init_weights(self) -> None:
        nn.init.normal_(self.mask_token, std=0.02)
        for m in self.modules():
            if isinstance(m, nn.Linear):
                nn.init.xavier_uniform_(m.weight)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)

    def patchify(self, logmel: torch.Tensor) -> torch.Tensor:
        """B x F x T log-mel -> B x N x P patches of the *normalised* input (frequency-major patch order)."""
        c = self.cfg
        gf, gt = c.grid
        x = (logmel[:, :, : gt * c.patch_t] - self.in_mean) / self.in_std
        b = x.shape[0]
        x = x.reshape(b, gf, c.patch_f, gt, c.patch_t).permute(0, 1, 3, 2, 4)  # B x gf x gt x pf x pt
        return x.reshape(b, gf * gt, c.patch_size)

    def _check(self, logmel: torch.Tensor) -> None:
        if logmel.dim() != 3 or logmel.shape[1] != self.cfg.n_mels or logmel.shape[2] < self.cfg.n_frames:
            raise ValueError(
                f"expected B x {self.cfg.n_mels} x >= {self.cfg.n_frames} log-mels, got {tuple(logmel.shape)}"
            )

    def embed(self, logmel: torch.Tensor) -> torch.Tensor:
        """Clip embedding: all patches through the encoder, mean-pooled. B x F x T -> B x dim (not normalised)."""
        tokens = self.patch_embed(self.patchify(logmel)) + self.pos
        return self.encoder(tokens).mean(dim=1)

    def random_masking(self, n: int, batch: int, generator: torch.Generator | None = None) -> tuple[torch.Tensor, ...]:
        """Per-sample random masking by sorting noise (He et al.).

        Returns:
            ``keep`` (B x K indices of visible patches), ``restore`` (B x N inverse permutation) and ``mask``
            (B x N float, 1 for hidden patches).
        """
        k = max(1, int(round(n * (1.0 - self.cfg.mask_ratio))))
        noise = torch.rand(batch, n, generator=generator, device=self.pos.device)
        shuffle = torch.argsort(noise, dim=1)
        restore = torch.argsort(shuffle, dim=1)
        keep = shuffle[:, :k]
        mask = torch.ones(batch, n, device=self.pos.device)
        mask[:, :k] = 0.0
        mask = torch.gather(mask, 1, restore)
        return keep, restore, mask

    def forward(
        self, logmel: torch.Tensor, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Masked reconstruction.

        Args:
            logmel: B x F x T log-mels (raw frontend output).
            generator: Random source of the mask (None: the global torch generator).

        Returns:
            ``loss`` (scalar MSE over the masked patches), ``pred`` (B x N x P, in the target's space) and
            ``mask`` (B x N, 1 where hidden).
        """
        self._check(logmel)
        patches = self.patchify(logmel)  # B x N x P
        b, n, p = patches.shape
        keep, restore, mask = self.random_masking(n, b, generator)
        x = self.patch_embed(patches) + self.pos
        x = torch.gather(x, 1, keep[:, :, None].expand(-1, -1, self.cfg.dim))  # B x K x D
        latent = self.encoder(x)
        y = self.dec_embed(latent)  # B x K x Dd
        fill = self.mask_token.expand(b, n - y.shape[1], -1)
        y = torch.cat([y, fill], dim=1)
        y = torch.gather(y, 1, restore[:, :, None].expand(-1, -1, self.cfg.dec_dim)) + self.dec_pos
        pred = self.dec_pred(self.decoder(y))  # B x N x P
        target = self.target(patches)
        per_patch = ((pred - target) ** 2).mean(dim=-1)  # B x N
        loss = (per_patch * mask).sum() / mask.sum()
        return loss, pred, mask

    def target(self, patches: torch.Tensor) -> torch.Tensor:
        """Reconstruction targets: per-patch normalised patches when ``norm_pix_loss``. B x N x P."""
        if not self.cfg.norm_pix_loss:
            return patches
        mean = patches.mean(dim=-1, keepdim=True)
        var = patches.var(dim=-1, keepdim=True)
        return (patches - mean) / (var + 1e-6).sqrt()


class AudioMAEEmbedding(nn.Module):
    """The exported graph: ``logmel`` B x F x T -> ``embedding`` B x dim, L2-normalised."""

    def __init__(self, mae: AudioMAE) -> None:
        super().__init__()
        self.mae = mae

    def forward(self, logmel: torch.Tensor) -> torch.Tensor:
        return nn.functional.normalize(self.mae.embed(logmel), p=2.0, dim=1)
