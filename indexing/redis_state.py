"""The engine's whole state in Redis: user states, seen and engaged sets, offset fences and parked sets, item
attributes, popularity, the new-item set, profiles and the served space.

Keys: one builder, :class:`indexing.redis_keys.RedisKeys` (its docstring lists them: layout 2, every key of one
user-events partition in one Redis Cluster hash slot). A user state is
``pack_state``'s bytes (n, w, t, source, D float32); the seen and engaged sets keep the newest ``SEEN_CAP`` items, the
fresh set the newest ``FRESH_CAP``.

Delivery semantics: a batch of user events is applied by one Lua script that checks the fence of every partition
the batch covers against what the batch was computed from, and only then writes the new states, seen sets,
popularity, parked sets and the new fences (``user_commit.lua``, its arguments named sections:
:func:`encode_commit`). A script runs atomically in Redis, so the batch is applied entirely or not at all. On a
Redis Cluster a script may touch one hash slot only: the batch is committed as one script per partition it covers
(:func:`encode_commits`), each partition's part applied entirely or not at all with its own fence; a part refused
after others landed re-reads the batch like any lost race (the landed parts are then at or below their fences).
An event at or below its partition's fence was already applied and is skipped. So a worker killed at any point,
and Kafka redelivering from the last committed offset, neither loses nor double-applies an event. The fences are
also where the worker resumes on partition assignment (fence + 1, :func:`streams.cores.fences.plan_resume`): a
Redis that lost its last writes (AOF ``everysec``) has its lost events read again from Kafka.

Costs (measured): one MGET to read a batch's user states and one script call to commit it; an earlier version
with a hash per user and a MULTI pipeline spent most of its time in ~4 client-side commands per user.
"""

from __future__ import annotations

import functools
import hashlib
import json
import struct
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import numpy as np
from redis import exceptions as redis_exceptions

from indexing.redis_keys import LAYOUT_VERSION, LegacyKeys, RedisKeys
from indexing.script_sections import Arg, Record, Section, decode_sections, encode_sections
from infra import clients
from infra.settings import RedisSettings

_pack_command: Callable[[tuple[Any, ...]], Any] | None
try:  # redis[hiredis] is a dependency; without it the commit goes through redis-py's own encoding
    from hiredis import pack_command as _pack_command
except ImportError:  # pragma: no cover
    _pack_command = None

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


class LayoutError(RuntimeError):
    """The Redis key layout does not fit this deployment: another shard count than ``user.events`` has
    partitions, a retry topic with another partition count, or layout-1 data not migrated yet
    (``thaw state migrate-keys``). The worker refuses to start rather than write states no reader finds."""


class FencesRegressedError(RuntimeError):
    """Redis holds a fence below one this worker resumed from or committed: Redis went back in time (a restart that
    reloaded an older point of its append-only file, a failover to a lagging replica, a restore). The worker's
    positions are ahead of the fences, so it must stop applying and resume from the fences again (see
    ``streams.cores.fences``)."""


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
    # shard (the user-events partition of the users whose events gave it) -> item -> positive weight to add
    popularity: Mapping[int, Mapping[str, float]]
    # user -> sha1 hex of the packed state the batch was computed from ("" = no state): the commit is refused if a
    # state changed meanwhile (the user and retry agents of one worker can hold the same user in two batches)
    expected_states: Mapping[str, str] = field(default_factory=dict)
    # user -> [(item, ts)] of positive actions (click, play, like, ...): the engaged history the ranker reads
    engaged: Mapping[str, Sequence[tuple[str, float]]] = field(default_factory=dict)
    # user-event records parked on the retry topic by this batch: (their fence key) -> offsets, added to the parked
    # set of their partition (the claim a retry-topic copy must find to be applied, see ``streams.cores.fences``)
    parked: Mapping[FenceKey, Sequence[int]] = field(default_factory=dict)
    # parked records this batch resolves (applies or dead-letters from the retry topic): each must still be in its
    # parked set (else the commit is refused: another copy resolved it) and is removed from it
    claims: Mapping[FenceKey, Sequence[int]] = field(default_factory=dict)


