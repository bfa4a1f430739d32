"""Shutdown under faults: stop() while handlers hang, fail as fast as they can, or linger.

A stop returns within its grace period whatever the handlers do; it reports
what it had to cancel (async) and abandon (sync); it leaves no warning, no
stray task and no thread behind but the hung ones, which finish once released.
"""

from __future__ import annotations

import gc
import itertools
import logging
import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread
import pytest

import workit
from tests.support import BlocksFirst, executions, fake_clock
from workit.status import StopReport

if TYPE_CHECKING:
    from collections.abc import Callable

    from prometheus_client import CollectorRegistry

HUNG = 25  # of each kind: 25 sync and 25 async
GRACE = 0.2  # a real grace period, for the thread cases
FAILED = "worker execution failed"


class Gate:
    """Where sync handlers block; counts them in and out and notes their threads."""

    def __init__(self) -> None:
        self.event = threading.Event()
        self.entered = 0
        self.returned = 0
        self.threads: set[int] = set()
        self._lock = threading.Lock()

    def block(self) -> None:
        """Block the calling worker thread until the gate opens."""
        with self._lock:
            self.entered += 1
            self.threads.add(threading.get_ident())
        try:
            self.event.wait()
        finally:
            with self._lock:
                self.returned += 1


class HungSync:
    """A sync handler blocked on ``gate``; once released it returns or raises."""

    cooler = 1

    def __init__(self, index: int, gate: Gate) -> None:
        self.name = f"hung_sync_{index}"
        self.gate = gate
        self.raises = index % 2 == 1

    def ensure(self) -> None:
        self.gate.block()
        if self.raises:
            raise RuntimeError("released long after the stop")


class HungAsync:
    """An async handler that sleeps forever; counts how many started."""

    cooler = 1
    started = 0

    def __init__(self, index: int) -> None:
        self.name = f"hung_async_{index}"

    async def ensure(self) -> None:
        HungAsync.started += 1
        await anyio.sleep_forever()


def build(
    engine: str,
    handlers: list[workit.handler.SupportsEnsure],
    registry: workit.Registry,
    grace: float,
) -> workit.Worker:
    """The hung handlers in one engine, or split between two in a combined worker."""
    if engine == "parallel":
        return workit.ParallelWorker(handlers, registry=registry, grace=grace)
    if engine == "sequence":
        return workit.SequenceWorker([handlers], cooler=1, registry=registry, grace=grace)
    half = len(handlers) // 2
    return workit.CombinedWorker(
        workit.ParallelWorker(handlers[:half], registry=registry, grace=grace),
        workit.SequenceWorker([handlers[half:]], cooler=1, registry=registry, grace=grace),
    )


async def poll(condition: Callable[[], bool], *, within: float = 5) -> None:
    """Wait until ``condition()`` holds; it reads counters threads update."""
    with anyio.fail_after(within):
        while not condition():  # noqa: ASYNC110  # nothing to wait on: thread-side counters
            await anyio.sleep(0.001)


