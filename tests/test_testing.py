"""workit.testing: the in-memory Recorder backend and running(worker)."""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from typing import TYPE_CHECKING

import anyio
import pytest

import workit
import workit.lease
from tests.lease.support import until
from tests.support import FakeState, fake_clock
from workit.status import ErrorInfo, StopReport, WorkerStatus
from workit.testing import Execution, Recorder, running

if TYPE_CHECKING:
    from pathlib import Path

    from anyio.abc import TaskStatus

    from workit.handler import SupportsEnsure
    from workit.status import EngineInfo

BOOM = ErrorInfo(type="ValueError", message="boom")


class Skip(Exception):
    """Control flow: the registries of these tests ignore it."""


class Tick:
    """An async handler that returns at once, every ``cooler`` seconds."""

    def __init__(self, cooler: float = 60, name: str = "tick") -> None:
        self.cooler = cooler
        self.name = name

    async def ensure(self) -> None:
        pass


class Fails:
    """An async handler that raises ``error`` on every execution."""

    cooler = 60

    def __init__(self, error: BaseException) -> None:
        self.error = error

    async def ensure(self) -> None:
        raise self.error


class Crashing(workit.Worker):
    """A worker whose daemon gets ready, then raises after ``after`` seconds."""

    def __init__(self, after: float) -> None:
        super().__init__()
        self.after = after
        self.stopped = False

    async def daemon(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep(self.after)
        raise RuntimeError("the daemon broke")

    async def ensure(self) -> None:
        pass

    def describe(self) -> tuple[EngineInfo, ...]:
        return ()

    def stop(self) -> None:
        self.stopped = True

    def status(self) -> WorkerStatus:
        return WorkerStatus(ready=False, handlers=())

    @property
    def engines(self) -> tuple[workit.worker.Engine, ...]:
        return ()

    @property
    def last_stop(self) -> StopReport:
        return StopReport()


def parallel(recorder: Recorder, *handlers: SupportsEnsure) -> workit.ParallelWorker:
    registry = workit.Registry("test", metrics=recorder, ignore=lambda e: isinstance(e, Skip))
    return workit.ParallelWorker(list(handlers), registry=registry)


# Recorder, fed directly as an engine would


def test_recorder_is_a_backend_that_observes() -> None:
    """A Recorder is a metrics backend a Registry accepts, and it observes handler states."""
    recorder = Recorder()
    assert isinstance(recorder, workit.metrics.Backend)
    assert isinstance(recorder, workit.metrics.Observes)
    assert workit.Registry("test", metrics=recorder).metrics is recorder


def test_outcome_and_error_are_read_from_the_observed_state() -> None:
    """A failure recorded after its state was updated has that outcome and error."""
    recorder = Recorder()
    state = FakeState()
    recorder.observe("test", "sync", state)
    state.last_outcome, state.last_error = "failure", BOOM
    recorder.recorder("test", "sync")(0.25, False)
    assert recorder.executions() == [
        Execution(env="test", handler="sync", outcome="failure", error=BOOM, latency=0.25)
    ]


def test_ignored_outcome_is_read_from_the_state_without_an_older_error() -> None:
    """An ignored exception is "ignored", with no error even if the state keeps an older one."""
    recorder = Recorder()
    recorder.observe("test", "sync", FakeState(last_outcome="ignored", last_error=BOOM))
    recorder.recorder("test", "sync")(0.0, True)
    (execution,) = recorder.executions("sync")
    assert (execution.outcome, execution.error, execution.success) == ("ignored", None, True)


@pytest.mark.parametrize(("success", "outcome"), [(True, "success"), (False, "failure")])
def test_an_unobserved_handler_follows_the_success_flag(success: bool, outcome: str) -> None:
    """Without an observed state the outcome is the metrics' flag, and no error is known."""
    recorder = Recorder()
    recorder.recorder("test", "sync")(0.1, success)
    (execution,) = recorder.executions("sync")
    assert (execution.outcome, execution.error) == (outcome, None)


def test_the_latest_observation_wins() -> None:
    """Observing a handler again replaces the state its outcomes are read from."""
    recorder = Recorder()
    recorder.observe("test", "sync", FakeState(last_outcome="failure", last_error=BOOM))
    newer = FakeState(last_outcome="success")
    recorder.observe("test", "sync", newer)
    recorder.recorder("test", "sync")(0.1, True)
    assert recorder.outcomes("sync") == ["success"]
    assert recorder.state("sync") is newer


def test_executions_are_filtered_by_handler_env_and_outcome() -> None:
    """executions() lists all, or those of one handler, env or outcome, oldest first."""
    recorder = Recorder()
    recorder.recorder("staging", "sync")(0.1, True)
    recorder.recorder("production", "sync")(0.2, False)
    recorder.recorder("production", "prune")(0.3, True)
    assert [e.latency for e in recorder.executions()] == [0.1, 0.2, 0.3]
    assert [e.latency for e in recorder.executions("sync")] == [0.1, 0.2]
    assert [e.latency for e in recorder.executions(env="production")] == [0.2, 0.3]
    assert [e.latency for e in recorder.executions("sync", outcome="failure")] == [0.2]
    assert recorder.count() == 3
    assert recorder.count("sync", env="staging") == 1
    assert recorder.count(outcome="success") == 2


def test_accessors_list_one_handlers_outcomes_latencies_and_errors() -> None:
    """outcomes(), latencies() and errors() read one handler's executions in order."""
    recorder = Recorder()
    state = FakeState()
    recorder.observe("test", "sync", state)
    record = recorder.recorder("test", "sync")
    for outcome, latency in (("success", 0.1), ("failure", 0.2), ("ignored", 0.3)):
        state.last_outcome = outcome  # type: ignore[assignment]  # one of the three
        state.last_error = BOOM if outcome == "failure" else state.last_error
        record(latency, outcome != "failure")
    assert recorder.outcomes("sync") == ["success", "failure", "ignored"]
    assert recorder.latencies("sync") == [0.1, 0.2, 0.3]
    assert recorder.errors("sync") == [BOOM]
    assert recorder.outcomes("other") == []


def test_clear_forgets_the_executions_and_keeps_the_states() -> None:
    """After clear() nothing is recorded, and outcomes are still read from the states."""
    recorder = Recorder()
    recorder.observe("test", "sync", FakeState(last_outcome="ignored"))
    record = recorder.recorder("test", "sync")
    record(0.1, True)
    recorder.clear()
    assert recorder.count() == 0
    record(0.1, True)
    assert recorder.outcomes("sync") == ["ignored"]


@pytest.mark.anyio
async def test_wait_for_returns_at_once_when_enough_are_recorded() -> None:
    """wait_for() returns the executions already recorded when there are enough."""
    recorder = Recorder()
    record = recorder.recorder("test", "sync")
    record(0.1, True)
    record(0.2, True)
    with anyio.fail_after(5):
        found = await recorder.wait_for("sync", count=2)
    assert [e.latency for e in found] == [0.1, 0.2]


@pytest.mark.anyio
async def test_wait_for_waits_until_the_count_is_reached() -> None:
    """wait_for() returns once the handler's count-th execution is recorded, not before."""
    recorder = Recorder()
    record = recorder.recorder("test", "sync")
    other = recorder.recorder("test", "other")
    found: list[Execution] = []

    async def wait() -> None:
        found.extend(await recorder.wait_for("sync", count=2))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            for one in (record, other):  # one of "sync", then one of another handler
                one(0.1, True)
                await anyio.wait_all_tasks_blocked()
                assert found == []
            record(0.2, True)
    assert [e.latency for e in found] == [0.1, 0.2]


@pytest.mark.anyio
async def test_wait_for_counts_only_the_outcome_asked_for() -> None:
    """wait_for(outcome=...) waits for executions with that outcome only."""
    recorder = Recorder()
    record = recorder.recorder("test", "sync")
    found: list[Execution] = []

    async def wait() -> None:
        found.extend(await recorder.wait_for("sync", outcome="failure"))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(wait)
            record(0.1, True)
            await anyio.wait_all_tasks_blocked()
            assert found == []
            record(0.2, False)
    assert [e.outcome for e in found] == ["failure"]


@fake_clock()
@pytest.mark.anyio
async def test_wait_for_is_bounded_by_the_callers_fail_after() -> None:
    """wait_for() has no limit of its own: the caller's fail_after ends it."""
    start = anyio.current_time()
    with pytest.raises(TimeoutError), anyio.fail_after(30):
        await Recorder().wait_for("never")
    assert anyio.current_time() - start == pytest.approx(30)


@pytest.mark.anyio
@pytest.mark.parametrize("count", [0, -1, True, 1.5], ids=repr)
async def test_wait_for_rejects_a_count_that_is_not_a_positive_int(count: object) -> None:
    """A count of 0, a negative number, a bool or a float is a ValueError."""
    with pytest.raises(ValueError, match="count"):
        await Recorder().wait_for("sync", count=count)  # type: ignore[arg-type]


# Recorder behind real engines. The engines do not call observe() yet: through
# them outcomes follow the success flag (an ignored exception reads "success")
# and errors are not known, so these tests assert counts, order and latency.


@fake_clock()
@pytest.mark.anyio
async def test_recorder_counts_a_parallel_workers_executions() -> None:
    """Three executions of a handler with cooler 60 are recorded by t=120 s (fake clock)."""
    recorder = Recorder()
    worker = parallel(recorder, Tick(cooler=60))
    start = anyio.current_time()
    with anyio.fail_after(3600):
        async with running(worker):
            found = await recorder.wait_for("tick", count=3)
            assert anyio.current_time() - start == pytest.approx(120)
    assert len(found) == 3
    assert recorder.outcomes("tick") == ["success"] * 3
    assert all(execution.env == "test" for execution in found)


@fake_clock()
@pytest.mark.anyio
async def test_recorder_counts_the_failures_of_an_engine() -> None:
    """A failing handler's executions are recorded as failures, the others' beside them."""
    recorder = Recorder()
    worker = parallel(recorder, Tick(cooler=30), Fails(ValueError("boom")))
    with anyio.fail_after(3600):
        async with running(worker):
            await recorder.wait_for("fails", count=2)
    assert set(recorder.outcomes("fails")) == {"failure"}
    assert recorder.count("tick") >= 3


@pytest.mark.anyio
async def test_recorder_latency_covers_the_execution() -> None:
    """A recorded latency is at least as long as the execution took."""

    async def nap() -> None:
        await anyio.sleep(0.02)

    recorder = Recorder()
    worker = workit.SequenceWorker(
        [[workit.Handler(nap)]], registry=workit.Registry("test", metrics=recorder)
    )
    with anyio.fail_after(5):
        await worker.ensure()
    (latency,) = recorder.latencies("nap")
    assert 0.02 <= latency < 5


@pytest.mark.anyio
async def test_recorder_keeps_the_order_of_a_sequence_pass() -> None:
    """A pass over two steps records the first step's handler before the second's."""
    recorder = Recorder()
    registry = workit.Registry("test", metrics=recorder)
    worker = workit.SequenceWorker([[Tick(name="first")], [Tick(name="second")]], registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()
        await worker.ensure()
    assert [execution.handler for execution in recorder.executions()] == [
        "first",
        "second",
        "first",
        "second",
    ]


@pytest.mark.anyio
async def test_outcomes_and_errors_of_a_wrapped_handler_once_observed() -> None:
    """Observed as the engines will, a handler's ignored and failed executions read as such."""
    recorder = Recorder()
    registry = workit.Registry("test", metrics=recorder, ignore=lambda e: isinstance(e, Skip))
    errors: list[BaseException] = [Skip("nothing to do"), ValueError("boom")]

    async def flaky() -> None:
        if errors:
            raise errors.pop(0)

    wrapped = registry.wrap(workit.Handler(flaky))  # observed by the recorder as it is wrapped
    for _ in range(3):
        await wrapped.execute()
    assert recorder.outcomes("flaky") == ["ignored", "failure", "success"]
    assert recorder.errors("flaky") == [ErrorInfo(type="ValueError", message="boom")]


# running()


@fake_clock()
@pytest.mark.anyio
async def test_running_yields_the_worker_ready() -> None:
    """Inside the block the worker is ready; the block gets the worker itself."""
    worker = parallel(Recorder(), Tick())
    with anyio.fail_after(3600):
        async with running(worker) as inside:
            assert inside is worker
            assert worker.ready


@fake_clock()
@pytest.mark.anyio
async def test_running_stops_the_worker_and_waits_for_its_daemon() -> None:
    """After the block the daemon has returned: not ready, nothing more is recorded."""
    recorder = Recorder()
    worker = parallel(recorder, Tick(cooler=1))
    with anyio.fail_after(3600):
        async with running(worker):
            await recorder.wait_for("tick", count=2)
        assert not worker.ready
        count = recorder.count()
        await anyio.sleep(10)
    assert recorder.count() == count


@fake_clock()
@pytest.mark.anyio
async def test_running_lets_the_execution_in_flight_finish() -> None:
    """The stop on exit is graceful: an execution running then completes."""
    finished: list[float] = []

    async def slow() -> None:
        await anyio.sleep(10)
        finished.append(anyio.current_time())

    recorder = Recorder()
    worker = parallel(recorder, workit.Handler(slow, cooler=60))
    with anyio.fail_after(3600):
        async with running(worker):
            await anyio.sleep(5)
    assert len(finished) == 1
    assert recorder.count("slow") == 1


@fake_clock()
@pytest.mark.anyio
async def test_a_daemon_failing_to_start_is_raised_as_it_is() -> None:
    """A daemon that raises before it is ready (already running) raises that error, ungrouped."""
    worker = parallel(Recorder(), Tick())
    with anyio.fail_after(3600):
        async with running(worker):
            with pytest.raises(RuntimeError, match="already running"):
                async with running(worker):
                    pass


@fake_clock()
@pytest.mark.anyio
async def test_a_daemon_crash_is_raised_as_it_is() -> None:
    """A daemon that crashes while the block runs ends the block with its own exception."""
    worker = Crashing(after=5)
    with pytest.raises(RuntimeError, match="the daemon broke"), anyio.fail_after(3600):
        async with running(worker):
            await anyio.sleep(60)
    assert worker.stopped


@fake_clock()
@pytest.mark.anyio
async def test_an_error_of_the_block_is_raised_as_it_is_and_the_worker_stopped() -> None:
    """An exception raised in the block comes out ungrouped, after the worker was stopped."""
    worker = parallel(Recorder(), Tick())
    with pytest.raises(KeyError, match="missing"), anyio.fail_after(3600):
        async with running(worker):
            raise KeyError("missing")
    assert not worker.ready


@pytest.mark.anyio
async def test_running_rejects_what_is_not_a_worker() -> None:
    """running() of a handler or anything not a worker is a TypeError."""
    with pytest.raises(TypeError, match="worker"):
        async with running(Tick()):  # type: ignore[type-var]  # the wrong type is what is tested
            pass


def test_the_fake_clock_recipe_of_the_docstring_passes(tmp_path: Path) -> None:
    """The complete example in workit.testing's docstring is a test module that passes."""
    docstring = workit.testing.__doc__ or ""
    found = re.search(r"\.\. code-block:: python\n\n(.*?)\n\n(?=\S)", docstring, re.DOTALL)
    assert found, "no code block in the docstring"
    (tmp_path / "test_recipe.py").write_text(textwrap.dedent(found[1]), encoding="utf-8")
    result = subprocess.run(
        [
            *(sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-W", "error"),
            # looptime, in the dev tools, is a library here: its plugin needs pytest-asyncio.
            *("-p", "no:looptime_plugin", "-p", "no:looptime_chronometers"),
            *("-p", "no:looptime_timeproxies"),
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed" in result.stdout


@pytest.mark.anyio
async def test_the_recorder_counts_lease_events_of_a_fleet() -> None:
    """Two replicas of two handlers on a Memory fleet: the first acquires both, hands one
    to the second when it joins and takes it back when the second stops; an engine
    without leases counts none, and clear() sets the counts back to 0."""
    assert isinstance(Recorder(), workit.metrics.CountsLeases)

    class Job:
        def __init__(self, name: str) -> None:
            self.name = name
            self.cooler = 0.05

        async def ensure(self) -> None:
            pass

    leases = workit.lease.Memory(group="recorded", ttl=3)
    recorders = [Recorder(), Recorder()]
    workers = [
        workit.ParallelWorker(
            [Job("a"), Job("b")],
            registry=workit.Registry("test", metrics=recorder),
            leases=leases.replica(f"replica-{index}"),
        )
        for index, recorder in enumerate(recorders)
    ]
    first, second = recorders
    with anyio.fail_after(30):
        async with running(workers[0]):
            await first.wait_for("a")
            await first.wait_for("b")
            assert first.lease_events() == {"acquired": 2, "released": 0, "lost": 0}
            async with running(workers[1]):
                await until(lambda: second.count() > 0, within=10)
                assert first.lease_events(env="test")["released"] == 1
                assert second.lease_events()["acquired"] == 1
            assert second.lease_events() == {"acquired": 1, "released": 1, "lost": 0}
            await until(lambda: first.lease_events()["acquired"] == 3, within=10)  # handed back
    assert first.lease_events() == {"acquired": 3, "released": 3, "lost": 0}
    assert first.lease_events(env="other") == {}
    first.clear()
    assert first.lease_events() == {"acquired": 0, "released": 0, "lost": 0}
    unleased = Recorder()
    async with running(
        workit.ParallelWorker([Job("a")], registry=workit.Registry("test", metrics=unleased))
    ):
        await unleased.wait_for("a")
    assert unleased.lease_events() == {}
