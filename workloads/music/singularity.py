"""Real recordings: the 16 Ogg Vorbis tracks of Debian's ``singularity-music`` (Max McCracken, CC BY-SA).

About 64 minutes of one composer's game music: a held-out test set of real (not synthesised) audio, not a
training corpus. ``apt-get install -y singularity-music`` puts the files under
``/usr/share/games/singularity/music`` (``win/`` and ``lose/`` hold the end-game themes).

Clips are cut at the file's rate (48 kHz) and resampled to 16 kHz mono with
:func:`scipy.signal.resample_poly` (polyphase FIR, Kaiser window; an exact 1:3 ratio for 48 kHz), after a
channel-mean downmix.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from workloads.music.render import SAMPLE_RATE

ENV_SINGULARITY_DIR = "THAW_SINGULARITY_DIR"
DEFAULT_SINGULARITY_DIR = Path("/usr/share/games/singularity/music")
SINGULARITY_COMPOSER = "Max McCracken"


@dataclass(frozen=True)
class SingularityTrack:
    """One recording.

    Attributes:
        path: The ``.ogg`` file.
        title: Track title (the file name without extension).
        duration: Length in seconds.
        sample_rate: The file's sample rate.
        channels: The file's channel count.
        group: ``"main"``, ``"win"`` or ``"lose"`` (the sub-folder).
    """

    path: Path
    title: str
    duration: float
    sample_rate: int
    channels: int
    group: str


def load_singularity(dir: str | os.PathLike[str] | None = None) -> list[SingularityTrack]:
    """Lists the singularity-music tracks, sorted by group then title.

    Args:
        dir: Folder of the ``.ogg`` files (searched recursively); default ``$THAW_SINGULARITY_DIR`` or
            ``/usr/share/games/singularity/music``.

    Raises:
        FileNotFoundError: With the install hint when no track is found.
    """
    import soundfile as sf

    root = Path(dir or os.environ.get(ENV_SINGULARITY_DIR) or DEFAULT_SINGULARITY_DIR).expanduser()
    files = sorted(root.rglob("*.ogg")) if root.is_dir() else []
    if not files:
        raise FileNotFoundError(
            f"no .ogg tracks under {root}; install them with `apt-get install -y singularity-music` "
            f"or set ${ENV_SINGULARITY_DIR}"
        )
    tracks = []
    for f in files:
        info = sf.info(str(f))
        group = f.parent.name if f.parent != root else "main"
        tracks.append(
            SingularityTrack(
                path=f,
                title=f.stem,
                duration=float(info.frames) / info.samplerate,
                sample_rate=int(info.samplerate),
                channels=int(info.channels),
                group=group,
            )
        )
    order = {"main": 0, "win": 1, "lose": 2}
    return sorted(tracks, key=lambda t: (order.get(t.group, 3), t.title))


def resample_to_16k(x: np.ndarray, sample_rate: int) -> np.ndarray:
    """Resamples mono audio to 16 kHz with ``scipy.signal.resample_poly`` (rational up/down factors)."""
    from scipy.signal import resample_poly

    if sample_rate == SAMPLE_RATE:
        return x.astype(np.float32, copy=False)
    ratio = Fraction(SAMPLE_RATE, int(sample_rate)).limit_denominator(1000)
    return resample_poly(x, ratio.numerator, ratio.denominator).astype(np.float32)


def read_clip(track: SingularityTrack, start_s: float = 0.0, seconds: float = 10.0) -> np.ndarray:
    """Cuts ``seconds`` of ``track`` from ``start_s`` as 16 kHz mono ``float32``.

    The clip always has exactly ``round(seconds * 16000)`` samples (zero-padded past the end of the track).
    """
    import soundfile as sf

    start = max(0, int(round(start_s * track.sample_rate)))
    frames = int(round(seconds * track.sample_rate))
    x, sr = sf.read(str(track.path), start=start, frames=frames, dtype="float32", always_2d=True)
    y = resample_to_16k(x.mean(axis=1), sr)
    n = int(round(seconds * SAMPLE_RATE))
    if len(y) < n:
        y = np.concatenate([y, np.zeros(n - len(y), dtype=np.float32)])
    return y[:n]


def singularity_clips(
    tracks: list[SingularityTrack] | None = None,
    seconds: float = 10.0,
    hop_s: float | None = None,
    max_per_track: int | None = None,
) -> Iterator[tuple[SingularityTrack, float, np.ndarray]]:
    """Yields ``(track, start_s, clip)`` for consecutive clips of every track.

    Args:
        tracks: Tracks to cut (default :func:`load_singularity`).
        seconds: Clip length.
        hop_s: Distance between clip starts (default ``seconds``: no overlap). Only full-length clips are cut.
        max_per_track: Stop after this many clips per track.
    """
    hop = hop_s or seconds
    for track in tracks if tracks is not None else load_singularity():
        start, k = 0.0, 0
        while start + seconds <= track.duration + 1e-6 and (max_per_track is None or k < max_per_track):
            yield track, start, read_clip(track, start, seconds)
            start += hop
            k += 1
