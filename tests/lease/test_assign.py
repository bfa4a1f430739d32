"""The assignment: every unit to a declaring member, floor/ceil, few moves, one answer."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from typing import TYPE_CHECKING

from hypothesis import given
from hypothesis import strategies as st

from workit.lease._assign import assign, rank

if TYPE_CHECKING:
    import random

names = st.text(alphabet="abcdefghij0123456789-_.", min_size=1, max_size=8)
member_ids = st.lists(names, min_size=1, max_size=6, unique=True)
unit_names = st.lists(names, min_size=0, max_size=40, unique=True)


def counts(result: dict[str, str], members: list[str]) -> list[int]:
    owned = list(result.values())
    return [owned.count(member) for member in members]


def moved(before: dict[str, str], after: dict[str, str]) -> int:
    return sum(1 for unit, owner in after.items() if before.get(unit) != owner)


@given(member_ids, unit_names, st.data())
def test_every_unit_goes_to_a_member_that_declares_it(
    members: list[str], units: list[str], data: st.DataObject
) -> None:
    """With any declarations, each declared unit is assigned, only to a declaring member."""
    declared = {
        m: set(data.draw(st.lists(st.sampled_from(units)))) if units else set() for m in members
    }
    result = assign(declared)
    assert set(result) == set().union(*declared.values())
    for unit, member in result.items():
        assert unit in declared[member]


@given(member_ids, unit_names)
def test_same_declarations_spread_floor_and_ceil(members: list[str], units: list[str]) -> None:
    """When every member declares the same units, each gets floor or ceil of H/M."""
    result = assign(dict.fromkeys(members, units))
    low, high = len(units) // len(members), math.ceil(len(units) / len(members))
    assert all(low <= count <= high for count in counts(result, members))


@given(member_ids, unit_names, names)
def test_a_joining_member_takes_only_its_share(
    members: list[str], units: list[str], newcomer: str
) -> None:
    """A member joining moves at most ceil(H/(M+1)) units, all of them to itself."""
    if newcomer in members:
        return
    before = assign(dict.fromkeys(members, units))
    after = assign(dict.fromkeys([*members, newcomer], units), before)
    changed = [unit for unit in units if before[unit] != after[unit]]
    assert len(changed) <= math.ceil(len(units) / (len(members) + 1))
    assert all(after[unit] == newcomer for unit in changed)


@given(member_ids, unit_names, st.data())
def test_a_leaving_member_moves_only_its_own_units(
    members: list[str], units: list[str], data: st.DataObject
) -> None:
    """A member leaving moves only the units it owned (at most ceil(H/M))."""
    if len(members) < 2:
        return
    before = assign(dict.fromkeys(members, units))
    gone = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != gone]
    owners = {unit: owner for unit, owner in before.items() if owner != gone}
    after = assign(dict.fromkeys(rest, units), owners)
    changed = {unit for unit in units if before[unit] != after[unit]}
    assert changed == {unit for unit, owner in before.items() if owner == gone}
    assert len(changed) <= math.ceil(len(units) / len(members))


@given(member_ids, unit_names, st.data())
def test_a_draining_member_counts_as_gone(
    members: list[str], units: list[str], data: st.DataObject
) -> None:
    """A member that declares nothing (it stops, its units handed to their next owners)
    takes no share: the others get what they would get without it, and keep it once held."""
    if len(members) < 2:
        return
    draining = data.draw(st.sampled_from(members))
    rest = [m for m in members if m != draining]
    before = assign(dict.fromkeys(members, units))
    owners = {unit: owner for unit, owner in before.items() if owner != draining}
    without = assign(dict.fromkeys(rest, units), owners)
    declared = dict.fromkeys(rest, units) | {draining: []}
    assert assign(declared, owners) == without
    assert assign(declared, without) == without  # handed over as assigned: no further move
    assert sorted(counts(without, rest)) == sorted(counts(assign(dict.fromkeys(rest, units)), rest))


@given(member_ids, unit_names)
def test_the_assignment_is_its_own_fixed_point(members: list[str], units: list[str]) -> None:
    """Once every unit is owned as assigned, the assignment stays put."""
    declared = dict.fromkeys(members, units)
    first = assign(declared)
    assert assign(declared, first) == first


@given(member_ids, unit_names, st.randoms(use_true_random=False))
def test_order_of_the_input_does_not_matter(
    members: list[str], units: list[str], shuffle: random.Random
) -> None:
    """Members and units in any order, as any collection, give the same answer."""
    declared = {m: list(units) for m in members}
    shuffled_members = list(members)
    shuffle.shuffle(shuffled_members)
    reordered: dict[str, frozenset[str]] = {}
    for member in shuffled_members:
        mine = list(units)
        shuffle.shuffle(mine)
        reordered[member] = frozenset(mine)
    assert assign(declared) == assign(reordered)


@given(member_ids, unit_names, names)
def test_owners_that_are_gone_or_do_not_declare_are_ignored(
    members: list[str], units: list[str], stranger: str
) -> None:
    """An owner that is not a live member, or does not declare the unit, counts for nothing."""
    if stranger in members or not units:
        return
    declared = dict.fromkeys(members, units)
    owners = dict.fromkeys(units, stranger)
    assert assign(declared, owners) == assign(declared)


def test_a_unit_some_members_lack_goes_to_those_that_have_it() -> None:
    """In a rolling deploy, a new handler goes only to the replicas that have it."""
    old = [f"h{i}" for i in range(6)]
    declared = {"old-1": old, "old-2": old, "new-1": [*old, "fresh"]}
    assert assign(declared)["fresh"] == "new-1"


def test_constrained_units_are_placed_first() -> None:
    """Units only one member declares are placed before the shared ones, so both fill up."""
    shared = [f"s{i}" for i in range(10)]
    own = [f"o{i}" for i in range(10)]
    result = assign({"a": shared, "b": [*shared, *own]})
    assert sorted(counts(result, ["a", "b"])) == [10, 10]


def test_no_members_no_assignment() -> None:
    """Nobody to assign to gives an empty assignment."""
    assert assign({}) == {}


def test_rank_is_the_same_in_every_process() -> None:
    """The rank is a stable hash, not Python's per-process salted ``hash``."""
    code = "from workit.lease._assign import rank; print(rank('member-1', 'sync_users'))"
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "PYTHONHASHSEED": seed},
        ).stdout.strip()
        for seed in ("1", "2")
    }
    assert outputs == {str(rank("member-1", "sync_users"))}
