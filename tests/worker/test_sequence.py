"""SequenceWorker: steps and DAGs, failures, on-demand passes, the daemon, stop."""

from __future__ import annotations

import asyncio
import logging
import threading
from datetime import timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import pytest

import workit
from tests.support import executions, fake_clock
from workit import HandlerError, HandlerTimeout, SequenceWorker
from workit.status import EngineInfo, HandlerInfo
from workit.worker import State

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry


class Probe:
    """A handler that records when each execution starts and ends."""

    def __init__(
        self,
        name: str,
        *,
        duration: float = 0.0,
        error: BaseException | None = None,
        active: bool = True,
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self.duration = duration
        self.error = error
        self.active = active
        self.timeout = timeout
        self.starts: list[float] = []
        self.ends: list[float] = []

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        await anyio.sleep(self.duration)
        self.ends.append(anyio.current_time())
        if self.error is not None:
            raise self.error

    def __repr__(self) -> str:
        return f"Probe({self.name!r})"


class Hung:
    """A handler that waits forever and records whether it was cancelled."""

    name = "hung"

    def __init__(self) -> None:
        self.started = anyio.Event()
        self.cancelled = False

    async def ensure(self) -> None:
        self.started.set()
        try:
            await anyio.sleep_forever()
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise


class Rendezvous:
    """A handler that announces its arrival and waits for its partner's."""

    def __init__(self, name: str, mine: anyio.Event, partner: anyio.Event) -> None:
        self.name = name
        self._mine = mine
        self._partner = partner

    async def ensure(self) -> None:
        self._mine.set()
        await self._partner.wait()


class NotAHandler:
    """An object without ``ensure``."""

    def __repr__(self) -> str:
        return "<not a handler>"


class Skip(Exception):
    """An exception the registry is told to ignore."""


def relative(times: list[float], origin: float) -> list[float]:
    return [time - origin for time in times]


def error_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [record for record in caplog.records if record.levelno >= logging.ERROR]


async def run_daemon_until(worker: SequenceWorker, seconds: float) -> float:
    """Run ``worker.daemon()``, stop it ``seconds`` in; return when it returned."""
    start = anyio.current_time()

    async def stop_later() -> None:
        await anyio.sleep(seconds)
        worker.stop()

    with anyio.fail_after(seconds + 100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(stop_later)
            await worker.daemon()
    return anyio.current_time() - start


# List-of-steps form


@fake_clock()
@pytest.mark.anyio
async def test_step_starts_after_every_handler_of_previous_step(
    registry: workit.Registry,
) -> None:
    """Step k starts only once the slowest handler of step k-1 has finished."""
    fast, slow = Probe("fast", duration=1), Probe("slow", duration=3)
    last = Probe("last")
    worker = SequenceWorker([[fast, slow], [last]], registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        await worker.ensure()
    assert relative(last.starts, start) == [3]


@fake_clock()
@pytest.mark.anyio
async def test_three_steps_run_in_order(registry: workit.Registry) -> None:
    """Each step starts when the previous one ended, in list order."""
    first, second, third = (Probe(name, duration=2) for name in ("first", "second", "third"))
    worker = SequenceWorker([[first], [second], [third]], registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        await worker.ensure()
    assert [relative(p.starts, start) for p in (first, second, third)] == [[0], [2], [4]]


@pytest.mark.anyio
async def test_handlers_in_one_step_run_concurrently(registry: workit.Registry) -> None:
    """Two handlers of one step each wait for the other: only concurrency lets both finish."""
    left_arrived, right_arrived = anyio.Event(), anyio.Event()
    left = Rendezvous("left", left_arrived, right_arrived)
    right = Rendezvous("right", right_arrived, left_arrived)
    worker = SequenceWorker([[left, right]], registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()
    assert left_arrived.is_set()
    assert right_arrived.is_set()


@pytest.mark.anyio
async def test_sync_handlers_in_one_step_run_concurrently(registry: workit.Registry) -> None:
    """Two sync handlers of one step meet at a thread barrier only they can both reach."""
    barrier = threading.Barrier(2, timeout=5)
    left = workit.Handler(barrier.wait, name="left")
    right = workit.Handler(barrier.wait, name="right")
    worker = SequenceWorker([[left, right]], registry=registry)
    with anyio.fail_after(10):
        await worker.ensure()
    assert not barrier.broken


# Mapping form


@fake_clock()
@pytest.mark.anyio
async def test_mapping_dependent_starts_before_unrelated_slow_handler_ends(
    registry: workit.Registry,
) -> None:
    """In {a: [], b: [], c: [a]}, c starts when a ends, not when slow b ends."""
    a, b, c = Probe("a", duration=1), Probe("b", duration=5), Probe("c")
    worker = SequenceWorker({a: [], b: [], c: [a]}, registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        await worker.ensure()
    assert relative(c.starts, start) == [1]
    assert relative(b.ends, start) == [5]


@fake_clock()
@pytest.mark.anyio
async def test_mapping_node_starts_after_all_its_dependencies(
    registry: workit.Registry,
) -> None:
    """A node with two dependencies starts when the later of them ends."""
    a, b, c = Probe("a", duration=1), Probe("b", duration=3), Probe("c")
    worker = SequenceWorker({c: [a, b], a: [], b: []}, registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        await worker.ensure()
    assert relative(a.starts, start) == [0]
    assert relative(b.starts, start) == [0]
    assert relative(c.starts, start) == [3]


@fake_clock()
@pytest.mark.anyio
async def test_mapping_diamond_runs_branches_concurrently_then_joins(
    registry: workit.Registry,
) -> None:
    """In a diamond top -> (left, right) -> bottom the branches overlap and bottom waits both."""
    top = Probe("top", duration=1)
    left, right = Probe("left", duration=2), Probe("right", duration=4)
    bottom = Probe("bottom")
    worker = SequenceWorker(
        {top: [], left: [top], right: [top], bottom: [left, right]}, registry=registry
    )
    start = anyio.current_time()
    with anyio.fail_after(100):
        await worker.ensure()
    assert relative(left.starts, start) == [1]
    assert relative(right.starts, start) == [1]
    assert relative(bottom.starts, start) == [5]


@fake_clock()
@pytest.mark.anyio
async def test_mapping_chain_runs_in_dependency_order(registry: workit.Registry) -> None:
    """A chain given in reverse key order still runs from the root down."""
    a, b, c = Probe("a", duration=1), Probe("b", duration=1), Probe("c", duration=1)
    worker = SequenceWorker({c: [b], b: [a], a: []}, registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        await worker.ensure()
    assert [relative(p.starts, start) for p in (a, b, c)] == [[0], [1], [2]]


# Inactive handlers


@pytest.mark.anyio
async def test_inactive_handler_in_a_step_is_skipped_and_next_step_runs(
    registry: workit.Registry,
) -> None:
    """An inactive handler does not run, and the step after it still does."""
    off, after = Probe("off", active=False), Probe("after")
    worker = SequenceWorker([[off], [after]], registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()
    assert off.starts == []
    assert len(after.starts) == 1


@pytest.mark.anyio
async def test_inactive_dependency_counts_as_done(registry: workit.Registry) -> None:
    """A node whose only dependency is inactive still runs."""
    off, dependent = Probe("off", active=False), Probe("dependent")
    worker = SequenceWorker({off: [], dependent: [off]}, registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()
    assert off.starts == []
    assert len(dependent.starts) == 1


@pytest.mark.anyio
async def test_inactive_handler_is_not_counted(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """A skipped handler records no execution, success or failure; an active one does."""
    off, on = Probe("off", active=False), Probe("on")
    worker = SequenceWorker([[off, on]], registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()
    assert executions(prom, "off", True) == 0
    assert executions(prom, "off", False) == 0
    assert executions(prom, "on", True) == 1


# Failures


@pytest.mark.anyio
async def test_failure_starts_no_later_step(registry: workit.Registry) -> None:
    """After a handler fails, the next step never starts."""
    bad, after = Probe("bad", error=RuntimeError("boom")), Probe("after")
    worker = SequenceWorker([[bad], [after]], registry=registry)
    with anyio.fail_after(5), pytest.raises(HandlerError):
        await worker.ensure()
    assert after.starts == []


@fake_clock()
@pytest.mark.anyio
async def test_failure_starts_no_dependent_of_a_branch_that_is_still_running(
    registry: workit.Registry,
) -> None:
    """A dependent that becomes ready after another branch failed is not started."""
    bad = Probe("bad", duration=1, error=RuntimeError("boom"))
    slow, after_slow = Probe("slow", duration=3), Probe("after_slow")
    worker = SequenceWorker({bad: [], slow: [], after_slow: [slow]}, registry=registry)
    with anyio.fail_after(100), pytest.raises(HandlerError):
        await worker.ensure()
    assert after_slow.starts == []


@fake_clock()
@pytest.mark.anyio
async def test_failure_lets_running_handlers_finish_and_counts_them(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """A handler running when another fails finishes, is counted, and ensure() waits for it."""
    bad = Probe("bad", duration=1, error=RuntimeError("boom"))
    slow = Probe("slow", duration=3)
    worker = SequenceWorker([[bad, slow]], registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100), pytest.raises(HandlerError):
        await worker.ensure()
    assert anyio.current_time() - start == 3
    assert relative(slow.ends, start) == [3]
    assert executions(prom, "slow", True) == 1
    assert executions(prom, "bad", False) == 1


@pytest.mark.anyio
async def test_handler_error_names_the_failing_handler_and_chains_the_cause(
    registry: workit.Registry,
) -> None:
    """ensure() raises HandlerError with .handler the failing name and __cause__ its exception."""
    boom = RuntimeError("boom")
    good, bad = Probe("good"), Probe("bad", error=boom)
    worker = SequenceWorker([[good], [bad]], registry=registry)
    with anyio.fail_after(5), pytest.raises(HandlerError) as caught:
        await worker.ensure()
    assert type(caught.value) is HandlerError
    assert caught.value.handler == "bad"
    assert caught.value.__cause__ is boom


@pytest.mark.anyio
async def test_failure_is_logged_at_error_with_the_handler_name(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing handler is logged once as 'worker execution failed', naming it in the message
    and in the ``handler`` field."""
    worker = SequenceWorker([[Probe("bad", error=RuntimeError("boom"))]], registry=registry)
    with anyio.fail_after(5), pytest.raises(HandlerError):
        await worker.ensure()
    records = error_records(caplog)
    assert [record.getMessage() for record in records] == ["worker execution failed: handler 'bad'"]
    assert records[0].__dict__["handler"] == "bad"
    assert records[0].exc_info is not None


@pytest.mark.anyio
async def test_ignored_exception_still_raises_handler_error_and_stops_the_pass(
    prom: CollectorRegistry, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """An ignored exception counts as success, is not logged, yet ensure() raises and stops."""
    registry = workit.Registry(
        "test",
        ignore=lambda error: isinstance(error, Skip),
        metrics=workit.metrics.Prometheus(prom),
        logger=logger,
    )
    skip = Skip("not now")
    skipping, after = Probe("skipping", error=skip), Probe("after")
    worker = SequenceWorker([[skipping], [after]], registry=registry)
    with anyio.fail_after(5), pytest.raises(HandlerError) as caught:
        await worker.ensure()
    assert caught.value.handler == "skipping"
    assert caught.value.__cause__ is skip
    assert registry.ignores(caught.value.__cause__)
    assert after.starts == []
    assert executions(prom, "skipping", True) == 1
    assert executions(prom, "skipping", False) == 0
    assert error_records(caplog) == []


@fake_clock()
@pytest.mark.anyio
async def test_timeout_raises_handler_timeout(registry: workit.Registry) -> None:
    """An async handler with timeout=1 sleeping 10 s raises HandlerTimeout at 1 s."""
    slow, after = Probe("slow", duration=10, timeout=1), Probe("after")
    worker = SequenceWorker([[slow], [after]], registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100), pytest.raises(HandlerTimeout) as caught:
        await worker.ensure()
    assert anyio.current_time() - start == 1
    assert caught.value.handler == "slow"
    assert isinstance(caught.value, HandlerError)
    assert slow.ends == []
    assert after.starts == []


# On-demand passes


@fake_clock()
@pytest.mark.anyio
async def test_on_demand_ensure_restarts_the_daemon_wait(registry: workit.Registry) -> None:
    """With cooler 10, passes at 0 (daemon) and 4 (ensure) put the next daemon pass at 14."""
    probe = Probe("probe")
    worker = SequenceWorker([[probe]], cooler=10, registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.sleep(4)
            await worker.ensure()
            await anyio.sleep(15)
            worker.stop()
    assert relative(probe.starts, start) == [0, 4, 14]


@fake_clock()
@pytest.mark.anyio
async def test_on_demand_ensure_waits_for_a_running_daemon_pass(
    registry: workit.Registry,
) -> None:
    """An ensure() during a 5 s daemon pass starts its own pass only when that one ends."""
    probe = Probe("probe", duration=5)
    worker = SequenceWorker([[probe]], cooler=100, registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(1000):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.sleep(1)
            await worker.ensure()
            ensured = anyio.current_time() - start
            worker.stop()
    assert relative(probe.starts, start) == [0, 5]
    assert ensured == 10


@fake_clock()
@pytest.mark.anyio
async def test_on_demand_pass_overrunning_the_due_time_delays_the_daemon_pass(
    registry: workit.Registry,
) -> None:
    """An ensure() at 8 taking 5 s with cooler 10 puts the next daemon pass at 23, not 10 or 13."""
    probe = Probe("probe")
    worker = SequenceWorker([[probe]], cooler=10, registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.sleep(8)
            probe.duration = 5
            await worker.ensure()
            probe.duration = 0
            await anyio.sleep(12)
            worker.stop()
    assert relative(probe.starts, start) == [0, 8, 23]


@fake_clock()
@pytest.mark.anyio
async def test_concurrent_on_demand_passes_do_not_overlap(registry: workit.Registry) -> None:
    """Two ensure() calls at once run one pass after the other."""
    probe = Probe("probe", duration=2)
    worker = SequenceWorker([[probe]], registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.ensure)
            tasks.start_soon(worker.ensure)
    assert relative(probe.starts, start) == [0, 2]


@fake_clock()
@pytest.mark.anyio
async def test_ensure_after_stop_without_a_daemon_runs_the_pass(registry: workit.Registry) -> None:
    """stop() with no daemon running only concerns the next daemon: ensure() runs every pass."""
    first, second = Probe("first"), Probe("second")
    worker = SequenceWorker([[first], [second]], registry=registry)
    with anyio.fail_after(100):
        await worker.ensure()
        worker.stop()
        for _ in range(3):
            await worker.ensure()
    assert (len(first.starts), len(second.starts)) == (4, 4)
    assert [handler.executions for handler in worker.status().handlers] == [4, 4]


class Gated(Probe):
    """A probe whose executions wait for ``gate`` once ``hold()`` was called."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate: anyio.Event | None = None
        self.started = anyio.Event()

    def hold(self) -> anyio.Event:
        self.gate = anyio.Event()
        self.started = anyio.Event()
        return self.gate

    async def ensure(self) -> None:
        self.started.set()
        if self.gate is not None:
            await self.gate.wait()
        await super().ensure()


@pytest.mark.anyio
async def test_stop_during_an_on_demand_pass_raises_naming_what_did_not_run(
    registry: workit.Registry,
) -> None:
    """A stop cutting an on-demand pass short makes ensure() raise RuntimeError naming the
    handlers that did not run; the one running finishes; the daemon returns after it."""
    first, second, third = Gated("first"), Probe("second"), Probe("third")
    worker = SequenceWorker([[first], [second], [third]], cooler=3600, registry=registry)
    raised: list[RuntimeError] = []

    async def on_demand() -> None:
        try:
            await worker.ensure()
        except RuntimeError as error:
            raised.append(error)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.wait_all_tasks_blocked()  # the daemon's first pass is over
            gate = first.hold()
            tasks.start_soon(on_demand)
            await first.started.wait()
            worker.stop()
            await anyio.wait_all_tasks_blocked()
            assert raised == []
            gate.set()
    [error] = raised
    assert not isinstance(error, HandlerError)
    assert "stopped during the pass" in str(error)
    assert "'second', 'third' did not run" in str(error)
    assert (len(first.ends), len(second.starts), len(third.starts)) == (2, 1, 1)


@pytest.mark.anyio
async def test_ensure_while_stopping_is_refused(registry: workit.Registry) -> None:
    """ensure() while the daemon drains after stop() raises RuntimeError and runs nothing."""
    gated = Gated("gated")
    gate = gated.hold()
    worker = SequenceWorker([[gated]], cooler=3600, registry=registry)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await gated.started.wait()
            worker.stop()
            assert worker.state is State.STOPPING
            with pytest.raises(RuntimeError, match="stopping"):
                await worker.ensure()
            gate.set()
    assert len(gated.starts) == 1


@fake_clock()
@pytest.mark.anyio
async def test_ensure_runs_again_once_a_stopped_daemon_has_returned(
    registry: workit.Registry,
) -> None:
    """Once a stopped daemon has returned, ensure() runs whole passes again."""
    first, second = Probe("first"), Probe("second")
    worker = SequenceWorker([[first], [second]], cooler=10, registry=registry)
    await run_daemon_until(worker, 3)
    assert worker.state is State.IDLE
    with anyio.fail_after(100):
        await worker.ensure()
        await worker.ensure()
    assert (len(first.starts), len(second.starts)) == (3, 3)


class AsyncRefresh:
    """A handler whose execution awaits its own worker's ensure()."""

    name = "refresh"

    def __init__(self) -> None:
        self.worker: SequenceWorker | None = None

    async def ensure(self) -> None:
        assert self.worker is not None
        await self.worker.ensure()


class SyncRefresh:
    """A sync handler that runs its own worker's ensure() from its worker thread."""

    name = "refresh"

    def __init__(self) -> None:
        self.worker: SequenceWorker | None = None

    def ensure(self) -> None:
        assert self.worker is not None
        anyio.from_thread.run(self.worker.ensure)


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.anyio
async def test_handler_calling_its_own_workers_ensure_fails_instead_of_deadlocking(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture, sync: bool
) -> None:
    """A handler calling its own worker's ensure() during a pass gets a RuntimeError saying
    so: its execution fails, and the outer ensure() raises HandlerError at once."""
    refresh = SyncRefresh() if sync else AsyncRefresh()
    after = Probe("after")
    worker = refresh.worker = SequenceWorker([[refresh], [after]], registry=registry)
    with anyio.fail_after(5), pytest.raises(HandlerError) as raised:
        await worker.ensure()
    cause = raised.value.__cause__
    assert isinstance(cause, RuntimeError)
    assert "called by its own handler 'refresh' during a pass" in str(cause)
    assert after.starts == []
    [record] = [r for r in error_records(caplog) if r.getMessage().startswith("worker execution")]
    assert record.exc_info is not None
    assert record.exc_info[1] is cause


@pytest.mark.anyio
async def test_ensure_from_a_task_outside_the_pass_still_waits_for_it(
    registry: workit.Registry,
) -> None:
    """ensure() while another caller's pass runs is not reentrant: it waits, then passes."""
    gated = Gated("gated")
    gate = gated.hold()
    worker = SequenceWorker([[gated]], registry=registry)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.ensure)
            await gated.started.wait()
            tasks.start_soon(worker.ensure)
            await anyio.wait_all_tasks_blocked()
            assert len(gated.starts) == 0
            gate.set()
    assert len(gated.ends) == 2


class Trigger:
    """A handler of another worker that runs a sequence's pass from its execution."""

    cooler = 3600

    def __init__(self, name: str, sequence: SequenceWorker) -> None:
        self.name = name
        self.sequence = sequence

    async def ensure(self) -> None:
        await self.sequence.ensure()


@pytest.mark.anyio
async def test_handler_of_another_worker_with_the_same_name_waits_for_the_pass(
    registry: workit.Registry,
) -> None:
    """A handler of another engine, named like one of the sequence's, that calls the
    sequence's ensure() during a pass is not reentrant: it waits, then its pass runs."""
    gated = Gated("step")
    gate = gated.hold()
    sequence = SequenceWorker([[gated]], registry=registry)
    other = workit.ParallelWorker([Trigger("step", sequence)], registry=registry)
    failed: list[HandlerError] = []

    async def trigger() -> None:
        try:
            await other.ensure()
        except HandlerError as error:
            failed.append(error)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(sequence.ensure)
            await gated.started.wait()
            tasks.start_soon(trigger)
            await anyio.wait_all_tasks_blocked()
            gate.set()
    assert failed == []
    assert len(gated.ends) == 2


# A handler cancelling its own task (asyncio)


class CancelsItself:
    """An async handler that cancels the task it runs in, then awaits."""

    name = "cancels_itself"

    async def ensure(self) -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()
        await asyncio.sleep(0)


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_handler_cancelling_its_own_task_fails_the_pass(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """On asyncio, a handler cancelling its own task fails the pass: ensure() raises
    HandlerError caused by the CancelledError; the dependent does not run."""
    after = Probe("after")
    worker = SequenceWorker([[CancelsItself()], [after]], registry=registry)
    with anyio.fail_after(5), pytest.raises(HandlerError) as raised:
        await worker.ensure()
    assert raised.value.handler == "cancels_itself"
    assert isinstance(raised.value.__cause__, asyncio.CancelledError)
    assert after.starts == []
    assert executions(prom, "cancels_itself", False) == 1
    with anyio.fail_after(5), pytest.raises(HandlerError):
        await worker.ensure()  # the engine, and the caller's task, are not cancelled
    assert executions(prom, "cancels_itself", False) == 2


# The daemon


@fake_clock()
@pytest.mark.parametrize("cooler", [None, 0])
@pytest.mark.anyio
async def test_daemon_returns_at_once_without_cooler(
    registry: workit.Registry, cooler: float | None
) -> None:
    """With cooler None or 0, daemon() returns at once, runs nothing, and wait_ready() returns."""
    probe = Probe("probe")
    worker = SequenceWorker([[probe]], cooler=cooler, registry=registry)
    start = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.wait_ready)
            await worker.daemon()
        await worker.wait_ready()
    assert anyio.current_time() == start
    assert probe.starts == []


@fake_clock()
@pytest.mark.anyio
async def test_daemon_runs_a_pass_cooler_after_each_pass_ends(
    registry: workit.Registry,
) -> None:
    """A 3 s pass with cooler 5 starts at 0, 8 and 16: the pass duration is not included."""
    probe = Probe("probe", duration=3)
    worker = SequenceWorker([[probe]], cooler=5, registry=registry)
    start = anyio.current_time()
    await run_daemon_until(worker, 17)
    assert relative(probe.starts, start) == [0, 8, 16]


@fake_clock()
@pytest.mark.anyio
async def test_daemon_logs_failures_and_keeps_running(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A failing pass is logged at ERROR, never raised, and the next pass still comes."""
    bad = Probe("bad", error=RuntimeError("boom"))
    worker = SequenceWorker([[bad]], cooler=5, registry=registry)
    start = anyio.current_time()
    await run_daemon_until(worker, 12)
    assert relative(bad.starts, start) == [0, 5, 10]
    failures = [
        r for r in error_records(caplog) if r.getMessage().startswith("worker execution failed")
    ]
    assert [r.__dict__["handler"] for r in failures] == ["bad", "bad", "bad"]


@fake_clock()
@pytest.mark.anyio
async def test_daemon_does_not_log_ignored_failures(
    prom: CollectorRegistry, logger: logging.Logger, caplog: pytest.LogCaptureFixture
) -> None:
    """An ignored exception in a daemon pass is neither logged at ERROR nor raised."""
    registry = workit.Registry(
        "test",
        ignore=lambda error: isinstance(error, Skip),
        metrics=workit.metrics.Prometheus(prom),
        logger=logger,
    )
    skipping = Probe("skipping", error=Skip("not now"))
    worker = SequenceWorker([[skipping]], cooler=5, registry=registry)
    await run_daemon_until(worker, 7)
    assert len(skipping.starts) == 2
    assert executions(prom, "skipping", True) == 2
    assert error_records(caplog) == []


@fake_clock()
@pytest.mark.anyio
async def test_daemon_logs_that_it_is_executing_tasks(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """The daemon logs info 'worker is executing tasks' with the number of pipelines."""
    worker = SequenceWorker([[Probe("probe")]], cooler=5, registry=registry)
    await run_daemon_until(worker, 1)
    records = [r for r in caplog.records if r.getMessage() == "worker is executing tasks"]
    assert len(records) == 1
    assert records[0].levelno == logging.INFO
    assert records[0].__dict__["pipelines"] == 1


@fake_clock()
@pytest.mark.anyio
async def test_daemon_uses_the_engine_logger_when_given(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """Failures are logged through the worker's logger= rather than the registry's."""
    own = logging.getLogger("workit.tests.sequence")
    bad = Probe("bad", error=RuntimeError("boom"))
    worker = SequenceWorker([[bad]], cooler=5, registry=registry, logger=own)
    await run_daemon_until(worker, 1)
    failures = [
        r for r in error_records(caplog) if r.getMessage().startswith("worker execution failed")
    ]
    assert [r.name for r in failures] == ["workit.tests.sequence"]


# stop()


@fake_clock()
@pytest.mark.anyio
async def test_stop_lets_the_running_handler_finish_and_starts_no_other(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """stop() during step 0 lets it finish, never starts step 1, and the daemon returns."""
    slow, after = Probe("slow", duration=5), Probe("after")
    worker = SequenceWorker([[slow], [after]], cooler=10, registry=registry)
    start = anyio.current_time()
    returned = await run_daemon_until(worker, 1)
    assert returned == 5
    assert relative(slow.ends, start) == [5]
    assert executions(prom, "slow", True) == 1
    assert after.starts == []


@fake_clock()
@pytest.mark.anyio
async def test_stop_during_the_cooler_returns_at_once(registry: workit.Registry) -> None:
    """stop() while the daemon waits its cooler returns without another pass."""
    probe = Probe("probe")
    worker = SequenceWorker([[probe]], cooler=10, registry=registry)
    returned = await run_daemon_until(worker, 3)
    assert returned == 3
    assert len(probe.starts) == 1


@fake_clock()
@pytest.mark.anyio
async def test_stop_cancels_a_hung_handler_when_the_grace_expires(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A handler still running when the grace period ends is cancelled and the daemon returns."""
    hung = Hung()
    worker = SequenceWorker([[hung]], cooler=10, registry=registry, grace=2)
    returned = await run_daemon_until(worker, 1)
    assert returned == 3
    assert hung.cancelled
    assert any(
        r.levelno == logging.WARNING and "cancelled" in r.getMessage() for r in caplog.records
    )


def test_describe_gives_the_timeouts_the_pass_cooler_and_the_graph(
    registry: workit.Registry,
) -> None:
    """describe(): one sequence engine, its handlers' timeouts (no cooler of their own),
    the pass's cooler and each handler's dependencies by name."""
    fetch, parse, load = Probe("fetch", timeout=30), Probe("parse"), Probe("load", timeout=5)
    worker = SequenceWorker(
        {fetch: [], parse: [fetch], load: [fetch, parse]},
        cooler=timedelta(minutes=10),
        registry=registry,
    )
    assert worker.describe() == (
        EngineInfo(
            kind="sequence",
            handlers=(
                HandlerInfo(name="fetch", cooler=None, timeout=30.0),
                HandlerInfo(name="parse", cooler=None, timeout=None),
                HandlerInfo(name="load", cooler=None, timeout=5.0),
            ),
            cooler=600.0,
            dependencies={"fetch": [], "parse": ["fetch"], "load": ["fetch", "parse"]},
        ),
    )


def test_describe_of_an_on_demand_sequence_has_no_cooler(registry: workit.Registry) -> None:
    """describe() of a sequence without cooler gives cooler None; steps become dependencies."""
    [engine] = SequenceWorker(
        [[Probe("a"), Probe("b")], [Probe("c")]], registry=registry
    ).describe()
    assert engine.cooler is None
    assert engine.dependencies == {"a": [], "b": [], "c": ["a", "b"]}


class BrokenTimeout:
    """A handler whose timeout() raises."""

    name = "broken_timeout"

    def timeout(self) -> float:
        raise LookupError("no timeout today")

    async def ensure(self) -> None:
        pass


def test_describe_says_when_a_timeout_could_not_be_read(registry: workit.Registry) -> None:
    """describe() of a handler whose timeout() raises gives timeout None and the error."""
    [engine] = SequenceWorker([[BrokenTimeout()]], registry=registry).describe()
    [info] = engine.handlers
    assert (info.timeout, info.timeout_error) == (None, "no timeout today")


# Construction errors


def test_empty_list_is_rejected(registry: workit.Registry) -> None:
    """An empty list of steps raises ValueError."""
    with pytest.raises(ValueError):
        SequenceWorker([], registry=registry)


def test_empty_mapping_is_rejected(registry: workit.Registry) -> None:
    """An empty mapping raises ValueError."""
    with pytest.raises(ValueError):
        SequenceWorker({}, registry=registry)


def test_empty_step_is_rejected_by_index(registry: workit.Registry) -> None:
    """An empty step raises ValueError naming its index."""
    with pytest.raises(ValueError, match=r"step 1\b"):
        SequenceWorker([[Probe("a")], []], registry=registry)


def test_step_that_is_a_handler_is_rejected(registry: workit.Registry) -> None:
    """A step given as a bare handler instead of a list raises TypeError naming the step."""
    with pytest.raises(TypeError, match=r"step 1\b"):
        SequenceWorker([[Probe("a")], Probe("b")], registry=registry)  # type: ignore[list-item]


def test_none_in_a_step_is_rejected(registry: workit.Registry) -> None:
    """None inside a step raises TypeError naming it and the step."""
    with pytest.raises(TypeError, match=r"step 0.*None"):
        SequenceWorker([[Probe("a"), None]], registry=registry)  # type: ignore[list-item]  # the bad input under test


def test_object_without_ensure_in_a_step_is_rejected(registry: workit.Registry) -> None:
    """An object without ensure() inside a step raises TypeError naming it."""
    with pytest.raises(TypeError, match="<not a handler>"):
        SequenceWorker([[Probe("a")], [NotAHandler()]], registry=registry)  # type: ignore[list-item]  # the bad input under test


def test_none_as_a_key_is_rejected(registry: workit.Registry) -> None:
    """None as a mapping key raises TypeError naming it."""
    with pytest.raises(TypeError, match="None"):
        SequenceWorker({None: []}, registry=registry)


def test_object_without_ensure_as_a_key_is_rejected(registry: workit.Registry) -> None:
    """An object without ensure() as a mapping key raises TypeError naming it."""
    with pytest.raises(TypeError, match="<not a handler>"):
        SequenceWorker({Probe("a"): [], NotAHandler(): []}, registry=registry)


def test_none_as_a_dependency_is_rejected(registry: workit.Registry) -> None:
    """None as a dependency raises an error naming it and the dependent."""
    with pytest.raises((TypeError, ValueError), match=r"'a'.*None"):
        SequenceWorker({Probe("a"): [None]}, registry=registry)  # type: ignore[list-item]  # the bad input under test


def test_object_without_ensure_as_a_dependency_is_rejected(registry: workit.Registry) -> None:
    """An object without ensure() as a dependency raises an error naming it and the dependent."""
    with pytest.raises((TypeError, ValueError), match=r"'a'.*<not a handler>"):
        SequenceWorker({Probe("a"): [NotAHandler()]}, registry=registry)  # type: ignore[list-item]  # the bad input under test


def test_two_handler_cycle_is_rejected_naming_it(registry: workit.Registry) -> None:
    """A two-handler cycle raises ValueError naming both handlers."""
    alpha, beta, gamma = Probe("alpha"), Probe("beta"), Probe("gamma")
    with pytest.raises(ValueError, match="cycle") as caught:
        SequenceWorker({gamma: [], alpha: [beta, gamma], beta: [alpha]}, registry=registry)
    assert "alpha" in str(caught.value)
    assert "beta" in str(caught.value)


def test_three_handler_cycle_is_rejected_naming_it(registry: workit.Registry) -> None:
    """A three-handler cycle raises ValueError naming each handler in it."""
    alpha, beta, gamma = Probe("alpha"), Probe("beta"), Probe("gamma")
    with pytest.raises(ValueError, match="cycle") as caught:
        SequenceWorker({alpha: [gamma], beta: [alpha], gamma: [beta]}, registry=registry)
    for name in ("alpha", "beta", "gamma"):
        assert name in str(caught.value)


def test_self_dependency_is_rejected(registry: workit.Registry) -> None:
    """A handler depending on itself raises ValueError naming it."""
    alpha = Probe("alpha")
    with pytest.raises(ValueError, match="alpha"):
        SequenceWorker({alpha: [alpha]}, registry=registry)


def test_dependency_missing_from_the_graph_is_rejected(registry: workit.Registry) -> None:
    """A dependency that is not a key raises ValueError naming it and its dependent."""
    dependent, missing = Probe("dependent"), Probe("missing")
    with pytest.raises(ValueError, match="not in the graph") as caught:
        SequenceWorker({dependent: [missing]}, registry=registry)
    assert "dependent" in str(caught.value)
    assert "missing" in str(caught.value)


def test_duplicate_names_in_steps_are_rejected(registry: workit.Registry) -> None:
    """Two handlers with one name in the steps form raise ValueError telling to set `name`."""
    with pytest.raises(ValueError, match=r"'same'(.|\n)*`name`"):
        SequenceWorker([[Probe("same")], [Probe("same")]], registry=registry)


def test_duplicate_names_in_a_mapping_are_rejected(registry: workit.Registry) -> None:
    """Two handlers with one name in the mapping form raise ValueError telling to set `name`."""
    with pytest.raises(ValueError, match=r"'same'(.|\n)*`name`"):
        SequenceWorker({Probe("same"): [], Probe("same"): []}, registry=registry)


@pytest.mark.parametrize("cooler", [-1, -0.5, timedelta(seconds=-1)])
def test_negative_cooler_is_rejected(registry: workit.Registry, cooler: float | timedelta) -> None:
    """A negative cooler raises ValueError naming the cooler."""
    with pytest.raises(ValueError, match="cooler"):
        SequenceWorker([[Probe("a")]], cooler=cooler, registry=registry)


@fake_clock()
@pytest.mark.anyio
async def test_cooler_as_timedelta_paces_the_daemon(registry: workit.Registry) -> None:
    """cooler=timedelta(seconds=5) runs daemon passes 5 s apart."""
    probe = Probe("probe")
    worker = SequenceWorker([[probe]], cooler=timedelta(seconds=5), registry=registry)
    start = anyio.current_time()
    await run_daemon_until(worker, 12)
    assert relative(probe.starts, start) == [0, 5, 10]
