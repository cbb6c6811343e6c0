"""Integration fixtures: the local stack (Kafka, Redis, Milvus) brought up once per session.

Settings come from the environment (``THAW_*``) or the defaults. A running stack is reused; one that cannot be
brought up FAILS the session (it is never skipped). The stack is left running afterwards
(``python -m thaw stack down`` stops it).
"""

from __future__ import annotations

import uuid
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


@pytest.fixture
def unique_name() -> str:
    """A unique Kafka/Milvus/Redis-safe suffix (letters and digits) for topics, groups, collections."""
    return "t" + uuid.uuid4().hex[:12]
