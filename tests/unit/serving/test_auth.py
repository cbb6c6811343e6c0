"""Authentication and authorization of the public API: every credential path, every refusal, nothing leaked.

Real tokens (PyJWT, keys made with ``cryptography``), real API keys and digests, the real app over an in-memory
recommender; no credential is ever mocked.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi.testclient import TestClient
from pydantic import ValidationError

from infra.settings import ApiKey, AuthSettings, Settings
from serving import auth as auth_mod
from serving.api import create_apps
from serving.auth import (
    LOCAL_DEV,
    AuthConfigError,
    Principal,
    authorize,
    bind_refusal,
    config_problem,
    is_loopback,
    key_digest,
    mint_token,
    token_scopes,
)
from tests.unit.serving.helpers import JWT_SECRET, FakeRecommender, clients, settings, typed

SERVICE_KEY = "thaw_service-key-for-the-tests-0123456789"
ADMIN_KEY = "thaw_admin-key-for-the-tests-9876543210"
NO_SCOPE_KEY = "thaw_no-scope-key-for-the-tests-000000"
KEYS = [{"name": "web", "sha256": key_digest(SERVICE_KEY), "scopes": ["recommend"]},
        {"name": "qa", "sha256": key_digest(ADMIN_KEY), "scopes": ["admin"]},
        {"name": "none", "sha256": key_digest(NO_SCOPE_KEY), "scopes": []}]


def _rsa() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _pem(private: Any) -> bytes:
    return bytes(private.public_key().public_bytes(serialization.Encoding.PEM,
                                                   serialization.PublicFormat.SubjectPublicKeyInfo))


def _claims(sub: str = "u1", ttl: float = 600, **extra: Any) -> dict[str, Any]:
    now = int(time.time())
    return {"sub": sub, "iat": now, "exp": now + int(ttl), **extra}


def _hs(claims: dict[str, Any], secret: str = JWT_SECRET, headers: dict[str, Any] | None = None) -> str:
    return jwt.encode(claims, secret, algorithm="HS256", headers=headers)


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def rec() -> FakeRecommender:
    return FakeRecommender()


@pytest.fixture
def api(rec: FakeRecommender) -> Iterator[tuple[TestClient, TestClient]]:
    """The app with an HS256 secret and three API keys."""
    apps = create_apps(settings({"jwt_secret": JWT_SECRET, "api_keys": KEYS}), served=lambda: typed(rec))
    with clients(apps) as pair:
        yield pair


# ------------------------------------------------------------------------------------------------ 401
@pytest.mark.parametrize("path", ["/recommend?user_id=u1", "/ab", "/ab/u1"])
def test_no_credential_is_401_with_a_bearer_challenge(api: tuple[TestClient, TestClient], path: str,
                                                      rec: FakeRecommender) -> None:
    c, ops = api
    r = c.get(path)
    assert r.status_code == 401, r.text
    assert r.headers["www-authenticate"] == 'Bearer realm="thaw"'
    assert r.json() == {"detail": "credentials needed: Authorization: Bearer <JWT>, or X-API-Key"}
    assert rec.calls == 0  # refused before the recommender
    assert 'thaw_api_auth_failures_total{reason="missing"}' in ops.get("/metrics").text


@pytest.mark.parametrize(("token", "detail"), [
    ("not-a-jwt", "malformed token"),
    (_hs(_claims(), secret="another-secret-of-at-least-32-characters"), "invalid token (InvalidSignatureError)"),
    (_hs(_claims(ttl=-120)), "token expired"),
    (_hs(_claims(nbf=int(time.time()) + 600)), "token not valid yet (nbf or iat in the future)"),
    (_hs(_claims(iat=int(time.time()) + 600)), "token not valid yet (nbf or iat in the future)"),
    (_hs({"sub": "u1"}), "token has no exp claim"),
    (_hs({"exp": int(time.time()) + 60}), "token has no sub claim"),
    (_hs(_claims(sub="")), "token sub must be a user id of 1-128 characters"),
    (_hs(_claims(aud="some-other-api")), "token audience does not name this API"),  # none configured here
    (jwt.encode(_claims(), None, algorithm="none"), "token algorithm not accepted (HS256, RS256, ES256 only)"),
    (jwt.encode(_claims(), _rsa(), algorithm="RS256"), "no RS256 key verifies this token"),
], ids=["malformed", "bad-signature", "expired", "nbf-future", "iat-future", "no-exp", "no-sub", "empty-sub",
        "unexpected-aud", "alg-none", "rs256-unconfigured"])
def test_a_bad_token_is_401_invalid_token(api: tuple[TestClient, TestClient], token: str, detail: str) -> None:
    c, ops = api
    r = c.get("/recommend", params={"user_id": "u1"}, headers=_bearer(token))
    assert r.status_code == 401, r.text
    assert r.json() == {"detail": detail}
    challenge = r.headers["www-authenticate"]
    assert challenge.startswith('Bearer realm="thaw", error="invalid_token"'), challenge
    assert token not in r.text and token not in challenge
    reason = "expired" if detail == "token expired" else "invalid_token"
    assert f'thaw_api_auth_failures_total{{reason="{reason}"}} 1.0' in ops.get("/metrics").text


def test_expiry_allows_the_configured_leeway(api: tuple[TestClient, TestClient]) -> None:
    c, _ = api
    r = c.get("/recommend", params={"user_id": "u1"}, headers=_bearer(_hs(_claims(ttl=-5))))  # leeway 30 s
    assert r.status_code == 200, r.text


def test_an_unknown_api_key_and_two_credentials_are_401(api: tuple[TestClient, TestClient]) -> None:
    c, _ = api
    r = c.get("/recommend", params={"user_id": "u1"}, headers={"X-API-Key": SERVICE_KEY + "x"})
    assert (r.status_code, r.json()) == (401, {"detail": "unknown API key"})
    assert r.headers["www-authenticate"].startswith("Bearer ")
    both = {**_bearer(_hs(_claims())), "X-API-Key": SERVICE_KEY}
    r = c.get("/recommend", params={"user_id": "u1"}, headers=both)
    assert r.status_code == 401 and "not both" in r.json()["detail"]


# ------------------------------------------------------------------------------------------------ 403 / 200
def test_a_user_token_asks_only_for_its_own_user(api: tuple[TestClient, TestClient]) -> None:
    c, ops = api
    mine = _bearer(_hs(_claims(sub="u1")))
    r = c.get("/recommend", params={"user_id": "u1", "k": 1}, headers=mine)
    assert r.status_code == 200 and r.json()["user_id"] == "u1"
    assert c.get("/ab/u1", headers=mine).status_code == 200
    for r in (c.get("/recommend", params={"user_id": "u2"}, headers=mine), c.get("/ab/u2", headers=mine)):
        assert r.status_code == 403, r.text
        assert r.json() == {"detail": "a user token may only ask for its own user_id (its sub)"}
    r = c.get("/ab", headers=mine)  # the split is for services
    assert r.status_code == 403
    assert r.headers["www-authenticate"].endswith('error="insufficient_scope", error_description="this endpoint '
                                                  'needs the recommend scope", scope="recommend"')
    text = ops.get("/metrics").text
    assert 'thaw_api_auth_failures_total{reason="other_user"} 2.0' in text
    assert 'thaw_api_auth_failures_total{reason="insufficient_scope"} 1.0' in text


@pytest.mark.parametrize("params", [{"debug": "true"}, {"variant": "recall"}, {"variant": "nope"}])
def test_debug_and_variant_need_the_admin_scope(api: tuple[TestClient, TestClient], rec: FakeRecommender,
                                                params: dict[str, str]) -> None:
    c, _ = api
    for headers in (_bearer(_hs(_claims(sub="u1"))), _bearer(_hs(_claims(sub="u1", scope="recommend"))),
                    {"X-API-Key": SERVICE_KEY}):
        r = c.get("/recommend", params={"user_id": "u1", **params}, headers=headers)
        assert r.status_code == 403, r.text
        assert r.json() == {"detail": "debug and variant need the admin scope"}
        assert 'scope="admin"' in r.headers["www-authenticate"]
        assert "gender" not in r.text
    assert rec.calls == 0


def test_the_admin_scope_gets_debug_and_variant(api: tuple[TestClient, TestClient]) -> None:
    c, _ = api
    for headers in (_bearer(_hs(_claims(sub="qa-person", scope="admin"))), {"X-API-Key": ADMIN_KEY}):
        r = c.get("/recommend", params={"user_id": "u7", "debug": "true", "variant": "recall"}, headers=headers)
        assert r.status_code == 200, r.text
        assert r.json()["ab"]["variant"] == "recall" and r.json()["debug"]["user"]["profile"] == {"gender": "f"}
        assert c.get("/ab", headers=headers).status_code == 200


@pytest.mark.parametrize("scope_claim", [{"scope": "recommend"}, {"scp": ["recommend"]}, {"scope": "x recommend"}])
def test_the_recommend_scope_asks_for_any_user(api: tuple[TestClient, TestClient],
                                               scope_claim: dict[str, Any]) -> None:
    c, _ = api
    headers = _bearer(_hs(_claims(sub="svc", **scope_claim)))
    assert c.get("/recommend", params={"user_id": "u2"}, headers=headers).status_code == 200
    assert c.get("/ab", headers=headers).status_code == 200


def test_api_keys_carry_their_scopes(api: tuple[TestClient, TestClient]) -> None:
    c, _ = api
    svc = {"X-API-Key": SERVICE_KEY}
    assert c.get("/recommend", params={"user_id": "anyone"}, headers=svc).status_code == 200
    assert c.get("/ab", headers=svc).status_code == 200 and c.get("/ab/anyone", headers=svc).status_code == 200
    none = {"X-API-Key": NO_SCOPE_KEY}  # a key names a service, never a user: without a scope it may ask nothing
    assert c.get("/recommend", params={"user_id": "none"}, headers=none).status_code == 403


def test_health_needs_no_credential_and_ops_routes_are_not_public(api: tuple[TestClient, TestClient]) -> None:
    c, ops = api
    assert c.get("/healthz").status_code == 200 and ops.get("/healthz").status_code == 200
    for path in ("/metrics", "/readyz", "/docs", "/openapi.json"):
        assert c.get(path, headers={"X-API-Key": ADMIN_KEY}).status_code == 404, path
    assert ops.get("/readyz").status_code == 200
    assert ops.get("/recommend", params={"user_id": "u1"}).status_code == 404


# ------------------------------------------------------------------------------------------------ key kinds
def test_rs256_with_a_public_key_file(tmp_path: Path, rec: FakeRecommender) -> None:
    private = _rsa()
    pem = tmp_path / "pub.pem"
    pem.write_bytes(_pem(private))
    s = settings({"jwt_public_key": str(pem), "jwt_issuer": "https://idp.example", "jwt_audience": "thaw-api"})
    good = _claims(sub="u1", iss="https://idp.example", aud="thaw-api")
    with clients(create_apps(s, served=lambda: typed(rec))) as (c, _):
        ok = c.get("/recommend", params={"user_id": "u1"}, headers=_bearer(jwt.encode(good, private, "RS256")))
        assert ok.status_code == 200, ok.text
        cases = {
            "token audience does not name this API": jwt.encode({**good, "aud": "other"}, private, "RS256"),
            "token has no aud claim": jwt.encode({k: v for k, v in good.items() if k != "aud"}, private, "RS256"),
            "token issuer is not the configured one": jwt.encode({**good, "iss": "https://evil"}, private, "RS256"),
            "invalid token (InvalidSignatureError)": jwt.encode(good, _rsa(), "RS256"),
            # key confusion: the public key's PEM used as an HMAC secret must not verify
            "HS256 tokens are not accepted here": _forged_hs256(good, pem.read_bytes()),
        }
        for detail, token in cases.items():
            r = c.get("/recommend", params={"user_id": "u1"}, headers=_bearer(token))
            assert (r.status_code, r.json()) == (401, {"detail": detail})


def _forged_hs256(claims: dict[str, Any], secret: bytes) -> str:
    import base64
    import hashlib
    import hmac

    def b64(b: bytes) -> bytes:
        return base64.urlsafe_b64encode(b).rstrip(b"=")

    signing = b64(json.dumps({"alg": "HS256", "typ": "JWT"}).encode()) + b"." + b64(json.dumps(claims).encode())
    return (signing + b"." + b64(hmac.new(secret, signing, hashlib.sha256).digest())).decode()


def _jwks(*keys: tuple[str, Any]) -> str:
    out = []
    for kid, private in keys:
        alg = jwt.algorithms.RSAAlgorithm if isinstance(private, rsa.RSAPrivateKey) else jwt.algorithms.ECAlgorithm
        jwk = json.loads(alg.to_jwk(private.public_key()))
        out.append({**jwk, "kid": kid, "use": "sig"})
    return json.dumps({"keys": out})


def test_es256_and_rs256_from_a_jwks_file_picked_by_kid_and_reread_when_it_changes(
        tmp_path: Path, rec: FakeRecommender, monkeypatch: pytest.MonkeyPatch) -> None:
    ec_key, rsa_key, rotated = ec.generate_private_key(ec.SECP256R1()), _rsa(), ec.generate_private_key(ec.SECP256R1())
    path = tmp_path / "jwks.json"
    path.write_text(_jwks(("ec1", ec_key), ("rsa1", rsa_key)))
    s = settings({"jwt_jwks": str(path), "jwt_audience": "thaw-api"})
    claims = _claims(sub="u1", aud="thaw-api")
    with clients(create_apps(s, served=lambda: typed(rec))) as (c, _):
        def get(token: str) -> int:
            return c.get("/recommend", params={"user_id": "u1"}, headers=_bearer(token)).status_code

        assert get(jwt.encode(claims, ec_key, "ES256", headers={"kid": "ec1"})) == 200
        assert get(jwt.encode(claims, rsa_key, "RS256", headers={"kid": "rsa1"})) == 200
        assert get(jwt.encode(claims, ec_key, "ES256")) == 200  # no kid: the one ES256 key
        assert get(jwt.encode(claims, ec_key, "ES256", headers={"kid": "rsa1"})) == 401  # kid of another kind
        assert get(jwt.encode(claims, rotated, "ES256", headers={"kid": "ec2"})) == 401
        monkeypatch.setattr(auth_mod, "JWKS_CHECK_S", 0.0)
        time.sleep(0.01)
        path.write_text(_jwks(("ec2", rotated)))  # the provider rotated its keys
        assert get(jwt.encode(claims, rotated, "ES256", headers={"kid": "ec2"})) == 200
        assert get(jwt.encode(claims, ec_key, "ES256", headers={"kid": "ec1"})) == 401


def test_a_public_key_and_a_jwks_together(tmp_path: Path, rec: FakeRecommender) -> None:
    pinned, provider = _rsa(), _rsa()
    (tmp_path / "pub.pem").write_bytes(_pem(pinned))
    (tmp_path / "jwks.json").write_text(_jwks(("p1", provider)))
    s = settings({"jwt_public_key": str(tmp_path / "pub.pem"), "jwt_jwks": str(tmp_path / "jwks.json"),
                  "jwt_audience": "thaw-api"})
    claims = _claims(sub="u1", aud="thaw-api")
    with clients(create_apps(s, served=lambda: typed(rec))) as (c, _):
        def get(token: str) -> int:
            return c.get("/recommend", params={"user_id": "u1"}, headers=_bearer(token)).status_code

        assert get(jwt.encode(claims, pinned, "RS256")) == 200  # no kid: the pinned key
        assert get(jwt.encode(claims, provider, "RS256", headers={"kid": "p1"})) == 200  # a kid: the JWKS
        assert get(jwt.encode(claims, provider, "RS256")) == 401
        assert get(jwt.encode(claims, pinned, "RS256", headers={"kid": "p1"})) == 401


@pytest.mark.parametrize("bad", [{"jwt_public_key": "/no/such/key.pem"}, {"jwt_jwks": "/no/such/jwks.json"}])
def test_an_unreadable_key_file_refuses_to_start(bad: dict[str, str]) -> None:
    with pytest.raises(AuthConfigError, match="THAW_SERVE__AUTH__JWT_"):
        create_apps(settings(bad), served=lambda: typed(FakeRecommender()))


# ------------------------------------------------------------------------------------------------ settings
def test_auth_is_on_by_default_and_refuses_to_start_with_nothing_configured() -> None:
    assert Settings().serve.auth.mode == "on"
    with pytest.raises(AuthConfigError, match="nothing to check credentials against"):
        create_apps(Settings(), served=lambda: typed(FakeRecommender()))


def test_local_dev_turns_it_off(rec: FakeRecommender) -> None:
    with clients(create_apps(settings(), served=lambda: typed(rec))) as (c, _):
        r = c.get("/recommend", params={"user_id": "u9", "debug": "true", "variant": "recall"})
        assert r.status_code == 200, r.text


def test_api_keys_are_configured_as_digests_only() -> None:
    with pytest.raises(ValidationError):
        ApiKey.model_validate({"name": "web", "sha256": SERVICE_KEY})  # a plaintext key is not a digest
    with pytest.raises(ValidationError):
        ApiKey.model_validate({"name": "web", "key": SERVICE_KEY, "sha256": key_digest(SERVICE_KEY)})
    with pytest.raises(ValidationError):
        AuthSettings(jwt_secret="short")  # type: ignore[arg-type]
    assert "two API keys share a name" in str(config_problem(AuthSettings.model_validate(
        {"api_keys": [KEYS[0], {**KEYS[1], "name": "web"}]})))


def test_secrets_stay_out_of_the_settings_repr_and_the_logs(api: tuple[TestClient, TestClient],
                                                            caplog: pytest.LogCaptureFixture) -> None:
    s = settings({"jwt_secret": JWT_SECRET, "api_keys": KEYS})
    assert JWT_SECRET not in repr(s) and JWT_SECRET not in str(s.model_dump())
    c, _ = api
    good, bad = _hs(_claims(sub="u1")), _hs(_claims(sub="u1"), secret="x" * 40)
    with caplog.at_level(logging.DEBUG):
        for headers in (_bearer(good), _bearer(bad), {"X-API-Key": SERVICE_KEY}, {"X-API-Key": "thaw_wrong"},
                        _bearer(_hs(_claims(sub="u1", ttl=-100)))):
            c.get("/recommend", params={"user_id": "u2"}, headers=headers)
    logged = caplog.text
    assert "401 on /recommend" in logged and "403 on /recommend" in logged
    for secret in (good, bad, SERVICE_KEY, "thaw_wrong", JWT_SECRET, good.split(".")[2]):
        assert secret not in logged


def test_namespaced_settings_keep_the_auth_section() -> None:
    s = settings({"jwt_secret": JWT_SECRET, "api_keys": KEYS}).namespaced("t1")
    assert s.serve.auth.jwt_secret is not None and s.serve.auth.jwt_secret.get_secret_value() == JWT_SECRET
    assert [k.name for k in s.serve.auth.api_keys] == ["web", "qa", "none"]


# ------------------------------------------------------------------------------------------------ pure decisions
USER = Principal("jwt", "u1", frozenset())
SERVICE = Principal("api_key", "web", frozenset({"recommend"}))
ADMIN = Principal("api_key", "qa", frozenset({"admin"}))


@pytest.mark.parametrize(("p", "user_id", "admin", "refusal"), [
    (USER, "u1", False, None), (USER, "u2", False, "other_user"), (USER, None, False, "insufficient_scope"),
    (USER, "u1", True, "insufficient_scope"), (SERVICE, "u2", False, None), (SERVICE, None, False, None),
    (SERVICE, "u2", True, "insufficient_scope"), (ADMIN, "u2", True, None), (ADMIN, None, False, None),
    (LOCAL_DEV, "u2", True, None), (Principal("api_key", "u1", frozenset()), "u1", False, "other_user"),
])
def test_authorize(p: Principal, user_id: str | None, admin: bool, refusal: str | None) -> None:
    out = authorize(p, user_id=user_id, admin=admin)
    assert (out.reason if out is not None else None) == refusal


def test_token_scopes_keep_the_known_ones() -> None:
    assert token_scopes({"scope": "openid recommend admin"}) == {"recommend", "admin"}
    assert token_scopes({"scp": ["admin", 3, "email"]}) == {"admin"}
    assert token_scopes({"scope": ["recommend"]}) == {"recommend"} and token_scopes({}) == set()


@pytest.mark.parametrize(("host", "loopback"), [("127.0.0.1", True), ("127.0.0.2", True), ("::1", True),
                                                ("[::1]", True), ("localhost", True), ("0.0.0.0", False),
                                                ("::", False), ("10.0.0.5", False), ("api.example.com", False),
                                                ("", False)])
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_local_dev_refuses_a_public_bind() -> None:
    dev = AuthSettings(mode="local-dev")
    assert bind_refusal(dev, ["127.0.0.1", "::1"]) is None
    refusal = bind_refusal(dev, ["0.0.0.0", "127.0.0.1"])
    assert refusal is not None and "refusing to bind 0.0.0.0" in refusal
    assert bind_refusal(AuthSettings(jwt_secret=JWT_SECRET), ["0.0.0.0"]) is None  # type: ignore[arg-type]


def test_minted_tokens_verify(rec: FakeRecommender) -> None:
    s = settings({"jwt_secret": JWT_SECRET, "jwt_issuer": "thaw", "jwt_audience": "thaw-api"})
    token = mint_token(JWT_SECRET, "u1", scopes=["recommend"], issuer="thaw", audience="thaw-api")
    claims = jwt.decode(token, JWT_SECRET, algorithms=["HS256"], audience="thaw-api")
    assert claims["sub"] == "u1" and claims["scope"] == "recommend" and claims["exp"] - claims["iat"] == 3600
    with clients(create_apps(s, served=lambda: typed(rec))) as (c, _):
        assert c.get("/recommend", params={"user_id": "u5"}, headers=_bearer(token)).status_code == 200
        unaud = mint_token(JWT_SECRET, "u1", issuer="thaw")
        assert c.get("/recommend", params={"user_id": "u1"}, headers=_bearer(unaud)).status_code == 401
