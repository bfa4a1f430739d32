"""``Postgres``: a fleet coordinated through PostgreSQL (extra ``workit-jobs[postgres]``).

Every sync is one ``CALL`` of one procedure, ``workit_lease_sync_v3``: it
runs the PL/pgSQL function ``workit_lease_apply_v3`` in a transaction of
its own and commits before the reply is sent, so a member that is slow to
read its reply (or cut off while it comes) holds no lock meanwhile. The
function first locks the group's row in ``workit_lease_groups`` (``FOR
UPDATE``), so the syncs of one group apply one after another and revisions
become visible in the order they were drawn; then it works by
``clock_timestamp()``. Tables, in ``schema``:

- ``workit_lease_groups (name, members_revision)``;
- ``workit_lease_members (grp, member, identity, units, expires_at)``;
- ``workit_lease_units (grp, unit, owner, token, revision, running,
  last_finished, next_due, cooler)``, times in epoch seconds;
- ``workit_lease_departed (grp, member, expired_at)``: when the lease of an
  expired member ran out, kept for ``DEPARTED_KEPT`` ttls (a takeover of its
  units counts their cooler from a margin after then);
- the sequence ``workit_lease_seq`` draws tokens and revisions (durable, so
  never reused after a restart).

The objects are created on first use, idempotently, under a
transaction-scoped advisory lock so that replicas starting together do not
trip over each other. Releases, joins, leaves and expiries are announced with
``pg_notify`` on a channel per schema and group; the other members listen and
sync at once. Needs the asyncio backend (psycopg's async connections).
"""

from __future__ import annotations

import hashlib
import json
import math
from typing import TYPE_CHECKING, Any

import anyio

try:
    import psycopg
    from psycopg import sql
    from psycopg.types.json import Jsonb
    from psycopg_pool import AsyncConnectionPool
except ImportError as error:  # pragma: no cover - exercised with the driver hidden
    raise ImportError(
        "workit.lease.Postgres needs psycopg and psycopg_pool: pip install 'workit-jobs[postgres]'"
    ) from error

from workit.lease._membership import Membership
from workit.lease._roster import Roster, build
from workit.lease._settings import Configured, Live, check_units, check_url, redact, settings
from workit.lease._store import DEPARTED_KEPT, Hold, Member, Record, Reply

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Sequence

    from workit._duration import Duration
    from workit.lease._store import Ledger, Request

__all__ = ["Postgres"]

PROCEDURE = "workit_lease_sync_v3"
"""What a member calls, once per sync."""
FUNCTION = "workit_lease_apply_v3"
"""What the procedure runs, once per sync."""

