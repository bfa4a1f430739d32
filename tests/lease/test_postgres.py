"""What only the PostgreSQL backend has: its schema objects, made once however many
replicas start together, and connections that come back after being cut."""

from __future__ import annotations

import contextlib
import json
import uuid
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
import psycopg
import pytest
from psycopg import sql

from tests.lease.support import Kit, fleet, until
from workit.lease._store import Hold, Request

if TYPE_CHECKING:
    from collections.abc import Iterator

pytestmark = pytest.mark.anyio

UNITS = ["a", "b", "c"]


@pytest.fixture
def anyio_backend() -> str:
    """psycopg's async connections are asyncio-only."""
    return "asyncio"


@pytest.fixture
def fresh_schema(postgres_dsn: str) -> Iterator[str]:
    """A schema name no object uses yet, with odd characters; dropped at the end."""
    schema = f'odd "schema" {uuid.uuid4().hex[:8]}'
    yield schema
    with contextlib.closing(psycopg.connect(postgres_dsn, autocommit=True)) as connection:
        connection.execute(
            sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema))
        )


def objects(dsn: str, schema: str) -> set[str]:
    with contextlib.closing(psycopg.connect(dsn, autocommit=True)) as connection:
        rows = connection.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
            " WHERE n.nspname = %s AND c.relkind IN ('r', 'S')"
            " UNION SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace"
            " WHERE n.nspname = %s",
            [schema, schema],
        ).fetchall()
    return {row[0] for row in rows}


async def test_replicas_starting_together_make_the_schema_once(
    postgres_dsn: str, fresh_schema: str
) -> None:
    """Several stores setting up a new schema at the same moment all succeed, and the
    schema holds exactly the documented objects."""
    kit = Kit(kind="postgres", postgres_dsn=postgres_dsn, schema=fresh_schema)

    async def join(name: str) -> None:
        async with kit.opened() as store:
            request = Request(member=name, identity=name, units=("a",), ttl=kit.ttl, join=True)
            assert (await store.sync(request)).alive

    async with anyio.create_task_group() as tasks:
        for index in range(5):
            tasks.start_soon(join, f"m{index}")
    assert objects(postgres_dsn, fresh_schema) == {
        "workit_lease_seq",
        "workit_lease_groups",
        "workit_lease_members",
        "workit_lease_units",
        "workit_lease_departed",
        "workit_lease_apply_v3",
        "workit_lease_sync_v3",
    }


async def test_a_dropped_schema_is_made_again(postgres_dsn: str, fresh_schema: str) -> None:
    """When the objects vanish under a running store, the next sync makes them again."""
    kit = Kit(kind="postgres", postgres_dsn=postgres_dsn, schema=fresh_schema)
    request = Request(member="m", identity="m", units=("a",), ttl=kit.ttl, join=True)
    async with kit.opened() as store:
        await store.sync(request)
        with contextlib.closing(psycopg.connect(postgres_dsn, autocommit=True)) as connection:
            connection.execute(
                sql.SQL("DROP SCHEMA {} CASCADE").format(sql.Identifier(fresh_schema))
            )
        with pytest.raises(psycopg.errors.InvalidSchemaName):
            await store.sync(request)
        assert (await store.sync(request)).alive


async def test_terminated_connections_are_opened_again(
    postgres_dsn: str, postgres_schema: str
) -> None:
    """Cutting every connection of the fleet's members (pg_terminate_backend) costs no
    claim: the pool and the listener connect again."""
    kit = Kit(kind="postgres", postgres_dsn=postgres_dsn, schema=postgres_schema)
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=kit.ttl)
        with contextlib.closing(psycopg.connect(postgres_dsn, autocommit=True)) as connection:
            killed = connection.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                " WHERE pid <> pg_backend_pid() AND datname = current_database()"
                " AND (query LIKE %s OR query LIKE 'LISTEN%%')",
                ["%workit_lease_sync_v3%"],
            ).fetchone()
        assert killed is not None
        assert killed[0] >= 1
        await anyio.sleep(kit.renew * 2)
        await until(lambda: one.membership.connected, within=kit.ttl)
        assert one.owned() == set(UNITS)
        assert one.lost == []
        two = await replicas.join("two")
        await replicas.leave("one")
        await until(lambda: two.owned() == set(UNITS), within=kit.renew)


