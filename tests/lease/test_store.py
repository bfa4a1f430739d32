"""The server rules of one sync, the same on every backend: renewal, compare-and-set
claims and releases, the ledger, incremental reads, and races between members."""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import TYPE_CHECKING

import anyio
import pytest

from tests.lease.support import Kit, backend_for
from workit.lease._store import DEPARTED_KEPT, Hold, Ledger, Request

if TYPE_CHECKING:
    from collections.abc import AsyncIterator

    from workit.lease._store import Reply, Store

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend(kind: str) -> object:
    """Memory on trio's MockClock, the real servers on asyncio."""
    return backend_for(kind)


class Member:
    """A hand-driven member: one store connection and what it last learnt."""

    def __init__(self, store: Store, name: str, units: tuple[str, ...], ttl: float) -> None:
        self.store = store
        self.request = Request(member=name, identity=name, units=units, ttl=ttl)
        self.records: dict[str, int] = {}

    async def sync(self, **changes: object) -> Reply:
        reply = await self.store.sync(replace(self.request, **changes))  # type: ignore[arg-type]
        for record in reply.records:
            self.records[record.unit] = record.token
        return reply

    async def join(self) -> Reply:
        return await self.sync(join=True)

    async def claim(self, unit: str, observed: int | None = None) -> int | None:
        token = self.records.get(unit, 0) if observed is None else observed
        reply = await self.sync(claims=(Hold(unit=unit, token=token),))
        granted = {hold.unit: hold.token for hold in reply.claimed}
        return granted.get(unit)


@contextlib.asynccontextmanager
async def members(kit: Kit, *names: str) -> AsyncIterator[list[Member]]:
    """Joined members ``names``, each with its own connection."""
    async with contextlib.AsyncExitStack() as stack:
        joined = []
        for name in names:
            store = await stack.enter_async_context(kit.opened())
            member = Member(store, name, ("job", "other"), kit.ttl)
            assert (await member.join()).alive
            joined.append(member)
        yield joined


def record(reply: Reply, unit: str) -> object:
    return next(r for r in reply.records if r.unit == unit)


async def test_a_join_lists_the_member_and_renewals_keep_it(kit: Kit) -> None:
    """A joined member is in the member list; a renewal is accepted and reads no list again."""
    async with members(kit, "a") as (a,):
        first = await a.sync()
        assert first.alive
        assert first.members is not None
        assert [(m.member, m.identity, m.units) for m in first.members] == [
            ("a", "a", ("job", "other"))
        ]
        again = await a.sync(known_members=first.members_revision)
        assert again.alive
        assert again.members is None


async def test_an_unknown_member_is_refused_and_nothing_applies(kit: Kit) -> None:
    """A renewal of a member the server does not have (expired) is refused, claims too."""
    async with kit.opened() as store:
        stranger = Member(store, "ghost", ("job",), kit.ttl)
        reply = await stranger.sync(claims=(Hold(unit="job", token=0),))
        assert not reply.alive
        assert reply.claimed == ()
    async with members(kit, "a") as (a,):
        assert await a.claim("job") is not None  # the refused claim never happened


async def test_an_expired_member_is_never_renewed(kit: Kit) -> None:
    """Once its lease ran out, a member's renewal is refused, however soon it comes."""
    async with members(kit, "a") as (a,):
        kit.expire("a")
        assert not (await a.sync()).alive


async def test_a_claim_needs_the_token_the_claimer_observed(kit: Kit) -> None:
    """A claim with a token that is no longer the record's is refused."""
    async with members(kit, "a", "b") as (a, b):
        first = await a.claim("job")
        assert first is not None
        await a.sync(releases=(Hold(unit="job", token=first),))
        assert await b.claim("job", observed=0) is None  # it saw no record: stale
        assert await b.claim("job", observed=first) is not None


async def test_a_live_owner_keeps_its_unit(kit: Kit) -> None:
    """A unit owned by a live member cannot be claimed, even with its current token."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        assert await b.claim("job", observed=token) is None


async def test_a_dead_owners_unit_can_be_claimed_with_a_greater_token(kit: Kit) -> None:
    """When the owner expired, its unit goes to the claimer under a new, greater token."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        kit.expire("a")
        taken = await b.claim("job", observed=token)
        assert taken is not None
        assert taken > token


