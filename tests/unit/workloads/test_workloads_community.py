"""The demo community from registry data only: planned music21 clips, composer posts, OpenMoji moments."""

from pathlib import Path

import numpy as np
import pytest

from contracts.actions import ACTION_WEIGHTS
from contracts.events import ContentNew, UserProfile
from workloads.community import (
    BUCKET_AGE,
    composer_posts,
    planned_clip_ids,
    registry_catalogue,
    simulate_community,
    time_split,
)
from workloads.music.build import build_music_corpus
from workloads.simulator import SimConfig

SMALL = SimConfig(seed=5, initial_users=40, initial_items=60, steps=30, items_per_step=4, users_per_step=1)


@pytest.fixture(scope="module")
def music_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("music")
    build_music_corpus(3, workers=1, out_dir=d, progress=False)
    return d


def test_the_plan_names_the_same_clips_whatever_else_is_built(music_dir):
    ids = planned_clip_ids(3, str(music_dir))
    assert len(ids) == 3
    assert planned_clip_ids(2, str(music_dir)) == ids[:2]
    assert planned_clip_ids(10, str(music_dir)) == ids  # asks for more than is built: what there is, in plan order


def test_a_catalogue_with_too_few_clips_says_how_to_build_them(music_dir):
    with pytest.raises(FileNotFoundError, match="thaw corpus music build --clips 5"):
        registry_catalogue(5, music_dir=str(music_dir))


def test_composer_posts_carry_the_composers_tags(music_dir):
    cat = registry_catalogue(3, music_dir=str(music_dir))
    tracks = cat.assets["track"]
    posts = composer_posts(tracks)
    composers = {t for a in tracks for t in a.tags if t.startswith("composer:")}
    groups = [p for p in posts if p.kind == "fan_group"]
    assert {next(t for t in g.tags if t.startswith("composer:")) for g in groups} == composers
    assert sum(p.kind == "dynamic" for p in posts) == len(tracks)
    assert all(set(p.tags) <= {t for a in tracks for t in a.tags} for p in posts)


def test_the_community_stream_is_contract_valid_and_its_dataset_matches_it(music_dir):
    c = simulate_community(registry_catalogue(3, music_dir=str(music_dir)), SMALL, ACTION_WEIGHTS)
    for payload in c.content:
        ev = ContentNew.model_validate({**payload, "created_at": "2026-12-04T00:00:00+00:00"})
        if ev.kind.value == "track" and ev.audio is not None:
            assert Path(ev.audio.uri.removeprefix("file://")).resolve().is_relative_to(music_dir.resolve())
        if ev.kind.value == "moment":
            assert ev.image is not None
    for p in c.profiles:
        UserProfile.model_validate({**p, "ts": "2026-12-04T00:00:00+00:00"})
    ds = c.dataset
    positives = [e for e in c.events if ACTION_WEIGHTS.get(e["action"], 0) > 0]
    assert len(ds.users) == len(positives) > 0
    assert ds.n_items == len(c.sim.items) and ds.n_users == len(c.sim.users)
    assert ds.item_ids[int(ds.items[0])] == positives[0]["item_id"]
    ages = {BUCKET_AGE[u.age_bucket] for u in c.sim.users}
    assert set(ds.user_features["age"].tolist()) == ages
    assert sum(a is not None for a in ds.item_audio) == sum(it.asset.audio is not None for it in c.sim.items) > 0


def test_time_split_holds_out_the_newest_items(music_dir):
    c = simulate_community(registry_catalogue(3, music_dir=str(music_dir)), SMALL, ACTION_WEIGHTS)
    created = np.array([it.created_ts for it in c.sim.items])
    sp = time_split(c.dataset, created, cold_share=0.3, val_share=0.1)
    n = len(created)
    assert len(sp.val_items) + len(sp.test_items) == n - int(round(0.7 * n))
    assert created[sp.val_items].max() <= created[sp.test_items].min()
    assert created[sp.warm_items].max() <= created[sp.val_items].min()
    assert not np.isin(c.dataset.items[sp.train], np.concatenate([sp.val_items, sp.test_items])).any()
    assert len(sp.train) + len(sp.val) + len(sp.test) == len(c.dataset.users)
