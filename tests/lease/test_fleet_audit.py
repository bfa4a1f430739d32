"""The fleet harness's offline checks catch what they look for, on audits made up here."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING

from bench.fleet import Audit, Event, Execution, Rules, Sample, check, read

if TYPE_CHECKING:
    from pathlib import Path

S = 1_000_000_000
RULES = Rules(ttl=1.5, renew=0.3, cooler=0.2, execution=0.1)


def run(
    h: str, replica: str, token: int, start: float, end: float | None, how: str | None = "end"
) -> Execution:
    """An execution, times in seconds."""
    return Execution(
        handler=h,
        replica=replica,
        token=token,
        start=round(start * S),
        end=None if end is None else round(end * S),
        how=how if end is not None else None,
    )


def audit(
    executions: list[Execution],
    events: list[Event] | None = None,
    samples: list[Sample] | None = None,
    handlers: tuple[str, ...] = ("h0",),
) -> Audit:
    """An audit of replicas ``a``, ``b`` and ``c``, all booted at 0."""
    names = {"a": 1, "b": 2, "c": 3}
    return Audit(
        handlers=handlers,
        replicas=names,
        executions=tuple(sorted(executions, key=lambda e: e.start)),
        samples=tuple(samples or ()),
        events=(Event(kind="start", t=0), *(events or []), Event(kind="end", t=100 * S)),
        boots=dict.fromkeys(names, 0),
        ready=dict.fromkeys(names, 0),
    )


def event(kind: str, t: float, replica: str | None = None, until: float | None = None) -> Event:
    return Event(
        kind=kind,
        t=round(t * S),
        replica=replica,
        until=None if until is None else round(until * S),
    )


def checks(found: Audit) -> set[str]:
    return {violation.check for violation in check(found, RULES).violations}


def test_overlapping_executions_on_two_replicas_are_caught() -> None:
    """b starting while a still runs is an overlap (and a cadence break)."""
    found = audit([run("h0", "a", 1, 1.0, 2.0), run("h0", "b", 2, 1.5, 2.5)])
    assert "overlap" in checks(found)
    assert check(found, RULES).overlaps == 1


def test_an_execution_without_end_lasts_until_its_replica_was_killed() -> None:
    """A killed replica's last execution ends at the kill: a start before it overlaps."""
    executions = [run("h0", "a", 1, 1.0, None), run("h0", "b", 2, 2.0, 2.1)]
    assert "overlap" in checks(audit(executions, [event("kill", 3.0, "a")]))
    later = [run("h0", "a", 1, 1.0, None), run("h0", "b", 2, 4.0, 4.1)]
    assert "overlap" not in checks(audit(later, [event("kill", 3.0, "a")]))


def test_a_start_written_while_the_kill_was_on_its_way_ends_at_once() -> None:
    """The harness notes the kill, then signals: a start the replica wrote in between ends
    there, not at the end of the run."""
    executions = [run("h0", "a", 1, 3.00001, None), run("h0", "b", 2, 5.0, 5.1)]
    assert "overlap" not in checks(audit(executions, [event("kill", 3.0, "a")]))


def test_a_start_written_while_the_sigstop_was_on_its_way_is_frozen_from_its_start() -> None:
    """The harness notes the SIGSTOP, then signals: an execution the replica started in
    between was frozen mid-execution (guarantee 1's exception), its cooler counted from
    its start."""
    executions = [run("h0", "a", 1, 1.20003, 4.4), run("h0", "b", 2, 3.0, 3.1)]
    found = check(audit(executions, [event("stop", 1.2, "a", until=4.2)]), RULES)
    assert found.excused == 1
    assert not found.failed("overlap")
    assert not found.failed("cadence")


def test_a_freeze_past_the_lease_excuses_the_frozen_execution_only() -> None:
    """Frozen 3 s mid-execution: the overlap is guarantee 1's exception; 0.5 s is not."""
    executions = [run("h0", "a", 1, 1.0, 4.5), run("h0", "b", 2, 3.0, 3.1)]
    long = check(audit(executions, [event("stop", 1.2, "a", until=4.2)]), RULES)
    assert long.excused == 1
    assert not long.failed("overlap")
    short = check(audit(executions, [event("stop", 1.2, "a", until=1.7)]), RULES)
    assert short.failed("overlap")