_DDL = (
    """CREATE SEQUENCE IF NOT EXISTS {schema}.workit_lease_seq""",
    """CREATE TABLE IF NOT EXISTS {schema}.workit_lease_groups (
        name text PRIMARY KEY,
        members_revision bigint NOT NULL DEFAULT 0
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.workit_lease_members (
        grp text NOT NULL,
        member text NOT NULL,
        identity text NOT NULL,
        units text[] NOT NULL,
        expires_at double precision NOT NULL,
        PRIMARY KEY (grp, member)
    )""",
    """CREATE TABLE IF NOT EXISTS {schema}.workit_lease_units (
        grp text NOT NULL,
        unit text NOT NULL,
        owner text NOT NULL DEFAULT '',
        token bigint NOT NULL DEFAULT 0,
        revision bigint NOT NULL DEFAULT 0,
        running boolean NOT NULL DEFAULT false,
        last_finished double precision,
        next_due double precision,
        cooler double precision NOT NULL DEFAULT 0,
        PRIMARY KEY (grp, unit)
    )""",
    """CREATE INDEX IF NOT EXISTS workit_lease_units_revision
        ON {schema}.workit_lease_units (grp, revision)""",
    """CREATE TABLE IF NOT EXISTS {schema}.workit_lease_departed (
        grp text NOT NULL,
        member text NOT NULL,
        expired_at double precision NOT NULL,
        PRIMARY KEY (grp, member)
    )""",
    """CREATE OR REPLACE FUNCTION {schema}.workit_lease_apply_v3(request jsonb) RETURNS jsonb
    LANGUAGE plpgsql
    SET search_path = {schema}, pg_catalog, pg_temp
    AS $body$
DECLARE
    grp_name text := request->>'group';
    me text := request->>'member';
    lease double precision := (request->>'ttl')::double precision;
    ts double precision;
    members_rev bigint;
    changed boolean;
    announce boolean;
    listing jsonb;
    changes jsonb;
    granted jsonb;
    fresh bigint;
    won_units text[] := '{}';
    won_tokens bigint[] := '{}';
    heirs text[];
    l record;
    r record;
    c record;
BEGIN
    -- A renewal or a claim acknowledged and then lost in a crash would let two
    -- members run one unit: this transaction's commit waits for the WAL flush
    -- even where synchronous_commit is off (a stronger setting stands).
    IF current_setting('synchronous_commit') = 'off' THEN
        PERFORM set_config('synchronous_commit', 'local', true);
    END IF;
    INSERT INTO workit_lease_groups (name) VALUES (grp_name) ON CONFLICT (name) DO NOTHING;
    SELECT g.members_revision INTO members_rev
      FROM workit_lease_groups g WHERE g.name = grp_name FOR UPDATE;
    ts := extract(epoch FROM clock_timestamp());

    WITH gone AS (
        DELETE FROM workit_lease_members m WHERE m.grp = grp_name AND m.expires_at < ts
        RETURNING m.member, m.expires_at
    )
    INSERT INTO workit_lease_departed AS d (grp, member, expired_at)
    SELECT grp_name, gone.member, gone.expires_at FROM gone
    ON CONFLICT (grp, member) DO UPDATE SET expired_at = excluded.expired_at;
    changed := FOUND;
    IF changed THEN
        DELETE FROM workit_lease_departed d
         WHERE d.grp = grp_name AND d.expired_at < ts - DEPARTED_KEPT * lease;
    END IF;

    IF (request->>'join')::boolean THEN
        INSERT INTO workit_lease_members AS m (grp, member, identity, units, expires_at)
        VALUES (grp_name, me, request->>'identity',
                ARRAY(SELECT jsonb_array_elements_text(request->'units')), ts + lease)
        ON CONFLICT (grp, member) DO UPDATE SET expires_at = excluded.expires_at;
        changed := true;
    ELSE
        UPDATE workit_lease_members m SET expires_at = ts + lease
         WHERE m.grp = grp_name AND m.member = me;
        IF NOT FOUND THEN
            IF changed THEN
                UPDATE workit_lease_groups g SET members_revision = members_rev + 1
                 WHERE g.name = grp_name;
                PERFORM pg_notify(request->>'channel', me);
            END IF;
            RETURN jsonb_build_object('alive', false, 'now', ts);
        END IF;
        IF (request->>'drain')::boolean THEN
            UPDATE workit_lease_members m SET units = '{}'
             WHERE m.grp = grp_name AND m.member = me AND cardinality(m.units) > 0;
            changed := changed OR FOUND;
        END IF;
    END IF;

    -- One primary-key statement per item: the cost follows the request, whatever
    -- the planner believes about a table that has just grown.
    FOR l IN SELECT * FROM jsonb_to_recordset(request->'ledgers')
             AS x(unit text, token bigint, running boolean, ago double precision,
                  cooler double precision) LOOP
        UPDATE workit_lease_units u
           SET running = l.running,
               cooler = coalesce(l.cooler, u.cooler),
               last_finished = CASE WHEN l.ago IS NULL THEN u.last_finished ELSE ts - l.ago END,
               next_due = CASE WHEN l.ago IS NULL THEN u.next_due
                               ELSE ts - l.ago + coalesce(l.cooler, u.cooler) END
         WHERE u.grp = grp_name AND u.unit = l.unit AND u.owner = me AND u.token = l.token;
    END LOOP;

    -- A release carries its unit's ledger (one statement for both) and may hand
    -- the unit to another live member under a new token.
    announce := false;
    IF jsonb_array_length(request->'releases') > 0 THEN
        heirs := ARRAY(SELECT m.member FROM workit_lease_members m
                        WHERE m.grp = grp_name AND m.member <> me);
    END IF;
    FOR r IN SELECT * FROM jsonb_to_recordset(request->'releases')
             AS x(unit text, token bigint, heir text, running boolean, ago double precision,
                  cooler double precision) LOOP
        fresh := nextval('workit_lease_seq');
        UPDATE workit_lease_units u
           SET owner = CASE WHEN r.heir = ANY(heirs) THEN r.heir ELSE '' END,
               token = CASE WHEN r.heir = ANY(heirs) THEN fresh ELSE u.token END,
               revision = fresh,
               running = coalesce(r.running, u.running),
               cooler = coalesce(r.cooler, u.cooler),
               last_finished = CASE WHEN r.ago IS NULL THEN u.last_finished ELSE ts - r.ago END,
               next_due = CASE WHEN r.ago IS NULL THEN u.next_due
                               ELSE ts - r.ago + coalesce(r.cooler, u.cooler) END
         WHERE u.grp = grp_name AND u.unit = r.unit AND u.owner = me AND u.token = r.token;
        announce := announce OR FOUND;
    END LOOP;

    FOR c IN SELECT * FROM jsonb_to_recordset(request->'claims')
             AS x(unit text, token bigint, cooler double precision) LOOP
        IF c.token = 0 THEN
            INSERT INTO workit_lease_units (grp, unit) VALUES (grp_name, c.unit)
            ON CONFLICT (grp, unit) DO NOTHING;
        END IF;
        fresh := nextval('workit_lease_seq');
        UPDATE workit_lease_units u
           SET owner = me, token = fresh, revision = fresh, running = false,
               next_due = CASE
                   WHEN u.running OR (u.owner <> '' AND coalesce(u.next_due <= ts, true))
                   THEN greatest(u.next_due,
                                 least(ts, coalesce((SELECT d.expired_at
                                                       FROM workit_lease_departed d
                                                      WHERE d.grp = grp_name
                                                        AND d.member = u.owner), ts))
                                 + least(1.0, lease / 10)
                                 + greatest(u.cooler, coalesce(c.cooler, 0)))
                   ELSE u.next_due END
         WHERE u.grp = grp_name AND u.unit = c.unit AND u.token = c.token
           AND (u.owner = '' OR u.owner = me OR NOT EXISTS (
                SELECT 1 FROM workit_lease_members m
                 WHERE m.grp = grp_name AND m.member = u.owner));
        IF FOUND THEN
            won_units := array_append(won_units, c.unit);
            won_tokens := array_append(won_tokens, fresh);
        END IF;
    END LOOP;
    SELECT coalesce(jsonb_agg(jsonb_build_array(w.unit, w.token)), '[]'::jsonb) INTO granted
      FROM unnest(won_units, won_tokens) AS w(unit, token);

    IF (request->>'leave')::boolean THEN
        DELETE FROM workit_lease_members m WHERE m.grp = grp_name AND m.member = me;
        changed := true;
    END IF;
    IF changed THEN
        members_rev := members_rev + 1;
        UPDATE workit_lease_groups g SET members_revision = members_rev WHERE g.name = grp_name;
    END IF;
    IF changed OR announce THEN
        PERFORM pg_notify(request->>'channel', me);
    END IF;
    IF members_rev <> (request->>'known_members')::bigint THEN
        SELECT coalesce(jsonb_agg(jsonb_build_array(m.member, m.identity, to_jsonb(m.units))
                                  ORDER BY m.member), '[]'::jsonb)
          INTO listing FROM workit_lease_members m WHERE m.grp = grp_name;
    END IF;
    SELECT coalesce(jsonb_agg(jsonb_build_array(u.unit, u.owner, u.token, u.revision, u.running,
                                                u.last_finished, u.next_due, u.cooler)),
                    '[]'::jsonb)
      INTO changes FROM workit_lease_units u
     WHERE u.grp = grp_name AND u.revision > (request->>'known_records')::bigint;
    RETURN jsonb_build_object('alive', true, 'now', ts, 'members_revision', members_rev,
                              'members', listing, 'records', changes, 'claimed', granted);
END
$body$""".replace("DEPARTED_KEPT", str(DEPARTED_KEPT)),
    # Made last: its presence says every object is there (see _setup).
    """CREATE OR REPLACE PROCEDURE {schema}.workit_lease_sync_v3(request jsonb, INOUT reply jsonb)
    LANGUAGE plpgsql
    AS $body$
BEGIN
    -- The reply goes out once this has committed: a member that does not read it
    -- (a network cut, a frozen or busy process) must not hold the group's row,
    -- and with it every other member's sync, for as long as it does not.
    reply := {schema}.workit_lease_apply_v3(request);
    COMMIT;
END
$body$""",
)
"""The objects one schema needs; ``{schema}`` is the quoted schema name."""

