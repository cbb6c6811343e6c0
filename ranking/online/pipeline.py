"""The recommendation pipeline behind ``GET /recommend``: recall -> freshness mixing -> ranking -> exposure quota.

For one request (user ``u``, list size ``k``):

1. **A/B assignment** (:mod:`ranking.online.ab`): ``u``'s hash bucket picks the variant (which ranker, which new-item
share).
2. **Redis, one round trip**: ``u``'s vector state in the served space, seen items (excluded), engaged history
   (the ranker's interest features) and registration profile (gender / age: the group prior of the ranker's gates).
3. **Recall in the served space** (Milvus, inner product): the ``recall_k`` nearest unseen items to ``u``'s vector,
   plus the ``fresh_k`` nearest among items created in the last ``fresh_window_s`` (**freshness mixing**: new items
   have no behaviour and would rarely win a global nearest-neighbour search against thousands of older ones). The
   fresh candidates are scored exactly over the window's newest ``fresh_exact_max`` items (ids from the Redis
   freshness set, vectors cached in-process): on Milvus 2.3.5 a search filtered to such a small window returned
   ~11% of the matching rows at 50k rows (``benchmarks/serve.py``, ``fresh_recall_check``). A user
   without a vector (no events, no declared tastes) gets the popularity x freshness fallback of
   :class:`ranking.online.recall.Recaller`.
4. **Ranking**: the variant's DeepFM + MMoE (ONNX, :mod:`ranking.online.ranker`) scores every candidate per task from
the
   user's profile and history and the item's kind, tags and age; the list score is ``sum_t w_t p_t``, or with
   ``recall_blend = b > 0`` the rank fusion ``(1 - b) * rank percentile by that score + b * rank percentile by
   recall similarity`` (:func:`blend_ranks`). Variant ``ranker = none`` keeps the recall order: the default arm
   (on the simulator the recall order scored NDCG@20 .367, the ranker alone .349), so a fresh ``thaw serve`` serves
   without a published ranker; ranked arms are configured. A newly published version that fails verification
   leaves the last good one serving (:class:`RankerPool`; in a fresh process, the newest older published version
   that loads). A variant whose ranker has no loadable version
   (:class:`RankerNotPublishedError`) is refused (``missing_ranker = error``, the default: the API answers 503
   naming the model and the command that publishes it), or with ``missing_ranker = recall_order`` served in the
   recall order, the response saying so (``ranked_by``, ``degraded``).
5. **Exposure quota**: the top-k by score, then, if fewer than ``ceil(new_item_share * k)`` of them are new
   (created within ``fresh_window_s``, and not dated more than :data:`FRESH_MAX_AHEAD_MS` ahead of the clock,
   whichever recall found them: :func:`is_new_item`), the best-scored recalled new items replace the lowest-scored
   old ones. The list is returned in score order. ``new_item_share = 0`` is the pure ranking order; the response
   reports how many new items were recalled, how many the ranking alone kept, and how many the quota added.
"""

from __future__ import annotations

import json
import logging
import math
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from cachetools import LRUCache

from contracts.actions import POSITIVE_ACTIONS
from contracts.events import MAX_ID_CHARS, _check_id
from encoders.registry import MANIFEST, ModelIntegrityError, ModelNotFoundError, ModelRegistry, parse_manifest
from indexing.milvus_items import ItemIndex
from indexing.redis_state import ItemMeta, RedisState
from infra.settings import ABVariant, ServeSettings
from ranking.online.ab import ABSplit
from ranking.online.features import ItemContext, UserContext
from ranking.online.recall import Recaller
from ranking.online.ttl_cache import TTLValue

log = logging.getLogger("thaw.serve")
request_log = logging.getLogger("thaw.serve.requests")


class RankerLike(Protocol):
    name: str
    version: str
    tasks: tuple[str, ...]

    def score(self, user: UserContext, items: Sequence[ItemContext], now_ts: float) -> np.ndarray: ...


class UnknownUserIdError(ValueError):
    """The user id is not a valid id (the API answers 422)."""


USER_ID_RULE = (f"user_id must be 1-{MAX_ID_CHARS} UTF-8 bytes after Unicode NFC normalisation, without whitespace "
                "or control characters")
"""What a refused ``user_id`` is told (the rule of the wire contract's ids)."""

# a raw id longer than this cannot normalise to MAX_ID_CHARS bytes (a canonical composition takes at most four code
# points to one): refused before the normalisation is paid for
MAX_RAW_ID_CHARS = 4 * MAX_ID_CHARS


def checked_user_id(user_id: str) -> str:
    """``user_id`` as the stream knows it: the wire contract's id check (:func:`contracts.events._check_id`: NFC,
    1..``MAX_ID_CHARS`` UTF-8 bytes, the ``VARCHAR(128)`` of Milvus, no whitespace or control characters), so the
    API serves exactly the ids the worker accepts, one user however its name was typed.

    Raises:
        UnknownUserIdError: Not an id the stream accepts (:data:`USER_ID_RULE`).
    """
    if len(user_id) > MAX_RAW_ID_CHARS:
        raise UnknownUserIdError(USER_ID_RULE)
    try:
        return _check_id(user_id)
    except ValueError:
        raise UnknownUserIdError(USER_ID_RULE) from None