def test_a_start_sooner_than_the_cooler_is_a_cadence_break() -> None:
    """0.1 s after the previous end, on another replica, with a cooler of 0.2 s."""
    found = audit([run("h0", "a", 1, 1.0, 1.1), run("h0", "b", 2, 1.2, 1.3)])
    assert checks(found) == {"cadence"}
    [violation] = check(found, RULES).violations
    assert violation.detail.startswith("h0: b started 0.100 s after a's execution ended")
    assert "tokens 1 and 2; that execution ran to its end" in violation.detail


def test_tokens_must_grow_at_each_change_of_owner_and_never_repeat() -> None:
    """Equal or smaller tokens on a new owner, and one token on two handlers, are caught."""
    same = audit([run("h0", "a", 5, 1.0, 1.1), run("h0", "b", 5, 2.0, 2.1)])
    assert checks(same) == {"token"}
    smaller = audit([run("h0", "a", 5, 1.0, 1.1), run("h0", "b", 3, 2.0, 2.1)])
    assert checks(smaller) == {"token"}
    shared = audit(
        [run("h0", "a", 5, 1.0, 1.1), run("h1", "b", 5, 2.0, 2.1)], handlers=("h0", "h1")
    )
    assert checks(shared) == {"token"}
    kept = audit([run("h0", "a", 5, 1.0, 1.1), run("h0", "a", 5, 2.0, 2.1)])
    assert checks(kept) == set()


def test_a_late_failover_is_caught() -> None:
    """The killed replica's handler running again after ttl + renew + 1 s is a violation."""
    owned = [Sample(replica="a", t=0, units=frozenset({"h0"}))]
    slow = [run("h0", "a", 1, 0.5, 0.6), run("h0", "b", 2, 6.0, 6.1)]
    assert "failover" in checks(audit(slow, [event("kill", 2.0, "a")], owned))
    quick = [run("h0", "a", 1, 0.5, 0.6), run("h0", "b", 2, 3.6, 3.7)]
    report = check(audit(quick, [event("kill", 2.0, "a")], owned), RULES)
    assert not report.failed("failover")
    assert report.failovers == [1.6]


def test_a_failover_of_a_handler_due_by_the_takeover_may_wait_a_cooler_from_it() -> None:
    """Cooler 3 s, due 3.0 s, killed at 2.0: the takeover comes by 3.8 s (ttl + renew
    after the kill) and waits the cooler from there, so 4.8 s after the kill is allowed."""
    rules = Rules(ttl=1.5, renew=0.3, cooler=3.0, execution=0.1)
    owned = [Sample(replica="a", t=0, units=frozenset({"h0"}))]
    for start, late in ((6.7, False), (7.0, True)):
        executions = [run("h0", "a", 1, 0.0, 0.0), run("h0", "b", 2, start, start + 0.1)]
        report = check(audit(executions, [event("kill", 2.0, "a")], owned), rules)
        assert bool(report.failed("failover")) is late, start


def test_a_failover_may_wait_a_cooler_after_an_execution_frozen_past_the_kill() -> None:
    """c froze mid-execution (0.4 s to 10 s), a took the handler over and was killed just
    after running it: the next start may wait a cooler after c's execution ended at 10 s,
    later than the takeover's cooler."""
    owned = [Sample(replica="a", t=round(2.5 * S), units=frozenset({"h0"}))]
    for start, late in ((10.25, False), (14.0, True)):
        executions = [
            run("h0", "c", 1, 0.4, 10.0, how="cancel"),
            run("h0", "a", 2, 3.0, 3.1),
            run("h0", "b", 3, start, start + 0.1),
        ]
        events = [event("stop", 0.5, "c", until=10.0), event("kill", 3.15, "a")]
        report = check(audit(executions, events, owned), RULES)
        assert bool(report.failed("failover")) is late, start
        assert not report.failed("cadence")
        assert report.failovers == []  # the cadence held it: no failover time to report