@dataclass(frozen=True)
class ItemMeta:
    """The raw content attributes of an indexed item that the ranker needs at request time."""

    kind: str
    tags: tuple[str, ...]
    created_at_ms: int

    def to_json(self) -> str:
        return json.dumps({"k": self.kind, "t": list(self.tags), "c": int(self.created_at_ms)},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: bytes | str) -> ItemMeta:
        d = json.loads(raw)
        return cls(str(d.get("k", "")), tuple(str(t) for t in d.get("t", ())), int(d.get("c", 0)))


def make_client(settings: RedisSettings, *, serving: bool = False):  # type: ignore[no-untyped-def]
    """A Redis client with the deadlines of the ingest path, or of the serving path (:func:`infra.clients.redis_client`:
    socket timeouts and a bounded retry from ``settings``)."""
    return clients.redis_client(settings, serving=serving)


class RedisState:
    """The engine's state in Redis (user states, fences, parked sets, item attributes, popularity, new items,
    profiles, served space): read by the worker and the API, written atomically per user-event batch.

    ``serving=True`` gives the client the serving path's deadlines (the API: ``RedisSettings.serving_timeout_s``, a
    timeout never retried); the default is the ingest path's (the worker, the CLI). Ignored with ``client``."""

    def __init__(self, settings: RedisSettings, client=None, *,  # type: ignore[no-untyped-def]
                 serving: bool = False) -> None:
        self.settings = settings
        self.r = client if client is not None else make_client(settings, serving=serving)
        self.p = settings.key_prefix
        self._keys = RedisKeys(settings.key_prefix)  # shards: 0 until the layout is read (see :attr:`keys`)
        self._layout_checked = -1e18
        self.cluster = _is_cluster(self.r)
        self._commit_script = self.r.register_script(_commit_lua())

    # ---------------------------------------------------------------- layout
    @property
    def keys(self) -> RedisKeys:
        """The key builder, with the layout's shard count once one is stored (read again at most every
        :data:`LAYOUT_RECHECK_S` while none is: no worker has started yet)."""
        if self._keys.shards == 0:
            now = time.monotonic()
            if now - self._layout_checked >= LAYOUT_RECHECK_S:
                self._layout_checked = now
                n = self.read_layout()
                if n:
                    self._keys = RedisKeys(self.p, n)
        return self._keys

    def read_layout(self) -> int | None:
        """The stored layout's shard count (None when no layout is stored); LayoutError for another version."""
        raw = self.r.get(self._keys.layout())
        if raw is None:
            return None
        return _parse_layout(raw)

    def ensure_layout(self, shards: int, *, legacy_check: Sequence[tuple[str, str]] = ()) -> int:
        """Store layout 2 with ``shards`` (the partitions of ``user.events``) unless one is stored; LayoutError
        when the stored one has another shard count, or when layout-1 fences of ``legacy_check``'s (group, topic)
        pairs exist without a stored layout (data written before the hash tags: ``thaw state migrate-keys``)."""
        if shards < 1:
            raise LayoutError(f"a layout needs at least one shard, not {shards}")
        have = self.read_layout()
        if have is None and legacy_check:
            legacy = LegacyKeys(self.p)
            probe = [legacy.fence(g, t, i) for g, t in legacy_check for i in range(shards)]
            if any(v is not None for v in self.mget(probe)):
                raise LayoutError(
                    "Redis holds layout-1 data (offset fences without shard tags) and no layout: run "
                    f"`thaw state migrate-keys --shards {shards}` before starting this version")
        if have is None:
            self.r.set(self._keys.layout(), json.dumps({"version": LAYOUT_VERSION, "shards": int(shards)}), nx=True)
            have = self.read_layout()
        if have != shards:
            raise LayoutError(
                f"the Redis key layout has {have} shards but user.events has {shards} partitions: adding "
                "partitions moves users between shards (Kafka's partitioner), which this version does not migrate")
        self._keys = RedisKeys(self.p, shards)
        return shards

    def shard_of(self, user: str) -> int:
        """``user``'s shard (LayoutError when no layout is stored yet)."""
        keys = self.keys
        if keys.shards == 0:
            raise LayoutError("the Redis key layout is not stored yet: a worker writes it when it starts")
        return keys.shard(user)

    def mget(self, keys: Sequence[str]) -> list[Any]:
        """MGET of ``keys`` (on a cluster, split by slot: the keys of a read span many)."""
        if not keys:
            return []
        if self.cluster:
            return list(self.r.mget_nonatomic(list(keys)))
        return list(self.r.mget(list(keys)))

    # ------------------------------------------------------------------ keys
    def user_key(self, space: str, user: str) -> str:
        return self.keys.user_state(space, user)

    def fence_key(self, f: FenceKey) -> str:
        return self.keys.fence(f.group, f.topic, f.partition)

    def parked_key(self, f: FenceKey) -> str:
        """The set of offsets of user-events partition ``f`` parked on the retry topic and not resolved yet."""
        return self.keys.parked(f.group, f.topic, f.partition)

    # ----------------------------------------------------------------- reads
    def ping(self) -> bool:
        return bool(self.r.ping())

    def current_space(self) -> str | None:
        v = self.r.get(self.keys.space())
        return v.decode() if v else None

    def set_space(self, space: str) -> None:
        self.r.set(self.keys.space(), space)

    def read_fences(self, keys: Iterable[FenceKey]) -> dict[FenceKey, int]:
        keys = list(keys)
        if not keys:
            return {}
        vals = self.mget([self.fence_key(k) for k in keys])
        return {k: (int(v) if v is not None else -1) for k, v in zip(keys, vals, strict=True)}

    def read_parked(self, offsets: Mapping[FenceKey, Sequence[int]]) -> dict[FenceKey, set[int]]:
        """Which of ``offsets`` are in their partition's parked set (SMISMEMBER per partition, one round trip)."""
        wanted = [(k, list(v)) for k, v in offsets.items() if v]
        if not wanted:
            return {}
        with self.r.pipeline(transaction=False) as pipe:
            for k, offs in wanted:
                pipe.smismember(self.parked_key(k), offs)
            replies = pipe.execute()
        return {k: {o for o, hit in zip(offs, rep, strict=True) if int(hit)}
                for (k, offs), rep in zip(wanted, replies, strict=True)}

    def read_states(self, space: str, users: Sequence[str]) -> dict[str, UserState | None]:
        """The users' states (None where a user has none; every user's is None while no layout is stored: no
        worker has written one)."""
        if not users:
            return {}
        if not self.keys.shards:
            return dict.fromkeys(users)
        out: dict[str, UserState | None] = {}
        for start in range(0, len(users), 2000):
            chunk = users[start : start + 2000]
            vals = self.mget([self.user_key(space, u) for u in chunk])
            for u, v in zip(chunk, vals, strict=True):
                out[u] = unpack_state(v) if v else None
        return out

    def read_states_with_digests(
        self, space: str, users: Sequence[str]
    ) -> tuple[dict[str, UserState | None], dict[str, str]]:
        """:meth:`read_states` plus each state's digest (sha1 hex of its packed bytes, "" when absent), for a
        commit that must not overwrite a state another batch changed in between."""
        states: dict[str, UserState | None] = {}
        digests: dict[str, str] = {}
        for start in range(0, len(users), 2000):
            chunk = users[start : start + 2000]
            vals = self.mget([self.user_key(space, u) for u in chunk])
            for u, v in zip(chunk, vals, strict=True):
                states[u] = unpack_state(v) if v else None
                digests[u] = hashlib.sha1(v, usedforsecurity=False).hexdigest() if v else ""
        return states, digests

    def read_packed_states(self, space: str, users: Sequence[str]) -> tuple[PackedStates, dict[str, str]]:
        """:meth:`read_states_with_digests` with the states left packed (the users that have one): a batch update
        reads and writes them in bulk (``streams.cores.user_update.apply_packed``) without one object per user."""
        raw: dict[str, bytes] = {}
        digests: dict[str, str] = {}
        sha1 = hashlib.sha1
        for start in range(0, len(users), 2000):
            chunk = users[start : start + 2000]
            vals = self.mget([self.user_key(space, u) for u in chunk])
            for u, v in zip(chunk, vals, strict=True):
                if v:
                    raw[u] = v
                    digests[u] = sha1(v, usedforsecurity=False).hexdigest()
                else:
                    digests[u] = ""
        return PackedStates(raw), digests

    def user_vector(self, space: str, user: str) -> tuple[np.ndarray | None, UserState | None]:
        st = self.read_states(space, [user]).get(user)
        return (st.unit() if st else None), st

    def seen(self, user: str, n: int = SEEN_CAP) -> list[str]:
        if not self.keys.shards:
            return []
        return [x.decode() for x in self.r.zrevrange(self.keys.seen(user), 0, n - 1)]

    def popular(self, space: str, n: int) -> list[tuple[str, float]]:
        """The ``n`` items of the highest popularity (the sum over the shards' sets), highest first (ties by id).

        Exact, with few reads: the top ``m`` of every shard (one pipeline), the full sums of the items seen there
        (ZMSCORE on every shard), and a bound: an item in no shard's top ``m`` scores at most the sum of the
        shards' ``m``-th scores; when the ``n``-th sum reaches it (or every shard was read whole) the answer is
        exact, else ``m`` grows 4x (Fagin's threshold algorithm, Fagin, Lotem & Naor, PODS 2001)."""
        keys = self.keys.popularity_shards(space)
        if n <= 0 or not keys:
            return []
        m = max(n, 64)
        while True:
            with self.r.pipeline(transaction=False) as pipe:
                for k in keys:
                    pipe.zrevrange(k, 0, m - 1, withscores=True)
                tops = pipe.execute()
            cands = list(dict.fromkeys(member for top in tops for member, _ in top))
            if not cands:
                return []
            if len(keys) == 1:
                sums = {member: float(score) for member, score in tops[0]}
            else:
                with self.r.pipeline(transaction=False) as pipe:
                    for k in keys:
                        pipe.zmscore(k, cands)
                    scores = pipe.execute()
                sums = {c: sum(float(col[j] or 0.0) for col in scores) for j, c in enumerate(cands)}
            best = sorted(sums.items(), key=lambda kv: (-kv[1], kv[0]))[:n]
            bound = sum(float(top[-1][1]) for top in tops if len(top) == m)
            if all(len(top) < m for top in tops) or (len(best) == n and best[-1][1] >= bound):
                return [(k.decode(), s) for k, s in best]
            m *= 4

    def freshest(self, space: str, n: int) -> list[tuple[str, int]]:
        return [
            (k.decode(), int(s)) for k, s in self.r.zrevrange(self.keys.fresh(space), 0, n - 1, withscores=True)
        ]

    def created_since(self, space: str, since_ms: int, n: int, until_ms: int | None = None) -> list[tuple[str, int]]:
        """The newest ``n`` items of the space created at or after ``since_ms`` (and at or before ``until_ms`` when
        given), newest first, with created_at ms."""
        top = "+inf" if until_ms is None else int(until_ms)
        raw = self.r.zrevrangebyscore(self.keys.fresh(space), top, int(since_ms), start=0, num=n, withscores=True)
        return [(k.decode(), int(s)) for k, s in raw]

    def profile(self, user: str) -> dict[str, str]:
        if not self.keys.shards:
            return {}
        return {k.decode(): v.decode() for k, v in self.r.hgetall(self.keys.profile(user)).items()}

    def engaged(self, user: str, n: int = SEEN_CAP) -> list[tuple[str, float]]:
        """The user's positively engaged items, newest first, with their event times (epoch seconds)."""
        if not self.keys.shards:
            return []
        return [(k.decode(), float(s)) for k, s in self.r.zrevrange(self.keys.engaged(user), 0, n - 1, withscores=True)]

    def request_view(
        self, space: str, user: str, n_seen: int = SEEN_CAP, n_engaged: int = SEEN_CAP
    ) -> tuple[UserState | None, list[tuple[str, float]], list[tuple[str, float]], dict[str, str]]:
        """Everything a recommendation request reads about one user, in one round trip: state, seen items and
        engaged history (both newest first, with their times) and registration profile (a cold user while no
        layout is stored: no worker has written anything)."""
        if not self.keys.shards:
            return None, [], [], {}
        with self.r.pipeline(transaction=False) as pipe:
            pipe.get(self.user_key(space, user))
            pipe.zrevrange(self.keys.seen(user), 0, n_seen - 1, withscores=True)
            pipe.zrevrange(self.keys.engaged(user), 0, n_engaged - 1, withscores=True)
            pipe.hgetall(self.keys.profile(user))
            raw, seen, eng, prof = pipe.execute()
        state = unpack_state(raw) if raw else None
        return (
            state,
            [(k.decode(), float(s)) for k, s in seen],
            [(k.decode(), float(s)) for k, s in eng],
            {k.decode(): v.decode() for k, v in prof.items()},
        )

    def item_meta(self, items: Sequence[str]) -> dict[str, ItemMeta]:
        """The stored :class:`ItemMeta` of the given items (absent ids are left out)."""
        out: dict[str, ItemMeta] = {}
        uniq = list(dict.fromkeys(items))
        for start in range(0, len(uniq), 2000):
            chunk = uniq[start : start + 2000]
            for i, v in zip(chunk, self.mget([self.keys.item_meta(i) for i in chunk]), strict=True):
                if v:
                    out[i] = ItemMeta.from_json(v)
        return out

    def put_item_meta(self, items: Mapping[str, ItemMeta]) -> None:
        """Record indexed items' attributes (idempotent: a replayed item rewrites the same value)."""
        if not items:
            return
        pairs = {self.keys.item_meta(i): m.to_json() for i, m in items.items()}
        if self.cluster:
            self.r.mset_nonatomic(pairs)
        else:
            self.r.mset(pairs)

    # ---------------------------------------------------------------- writes
    def commit(self, c: UserCommit) -> None:
        """Apply one batch atomically, provided no fence moved since it was read (else FenceMovedError). On a Redis
        Cluster, one script per partition of the batch, each atomic with its fence (see the module docstring)."""
        check_shards(c, self.keys)
        calls = encode_commits(c, self.keys) if self.cluster else [encode_commit(c, self.keys)]
        for keys, args in calls:
            res = self._run_script(keys, args)
            if res != b"OK" and res != "OK":
                raise FenceMovedError(f"a partition fence or a user state moved before the commit ({res!r})")

    def _run_script(self, keys: Sequence[str], args: Sequence[Arg]) -> object:
        """The commit script's call, the command packed in one C call (``hiredis.pack_command``: the same bytes
        redis-py sends, a unit test compares them) rather than redis-py's per-argument encoding, which cost ~1 us
        per argument (a batch of 4,096 events has ~20,000). EVALSHA, loading the script once when Redis does not
        know it (a restart, a flushed cache), like redis-py's ``Script``; without hiredis, redis-py's own call."""
        if _pack_command is None or self.cluster:  # a cluster routes the call by its keys' slot
            return self._commit_script(keys=keys, args=args)
        sha = self._commit_script.sha
        packed = _pack_command(("EVALSHA", sha, len(keys), *keys, *args))
        pool = self.r.connection_pool
        for attempt in range(2):
            conn = pool.get_connection()
            try:
                conn.send_packed_command([packed])
                return conn.read_response()
            except redis_exceptions.NoScriptError:
                if attempt:
                    raise
                self.r.script_load(self._commit_script.script)
            except (redis_exceptions.ConnectionError, redis_exceptions.TimeoutError, OSError):
                conn.disconnect()  # a half-read reply must not reach the next user of the connection
                raise
            finally:
                pool.release(conn)
        raise AssertionError("unreachable")

    def put_prior(self, space: str, user: str, state: UserState, profile: Mapping[str, str]) -> bool:
        """Store a brand-new user's prior state unless real events already shaped the user. Returns True if set.

        The profile itself is always recorded. WATCH on the user key makes the check-and-set atomic against a
        concurrent user-agent commit.
        """
        import redis

        key = self.user_key(space, user)
        if profile:
            self.r.hset(self.keys.profile(user), mapping=dict(profile))
        for _ in range(16):
            with self.r.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(key)
                    cur = pipe.get(key)
                    if cur and unpack_state(cur).n_events > 0:
                        return False
                    pipe.multi()
                    pipe.set(key, pack_state(state))
                    pipe.execute()
                    return True
                except redis.WatchError:
                    continue
        raise FenceMovedError(f"user {user} kept changing while its prior was set")

    def put_prior_profile_only(self, user: str, profile: Mapping[str, str]) -> None:
        """Record a registration that declared no tastes (recall falls back until events arrive)."""
        if profile:
            self.r.hset(self.keys.profile(user), mapping=dict(profile))

    def add_fresh(self, space: str, items: Mapping[str, int]) -> None:
        if not items:
            return
        key = self.keys.fresh(space)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(key, dict(items))
            pipe.zremrangebyrank(key, 0, -FRESH_CAP - 1)
            pipe.execute()

    def delete_prefix(self) -> int:
        """Remove every key under this store's prefix (tests and benchmarks), the layout included."""
        from infra.namespace import delete_matching

        n = delete_matching(self.r, self._keys.everything())
        self._keys = RedisKeys(self.p)
        self._layout_checked = -1e18
        return n


