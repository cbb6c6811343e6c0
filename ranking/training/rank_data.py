"""Multi-task ranking data from real logs: labels, temporal split, user groups and category-interest features.

Three sources, one :class:`EventLog` form (one row per exposure with a label per task):

* **MovieLens-100k** (:func:`movielens_log`). Each rating is a positive exposure: task ``watch`` = 1 (the user chose
  to rate the film), task ``like`` = 1 when the rating is >= 4. MovieLens has no impressions, so for every rating
  ``negatives`` films the user never rated (anywhere in the log) are sampled with probability proportional to their
  rating count over the whole log (a popularity-shaped "exposure" distribution; uniform negatives would make task 1
  a popularity detector), with the rating's timestamp; they are 0 for both tasks. Task 2 is therefore "liked among
  everything shown", not "liked given rated".
* **Last.fm HetRec 2011** (:func:`lastfm_log`). Each user-artist pair is a positive exposure: task ``play`` = 1,
  task ``heavy`` = 1 when the pair's play count is above the user's median; popularity-shaped negatives as for
  MovieLens. The plays have no time: rows are ordered by user arrival (the user's earliest dated tag assignment)
  and, within a user, in a seeded random order, so the "temporal" split is a split by user arrival (see there).
* **The community simulator** (:func:`simulator_log`). Every ``user.events`` row is a real exposure: impressions
  and skips are the negatives; task ``play`` = click/play/complete/like/comment/share, task ``like`` =
  like/comment/share.

Split (:func:`build_rank_split`): rows are ordered by time; the last ``test_share`` of rows is the test period, the
``valid_share`` before it the validation period (early stopping), the rest the fit period. Vocabularies (which user
and item ids get their own embedding) and group statistics come from the fit period only.

User groups: a row's user is **new** when the user had fewer than ``new_user_max_history`` engaged rows strictly
before the row's time, else **old**; the gating group is ``status x gender`` (``2 x n_genders``).

Category-level interest differences (the talk's "category-level interest diffs"): for every row, the user's
category profile from their engaged rows strictly before the row, shrunk towards their group's mean profile,
``p = (counts + k * m_g) / (n + k)``, where ``m_g`` is the mean category share of engaged rows of the row's group
(status x gender, fit period) — the gender-based prior a brand-new user starts from. Dense features:

* ``interest_dev`` (``C``): ``p - m_g``, the user's deviation from their group, per category;
* ``affinity`` (5): the item's mean over its categories of ``p``, of ``m_g``, of ``p - m_g``, of
  ``m_(new, gender) - m_(old, gender)`` (how much more new than old users of that gender engage with the item's
  categories), and ``log1p(n) / log(100)``.

Dense columns are standardised with fit-period statistics.

The per-row feature functions (:func:`hour_context`, :func:`item_age_context`, :func:`decade_index`,
:func:`user_groups`, :func:`interest_dense`, :func:`standardise`, :func:`sparse_rows`) are shared with the online
featuriser (:mod:`ranking.online.features`), which applies them to one request from the fit-period statistics
:func:`build_rank_split` keeps in :class:`RankStats`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

import numpy as np

from contracts.ids import age_bucket, published_content, safe_id
from ranking.models.deepfm_mmoe import RankData, RankSchema
from ranking.modules.fields import FieldSpec
from ranking.online.row_features import (
    SPARSE_FIELDS,
    TAG_COUNT_BINS,
    decade_index,
    hour_context,
    interest_dense,
    item_age_context,
    sparse_rows,
    standardise,
    tag_count_bucket,
    user_groups,
)

if TYPE_CHECKING:
    from workloads.datasets import InteractionDataset


@dataclass(frozen=True, eq=False)
class EventLog:
    """Exposures with per-task labels and the side information the ranker uses.

    Attributes:
        name: Source name.
        users: ``int64[N]`` user index per row.
        items: ``int64[N]`` item index per row.
        ts: ``float64[N]`` time (seconds).
        labels: ``float32[N, T]``; column 0 is the "engaged" task that defines history and profiles.
        context: ``int64[N]`` context bucket (1-based, 0 = unknown).
        tasks: Task names.
        user_gender: ``int64[n_users]`` index into ``genders`` + 1 (0 = unknown).
        genders: Gender vocabulary.
        user_age: ``int64[n_users]`` age bucket (1-based, 0 = unknown).
        user_extra: ``int64[n_users]`` one more categorical user column (e.g. occupation; 0 = unknown).
        item_categories: ``float32[n_items, C]`` multi-hot categories.
        item_extra: ``int64[n_items]`` one more categorical item column (e.g. kind, decade; 0 = unknown).
        category_names: Category vocabulary.
        meta: Provenance notes.
        ages: Age vocabulary (``user_age`` ``j`` is ``ages[j - 1]``).
        user_ids: Raw stream id per user index (as the replayer / simulator publishes it).
        item_ids: Raw stream id per item index.
        item_tags: Raw tags per item, as published in ``content.new``.
        item_kinds: Content kind per item (``track``, ``comment``, ...).
        item_created: ``float64[n_items]`` creation time (simulator; zeros when the source has none).
        user_profiles: Per user, the profile map the stream keeps (``gender``, ``age``), raw values.
    """

    name: str
    users: np.ndarray
    items: np.ndarray
    ts: np.ndarray
    labels: np.ndarray
    context: np.ndarray
    tasks: tuple[str, ...]
    user_gender: np.ndarray
    genders: tuple[str, ...]
    user_age: np.ndarray
    user_extra: np.ndarray
    item_categories: np.ndarray
    item_extra: np.ndarray
    category_names: tuple[str, ...]
    meta: dict[str, object] = field(default_factory=dict)
    ages: tuple[str, ...] = ()
    user_ids: tuple[str, ...] = ()
    item_ids: tuple[str, ...] = ()
    item_tags: tuple[tuple[str, ...], ...] = ()
    item_kinds: tuple[str, ...] = ()
    item_created: np.ndarray | None = None
    user_profiles: tuple[dict[str, str], ...] = ()

    @property
    def n_users(self) -> int:
        return int(len(self.user_gender))

    def subset(self, rows: np.ndarray) -> EventLog:
        """The log restricted to ``rows`` (index or boolean mask); users, items and vocabularies stay whole."""
        r = np.flatnonzero(rows) if np.asarray(rows).dtype == bool else np.asarray(rows)
        return replace(self, users=self.users[r], items=self.items[r], ts=self.ts[r], labels=self.labels[r],
                       context=self.context[r])

    @property
    def n_items(self) -> int:
        return int(len(self.item_categories))


def _vocab(values: np.ndarray) -> tuple[np.ndarray, tuple[str, ...]]:
    keys = np.array([str(v) for v in values])
    uniq = sorted(set(keys.tolist()) - {"", "None", "nan", "unknown"})
    lookup = {k: j + 1 for j, k in enumerate(uniq)}
    return np.array([lookup.get(k, 0) for k in keys], dtype=np.int64), tuple(uniq)


def _popularity_negatives(
    users: np.ndarray, items: np.ndarray, n_items: int, negatives: int, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``negatives`` sampled items per ``(users, items)`` row, never one of the user's real pairs.

    Items are drawn with probability proportional to their row count over the whole log; draws that hit a real pair
    of the user are redrawn (up to 20 rounds) and dropped if they still do. Returns ``(neg_users, neg_items, keep)``
    (``np.repeat`` order: the ``negatives`` draws of row ``j`` are at ``j * negatives ...``).
    """
    real = set((users * np.int64(n_items) + items).tolist())
    pop = np.bincount(items, minlength=n_items).astype(np.int64).astype(np.float64)
    pop /= pop.sum()
    neg_u = np.repeat(users, negatives)
    neg_i = rng.choice(n_items, size=len(neg_u), p=pop)

    def hits_real() -> np.ndarray:
        return np.fromiter(((int(u) * n_items + int(i)) in real for u, i in zip(neg_u, neg_i, strict=True)),
                           bool, len(neg_u))

    for _ in range(20):  # resample the (few) draws that hit a real pair
        bad = np.flatnonzero(hits_real())
        if not len(bad):
            break
        neg_i[bad] = rng.choice(n_items, size=len(bad), p=pop)
    return neg_u, neg_i, ~hits_real()  # draws still on a real pair after 20 rounds are dropped


