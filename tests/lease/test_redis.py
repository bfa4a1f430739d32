"""What only the Redis backend has: its keys, its script cache, data lost on a restart."""

from __future__ import annotations

import contextlib
import hashlib

import anyio
import pytest
import redis

import workit.lease.redis as backend
from tests.lease.support import Kit, fleet, until
from workit.lease._store import Hold, Request

pytestmark = pytest.mark.anyio

UNITS = ["a", "b", "c"]


@pytest.fixture
def anyio_backend() -> str:
    """redis-py's client is asyncio-only."""
    return "asyncio"


@pytest.fixture
def kit(redis_url: str) -> Kit:
    """A Redis kit of the test's own group (cleaned by the caller's ``clean``)."""
    return Kit(kind="redis", redis_url=redis_url)


def client(kit: Kit) -> redis.Redis:
    return redis.Redis.from_url(kit.redis_url, decode_responses=True)


async def test_every_key_is_under_the_groups_hash_tag(kit: Kit) -> None:
    """The fleet's keys are the documented ones, all under ``workit:{group}:`` (``hold``
    only once data was lost, ``departed`` once a member expired)."""
    try:
        async with fleet(kit, UNITS) as replicas:
            one = await replicas.join("one")
            await until(lambda: one.owned() == set(UNITS), within=kit.ttl)
            with contextlib.closing(client(kit)) as direct:
                found = set(direct.scan_iter(match=f"workit:{{{kit.group}}}:*"))
            assert found <= set(backend.keys(kit.group))
            unused = {f"workit:{{{kit.group}}}:{name}" for name in ("hold", "departed")}
            assert set(backend.keys(kit.group)) - found == unused
    finally:
        kit.clean()


async def test_tokens_keep_increasing_after_the_data_is_lost(kit: Kit) -> None:
    """A server that restarts without persistence (simulated: the group's keys deleted)
    still never hands out a token it handed out before; members rejoin by themselves."""
    try:
        async with fleet(kit, UNITS) as replicas:
            one = await replicas.join("one")
            await until(lambda: one.owned() == set(UNITS), within=kit.ttl)
            before = {unit: one.membership.claim(unit) for unit in UNITS}
            member = one.membership.member
            kit.clean()
            await until(lambda: one.membership.member != member, within=kit.ttl)
            await until(lambda: one.owned() == set(UNITS), within=kit.ttl)
            highest = max(claim.token for claim in before.values() if claim is not None)
            for unit in UNITS:
                claim = one.membership.claim(unit)
                assert claim is not None
                assert claim.token > highest
    finally:
        kit.clean()


async def test_units_claimed_after_the_data_is_lost_wait_out_the_forgotten_leases(
    kit: Kit,
) -> None:
    """After a restart without persistence, a unit claimed anew is not due before the
    leases the server forgot could have run out: their holders may still trust them."""
    try:
        async with fleet(kit, UNITS) as replicas:
            one = await replicas.join("one")
            two = await replicas.join("two")
            await until(replicas.settled, within=kit.ttl * 3)
            members = {one.membership.member, two.membership.member}
            lost = anyio.current_time()
            kit.clean()
            # Until both have found themselves forgotten, the one that has not yet
            # still trusts its old claims beside the other's new ones (those are
            # held back, which is what this test is about).
            await until(
                lambda: (
                    not members & {one.membership.member, two.membership.member}
                    and replicas.settled()
                ),
                within=kit.ttl * 3,
            )
            for replica in (one, two):
                for unit in replica.owned():
                    due = replica.membership.due(unit)
                    assert due is not None
                    assert due >= lost + kit.ttl - kit.margin
    finally:
        kit.clean()


async def test_a_script_missing_from_the_cache_is_loaded_again(
    kit: Kit, monkeypatch: pytest.MonkeyPatch
) -> None:
    """EVALSHA of a script the server lost (NOSCRIPT) loads it and runs it again."""
    unique = backend.SCRIPT + f"\n-- {kit.group}\n"
    monkeypatch.setattr(backend, "SCRIPT", unique)
    monkeypatch.setattr(backend, "_SHA", hashlib.sha1(unique.encode()).hexdigest())
    try:
        async with kit.opened() as store:
            assert isinstance(store, backend._RedisStore)
            store._loaded = True  # as if loaded before a restart emptied the cache
            request = Request(member="m", identity="m", units=("a",), ttl=kit.ttl, join=True)
            assert (await store.sync(request)).alive
            with contextlib.closing(client(kit)) as direct:
                assert direct.script_exists(backend._SHA) == [True]
    finally:
        kit.clean()


async def test_a_claim_reply_carries_exact_tokens(kit: Kit) -> None:
    """Tokens near 2**50 (server time in µs) survive the script and the reply intact."""
    try:
        async with kit.opened() as store:
            join = Request(member="m", identity="m", units=("a",), ttl=kit.ttl, join=True)
            await store.sync(join)
            reply = await store.sync(
                Request(
                    member="m",
                    identity="m",
                    units=("a",),
                    ttl=kit.ttl,
                    claims=(Hold(unit="a", token=0),),
                )
            )
            (granted,) = reply.claimed
            with contextlib.closing(client(kit)) as direct:
                counter = int(direct.get(backend.keys(kit.group)[4]) or 0)
            assert granted.token == counter > 10**15
    finally:
        kit.clean()