def test_a_slow_handoff_is_caught() -> None:
    """After SIGTERM, the handler running elsewhere 1 s after it was due is a violation."""
    owned = [Sample(replica="a", t=0, units=frozenset({"h0"}))]
    executions = [run("h0", "a", 1, 1.9, 2.5), run("h0", "b", 2, 4.0, 4.1)]
    report = check(audit(executions, [event("term", 2.0, "a")], owned), RULES)
    assert report.failed("handoff")
    assert report.handoffs == [1.3]  # from the drain's end (2.5) and its cooler


def test_an_execution_started_as_the_sigterm_was_on_its_way_is_part_of_the_drain() -> None:
    """A start written just after the SIGTERM was sent (the stop had not reached the loop
    yet) is an execution the stop lets finish: the handoff counts from its end."""
    owned = [Sample(replica="a", t=0, units=frozenset({"h0"}))]
    executions = [run("h0", "a", 1, 2.0005, 2.1), run("h0", "b", 2, 2.35, 2.45)]
    report = check(audit(executions, [event("term", 2.0, "a")], owned), RULES)
    assert not report.failed("handoff")
    assert report.handoffs == [0.05]  # due at 2.3 s: the cooler after its end


def test_a_handoff_while_another_replica_is_frozen_is_held_to_the_failover_bound() -> None:
    """While c is frozen (still live for the fleet, so given a share), a's handler may
    wait for c to be found dead: up to ttl + renew + 1 s, not counted as a handoff."""
    owned = [Sample(replica="a", t=0, units=frozenset({"h0"}))]
    for start, late in ((4.9, False), (6.0, True)):  # due at 2.2 s; bound 2.8 s
        executions = [run("h0", "a", 1, 1.9, 2.0), run("h0", "b", 2, start, start + 0.1)]
        events = [event("stop", 1.0, "c", until=20.0), event("term", 2.0, "a")]
        report = check(audit(executions, events, owned), RULES)
        assert bool(report.failed("handoff")) is late, start
        assert report.handoffs == []
    executions = [run("h0", "a", 1, 1.9, 2.0), run("h0", "b", 2, 5.0, 5.1)]
    report = check(audit(executions, [event("term", 2.0, "a")], owned), RULES)
    assert report.failed("handoff")  # with every other replica well, 1 s is the bound


def test_an_unfair_share_after_a_join_is_caught() -> None:
    """Two live replicas and four handlers: a owning all four is unfair; two each is fair."""
    handlers = ("h0", "h1", "h2", "h3")
    before = Sample(replica="a", t=0, units=frozenset(handlers))
    joined = Audit(
        handlers=handlers,
        replicas={"a": 1, "b": 2},
        executions=(),
        samples=(before,),
        events=(
            Event(kind="start", t=0),
            event("join", 1.0, "b"),
            Event(kind="end", t=10 * S),
        ),
        boots={"a": 0, "b": S},
        ready={"a": 0, "b": S},
    )
    assert "spread" in {v.check for v in check(joined, RULES).violations}
    shared = (
        before,
        Sample(replica="a", t=round(1.5 * S), units=frozenset(handlers[:2])),
        Sample(replica="b", t=round(1.5 * S), units=frozenset(handlers[2:])),
    )
    fair_audit = Audit(
        handlers=handlers,
        replicas=joined.replicas,
        executions=(),
        samples=shared,
        events=joined.events,
        boots=joined.boots,
        ready=joined.ready,
    )
    fair = check(fair_audit, RULES)
    assert fair.violations == []
    assert fair.settles == {"1:join:b": 0.5}
    # b started at 1.0 s but joined the fleet (ready) at 1.3 s: the spread counts from then
    late = dataclasses.replace(fair_audit, ready={"a": 0, "b": round(1.3 * S)})
    assert check(late, RULES).settles == {"1:join:b": 0.2}