PUBLISH_RANKER_COMMAND = "thaw train ranker"
"""The command that publishes ``deepfm-mmoe`` and ``deepfm-mmoe-plain``."""


class RankerNotPublishedError(ModelNotFoundError):
    """A variant's ranker is not in the model directory, or no version of it loads (the API answers 503 with
    :meth:`to_dict`).

    Attributes:
        model: The ranker's published name.
        version: The version asked for (None: the ``CURRENT`` one).
        models_dir: The model directory searched.
        reason: ``not_published`` (no version of the model at all), ``version_not_found`` (versions exist, not
            the one asked for or pointed to by ``CURRENT``) or ``load_failed`` (the version is there and was
            refused: see ``failure``).
        variant: The A/B arm that needs it (None until the pipeline knows it).
        failure: For ``load_failed``: ``hash_mismatch``, ``missing_file``, ``corrupt_manifest``,
            ``unrecorded_file`` (:class:`encoders.registry.ModelIntegrityError`) or ``load_error`` (anything else
            the loader raised).
        failed_version: For ``load_failed``: the version that was refused.
    """

    def __init__(self, model: str, version: str | None, models_dir: Path, reason: str,
                 variant: str | None = None, failure: str | None = None,
                 failed_version: str | None = None) -> None:
        self.model = model
        self.version = version
        self.models_dir = Path(models_dir)
        self.reason = reason
        self.variant = variant
        self.failure = failure
        self.failed_version = failed_version
        super().__init__(self._message())

    @property
    def spec(self) -> str:
        return f"{self.model}@{self.version}" if self.version else self.model

    @property
    def publish_command(self) -> str:
        cmd = f"{PUBLISH_RANKER_COMMAND} --models-dir {self.models_dir}"
        return f"{cmd} --version {self.version}" if self.version else cmd

    @property
    def degraded(self) -> str:
        """The short reason a response reports (``deepfm-mmoe not published``, ``deepfm-mmoe@v2 refused
        (hash_mismatch)``)."""
        if self.reason == "load_failed":
            return f"{self.model}@{self.failed_version} refused ({self.failure})"
        return f"{self.spec} not published"

    def for_variant(self, variant: str | None) -> RankerNotPublishedError:
        """A fresh copy (for ``variant``), so a remembered miss is raised without its earlier tracebacks."""
        return RankerNotPublishedError(self.model, self.version, self.models_dir, self.reason, variant,
                                       self.failure, self.failed_version)

    def _message(self) -> str:
        arm = f", needed by variant {self.variant!r}" if self.variant else ""
        if self.reason == "load_failed":
            what = (f"ranker {self.model!r} version {self.failed_version!r} failed to load ({self.failure}) and no "
                    "earlier version of it is loaded")
            return f"{what} under {self.models_dir}{arm}; publish a good version with `{self.publish_command}`"
        if self.reason == "not_published":
            what = f"ranker {self.model!r} has no published version"
        elif self.version:
            what = f"ranker {self.model!r} version {self.version!r} is not published"
        else:
            what = f"ranker {self.model!r}: the version its CURRENT names is not published"
        return f"{what} under {self.models_dir}{arm}; publish it with `{self.publish_command}`"

    def to_dict(self) -> dict[str, Any]:
        return {"error": "ranker_not_published", "message": str(self), "model": self.model,
                "version": self.version, "models_dir": str(self.models_dir), "variant": self.variant,
                "reason": self.reason, "publish": self.publish_command}


@dataclass
class Candidate:
    item_id: str
    recall_score: float
    recall_rank: int
    source: str  # vector | fresh | fallback
    kind: str
    created_at_ms: int
    is_new: bool
    score: float = 0.0
    task_scores: dict[str, float] = field(default_factory=dict)
    by_quota: bool = False


