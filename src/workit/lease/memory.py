"""``Memory``: a fleet inside one process, for tests and demos.

The "server" is a Python object; its clock is the members' clock plus an
optional ``skew``. It applies exactly the rules of the other backends (see
``_store``), so the same behaviour tests run against all three, and it has
hooks to break it on purpose: ``outage()``, ``stall()``, ``expire()``.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import anyio
import anyio.lowlevel

from workit.lease._membership import Membership
from workit.lease._roster import Roster, build
from workit.lease._settings import Configured, Live, check_units, margin, settings
from workit.lease._store import DEPARTED_KEPT, Hold, Member, Record, Reply

if TYPE_CHECKING:
    import logging
    from collections.abc import Callable, Iterator, Sequence

    from workit._duration import Duration
    from workit.lease._store import Request

__all__ = ["Memory"]


@dataclass(frozen=True, slots=True, kw_only=True)
class _Joined:
    member: Member
    expires: float


class _Server:
    """The shared state of one in-process fleet, and its fault switches."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.skew = 0.0
        self.latency = 0.0
        self.members: dict[str, _Joined] = {}
        self.departed: dict[str, float] = {}  # expired member -> when its lease ran out
        self.records: dict[str, Record] = {}
        self.members_revision = 0
        self.counter = 0
        self.failing = 0
        self.cut: dict[str, int] = {}
        self.stalled: anyio.Event | None = None
        self.listeners: set[Callable[[str], None]] = set()
        self.syncs = 0

    def now(self) -> float:
        return self.clock() + self.skew

    async def sync(self, request: Request) -> Reply:
        await anyio.lowlevel.checkpoint()
        self.raise_if_down(request.identity)
        while self.stalled is not None:
            await self.stalled.wait()
        if self.latency:
            await anyio.sleep(self.latency / 2)
        self.raise_if_down(request.identity)
        reply = self.apply(request)
        if self.latency:
            await anyio.sleep(self.latency / 2)
        return reply

    def raise_if_down(self, identity: str) -> None:
        if self.failing or self.cut.get(identity):
            raise ConnectionError("the in-memory backend is down (Memory.outage())")

    def apply(self, request: Request) -> Reply:
        self.syncs += 1
        now = self.now()
        me = request.member
        changed = self.purge(now, request.ttl)
        announce = False
        if request.join:
            member = Member(member=me, identity=request.identity, units=request.units)
            self.members[me] = _Joined(member=member, expires=now + request.ttl)
            changed = True
        elif me in self.members:
            joined = replace(self.members[me], expires=now + request.ttl)
            if request.drain and joined.member.units:
                joined = replace(joined, member=replace(joined.member, units=()))
                changed = True
            self.members[me] = joined
        else:
            if changed:
                self.members_revision += 1
                self.announce(me)
            return Reply(alive=False, now=now)
        for ledger in request.ledgers:
            record = self.records.get(ledger.unit)
            if record is None or record.owner != me or record.token != ledger.token:
                continue
            cooler = record.cooler if ledger.cooler is None else ledger.cooler
            record = replace(record, running=ledger.running, cooler=cooler)
            if ledger.finished_ago is not None:
                finished = now - ledger.finished_ago
                record = replace(record, last_finished=finished, next_due=finished + cooler)
            self.records[ledger.unit] = record
        for hold in request.releases:
            record = self.records.get(hold.unit)
            if record is not None and record.owner == me and record.token == hold.token:
                heir = hold.to if hold.to != me and hold.to in self.members else ""
                revision = self.next()
                token = revision if heir else record.token
                self.records[hold.unit] = replace(
                    record, owner=heir, token=token, revision=revision
                )
                announce = True
        claimed = tuple(self.claim(hold, me, now, request.ttl) for hold in request.claims)
        if request.leave:
            del self.members[me]
            changed = True
        if changed:
            self.members_revision += 1
        if changed or announce:
            self.announce(me)
        members = None
        if self.members_revision != request.known_members:
            members = tuple(joined.member for _, joined in sorted(self.members.items()))
        return Reply(
            alive=True,
            now=now,
            members_revision=self.members_revision,
            members=members,
            records=tuple(r for r in self.records.values() if r.revision > request.known_records),
            claimed=tuple(hold for hold in claimed if hold is not None),
        )

    def claim(self, hold: Hold, me: str, now: float, ttl: float) -> Hold | None:
        record = self.records.get(hold.unit) or Record(
            unit=hold.unit, owner="", token=0, revision=0
        )
        if record.token != hold.token:
            return None
        owner = record.owner
        if owner and owner != me and owner in self.members:
            return None
        due = record.next_due
        if record.running or (owner and (due is None or due <= now)):
            # From a margin past the end of the owner's lease: it cancels what it runs a
            # margin before that end, and an event loop can be late.
            since = min(now, self.departed.get(owner, now)) + margin(ttl)
            floor = since + max(record.cooler, hold.cooler)
            due = floor if due is None else max(due, floor)
        token = self.next()
        self.records[hold.unit] = replace(
            record, owner=me, token=token, revision=token, running=False, next_due=due
        )
        return Hold(unit=hold.unit, token=token)

    def purge(self, now: float, ttl: float) -> bool:
        dead = [member for member, joined in self.members.items() if joined.expires < now]
        for member in dead:
            self.departed[member] = self.members.pop(member).expires
        if dead:
            horizon = now - DEPARTED_KEPT * ttl
            self.departed = {m: at for m, at in self.departed.items() if at >= horizon}
        return bool(dead)

    def next(self) -> int:
        self.counter += 1
        return self.counter

    def announce(self, sender: str) -> None:
        if self.failing:
            return
        for listener in list(self.listeners):
            listener(sender)


