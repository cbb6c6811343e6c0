"""Audio MAE and MusicCLIP on real rendered clips: a short training lowers the loss, the ONNX export matches torch
in ONNX Runtime, the serving classes and loader work, and a resumed training run equals an uninterrupted one."""

from dataclasses import replace

import numpy as np
import pytest
import torch
from audio_testdata import minilm_registry, music_clips

from encoders.audio import (
    AUDIO_MAE,
    MUSICCLIP_AUDIO,
    MUSICCLIP_TEXT,
    AudioMAEEncoder,
    MusicCLIPEncoder,
    load_audio_encoders,
)
from encoders.audio_frontend import AudioInputError, LogMelConfig, log_mel
from encoders.media import DecodedAudio
from encoders.models.audio_mae import AudioMAE, AudioMAEConfig
from encoders.models.musicclip import MusicCLIP, MusicCLIPConfig, clip_loss
from encoders.registry import ModelRegistry
from encoders.text import MODEL_NAME as MINILM
from encoders.text import TextEncoder
from encoders.training.export_audio import export_audio_mae, export_musicclip
from tests.thaw_cli import thaw
from workloads.music import load_music_corpus

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out

FE = LogMelConfig()
STEPS = 20
TINY_MAE = AudioMAEConfig(dim=32, depth=1, heads=2, dec_dim=16, dec_depth=1, dec_heads=2)
TINY_CLIP = MusicCLIPConfig(channels=(4, 8, 8, 16), audio_hidden=32, text_hidden=32, embed_dim=16, dropout=0.0)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    return load_music_corpus(music_clips(tmp_path_factory.getbasetemp()))


@pytest.fixture(scope="module")
def logmels(corpus):
    return torch.from_numpy(np.stack([log_mel(corpus.waveform(i), 16_000, FE) for i in range(len(corpus))]))


@pytest.fixture(scope="module")
def text_encoder(tmp_path_factory):
    reg = ModelRegistry(minilm_registry(tmp_path_factory.getbasetemp()))
    return TextEncoder(reg.load(MINILM), threads=1)


@pytest.fixture(scope="module")
def captions(corpus, text_encoder):
    return torch.from_numpy(text_encoder.encode(corpus.captions))


def _norm_stats(x: torch.Tensor) -> dict[str, float]:
    return {"input_mean": float(x.mean()), "input_std": float(x.std())}


def _mae_eval_loss(model: AudioMAE, x: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(x, generator=torch.Generator().manual_seed(7))[0])


def _clip_eval_loss(model: MusicCLIP, x: torch.Tensor, t: torch.Tensor) -> float:
    model.eval()
    with torch.no_grad():
        return float(model(x, t, torch.arange(len(x))))


@pytest.mark.parametrize("name", ["audio-mae", "musicclip"])
def test_a_few_steps_on_real_clips_lower_the_loss(name, logmels, captions):
    torch.manual_seed(0)
    if name == "audio-mae":
        model: torch.nn.Module = AudioMAE(replace(TINY_MAE, **_norm_stats(logmels)))

        def evaluate() -> float:
            return _mae_eval_loss(model, logmels)

        def loss_fn(step: int) -> torch.Tensor:
            return model(logmels, generator=torch.Generator().manual_seed(step))[0]
    else:
        model = MusicCLIP(replace(TINY_CLIP, **_norm_stats(logmels)))

        def evaluate() -> float:
            return _clip_eval_loss(model, logmels, captions)

        def loss_fn(step: int) -> torch.Tensor:
            return model(logmels[:, :, step * 37 % 600 :][:, :, :400], captions, torch.arange(len(captions)))

    before = evaluate()
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for step in range(STEPS):
        model.train()
        loss = loss_fn(step)
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = evaluate()
    assert np.isfinite(before) and after < 0.8 * before, (name, before, after)


