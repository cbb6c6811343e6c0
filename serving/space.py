"""The recommender of the space Redis says is served, rebuilt when that space flips."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

from infra.settings import Settings
from serving.ports import RecommenderLike

log = logging.getLogger("thaw.api")


class ServedSpace:
    """The recommender of the served space, rebuilt when that space flips (checked every ``refresh_s``).

    A blue/green flip of the CF space reaches the API without a restart.

    Args:
        settings: Engine settings (Redis, Milvus, the model directory, the ``serve`` section).
        refresh_s: How often Redis is asked which space is served.
        on_ranker_refused: Called once per published ranker version that fails verification or loading
            (:class:`ranking.online.pipeline.RankerPool`), e.g. to count it.
    """

    def __init__(self, settings: Settings, refresh_s: float = 5.0,
                 on_ranker_refused: Callable[[str, str | None, str], None] | None = None) -> None:
        from indexing.redis_state import RedisState
        from ranking.online.pipeline import RankerPool

        self.settings = settings
        self.refresh_s = refresh_s
        self.users = RedisState(settings.redis, serving=True)  # the serving path's per-call deadlines
        self.rankers = RankerPool(settings.models.dir, on_load_failure=on_ranker_refused)
        self._lock = threading.Lock()
        self._rec: RecommenderLike | None = None
        self._space: str | None = None
        self._checked = 0.0

    def _build(self, space: str) -> RecommenderLike:
        from ranking.online.pipeline import Recommender
        from ranking.online.recall import served_index

        index = served_index(self.settings.milvus, self.settings.models.dir, self.users, serving=True)
        return Recommender(self.settings.serve, self.users, index, space or self._text_space(), self.rankers)

    def _text_space(self) -> str:
        from encoders.registry import ModelRegistry

        reg = ModelRegistry(self.settings.models.dir)
        name = self.settings.models.text_encoder
        return f"{name}@{reg.current_version(name)}"

    def get(self) -> RecommenderLike:
        """The current recommender (built, or rebuilt after a flip, on the calling thread; while one thread checks
        or rebuilds, the others get the current one rather than wait, so a slow rebuild costs one request).

        Raises:
            Exception: Whatever Redis, Milvus or the model directory raised while building it.
        """
        now = time.monotonic()
        rec = self._rec
        if rec is not None and now - self._checked < self.refresh_s:
            return rec
        if rec is None:
            self._lock.acquire()
        elif not self._lock.acquire(blocking=False):
            return rec  # another request is checking or rebuilding: the current space serves meanwhile
        try:
            rec = self._rec
            if rec is not None and now - self._checked < self.refresh_s:
                return rec
            space = self.users.current_space() or ""
            if rec is None or space != self._space:
                old = rec
                rec = self._build(space)
                self._rec, self._space = rec, space
                log.info("serving space %s (collection %s)", rec.space, rec.index.name)
                if old is not None:
                    old.close()
            self._checked = now
            return rec
        finally:
            self._lock.release()

    def close(self) -> None:
        """Close the current recommender (its request log)."""
        if self._rec is not None:
            self._rec.close()
