"""User cold start: which interactions a new user has revealed, group priors, and the multimodal taste vector.

The pieces :mod:`ranking.evaluation.new_users` assembles (NetEase talk, "Cold-Start Practices - User Cold-Start":
LightGCN
user embeddings from behaviour, enhanced with multimodal embeddings of what the user played; brand-new users start
from a group prior):

* :class:`RevealSplit`: held-out users (validation / test) with their history in a fixed order, so that "reveal the
  first ``n``" gives nested reveal sets for every ``n`` and the same users are evaluated at every ``n``.
* :class:`UserGroups` + :func:`group_prior`: the mean CF vector of warm users in the same group. Groups per dataset:
  MovieLens gender x age bucket (falling back to gender alone, then to all warm users); Last.fm has no demographics,
  so a user's "declared genres" are its three most applied tags in ``user_taggedartists.dat`` (the tags the user
  typed, not the artists it tagged), and its prior is the mean of the group means of those tags; any dataset with a
  ``user,group`` file uses those groups.
* :class:`TasteProjection`: ridge map from the mean content embedding of a few of a user's items to the user's CF
  vector, fitted on warm users with the same few-item sampling the new users go through.
* :func:`blend`: the multimodal-enhanced vector, whose prior share shrinks as ``k / (n + k)``.
"""

from __future__ import annotations

import csv
import os
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ranking.models.lightgcn import apply_linear_map, fit_linear_map
from workloads.datasets.base import InteractionDataset
from workloads.splits import NewUserSplit, new_user_split

ML_AGE_EDGES = (18, 25, 35, 45, 50, 56)
"""MovieLens-1M's age buckets (under 18, 18-24, 25-34, 35-44, 45-49, 50-55, 56+), applied to ml-100k ages."""


# ---------------------------------------------------------------------------------------------------- reveal


