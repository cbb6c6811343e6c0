"""The log-mel frontend on real rendered music: shapes, resampling, windowing, padding, level, bad input."""

import numpy as np
import pytest
from audio_testdata import music_clips
from scipy.signal import resample_poly

from encoders.audio_frontend import (
    AudioInputError,
    LogMelConfig,
    log_mel,
    log_mel_batch,
    log_mel_stats,
    mel_filterbank,
)
from workloads.music import load_music_corpus

CFG = LogMelConfig()


@pytest.fixture(scope="module")
def waves(tmp_path_factory):
    corpus = load_music_corpus(music_clips(tmp_path_factory.getbasetemp()))
    return [corpus.waveform(i) for i in range(len(corpus))]


def test_shape_dtype_and_range(waves):
    x = log_mel(waves[0], 16_000, CFG)
    assert x.shape == (64, 1000) == (CFG.n_mels, CFG.n_frames) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= np.log(CFG.log_eps) - 1e-4
    # music, not silence: most frames carry energy well above the floor
    assert (x.max(axis=0) > np.log(CFG.log_eps) + 5).mean() > 0.9
    b = log_mel_batch([(w, 16_000) for w in waves], CFG)
    assert b.shape == (len(waves), 64, 1000)
    np.testing.assert_array_equal(b[0], x)


def test_mel_filters_cover_the_band():
    fb = mel_filterbank(CFG)
    assert fb.shape == (64, 257) and (fb >= 0).all()
    assert (fb.sum(axis=1) > 0).all()  # no empty filter at 64 bands over 50 Hz - 8 kHz


def test_resampled_input_gives_nearly_the_same_spectrogram(waves):
    ref = log_mel(waves[1], 16_000, CFG)
    for rate in (44_100, 22_050, 8_000):
        y = resample_poly(waves[1].astype(np.float64), rate // 50, 16_000 // 50).astype(np.float32)
        got = log_mel(y, rate, CFG)
        assert got.shape == ref.shape
        bands = slice(0, 50) if rate == 8_000 else slice(0, 62)  # 8 kHz input has nothing above 4 kHz
        loud = ref[bands] > np.log(CFG.log_eps) + 8  # compare where there is signal
        err = np.abs(got[bands] - ref[bands])[loud]
        assert np.median(err) < 0.05, (rate, np.median(err))


def test_longer_audio_keeps_the_middle_window(waves):
    long = np.concatenate([waves[0], waves[1], waves[2]])  # 30 s
    np.testing.assert_allclose(log_mel(long, 16_000, CFG), log_mel(waves[1], 16_000, CFG), atol=1e-4)


def test_shorter_audio_is_padded(waves):
    short = waves[2][: 3 * 16_000]
    x = log_mel(short, 16_000, CFG)
    assert x.shape == (64, 1000)
    np.testing.assert_allclose(x[:, 300:], np.log(CFG.log_eps), atol=1e-5)  # frames past 3 s are padding
    assert (x[:, :295].max(axis=0) > np.log(CFG.log_eps) + 5).mean() > 0.9


def test_level_and_channels_do_not_matter(waves):
    ref = log_mel(waves[0], 16_000, CFG)
    np.testing.assert_allclose(log_mel(0.05 * waves[0], 16_000, CFG), ref, atol=1e-3)
    stereo = np.stack([waves[0], waves[0]], axis=1)
    np.testing.assert_allclose(log_mel(stereo, 16_000, CFG), ref, atol=1e-4)


@pytest.mark.parametrize(
    ("samples", "rate", "match"),
    [
        (np.zeros(0, np.float32), 16_000, "no samples"),
        (np.zeros(32_000, np.float32), 16_000, "silent"),
        (np.full(32_000, np.nan, np.float32), 16_000, "NaN"),
        (np.ones(1_000, np.float32), 16_000, "shorter"),
        (np.ones(32_000, np.float32), 0, "rate"),
        (np.ones(32_000, np.int16), 16_000, "float"),
    ],
)
def test_bad_input_is_a_clear_error(samples, rate, match):
    with pytest.raises(AudioInputError, match=match):
        log_mel(samples, rate, CFG)


def test_log_mel_stats(waves):
    x = log_mel(waves[0], 16_000, CFG)
    s = log_mel_stats(x)
    assert s.shape == (128,) and s.dtype == np.float32
    np.testing.assert_allclose(s[:64], x.mean(axis=1), rtol=1e-5)
    np.testing.assert_allclose(s[64:], x.std(axis=1), rtol=1e-4)
    b = log_mel_stats(np.stack([x, x]))
    assert b.shape == (2, 128)
    with pytest.raises(ValueError):
        log_mel_stats(np.zeros(5))


def test_config_round_trip_and_validation():
    assert LogMelConfig.from_dict(CFG.to_dict()) == CFG
    with pytest.raises(ValueError):
        LogMelConfig(f_max=9_000)


def test_a_real_recording_at_its_own_rate():
    """A singularity-music track (Ogg Vorbis, 44.1 kHz stereo, minutes long) as the worker would decode it."""
    from encoders.media import decode_audio
    from workloads.music import load_singularity

    track = min(load_singularity(), key=lambda t: t.duration)
    audio = decode_audio(track.path.read_bytes(), max_seconds=3600)
    assert audio.sample_rate != 16_000 and audio.duration_s > 20
    x = log_mel(audio.samples, audio.sample_rate, CFG)
    assert x.shape == (64, 1000) and np.isfinite(x).all()
    # the same as cutting the middle 10 s at the source rate first (up to resampling-filter edge effects)
    n = int(10 * audio.sample_rate)
    start = (len(audio.samples) - n) // 2
    ref = log_mel(audio.samples[start : start + n], audio.sample_rate, CFG)
    assert np.median(np.abs(x - ref)) < 0.05
