"""The replayer against the real Kafka: counts, contract validity, pacing, bad-record injection."""

import json
import time

import pytest
from kafka import KafkaConsumer

from contracts.events import ContentNew, UserEvent, UserProfile
from contracts.topics import Topics
from indexing.wait import wait_indexed
from infra.topics import ensure_topics
from workloads.datasets import load_dataset
from workloads.replay import replay_sample, replay_simulator, sample_dataset
from workloads.simulator import CommunitySimulator, SimConfig, build_catalogue, lastfm_assets

pytestmark = pytest.mark.integration


def _read_all(s, topic, timeout_s=10.0):
    c = KafkaConsumer(topic, bootstrap_servers=s.kafka.bootstrap_servers, auto_offset_reset="earliest",
                      enable_auto_commit=False, group_id=None, consumer_timeout_ms=1500,
                      max_partition_fetch_bytes=s.kafka.dlq_max_message_bytes)
    out, deadline = [], time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = [m.value for m in c]
        if not batch and out:
            break
        out.extend(batch)
    c.close()
    return out


@pytest.mark.datasets  # the simulator's catalogue carries Last.fm artists
def test_simulator_replay_is_paced_valid_and_injects_bad_records(stack_settings, unique_name):
    s = stack_settings.namespaced(unique_name)
    t = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, t)
    cat = build_catalogue(lastfm_assets(max_artists=300), max_topics=64)
    cfg = SimConfig(seed=1, initial_users=20, initial_items=30, steps=3, step_s=60.0, users_per_step=1)
    sim = CommunitySimulator(cat, cfg)
    t0 = time.perf_counter()
    stats = replay_simulator(s, sim, speedup=60.0, bad_share=0.05, progress=False, topics=t)
    took = time.perf_counter() - t0
    # 3 simulated minutes at 60x take about 3 s (the last step's events are spread within it)
    assert 2.0 < took < 8.0, took
    items = []
    for v in _read_all(s, t.content_new):
        try:
            items.append(ContentNew.model_validate_json(v))
        except ValueError:
            pass  # an injected bad record (those with intact JSON but corrupt media are counted as items)
    profiles, events, bad = [], [], 0
    for v in _read_all(s, t.user_events) + _read_all(s, t.user_profile):
        try:
            d = json.loads(v)
            (events if "action" in d else profiles).append(d)
        except ValueError:
            bad += 1
    good_events = [UserEvent.model_validate(e) for e in events if e.get("action") != "dance"]
    assert len(good_events) == stats["user.events"] and stats["user.events"] > 0
    assert len([p for p in profiles if "genres" in p or "gender" in p]) >= stats["user.profile"] - 5
    assert all(e.context.get("sim_ts") for e in good_events)
    assert stats["bad_records"] > 0
    assert len([i for i in items if i.item_id.startswith("sim:i:")]) == stats["content.new"]


def test_dataset_replay_keeps_timestamps_with_speedup(stack_settings, unique_name):
    s = stack_settings.namespaced(unique_name)
    t = Topics.for_prefix(s.kafka.topic_prefix)
    ensure_topics(s.kafka, t)
    ds = load_dataset("ml-100k")
    sample = sample_dataset(ds, items_limit=30, users_limit=5, events_limit=40)
    orig = [int(e["context"]["orig_ts"]) for e in sample.events]
    span = max(orig) - min(orig)
    speedup = span / 2.0  # the whole sample in about 2 s
    t0 = time.perf_counter()
    stats = replay_sample(s, sample, speedup=speedup, wait_for_items_s=0, progress=False, topics=t)
    took = time.perf_counter() - t0
    assert 1.5 < took < 6.0, took
    assert stats["events"] == 40 and stats["items"] == 30
    evs = [UserEvent.model_validate_json(v) for v in _read_all(s, t.user_events)]
    assert sorted(int(e.context["orig_ts"]) for e in evs) == sorted(orig)
    profs = [UserProfile.model_validate_json(v) for v in _read_all(s, t.user_profile)]
    assert {p.gender for p in profs} <= {"f", "m"} and len(profs) == 5


def test_replay_creates_missing_topics_and_says_no_worker_is_indexing(stack_settings, unique_name):
    s = stack_settings.namespaced(unique_name)
    t = Topics.for_prefix(s.kafka.topic_prefix)
    sample = sample_dataset(load_dataset("ml-100k"), items_limit=5, users_limit=2, events_limit=5)
    notes: list[tuple[float, str]] = []
    t0 = time.perf_counter()
    stats = replay_sample(s, sample, wait_for_items_s=2.5, wait_indexed=wait_indexed, progress=False, topics=t,
                          notify=lambda m: notes.append((time.perf_counter() - t0, m)))
    at, created = next((a, n) for a, n in notes if n.startswith("created missing topics"))
    assert at < 15.0, at  # created up front, not after a metadata timeout on topics that did not exist
    assert t.content_new in created and t.user_events in created
    assert any("no worker is consuming" in n and s.stream.app_id in n and "thaw worker" in n for _, n in notes)
    assert any(n.startswith("gave up after") and "0/5 items searchable" in n for _, n in notes)
    assert stats["items"] == 5
    assert len(_read_all(s, t.content_new)) == 5
