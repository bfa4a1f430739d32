"""The fleet's behaviour, the same on every backend: Memory on a fake clock, Redis and
PostgreSQL for real (ttl 1.5 s), each test in a group of its own."""

from __future__ import annotations

import functools
import itertools
import math
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.lease.support import Engine, Kit, backend_for, fleet, until

if TYPE_CHECKING:
    from workit.lease import Membership

UNITS = [f"handler-{i}" for i in range(12)]

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(kind: str) -> object:
    """Memory on trio's MockClock, the real servers on asyncio in real time."""
    return backend_for(kind)


def converge(kit: Kit) -> float:
    """How long a fleet may take to settle after a change: two renews, and slack."""
    return 2 * kit.renew + kit.slack + 0.5


async def test_a_member_joins_and_owns_everything(kit: Kit) -> None:
    """Alone, a member is ready, connected, sees itself, and claims every unit."""
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        assert one.membership.ready
        assert one.membership.connected
        assert one.membership.member is not None
        assert one.membership.member.startswith("one#")
        await until(lambda: one.owned() == set(UNITS), within=converge(kit))
        status = one.membership.snapshot()
        assert (status.identity, status.group, status.members) == ("one", kit.group, ("one",))
        assert status.connected
        assert all(one.membership.owner_of(unit) == "one" for unit in UNITS)
        assert {event for _, event in one.events} == {"acquired"}


@pytest.mark.parametrize("count", [2, 3, 5])
async def test_units_spread_floor_and_ceil(kit: Kit, count: int) -> None:
    """With M members, each owns floor(H/M) or ceil(H/M) of the H units, and one owner each."""
    async with fleet(kit, UNITS) as replicas:
        for index in range(count):
            await replicas.join(f"r{index}")
        await until(replicas.settled, within=converge(kit) * count)
        members = replicas.replicas["r0"].membership.snapshot().members
        assert members == tuple(f"r{index}" for index in range(count))


async def test_a_joining_member_moves_only_its_share(kit: Kit) -> None:
    """A fourth member takes ceil(H/4) units at most; nothing else moves."""
    async with fleet(kit, UNITS) as replicas:
        for name in ("a", "b", "c"):
            await replicas.join(name)
        await until(replicas.settled, within=converge(kit) * 3)
        before = replicas.owners()
        await replicas.join("d")
        await until(replicas.settled, within=converge(kit) * 2)
        after = replicas.owners()
        moved = [unit for unit in UNITS if before[unit] != after[unit]]
        assert len(moved) <= math.ceil(len(UNITS) / 4)
        assert all(after[unit] == "d" for unit in moved)


async def test_a_leaving_member_moves_only_its_units(kit: Kit) -> None:
    """When a member leaves, only the units it owned change owner."""
    async with fleet(kit, UNITS) as replicas:
        for name in ("a", "b", "c"):
            await replicas.join(name)
        await until(replicas.settled, within=converge(kit) * 3)
        before = replicas.owners()
        await replicas.leave("b")
        await until(replicas.settled, within=converge(kit))
        after = replicas.owners()
        assert {unit for unit in UNITS if before[unit] != after[unit]} == {
            unit for unit, owner in before.items() if owner == "b"
        }


async def test_a_killed_member_loses_its_units_within_ttl_and_renew(kit: Kit) -> None:
    """A member that stops renewing (no release) loses its units to the others in time."""
    async with fleet(kit, UNITS) as replicas:
        for name in ("a", "b", "c"):
            await replicas.join(name)
        await until(replicas.settled, within=converge(kit) * 3)
        doomed = {unit for unit, owner in replicas.owners().items() if owner == "b"}
        replicas.kill("b")
        took = await until(
            lambda: doomed <= set(replicas.owners()), within=kit.ttl + kit.renew + kit.slack
        )
        assert took >= kit.ttl - kit.renew - kit.margin  # not before the lease could expire
        await until(replicas.settled, within=converge(kit))


async def test_a_graceful_close_hands_off_within_one_sync(kit: Kit) -> None:
    """On close, the others take the units over before their next regular renewal."""
    async with fleet(kit, UNITS) as replicas:
        for name in ("a", "b"):
            await replicas.join(name)
        await until(replicas.settled, within=converge(kit) * 2)
        start = anyio.current_time()
        await replicas.leave("a")
        await until(lambda: replicas.owners().keys() == set(UNITS), within=kit.renew)
        assert anyio.current_time() - start < kit.renew