_HEADER = struct.Struct("<BBIdd")  # format version, source code, n_events, weight, ts
_FORMAT = 1
_SOURCES = ("events", "prior", "dssm")  # index packed in the state header; append only


def pack_state(st: UserState) -> bytes:
    """A user state as one binary string: header (version, source, n, weight, ts) + D float32 little-endian."""
    src = _SOURCES.index(st.source) if st.source in _SOURCES else 0
    return _HEADER.pack(_FORMAT, src, int(st.n_events), float(st.weight), float(st.ts)) + np.asarray(
        st.vec, dtype="<f4"
    ).tobytes()


@dataclass
class StateArrays:
    """Many users' states as columns of :func:`pack_state`'s fields: what a batch update computes on."""

    n_events: np.ndarray  # int64
    weight: np.ndarray  # float64
    ts: np.ndarray  # float64
    source: np.ndarray  # uint8, the index of the source in the packed header
    vec: np.ndarray  # U x D (float32 as read; any float type to pack)


#: the packed header's code of each state source (``UserState.source``)
SOURCE_CODES = {name: code for code, name in enumerate(_SOURCES)}


def _layout(dim: int) -> np.dtype:
    """:func:`pack_state`'s bytes as one numpy record (no padding): header fields, then D float32."""
    return np.dtype([("fmt", "u1"), ("src", "u1"), ("n", "<u4"), ("w", "<f8"), ("t", "<f8"), ("vec", "<f4", (dim,))])