async def test_ten_thousand_units_move_in_one_quick_sync_each(
    postgres_dsn: str, fresh_schema: str
) -> None:
    """Claiming 10,000 units, then releasing them all, is one sync each and well within a
    default renew interval (3 s), on a table the planner has no statistics for yet."""
    kit = Kit(kind="postgres", postgres_dsn=postgres_dsn, schema=fresh_schema, ttl=60)
    units = tuple(f"unit-{i}" for i in range(10_000))
    base = Request(member="m", identity="m", units=units, ttl=kit.ttl)
    async with kit.opened() as store:
        await store.sync(replace(base, join=True))
        start = anyio.current_time()
        claimed = await store.sync(
            replace(base, claims=tuple(Hold(unit=u, token=0) for u in units))
        )
        assert len(claimed.claimed) == len(units)
        releases = tuple(Hold(unit=h.unit, token=h.token) for h in claimed.claimed)
        released = await store.sync(replace(base, releases=releases))
        assert sum(1 for r in released.records if not r.owner) == len(units)
        assert anyio.current_time() - start < 3


async def test_a_member_that_does_not_read_its_reply_holds_up_no_other(
    postgres_dsn: str, fresh_schema: str
) -> None:
    """The reply of a sync is sent once its transaction committed: a member that sends a
    sync and then reads nothing (a cut network, a frozen process) while a reply of
    megabytes waits in the socket leaves the group's row free, and the others sync on."""
    from workit.lease.postgres import _document, _PostgresStore

    kit = Kit(kind="postgres", postgres_dsn=postgres_dsn, schema=fresh_schema)
    async with kit.opened() as store:
        one = Request(member="one", identity="one", units=("a",), ttl=60, join=True)
        assert (await store.sync(one)).alive  # makes the schema
    assert isinstance(store, _PostgresStore)
    with contextlib.closing(psycopg.connect(postgres_dsn, autocommit=True)) as connection:
        connection.execute(  # records a join reads in full: a reply of ~15 MB
            sql.SQL(
                "INSERT INTO {}.workit_lease_units (grp, unit, revision)"
                " SELECT %s, 'unit-' || n || repeat('x', 100), 1 FROM generate_series(1, 100000) n"
            ).format(sql.Identifier(fresh_schema)),
            [kit.group],
        )
    stuck = Request(member="stuck", identity="stuck", units=("a",), ttl=60, join=True)
    with contextlib.closing(psycopg.connect(postgres_dsn, autocommit=True)) as reader:
        call = store._call.as_string(reader).replace("%s", "$1::jsonb")
        document = json.dumps(_document(stuck, kit.group, "unused")).encode()
        reader.pgconn.send_query_params(call.encode(), [document])  # and never read
        reader.pgconn.flush()
        with contextlib.closing(psycopg.connect(postgres_dsn, autocommit=True)) as watcher:
            for _ in range(200):  # until the server is stuck writing the reply: 10 s at most
                row = watcher.execute(
                    "SELECT wait_event FROM pg_stat_activity WHERE pid = %s",
                    [reader.pgconn.backend_pid],
                ).fetchone()
                if row is not None and row[0] == "ClientWrite":
                    break
                await anyio.sleep(0.05)
            else:
                pytest.fail("the reply never filled the reader's socket")
        async with kit.opened() as other:
            renewal = replace(one, join=False, known_records=10**9)
            with anyio.fail_after(5):
                assert (await other.sync(renewal)).alive
