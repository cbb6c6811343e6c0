"""``thaw recall`` and ``thaw serve``: the online path, one user from the CLI or the recommendation API."""

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
    host: Annotated[str | None, typer.Option(help="bind address (default THAW_SERVE__HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="port (default THAW_SERVE__PORT)")] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes")] = 1,
    log_level: str = "info",
) -> None:
    """Run the recommendation API: GET /recommend, /ab, /healthz, /readyz, /metrics, /docs (OpenAPI)."""
    import uvicorn

    s = settings()
    setup_logging(log_level.upper())
    h, p = host or s.serve.host, port or s.serve.port
    if workers > 1:  # every worker process builds its own app from the THAW_* environment
        uvicorn.run("serving.api:app_from_env", factory=True, host=h, port=p, workers=workers, log_level=log_level)
        return
    from serving.api import create_app

    uvicorn.run(create_app(s), host=h, port=p, log_level=log_level, access_log=False)