def unpack_states(raws: Sequence[bytes], dim: int) -> StateArrays:
    """:func:`unpack_state` of many states of dimension ``dim`` at once (ValueError for another size or format)."""
    layout = _layout(dim)
    if any(len(r) != layout.itemsize for r in raws):
        raise ValueError(f"a user state is not {layout.itemsize} bytes (a {dim}-d vector)")
    rec = np.frombuffer(b"".join(raws), dtype=layout)
    if len(rec) and (rec["fmt"] != _FORMAT).any():
        raise ValueError(f"unknown user-state format {int(rec['fmt'][rec['fmt'] != _FORMAT][0])}")
    if len(rec) and (rec["src"] >= len(_SOURCES)).any():
        raise ValueError("unknown user-state source")
    return StateArrays(rec["n"].astype(np.int64), rec["w"].astype(np.float64), rec["t"].astype(np.float64),
                       rec["src"].copy(), rec["vec"])  # the vectors: a read-only view of the joined bytes


def pack_states(a: StateArrays) -> list[bytes]:
    """:func:`pack_state` of every row of ``a``, byte for byte."""
    n, dim = a.vec.shape
    rec = np.empty(n, dtype=_layout(dim))
    rec["fmt"] = _FORMAT
    rec["src"] = a.source
    rec["n"] = a.n_events
    rec["w"] = a.weight
    rec["t"] = a.ts
    rec["vec"] = a.vec
    buf, size = rec.tobytes(), rec.dtype.itemsize
    return [buf[i : i + size] for i in range(0, n * size, size)]


