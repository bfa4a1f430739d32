"""One engine run's membership of a fleet: the backend-agnostic state machine.

A member joins under a fresh member id, then syncs every ``renew`` seconds
(sooner when another member announces a change or when it has something to
claim or release). Each sync is one round trip (see ``_store``). From the
replies every member computes the same assignment (``_assign``), claims what
is assigned to it when nobody holds it or its owner died, and hands what is
assigned elsewhere, at a run boundary, straight to the member it is assigned
to. A member that stops declares no units from then on and hands each over
as soon as it is idle.

Trust is measured from the start of the last successful sync: the server
extended the lease to at least ``t0 + ttl`` of the member's clock, so claims
are trusted until ``t0 + ttl - margin``. Past that without a newer successful
sync the member is fenced: every claim turns invalid, the engine is told to
cancel each owned unit, one error is logged for the outage, and syncing goes
on; when the backend answers again the member carries on if the server still
has it as live (claiming its units again, under new tokens), or joins anew.
"""

from __future__ import annotations

import logging
import math
import secrets
from functools import partial
from typing import TYPE_CHECKING, Literal

import anyio
import anyio.from_thread

from workit._backend import loop_clock
from workit.errors import describe
from workit.lease._assign import assign, rank
from workit.lease._claim import Claim
from workit.lease._store import Hold, Ledger, Request
from workit.status import FleetStatus

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable, Sequence

    from anyio.abc import TaskStatus

    from workit.lease._settings import Settings
    from workit.lease._store import Member, Record, Reply, Store

__all__ = ["LeaseEvent", "Membership"]

LeaseEvent = Literal["acquired", "released", "lost"]
"""What happened to one unit's claim, for metrics."""

_FOLLOW_UPS = 3
"""Syncs in a row without waiting, while each reply leaves something to claim or release."""

CLAIMS_PER_SYNC = 1_000
"""Claims sent in one sync at most: a share of 10,000 units is taken in a few short
syncs in a row rather than one long one, which a busy server may not finish within
the sync's timeout (and a Redis server would be blocked for meanwhile)."""


class _Unit:
    """What the executions of one declared unit change here, in one object.

    An execution touches this object and the claim only: no set or dict of
    10,000 entries per field, and nothing allocated for the garbage
    collector to track. ``news``: the ledger changed since it was last sent.
    """

    __slots__ = ("busy", "cooler", "due", "finished_at", "in_use", "news")

    def __init__(self) -> None:
        self.due: float | None = None  # the next start allowed here
        self.in_use = False  # running, or between acquire() and finished()
        self.busy = False  # started and not yet finished
        self.finished_at: float | None = None
        self.cooler: float | None = None
        self.news = False

    def forget(self) -> None:
        """Drop the news of an earlier claim (the due time stands)."""
        self.busy = self.news = False
        self.finished_at = self.cooler = None


