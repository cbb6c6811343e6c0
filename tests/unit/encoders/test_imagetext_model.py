"""FLAVA-style image–text model: smoke training on real OpenMoji pairs, resume, ONNX export contract, weighting.

Uses the built corpus (``thaw corpus imagetext build``, run by setup); when it is missing, a small real one
is built from 80 OpenMoji emojis in a temporary directory with the workloads API.
"""

import json

import numpy as np
import pytest
import torch

from encoders.imagetext import (
    FUSION_MODEL,
    IMAGE_MODEL,
    IMAGE_SIZE,
    MODEL_NAMES,
    OPSET,
    TEXT_MODEL,
    ImageTextEncoder,
    load_imagetext_encoder,
    load_tokenizer,
    preprocess_images,
    tokenize,
)
from encoders.media import DecodedImage, MediaError
from encoders.models.flava import (
    FlavaConfig,
    FlavaModel,
    flava_loss,
    misalignment_weights,
    sample_hard_negatives,
)
from encoders.registry import ModelRegistry
from encoders.training.export_imagetext import export_flava, load_image_backbone, load_text_backbone
from encoders.training.flava import (
    FlavaTrainConfig,
    auc,
    fit,
    random_recall,
    retrieval_recall,
)
from workloads.imagetext import (
    build_imagetext_corpus,
    fetch_openmoji,
    load_imagetext_corpus,
    load_openmoji_entries,
)

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out

SMALL = FlavaConfig(dim=64, fusion_depth=1, fusion_heads=4, mlp_ratio=2.0, dropout=0.0, text_adapter_layers=1)


@pytest.fixture(scope="module")
def corpus_dir(tmp_path_factory):
    try:
        return str(load_imagetext_corpus().root)
    except FileNotFoundError:
        pkg = fetch_openmoji()
        ids = [e.id for e in load_openmoji_entries(pkg) if not e.is_skintone][:80]
        out = tmp_path_factory.mktemp("imagetext")
        build_imagetext_corpus(out, ids=ids, workers=2, progress=False, package_dir=pkg)
        return str(out)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return tmp_path_factory.mktemp("flava-runs")


def _cfg(corpus_dir, runs, name, **kw):
    base = dict(model=SMALL, out_dir=str(runs / name), cache_dir=str(runs / "cache"),
                limit=64, batch_size=16, lr=2e-3, warmup_steps=2, epochs=3, misaligned="soft", warmup_epochs=1,
                threads=2, export=False, progress=False, seed=3)
    base.update(kw)
    return FlavaTrainConfig(**base)


def _fit(corpus_dir, runs, name, **kw):
    return fit(_cfg(corpus_dir, runs, name, **kw), load_imagetext_corpus(corpus_dir))


@pytest.fixture(scope="module")
def smoke(corpus_dir, runs):
    return _fit(corpus_dir, runs, "smoke")


def test_smoke_training_loss_goes_down(smoke, runs):
    model, report = smoke
    hist = report["history"]
    assert [h["epoch"] for h in hist] == [1, 2, 3]
    assert hist[-1]["total"] < hist[0]["total"] - 0.05, [h["total"] for h in hist]
    assert hist[-1]["itc"] < hist[0]["itc"]
    # the misaligned weighting starts after the warm-up epoch and is recorded
    assert hist[0]["weights"] == {} and "mean_weight_clean" in hist[1]["weights"]
    assert report["data"]["pairs"]["train"] == 64 and report["data"]["train_misaligned_pairs"] > 0
    for split in ("val", "test"):
        m = report[split]
        assert 0.0 <= m["i2t_R@1"] <= m["i2t_R@10"] <= 1.0 and 0.0 <= m["detect_auc_itm"] <= 1.0
    out = runs / "smoke"
    assert (out / "loss_curve.png").stat().st_size > 1000
    assert (out / "checkpoints" / "epoch-003.pt").is_file() and (out / "last.pt").is_file()
    saved = json.loads((out / "report.json").read_text())
    assert saved["run_id"] == report["run_id"] and saved["steps_done"] == report["steps_done"] == 12
    assert list((runs / "cache").glob("*/image_tokens.npy")), "backbone features are cached as npy"


