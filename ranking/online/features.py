"""The ranker's online featuriser: one user and their candidate items -> the exact inputs training used.

:func:`ranking.training.rank_data.build_rank_split` computes every training row's features from fit-period statistics;
:class:`RankFeaturizer` keeps those statistics (group category means, dense ``mu``/``sd``, id vocabularies of raw
stream ids, shrinkage ``k``, the new-user threshold, the context and item-extra definitions) and applies the same
per-row functions of :mod:`ranking.training.rank_data` to a request built from stream data only:

* :class:`UserContext` — the raw user id, the Redis profile hash (``gender``, ``age``) and the user's engaged items
  (positive actions, newest first);
* :class:`ItemContext` per candidate — raw item id, kind, tags as published in ``content.new``, creation time.

Field by field (``sparse`` columns in :data:`ranking.training.rank_data.SPARSE_FIELDS` order):

* ``user_id`` / ``item_id``: the fit-period vocabularies of raw ids (``sim:u:12``, ``ml-100k:i:50``,
  ``lastfm:i:51``); an id without
  a fit row is 0 (unknown), the index training's id dropout taught the model.
* ``gender`` / ``age``: the profile's ``gender`` (``f|m|x|unknown``) and ``age`` (age bucket such as ``18-24``; the
  key ``age_bucket`` of the ``user.profile`` event is accepted too) through the training vocabularies; anything
  else is 0. Last.fm has neither (empty vocabularies): always 0, as in training.
* ``user_extra`` (MovieLens occupation): not in the stream contract, always 0 (unknown) online. Training saw the
  occupation for every ml-100k user, so this is a known train/serve difference (the simulator and Last.fm have no
  such column: 0 in training too).
* ``status``: 1 new / 2 old, new while ``len(history) < new_user_max_history``.
* ``context``: MovieLens = hour-of-day bucket (UTC) of ``now_ts``; simulator = age of the item at ``now_ts`` in
  steps, ``(now_ts - created_ts) / step_s``, bucketed ``<1, 1-3, 3-10, >=10``; Last.fm = 0 (``none``: the
  training rows have no time of day).
* ``item_extra``: simulator = the item's kind index (``kind`` of the item); MovieLens = the release decade, which
  the stream does not carry in tags (only in the title text, which :class:`ItemContext` has not): it is looked up
  by raw item id in the table of the training log's films (every ml-100k film), 0 for any other item; Last.fm =
  the number of the item's published tags bucketed ``0, 1-2, 3-5, 6-10, 11-19, >=20``
  (:func:`~ranking.training.rank_data.tag_count_bucket`; an item whose tags the service does not have counts as
  untagged).
* ``categories``: multi-hot over the training categories from the raw tags (simulator: the catalogue topics kept
  by :func:`~ranking.training.rank_data.simulator_log`, matched exactly as :func:`workloads.simulator.build_catalogue`
  matches asset tags; MovieLens: the genres, which the replayer publishes as tags; Last.fm: the 48 published tags
  carried by most artists, matched exactly). A comment carries its parent
  track's tags, so it gets the parent's categories, as in the simulator.
* ``dense`` = standardised ``[interest_dev, affinity]`` from ``count = len(history)`` and the summed categories of
  the history, shrunk to the group mean; ``group = status x gender``.

``history`` must hold the items of the stream actions training counted as engaged,
:attr:`RankFeaturizer.history_actions` (simulator: ``click, play, complete, like, comment, share``; MovieLens:
every rating, i.e. ``like``, ``play`` *and* ``skip``, which the replayer makes of ratings <= 2; Last.fm: ``play``,
the replayer's only action). Offline,
``history`` is every engaged row of the user strictly before the row (repeats of an item count again, no cap);
online it is whatever the service passes, so a history truncated to its newest ~500 items, or deduplicated, gives a
smaller count than training would have seen for that user.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from ranking.online.row_features import (
    ITEM_AGE_BINS,
    SPARSE_FIELDS,
    TAG_COUNT_BINS,
    hour_context,
    interest_dense,
    item_age_context,
    sparse_rows,
    standardise,
    tag_count_bucket,
    user_groups,
)

if TYPE_CHECKING:
    from ranking.training.rank_data import EventLog, RankSplit

FORMAT = "thaw.rank-featurizer/1"


@dataclass(frozen=True)
class ItemContext:
    """One item as the stream knows it.

    Attributes:
        item_id: Raw stream id, e.g. ``sim:i:123``.
        kind: ``track|comment|moment|dynamic|fan_group`` (``""`` unknown).
        tags: Raw tags as published in ``content.new``.
        created_ts: Creation time, epoch seconds.
    """

    item_id: str
    kind: str
    tags: tuple[str, ...]
    created_ts: float


@dataclass(frozen=True)
class UserContext:
    """One user at request time.

    Attributes:
        user_id: Raw stream id.
        profile: The Redis profile hash: ``gender`` (``f|m|x|unknown``), ``age`` (age bucket such as ``18-24``, or
            ``unknown``), ``region``.
        history: The user's engaged items (positive actions), newest first.
    """

    user_id: str
    profile: Mapping[str, str]
    history: Sequence[ItemContext]


@dataclass(frozen=True)
class RankInputs:
    """The ranker's inputs for one request (``B`` candidates)."""

    sparse: np.ndarray  # B x F int64
    categories: np.ndarray  # B x C float32
    dense: np.ndarray  # B x D float32
    group: np.ndarray  # B int64
    is_new_user: bool