def asyncio_records(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    """Records of asyncio's own complaints: destroyed pending tasks, unretrieved exceptions."""
    return [record for record in caplog.records if record.name.startswith("asyncio")]


def threads() -> set[int]:
    return {thread.ident for thread in threading.enumerate() if thread.ident is not None}


class Jobs:
    """Every function workit runs in a worker thread, while it runs, by thread.

    Thread pools keep idle threads for a while, and trio's guest mode (which
    anyio's test runner uses) waits for I/O in a pooled thread of its own, so
    a thread count alone cannot tell a leaked thread from an idle one: what a
    thread is running can.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.running: dict[int, int] = {}  # job number -> thread ident
        self._numbers = itertools.count()
        self._lock = threading.Lock()
        original = anyio.to_thread.run_sync

        async def run_sync(function: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
            number = next(self._numbers)

            def job(*job_args: Any) -> Any:
                with self._lock:
                    self.running[number] = threading.get_ident()
                try:
                    return function(*job_args)
                finally:
                    with self._lock:
                        del self.running[number]

            return await original(job, *args, **kwargs)

        monkeypatch.setattr(anyio.to_thread, "run_sync", run_sync)

    def threads(self) -> set[int]:
        """The threads running a job of workit's right now."""
        with self._lock:
            return set(self.running.values())


@pytest.fixture
def jobs(monkeypatch: pytest.MonkeyPatch) -> Jobs:
    """The functions workit runs in worker threads, watched."""
    return Jobs(monkeypatch)


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.anyio
async def test_stop_with_fifty_hung_handlers_returns_within_the_grace(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    jobs: Jobs,
    engine: str,
) -> None:
    """stop() with 25 sync and 25 async handlers hung takes the grace, cancels 25, abandons 25."""
    # ... and leaves no warning, no busy thread but the hung ones, which finish once released.
    before = threads()
    gate = Gate()
    HungAsync.started = 0
    sync = [HungSync(index, gate) for index in range(HUNG)]
    handlers: list[workit.handler.SupportsEnsure] = [
        *sync,
        *(HungAsync(index) for index in range(HUNG)),
    ]
    worker = build(engine, handlers, registry, GRACE)
    returned: list[float] = []
    try:
        async with anyio.create_task_group() as tasks:

            async def run() -> None:
                await worker.daemon()
                returned.append(anyio.current_time())

            tasks.start_soon(run)
            with anyio.fail_after(5):
                await worker.wait_ready()
            await poll(lambda: gate.entered == HUNG and HungAsync.started == HUNG)
            stopped = anyio.current_time()
            worker.stop()
            await poll(lambda: bool(returned))
        elapsed = returned[0] - stopped
        assert GRACE - 0.01 <= elapsed < GRACE + 0.5
        report = worker.last_stop
        assert (report.cancelled, report.abandoned) == (HUNG, HUNG)
        assert sorted(report.handlers) == sorted(workit.handler.names(handlers))
        # The only threads still running anything of workit's are the hung ones; any
        # other thread new since the test began is idle in its pool.
        assert len(gate.threads) == HUNG
        assert jobs.threads() == gate.threads
        after = threads()
        assert gate.threads <= after
        assert (after - before) & jobs.threads() <= gate.threads
        assert gate.returned == 0
    finally:
        gate.event.set()
    await poll(lambda: gate.returned == HUNG and not jobs.threads())
    gc.collect()  # a pending task or an unretrieved exception would complain now
    assert asyncio_records(caplog) == []
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []
    # Abandoned and cancelled executions are not counted, even once they end.
    for name in workit.handler.names(handlers):
        assert executions(prom, name, True) == executions(prom, name, False) == 0
    [stop] = [
        record for record in caplog.records if record.getMessage().startswith("worker stopped")
    ]
    assert stop.levelno == logging.WARNING


@pytest.mark.parametrize("engine", ["parallel", "sequence", "combined"])
@fake_clock()
@pytest.mark.anyio
async def test_stop_with_hung_async_handlers_cancels_them_exactly_at_the_grace(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture, engine: str
) -> None:
    """Async handlers asleep forever are cancelled the moment the grace period ends."""
    HungAsync.started = 0
    handlers: list[workit.handler.SupportsEnsure] = [HungAsync(index) for index in range(2 * HUNG)]
    worker = build(engine, handlers, registry, 30)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.sleep(1)
            assert HungAsync.started == 2 * HUNG
            stopped = anyio.current_time()
            worker.stop()
    assert anyio.current_time() == pytest.approx(stopped + 30)
    assert worker.last_stop.cancelled == 2 * HUNG
    assert worker.last_stop.abandoned == 0
    assert [record for record in caplog.records if record.levelno >= logging.ERROR] == []


class FailingFast:
    """A handler failing at once with cooler 0, sync or async."""

    cooler = 0

    def __init__(self, name: str) -> None:
        self.name = name


class FailingFastAsync(FailingFast):
    async def ensure(self) -> None:
        raise RuntimeError("down")


class FailingFastSync(FailingFast):
    def ensure(self) -> None:
        raise RuntimeError("down")


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.anyio
async def test_stop_while_handlers_fail_as_fast_as_they_can_is_prompt_and_exact(
    registry: workit.Registry,
    prom: CollectorRegistry,
    caplog: pytest.LogCaptureFixture,
    engine: str,
) -> None:
    """Handlers failing in a tight loop stop promptly; every failure is counted and logged once."""
    handlers: list[workit.handler.SupportsEnsure] = [
        *(FailingFastAsync(f"async_{index}") for index in range(5)),
        *(FailingFastSync(f"sync_{index}") for index in range(5)),
    ]
    worker: workit.Worker
    if engine == "parallel":
        worker = workit.ParallelWorker(handlers, registry=registry)
    else:
        worker = workit.SequenceWorker(
            {handler: [] for handler in handlers}, cooler=0.001, registry=registry
        )
    names = workit.handler.names(handlers)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await poll(lambda: all(executions(prom, name, False) >= 5 for name in names))
            stopped = anyio.current_time()
            worker.stop()
    assert anyio.current_time() - stopped < 1  # the grace (30 s) was not needed
    assert worker.last_stop == StopReport()
    states = {state.name: state for state in worker.status().handlers}
    for name in names:
        count = executions(prom, name, False)
        assert states[name].failures == count
        logged = [
            record
            for record in caplog.records
            if record.getMessage().startswith(FAILED) and getattr(record, "handler", None) == name
        ]
        assert len(logged) == count


@pytest.mark.anyio
async def test_restarted_daemon_waits_for_the_thread_a_stop_abandoned(
    registry: workit.Registry,
) -> None:
    """A restarted daemon runs a handler whose thread a stop abandoned only once it returned."""
    lingering = BlocksFirst("lingering", cooler=0.001)
    worker = workit.ParallelWorker([lingering], registry=registry, grace=0.01)
    try:
        for _ in range(2):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(worker.daemon)
                with anyio.fail_after(5):
                    await worker.wait_ready()
                await anyio.sleep(0.02)
                worker.stop()
            assert worker.last_stop == StopReport(abandoned=1, handlers=("lingering",))
            assert lingering.calls == 1
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            with anyio.fail_after(5):
                await worker.wait_ready()
            lingering.gate.set()
            await poll(lambda: lingering.calls >= 3)
            worker.stop()
        assert worker.last_stop == StopReport()
    finally:
        lingering.gate.set()
    assert lingering.most == 1


@pytest.mark.anyio
async def test_cancelling_the_daemon_with_hung_handlers_is_prompt(
    registry: workit.Registry,
) -> None:
    """Cancelling daemon() (not stop()) with hung handlers returns at once, grace or not;
    the abandoned sync execution shows as running and overdue until its thread returns."""
    gate = Gate()
    HungAsync.started = 0
    handlers: list[workit.handler.SupportsEnsure] = [HungSync(0, gate), HungAsync(0)]
    worker = workit.ParallelWorker(handlers, registry=registry, grace=30)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(worker.daemon)
                await worker.wait_ready()
                await poll(lambda: gate.entered == 1 and HungAsync.started == 1)
                cancelled = anyio.current_time()
                tasks.cancel_scope.cancel()
        assert anyio.current_time() - cancelled < 1
        hung_sync, hung_async = worker.status().handlers
        assert (hung_sync.running, hung_sync.overdue) == (True, True)
        assert (hung_async.running, hung_async.overdue) == (False, False)
    finally:
        gate.event.set()
    await poll(lambda: gate.returned == 1)
    assert not any(state.running or state.overdue for state in worker.status().handlers)
