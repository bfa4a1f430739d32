"""``Roster``: a group's live members and who owns which unit, read without joining."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

    from workit.lease._store import Member, Record

__all__ = ["Roster", "RosterMember", "RosterUnit", "build"]


@dataclass(frozen=True, slots=True, kw_only=True)
class RosterMember:
    """One live member of a group: an engine run of one replica.

    ``member`` is its id (``identity`` and a suffix new for every join);
    ``declares`` the units (handler or pipeline names) it runs when it owns
    them; ``owns`` those it owns now; ``expires_in`` the seconds its lease
    has left on the server's clock, unless it renews.
    """

    member: str
    identity: str
    declares: tuple[str, ...]
    owns: tuple[str, ...]
    expires_in: float


@dataclass(frozen=True, slots=True, kw_only=True)
class RosterUnit:
    """One unit some live member declares, and who owns it.

    ``owner`` is the identity of the live member that owns it and ``member``
    that member's id, both ``None`` while nobody does (never claimed yet,
    released, or its owner died and nobody took it over yet); ``token`` is
    the fencing token of the last claim (``None`` before the first);
    ``running`` whether the owner reported an execution running at its last
    renewal; ``due_in`` the seconds until the fleet allows its next start
    (0 or less: due now; ``None``: no execution ended yet).
    """

    unit: str
    owner: str | None
    member: str | None
    token: int | None
    running: bool
    due_in: float | None


@dataclass(frozen=True, slots=True, kw_only=True)
class Roster:
    """A group's live members and the owner of each unit, as a backend's ``roster()`` reads it.

    Read in one consistent look at the server, by its clock, without joining
    the group: the fleet is not disturbed. ``members`` are sorted by
    identity, then id; ``units`` by name. ``to_dict()`` is the JSON document
    ``workit fleet --json`` prints.
    """

    group: str
    backend: str
    members: tuple[RosterMember, ...]
    units: tuple[RosterUnit, ...]

    def to_dict(self) -> dict[str, object]:
        """A JSON-ready dict; seconds rounded to the millisecond.

        ``{"group", "backend", "members": [{"identity", "member", "declares",
        "owns", "expires_in"}], "units": [{"unit", "owner", "member", "token",
        "running", "due_in"}]}``.
        """
        return {
            "group": self.group,
            "backend": self.backend,
            "members": [
                {
                    "identity": member.identity,
                    "member": member.member,
                    "declares": list(member.declares),
                    "owns": list(member.owns),
                    "expires_in": round(member.expires_in, 3),
                }
                for member in self.members
            ],
            "units": [
                {
                    "unit": unit.unit,
                    "owner": unit.owner,
                    "member": unit.member,
                    "token": unit.token,
                    "running": unit.running,
                    "due_in": None if unit.due_in is None else round(unit.due_in, 3),
                }
                for unit in self.units
            ],
        }


def build(
    *,
    group: str,
    backend: str,
    now: float,
    members: Iterable[tuple[Member, float]],
    records: Iterable[Record],
) -> Roster:
    """The roster from what a backend read: each member with its expiry, and the records.

    Members whose lease expired before ``now`` are left out (the server
    removes them at its next sync), and so are their claims.
    """
    live = {member.member: (member, expires) for member, expires in members if expires >= now}
    by_unit = {record.unit: record for record in records}
    declared = sorted({unit for member, _ in live.values() for unit in member.units})
    units = []
    owns: dict[str, list[str]] = {member: [] for member in live}
    for name in declared:
        record = by_unit.get(name)
        owner = record.owner if record is not None and record.owner in live else None
        if owner is not None:
            owns[owner].append(name)
        due = None if record is None or record.next_due is None else record.next_due - now
        units.append(
            RosterUnit(
                unit=name,
                owner=None if owner is None else live[owner][0].identity,
                member=owner,
                token=None if record is None or not record.token else record.token,
                running=owner is not None and record is not None and record.running,
                due_in=due,
            )
        )
    listed = sorted(live.values(), key=lambda entry: (entry[0].identity, entry[0].member))
    return Roster(
        group=group,
        backend=backend,
        members=tuple(
            RosterMember(
                member=member.member,
                identity=member.identity,
                declares=tuple(member.units),
                owns=tuple(owns[member.member]),
                expires_in=expires - now,
            )
            for member, expires in listed
        ),
        units=tuple(units),
    )