_LOCK = int.from_bytes(
    hashlib.blake2b(b"workit.lease ddl", digest_size=8).digest(), "big", signed=True
)


def channel(schema: str, group: str) -> str:
    """The LISTEN/NOTIFY channel of ``group`` in ``schema`` (an identifier under 63 bytes)."""
    digest = hashlib.blake2b(f"{schema}\0{group}".encode(), digest_size=10).hexdigest()
    return f"workit_lease_{digest}"


def _ledger(ledger: Ledger | None) -> dict[str, Any]:
    if ledger is None:
        return {}
    return {"running": ledger.running, "ago": ledger.finished_ago, "cooler": ledger.cooler}


def _document(request: Request, group: str, notices: str) -> dict[str, Any]:
    # A released unit's ledger goes with its release: one statement for both.
    held = {hold.unit: hold.token for hold in request.releases}
    joined = {
        ledger.unit: ledger for ledger in request.ledgers if held.get(ledger.unit) == ledger.token
    }
    return {
        "group": group,
        "member": request.member,
        "identity": request.identity,
        "units": list(request.units) if request.join else [],
        "ttl": request.ttl,
        "join": request.join,
        "drain": request.drain,
        "leave": request.leave,
        "known_members": request.known_members,
        "known_records": request.known_records,
        "channel": notices,
        "ledgers": [
            {"unit": ledger.unit, "token": ledger.token} | _ledger(ledger)
            for ledger in request.ledgers
            if ledger.unit not in joined
        ],
        "releases": [
            {"unit": hold.unit, "token": hold.token, "heir": hold.to}
            | _ledger(joined.get(hold.unit))
            for hold in request.releases
        ],
        "claims": [
            {"unit": hold.unit, "token": hold.token, "cooler": hold.cooler}
            for hold in request.claims
        ],
    }


