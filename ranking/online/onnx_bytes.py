"""ONNX Runtime sessions built from a version's verified bytes, not from a second open of its path.

:class:`encoders.serving.OnnxModel` opens ``model.onnx`` by path, after the registry checked the file: a writer
that replaces the file in between would have its bytes served. :class:`VerifiedOnnxModel` is the same runner (same
micro-batching, latency history and ``run``), with the session built from
:meth:`encoders.registry.ModelVersion.read_bytes` (the bytes kept at load, or read and checked again). The online
rankers and the CF projectors use it. (It overrides only what the session is built from.)
"""

from __future__ import annotations

from encoders.registry import GRAPH
from encoders.serving import OnnxModel


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

    def _graph(self) -> bytes:
        return self.version.read_bytes(GRAPH)
