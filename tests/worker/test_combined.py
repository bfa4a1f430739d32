"""CombinedWorker: several engines in one daemon, ready together, stopped together."""

from __future__ import annotations

from typing import TYPE_CHECKING

import anyio
import pytest
from prometheus_client import CollectorRegistry

import workit
from tests.support import fake_clock
from workit import CombinedWorker, ParallelWorker, SequenceWorker, Worker
from workit.status import StopReport, WorkerStatus

if TYPE_CHECKING:
    from anyio.abc import TaskStatus

    from workit.status import EngineInfo
    from workit.worker import Engine


class Probe:
    """A handler that records when each execution starts and signals the first one."""

    def __init__(self, name: str, *, cooler: float | None = None, duration: float = 0.0) -> None:
        self.name = name
        self.cooler = cooler
        self.duration = duration
        self.starts: list[float] = []
        self.ran = anyio.Event()

    async def ensure(self) -> None:
        self.starts.append(anyio.current_time())
        self.ran.set()
        await anyio.sleep(self.duration)


class LateWorker(Worker):
    """A worker that becomes ready only ``delay`` seconds after its daemon starts."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay
        self._stopped = anyio.Event()

    async def daemon(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._begin()
        try:
            await anyio.sleep(self.delay)
            self._set_ready()
            await self._stopped.wait()
        finally:
            self._end()

    def stop(self) -> None:
        self._stopped.set()

    async def ensure(self) -> None:
        pass

    def describe(self) -> tuple[EngineInfo, ...]:
        return ()

    def status(self) -> WorkerStatus:
        return WorkerStatus(ready=self.ready, handlers=())

    @property
    def engines(self) -> tuple[Engine, ...]:
        return ()

    @property
    def last_stop(self) -> StopReport:
        return StopReport()


def relative(times: list[float], origin: float) -> list[float]:
    return [time - origin for time in times]


@pytest.mark.anyio
async def test_runs_a_parallel_and_a_sequence_worker_in_one_daemon(
    registry: workit.Registry,
) -> None:
    """Both the parallel handler and the sequence pass execute under one daemon."""
    looped = Probe("looped", cooler=60)
    stepped = Probe("stepped")
    combined = CombinedWorker(
        ParallelWorker([looped], registry=registry),
        SequenceWorker([[stepped]], cooler=60, registry=registry),
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(combined.daemon)
            await looped.ran.wait()
            await stepped.ran.wait()
            combined.stop()


@fake_clock()
@pytest.mark.anyio
async def test_both_workers_keep_their_own_pace(registry: workit.Registry) -> None:
    """The parallel handler loops on its cooler and the sequence on its own, side by side."""
    looped = Probe("looped", cooler=1)
    stepped = Probe("stepped")
    combined = CombinedWorker(
        ParallelWorker([looped], registry=registry),
        SequenceWorker([[stepped]], cooler=2, registry=registry),
    )
    start = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(combined.daemon)
            await anyio.sleep(4.5)
            combined.stop()
    assert relative(looped.starts, start) == [0, 1, 2, 3, 4]
    assert relative(stepped.starts, start) == [0, 2, 4]


@pytest.mark.anyio
async def test_wait_ready_returns_once_every_worker_is_ready(registry: workit.Registry) -> None:
    """When the combined worker's wait_ready() returns, each inner worker is ready."""
    parallel = ParallelWorker([Probe("looped", cooler=60)], registry=registry)
    sequence = SequenceWorker([[Probe("stepped")]], cooler=60, registry=registry)
    combined = CombinedWorker(parallel, sequence)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(combined.daemon)
            await combined.wait_ready()
            ready = (parallel.ready, sequence.ready, combined.ready)
            combined.stop()
    assert ready == (True, True, True)


@fake_clock()
@pytest.mark.anyio
async def test_wait_ready_waits_for_the_slowest_worker(registry: workit.Registry) -> None:
    """wait_ready() returns only when a worker that gets ready 3 s late is ready."""
    late = LateWorker(3)
    combined = CombinedWorker(ParallelWorker([Probe("looped", cooler=60)], registry=registry), late)
    start = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(combined.daemon)
            await combined.wait_ready()
            ready_after = anyio.current_time() - start
            combined.stop()
    assert ready_after == 3


@pytest.mark.anyio
async def test_stop_stops_every_worker_and_the_daemon_returns(
    registry: workit.Registry,
) -> None:
    """stop() makes every inner daemon and then the combined daemon return."""
    parallel = ParallelWorker([Probe("looped", cooler=60)], registry=registry)
    sequence = SequenceWorker([[Probe("stepped")]], cooler=60, registry=registry)
    combined = CombinedWorker(parallel, sequence)
    returned = False

    async def serve() -> None:
        nonlocal returned
        await combined.daemon()
        returned = True

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(serve)
            await combined.wait_ready()
            combined.stop()
    assert returned
    assert not parallel.stopping
    assert not sequence.stopping


