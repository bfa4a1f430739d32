"""What the lease tests share: the backends under test, a fleet of replicas, waits."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import socket
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import anyio
import pytest
from trio.testing import MockClock

import workit
import workit.lease
from workit.lease.memory import Memory, _MemoryStore

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Sequence

    from anyio.abc import TaskGroup

    from workit.lease import Leases, Membership
    from workit.lease._store import Store

REDIS_URL = os.environ.get("WORKIT_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_DSN = os.environ.get("WORKIT_POSTGRES_DSN", "postgresql://postgres@127.0.0.1:5432/test")
REQUIRE_SERVERS = os.environ.get("WORKIT_REQUIRE_SERVERS") == "1"

KINDS = ("memory", "redis", "postgres")
"""The backends every behaviour test runs against."""

LOGGER = logging.getLogger("workit.tests.lease")


def backend_for(kind: str) -> object:
    """The anyio backend a kind runs on: Memory on trio's MockClock, servers on asyncio."""
    if kind == "memory":
        return ("trio", {"clock": MockClock(autojump_threshold=0)})
    return "asyncio"


def reachable(url: str, default_port: int) -> bool:
    """Whether a TCP connection to ``url``'s host and port opens within half a second."""
    parts = urlsplit(url)
    try:
        with socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 0.5
        ):
            return True
    except OSError:
        return False


SERVERS = {
    "redis": ("Redis", REDIS_URL, "WORKIT_REDIS_URL", 6379),
    "postgres": ("PostgreSQL", POSTGRES_DSN, "WORKIT_POSTGRES_DSN", 5432),
}


@functools.cache
def missing(server: str) -> str | None:
    """Why the ``server`` ("redis" or "postgres") of the tests cannot be used, or None."""
    name, url, variable, port = SERVERS[server]
    if reachable(url, port):
        return None
    return (
        f"{name} is not reachable at {url}: start it (see .ci/run) or point {variable} at one; "
        "with WORKIT_REQUIRE_SERVERS=1 this fails instead"
    )


def need_private_server(problem: str | None) -> None:
    """Skip the test when the harness cannot start a private server (``problem`` says why);
    with WORKIT_REQUIRE_SERVERS=1 fail it instead."""
    if problem is None:
        return
    message = (
        f"{problem}; the multi-process lease tests start a private server of their own "
        "(with WORKIT_REQUIRE_SERVERS=1 this fails instead)"
    )
    if REQUIRE_SERVERS:
        pytest.fail(message, pytrace=False)
    pytest.skip(message)


