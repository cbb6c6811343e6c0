"""A community simulator with ground truth: items of all five kinds from real assets, users with latent tastes,
and interactions from a documented choice model, so the true relevance of every item for every user is known.

Assets (what items are made of) come from real data: tracks from the rendered music21 corpus (audio + tags) when it
is built, else from Last.fm artists (names + listener tags); moments from the OpenMoji image–text corpus when it is
built; dynamics and fan groups from Last.fm artists (an artist's post, a fan group named after the artist, both
carrying the artist's real tags); comments are posted on tracks and carry the track's tags. Every asset has a set
of tags; the **topic space** is the tag vocabulary (tags used by at least ``min_tag_count`` assets, at most
``max_topics`` of them), and an item's topic vector is its tags' indicator, L2-normalised.

Users: each user has a taste vector over topics, ``taste = normalise(Dirichlet-weighted mix)``:
- a *group prior* per (gender, age bucket): a sparse Dirichlet draw over topics shared by the group;
- *mainstream* users (share ``1 - niche_share``) mix the group prior with the catalogue's popular topics;
- *niche* users put most of their mass on a few topics drawn from the long tail (topics outside the top quartile).
Each user declares up to 3 of their top topics at registration with probability ``declare_prob``.

Choice model (per impression of item ``i`` to user ``u``)::

    cos(u, i)      = taste_u · topic_i                               (cosine, in [0, 1])
    affinity(u, i) = (cos(u, i) - mu) / sd                           standardised over the catalogue
    p_engage(u, i) = sigmoid(alpha + beta * affinity(u, i) + q_i)     q_i ~ N(0, quality_sd): item quality

``mu`` and ``sd`` are the mean and standard deviation of ``cos`` between 256 users and every asset, drawn from a
generator seeded separately (so they are fixed by the config), which makes ``alpha``/``beta`` mean the same thing
on any catalogue: with the defaults an average match engages 4.7% of the time, a 2-sd match 50%.
    given engagement, the action is drawn from ENGAGE_ACTIONS with probabilities rising with affinity
    otherwise the impression is recorded (and with prob skip_prob it is an explicit skip)

The ground-truth relevance of item ``i`` for user ``u`` is ``p_engage(u, i)`` (exposed by :meth:`true_relevance`),
and an item is *relevant* for a user when ``p_engage >= relevance_threshold``.

Text-poor posts (``SimConfig.text_poor_share``, per kind; 0 everywhere by default, the text-rich case): a drawn
share of the new posts of a kind publish the way real community uploads often do, with no tags and a throwaway
caption from :data:`TEXT_POOR_CAPTIONS` ("new demo", "wip", emoji only, ...; never one that shares a word with the
post's real text or tags), and their media under an opaque name (:func:`opaque_media_path`: the corpus file names
carry the clip's collection and composer). The item keeps its real asset (``SimItem.real``) and topic, so the
ground truth, a function of the real tags that the audio and image really reflect, is unchanged; ``SimItem.text_poor``
records the draw on the truth side, never in the published payload. The draws come from their own generator
(seeded from ``seed``), so the same seed gives the same items, users, interactions and truth whatever the share.
Comments are written from what their parent track published (a comment on a text-poor track knows no tags and is
marked text-poor too).

Time: the simulation runs in steps of ``step_s`` seconds of simulated time. Each step: new items are posted
(Poisson, ``items_per_step``), new users register (Poisson, ``users_per_step``), and active users (each with
probability ``activity``) see a feed of ``slate`` items sampled from the recent catalogue (freshness-weighted) and
act on them. Everything is drawn from one seeded generator: the same config gives the same stream.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workloads.datasets import InteractionDataset, load_dataset

KINDS = ("track", "comment", "moment", "dynamic", "fan_group")
GENDERS = ("f", "m", "x")
GENDER_P = (0.48, 0.48, 0.04)
AGES = ("<18", "18-24", "25-34", "35-44", "45-54", "55+")
AGE_P = (0.10, 0.32, 0.28, 0.15, 0.09, 0.06)
ENGAGE_ACTIONS = ("click", "play", "complete", "like", "comment", "share")
TEXT_POOR_CAPTIONS: tuple[str, ...] = (
    "new demo", "listen!", "wip", "late night session", "\U0001f3a7", "\U0001f525\U0001f525\U0001f525", "\u2728",
    "first take", "rough mix", "made this today", "thoughts?", "vibes", "untitled", "quick sketch",
    "\U0001f634\U0001f3b6", "recorded at home", "hi", "another one", "idk", "\U0001f4f8", "mood", "ok so",
)
"""Throwaway captions of text-poor posts (what community uploads without a description look like)."""
_WORD = re.compile(r"\w+")


@dataclass(frozen=True)
class Asset:
    """A real piece of content an item can be made of."""

    kind: str
    text: str
    tags: tuple[str, ...]
    image: str | None = None  # file path of a PNG
    audio: str | None = None  # file path of a WAV
    source: str = ""


@dataclass(frozen=True)
class SimConfig:
    """Simulator parameters (defaults: a one-minute demo scale)."""

    seed: int = 0
    initial_users: int = 200
    initial_items: int = 300
    steps: int = 60
    step_s: float = 60.0
    items_per_step: float = 5.0
    users_per_step: float = 2.0
    activity: float = 0.3
    slate: int = 10
    fresh_window_steps: int = 30
    niche_share: float = 0.25
    declare_prob: float = 0.6
    alpha: float = -3.0
    beta: float = 1.5
    quality_sd: float = 0.5
    skip_prob: float = 0.3
    relevance_threshold: float = 0.3
    max_topics: int = 256
    min_tag_count: int = 3
    kind_mix: tuple[float, ...] = (0.35, 0.2, 0.2, 0.15, 0.1)  # track, comment, moment, dynamic, fan_group
    start_ts: float = 1_790_000_000.0
    # kind -> share of its new posts published text-poor (no tags, a throwaway caption, opaque media names); a kind
    # not named is always text-rich. Comments follow their parent track instead (see the module docstring)
    text_poor_share: Mapping[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        bad = {k: v for k, v in self.text_poor_share.items() if k not in KINDS or not 0.0 <= float(v) <= 1.0}
        if bad:
            raise ValueError(f"text_poor_share: kinds of {KINDS} with shares in [0, 1], got {bad}")


@dataclass
class SimItem:
    item_id: str
    kind: str
    creator_id: str
    created_ts: float
    asset: Asset
    topic: np.ndarray  # T float32, L2-normalised
    quality: float
    parent_id: str | None = None
    # truth side, never published: the real asset (``asset`` is what the post published) and whether it is text-poor
    real: Asset | None = None
    text_poor: bool = False

    @property
    def true_tags(self) -> tuple[str, ...]:
        """The real tags (the ground truth's), also when the post published none."""
        return (self.real or self.asset).tags


@dataclass
class SimUser:
    user_id: str
    gender: str
    age_bucket: str
    niche: bool
    taste: np.ndarray  # T float32, L2-normalised
    declared: list[str]
    joined_ts: float


@dataclass(frozen=True)
class SimEvent:
    """One simulator output: ``topic`` is ``content.new``, ``user.profile`` or ``user.events``; ``data`` is the
    contract payload (without schema_version/produced_at)."""

    topic: str
    ts: float
    data: dict[str, Any]
    text_poor: bool = False  # truth side (a content.new of a text-poor post); not part of ``data``


@dataclass
class Catalogue:
    topics: list[str]
    assets: dict[str, list[Asset]]
    asset_topics: dict[str, np.ndarray]  # kind -> A x T
    popularity: np.ndarray  # T, share of assets carrying each topic
    sources: dict[str, str] = field(default_factory=dict)


def _norm_tag(t: str) -> str:
    return " ".join(t.lower().strip().split())


def lastfm_assets(ds: InteractionDataset | None = None, max_artists: int = 3000) -> list[Asset]:
    """Dynamics, fan groups and (fallback) tracks from the most-listened Last.fm artists and their tags."""
    ds = ds or load_dataset("lastfm")
    counts = ds.item_counts()
    order = np.argsort(-counts, kind="stable")
    out: list[Asset] = []
    for i in order[:max_artists]:
        # tags longer than the content.new contract allows (64 chars) would dead-letter the item: truncated
        tags = tuple(dict.fromkeys(_norm_tag(t)[:64] for t in ds.item_tags[i][:8] if t.strip()))
        if not tags:
            continue
        name = ds.item_text[i]
        out.append(Asset("track", f"{name} — new single", tags, source=f"lastfm:{ds.item_ids[i]}"))
        out.append(Asset("dynamic", f"{name}: studio update, new songs coming soon", tags,
                         source=f"lastfm:{ds.item_ids[i]}"))
        out.append(Asset("fan_group", f"{name} fan club", tags, source=f"lastfm:{ds.item_ids[i]}"))
    return out


def music_assets(corpus_dir: str | None = None) -> list[Asset]:
    """Tracks from the rendered music21 corpus: audio clip + caption + its real metadata tags."""
    from workloads.music import load_music_corpus  # type: ignore[import-not-found,unused-ignore]

    c = load_music_corpus(corpus_dir)
    out = []
    for i in range(len(c.clip_ids)):
        tags = tuple(f"{k}:{v}" for k, v in sorted(c.tags[i].items()) if v)
        out.append(Asset("track", c.captions[i], tags, audio=str(c.paths[i]), source=f"music21:{c.clip_ids[i]}"))
    return out


def openmoji_assets(corpus_dir: str | None = None) -> list[Asset]:
    """Moments from the OpenMoji image–text corpus (aligned pairs of base emojis: image + caption).

    Their tags are the emoji's group and subgroup (e.g. ``food-drink/food-fruit``), so moment topics sit beside
    the music topics instead of flooding the topic space with the emoji keyword vocabulary.
    """
    from workloads.imagetext import load_imagetext_corpus

    c = load_imagetext_corpus(corpus_dir)
    out = []
    seen: set[str] = set()
    for i in range(len(c.ids)):
        if c.misaligned[i] or c.ids[i] in seen:
            continue
        seen.add(c.ids[i])
        tags = (f"moment:{c.groups[i]}", f"moment:{c.subgroups[i]}")
        out.append(Asset("moment", c.captions[i], tags, image=str(c.png_paths[i]), source=f"openmoji:{c.ids[i]}"))
    return out


def build_catalogue(assets: list[Asset], max_topics: int = 256, min_tag_count: int = 3) -> Catalogue:
    """Topic space from the assets' tags, and each asset's topic vector (assets without a topic are dropped)."""
    from collections import Counter

    # dict.fromkeys, not set: the first-seen order breaks ties in most_common, independent of PYTHONHASHSEED
    cnt = Counter(t for a in assets for t in dict.fromkeys(a.tags))
    topics = [t for t, c in cnt.most_common(max_topics) if c >= min_tag_count]
    if not topics:
        raise ValueError("no tag is used by enough assets to form a topic space")
    index = {t: j for j, t in enumerate(topics)}
    by_kind: dict[str, list[Asset]] = {k: [] for k in KINDS}
    vecs: dict[str, list[np.ndarray]] = {k: [] for k in KINDS}
    for a in assets:
        js = [index[t] for t in a.tags if t in index]
        if not js:
            continue
        v = np.zeros(len(topics), dtype=np.float32)
        v[js] = 1.0
        by_kind[a.kind].append(a)
        vecs[a.kind].append(v / np.linalg.norm(v))
    pop = np.array([cnt[t] for t in topics], dtype=np.float64)
    return Catalogue(
        topics=topics,
        assets=by_kind,
        asset_topics={k: (np.stack(v) if v else np.zeros((0, len(topics)), np.float32)) for k, v in vecs.items()},
        popularity=pop / pop.sum(),
    )


def words(text: str) -> set[str]:
    """Lower-case word tokens of ``text`` (``\\w+``): what "shares a word" means for text-poor captions."""
    return set(_WORD.findall(text.lower()))


def pick_caption(draw: float, hidden: str) -> str:
    """The text-poor caption for a uniform ``draw`` in [0, 1): the pool entry it indexes, or the next one (cyclic)
    that shares no word with ``hidden`` (the post's real text and tags)."""
    n = len(TEXT_POOR_CAPTIONS)
    banned = words(hidden)
    start = min(int(draw * n), n - 1)
    for j in range(n):
        cap = TEXT_POOR_CAPTIONS[(start + j) % n]
        if not words(cap) & banned:
            return cap
    return TEXT_POOR_CAPTIONS[4]  # emoji only: no word at all


def opaque_media_path(path: str) -> str:
    """Where a text-poor post's media is published: ``<corpus>/opaque/<sha256 of the path>.<ext>``, a folder beside
    the file's own (inside the same media root), so the name tells nothing of the clip or emoji it is."""
    p = os.path.abspath(path)
    digest = hashlib.sha256(p.encode()).hexdigest()[:24]
    ext = os.path.splitext(p)[1]
    return os.path.join(os.path.dirname(os.path.dirname(p)), "opaque", digest + ext)


def ensure_opaque_media(path: str) -> str:
    """:func:`opaque_media_path` of ``path``, created as a symlink to it when missing (the one write the simulator
    does, and only for text-poor posts with media); returns the alias."""
    alias = opaque_media_path(path)
    if not os.path.lexists(alias):
        os.makedirs(os.path.dirname(alias), exist_ok=True)
        try:
            os.symlink(os.path.abspath(path), alias)
        except FileExistsError:  # another process made it meanwhile
            pass
    return alias


def text_poor_asset(real: Asset, draw: float) -> Asset:
    """What a text-poor post publishes of ``real``: a throwaway caption (:func:`pick_caption`), no tags, the same
    media under opaque names."""
    hidden = " ".join((real.text, *real.tags))
    return Asset(real.kind, pick_caption(draw, hidden), (),
                 image=ensure_opaque_media(real.image) if real.image else None,
                 audio=ensure_opaque_media(real.audio) if real.audio else None, source="text-poor")


def _sigmoid(x: np.ndarray | float) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.asarray(x, dtype=np.float64)))


