"""The audit of one fleet run, and the offline checks of API.md section 6 on it.

The replicas write what they did (``_replica``); the harness writes what it
did to them (``Event``). ``read()`` turns the replicas' files into
``Execution`` intervals and ``Sample`` s of who owned what; ``check()``
computes, from those alone, the figures of every guarantee and the
violations:

- **overlaps**: two executions of one handler whose intervals intersect. An
  execution without an end record ends when its replica died (``kill``) or
  when the run ended. An execution during which its replica was frozen for
  longer than ``ttl - renew`` (its lease may have expired meanwhile) counts
  only until the freeze began: that is the one exception of guarantee 1;
- **cadence**: per handler, each start no sooner than ``cooler`` after the
  previous execution's end (on whichever replica), less ``tolerance``,
  except across a restart that lost the server's data (Redis without
  persistence) before that cooler had passed;
- **tokens**: per handler, the token strictly increases at each change of
  replica and never decreases; one token value belongs to one handler and
  one replica only (never reused, also across a backend restart);
- **failover**: for each ``kill``, each handler the killed replica owned
  runs again elsewhere within ``ttl + renew + 1`` s, or when it is due (a
  cooler after the takeover, when it was running or due by then);
- **handoff**: for each ``term``, each handler the stopping replica owned
  runs elsewhere within 1 s of the later of its drain's end and its due time
  (a failover or handoff that the next fault overtakes is not assessed;
  while another replica is frozen or cut off, the handlers the fleet gives
  it wait until it is found dead, so a later one is held to the failover
  bound instead);
- **spread**: after each change of membership (a join counts once the
  replica has joined: its engine is ready), the live replicas each own
  between floor(H/M) and ceil(H/M) of the H handlers, every handler once,
  within the bound of that change (two renew intervals plus the running
  executions, plus ``ttl`` when the change is a death that must expire or
  a server restart), unless the next fault comes first; a replica cut off
  for longer than ``ttl`` counts as gone from a ttl after the cut (it is
  fenced) until the cut ends;
- **outage**: while the backend is paused, or every replica cut off, for
  longer than ``ttl``, no execution starts after ``ttl``;
- **fence**: a replica cut off (or every one, in an outage) for longer than
  ``ttl`` starts nothing once its lease could have expired, and whatever it
  was running has ended by then (async executions are cancelled);
- **fence logs**: each replica cut off for longer than ``ttl`` logs one
  ``lease fenced`` error for it (not one per handler), or none if it owned
  nothing when cut off (not joined again yet) or had logged one just before;
"""

from __future__ import annotations

import itertools
import json
import math
from bisect import bisect_right
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

__all__ = [
    "Audit",
    "Event",
    "Execution",
    "Report",
    "Rules",
    "Sample",
    "Violation",
    "check",
    "read",
]

