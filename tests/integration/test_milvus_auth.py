"""The items index against a Milvus that requires a token, as a cluster with authentication does: a second Milvus
2.3.5 standalone of this module's own (its own home under pytest's tmp dir, its own free ports, the stack's start
with ``common.security.authorizationEnabled: true`` in its config), stopped at the end. A right token works end to
end; no token or a wrong one is refused (pymilvus reports it as a failed connection); the token is in no error
message and no log line."""

from __future__ import annotations

import logging
import random
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from pydantic import SecretStr

from indexing.milvus_items import ItemIndex, ItemRow
from infra.settings import MilvusSettings, Settings

pytestmark = pytest.mark.integration

DIM = 8
ROOT_TOKEN = "root:Milvus"  # Milvus' initial root user and password


def _free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind(("0.0.0.0", port))  # noqa: S104 - Milvus binds every interface: the port must be free there
        except OSError:
            return False
    return True


def _free_ports(n: int) -> int:
    """The first of ``n`` consecutive free ports (Milvus' internal ports are consecutive)."""
    rng = random.Random()
    for _ in range(200):
        base = rng.randrange(21000, 59000)
        if all(_free(base + i) for i in range(n)):
            return base
    raise RuntimeError("no run of free ports found")


@pytest.fixture(scope="module")
def auth_milvus(stack_settings: Settings, tmp_path_factory: pytest.TempPathFactory) -> Iterator[MilvusSettings]:
    from infra.stack import milvus as stack_milvus
    from infra.stack.state import pid_alive, spawn, terminate

    home: Path = tmp_path_factory.mktemp("milvus-auth")
    base = _free_ports(12)  # the proxy, then etcd client/peer, metrics and the 8 component ports
    uri = f"http://127.0.0.1:{base}"
    d = stack_settings.model_dump()
    d["stack"].update(home=home, milvus_port=base, milvus_port_base=base + 1)
    d["milvus"].update(uri=uri)
    settings = type(stack_settings).model_validate(d)

    def spawn_with_auth(cmd: list[str], out_log: Path, marker: str, cwd: Path, env: dict[str, str] | None = None):
        config = home / "milvus" / "configs" / "milvus.yaml"
        text, n = re.subn(r"(?m)^(\s+authorizationEnabled:\s*)false", r"\g<1>true", config.read_text())
        assert n == 1, "the milvus package's config has no common.security.authorizationEnabled"
        config.write_text(text)
        return spawn(cmd, out_log, marker, cwd, env)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(stack_milvus, "spawn", spawn_with_auth)
        launch = stack_milvus.start_milvus(settings, home)
    try:
        ok = MilvusSettings(uri=uri, token=SecretStr(ROOT_TOKEN), connect_timeout_s=3.0)
        deadline = time.monotonic() + 240
        detail = ""
        while time.monotonic() < deadline:
            if not pid_alive(launch.pid):
                pytest.fail(f"the authenticated Milvus exited:\n{launch.log.read_text()[-2000:]}")
            up, detail = stack_milvus.probe_milvus(settings.model_copy(update={"milvus": ok}), timeout_s=3.0)
            if up:
                break
            time.sleep(1.0)
        else:
            pytest.fail(f"the authenticated Milvus did not answer within 240 s: {detail}")
        yield ok
    finally:
        terminate(launch.pid, 30.0, time.monotonic)


def _rows(n: int) -> tuple[np.ndarray, list[ItemRow]]:
    rng = np.random.default_rng(2)
    v = rng.normal(size=(n, DIM)).astype(np.float32)
    v /= np.linalg.norm(v, axis=1, keepdims=True)
    return v, [ItemRow(f"i{i}", v[i], ("track", "moment")[i % 2], "c", 1_000 + i, "m@1") for i in range(n)]


def test_the_index_works_with_the_right_token(auth_milvus: MilvusSettings) -> None:
    ix = ItemIndex(auth_milvus.model_copy(update={"items_collection": "thaw_auth_items"}), dim=DIM)
    try:
        assert ix.ensure() is True and ix.layout.partition_key == "kind"
        v, rows = _rows(40)
        assert ix.upsert(rows) == 40
        assert ix.count() == 40
        assert ix.search(v[3:4], 1, consistency="Strong")[0][0].item_id == "i3"
        assert {h.kind for h in ix.search(v[:1], 10, kinds=["moment"], consistency="Strong")[0]} == {"moment"}
    finally:
        ix.drop()
        ix.close()


@pytest.mark.parametrize("token", [None, "thaw:not-the-password-42"], ids=["no-token", "wrong-token"])
def test_no_token_or_a_wrong_one_is_refused_and_never_shown(auth_milvus: MilvusSettings, token: str | None,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    from pymilvus.exceptions import MilvusException

    caplog.set_level(logging.DEBUG)
    settings = auth_milvus.model_copy(update={"token": SecretStr(token) if token else None,
                                              "items_collection": "thaw_auth_refused"})
    with pytest.raises(MilvusException) as err:
        ix = ItemIndex(settings, dim=DIM)  # pymilvus checks the credentials when it connects
        try:
            ix.ensure()
        finally:
            ix.close()
    text = f"{err.value!r} {err.value}"
    # pymilvus reports refused credentials at connect time as a failed connection (measured on 2.3.5)
    assert "illegal connection params" in text or re.search(r"auth|credential|permission", text, re.I), text
    # ... while the server is up: the right token connects at once
    up = ItemIndex(auth_milvus, dim=DIM, collection="thaw_auth_refused")
    assert up.exists() is False
    up.close()
    if token:
        assert "not-the-password" not in text and "not-the-password" not in caplog.text
    assert ROOT_TOKEN not in caplog.text