@dataclass(kw_only=True)
class Kit:
    """One backend under test, with the timings that suit it, for one test's own group.

    Memory runs on trio's MockClock with the default ttl of 15 s; the real
    servers run in real time with a ttl of 1.5 s.
    """

    kind: str
    group: str = field(default_factory=lambda: f"test-{uuid.uuid4().hex}")
    redis_url: str = REDIS_URL
    postgres_dsn: str = POSTGRES_DSN
    schema: str = "public"
    memory: Memory | None = None
    ttl: float = 0.0
    renew: float = 0.0

    def __post_init__(self) -> None:
        if not self.ttl:
            self.ttl = 15.0 if self.kind == "memory" else 1.5
        if not self.renew:
            self.renew = self.ttl / 5

    @property
    def margin(self) -> float:
        return min(1.0, self.ttl / 10)

    @property
    def slack(self) -> float:
        """Time allowed on top of a bound, for the scheduling of real processes."""
        return 0.01 if self.kind == "memory" else 0.5

    def leases(self, identity: str) -> Leases:
        """The backend object of the replica named ``identity``."""
        if self.kind == "memory":
            if self.memory is None:
                self.memory = Memory(group=self.group, ttl=self.ttl, renew=self.renew)
            return self.memory.replica(identity)
        if self.kind == "redis":
            return workit.lease.Redis(
                self.redis_url, group=self.group, ttl=self.ttl, renew=self.renew, identity=identity
            )
        return workit.lease.Postgres(
            self.postgres_dsn,
            group=self.group,
            ttl=self.ttl,
            renew=self.renew,
            identity=identity,
            schema=self.schema,
        )

    def store(self) -> Store:
        """A raw connection to the backend, as one member's ``run()`` opens it."""
        if self.kind == "memory":
            if self.memory is None:
                self.memory = Memory(group=self.group, ttl=self.ttl, renew=self.renew)
            return _MemoryStore(self.memory._server)
        if self.kind == "redis":
            from workit.lease.redis import _RedisStore

            return _RedisStore(self.redis_url, self.group, self.renew)
        from workit.lease.postgres import _PostgresStore

        return _PostgresStore(self.postgres_dsn, self.group, self.schema, self.renew)

    @contextlib.asynccontextmanager
    async def opened(self) -> AsyncIterator[Store]:
        """``store()``, closed at the end of the block."""
        store = self.store()
        try:
            yield store
        finally:
            await store.aclose()

    def expire(self, member: str, *, ago: float = 0.0) -> None:
        """End ``member``'s lease on the server ``ago`` seconds ago, as if it had run out then."""
        ago = max(ago, 1e-6)  # strictly before the server's now: the next sync removes it
        if self.kind == "memory":
            assert self.memory is not None
            server = self.memory._server
            joined = server.members[member]
            from dataclasses import replace

            server.members[member] = replace(joined, expires=server.now() - ago)
        elif self.kind == "redis":
            import redis

            from workit.lease.redis import keys

            with contextlib.closing(redis.Redis.from_url(self.redis_url)) as client:
                seconds, micros = client.time()
                ended = seconds * 1_000_000 + micros - round(ago * 1_000_000)
                client.zadd(keys(self.group)[1], {member: ended}, xx=True)
        else:
            import psycopg
            from psycopg import sql

            query = sql.SQL(
                "UPDATE {}.workit_lease_members"
                " SET expires_at = extract(epoch FROM clock_timestamp()) - %s"
                " WHERE grp = %s AND member = %s"
            ).format(sql.Identifier(self.schema))
            with psycopg.connect(self.postgres_dsn, autocommit=True) as connection:
                connection.execute(query, [ago, self.group, member])

    def clean(self) -> None:
        """Delete what this test's group left on a real server."""
        if self.kind == "redis":
            import redis

            from workit.lease.redis import channel, keys

            with contextlib.closing(redis.Redis.from_url(self.redis_url)) as client:
                client.delete(*keys(self.group), channel(self.group))


@dataclass(kw_only=True)
class Replica:
    """One replica's membership running in the fleet's task group."""

    name: str
    membership: Membership
    scope: anyio.CancelScope
    ended: anyio.Event
    lost: list[str] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)

    def owned(self) -> set[str]:
        """The units this replica holds a trusted claim on now."""
        return {unit for unit in self.membership.units if self.membership.claim(unit) is not None}


class Fleet:
    """Replicas of one group, each a membership run in a task group of the test."""

    def __init__(self, kit: Kit, tasks: TaskGroup, units: Sequence[str]) -> None:
        self.kit = kit
        self.tasks = tasks
        self.units = tuple(units)
        self.replicas: dict[str, Replica] = {}

    async def join(self, name: str, units: Sequence[str] | None = None) -> Replica:
        """Start replica ``name`` declaring ``units`` (default: the fleet's); wait until joined."""
        membership = self.kit.leases(name).membership(
            units or self.units, engine=f"engine-{name}", logger=LOGGER
        )
        replica = Replica(
            name=name, membership=membership, scope=anyio.CancelScope(), ended=anyio.Event()
        )
        membership.on_lost(replica.lost.append)
        membership.on_event(lambda unit, event: replica.events.append((unit, event)))

        async def run(*, task_status: anyio.abc.TaskStatus[None]) -> None:
            try:
                with replica.scope:
                    await membership.run(task_status=task_status)
            finally:
                replica.ended.set()

        with anyio.fail_after(self.kit.ttl + 5):
            await self.tasks.start(run, name=f"replica {name}")
        self.replicas[name] = replica
        return replica

    def kill(self, name: str) -> None:
        """Stop replica ``name`` dead: no more renewals, no release."""
        self.replicas.pop(name).scope.cancel()

    async def leave(self, name: str) -> None:
        """Close replica ``name`` gracefully (releases everything)."""
        replica = self.replicas.pop(name)
        with anyio.fail_after(10):
            await replica.membership.close()
            await replica.ended.wait()

    async def close(self) -> None:
        """Close every replica left."""
        for name in list(self.replicas):
            await self.leave(name)

    def owners(self) -> dict[str, str]:
        """Unit -> the replica holding a trusted claim on it (asserting at most one does)."""
        result: dict[str, str] = {}
        for name, replica in self.replicas.items():
            for unit in replica.owned():
                assert unit not in result, f"{unit} is claimed by {result[unit]} and {name}"
                result[unit] = name
        return result

    def settled(self) -> bool:
        """Whether every unit has exactly one owner, spread floor/ceil over the replicas."""
        owners = self.owners()
        if set(owners) != set(self.units) or not self.replicas:
            return False
        counts = [list(owners.values()).count(name) for name in self.replicas]
        low, extra = divmod(len(self.units), len(self.replicas))
        return all(low <= count <= low + (1 if extra else 0) for count in counts)

    async def until(self, condition: Callable[[], bool], *, within: float) -> float:
        """Wait until ``condition()``; fail after ``within`` s; return how long it took."""
        return await until(condition, within=within)