def _record(
    unit: str,
    owner: str,
    token: Any,
    revision: Any,
    running: Any,
    last: Any,
    due: Any,
    cooler: Any,
) -> Record:
    """A unit's record from the columns the lease function and the roster read."""
    return Record(
        unit=unit,
        owner=owner,
        token=int(token),
        revision=int(revision),
        running=bool(running),
        last_finished=None if last is None else float(last),
        next_due=None if due is None else float(due),
        cooler=float(cooler),
    )


def _reply(raw: dict[str, Any]) -> Reply:
    now = float(raw["now"])
    if not raw["alive"]:
        return Reply(alive=False, now=now)
    listing = raw.get("members")
    members = None
    if listing is not None:
        members = tuple(
            Member(member=member, identity=identity, units=tuple(units))
            for member, identity, units in listing
        )
    records = tuple(_record(*row) for row in raw["records"])
    claimed = tuple(Hold(unit=unit, token=int(token)) for unit, token in raw["claimed"])
    return Reply(
        alive=True,
        now=now,
        members_revision=int(raw["members_revision"]),
        members=members,
        records=records,
        claimed=claimed,
    )


_VANISHED = (
    psycopg.errors.InvalidSchemaName,
    psycopg.errors.UndefinedFunction,
    psycopg.errors.UndefinedTable,
    psycopg.errors.UndefinedObject,
)
"""The errors of a sync whose schema objects are gone."""


