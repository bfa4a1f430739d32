"""The membership state machine on Memory, under trio's MockClock: fencing, outages,
expiry, skew, callbacks, the engine-facing calls."""

from __future__ import annotations

import itertools
import logging
import math
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.lease.support import LOGGER, Engine, Kit, fleet, until
from tests.support import fake_clock
from workit.lease import Memory

if TYPE_CHECKING:
    from workit.lease._store import Record, Reply, Request

pytestmark = [pytest.mark.anyio, fake_clock()]

UNITS = [f"handler-{i}" for i in range(6)]
TTL = 15.0
RENEW = 3.0
MARGIN = 1.0


def memory_kit() -> Kit:
    return Kit(kind="memory")


def errors(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


async def test_an_outage_fences_no_later_than_the_lease_allows(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """With the store failing, claims turn invalid by t0 + ttl - margin (t0: the start of
    the last good sync), not before t0 + ttl - margin - renew."""
    kit = memory_kit()
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 2)
        assert kit.memory is not None
        claims = {unit: one.membership.claim(unit) for unit in UNITS}
        with kit.memory.outage():
            cut = anyio.current_time()
            took = await until(lambda: not one.owned(), within=TTL, step=0.01)
            assert TTL - MARGIN - RENEW - 0.01 <= took <= TTL - MARGIN + 0.01
            assert not one.membership.ready
            assert not one.membership.connected
            assert all(claim is not None and not claim.valid() for claim in claims.values())
            assert sorted(one.lost) == sorted(UNITS)  # on_lost once per owned unit
            await anyio.sleep(TTL * 3)  # a long outage: still one error
            assert sorted(one.lost) == sorted(UNITS)
            assert anyio.current_time() - cut > TTL
        assert len(errors(caplog)) == 1
        assert "fenced" in errors(caplog)[0].getMessage()


async def test_after_a_long_outage_the_member_rejoins_anew() -> None:
    """When the server expired it during the outage, the member joins under a new id."""
    kit = memory_kit()
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 2)
        first = one.membership.member
        assert kit.memory is not None
        with kit.memory.outage():
            await anyio.sleep(TTL * 2)
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 3)
        assert one.membership.member != first
        assert one.membership.ready


async def test_a_short_outage_changes_nothing() -> None:
    """An outage shorter than the trusted window loses no claim and fires no callback."""
    kit = memory_kit()
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 2)
        assert kit.memory is not None
        with kit.memory.outage():
            await anyio.sleep(TTL - MARGIN - RENEW - 1)
            assert one.owned() == set(UNITS)
        await until(lambda: one.membership.connected, within=RENEW)
        assert one.owned() == set(UNITS)
        assert one.lost == []


async def test_a_member_fenced_but_still_live_claims_again_under_new_tokens() -> None:
    """Fenced by its own clock but not yet expired on the server, a member carries on
    under the same id and takes its units back with new tokens; old claims stay invalid."""
    kit = memory_kit()
    kit.memory = Memory(group=kit.group, ttl=TTL, renew=0.5)  # retries land inside the margin
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 2)
        member = one.membership.member
        old = {unit: one.membership.claim(unit) for unit in UNITS}
        with kit.memory.outage():
            await until(lambda: not one.owned(), within=TTL)
        await until(lambda: one.owned() == set(UNITS), within=MARGIN)
        assert one.membership.member == member
        for unit, claim in old.items():
            assert claim is not None
            assert not claim.valid()
            fresh = one.membership.claim(unit)
            assert fresh is not None
            assert fresh.token > claim.token


async def test_a_stalled_backend_fences_on_time() -> None:
    """A sync that hangs (a black hole) does not hold fencing back."""
    kit = memory_kit()
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 2)
        assert kit.memory is not None
        with kit.memory.stall():
            took = await until(lambda: not one.owned(), within=TTL, step=0.01)
            assert took <= TTL - MARGIN + 0.01
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 3)


