"""Who should own which unit: the one function every member computes alike.

Sticky, bounded-load rendezvous hashing. Every (member, unit) pair has a
stable rank, ``blake2b(member|unit)``, the same in every process (Python's
``hash`` is salted per process, so it cannot serve). Each member gets a
capacity: with H units and M members, ``H % M`` members may hold
``ceil(H/M)`` and the others ``floor(H/M)``; the bigger capacities go to the
members that already own the most, so the split never forces a move it could
avoid.

1. Each member keeps the units it owns now (that it declares), best ranked
   first, up to its capacity.
2. Every other unit, the ones declared by fewest members first, goes to its
   best ranked declaring member with room left, or, when none has room (some
   units are declared by few members), to its least loaded declaring member.

When every member declares the same units this gives each between floor and
ceil of H/M; a member joining takes only the units it needs (about H/(M+1))
and a member leaving moves only its own; a unit goes only to members that
declare it. The current owners come from the ownership records every member
reads from the backend, so members compute the same answer from the same
view.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable, Collection, Mapping

__all__ = ["assign", "rank"]


def rank(member: str, unit: str) -> int:
    """The stable rank of ``member`` for ``unit``: higher is preferred."""
    digest = hashlib.blake2b(f"{member}|{unit}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def assign(
    members: Mapping[str, Collection[str]],
    owners: Mapping[str, str] | None = None,
    *,
    ranking: Callable[[str, str], int] = rank,
) -> dict[str, str]:
    """Map every unit some member declares to the member that should own it.

    ``members`` maps each live member id to the units it declares; ``owners``
    maps units to their current owner (entries whose owner is not a live
    member declaring the unit are ignored). ``ranking`` may be a cached
    ``rank``. The result depends only on the contents, never on the order of
    the mappings.
    """
    # A member that declares nothing (one that stops) takes no share of the capacity.
    declared = {member: frozenset(units) for member, units in members.items() if units}
    if not declared:
        return {}
    declarers: dict[str, list[str]] = {}
    for member in sorted(declared):
        for unit in declared[member]:
            declarers.setdefault(unit, []).append(member)
    held = _held(declared, owners or {})
    capacity = _capacities(declared, held, len(declarers))
    result: dict[str, str] = {}
    load = dict.fromkeys(declared, 0)
    for member, units in held.items():
        kept = sorted(units, key=lambda unit: (-ranking(member, unit), unit))[: capacity[member]]
        for unit in kept:
            result[unit] = member
        load[member] = len(kept)
    free = sorted(
        (unit for unit in declarers if unit not in result),
        key=lambda unit: (len(declarers[unit]), unit),
    )
    for unit in free:
        member = _place(unit, declarers[unit], load, capacity, ranking)
        result[unit] = member
        load[member] += 1
    return result


def _held(declared: Mapping[str, frozenset[str]], owners: Mapping[str, str]) -> dict[str, set[str]]:
    held: dict[str, set[str]] = {member: set() for member in declared}
    for unit, owner in owners.items():
        units = declared.get(owner)
        if units is not None and unit in units:
            held[owner].add(unit)
    return held


def _capacities(
    declared: Mapping[str, frozenset[str]], held: Mapping[str, set[str]], total: int
) -> dict[str, int]:
    floor, extra = divmod(total, len(declared))
    order = sorted(declared, key=lambda member: (-len(held[member]), member))
    return {member: floor + (1 if index < extra else 0) for index, member in enumerate(order)}


def _place(
    unit: str,
    candidates: list[str],
    load: Mapping[str, int],
    capacity: Mapping[str, int],
    ranking: Callable[[str, str], int],
) -> str:
    ranked = sorted(candidates, key=lambda member: (-ranking(member, unit), member))
    for member in ranked:
        if load[member] < capacity[member]:
            return member
    return min(ranked, key=lambda member: load[member])