def test_duplicate_captions_are_not_negatives():
    a = torch.nn.functional.normalize(torch.randn(4, 8), dim=1)
    t = a.clone()
    t[1] = t[0]  # clips 0 and 1 share one caption
    ids = torch.tensor([5, 5, 6, 7])
    masked = clip_loss(a, t, torch.tensor(10.0), ids)
    unmasked = clip_loss(a, t, torch.tensor(10.0))
    # with the duplicate masked, clip 0's text row no longer competes with the identical caption of clip 1
    assert masked < unmasked
    # masking only removes the duplicate pair: with distinct ids the two losses agree
    np.testing.assert_allclose(float(clip_loss(a, t, torch.tensor(10.0), torch.arange(4))), float(unmasked), rtol=1e-6)


def test_mae_masking_hides_the_configured_share(logmels):
    model = AudioMAE(replace(TINY_MAE, **_norm_stats(logmels)))
    _, pred, mask = model(logmels)
    n = model.cfg.n_patches
    assert pred.shape == (len(logmels), n, model.cfg.patch_size) and n == 4 * 62
    assert mask.shape == (len(logmels), n)
    assert (mask.sum(dim=1) == n - round(n * 0.2)).all()
    with pytest.raises(ValueError):
        model(logmels[:, :32])


def test_onnx_export_matches_torch_and_serves(tmp_path, corpus, logmels, captions, text_encoder):
    reg = ModelRegistry(tmp_path)
    assert load_audio_encoders(reg, text_encoder) == (None, None)
    torch.manual_seed(0)
    mae = AudioMAE(replace(TINY_MAE, **_norm_stats(logmels))).eval()
    clip = MusicCLIP(replace(TINY_CLIP, **_norm_stats(logmels))).eval()
    training = {"corpus": "test clips", "clips": len(corpus)}
    mv = export_audio_mae(mae, reg, "1", FE, training=training)
    av, tv = export_musicclip(clip, reg, "1", FE, text_encoder.model_version, training=training)
    assert mv.manifest.opset == 17 and mv.manifest.dim == 32 and mv.manifest.extra["frontend"] == FE.to_dict()
    assert av.manifest.inputs[0].shape == ["batch", 64, "frames"] and tv.manifest.inputs[0].shape == ["batch", 384]
    assert av.manifest.extra["training"] == training and av.manifest.extra["text_model"] == text_encoder.model_version

    with torch.no_grad():
        ref_mae = torch.nn.functional.normalize(mae.embed(logmels), dim=1).numpy()
        ref_audio = clip.audio(logmels).numpy()
        ref_text = clip.text(captions).numpy()
    enc_mae, enc_clip = load_audio_encoders(reg, text_encoder, threads=1, micro_batch=2)
    assert isinstance(enc_mae, AudioMAEEncoder) and isinstance(enc_clip, MusicCLIPEncoder)
    audios = [DecodedAudio(corpus.waveform(i), 16_000) for i in range(len(corpus))]
    got_mae = enc_mae.encode(audios)
    assert got_mae.shape == (3, 32) and got_mae.dtype == np.float32 and enc_mae.dim == 32
    np.testing.assert_allclose(got_mae, ref_mae, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got_mae, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(enc_clip.encode_audio(audios), ref_audio, atol=1e-4)
    np.testing.assert_allclose(enc_clip.encode_text(corpus.captions), ref_text, atol=1e-4)
    # the audio tower is length-agnostic: a 4 s crop also runs
    assert enc_clip.encode_logmel(logmels[:, :, :400].numpy()).shape == (3, 16)
    assert enc_mae.model_version == f"{AUDIO_MAE}@1" and enc_clip.model_version == f"{MUSICCLIP_AUDIO}@1"
    assert enc_mae.encode([]).shape == (0, 32) and enc_clip.encode_text([]).shape == (0, 16)
    with pytest.raises(AudioInputError, match="item 1"):
        enc_mae.encode([audios[0], DecodedAudio(np.zeros(16_000, np.float32), 16_000)])
    # MusicCLIP needs its text model; without one it is not loaded (never a stand-in)
    assert load_audio_encoders(reg, None)[1] is None
    assert reg.current_version(MUSICCLIP_TEXT) == "1"


def test_training_resumes_exactly_and_publishes(tmp_path, tmp_path_factory, corpus, monkeypatch):
    import encoders.training.audio_mae as audio_mae
    from encoders.training.audio_mae import AudioMAETrainConfig, train

    base = AudioMAETrainConfig(
        cache_dir=str(tmp_path / "cache"),
        model=TINY_MAE,
        epochs=2,
        batch_size=2,
        train_splits=("train", "val", "test"),
        export=False,
        progress=False,
    )
    straight = train(replace(base, out_dir=str(tmp_path / "a")), corpus)
    first = train(replace(base, out_dir=str(tmp_path / "b"), epochs=1), corpus)
    resumed = train(replace(base, out_dir=str(tmp_path / "b"), export=True, models_dir=str(tmp_path / "m")), corpus)
    assert first["resumed_from_epoch"] == 0 and resumed["resumed_from_epoch"] == 1
    np.testing.assert_allclose(resumed["history"]["steps"], straight["history"]["steps"], rtol=1e-5)
    sa = torch.load(tmp_path / "a" / "checkpoints" / "last.pt", weights_only=False)["model"]
    sb = torch.load(tmp_path / "b" / "checkpoints" / "last.pt", weights_only=False)["model"]
    for k in sa:
        torch.testing.assert_close(sa[k], sb[k], rtol=1e-5, atol=1e-6)
    assert (tmp_path / "b" / "loss.png").stat().st_size > 1000
    assert len(list((tmp_path / "cache").glob("logmels-*.npy"))) == 2  # log-mels + validity mask
    pub = resumed["published"]
    mv = ModelRegistry(tmp_path / "m").load(AUDIO_MAE)
    assert mv.manifest.version == pub["version"] and mv.manifest.extra["training"]["clips"] == 3
    # the command line maps onto the same config
    configs = []
    monkeypatch.setattr(audio_mae, "train", lambda c, corpus: configs.append(c) or {})
    thaw("train", "audio-mae", "--corpus-dir", str(corpus.root), "--epochs", "3", "--no-export", "--dim", "64",
         "--threads", "2")
    (cfg,) = configs
    assert cfg.epochs == 3 and not cfg.export and cfg.model.dim == 64 and cfg.threads == 2


def test_musicclip_training_run_exports_both_towers(tmp_path, tmp_path_factory, corpus):
    from encoders.training.musicclip import MusicCLIPTrainConfig, recall_at, train

    models = minilm_registry(tmp_path_factory.getbasetemp())
    cfg = MusicCLIPTrainConfig(
        out_dir=str(tmp_path / "run"),
        cache_dir=str(tmp_path / "cache"),
        models_dir=str(models),
        model=TINY_CLIP,
        epochs=2,
        batch_size=3,
        train_splits=("train", "val", "test"),
        val_split="train",
        version="t1",
        progress=False,
    )
    report = train(cfg, corpus)
    assert len(report["history"]["train"]) == 2 and np.isfinite(report["history"]["val"]).all()
    assert report["history"]["metrics"]["val_a2t_r10"][-1] == 1.0  # 3 captions, top 10 holds them all
    reg = ModelRegistry(models)
    assert reg.current_version(MUSICCLIP_AUDIO) == reg.current_version(MUSICCLIP_TEXT) == "t1"
    hit = np.eye(3, dtype=bool)
    r = recall_at(np.array([[0.9, 0.1, 0.0], [0.8, 0.2, 0.1], [0.0, 0.1, 0.3]]), hit, ks=(1, 2))
    assert r == {1: pytest.approx(2 / 3), 2: 1.0}