async def test_an_unreachable_backend_at_start_is_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A member that cannot reach the backend keeps trying with a warning, never crashing."""
    kit = memory_kit()
    kit.leases("probe")
    assert kit.memory is not None
    async with fleet(kit, UNITS) as replicas, anyio.create_task_group() as tasks:
        with kit.memory.outage():
            tasks.start_soon(replicas.join, "late")
            await anyio.sleep(TTL)
            assert "late" not in replicas.replicas
        await until(lambda: "late" in replicas.replicas, within=RENEW * 2)
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1
        assert "retrying" in warnings[0].getMessage()


@pytest.mark.parametrize("skew", [3600.0, -3600.0])
async def test_a_skewed_server_clock_changes_nothing(skew: float) -> None:
    """Only the server's clock is compared: an hour of skew either way is harmless."""
    kit = memory_kit()
    kit.leases("probe")
    assert kit.memory is not None
    kit.memory.skew = skew
    async with fleet(kit, ["job"]) as replicas:
        one = await replicas.join("one")
        ended = (await _run_once(one.membership, cooler=10))[0]
        await _run_once(one.membership, cooler=10)
        assert anyio.current_time() >= ended + 10
        two = await replicas.join("two")
        await replicas.leave("one")
        await until(lambda: two.owned() == {"job"}, within=RENEW)
        due = two.membership.due("job")
        assert due is not None
        assert anyio.current_time() - 1 <= due <= anyio.current_time() + 10


async def _run_once(membership: object, *, cooler: float) -> tuple[float, int]:
    from workit.lease import Membership

    assert isinstance(membership, Membership)
    claim = await membership.acquire("job")
    membership.started("job")
    membership.finished("job", cooler=cooler)
    assert claim is not None
    return anyio.current_time(), claim.token


@pytest.mark.parametrize("size", [1, 10_000])
async def test_ten_thousand_units_cost_no_more_syncs_than_one(size: int) -> None:
    """Ownership needs no per-unit renewal: a member syncs once per renew interval however
    many units it holds."""
    kit = memory_kit()
    units = [f"u{i}" for i in range(size)]
    async with fleet(kit, units) as replicas:
        one = await replicas.join("one")
        await until(lambda: len(one.owned()) == size, within=RENEW * 2)
        assert kit.memory is not None
        before = kit.memory.syncs
        await anyio.sleep(RENEW * 10)
        assert 9 <= kit.memory.syncs - before <= 11


async def test_events_report_acquired_released_and_lost() -> None:
    """on_event sees each unit acquired, then released on close or lost on a fence."""
    kit = memory_kit()
    async with fleet(kit, ["a", "b"]) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == {"a", "b"}, within=RENEW * 2)
        assert kit.memory is not None
        with kit.memory.outage():
            await until(lambda: not one.owned(), within=TTL)
        await until(lambda: one.owned() == {"a", "b"}, within=RENEW * 3)
        await replicas.leave("one")
    assert [event for unit, event in one.events if unit == "a"] == [
        "acquired",
        "lost",
        "acquired",
        "released",
    ]


async def test_a_unit_found_taken_is_reported_lost() -> None:
    """When the server shows another owner, the member reports the unit lost at once."""
    kit = memory_kit()
    async with fleet(kit, ["job"]) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == {"job"}, within=RENEW * 2)
        assert kit.memory is not None
        server = kit.memory._server
        record = server.records["job"]
        from dataclasses import replace

        server.records["job"] = replace(
            record, owner="intruder", token=record.token + 100, revision=record.token + 100
        )
        await until(lambda: one.lost == ["job"], within=RENEW * 2)
        assert one.membership.claim("job") is None


async def test_a_broken_callback_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    """A callback that raises never breaks the membership; it is reported once."""
    kit = memory_kit()

    def broken(unit: str, event: str = "") -> None:
        raise RuntimeError("callback bug")

    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        one.membership.on_event(broken)
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 2)
    failed = [r for r in caplog.records if r.getMessage() == "lease callback failed"]
    assert len(failed) == 1