@dataclass(frozen=True, eq=False)
class RankFeaturizer:
    """Fit-period statistics and vocabularies; :meth:`features` turns a request into :class:`RankInputs`.

    Build it with :meth:`from_split` next to training, ship it with :meth:`to_json` (the published ranker's
    ``schema.json``, see :mod:`ranking.training.rank_export`) and reload it with :meth:`from_json`.
    """

    dataset: str
    tasks: tuple[str, ...]
    category_names: tuple[str, ...]
    user_vocab: Mapping[str, int]
    item_vocab: Mapping[str, int]
    genders: tuple[str, ...]
    ages: tuple[str, ...]
    context_kind: str  # "hour_of_day" | "item_age_steps" | "none"
    step_s: float
    age_bins: tuple[float, ...]
    item_extra_kind: str  # "content_kind" | "by_item_id" | "tag_count"
    kinds: tuple[str, ...]
    item_extra_by_id: Mapping[str, int]
    group_means: np.ndarray  # G x C float64
    n_genders: int
    shrinkage: float
    new_user_max_history: int
    dense_mu: np.ndarray  # D float32
    dense_sd: np.ndarray  # D float32
    cardinalities: tuple[int, ...]
    group_names: tuple[str, ...]
    history_actions: tuple[str, ...] = ()
    item_extra_bins: tuple[float, ...] = ()  # "tag_count": bins of the published tag count
    _cat_col: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    _gender_ix: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    _age_ix: dict[str, int] = field(init=False, repr=False, default_factory=dict)
    _kind_ix: dict[str, int] = field(init=False, repr=False, default_factory=dict)

    def __post_init__(self) -> None:
        self._cat_col.update({c: j for j, c in enumerate(self.category_names)})
        self._gender_ix.update({g: j + 1 for j, g in enumerate(self.genders)})
        self._age_ix.update({a: j + 1 for j, a in enumerate(self.ages)})
        self._kind_ix.update({k: j + 1 for j, k in enumerate(self.kinds)})

    # ------------------------------------------------------------------------------------------------ building
    @classmethod
    def from_split(cls, log: EventLog, split: RankSplit) -> RankFeaturizer:
        """The featuriser of ``split`` (built by :func:`~ranking.training.rank_data.build_rank_split` from ``log``)."""
        st = split.stats
        if st is None:
            raise ValueError("the split has no fit-period statistics (build it with build_rank_split)")
        if not (log.user_ids and log.item_ids):
            raise ValueError(f"log {log.name!r} carries no raw stream ids")
        meta: dict[str, Any] = dict(log.meta)
        if log.name == "sim":
            context_kind, item_extra_kind = "item_age_steps", "content_kind"
            step_s, kinds = float(meta["step_s"]), tuple(meta["kinds"])
            by_id: dict[str, int] = {}
        elif log.name == "ml-100k":
            context_kind, item_extra_kind, step_s, kinds = "hour_of_day", "by_item_id", 0.0, ()
            by_id = {i: int(x) for i, x in zip(log.item_ids, log.item_extra, strict=True) if int(x) > 0}
        elif log.name == "lastfm":
            context_kind, item_extra_kind, step_s, kinds, by_id = "none", "tag_count", 0.0, (), {}
        else:
            raise ValueError(f"no online definition of context / item_extra for log {log.name!r}")
        return cls(
            dataset=log.name, tasks=tuple(log.tasks), category_names=tuple(log.category_names),
            user_vocab={log.user_ids[j]: j + 1 for j in np.flatnonzero(st.known_users).tolist()},
            item_vocab={log.item_ids[j]: j + 1 for j in np.flatnonzero(st.known_items).tolist()},
            genders=tuple(log.genders), ages=tuple(log.ages), context_kind=context_kind, step_s=step_s,
            age_bins=tuple(ITEM_AGE_BINS), item_extra_kind=item_extra_kind, kinds=kinds, item_extra_by_id=by_id,
            group_means=np.asarray(st.group_means, np.float64), n_genders=st.n_genders, shrinkage=st.shrinkage,
            new_user_max_history=st.new_user_max_history, dense_mu=np.asarray(st.dense_mu, np.float32),
            dense_sd=np.asarray(st.dense_sd, np.float32), cardinalities=tuple(int(c) for c in st.cardinalities),
            group_names=tuple(split.group_names), history_actions=tuple(meta.get("history_actions", ())),
            item_extra_bins=tuple(float(x) for x in meta.get("item_extra_bins", TAG_COUNT_BINS))
            if item_extra_kind == "tag_count" else (),
        )

    def to_json(self) -> dict[str, Any]:
        """A JSON-serialisable dict (floats round-trip exactly)."""
        return {
            "format": FORMAT, "dataset": self.dataset, "tasks": list(self.tasks),
            "sparse_fields": list(SPARSE_FIELDS), "cardinalities": list(self.cardinalities),
            "category_names": list(self.category_names),
            "user_vocab": dict(self.user_vocab), "item_vocab": dict(self.item_vocab),
            "genders": list(self.genders), "ages": list(self.ages),
            "context": {"kind": self.context_kind, "step_s": self.step_s, "bins": list(self.age_bins)},
            "item_extra": {"kind": self.item_extra_kind, "kinds": list(self.kinds),
                           "by_item_id": dict(self.item_extra_by_id), "bins": list(self.item_extra_bins)},
            "user_extra": "not in the stream contract: 0 (unknown) online",
            "group_means": [[float(x) for x in row] for row in self.group_means],
            "n_genders": self.n_genders, "shrinkage": self.shrinkage,
            "new_user_max_history": self.new_user_max_history,
            "dense_mu": [float(x) for x in self.dense_mu], "dense_sd": [float(x) for x in self.dense_sd],
            "group_names": list(self.group_names), "history_actions": list(self.history_actions),
        }

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> RankFeaturizer:
        if d.get("format") != FORMAT:
            raise ValueError(f"not a rank featuriser ({d.get('format')!r}, expected {FORMAT!r})")
        if tuple(d["sparse_fields"]) != SPARSE_FIELDS:
            raise ValueError(f"sparse fields {d['sparse_fields']} differ from this code's {list(SPARSE_FIELDS)}")
        ctx, extra = d["context"], d["item_extra"]
        return cls(
            dataset=str(d["dataset"]), tasks=tuple(d["tasks"]), category_names=tuple(d["category_names"]),
            user_vocab={str(k): int(v) for k, v in d["user_vocab"].items()},
            item_vocab={str(k): int(v) for k, v in d["item_vocab"].items()},
            genders=tuple(d["genders"]), ages=tuple(d["ages"]), context_kind=str(ctx["kind"]),
            step_s=float(ctx["step_s"]), age_bins=tuple(float(x) for x in ctx["bins"]),
            item_extra_kind=str(extra["kind"]), kinds=tuple(extra["kinds"]),
            item_extra_by_id={str(k): int(v) for k, v in extra["by_item_id"].items()},
            group_means=np.asarray(d["group_means"], np.float64), n_genders=int(d["n_genders"]),
            shrinkage=float(d["shrinkage"]), new_user_max_history=int(d["new_user_max_history"]),
            dense_mu=np.asarray(d["dense_mu"], np.float32), dense_sd=np.asarray(d["dense_sd"], np.float32),
            cardinalities=tuple(int(c) for c in d["cardinalities"]), group_names=tuple(d["group_names"]),
            history_actions=tuple(d.get("history_actions", ())),
            item_extra_bins=tuple(float(x) for x in extra.get("bins", ())),
        )

    # ------------------------------------------------------------------------------------------------- serving
    @property
    def n_categories(self) -> int:
        return len(self.category_names)

    def categories_of(self, item: ItemContext) -> np.ndarray:
        """``float32[C]`` multi-hot of the item's raw tags over the training categories (unknown tags ignored)."""
        out = np.zeros(self.n_categories, np.float32)
        for t in item.tags:
            j = self._cat_col.get(t)
            if j is not None:
                out[j] = 1.0
        return out

    def _categories(self, items: Sequence[ItemContext]) -> np.ndarray:
        if not items:
            return np.zeros((0, self.n_categories), np.float32)
        return np.stack([self.categories_of(it) for it in items]).astype(np.float32)

    def gender_index(self, profile: Mapping[str, str]) -> int:
        return self._gender_ix.get(str(profile.get("gender", "unknown")).strip().lower(), 0)

    def age_index(self, profile: Mapping[str, str]) -> int:
        value = profile.get("age", profile.get("age_bucket", "unknown"))
        return self._age_ix.get(str(value).strip(), 0)

    def _item_extra(self, items: Sequence[ItemContext]) -> np.ndarray:
        if self.item_extra_kind == "content_kind":
            return np.array([self._kind_ix.get(it.kind, 0) for it in items], np.int64)
        if self.item_extra_kind == "tag_count":
            return tag_count_bucket(np.array([len(it.tags) for it in items], np.int64), self.item_extra_bins)
        return np.array([self.item_extra_by_id.get(it.item_id, 0) for it in items], np.int64)

    def _context(self, items: Sequence[ItemContext], now_ts: float) -> np.ndarray:
        now = np.full(len(items), float(now_ts), np.float64)
        if self.context_kind == "hour_of_day":
            return hour_context(now)
        if self.context_kind == "none":
            return np.zeros(len(items), np.int64)
        created = np.array([it.created_ts for it in items], np.float64)
        return item_age_context(now, created, self.step_s, self.age_bins)

    def features(self, user: UserContext, items: Sequence[ItemContext], now_ts: float) -> RankInputs:
        """The ranker inputs of ``user`` x every item of ``items`` at ``now_ts`` (epoch seconds)."""
        b = len(items)
        count = len(user.history)
        hist = self._categories(user.history)
        sums = hist.sum(0, dtype=np.float32) if count else np.zeros(self.n_categories, np.float32)
        counts = np.full(b, count, np.int64)
        gender = np.full(b, self.gender_index(user.profile), np.int64)
        is_new, group = user_groups(counts, gender, self.n_genders, self.new_user_max_history)
        cats = self._categories(items)
        raw = interest_dense(counts, np.tile(sums, (b, 1)), cats, gender, group, self.group_means, self.n_genders,
                             self.shrinkage)
        dense = standardise(raw, self.dense_mu, self.dense_sd)
        uid = self.user_vocab.get(user.user_id, 0)
        iid = np.array([self.item_vocab.get(it.item_id, 0) for it in items], np.int64)
        sparse = sparse_rows(np.full(b, uid, np.int64), iid, gender, np.full(b, self.age_index(user.profile)),
                             np.zeros(b, np.int64), is_new, self._context(items, now_ts), self._item_extra(items))
        sparse = np.where(sparse < np.asarray(self.cardinalities, np.int64)[None, :], sparse, 0)  # 0 = unknown
        return RankInputs(sparse.reshape(b, len(SPARSE_FIELDS)), cats.reshape(b, self.n_categories),
                          dense.reshape(b, -1) if b else np.zeros((0, len(self.dense_mu)), np.float32),
                          group.astype(np.int64), bool(count < self.new_user_max_history))