@fake_clock()
@pytest.mark.anyio
async def test_stop_lets_running_executions_finish(registry: workit.Registry) -> None:
    """After stop() nothing new starts; the daemon returns once the running pass ended."""
    looped = Probe("looped", cooler=1)
    stepped = Probe("stepped", duration=5)
    combined = CombinedWorker(
        ParallelWorker([looped], registry=registry),
        SequenceWorker([[stepped]], cooler=1, registry=registry),
    )
    start = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(combined.daemon)
            await anyio.sleep(2.5)
            combined.stop()
            stopped = anyio.current_time() - start
    returned = anyio.current_time() - start
    assert stopped == 2.5
    assert returned == 5
    assert relative(looped.starts, start) == [0, 1, 2]
    assert relative(stepped.starts, start) == [0]


@fake_clock()
@pytest.mark.anyio
async def test_sequence_without_cooler_still_runs_the_parallel_worker(
    registry: workit.Registry,
) -> None:
    """A sequence worker whose daemon returns at once does not end the combined daemon."""
    looped = Probe("looped", cooler=1)
    stepped = Probe("stepped")
    combined = CombinedWorker(
        ParallelWorker([looped], registry=registry),
        SequenceWorker([[stepped]], registry=registry),
    )
    start = anyio.current_time()
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(combined.daemon)
            await combined.wait_ready()
            await anyio.sleep(3.5)
            combined.stop()
    returned = anyio.current_time() - start
    assert relative(looped.starts, start) == [0, 1, 2, 3]
    assert stepped.starts == []
    assert returned == 3.5


class Waiter:
    """Waits for a worker to be ready, and notes whether it got ready or wait_ready() raised."""

    def __init__(self, worker: Worker) -> None:
        self.worker = worker
        self.outcome = ""
        self.done = anyio.Event()

    async def wait_ready(self, *, task_status: TaskStatus[None]) -> None:
        task_status.started()  # nothing runs between this and the wait below
        try:
            await self.worker.wait_ready()
            self.outcome = "ready"
        except RuntimeError:
            self.outcome = "raised"
        self.done.set()


@pytest.mark.anyio
async def test_an_engine_running_elsewhere_never_makes_the_combined_worker_ready(
    registry: workit.Registry,
) -> None:
    """A combined worker one of whose engines already runs elsewhere never gets ready:
    wait_ready() raises RuntimeError every time (the run is repeated, as the order in which
    the tasks run varies)."""
    returned = 0
    for _ in range(40):
        parallel = ParallelWorker([Probe("looped", cooler=60)], registry=registry)
        sequence = SequenceWorker([[Probe("stepped")]], cooler=60, registry=registry)
        combined = CombinedWorker(parallel, sequence)
        waiter = Waiter(combined)
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                await tasks.start(parallel.daemon)
                await tasks.start(waiter.wait_ready)
                with pytest.raises(RuntimeError, match="running already"):
                    await combined.daemon()
                await waiter.done.wait()
                parallel.stop()
        returned += waiter.outcome == "ready"
    assert returned == 0


@pytest.mark.anyio
async def test_a_waiter_started_just_before_a_failed_start_hears_of_it(
    registry: workit.Registry,
) -> None:
    """A wait_ready() in a task started (not yet run) before daemon() fails at once raises
    RuntimeError instead of waiting for ever."""
    outcomes = []

    async def waiter(combined: CombinedWorker, done: anyio.Event) -> None:
        try:
            await combined.wait_ready()
            outcomes.append("ready")
        except RuntimeError as error:
            outcomes.append(str(error.__cause__))
        done.set()

    for _ in range(20):  # trio orders the tasks of a batch at random
        parallel = ParallelWorker([Probe("looped", cooler=60)], registry=registry)
        sequence = SequenceWorker([[Probe("stepped")]], cooler=60, registry=registry)
        combined = CombinedWorker(parallel, sequence)
        done = anyio.Event()
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                await tasks.start(parallel.daemon)
                tasks.start_soon(waiter, combined, done)
                with pytest.raises(RuntimeError, match="running already"):
                    await combined.daemon()
                with anyio.move_on_after(1):  # a waiter that missed the run waits on
                    await done.wait()
                parallel.stop()
                tasks.cancel_scope.cancel()
    assert len(outcomes) == 20
    assert all("running already" in outcome for outcome in outcomes)


