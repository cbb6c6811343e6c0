"""Integration fixtures: the local stack (Kafka, Redis, Milvus) brought up once per session.

Settings come from the environment (``THAW_*``) or the defaults. A running stack is reused; one that cannot be
brought up FAILS the session (it is never skipped). The stack is left running afterwards
(``python -m thaw stack down`` stops it); the namespaces the session's tests made (:func:`unique_name`) are dropped
at its end (topics, consumer groups, collections, Redis keys), so a broker that serves many test sessions does not
carry their topics for ever.
"""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator

import pytest

from infra.settings import Settings, load_settings
from infra.stack import LocalStack, StackError, format_statuses


@pytest.fixture(scope="session")
def stack_settings() -> Iterator[Settings]:
    settings = load_settings()
    error: StackError | None = None
    try:
        statuses = LocalStack(settings).up()
    except StackError as exc:
        error = exc
    if error is not None:
        pytest.fail(f"the local stack did not come up:\n{error}", pytrace=False)
    unhealthy = [s for s in statuses if not s.healthy]
    if unhealthy:
        pytest.fail("local stack services unhealthy:\n" + format_statuses(statuses), pytrace=False)
    yield settings


@pytest.fixture(scope="session")
def made_namespaces(stack_settings: Settings) -> Iterator[list[str]]:
    """The names :func:`unique_name` handed out this session; their namespaces (and any namespace whose name starts
    with one of them) are dropped when the session ends."""
    made: list[str] = []
    yield made
    if made:
        drop_session_namespaces(stack_settings, made)


def drop_session_namespaces(base: Settings, made: list[str]) -> None:
    from infra.namespace import drop_namespace, list_namespaces

    try:
        extra = [n for n in list_namespaces(base) if n not in made and any(n.startswith(m) for m in made)]
    except Exception as exc:  # noqa: BLE001 - the broker may be the one a test took down
        extra = []
        warnings.warn(f"could not list the session's namespaces: {type(exc).__name__}: {exc}", stacklevel=1)
    failed = []
    for ns in made + extra:
        try:
            drop_namespace(base.namespaced(ns))
        except Exception as exc:  # noqa: BLE001 - report, never mask the session's results
            failed.append(f"{ns}: {type(exc).__name__}: {exc}")
    if failed:
        warnings.warn("namespaces left behind: " + "; ".join(failed[:5]), stacklevel=1)


@pytest.fixture
def unique_name(made_namespaces: list[str]) -> str:
    """A unique Kafka/Milvus/Redis-safe suffix (letters and digits) for topics, groups, collections; its namespace
    is dropped at the end of the session."""
    name = "t" + uuid.uuid4().hex[:12]
    made_namespaces.append(name)
    return name
