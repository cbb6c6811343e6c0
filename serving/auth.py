"""Who is calling the API and what they may ask: JWT bearer tokens, API keys, scopes (``AuthSettings``).

Two kinds of credentials (the FastAPI ``Security`` dependency that reads them is :func:`serving.deps.get_principal`):

* ``Authorization: Bearer <JWT>``: HS256 signed with ``jwt_secret``, or RS256 / ES256 verified with
  ``jwt_public_key`` (PEM) or a key of the ``jwt_jwks`` file (picked by ``kid``). The token's own ``alg`` picks
  the key *kind* (an HS256 token is never checked against a public key, and ``none`` is refused); ``exp`` and
  ``sub`` are required, ``nbf`` and ``iat`` are checked when present, all with ``jwt_leeway_s``; ``iss`` and
  ``aud`` when configured. ``sub`` is the caller's user id; the ``scope`` (space separated) or ``scp`` claim may
  grant scopes.
* ``X-API-Key: <key>``: a service caller. Keys are configured as SHA-256 digests only; the presented key's digest
  is compared with every configured one in constant time.

Scopes: ``recommend`` (ask for any user, read the split), ``admin`` (``debug=true`` and ``variant=``; implies
``recommend``). A caller without ``recommend`` may ask only for its own ``sub``. Decisions are the pure functions
:func:`authorize`, :func:`config_problem` and :func:`bind_refusal`; :class:`Authenticator` verifies credentials.
Messages and logs never carry a token or a key.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from contracts.events import _check_id
from infra.settings import AuthSettings

log = logging.getLogger("thaw.api.auth")

SCOPE_RECOMMEND = "recommend"
SCOPE_ADMIN = "admin"
SCOPES = (SCOPE_RECOMMEND, SCOPE_ADMIN)
ASYMMETRIC = ("RS256", "ES256")
JWKS_CHECK_S = 10.0  # how often the JWKS file's modification time is looked at
MAX_TOKEN_CHARS = 8192

LOCAL_DEV_WARNING = ("AUTHENTICATION IS OFF (THAW_SERVE__AUTH__MODE=local-dev): every caller is an admin and may "
                     "read any user's recommendations and profile. Local development only; never expose this port.")


@dataclass(frozen=True)
class Principal:
    """An authenticated caller.

    Attributes:
        kind: ``jwt`` (a bearer token), ``api_key`` (a service) or ``local-dev`` (authentication off).
        subject: The token's ``sub`` (a user id) or the API key's name.
        scopes: What it was granted (:data:`SCOPES`).
    """

    kind: Literal["jwt", "api_key", "local-dev"]
    subject: str
    scopes: frozenset[str]

    def may(self, scope: str) -> bool:
        """Whether the caller holds ``scope`` (``admin`` implies ``recommend``)."""
        return scope in self.scopes or (scope == SCOPE_RECOMMEND and SCOPE_ADMIN in self.scopes)


LOCAL_DEV = Principal("local-dev", "local-dev", frozenset(SCOPES))


class AuthError(Exception):
    """No usable credentials (401, ``WWW-Authenticate: Bearer``).

    Args:
        reason: A short code for the metrics and the ``error`` of ``WWW-Authenticate``: ``missing``,
            ``ambiguous``, ``invalid_token``, ``expired``, ``invalid_key``.
        message: What the body says (never the credential).
    """

    def __init__(self, reason: str, message: str) -> None:
        self.reason = reason
        super().__init__(message)


class ForbiddenError(Exception):
    """Authenticated, but not allowed this request (403).

    Args:
        reason: ``insufficient_scope`` or ``other_user``.
        message: What the body says.
        scope: The scope that was missing (``insufficient_scope``).
    """

    def __init__(self, reason: str, message: str, scope: str | None = None) -> None:
        self.reason = reason
        self.scope = scope
        super().__init__(message)


class AuthConfigError(ValueError):
    """The auth settings cannot work (nothing configured, an unreadable key file): the API does not start."""


# ------------------------------------------------------------------------------------------------ decisions
def authorize(p: Principal, *, user_id: str | None, admin: bool) -> ForbiddenError | None:
    """Whether ``p`` may make a request: None when it may, else the refusal.

    Args:
        p: The caller.
        user_id: The user the request is about (None: about no user, e.g. the A/B split, which needs
            ``recommend``).
        admin: The request asks for an admin-only thing (``debug=true``, a forced ``variant``).
    """
    if admin and not p.may(SCOPE_ADMIN):
        return ForbiddenError("insufficient_scope", "debug and variant need the admin scope", SCOPE_ADMIN)
    if p.may(SCOPE_RECOMMEND):
        return None
    if user_id is None:
        return ForbiddenError("insufficient_scope", "this endpoint needs the recommend scope", SCOPE_RECOMMEND)
    if p.kind == "jwt" and p.subject == user_id:
        return None
    return ForbiddenError("other_user", "a user token may only ask for its own user_id (its sub)")


def config_problem(auth: AuthSettings) -> str | None:
    """Why ``auth`` cannot authenticate anyone (None when it can, or when it is off)."""
    if auth.mode == "local-dev":
        return None
    if not (auth.jwt_secret or auth.jwt_public_key or auth.jwt_jwks or auth.api_keys):
        return ("authentication is on but nothing to check credentials against is configured: set "
                "THAW_SERVE__AUTH__JWT_SECRET, __JWT_PUBLIC_KEY, __JWT_JWKS or __API_KEYS (docs/serving.md), or "
                "THAW_SERVE__AUTH__MODE=local-dev on a development machine")
    names = [k.name for k in auth.api_keys]
    if len(set(names)) != len(names):
        return "two API keys share a name (THAW_SERVE__AUTH__API_KEYS)"
    return None


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on loopback only (``localhost``, 127.0.0.0/8, ::1)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind_refusal(auth: AuthSettings, hosts: Iterable[str]) -> str | None:
    """Why the API must not bind ``hosts`` with these settings (None: it may): with authentication off, only
    loopback."""
    if auth.mode != "local-dev":
        return None
    public = [h for h in hosts if not is_loopback(h)]
    if public:
        return (f"THAW_SERVE__AUTH__MODE=local-dev turns authentication off; refusing to bind {', '.join(public)} "
                "(loopback only: 127.0.0.1, ::1, localhost). Configure credentials to serve other hosts")
    return None


def token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    """The known scopes a token grants: its ``scope`` (space separated) or ``scp`` (a list or a string) claim."""
    raw: list[str] = []
    for name in ("scope", "scp"):
        v = claims.get(name)
        if isinstance(v, str):
            raw += v.split()
        elif isinstance(v, list):
            raw += [s for s in v if isinstance(s, str)]
    return frozenset(s for s in raw if s in SCOPES)


def _as_user_id(sub: str) -> str:
    """A token's ``sub`` in the form the API compares with a request's ``user_id``: the wire contract's NFC form
    when it is a valid id (one user, however the issuer typed the name); otherwise as it came (it then matches no
    request's ``user_id``, which the routes check the same way)."""
    try:
        return _check_id(sub)
    except ValueError:
        return sub


def key_digest(key: str) -> str:
    """The SHA-256 hex digest an API key is configured as."""
    return hashlib.sha256(key.encode()).hexdigest()


def new_api_key() -> str:
    """A fresh random API key (256 bits)."""
    return "thaw_" + secrets.token_urlsafe(32)


def mint_token(secret: str, sub: str, *, scopes: Iterable[str] = (), ttl_s: float = 3600.0,
               issuer: str | None = None, audience: str | None = None, now: float | None = None) -> str:
    """An HS256 JWT for ``sub`` (what ``thaw serve-token`` prints; the tests mint theirs with it too)."""
    import jwt

    t = int(time.time() if now is None else now)
    claims: dict[str, Any] = {"sub": sub, "iat": t, "nbf": t, "exp": t + int(ttl_s)}
    if scopes:
        claims["scope"] = " ".join(scopes)
    if issuer is not None:
        claims["iss"] = issuer
    if audience is not None:
        claims["aud"] = audience
    return jwt.encode(claims, secret, algorithm="HS256")


# ------------------------------------------------------------------------------------------------ verifying
def _public_key_alg(key: Any) -> str:
    from cryptography.hazmat.primitives.asymmetric import ec, rsa

    if isinstance(key, rsa.RSAPublicKey):
        return "RS256"
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name == "secp256r1":
        return "ES256"
    raise AuthConfigError("THAW_SERVE__AUTH__JWT_PUBLIC_KEY: an RSA or a P-256 EC public key is needed")


class _Jwks:
    """The keys of a JWKS file, read again when the file changes (checked at most every :data:`JWKS_CHECK_S`)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        self._checked = 0.0
        self._mtime: float | None = None
        self._keys: list[Any] = []
        self._load(strict=True)

    def _load(self, strict: bool) -> None:
        import jwt

        try:
            mtime = os.stat(self.path).st_mtime
            if mtime == self._mtime:
                return
            keys = [k for k in jwt.PyJWKSet.from_json(self.path.read_text()).keys
                    if k.algorithm_name in ASYMMETRIC and k.public_key_use in (None, "sig")]
        except (OSError, ValueError, jwt.PyJWKSetError, jwt.PyJWKError) as exc:
            if strict:
                raise AuthConfigError(f"THAW_SERVE__AUTH__JWT_JWKS {self.path}: {type(exc).__name__}") from exc
            log.warning("JWKS %s unreadable (%s); keeping the keys read before", self.path, type(exc).__name__)
            return
        if not keys and strict:
            raise AuthConfigError(f"THAW_SERVE__AUTH__JWT_JWKS {self.path}: no RS256 or ES256 signing key")
        self._keys, self._mtime = keys, mtime
        log.info("JWKS %s: %d signing keys", self.path, len(keys))

    def key_for(self, alg: str, kid: str | None) -> Any | None:
        now = time.monotonic()
        if now - self._checked > JWKS_CHECK_S:
            with self._lock:
                if now - self._checked > JWKS_CHECK_S:
                    self._load(strict=False)
                    self._checked = now
        usable = [k for k in self._keys if k.algorithm_name == alg]
        if kid is not None:
            usable = [k for k in usable if k.key_id == kid]
        elif len(usable) != 1:  # no kid: only an unambiguous key
            return None
        return usable[0].key if usable else None


class Authenticator:
    """Verifies bearer tokens and API keys against :class:`AuthSettings` (files are read when it is built).

    Raises:
        AuthConfigError: :func:`config_problem`, or a key file that cannot be read.
    """

    def __init__(self, auth: AuthSettings) -> None:
        problem = config_problem(auth)
        if problem is not None:
            raise AuthConfigError(problem)
        self.auth = auth
        self._secret = auth.jwt_secret.get_secret_value().encode() if auth.jwt_secret else None
        self._public: tuple[str, Any] | None = None
        if auth.jwt_public_key is not None:
            from cryptography.hazmat.primitives.serialization import load_pem_public_key

            try:
                key = load_pem_public_key(auth.jwt_public_key.read_bytes())
            except (OSError, ValueError) as exc:
                raise AuthConfigError(f"THAW_SERVE__AUTH__JWT_PUBLIC_KEY {auth.jwt_public_key}: "
                                      f"{type(exc).__name__}") from exc
            self._public = (_public_key_alg(key), key)
        self._jwks = _Jwks(auth.jwt_jwks) if auth.jwt_jwks is not None else None
        self._keys = [(bytes.fromhex(k.sha256), k) for k in auth.api_keys]
        if (self._public or self._jwks) and auth.jwt_audience is None:
            log.warning("JWTs are checked with a public key but THAW_SERVE__AUTH__JWT_AUDIENCE is not set: a token "
                        "the same issuer made for another service is accepted")

    @property
    def accepts_tokens(self) -> bool:
        return bool(self._secret or self._public or self._jwks)

    def _key(self, alg: str, kid: str | None) -> Any:
        if alg == "HS256":
            if self._secret is None:
                raise AuthError("invalid_token", "HS256 tokens are not accepted here")
            return self._secret
        if alg not in ASYMMETRIC:
            raise AuthError("invalid_token", "token algorithm not accepted (HS256, RS256, ES256 only)")
        if self._public is not None and self._public[0] == alg and (kid is None or self._jwks is None):
            return self._public[1]  # with a JWKS too, a token that names its key (kid) is checked there
        key = self._jwks.key_for(alg, kid) if self._jwks is not None else None
        if key is None:
            raise AuthError("invalid_token", f"no {alg} key verifies this token")
        return key

    def from_token(self, token: str) -> Principal:
        """The caller a bearer token names.

        Raises:
            AuthError: Malformed, not signed by a configured key, expired, not yet valid, or the wrong issuer or
                audience.
        """
        import jwt

        if not self.accepts_tokens:
            raise AuthError("invalid_token", "bearer tokens are not accepted here; send an X-API-Key")
        if len(token) > MAX_TOKEN_CHARS:
            raise AuthError("invalid_token", "token too long")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise AuthError("invalid_token", "malformed token") from None
        alg = header.get("alg")
        kid = header.get("kid")
        key = self._key(alg if isinstance(alg, str) else "", kid if isinstance(kid, str) else None)
        a = self.auth
        try:
            claims = jwt.decode(token, key, algorithms=[str(alg)], audience=a.jwt_audience, issuer=a.jwt_issuer,
                                leeway=a.jwt_leeway_s, options={"require": ["exp", "sub"]})
        except jwt.ExpiredSignatureError:
            raise AuthError("expired", "token expired") from None
        except jwt.ImmatureSignatureError:
            raise AuthError("invalid_token", "token not valid yet (nbf or iat in the future)") from None
        except jwt.InvalidAudienceError:
            raise AuthError("invalid_token", "token audience does not name this API") from None
        except jwt.InvalidIssuerError:
            raise AuthError("invalid_token", "token issuer is not the configured one") from None
        except jwt.MissingRequiredClaimError as exc:
            raise AuthError("invalid_token", f"token has no {exc.claim} claim") from None
        except jwt.PyJWTError as exc:  # a bad signature, a malformed claim
            raise AuthError("invalid_token", f"invalid token ({type(exc).__name__})") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not 1 <= len(sub) <= 128:
            raise AuthError("invalid_token", "token sub must be a user id of 1-128 characters")
        return Principal("jwt", _as_user_id(sub), token_scopes(claims))

    def from_api_key(self, key: str) -> Principal:
        """The service an API key belongs to (every configured digest is compared, in constant time each).

        Raises:
            AuthError: Not a configured key.
        """
        digest = hashlib.sha256(key.encode(errors="surrogateescape")).digest()
        found = None
        for want, entry in self._keys:
            if hmac.compare_digest(digest, want) and found is None:
                found = entry
        if found is None:
            raise AuthError("invalid_key", "unknown API key")
        return Principal("api_key", found.name, frozenset(found.scopes))


def api_key_entry(name: str, key: str, scopes: Iterable[str]) -> str:
    """The ``THAW_SERVE__AUTH__API_KEYS`` entry (JSON) of a key: its name, digest and scopes."""
    return json.dumps({"name": name, "sha256": key_digest(key), "scopes": list(scopes)})
