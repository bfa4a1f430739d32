"""Fixtures of the lease tests: the servers, one schema per session, a kit per backend."""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.lease.support import KINDS, POSTGRES_DSN, REDIS_URL, REQUIRE_SERVERS, Kit, missing

if TYPE_CHECKING:
    from collections.abc import Iterator


SERVER_FIXTURES = {"redis_url": "redis", "postgres_dsn": "postgres", "postgres_schema": "postgres"}


def servers(item: pytest.Item) -> set[str]:
    """The servers a test needs: by its fixtures, or by its backend parameter."""
    fixtures = getattr(item, "fixturenames", ())
    needed = {server for name, server in SERVER_FIXTURES.items() if name in fixtures}
    callspec = getattr(item, "callspec", None)
    if callspec is not None:
        for name in ("kind", "server"):
            if callspec.params.get(name) in ("redis", "postgres"):
                needed.add(callspec.params[name])
    return needed


def pytest_runtest_setup(item: pytest.Item) -> None:
    """A test whose server does not answer is skipped, for the same reason at the same place
    (one summary line per server), or fails under WORKIT_REQUIRE_SERVERS=1."""
    for server in sorted(servers(item)):
        problem = missing(server)
        if problem is None:
            continue
        if REQUIRE_SERVERS:
            pytest.fail(problem, pytrace=False)
        pytest.skip(problem)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server of the tests (``WORKIT_REDIS_URL``)."""
    return REDIS_URL


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The PostgreSQL server of the tests (``WORKIT_POSTGRES_DSN``)."""
    return POSTGRES_DSN


@pytest.fixture(scope="session")
def postgres_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema of this test session's own (the backend creates it), dropped at the end."""
    import psycopg
    from psycopg import sql

    schema = f"workit_test_{uuid.uuid4().hex[:12]}"
    yield schema
    with contextlib.closing(psycopg.connect(postgres_dsn, autocommit=True)) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


@pytest.fixture(params=KINDS)
def kind(request: pytest.FixtureRequest) -> str:
    """The backend a behaviour test runs against."""
    return str(request.param)


@pytest.fixture
def kit(kind: str, request: pytest.FixtureRequest) -> Iterator[Kit]:
    """The backend ``kind`` for this test's own group; what it leaves on a server is deleted."""
    if kind == "redis":
        result = Kit(kind=kind, redis_url=request.getfixturevalue("redis_url"))
    elif kind == "postgres":
        result = Kit(
            kind=kind,
            postgres_dsn=request.getfixturevalue("postgres_dsn"),
            schema=request.getfixturevalue("postgres_schema"),
        )
    else:
        result = Kit(kind=kind)
    yield result
    result.clean()