@dataclass
class Recommendation:
    user_id: str
    bucket: int
    variant: str
    ranker: str | None  # "name@version", "none" (the arm's choice), or None (its ranker is missing: recall order)
    space: str
    recall_source: str  # vector | fallback
    items: list[Candidate]
    exposure: dict[str, Any]
    timings_ms: dict[str, float]
    user: dict[str, Any]
    ranked_by: str = "ranker"  # ranker | recall_order
    degraded: str | None = None  # why the arm's ranker was not used ("deepfm-mmoe not published")
    fallback_reason: str | None = None  # the metric label of ``degraded`` (not_published, version_not_found)

    def to_dict(self, debug: bool = False) -> dict[str, Any]:
        out: dict[str, Any] = {
            "user_id": self.user_id,
            "ab": {"bucket": self.bucket, "variant": self.variant},
            "ranker": self.ranker,
            "ranked_by": self.ranked_by,
            "degraded": self.degraded,
            "space": self.space,
            "items": [
                {"item_id": c.item_id, "score": round(c.score, 6), "kind": c.kind, "new": c.is_new,
                 "created_at_ms": c.created_at_ms,
                 **({"task_scores": {t: round(p, 6) for t, p in c.task_scores.items()}} if c.task_scores else {})}
                for c in self.items
            ],
            "exposure": self.exposure,
        }
        if debug:
            out["debug"] = {
                "recall_source": self.recall_source,
                "user": self.user,
                "timings_ms": {k: round(v, 3) for k, v in self.timings_ms.items()},
                "items": [{"item_id": c.item_id, "recall_source": c.source, "recall_rank": c.recall_rank,
                           "recall_score": round(c.recall_score, 6), "by_quota": c.by_quota} for c in self.items],
            }
        return out


def select_with_quota(cands: Sequence[Candidate], k: int, share: float) -> tuple[list[Candidate], dict[str, Any]]:
    """The top-``k`` by ``score`` with at least ``ceil(share * k)`` new items when that many were recalled.

    Returns the chosen candidates in score order and the exposure report.
    """
    order = sorted(cands, key=lambda c: c.score, reverse=True)
    top = order[:k]
    want = min(math.ceil(share * k - 1e-9), sum(c.is_new for c in order), len(top))
    kept_by_rank = sum(c.is_new for c in top)
    added = 0
    if kept_by_rank < want:
        extra_new = [c for c in order[k:] if c.is_new][: want - kept_by_rank]
        olds = [i for i in range(len(top) - 1, -1, -1) if not top[i].is_new]  # lowest-scored old items first
        for c, i in zip(extra_new, olds, strict=False):
            c.by_quota = True
            top[i] = c
            added += 1
        top.sort(key=lambda c: c.score, reverse=True)
    report = {
        "recalled": len(cands),
        "recalled_new": sum(c.is_new for c in cands),
        "new_in_top_k_by_rank": kept_by_rank,
        "new_added_by_quota": added,
        "new_in_top_k": sum(c.is_new for c in top),
        "new_item_share": share,
    }
    return top, report


def blend_ranks(cands: Sequence[Candidate], blend: float) -> None:
    """Replace each candidate's ranker score by ``(1 - blend) * p_rank + blend * p_recall``, where ``p_*`` is the
    candidate's rank percentile (1 = first) by the ranker's score and by its recall score.

    Rank fusion of the two stages: the recall similarity separates candidate pools of different quality (vector vs
    fresh recall) that the ranker's features do not see, the ranker orders candidates within a pool
    (``benchmarks/README.md``, serve diagnosis). ``blend = 0`` keeps the ranker's order.
    """
    n = len(cands)
    if n == 0:
        return
    denom = max(n - 1, 1)
    by_rank = sorted(range(n), key=lambda j: cands[j].score, reverse=True)
    by_recall = sorted(range(n), key=lambda j: cands[j].recall_score, reverse=True)
    p_rank = np.empty(n)
    p_recall = np.empty(n)
    p_rank[by_rank] = 1.0 - np.arange(n) / denom
    p_recall[by_recall] = 1.0 - np.arange(n) / denom
    for j, c in enumerate(cands):
        c.score = float((1.0 - blend) * p_rank[j] + blend * p_recall[j])


def _created(stamp: str | None) -> datetime | None:
    """A manifest's ``created_at`` as an aware time (naive: UTC); None when absent or unparsable."""
    if stamp is None:
        return None
    try:
        t = datetime.fromisoformat(stamp)
    except ValueError:
        return None
    return t if t.tzinfo is not None else t.replace(tzinfo=UTC)


def fallback_versions(target: str | None, created_at: Mapping[str, str | None]) -> list[str]:
    """The versions to fall back on, in the order to try them, when ``target`` (the newest publish) is refused and
    nothing is loaded: those created before it, newest first by the manifests' ``created_at`` (never by name:
    ``v10`` sorts before ``v9``); every other version when ``target``'s time is unknown (its manifest does not
    parse). A version without a readable time is left out (its manifest does not parse: it cannot load); ties go
    to the greater name.

    Args:
        target: The refused version.
        created_at: Published version -> its manifest's ``created_at`` (None: unreadable), as
            :func:`manifest_times` lists them.
    """
    top = _created(created_at.get(target)) if target is not None else None
    dated = [(t, v) for v, stamp in created_at.items() if v != target and (t := _created(stamp)) is not None]
    return [v for t, v in sorted(dated, reverse=True) if top is None or t < top]


