"""Fixtures of the lease tests: the servers, one schema per session, a kit per backend."""

from __future__ import annotations

import contextlib
import uuid
from typing import TYPE_CHECKING

import pytest

from tests.lease.support import KINDS, POSTGRES_DSN, REDIS_URL, Kit, require

if TYPE_CHECKING:
    from collections.abc import Iterator


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The Redis server of the tests (``WORKIT_REDIS_URL``), or a skip saying how to get one."""
    return require("Redis", REDIS_URL, "WORKIT_REDIS_URL", 6379)


@pytest.fixture(scope="session")
def postgres_dsn() -> str:
    """The PostgreSQL server of the tests (``WORKIT_POSTGRES_DSN``), or a skip."""
    return require("PostgreSQL", POSTGRES_DSN, "WORKIT_POSTGRES_DSN", 5432)


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
