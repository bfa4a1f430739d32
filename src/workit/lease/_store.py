"""What a member says to its backend in one sync, what it hears back, and the
Protocol every backend implements.

One sync is one round trip that does everything at once, atomically on the
server and by the server's clock: renew the membership (or join, or leave),
write the ledger of units the member owns, release units, claim units, and
read what changed. Each release, ledger write and claim names the token the
member holds or observed, and the server applies it only if the record still
has that token: a compare-and-set, so a stale view can never take or touch a
unit that moved on.

Server rules (each backend implements them; the shared tests hold them):

- expired members are removed first, so an expired member is never renewed:
  the reply says ``alive=False`` and nothing of the request is applied;
- a claim of ``unit`` with observed token ``t`` (0: no record yet) succeeds
  only if the record's token is still ``t`` and its owner is nobody (released),
  the claimer itself, or no longer a live member; it then gets a new token;
- on a claim, when the record says the unit was running, or the previous
  owner did not release it and it was already due, the new due time is
  ``max(next_due, since + margin + max(cooler, the claim's cooler))``: the
  previous owner may have run it since its last sync, though not past the
  end of its lease (it stops trusting the lease a margin before, and cancels
  what runs; the margin after is room for an event loop that cancels late).
  ``since`` is when that lease ran out, which the server notes when it
  removes an expired member and keeps for ``DEPARTED_KEPT`` ttls, or ``now``
  without a note (the data was lost, say); ``margin`` is ``min(1 s, ttl /
  10)`` of the claimer's ttl;
- a ``drain`` from a live member empties the units it declares (a change
  of the members): every member's assignment then gives its units to the
  others, while its lease still covers what it runs until it releases;
- a release by the owner with ``to``, another live member, hands the unit
  to it under a new token (its ledger kept: a graceful handoff, no claim
  needed); without ``to``, or when ``to`` is not live, the unit is left to
  be claimed (owner nobody);
- a ledger write from the owner with ``finished_ago`` sets
  ``last_finished = now - finished_ago`` and ``next_due = last_finished +
  cooler`` (the server's ``now`` is later than the request's sending, so the
  due time is never early);
- tokens come from one counter per group that never goes back, also when the
  backend loses its data;
- a join with ``hold`` (a member that found the group's data lost while its
  lease should still have been live) makes every claim granted in the next
  ``hold`` seconds due no sooner than then: the other members may still
  trust leases the backend forgot. Backends that never lose their data
  (PostgreSQL, Memory) may ignore it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["DEPARTED_KEPT", "Hold", "Ledger", "Member", "Record", "Reply", "Request", "Store"]

DEPARTED_KEPT = 10
"""How many ttls the server keeps the note of when an expired member's lease ran out."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Hold:
    """A unit and a token: held (releases), observed (claims) or granted."""

    unit: str
    token: int
    cooler: float = 0.0
    """On a claim: the claimer's cooler of the unit (0: unknown), for a takeover of a
    unit whose previous owner died before telling the fleet any."""
    to: str = ""
    """On a release: the member the unit is handed to (one that declares it), or nobody."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Ledger:
    """A ledger write for a unit the member owns with ``token``.

    ``finished_ago`` is how long before the request was sent the last
    execution ended (``None``: no new end); ``cooler`` the unit's cooler
    (``None``: unchanged).
    """

    unit: str
    token: int
    running: bool
    finished_ago: float | None = None
    cooler: float | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Request:
    """One sync from one member."""

    member: str
    identity: str
    units: tuple[str, ...]
    ttl: float
    join: bool = False
    drain: bool = False
    """The member stops: it declares no units from now on (see the server rules)."""
    leave: bool = False
    hold: float = 0.0
    """On a join: seconds to hold back the start of every unit claimed meanwhile."""
    known_members: int = -1
    known_records: int = 0
    ledgers: tuple[Ledger, ...] = ()
    releases: tuple[Hold, ...] = ()
    claims: tuple[Hold, ...] = ()


@dataclass(frozen=True, slots=True, kw_only=True)
class Member:
    """A live member as the server knows it."""

    member: str
    identity: str
    units: tuple[str, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class Record:
    """The ownership record and ledger of one unit, times in server seconds."""

    unit: str
    owner: str
    token: int
    revision: int
    running: bool = False
    last_finished: float | None = None
    next_due: float | None = None
    cooler: float = 0.0


@dataclass(frozen=True, slots=True, kw_only=True)
class Reply:
    """The server's answer to one sync.

    ``members`` is ``None`` when the member list did not change since
    ``known_members``; ``records`` holds the records whose revision is above
    ``known_records``; ``claimed`` the claims granted, with their new tokens.
    """

    alive: bool
    now: float
    members_revision: int = 0
    members: tuple[Member, ...] | None = None
    records: tuple[Record, ...] = ()
    claimed: tuple[Hold, ...] = ()


class Store(Protocol):
    """One member's connection to a backend, opened by ``Membership.run()``.

    ``sync`` sends a request and returns the reply, raising (any
    ``Exception``) when the backend cannot be reached; it sets up what the
    backend needs (keys, scripts, tables) on first use. ``listen`` runs until
    cancelled, calling ``wake(sender)`` with the sender's member id whenever
    a member announces a change (a release, a join, a leave, an expiry); it
    may raise when the subscription breaks (the membership subscribes
    again). ``aclose`` frees every connection.
    """

    async def sync(self, request: Request) -> Reply:
        """Do one sync."""
        ...

    async def listen(self, wake: Callable[[str], None]) -> None:
        """Call ``wake(sender)`` on every change announced."""
        ...

    async def aclose(self) -> None:
        """Close every connection."""
        ...