def manifest_times(reg: ModelRegistry, name: str) -> dict[str, str | None]:
    """Every published version of ``name`` -> its manifest's ``created_at`` (None: the manifest is unreadable or
    does not parse). Reads the manifests only, verifies nothing."""
    out: dict[str, str | None] = {}
    for version in reg.versions(name):
        try:
            out[version] = parse_manifest((reg.root / name / version / MANIFEST).read_bytes()).created_at
        except (OSError, ModelIntegrityError):
            out[version] = None
    return out


@dataclass(frozen=True)
class RankerLoadFailure:
    """One version of a ranker that failed to load, remembered so it is not tried again.

    Attributes:
        model: The ranker's published name.
        version: The version that was tried (None: no ``CURRENT``).
        failure: ``hash_mismatch`` | ``missing_file`` | ``corrupt_manifest`` | ``unrecorded_file`` |
            ``load_error`` | ``version_not_found`` | ``not_published``.
        key: The version and the sha256 of its manifest: a retry needs a different one (a new publish).
        error: What an arm without a loaded version of the ranker is told.
    """

    model: str
    version: str | None
    failure: str
    key: str
    error: RankerNotPublishedError


class RankerPool:
    """Rankers by spec (``name`` or ``name@version``), loaded once; a spec without a version follows the model's
    ``CURRENT`` pointer (checked at most every ``refresh_s``), so a newly published ranker is served without a
    restart.

    A version that fails to load (a file that does not match the manifest's sha256, a missing file, a corrupt
    manifest, ``CURRENT`` naming a version that is not there, any exception of the loader) while an earlier version
    of the same spec is loaded leaves that **last good** version serving: the failure is logged once, counted
    (:attr:`load_failures`, and ``on_load_failure`` when given) and remembered by the version's manifest digest, so
    neither a request nor a later refresh reads it again; a new publish (another version, or another manifest) is
    tried at the next refresh. A pool with nothing loaded yet (a fresh process, a restarted replica) whose
    unpinned spec's ``CURRENT`` version is refused falls back the same way on the newest **older** published version
    that loads, newest first by the manifests' ``created_at`` (:func:`fallback_versions`), skipping versions
    refused before; it is reported as a last good version (:meth:`serving_last_good`, the same warning and count).
    Without a version that loads the spec raises :class:`RankerNotPublishedError` (``not_published``,
    ``version_not_found``, or ``load_failed`` naming the failure of the ``CURRENT`` version) and the arm's
    ``missing_ranker`` handling decides; that miss is remembered for ``refresh_s`` (one look at the model directory
    per spec and period, one warning per refused version). A pinned spec (``name@version``) never falls back.

    Args:
        models_dir: The model directory.
        refresh_s: How often a ``CURRENT``-following spec looks at the directory.
        loader: ``(models_dir, name, version) -> ranker`` (default: :meth:`ranking.online.ranker.Ranker.load`).
        on_load_failure: Called ``(model, version, failure)`` once per refused version (e.g. to count it in a
            metric); must not raise.
    """

    def __init__(self, models_dir: Path, refresh_s: float = 10.0,
                 loader: Callable[[Path, str, str | None], RankerLike] | None = None,
                 on_load_failure: Callable[[str, str | None, str], None] | None = None) -> None:
        self.models_dir = Path(models_dir)
        self.refresh_s = refresh_s
        self._loader = loader or _load_ranker
        self._on_load_failure = on_load_failure
        self._lock = threading.Lock()
        self._cache: dict[str, tuple[RankerLike, float]] = {}
        self._missing: dict[str, tuple[RankerNotPublishedError, float]] = {}
        self._refused: dict[str, RankerLoadFailure] = {}
        self._bad_versions: dict[tuple[str, str], str] = {}  # (model, version) -> key: refused, not a fallback
        self._failures: dict[tuple[str, str], int] = {}

    @staticmethod
    def parse(spec: str) -> tuple[str, str | None]:
        name, _, version = spec.partition("@")
        return name, (version or None)

    @property
    def load_failures(self) -> dict[tuple[str, str], int]:
        """``(model, failure) -> count`` of refused versions (each counted once: a refused version is not tried
        again), for a counter such as ``thaw_ranker_load_failures_total{model,failure}``. A model that is simply
        not published yet, with nothing loaded, is not a load failure (the arm's fallback counts that)."""
        with self._lock:
            return dict(self._failures)

    def refused(self) -> dict[str, RankerLoadFailure]:
        """Spec -> the version last refused for it that is still what the spec points at."""
        with self._lock:
            return dict(self._refused)

    def serving_last_good(self) -> dict[str, tuple[str, RankerLoadFailure]]:
        """Spec -> ``(the version served, the newer version that was refused)``, for specs kept on their last
        good version."""
        with self._lock:
            return {spec: (self._cache[spec][0].version, f) for spec, f in self._refused.items()
                    if spec in self._cache}

    def get(self, spec: str) -> RankerLike | None:
        if spec == "none":
            return None
        now = time.monotonic()
        with self._lock:
            hit = self._cache.get(spec)
            if hit is not None and (now - hit[1] < self.refresh_s or "@" in spec):
                return hit[0]
            miss = self._missing.get(spec)
            if miss is not None and now - miss[1] < self.refresh_s:
                raise miss[0].for_variant(None)
            name, pinned = self.parse(spec)
            reg = ModelRegistry(self.models_dir)
            target = pinned or reg.current_version(name)
            if hit is not None and target == hit[0].version:
                self._refused.pop(spec, None)  # CURRENT is back on the loaded version
                self._cache[spec] = (hit[0], now)
                return hit[0]
            key = f"{target}:{reg.manifest_digest(name, target) if target else None}"
            refused = self._refused.get(spec)
            if refused is not None and refused.key == key:  # this very version failed before: not read again
                if hit is not None:
                    self._cache[spec] = (hit[0], now)
                    return hit[0]
                self._missing[spec] = (refused.error, now)
                raise refused.error.for_variant(None)
            if hit is not None:
                log.info("ranker %s: CURRENT moved %s -> %s, reloading", name, hit[0].version, target)
            try:
                ranker = self._loader(self.models_dir, name, target)
            except Exception as exc:  # noqa: BLE001 - any failure to load leaves the last good version serving
                last_good = hit[0] if hit is not None else None
                if last_good is None and pinned is None and not isinstance(exc, ModelNotFoundError):
                    last_good = self._older_good(name, target)  # a fresh process: an older publish, if one loads
                err = self._refuse(spec, name, pinned, target, key, exc, last_good)
                if last_good is not None:
                    self._missing.pop(spec, None)
                    self._cache[spec] = (last_good, now)
                    return last_good
                self._cache.pop(spec, None)
                self._missing[spec] = (err, now)
                raise err.for_variant(None) from exc
            self._missing.pop(spec, None)
            self._refused.pop(spec, None)
            self._cache[spec] = (ranker, now)
            return ranker

    def _older_good(self, name: str, target: str | None) -> RankerLike | None:
        """The newest published version of ``name`` older than the refused ``target`` that loads (lock held), for a
        pool with no version loaded yet (a restart on a bad publish); None when none does.

        Candidates come newest first by their manifests' ``created_at`` (:func:`fallback_versions`); a version
        refused before, as the newest or as a fallback (same manifest digest), is skipped unread; a new refusal is
        remembered, logged and counted once like any other.
        """
        reg = ModelRegistry(self.models_dir)
        for version in fallback_versions(target, manifest_times(reg, name)):
            key = f"{version}:{reg.manifest_digest(name, version)}"
            if self._bad_versions.get((name, version)) == key:
                continue
            try:
                return self._loader(self.models_dir, name, version)
            except Exception as exc:  # noqa: BLE001 - refused like the newest one; try the next older
                self._bad_versions[(name, version)] = key
                failure = ("version_not_found" if isinstance(exc, ModelNotFoundError)
                           else exc.reason if isinstance(exc, ModelIntegrityError) else "load_error")
                log.warning("ranker %s: older version %s refused too (%s, %s)", name, version, failure,
                            type(exc).__name__)
                self._count_failure(name, version, failure)
        return None

    def _count_failure(self, name: str, version: str | None, failure: str) -> None:
        """Count one refused version (lock held) and tell the hook."""
        self._failures[(name, failure)] = self._failures.get((name, failure), 0) + 1
        if self._on_load_failure is not None:
            try:
                self._on_load_failure(name, version, failure)
            except Exception:  # noqa: BLE001 - a metrics hook must not break serving
                log.exception("ranker load-failure hook failed")

    def _refuse(self, spec: str, name: str, pinned: str | None, target: str | None, key: str, exc: Exception,
                last_good: RankerLike | None) -> RankerNotPublishedError:
        """Remember a failed load of ``target`` (lock held), log it once, count it; the error an arm without a
        loaded version gets."""
        if isinstance(exc, ModelNotFoundError):
            failure = "version_not_found" if ModelRegistry(self.models_dir).versions(name) else "not_published"
            err = RankerNotPublishedError(name, pinned, self.models_dir, failure)
        else:
            failure = exc.reason if isinstance(exc, ModelIntegrityError) else "load_error"
            err = RankerNotPublishedError(name, pinned, self.models_dir, "load_failed", failure=failure,
                                          failed_version=target)
        self._refused[spec] = RankerLoadFailure(name, target, failure, key, err)
        if last_good is None and isinstance(exc, ModelNotFoundError):
            log.warning("%s", err)  # nothing to fall back on, nothing broken: the ranker is just not there
            return err
        if target is not None:
            self._bad_versions[(name, target)] = key
        file = getattr(exc, "file", None)
        what = f"{failure}{f' in {file}' if file else ''}, {type(exc).__name__}"
        if last_good is not None:
            log.warning("ranker %s: version %s refused (%s); still serving %s@%s until another version is "
                        "published", name, target, what, last_good.name, last_good.version)
        else:
            log.warning("ranker %s: version %s refused (%s) and no earlier version is loaded", name, target, what)
        self._count_failure(name, target, failure)
        return err


