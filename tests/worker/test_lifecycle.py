"""The engine lifecycle every worker shares: ready, stop, grace, cancellation, run()."""

from __future__ import annotations

import asyncio
import select
import signal
import subprocess
import sys
import textwrap
import threading
from typing import TYPE_CHECKING

import anyio
import anyio.from_thread
import anyio.to_thread
import pytest
from prometheus_client import CollectorRegistry

import workit
from tests.support import executions, fake_clock
from workit.worker import State

if TYPE_CHECKING:
    from anyio.abc import TaskStatus


class Idle:
    """An async handler that returns at once and then cools for an hour."""

    cooler = 3600

    def __init__(self, name: str = "idle") -> None:
        self.name = name
        self.calls = 0

    async def ensure(self) -> None:
        self.calls += 1


class Busy:
    """An async handler whose execution takes ``takes`` seconds (forever when ``None``)."""

    name = "busy"
    cooler = 0

    def __init__(self, takes: float | None) -> None:
        self.takes = takes
        self.started = anyio.Event()
        self.calls = 0
        self.finished = 0
        self.cancelled = False

    async def ensure(self) -> None:
        self.calls += 1
        self.started.set()
        try:
            if self.takes is None:
                await anyio.sleep_forever()
            else:
                await anyio.sleep(self.takes)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.finished += 1


class Daemon:
    """Runs ``worker.daemon()`` in ``tasks`` and notes when it returns."""

    def __init__(self, worker: workit.Worker) -> None:
        self.worker = worker
        self.returned = anyio.Event()
        self.returned_at: float | None = None

    async def run(self) -> None:
        await self.worker.daemon()
        self.returned_at = anyio.current_time()
        self.returned.set()


@pytest.mark.anyio
async def test_wait_ready_returns_once_the_daemon_has_started(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """``wait_ready()`` waits for ``daemon()``, which logs its pipelines as it starts."""
    worker = workit.ParallelWorker([Idle("a"), Idle("b"), Idle("c")], registry=registry)
    ready = anyio.Event()

    async def wait_ready() -> None:
        await worker.wait_ready()
        ready.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait_ready)
            await anyio.wait_all_tasks_blocked()
            assert not ready.is_set()
            tasks.start_soon(worker.daemon)
            await ready.wait()
            worker.stop()
    [record] = [r for r in caplog.records if r.getMessage() == "worker is executing tasks"]
    assert getattr(record, "pipelines", None) == 3


@pytest.mark.anyio
async def test_ready_is_true_only_while_running(registry: workit.Registry) -> None:
    """``ready`` is false before ``daemon()``, true while it runs, false once stopped."""
    worker = workit.ParallelWorker([Idle()], registry=registry)
    assert not worker.ready
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            assert worker.ready
            worker.stop()
    assert not worker.ready