async def test_a_release_wakes_the_others_at_once(kit: Kit) -> None:
    """A release is announced: the others claim within a fraction of a renew interval (a
    long one here), not at their next regular sync."""
    kit.ttl, kit.renew = 12.0, 4.0
    async with fleet(kit, UNITS) as replicas:
        for name in ("a", "b"):
            await replicas.join(name)
        await until(replicas.settled, within=kit.renew * 2)  # both just synced: the next
        start = anyio.current_time()
        await replicas.leave("a")  # regular syncs are a renew interval away
        await until(lambda: replicas.owners().keys() == set(UNITS), within=kit.renew / 2)
        assert anyio.current_time() - start < 0.5


async def test_a_join_is_announced_to_the_others(kit: Kit) -> None:
    """A newcomer gets its share at once: the others hear of the join and hand over."""
    kit.ttl, kit.renew = 12.0, 4.0
    async with fleet(kit, UNITS) as replicas:
        await replicas.join("a")
        await until(replicas.settled, within=kit.renew)  # a just synced
        await replicas.join("b")
        took = await until(replicas.settled, within=kit.renew / 2)
        assert took < 0.5


async def test_an_expired_member_is_refused_and_rejoins_anew(kit: Kit) -> None:
    """A member whose lease expired on the server never renews it: it drops its claims
    (reporting each lost) and joins again under a new member id."""
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=converge(kit))
        first = one.membership.member
        assert first is not None
        kit.expire(first)
        await until(lambda: one.membership.member not in (None, first), within=converge(kit))
        assert sorted(one.lost) == sorted(UNITS)
        await until(lambda: one.owned() == set(UNITS), within=converge(kit))


def holds(membership: Membership, unit: str) -> bool:
    """Whether ``membership`` has a trusted claim on ``unit``."""
    return membership.claim(unit) is not None


async def test_tokens_strictly_increase_across_owner_changes(kit: Kit) -> None:
    """Each time a unit changes owner, its token is greater than any before."""
    unit = "only"
    async with fleet(kit, [unit]) as replicas:
        tokens = []
        names = ["a", "b", "c", "d"]
        await replicas.join(names[0])
        for previous, name in itertools.pairwise(names):
            holder = replicas.replicas[previous].membership
            await until(functools.partial(holds, holder, unit), within=converge(kit))
            claim = holder.claim(unit)
            assert claim is not None
            tokens.append(claim.token)
            await replicas.join(name)
            await replicas.leave(previous)
        last = replicas.replicas[names[-1]].membership
        await until(lambda: last.claim(unit) is not None, within=converge(kit))
        claim = last.claim(unit)
        assert claim is not None
        tokens.append(claim.token)
        assert tokens == sorted(set(tokens))


async def execute(membership: Membership, unit: str, *, cooler: float) -> tuple[float, int]:
    """One execution the way an engine runs it; when it ended, and its token."""
    with anyio.fail_after(60):
        claim = await membership.acquire(unit)
    membership.started(unit, cooler=cooler)
    membership.finished(unit, cooler=cooler)
    assert claim is not None
    return anyio.current_time(), claim.token


async def test_the_ledger_keeps_the_cadence_across_a_handoff(kit: Kit) -> None:
    """After a graceful handoff the new owner starts no sooner than cooler after the last end."""
    cooler = kit.ttl / 2
    async with fleet(kit, ["job"]) as replicas:
        first = await replicas.join("first")
        ended, _ = await execute(first.membership, "job", cooler=cooler)
        second = await replicas.join("second")
        await replicas.leave("first")
        with anyio.fail_after(cooler + converge(kit)):
            await second.membership.acquire("job")
        assert anyio.current_time() >= ended + cooler