class PackedStates(Mapping[str, UserState]):
    """User states as :func:`pack_state`'s bytes (``raw``: user -> bytes), unpacked only when one is looked up: a
    batch reads and writes its users' states in bulk this way. A user without a state is not a key."""

    def __init__(self, raw: Mapping[str, bytes]) -> None:
        self.raw = dict(raw)

    def __getitem__(self, user: str) -> UserState:
        return unpack_state(self.raw[user])

    def __iter__(self) -> Iterator[str]:
        return iter(self.raw)

    def __len__(self) -> int:
        return len(self.raw)

    def __contains__(self, user: object) -> bool:
        return user in self.raw


def unpack_state(raw: bytes) -> UserState:
    fmt, src, n, w, t = _HEADER.unpack_from(raw)
    if fmt != _FORMAT:
        raise ValueError(f"unknown user-state format {fmt}")
    vec = np.frombuffer(raw, dtype="<f4", offset=_HEADER.size).copy()
    return UserState(vec=vec, weight=w, ts=t, n_events=n, source=_SOURCES[src])


NOT_CHECKED = "-"  # an expected-state digest that is not compared


def encode_commit(c: UserCommit, keys: RedisKeys, seen_cap: int = SEEN_CAP) -> tuple[list[str], list[Arg]]:
    """KEYS and ARGV of ``user_commit.lua`` for ``c``: its named sections (see the script's table)."""

    def fence(f: FenceKey) -> str:
        return keys.fence(f.group, f.topic, f.partition)

    def scored(key_of: Callable[[str], str], sets: Mapping[str, Sequence[tuple[str, float]]]
               ) -> list[tuple[str, list[Record]]]:
        return [(key_of(u), [(repr(float(ts)), item) for item, ts in items]) for u, items in sets.items() if items]

    def offsets(parks: Mapping[FenceKey, Sequence[int]]) -> list[tuple[str, list[Record]]]:
        return [(keys.parked(f.group, f.topic, f.partition), [(int(o),) for o in offs])
                for f, offs in parks.items() if offs]

    expected = c.expected_states
    if isinstance(c.states, PackedStates):  # already packed: as they are
        states = [(keys.user_state(c.space, u), [(raw, expected.get(u, NOT_CHECKED))])
                  for u, raw in c.states.raw.items()]
    else:
        states = [(keys.user_state(c.space, u), [(pack_state(st), expected.get(u, NOT_CHECKED))])
                  for u, st in c.states.items()]
    sections = [
        Section("fences", ("expected", "new"),
                [(fence(f), [(int(c.expected_fences.get(f, -1)), int(new))]) for f, new in c.fences.items()]),
        Section("states", ("state", "expected_digest"), states),
        Section("seen", ("score", "member"), scored(keys.seen, c.seen)),
        Section("engaged", ("score", "member"), scored(keys.engaged, c.engaged)),
        Section("parked", ("offset",), offsets(c.parked)),
        Section("claims", ("offset",), offsets(c.claims)),
        Section("popularity", ("increment", "member"),
                [(keys.popularity(c.space, shard), [(repr(float(w)), item) for item, w in pop.items()])
                 for shard, pop in sorted(c.popularity.items()) if pop]),
    ]
    return encode_sections(sections, {"seen_cap": int(seen_cap)})