def movielens_log(negatives: int = 2, seed: int = 0) -> EventLog:
    """MovieLens-100k ratings as two-task exposures (see the module docstring)."""
    from workloads.datasets import load_movielens_100k

    ds = load_movielens_100k()
    assert ds.timestamps is not None and ds.user_features is not None
    rng = np.random.default_rng(seed)
    n = ds.n_interactions
    neg_u, neg_i, keep = _popularity_negatives(ds.users, ds.items, ds.n_items, negatives, rng)
    users = np.concatenate([ds.users, neg_u[keep]])
    items = np.concatenate([ds.items, neg_i[keep]])
    ts = np.concatenate([ds.timestamps, np.repeat(ds.timestamps, negatives)[keep]]).astype(np.float64)
    labels = np.zeros((len(users), 2), np.float32)
    labels[:n, 0] = 1.0
    labels[:n, 1] = (ds.weights >= 4).astype(np.float32)
    context = hour_context(ts)  # six 4-hour buckets (UTC)
    gender, genders = _vocab(np.array([str(g).lower() for g in ds.user_features["gender"]]))
    age_raw = [age_bucket(a) for a in ds.user_features["age"]]
    age, ages = _vocab(np.array(age_raw))
    occ, _ = _vocab(ds.user_features["occupation"])
    cats = sorted({g for tags in ds.item_tags for g in tags})
    col = {c: j for j, c in enumerate(cats)}
    ic = np.zeros((ds.n_items, len(cats)), np.float32)
    for i, tags in enumerate(ds.item_tags):
        for g in tags:
            ic[i, col[g]] = 1.0
    decade = decade_index(ds.item_features["year"])
    # raw ids, tags and profiles exactly as the replayer publishes them (workloads.replay.sample_dataset)
    prefix = ds.name.replace(" ", "_")
    profiles = []
    for g_raw, a_raw in zip(ds.user_features["gender"], age_raw, strict=True):
        gv = str(g_raw).lower()
        profiles.append({"gender": gv if gv in ("f", "m") else "unknown", "age": a_raw})
    return EventLog("ml-100k", users.astype(np.int64), items.astype(np.int64), ts, labels, context,
                    ("watch", "like"), gender, genders, age, occ, ic, decade, tuple(cats),
                    {"negatives_per_rating": negatives, "negative_sampling": "popularity over the whole log",
                     "context": "hour of day (UTC) in 4-hour buckets", "item_extra": "release decade",
                     # every rating is an engaged row; the replayer publishes ratings as like / play / skip
                     "history_actions": ["like", "play", "skip"]},
                    ages=ages,
                    user_ids=tuple(safe_id(f"{prefix}:u:", u) for u in ds.user_ids),
                    item_ids=tuple(safe_id(f"{prefix}:i:", i) for i in ds.item_ids),
                    item_tags=tuple(tuple(published_content(ds.item_text[i], ds.item_tags[i])[1])
                                    for i in range(ds.n_items)),
                    item_kinds=("track",) * ds.n_items, item_created=np.zeros(ds.n_items, np.float64),
                    user_profiles=tuple(profiles))


