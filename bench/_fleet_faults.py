"""Fleets at bench scale through a storm of faults, and their failovers, handoffs and spread.

For each backend (a private server: ``bench.fleet.RedisServer`` or
``PostgresServer``) and each size of ``SIZES`` (10 replicas x 1,000
handlers, 3 x 10,000), two runs of ``bench.fleet.run``, checked offline:

- a **storm**: ``faults`` faults drawn (seeded) from every kind the backend
  has, one every ``EVERY`` seconds, each on a replica that is up and not
  under another fault (a server's faults one at a time), with a join after
  each kill and SIGTERM so that the fleet keeps its size. It is for what
  must hold at every instant: no overlap, the cadence, the tokens, the
  fences and the outages. Its failovers and handoffs are mostly overtaken
  by the next fault, and so not assessed;
- a **spaced** run: kills, SIGTERMs and joins, each given the time to
  settle, for the figures: failover after kill -9 (target: every orphaned
  handler within ``ttl + renew + 1`` s, or when due), handoff after SIGTERM
  (p99 within 1 s of the later of the drain's end and the due time), and
  the spread after each change (fair within two renew intervals, plus a
  ttl for a death, plus the running execution and the slack).
"""

from __future__ import annotations

import random
import shutil
import time
from collections import Counter
from typing import TYPE_CHECKING, Literal

import anyio

from bench.fleet import Fault, PostgresServer, Profile, RedisServer, Result, run

if TYPE_CHECKING:
    from collections.abc import Callable

    from bench._scenarios import Record

__all__ = ["SIZES", "markdown", "run_all", "spaced", "storm"]

TTL = 2.0
EVERY = 0.5
"""Seconds between two faults of a storm."""

SIZES: tuple[tuple[int, int, float], ...] = ((10, 1_000, 1.0), (3, 10_000, 2.0))
"""Replicas, handlers and cooler (seconds) of each fleet."""

_WEIGHTS = {"kill": 3.0, "term": 3.0, "stop": 3.0, "blackhole": 2.0, "reset": 2.0}
"""The faults of one replica, by how often a storm draws each."""
_SERVER = {"redis": ("pause", "restart", "pause", "restart"), "postgres": ("outage", "restart") * 2}
"""A storm's faults of the whole server, spread over it: Redis CLIENT PAUSE or every replica
cut off (a total outage, 2 ttls), and restarts (Redis loses everything)."""
_LENGTHS = (0.5, 1.5, 3.0)
"""How long a freeze or a black hole lasts, in ttls."""
_BOOT = 2.0
"""Seconds a joining replica is left alone: a Python process starting, then joining."""


def profile(replicas: int, handlers: int, cooler: float, duration: float) -> Profile:
    """The fleet of one size: sampled often enough for the spread, slack for 2 cores."""
    return Profile(
        replicas=replicas,
        handlers=handlers,
        ttl=TTL,
        cooler=cooler,
        execution=0.1,
        duration=duration,
        sample=0.1,
        slack=1.0,
        grace=10.0,
        settle_within=120.0,
    )


def storm(backend: str, replicas: int, count: int, *, seed: int) -> list[Fault]:
    """``count`` faults of the kinds ``backend`` has, one every ``EVERY`` seconds."""
    rng = random.Random(seed)
    kinds = list(_WEIGHTS)
    weights = list(_WEIGHTS.values())
    if backend == "postgres":
        kinds.append("terminate")  # pg_terminate_backend of the replica's connections
        weights.append(2.0)
    server_faults = list(_SERVER[backend])
    every_server = count // (len(server_faults) + 1)
    up = list(range(replicas))  # replicas by their number in the run (joins numbered on)
    started = replicas
    free_at: dict[int, float] = {}
    faults: list[Fault] = []
    at = 1.0
    while len(faults) < count:
        at += EVERY
        if len(up) < replicas:
            faults.append(Fault(at=at, kind="join"))
            up.append(started)
            free_at[started] = at + _BOOT  # struck once it runs
            started += 1
            continue
        free = [number for number in up if free_at.get(number, 0.0) <= at]
        done = len(_SERVER[backend]) - len(server_faults)
        if server_faults and len(faults) >= every_server * (done + 1):
            if len(free) < len(up):
                continue  # a server's fault waits until no replica is under one
            kind = server_faults.pop(0)
            if kind == "pause":
                faults.append(Fault(at=at, kind="pause", seconds=2 * TTL))
            elif kind == "outage":
                faults.append(Fault(at=at, kind="blackhole", seconds=2 * TTL))
            else:
                faults.append(Fault(at=at, kind="restart"))
            for number in up:
                free_at[number] = at + 3 * TTL
            continue
        if not free:
            continue
        kind = rng.choices(kinds, weights)[0]
        target = rng.choice(free)
        if kind in ("kill", "term"):
            faults.append(Fault(at=at, kind="kill" if kind == "kill" else "term", replica=target))
            up.remove(target)
        elif kind in ("stop", "blackhole"):
            seconds = rng.choice(_LENGTHS) * TTL
            cut: Literal["stop", "blackhole"] = "stop" if kind == "stop" else "blackhole"
            faults.append(Fault(at=at, kind=cut, replica=target, seconds=seconds))
            free_at[target] = at + seconds + EVERY
        else:
            shake = Fault(at=at, kind="reset" if kind == "reset" else "terminate", replica=target)
            faults.append(shake)
    return faults


