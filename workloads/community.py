"""The demo's community, built only from data the package registries ship: no dataset folder needed.

* **Assets**: tracks are rendered music21 clips (audio + caption + their real metadata tags: composer, era,
  region, instrument, key, mode, metre, tempo, texture); moments are OpenMoji images with their captions; dynamics
  and fan groups are posts about the composers of those clips, carrying the composer's and the clip's tags (a
  composer's fan group, a post about a recording); comments are made by the simulator on tracks.
* **Users and interactions**: :class:`workloads.simulator.CommunitySimulator` over that catalogue (latent tastes,
  a documented choice model), so the ground-truth relevance of every item for every user is known.
* **Text-poor posts** (:data:`DEMO_TEXT_POOR_SHARE`: the demo's default, half of the new tracks and half of the new
  moments): published without tags, with a throwaway caption and opaquely named media, as real uploads often are;
  the ground truth stays the real tags' (``SimConfig.text_poor_share``, :mod:`workloads.simulator`). The library
  default (``SimConfig()``) is text-rich everywhere.
* **The split a cold-start engine faces**: items in creation order; the oldest ``1 - cold_share`` are warm (their
  interactions train the CF models), the newest are cold: the earlier part of them the validation cold items, the
  rest the test cold items, which the demo publishes through the stream as brand-new posts.

:func:`community_dataset` turns a simulation into an :class:`InteractionDataset` (positive actions, weighted as the
engine weighs them) so the cold-item harness and the publisher work on it unchanged.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from workloads.datasets import InteractionDataset
from workloads.simulator import (
    Asset,
    Catalogue,
    CommunitySimulator,
    SimConfig,
    build_catalogue,
    music_assets,
    openmoji_assets,
)
from workloads.splits import ColdItemSplit

#: representative ages of the contract's age buckets (the dataset's ``age`` column, as MovieLens has one)
BUCKET_AGE = {"<18": 16, "18-24": 21, "25-34": 30, "35-44": 40, "45-54": 50, "55+": 60}
#: the demo community's share of text-poor new posts per kind (``SimConfig.text_poor_share``)
DEMO_TEXT_POOR_SHARE: dict[str, float] = {"track": 0.5, "moment": 0.5}
#: the music corpus plan the demo renders from (the corpus builder's defaults)
CLIP_SEED = 0
CLIP_SECONDS = 10.0


def planned_clip_ids(n: int, corpus_dir: str | None = None) -> list[str]:
    """The first ``n`` rendered clips of the corpus builder's plan (its stratified order, seed 0, 10 s clips).

    The same ids whatever else the corpus holds: a fresh ``build_music_corpus(n)`` renders exactly these (failed
    candidates are replaced by the next ones in the same order), a larger corpus built with the same plan contains
    them."""
    from workloads.music.build import (
        MANIFEST,
        default_corpus_dir,
        list_corpus_entries,
        make_job,
        read_jsonl,
        stratified_order,
    )

    root = default_corpus_dir(corpus_dir)
    done = {r["clip_id"] for r in read_jsonl(root / MANIFEST) if (root / r.get("path", "")).is_file()}
    out: list[str] = []
    for e in stratified_order(list_corpus_entries(), CLIP_SEED):
        cid = make_job(e, CLIP_SEED, CLIP_SECONDS).clip_id
        if cid in done:
            out.append(cid)
            if len(out) == n:
                break
    return out


def composer_posts(tracks: list[Asset]) -> list[Asset]:
    """Dynamics and fan groups about the composers of ``tracks``: per composer one fan group (the composer's most
    common tags), and per track one post about that recording (the track's composer, era, region and instrument)."""
    by_composer: dict[str, list[Asset]] = {}
    for a in tracks:
        comp = next((t.split(":", 1)[1] for t in a.tags if t.startswith("composer:")), None)
        if comp:
            by_composer.setdefault(comp, []).append(a)
    out: list[Asset] = []
    for comp, group in sorted(by_composer.items()):
        cnt = Counter(t for a in group for t in a.tags if t.split(":", 1)[0] in ("composer", "era", "region",
                                                                                "instrument", "texture"))
        tags = tuple(t for t, _ in cnt.most_common(5))
        out.append(Asset("fan_group", f"{comp} listeners' circle", tags, source=f"music21-composer:{comp}"))
        for a in group:
            keep = tuple(t for t in a.tags if t.split(":", 1)[0] in ("composer", "era", "region", "instrument"))
            inst = next((t.split(":", 1)[1] for t in keep if t.startswith("instrument:")), "")
            out.append(Asset("dynamic", f"{comp} on {inst}: our new recording is up".replace(" on :", ":"), keep,
                             source=f"music21-post:{a.source}"))
    return out


def registry_catalogue(n_clips: int, max_topics: int = 256, music_dir: str | None = None,
                       imagetext_dir: str | None = None) -> Catalogue:
    """The catalogue from the first ``n_clips`` planned music21 clips, their composer posts and every OpenMoji
    moment (see the module docstring). Raises FileNotFoundError when a corpus is not built."""
    wanted = set(planned_clip_ids(n_clips, music_dir))
    tracks = [a for a in music_assets(music_dir) if a.source.split(":", 1)[1] in wanted]
    if len(tracks) < n_clips:
        raise FileNotFoundError(f"the music corpus has {len(tracks)} of the {n_clips} planned clips; build them "
                                f"with `thaw corpus music build --clips {n_clips}`")
    assets = tracks + composer_posts(tracks) + openmoji_assets(imagetext_dir)
    cat = build_catalogue(assets, max_topics=max_topics)
    cat.sources = {"music21 clips": str(len(tracks)), "openmoji moments": str(sum(a.kind == "moment" for a in assets)),
                   "composer posts": str(sum(a.kind in ("dynamic", "fan_group") for a in assets))}
    return cat


SIM_CATALOGUES: tuple[str, ...] = ("community", "lastfm")
"""The simulator's catalogues by name: ``community`` (:func:`registry_catalogue`: registry data only) and
``lastfm`` (:func:`workloads.simulator.default_catalogue`: Last.fm artists from ``THAW_DATASETS_DIR`` plus the
corpora that are built)."""


def sim_catalogue(name: str = "community", n_clips: int = 160, max_topics: int = 256,
                  require_corpora: bool = False) -> Catalogue:
    """The simulator catalogue ``name`` (:data:`SIM_CATALOGUES`); ``community`` is the demo's, from its
    ``n_clips`` planned clips (``thaw corpus music build --clips 160``).

    Raises:
        ValueError: An unknown name.
        FileNotFoundError: ``community`` without the clips; ``lastfm`` with ``require_corpora`` and a corpus
            missing.
        DatasetsDirNotSetError: ``lastfm`` without ``THAW_DATASETS_DIR``.
    """
    if name == "community":
        return registry_catalogue(n_clips, max_topics=max_topics)
    if name == "lastfm":
        from workloads.simulator import default_catalogue

        return default_catalogue(max_topics=max_topics, require_corpora=require_corpora)
    raise ValueError(f"unknown simulator catalogue {name!r}; known: {', '.join(SIM_CATALOGUES)}")


@dataclass
class Community:
    """One simulated community: the simulator (ground truth), its event stream and its interaction dataset."""

    sim: CommunitySimulator
    content: list[dict[str, Any]]  # content.new payloads, creation order
    profiles: list[dict[str, Any]]  # user.profile payloads, registration order
    events: list[dict[str, Any]]  # user.events payloads, time order
    dataset: InteractionDataset
    stats: dict[str, Any] = field(default_factory=dict)


def simulate_community(catalogue: Catalogue, config: SimConfig, weights: dict[str, float]) -> Community:
    """Run the simulator to the end and collect its stream and its dataset (the actions with a positive weight in
    ``weights``, e.g. :data:`contracts.actions.ACTION_WEIGHTS`, as interactions of that strength)."""
    sim = CommunitySimulator(catalogue, config)
    content: list[dict[str, Any]] = []
    profiles: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    for ev in sim.stream():
        {"content.new": content, "user.profile": profiles, "user.events": events}[ev.topic].append(dict(ev.data))
    ds = community_dataset(sim, events, weights)
    kinds = Counter(it.kind for it in sim.items)
    stats = {"items": len(sim.items), "items_by_kind": dict(sorted(kinds.items())), "users": len(sim.users),
             "user_events": len(events), "positive_interactions": int(len(ds.users)),
             "catalogue": dict(getattr(catalogue, "sources", {})), "topics": len(catalogue.topics),
             "text_poor_share": dict(config.text_poor_share),
             "text_poor_by_kind": dict(sorted(Counter(it.kind for it in sim.items if it.text_poor).items()))}
    return Community(sim, content, profiles, events, ds, stats)


def community_dataset(sim: CommunitySimulator, events: list[dict[str, Any]],
                      weights: dict[str, float]) -> InteractionDataset:
    """The simulation's positive actions as an :class:`InteractionDataset` (items in creation order, text and tags
    as posted, media paths of tracks and moments; users' gender and age bucket as ``user_features``)."""
    item_ix = {it.item_id: j for j, it in enumerate(sim.items)}
    user_ix = {u.user_id: j for j, u in enumerate(sim.users)}
    rows = [(user_ix[e["user_id"]], item_ix[e["item_id"]], weights[e["action"]], e["ts"]) for e in events
            if weights.get(e["action"], 0.0) > 0]
    arr = np.array(rows, dtype=np.float64).reshape(-1, 4)
    return InteractionDataset(
        name="sim-community",
        users=arr[:, 0].astype(np.int64), items=arr[:, 1].astype(np.int64), weights=arr[:, 2].astype(np.float32),
        timestamps=arr[:, 3].astype(np.int64), n_users=len(sim.users), n_items=len(sim.items),
        user_ids=[u.user_id for u in sim.users], item_ids=[it.item_id for it in sim.items],
        item_text=[it.asset.text for it in sim.items], item_tags=[list(it.asset.tags) for it in sim.items],
        item_tag_counts=None,
        item_images=[it.asset.image for it in sim.items], item_audio=[it.asset.audio for it in sim.items],
        user_features={"gender": np.array([u.gender for u in sim.users]),
                       "age": np.array([BUCKET_AGE.get(u.age_bucket, -1) for u in sim.users], dtype=np.int16)},
        meta={"source": "workloads.community: simulator over music21 renders, OpenMoji and composer posts",
              "weight": "ACTION_WEIGHTS of the positive actions (click .. share)"},
    )


def time_split(ds: InteractionDataset, created_ts: np.ndarray, cold_share: float = 0.3,
               val_share: float = 0.1) -> ColdItemSplit:
    """Newest ``cold_share`` of the items are cold: the oldest ``val_share`` (of all items) of those are the
    validation cold items, the rest the test cold items; every interaction on a cold item is held out."""
    order = np.argsort(created_ts, kind="stable")
    n = len(order)
    first_cold = int(round((1 - cold_share) * n))
    first_test = int(round((1 - cold_share + val_share) * n))
    val_items, test_items = np.sort(order[first_cold:first_test]), np.sort(order[first_test:])
    is_val, is_test = np.isin(ds.items, val_items), np.isin(ds.items, test_items)
    train = np.flatnonzero(~is_val & ~is_test)
    return ColdItemSplit(train=train, val=np.flatnonzero(is_val), test=np.flatnonzero(is_test),
                         warm_items=np.unique(ds.items[train]), val_items=val_items, test_items=test_items,
                         n_interactions=len(ds.users), seed=None)