async def test_a_release_needs_the_owners_token(kit: Kit) -> None:
    """A release with a stale token, or by another member, changes nothing."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        await a.sync(releases=(Hold(unit="job", token=token - 1),))
        await b.sync(releases=(Hold(unit="job", token=token),))
        assert await b.claim("job", observed=token) is None


async def test_the_ledger_is_kept_by_server_time(kit: Kit) -> None:
    """An end reported as 'ago' seconds before sending becomes next_due = now - ago + cooler,
    and the next owner after a release gets it unchanged."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        ledger = Ledger(unit="job", token=token, running=False, finished_ago=2.0, cooler=50.0)
        sent = await a.sync(ledgers=(ledger,), releases=(Hold(unit="job", token=token),))
        reply = await b.sync(claims=(Hold(unit="job", token=token),))
        assert [hold.unit for hold in reply.claimed] == ["job"]
        taken = record(reply, "job")
        assert taken.next_due == pytest.approx(sent.now - 2 + 50, abs=0.5)  # type: ignore[attr-defined]
        assert taken.last_finished == pytest.approx(sent.now - 2, abs=0.5)  # type: ignore[attr-defined]
        assert taken.cooler == 50  # type: ignore[attr-defined]


async def test_a_release_to_a_live_member_hands_the_unit_over_with_its_ledger(kit: Kit) -> None:
    """A release naming another live member gives it the unit under a new, greater token,
    with the ledger the release carried: no claim needed, and the old token is worth nothing."""
    async with members(kit, "a", "b", "c") as (a, b, c):
        token = await a.claim("job")
        assert token is not None
        ledger = Ledger(unit="job", token=token, running=False, finished_ago=2.0, cooler=50.0)
        sent = await a.sync(ledgers=(ledger,), releases=(Hold(unit="job", token=token, to="b"),))
        handed = record(await b.sync(), "job")
        assert handed.owner == "b"  # type: ignore[attr-defined]
        assert handed.token > token  # type: ignore[attr-defined]
        assert handed.next_due == pytest.approx(sent.now - 2 + 50, abs=0.5)  # type: ignore[attr-defined]
        assert handed.cooler == 50  # type: ignore[attr-defined]
        assert await c.claim("job", observed=token) is None
        assert await c.claim("job", observed=handed.token) is None  # type: ignore[attr-defined]


@pytest.mark.parametrize("heir", ["ghost", "a"])
async def test_a_release_to_no_other_live_member_leaves_the_unit_to_be_claimed(
    kit: Kit, heir: str
) -> None:
    """Handed to a member that is not live, or to the releaser itself, a unit is released."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        await a.sync(releases=(Hold(unit="job", token=token, to=heir),))
        assert record(await b.sync(), "job").owner == ""  # type: ignore[attr-defined]
        assert await b.claim("job", observed=token) is not None


async def test_a_drain_declares_no_units_yet_keeps_what_the_member_owns(kit: Kit) -> None:
    """A drain empties the member's declared units (a change of the member list), while
    its lease lives on: its units cannot be claimed, and it still renews."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        before = await b.sync()
        drained = await a.sync(drain=True)
        assert drained.alive
        after = await b.sync(known_members=before.members_revision)
        assert after.members is not None
        assert {m.member: m.units for m in after.members} == {"a": (), "b": ("job", "other")}
        again = await a.sync(drain=True, known_members=after.members_revision)
        assert again.alive
        assert again.members is None  # draining twice changes nothing
        assert await b.claim("job", observed=token) is None


async def test_a_ledger_write_needs_the_owners_token(kit: Kit) -> None:
    """Another member's ledger write, or one with a stale token, is ignored."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        forged = Ledger(unit="job", token=token, running=True, finished_ago=0.0, cooler=99.0)
        await b.sync(ledgers=(forged,))
        await a.sync(ledgers=(replace(forged, token=token + 1),))
        kit.expire("a")
        reply = await b.sync(claims=(Hold(unit="job", token=token),))
        assert record(reply, "job").cooler == 0  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("running", "ago", "cooler", "rule"),
    [
        (True, 100.0, 30.0, "end + cooler"),  # it was running: it may have run till its end
        (False, 100.0, 30.0, "end + cooler"),  # due long ago: it may have started since
        (False, 0.0, 300.0, "next_due"),  # not running and not yet due: it cannot have run
    ],
)
async def test_a_claim_from_a_dead_owner_is_conservative(
    kit: Kit, running: bool, ago: float, cooler: float, rule: str
) -> None:
    """From an owner that died, the new due time is max(next_due, end + margin + cooler),
    the end being when its lease ran out (here 5 s before the claim), when the ledger says
    running or already due; else the ledger's next_due."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        ledger = Ledger(unit="job", token=token, running=False, finished_ago=ago, cooler=cooler)
        sent = await a.sync(ledgers=(ledger,))
        await a.sync(ledgers=(replace(ledger, running=running, finished_ago=None),))
        kit.expire("a", ago=5.0)
        reply = await b.sync(claims=(Hold(unit="job", token=token),))
        due = record(reply, "job").next_due  # type: ignore[attr-defined]
        if rule == "end + cooler":
            expected = reply.now - 5 + kit.margin + cooler
        else:
            expected = sent.now - ago + cooler
        assert due == pytest.approx(expected, abs=0.05)


