"""The audio frontend shared by training and serving: a waveform to a fixed-size log-mel spectrogram.

Everything here is numpy/scipy, so the exported ONNX graphs take the log-mel as their input and serving computes it
exactly as training did. The choices (:class:`LogMelConfig`):

* **Rate.** 16 kHz mono. Other rates are resampled with :func:`scipy.signal.resample_poly` (polyphase, Kaiser
  anti-aliasing filter) by the reduced ratio ``16000 / rate``.
* **Window.** 10 s. Longer audio keeps its *middle* 10 s (deterministic: the same upload always gives the same
  spectrogram, and intros/outros are skipped); shorter audio is zero-padded at the end. Audio shorter than
  ``min_seconds`` (0.5 s) is refused.
* **Level.** The kept window is scaled to a fixed RMS (0.1), so the spectrogram does not depend on the upload's
  gain. Audio whose RMS is below ``silence_rms`` (1e-4, about -80 dBFS) is refused as silent, as is audio with
  NaN/inf samples. Padding is added after the scaling, so a short clip keeps its level.
* **Spectrum.** 25 ms Hann window (400 samples) zero-padded to a 512-point FFT, 10 ms hop (160 samples), power
  spectrum, 64 triangular mel filters (HTK mel scale, 50 Hz to 8 kHz, Slaney area normalisation), natural log of
  ``power + 1e-6``. Frames start at sample 0 with no centring and the signal is padded at the end so that a 10 s
  window gives exactly ``10 s / 10 ms = 1000`` frames.
* **Normalisation.** None beyond the RMS scaling: the frontend is data-independent. Each model carries the global
  mean and standard deviation of its training log-mels as fixed buffers and applies them inside its graph.

:func:`log_mel_stats` (per-band mean and standard deviation over time, ``2 * n_mels`` values) is the hand-crafted
baseline the learned encoders are compared against.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from encoders.media import MediaError


class AudioInputError(MediaError):
    """The audio cannot be turned into a spectrogram (empty, too short, silent, non-finite, bad rate).

    A :class:`encoders.media.MediaError` (so a ``ValueError``): the content agent dead-letters the item with it.
    """


@dataclass(frozen=True)
class LogMelConfig:
    """Log-mel frontend settings (see the module docstring for why each was chosen).

    Attributes:
        sample_rate: Rate the spectrogram is computed at (Hz); other rates are resampled.
        n_mels: Mel bands.
        win_length: Analysis window in samples (25 ms at 16 kHz).
        hop_length: Hop in samples (10 ms at 16 kHz).
        n_fft: FFT size (window zero-padded to it).
        f_min: Lowest mel filter edge (Hz).
        f_max: Highest mel filter edge (Hz); at most ``sample_rate / 2``.
        clip_seconds: Fixed window length; longer audio keeps the middle, shorter is padded.
        min_seconds: Shorter audio is refused.
        target_rms: RMS the kept window is scaled to.
        silence_rms: Audio below this RMS is refused as silent.
        log_eps: Added to the mel power before the log.
    """

    sample_rate: int = 16_000
    n_mels: int = 64
    win_length: int = 400
    hop_length: int = 160
    n_fft: int = 512
    f_min: float = 50.0
    f_max: float = 8_000.0
    clip_seconds: float = 10.0
    min_seconds: float = 0.5
    target_rms: float = 0.1
    silence_rms: float = 1e-4
    log_eps: float = 1e-6

    def __post_init__(self) -> None:
        if self.win_length > self.n_fft:
            raise ValueError(f"win_length {self.win_length} exceeds n_fft {self.n_fft}")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= {self.sample_rate / 2}")
        if self.clip_seconds <= 0 or self.min_seconds <= 0 or self.min_seconds > self.clip_seconds:
            raise ValueError("need 0 < min_seconds <= clip_seconds")

    @property
    def clip_samples(self) -> int:
        """Samples in the fixed window."""
        return int(round(self.clip_seconds * self.sample_rate))

    @property
    def n_frames(self) -> int:
        """Frames of every spectrogram (1000 for 10 s at a 10 ms hop)."""
        return self.clip_samples // self.hop_length

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for manifests and caches); :meth:`from_dict` inverts it."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> LogMelConfig:
        names = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in names})


def _hz_to_mel(f: np.ndarray) -> np.ndarray:
    return 2595.0 * np.log10(1.0 + f / 700.0)


def _mel_to_hz(m: np.ndarray) -> np.ndarray:
    return 700.0 * (10.0 ** (m / 2595.0) - 1.0)


@lru_cache(maxsize=8)
def mel_filterbank(cfg: LogMelConfig) -> np.ndarray:
    """Triangular mel filters, ``n_mels x (n_fft // 2 + 1)`` float32, each with unit area (Slaney norm)."""
    n_bins = cfg.n_fft // 2 + 1
    freqs = np.linspace(0.0, cfg.sample_rate / 2, n_bins)
    edges = _mel_to_hz(np.linspace(_hz_to_mel(np.array(cfg.f_min)), _hz_to_mel(np.array(cfg.f_max)), cfg.n_mels + 2))
    fb = np.zeros((cfg.n_mels, n_bins), dtype=np.float64)
    for m in range(cfg.n_mels):
        lo, mid, hi = edges[m], edges[m + 1], edges[m + 2]
        rising = (freqs - lo) / (mid - lo)
        falling = (hi - freqs) / (hi - mid)
        fb[m] = np.maximum(0.0, np.minimum(rising, falling)) * (2.0 / (hi - lo))
    return fb.astype(np.float32)


def prepare_waveform(samples: np.ndarray, sample_rate: int, cfg: LogMelConfig) -> np.ndarray:
    """Validate, resample, window (middle ``clip_seconds``), level-normalise and pad a waveform.

    Args:
        samples: N float mono samples (a 2-D ``N x C`` array is averaged over channels).
        sample_rate: Their rate in Hz.
        cfg: Frontend settings.

    Returns:
        ``clip_samples`` float32 samples at ``cfg.sample_rate``.

    Raises:
        AudioInputError: Empty, too short, silent or non-finite audio, or a non-positive rate.
    """
    x = np.asarray(samples)
    if x.ndim == 2:
        x = x.mean(axis=1)
    if x.ndim != 1:
        raise AudioInputError(f"expected mono samples (N,) or (N, C), got shape {tuple(np.shape(samples))}")
    if int(sample_rate) <= 0:
        raise AudioInputError(f"sample rate must be positive, got {sample_rate}")
    if x.size == 0:
        raise AudioInputError("audio has no samples")
    if not np.issubdtype(x.dtype, np.floating):
        raise AudioInputError(f"expected float samples, got {x.dtype}")
    x = x.astype(np.float64, copy=False)
    if not np.all(np.isfinite(x)):
        raise AudioInputError("audio contains NaN or infinite samples")
    dur = x.size / float(sample_rate)
    if dur < cfg.min_seconds:
        raise AudioInputError(f"audio is {dur:.2f} s, shorter than the {cfg.min_seconds} s minimum")
    if int(sample_rate) != cfg.sample_rate:
        g = math.gcd(int(sample_rate), cfg.sample_rate)
        # cut the middle window (with a little margin for the filter) before resampling long audio
        keep_src = int(math.ceil(cfg.clip_seconds * sample_rate)) + 2 * int(sample_rate // 10)
        if x.size > keep_src:
            start = (x.size - keep_src) // 2
            x = x[start : start + keep_src]
        x = np.asarray(_resample(x, cfg.sample_rate // g, int(sample_rate) // g))
    n = cfg.clip_samples
    if x.size > n:
        start = (x.size - n) // 2
        x = x[start : start + n]
    rms = float(np.sqrt(np.mean(x**2)))
    if rms < cfg.silence_rms:
        raise AudioInputError(f"audio is silent (RMS {rms:.2e} < {cfg.silence_rms:.0e})")
    x = x * (cfg.target_rms / rms)
    out = np.zeros(n, dtype=np.float32)
    out[: x.size] = x
    return out


def _resample(x: np.ndarray, up: int, down: int) -> np.ndarray:
    from scipy.signal import resample_poly

    return np.asarray(resample_poly(x, up, down))


def log_mel(samples: np.ndarray, sample_rate: int, cfg: LogMelConfig | None = None) -> np.ndarray:
    """Log-mel spectrogram of a waveform.

    Args:
        samples: N float mono samples in [-1, 1] (any length of at least ``cfg.min_seconds``).
        sample_rate: Their rate in Hz (resampled to ``cfg.sample_rate`` when different).
        cfg: Frontend settings (default :class:`LogMelConfig`).

    Returns:
        ``n_mels x n_frames`` float32 (64 x 1000 by default): ``ln(mel power + eps)``.

    Raises:
        AudioInputError: Bad input (see :func:`prepare_waveform`).
    """
    cfg = cfg or LogMelConfig()
    x = prepare_waveform(samples, sample_rate, cfg)
    return _log_mel_of_window(x, cfg)


def _log_mel_of_window(x: np.ndarray, cfg: LogMelConfig) -> np.ndarray:
    n_frames = cfg.n_frames
    need = (n_frames - 1) * cfg.hop_length + cfg.win_length
    if x.size < need:
        x = np.concatenate([x, np.zeros(need - x.size, dtype=x.dtype)])
    frames = np.lib.stride_tricks.sliding_window_view(x[:need], cfg.win_length)[:: cfg.hop_length]  # F x W
    window = np.hanning(cfg.win_length + 1)[:-1].astype(np.float32)  # periodic Hann
    spec = np.fft.rfft(frames * window, n=cfg.n_fft, axis=1)  # F x (n_fft/2+1)
    power = (spec.real**2 + spec.imag**2).astype(np.float32)
    mel = mel_filterbank(cfg) @ power.T  # n_mels x F
    return np.log(mel + cfg.log_eps).astype(np.float32)


def log_mel_batch(clips: list[tuple[np.ndarray, int]], cfg: LogMelConfig | None = None) -> np.ndarray:
    """Log-mels of several ``(samples, sample_rate)`` clips: ``B x n_mels x n_frames`` float32."""
    cfg = cfg or LogMelConfig()
    out = np.zeros((len(clips), cfg.n_mels, cfg.n_frames), dtype=np.float32)
    for i, (s, sr) in enumerate(clips):
        out[i] = log_mel(s, sr, cfg)
    return out


def log_mel_stats(logmel: np.ndarray) -> np.ndarray:
    """The hand-crafted baseline features: per-band mean and standard deviation over time.

    Args:
        logmel: ``n_mels x T`` or ``B x n_mels x T`` log-mel spectrogram(s).

    Returns:
        ``2 * n_mels`` (or ``B x 2 * n_mels``) float32: the means of all bands, then their standard deviations.
    """
    x = np.asarray(logmel, dtype=np.float32)
    if x.ndim not in (2, 3):
        raise ValueError(f"expected n_mels x T or B x n_mels x T, got shape {x.shape}")
    return np.concatenate([x.mean(axis=-1), x.std(axis=-1)], axis=-1).astype(np.float32)
