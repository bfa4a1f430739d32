"""``roster()``: a group's live members and owners, read without joining, on every backend;
and ``from_url``, the backend a URL names."""

from __future__ import annotations

import re
import socket
import sys
import uuid
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

import workit.lease
from tests.lease.support import POSTGRES_DSN, backend_for, fleet

if TYPE_CHECKING:
    from tests.lease.support import Kit

pytestmark = pytest.mark.anyio

UNITS = ("alpha", "beta", "gamma", "delta")


@pytest.fixture
def anyio_backend(kind: str) -> object:
    """Memory on trio's MockClock, the real servers on asyncio."""
    return backend_for(kind)


def free_port() -> int:
    """A TCP port nothing listens on (just now)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def reader(kit: Kit) -> Any:
    """A backend object of the group that never joins it."""
    return kit.leases("reader")


async def test_roster_lists_the_members_and_the_owner_of_each_unit(kit: Kit) -> None:
    """Two replicas sharing four units: the roster has both, with what each declares and
    owns, and each unit's owner and token are those of the replica holding its claim."""
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        two = await replicas.join("two")
        await replicas.until(replicas.settled, within=kit.ttl * 4)
        roster = await reader(kit).roster()
        owners = replicas.owners()
        claims = {
            unit: claim.token
            for replica in (one, two)
            for unit in UNITS
            if (claim := replica.membership.claim(unit)) is not None
        }
    assert isinstance(roster, workit.lease.Roster)
    assert roster.group == kit.group
    assert [member.identity for member in roster.members] == ["one", "two"]
    for member in roster.members:
        assert member.member.startswith(f"{member.identity}#")
        assert member.declares == UNITS
        assert set(member.owns) == {
            unit for unit, owner in owners.items() if owner == member.identity
        }
        assert 0 < member.expires_in <= kit.ttl
    assert [unit.unit for unit in roster.units] == sorted(UNITS)
    for unit in roster.units:
        assert unit.owner == owners[unit.unit]
        assert unit.token == claims[unit.unit]
        assert unit.member is not None
        assert unit.member.startswith(f"{unit.owner}#")


async def test_reading_the_roster_does_not_join_the_group(kit: Kit) -> None:
    """A replica alone keeps every unit while the roster is read again and again: the reader
    is never a member, so nothing is handed over."""
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await replicas.until(lambda: one.owned() == set(UNITS), within=kit.ttl * 2)
        for _ in range(5):
            roster = await reader(kit).roster()
            assert [member.identity for member in roster.members] == ["one"]
            await anyio.sleep(kit.renew)
        assert one.owned() == set(UNITS)
        assert one.events == [(unit, "acquired") for unit in UNITS]


async def test_an_expired_member_and_its_claims_are_left_out(kit: Kit) -> None:
    """A member whose lease expired on the server is not in the roster, and the units it held
    show no owner until another member claims them."""
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await replicas.until(lambda: one.owned() == set(UNITS), within=kit.ttl * 2)
        member = one.membership.member
        assert member is not None
        replicas.kill("one")
        await anyio.lowlevel.checkpoint()
        kit.expire(member)
        roster = await reader(kit).roster()
    assert roster.members == ()
    assert roster.units == ()  # no live member declares them


async def test_a_unit_never_claimed_has_no_owner_nor_token(kit: Kit) -> None:
    """A unit a live member declares but nobody claimed yet reads as unowned, tokenless."""
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await replicas.until(lambda: one.owned() == set(UNITS), within=kit.ttl * 2)
        await replicas.join("late", units=("omega",))
        roster = await reader(kit).roster()
    [omega] = [unit for unit in roster.units if unit.unit == "omega"]
    assert omega.unit == "omega"
    assert omega.running is False
    assert (omega.owner is None) == (omega.token is None)


async def test_an_empty_group_reads_as_empty(kit: Kit) -> None:
    """A group nobody ever joined has no members and no units."""
    roster = await reader(kit).roster()
    assert (roster.members, roster.units) == ((), ())
    assert roster.to_dict() == {
        "group": kit.group,
        "backend": roster.backend,
        "members": [],
        "units": [],
    }


@pytest.mark.parametrize("kind", ["postgres"])
async def test_postgres_roster_creates_nothing(kit: Kit) -> None:
    """On a schema without the lease tables the roster is empty, and the schema stays absent."""
    import psycopg

    schema = f"workit_absent_{uuid.uuid4().hex[:12]}"
    leases = workit.lease.Postgres(kit.postgres_dsn, group=kit.group, schema=schema)
    roster = await leases.roster()
    assert (roster.members, roster.units) == ((), ())
    async with await psycopg.AsyncConnection.connect(kit.postgres_dsn) as connection:
        cursor = await connection.execute("SELECT to_regnamespace(%s)", [schema])
        assert await cursor.fetchone() == (None,)


