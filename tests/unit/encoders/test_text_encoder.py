"""Export contract of the text encoder: ONNX Runtime output matches torch (sentence-transformers) output."""

import numpy as np
import pytest

from encoders.registry import ModelRegistry
from encoders.text import DIM, MODEL_NAME, TextEncoder, bundled_model_dir
from encoders.training.export_text import export_minilm

pytestmark = pytest.mark.train  # trains or exports a torch model: `make test-fast` leaves it out

TEXTS = [
    "Late-night piano sketch in D minor. tags: piano, ambient",
    "great drop at 2:10!!",
    "",
    "fan group for people who love old Irish folk tunes and reels " * 20,
    "jazz",
]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    reg = ModelRegistry(tmp_path_factory.mktemp("models"))
    export_minilm(reg)
    return TextEncoder(reg.load(MODEL_NAME), threads=2, micro_batch=2)


def test_onnx_matches_torch(encoder):
    from sentence_transformers import SentenceTransformer

    ref = SentenceTransformer(str(bundled_model_dir()), device="cpu").encode(TEXTS, normalize_embeddings=True)
    got = encoder.encode(TEXTS)
    assert got.shape == (len(TEXTS), DIM) and got.dtype == np.float32
    np.testing.assert_allclose(got, ref, atol=1e-4)
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, atol=1e-5)


def test_semantics_and_manifest(encoder):
    e = encoder.encode(["a sad piano ballad", "melancholic piano song", "football match results"])
    assert e[0] @ e[1] > e[0] @ e[2] + 0.2
    m = encoder.version.manifest
    assert m.name == MODEL_NAME and m.dim == DIM and m.opset >= 14 and len(m.sha256) == 64
    assert encoder.model_version == f"{MODEL_NAME}@1"
    assert encoder.encode([]).shape == (0, DIM)