def test_describe_lists_every_engine_in_order(registry: workit.Registry) -> None:
    """describe() of a combined worker gives each inner worker's engines, nested ones too."""
    parallel = ParallelWorker([Probe("looped", cooler=60)], registry=registry)
    sequence = SequenceWorker([[Probe("stepped")]], cooler=60, registry=registry)
    other = ParallelWorker([Probe("other", cooler=1)], registry=registry)
    combined = CombinedWorker(parallel, CombinedWorker(sequence, other))
    assert combined.describe() == (
        *parallel.describe(),
        *sequence.describe(),
        *other.describe(),
    )
    assert [engine.kind for engine in combined.describe()] == ["parallel", "sequence", "parallel"]


def test_no_workers_is_rejected() -> None:
    """CombinedWorker() without workers raises ValueError."""
    with pytest.raises(ValueError):
        CombinedWorker()


def test_a_non_worker_is_rejected_by_index(registry: workit.Registry) -> None:
    """Something that is not a worker raises TypeError naming its index."""
    parallel = ParallelWorker([Probe("looped", cooler=1)], registry=registry)
    with pytest.raises(TypeError, match=r"worker 1\b"):
        CombinedWorker(parallel, Probe("stepped"))  # type: ignore[arg-type]


def test_a_handler_list_is_rejected(registry: workit.Registry) -> None:
    """A list of handlers where a worker belongs raises TypeError naming its index."""
    with pytest.raises(TypeError, match=r"worker 0\b"):
        CombinedWorker([Probe("looped", cooler=1)])  # type: ignore[arg-type]


def test_the_same_worker_twice_is_rejected(registry: workit.Registry) -> None:
    """Giving one worker twice raises ValueError."""
    parallel = ParallelWorker([Probe("looped", cooler=1)], registry=registry)
    with pytest.raises(ValueError, match=r"worker 1\b"):
        CombinedWorker(parallel, parallel)


class Shared:
    """A handler object meant to be given to two engines."""

    name = "shared"
    cooler = 1

    async def ensure(self) -> None:
        pass


def test_the_same_handler_object_in_two_engines_is_rejected(registry: workit.Registry) -> None:
    """One handler object in two engines raises ValueError naming it and the engine it is in
    already: both engines would run it, and its executions could overlap."""
    shared = Shared()
    with pytest.raises(ValueError, match=r"worker 1\b.*handler 'shared'.*parallel engine"):
        CombinedWorker(
            ParallelWorker([shared], registry=registry),
            SequenceWorker([[shared]], registry=registry),
        )


@pytest.mark.parametrize("how", ["wrapped", "nested"])
def test_the_same_handler_object_is_found_wrapped_or_nested(
    registry: workit.Registry, how: str
) -> None:
    """The check sees through Registry.wrap() and through a nested CombinedWorker."""
    shared = Shared()
    first = ParallelWorker([shared], registry=registry)
    if how == "wrapped":
        second: Worker = ParallelWorker([registry.wrap(shared)], registry=registry)
    else:
        second = CombinedWorker(SequenceWorker([[shared]], registry=registry))
    with pytest.raises(ValueError, match="'shared'"):
        CombinedWorker(first, second)


def test_one_handler_name_in_two_engines_of_one_env_is_refused(
    registry: workit.Registry,
) -> None:
    """Two handler objects of one name in two engines under one env are refused, naming
    the handler, both workers and the env: their metric series would be one."""
    with pytest.raises(ValueError, match=r"worker 1: handler 'shared' .* worker 0, .* env 'test'"):
        CombinedWorker(
            ParallelWorker([Probe("other", cooler=60), Shared()], registry=registry),
            SequenceWorker([[Shared()]], registry=registry),
        )


def test_one_handler_name_in_one_env_on_two_collector_registries_is_refused() -> None:
    """Two engines of one env on two ``CollectorRegistry``s sharing a handler name are
    refused too: the same series would be exported twice, and ``/status`` could not tell
    the two apart."""
    first = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    second = workit.Registry("test", metrics=workit.metrics.Prometheus(CollectorRegistry()))
    with pytest.raises(ValueError, match=r"worker 1: handler 'shared' .* worker 0, .* env 'test'"):
        CombinedWorker(
            ParallelWorker([Shared()], registry=first),
            SequenceWorker([[Shared()]], registry=second),
        )


def test_one_handler_name_in_two_envs_is_accepted() -> None:
    """The same name under two envs is two series, told apart by the env label."""
    metrics = workit.metrics.Prometheus(CollectorRegistry())
    combined = CombinedWorker(
        ParallelWorker([Shared()], registry=workit.Registry("billing", metrics=metrics)),
        SequenceWorker([[Shared()]], registry=workit.Registry("reports", metrics=metrics)),
    )
    assert [handler.name for handler in combined.status().handlers] == ["shared", "shared"]