def check_shards(c: UserCommit, keys: RedisKeys) -> None:
    """ValueError unless every user ``c`` writes (state, seen, engaged) and every popularity shard has the fence of
    its shard's partition in ``c``: the fence is what makes a part of a split commit exactly-once, so a part without
    it would write states unguarded (the engine's events are on their user's partition: ``Misrouted`` otherwise)."""
    fenced = {f.partition for f in c.fences}
    users = set(c.states) | {u for u, v in c.seen.items() if v} | {u for u, v in c.engaged.items() if v}
    loose = sorted(({keys.shard(u) for u in users} | {s for s, pop in c.popularity.items() if pop}) - fenced)
    if loose:
        raise ValueError(f"the commit writes users of shard(s) {loose} without the fence of that partition")


def split_commit(c: UserCommit, keys: RedisKeys) -> list[UserCommit]:
    """``c`` as one commit per shard (the partition of a fence, parked set or claim; a user's shard for its state,
    seen and engaged sets), in shard order: each writes the keys of one Redis Cluster hash slot only."""
    parts: dict[int, dict[str, dict[Any, Any]]] = {}

    def part(shard: int) -> dict[str, dict[Any, Any]]:
        return parts.setdefault(shard, {n: {} for n in (
            "states", "fences", "expected_fences", "seen", "engaged", "parked", "claims", "popularity",
            "expected_states")})

    for f, v in c.fences.items():
        part(f.partition)["fences"][f] = v
    for f, v in c.expected_fences.items():
        if f in c.fences:
            part(f.partition)["expected_fences"][f] = v
    for name, sets in (("parked", c.parked), ("claims", c.claims)):
        for f, offs in sets.items():
            if offs:
                part(f.partition)[name][f] = offs
    for shard, pop in c.popularity.items():
        if pop:
            part(shard)["popularity"][shard] = pop
    raw = c.states.raw if isinstance(c.states, PackedStates) else None
    for u in c.states:
        p = part(keys.shard(u))
        p["states"][u] = raw[u] if raw is not None else c.states[u]
        if u in c.expected_states:
            p["expected_states"][u] = c.expected_states[u]
    for name, sets2 in (("seen", c.seen), ("engaged", c.engaged)):
        for u, items in sets2.items():
            if items:
                part(keys.shard(u))[name][u] = items
    out = []
    for shard in sorted(parts):
        p = parts[shard]
        states: Mapping[str, UserState] = PackedStates(p["states"]) if raw is not None else p["states"]
        out.append(UserCommit(space=c.space, states=states, fences=p["fences"], expected_fences=p["expected_fences"],
                              seen=p["seen"], popularity=p["popularity"], expected_states=p["expected_states"],
                              engaged=p["engaged"], parked=p["parked"], claims=p["claims"]))
    return out