async def until(condition: Callable[[], bool], *, within: float, step: float = 0.005) -> float:
    """Poll ``condition()`` every ``step`` s until true, for at most ``within`` s: the time."""
    start = anyio.current_time()
    with anyio.fail_after(within):
        # Claims and owners change inside the memberships' tasks: nothing to wait on, so poll.
        while not condition():  # noqa: ASYNC110
            await anyio.sleep(step)
    return anyio.current_time() - start


@contextlib.asynccontextmanager
async def fleet(kit: Kit, units: Sequence[str]) -> AsyncIterator[Fleet]:
    """A fleet of no replicas yet; every replica left is closed at the end."""
    async with anyio.create_task_group() as tasks:
        group = Fleet(kit, tasks, units)
        try:
            yield group
        finally:
            with anyio.CancelScope(shield=True):
                await group.close()
            tasks.cancel_scope.cancel()


class Engine:
    """What a leased engine does with a membership, in small: a loop per unit that waits in
    ``acquire``, runs, reports, and cancels the running execution when the claim is lost."""

    def __init__(
        self,
        membership: Membership,
        runs: list[tuple[str, str, float, float]],
        *,
        cooler: float,
        takes: float,
    ) -> None:
        self.membership = membership
        self.runs = runs
        self.cooler = cooler
        self.takes = takes
        self.running: dict[str, anyio.CancelScope] = {}
        self.scope = anyio.CancelScope()
        membership.on_lost(self.lost)

    def lost(self, unit: str) -> None:
        scope = self.running.get(unit)
        if scope is not None:
            scope.cancel()

    async def run(self) -> None:
        """Run every unit's loop until ``scope`` is cancelled."""
        with self.scope:
            async with anyio.create_task_group() as loops:
                for unit in self.membership.units:
                    loops.start_soon(self.loop, unit)

    async def loop(self, unit: str) -> None:
        membership = self.membership
        while True:
            claim = await membership.acquire(unit)
            assert claim is not None
            assert claim.valid()
            with anyio.CancelScope() as self.running[unit]:
                membership.started(unit, cooler=self.cooler)
                start = anyio.current_time()
                try:
                    await anyio.sleep(self.takes)
                finally:
                    self.runs.append((unit, membership.identity, start, anyio.current_time()))
                    membership.finished(unit, cooler=self.cooler)


@contextlib.asynccontextmanager
async def running(*workers: workit.Worker) -> AsyncIterator[TaskGroup]:
    """Run the workers' daemons around the block; then stop them all (the block's end
    waits until they have returned)."""
    async with anyio.create_task_group() as tasks:
        for worker in workers:
            tasks.start_soon(worker.daemon)
        for worker in workers:
            await worker.wait_ready()
        try:
            yield tasks
        finally:
            for worker in workers:
                worker.stop()
