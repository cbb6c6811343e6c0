"""Serving exported encoders with ONNX Runtime: sessions, execution providers, micro-batching, latency.

Every served encoder is an ONNX graph in the versioned model directory (:mod:`encoders.registry`), and its
session is built from the graph's verified bytes.
:class:`OnnxModel` opens one version with the CUDA execution provider when ONNX Runtime has it (the ``thaw[gpu]``
extra installs ``onnxruntime-gpu``) and the CPU one otherwise, runs inputs in micro-batches along their first axis
and keeps the latency of the last call and a bounded history of per-batch latencies for metrics and benchmarks.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Mapping

import numpy as np

from encoders.registry import GRAPH, ModelVersion


def onnx_providers(prefer_gpu: bool = True) -> list[str]:
    """CUDA execution provider when ONNX Runtime has it (``pip install 'thaw[gpu]'``), else CPU."""
    import onnxruntime as ort

    avail = ort.get_available_providers()
    if prefer_gpu and "CUDAExecutionProvider" in avail:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """One published model version in an ONNX Runtime session.

    Args:
        version: the model version; the session is built from the verified bytes of its ``model.onnx``
            (:meth:`~encoders.registry.ModelVersion.read_bytes`: the ones checked at load when they were kept,
            else read and checked again), never from a second open of the path a writer could have swapped.
        threads: intra-op threads (CPU provider).
        micro_batch: rows per ``session.run`` call; inputs are split along axis 0.
        prefer_gpu: use CUDA when available.
    """

    def __init__(self, version: ModelVersion, threads: int = 2, micro_batch: int = 32, prefer_gpu: bool = True) -> None:
        import onnxruntime as ort

        self.version = version
        self.micro_batch = max(1, int(micro_batch))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.providers = onnx_providers(prefer_gpu)
        self._sess = ort.InferenceSession(self._graph(), so, providers=self.providers)
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self.last_batch_ms = 0.0
        self.batch_ms: deque[float] = deque(maxlen=4096)

    def _graph(self) -> str | bytes:
        """What the session is built from: the verified bytes of the version's graph.

        Raises:
            encoders.registry.ModelIntegrityError: The graph's bytes do not match the manifest (or it is missing).
        """
        return self.version.read_bytes(GRAPH)

    @property
    def model_version(self) -> str:
        """``name@version``, recorded with every vector this model produced."""
        return f"{self.version.manifest.name}@{self.version.manifest.version}"

    @property
    def dim(self) -> int:
        return self.version.manifest.dim

    def run(self, inputs: Mapping[str, np.ndarray], outputs: list[str] | None = None) -> list[np.ndarray]:
        """Run all rows of ``inputs`` (same length along axis 0) in micro-batches; outputs concatenated."""
        t0 = time.perf_counter()
        names = outputs or self.output_names
        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"{self.model_version}: missing inputs {sorted(missing)}")
        n = {int(v.shape[0]) for v in inputs.values()}
        if len(n) != 1:
            raise ValueError(f"{self.model_version}: inputs disagree on the batch size {sorted(n)}")
        rows = n.pop()
        parts: list[list[np.ndarray]] = [[] for _ in names]
        for s in range(0, rows, self.micro_batch):
            feed = {k: inputs[k][s : s + self.micro_batch] for k in self.input_names}
            for j, out in enumerate(self._sess.run(names, feed)):
                parts[j].append(out)
        self.last_batch_ms = (time.perf_counter() - t0) * 1000.0
        self.batch_ms.append(self.last_batch_ms)
        if rows == 0:
            return [np.zeros((0,), dtype=np.float32) for _ in names]
        return [np.concatenate(p, axis=0) for p in parts]
