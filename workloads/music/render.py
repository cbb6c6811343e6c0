"""Score -> MIDI -> 16 kHz mono audio through fluidsynth, with guards against runaway renders.

The score is never exported through music21's MIDI writer. Instead the notes of each part are flattened into
``(onset, duration, midi pitch)`` events in written order and written as a small type-0 MIDI file by
:func:`write_midi`. This sidesteps the known music21 -> MIDI pitfalls on this corpus:

* grace notes (zero duration) are dropped, so no note-on is left without its note-off (a stuck note made one
  fluidsynth render run forever and write 31 GB);
* repeats are not expanded (written order only), so badly formed repeat barlines cannot raise
  ``ExpanderException``;
* ABC tunes that share one ``TimeSignature`` object cannot break the export (nothing is exported).

Every note-on has its note-off, every channel gets "all notes off" at the end, and fluidsynth still always runs
under a wall-clock timeout and a file-size cap (``RLIMIT_FSIZE`` set in the child), see
:func:`render_midi_to_wav`.
"""

from __future__ import annotations

import functools
import os
import resource
import shutil
import signal
import struct
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

SAMPLE_RATE = 16_000
ENV_SOUNDFONT = "THAW_SOUNDFONT"
SOUNDFONT_CANDIDATES = (
    "/usr/share/sounds/sf2/FluidR3_GM.sf2",
    "/usr/share/soundfonts/FluidR3_GM.sf2",
)
TICKS_PER_QUARTER = 480
DEFAULT_VELOCITY = 80
DEFAULT_GAIN = 0.8
PEAK_DBFS = -1.0
FADE_OUT_S = 0.1
SILENCE_RMS = 1e-4
MAX_LOOPS = 64