def encode_commits(c: UserCommit, keys: RedisKeys, seen_cap: int = SEEN_CAP) -> list[tuple[list[str], list[Arg]]]:
    """:func:`encode_commit` of each part of :func:`split_commit`: one single-slot script call per shard."""
    return [encode_commit(part, keys, seen_cap) for part in split_commit(c, keys)]


def decode_commit(keys: RedisKeys, wire_keys: Sequence[bytes | str], wire_args: Sequence[Arg]) -> UserCommit:
    """The :class:`UserCommit` a call of :func:`encode_commit` carries (tests and debugging). Left out, as the
    encoding leaves them out: empty seen, engaged, parked and claimed lists, and expectations of fences and users
    the commit does not write."""
    _, s = decode_sections(wire_keys, wire_args)
    pops = s["popularity"].groups
    if pops:
        space = keys.space_of_popularity(pops[0][0])
    elif s["states"].groups:
        space = keys.space_of_state(s["states"].groups[0][0])
    else:
        space = ""

    def fence(key: str) -> FenceKey:
        return FenceKey(*keys.partition_of_fence(key))

    def scored(section: Section, user_of: Callable[[str], str]) -> dict[str, list[tuple[str, float]]]:
        return {user_of(k): [(_text(m), float(_text(t))) for t, m in recs] for k, recs in section.groups}

    def offsets(section: Section) -> dict[FenceKey, list[int]]:
        return {FenceKey(*keys.partition_of_parked(k)): [int(_text(o)) for (o,) in recs] for k, recs in section.groups}

    users = [(keys.user_of_state(space, k), recs[0]) for k, recs in s["states"].groups]
    return UserCommit(
        space=space,
        states={u: unpack_state(_raw(st)) for u, (st, _) in users},
        fences={fence(k): int(_text(recs[0][1])) for k, recs in s["fences"].groups},
        expected_fences={fence(k): int(_text(recs[0][0])) for k, recs in s["fences"].groups},
        seen=scored(s["seen"], keys.user_of_seen),
        popularity={keys.shard_of_key(k): {_text(m): float(_text(w)) for w, m in recs} for k, recs in pops},
        expected_states={u: _text(d) for u, (_, d) in users if _text(d) != NOT_CHECKED},
        engaged=scored(s["engaged"], keys.user_of_engaged),
        parked=offsets(s["parked"]),
        claims=offsets(s["claims"]),
    )