async def test_acquire_of_an_undeclared_unit_is_a_value_error() -> None:
    """Asking for a unit the membership does not declare is a bug of the caller."""
    membership = Memory(group="g").membership(["a"], engine="e", logger=LOGGER)
    with pytest.raises(ValueError, match="'b'"):
        await membership.acquire("b")
    for call in (membership.started, membership.release):
        with pytest.raises(ValueError, match="'b'"):
            call("b")


async def test_a_membership_runs_once() -> None:
    """run() a second time is a RuntimeError: one membership per engine run."""
    kit = memory_kit()
    async with fleet(kit, ["a"]) as replicas:
        one = await replicas.join("one")
        await replicas.leave("one")
        with pytest.raises(RuntimeError, match="runs once"):
            await one.membership.run()


async def test_close_before_run_returns_and_frees_the_units() -> None:
    """A membership closed without running lets another of the same units be made."""
    replica = Memory(group="g").replica("r")
    membership = replica.membership(["a"], engine="e", logger=LOGGER)
    await membership.close()
    replica.membership(["a"], engine="e", logger=LOGGER)


async def test_close_gives_up_when_the_backend_is_down() -> None:
    """close() returns within its bound even when nothing can be released."""
    kit = memory_kit()
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=RENEW * 2)
        assert kit.memory is not None
        with kit.memory.outage():
            start = anyio.current_time()
            with anyio.fail_after(10):
                await one.membership.close(within=2)
            assert anyio.current_time() - start == pytest.approx(2, abs=0.01)
            replicas.replicas.pop("one")


async def test_release_invalidates_the_claim_at_once() -> None:
    """release() turns the claim invalid now and sends the release at once; a unit still
    assigned to this member comes back under a new token."""
    kit = memory_kit()
    async with fleet(kit, ["a", "b"]) as replicas:
        one = await replicas.join("one")
        await until(lambda: one.owned() == {"a", "b"}, within=RENEW * 2)
        claim = one.membership.claim("a")
        assert claim is not None
        one.membership.release("a")
        assert one.membership.claim("a") is None
        assert not claim.valid()
        took = await until(lambda: "a" in one.owned(), within=RENEW)
        assert took < RENEW / 10
        again = one.membership.claim("a")
        assert again is not None
        assert again.token > claim.token
        assert ("a", "released") in one.events


async def test_a_release_reaches_the_other_members_at_once() -> None:
    """A member told to release a unit at a run boundary hands it over within one sync."""
    kit = memory_kit()
    async with fleet(kit, ["a", "b"]) as replicas:
        one = await replicas.join("one")
        for unit in ("a", "b"):
            await one.membership.acquire(unit)
        two = await replicas.join("two")
        await until(
            lambda: any(one.membership.should_release(u) for u in ("a", "b")), within=RENEW * 2
        )
        moving = next(u for u in ("a", "b") if one.membership.should_release(u))
        start = anyio.current_time()
        one.membership.release(moving)
        await until(lambda: moving in two.owned(), within=RENEW)
        assert anyio.current_time() - start < RENEW / 10


async def test_due_and_owner_of_describe_units_owned_elsewhere() -> None:
    """A member sees who owns each unit and when the fleet allows its next start."""
    kit = memory_kit()
    async with fleet(kit, ["job"]) as replicas:
        one = await replicas.join("one")
        ended, _ = await _run_once(one.membership, cooler=100)
        two = await replicas.join("two")
        assert two.membership.owner_of("job") == "one"
        assert two.membership.due("job") is None  # the ledger reached it not yet
        await anyio.sleep(RENEW * 2)
        await replicas.leave("one")
        await until(lambda: two.owned() == {"job"}, within=RENEW)
        due = two.membership.due("job")
        assert due is not None
        assert due >= ended + 100
        assert math.isclose(due, ended + 100, abs_tol=RENEW)