@dataclass(frozen=True, eq=False)
class RevealSplit:
    """Held-out users with an ordered history.

    Attributes:
        split: The underlying :func:`workloads.splits.new_user_split` (users with more than ``max(reveal)``
            interactions are eligible; its ``train`` rows are the warm users' rows).
        position: ``int64[n_interactions]``: the row's position in its user's ordered history (by timestamp when
            the dataset has them, ties and timestamp-less datasets in seeded random order); ``-1`` for warm rows.
    """

    split: NewUserSplit
    position: np.ndarray

    @property
    def train(self) -> np.ndarray:
        """Rows of the warm (training) users."""
        return self.split.train

    def users(self, part: str) -> np.ndarray:
        """Sorted ``val`` or ``test`` users."""
        return self.split.val_users if part == "val" else self.split.test_users

    def rows(self, part: str) -> np.ndarray:
        """All rows of the ``part`` users."""
        s = self.split
        parts = [s.val_reveal, s.val_target] if part == "val" else [s.test_reveal, s.test_target]
        return np.sort(np.concatenate(parts))

    def reveal(self, part: str, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``(revealed rows, target rows)``: each ``part`` user's first ``n`` rows and the rest."""
        rows = self.rows(part)
        first = self.position[rows] < n
        return rows[first], rows[~first]


def reveal_split(
    ds: InteractionDataset, max_reveal: int, user_share: float = 0.3, val_share: float = 0.1, seed: int = 0
) -> RevealSplit:
    """Holds out ``user_share`` of the users with more than ``max_reveal`` interactions (``val_share`` of them for
    validation, the rest for test) and orders every held-out user's history.

    Args:
        ds: The dataset.
        max_reveal: The largest number of interactions that will be revealed.
        user_share: Share of eligible users held out (validation + test).
        val_share: Share of eligible users used for validation.
        seed: Seed of the user draw and of the order tie-breaks.
    """
    split = new_user_split(ds, user_share=user_share, reveal_k=max_reveal, seed=seed, val_share=val_share)
    tiebreak = np.random.default_rng(seed + 7919).random(ds.n_interactions)
    keys = (tiebreak, ds.users) if ds.timestamps is None else (tiebreak, ds.timestamps, ds.users)
    order = np.lexsort(keys)
    su = ds.users[order]
    first = np.searchsorted(su, su, side="left")
    position = np.empty(ds.n_interactions, dtype=np.int64)
    position[order] = np.arange(ds.n_interactions) - first
    held = np.zeros(ds.n_users, dtype=bool)
    held[split.val_users] = True
    held[split.test_users] = True
    position[~held[ds.users]] = -1
    return RevealSplit(split=split, position=position)


def item_sets(ds: InteractionDataset, rows: np.ndarray, users: np.ndarray) -> list[np.ndarray]:
    """Per user of ``users`` (in order), the sorted distinct items of ``rows``."""
    out: list[np.ndarray] = [np.zeros(0, dtype=np.int64) for _ in users]
    pos = {int(u): r for r, u in enumerate(users)}
    if len(rows) == 0:
        return out
    pairs = np.unique(np.stack([ds.users[rows], ds.items[rows]], axis=1), axis=0)
    keys, starts = np.unique(pairs[:, 0], return_index=True)
    for key, grp in zip(keys.tolist(), np.split(pairs[:, 1], starts[1:]), strict=True):
        if key in pos:
            out[pos[key]] = grp.astype(np.int64)
    return out


def niche_users(ds: InteractionDataset, users: np.ndarray, rows: np.ndarray, item_pop: np.ndarray,
                share: float = 1 / 3) -> tuple[np.ndarray, float]:
    """The niche slice: users whose interactions' mean item popularity is in the bottom ``share``.

    Args:
        ds: The dataset.
        users: The users to slice (e.g. the test users).
        rows: All of their interaction rows (revealed and targets).
        item_pop: ``int64[n_items]`` training interactions per item (warm users only).
        share: Bottom share that counts as niche.

    Returns:
        ``(bool[len(users)] mask, threshold)``: niche = mean popularity ``<=`` the ``share`` quantile among
        ``users``.
    """
    idx = np.searchsorted(users, ds.users[rows])
    s = np.bincount(idx, weights=item_pop[ds.items[rows]].astype(np.float64), minlength=len(users))
    c = np.bincount(idx, minlength=len(users))
    mean = s / np.maximum(c, 1)
    thr = float(np.quantile(mean, share)) if len(users) else float("nan")
    return mean <= thr, thr


# ---------------------------------------------------------------------------------------------------- groups


@dataclass(frozen=True, eq=False)
class UserGroups:
    """Per user, group keys from the finest level to the coarsest.

    Attributes:
        levels: ``levels[u][l]`` = the keys of user ``u`` at level ``l`` (several keys = the prior is the mean of
            their group means, e.g. a user's top tags); an empty list = no information at that level.
        description: What the groups are, for the report.
    """

    levels: list[list[list[str]]]
    description: str

    def coverage(self, users: np.ndarray) -> float:
        """Share of ``users`` with at least one key at the finest level."""
        if len(users) == 0:
            return float("nan")
        return float(np.mean([bool(self.levels[int(u)] and self.levels[int(u)][0]) for u in users]))


def age_bucket(age: int) -> str:
    """MovieLens-1M style age bucket label of an age (see :data:`ML_AGE_EDGES`)."""
    k = int(np.searchsorted(ML_AGE_EDGES, age, side="right"))
    lo = ([1, *ML_AGE_EDGES])[k]
    return f"{lo}+" if k == len(ML_AGE_EDGES) else f"{lo}-{ML_AGE_EDGES[k] - 1}"


def demographic_groups(ds: InteractionDataset) -> UserGroups | None:
    """Gender x age bucket, then gender (``None`` when the dataset lacks either column)."""
    uf = ds.user_features or {}
    if "gender" not in uf or "age" not in uf:
        return None
    g = [str(x) for x in uf["gender"]]
    a = [age_bucket(int(x)) for x in uf["age"]]
    levels = [[[f"{gu}|{au}"], [gu]] for gu, au in zip(g, a, strict=True)]
    return UserGroups(levels, "gender x age bucket (MovieLens-1M buckets); fallback gender, then all warm users")


def lastfm_tag_groups(ds: InteractionDataset, top: int = 3, folder: str | os.PathLike[str] | None = None) -> UserGroups:
    """Last.fm "declared genres": each user's ``top`` most applied tags (``user_taggedartists.dat``).

    Only the tag names the user applied are used (a stand-in for the genres a user declares at registration), never
    which artists were tagged. Users who never tagged anything have no key and get the all-warm-users prior.
    """
    root = Path(folder) if folder is not None else Path(str(ds.meta["source"]))
    names: dict[str, str] = {}
    with (root / "tags.dat").open(encoding="latin-1", newline="") as f:
        for r in csv.reader(f, delimiter="\t"):
            if r and r[0].isdigit():
                names[r[0]] = r[1].strip().lower()
    pos = {uid: k for k, uid in enumerate(ds.user_ids)}
    counts: list[Counter[str]] = [Counter() for _ in range(ds.n_users)]
    with (root / "user_taggedartists.dat").open(encoding="utf-8", newline="") as f:
        for r in csv.reader(f, delimiter="\t"):
            if not r or not r[0].isdigit():
                continue
            k = pos.get(r[0])
            if k is not None and r[2] in names:
                counts[k][names[r[2]]] += 1
    levels = [[[t for t, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[:top]]] for c in counts]
    return UserGroups(levels, f"Last.fm: the user's {top} most applied tag names (user_taggedartists.dat); prior = "
                              "mean of those tags' warm-user means; no tags -> all warm users")


def file_groups(ds: InteractionDataset, path: str | os.PathLike[str]) -> UserGroups:
    """Groups from a ``user,group`` CSV (header optional; several rows per user = several keys)."""
    pos = {uid: k for k, uid in enumerate(ds.user_ids)}
    keys: list[list[str]] = [[] for _ in range(ds.n_users)]
    with Path(path).open(newline="") as f:
        for r in csv.reader(f):
            if len(r) >= 2 and r[0] in pos:
                keys[pos[r[0]]].append(r[1].strip())
    return UserGroups([[k] for k in keys], f"user groups from {Path(path).name}; no group -> all warm users")


def default_groups(ds: InteractionDataset, groups_file: str | os.PathLike[str] | None = None) -> UserGroups:
    """The groups used for ``ds``: a groups file, else demographics, else Last.fm tags, else none."""
    if groups_file is not None:
        return file_groups(ds, groups_file)
    demo = demographic_groups(ds)
    if demo is not None:
        return demo
    if ds.name == "lastfm" and (Path(str(ds.meta.get("source", ""))) / "user_taggedartists.dat").is_file():
        return lastfm_tag_groups(ds)
    return UserGroups([[] for _ in range(ds.n_users)], "no user groups: every new user gets the all-warm-users mean")


def group_prior(
    groups: UserGroups, warm_users: np.ndarray, warm_vectors: np.ndarray, users: np.ndarray, min_members: int = 5
) -> tuple[np.ndarray, np.ndarray]:
    """Group-prior vectors of ``users`` from the warm users' vectors.

    For each user the finest level with at least one key having ``min_members`` warm members wins; the prior is the
    mean over those keys of each key's warm-member mean. No such level: the mean of all warm users.

    Args:
        groups: The groups.
        warm_users: ``int64[W]`` warm users.
        warm_vectors: ``float32[W, d]`` their CF vectors.
        users: ``int64[U]`` users to give a prior.
        min_members: Smallest group that is trusted.

    Returns:
        ``(float32[U, d] priors, int64[U] level used; -1 = all warm users)``.
    """
    sums: dict[tuple[int, str], np.ndarray] = {}
    cnt: Counter[tuple[int, str]] = Counter()
    for u, v in zip(warm_users.tolist(), warm_vectors, strict=True):
        for lvl, keys in enumerate(groups.levels[u]):
            for key in keys:
                sums[(lvl, key)] = sums.get((lvl, key), 0.0) + v
                cnt[(lvl, key)] += 1
    global_mean = warm_vectors.mean(axis=0)
    out = np.repeat(global_mean[None, :], len(users), axis=0).astype(np.float32)
    used = np.full(len(users), -1, dtype=np.int64)
    for r, u in enumerate(users.tolist()):
        for lvl, keys in enumerate(groups.levels[u]):
            ok = [k for k in keys if cnt[(lvl, k)] >= min_members]
            if ok:
                out[r] = np.mean([sums[(lvl, k)] / cnt[(lvl, k)] for k in ok], axis=0)
                used[r] = lvl
                break
    return out, used


# ---------------------------------------------------------------------------------------------------- taste


def mean_content(content: np.ndarray, sets: Sequence[np.ndarray]) -> np.ndarray:
    """``float32[U, C]``: per set, the mean of its items' content rows (zeros for an empty set)."""
    out = np.zeros((len(sets), content.shape[1]), dtype=np.float32)
    for r, s in enumerate(sets):
        if len(s):
            out[r] = content[np.asarray(s, dtype=np.int64)].mean(axis=0)
    return out


@dataclass(frozen=True, eq=False)
class TasteProjection:
    """The multimodal taste vector: ``[mean content of the revealed items, 1] W`` in the CF space.

    Attributes:
        weights: ``float32[C + 1, d]`` (see :func:`ranking.models.lightgcn.fit_linear_map`).
        ridge: The L2 weight it was fitted with.
    """

    weights: np.ndarray
    ridge: float

    def __call__(self, content: np.ndarray, sets: Sequence[np.ndarray]) -> np.ndarray:
        """``float32[U, d]`` taste vectors of users with revealed item ``sets``."""
        return apply_linear_map(mean_content(content, sets), self.weights)


def fit_taste_projection(
    content: np.ndarray,
    warm_sets: Sequence[np.ndarray],
    warm_vectors: np.ndarray,
    sizes: Sequence[int] = (1, 3, 5),
    samples: int = 2,
    ridge: float = 1e-2,
    seed: int = 0,
) -> TasteProjection:
    """Fits the taste projection on warm users, each seen through ``samples`` random ``n``-item subsets per ``n``.

    Args:
        content: ``float32[n_items, C]`` item content (e.g. :meth:`ContentFields.concatenated`; audio and image
            fields simply widen ``C``).
        warm_sets: Per warm user, its training items.
        warm_vectors: ``float32[W, d]`` the warm users' CF vectors (the targets).
        sizes: Subset sizes, as many items as a new user will have revealed.
        samples: Subsets per user and size.
        ridge: L2 weight.
        seed: Subset sampling seed.
    """
    rng = np.random.default_rng(seed)
    xs, ys = [], []
    for s, y in zip(warm_sets, warm_vectors, strict=True):
        if len(s) == 0:
            continue
        for n in sizes:
            for _ in range(samples):
                pick = s if len(s) <= n else rng.choice(s, n, replace=False)
                xs.append(content[pick].mean(axis=0))
                ys.append(y)
    return TasteProjection(fit_linear_map(np.asarray(xs), np.asarray(ys), ridge), ridge)


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def blend(n: int, fold: np.ndarray, taste: np.ndarray | None, prior: np.ndarray, k: float, beta: float) -> np.ndarray:
    """The multimodal-enhanced user vector after ``n`` revealed interactions.

    ``w = n / (n + k)``; ``u = w * (f + beta * t) / (1 + beta) + (1 - w) * p`` with every part unit-normalised
    (``f`` = LightGCN fold-in, ``t`` = taste vector, ``p`` = group prior); ``n = 0`` gives the prior.

    Shapes:
        ``fold, taste, prior: U x d -> U x d``.
    """
    p = _unit(prior)
    if n == 0:
        return p
    w = n / (n + k) if k > 0 else 1.0
    f = _unit(fold)
    if taste is not None and beta > 0:
        f = (f + beta * _unit(taste)) / (1.0 + beta)
    return (w * f + (1.0 - w) * p).astype(np.float32)
