"""End to end: the worker resumes at the Redis offset fences, and the local stack's Redis keeps its data.

- Redis loses its last writes (its user states and fences go back to an earlier consistent point, taken with
  DUMP/RESTORE, while the group's committed offsets stay ahead): the restarted worker seeks back to the fences and
  every event ends up applied exactly once.
- Redis loses everything: the worker replays the user events from the earliest offset and rebuilds the states.
- The stack's redis-server (AOF, ``appendfsync everysec``) keeps what it acknowledged across a SIGKILL.
"""

from __future__ import annotations

import os
import signal
import socket
import time
from datetime import datetime

import numpy as np
import pytest
import redis

from encoders.text import MODEL_NAME
from indexing.redis_state import RedisState
from infra.settings import RedisSettings, Settings
from infra.stack.redis import start_redis
from streams.cores.user_update import EventBatch, apply_events
from tests.e2e.conftest import random_events, wait_for
from tests.e2e.test_engine_e2e import _index_items, _send

pytestmark = pytest.mark.e2e


def _snapshot(store: RedisState) -> dict[bytes, bytes]:
    return {k: store.r.dump(k) for k in store.r.scan_iter(match=store.keys.everything(), count=1000)}


def _restore(store: RedisState, snap: dict[bytes, bytes]) -> None:
    store.delete_prefix()
    for k, v in snap.items():
        store.r.restore(k, 0, v, replace=True)


def test_redis_losing_its_last_writes_or_everything_loses_no_event_and_applies_none_twice(worker):
    s = worker.settings
    t, p, items, ix = _index_items(worker)
    rng = np.random.default_rng(11)
    users = [f"r{u}" for u in range(8)]
    evs = random_events(rng, users, [it["item_id"] for it in items], 1200)
    store = RedisState(s.redis)
    space = f"{MODEL_NAME}@1"

    def applied() -> int:
        return sum(st.n_events for st in store.read_states(space, users).values() if st)

    def send(batch) -> None:
        for e in batch:
            _send(p, t.user_events, e["user_id"], e)
        p.flush()

    send(evs[:500])
    wait_for(lambda: applied() == 500, 60, "the first 500 events", worker)
    worker.stop()  # a consistent point: every applied event is fenced (and committed)
    earlier = _snapshot(store)
    fence_keys = [k for k in earlier if b":fence:" in k]
    fences_then = {k: int(v) for k, v in zip(fence_keys, store.mget(fence_keys), strict=True)}
    assert fences_then and sum(v + 1 for v in fences_then.values()) == 500
    worker.start()
    worker.wait_ready()
    send(evs[500:])
    wait_for(lambda: applied() == len(evs), 60, "all events", worker)
    worker.stop()  # the group has committed every offset

    # Redis lost its last writes: its states and fences go back to the earlier point, Kafka stays ahead
    _restore(store, earlier)
    assert applied() == 500
    worker.start()
    t0 = time.monotonic()
    wait_for(lambda: applied() == len(evs), 90, "the 700 lost events applied again", worker)
    replay_s = time.monotonic() - t0
    time.sleep(2.0)
    assert applied() == len(evs)  # exactly once: nothing applied twice
    log = worker.log.read_text(errors="replace")
    assert "Redis lost the writes of" in log, worker.log_tail()

    vecs = ix.get_vectors([i["item_id"] for i in items])
    ref = apply_events({}, EventBatch(users=[e["user_id"] for e in evs],
                                      item_vecs=np.stack([vecs[e["item_id"]] for e in evs]),
                                      actions=[e["action"] for e in evs],
                                      ts=np.array([datetime.fromisoformat(e["ts"]).timestamp() for e in evs])),
                       s.stream.user_half_life_s)

    def check_against_offline() -> None:
        got = store.read_states(space, users)
        for u in users:
            st = got[u]
            assert st is not None
            np.testing.assert_allclose(st.vec, ref[u].vec, rtol=1e-4, atol=1e-4)
            assert st.weight == pytest.approx(ref[u].weight, rel=1e-5)
            assert st.n_events == ref[u].n_events

    check_against_offline()

    # Redis lost everything (a flushed or replaced server): the states are rebuilt from the earliest offsets
    worker.stop()
    store.delete_prefix()
    worker.start()
    t1 = time.monotonic()
    wait_for(lambda: applied() == len(evs), 120, "every event replayed from the earliest offset", worker)
    rebuild_s = time.monotonic() - t1
    time.sleep(2.0)
    assert applied() == len(evs)
    check_against_offline()
    assert "Redis lost every user state" in worker.log.read_text(errors="replace")
    print(f"replay of 700 lost events: {replay_s:.1f}s after restart; rebuild of 1200: {rebuild_s:.1f}s")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def test_the_stack_redis_keeps_its_data_across_a_sigkill(tmp_path):
    settings = Settings(redis=RedisSettings(port=_free_port()))
    launch = start_redis(settings, tmp_path)
    conf = (tmp_path / "redis" / "redis.conf").read_text()
    assert "appendonly yes" in conf and "appendfsync everysec" in conf
    r = redis.Redis(host="127.0.0.1", port=settings.redis.port)
    pids = [launch.pid]
    try:
        wait_for(lambda: _pings(r), 20, "redis-server")
        r.mset({f"k{i}": f"v{i}" for i in range(1000)})
        r.set("fence", 41)
        time.sleep(1.5)  # past one fsync (everysec)
        os.killpg(launch.pid, signal.SIGKILL)
        wait_for(lambda: not _pings(r), 10, "redis-server to die")
        again = start_redis(settings, tmp_path)
        pids.append(again.pid)
        wait_for(lambda: _pings(r), 20, "redis-server again")
        assert r.get("fence") == b"41"
        assert r.mget([f"k{i}" for i in range(1000)]) == [f"v{i}".encode() for i in range(1000)]
        assert (tmp_path / "redis" / "data" / "appendonlydir").is_dir()
    finally:
        for pid in pids:
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def _pings(r: redis.Redis) -> bool:
    try:
        return bool(r.ping())
    except redis.RedisError:
        return False
