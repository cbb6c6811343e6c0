"""The DeepFM + MMoE ranker served with ONNX Runtime: a request (user + candidates) -> per-task probabilities.

Two published variants, trained together by :mod:`ranking.workflows.ranker` under one version name:

* ``deepfm-mmoe`` — group-wise gating (gates conditioned on new/old user x gender);
* ``deepfm-mmoe-plain`` — plain MMoE gates.

Each has its own ``CURRENT`` in the model directory, so a service A/B-tests them by loading both::

    gated = Ranker.load(models_dir)                                  # deepfm-mmoe, CURRENT version
    plain = Ranker.load(models_dir, name="deepfm-mmoe-plain")        # deepfm-mmoe-plain, CURRENT version
    pinned = Ranker.load(models_dir, version="20250101T000000Z")     # a given version
    probs = gated.score(user, items, now_ts)                         # B x T, columns = gated.tasks

The featuriser (:class:`ranking.online.features.RankFeaturizer`) comes from the version's ``schema.json``
(``vocab.featurizer``), so the inputs are computed with the statistics of the model's own training split. ONNX
Runtime runs on the CPU execution provider. :meth:`Ranker.load` reads every file of the version once, checks each
against the manifest's sha256 (:mod:`encoders.registry`) and builds the session and the featuriser from those
verified bytes; a version that fails raises :class:`encoders.registry.ModelIntegrityError` and nothing of it runs.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from encoders.registry import ModelRegistry, ModelVersion
from ranking.online.features import ItemContext, RankFeaturizer, RankInputs, UserContext
from ranking.online.onnx_bytes import VerifiedOnnxModel

__all__ = ["PLAIN_RANKER_NAME", "RANKER_NAME", "Ranker"]

RANKER_NAME = "deepfm-mmoe"
"""The group-gated variant."""
PLAIN_RANKER_NAME = "deepfm-mmoe-plain"
"""The variant with plain MMoE gates (no group conditioning)."""


class Ranker:
    """One published ranker version with its featuriser.

    Attributes:
        name: Published model name (``deepfm-mmoe`` or ``deepfm-mmoe-plain``).
        version: Version name.
        tasks: Task names, the columns of :meth:`score`.
        group_gating: Whether the gates are group-conditioned.
        featurizer: The featuriser of the model's training split.
    """

    def __init__(self, model_version: ModelVersion, featurizer: RankFeaturizer, threads: int = 1) -> None:
        m = model_version.manifest
        self.name: str = m.name
        self.version: str = m.version
        self.tasks: tuple[str, ...] = tuple(m.extra.get("tasks", featurizer.tasks))
        self.group_gating: bool = bool(m.extra.get("group_gating", False))
        self.featurizer = featurizer
        self.model_version = model_version
        self._onnx = VerifiedOnnxModel(model_version, threads=threads, micro_batch=4096, prefer_gpu=False)
        model_version.release()  # the session holds the graph now

    @classmethod
    def load(
        cls, models_dir: Path | str, version: str | None = None, name: str = RANKER_NAME, threads: int = 1
    ) -> Ranker:
        """The published ranker ``name`` at ``version`` (``CURRENT`` when None) from ``models_dir``, built from the
        verified bytes of its graph and ``schema.json``.

        Raises:
            encoders.registry.ModelNotFoundError: No such version.
            encoders.registry.ModelIntegrityError: A file of the version failed verification.
        """
        mv = ModelRegistry(Path(models_dir)).load(name, version, keep_bytes=True)
        schema = mv.read_json("schema.json")
        spec = schema.get("vocab", {}).get("featurizer")
        if spec is None:
            raise ValueError(f"{name}/{mv.manifest.version}: schema.json carries no featuriser (publish it with "
                             "thaw train ranker)")
        return cls(mv, RankFeaturizer.from_json(spec), threads=threads)

    @property
    def last_ms(self) -> float:
        """Latency of the last ONNX Runtime call (milliseconds)."""
        return self._onnx.last_batch_ms

    def score_inputs(self, inputs: RankInputs) -> np.ndarray:
        """``float32[B, T]`` probabilities of already featurised inputs."""
        if len(inputs.group) == 0:
            return np.zeros((0, len(self.tasks)), np.float32)
        feeds: dict[str, np.ndarray] = {
            "sparse": inputs.sparse.astype(np.int64), "categories": inputs.categories.astype(np.float32),
            "dense": inputs.dense.astype(np.float32), "group": inputs.group.astype(np.int64)}
        (scores,) = self._onnx.run(feeds, ["scores"])
        return scores

    def score(self, user: UserContext, items: Sequence[ItemContext], now_ts: float) -> np.ndarray:
        """``float32[B, T]`` probability per candidate and task (columns in :attr:`tasks` order)."""
        return self.score_inputs(self.featurizer.features(user, items, now_ts))