@fake_clock()
@pytest.mark.anyio
async def test_stop_lets_the_running_execution_finish(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """``stop()`` waits for the running execution, counts it a success and starts no other."""
    busy = Busy(takes=10)
    worker = workit.ParallelWorker([busy], registry=registry)
    daemon = Daemon(worker)
    start = anyio.current_time()
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(daemon.run)
        with anyio.fail_after(100):
            await busy.started.wait()
            await anyio.sleep(1)
            worker.stop()
            await daemon.returned.wait()
    assert daemon.returned_at is not None
    assert daemon.returned_at - start == pytest.approx(10)
    assert (busy.calls, busy.finished, busy.cancelled) == (1, 1, False)
    assert executions(prom, "busy", True) == 1
    assert executions(prom, "busy", False) == 0


class Gated:
    """A sync handler that blocks its thread until ``gate`` is set."""

    name = "gated"
    cooler = 0

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.started = anyio.Event()
        self.calls = 0
        self.finished = 0

    def ensure(self) -> None:
        self.calls += 1
        anyio.from_thread.run_sync(self.started.set)
        self.gate.wait(5)
        self.finished += 1


@pytest.mark.anyio
async def test_stop_lets_a_running_sync_execution_finish(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """``stop()`` waits for a sync execution's thread, counts it and starts no other."""
    gated = Gated()
    worker = workit.ParallelWorker([gated], registry=registry)
    daemon = Daemon(worker)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(daemon.run)
                await gated.started.wait()
                worker.stop()
                await anyio.wait_all_tasks_blocked()
                assert not daemon.returned.is_set()
                gated.gate.set()
                await daemon.returned.wait()
    finally:
        gated.gate.set()
    assert (gated.calls, gated.finished) == (1, 1)
    assert executions(prom, "gated", True) == 1


@pytest.mark.anyio
async def test_graceful_stop_abandons_a_blocked_sync_execution_after_grace(
    registry: workit.Registry,
) -> None:
    """A sync execution still blocked when ``grace`` ends does not keep ``daemon()`` running."""
    gated = Gated()
    worker = workit.ParallelWorker([gated], registry=registry, grace=0.01)
    daemon = Daemon(worker)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(daemon.run)
                await gated.started.wait()
                worker.stop()
                await daemon.returned.wait()
        assert gated.finished == 0
    finally:
        gated.gate.set()


@fake_clock()
@pytest.mark.anyio
async def test_daemon_returns_at_stop_when_nothing_runs(registry: workit.Registry) -> None:
    """``daemon()`` returns as soon as ``stop()`` is called while handlers cool down."""
    idle = Idle()
    worker = workit.ParallelWorker([idle], registry=registry)
    daemon = Daemon(worker)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(daemon.run)
        with anyio.fail_after(100):
            await worker.wait_ready()
            await anyio.sleep(1)
            stopped_at = anyio.current_time()
            worker.stop()
            await daemon.returned.wait()
    assert daemon.returned_at == pytest.approx(stopped_at)
    assert idle.calls == 1


@fake_clock()
@pytest.mark.anyio
async def test_graceful_stop_gives_up_after_grace(registry: workit.Registry) -> None:
    """With a handler that never finishes, ``daemon()`` returns after ``grace``, cancelling it."""
    busy = Busy(takes=None)
    worker = workit.ParallelWorker([busy], registry=registry, grace=30)
    daemon = Daemon(worker)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(daemon.run)
        with anyio.fail_after(100):
            await busy.started.wait()
            stopped_at = anyio.current_time()
            worker.stop()
            await daemon.returned.wait()
    assert daemon.returned_at is not None
    assert daemon.returned_at - stopped_at == pytest.approx(30)
    assert busy.cancelled


@pytest.mark.anyio
async def test_stop_from_another_thread(registry: workit.Registry) -> None:
    """``stop()`` called from a worker thread makes ``daemon()`` return."""
    worker = workit.ParallelWorker([Idle()], registry=registry)
    daemon = Daemon(worker)
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(daemon.run)
        with anyio.fail_after(5):
            await worker.wait_ready()
            await anyio.to_thread.run_sync(worker.stop)
            await daemon.returned.wait()


@fake_clock()
@pytest.mark.anyio
async def test_stop_before_daemon_makes_it_return_at_once(registry: workit.Registry) -> None:
    """After ``stop()``, a ``daemon()`` started later returns at once and runs nothing."""
    idle = Idle()
    worker = workit.ParallelWorker([idle], registry=registry)
    worker.stop()
    start = anyio.current_time()
    with anyio.fail_after(1):
        await worker.daemon()
    assert anyio.current_time() == start
    assert idle.calls == 0


@fake_clock()
@pytest.mark.anyio
async def test_cancelling_daemon_is_prompt(registry: workit.Registry) -> None:
    """Cancelling the task running ``daemon()`` cancels executions without waiting for grace."""
    busy = Busy(takes=None)
    worker = workit.ParallelWorker([busy], registry=registry, grace=30)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await busy.started.wait()
            cancelled_at = anyio.current_time()
            tasks.cancel_scope.cancel()
    assert anyio.current_time() == pytest.approx(cancelled_at)
    assert busy.cancelled
    assert not worker.ready


def _pending_timers() -> int:
    """Timers still due on the running asyncio loop (white box: its private heap)."""
    loop = asyncio.get_running_loop()
    return sum(not timer.cancelled() for timer in loop._scheduled)  # type: ignore[attr-defined]


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_stop_ends_idle_loops_at_once_and_leaves_no_timer(
    registry: workit.Registry,
) -> None:
    """While the drain waits for a running execution, the cooling loops have already ended,
    their cooler timers withdrawn, not left in the event loop for an hour."""
    busy = Busy(takes=None)
    idle = [Idle(f"idle{index}") for index in range(50)]
    worker = workit.ParallelWorker([busy, *idle], registry=registry, grace=30)
    with anyio.fail_after(5):
        before = _pending_timers()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await busy.started.wait()
            await anyio.wait_all_tasks_blocked()
            assert _pending_timers() == before + 51  # anyio.sleep_forever() has one too
            worker.stop()
            await anyio.wait_all_tasks_blocked()
            running = {task.get_name() for task in asyncio.all_tasks()}
            assert "busy" in running
            assert not running & {handler.name for handler in idle}
            assert _pending_timers() == before + 2  # busy's and the grace period's
            tasks.cancel_scope.cancel()
        assert _pending_timers() == before
    assert busy.cancelled


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.anyio
async def test_cancelling_daemon_leaves_no_timer(registry: workit.Registry) -> None:
    """Cancelling ``daemon()`` while loops cool down withdraws their timers too."""
    worker = workit.ParallelWorker([Idle(f"idle{i}") for i in range(20)], registry=registry)
    with anyio.fail_after(5):
        before = _pending_timers()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.wait_all_tasks_blocked()
            assert _pending_timers() == before + 20
            tasks.cancel_scope.cancel()
        assert _pending_timers() == before


@pytest.mark.anyio
async def test_second_concurrent_daemon_raises(registry: workit.Registry) -> None:
    """Calling ``daemon()`` while it already runs raises ``RuntimeError``; the first goes on."""
    worker = workit.ParallelWorker([Idle()], registry=registry)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            with pytest.raises(RuntimeError, match="already running"):
                await worker.daemon()
            assert worker.ready
            worker.stop()


# run(): the blocking entry point, in a process of its own

SCRIPT = textwrap.dedent(
    """
    import logging
    import sys

    from prometheus_client import CollectorRegistry

    import workit

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)


    class Hello:
        cooler = 0.01
        said = False

        async def ensure(self):
            if not self.said:
                self.said = True
                print("running", flush=True)


    registry = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    workit.ParallelWorker([Hello()], registry=registry).run(backend=sys.argv[1])
    print("returned", flush=True)
    """
)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize(
    "signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "SIGINT", "SIGHUP"]
)
def test_run_stops_gracefully_on_signal(signum: signal.Signals, backend: str) -> None:
    """``run()`` returns normally on SIGTERM, SIGINT or SIGHUP, logging that it stops
    gracefully."""
    process = subprocess.Popen(
        [sys.executable, "-c", SCRIPT, backend],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        readable, _, _ = select.select([process.stdout], [], [], 10)
        assert readable, "the worker did not start within 10 s"
        assert process.stdout.readline() == "running\n"
        process.send_signal(signum)
        out, err = process.communicate(timeout=5)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 0, err
    assert out == "returned\n"
    assert f"received {signum.name}, stopping gracefully" in err


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["parallel", "sequence", "combined"])
async def test_task_group_start_returns_once_ready(registry: workit.Registry, kind: str) -> None:
    """``await tasks.start(worker.daemon)`` returns with the worker ready."""
    parallel = workit.ParallelWorker([Idle("p")], registry=registry)
    sequence = workit.SequenceWorker([[Idle("s")]], cooler=3600, registry=registry)
    worker: workit.Worker = {
        "parallel": parallel,
        "sequence": sequence,
        "combined": workit.CombinedWorker(parallel, sequence),
    }[kind]
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(worker.daemon)
            assert worker.ready
            worker.stop()


@pytest.mark.anyio
async def test_wait_ready_waits_for_a_restarted_daemon(registry: workit.Registry) -> None:
    """After a daemon run ended, wait_ready() waits for the next run to be ready."""
    worker = workit.ParallelWorker([Idle()], registry=registry)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            worker.stop()
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            assert worker.ready
            worker.stop()


# State, and readiness of a daemon that failed to start


@fake_clock()
@pytest.mark.anyio
async def test_state_goes_idle_ready_stopping_idle(registry: workit.Registry) -> None:
    """``state`` is IDLE before the daemon, READY once it runs, STOPPING from ``stop()`` until
    the running execution finished, and IDLE again once the daemon returned."""
    busy = Busy(takes=10)
    worker = workit.ParallelWorker([busy], registry=registry)
    daemon = Daemon(worker)
    seen = [worker.state]
    async with anyio.create_task_group() as tasks:
        tasks.start_soon(daemon.run)
        with anyio.fail_after(100):
            await worker.wait_ready()
            seen.append(worker.state)
            await busy.started.wait()
            worker.stop()
            seen.append(worker.state)
            assert (worker.ready, worker.stopping) == (False, True)
            await anyio.sleep(5)
            seen.append(worker.state)
            await daemon.returned.wait()
    seen.append(worker.state)
    assert seen == [State.IDLE, State.READY, State.STOPPING, State.STOPPING, State.IDLE]
    assert (worker.ready, worker.stopping) == (False, False)


def engine_running_elsewhere(
    registry: workit.Registry,
) -> tuple[workit.ParallelWorker, workit.CombinedWorker]:
    """A parallel engine, and a combined worker holding it after a sequence engine."""
    parallel = workit.ParallelWorker([Idle("p")], registry=registry)
    sequence = workit.SequenceWorker([[Idle("s")]], cooler=3600, registry=registry)
    return parallel, workit.CombinedWorker(sequence, parallel)


@pytest.mark.anyio
async def test_wait_ready_raises_when_the_daemon_ended_before_it_was_ready(
    registry: workit.Registry,
) -> None:
    """A wait_ready() waiting for a daemon that fails to start (one of its engines runs
    elsewhere) raises RuntimeError caused by the daemon's failure, instead of waiting on."""
    parallel, combined = engine_running_elsewhere(registry)
    raised: list[RuntimeError] = []
    done = anyio.Event()

    async def wait_ready(*, task_status: TaskStatus[None]) -> None:
        task_status.started()  # nothing runs between this and the wait below
        try:
            await combined.wait_ready()
        except RuntimeError as error:
            raised.append(error)
        done.set()

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(parallel.daemon)
            await tasks.start(wait_ready)
            with pytest.raises(RuntimeError, match="running already") as failed:
                await combined.daemon()
            await done.wait()
            assert parallel.ready
            parallel.stop()
    [error] = raised
    assert "CombinedWorker.daemon() ended before it was ready" in str(error)
    assert error.__cause__ is failed.value
    assert (combined.state, combined.ready) == (State.IDLE, False)


@pytest.mark.anyio
async def test_a_daemon_started_after_a_failed_start_gets_ready(
    registry: workit.Registry,
) -> None:
    """After a daemon that failed to start, the next one (started with ``tasks.start``) is
    ready and runs."""
    parallel, combined = engine_running_elsewhere(registry)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(parallel.daemon)
            with pytest.raises(RuntimeError, match="running already"):
                await combined.daemon()
            parallel.stop()
        async with anyio.create_task_group() as tasks:
            await tasks.start(combined.daemon)
            assert combined.ready
            combined.stop()
    assert combined.state is State.IDLE


@pytest.mark.anyio
async def test_wait_ready_after_a_failed_start_waits_for_the_next_daemon(
    registry: workit.Registry,
) -> None:
    """``tasks.start_soon(worker.daemon); await worker.wait_ready()`` after a failed start
    waits for that new daemon run, which gets ready."""
    parallel, combined = engine_running_elsewhere(registry)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(parallel.daemon)
            with pytest.raises(RuntimeError, match="running already"):
                await combined.daemon()
            parallel.stop()
        stale: list[RuntimeError] = []
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(combined.daemon)
            try:
                await combined.wait_ready()
                assert combined.ready
            except RuntimeError as error:
                stale.append(error)
            combined.stop()
    assert stale == []


# One worker, run on one backend and then another


def sync_job(calls: list[int]) -> workit.Handler:
    """A sync handler noting the thread of each execution."""
    return workit.Handler(lambda: calls.append(threading.get_ident()), cooler=3600, name="job")


@pytest.mark.parametrize("kind", ["parallel", "sequence"])
def test_a_worker_run_on_asyncio_then_trio_runs_its_sync_handlers_on_each(
    registry: workit.Registry, kind: str
) -> None:
    """A worker run by turns under asyncio and trio runs its sync handlers (daemon and
    ensure()) without a failure on every run."""
    calls: list[int] = []
    worker: workit.ParallelWorker | workit.SequenceWorker
    if kind == "parallel":
        worker = workit.ParallelWorker([sync_job(calls)], registry=registry)
    else:
        worker = workit.SequenceWorker([[sync_job(calls)]], cooler=3600, registry=registry)

    async def one_run() -> None:
        before = len(calls)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                await tasks.start(worker.daemon)
                await worker.ensure()
                while len(calls) < before + 2:  # noqa: ASYNC110  # a thread's work: poll
                    await anyio.sleep(0.001)
                worker.stop()

    for backend in ("asyncio", "trio", "asyncio", "trio"):
        anyio.run(one_run, backend=backend)
    [status] = worker.status().handlers
    assert (status.executions, status.failures, status.last_error) == (8, 0, None)
    assert len(calls) == 8


# The metrics backends a worker records into


def test_an_engines_metrics_are_its_registrys_backend(registry: workit.Registry) -> None:
    """``metrics`` of an engine is its registry's backend."""
    worker = workit.ParallelWorker([Idle()], registry=registry)
    assert worker.metrics == (registry.metrics,)


def test_engines_on_one_registry_list_its_backend_once(registry: workit.Registry) -> None:
    """A combined worker of two engines on one registry records into one backend."""
    worker = workit.CombinedWorker(
        workit.ParallelWorker([Idle("p")], registry=registry),
        workit.SequenceWorker([[Idle("s")]], registry=registry),
    )
    assert worker.metrics == (registry.metrics,)


def test_each_backend_is_listed_once_in_order(prom: CollectorRegistry) -> None:
    """Registries sharing a backend object count it once; another backend comes after it."""
    shared = workit.metrics.Prometheus(prom)
    other = workit.metrics.Prometheus(CollectorRegistry())
    staging = workit.Registry("staging", metrics=shared)
    production = workit.Registry("production", metrics=shared)
    elsewhere = workit.Registry("elsewhere", metrics=other)
    worker = workit.CombinedWorker(
        workit.ParallelWorker([Idle("a")], registry=staging),
        workit.CombinedWorker(workit.SequenceWorker([[Idle("b")]], registry=elsewhere)),
        workit.ParallelWorker([Idle("c")], registry=production),
    )
    assert worker.metrics == (shared, other)


@pytest.mark.anyio
async def test_run_until_signalled_raises_what_the_daemon_raised(
    registry: workit.Registry,
) -> None:
    """A daemon that fails to start raises its own error out of run_until_signalled(), not
    a group of one; what ``serving`` raises too."""
    parallel = workit.ParallelWorker([Idle("p")], registry=registry)
    combined = workit.CombinedWorker(parallel)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            await tasks.start(parallel.daemon)
            with pytest.raises(RuntimeError, match="running already"):
                await combined.run_until_signalled()
            parallel.stop()

    class Refuses:
        async def __aenter__(self) -> None:
            raise OSError("address already in use")

        async def __aexit__(self, *exc_info: object) -> None:
            raise AssertionError("never entered")

    with anyio.fail_after(5), pytest.raises(OSError, match="in use"):
        await workit.ParallelWorker([Idle("q")], registry=registry).run_until_signalled(
            serving=Refuses()
        )
