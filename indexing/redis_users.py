"""The Redis user store: user vectors, seen sets, popularity, freshness, and the per-partition offset fences.

Keys (``p`` is ``RedisSettings.key_prefix``, ``sp`` a vector-space id such as ``minilm-l6@1``)::

    {p}u:{sp}:{user}          hash  v (D float32 bytes), w, t, n, src   the user's incremental state
    {p}prof:{user}            hash  gender, age, region                  the registration profile
    {p}seen:{user}            zset  item -> ts (newest SEEN_CAP kept)    for exclusion at recall
    {p}pop:{sp}               zset  item -> accumulated positive weight  popularity fallback
    {p}fresh:{sp}             zset  item -> created_at ms (newest FRESH_CAP kept)
    {p}fence:{group}:{topic}:{partition}   string  highest applied offset
    {p}space                  string  the vector space recall is served from

Delivery semantics: a batch of user events is applied with one MULTI/EXEC that writes the new states *and* moves
the fence of every partition it covers, guarded by WATCH on those fence keys (one key per partition, not per
user). An event at or below its partition's fence was already applied and is skipped. So a worker killed at any
point, and Kafka redelivering from the last committed offset, neither loses nor double-applies an event.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from infra.settings import RedisSettings

SEEN_CAP = 500
FRESH_CAP = 100_000


@dataclass
class UserState:
    """One user's incremental state in one vector space (see ``streams.cores.user_update``)."""

    vec: np.ndarray  # D float32, decayed weighted sum S
    weight: float  # decayed total |weight| W
    ts: float  # epoch seconds the state is decayed to
    n_events: int = 0
    source: str = "events"  # "prior" until the first real event

    def unit(self) -> np.ndarray | None:
        """The served vector ``S/||S||`` (None when the state carries no direction)."""
        n = float(np.linalg.norm(self.vec))
        if not np.isfinite(n) or n < 1e-12:
            return None
        return (self.vec / n).astype(np.float32)


class FenceMovedError(RuntimeError):
    """Another writer moved a partition fence between read and commit (e.g. during a rebalance); retry."""


@dataclass(frozen=True)
class FenceKey:
    group: str
    topic: str
    partition: int


@dataclass(frozen=True)
class UserCommit:
    """Everything one batch writes, applied atomically."""

    space: str
    states: Mapping[str, UserState]
    fences: Mapping[FenceKey, int]  # new highest applied offset per partition
    expected_fences: Mapping[FenceKey, int]  # what the fences were when the batch was read (-1: none)
    seen: Mapping[str, Sequence[tuple[str, float]]]  # user -> [(item, ts)]
    popularity: Mapping[str, float]  # item -> positive weight to add


def make_client(settings: RedisSettings):  # type: ignore[no-untyped-def]
    import redis

    return redis.Redis(**settings.client_kwargs(), socket_timeout=10, socket_connect_timeout=5)  # type: ignore[arg-type]