LASTFM_MAX_CATEGORIES = 48
"""Last.fm categories: the most frequent published tags (by number of artists carrying them)."""


def _lastfm_user_start(ds: InteractionDataset) -> tuple[np.ndarray, dict[str, int]]:
    """Per user, the epoch seconds (00:00 UTC) of their earliest dated tag assignment (years before 2002 ignored).

    Users without one (none in HetRec 2011) get the latest start of all. Returns ``(start, counts)``.
    """
    from datetime import UTC, datetime
    from pathlib import Path

    from workloads.datasets.lastfm import _read_dat

    folder = Path(str(ds.meta["source"]))
    pos = {u: j for j, u in enumerate(ds.user_ids)}
    start = np.full(ds.n_users, np.inf)
    implausible = 0
    for r in _read_dat(folder / "user_taggedartists.dat", 6):
        j = pos.get(str(int(r[0])))
        year = int(r[5])
        if j is None:
            continue
        if year < 2002:  # 5 assignments dated 1956-1979; Last.fm launched in 2002
            implausible += 1
            continue
        t = datetime(year, int(r[4]), int(r[3]), tzinfo=UTC).timestamp()
        start[j] = min(start[j], t)
    undated = ~np.isfinite(start)
    start[undated] = start[~undated].max() if (~undated).any() else 0.0
    return start, {"tag_assignments_before_2002_ignored": implausible, "users_without_dated_tag": int(undated.sum())}


