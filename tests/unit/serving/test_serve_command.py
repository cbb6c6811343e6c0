"""``thaw serve`` refuses what it must not run (authentication off on a public address, authentication on with
nothing to check against) before it binds anything; ``thaw serve-token`` and ``thaw serve-key`` make credentials the
API accepts."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from infra.settings import ApiKey, load_settings
from serving.api import create_apps
from tests.unit.serving.helpers import JWT_SECRET, FakeRecommender, clients, typed
from thaw.cli import app


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for key in [k for k in os.environ if k.startswith("THAW_SERVE__")]:
        monkeypatch.delenv(key)
    yield


def _never_serve(monkeypatch: pytest.MonkeyPatch) -> list[object]:
    started: list[object] = []
    monkeypatch.setattr("serving.server.serve_apps", lambda *a, **kw: started.append((a, kw)))
    return started


@pytest.mark.parametrize("args", [["--host", "0.0.0.0"], ["--ops-host", "0.0.0.0"], ["--host", "10.1.2.3"]])
def test_local_dev_refuses_a_public_bind(monkeypatch: pytest.MonkeyPatch, args: list[str]) -> None:
    started = _never_serve(monkeypatch)
    res = CliRunner().invoke(app, ["serve", *args], env={"THAW_SERVE__AUTH__MODE": "local-dev"})
    assert res.exit_code == 2, res.output
    assert "local-dev turns authentication off; refusing to bind" in res.output
    assert started == []


def test_local_dev_on_loopback_warns_loudly(monkeypatch: pytest.MonkeyPatch,
                                            caplog: pytest.LogCaptureFixture) -> None:
    started = _never_serve(monkeypatch)
    res = CliRunner().invoke(app, ["serve", "--port", "0", "--ops-port", "0"],
                             env={"THAW_SERVE__AUTH__MODE": "local-dev"})
    assert res.exit_code == 0, res.output
    assert len(started) == 1
    (_, kw), = started  # type: ignore[misc]
    assert kw == {"host": "127.0.0.1", "port": 0, "ops_host": "127.0.0.1", "ops_port": 0, "log_level": "info"}
    assert "AUTHENTICATION IS OFF" in caplog.text


def test_auth_on_with_nothing_configured_refuses_to_start(monkeypatch: pytest.MonkeyPatch) -> None:
    started = _never_serve(monkeypatch)
    res = CliRunner().invoke(app, ["serve"])
    assert res.exit_code == 2 and "nothing to check credentials against" in res.output
    res = CliRunner().invoke(app, ["serve", "--host", "0.0.0.0"], env={"THAW_SERVE__AUTH__JWT_SECRET": JWT_SECRET})
    assert res.exit_code == 0, res.output  # with a secret, any address
    assert len(started) == 1


def test_serve_token_mints_a_token_the_api_accepts() -> None:
    env = {"THAW_SERVE__AUTH__JWT_SECRET": JWT_SECRET, "THAW_SERVE__AUTH__JWT_AUDIENCE": "thaw-api"}
    res = CliRunner().invoke(app, ["serve-token", "--sub", "u1", "--ttl", "60"], env=env)
    assert res.exit_code == 0, res.output
    token = res.output.strip()
    admin = CliRunner().invoke(app, ["serve-token", "--sub", "qa", "--scope", "admin"], env=env).output.strip()
    os.environ.update(env)
    try:
        s = load_settings()
    finally:
        for k in env:
            del os.environ[k]
    with clients(create_apps(s, served=lambda: typed(FakeRecommender()))) as (c, _):
        assert _get(c, token, "u1").status_code == 200
        assert _get(c, token, "u2").status_code == 403
        assert _get(c, admin, "u2", debug="true").status_code == 200
    assert CliRunner().invoke(app, ["serve-token", "--sub", "u1"]).exit_code == 2  # no secret configured
    bad = CliRunner().invoke(app, ["serve-token", "--sub", "u1", "--scope", "root"], env=env)
    assert bad.exit_code == 2 and "unknown scope 'root'" in bad.output


def _get(c: TestClient, token: str, user_id: str, **params: str) -> object:
    return c.get("/recommend", params={"user_id": user_id, **params}, headers={"Authorization": f"Bearer {token}"})


def test_serve_key_prints_a_key_and_only_its_digest_for_the_settings() -> None:
    res = CliRunner().invoke(app, ["serve-key", "--name", "web", "--scope", "recommend"])
    assert res.exit_code == 0, res.output
    lines = res.output.strip().splitlines()
    key = lines[0].removeprefix("key: ")
    entry = json.loads(lines[1].split(": ", 1)[1])
    assert key.startswith("thaw_") and len(key) > 40 and key not in lines[1]
    cfg = ApiKey.model_validate(entry)
    s = load_settings(serve={"auth": {"api_keys": [cfg.model_dump()]}})
    with clients(create_apps(s, served=lambda: typed(FakeRecommender()))) as (c, _):
        assert c.get("/recommend", params={"user_id": "any"}, headers={"X-API-Key": key}).status_code == 200
        assert c.get("/recommend", params={"user_id": "any"}, headers={"X-API-Key": key[:-1]}).status_code == 401
