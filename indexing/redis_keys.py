"""Every Redis key of the engine, built (and parsed back) in one place.

``p`` is ``RedisSettings.key_prefix``, ``sp`` a vector-space id such as ``minilm-l6@1``::

    {p}u:{sp}:{user}                       string  packed user state (``indexing.redis_state.pack_state``)
    {p}prof:{user}                         hash    gender, age, region: the registration profile
    {p}seen:{user}                         zset    item -> ts, for exclusion at recall
    {p}eng:{user}                          zset    item -> ts of positive actions: the ranker's history
    {p}item:{item}                         string  JSON {"k": kind, "t": [tags], "c": created_at ms}
    {p}pop:{sp}                            zset    item -> accumulated positive weight: popularity fallback
    {p}fresh:{sp}                          zset    item -> created_at ms
    {p}fence:{group}:{topic}:{partition}   string  highest applied offset
    {p}parked:{group}:{topic}:{partition}  set     offsets parked on the retry topic and not resolved yet
    {p}space                               string  the vector space recall is served from

The strings are a storage format (existing data, tools and tests read them): change none of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class RedisKeys:
    """The key of each kind under one prefix."""

    prefix: str

    def user_state(self, space: str, user: str) -> str:
        return f"{self.prefix}u:{space}:{user}"

    def profile(self, user: str) -> str:
        return f"{self.prefix}prof:{user}"

    def seen(self, user: str) -> str:
        return f"{self.prefix}seen:{user}"

    def engaged(self, user: str) -> str:
        return f"{self.prefix}eng:{user}"

    def item_meta(self, item: str) -> str:
        return f"{self.prefix}item:{item}"

    def popularity(self, space: str) -> str:
        return f"{self.prefix}pop:{space}"

    def fresh(self, space: str) -> str:
        return f"{self.prefix}fresh:{space}"

    def fence(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}fence:{group}:{topic}:{partition}"

    def parked(self, group: str, topic: str, partition: int) -> str:
        return f"{self.prefix}parked:{group}:{topic}:{partition}"

    def space(self) -> str:
        return f"{self.prefix}space"

    def everything(self) -> str:
        """The SCAN pattern matching every key under this prefix."""
        return f"{self.prefix}*"

    # ------------------------------------------------------------ parsing back (decoding a commit, tools)
    def _rest(self, kind: str, key: str) -> str:
        head = f"{self.prefix}{kind}"
        if not key.startswith(head):
            raise ValueError(f"{key!r} is not a {kind!r} key under prefix {self.prefix!r}")
        return key[len(head):]

    def user_of_state(self, space: str, key: str) -> str:
        return self._rest(f"u:{space}:", key)

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


def _partition(rest: str) -> tuple[str, str, int]:
    group, topic, partition = rest.rsplit(":", 2)
    return group, topic, int(partition)