def test_a_join_while_a_death_is_being_handled_may_take_as_long_as_the_death() -> None:
    """c is killed at 1.0 s and d joins at 1.5 s: the fleet is fair once c's handlers have
    failed over as well, so the join is held to the later of the two bounds (the kill's
    ttl + settle, 3.7 s), not its own (2.7 s)."""
    handlers = tuple(f"h{i}" for i in range(6))
    start = [
        Sample(replica=name, t=0, units=frozenset(handlers[2 * i : 2 * i + 2]))
        for i, name in enumerate("abc")
    ]
    for fair_at, late in ((3.0, False), (4.0, True)):
        shared = [
            Sample(replica=name, t=round(fair_at * S), units=frozenset(handlers[2 * i : 2 * i + 2]))
            for i, name in enumerate("abd")
        ]
        found = Audit(
            handlers=handlers,
            replicas={"a": 1, "b": 2, "c": 3, "d": 4},
            executions=(),
            samples=(*start, *shared),
            events=(
                Event(kind="start", t=0),
                event("kill", 1.0, "c"),
                event("join", 1.5, "d"),
                Event(kind="end", t=10 * S),
            ),
            boots={"a": 0, "b": 0, "c": 0, "d": round(1.5 * S)},
            ready={"a": 0, "b": 0, "c": 0, "d": round(1.5 * S)},
        )
        report = check(found, RULES)
        assert bool(report.failed("spread")) is late, fair_at
        assert report.settles == {"2:join:d": fair_at - 1.5}


def test_starting_during_a_total_outage_is_caught() -> None:
    """A start more than ttl into a pause of the backend is a violation."""
    executions = [run("h0", "a", 1, 2.0, 2.1), run("h0", "a", 1, 3.0, 3.1)]
    report = check(audit(executions, [event("pause", 1.0, until=4.0)]), RULES)
    assert report.outage_starts == 1
    assert {"outage", "fence"} <= {v.check for v in report.violations}


def test_read_keeps_unfinished_executions_and_drops_a_cut_line(tmp_path: Path) -> None:
    """A start without an end is kept with ``end`` None; a last line without newline is not."""
    path = tmp_path / "a.jsonl"
    path.write_text(
        '{"e":"boot","t":1,"pid":7,"replica":"a"}\n'
        '{"e":"start","t":2,"h":"h0","tok":9}\n'
        '{"e":"end","t":3,"h":"h0","tok":9,"how":"end","valid":true}\n'
        '{"e":"start","t":4,"h":"h0","tok":9}\n'
        '{"e":"end","t":5,"h"',
        encoding="utf-8",
    )
    found = read({"a": path}, handlers=("h0",), events=())
    assert found.replicas == {"a": 7}
    assert [(e.start, e.end, e.how) for e in found.executions] == [(2, 3, "end"), (4, None, None)]


def test_a_replica_cut_off_logs_one_fence_error_unless_it_owned_nothing() -> None:
    """Cut off for 3 s (twice the ttl): no fence error, or two, is a violation for a
    replica that owned a handler then; one that owned nothing may log none."""
    cut = [event("blackhole", 1.0, "a", until=4.0)]
    owning = [Sample(replica="a", t=0, units=frozenset({"h0"}))]

    def fence_checks(logs: tuple[float, ...], samples: list[Sample]) -> list[str]:
        fence_logs = {"a": tuple(round(t * S) for t in logs)}
        found = dataclasses.replace(audit([], cut, samples), fence_logs=fence_logs)
        return [v.detail for v in check(found, RULES).violations if v.check == "fence"]

    assert fence_checks((2.3,), owning) == []
    assert fence_checks((), owning) == ["a logged 0 fence errors for one blackhole of 3.000 s"]
    assert fence_checks((2.3, 3.0), owning) == [
        "a logged 2 fence errors for one blackhole of 3.000 s"
    ]
    assert fence_checks((), []) == []
    assert fence_checks((0.5,), owning) == []  # fenced just before: to it, one outage
    assert fence_checks((-1.0,), owning) == ["a logged 0 fence errors for one blackhole of 3.000 s"]