def _text(x: Arg) -> str:
    return x.decode() if isinstance(x, bytes) else str(x)


def _raw(x: Arg) -> bytes:
    return x if isinstance(x, bytes) else str(x).encode()


#: how often a store without a known layout reads it again (an API started before any worker)
LAYOUT_RECHECK_S = 1.0


def _parse_layout(raw: bytes | str) -> int:
    try:
        d = json.loads(raw)
        version, shards = int(d["version"]), int(d["shards"])
    except (ValueError, KeyError, TypeError) as exc:
        raise LayoutError(f"the stored Redis key layout cannot be read: {str(raw)[:80]!r}") from exc
    if version != LAYOUT_VERSION or shards < 1:
        raise LayoutError(f"Redis key layout {version} with {shards} shards; this version reads layout "
                          f"{LAYOUT_VERSION}")
    return shards


def _is_cluster(client: Any) -> bool:
    """Whether ``client`` talks to a Redis Cluster (redis-py's ``RedisCluster``)."""
    try:
        from redis.cluster import RedisCluster
    except ImportError:  # pragma: no cover
        return False
    return isinstance(client, RedisCluster)


@functools.cache
def _commit_lua() -> str:
    """The commit script, shipped next to this module."""
    return resources.files("indexing").joinpath("user_commit.lua").read_text(encoding="utf-8")