_NS = 1_000_000_000
_RESUMING = 50_000_000
"""Nanoseconds after its SIGCONT within which a replica writes the start of an execution
it decided on before its SIGSTOP: it finishes what it was doing first."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Event:
    """Something the harness did, at ``t`` (``time.monotonic_ns()``).

    ``kind`` is a fault (``kill``, ``stop``, ``term``, ``join``,
    ``blackhole``, ``reset``, ``pause``, ``restart``, ``terminate``) or
    ``start`` / ``end`` of the measured window; ``replica`` the target's
    name when there is one; ``until`` when a fault with a length ended
    (``stop``: the SIGCONT; ``blackhole``: back to pass; ``pause``,
    ``restart``: the server answers again).
    """

    kind: str
    t: int
    replica: str | None = None
    until: int | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """One execution of a handler on a replica, as its audit recorded it."""

    handler: str
    replica: str
    token: int
    start: int
    end: int | None
    how: str | None
    """``end``, ``cancel``, or ``None`` when no end record was written."""
    valid: bool | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Sample:
    """The handlers ``replica`` owned from ``t`` on (until its next sample)."""

    replica: str
    t: int
    units: frozenset[str]


@dataclass(frozen=True, slots=True, kw_only=True)
class Audit:
    """Everything one run recorded."""

    handlers: tuple[str, ...]
    replicas: dict[str, int]
    """Replica name -> pid."""
    executions: tuple[Execution, ...]
    samples: tuple[Sample, ...]
    events: tuple[Event, ...]
    boots: dict[str, int] = field(default_factory=dict)
    ready: dict[str, int] = field(default_factory=dict)
    exits: dict[str, int] = field(default_factory=dict)
    fence_logs: dict[str, tuple[int, ...]] = field(default_factory=dict)
    """Replica name -> when it logged ``lease fenced`` errors."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Rules:
    """The timings the checks hold the run to (seconds)."""

    ttl: float
    renew: float
    cooler: float
    execution: float
    tolerance: float = 0.01
    """Clock and rounding allowance of the cadence check."""
    slack: float = 0.5
    """Allowance of the spread check for scheduling real processes."""
    restarts_lose_data: bool = False
    """Whether a server restart loses the leases and ledgers (a Redis without
    persistence): the cadence is not kept across one (docs/guide/replicas.md)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Violation:
    """One broken guarantee: which check, and what was seen."""

    check: str
    detail: str


@dataclass(kw_only=True)
class Report:
    """The figures of one run and the violations found."""

    executions: int = 0
    overlaps: int = 0
    excused: int = 0
    """Executions frozen past ``ttl - renew``: guarantee 1's exception."""
    cadence_gaps: list[float] = field(default_factory=list)
    """Per consecutive pair of executions of a handler: next start - previous end - cooler."""
    token_changes: int = 0
    """Changes of owner seen (each with a strictly larger token)."""
    failovers: list[float] = field(default_factory=list)
    """Seconds from a kill to each orphaned handler's next start elsewhere."""
    handoffs: list[float] = field(default_factory=list)
    """Seconds from the later of drain end and due time to the next start elsewhere."""
    settles: dict[str, float] = field(default_factory=dict)
    """Per change of membership: seconds until the spread was fair."""
    outage_starts: int = 0
    fenced: list[float] = field(default_factory=list)
    """Per execution cancelled while cut off from the backend: seconds from the cut."""
    resumed: list[float] = field(default_factory=list)
    """Per execution frozen past ``ttl - renew``: seconds from the SIGCONT to its end."""
    fence_logs: dict[str, int] = field(default_factory=dict)
    violations: list[Violation] = field(default_factory=list)

    def fail(self, check: str, detail: str) -> None:
        """Record a violation."""
        self.violations.append(Violation(check=check, detail=detail))

    def failed(self, check: str) -> list[Violation]:
        """The violations of one check."""
        return [violation for violation in self.violations if violation.check == check]

    def summary(self) -> dict[str, Any]:
        """The figures, rounded, as a JSON-able dict."""

        def spread(values: Sequence[float]) -> dict[str, float] | None:
            if not values:
                return None
            ordered = sorted(values)
            return {
                "n": len(ordered),
                "min": round(ordered[0], 3),
                "median": round(ordered[len(ordered) // 2], 3),
                "max": round(ordered[-1], 3),
            }

        return {
            "executions": self.executions,
            "overlaps": self.overlaps,
            "excused": self.excused,
            "cadence_min_gap": round(min(self.cadence_gaps), 3) if self.cadence_gaps else None,
            "token_changes": self.token_changes,
            "failover": spread(self.failovers),
            "handoff": spread(self.handoffs),
            "settle": {name: round(value, 3) for name, value in self.settles.items()},
            "outage_starts": self.outage_starts,
            "fenced": spread(self.fenced),
            "resumed": spread(self.resumed),
            "fence_logs": self.fence_logs,
            "violations": [f"{v.check}: {v.detail}" for v in self.violations],
        }


# -- reading ------------------------------------------------------------------------------


def _lines(path: Path) -> Iterable[dict[str, Any]]:
    with open(path, encoding="utf-8") as audit:
        for line in audit:
            if line.endswith("\n"):  # a line cut by a kill is not a record
                yield json.loads(line)


def read(
    files: dict[str, Path],
    *,
    handlers: Sequence[str],
    events: Sequence[Event],
    logs: dict[str, Path] | None = None,
) -> Audit:
    """The audit of a run from each replica's file (name -> path) and the harness's events."""
    executions: list[Execution] = []
    samples: list[Sample] = []
    replicas: dict[str, int] = {}
    boots: dict[str, int] = {}
    ready: dict[str, int] = {}
    exits: dict[str, int] = {}
    for name, path in files.items():
        running: dict[str, dict[str, Any]] = {}
        for record in _lines(path):
            kind = record["e"]
            if kind == "boot":
                replicas[name] = int(record["pid"])
                boots[name] = record["t"]
            elif kind == "ready":
                ready[name] = record["t"]
            elif kind == "exit":
                exits[name] = record["t"]
            elif kind == "owned":
                samples.append(
                    Sample(replica=name, t=record["t"], units=frozenset(record["units"]))
                )
            elif kind == "start":
                running[record["h"]] = record
            elif kind == "end":
                begun = running.pop(record["h"], None)
                if begun is not None:
                    executions.append(
                        Execution(
                            handler=record["h"],
                            replica=name,
                            token=begun["tok"],
                            start=begun["t"],
                            end=record["t"],
                            how=record["how"],
                            valid=record.get("valid"),
                        )
                    )
        for begun in running.values():
            executions.append(
                Execution(
                    handler=begun["h"],
                    replica=name,
                    token=begun["tok"],
                    start=begun["t"],
                    end=None,
                    how=None,
                )
            )
    fence_logs = {}
    for name, path in (logs or {}).items():
        with open(path, encoding="utf-8", errors="replace") as log:
            fence_logs[name] = tuple(
                int(line.split(" ", 1)[0]) for line in log if " lease fenced" in line
            )
    executions.sort(key=lambda execution: (execution.start, execution.replica))
    samples.sort(key=lambda sample: sample.t)
    return Audit(
        handlers=tuple(handlers),
        replicas=replicas,
        executions=tuple(executions),
        samples=tuple(samples),
        events=tuple(sorted(events, key=lambda event: event.t)),
        boots=boots,
        ready=ready,
        exits=exits,
        fence_logs=fence_logs,
    )


# -- checking -----------------------------------------------------------------------------


def _seconds(ns: int) -> float:
    return ns / _NS


class _Run:
    """Derived facts of one audit: deaths, freezes, ends of intervals."""

    def __init__(self, audit: Audit, rules: Rules) -> None:
        self.audit = audit
        self.rules = rules
        events = audit.events
        self.begin = next((e.t for e in events if e.kind == "start"), 0)
        self.finish = next((e.t for e in events if e.kind == "end"), None)
        last = max([e.start for e in audit.executions] + [e.t for e in events] + [0], default=0)
        self.horizon = max(last, *(audit.exits.values() or [0]))
        self.deaths = {e.replica: e.t for e in events if e.kind == "kill" and e.replica}
        long_freeze = (rules.ttl - rules.renew) * _NS
        long_cut = round(rules.ttl * _NS)
        self.freezes: dict[str, list[tuple[int, int]]] = {}
        for e in events:
            if e.kind == "stop" and e.replica and e.until is not None:
                self.freezes.setdefault(e.replica, []).append((e.t, e.until))
        self.cuts: dict[str | None, list[tuple[int, int]]] = {}  # frozen or cut off, any length
        for e in events:
            if e.kind in ("stop", "blackhole") and e.until is not None:
                self.cuts.setdefault(e.replica, []).append((e.t, e.until))
        self._samples: dict[str, tuple[list[int], list[frozenset[str]]]] = {}
        for sample in audit.samples:
            times, sets = self._samples.setdefault(sample.replica, ([], []))
            times.append(sample.t)
            sets.append(sample.units)
        # Replicas cut off from the backend for longer than ttl (None: every replica),
        # fenced from a ttl after the cut until it ends.
        self.cut_off: dict[str | None, list[tuple[int, int]]] = {}
        for e in events:
            if e.kind == "blackhole" and e.until is not None and e.until - e.t > long_cut:
                self.cut_off.setdefault(e.replica, []).append((e.t + long_cut, e.until))
        # Restarts that lost the server's data (leases and ledgers).
        self.data_lost = [e.t for e in events if e.kind == "restart" and rules.restarts_lose_data]
        self.long_freezes = {
            name: [(s, c) for s, c in spans if c - s > long_freeze]
            for name, spans in self.freezes.items()
        }
        self.terms: dict[str, int] = {}  # replica -> its first SIGTERM
        for e in events:
            if e.kind == "term" and e.replica:
                self.terms[e.replica] = min(e.t, self.terms.get(e.replica, e.t))
        self.faults = sorted(e.t for e in events if e.kind != "start")
        self.by_replica: dict[str, list[Execution]] = {}
        for execution in audit.executions:
            self.by_replica.setdefault(execution.replica, []).append(execution)

    def stop_of(self, execution: Execution) -> int:
        """When the execution's interval ends, for the overlap check."""
        if execution.end is not None:
            return execution.end
        death = self.deaths.get(execution.replica)
        if death is not None:
            # A start written after the kill was noted: the signal was on its way.
            return max(death, execution.start)
        return self.horizon

    def frozen_before(self, execution: Execution) -> int | None:
        """When a freeze past ``ttl - renew`` began, if the start of ``execution`` was
        written as its replica woke from it: the replica was frozen between deciding to
        start and the handler's first line (a start decided after such a freeze finds
        the lease no longer trusted), so frozen mid-execution, not starting anew."""
        for frozen, until in self.long_freezes.get(execution.replica, ()):
            if until <= execution.start < until + _RESUMING:
                return frozen
        return None

    def excused_at(self, execution: Execution) -> int | None:
        """The start of a freeze past ``ttl - renew`` during the execution, if any."""
        before = self.frozen_before(execution)
        if before is not None:
            return before
        stop = self.stop_of(execution)
        for frozen, until in self.long_freezes.get(execution.replica, ()):
            # A start written after the SIGSTOP was noted (a frozen replica writes
            # nothing): the signal was on its way, the execution frozen from its start.
            if execution.start < until and frozen < stop:
                return max(frozen, execution.start)
        return None

    def owned_at(self, replica: str, t: int) -> frozenset[str]:
        """What ``replica`` owned at ``t``, by its last sample at or before ``t``."""
        times, sets = self._samples.get(replica, ([], []))
        index = bisect_right(times, t)
        return sets[index - 1] if index else frozenset()


def check(audit: Audit, rules: Rules) -> Report:
    """Every figure and violation of ``audit`` under ``rules``."""
    run = _Run(audit, rules)
    report = Report(
        executions=len(audit.executions),
        fence_logs={name: len(times) for name, times in audit.fence_logs.items()},
    )
    by_handler: dict[str, list[Execution]] = {}
    for execution in audit.executions:
        by_handler.setdefault(execution.handler, []).append(execution)
    for handler, executions in by_handler.items():
        _overlaps(run, report, handler, executions)
        _cadence(run, report, handler, executions)
        _tokens(report, handler, [e for e in executions if run.frozen_before(e) is None])
    _unique_tokens(report, audit.executions)
    _failovers(run, report, by_handler)
    _handoffs(run, report, by_handler)
    _spread(run, report)
    _outages(run, report)
    _fences(run, report)
    return report


def _overlaps(run: _Run, report: Report, handler: str, executions: list[Execution]) -> None:
    latest: Execution | None = None
    latest_stop = -math.inf
    for execution in executions:
        excused = run.excused_at(execution)
        if excused is not None:
            report.excused += 1
        stop = excused if excused is not None else run.stop_of(execution)
        if latest is not None and execution.start < latest_stop:
            report.overlaps += 1
            report.fail(
                "overlap",
                f"{handler}: {latest.replica} (token {latest.token}) ran until "
                f"{_seconds(int(latest_stop) - run.begin):.3f} s, {execution.replica} (token "
                f"{execution.token}) started at {_seconds(execution.start - run.begin):.3f} s",
            )
        if stop > latest_stop:
            latest, latest_stop = execution, stop


_HOW: dict[str | None, str] = {"end": "ran to its end", "cancel": "was cancelled"}


def _cadence(run: _Run, report: Report, handler: str, executions: list[Execution]) -> None:
    rules = run.rules
    # A restart that lost the data before the cooler after an end had passed, while
    # the old owners may still run for a ttl: no cadence to keep across it.
    before = round(rules.cooler * _NS)
    after = round((rules.ttl + rules.execution) * _NS)
    for previous, following in itertools.pairwise(executions):
        if previous.end is None and previous.replica not in run.deaths:
            continue  # no end known (the run ended first)
        if run.frozen_before(following) is not None:
            continue  # not a new start: frozen mid-execution
        if previous.end is not None and any(
            t - before < previous.end <= t + after and t < following.start for t in run.data_lost
        ):
            continue
        excused = run.excused_at(previous)
        ended = excused if excused is not None else run.stop_of(previous)
        gap = _seconds(following.start - ended) - rules.cooler
        report.cadence_gaps.append(gap)
        if gap < -rules.tolerance:
            how = _HOW.get(previous.how, "had no end written")
            report.fail(
                "cadence",
                f"{handler}: {following.replica} started {gap + rules.cooler:.3f} s after "
                f"{previous.replica}'s execution ended (cooler {rules.cooler:g} s; "
                f"{_seconds(following.start - run.begin):.3f} s into the run, tokens "
                f"{previous.token} and {following.token}; that execution {how})",
            )


def _tokens(report: Report, handler: str, executions: list[Execution]) -> None:
    for previous, following in itertools.pairwise(executions):
        changed = following.replica != previous.replica
        if changed:
            report.token_changes += 1
        if following.token < previous.token or (changed and following.token == previous.token):
            report.fail(
                "token",
                f"{handler}: token {following.token} on {following.replica} after "
                f"{previous.token} on {previous.replica}",
            )


def _unique_tokens(report: Report, executions: Sequence[Execution]) -> None:
    holders: dict[int, tuple[str, str]] = {}
    for execution in executions:
        holder = (execution.handler, execution.replica)
        seen = holders.setdefault(execution.token, holder)
        if seen != holder:
            report.fail(
                "token",
                f"token {execution.token} was {seen[0]} on {seen[1]} and "
                f"{holder[0]} on {holder[1]}",
            )


def _due_after(executions: list[Execution], t: int, replica: str, cooler: float) -> int:
    """When the fleet allowed the next start of a handler its owner left at ``t``."""
    ended = None
    for execution in executions:
        if execution.start > t:
            break
        if execution.replica == replica and (execution.end is None or execution.end > t):
            ended = t  # running when its owner left: ended then, as far as anyone knows
        elif execution.end is not None:
            ended = execution.end if ended is None else max(ended, execution.end)
    return t if ended is None else ended + round(cooler * _NS)


def _unsent(executions: list[Execution], t: int, replica: str, within: int) -> bool:
    """Whether ``replica`` ran the handler at ``t``, or ended it less than ``within`` before:
    the server may not have its end yet."""
    return any(
        e.replica == replica and e.start <= t and (e.end is None or e.end > t - within)
        for e in executions
    )


def _next_elsewhere(executions: list[Execution], t: int, replica: str) -> Execution | None:
    return next((e for e in executions if e.start > t and e.replica != replica), None)


def _next_fault(run: _Run, t: int) -> int:
    """When the harness did something next after ``t`` (the run's end at the latest)."""
    index = bisect_right(run.faults, t)
    return run.faults[index] if index < len(run.faults) else run.horizon


def _failovers(run: _Run, report: Report, by_handler: dict[str, list[Execution]]) -> None:
    rules = run.rules
    bound = rules.ttl + rules.renew + 1
    for event in run.audit.events:
        if event.kind != "kill" or event.replica is None:
            continue
        for handler in sorted(run.owned_at(event.replica, event.t)):
            executions = by_handler.get(handler, [])
            due = _due_after(executions, event.t, event.replica, rules.cooler)
            # When it is due, plus the second the bound gives a new owner to start.
            allowed = max(bound, _seconds(due - event.t) + 1)
            takeover = event.t + round((rules.ttl + rules.renew) * _NS)
            if due <= takeover or _unsent(
                executions, event.t, event.replica, round((rules.renew + 0.1) * _NS)
            ):
                # The fleet's ledger says running, or due by the takeover (which comes
                # within ttl + renew of the death): the new owner waits a cooler from a
                # margin past the end of the dead one's lease (within ttl of the death; the
                # margin is less than renew here), as the dead one may have started an
                # execution it never told of. Allowed: a cooler from the takeover, the
                # looser bound.
                allowed = max(allowed, _seconds(takeover - event.t) + rules.cooler)
            following = _next_elsewhere(executions, event.t, event.replica)
            interrupted = _next_fault(run, event.t)
            if following is None or following.start > interrupted:
                if _seconds(interrupted - event.t) > allowed:
                    report.fail("failover", f"{handler} never ran again after {event.replica}")
                continue  # the next fault came first: not assessed
            took = _seconds(following.start - event.t)
            if allowed <= max(bound, rules.ttl + rules.renew + rules.cooler):
                report.failovers.append(took)  # not one the cadence held back for longer
            if took > allowed:
                report.fail(
                    "failover",
                    f"{handler} ran again {took:.3f} s after {event.replica} was killed "
                    f"(allowed {allowed:.3f} s)",
                )


def _handoffs(run: _Run, report: Report, by_handler: dict[str, list[Execution]]) -> None:
    rules = run.rules
    for event in run.audit.events:
        if event.kind != "term" or event.replica is None:
            continue
        # Its executions end by then, also one started as the signal was on its way.
        drained = max(
            [event.t] + [e.end for e in run.by_replica.get(event.replica, ()) if e.end is not None]
        )
        # A replica frozen or cut off when the stop comes still counts as live, and
        # gets its share of the handlers; they run once it is found dead.
        held_up = any(
            start <= event.t < until
            for replica, spans in run.cuts.items()
            if replica != event.replica
            for start, until in spans
        )
        for handler in sorted(run.owned_at(event.replica, event.t)):
            executions = by_handler.get(handler, [])
            due = _due_after(executions, drained, event.replica, rules.cooler)
            since = max(drained, due)
            following = _next_elsewhere(executions, event.t, event.replica)
            interrupted = _next_fault(run, event.t)
            if following is None or following.start > interrupted:
                if _seconds(interrupted - since) > 1 + rules.slack:
                    report.fail("handoff", f"{handler} never ran again after {event.replica}")
                continue  # the next fault came first: not assessed
            took = _seconds(following.start - since)
            if held_up and took > 1:
                if took > rules.ttl + rules.renew + 1:
                    report.fail(
                        "handoff",
                        f"{handler} ran on {following.replica} {took:.3f} s after it could "
                        f"(released by {event.replica} while a replica was cut off)",
                    )
                continue  # a failover, not a handoff
            report.handoffs.append(took)
            if took > 1:
                report.fail(
                    "handoff",
                    f"{handler} ran on {following.replica} {took:.3f} s after it could "
                    f"(released by {event.replica})",
                )


def _changes(run: _Run) -> list[tuple[str, int, float]]:
    """Each change of membership: a label, when it took effect, the bound to settle (s)."""
    rules = run.rules
    settle = 2 * rules.renew + rules.execution + rules.slack
    changes = []
    for number, event in enumerate(run.audit.events):
        name = event.replica or ""
        label = f"{number}:{event.kind}:{name}"
        if event.kind == "join" and name in run.audit.boots:
            # from the moment it has joined (its engine is ready), or its start if never
            changes.append((label, run.audit.ready.get(name, run.audit.boots[name]), settle))
        elif event.kind == "term":
            changes.append((label, event.t, settle + rules.execution))
        elif event.kind == "kill":
            changes.append((label, event.t, rules.ttl + settle))
        elif event.kind == "stop" and event.until is not None:
            if _seconds(event.until - event.t) > rules.ttl:
                changes.append((label, event.t, rules.ttl + settle))
                changes.append((f"{label}:back", event.until, rules.ttl + settle))
        elif event.kind == "blackhole" and event.until is not None:
            if _seconds(event.until - event.t) > rules.ttl:
                if event.replica is not None:  # fenced a ttl after the cut, at the latest
                    # (assessed during the cut: its own span does not disturb it)
                    changes.append((f"{label}:cut", event.t + round(rules.ttl * _NS), settle))
                changes.append((f"{label}:back", event.until, rules.ttl + settle))
        elif event.kind == "pause" and event.until is not None:
            changes.append((label, event.until, rules.renew + settle))
        elif event.kind == "restart" and event.until is not None:
            # A Redis without persistence forgets every lease: the members rejoin and
            # hold their claims back one ttl (PostgreSQL, which keeps them, gets as long).
            changes.append((label, event.until, rules.ttl + rules.renew + settle))
    return changes


def _live(run: _Run, t: int) -> list[str]:
    live = []
    for name, _pid in run.audit.replicas.items():
        booted = run.audit.boots.get(name)
        if booted is None or booted > t:
            continue
        if name in run.deaths and run.deaths[name] <= t:
            continue
        if name in run.terms and run.terms[name] <= t:
            continue
        if any(s <= t < c for s, c in run.freezes.get(name, ())):
            continue
        cut = (run.cut_off.get(name, ()), run.cut_off.get(None, ()))
        if any(s <= t < c for spans in cut for s, c in spans):
            continue  # fenced: it owns nothing until it is back
        live.append(name)
    return live


def _fair(run: _Run, t: int) -> bool:
    live = _live(run, t)
    if not live:
        return False
    total = len(run.audit.handlers)
    owned = [run.owned_at(name, t) for name in live]
    counts = [len(units) for units in owned]
    floor, ceil = total // len(live), math.ceil(total / len(live))
    if sum(counts) != total or not all(floor <= count <= ceil for count in counts):
        return False
    return len(frozenset().union(*owned)) == total


def _spread(run: _Run, report: Report) -> None:
    changes = _changes(run)
    moments = sorted({sample.t for sample in run.audit.samples})
    end = run.finish if run.finish is not None else run.horizon
    # Any fault disturbs a settling fleet (a short black hole delays a join, say), also
    # one under way when the change takes effect.
    later = [effect for _, effect, _ in changes] + run.faults + [end]
    lasting = [(e.t, e.until) for e in run.audit.events if e.until is not None]
    windows = [(effect, effect + round(bound * _NS)) for _, effect, bound in changes]
    for label, effect, _ in changes:
        following = min((t for t in later if t > effect), default=end)
        # The fleet is fair once every change under way has settled: a join while a
        # death is being handled may take as long as the death.
        limit = max(until for since, until in windows if since <= effect < until)
        # faults lasting over the change's effect, but for a cut's own
        disturbing = sum(t < effect < until for t, until in lasting) - label.endswith(":cut")
        if following < limit or disturbing:
            continue  # another fault came before this change could settle: not assessed
        candidates = [effect] + [t for t in moments if effect < t <= following]
        settled = next((t for t in candidates if _fair(run, t)), None)
        if settled is None or settled > limit:
            seen = "never" if settled is None else f"after {_seconds(settled - effect):.3f} s"
            allowed = _seconds(limit - effect)
            report.fail("spread", f"{label}: fair {seen} (allowed {allowed:.3f} s)")
        if settled is not None:
            report.settles[label] = _seconds(settled - effect)


def _outages(run: _Run, report: Report) -> None:
    ttl = round(run.rules.ttl * _NS)
    for event in run.audit.events:
        total = event.kind == "pause" or (event.kind == "blackhole" and event.replica is None)
        if not total or event.until is None or event.until - event.t <= ttl:
            continue
        started = [e for e in run.audit.executions if event.t + ttl < e.start < event.until]
        report.outage_starts += len(started)
        for execution in started:
            report.fail(
                "outage",
                f"{execution.handler} started on {execution.replica} "
                f"{_seconds(execution.start - event.t):.3f} s into a total outage ({event.kind})",
            )


def _fences(run: _Run, report: Report) -> None:
    """Self-fencing: a replica cut off starts nothing once its lease could have expired,
    and its async executions end by then; a frozen one's end at once when it resumes."""
    ttl = round(run.rules.ttl * _NS)
    allowance = round(0.1 * _NS)
    for event in run.audit.events:
        if event.until is None or event.until - event.t <= ttl:
            continue
        if event.kind in ("blackhole", "pause"):
            _one_error(run, report, event)
            expiry = event.t + ttl
            cut = run.audit.executions
            if event.replica is not None:
                cut = tuple(run.by_replica.get(event.replica, ()))
            for execution in cut:
                stop = run.stop_of(execution)
                if execution.start < expiry and stop > event.t:
                    if execution.how == "cancel":
                        report.fenced.append(_seconds(stop - event.t))
                    if stop > expiry + allowance:
                        report.fail(
                            "fence",
                            f"{execution.handler} on {execution.replica} ran "
                            f"{_seconds(stop - event.t):.3f} s into a {event.kind} "
                            f"(lease could expire at {_seconds(ttl):.3f} s)",
                        )
                elif expiry <= execution.start < event.until:
                    report.fail(
                        "fence",
                        f"{execution.handler} started on {execution.replica} "
                        f"{_seconds(execution.start - event.t):.3f} s into a {event.kind}",
                    )
        elif event.kind == "stop" and event.replica is not None:
            for execution in run.by_replica.get(event.replica, ()):
                if execution.start <= event.t < run.stop_of(execution):
                    report.resumed.append(_seconds(run.stop_of(execution) - event.until))


def _one_error(run: _Run, report: Report, event: Event) -> None:
    """Each replica an outage cut off logs one ``lease fenced`` error for it, not one per
    handler it owned; one that owned nothing when cut off may log none (it may not have
    joined again since an earlier fault: it has no lease to fence), and so may one
    that logged one less than ``ttl + renew`` before (it may not have been trusted
    again since: to it both are one outage)."""
    assert event.until is not None
    until = event.until + round(run.rules.renew * _NS)
    for name, times in run.audit.fence_logs.items():
        if event.replica is not None and name != event.replica:
            continue
        if name not in _live(run, event.t) or name not in _live(run, event.until):
            continue
        count = sum(event.t <= t <= until for t in times)
        recently = event.t - round((run.rules.ttl + run.rules.renew) * _NS)
        if count == 0 and (
            not run.owned_at(name, event.t) or any(recently <= t < event.t for t in times)
        ):
            continue  # nothing to fence, or still fenced from just before (one outage to it)
        if count != 1:
            report.fail(
                "fence",
                f"{name} logged {count} fence errors for one {event.kind} of "
                f"{_seconds(event.until - event.t):.3f} s",
            )
