"""The encoder weights shipped in the repo: they install into an empty registry and every content field is served."""

import io
import json
import shutil

import numpy as np
import pytest
import soundfile as sf
from PIL import Image

from encoders.featurizer import ContentFeaturizer, ContentInput, content_document
from encoders.media import decode_audio, decode_image
from encoders.registry import ModelRegistry
from encoders.training.bundled import BUNDLE_DIR, FAMILIES, PUBLISHES, BundleError, install, read_bundle

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out


@pytest.fixture(scope="module")
def registry(tmp_path_factory):
    reg = ModelRegistry(tmp_path_factory.mktemp("bundled-models"))
    first = install(reg)
    return reg, first


def test_every_family_installs_with_its_recorded_version_and_provenance(registry):
    reg, first = registry
    assert set(first) == set(FAMILIES)
    for family, r in first.items():
        meta, _ = read_bundle(family)
        assert r == {**r, "version": meta["version"], "status": "installed", "current": True}
        for name in PUBLISHES[family]:
            mv = reg.load(name)
            assert mv.manifest.version == meta["version"]
            assert mv.manifest.extra["training"]["bundled"]["weights_sha256"] == meta["weights_sha256"]
    again = install(reg)
    assert {r["status"] for r in again.values()} == {"present"}


def test_a_registry_with_the_bundles_serves_every_content_field(registry):
    reg, _ = registry
    fz = ContentFeaturizer.from_registry(reg, threads=1)
    assert fz.missing == ()
    rng = np.random.default_rng(0)
    wav, png = io.BytesIO(), io.BytesIO()
    sf.write(wav, (0.1 * np.sin(np.linspace(0, 2000 * np.pi, 16000 * 3))).astype(np.float32), 16000, format="WAV")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(png, format="PNG")
    audio, img = decode_audio(wav.getvalue(), 60.0), decode_image(png.getvalue())
    fb = fz.featurize([ContentInput(content_document("a slow baroque piece", ["era:baroque"], "track"), img, audio)])
    assert fb.present.all()
    for name in fz.fields:
        v = fb.values[name][0]
        assert np.isfinite(v).all() and abs(float(np.linalg.norm(v)) - 1.0) < 1e-3, name


def test_damaged_weights_are_refused(tmp_path):
    shutil.copytree(BUNDLE_DIR / "audio-mae", tmp_path / "audio-mae")
    meta = json.loads((tmp_path / "audio-mae" / "bundle.json").read_text())
    meta["weights_sha256"] = "0" * 64
    (tmp_path / "audio-mae" / "bundle.json").write_text(json.dumps(meta))
    with pytest.raises(BundleError, match="sha256"):
        read_bundle("audio-mae", tmp_path)
    with pytest.raises(BundleError, match="no bundled"):
        read_bundle("flava", tmp_path)