def test_the_spread_after_a_server_restart_may_take_a_ttl_more() -> None:
    """A Redis restart loses every lease: the members rejoin and hold their claims back
    one ttl, so the fleet is allowed ttl + renew + the settling time (3.0 s here)."""
    handlers = ("h0", "h1", "h2", "h3")

    def settled_after(seconds: float) -> list[str]:
        samples = [
            Sample(replica="a", t=0, units=frozenset(handlers)),
            Sample(replica="a", t=round((1.5 + seconds) * S), units=frozenset(handlers[:2])),
            Sample(replica="b", t=round((1.5 + seconds) * S), units=frozenset(handlers[2:3])),
            Sample(replica="c", t=round((1.5 + seconds) * S), units=frozenset(handlers[3:])),
        ]
        found = audit([], [event("restart", 1.0, until=1.5)], samples, handlers)
        return [v.detail for v in check(found, RULES).violations if v.check == "spread"]

    assert settled_after(2.9) == []
    assert settled_after(3.2) == ["1:restart:: fair after 3.200 s (allowed 3.000 s)"]


def test_a_replica_cut_off_past_the_ttl_leaves_the_others_to_share() -> None:
    """a is cut off from 1.0 to 5.0 s (ttl 1.5): fenced from 2.5 s, it owns nothing, and
    b and c sharing the four handlers is fair; a total outage's cut is not assessed."""
    handlers = ("h0", "h1", "h2", "h3")
    samples = [
        Sample(replica="a", t=0, units=frozenset(handlers[:2])),
        Sample(replica="b", t=0, units=frozenset(handlers[2:3])),
        Sample(replica="c", t=0, units=frozenset(handlers[3:])),
        Sample(replica="a", t=round(2.5 * S), units=frozenset()),
        Sample(replica="b", t=round(3.0 * S), units=frozenset(handlers[:2])),
        Sample(replica="c", t=round(3.0 * S), units=frozenset(handlers[2:])),
        Sample(replica="a", t=round(5.5 * S), units=frozenset(handlers[:1])),
        Sample(replica="b", t=round(5.5 * S), units=frozenset(handlers[1:2])),
    ]
    one = check(audit([], [event("blackhole", 1.0, "a", until=5.0)], samples, handlers), RULES)
    assert one.violations == []
    assert one.settles == {"1:blackhole:a:cut": 0.5, "1:blackhole:a:back": 0.5}
    every = check(audit([], [event("blackhole", 1.0, until=5.0)], samples, handlers), RULES)
    assert list(every.settles) == ["1:blackhole::back"]


def test_the_cadence_is_not_held_across_a_restart_that_loses_the_data() -> None:
    """A Redis without persistence restarts at 1.05 s, 0.05 s after a's end: the ledger is
    lost, b's start 0.1 s after that end is not a cadence break there; on a server that
    keeps its data (PostgreSQL) it is."""
    executions = [run("h0", "a", 1, 0.9, 1.0), run("h0", "b", 2, 1.1, 1.2)]
    restarted = audit(executions, [event("restart", 1.05, until=1.08)])
    kept = check(restarted, RULES)
    assert kept.failed("cadence")
    lost = check(restarted, dataclasses.replace(RULES, restarts_lose_data=True))
    assert not lost.failed("cadence")


def test_a_start_written_as_its_replica_woke_from_a_long_freeze_was_frozen_before() -> None:
    """Frozen between deciding to start and the handler's first line: the start is written
    just after the SIGCONT, with the token of before the freeze, after another replica ran
    the handler meanwhile. Guarantee 1's exception (frozen mid-execution), not a start that
    breaks the cadence or the token order; written later, it is both."""
    freeze = [event("stop", 1.2, "a", until=4.2)]
    executions = [run("h0", "b", 2, 3.0, 4.15), run("h0", "a", 1, 4.2001, 4.21, how="cancel")]
    found = check(audit(executions, freeze), RULES)
    assert found.excused == 1
    assert not {"overlap", "cadence", "token"} & {v.check for v in found.violations}
    late = [run("h0", "b", 2, 3.0, 4.15), run("h0", "a", 1, 4.26, 4.27, how="cancel")]
    assert checks(audit(late, freeze)) >= {"cadence", "token"}