async def test_engines_keep_one_at_a_time_through_a_network_cut() -> None:
    """A replica cut off from the backend cancels its executions before the others may
    take its units over; whole outages run nothing anywhere."""
    kit = memory_kit()
    runs: list[tuple[str, str, float, float]] = []
    async with fleet(kit, UNITS) as replicas, anyio.create_task_group() as engines:
        for name in ("a", "b"):
            member = await replicas.join(name)
            engines.start_soon(Engine(member.membership, runs, cooler=1, takes=TTL * 2).run)
        await anyio.sleep(TTL)
        assert kit.memory is not None
        with kit.memory.outage("a"):
            await until(lambda: replicas.replicas["b"].owned() == set(UNITS), within=TTL * 2)
            await anyio.sleep(TTL)
        await anyio.sleep(TTL)
        with kit.memory.outage():
            await anyio.sleep(TTL * 2)
        await anyio.sleep(TTL * 3)
        engines.cancel_scope.cancel()
    for unit in UNITS:
        spans = sorted((start, end) for key, _, start, end in runs if key == unit)
        for (_, end), (start, _) in itertools.pairwise(spans):
            assert start >= end + 1, (unit, spans)


def _record(kit: Kit, unit: str) -> Record:
    assert kit.memory is not None
    return kit.memory._server.records[unit]


async def test_ends_within_the_ttl_are_written_only_with_the_release() -> None:
    """An end whose next start falls within the lease a renewal gives changes nothing a
    takeover would do: it is not written; the release carries the ledger."""
    kit = memory_kit()
    async with fleet(kit, ["job"]) as replicas:
        one = await replicas.join("one")
        first, _ = await _run_once(one.membership, cooler=1)
        await anyio.sleep(RENEW * 2)  # the first end tells the cooler, and is written
        ended = first
        for _ in range(10):
            ended, _ = await _run_once(one.membership, cooler=1)
            await anyio.sleep(RENEW)
        record = _record(kit, "job")
        assert record.cooler == 1
        assert record.last_finished == pytest.approx(first, abs=0.01)
        await replicas.leave("one")
    record = _record(kit, "job")
    assert record.last_finished is not None
    assert record.next_due is not None
    assert math.isclose(record.next_due, ended + 1, abs_tol=0.01)


async def test_a_run_seen_at_a_renewal_is_written_and_so_is_its_end() -> None:
    """The running flag is written when an execution outlasts a renewal, and cleared after."""
    kit = memory_kit()
    async with fleet(kit, ["job"]) as replicas:
        one = await replicas.join("one")
        await one.membership.acquire("job")
        one.membership.started("job")
        await anyio.sleep(RENEW * 2)
        assert _record(kit, "job").running
        one.membership.finished("job", cooler=1)
        await anyio.sleep(RENEW * 2)
        assert not _record(kit, "job").running


async def test_a_changed_cooler_is_written() -> None:
    """A longer cooler (a backoff) is written at the next renewal, and so is a shorter one
    again; a next start past the lease is written with every end."""
    kit = memory_kit()
    async with fleet(kit, ["job"]) as replicas:
        one = await replicas.join("one")
        for cooler in (1.0, TTL * 2, 1.0):
            ended, _ = await _run_once(one.membership, cooler=cooler)
            await anyio.sleep(RENEW * 2)
            assert _record(kit, "job").cooler == cooler
            if cooler > TTL:
                assert _record(kit, "job").next_due == pytest.approx(ended + cooler, abs=0.01)
            await until(lambda: one.membership.claim_now("job") is not None, within=TTL * 3)
            one.membership.finished("job", cooler=cooler)