def test_resume_continues_exactly(corpus_dir, runs):
    straight, straight_rep = _fit(corpus_dir, runs, "straight", epochs=2)
    # an interrupted run: epoch 1 is checkpointed, epoch 2 stops after one step (as if the process died)
    first = _fit(corpus_dir, runs, "resumed", epochs=2, max_steps=5)[1]
    assert first["epochs_done"] == 1 and first["stopped_early"] and first["resumed_from"] is None
    model, rep = _fit(corpus_dir, runs, "resumed", epochs=2)
    assert rep["resumed_from"] is not None and rep["epochs_done"] == 2 and rep["run_id"] == first["run_id"]
    # same batches, negatives and weights: equal up to float summation order (2 threads: ~1e-7 per step)
    np.testing.assert_allclose([s["total"] for s in rep["steps"]], [s["total"] for s in straight_rep["steps"]],
                               rtol=1e-4)
    a, b = straight.state_dict(), model.state_dict()
    for k in a:
        torch.testing.assert_close(a[k], b[k], rtol=1e-3, atol=1e-4, msg=k)
    # another configuration does not resume from that checkpoint
    other = _fit(corpus_dir, runs, "resumed", epochs=1)[1]
    assert other["resumed_from"] is None


@pytest.fixture(scope="module")
def exported(smoke, tmp_path_factory):
    model = smoke[0]
    ib, tb = load_image_backbone(), load_text_backbone()
    reg = ModelRegistry(tmp_path_factory.mktemp("models"))
    assert load_imagetext_encoder(reg) is None  # nothing published: None, never a stand-in
    export_flava(model, reg, "7", image_backbone=ib, text_backbone=tb, extra={"run_id": smoke[1]["run_id"]})
    enc = load_imagetext_encoder(reg, threads=2, micro_batch=2)
    assert isinstance(enc, ImageTextEncoder)
    return model.eval(), ib, tb, reg, enc


TEXTS = ["grinning face — smile, happy; group: smileys-emotion / face-smiling", "", "guitar " * 80]


def _images(corpus_dir):
    c = load_imagetext_corpus(corpus_dir)
    odd = np.random.default_rng(0).integers(0, 256, (37, 90, 3), dtype=np.uint8)  # non-square, other size
    return [DecodedImage(c.image(0)), DecodedImage(c.image(1)), DecodedImage(odd)]


def test_onnx_graphs_match_torch(exported, corpus_dir):
    model, ib, tb, reg, enc = exported
    images = _images(corpus_dir)
    with torch.no_grad():
        ie, itok = model.encode_image(ib(torch.from_numpy(preprocess_images(images))))
        tok = load_tokenizer(reg.load(TEXT_MODEL).path / "tokenizer.json", model.cfg.max_text_tokens)
        ids, mask = (torch.from_numpy(a) for a in tokenize(tok, TEXTS))
        te, ttok = model.encode_text(tb(input_ids=ids, attention_mask=mask).last_hidden_state, mask)
        fused, logit = model.fuse(itok, torch.ones(itok.shape[:2]), ttok, mask)
    got_i = enc.encode_images(images)
    got_t = enc.encode_texts(TEXTS)
    got_f, got_m = enc.fuse(images, TEXTS)
    np.testing.assert_allclose(got_i, ie.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_t, te.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_f, fused.numpy(), atol=1e-4)
    np.testing.assert_allclose(got_m, torch.sigmoid(logit).numpy(), atol=1e-4)
    for arr in (got_i, got_t, got_f):
        assert arr.dtype == np.float32 and arr.shape == (3, enc.dim)
        np.testing.assert_allclose(np.linalg.norm(arr, axis=1), 1.0, atol=1e-5)
    assert got_m.shape == (3,) and ((got_m > 0) & (got_m < 1)).all()


def test_manifests_and_serving_edges(exported):
    _, _, _, reg, enc = exported
    assert enc.model_version == "flava@7" and enc.dim == 64
    for name in MODEL_NAMES:
        m = reg.load(name).manifest
        assert m.opset == OPSET == 17 and m.dim == 64 and m.extra["run_id"]
        pre = m.extra["preprocessing"]
        assert pre["image_size"] == IMAGE_SIZE and pre["background"] == "#ffffff" and pre["mean"] == [127.0] * 3
        assert m.extra["family"] == "flava"
    img = reg.load(IMAGE_MODEL).manifest
    assert img.inputs[0].dtype == "uint8" and img.inputs[0].shape == ["batch", 3, 224, 224]
    assert [o.name for o in reg.load(FUSION_MODEL).manifest.outputs] == ["fused", "match"]
    assert enc.encode_images([]).shape == (0, 64) and enc.encode_texts([]).shape == (0, 64)
    f, m = enc.fuse([], [])
    assert f.shape == (0, 64) and m.shape == (0,)
    with pytest.raises(MediaError, match="H x W x 3 uint8"):
        enc.encode_images([DecodedImage(np.zeros((8, 8), dtype=np.uint8))])
    with pytest.raises(MediaError, match="empty image"):
        enc.encode_images([DecodedImage(np.zeros((0, 8, 3), dtype=np.uint8))])
    with pytest.raises(ValueError, match="one text per image"):
        enc.fuse([DecodedImage(np.zeros((8, 8, 3), dtype=np.uint8))], [])
    with pytest.raises(ValueError, match="must be str"):
        enc.encode_texts([None])  # type: ignore[list-item]


