"""ONNX Runtime sessions built from a version's verified bytes, not from a second open of its path.

:class:`encoders.serving.OnnxModel` opens ``model.onnx`` by path, after the registry checked the file: a writer
that replaces the file in between would have its bytes served. :class:`VerifiedOnnxModel` is the same runner (same
micro-batching, latency history and ``run``), with the session built from
:meth:`encoders.registry.ModelVersion.read_bytes` (the bytes kept at load, or read and checked again). The online
rankers and the CF projectors use it. (Once ``OnnxModel`` itself takes the verified bytes, this subclass can go.)
"""

from __future__ import annotations

from collections import deque

from encoders.registry import GRAPH, ModelVersion
from encoders.serving import OnnxModel, onnx_providers


class VerifiedOnnxModel(OnnxModel):
    """:class:`OnnxModel` over the verified bytes of ``version``'s graph.

    Args:
        version: The model version (its graph is checked against the manifest's sha256 on the bytes used).
        threads: Intra-op threads (CPU provider).
        micro_batch: Rows per ``session.run`` call.
        prefer_gpu: Use CUDA when available.

    Raises:
        encoders.registry.ModelIntegrityError: The graph's bytes do not match the manifest (or it is missing).
    """

    def __init__(self, version: ModelVersion, threads: int = 2, micro_batch: int = 32,
                 prefer_gpu: bool = True) -> None:
        import onnxruntime as ort

        graph = version.read_bytes(GRAPH)
        self.version = version
        self.micro_batch = max(1, int(micro_batch))
        so = ort.SessionOptions()
        so.intra_op_num_threads = threads
        so.inter_op_num_threads = 1
        self.providers = onnx_providers(prefer_gpu)
        self._sess = ort.InferenceSession(graph, so, providers=self.providers)
        self.input_names = [i.name for i in self._sess.get_inputs()]
        self.output_names = [o.name for o in self._sess.get_outputs()]
        self.last_batch_ms = 0.0
        self.batch_ms: deque[float] = deque(maxlen=4096)