def lastfm_log(negatives: int = 2, seed: int = 0, max_categories: int = LASTFM_MAX_CATEGORIES) -> EventLog:
    """Last.fm HetRec 2011 user-artist play counts as two-task exposures.

    **Exposures and tasks.** Every user-artist pair of ``user_artists.dat`` (each user's up to 50 most-played
    artists, with the play count) is a positive exposure; for every pair ``negatives`` artists the user never
    played are sampled with probability proportional to their listener count over the whole log (popularity-shaped,
    as :func:`movielens_log`), with the pair's time; they are 0 for both tasks.

    * task 0 ``play``: the user listened to the artist (1 for every pair). This is the engaged task: history and
      profiles are built from it, and ``thaw replay lastfm`` publishes every pair as a ``play`` event, so
      ``history_actions`` = ``("play",)``.
    * task 1 ``heavy``: the pair's play count is strictly above the median play count of the user's own artists
      (ties are not heavy), i.e. the artist is in the upper half of that user's listening — about half of the
      pairs. "Heavy among everything shown", the analogue of MovieLens' ``like``. The median is over all the user's
      pairs (a label definition relative to the user, not a feature). The stream does not carry play counts, so
      online this task is scored, never observed.

    **Time (the data has none for plays).** The listening counts are aggregates with no timestamps; the only dated
    events are tag assignments (``user_taggedartists.dat``, day resolution, mostly the 1st of a month), and only
    22% of pairs were tagged by their user — and tagged pairs are heavy more often (63% vs 46%), so dating the
    tagged pairs by their tag and the rest otherwise would leak the label through the row order. Instead the order
    is *by user arrival*: a user's start is their earliest dated tag assignment (any artist; years before 2002 are
    ignored as implausible), and their pairs follow it one minute apart in a seeded random order (the
    file's artist-id order follows the crawl of each user's top-artist list and correlates with play rank, so it
    would leak ``heavy`` into the history count). The time split of :func:`build_rank_split` is therefore a split
    by user arrival: the test period is (up to the one user straddling each cut) the latest-arriving users, all
    unseen in the fit period, new for their first ``new_user_max_history`` artists and old afterwards; "new" and
    "old" are positions in a user's (random) listening order, not calendar time. It is leak-free in that no row's
    features or label depend on its position, and the fit-period statistics never see a test user.

    **Side information.** Categories: the ``max_categories`` tags carried by most artists among the tags as the
    replayer publishes them (each artist's 20 most applied, cut to 64 characters), matched exactly, so
    :meth:`~ranking.online.features.RankFeaturizer.categories_of` maps published tags to the same columns. Last.fm
    has no gender or age: ``genders = ()``, ``ages = ()``, so the gating groups are ``new|unknown`` and
    ``old|unknown`` only — group-wise gating conditions on new/old status alone. ``user_extra`` = 0: the friend
    graph is not in the ``user.profile`` contract, so it is not used (no train/serve difference). ``context`` = 0:
    the rows have no time of day. ``item_extra`` = the published tag count bucketed (:func:`tag_count_bucket`),
    computable online from the item's tags. Raw ids (``lastfm:u:2``, ``lastfm:i:51``), tags, kind ``track`` and the
    (empty) profile are what ``thaw replay lastfm`` publishes (:func:`workloads.replay.sample_dataset`).
    """
    from workloads.datasets import load_dataset

    ds = load_dataset("lastfm")
    rng = np.random.default_rng(seed)
    n = ds.n_interactions
    plays = np.asarray(ds.meta["plays"], np.int64)
    neg_u, neg_i, keep = _popularity_negatives(ds.users, ds.items, ds.n_items, negatives, rng)
    # per-user median play count -> heavy
    order = np.lexsort((plays, ds.users))
    median = np.zeros(ds.n_users, np.float64)
    bounds = np.searchsorted(ds.users[order], np.arange(ds.n_users + 1))
    for u in range(ds.n_users):
        p = plays[order[bounds[u] : bounds[u + 1]]]
        median[u] = float(np.median(p)) if len(p) else 0.0
    heavy = plays > median[ds.users]
    # time: the user's arrival (earliest dated tag assignment) + one minute per pair in a seeded random order
    start, date_info = _lastfm_user_start(ds)
    rank = np.empty(n, np.int64)
    key = rng.random(n)
    by_user = np.lexsort((key, ds.users))
    rank[by_user] = np.arange(n) - np.searchsorted(ds.users[by_user], ds.users[by_user], side="left")
    pair_ts = start[ds.users] + 60.0 * rank
    users = np.concatenate([ds.users, neg_u[keep]])
    items = np.concatenate([ds.items, neg_i[keep]])
    ts = np.concatenate([pair_ts, np.repeat(pair_ts, negatives)[keep]]).astype(np.float64)
    labels = np.zeros((len(users), 2), np.float32)
    labels[:n, 0] = 1.0
    labels[:n, 1] = heavy.astype(np.float32)
    # tags exactly as the replayer publishes them; categories = the most common ones
    tags = tuple(tuple(published_content(ds.item_text[i], ds.item_tags[i])[1]) for i in range(ds.n_items))
    df: dict[str, int] = {}
    for tg in tags:
        for t in set(tg):
            df[t] = df.get(t, 0) + 1
    cats = [t for t, _ in sorted(df.items(), key=lambda kv: (-kv[1], kv[0]))[:max_categories]]
    col = {c: j for j, c in enumerate(cats)}
    ic = np.zeros((ds.n_items, len(cats)), np.float32)
    for i, tg in enumerate(tags):
        for t in tg:
            if t in col:
                ic[i, col[t]] = 1.0
    prefix = ds.name.replace(" ", "_")
    return EventLog("lastfm", users.astype(np.int64), items.astype(np.int64), ts, labels,
                    np.zeros(len(users), np.int64), ("play", "heavy"), np.zeros(ds.n_users, np.int64), (),
                    np.zeros(ds.n_users, np.int64), np.zeros(ds.n_users, np.int64), ic,
                    tag_count_bucket(np.array([len(tg) for tg in tags])), tuple(cats),
                    {"negatives_per_pair": negatives, "negative_sampling": "popularity (listeners) over the whole log",
                     "heavy": "play count > the median play count of the user's own artists",
                     "time": "user arrival (earliest dated tag assignment) + 60 s per pair in a seeded random "
                             "order; the split is by user arrival, not by listening time",
                     **date_info, "context": "none (0): no time of day",
                     "item_extra": "published tag count bucket (0, 1-2, 3-5, 6-10, 11-19, 20)",
                     "item_extra_bins": list(TAG_COUNT_BINS), "user_extra": "none (0)",
                     "categories": f"the {len(cats)} published tags carried by most artists",
                     "genders": "none: gating groups are new/old only",
                     # the replayer publishes every pair as a play
                     "history_actions": ["play"]},
                    user_ids=tuple(safe_id(f"{prefix}:u:", u) for u in ds.user_ids),
                    item_ids=tuple(safe_id(f"{prefix}:i:", i) for i in ds.item_ids),
                    item_tags=tags, item_kinds=("track",) * ds.n_items,
                    item_created=np.zeros(ds.n_items, np.float64),
                    user_profiles=tuple({"gender": "unknown", "age": "unknown"} for _ in ds.user_ids))


