"""The private servers of the multi-process harness behave as their fault model says:
a PostgreSQL restart is a crash that keeps every commit it acknowledged (the lease
tables rely on it), a Redis restart keeps nothing."""

from __future__ import annotations

import contextlib
from dataclasses import replace

import anyio
import pytest

from bench.fleet import PostgresServer, RedisServer, missing_postgres, missing_redis
from tests.lease.support import Kit, need_private_server
from workit.lease._store import Hold, Request

pytestmark = pytest.mark.timeout(120)


def test_a_postgres_restart_keeps_every_acknowledged_commit() -> None:
    """Commits acknowledged right before an immediate stop are there after the start: a
    restart loses connections, not data (with ``synchronous_commit = off`` the last few
    hundred milliseconds of commits went, and with them renewals and claims)."""
    psycopg = pytest.importorskip("psycopg")
    need_private_server(missing_postgres())
    with PostgresServer() as server:
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute("CREATE TABLE acknowledged (n integer)")
            for n in range(200):
                connection.execute("INSERT INTO acknowledged VALUES (%s)", [n])
        server.restart()
        with psycopg.connect(server.url, autocommit=True) as connection:
            row = connection.execute("SELECT count(*) FROM acknowledged").fetchone()
        assert row == (200,)


def test_the_lease_function_commits_durably_even_with_synchronous_commit_off() -> None:
    """On a server whose ``synchronous_commit`` is off, every renewal and claim the lease
    function acknowledged is still there after a crash: it waits for the WAL flush of its
    own transaction, so a crash cannot hand a unit to a second owner."""
    psycopg = pytest.importorskip("psycopg")
    units = [f"u{n}" for n in range(100)]
    need_private_server(missing_postgres())
    with PostgresServer() as server:
        with psycopg.connect(server.url, autocommit=True) as connection:
            connection.execute("ALTER DATABASE postgres SET synchronous_commit = off")
        kit = Kit(kind="postgres", postgres_dsn=server.url)

        async def claim_one_by_one() -> None:
            async with kit.opened() as store:
                request = Request(member="m", identity="m", units=tuple(units), ttl=60.0)
                await store.sync(replace(request, join=True))
                for unit in units:
                    claim = replace(request, claims=(Hold(unit=unit, token=0),))
                    assert [hold.unit for hold in (await store.sync(claim)).claimed] == [unit]
                server.restart()  # at once, before the WAL writer's next round

        anyio.run(claim_one_by_one)
        with psycopg.connect(server.url, autocommit=True) as connection:
            row = connection.execute(
                "SELECT count(*) FROM workit_lease_units WHERE grp = %s AND owner = 'm'",
                [kit.group],
            ).fetchone()
        assert row == (len(units),)


def test_a_redis_restart_keeps_nothing() -> None:
    """A Redis restart loses every key (no persistence): the data loss the Redis backend
    is built to survive."""
    redis = pytest.importorskip("redis")
    need_private_server(missing_redis())
    with RedisServer() as server:
        with contextlib.closing(redis.Redis.from_url(server.url)) as client:
            client.set("kept", "1")
        server.restart()
        with contextlib.closing(redis.Redis.from_url(server.url)) as client:
            assert client.get("kept") is None