class _MemoryStore:
    """One member's connection to the in-process server."""

    def __init__(self, server: _Server) -> None:
        self._server = server

    async def sync(self, request: Request) -> Reply:
        return await self._server.sync(request)

    async def listen(self, wake: Callable[[str], None]) -> None:
        self._server.listeners.add(wake)
        try:
            await anyio.sleep_forever()
        finally:
            self._server.listeners.discard(wake)

    async def aclose(self) -> None:
        await anyio.lowlevel.checkpoint()


class Memory(Configured):
    """An in-process lease backend: workers sharing it act as the replicas of a fleet.

    Each membership made from this object is a replica of its own, named
    ``f"{identity}/{n}"``; ``replica(identity)`` gives a view of the same
    fleet whose memberships are one replica named ``identity`` (like a
    process using ``Redis`` or ``Postgres``). ``clock`` (default
    ``anyio.current_time``) is the members' clock; the server's is the same
    plus ``skew``. For tests: ``outage()`` makes every sync fail while it
    lasts (``outage("a")`` only replica a's), ``stall()`` makes syncs hang
    (a black hole), ``expire(identity)`` ends a replica's membership on the
    server at once, ``latency`` delays each sync.
    """

    def __init__(
        self,
        *,
        group: str,
        ttl: Duration = 15,
        renew: Duration | None = None,
        identity: str | None = None,
        clock: Callable[[], float] | None = None,
    ) -> None:
        self._settings = settings(group=group, ttl=ttl, renew=renew, identity=identity, clock=clock)
        self._server = _Server(self._clock)
        self._replica = False
        self._count = 0
        self._live = Live()

    def _clock(self) -> float:
        return self._settings.clock()

    @property
    def skew(self) -> float:
        """Seconds the server's clock is ahead of the members' (negative: behind)."""
        return self._server.skew

    @skew.setter
    def skew(self, value: float) -> None:
        self._server.skew = value

    @property
    def latency(self) -> float:
        """Seconds each sync takes (half before the server applies it, half after)."""
        return self._server.latency

    @latency.setter
    def latency(self, value: float) -> None:
        self._server.latency = value

    @property
    def syncs(self) -> int:
        """How many syncs the server has applied."""
        return self._server.syncs

    async def roster(self) -> Roster:
        """The group's live members and who owns which unit, read without joining.

        Raises ``ConnectionError`` during an ``outage()``, like a server that
        cannot be reached.
        """
        await anyio.lowlevel.checkpoint()
        self._server.raise_if_down("")
        server = self._server
        return build(
            group=self._settings.group,
            backend=f"memory://{self._settings.group}",
            now=server.now(),
            members=[(joined.member, joined.expires) for joined in server.members.values()],
            records=server.records.values(),
        )

    def replica(self, identity: str) -> Memory:
        """A view of this fleet for one replica named ``identity``."""
        view = Memory(
            group=self._settings.group,
            ttl=self._settings.ttl,
            renew=self._settings.renew,
            identity=identity,
            clock=self._settings.clock,
        )
        view._server = self._server
        view._replica = True
        return view

    def membership(
        self, units: Sequence[str], *, engine: str, logger: logging.Logger
    ) -> Membership:
        """A membership declaring ``units`` for one run of ``engine``."""
        units = check_units(units)
        if self._replica:
            identity = self._settings.identity
            self._live.add(units, engine)
            on_end = lambda: self._live.remove(units)  # noqa: E731  # one-line callback
        else:
            self._count += 1
            identity = f"{self._settings.identity}/{self._count}"
            on_end = lambda: None  # noqa: E731  # each membership is a replica of its own
        return Membership(
            settings=self._settings,
            store=lambda: _MemoryStore(self._server),
            backend=f"memory://{self._settings.group}",
            units=units,
            engine=engine,
            logger=logger,
            identity=identity,
            on_end=on_end,
        )

    @contextlib.contextmanager
    def outage(self, *identities: str) -> Iterator[None]:
        """Make syncs fail with ``ConnectionError`` inside the block: every sync (and notices
        stop), or only those of the replicas named (a network cut around them)."""
        if not identities:
            self._server.failing += 1
        for identity in identities:
            self._server.cut[identity] = self._server.cut.get(identity, 0) + 1
        try:
            yield
        finally:
            if not identities:
                self._server.failing -= 1
            for identity in identities:
                self._server.cut[identity] -= 1

    @contextlib.contextmanager
    def stall(self) -> Iterator[None]:
        """Make every sync hang until the block ends (a network black hole)."""
        released = anyio.Event()
        self._server.stalled = released
        try:
            yield
        finally:
            self._server.stalled = None
            released.set()

    def expire(self, identity: str) -> None:
        """End every membership of ``identity`` on the server now, as if its lease ran out."""
        ended = math.nextafter(self._server.now(), -math.inf)
        for member, joined in list(self._server.members.items()):
            if joined.member.identity == identity:
                self._server.members[member] = replace(joined, expires=ended)