def test_misalignment_weights_behave_as_specified():
    s = np.array([0.9, 0.1, 0.5, 0.7, 0.05, 0.95, 0.6, 0.8, 0.3, 0.99])
    np.testing.assert_array_equal(misalignment_weights(s, "none"), np.ones(10, np.float32))
    soft = misalignment_weights(s, "soft")
    assert soft.dtype == np.float32 and soft.mean() == pytest.approx(1.0, abs=1e-6)
    np.testing.assert_allclose(soft, s / s.mean(), rtol=1e-6)  # proportional to the ITM probability
    sharp = misalignment_weights(s, "soft", power=2.0)
    assert sharp[4] < soft[4] and sharp.mean() == pytest.approx(1.0, abs=1e-6)
    drop = misalignment_weights(s, "drop", drop_share=0.2)
    assert set(np.flatnonzero(drop == 0)) == {1, 4} and (drop[drop > 0] == 1).all()  # the two lowest scores
    assert misalignment_weights(s, "drop", drop_share=0.0).min() == 1.0
    assert misalignment_weights(np.zeros(0), "drop").shape == (0,)
    for bad in (np.array([0.5, np.nan]), np.array([1.5]), np.array([-0.1])):
        with pytest.raises(ValueError, match="probabilities"):
            misalignment_weights(bad, "soft")
    with pytest.raises(ValueError, match="unknown"):
        misalignment_weights(s, "median")
    with pytest.raises(ValueError, match="drop_share"):
        misalignment_weights(s, "drop", drop_share=1.0)


def test_weighted_contrastive_loss_and_hard_negatives():
    torch.manual_seed(0)
    cfg = FlavaConfig(dim=32, fusion_depth=1, fusion_heads=4, image_tokens=4, image_feat_dim=16, text_feat_dim=12,
                      max_text_tokens=6, dropout=0.0)
    model = FlavaModel(cfg).eval()
    b = 6
    img, st = torch.randn(b, 4, 16), torch.randn(b, 6, 12)
    mask = torch.ones(b, 6, dtype=torch.long)
    mask[0, 3:] = 0
    cap, grp = torch.tensor([0, 1, 2, 3, 4, 5]), torch.tensor([0, 1, 2, 3, 4, 5])
    w = torch.tensor([1.0, 0.0, 2.0, 1.0, 0.5, 1.0])
    with torch.no_grad():
        ie, _ = model.encode_image(img)
        te, _ = model.encode_text(st, mask)
        sim = model.logit_scale.exp() * ie @ te.T
        per = (torch.nn.functional.cross_entropy(sim, torch.arange(b), reduction="none")
               + torch.nn.functional.cross_entropy(sim.T, torch.arange(b), reduction="none")) / 2
        expect = float((per * w).sum() / w.sum())
        got = flava_loss(model, img, st, mask, cap, grp, w, generator=torch.Generator().manual_seed(0))
        plain = flava_loss(model, img, st, mask, cap, grp, None, generator=torch.Generator().manual_seed(0))
        ones = flava_loss(model, img, st, mask, cap, grp, torch.ones(b), generator=torch.Generator().manual_seed(0))
    assert got.itc == pytest.approx(expect, rel=1e-5)
    assert plain.itc == pytest.approx(ones.itc, rel=1e-6) and plain.itm == pytest.approx(ones.itm, rel=1e-6)
    # hard negatives never pick the pair itself nor an identical caption/image
    same = torch.eye(b, dtype=torch.bool)
    same[0, 1] = same[1, 0] = True
    g = torch.Generator().manual_seed(1)
    for _ in range(50):
        neg = sample_hard_negatives(torch.randn(b, b) * 5, same, g)
        assert not same[torch.arange(b), neg].any()


def test_metrics():
    rel = np.eye(4, dtype=bool)
    assert retrieval_recall(np.eye(4), rel)["i2t_R@1"] == 1.0
    assert retrieval_recall(-np.eye(4), rel, ks=(1, 4))["t2i_R@4"] == 1.0
    assert retrieval_recall(-np.eye(4), rel)["t2i_R@1"] == 0.0
    assert random_recall(rel, ks=(1,))["i2t_R@1"] == pytest.approx(0.25)
    assert auc(np.array([0.1, 0.2, 0.8, 0.9]), np.array([0, 0, 1, 1])) == 1.0
    assert auc(np.array([0.5, 0.5]), np.array([0, 1])) == 0.5
    assert np.isnan(auc(np.array([0.5]), np.array([1])))