def spaced(replicas: int, cooler: float, rounds: int) -> list[Fault]:
    """``rounds`` of kill, join, SIGTERM, join, each past the bounds of the one before."""
    renew = TTL / 5
    gap = TTL + renew + cooler + 3.0
    faults: list[Fault] = []
    at = 1.0
    started = replicas
    up = list(range(replicas))
    for index in range(rounds):
        for kind in ("kill", "join", "term", "join"):
            if kind == "join":
                faults.append(Fault(at=at, kind="join"))
                up.append(started)
                started += 1
            else:
                target = up[index % len(up)]
                faults.append(Fault(at=at, kind=kind, replica=target))
                up.remove(target)
            at += gap
    return faults


def _end(faults: list[Fault]) -> float:
    return max(fault.at + fault.seconds for fault in faults) + 4 * TTL


def _record(kind: str, result: Result, faults: list[Fault], seconds: float) -> Record:
    report = result.report
    handoffs = sorted(report.handoffs)
    p99 = handoffs[min(len(handoffs) - 1, int(0.99 * len(handoffs)))] if handoffs else None
    settles = sorted(report.settles.values())
    return {
        "fleet": "faults",
        "run": kind,
        "backend": result.backend,
        "replicas": result.profile.replicas,
        "handlers": result.profile.handlers,
        "cooler_s": result.profile.cooler,
        "ttl_s": result.profile.ttl,
        "renew_s": result.profile.renew_seconds,
        "faults": len(faults),
        "fault_kinds": dict(Counter(fault.kind for fault in faults)),
        "seconds": round(seconds, 1),
        "executions": report.executions,
        "overlaps": report.overlaps,
        "excused": report.excused,
        "cadence_min_gap_s": round(min(report.cadence_gaps), 3) if report.cadence_gaps else None,
        "token_changes": report.token_changes,
        "failovers": len(report.failovers),
        "failover_max_s": round(max(report.failovers), 3) if report.failovers else None,
        # ttl + renew + 1 s, or a cooler after the takeover for a handler due by then
        "failover_bound_s": round(
            result.profile.ttl + result.profile.renew_seconds + max(1.0, result.profile.cooler), 3
        ),
        "handoffs": len(report.handoffs),
        "handoff_p99_s": None if p99 is None else round(p99, 3),
        "handoff_max_s": round(handoffs[-1], 3) if handoffs else None,
        "settles": len(settles),
        "settle_max_s": round(settles[-1], 3) if settles else None,
        "outage_starts": report.outage_starts,
        "violations": [f"{v.check}: {v.detail}" for v in report.violations][:20],
        "violation_count": len(report.violations),
        "audit": None if not report.violations else str(result.folder),
    }


def run_all(
    backends: list[str],
    *,
    faults: int,
    smoke: bool,
    emit: Callable[[Record], None],
) -> list[Record]:
    """Per backend and size: a storm of ``faults`` faults, then the spaced run."""
    sizes = [(3, 60, 0.5)] if smoke else list(SIZES)
    records = []
    for backend in backends:
        with RedisServer() if backend == "redis" else PostgresServer() as server:
            for number, (replicas, handlers, cooler) in enumerate(sizes):
                schedules = {
                    "storm": storm(backend, replicas, faults, seed=number),
                    "spaced": spaced(replicas, cooler, rounds=1 if smoke else 3),
                }
                for kind, schedule in schedules.items():
                    fleet = profile(replicas, handlers, cooler, _end(schedule))
                    began = time.monotonic()
                    result = anyio.run(run, server, fleet, schedule)
                    record = _record(kind, result, schedule, time.monotonic() - began)
                    emit(record)
                    records.append(record)
                    if not result.report.violations:
                        shutil.rmtree(result.folder, ignore_errors=True)
    return records


def markdown(records: list[Record]) -> str:
    """The runs as a table: faults, executions, overlaps and the liveness figures."""

    def cell(value: object, unit: str = "") -> str:
        return "" if value is None else f"{value}{unit}"

    lines = [
        "| backend | replicas x handlers | run | faults | executions | overlaps | violations "
        "| failover max (bound) | handoff p99 / max | spread settled, max |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in records:
        failover = cell(r["failover_max_s"], " s")
        if failover:
            failover += f" ({r['failover_bound_s']} s, n={r['failovers']})"
        handoff = ""
        if r["handoff_p99_s"] is not None:
            handoff = f"{r['handoff_p99_s']} / {r['handoff_max_s']} s (n={r['handoffs']})"
        settle = cell(r["settle_max_s"], " s")
        if settle:
            settle += f" (n={r['settles']})"
        cells = [
            str(r["backend"]),
            f"{r['replicas']} x {r['handlers']:,}",
            str(r["run"]),
            str(r["faults"]),
            f"{r['executions']:,}",
            str(r["overlaps"]),
            str(r["violation_count"]),
            failover,
            handoff,
            settle,
        ]
        lines.append(f"| {' | '.join(cells)} |")
    return "\n".join(lines) + "\n"
