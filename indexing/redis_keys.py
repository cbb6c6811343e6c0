"""Every Redis key of the engine, built (and parsed back) in one place: layout 2, every key one commit writes
carries a Redis Cluster hash tag.

``p`` is ``RedisSettings.key_prefix`` (no ``{`` or ``}``), ``sp`` a vector-space id such as ``minilm-l6@1``, ``s`` a
shard: the user-events partition that owns the key::

    {p}u:{s<s>}:{sp}:{user}                       string  packed user state (``indexing.redis_state.pack_state``)
    {p}prof:{s<s>}:{user}                         hash    gender, age, region: the registration profile
    {p}seen:{s<s>}:{user}                         zset    item -> ts, for exclusion at recall
    {p}eng:{s<s>}:{user}                          zset    item -> ts of positive actions: the ranker's history
    {p}pop:{s<s>}:{sp}                            zset    item -> positive weight of shard s's users (popularity)
    {p}fence:{s<s>}:{group}:{topic}:{partition}   string  highest applied offset (s == partition)
    {p}parked:{s<s>}:{group}:{topic}:{partition}  set     offsets parked on the retry topic, not resolved yet
    {p}item:{item}                                string  JSON {"k": kind, "t": [tags], "c": created_at ms}
    {p}fresh:{sp}                                 zset    item -> created_at ms
    {p}space                                      string  the vector space recall is served from
    {p}layout                                     string  JSON {"version": 2, "shards": N}: this layout and its N

Why: a batch of user events is committed by one Lua script that writes its users' states, seen and engaged sets,
popularity and the fences of the partitions it read. Redis Cluster runs a script only over keys of one hash slot;
the part of a key inside its first ``{...}`` picks the slot, so every key of shard ``s`` is in one slot and a batch
commits one script per partition it covers (one script for all of them on a single Redis, where any keys go).

A user's shard is the partition Kafka's default partitioner gives a record keyed by the user id:
``murmur2(utf-8 bytes) & 0x7fffffff % N`` over the ``N`` partitions of ``user.events`` (:func:`shard_of`; the Java
client's, aiokafka's and kafka-python's default for keyed records; librdkafka's default is CRC32, so its producers
need ``partitioner=murmur2_random``). The worker dead-letters a user event that is not on its user's partition
(``Misrouted``): its state could not be committed with that partition's fence. The retry topic has the same number
of partitions and its copies are keyed by user id, so retry partition ``q`` holds shard ``q``'s users only.

``N`` is stored in ``{p}layout`` by the worker at start (from the broker's metadata); readers (the API, the CLI)
read it there. Adding partitions to ``user.events`` moves users between shards: the worker refuses to start on a
mismatch. Layout 1 (the same keys without the ``{s<s>}`` part, one popularity set per space) is detected and
converted by ``thaw state migrate-keys`` (:class:`LegacyKeys`).

The strings are a storage format (existing data, tools and tests read them): change none of them.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

LAYOUT_VERSION = 2


def murmur2(data: bytes) -> int:
    """Kafka's 32-bit murmur2 of ``data`` (seed 0x9747b28c), as a signed 32-bit int like the Java client's
    ``Utils.murmur2``."""
    m, r = 0x5BD1E995, 24
    length = len(data)
    h = (0x9747B28C ^ length) & 0xFFFFFFFF
    n4 = length - length % 4
    for i in range(0, n4, 4):
        k = int.from_bytes(data[i : i + 4], "little")
        k = (k * m) & 0xFFFFFFFF
        k ^= k >> r
        k = (k * m) & 0xFFFFFFFF
        h = ((h * m) & 0xFFFFFFFF) ^ k
    rest = length % 4
    if rest == 3:
        h ^= data[n4 + 2] << 16
    if rest >= 2:
        h ^= data[n4 + 1] << 8
    if rest >= 1:
        h ^= data[n4]
        h = (h * m) & 0xFFFFFFFF
    h ^= h >> 13
    h = (h * m) & 0xFFFFFFFF
    h ^= h >> 15
    return h - (1 << 32) if h & 0x80000000 else h


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner picks for a record with a non-null ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


@functools.lru_cache(maxsize=1 << 17)
def shard_of(user: str, shards: int) -> int:
    """The shard of ``user``: the partition of ``user.events`` a record keyed by the user id is on."""
    return partition_of(user.encode("utf-8"), shards)


def check_prefix(prefix: str) -> str:
    """``prefix`` if it can start a layout-2 key (a brace would move or break the hash tag), else ValueError."""
    if "{" in prefix or "}" in prefix:
        raise ValueError(f"a Redis key prefix may not hold '{{' or '}}' (they pick the cluster hash slot): {prefix!r}")
    return prefix


@dataclass(frozen=True)
class RedisKeys:
    """The key of each kind under one prefix, for ``shards`` user-events partitions (0: not known yet; the keys that
    need a user's shard raise then)."""

    prefix: str
    shards: int = 0

    def __post_init__(self) -> None:
        check_prefix(self.prefix)
        if self.shards < 0:
            raise ValueError(f"shards must be >= 0, not {self.shards}")

    def shard(self, user: str) -> int:
        if self.shards <= 0:
            raise LookupError("the Redis key layout's shard count is not known (no worker has started yet)")
        return shard_of(user, self.shards)

    @staticmethod
    def tag(shard: int) -> str:
        """The hash tag of shard ``shard``."""
        return f"{{s{int(shard)}}}"

    def user_state(self, space: str, user: str) -> str:
        return f"{self.prefix}u:{self.tag(self.shard(user))}:{space}:{user}"

    def profile(self, user: str) -> str:
        return f"{self.prefix}prof:{self.tag(self.shard(user))}:{user}"

    def seen(self, user: str) -> str:
        return f"{self.prefix}seen:{self.tag(self.shard(user))}:{user}"

    def engaged(self, user: str) -> str:
        return f"{self.prefix}eng:{self.tag(self.shard(user))}:{user}"

    def popularity(self, space: str, shard: int) -> str:
        return f"{self.prefix}pop:{self.tag(shard)}:{space}"

    def popularity_shards(self, space: str) -> list[str]:
        """Every shard's popularity set of ``space`` (their sum is the popularity)."""
        return [self.popularity(space, s) for s in range(self.shards)]

    def fence(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}fence:{self.tag(partition)}:{group}:{topic}:{partition}"

    def parked(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}parked:{self.tag(partition)}:{group}:{topic}:{partition}"

    def item_meta(self, item: str) -> str:
        return f"{self.prefix}item:{item}"

    def fresh(self, space: str) -> str:
        return f"{self.prefix}fresh:{space}"

    def space(self) -> str:
        return f"{self.prefix}space"

    def layout(self) -> str:
        return f"{self.prefix}layout"

    def everything(self) -> str:
        """The SCAN pattern matching every key under this prefix."""
        return f"{self.prefix}*"

    # ------------------------------------------------------------ parsing back (decoding a commit, tools)
    def _rest(self, kind: str, key: str, tagged: bool = True) -> str:
        head = f"{self.prefix}{kind}"
        if not key.startswith(head):
            raise ValueError(f"{key!r} is not a {kind!r} key under prefix {self.prefix!r}")
        rest = key[len(head):]
        if not tagged:
            return rest
        if not rest.startswith("{s") or "}:" not in rest:
            raise ValueError(f"{key!r} has no shard tag")
        return rest[rest.index("}:") + 2:]

    def shard_of_key(self, key: str) -> int:
        """The shard in a tagged key's hash tag."""
        start = key.index("{s") + 2
        return int(key[start : key.index("}", start)])

    def user_of_state(self, space: str, key: str) -> str:
        rest = self._rest("u:", key)
        if not rest.startswith(f"{space}:"):
            raise ValueError(f"{key!r} is not a state of space {space!r}")
        return rest[len(space) + 1:]

    def space_of_state(self, key: str) -> str:
        """The space of a user-state key (a space id holds no ``:``)."""
        return self._rest("u:", key).split(":", 1)[0]

    def user_of_seen(self, key: str) -> str:
        return self._rest("seen:", key)

    def user_of_engaged(self, key: str) -> str:
        return self._rest("eng:", key)

    def space_of_popularity(self, key: str) -> str:
        return self._rest("pop:", key)

    def partition_of_fence(self, key: str) -> tuple[str, str, int]:
        """(group, topic, partition) of a fence key (a Kafka topic name holds no ``:``; a group may)."""
        return _partition(self._rest("fence:", key))

    def partition_of_parked(self, key: str) -> tuple[str, str, int]:
        """(group, topic, partition) of a parked-set key."""
        return _partition(self._rest("parked:", key))


@dataclass(frozen=True)
class LegacyKeys:
    """Layout 1's keys (no shard tag; one popularity set per space): what ``thaw state migrate-keys`` reads."""

    prefix: str

    def user_state_pattern(self, space: str) -> str:
        return f"{self.prefix}u:{space}:*"

    def fence(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}fence:{group}:{topic}:{partition}"

    def parked(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}parked:{group}:{topic}:{partition}"

    def popularity(self, space: str) -> str:
        return f"{self.prefix}pop:{space}"

    def per_user_kinds(self) -> tuple[str, ...]:
        """The kinds of layout-1 key that belong to one user (``{p}<kind><user>``), the state aside."""
        return ("prof:", "seen:", "eng:")


def _partition(rest: str) -> tuple[str, str, int]:
    group, topic, partition = rest.rsplit(":", 2)
    return group, topic, int(partition)