async def test_a_server_slower_than_the_renew_interval_keeps_the_member_trusted(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Syncs that take longer than ``renew`` (a busy server) but end while the last
    renewal's trust lasts are waited for: the member stays trusted and keeps its units,
    instead of cancelling every attempt and going round fencing and rejoining."""
    kit = memory_kit()
    kit.leases("one")  # makes kit.memory
    async with fleet(kit, UNITS) as replicas:
        assert kit.memory is not None
        kit.memory.latency = RENEW * 1.5  # within ttl - margin - renew = 11 s
        one = await replicas.join("one")
        await until(lambda: one.owned() == set(UNITS), within=TTL)
        for _ in range(40):
            await anyio.sleep(RENEW / 2)
            assert one.owned() == set(UNITS)
        assert one.lost == []
        assert errors(caplog) == []


def _requests(kit: Kit) -> list[Request]:
    """Every request the kit's in-memory server applies from now on."""
    kit.leases("one")  # makes kit.memory
    assert kit.memory is not None
    server = kit.memory._server
    apply = server.apply
    seen: list[Request] = []

    def counted(request: Request) -> Reply:
        seen.append(request)
        return apply(request)

    server.apply = counted  # type: ignore[method-assign]
    return seen


async def test_a_large_share_is_claimed_in_bounded_syncs_within_a_renew() -> None:
    """A member taking 2,500 units claims at most CLAIMS_PER_SYNC of them per sync, in
    follow-ups without waiting, and holds them all within one renew interval."""
    from workit.lease._membership import CLAIMS_PER_SYNC

    units = [f"u{n:04}" for n in range(2_500)]
    kit = memory_kit()
    kit.leases("one")  # makes kit.memory
    requests = _requests(kit)
    async with fleet(kit, units) as replicas:
        one = await replicas.join("one")
        took = await until(lambda: one.owned() == set(units), within=RENEW)
    assert took < RENEW
    sizes = [len(request.claims) for request in requests]
    assert max(sizes) == CLAIMS_PER_SYNC
    assert sum(sizes) == len(units)


async def test_a_stopping_member_hands_each_unit_over_straight_to_its_next_owner() -> None:
    """stopping() hands every idle unit to the member the fleet assigns it next, at once
    and without a claim of that member's; the running unit goes once it ends, then the
    member leaves."""
    kit = memory_kit()
    kit.leases("one")  # makes kit.memory
    requests = _requests(kit)
    assert kit.memory is not None
    server = kit.memory._server
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        two = await replicas.join("two")
        await until(replicas.settled, within=RENEW * 3)
        busy = sorted(one.owned())[0]
        await one.membership.acquire(busy)
        one.membership.started(busy)
        requests.clear()
        start = anyio.current_time()
        await one.membership.stopping()
        assert anyio.current_time() - start < RENEW / 10
        await until(lambda: two.owned() == set(UNITS) - {busy}, within=RENEW / 10)
        assert one.owned() == {busy}
        one.membership.finished(busy, cooler=1)
        await until(lambda: two.owned() == set(UNITS), within=RENEW / 10)
        await replicas.leave("one")
        assert [hold for request in requests for hold in request.claims] == []
        assert list(server.members) == [two.membership.member]


async def test_every_wait_in_acquire_ends_with_none_once_the_member_is_stopping() -> None:
    """stopping() ends the waits of units this member does not own or that are not due yet:
    acquire() returns None at once, and keeps returning it; the engine's loops end."""
    kit = memory_kit()
    async with fleet(kit, UNITS) as replicas:
        one = await replicas.join("one")
        two = await replicas.join("two")
        await until(replicas.settled, within=RENEW * 3)
        resting, mine = sorted(one.owned())[:2]
        assert await one.membership.acquire(resting) is not None
        one.membership.started(resting)
        one.membership.finished(resting, cooler=100)  # not due for long
        waiting = [*sorted(two.owned()), resting]
        returned: dict[str, object] = {}

        async def wait(unit: str) -> None:
            returned[unit] = await one.membership.acquire(unit)

        with anyio.fail_after(RENEW / 10):
            async with anyio.create_task_group() as tasks:
                for unit in waiting:
                    tasks.start_soon(wait, unit)
                await anyio.wait_all_tasks_blocked()
                assert returned == {}
                await one.membership.stopping()
        assert returned == dict.fromkeys(waiting)
        assert await one.membership.acquire(mine) is None