# ------------------------------------------------------------------------------------ requests from a training log
def item_context(log: EventLog, item: int) -> ItemContext:
    """Item ``item`` of ``log`` as the stream publishes it."""
    created = float(log.item_created[item]) if log.item_created is not None else 0.0
    return ItemContext(log.item_ids[item], log.item_kinds[item] if log.item_kinds else "",
                       tuple(log.item_tags[item]), created)


def requests_for_rows(log: EventLog, rows: np.ndarray) -> list[tuple[UserContext, ItemContext, float]]:
    """For every log row, ``(user, item, now_ts)`` rebuilt from the log as a service would see them.

    ``history`` = the user's engaged rows strictly before the row's time, newest first (no cap, repeats kept);
    ``profile`` = the log's raw profile map.
    """
    rows = np.asarray(rows, np.int64)
    engaged = log.labels[:, 0] > 0
    by_user: dict[int, np.ndarray] = {}
    needed = set(log.users[rows].tolist())
    eng_rows = np.flatnonzero(engaged & np.isin(log.users, list(needed)))
    eng_rows = eng_rows[np.lexsort((log.ts[eng_rows], log.users[eng_rows]))]
    for u in needed:
        by_user[u] = eng_rows[log.users[eng_rows] == u]
    items_cache: dict[int, ItemContext] = {}

    def item(i: int) -> ItemContext:
        if i not in items_cache:
            items_cache[i] = item_context(log, i)
        return items_cache[i]

    out = []
    for r in rows:
        u, t = int(log.users[r]), float(log.ts[r])
        ev = by_user[u]
        before = ev[: np.searchsorted(log.ts[ev], t, side="left")][::-1]
        history = [item(int(i)) for i in log.items[before]]
        profile = dict(log.user_profiles[u]) if log.user_profiles else {}
        out.append((UserContext(log.user_ids[u], profile, history), item(int(log.items[r])), t))
    return out