class CommunitySimulator:
    """Generates the item/user/event stream of a music community with known ground truth.

    Args:
        catalogue: the topic space and assets (see :func:`build_catalogue`).
        config: simulator parameters.
    """

    def __init__(self, catalogue: Catalogue, config: SimConfig | None = None) -> None:
        self.cat = catalogue
        self.cfg = config or SimConfig()
        self.rng = np.random.default_rng(self.cfg.seed)
        self.T = len(catalogue.topics)
        self.items: list[SimItem] = []
        self.users: list[SimUser] = []
        self.t = self.cfg.start_ts
        self._asset_next = {k: 0 for k in KINDS}
        self._asset_perm = {k: self.rng.permutation(len(v)) for k, v in catalogue.assets.items()}
        # comments are made from tracks already posted, so they exist whenever tracks do
        self._kinds = [k for k in KINDS if len(catalogue.assets[k]) or (k == "comment" and catalogue.assets["track"])]
        mix = np.array([self.cfg.kind_mix[KINDS.index(k)] for k in self._kinds], dtype=np.float64)
        self._kind_p = mix / mix.sum()
        # group priors: a sparse Dirichlet over topics per (gender, age)
        self.group_prior: dict[tuple[str, str], np.ndarray] = {}
        for g in GENDERS:
            for a in AGES:
                self.group_prior[(g, a)] = self.rng.dirichlet(np.full(self.T, 0.05)).astype(np.float64)
        q = np.quantile(catalogue.popularity, 0.75)
        self._tail = np.flatnonzero(catalogue.popularity < q)
        if len(self._tail) == 0:
            self._tail = np.arange(self.T)
        self._creators = [f"sim:creator:{j}" for j in range(max(10, len(catalogue.assets["track"]) // 20))]
        self.mu, self.sd = self._affinity_scale()
        self._item_topics = np.zeros((0, self.T), dtype=np.float32)
        self._item_quality = np.zeros(0, dtype=np.float64)
        self._item_created = np.zeros(0, dtype=np.float64)
        self.events_emitted = 0
        # text-poor draws: a generator of their own, so the share changes nothing else in the simulation
        self._poor_rng = np.random.default_rng([self.cfg.seed, 15485863])

    def _affinity_scale(self) -> tuple[float, float]:
        main_rng = self.rng
        self.rng = np.random.default_rng([self.cfg.seed, 7919])
        users = self.users
        self.users = []
        tastes = np.stack([self._new_user().taste for _ in range(256)]).astype(np.float64)
        self.users = users
        self.rng = main_rng
        A = np.vstack([v for v in self.cat.asset_topics.values() if len(v)]).astype(np.float64)
        cos = tastes @ A.T
        return float(cos.mean()), float(cos.std() + 1e-9)

    def _affinity(self, cos: np.ndarray) -> np.ndarray:
        return (cos - self.mu) / self.sd

    # ------------------------------------------------------------------------------------------ population
    def _new_user(self) -> SimUser:
        c = self.cfg
        g = GENDERS[self.rng.choice(len(GENDERS), p=GENDER_P)]
        a = AGES[self.rng.choice(len(AGES), p=AGE_P)]
        niche = bool(self.rng.random() < c.niche_share)
        prior = self.group_prior[(g, a)]
        if niche:
            focus = self.rng.choice(self._tail, size=min(3, len(self._tail)), replace=False)
            w = np.zeros(self.T)
            w[focus] = self.rng.dirichlet(np.ones(len(focus)))
            mix = 0.85 * w + 0.15 * prior
        else:
            pop = self.rng.dirichlet(self.cat.popularity * 200 + 0.01)
            mix = 0.5 * prior + 0.5 * pop
        taste = np.sqrt(mix)  # sqrt keeps the mix's ranking while spreading the cosine range
        taste = (taste / np.linalg.norm(taste)).astype(np.float32)
        declared: list[str] = []
        if self.rng.random() < c.declare_prob:
            top = np.argsort(-taste)[:3]
            declared = [self.cat.topics[j] for j in top]
        u = SimUser(f"sim:u:{len(self.users)}", g, a, niche, taste, declared, self.t)
        self.users.append(u)
        return u

    @staticmethod
    def _comment(parent: SimItem, shown: Asset) -> Asset:
        """A comment on ``parent`` written from ``shown`` (what the parent published, or for the truth side its
        real asset)."""
        if shown.tags:
            text = f"Comment on {shown.text}: love the " + ", ".join(shown.tags[:2])
        else:
            text = f"Comment on {shown.text}: love it"
        return Asset("comment", text, shown.tags, source=f"comment-on:{parent.item_id}")

    def _new_item(self) -> SimItem | None:
        kind = self._kinds[self.rng.choice(len(self._kinds), p=self._kind_p)]
        parent = None
        poor_u, poor_cap = self._poor_rng.random(2)  # drawn for every item, whatever its kind and the shares
        text_poor = False
        real: Asset | None = None
        if kind == "comment":
            tracks = [it for it in self.items[-500:] if it.kind == "track"]
            if not tracks:
                kind = "track"
            else:
                p = tracks[self.rng.integers(len(tracks))]
                parent = p.item_id
                topic = p.topic
                # written from what the parent published: a comment knows no tags a text-poor track did not show
                asset = self._comment(p, p.asset)
                if p.text_poor:
                    real, text_poor = self._comment(p, p.real or p.asset), True
        if kind != "comment":
            pool = self.cat.assets[kind]
            j = self._asset_perm[kind][self._asset_next[kind] % len(pool)]
            self._asset_next[kind] += 1
            asset = pool[j]
            topic = self.cat.asset_topics[kind][j]
            if poor_u < float(self.cfg.text_poor_share.get(kind, 0.0)):
                real, asset, text_poor = asset, text_poor_asset(asset, float(poor_cap)), True
        creator = self._creators[self.rng.integers(len(self._creators))]
        item = SimItem(f"sim:i:{len(self.items)}", kind, creator, self.t, asset, topic,
                       float(self.rng.normal(0, self.cfg.quality_sd)), parent, real=real, text_poor=text_poor)
        self.items.append(item)
        n = len(self.items)
        if n > len(self._item_topics):  # grow geometrically: appends stay O(1) amortised
            grow = max(1024, len(self._item_topics))
            self._item_topics = np.vstack([self._item_topics, np.zeros((grow, self.T), np.float32)])
            self._item_quality = np.concatenate([self._item_quality, np.zeros(grow)])
            self._item_created = np.concatenate([self._item_created, np.zeros(grow)])
        self._item_topics[n - 1] = topic
        self._item_quality[n - 1] = item.quality
        self._item_created[n - 1] = item.created_ts
        return item

    # ----------------------------------------------------------------------------------------- ground truth
    def true_relevance(self, users: list[int] | None = None, items: list[int] | None = None) -> np.ndarray:
        """``p_engage`` for users x items (indices into ``self.users`` / ``self.items``)."""
        U = np.stack([self.users[u].taste for u in (users if users is not None else range(len(self.users)))])
        idx = np.arange(len(self.items)) if items is None else np.asarray(items, dtype=np.int64)
        aff = self._affinity(U.astype(np.float64) @ self._item_topics[idx].T.astype(np.float64))
        return _sigmoid(self.cfg.alpha + self.cfg.beta * aff + self._item_quality[idx][None, :])

    def relevant_sets(self, users: list[int], items: list[int]) -> list[set[str]]:
        """Item ids whose true relevance passes the threshold, per user."""
        rel = self.true_relevance(users, items) >= self.cfg.relevance_threshold
        ids = [self.items[i].item_id for i in items]
        return [{ids[j] for j in np.flatnonzero(row)} for row in rel]

    # ------------------------------------------------------------------------------------------- the stream
    def _content_event(self, it: SimItem) -> SimEvent:
        d: dict[str, Any] = {"item_id": it.item_id, "kind": it.kind, "creator_id": it.creator_id,
                             "created_at": it.created_ts, "text": it.asset.text, "tags": list(it.asset.tags)}
        if it.asset.image:
            d["image"] = {"uri": f"file://{it.asset.image}"}
        if it.asset.audio:
            d["audio"] = {"uri": f"file://{it.asset.audio}"}
        if it.parent_id:
            d["parent_id"] = it.parent_id
        return SimEvent("content.new", it.created_ts, d, text_poor=it.text_poor)

    def _profile_event(self, u: SimUser) -> SimEvent:
        return SimEvent("user.profile", u.joined_ts, {"user_id": u.user_id, "gender": u.gender,
                                                      "age_bucket": u.age_bucket, "genres": u.declared,
                                                      "ts": u.joined_ts})

    def stream(self, max_events: int | None = None) -> Iterator[SimEvent]:
        """The whole simulation as a time-ordered event stream (content, profiles, user events)."""
        c = self.cfg
        emitted = 0
        for _ in range(c.initial_items):
            it = self._new_item()
            if it:
                yield self._content_event(it)
                emitted += 1
        for _ in range(c.initial_users):
            yield self._profile_event(self._new_user())
            emitted += 1
        step = 0
        while step < c.steps or (max_events is not None and emitted < max_events):
            step += 1
            self.t += c.step_s
            for _ in range(self.rng.poisson(c.items_per_step)):
                it = self._new_item()
                if it:
                    yield self._content_event(it)
                    emitted += 1
            for _ in range(self.rng.poisson(c.users_per_step)):
                yield self._profile_event(self._new_user())
                emitted += 1
            for ev in self._step_interactions():
                yield ev
                emitted += 1
                if max_events is not None and emitted >= max_events:
                    self.events_emitted = emitted
                    return
            if max_events is not None and emitted >= max_events:
                break
        self.events_emitted = emitted

    def _step_interactions(self) -> Iterator[SimEvent]:
        c = self.cfg
        n_users = len(self.users)
        if n_users == 0 or not self.items:
            return
        active = np.flatnonzero(self.rng.random(n_users) < c.activity)
        if len(active) == 0:
            return
        n_items = len(self.items)
        age_steps = (self.t - self._item_created[:n_items]) / c.step_s
        # feed exposure decays with age (time constant fresh_window_steps/3); older items are not shown at all
        cand = np.flatnonzero(age_steps <= c.fresh_window_steps)
        if len(cand) < c.slate:
            cand = np.arange(max(0, n_items - 4 * c.slate), n_items)
        w = np.exp(-age_steps[cand] / max(1.0, c.fresh_window_steps / 3))
        w = w / w.sum()
        slate = min(c.slate, len(cand))
        taste = np.stack([self.users[u].taste for u in active]).astype(np.float64)
        shown = np.stack([cand[self.rng.choice(len(cand), size=slate, replace=False, p=w)] for _ in active])
        cos = np.einsum("ud,usd->us", taste, self._item_topics[shown].astype(np.float64))
        aff = self._affinity(cos)
        p = _sigmoid(c.alpha + c.beta * aff + self._item_quality[shown])
        engage = self.rng.random(p.shape) < p
        offsets = self.rng.random(p.shape) * c.step_s
        for r, u in enumerate(active):
            uid = self.users[u].user_id
            for j in range(slate):
                it = self.items[shown[r, j]]
                ts = max(it.created_ts, self.t - c.step_s) + offsets[r, j] * 0.999
                if engage[r, j]:
                    # deeper engagement is likelier the closer the match
                    depth = min(len(ENGAGE_ACTIONS) - 1,
                                int(self.rng.binomial(len(ENGAGE_ACTIONS) - 1, p[r, j])))
                    action = ENGAGE_ACTIONS[depth]
                elif self.rng.random() < c.skip_prob:
                    action = "skip"
                else:
                    action = "impression"
                yield SimEvent("user.events", ts, {"user_id": uid, "item_id": it.item_id, "action": action,
                                                   "ts": ts})


def default_catalogue(max_topics: int = 256, require_corpora: bool = False) -> Catalogue:
    """The catalogue from every real asset source built on this machine.

    Last.fm (dynamics, fan groups, and tracks unless the music corpus is built) is always there; moments need the
    OpenMoji corpus (``thaw corpus imagetext build``), audio tracks the music corpus
    (``thaw corpus music build``). With ``require_corpora`` a missing corpus is an error.
    """
    assets = lastfm_assets()
    sources = {"lastfm": len(assets)}
    for name, loader in (("openmoji", openmoji_assets), ("music21", music_assets)):
        try:
            extra = loader()
        except (FileNotFoundError, ImportError) as exc:
            if require_corpora:
                raise FileNotFoundError(f"the {name} corpus is not built: {exc}") from exc
            continue
        if name == "music21" and extra:
            assets = [a for a in assets if a.kind != "track"]  # real audio replaces name-only tracks
        assets += extra
        sources[name] = len(extra)
    cat = build_catalogue(assets, max_topics=max_topics)
    cat.sources = {k: str(v) for k, v in sources.items()}
    return cat


def sim_stats(sim: CommunitySimulator) -> dict[str, Any]:
    n_niche = sum(u.niche for u in sim.users)
    kinds = {k: sum(1 for it in sim.items if it.kind == k) for k in KINDS}
    return {"users": len(sim.users), "niche_users": n_niche, "items": len(sim.items), "items_by_kind": kinds,
            "topics": sim.T, "events": sim.events_emitted, "sim_hours": round((sim.t - sim.cfg.start_ts) / 3600, 2)}


def generate_stats(events: int | None = None, steps: int = SimConfig.steps, seed: int = 0) -> dict[str, Any]:
    """Builds the default catalogue, runs the simulator and returns :func:`sim_stats` with timings and events/s.

    Args:
        events: Stop after this many events (None: run all ``steps``).
        steps: At least this many steps.
        seed: Simulator seed.
    """
    import time

    t0 = time.perf_counter()
    cat = default_catalogue()
    t1 = time.perf_counter()
    sim = CommunitySimulator(cat, SimConfig(seed=seed, steps=steps))
    n = sum(1 for _ in sim.stream(max_events=events))
    dt = time.perf_counter() - t1
    return {**sim_stats(sim), "catalogue_s": round(t1 - t0, 2), "generate_s": round(dt, 2),
            "events_per_s": round(n / dt) if dt > 0 else None}
