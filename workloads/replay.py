"""The Kafka replayer: publishes a dataset to the engine's topics as valid contract events.

``thaw replay lastfm --rate 200`` (or ``ml-100k``, or a generic interactions CSV with ``--item-content``).

Order: every item of the sample as ``content.new`` (kind ``track`` for music data), then one ``user.profile`` per
user, then the interactions as ``user.events`` in the dataset's order (time order when it has timestamps).
Event time is replay time: an event is stamped when it is sent (``ts`` and ``produced_at``), the dataset's own time,
when it has one, is kept in ``context.orig_ts``. Actions are derived from the dataset's weight: for explicit
ratings, >= 4 is ``like``, 3 ``play``, <= 2 ``skip``; for implicit counts every row is a ``play``.

``bad_share`` injects malformed records (invalid JSON, schema violations, oversize, corrupt inline media) with a
known truth, for the reliability tests; they must all land in the DLQs.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from contracts.events import (
    Action,
    ContentKind,
    ContentNew,
    UserEvent,
    UserProfile,
)
from contracts.ids import age_bucket, published_content, safe_id
from contracts.topics import Topics
from infra.settings import Settings
from infra.topics import ensure_topics
from workloads.datasets import InteractionDataset, load_dataset, load_generic


class IndexWaiter(Protocol):
    """Waits until the given items are searchable; returns how many are (:func:`indexing.wait.wait_indexed`)."""

    def __call__(self, settings: Settings, item_ids: list[str], timeout_s: float = ..., *,
                 notify: Callable[[str], None] | None = None) -> int: ...


@dataclass(frozen=True)
class Msg:
    topic: str
    key: bytes
    value: bytes
    bad: str | None = None  # the injected defect, when this record is bad on purpose


@dataclass
class Sample:
    """A replayable slice of a dataset, as raw contract dicts (stamped at send time)."""

    name: str
    items: list[dict[str, Any]]
    profiles: list[dict[str, Any]]
    events: list[dict[str, Any]]
    item_index: dict[str, int] = field(default_factory=dict)  # event item id -> dataset item index
    user_index: dict[str, int] = field(default_factory=dict)


def _action(weight: float, explicit: bool) -> str:
    if not explicit:
        return Action.PLAY.value
    if weight >= 4:
        return Action.LIKE.value
    if weight >= 3:
        return Action.PLAY.value
    return Action.SKIP.value


def sample_dataset(
    ds: InteractionDataset,
    *,
    items_limit: int | None = None,
    users_limit: int | None = None,
    events_limit: int | None = None,
    rows: np.ndarray | None = None,
    seed: int = 0,
    kind: ContentKind = ContentKind.TRACK,
) -> Sample:
    """Pick the most-interacted items (up to ``items_limit``), users with interactions on them, and their events.

    ``rows`` restricts the interactions to those row indices (e.g. the train part of a split); items are all the
    items those rows touch plus, with ``items_limit``, the most popular ones.
    """
    rng = np.random.default_rng(seed)
    sel_rows = np.arange(ds.n_interactions) if rows is None else np.asarray(rows)
    counts = np.bincount(ds.items[sel_rows], minlength=ds.n_items)
    order = np.argsort(-counts, kind="stable")
    n_items = items_limit or int((counts > 0).sum())
    keep_items = order[:n_items]
    item_mask = np.zeros(ds.n_items, dtype=bool)
    item_mask[keep_items] = True
    r = sel_rows[item_mask[ds.items[sel_rows]]]
    users = np.unique(ds.users[r])
    if users_limit is not None and len(users) > users_limit:
        users = np.sort(rng.choice(users, users_limit, replace=False))
    user_mask = np.zeros(ds.n_users, dtype=bool)
    user_mask[users] = True
    r = r[user_mask[ds.users[r]]]
    if ds.timestamps is not None:
        r = r[np.argsort(ds.timestamps[r], kind="stable")]
    if events_limit is not None:
        r = r[:events_limit]
    explicit = "rating" in str(ds.meta.get("weight", ""))
    prefix = ds.name.replace(" ", "_")
    items, item_index = [], {}
    for i in keep_items:
        iid = safe_id(f"{prefix}:i:", ds.item_ids[i])
        item_index[iid] = int(i)
        text, tags = published_content(ds.item_text[int(i)], ds.item_tags[int(i)])
        items.append(
            {
                "item_id": iid,
                "kind": kind.value,
                "creator_id": safe_id(f"{prefix}:creator:", ds.item_ids[i]),
                "text": text,
                "tags": tags,
            }
        )
    profiles, user_index = [], {}
    g = (ds.user_features or {}).get("gender")
    a = (ds.user_features or {}).get("age")
    for u in users:
        uid = safe_id(f"{prefix}:u:", ds.user_ids[u])
        user_index[uid] = int(u)
        prof: dict[str, Any] = {"user_id": uid}
        if g is not None:
            gv = str(g[u]).lower()
            prof["gender"] = gv if gv in ("f", "m") else "unknown"
        if a is not None:
            prof["age_bucket"] = age_bucket(a[u])
        profiles.append(prof)
    events = []
    for j in r:
        ev: dict[str, Any] = {
            "user_id": safe_id(f"{prefix}:u:", ds.user_ids[ds.users[j]]),
            "item_id": safe_id(f"{prefix}:i:", ds.item_ids[ds.items[j]]),
            "action": _action(float(ds.weights[j]), explicit),
        }
        if ds.timestamps is not None:
            ev["context"] = {"orig_ts": str(int(ds.timestamps[j]))}
        events.append(ev)
    return Sample(ds.name, items, profiles, events, item_index, user_index)


def _iso(t: float) -> str:
    return datetime.fromtimestamp(t, UTC).isoformat()


def bad_records(topics: Topics, n: int, seed: int = 0, max_event_bytes: int = 8 << 20) -> list[Msg]:
    """``n`` deliberately bad records across the input topics, cycling through the defect kinds."""
    rng = np.random.default_rng(seed)
    out = []
    now = _iso(time.time())
    kinds = ["invalid_json", "schema", "oversize", "corrupt_image", "corrupt_audio", "naive_datetime"]
    for i in range(n):
        k = kinds[i % len(kinds)]
        key = f"bad:{seed}:{i}".encode()
        if k == "invalid_json":
            out.append(Msg(topics.user_events if i % 2 else topics.content_new, key, b'{"user_id": "u", ', k))
        elif k == "schema":
            v: dict[str, Any] = {"user_id": "u:bad", "item_id": "x", "action": "dance", "ts": now}
            out.append(Msg(topics.user_events, key, json.dumps(v).encode(), k))
        elif k == "oversize":
            v = {"item_id": f"bad:{i}", "kind": "comment", "creator_id": "c", "created_at": now,
                 "text": "x" * (max_event_bytes + 10)}
            out.append(Msg(topics.content_new, key, json.dumps(v).encode(), k))
        elif k == "corrupt_image":
            junk = base64.b64encode(b"\x89PNG\r\n\x1a\n" + rng.bytes(64)).decode()
            v = {"item_id": f"bad:{seed}:{i}", "kind": "moment", "creator_id": "c", "created_at": now,
                 "text": "broken picture", "image": {"data_b64": junk}}
            out.append(Msg(topics.content_new, key, json.dumps(v).encode(), k))
        elif k == "corrupt_audio":
            junk = base64.b64encode(b"RIFF" + rng.bytes(60)).decode()
            v = {"item_id": f"bad:{seed}:{i}", "kind": "track", "creator_id": "c", "created_at": now,
                 "text": "broken track", "audio": {"data_b64": junk}}
            out.append(Msg(topics.content_new, key, json.dumps(v).encode(), k))
        else:
            v = {"user_id": "u:bad", "gender": "f", "ts": "2026-01-01T00:00:00"}
            out.append(Msg(topics.user_profile, key, json.dumps(v).encode(), k))
    return out


class Publisher:
    """A paced kafka-python producer for contract events.

    Pacing: with ``speedup > 0`` a send that carries its source time ``at`` (seconds since the source's start)
    waits until ``at / speedup`` seconds after the replay started, so the source's own rhythm is kept, compressed;
    otherwise sends are spaced at ``rate`` per second (0: as fast as possible).
    """

    def __init__(self, settings: Settings, rate: float = 0.0, clock: Callable[[], float] = time.time,
                 speedup: float = 0.0) -> None:
        from infra.clients import kafka_producer

        self.producer = kafka_producer(
            settings.kafka,
            acks="all",
            linger_ms=5,
            batch_size=256 * 1024,
            max_request_size=16 * 1024 * 1024,
            retries=5,
        )
        self.rate = rate
        self.speedup = speedup
        self.clock = clock
        self.sent = 0
        self._t0 = time.perf_counter()
        self.max_behind_s = 0.0

    def _pace(self, at: float | None = None) -> None:
        if at is not None and self.speedup > 0:
            due = self._t0 + max(0.0, at) / self.speedup
        elif self.rate > 0:
            due = self._t0 + self.sent / self.rate
        else:
            return
        now = time.perf_counter()
        if due > now:
            time.sleep(due - now)
        else:
            self.max_behind_s = max(self.max_behind_s, now - due)

    def send_raw(self, m: Msg) -> None:
        self._pace()
        self.producer.send(m.topic, key=m.key, value=m.value)
        self.sent += 1

    def send_item(self, topic: str, item: dict[str, Any], at: float | None = None) -> dict[str, Any]:
        self._pace(at)
        now = self.clock()
        ev = ContentNew.model_validate({**item, "created_at": _iso(now), "produced_at": _iso(now)})
        self.producer.send(topic, key=ev.item_id.encode(), value=ev.to_bytes())
        self.sent += 1
        return {"item_id": ev.item_id, "produced_at": now}

    def send_profile(self, topic: str, prof: dict[str, Any], at: float | None = None) -> None:
        self._pace(at)
        now = self.clock()
        ev = UserProfile.model_validate({**prof, "ts": _iso(now), "produced_at": _iso(now)})
        self.producer.send(topic, key=ev.user_id.encode(), value=ev.to_bytes())
        self.sent += 1

    def send_event(self, topic: str, e: dict[str, Any], at: float | None = None) -> float:
        self._pace(at)
        now = self.clock()
        ev = UserEvent.model_validate({**e, "ts": _iso(now), "produced_at": _iso(now)})
        self.producer.send(topic, key=ev.user_id.encode(), value=ev.to_bytes())
        self.sent += 1
        return now

    def achieved_rate(self) -> float:
        dt = time.perf_counter() - self._t0
        return self.sent / dt if dt > 0 else 0.0

    def flush(self) -> None:
        self.producer.flush(timeout=60)

    def close(self) -> None:
        self.producer.flush(timeout=60)
        self.producer.close(timeout=10)


def _ensure_topics(settings: Settings, topics: Topics, notify: Callable[[str], None] | None) -> None:
    created = ensure_topics(settings.kafka, topics)
    if created and notify is not None:
        notify(f"created missing topics: {', '.join(created)}")


def _iter_progress(it: list[Any], desc: str, show: bool) -> Iterator[Any]:
    if not show:
        yield from it
        return
    from tqdm import tqdm

    yield from tqdm(it, desc=desc, unit="ev", leave=False)


def replay_sample(
    settings: Settings,
    sample: Sample,
    *,
    rate: float = 0.0,
    topics: Topics | None = None,
    bad_share: float = 0.0,
    wait_for_items_s: float = 120.0,
    wait_indexed: IndexWaiter | None = None,
    progress: bool = True,
    seed: int = 0,
    speedup: float = 0.0,
    notify: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Publish items, wait until they are searchable, then profiles and events. Returns replay statistics.

    Missing topics are created first (as ``thaw topics`` does); ``notify`` receives the progress of the wait for
    the worker to index the items: ``wait_indexed(settings, item_ids, wait_for_items_s, notify)`` (e.g.
    :func:`indexing.wait.wait_indexed`), called when given and ``wait_for_items_s`` > 0.

    With ``speedup`` and a dataset that has timestamps, user events keep their original spacing divided by
    ``speedup`` (items and profiles are sent first, at ``rate``).
    """
    topics = topics or Topics.for_prefix(settings.kafka.topic_prefix)
    _ensure_topics(settings, topics, notify)
    pub = Publisher(settings, rate=rate)
    t0 = time.perf_counter()
    for it in _iter_progress(sample.items, "content.new", progress):
        pub.send_item(topics.content_new, it)
    pub.flush()
    items_s = time.perf_counter() - t0
    n_bad = int(round(bad_share * (len(sample.items) + len(sample.events))))
    bad = bad_records(topics, n_bad, seed=seed, max_event_bytes=settings.stream.max_event_bytes)
    for m in bad:
        pub.send_raw(m)
    indexed = (wait_indexed(settings, [i["item_id"] for i in sample.items], wait_for_items_s, notify=notify)
               if wait_for_items_s and wait_indexed is not None else -1)
    t1 = time.perf_counter()
    for p in _iter_progress(sample.profiles, "user.profile", progress):
        pub.send_profile(topics.user_profile, p)
    orig = [int(e.get("context", {}).get("orig_ts", 0)) for e in sample.events]
    timed = speedup > 0 and any(orig)
    ev_pub = Publisher(settings, rate=rate, speedup=speedup) if timed else pub
    first = min(orig) if timed else 0
    for e, o in zip(_iter_progress(sample.events, "user.events", progress), orig, strict=False):
        ev_pub.send_event(topics.user_events, e, at=(o - first) if timed else None)
    if ev_pub is not pub:
        ev_pub.close()
        pub.max_behind_s = max(pub.max_behind_s, ev_pub.max_behind_s)
        pub.sent += ev_pub.sent
    pub.close()
    events_s = time.perf_counter() - t1
    return {
        "dataset": sample.name,
        "items": len(sample.items),
        "items_indexed_before_events": indexed,
        "profiles": len(sample.profiles),
        "events": len(sample.events),
        "bad_records": len(bad),
        "bad_by_kind": {k: sum(1 for m in bad if m.bad == k) for k in sorted({m.bad for m in bad if m.bad})},
        "items_publish_s": round(items_s, 3),
        "events_publish_s": round(events_s, 3),
        "requested_rate": rate,
        "achieved_rate": round(pub.achieved_rate(), 1),
        "max_behind_schedule_s": round(pub.max_behind_s, 3),
    }


def replay_simulator(
    settings: Settings,
    sim: Any,
    *,
    rate: float = 0.0,
    limit: int | None = None,
    topics: Topics | None = None,
    bad_share: float = 0.0,
    progress: bool = True,
    seed: int = 0,
    speedup: float = 0.0,
) -> dict[str, Any]:
    """Publish a :class:`workloads.simulator.CommunitySimulator` stream in its time order.

    ``speedup > 0`` keeps the simulated rhythm (simulated seconds / speedup); otherwise events go at ``rate``.

    Event times are replay times (stamped at send); the simulated time is kept in ``context.sim_ts`` of user
    events. User events are only sent for items the engine has had the chance to index: the stream is
    content-first within each simulated step, and the engine dead-letters an event whose item is unknown.
    """
    topics = topics or Topics.for_prefix(settings.kafka.topic_prefix)
    _ensure_topics(settings, topics, None)
    topic_of = {"content.new": topics.content_new, "user.profile": topics.user_profile,
                "user.events": topics.user_events}
    pub = Publisher(settings, rate=rate, speedup=speedup)
    counts = {k: 0 for k in topic_of}
    start = sim.cfg.start_ts
    bad = bad_records(topics, 0)
    t0 = time.perf_counter()
    stream = sim.stream(max_events=limit)
    if progress:
        from tqdm import tqdm

        stream = tqdm(stream, total=limit, desc="simulator", unit="ev", leave=False)
    n_bad_every = int(1 / bad_share) if bad_share > 0 else 0
    for n, ev in enumerate(stream, 1):
        d = dict(ev.data)
        at = ev.ts - start
        if ev.topic == "content.new":
            d.pop("created_at", None)
            pub.send_item(topic_of[ev.topic], d, at=at)
        elif ev.topic == "user.profile":
            d.pop("ts", None)
            pub.send_profile(topic_of[ev.topic], d, at=at)
        else:
            d.pop("ts", None)
            d["context"] = {"sim_ts": f"{ev.ts:.3f}"}
            pub.send_event(topic_of[ev.topic], d, at=at)
        counts[ev.topic] += 1
        if n_bad_every and n % n_bad_every == 0:
            m = bad_records(topics, 1, seed=seed + n, max_event_bytes=settings.stream.max_event_bytes)[0]
            pub.send_raw(m)
            bad.append(m)
    pub.close()
    dt = time.perf_counter() - t0
    return {
        "source": "simulator",
        **counts,
        "bad_records": len(bad),
        "publish_s": round(dt, 3),
        "requested_rate": rate,
        "achieved_rate": round(pub.achieved_rate(), 1),
        "max_behind_schedule_s": round(pub.max_behind_s, 3),
    }


def load_source(source: str, item_content: Path | None = None) -> InteractionDataset:
    """A dataset by name (``lastfm``, ``ml-100k``/``movielens``) or a generic interactions CSV path."""
    name = {"movielens": "ml-100k"}.get(source, source)
    if Path(source).exists():
        return load_generic(source, item_content=[item_content] if item_content else None)
    return load_dataset(name)


def replay_dataset(
    settings: Settings,
    source: str,
    *,
    rate: float = 200.0,
    limit: int | None = None,
    items_limit: int | None = None,
    item_content: Path | None = None,
    seed: int = 0,
    bad_share: float = 0.0,
    speedup: float = 0.0,
    notify: Callable[[str], None] | None = None,
    wait_indexed: IndexWaiter | None = None,
) -> dict[str, Any]:
    """Load ``source``, sample it and replay it (the ``thaw replay`` command). ``sim`` replays the simulator.

    ``notify`` receives progress lines (topics created, the wait for the worker to index the items)."""
    if source == "sim":
        from workloads.simulator import CommunitySimulator, SimConfig, default_catalogue

        sim = CommunitySimulator(default_catalogue(), SimConfig(seed=seed))
        return replay_simulator(settings, sim, rate=rate, limit=limit, bad_share=bad_share, seed=seed,
                                speedup=speedup)
    ds = load_source(source, item_content)
    sample = sample_dataset(ds, items_limit=items_limit, events_limit=limit, seed=seed)
    return replay_sample(settings, sample, rate=rate, bad_share=bad_share, seed=seed, speedup=speedup, notify=notify,
                         wait_indexed=wait_indexed)


def media_roots() -> list[Path]:
    """The directories the ``file://`` URIs of :func:`media_items` (and of the simulator's media assets) point
    into: the music21 and OpenMoji corpus directories, built or not. A worker reads ``file://`` media only under
    its configured media roots: give it these (``Settings.with_media_roots(*media_roots())``, whose ``env()`` the
    worker is started with)."""
    from workloads.imagetext import default_imagetext_dir
    from workloads.music import default_corpus_dir  # type: ignore[import-not-found,unused-ignore]

    return [Path(default_corpus_dir()), Path(default_imagetext_dir())]


def media_items(n_tracks: int, n_moments: int, seed: int = 0, tag: str = "") -> list[dict[str, Any]]:
    """``content.new`` payloads with real media: tracks with a clip of the rendered music21 corpus (``file://``
    URI, caption as text, metadata tags) and moments with an OpenMoji image (caption as text, group and subgroup as
    tags). Fewer are returned when a corpus is smaller; none of a kind whose corpus is not built.

    Args:
        n_tracks: Tracks wanted (needs ``thaw corpus music build``).
        n_moments: Moments wanted (needs ``thaw corpus imagetext build``, which setup runs).
        seed: Which clips and images, in which order.
        tag: Added to every item id (distinct ids per run).
    """
    from workloads.imagetext import load_imagetext_corpus
    from workloads.music import load_music_corpus  # type: ignore[import-not-found,unused-ignore]

    rng = np.random.default_rng(seed)
    out: list[dict[str, Any]] = []
    if n_tracks:
        try:
            mc = load_music_corpus()
        except FileNotFoundError:
            mc = None
        if mc is not None:
            for j, i in enumerate(rng.permutation(len(mc.clip_ids))[:n_tracks]):
                tags = [f"{k}:{v}"[:64] for k, v in sorted(mc.tags[i].items()) if v]
                out.append({"item_id": safe_id("track:", f"{mc.clip_ids[i]}:{tag}{j}"), "kind": "track",
                            "creator_id": "music21", "text": mc.captions[i], "tags": tags,
                            "audio": {"uri": f"file://{mc.paths[i]}"}})
    if n_moments:
        try:
            ic = load_imagetext_corpus()
        except FileNotFoundError:
            ic = None
        if ic is not None:
            clean = [i for i in range(len(ic.ids)) if not ic.misaligned[i]]
            for j, i in enumerate(rng.permutation(clean)[:n_moments]):
                out.append({"item_id": safe_id("moment:", f"{ic.ids[i]}:{tag}{j}"), "kind": "moment",
                            "creator_id": "openmoji", "text": ic.captions[i], "tags": [ic.groups[i], ic.subgroups[i]],
                            "image": {"uri": f"file://{ic.png_paths[i]}"}})
    return out