class _PostgresStore:
    """One member's connections: a small pool for syncs, one connection to LISTEN."""

    def __init__(self, dsn: str, group: str, schema: str, timeout: float) -> None:
        _require_asyncio()
        self._dsn = dsn
        self._group = group
        self._schema = schema
        self._timeout = timeout
        self._channel = channel(schema, group)
        # libpq counts connect_timeout in whole seconds, 2 at least.
        self._connect_timeout = max(2, math.ceil(timeout))
        self._pool: AsyncConnectionPool[psycopg.AsyncConnection[Any]] = AsyncConnectionPool(
            dsn,
            open=False,
            min_size=1,
            max_size=2,
            kwargs={"autocommit": True, "connect_timeout": self._connect_timeout},
            timeout=timeout,
            name=f"workit-lease-{group}",
        )
        self._opened = False
        self._ready = False
        name = sql.Identifier(schema)
        self._call = sql.SQL("CALL {}.{}(%s, NULL)").format(name, sql.Identifier(PROCEDURE))

    async def sync(self, request: Request) -> Reply:
        if not self._opened:
            await self._pool.open(wait=False)
            self._opened = True
        document = _document(request, self._group, self._channel)
        async with self._pool.connection(timeout=self._timeout) as connection:
            if not self._ready:
                await self._setup(connection)
                self._ready = True
            try:
                cursor = await connection.execute(self._call, [Jsonb(document)])
            except _VANISHED:
                self._ready = False  # the objects were dropped: make them again next time
                raise
            row = await cursor.fetchone()
        if row is None:  # pragma: no cover - a SELECT of a function returns one row
            raise RuntimeError(f"{PROCEDURE} returned no row")
        raw = row[0]
        return _reply(json.loads(raw) if isinstance(raw, str) else raw)

    async def _setup(self, connection: psycopg.AsyncConnection[Any]) -> None:
        quoted = sql.Identifier(self._schema).as_string(connection)
        signature = f"{quoted}.{PROCEDURE}(jsonb,jsonb)"
        async with connection.transaction():
            await connection.execute("SELECT pg_advisory_xact_lock(%s)", [_LOCK])
            cursor = await connection.execute("SELECT to_regprocedure(%s) IS NOT NULL", [signature])
            row = await cursor.fetchone()
            if row is not None and row[0]:
                return
            cursor = await connection.execute("SELECT to_regnamespace(%s) IS NOT NULL", [quoted])
            row = await cursor.fetchone()
            if row is None or not row[0]:
                await connection.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self._schema))
                )
            for statement in _DDL:
                await connection.execute(statement.replace("{schema}", quoted).encode())

    async def listen(self, wake: Callable[[str], None]) -> None:
        with anyio.fail_after(self._timeout * 5):
            connection = await psycopg.AsyncConnection.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout
            )
        try:
            await connection.execute(sql.SQL("LISTEN {}").format(sql.Identifier(self._channel)))
            # Read the notices as the socket delivers them: connection.notifies() also
            # wakes ten times a second to look, which costs an idle replica more CPU
            # than its renewals do.
            pgconn = connection.pgconn
            encoding = connection.info.encoding
            while True:
                await anyio.wait_readable(pgconn.socket)
                pgconn.consume_input()  # OperationalError once the connection is lost
                while (notice := pgconn.notifies()) is not None:
                    wake(notice.extra.decode(encoding))
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(1):
                await connection.close()

    async def aclose(self) -> None:
        if self._opened:
            await self._pool.close(timeout=1)


_READ_MEMBERS = """SELECT member, identity, units, expires_at
    FROM {schema}.workit_lease_members WHERE grp = %s"""
_READ_UNITS = """SELECT unit, owner, token, revision, running, last_finished, next_due, cooler
    FROM {schema}.workit_lease_units WHERE grp = %s"""