class RenderError(RuntimeError):
    """A clip could not be rendered; ``reason`` is a short machine-readable cause.

    Reasons: ``parse_error``, ``no_notes``, ``timeout``, ``size_cap``, ``fluidsynth_error``, ``bad_audio``,
    ``silent``.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class NoteEvent:
    """One note to play: onset and duration in quarter notes, MIDI pitch, part index."""

    onset: float
    duration: float
    pitch: int
    part: int


@dataclass
class ScoreExcerpt:
    """The notes of a score plus the notated facts the tags need.

    Attributes:
        events: Notes of the whole score, onsets shifted so that the first note starts at 0, in written order
            (repeats not expanded, grace notes and chord symbols dropped, tied notes merged).
        period: Length of one pass through the score in quarter notes (used to loop short tunes).
        n_parts: Number of parts that have notes.
        time_signatures: ``(onset, ratio string, beat length in quarters)`` of the notated time signatures of
            the first part, onsets shifted like ``events``.
        sharps: Notated key signature of the first part (``0`` when none is notated).
        notated_tonic: Tonic of a notated ``Key`` object, if the signature was notated as a key.
        notated_mode: Its mode.
        final_pc: Pitch class of the lowest note sounding at the end of the score.
        title: Title from the score's metadata (``""`` if none).
    """

    events: list[NoteEvent]
    period: float
    n_parts: int
    time_signatures: list[tuple[float, str, float]] = field(default_factory=list)
    sharps: int = 0
    notated_tonic: str | None = None
    notated_mode: str | None = None
    final_pc: int | None = None
    title: str = ""


def find_soundfont(path: str | os.PathLike[str] | None = None) -> Path:
    """Returns the General MIDI soundfont to render with.

    Args:
        path: Explicit ``.sf2`` file; else ``$THAW_SOUNDFONT``; else FluidR3_GM from Debian's
            ``fluid-soundfont-gm``.

    Raises:
        FileNotFoundError: With the install hint when no soundfont is found.
    """
    candidates = [path] if path is not None else [os.environ.get(ENV_SOUNDFONT), *SOUNDFONT_CANDIDATES]
    for c in candidates:
        if c and Path(c).is_file():
            return Path(c)
    raise FileNotFoundError(
        f"no General MIDI soundfont found (looked in {[str(c) for c in candidates if c]}); "
        "install it with `apt-get install -y fluid-soundfont-gm` or set $THAW_SOUNDFONT"
    )


def find_fluidsynth() -> str:
    """Returns the ``fluidsynth`` executable; raises FileNotFoundError with the install hint if missing."""
    exe = shutil.which("fluidsynth")
    if exe is None:
        raise FileNotFoundError("fluidsynth not found on PATH; install it with `apt-get install -y fluidsynth`")
    return exe


@functools.lru_cache(maxsize=1)
def fluidsynth_version() -> str:
    """Returns the fluidsynth version string (e.g. ``"2.3.1"``), ``"unknown"`` if it cannot be read."""
    try:
        out = subprocess.run([find_fluidsynth(), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    for word in out.split():
        if word[:1].isdigit() and "." in word:
            return word
    return "unknown"


def extract_score(score: Any) -> ScoreExcerpt:
    """Flattens a parsed music21 score into note events and reads its notated key/metre.

    Args:
        score: A music21 ``Score`` (or any stream; a stream without parts counts as one part).

    Raises:
        RenderError: ``no_notes`` when no pitched note with a duration is found.
    """
    from music21 import harmony, key, meter, note, percussion

    parts = list(score.parts) if hasattr(score, "parts") and len(score.parts) else [score]
    events: list[NoteEvent] = []
    ends: list[float] = []
    finals: list[tuple[float, int]] = []  # (onset, midi) of every note, to find the final bass note
    n_parts = 0
    for pi, part in enumerate(parts):
        try:
            flat = part.stripTies(inPlace=False).flatten()
        except Exception:  # malformed ties: keep the tied pieces as separate notes
            flat = part.flatten()
        had = False
        for el in flat.notes:
            if isinstance(el, harmony.Harmony | note.Unpitched | percussion.PercussionChord):
                continue
            ql = float(el.quarterLength)
            if el.duration.isGrace or ql <= 0:
                continue
            onset = float(flat.elementOffset(el))
            for p in el.pitches:
                midi = int(round(p.ps))
                if 0 <= midi <= 127:
                    events.append(NoteEvent(onset, ql, midi, pi))
                    finals.append((onset, midi))
                    had = True
            ends.append(onset + ql)
        n_parts += int(had)
    if not events:
        raise RenderError("no_notes", "no pitched notes with a duration")
    start = min(e.onset for e in events)
    events = sorted(
        (NoteEvent(e.onset - start, e.duration, e.pitch, e.part) for e in events),
        key=lambda e: (e.onset, e.part, e.pitch),
    )
    note_end = max(ends) - start
    highest = float(getattr(score, "highestTime", 0.0) or 0.0) - start
    period = highest if highest >= note_end - 1e-6 and highest > 0 else note_end

    first = parts[0]
    tss: list[tuple[float, str, float]] = []
    for ts in first.recurse().getElementsByClass(meter.TimeSignature):
        onset = float(ts.getOffsetInHierarchy(first)) - start
        tss.append((onset, ts.ratioString, float(ts.beatDuration.quarterLength)))
    sharps = 0
    notated_tonic = notated_mode = None
    ks = first.recurse().getElementsByClass(key.KeySignature).first()
    if ks is None:
        ks = score.recurse().getElementsByClass(key.KeySignature).first()
    if ks is not None:
        sharps = int(ks.sharps)
        if isinstance(ks, key.Key):
            notated_tonic, notated_mode = ks.tonic.name, str(ks.mode)
    last_onset = max(o for o, _ in finals)
    final_pc = min(m for o, m in finals if o == last_onset) % 12
    title = ""
    md = getattr(score, "metadata", None)
    if md is not None:
        title = str(md.title or md.movementName or "")
    return ScoreExcerpt(
        events=events,
        period=period,
        n_parts=n_parts,
        time_signatures=tss,
        sharps=sharps,
        notated_tonic=notated_tonic,
        notated_mode=notated_mode,
        final_pc=final_pc,
        title=title,
    )


def dominant_time_signature(tss: list[tuple[float, str, float]], span: float) -> tuple[str, float] | None:
    """Returns ``(ratio, beat quarters)`` of the time signature covering most of ``[0, span)``, or ``None``.

    Pickup signatures like O'Neill's leading ``1/16`` cover almost nothing and so lose to the real metre.
    """
    if not tss:
        return None
    cover: dict[tuple[str, float], float] = {}
    order = sorted(tss, key=lambda t: t[0])
    for i, (onset, ratio, beat) in enumerate(order):
        end = order[i + 1][0] if i + 1 < len(order) else span
        lo = 0.0 if i == 0 else max(onset, 0.0)  # the first signature also covers a leading pickup
        hi = min(end, span)
        cover[(ratio, beat)] = cover.get((ratio, beat), 0.0) + max(hi - lo, 0.0)
    best = max(cover.items(), key=lambda kv: kv[1])
    if best[1] <= 0:
        return order[0][1], order[0][2]
    return best[0]


def loop_events(events: list[NoteEvent], period: float, span: float) -> tuple[list[NoteEvent], int]:
    """Repeats the events every ``period`` quarters until ``span`` quarters are covered; cuts at ``span``.

    Short folk tunes are looped (played again from the top, as they are in practice) so clips are full of
    music instead of padded with silence.

    Returns:
        The events starting before ``span`` (durations cut at ``span``) and the number of passes used.
    """
    out: list[NoteEvent] = []
    passes = 0
    period = max(period, 1e-3)
    while passes < MAX_LOOPS and passes * period < span:
        shift = passes * period
        for e in events:
            onset = e.onset + shift
            if onset >= span:
                break
            out.append(NoteEvent(onset, min(e.duration, span - onset), e.pitch, e.part))
        passes += 1
    return out, passes


def _varlen(value: int) -> bytes:
    buf = [value & 0x7F]
    value >>= 7
    while value:
        buf.append((value & 0x7F) | 0x80)
        value >>= 7
    return bytes(reversed(buf))


def write_midi(
    path: str | os.PathLike[str],
    events: list[NoteEvent],
    quarter_bpm: float,
    program: int,
    *,
    velocity: int = DEFAULT_VELOCITY,
    end_quarters: float | None = None,
) -> None:
    """Writes a type-0 Standard MIDI File playing ``events`` on one General MIDI program.

    Each part gets its own channel (skipping the drum channel 10; parts beyond 15 share channels), all with
    ``program``. Every note-on has a matching note-off; note-offs sort before note-ons at the same tick, and
    "all notes off" (CC 123) is sent on every channel at the end.

    Args:
        path: Output ``.mid`` path.
        events: Notes (onsets/durations in quarter notes).
        quarter_bpm: Tempo in quarter notes per minute.
        program: General MIDI program, 0-127.
        velocity: Note-on velocity.
        end_quarters: Where the track ends (defaults to the last note-off).
    """
    channels = [c for c in range(16) if c != 9]
    tpq = TICKS_PER_QUARTER
    timed: list[tuple[int, int, bytes]] = []  # (tick, order, message); order: 0 setup, 1 off, 2 on, 3 end
    used = sorted({e.part for e in events})
    chan_of = {p: channels[i % len(channels)] for i, p in enumerate(used)}
    for ch in sorted(set(chan_of.values())):
        timed.append((0, 0, bytes([0xC0 | ch, program & 0x7F])))
        timed.append((0, 0, bytes([0xB0 | ch, 7, 100])))  # channel volume
    last = 0
    for e in events:
        ch = chan_of[e.part]
        on = int(round(e.onset * tpq))
        off = max(on + 1, int(round((e.onset + e.duration) * tpq)))
        timed.append((on, 2, bytes([0x90 | ch, e.pitch, velocity])))
        timed.append((off, 1, bytes([0x80 | ch, e.pitch, 0])))
        last = max(last, off)
    end = max(last, int(round((end_quarters or 0.0) * tpq)))
    for ch in sorted(set(chan_of.values())):
        timed.append((end, 3, bytes([0xB0 | ch, 123, 0])))
    timed.sort(key=lambda t: (t[0], t[1]))
    tempo_us = max(1, min(0xFFFFFF, int(round(60_000_000 / quarter_bpm))))
    track = bytearray(b"\x00\xff\x51\x03" + tempo_us.to_bytes(3, "big"))
    now = 0
    for tick, _, msg in timed:
        track += _varlen(tick - now) + msg
        now = tick
    track += b"\x00\xff\x2f\x00"
    header = b"MThd" + struct.pack(">IHHH", 6, 0, 1, tpq)
    Path(path).write_bytes(header + b"MTrk" + struct.pack(">I", len(track)) + bytes(track))


def _limit_file_size(max_bytes: int) -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (max_bytes, max_bytes))


def render_midi_to_wav(
    midi_path: str | os.PathLike[str],
    wav_path: str | os.PathLike[str],
    *,
    soundfont: str | os.PathLike[str] | None = None,
    sample_rate: int = SAMPLE_RATE,
    gain: float = DEFAULT_GAIN,
    timeout_s: float = 60.0,
    max_bytes: int = 64 * 2**20,
) -> None:
    """Renders a MIDI file with fluidsynth (fast render to a float WAV), guarded by a timeout and a size cap.

    The child runs with ``RLIMIT_FSIZE = max_bytes`` (the kernel stops it with SIGXFSZ when the file would grow
    past the cap) in its own session, with ``SDL_AUDIODRIVER=dummy``, and is killed after ``timeout_s`` seconds.
    The limit is set by util-linux ``prlimit`` exec'ing fluidsynth, not by a Python ``preexec_fn``: running Python
    between fork and exec aborts the child in a process that has loaded gRPC (pymilvus), seen as exit code -6.

    Raises:
        RenderError: ``timeout``, ``size_cap`` or ``fluidsynth_error``.
    """
    cmd = [
        find_fluidsynth(),
        "-ni",
        "-q",
        "-F",
        str(wav_path),
        "-T",
        "wav",
        "-O",
        "float",
        "-r",
        str(sample_rate),
        "-g",
        str(gain),
        "-o",
        "synth.cpu-cores=1",
        str(find_soundfont(soundfont)),
        str(midi_path),
    ]
    # fluidsynth 2.3 initialises SDL audio at start-up even for a file render; SDL's PulseAudio backend then
    # ftruncates a 64 MiB shared-memory file, which RLIMIT_FSIZE (rightly) kills. The dummy driver avoids it.
    env = {**os.environ, "SDL_AUDIODRIVER": "dummy"}
    prlimit = shutil.which("prlimit")
    limit: dict[str, Any] = {}
    if prlimit is not None:
        cmd = [prlimit, f"--fsize={int(max_bytes)}:{int(max_bytes)}", "--", *cmd]
    else:  # no util-linux: fall back to setting the limit in the forked child
        limit["preexec_fn"] = functools.partial(_limit_file_size, int(max_bytes))
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
        **limit,
    )
    try:
        _, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise RenderError("timeout", f"fluidsynth still running after {timeout_s:g} s") from None
    size = Path(wav_path).stat().st_size if Path(wav_path).exists() else 0
    if proc.returncode == -signal.SIGXFSZ or size >= max_bytes:
        raise RenderError("size_cap", f"fluidsynth output reached the {max_bytes:,}-byte cap")
    if proc.returncode != 0:
        msg = err.decode(errors="replace").strip()[-300:]
        raise RenderError("fluidsynth_error", f"exit code {proc.returncode}: {msg}")
    if size == 0:
        raise RenderError("fluidsynth_error", "fluidsynth wrote no audio")


def to_mono_clip(audio: np.ndarray, n_samples: int) -> np.ndarray:
    """Downmixes to mono (channel mean), trims or zero-pads to ``n_samples`` and fades out the last 100 ms."""
    x = np.asarray(audio, dtype=np.float32)
    if x.ndim == 2:
        x = x.mean(axis=1)
    x = x[:n_samples]
    if len(x) < n_samples:
        x = np.concatenate([x, np.zeros(n_samples - len(x), dtype=np.float32)])
    fade = min(int(FADE_OUT_S * SAMPLE_RATE), n_samples)
    if fade:
        x[-fade:] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return x


def peak_normalize(x: np.ndarray, peak_dbfs: float = PEAK_DBFS) -> np.ndarray:
    """Scales audio so its absolute peak is ``peak_dbfs`` dB full scale (silence is returned unchanged)."""
    peak = float(np.max(np.abs(x))) if len(x) else 0.0
    if peak <= 0:
        return x
    return (x * (10 ** (peak_dbfs / 20) / peak)).astype(np.float32)


def render_events(
    events: list[NoteEvent],
    *,
    quarter_bpm: float,
    program: int,
    seconds: float,
    soundfont: str | os.PathLike[str] | None = None,
    gain: float = DEFAULT_GAIN,
    timeout_s: float = 60.0,
    max_bytes: int | None = None,
    tmp_dir: str | os.PathLike[str] | None = None,
) -> np.ndarray:
    """Renders note events to a fixed-length 16 kHz mono float32 clip, peak-normalised to -1 dBFS.

    Args:
        events: Notes to play (already cut to the clip span).
        quarter_bpm: Tempo in quarter notes per minute.
        program: General MIDI program.
        seconds: Clip length; the audio is trimmed/zero-padded to exactly ``round(seconds * 16000)`` samples.
        soundfont: ``.sf2`` file (default :func:`find_soundfont`).
        gain: fluidsynth master gain.
        timeout_s: Wall-clock limit of the fluidsynth run.
        max_bytes: File-size cap of fluidsynth's WAV; default 4x the expected size of ``seconds + 5`` s of
            float stereo audio.
        tmp_dir: Where the temporary MIDI/WAV go.

    Raises:
        RenderError: On any render failure, or ``silent`` when the clip's RMS is below ``1e-4``.
    """
    import soundfile as sf

    n = int(round(seconds * SAMPLE_RATE))
    if max_bytes is None:
        max_bytes = int(4 * (seconds + 5) * SAMPLE_RATE * 2 * 4) + 2**20
    with tempfile.TemporaryDirectory(dir=tmp_dir, prefix="thaw-render-") as tmp:
        mid, wav = Path(tmp) / "clip.mid", Path(tmp) / "clip.wav"
        write_midi(mid, events, quarter_bpm, program, end_quarters=seconds * quarter_bpm / 60.0)
        render_midi_to_wav(
            mid, wav, soundfont=soundfont, sample_rate=SAMPLE_RATE, gain=gain, timeout_s=timeout_s, max_bytes=max_bytes
        )
        try:
            audio, sr = sf.read(str(wav), dtype="float32", always_2d=True)
        except Exception as exc:  # truncated/garbled file
            raise RenderError("bad_audio", f"cannot read fluidsynth output: {exc}") from exc
    if sr != SAMPLE_RATE:
        raise RenderError("bad_audio", f"fluidsynth wrote {sr} Hz, expected {SAMPLE_RATE}")
    x = to_mono_clip(audio, n)
    if not np.all(np.isfinite(x)):
        raise RenderError("bad_audio", "non-finite samples")
    rms = float(np.sqrt(np.mean(x.astype(np.float64) ** 2)))
    if rms < SILENCE_RMS:
        raise RenderError("silent", f"clip RMS {rms:.2e} below {SILENCE_RMS:g}")
    return peak_normalize(x)