SIM_ENGAGED = ("click", "play", "complete", "like", "comment", "share")
"""Simulator actions of the engaged task (task 0); impressions and skips are the negatives."""


def simulator_log(steps: int = 240, seed: int = 0, max_categories: int = 48, catalogue: str = "lastfm") -> EventLog:
    """The simulator's exposures (impressions and skips are negatives) as two-task rows.

    Args:
        steps: Simulated steps (``SimConfig.steps``).
        seed: Simulator seed.
        max_categories: Categories = the most frequent topics over the simulated items (at most this many).
        catalogue: ``lastfm`` (Last.fm artists from ``THAW_DATASETS_DIR`` plus the built corpora) or ``community``
            (the demo community: registry data only), :func:`workloads.community.sim_catalogue`.
    """
    from workloads.community import sim_catalogue
    from workloads.simulator import AGES, KINDS, CommunitySimulator, SimConfig

    sim = CommunitySimulator(sim_catalogue(catalogue), SimConfig(seed=seed, steps=steps))
    rows_u, rows_i, rows_t, acts = [], [], [], []
    uix: dict[str, int] = {}
    iix: dict[str, int] = {}
    for ev in sim.stream():
        if ev.topic != "user.events":
            continue
        rows_u.append(ev.data["user_id"])
        rows_i.append(ev.data["item_id"])
        rows_t.append(float(ev.ts))
        acts.append(ev.data["action"])
    uix = {u.user_id: j for j, u in enumerate(sim.users)}
    iix = {it.item_id: j for j, it in enumerate(sim.items)}
    users = np.array([uix[u] for u in rows_u], np.int64)
    items = np.array([iix[i] for i in rows_i], np.int64)
    ts = np.array(rows_t, np.float64)
    act = np.array(acts)
    labels = np.stack([np.isin(act, list(SIM_ENGAGED)),
                       np.isin(act, ["like", "comment", "share"])], axis=1).astype(np.float32)
    topics = np.stack([it.topic for it in sim.items]) > 0
    top = np.argsort(-topics.sum(0), kind="stable")[:max_categories]
    ic = topics[:, top].astype(np.float32)
    created = np.array([it.created_ts for it in sim.items])
    context = item_age_context(ts, created[items], sim.cfg.step_s)  # item age at exposure, in steps
    gender, genders = _vocab(np.array([u.gender for u in sim.users]))
    age = np.array([AGES.index(u.age_bucket) + 1 for u in sim.users], np.int64)
    kind = np.array([KINDS.index(it.kind) + 1 for it in sim.items], np.int64)
    return EventLog("sim", users, items, ts, labels, context, ("play", "like"), gender, genders, age,
                    np.zeros(len(sim.users), np.int64), ic, kind, tuple(sim.cat.topics[j] for j in top),
                    {"steps": steps, "seed": seed, "catalogue": catalogue,
                     "context": "item age at exposure (<1, 1-3, 3-10, >=10 steps)",
                     "item_extra": "item kind", "actions": {a: int((act == a).sum()) for a in np.unique(act)},
                     "step_s": sim.cfg.step_s, "kinds": list(KINDS), "history_actions": list(SIM_ENGAGED)},
                    ages=AGES, user_ids=tuple(u.user_id for u in sim.users),
                    item_ids=tuple(it.item_id for it in sim.items),
                    item_tags=tuple(tuple(it.asset.tags) for it in sim.items),
                    item_kinds=tuple(it.kind for it in sim.items), item_created=created.astype(np.float64),
                    user_profiles=tuple({"gender": u.gender, "age": u.age_bucket} for u in sim.users))