async def _read(
    dsn: str, schema: str, group: str, connect_timeout: float
) -> tuple[float, list[tuple[Member, float]], list[Record]]:
    """The server's time, the group's members with their expiry, and its records.

    One read-only, repeatable-read transaction; a schema that has no tables
    yet (nobody ever joined) reads as an empty group.
    """
    connection = await psycopg.AsyncConnection.connect(
        dsn, connect_timeout=max(2, math.ceil(connect_timeout))
    )
    try:
        await connection.set_read_only(True)
        await connection.set_isolation_level(psycopg.IsolationLevel.REPEATABLE_READ)
        quoted = sql.Identifier(schema).as_string(connection)
        async with connection.transaction():
            cursor = await connection.execute(
                "SELECT extract(epoch FROM clock_timestamp()), to_regclass(%s) IS NOT NULL",
                [f"{quoted}.workit_lease_units"],
            )
            row = await cursor.fetchone()
            assert row is not None  # a SELECT without FROM returns one row
            now, made = float(row[0]), bool(row[1])
            if not made:
                return now, [], []
            cursor = await connection.execute(
                _READ_MEMBERS.replace("{schema}", quoted).encode(), [group]
            )
            members = [
                (Member(member=m, identity=i, units=tuple(u)), float(e))
                for m, i, u, e in await cursor.fetchall()
            ]
            cursor = await connection.execute(
                _READ_UNITS.replace("{schema}", quoted).encode(), [group]
            )
            rows = await cursor.fetchall()
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(1):
            await connection.close()
    records = [_record(*row) for row in rows]
    return now, members, records


def _require_asyncio() -> None:
    import asyncio

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        raise RuntimeError(
            "workit.lease.Postgres runs on anyio's asyncio backend (psycopg is asyncio-only)"
        ) from None


class Postgres(Configured):
    """A lease backend on PostgreSQL: the replicas sharing ``dsn`` and ``group`` are one fleet.

    ``dsn`` is a ``postgresql://`` or ``postgres://`` URL; ``schema`` (default
    ``public``) holds the tables and the function, made on first use. ``ttl``,
    ``renew`` (default ``ttl / 5``; also the bound on one round trip) and
    ``identity`` are as for every backend. The server's clock is the only one
    compared. Runs on anyio's asyncio backend.
    """

    def __init__(
        self,
        dsn: str,
        *,
        group: str,
        ttl: Duration = 15,
        renew: Duration | None = None,
        identity: str | None = None,
        schema: str = "public",
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._dsn = check_url(dsn, ("postgresql", "postgres"), "PostgreSQL")
        if not isinstance(schema, str) or not schema or len(schema.encode()) > 63:
            raise ValueError(f"schema must be a name of 1 to 63 bytes, got {schema!r}")
        self._schema = schema
        self._settings = settings(group=group, ttl=ttl, renew=renew, identity=identity, clock=clock)
        self._live = Live()

    @property
    def schema(self) -> str:
        """The schema holding the tables."""
        return self._schema

    @property
    def backend(self) -> str:
        """The server's URL without its password."""
        return redact(self._dsn)

    async def roster(self) -> Roster:
        """The group's live members and who owns which unit, read without joining.

        One read-only transaction, by the server's clock, that creates
        nothing (a schema without the tables reads as an empty group); raises
        a ``psycopg`` error when the server cannot be reached (connecting
        gives up after ``ttl``; bound it with ``anyio.fail_after`` to wait
        less). Runs on asyncio.
        """
        _require_asyncio()
        now, members, records = await _read(
            self._dsn, self._schema, self._settings.group, self._settings.ttl
        )
        return build(
            group=self._settings.group,
            backend=self.backend,
            now=now,
            members=members,
            records=records,
        )

    def membership(
        self, units: Sequence[str], *, engine: str, logger: logging.Logger
    ) -> Membership:
        """A membership declaring ``units`` for one run of ``engine``."""
        units = check_units(units)
        self._live.add(units, engine)
        return Membership(
            settings=self._settings,
            store=lambda: _PostgresStore(
                self._dsn, self._settings.group, self._schema, self._settings.sync_timeout
            ),
            backend=self.backend,
            units=units,
            engine=engine,
            logger=logger,
            on_end=lambda: self._live.remove(units),
        )
