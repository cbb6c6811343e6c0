"""Layout 1 -> layout 2 of the engine's Redis keys (``indexing.redis_keys``): ``thaw state migrate-keys``.

Layout 1 had no shard tag: ``{p}u:{sp}:{user}``, ``{p}prof|seen|eng:{user}``, ``{p}pop:{sp}`` (one set per space),
``{p}fence|parked:{group}:{topic}:{partition}``. Layout 2 puts ``{s<shard>}`` after the kind (the user's shard, or
the fence's partition) and keeps popularity per shard; its readers sum the shards, so layout 1's one set becomes
shard 0's set unchanged (the sum is the same). Item attributes, the fresh sets and the served space keep their keys.

Run it with the workers stopped, on the single Redis that held layout 1 (layout 1 never ran on a cluster: its
commit crosses slots). Each key is copied with DUMP/RESTORE (type, value and TTL as they are) and then deleted, so
a migration stopped half way is run again and goes on where it stopped; the layout marker is written last, and
before it exists the worker refuses to start (``RedisState.ensure_layout``).
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from indexing.redis_keys import LAYOUT_VERSION, RedisKeys

#: layout 1's per-user kinds beside the state: (kind prefix, layout-2 key builder name)
_USER_KINDS = (("prof:", "profile"), ("seen:", "seen"), ("eng:", "engaged"))


@dataclass
class MigrationReport:
    moved: dict[str, int] = field(default_factory=dict)  # kind -> keys moved
    skipped: list[str] = field(default_factory=list)  # keys left alone, with why (first 20)
    shards: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {"shards": self.shards, "moved": dict(self.moved), "skipped": self.skipped[:20],
                "skipped_total": len(self.skipped)}


def new_key(keys: RedisKeys, old: str) -> tuple[str, str] | None:
    """(kind, layout-2 key) of layout-1 key ``old`` under ``keys``' prefix, or None when ``old`` is not a layout-1
    key this migration moves (item attributes, fresh sets, the space, an unknown kind). Pure."""
    p = keys.prefix
    if not old.startswith(p):
        return None
    rest = old[len(p):]
    if rest.startswith("u:"):
        space, sep, user = rest[2:].partition(":")
        return ("state", keys.user_state(space, user)) if sep and user else None
    for kind, builder in _USER_KINDS:
        if rest.startswith(kind):
            user = rest[len(kind):]
            return (kind[:-1], getattr(keys, builder)(user)) if user else None
    if rest.startswith("pop:"):
        space = rest[4:]
        return ("popularity", keys.popularity(space, 0)) if space else None
    for kind in ("fence:", "parked:"):
        if rest.startswith(kind):
            try:
                group, topic, partition = rest[len(kind):].rsplit(":", 2)
                part = int(partition)
            except ValueError:
                return None
            build = keys.fence if kind == "fence:" else keys.parked
            return kind[:-1], build(group, topic, part)
    return None


def migrate(r: Any, prefix: str, shards: int, *, scan_count: int = 1000,
            progress: Callable[[str, int], None] | None = None) -> MigrationReport:
    """Move every layout-1 key under ``prefix`` of the single Redis ``r`` to layout 2 with ``shards`` shards (the
    partitions of ``user.events``), then store the layout. ValueError when a layout is stored already."""
    keys = RedisKeys(prefix, shards)
    stored = r.get(keys.layout())
    if stored is not None:
        raise ValueError(f"Redis already holds a key layout ({stored!r}): nothing to migrate")
    report = MigrationReport(shards=shards)
    for old in _scan(r, prefix, scan_count):
        target = new_key(keys, old)
        if target is None:
            continue
        kind, new = target
        if new == old:
            continue
        blob = r.dump(old)
        if blob is None:  # deleted meanwhile
            continue
        if r.exists(new):
            report.skipped.append(f"{old}: {new} exists already")
            continue
        ttl = r.pttl(old)
        r.restore(new, max(int(ttl), 0), blob)
        r.delete(old)
        report.moved[kind] = report.moved.get(kind, 0) + 1
        if progress is not None:
            progress(kind, report.moved[kind])
    r.set(keys.layout(), json.dumps({"version": LAYOUT_VERSION, "shards": int(shards)}), nx=True)
    return report


def _scan(r: Any, prefix: str, count: int) -> Iterator[str]:
    # a snapshot of the names first: keys written by the migration itself must not be scanned again
    names = [k.decode() if isinstance(k, bytes) else str(k) for k in r.scan_iter(match=f"{prefix}*", count=count)]
    yield from names