@dataclass(frozen=True)
class SplitConfig:
    """How :func:`build_rank_split` cuts and featurises the log.

    Attributes:
        test_share: Latest share of rows (by time) in the test period.
        valid_share: Share of rows before the test period used for early stopping.
        new_user_max_history: A user is *new* at a row while they have fewer engaged rows before it.
        shrinkage: Pseudo-count ``k`` pulling a user's category profile towards their group mean.
        id_dropout: Share of fit rows whose user id (and, independently, item id) is replaced by "unknown", so
            the unknown rows are trained (users/items first seen after the fit period map to them).
        seed: Seed of the id dropout.
    """

    test_share: float = 0.2
    valid_share: float = 0.1
    new_user_max_history: int = 10
    shrinkage: float = 5.0
    id_dropout: float = 0.1
    seed: int = 0


@dataclass(frozen=True, eq=False)
class RankStats:
    """The fit-period statistics every row's features are computed from (offline and online).

    Attributes:
        group_means: ``float64[G, C]`` mean category share of engaged fit rows per group (normalised to sum 1).
        n_genders: Gender values incl. unknown (``len(genders) + 1``); ``group = old * n_genders + gender``.
        shrinkage: Pseudo-count ``k`` of the profile shrinkage.
        new_user_max_history: A user is new while they have fewer engaged rows.
        dense_mu: ``float32[D]`` fit-period mean of the raw dense columns.
        dense_sd: ``float32[D]`` fit-period standard deviation (+ 1e-6) of the raw dense columns.
        known_users: ``bool[n_users]`` users with a fit row (own id embedding; others map to 0).
        known_items: ``bool[n_items]`` items with a fit row.
        cardinalities: Per sparse field (:data:`SPARSE_FIELDS`), the schema's cardinality.
    """

    group_means: np.ndarray
    n_genders: int
    shrinkage: float
    new_user_max_history: int
    dense_mu: np.ndarray
    dense_sd: np.ndarray
    known_users: np.ndarray
    known_items: np.ndarray
    cardinalities: tuple[int, ...]


