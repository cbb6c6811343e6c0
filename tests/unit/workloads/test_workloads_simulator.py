from datetime import UTC, datetime

import numpy as np
import pytest

from contracts.events import ContentNew, UserEvent, UserProfile
from workloads.simulator import KINDS, CommunitySimulator, SimConfig, build_catalogue, lastfm_assets

pytestmark = pytest.mark.datasets  # the simulator's catalogue carries Last.fm artists (dynamics, fan groups)

SMALL = SimConfig(seed=3, initial_users=60, initial_items=80, steps=40, items_per_step=4, users_per_step=1)


@pytest.fixture(scope="module")
def catalogue():
    return build_catalogue(lastfm_assets(max_artists=800), max_topics=128)


def _run(cat, cfg=SMALL):
    sim = CommunitySimulator(cat, cfg)
    return sim, list(sim.stream())


def test_deterministic_with_a_seed(catalogue):
    _, a = _run(catalogue)
    _, b = _run(catalogue)
    assert len(a) == len(b) and all(x == y for x, y in zip(a, b, strict=True))
    _, c = _run(catalogue, SimConfig(**{**SMALL.__dict__, "seed": 4}))
    assert [e.data for e in a[:200]] != [e.data for e in c[:200]]


def test_stream_is_time_ordered_content_first_and_contract_valid(catalogue):
    sim, evs = _run(catalogue)
    seen_items: set[str] = set()
    iso = lambda t: datetime.fromtimestamp(t, UTC).isoformat()  # noqa: E731
    for e in evs:
        d = dict(e.data)
        if e.topic == "content.new":
            d["created_at"] = iso(d["created_at"])
            ContentNew.model_validate(d)
            seen_items.add(d["item_id"])
        elif e.topic == "user.profile":
            UserProfile.model_validate({**d, "ts": iso(d["ts"])})
        else:
            UserEvent.model_validate({**d, "ts": iso(d["ts"])})
            assert d["item_id"] in seen_items  # never an event on an item not yet posted
    kinds = {it.kind for it in sim.items}
    assert kinds == set(KINDS) - {"moment"}  # no image corpus in this catalogue
    comments = [it for it in sim.items if it.kind == "comment"]
    assert comments and all(c.parent_id and c.parent_id.startswith("sim:i:") for c in comments)


def test_choice_model_follows_the_ground_truth(catalogue):
    sim, evs = _run(catalogue)
    uidx = {u.user_id: i for i, u in enumerate(sim.users)}
    iidx = {it.item_id: i for i, it in enumerate(sim.items)}
    ue = [e.data for e in evs if e.topic == "user.events"]
    rel = sim.true_relevance()
    p = np.array([rel[uidx[d["user_id"]], iidx[d["item_id"]]] for d in ue])
    engaged = np.array([d["action"] not in ("impression", "skip") for d in ue])
    assert 0.03 < engaged.mean() < 0.3
    # the engagement rate matches the model's probabilities (calibration within sampling error)
    assert abs(engaged.mean() - p.mean()) < 4 * np.sqrt(p.mean() * (1 - p.mean()) / len(p)) + 0.01
    assert p[engaged].mean() > 1.5 * p[~engaged].mean()


def test_users_niche_tastes_and_declarations(catalogue):
    sim, _ = _run(catalogue)
    niche = [u for u in sim.users if u.niche]
    main = [u for u in sim.users if not u.niche]
    assert niche and main
    tail = set(sim._tail.tolist())
    top_niche = [int(np.argmax(u.taste)) for u in niche]
    assert np.mean([t in tail for t in top_niche]) > 0.8
    for u in sim.users:
        if u.declared:
            top3 = {sim.cat.topics[j] for j in np.argsort(-u.taste)[:3]}
            assert set(u.declared) == top3
    rel_sets = sim.relevant_sets(list(range(len(sim.users))), list(range(len(sim.items))))
    assert sum(len(r) for r in rel_sets) > 0


def test_moments_come_from_the_openmoji_corpus():
    from pathlib import Path

    from workloads.simulator import openmoji_assets

    assets = openmoji_assets()
    assert len(assets) > 2000
    a = assets[0]
    assert a.kind == "moment" and a.image and Path(a.image).is_file() and a.image.endswith(".png")
    assert all(t.startswith("moment:") for t in a.tags) and " — " in a.text
    cat = build_catalogue(assets + lastfm_assets(max_artists=300), max_topics=128)
    sim = CommunitySimulator(cat, SMALL)
    kinds = {e.data["kind"] for e in sim.stream() if e.topic == "content.new"}
    assert kinds == set(KINDS)


def test_simulation_is_the_same_in_every_process() -> None:
    """Same seed, different PYTHONHASHSEED (a new process): the same topics and the same event stream."""
    import hashlib
    import os
    import subprocess
    import sys

    code = (
        "import hashlib, json\n"
        "from workloads.simulator import CommunitySimulator, SimConfig, default_catalogue\n"
        "cat = default_catalogue()\n"
        "sim = CommunitySimulator(cat, SimConfig(seed=3, steps=5))\n"
        "h = hashlib.sha256(json.dumps(cat.topics).encode())\n"
        "for ev in sim.stream():\n"
        "    h.update(json.dumps([ev.topic, ev.ts, ev.data], sort_keys=True, default=str).encode())\n"
        "print(h.hexdigest())\n"
    )
    digests = set()
    for hash_seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": hash_seed}
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300,
                             check=True)
        digests.add(out.stdout.strip())
    assert len(digests) == 1 and len(next(iter(digests))) == len(hashlib.sha256().hexdigest())
