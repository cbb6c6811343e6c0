"""Milvus for the local stack: Milvus 2.3.5 standalone from the PyPI ``milvus`` wheel, its ports and health.

    <home>/milvus/configs/  milvus.yaml (ports, time tick), glog.conf, embed-etcd.yaml
    <home>/milvus/data/ bin/ run/ logs/

Ports: the proxy on ``stack.milvus_port`` (== the port of ``milvus.uri``); embedded etcd client/peer,
metrics/healthz and the eight internal gRPC ports consecutively from ``stack.milvus_port_base``.
"""

from __future__ import annotations

import contextlib
import os
import re
from pathlib import Path
from urllib.parse import urlsplit

from infra import clients
from infra.settings import Settings
from infra.stack.common import StackError, port_open
from infra.stack.state import Launch, spawn

PORT_KEYS: tuple[str, ...] = (
    # MilvusServerConfig template keys, in the order they take ports from stack.milvus_port_base + 3
    "proxy_internal_port",
    "root_coord_port",
    "query_coord_port",
    "query_node_port",
    "index_coord_port",
    "index_node_port",
    "data_coord_port",
    "data_node_port",
)


def host_port(settings: Settings) -> tuple[str, int]:
    parts = urlsplit(settings.milvus.uri)
    return parts.hostname or "127.0.0.1", parts.port or 19530


def internal_ports(settings: Settings) -> dict[str, int]:
    """etcd client/peer, metrics and the :data:`PORT_KEYS` ports, consecutive from ``stack.milvus_port_base``."""
    base = settings.stack.milvus_port_base
    ports = {"etcd_port": base, "etcd_peer_port": base + 1, "metrics_port": base + 2}
    ports.update({key: base + 3 + i for i, key in enumerate(PORT_KEYS)})
    return ports


def ports(settings: Settings) -> list[tuple[str, int]]:
    # Milvus binds all interfaces (etcd binds loopback, but 0.0.0.0 also catches loopback users)
    return [("0.0.0.0", p) for p in [settings.stack.milvus_port, *internal_ports(settings).values()]]  # noqa: S104


def check_local_config(settings: Settings) -> None:
    s = settings
    port = host_port(s)[1]
    if port != s.stack.milvus_port:
        raise StackError(
            f"settings.milvus.uri ({s.milvus.uri}) points at port {port} but the local Milvus "
            f"listens on stack.milvus_port={s.stack.milvus_port}; set "
            f"THAW_STACK__MILVUS_PORT={port} or fix the URI"
        )
    own = {s.kafka.port, s.kafka.controller_port, s.redis.port, s.stack.milvus_port}
    clash = own & set(internal_ports(s).values())
    if clash:
        raise StackError(f"stack.milvus_port_base range overlaps other stack ports {sorted(clash)}")


def probe_milvus(settings: Settings, timeout_s: float = 5.0) -> tuple[bool, str]:
    """``list_collections`` (plus the server version) through pymilvus."""
    if settings.milvus.is_lite:
        return True, f"Milvus Lite file {settings.milvus.uri} (no server needed)"
    host, port = host_port(settings)
    if not port_open(host, port, timeout=min(timeout_s, 1.0)):
        return False, f"nothing listening on {host}:{port}"
    try:
        client = clients.milvus_client(settings.milvus, timeout=timeout_s)
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    try:
        collections = client.list_collections(timeout=timeout_s)
        version = client.get_server_version(timeout=timeout_s)
        return True, f"Milvus {version} ({len(collections)} collection(s))"
    except Exception as exc:  # noqa: BLE001
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        with contextlib.suppress(Exception):
            client.close()


def start_milvus(settings: Settings, home: Path) -> Launch:
    try:
        import milvus as milvus_pkg  # type: ignore[import-untyped]
    except ImportError as exc:
        raise StackError("the `milvus` package is missing: pip install milvus==2.3.5") from exc
    base = home / "milvus"
    base.mkdir(parents=True, exist_ok=True)
    ports = internal_ports(settings)
    # The package's own MilvusServerConfig.resolve() probes ports without SO_REUSEADDR (so a TIME_WAIT
    # leftover of the previous run fails it); the ports were checked by LocalStack before the start, so fill
    # the template directly.
    config = milvus_pkg.MilvusServerConfig(data_dir=str(base))
    config.resolve_storage()
    port_items = {
        "proxy_port": settings.stack.milvus_port,
        "etcd_port": ports["etcd_port"],
        **{key: ports[key] for key in PORT_KEYS},
    }
    for key, port in port_items.items():
        if key not in config.configurable_items:
            raise StackError(f"unexpected milvus package: its config template has no {key}")
        config.set(key, port)
    for component in (
        "rootCoord",
        "proxy",
        "queryCoord",
        "queryNode",
        "indexNode",
        "dataCoord",
        "dataNode",
    ):
        config.set(f"{component}.ip", "127.0.0.1")  # register loopback addresses (not the LAN address)
    unresolved = [k for k, v in config.configurable_items.items() if v[1] is None]
    if unresolved:
        raise StackError(f"Milvus config template items left unresolved: {unresolved}")
    config.write_config()  # configs/milvus.yaml + glog.conf
    etcd_conf = base / "configs" / "embed-etcd.yaml"
    client_url = f"http://127.0.0.1:{ports['etcd_port']}"
    peer_url = f"http://127.0.0.1:{ports['etcd_peer_port']}"
    etcd_conf.write_text(
        "name: default\n"
        f"listen-client-urls: {client_url}\nadvertise-client-urls: {client_url}\n"
        f"listen-peer-urls: {peer_url}\ninitial-advertise-peer-urls: {peer_url}\n"
        f"initial-cluster: default={peer_url}\n",
        encoding="utf-8",
    )
    yaml_path = base / "configs" / "milvus.yaml"
    text = yaml_path.read_text(encoding="utf-8")
    text = re.sub(r"(?m)^etcd:\n", f"etcd:\n  config:\n    path: {etcd_conf}\n", text, count=1)
    tick = int(settings.stack.milvus_time_tick_ms)
    text, n_tick = re.subn(r"(?m)^(\s+timeTickInterval:\s*)\d+", rf"\g<1>{tick}", text)
    if n_tick == 0:
        raise StackError("unexpected milvus package: its config has no proxy.timeTickInterval")
    yaml_path.write_text(text, encoding="utf-8")
    milvus_pkg._initialize_data_files(str(base))  # unpack the bundled binary + libs into <base>/bin
    exe = base / "bin" / "milvus"
    env = dict(os.environ)
    env.update(
        {
            "DEPLOY_MODE": "STANDALONE",
            "METRICS_PORT": str(ports["metrics_port"]),
            "MILVUS_RUN_DIR": str(base / "run"),
            "LD_LIBRARY_PATH": ":".join(p for p in (str(exe.parent), os.environ.get("LD_LIBRARY_PATH", "")) if p),
        }
    )
    logs = home / "logs"
    logs.mkdir(parents=True, exist_ok=True)
    return spawn([str(exe), "run", "standalone"], logs / "milvus.out", marker=str(exe), cwd=base, env=env)