class Membership:
    """One engine run's membership of a fleet (made by a backend's ``membership()``).

    The engine runs ``run()`` in its task group and, for each unit, loops on
    ``acquire()`` (which waits until this member owns the unit, trusts its
    lease and the fleet's ledger says it is due), reports ``started()`` and
    ``finished()``, and cancels a unit's execution when ``on_lost`` reports
    it. At shutdown ``stopping()`` hands each idle unit over and ``close()``,
    once the engine drained, the rest, and leaves. All times are of the
    member's clock; nothing here does I/O except ``run()``. Call it from the
    event loop only (it is not thread-safe)::

        membership = leases.membership(names, engine="parallel", logger=logger)
        membership.on_lost(cancel_running)          # fenced, or found taken
        await tasks.start(membership.run)           # joined
        ...                                         # per unit, in its loop:
        claim = await membership.acquire(unit)      # owned, trusted, due
        membership.started(unit, cooler=cooler)
        await execute()                             # under the claim: workit.lease.current()
        membership.finished(unit, cooler=cooler)
        ...                                         # at stop:
        await membership.stopping()                 # idle units handed over
        ...                                         # once drained:
        await membership.close()
    """

    def __init__(
        self,
        *,
        settings: Settings,
        store: Callable[[], Store],
        backend: str,
        units: Sequence[str],
        engine: str,
        logger: logging.Logger,
        identity: str | None = None,
        on_end: Callable[[], None] = lambda: None,
    ) -> None:
        self._settings = settings
        self._open = store
        self._backend = backend
        self._units = tuple(units)
        self._state = {unit: _Unit() for unit in self._units}
        self._engine = engine
        self._logger = logger
        self._identity = identity or settings.identity
        self._on_end = on_end
        self._clock = settings.clock
        self._member: str | None = None
        self._joined = False
        self._trusted_until = -math.inf
        self._lease_end = -math.inf
        self._hold = 0.0
        self._fenced = False
        self._connected = False
        self._outage = False
        self._fence_logged = False
        self._members: dict[str, Member] = {}
        self._records: dict[str, Record] = {}
        self._known_members = -1
        self._known_records = 0
        self._offset = 0.0
        self._assignment: dict[str, str] = {}
        # The declared units assigned to this member, in declared order (the
        # values mean nothing: a dict is an ordered set).
        self._mine: dict[str, None] = {}
        self._ranks: dict[str, dict[str, int]] = {}
        self._owned: dict[str, Claim] = {}
        self._releasing: dict[str, int] = {}
        self._stale: dict[str, int] = {}
        self._coolers_here: dict[str, float] = {}  # told by acquire(), sent with claims
        # The ledger's news beyond _Unit: the units sent and not yet confirmed,
        # and what the server was told (see _matters).
        self._unconfirmed: set[str] = set()
        self._told_busy: set[str] = set()
        self._told_cooler: dict[str, float] = {}
        self._lost_callbacks: list[Callable[[str], None]] = []
        self._event_callbacks: list[Callable[[str, str], None]] = []
        self._broken_callbacks: set[int] = set()
        self._closing = False  # handing every unit over as soon as it is idle
        self._leaving_fleet = False  # drained: releasing what is left, and leaving
        self._drained: anyio.Event | None = None  # set by the first reply to a drain
        self._running = False
        self._ended = False
        self._wake: anyio.Event | None = None
        self._waiters: dict[str, anyio.Event] = {}  # units waited for in acquire()
        self._trust_moved: anyio.Event | None = None
        self._done: anyio.Event | None = None
        self._scope: anyio.CancelScope | None = None
        self._listening: anyio.CancelScope | None = None

    # -- what the engine reads -------------------------------------------------

    @property
    def units(self) -> tuple[str, ...]:
        """The units this membership declares, in the order given."""
        return self._units

    @property
    def identity(self) -> str:
        """This replica's identity (owners are reported by identity)."""
        return self._identity

    @property
    def member(self) -> str | None:
        """The current member id (identity and a suffix new for every join), or ``None``."""
        return self._member

    @property
    def connected(self) -> bool:
        """Whether the last sync reached the backend."""
        return self._connected

    @property
    def ready(self) -> bool:
        """Whether this member has joined and trusts its lease now (not fenced)."""
        return self._trusted()

    def claim(self, unit: str) -> Claim | None:
        """The claim on ``unit`` when this member owns it and trusts its lease now."""
        held = self._owned.get(unit)
        if held is None or not self._trusted():
            return None
        return held

    def claim_now(self, unit: str) -> Claim | None:
        """What ``acquire(unit)`` would return at once, or ``None`` where it would wait.

        The claim when this member owns ``unit``, trusts its lease, ``unit`` is
        due and stays here; ``unit`` is then in use, as after ``acquire()``.
        The engine asks this first, so that an execution whose unit stays put
        costs no wait of the membership's.
        """
        held = self._owned.get(unit)
        if held is None or self._closing or unit not in self._mine:
            return None
        now = self._clock()
        state = self._state[unit]
        due = state.due
        if self._fenced or now >= self._trusted_until or (due is not None and now < due):
            return None  # held units are of a joined member: _trusted() in short
        state.in_use = True
        return held

    def due(self, unit: str) -> float | None:
        """The time (this member's clock) the fleet allows the next start of ``unit``.

        For an owned unit, from its ledger and the last ``finished()``; for
        another, from its record as last seen; ``None`` when unknown.
        """
        if unit in self._owned:
            return self._state[unit].due
        record = self._records.get(unit)
        if record is None or record.next_due is None:
            return None
        return record.next_due + self._offset

    def owner_of(self, unit: str) -> str | None:
        """The identity of the live member owning ``unit``, as last seen, or ``None``."""
        record = self._records.get(unit)
        if record is None or not record.owner:
            return None
        member = self._members.get(record.owner)
        return member.identity if member is not None else None

    def should_release(self, unit: str) -> bool:
        """Whether this member owns ``unit`` but should hand it over (at a run boundary)."""
        return unit in self._owned and (self._closing or unit not in self._mine)

    def snapshot(self) -> FleetStatus:
        """The fleet as last seen."""
        identities = sorted({member.identity for member in self._members.values()})
        return FleetStatus(
            identity=self._identity,
            group=self._settings.group,
            backend=self._backend,
            connected=self._connected,
            members=tuple(identities),
        )

    # -- what the engine tells -------------------------------------------------

    def on_lost(self, callback: Callable[[str], None]) -> None:
        """Call ``callback(unit)`` for each owned unit whose claim turned invalid."""
        self._lost_callbacks.append(callback)

    def on_event(self, callback: Callable[[str, str], None]) -> None:
        """Call ``callback(unit, event)`` on ``"acquired"``, ``"released"`` and ``"lost"``."""
        self._event_callbacks.append(callback)

    async def acquire(self, unit: str, *, cooler: float | None = None) -> Claim | None:
        """Wait until this member owns ``unit``, trusts its lease and ``unit`` is due.

        ``None`` once the member is closing (``stopping()`` or ``close()``):
        nothing more runs here. Calling it marks a run boundary: while it
        waits the unit is idle, and a unit the assignment gives to another
        member is handed over then.
        ``cooler`` is the unit's cooler here, sent with the claims: taken over
        from a member that did not hand it over, ``unit`` is due no sooner
        than that after the end of that member's lease (and a margin), also when it died
        before telling the fleet any cooler (it may have run until then).
        """
        state = self._unit(unit)
        state.in_use = False
        if cooler is not None:
            self._coolers_here[unit] = cooler
        while not self._closing:
            if self.should_release(unit) and self._drop(unit):
                self._poke()
            claim = self.claim(unit)
            wait = math.inf
            if claim is not None:
                due = state.due
                now = self._clock()
                if due is None or now >= due:
                    state.in_use = True
                    return claim
                wait = due - now
            waiter = self._waiters.get(unit)
            if waiter is None:
                waiter = self._waiters[unit] = anyio.Event()
            with anyio.move_on_after(wait):
                await waiter.wait()
        return None

    def started(self, unit: str, *, cooler: float | None = None) -> None:
        """An execution of ``unit`` began (the ledger's running flag; sent at the next sync).

        ``cooler``, when known, lets a member that takes the unit over after
        this one died keep the cooler even if no execution had finished here
        yet; once one has, the cooler it ended with stands.
        """
        state = self._unit(unit)
        state.in_use = True
        if self._token_of(unit) is not None:
            state.busy = state.news = True
            if state.cooler is None:
                state.cooler = cooler

    def finished(self, unit: str, *, cooler: float) -> None:
        """An execution of ``unit`` ended now: the next may start ``cooler`` later."""
        state = self._unit(unit)
        now = self._clock()
        state.in_use = False
        state.due = now + cooler
        if self._token_of(unit) is not None:
            state.busy = False
            state.news = True
            state.finished_at = now
            state.cooler = cooler
        if self.should_release(unit):
            self._poke()

    async def stopping(self) -> None:
        """The engine starts nothing more: hand each unit over as soon as it is idle.

        This member declares no units from then on, so that the fleet's
        assignment moves every unit elsewhere, and hands each idle unit
        straight to its next owner, under a new token and with its ledger:
        that member runs it when due without claiming it first. Returns once
        that sync is done, or after the sync timeout; the units running now go
        as their execution ends (``finished()``), and ``close()`` leaves once
        drained.
        """
        self._close()
        self._poke()
        if not self._joined or self._done is None:
            return
        drained = self._drained = self._drained or anyio.Event()
        with anyio.move_on_after(self._settings.sync_timeout):
            await drained.wait()

    def release(self, unit: str) -> None:
        """Hand ``unit`` over: its claim turns invalid now and the release is sent at once."""
        self._unit(unit)
        if self._drop(unit):
            self._poke()

    async def close(self, *, within: float = 5.0) -> None:
        """Release every unit and leave the fleet, giving up after ``within`` seconds.

        Call it once the engine has drained. When the backend cannot be
        reached in time the units are left to expire with the lease.
        """
        self._close()
        self._leaving_fleet = True
        if not self._running or self._done is None:
            self._finish()
            return
        self._poke()
        with anyio.move_on_after(within):
            await self._done.wait()
        if not self._done.is_set() and self._scope is not None:
            self._scope.cancel()
            await self._done.wait()

    # -- the loop ----------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Join (retrying), report ``task_status.started()``, then sync until closed."""
        if self._running or self._ended:
            raise RuntimeError("a membership runs once; make a new one for a new run")
        self._running = True
        if self._clock is anyio.current_time:
            self._clock = loop_clock()  # the same time, read faster
        self._wake = anyio.Event()
        self._done = anyio.Event()
        store = self._open()
        try:
            with anyio.CancelScope() as self._scope:
                async with anyio.create_task_group() as tasks:
                    tasks.start_soon(self._watch_trust, name=f"lease trust of {self._engine}")
                    tasks.start_soon(self._listen, store, name=f"lease notices of {self._engine}")
                    await self._sync_forever(store, task_status)
                    tasks.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                try:
                    await store.aclose()
                except Exception as error:
                    self._log(logging.DEBUG, "lease backend close failed", error=describe(error))
            self._joined = False
            self._trusted_until = -math.inf
            self._finish()
            self._done.set()
            self._signal_drained()
            self._wake_units()

    async def _sync_forever(self, store: Store, task_status: TaskStatus[None]) -> None:
        joined = False
        failures = 0
        follow_ups = 0
        while True:
            if self._closing and not self._joined:
                return
            t0 = self._clock()
            request = self._prepare(t0)
            try:
                with anyio.fail_after(self._timeout()):
                    reply = await store.sync(request)
            except Exception as error:
                failures += 1
                self._failed(error, failures)
                await anyio.sleep(min(self._settings.renew, 0.05 * 2 ** min(failures, 10)))
                continue
            if failures and self._listening is not None:
                self._listening.cancel()  # the subscription may have died with the connection
            failures = 0
            self._apply(request, reply, t0, self._clock())
            if request.drain:
                self._signal_drained()
            if request.leave and reply.alive:
                self._log(logging.INFO, "lease left the fleet")
                return
            if not joined and reply.alive:
                joined = True
                task_status.started()
            # A full batch of claims granted is progress: the next batch follows at once.
            if len(reply.claimed) == CLAIMS_PER_SYNC and self._needs_sync():
                continue
            if self._needs_sync() and follow_ups < _FOLLOW_UPS:
                follow_ups += 1
                continue
            follow_ups = 0
            await self._pause(t0 + self._settings.renew)

    def _timeout(self) -> float:
        # While not joined a slow sync costs nothing; once joined it must end while
        # the last renewal's trust lasts (see Settings.sync_timeout).
        return self._settings.sync_timeout if self._joined else self._settings.ttl

    async def _pause(self, until: float) -> None:
        wake = self._wake_event()
        with anyio.move_on_after(until - self._clock()):
            await wake.wait()
        if wake.is_set():
            self._wake = anyio.Event()

    async def _listen(self, store: Store) -> None:
        failures = 0
        while True:
            with anyio.CancelScope() as self._listening:
                try:
                    await store.listen(self._notice)
                except Exception as error:
                    failures += 1
                    self._log(logging.DEBUG, "lease notices failed", error=describe(error))
            self._listening = None
            await anyio.sleep(min(self._settings.renew, 0.05 * 2 ** min(failures, 10)))

    def _notice(self, sender: str) -> None:
        if sender != self._member:
            self._poke()

    async def _watch_trust(self) -> None:
        while True:
            moved = self._trust_moved_event()
            remaining = self._trusted_until - self._clock()
            if self._joined and not self._fenced and math.isfinite(remaining):
                if remaining <= 0:
                    self._fence()
                    continue
                with anyio.move_on_after(remaining):
                    await moved.wait()
            else:
                await moved.wait()

    # -- building a request ------------------------------------------------------

    def _prepare(self, t0: float) -> Request:
        if self._member is None:
            self._member = f"{self._identity}#{secrets.token_hex(4)}"
        if not self._joined:
            # A join whose reply was lost is sent again under the same id: the
            # server takes it as a renewal (the member holds nothing yet).
            return Request(
                member=self._member,
                identity=self._identity,
                units=self._units,
                ttl=self._settings.ttl,
                join=True,
                hold=self._hold,
            )
        for unit in list(self._owned) if self._leaving_fleet else self._leaving():
            self._drop(unit)
        heirs = self._assignment
        return Request(
            member=self._member,
            identity=self._identity,
            units=self._units,
            ttl=self._settings.ttl,
            drain=self._closing,
            leave=self._leaving_fleet,
            known_members=self._known_members,
            known_records=self._known_records,
            ledgers=self._ledgers(t0),
            releases=tuple(
                Hold(unit=u, token=t, to=heirs.get(u, "")) for u, t in self._releasing.items()
            ),
            claims=() if self._closing else self._claims(),
        )

    def _ledgers(self, t0: float) -> tuple[Ledger, ...]:
        # News sent before and not confirmed (that sync failed) is weighed
        # again, as it stands now; news arriving while this is in flight sets
        # the unit's flag again.
        news = {unit for unit, state in self._state.items() if state.news} | self._unconfirmed
        ledgers = []
        for unit in news:
            state = self._state[unit]
            state.news = False
            token = self._token_of(unit)
            if token is None:
                continue
            finished_at = state.finished_at
            ago = None if finished_at is None else max(0.0, t0 - finished_at)
            if unit in self._releasing or self._matters(unit, state, ago):
                ledgers.append(
                    Ledger(
                        unit=unit,
                        token=token,
                        running=state.busy,
                        finished_ago=ago,
                        cooler=state.cooler,
                    )
                )
        self._unconfirmed = {ledger.unit for ledger in ledgers}
        return tuple(ledgers)

    def _matters(self, unit: str, state: _Unit, ago: float | None) -> bool:
        """Whether news of ``unit`` (not released) could change what the fleet does.

        A member that takes ``unit`` over after this one died does so once
        the lease this sync renews has run out (past this sync's ``now +
        ttl``) and, when the record says running or due by then, makes it
        due a margin and a ``cooler`` after that lease's end. So an end whose
        next start falls before it, told or not, leads to the same: only a cooler the
        server does not know, a next start past the lease, and the running
        flag (for ``workit fleet``: an execution running at a renewal, and
        its end) are worth a write. Executions of a handler whose cooler is
        within the ttl then cost no ledger writes; a release always carries
        the ledger (the next owner keeps the cadence).
        """
        if state.busy != (unit in self._told_busy):
            return True
        told = self._told_cooler.get(unit)
        cooler = state.cooler
        if cooler is not None and (
            told is None or cooler > told or cooler < told - self._settings.margin
        ):
            return True
        return cooler is not None and ago is not None and cooler - ago > self._settings.ttl

    def _token_of(self, unit: str) -> int | None:
        held = self._owned.get(unit)
        if held is not None:
            return held.token
        return self._releasing.get(unit, self._stale.get(unit))

    def _claims(self) -> tuple[Hold, ...]:
        claims = []
        for unit in self._mine:
            if unit in self._owned or unit in self._releasing:
                continue
            record = self._records.get(unit)
            if record is None:
                token = 0
            elif not record.owner or record.owner not in self._members or unit in self._stale:
                token = record.token
            else:
                continue  # held by a live member: it lets go at a run boundary
            claims.append(Hold(unit=unit, token=token, cooler=self._coolers_here.get(unit, 0.0)))
            if len(claims) == CLAIMS_PER_SYNC:
                break
        return tuple(claims)

    def _needs_sync(self) -> bool:
        if self._leaving_fleet or self._releasing or not self._joined:
            return True
        return bool(self._leaving() or self._claims())

    def _leaving(self) -> list[str]:
        """The owned units assigned elsewhere that are idle: handed over at the next sync."""
        moving = self._owned.keys() - self._mine.keys()
        return [unit for unit in moving if not self._state[unit].in_use]

    # -- reading a reply -----------------------------------------------------------

    def _apply(self, request: Request, reply: Reply, t0: float, t1: float) -> None:
        self._connected = True
        if self._outage:
            self._log(logging.INFO, "lease backend reachable again")
        self._outage = False
        if not reply.alive:
            self._refused(early=t1 < self._lease_end)
            return
        self._offset = t1 - reply.now
        was_trusted = self._trusted()
        self._lease_end = max(self._lease_end, t0 + self._settings.ttl)
        trusted_until = t0 + self._settings.ttl - self._settings.margin
        if trusted_until > t1:
            if self._fenced:
                self._log(logging.INFO, "lease trusted again: the server still had this member")
            self._fenced = False
            self._fence_logged = False
            self._trusted_until = trusted_until
            self._signal_trust()
        if request.join:
            self._joined = True
            self._hold = 0.0
        if not request.join:
            self._told(request.ledgers)
        for hold in request.releases:
            if self._releasing.get(hold.unit) == hold.token:
                del self._releasing[hold.unit]
        assignment_moved = self._read(reply)
        if request.join or request.releases or not was_trusted:
            self._reconcile(t1, reply.now, self._units)
        else:  # only what this reply changed can be taken or newly held
            self._reconcile(t1, reply.now, [record.unit for record in reply.records])
        if assignment_moved:
            self._reassign()
        if request.join:
            self._log(logging.INFO, "lease joined the fleet", members=len(self._members))
        if not was_trusted and self._trusted():
            self._wake_units()  # units owned all along may run again

    def _read(self, reply: Reply) -> bool:
        """Take the reply's members and records in: whether the members or an owner changed."""
        moved = reply.members is not None
        if reply.members is not None:
            self._members = {member.member: member for member in reply.members}
            self._known_members = reply.members_revision
            for member in list(self._ranks):
                if member not in self._members:
                    del self._ranks[member]
        for record in reply.records:
            seen = self._records.get(record.unit)
            if seen is None or record.revision >= seen.revision:
                self._records[record.unit] = record
                moved = moved or seen is None or seen.owner != record.owner
            self._known_records = max(self._known_records, record.revision)
        return moved

    def _reconcile(self, received: float, server_now: float, units: Iterable[str]) -> None:
        """Match the claims on ``units`` to their records: drop the taken, hold the new."""
        mine = self._member
        for unit in units:
            record = self._records.get(unit)
            held = self._owned.get(unit)
            if held is not None:
                if record is not None and record.owner == mine and record.token == held.token:
                    continue
                del self._owned[unit]
                self._state[unit].in_use = False
                self._lost(unit, "another member took it")
            state = self._state.get(unit)
            if record is None or record.owner != mine or state is None:
                continue
            if unit in self._releasing or not self._trusted():
                continue
            if self._stale.get(unit) == record.token:
                continue  # held before a fence: claimed again under a new token
            self._stale.pop(unit, None)
            claim = Claim(
                handler=unit,
                owner=self._identity,
                token=record.token,
                _check=partial(self._holds, unit, record.token),
            )
            self._owned[unit] = claim
            self._forget_news(unit, state)  # news of an earlier claim is not this one's
            self._told_cooler[unit] = record.cooler
            due = None if record.next_due is None else received + (record.next_due - server_now)
            state.due = max(d for d in (due, state.due, -math.inf) if d is not None)
            self._emit(unit, "acquired")
            self._wake_unit(unit)

    def _owners(self) -> dict[str, str]:
        return {unit: record.owner for unit, record in self._records.items() if record.owner}

    def _reassign(self) -> None:
        # A stopping member computes the assignment without itself, as every member
        # does once its drain lands (it declares nothing then): its heirs are theirs.
        mine = self._member
        members = {
            member.member: member.units
            for member in self._members.values()
            if not (self._closing and member.member == mine)
        }
        self._assignment = assign(members, self._owners(), ranking=self._rank)
        self._mine = {unit: None for unit in self._units if self._assignment.get(unit) == mine}
        for unit in self._owned.keys() - self._mine.keys():
            self._wake_unit(unit)  # waiting for its due time: hand it over now

    def _rank(self, member: str, unit: str) -> int:
        ranks = self._ranks.setdefault(member, {})
        value = ranks.get(unit)
        if value is None:
            value = ranks[unit] = rank(member, unit)
        return value

    # -- losing and recovering -----------------------------------------------------

    def _failed(self, error: Exception, failures: int) -> None:
        self._connected = False
        if not self._outage:
            self._outage = True
            self._log(logging.WARNING, "lease sync failed; retrying", error=describe(error))
        else:
            self._log(
                logging.DEBUG, "lease sync failed again", error=describe(error), failures=failures
            )

    def _refused(self, *, early: bool) -> None:
        if early:
            # The server forgot this member before its lease could have run out: the
            # backend lost its data (a restart without persistence). The other members
            # may still trust their leases for up to a ttl: whatever is claimed anew
            # must not start before that.
            self._hold = self._settings.ttl
            self._log(
                logging.WARNING,
                "lease unknown to the server before it could expire (backend data lost?); "
                "joining anew, holding new claims back for one ttl",
            )
        else:
            self._log(logging.WARNING, "lease expired on the server; joining the fleet anew")
        self._lease_end = -math.inf
        for unit in list(self._owned):
            del self._owned[unit]
            self._lost(unit, "this member's lease expired")
        self._member = None
        self._joined = False
        self._trusted_until = -math.inf
        self._fenced = False
        self._members = {}
        self._records = {}
        self._known_members = -1
        self._known_records = 0
        self._assignment = {}
        self._mine = {}
        self._releasing.clear()
        self._stale.clear()
        self._forget_everything()
        self._signal_trust()
        self._wake_units()

    def _fence(self) -> None:
        self._fenced = True
        self._connected = False  # no sync reached the backend in time, whatever is in flight
        if not self._fence_logged:
            self._fence_logged = True
            self._log(
                logging.ERROR,
                "lease fenced: no renewal within the lease; nothing runs until the backend answers",
                owned=len(self._owned),
            )
        for unit, held in list(self._owned.items()):
            del self._owned[unit]
            self._stale[unit] = held.token
            self._lost(unit, "the lease could not be renewed in time")

    def _trusted(self) -> bool:
        return self._joined and not self._fenced and self._clock() < self._trusted_until

    def _holds(self, unit: str, token: int) -> bool:
        try:
            trusted = self._trusted()
        except RuntimeError:  # anyio's NoEventLoopError, or trio's "must be called from async"
            # Asked by a sync handler, in its worker thread, of a clock that only the
            # event loop's thread can read: ask the loop. A thread the loop no longer
            # waits for (abandoned) gets no answer.
            try:
                return anyio.from_thread.run_sync(self._holds, unit, token)
            except RuntimeError:
                return False
        held = self._owned.get(unit)
        return held is not None and held.token == token and trusted

    # -- small helpers ---------------------------------------------------------------

    def _unit(self, unit: str) -> _Unit:
        state = self._state.get(unit)
        if state is None:
            raise ValueError(f"unit {unit!r} is not one this membership declared: {self._units}")
        return state

    def _told(self, ledgers: Sequence[Ledger]) -> None:
        """The server confirmed ``ledgers``: what it now knows of each unit."""
        self._unconfirmed = set()
        for ledger in ledgers:
            if ledger.running:
                self._told_busy.add(ledger.unit)
            else:
                self._told_busy.discard(ledger.unit)
            if ledger.cooler is not None:
                self._told_cooler[ledger.unit] = ledger.cooler

    def _forget_news(self, unit: str, state: _Unit) -> None:
        state.forget()
        self._unconfirmed.discard(unit)
        self._told_busy.discard(unit)
        self._told_cooler.pop(unit, None)

    def _forget_everything(self) -> None:
        for state in self._state.values():
            state.forget()
            state.in_use = False
        self._unconfirmed.clear()
        self._told_busy.clear()
        self._told_cooler.clear()

    def _drop(self, unit: str) -> bool:
        held = self._owned.pop(unit, None)
        if held is None:
            return False
        self._releasing[unit] = held.token
        state = self._state[unit]
        state.in_use = False
        state.news = True  # the release carries the ledger
        self._emit(unit, "released")
        return True

    def _lost(self, unit: str, reason: str) -> None:
        self._log(logging.DEBUG, "lease lost", unit=unit, reason=reason)
        self._emit(unit, "lost")
        for callback in self._lost_callbacks:
            self._call(callback, unit)

    def _emit(self, unit: str, event: LeaseEvent) -> None:
        for callback in self._event_callbacks:
            self._call(callback, unit, event)

    def _call(self, callback: Callable[..., None], *args: str) -> None:
        try:
            callback(*args)
        except Exception as error:
            if id(callback) not in self._broken_callbacks:
                self._broken_callbacks.add(id(callback))
                self._log(logging.ERROR, "lease callback failed", error=describe(error))

    def _poke(self) -> None:
        if self._wake is not None:
            self._wake.set()

    def _wake_event(self) -> anyio.Event:
        if self._wake is None:
            self._wake = anyio.Event()
        return self._wake

    def _wake_unit(self, unit: str) -> None:
        """Wake the ``acquire()`` waiting for ``unit``: it may have become runnable."""
        waiter = self._waiters.pop(unit, None)
        if waiter is not None:
            waiter.set()

    def _wake_units(self) -> None:
        waiters, self._waiters = self._waiters, {}
        for waiter in waiters.values():
            waiter.set()

    def _trust_moved_event(self) -> anyio.Event:
        if self._trust_moved is None:
            self._trust_moved = anyio.Event()
        return self._trust_moved

    def _signal_trust(self) -> None:
        if self._trust_moved is not None:
            self._trust_moved.set()
            self._trust_moved = None

    def _close(self) -> None:
        """Hand every unit over from now on: nothing is assigned to this member."""
        if not self._closing:
            self._closing = True
            self._reassign()
            self._wake_units()  # each acquire() returns None

    def _signal_drained(self) -> None:
        if self._drained is not None:
            self._drained.set()

    def _finish(self) -> None:
        if not self._ended:
            self._ended = True
            self._on_end()

    def _log(self, level: int, message: str, **fields: object) -> None:
        extra = {
            "group": self._settings.group,
            "engine": self._engine,
            "member": self._member,
            **fields,
        }
        self._logger.log(level, message, extra=extra)