def _counts_negatives(ranker: RankerLike) -> bool:
    """True when the ranker's training history includes actions the engine does not count as engagement."""
    actions = getattr(getattr(ranker, "featurizer", None), "history_actions", ())
    return bool(set(actions) - POSITIVE_ACTIONS)


def _load_ranker(models_dir: Path, name: str, version: str | None) -> RankerLike:
    from ranking.online.ranker import Ranker

    return Ranker.load(models_dir, version=version, name=name)


@dataclass(frozen=True)
class _FreshWindow:
    """The fresh window of a space as the requests of one ``fresh_cache_s`` share it (newest first)."""

    ids: list[str]
    row: dict[str, int]  # id -> row of ``matrix``
    created_ms: np.ndarray  # N int64
    matrix: np.ndarray  # N x D float32


# the fresh recall leaves out items dated more than this ahead of the API's clock (the worker's default
# stream.max_clock_skew_s: it dead-letters newer posts, see streams.cores.event_time)
FRESH_MAX_AHEAD_MS = 300_000


def is_new_item(created_at_ms: int, now_ms: int, window_ms: int) -> bool:
    """Whether an item counts as new for the exposure quota: created within the last ``window_ms`` and not dated
    more than :data:`FRESH_MAX_AHEAD_MS` ahead of ``now_ms`` (an item dated in the future, indexed before the worker
    refused such posts, would otherwise stay "new" forever and take the quota of every list)."""
    return now_ms - window_ms <= created_at_ms <= now_ms + FRESH_MAX_AHEAD_MS


