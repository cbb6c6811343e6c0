"""What the API needs of the recommender it serves, as Protocols.

The real one is :class:`ranking.online.pipeline.Recommender` (built per served space by
:class:`serving.space.ServedSpace`); unit tests pass in-memory fakes that provide the same members.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from ranking.online.ab import ABSplit
from ranking.online.pipeline import Recommendation


class UserStoreHealth(Protocol):
    """The Redis user store, as far as readiness asks: does it answer."""

    def ping(self) -> bool: ...


class ItemIndexHealth(Protocol):
    """The served Milvus items collection, as far as readiness asks: its name, whether it exists, its rows."""

    @property
    def name(self) -> str: ...

    def exists(self) -> bool: ...

    def count(self) -> int: ...


class RecommenderLike(Protocol):
    """The recommendation pipeline of one served space (:class:`ranking.online.pipeline.Recommender`)."""

    @property
    def space(self) -> str:
        """The served vector space id."""
        ...

    @property
    def ab(self) -> ABSplit:
        """The A/B split the pipeline assigns users with."""
        ...

    @property
    def users(self) -> UserStoreHealth: ...

    @property
    def index(self) -> ItemIndexHealth: ...

    def recommend(self, user_id: str, k: int = 20, variant: str | None = None) -> Recommendation:
        """One recommendation list; ``variant`` overrides the A/B assignment."""
        ...

    def preload(self) -> dict[str, str]:
        """Load every arm's ranker now; returns arm -> ranker id, ``none`` or ``recall_order (...)``."""
        ...

    def close(self) -> None: ...


ServedFn = Callable[[], RecommenderLike]
"""Returns the recommender of the space served now (it may build one, touching Redis, Milvus, the model dir)."""