class UserStore:
    """Reads and atomically writes user state in Redis."""

    def __init__(self, settings: RedisSettings, client=None) -> None:  # type: ignore[no-untyped-def]
        self.settings = settings
        self.r = client if client is not None else make_client(settings)
        self.p = settings.key_prefix

    # ------------------------------------------------------------------ keys
    def user_key(self, space: str, user: str) -> str:
        return f"{self.p}u:{space}:{user}"

    def fence_key(self, f: FenceKey) -> str:
        return f"{self.p}fence:{f.group}:{f.topic}:{f.partition}"

    # ----------------------------------------------------------------- reads
    def ping(self) -> bool:
        return bool(self.r.ping())

    def current_space(self) -> str | None:
        v = self.r.get(f"{self.p}space")
        return v.decode() if v else None

    def set_space(self, space: str) -> None:
        self.r.set(f"{self.p}space", space)

    def read_fences(self, keys: Iterable[FenceKey]) -> dict[FenceKey, int]:
        keys = list(keys)
        if not keys:
            return {}
        vals = self.r.mget([self.fence_key(k) for k in keys])
        return {k: (int(v) if v is not None else -1) for k, v in zip(keys, vals, strict=True)}

    def read_states(self, space: str, users: Sequence[str]) -> dict[str, UserState | None]:
        if not users:
            return {}
        pipe = self.r.pipeline(transaction=False)
        for u in users:
            pipe.hgetall(self.user_key(space, u))
        out: dict[str, UserState | None] = {}
        for u, h in zip(users, pipe.execute(), strict=True):
            out[u] = _decode_state(h) if h else None
        return out

    def user_vector(self, space: str, user: str) -> tuple[np.ndarray | None, UserState | None]:
        st = self.read_states(space, [user]).get(user)
        return (st.unit() if st else None), st

    def seen(self, user: str, n: int = SEEN_CAP) -> list[str]:
        return [x.decode() for x in self.r.zrevrange(f"{self.p}seen:{user}", 0, n - 1)]

    def popular(self, space: str, n: int) -> list[tuple[str, float]]:
        return [(k.decode(), float(s)) for k, s in self.r.zrevrange(f"{self.p}pop:{space}", 0, n - 1, withscores=True)]

    def freshest(self, space: str, n: int) -> list[tuple[str, int]]:
        return [
            (k.decode(), int(s)) for k, s in self.r.zrevrange(f"{self.p}fresh:{space}", 0, n - 1, withscores=True)
        ]

    def profile(self, user: str) -> dict[str, str]:
        return {k.decode(): v.decode() for k, v in self.r.hgetall(f"{self.p}prof:{user}").items()}

    # ---------------------------------------------------------------- writes
    def commit(self, c: UserCommit) -> None:
        """Apply one batch atomically, provided no fence moved since it was read (else FenceMovedError)."""
        import redis

        fkeys = {k: self.fence_key(k) for k in c.fences}
        with self.r.pipeline(transaction=True) as pipe:
            try:
                if fkeys:
                    pipe.watch(*fkeys.values())
                    now = pipe.mget(list(fkeys.values()))
                    for (fk, _), v in zip(fkeys.items(), now, strict=True):
                        cur = int(v) if v is not None else -1
                        if cur != c.expected_fences.get(fk, -1):
                            raise FenceMovedError(f"fence {fk} moved to {cur}")
                pipe.multi()
                for u, st in c.states.items():
                    pipe.hset(self.user_key(c.space, u), mapping=_encode_state(st))
                for u, items in c.seen.items():
                    if items:
                        key = f"{self.p}seen:{u}"
                        pipe.zadd(key, {i: t for i, t in items})
                        pipe.zremrangebyrank(key, 0, -SEEN_CAP - 1)
                popkey = f"{self.p}pop:{c.space}"
                for item, w in c.popularity.items():
                    pipe.zincrby(popkey, w, item)
                for fk, off in c.fences.items():
                    pipe.set(fkeys[fk], off)
                pipe.execute()
            except redis.WatchError as exc:
                raise FenceMovedError("a fence moved during commit") from exc

    def put_prior(self, space: str, user: str, state: UserState, profile: Mapping[str, str]) -> bool:
        """Store a brand-new user's prior state unless real events already shaped the user. Returns True if set.

        The profile itself is always recorded. WATCH on the user key makes the check-and-set atomic against a
        concurrent user-agent commit.
        """
        import redis

        key = self.user_key(space, user)
        if profile:
            self.r.hset(f"{self.p}prof:{user}", mapping=dict(profile))
        for _ in range(16):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    n = pipe.hget(key, "n")
                    if n is not None and int(n) > 0:
                        return False
                    pipe.multi()
                    pipe.hset(key, mapping=_encode_state(state))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
        raise FenceMovedError(f"user {user} kept changing while its prior was set")

    def put_prior_profile_only(self, user: str, profile: Mapping[str, str]) -> None:
        """Record a registration that declared no tastes (recall falls back until events arrive)."""
        if profile:
            self.r.hset(f"{self.p}prof:{user}", mapping=dict(profile))

    def add_fresh(self, space: str, items: Mapping[str, int]) -> None:
        if not items:
            return
        key = f"{self.p}fresh:{space}"
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(key, dict(items))
            pipe.zremrangebyrank(key, 0, -FRESH_CAP - 1)
            pipe.execute()

    def delete_prefix(self) -> int:
        """Remove every key under this store's prefix (tests and ``thaw reset``)."""
        n = 0
        for k in self.r.scan_iter(match=f"{self.p}*", count=1000):
            n += int(self.r.delete(k))
        return n


def _encode_state(st: UserState) -> dict[str, bytes | str | float | int]:
    return {
        "v": np.asarray(st.vec, dtype="<f4").tobytes(),
        "w": float(st.weight),
        "t": float(st.ts),
        "n": int(st.n_events),
        "src": st.source,
    }


def _decode_state(h: Mapping[bytes, bytes]) -> UserState:
    return UserState(
        vec=np.frombuffer(h[b"v"], dtype="<f4").copy(),
        weight=float(h[b"w"]),
        ts=float(h[b"t"]),
        n_events=int(h.get(b"n", b"0")),
        source=h.get(b"src", b"events").decode(),
    )
