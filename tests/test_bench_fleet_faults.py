"""The fault bench's schedules: what a storm may do to a fleet, and what a spaced run leaves."""

from __future__ import annotations

import itertools
from typing import TYPE_CHECKING

import pytest

from bench._fleet_faults import _BOOT, EVERY, SIZES, TTL, spaced, storm

if TYPE_CHECKING:
    from bench.fleet import Fault


def _replay(replicas: int, faults: list[Fault]) -> list[int]:
    """The number of replicas up after each fault, checking each targets one that is up
    and not under another fault (a server's fault only while no replica is)."""
    up = set(range(replicas))
    started = replicas
    busy: dict[int, float] = {}
    sizes = []
    for fault in faults:
        if fault.kind == "join":
            up.add(started)
            busy[started] = fault.at + _BOOT  # left alone while it starts
            started += 1
        elif fault.replica is None:  # the whole server: a pause, an outage, a restart
            assert all(until <= fault.at for until in busy.values()), fault
            for number in up:
                busy[number] = fault.at + 3 * TTL
        else:
            assert fault.replica in up, fault
            assert busy.get(fault.replica, 0.0) <= fault.at, fault
            if fault.kind in ("kill", "term"):
                up.remove(fault.replica)
            elif fault.seconds:
                busy[fault.replica] = fault.at + fault.seconds
        sizes.append(len(up))
    return sizes


@pytest.mark.parametrize("backend", ["redis", "postgres"])
@pytest.mark.parametrize(("replicas", "handlers", "cooler"), SIZES)
def test_a_storm_keeps_the_fleet_its_size_and_strikes_only_what_is_up(
    backend: str, replicas: int, handlers: int, cooler: float
) -> None:
    faults = storm(backend, replicas, 250, seed=1)
    assert len(faults) == 250
    sizes = _replay(replicas, faults)
    assert min(sizes) >= replicas - 1
    assert max(sizes) <= replicas
    assert all(b.at - a.at >= EVERY - 1e-9 for a, b in itertools.pairwise(faults))


@pytest.mark.parametrize("backend", ["redis", "postgres"])
def test_a_storm_has_every_kind_of_the_backend(backend: str) -> None:
    kinds = {fault.kind for fault in storm(backend, 10, 250, seed=0)}
    common = {"kill", "term", "join", "stop", "blackhole", "reset", "restart"}
    own = {"pause"} if backend == "redis" else {"terminate"}
    assert kinds == common | own
    everyone = [f for f in storm(backend, 10, 250, seed=0) if f.kind == "blackhole"]
    assert (backend == "postgres") == any(f.replica is None for f in everyone)


def test_a_storm_is_the_same_for_a_seed_and_differs_across_seeds() -> None:
    assert storm("redis", 3, 50, seed=4) == storm("redis", 3, 50, seed=4)
    assert storm("redis", 3, 50, seed=4) != storm("redis", 3, 50, seed=5)


def test_spaced_faults_leave_each_change_the_time_to_settle() -> None:
    faults = spaced(3, 2.0, rounds=3)
    assert [f.kind for f in faults] == ["kill", "join", "term", "join"] * 3
    gaps = [b.at - a.at for a, b in itertools.pairwise(faults)]
    renew = TTL / 5
    # A failover may take ttl + renew + a cooler; the spread after it two renews more.
    assert min(gaps) > TTL + renew + 2.0 + 2 * renew
    assert _replay(3, faults)[-1] == 3