@pytest.mark.parametrize(
    ("told", "claimer", "waits"),
    [(None, 40.0, 40.0), (20.0, 40.0, 40.0), (60.0, 40.0, 60.0), (None, 0.0, 0.0)],
    ids=["fleet-knows-none", "claimer-longer", "fleet-longer", "neither"],
)
async def test_a_takeover_waits_the_longer_of_the_fleets_and_the_claimers_cooler(
    kit: Kit, told: float | None, claimer: float, waits: float
) -> None:
    """An owner that died mid-execution, having told the fleet its cooler or not: the next
    owner waits the longer of that and the cooler its claim carries, from a margin past the
    lease's end."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        await a.sync(ledgers=(Ledger(unit="job", token=token, running=True, cooler=told),))
        kit.expire("a", ago=5.0)
        reply = await b.sync(claims=(Hold(unit="job", token=token, cooler=claimer),))
        due = record(reply, "job").next_due  # type: ignore[attr-defined]
        assert due == pytest.approx(reply.now - 5 + kit.margin + waits, abs=0.05)


async def test_the_end_of_a_lease_long_gone_is_forgotten(kit: Kit) -> None:
    """The server keeps when an expired member's lease ran out for DEPARTED_KEPT ttls only:
    past that, a takeover counts the cooler from itself (and the margin)."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        await a.sync(ledgers=(Ledger(unit="job", token=token, running=True, cooler=30.0),))
        kit.expire("a", ago=(DEPARTED_KEPT + 1) * kit.ttl)
        reply = await b.sync(claims=(Hold(unit="job", token=token),))
        due = record(reply, "job").next_due  # type: ignore[attr-defined]
        assert due == pytest.approx(reply.now + kit.margin + 30, abs=0.05)


async def test_a_release_while_running_is_treated_like_a_death(kit: Kit) -> None:
    """A unit released with its ledger still saying running gets the conservative due."""
    async with members(kit, "a", "b") as (a, b):
        token = await a.claim("job")
        assert token is not None
        running = Ledger(unit="job", token=token, running=True, cooler=40.0)
        await a.sync(ledgers=(running,), releases=(Hold(unit="job", token=token),))
        reply = await b.sync(claims=(Hold(unit="job", token=token),))
        due = record(reply, "job").next_due  # type: ignore[attr-defined]
        assert due == pytest.approx(reply.now + kit.margin + 40, abs=0.05)


async def test_records_are_read_incrementally(kit: Kit) -> None:
    """A sync returns only the records changed since the revision the member knows."""
    async with members(kit, "a") as (a,):
        await a.claim("job")
        first = await a.sync(known_records=0)
        known = max(r.revision for r in first.records)
        assert (await a.sync(known_records=known)).records == ()
        await a.claim("other")
        assert [r.unit for r in (await a.sync(known_records=known)).records] == ["other"]


async def test_leaving_removes_the_member(kit: Kit) -> None:
    """A leave takes the member out of the list at once."""
    async with members(kit, "a", "b") as (a, b):
        await a.sync(leave=True)
        listing = (await b.sync()).members
        assert listing is not None
        assert [m.member for m in listing] == ["b"]


async def test_tokens_strictly_increase(kit: Kit) -> None:
    """Every claim's token is greater than every token before it."""
    async with members(kit, "a") as (a,):
        tokens = []
        for _ in range(5):
            token = await a.claim("job")
            assert token is not None
            tokens.append(token)
            await a.sync(releases=(Hold(unit="job", token=token),))
        assert tokens == sorted(set(tokens))


async def race(a: Member, b: Member, observed: int) -> dict[str, int | None]:
    """Both members claim ``job`` with ``observed`` at the same moment; what each got."""
    results: dict[str, int | None] = {}

    async def claim(member: Member, key: str) -> None:
        results[key] = await member.claim("job", observed=observed)

    async with anyio.create_task_group() as racing:
        racing.start_soon(claim, a, "a")
        racing.start_soon(claim, b, "b")
    return results


async def test_two_members_racing_for_a_unit_never_both_win(kit: Kit) -> None:
    """Two members claiming the same unit with the same observed token at once: exactly one
    wins, every time."""
    async with members(kit, "a", "b") as (a, b):
        observed = 0
        for _ in range(20):
            results = await race(a, b, observed)
            winners = [key for key, token in results.items() if token is not None]
            assert len(winners) == 1, results
            winner = a if winners[0] == "a" else b
            observed = results[winners[0]] or 0
            await winner.sync(releases=(Hold(unit="job", token=observed),))