class Recommender:
    """Serves ``recommend(user_id, k)`` (see the module docstring).

    Args:
        settings: The ``serve`` settings section.
        users: The Redis user store.
        index: The Milvus items collection of the served space.
        space: The served vector space id (the key of users' states in Redis).
        rankers: Where variants' rankers come from.
        clock: Epoch-seconds clock.
    """

    def __init__(self, settings: ServeSettings, users: RedisState, index: ItemIndex, space: str,
                 rankers: RankerPool, clock: Callable[[], float] = time.time) -> None:
        self.s = settings
        self.users = users
        self.index = index
        self.space = space
        self.rankers = rankers
        self.clock = clock
        self.ab = ABSplit(settings.variants, settings.ab_salt, settings.ab_buckets)
        self.fallback = Recaller(users, index, space=space, clock=clock, cache_s=settings.fresh_cache_s)
        # fresh items' vectors (immutable per space), least recently used evicted first
        self._vecs: LRUCache[str, np.ndarray] = LRUCache(maxsize=max(1, 2 * settings.fresh_exact_max))
        self._vecs_lock = threading.Lock()
        # the fresh window's ids, times and vector matrix, rebuilt at most once per fresh_cache_s (ttl_cache)
        self._window: TTLValue[_FreshWindow] = TTLValue(settings.fresh_cache_s)
        self._log_lock = threading.Lock()
        self._log_file = open(settings.request_log, "a", buffering=1) if settings.request_log else None  # noqa: SIM115

    def close(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def arm_ranker(self, arm: ABVariant) -> tuple[RankerLike | None, RankerNotPublishedError | None]:
        """The arm's ranker (None for ``ranker = none``), or, when it is not published and ``missing_ranker`` is
        ``recall_order``, ``(None, the miss)``: the arm serves the recall order.

        Raises:
            RankerNotPublishedError: the ranker is not published and ``missing_ranker`` is ``error``.
        """
        try:
            return self.rankers.get(arm.ranker), None
        except RankerNotPublishedError as exc:
            miss = exc.for_variant(arm.name)
            if self.s.missing_ranker == "recall_order":
                return None, miss
            raise miss from exc

    def preload(self) -> dict[str, str]:
        """Load every variant's ranker now (fail fast at start-up). Returns variant -> ranker id, ``none``,
        ``recall_order (<model> not published)`` for an arm that falls back to the recall order, or ``<model>@v1
        (last good; v2 refused: hash_mismatch)`` for an arm kept on its last good version."""
        out = {}
        for v in self.ab.variants:
            r, miss = self.arm_ranker(v)
            if miss is not None:
                out[v.name] = f"recall_order ({miss.degraded})"
            elif r is None:
                out[v.name] = "none"
            else:
                out[v.name] = f"{r.name}@{r.version}"
                kept = self.rankers.serving_last_good().get(v.ranker)
                if kept is not None:
                    out[v.name] += f" (last good; {kept[1].version} refused: {kept[1].failure})"
        return out

    # ------------------------------------------------------------------------------------------------ steps
    def _recall(self, vec: np.ndarray | None, seen: list[str], now_ms: int, t: dict[str, float]) -> tuple[
            str, list[Candidate]]:
        window_ms = int(self.s.fresh_window_s * 1000)
        t0 = time.perf_counter()
        if vec is None:
            fb = self.fallback.fallback(self.s.recall_k, set(seen))
            t["recall_fallback"] = (time.perf_counter() - t0) * 1000
            return "fallback", [Candidate(r.item_id, r.score, j, "fallback", r.kind, r.created_at_ms,
                                          is_new_item(r.created_at_ms, now_ms, window_ms)) for j, r in enumerate(fb)]
        k = self.s.recall_k
        # fetch a few more than k to make up for seen items; only if too many of those were seen, ask again with
        # room for all of them (either way the answer is the exact top-k of the unseen items)
        short = max(k // 2, 32)
        hits = self.index.search(vec[None, :], k, exclude=[seen], max_extra=short)[0]
        if len(hits) < k and len(seen) > short:
            hits = self.index.search(vec[None, :], k, exclude=[seen])[0]
        t["recall_vector"] = (time.perf_counter() - t0) * 1000
        out = [Candidate(h.item_id, h.score, j, "vector", h.kind, h.created_at_ms,
                         is_new_item(h.created_at_ms, now_ms, window_ms)) for j, h in enumerate(hits)]
        if self.s.fresh_k > 0:
            t1 = time.perf_counter()
            have = {c.item_id for c in out}
            out += [c for c in self._fresh(vec, set(seen), now_ms - window_ms, now_ms + FRESH_MAX_AHEAD_MS)
                    if c.item_id not in have]
            t["recall_fresh"] = (time.perf_counter() - t1) * 1000
        return "vector", out

    def _fresh(self, vec: np.ndarray, seen: set[str], since_ms: int, until_ms: int) -> list[Candidate]:
        """The ``fresh_k`` items created between ``since_ms`` and ``until_ms`` most similar to ``vec``, scored
        exactly (an item dated past ``until_ms``, indexed before the worker refused future-dated posts, would stay
        "new" forever: it is left out).

        Ids and creation times come from the Redis freshness set of the space (the newest ``fresh_exact_max`` of
        the window), vectors from an in-process cache filled from Milvus by id; the stacked window is shared by the
        requests of one ``fresh_cache_s`` (:class:`~ranking.online.ttl_cache.TTLValue`), so a post joins the
        fresh recall at most that much later. An item whose row is not readable yet (upserted within the last
        time tick) joins on a later rebuild.
        """
        w = self._window.get(lambda: self._build_window(since_ms, until_ms))
        if not w.ids:
            return []
        ok = (w.created_ms >= since_ms) & (w.created_ms <= until_ms)
        for item in seen:
            j = w.row.get(item)
            if j is not None:
                ok[j] = False
        scores = w.matrix @ vec.astype(np.float32)
        scores[~ok] = -np.inf
        n = min(self.s.fresh_k, int(ok.sum()))
        if n == 0:
            return []
        pick = np.argpartition(-scores, n - 1)[:n] if n < len(scores) else np.arange(len(scores))
        top = pick[np.lexsort((pick, -scores[pick]))]  # by score, ties newest first (the window's order)
        meta = self.users.item_meta([w.ids[j] for j in top])
        return [Candidate(w.ids[j], float(scores[j]), r, "fresh", meta[w.ids[j]].kind if w.ids[j] in meta else "",
                          int(w.created_ms[j]), True)
                for r, j in enumerate(top)]

    def _build_window(self, since_ms: int, until_ms: int) -> _FreshWindow:
        """The items created between ``since_ms`` and ``until_ms`` (the newest ``fresh_exact_max``) whose vectors
        are readable, with their vectors stacked; items upserted within the last time tick join on a rebuild."""
        window = self.users.created_since(self.space, since_ms, self.s.fresh_exact_max, until_ms=until_ms)
        missing = [i for i, _ in window if i not in self._vecs]
        if missing:
            got = self.index.get_vectors(missing, strong_retry=False)
            with self._vecs_lock:
                self._vecs.update(got)
        with self._vecs_lock:
            rows = [(i, ms, v) for i, ms in window if (v := self._vecs.get(i)) is not None]
        if not rows:
            return _FreshWindow([], {}, np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
        ids = [i for i, _, _ in rows]
        return _FreshWindow(ids, {i: j for j, i in enumerate(ids)}, np.array([ms for _, ms, _ in rows], np.int64),
                            np.stack([v for _, _, v in rows]).astype(np.float32, copy=False))

    @staticmethod
    def _ctx(item_id: str, meta: ItemMeta | None, kind: str = "", created_at_ms: int = 0) -> ItemContext:
        if meta is None:
            return ItemContext(item_id, kind, (), created_at_ms / 1000.0)
        return ItemContext(item_id, meta.kind or kind, meta.tags, (meta.created_at_ms or created_at_ms) / 1000.0)

    def recommend(self, user_id: str, k: int = 20, variant: str | None = None) -> Recommendation:
        """One recommendation list (see the module docstring). ``variant`` overrides the A/B assignment.

        Raises:
            UnknownUserIdError: ``user_id`` is not an id of the wire contract (:func:`checked_user_id`; the list is
                served for its NFC form).
        """
        user_id = checked_user_id(user_id)
        t_all = time.perf_counter()
        t: dict[str, float] = {}
        asg = self.ab.assign(user_id)
        arm: ABVariant = self.ab.variant(variant) if variant else asg.variant
        now = self.clock()
        now_ms = int(now * 1000)
        # before any Redis or Milvus work: an arm whose ranker is missing is refused here ("error" mode)
        ranker, miss = self.arm_ranker(arm)

        t0 = time.perf_counter()
        state, seen_ts, engaged, profile = self.users.request_view(self.space, user_id, n_engaged=self.s.history_n)
        seen = [i for i, _ in seen_ts]
        t["redis_user"] = (time.perf_counter() - t0) * 1000
        vec = state.unit() if state is not None else None

        source, cands = self._recall(vec, seen, now_ms, t)

        n_history = 0
        if ranker is not None and cands:
            t2 = time.perf_counter()
            # the history training counted: positive actions (the engaged set), or every non-impression action
            # (the seen set) for a ranker whose "engaged" rows include negative ones (MovieLens: every rating)
            hist_ids = [i for i, _ in (seen_ts[: self.s.history_n] if _counts_negatives(ranker) else engaged)]
            meta = self.users.item_meta([c.item_id for c in cands] + hist_ids)
            t["redis_items"] = (time.perf_counter() - t2) * 1000
            t3 = time.perf_counter()
            history = [self._ctx(i, meta.get(i)) for i in hist_ids if i in meta]
            ctx_user = UserContext(user_id, profile, history)
            ctx_items = [self._ctx(c.item_id, meta.get(c.item_id), c.kind, c.created_at_ms) for c in cands]
            probs = ranker.score(ctx_user, ctx_items, now)
            weights = np.array([self.s.task_weights.get(tn, 1.0) for tn in ranker.tasks], dtype=np.float64)
            combined = probs.astype(np.float64) @ weights
            for c, p, sc in zip(cands, probs, combined, strict=True):
                c.score = float(sc)
                c.task_scores = {tn: float(x) for tn, x in zip(ranker.tasks, p, strict=True)}
            blend = self.s.recall_blend if arm.recall_blend is None else arm.recall_blend
            if blend > 0:
                blend_ranks(cands, blend)
            t["rank"] = (time.perf_counter() - t3) * 1000
            n_history = len(history)
        else:
            # the recall order: similarity to the user vector (vector and fresh candidates alike), or the fallback's
            # popularity x freshness score
            for c in cands:
                c.score = c.recall_score
        ranker_id: str | None = f"{ranker.name}@{ranker.version}" if ranker is not None else "none"
        ranked_by: Literal["ranker", "recall_order"] = "ranker" if ranker is not None else "recall_order"
        if miss is not None:
            ranker_id = None

        share = self.s.new_item_share if arm.new_item_share is None else arm.new_item_share
        top, exposure = select_with_quota(cands, k, share)
        t["total"] = (time.perf_counter() - t_all) * 1000
        user_info: dict[str, Any] = {"seen": len(seen), "engaged": len(engaged), "ranker_history": n_history,
                                     "profile": {k2: v for k2, v in profile.items() if k2 in ("gender", "age")}}
        if state is not None:
            user_info.update(n_events=state.n_events, state_source=state.source)
        rec = Recommendation(user_id, asg.bucket, arm.name, ranker_id, self.space, source, top, exposure, t,
                             user_info, ranked_by=ranked_by, degraded=miss.degraded if miss else None,
                             fallback_reason=miss.reason if miss else None)
        self._log(rec, now)
        return rec

    def _log(self, rec: Recommendation, now: float) -> None:
        line = json.dumps({"ts": round(now, 3), "user_id": rec.user_id, "bucket": rec.bucket, "variant": rec.variant,
                           "ranker": rec.ranker, "ranked_by": rec.ranked_by,
                           **({"degraded": rec.degraded} if rec.degraded else {}),
                           "recall_source": rec.recall_source,
                           "items": [c.item_id for c in rec.items], "new": [c.is_new for c in rec.items],
                           "latency_ms": round(rec.timings_ms["total"], 3)}, separators=(",", ":"))
        request_log.debug(line)
        if self._log_file is not None:
            with self._log_lock:
                self._log_file.write(line + "\n")


def variant_summary(split: ABSplit) -> list[Mapping[str, Any]]:
    """The split as data (for ``/ab`` and start-up logs)."""
    return [{"name": v.name, "weight": v.weight, "ranker": v.ranker, "new_item_share": v.new_item_share,
             "buckets": list(split.ranges[v.name])} for v in split.variants]
