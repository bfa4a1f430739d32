"""The real drivers through a faulty network: a black hole makes syncs time out and the
member fence itself; a reset makes the clients reconnect without losing anything."""

from __future__ import annotations

import contextlib
import functools
import logging
from typing import TYPE_CHECKING
from urllib.parse import urlsplit, urlunsplit

import pytest

from bench.faultproxy import FaultProxy
from tests.lease.support import Kit, fleet, until

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

pytestmark = pytest.mark.anyio

UNITS = [f"handler-{i}" for i in range(4)]


@pytest.fixture
def anyio_backend() -> str:
    """The drivers are asyncio-only."""
    return "asyncio"


@pytest.fixture(params=["redis", "postgres"])
def server(request: pytest.FixtureRequest) -> tuple[str, str]:
    """The backend kind and the URL of its real server."""
    if request.param == "redis":
        return "redis", str(request.getfixturevalue("redis_url"))
    request.getfixturevalue("postgres_schema")
    return "postgres", str(request.getfixturevalue("postgres_dsn"))


@contextlib.asynccontextmanager
async def proxied(
    server: tuple[str, str], schema: str | None
) -> AsyncIterator[tuple[FaultProxy, Kit]]:
    """A proxy in front of the server, and a kit whose members connect through it."""
    kind, url = server
    parts = urlsplit(url)
    async with FaultProxy(parts.hostname or "127.0.0.1", parts.port or 0) as proxy:
        user = parts.netloc.rpartition("@")[0]
        netloc = f"{user}@127.0.0.1:{proxy.port}" if user else f"127.0.0.1:{proxy.port}"
        through = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
        if kind == "redis":
            kit = Kit(kind=kind, redis_url=through)
        else:
            assert schema is not None
            kit = Kit(kind=kind, postgres_dsn=through, schema=schema)
        try:
            yield proxy, kit
        finally:
            if kind == "redis":
                Kit(kind=kind, redis_url=url, group=kit.group).clean()


@pytest.fixture
def schema(server: tuple[str, str], request: pytest.FixtureRequest) -> str | None:
    """The session's PostgreSQL schema, for the PostgreSQL runs."""
    return str(request.getfixturevalue("postgres_schema")) if server[0] == "postgres" else None


async def test_a_black_hole_makes_the_member_fence_itself(
    server: tuple[str, str], schema: str | None, caplog: pytest.LogCaptureFixture
) -> None:
    """Syncs through a black hole time out; claims turn invalid before the lease could
    expire, each unit is reported lost, one error is logged; then it recovers."""
    async with proxied(server, schema) as (proxy, kit), fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=kit.ttl)
        caplog.clear()
        proxy.blackhole()
        took = await until(lambda: not one.owned(), within=kit.ttl)
        assert took <= kit.ttl - kit.margin + 0.1
        # claim() turns None at the deadline itself; the callbacks run a moment later
        await until(lambda: sorted(one.lost) == sorted(UNITS), within=0.5)
        assert not one.membership.ready
        assert not one.membership.connected
        await until(lambda: not one.membership.connected, within=kit.ttl)
        errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
        assert len(errors) == 1
        assert "fenced" in errors[0].getMessage()
        proxy.passthrough()
        await until(lambda: one.owned() == set(UNITS), within=kit.ttl * 3)
        assert one.membership.ready


def more(proxy: FaultProxy, than: int) -> bool:
    """Whether the proxy accepted more than ``than`` connections."""
    return proxy.connections > than


async def test_a_reset_makes_the_clients_reconnect(
    server: tuple[str, str], schema: str | None
) -> None:
    """Connections reset under the member are opened again; no claim is lost."""
    async with proxied(server, schema) as (proxy, kit), fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=kit.ttl)
        opened = proxy.connections
        for _ in range(3):
            proxy.reset()
            await until(functools.partial(more, proxy, opened), within=kit.ttl / 2)
            opened = proxy.connections
            await until(lambda: one.membership.connected, within=kit.ttl / 2)
        assert one.owned() == set(UNITS)
        assert one.lost == []
        two = await replicas.join("two")  # notices still arrive over fresh subscriptions
        await replicas.leave("one")
        await until(lambda: two.owned() == set(UNITS), within=kit.renew)