@dataclass(frozen=True, eq=False)
class RankSplit:
    """Featurised fit / validation / test rows, the schema, and what each group index means.

    ``stats`` holds the fit-period statistics (for the online featuriser) and ``rows`` the log row index of every
    fit / valid / test row, in the order of ``fit`` / ``valid`` / ``test``.
    """

    schema: RankSchema
    fit: RankData
    valid: RankData
    test: RankData
    group_names: tuple[str, ...]
    test_is_new: np.ndarray
    test_gender: np.ndarray
    genders: tuple[str, ...]
    info: dict[str, object]
    stats: RankStats | None = None
    rows: dict[str, np.ndarray] = field(default_factory=dict)

    def test_groups(self) -> dict[str, np.ndarray]:
        """Report groups of the test rows: ``all``, ``new``, ``old`` and ``gender=<g>`` (boolean masks)."""
        out = {"all": np.ones(len(self.test), bool), "new": self.test_is_new, "old": ~self.test_is_new}
        for j, g in enumerate(self.genders):
            out[f"gender={g}"] = self.test_gender == j + 1
        return out




def _prior_history(users: np.ndarray, ts: np.ndarray, engaged: np.ndarray, cats: np.ndarray,
                   n_users: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row: engaged rows of its user strictly before its time, and their summed categories (``N x C``)."""
    n_rows, c = len(users), cats.shape[1]
    count = np.zeros(n_rows, np.int64)
    profile = np.zeros((n_rows, c), np.float32)
    order = np.lexsort((ts, users))
    bounds = np.searchsorted(users[order], np.arange(n_users + 1))
    for u in range(n_users):
        rows = order[bounds[u] : bounds[u + 1]]
        if not len(rows):
            continue
        eng = rows[engaged[rows]]
        if not len(eng):
            continue
        e_ts = ts[eng]  # sorted (lexsort by ts within user)
        before = np.searchsorted(e_ts, ts[rows], side="left")
        count[rows] = before
        csum = np.vstack([np.zeros((1, c), np.float32), np.cumsum(cats[eng], axis=0, dtype=np.float32)])
        profile[rows] = csum[before]
    return count, profile


def build_rank_split(log: EventLog, config: SplitConfig = SplitConfig()) -> RankSplit:  # noqa: B008
    """Temporal split + features + schema (see the module docstring)."""
    rng = np.random.default_rng(config.seed)
    order = np.argsort(log.ts, kind="stable")
    n = len(order)
    t_cut = int(round((1 - config.test_share) * n))
    v_cut = int(round((1 - config.test_share - config.valid_share) * n))
    period = np.zeros(n, np.int64)  # 0 fit, 1 valid, 2 test
    period[order[v_cut:t_cut]] = 1
    period[order[t_cut:]] = 2
    fit_rows = period == 0
    engaged = log.labels[:, 0] > 0
    item_cats = log.item_categories[log.items]  # N x C
    count, sums = _prior_history(log.users, log.ts, engaged, item_cats, log.n_users)
    n_g = len(log.genders) + 1  # + unknown
    gender_of_row = log.user_gender[log.users]
    is_new, group = user_groups(count, gender_of_row, n_g, config.new_user_max_history)
    n_groups = 2 * n_g
    # group mean category share of engaged fit rows (per row: categories normalised to sum 1)
    share = item_cats / np.maximum(item_cats.sum(1, keepdims=True), 1.0)
    overall = share[fit_rows & engaged].mean(0) if (fit_rows & engaged).any() else np.zeros(share.shape[1])
    means = np.tile(overall, (n_groups, 1)).astype(np.float64)
    for g in range(n_groups):
        m = fit_rows & engaged & (group == g)
        if m.sum() >= 20:
            means[g] = share[m].mean(0)
    means /= np.maximum(means.sum(1, keepdims=True), 1e-12)
    raw_dense = interest_dense(count, sums, item_cats, gender_of_row, group, means, n_g, config.shrinkage)
    c = log.item_categories.shape[1]
    mu, sd = raw_dense[fit_rows].mean(0), raw_dense[fit_rows].std(0) + 1e-6
    dense = standardise(raw_dense, mu, sd)
    # id vocabularies from the fit period (0 = unknown)
    known_u = np.zeros(log.n_users, bool)
    known_u[log.users[fit_rows]] = True
    known_i = np.zeros(log.n_items, bool)
    known_i[log.items[fit_rows]] = True
    uid = np.where(known_u[log.users], log.users + 1, 0)
    iid = np.where(known_i[log.items], log.items + 1, 0)
    drop_u = fit_rows & (rng.random(n) < config.id_dropout)
    drop_i = fit_rows & (rng.random(n) < config.id_dropout)
    uid[drop_u] = 0
    iid[drop_i] = 0
    sparse = sparse_rows(uid, iid, gender_of_row, log.user_age[log.users], log.user_extra[log.users], is_new,
                         log.context, log.item_extra[log.items])
    cards = tuple(int(sparse[:, j].max()) + 1 for j in range(sparse.shape[1]))
    cards = (log.n_users + 1, log.n_items + 1, *cards[2:])
    schema = RankSchema(sparse=tuple(zip(SPARSE_FIELDS, cards, strict=True)), n_categories=c,
                        dense=(FieldSpec("interest_dev", c), FieldSpec("affinity", 5)),
                        n_groups=n_groups, tasks=log.tasks)
    stats = RankStats(means, n_g, float(config.shrinkage), int(config.new_user_max_history), mu.astype(np.float32),
                      sd.astype(np.float32), known_u, known_i, cards)
    data = RankData(sparse, item_cats.astype(np.float32), dense, group, log.labels.astype(np.float32))

    rows_of = {name: order[period[order] == p] for p, name in enumerate(("fit", "valid", "test"))}  # time order
    test_rows = rows_of["test"]
    g_names = tuple(f"{'new' if s == 0 else 'old'}|{(('unknown',) + log.genders)[g]}"
                    for s in range(2) for g in range(n_g))
    info: dict[str, object] = {
        "rows": {"fit": int((period == 0).sum()), "valid": int((period == 1).sum()), "test": int((period == 2).sum())},
        "test_new_share": float(is_new[test_rows].mean()) if len(test_rows) else float("nan"),
        "test_unknown_user_share": float((uid[test_rows] == 0).mean()) if len(test_rows) else float("nan"),
        "test_unknown_item_share": float((iid[test_rows] == 0).mean()) if len(test_rows) else float("nan"),
        "positive_rate_fit": [float(x) for x in log.labels[period == 0].mean(0)],
        "positive_rate_test": [float(x) for x in log.labels[period == 2].mean(0)],
        "categories": len(log.category_names),
        "group_category_means": {g_names[g]: [round(float(x), 4) for x in means[g]] for g in range(n_groups)},
        "category_names": list(log.category_names),
        "config": {"test_share": config.test_share, "valid_share": config.valid_share,
                   "new_user_max_history": config.new_user_max_history, "shrinkage": config.shrinkage,
                   "id_dropout": config.id_dropout},
    }
    return RankSplit(schema, data.take(rows_of["fit"]), data.take(rows_of["valid"]), data.take(rows_of["test"]),
                     g_names, is_new[test_rows], gender_of_row[test_rows], log.genders, info, stats, rows_of)
