"""``thaw recall``, ``thaw serve``, ``thaw serve-token`` and ``thaw serve-key``: the online path, one user from the CLI
or the recommendation API, and the credentials its callers use (``docs/serving.md``)."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from thaw.commands._common import settings, setup_logging


def recall(
    user: Annotated[str, typer.Option("--user", help="user id")],
    k: int = 20,
    as_json: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Top-k items for a user from Milvus (user vector from Redis), or the fallback for a user without one."""
    from indexing.redis_state import RedisState
    from ranking.online.recall import Recaller, served_index

    s = settings()
    users = RedisState(s.redis)
    items = served_index(s.milvus, s.models.dir, users)
    items.ensure()
    res = Recaller(users, items).recall(user, k)
    if as_json:
        typer.echo(json.dumps(res.to_dict(), indent=2))
        return
    typer.echo(f"user {user}: source={res.source} space={res.space} state={res.user_state} "
               f"timings_ms={ {k: round(v, 1) for k, v in res.timings_ms.items()} }")
    for i, it in enumerate(res.items, 1):
        typer.echo(f"{i:3d}. {it.item_id:40s} {it.score:8.4f} {it.kind}")


def serve(
    host: Annotated[str | None, typer.Option(help="public bind address (default THAW_SERVE__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="public port (default THAW_SERVE__PORT)")] = None,
    ops_host: Annotated[str | None, typer.Option(help="ops bind address (default THAW_SERVE__OPS_HOST)")] = None,
    ops_port: Annotated[int | None, typer.Option(help="ops port: /metrics, /readyz, /docs (default "
                                                      "THAW_SERVE__OPS_PORT)")] = None,
    log_level: str = "info",
) -> None:
    """Run the recommendation API: /recommend, /ab on the public port; /healthz, /readyz, /metrics, /docs on the ops
    port. Callers need a JWT or an API key (THAW_SERVE__AUTH__*), unless THAW_SERVE__AUTH__MODE=local-dev."""
    import logging

    from serving.api import AuthConfigError, create_apps
    from serving.auth import LOCAL_DEV_WARNING, bind_refusal, is_loopback
    from serving.server import serve_apps

    s = settings()
    setup_logging(log_level.upper())
    h = host if host is not None else s.serve.host
    p = port if port is not None else s.serve.port
    oh = ops_host if ops_host is not None else s.serve.ops_host
    op = ops_port if ops_port is not None else s.serve.ops_port
    refused = bind_refusal(s.serve.auth, [h, oh])
    if refused is not None:
        typer.echo(f"error: {refused}", err=True)
        raise typer.Exit(2)
    try:
        apps = create_apps(s)
    except AuthConfigError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    log = logging.getLogger("thaw.api")
    if s.serve.auth.mode == "local-dev":
        log.warning("%s", LOCAL_DEV_WARNING)
    if not is_loopback(oh):
        log.warning("the ops port is bound to %s: /metrics, /readyz and /docs need no credentials; keep that "
                    "network internal", oh)
    log.info("public API on %s:%d, ops (metrics, readiness, docs) on %s:%d", h, p, oh, op)
    serve_apps(apps, host=h, port=p, ops_host=oh, ops_port=op, log_level=log_level)


def serve_token(
    sub: Annotated[str, typer.Option("--sub", help="the user id the token is for (its sub)")],
    scope: Annotated[list[str] | None, typer.Option("--scope", help="grant a scope: recommend (any user) or "
                                                    "admin (debug, variant); repeat for several")] = None,
    ttl: Annotated[float, typer.Option(min=1, help="seconds until it expires")] = 3600.0,
) -> None:
    """Print an HS256 JWT signed with THAW_SERVE__AUTH__JWT_SECRET (and its issuer and audience, when set)."""
    from serving.auth import SCOPES, mint_token

    auth = settings().serve.auth
    if auth.jwt_secret is None:
        typer.echo("error: THAW_SERVE__AUTH__JWT_SECRET is not set (32+ characters)", err=True)
        raise typer.Exit(2)
    bad = [x for x in scope or [] if x not in SCOPES]
    if bad:
        typer.echo(f"error: unknown scope {bad[0]!r} (recommend, admin)", err=True)
        raise typer.Exit(2)
    typer.echo(mint_token(auth.jwt_secret.get_secret_value(), sub, scopes=scope or [], ttl_s=ttl,
                          issuer=auth.jwt_issuer, audience=auth.jwt_audience))


def serve_key(
    name: Annotated[str, typer.Option("--name", help="the caller's name (logged and counted, never the key)")],
    scope: Annotated[list[str] | None, typer.Option("--scope", help="recommend (default) or admin; repeat for "
                                                    "several")] = None,
) -> None:
    """Make a random API key: prints the key (give it to the caller; it is stored nowhere) and the entry for
    THAW_SERVE__AUTH__API_KEYS (its SHA-256 and scopes)."""
    from infra.settings import ApiKey
    from serving.auth import api_key_entry, new_api_key

    scopes = scope or ["recommend"]
    key = new_api_key()
    entry = api_key_entry(name, key, scopes)
    try:
        ApiKey.model_validate_json(entry)
    except ValueError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    typer.echo(f"key: {key}")
    typer.echo(f"THAW_SERVE__AUTH__API_KEYS entry: {entry}")