@pytest.mark.parametrize("kind", ["memory"])
async def test_to_dict_is_the_documented_document(kit: Kit) -> None:
    """``to_dict()`` has exactly the documented keys, seconds rounded to milliseconds."""
    async with fleet(kit, UNITS[:1]) as replicas:
        await replicas.join("one")
        await replicas.until(lambda: replicas.owners() == {"alpha": "one"}, within=kit.ttl)
        document = (await reader(kit).roster()).to_dict()
    assert set(document) == {"group", "backend", "members", "units"}
    [member] = document["members"]
    assert set(member) == {"identity", "member", "declares", "owns", "expires_in"}
    assert (member["declares"], member["owns"]) == (["alpha"], ["alpha"])
    assert member["expires_in"] == round(member["expires_in"], 3)
    [unit] = document["units"]
    assert set(unit) == {"unit", "owner", "member", "token", "running", "due_in"}
    assert (unit["unit"], unit["owner"], unit["running"]) == ("alpha", "one", False)
    assert isinstance(unit["token"], int)


@pytest.mark.parametrize("kind", ["memory"])
async def test_memory_roster_fails_during_an_outage(kit: Kit) -> None:
    """An unreachable backend is an error, not an empty roster."""
    leases = reader(kit)
    assert kit.memory is not None
    with kit.memory.outage(), pytest.raises(ConnectionError):
        await leases.roster()


@pytest.mark.parametrize("server", ["redis", "postgres"])
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_an_unreachable_server_is_an_error_within_the_bound(server: str) -> None:
    """Nothing listens at the URL: roster() raises (within a second), never hangs."""
    port = free_port()
    url = (
        f"redis://127.0.0.1:{port}/0"
        if server == "redis"
        else f"postgresql://postgres@127.0.0.1:{port}/test"
    )
    leases = workit.lease.from_url(url, group="nobody")
    with anyio.fail_after(5), pytest.raises(Exception) as raised:  # any driver error
        await leases.roster()
    assert not isinstance(raised.value, TimeoutError)


# from_url


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("redis://127.0.0.1:6379/0", "Redis"),
        ("rediss://cache.example:6380/1", "Redis"),
        (POSTGRES_DSN, "Postgres"),
        ("postgres://app@db/app", "Postgres"),
    ],
)
def test_from_url_builds_the_backend_of_the_scheme(url: str, kind: str) -> None:
    """Each accepted scheme gives its backend, with the group and settings given."""
    leases = workit.lease.from_url(url, group="billing", ttl=6, identity="replica-1")
    assert type(leases).__name__ == kind
    assert (leases.group, leases.settings.ttl, leases.settings.identity) == (
        "billing",
        6.0,
        "replica-1",
    )


def test_from_url_passes_the_schema_to_postgres() -> None:
    """``schema`` reaches the PostgreSQL backend; its default is ``public``."""
    assert workit.lease.from_url("postgresql://db/app", group="g").schema == "public"  # type: ignore[union-attr]
    leases = workit.lease.from_url("postgresql://db/app", group="g", schema="jobs")
    assert isinstance(leases, workit.lease.Postgres)
    assert leases.schema == "jobs"


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://db/app", r"scheme 'mysql://' is not one workit knows: use redis://, rediss://, "),
        ("memory://g", r"scheme 'memory://'"),
        ("127.0.0.1:6379", r"must start with redis://, rediss://, postgresql://, postgres://"),
        ("", r"must start with"),
    ],
)
def test_from_url_refuses_another_scheme_naming_it(url: str, message: str) -> None:
    """A URL of another scheme, or none, is a ValueError naming it and the accepted ones."""
    with pytest.raises(ValueError, match=message):
        workit.lease.from_url(url, group="g")


def test_from_url_refuses_a_schema_for_redis() -> None:
    """``schema`` is PostgreSQL's: with a Redis URL it is a ValueError."""
    with pytest.raises(ValueError, match="schema is for PostgreSQL"):
        workit.lease.from_url("redis://127.0.0.1", group="g", schema="jobs")


def test_from_url_passes_bad_settings_on_as_the_backend_refuses_them() -> None:
    """An empty group or a bad ttl is the backend's own ValueError."""
    with pytest.raises(ValueError, match="group must be a non-empty string"):
        workit.lease.from_url("redis://127.0.0.1", group="")
    with pytest.raises(ValueError, match="ttl must be a positive"):
        workit.lease.from_url("postgresql://db/app", group="g", ttl=0)


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [
        ("redis://127.0.0.1", "redis", "workit-jobs[redis]"),
        ("postgresql://db/app", "psycopg", "workit-jobs[postgres]"),
    ],
)
def test_from_url_without_the_driver_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, url: str, driver: str, extra: str
) -> None:
    """With the driver missing, ImportError names the extra to install."""
    module = "redis" if driver == "redis" else "postgres"
    for name in list(sys.modules):
        if name == driver or name.startswith(f"{driver}."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, driver, None)
    monkeypatch.delitem(sys.modules, f"workit.lease.{module}", raising=False)
    with pytest.raises(ImportError, match=re.escape(extra)):
        workit.lease.from_url(url, group="g")
