"""infra/docker-compose.yml is safe to start on a shared host: loopback-only ports, no default credentials, a
password-protected Redis that keeps an fsynced append-only file. (No Docker engine here: the file is checked, not
run.)"""

from __future__ import annotations

from pathlib import Path

import yaml

COMPOSE = Path(__file__).resolve().parents[3] / "infra" / "docker-compose.yml"


def _services() -> dict:
    return yaml.safe_load(COMPOSE.read_text())["services"]


def test_published_ports_are_bound_to_loopback_only():
    published = {name: svc.get("ports", []) for name, svc in _services().items()}
    assert published["kafka"] and published["redis"] and published["milvus"]
    assert not published["etcd"] and not published["minio"]
    for name, ports in published.items():
        for p in ports:
            assert str(p).startswith("127.0.0.1:"), f"{name} publishes {p} on every interface"


def test_no_default_credentials():
    text = COMPOSE.read_text()
    assert "minioadmin" not in text
    env = _services()["minio"]["environment"]
    assert env["MINIO_ROOT_PASSWORD"].startswith("${MINIO_ROOT_PASSWORD:?")  # refuses to start without one


def test_redis_requires_a_password_and_keeps_an_append_only_file():
    cmd = " ".join(_services()["redis"]["command"])
    assert "--user default off" in cmd and "THAW_REDIS_PASSWORD:?" in cmd
    assert "--appendonly yes" in cmd and "--appendfsync everysec" in cmd
    assert "-@dangerous" in cmd and "-@admin" in cmd


def test_images_are_pinned_to_exact_tags():
    for name, svc in _services().items():
        image = svc["image"]
        tag = image.rsplit(":", 1)[-1]
        assert ":" in image and tag not in ("latest", "7", "stable"), f"{name}: {image}"