async def test_a_failover_keeps_the_cadence_conservatively(kit: Kit) -> None:
    """When the owner dies mid-execution, the next owner waits the cooler after the end of
    the dead one's lease (it may have run until it stopped trusting that lease)."""
    cooler = kit.ttl / 3
    async with fleet(kit, ["job"]) as replicas:
        first = await replicas.join("first")
        with anyio.fail_after(converge(kit)):
            await first.membership.acquire("job")
        first.membership.started("job", cooler=cooler)
        await anyio.sleep(kit.renew * 1.5)  # the running flag reaches the ledger
        second = await replicas.join("second")
        trusted_until = first.membership._trusted_until
        replicas.kill("first")
        await until(
            lambda: second.membership.claim("job") is not None,
            within=kit.ttl + kit.renew + kit.slack,
        )
        with anyio.fail_after(cooler + kit.slack + 1):
            await second.membership.acquire("job")
        assert anyio.current_time() >= trusted_until + cooler - 0.05


async def test_acquire_waits_until_due(kit: Kit) -> None:
    """``acquire`` returns only once the unit's cooler after its last end has passed."""
    cooler = kit.renew * 2
    async with fleet(kit, ["job"]) as replicas:
        one = await replicas.join("one")
        ended, token = await execute(one.membership, "job", cooler=cooler)
        assert one.membership.due("job") == pytest.approx(ended + cooler)
        again, same = await execute(one.membership, "job", cooler=cooler)
        assert again >= ended + cooler
        assert same == token  # no change of owner, no new token


async def test_should_release_is_true_exactly_for_units_assigned_elsewhere(kit: Kit) -> None:
    """A member holding everything is told to release exactly the newcomer's share, which
    then moves while the rest stays."""
    async with fleet(kit, UNITS) as replicas:
        old = await replicas.join("old")
        for unit in UNITS:  # every unit busy: nothing can move before a run boundary
            with anyio.fail_after(converge(kit)):
                await old.membership.acquire(unit)
        await replicas.join("new")
        share = len(UNITS) // 2

        def releasable() -> set[str]:
            return {unit for unit in UNITS if old.membership.should_release(unit)}

        await until(lambda: len(releasable()) == share, within=converge(kit))
        moving = releasable()
        assert old.owned() == set(UNITS)  # told, but nothing moves while running
        for unit in UNITS:
            old.membership.finished(unit, cooler=0)
        await until(lambda: replicas.replicas["new"].owned() == moving, within=converge(kit))
        assert old.owned() == set(UNITS) - moving
        assert not releasable()


async def test_units_some_members_lack_go_to_those_that_have_them(kit: Kit) -> None:
    """In a rolling deploy, a handler only newer replicas have runs only on them."""
    async with fleet(kit, UNITS) as replicas:
        old = await replicas.join("old")
        new = await replicas.join("new", [*UNITS, "fresh"])
        await until(lambda: "fresh" in new.owned(), within=converge(kit))
        assert new.membership.owner_of("fresh") == "new"
        await until(lambda: old.membership.owner_of("fresh") == "new", within=converge(kit))

        def shared_fairly() -> bool:
            owners = replicas.owners()
            counts = sorted(list(owners.values()).count(name) for name in ("old", "new"))
            return len(owners) == len(UNITS) + 1 and counts == [6, 7]

        await until(shared_fairly, within=converge(kit))


async def test_executions_never_overlap_and_keep_the_cooler(kit: Kit) -> None:
    """Engine-like loops on three members, through a graceful stop and a kill: one
    execution of a unit at a time fleet-wide, and at least the cooler between two."""
    cooler = kit.renew
    units = ["x", "y", "z"]
    runs: list[tuple[str, str, float, float]] = []
    async with fleet(kit, units) as replicas, anyio.create_task_group() as engines:
        running: dict[str, Engine] = {}
        for name in ("a", "b", "c"):
            member = await replicas.join(name)
            running[name] = Engine(member.membership, runs, cooler=cooler, takes=kit.renew / 3)
            engines.start_soon(running[name].run)
        await anyio.sleep(kit.ttl)
        running["a"].scope.cancel()  # a stops: its executions end, then it hands over
        await replicas.leave("a")
        await anyio.sleep(kit.ttl)
        running["b"].scope.cancel()  # b dies with its executions, releasing nothing
        replicas.kill("b")
        await anyio.sleep(kit.ttl + kit.renew + cooler + kit.slack)
        engines.cancel_scope.cancel()
    for unit in units:
        spans = sorted((start, end, name) for key, name, start, end in runs if key == unit)
        assert {name for _, _, name in spans} >= {"c"}
        for (_, end, _), (start, _, _) in itertools.pairwise(spans):
            assert start >= end + cooler - 1e-6, (unit, spans)
