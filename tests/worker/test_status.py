"""Status snapshots: per-handler state of every engine, and ParallelWorker.ensure()."""

from __future__ import annotations

import contextlib
import json
import logging
import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING

import anyio
import anyio.to_thread
import hypothesis
import hypothesis.strategies
import pytest

import workit
from tests.support import BlocksFirst, executions, fake_clock
from workit.status import ErrorInfo, HandlerStatus

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry

    from workit.status import Outcome


class Job:
    """A handler that fails while ``failing`` and can be held running by ``gate``."""

    def __init__(self, name: str, *, cooler: float = 5, failing: bool = False) -> None:
        self.name = name
        self.cooler = cooler
        self.failing = failing
        self.active = True
        self.gate: anyio.Event | None = None
        self.calls = 0

    async def ensure(self) -> None:
        self.calls += 1
        if self.gate is not None:
            await self.gate.wait()
        if self.failing:
            raise LookupError(f"{self.name} failed")


def by_name(worker: workit.Worker) -> dict[str, HandlerStatus]:
    return {handler.name: handler for handler in worker.status().handlers}


@pytest.mark.anyio
async def test_new_worker_status_is_empty(registry: workit.Registry) -> None:
    """Before any execution every counter is zero and every time is None."""
    worker = workit.ParallelWorker([Job("a")], registry=registry)
    status = worker.status()
    assert not status.ready
    [handler] = status.handlers
    assert handler == HandlerStatus(
        name="a",
        engine="parallel",
        active=None,
        running=False,
        executions=0,
        failures=0,
        consecutive_failures=0,
        last_started=None,
        last_finished=None,
        last_success=None,
        last_duration=None,
        last_outcome=None,
        last_error=None,
        next_run=None,
    )


@fake_clock()
@pytest.mark.anyio
async def test_parallel_status_counts_failures_and_successes(registry: workit.Registry) -> None:
    """Executions, failures and consecutive failures follow the outcomes; success resets."""
    job = Job("flaky", failing=True)
    worker = workit.ParallelWorker([job], registry=registry)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.sleep(11)  # executions at 0, 5, 10
            failed = by_name(worker)["flaky"]
            job.failing = False
            await anyio.sleep(5)  # execution at 15
            recovered = by_name(worker)["flaky"]
            worker.stop()
    assert (failed.executions, failed.failures, failed.consecutive_failures) == (3, 3, 3)
    assert failed.last_outcome == "failure"
    assert failed.last_error == ErrorInfo(type="LookupError", message="flaky failed")
    assert failed.last_success is None
    assert (recovered.executions, recovered.failures, recovered.consecutive_failures) == (4, 3, 0)
    assert recovered.last_outcome == "success"
    assert recovered.last_success is not None
    assert recovered.last_error == failed.last_error  # the last failure stays visible


@fake_clock()
@pytest.mark.anyio
async def test_parallel_status_shows_running_and_next_run(registry: workit.Registry) -> None:
    """A held execution shows as running; after it, next_run is a cooler past its end."""
    job = Job("held", cooler=60)
    job.gate = anyio.Event()
    worker = workit.ParallelWorker([job], registry=registry)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.wait_all_tasks_blocked()
            running = by_name(worker)["held"]
            job.gate.set()
            await anyio.wait_all_tasks_blocked()
            done = by_name(worker)["held"]
            worker.stop()
        stopped = by_name(worker)["held"]
    assert running.running
    assert running.active is True
    assert running.last_started is not None
    assert running.last_finished is None
    assert not done.running
    assert done.last_finished is not None
    assert done.next_run is not None
    assert abs(done.next_run - done.last_finished - timedelta(seconds=60)) < timedelta(seconds=1)
    assert stopped.next_run is None


@fake_clock()
@pytest.mark.anyio
async def test_parallel_status_shows_inactive_handlers(registry: workit.Registry) -> None:
    """An inactive handler shows active False and no executions."""
    job = Job("idle")
    job.active = False
    worker = workit.ParallelWorker([job], registry=registry)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.wait_all_tasks_blocked()
            idle = by_name(worker)["idle"]
            worker.stop()
    assert idle.active is False
    assert idle.executions == 0


@pytest.mark.anyio
async def test_ignored_exception_is_a_success_in_status(
    prom: CollectorRegistry, logger: logging.Logger
) -> None:
    """An ignored exception counts as a success with outcome "ignored" and no last_error."""
    registry = workit.Registry(
        "test",
        ignore=lambda error: isinstance(error, LookupError),
        logger=logger,
        metrics=workit.metrics.Prometheus(prom),
    )
    worker = workit.SequenceWorker([[Job("quiet", failing=True)]], registry=registry)
    with pytest.raises(workit.HandlerError):
        await worker.ensure()
    quiet = by_name(worker)["quiet"]
    assert (quiet.executions, quiet.failures, quiet.last_outcome) == (1, 0, "ignored")
    assert quiet.last_error is None
    assert quiet.last_success is not None


@fake_clock()
@pytest.mark.anyio
async def test_sequence_status_next_run_is_the_next_pass(registry: workit.Registry) -> None:
    """Every handler of a running sequence worker shows the next pass as next_run."""
    first, second = Job("first"), Job("second")
    worker = workit.SequenceWorker([[first], [second]], cooler=30, registry=registry)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.wait_all_tasks_blocked()
            status = worker.status()
            worker.stop()
    assert status.ready
    assert [handler.engine for handler in status.handlers] == ["sequence", "sequence"]
    [one, two] = status.handlers
    assert one.next_run is not None
    assert one.next_run == two.next_run
    assert one.last_finished is not None
    assert abs(one.next_run - one.last_finished - timedelta(seconds=30)) < timedelta(seconds=1)


@pytest.mark.anyio
async def test_combined_status_lists_every_worker(registry: workit.Registry) -> None:
    """A combined worker's status has the handlers of all its workers, in order."""
    combined = workit.CombinedWorker(
        workit.ParallelWorker([Job("p1"), Job("p2")], registry=registry),
        workit.SequenceWorker([[Job("s1")]], registry=registry),
    )
    status = combined.status()
    assert [(h.name, h.engine) for h in status.handlers] == [
        ("p1", "parallel"),
        ("p2", "parallel"),
        ("s1", "sequence"),
    ]


@pytest.mark.anyio
async def test_status_to_dict_is_json_with_iso_times(registry: workit.Registry) -> None:
    """to_dict() gives JSON-ready values: ISO-8601 UTC times and last_error as a dict."""
    worker = workit.SequenceWorker([[Job("broken", failing=True)]], registry=registry)
    with pytest.raises(workit.HandlerError):
        await worker.ensure()
    document = json.loads(json.dumps(worker.status().to_dict()))
    assert document["ready"] is False
    [handler] = document["handlers"]
    assert handler["last_error"] == {"type": "LookupError", "message": "broken failed"}
    started = datetime.fromisoformat(handler["last_started"])
    assert started.tzinfo is not None
    assert started.utcoffset() == timedelta(0)
    assert abs(datetime.now(UTC) - started) < timedelta(minutes=1)
    assert handler["last_success"] is None
    assert handler["next_run"] is None


@pytest.mark.anyio
async def test_broken_str_is_described_in_status(registry: workit.Registry) -> None:
    """An exception whose __str__ raises still gets a last_error."""

    class Unprintable(Exception):
        def __str__(self) -> str:
            raise RuntimeError("no")

    class Raises:
        async def ensure(self) -> None:
            raise Unprintable

    worker = workit.SequenceWorker([[Raises()]], registry=registry)
    with pytest.raises(workit.HandlerError):
        await worker.ensure()
    [handler] = worker.status().handlers
    assert handler.last_error is not None
    assert handler.last_error.message == "<unprintable>"


@pytest.mark.anyio
async def test_a_lone_surrogate_in_a_message_is_escaped(registry: workit.Registry) -> None:
    """A message holding a lone surrogate (a file name decoded with surrogateescape) keeps it
    as a backslash escape in last_error, so the snapshot encodes as UTF-8 JSON."""

    class Mirror:
        async def ensure(self) -> None:
            raise ValueError("cannot parse report-\udcff.csv: unexpected header")

    worker = workit.SequenceWorker([[Mirror()]], registry=registry)
    with pytest.raises(workit.HandlerError):
        await worker.ensure()
    [handler] = worker.status().handlers
    assert handler.last_error == ErrorInfo(
        type="ValueError", message="cannot parse report-\\udcff.csv: unexpected header"
    )
    json.dumps(worker.status().to_dict(), ensure_ascii=False).encode("utf-8")


def test_error_info_keeps_printable_non_ascii_as_it_is() -> None:
    """Only what UTF-8 cannot encode is escaped: other non-ASCII text is kept."""
    info = ErrorInfo.of(RuntimeError("Zürich \u2192 東京, \udc80 and \ud800"))
    assert info.message == "Zürich \u2192 東京, \\udc80 and \\ud800"
    assert ErrorInfo.of(RuntimeError("plain")).message == "plain"


# A sync execution past its timeout: running and overdue


@pytest.mark.anyio
async def test_sync_execution_past_its_timeout_is_overdue_until_its_thread_returns(
    registry: workit.Registry,
) -> None:
    """After a sync execution's timeout, status shows running and overdue (to_dict() too)
    while its thread still runs; once the thread returns, neither."""
    blocks = BlocksFirst("slow", cooler=3600, timeout=0.01, limit=5)
    worker = workit.ParallelWorker([blocks], registry=registry)
    try:
        with anyio.fail_after(5):
            with pytest.raises(workit.HandlerTimeout):
                await worker.ensure()
            [handler] = worker.status().handlers
            assert (handler.running, handler.overdue) == (True, True)
            assert handler.last_outcome == "failure"
            document = worker.status().to_dict()["handlers"]
            assert isinstance(document, list)
            assert (document[0]["running"], document[0]["overdue"]) == (True, True)
            assert (worker.handlers[0].running, worker.handlers[0].overdue) == (True, True)
            blocks.gate.set()
            while worker.status().handlers[0].overdue:  # noqa: ASYNC110  # a thread: poll
                await anyio.sleep(0.001)
    finally:
        blocks.gate.set()
    [handler] = worker.status().handlers
    assert (handler.running, handler.overdue) == (False, False)
    document = worker.status().to_dict()["handlers"]
    assert isinstance(document, list)
    assert document[0]["overdue"] is False


@pytest.mark.anyio
async def test_a_finished_execution_is_not_overdue(registry: workit.Registry) -> None:
    """A sync execution within its timeout, and an async one, are never overdue."""
    quick = workit.Handler(lambda: None, cooler=3600, timeout=5, name="quick")
    worker = workit.ParallelWorker([quick, Job("job")], registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()
    assert [(h.running, h.overdue) for h in worker.status().handlers] == [(False, False)] * 2


# recent: the outcomes of the last executions


class Scripted:
    """A handler that succeeds, fails or raises an ignored exception, as ``script`` says."""

    name = "scripted"

    def __init__(self, script: list[Outcome]) -> None:
        self.script = iter(script)

    async def ensure(self) -> None:
        outcome = next(self.script)
        if outcome == "failure":
            raise RuntimeError("failed")
        if outcome == "ignored":
            raise LookupError("nothing to do")


MIXED: list[Outcome] = ["success", "failure", "ignored", "success", "failure", "failure", "ignored"]


@pytest.fixture
def ignoring(prom: CollectorRegistry, logger: logging.Logger) -> workit.Registry:
    """A registry that ignores LookupError."""
    return workit.Registry(
        "test",
        ignore=lambda error: isinstance(error, LookupError),
        logger=logger,
        metrics=workit.metrics.Prometheus(prom),
    )


async def run_through(worker: workit.Worker, times: int) -> None:
    with anyio.fail_after(5):
        for _ in range(times):
            with contextlib.suppress(workit.HandlerError):
                await worker.ensure()


@pytest.mark.anyio
async def test_recent_holds_the_outcomes_oldest_first(ignoring: workit.Registry) -> None:
    """recent lists each execution's outcome (success, ignored, failure), oldest first;
    to_dict() gives it as a list."""
    worker = workit.ParallelWorker(
        [workit.Handler(Scripted(MIXED).ensure, cooler=1, name="scripted")], registry=ignoring
    )
    assert worker.status().handlers[0].recent == ()
    await run_through(worker, len(MIXED))
    [handler] = worker.status().handlers
    assert handler.recent == tuple(MIXED)
    assert worker.handlers[0].recent == tuple(MIXED)
    handlers = worker.status().to_dict()["handlers"]
    assert isinstance(handlers, list)
    assert handlers[0]["recent"] == MIXED


@pytest.mark.parametrize("engine", ["parallel", "sequence"])
@pytest.mark.anyio
async def test_recent_keeps_the_last_twenty(ignoring: workit.Registry, engine: str) -> None:
    """After more than 20 executions, recent holds the outcomes of the last 20."""
    script: list[Outcome] = [*(MIXED * 5), "failure", "success"]  # 37 executions
    handler = Scripted(script)
    worker: workit.Worker
    if engine == "parallel":
        wrapped = workit.Handler(handler.ensure, cooler=1, name="scripted")
        worker = workit.ParallelWorker([wrapped], registry=ignoring)
    else:
        worker = workit.SequenceWorker([[handler]], registry=ignoring)
    await run_through(worker, len(script))
    [status] = worker.status().handlers
    assert status.executions == len(script)
    assert status.recent == tuple(script[-20:])


@pytest.mark.anyio
async def test_recent_after_many_failures_then_a_success(registry: workit.Registry) -> None:
    """Twenty-five failures then a success: recent is 19 failures and the success."""
    failures: list[Outcome] = ["failure"] * 25
    script: list[Outcome] = [*failures, "success"]
    worker = workit.SequenceWorker([[Scripted(script)]], registry=registry)
    await run_through(worker, len(script))
    assert worker.status().handlers[0].recent == ("failure",) * 19 + ("success",)


@pytest.mark.anyio
async def test_parallel_ensure_runs_each_active_handler_once(
    registry: workit.Registry, prom: CollectorRegistry
) -> None:
    """ParallelWorker.ensure() runs every active handler once and skips inactive ones."""
    a, b, off = Job("a"), Job("b"), Job("off")
    off.active = False
    worker = workit.ParallelWorker([a, b, off], registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()
    assert (a.calls, b.calls, off.calls) == (1, 1, 0)
    assert executions(prom, "a", True) == 1


@pytest.mark.anyio
async def test_parallel_ensure_runs_handlers_concurrently(registry: workit.Registry) -> None:
    """ParallelWorker.ensure() runs its handlers at the same time."""
    gate = anyio.Event()

    class Waiter:
        cooler = 1

        def __init__(self, name: str) -> None:
            self.name = name

        async def ensure(self) -> None:
            await gate.wait()

    class Opener:
        cooler = 1

        async def ensure(self) -> None:
            gate.set()

    worker = workit.ParallelWorker([Waiter("w1"), Waiter("w2"), Opener()], registry=registry)
    with anyio.fail_after(5):
        await worker.ensure()


@pytest.mark.anyio
async def test_parallel_ensure_raises_for_the_first_failed_handler(
    registry: workit.Registry,
) -> None:
    """ParallelWorker.ensure() raises HandlerError for the first failed handler in order."""
    good, bad, worse = Job("good"), Job("bad", failing=True), Job("worse", failing=True)
    worker = workit.ParallelWorker([good, bad, worse], registry=registry)
    with pytest.raises(workit.HandlerError) as raised:
        await worker.ensure()
    assert raised.value.handler == "bad"
    assert isinstance(raised.value.__cause__, LookupError)
    assert worse.calls == 1  # a failure does not stop the others


@fake_clock()
@pytest.mark.anyio
async def test_shutdown_log_counts_cancelled_executions(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """After the grace period the stop log says how many executions were cancelled."""
    hung, done = Job("hung"), Job("done")
    hung.gate = anyio.Event()
    worker = workit.ParallelWorker([hung, done], registry=registry, grace=5)
    with anyio.fail_after(100):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            await anyio.wait_all_tasks_blocked()
            worker.stop()
    [record] = [r for r in caplog.records if r.message.startswith("worker stopped")]
    assert (record.cancelled, record.abandoned, record.handlers) == (1, 0, ["hung"])  # type: ignore[attr-defined]
    assert record.levelno == logging.WARNING


@pytest.mark.anyio
async def test_shutdown_log_says_zero_when_all_finished(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A clean stop logs zero cancelled and zero abandoned executions at INFO."""
    worker = workit.ParallelWorker([Job("quick", cooler=60)], registry=registry)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            worker.stop()
    [record] = [r for r in caplog.records if r.message.startswith("worker stopped")]
    assert (record.cancelled, record.abandoned) == (0, 0)  # type: ignore[attr-defined]
    assert record.levelno == logging.INFO


@pytest.mark.anyio
async def test_shutdown_log_counts_abandoned_threads(
    registry: workit.Registry, caplog: pytest.LogCaptureFixture
) -> None:
    """A sync execution still blocked after the grace period is counted as abandoned."""
    gate = threading.Event()
    entered = threading.Event()

    class Blocked:
        cooler = 60

        def ensure(self) -> None:
            entered.set()
            gate.wait()

    worker = workit.ParallelWorker([Blocked()], registry=registry, grace=0.01)
    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(worker.daemon)
                await worker.wait_ready()
                await anyio.to_thread.run_sync(entered.wait)
                worker.stop()
    finally:
        gate.set()
    [record] = [r for r in caplog.records if r.message.startswith("worker stopped")]
    assert (record.cancelled, record.abandoned) == (0, 1)  # type: ignore[attr-defined]


# status_json(): what /status serves, written without the snapshot objects


class Varied:
    """A handler whose executions succeed, fail, are ignored or hang, by a script."""

    def __init__(self, name: str, script: list[str], *, cooler: float = 1, **parts: object):
        self.name = name
        self.script = script
        self.cooler = cooler
        self.calls = 0
        for part, value in parts.items():
            setattr(self, part, value)

    async def ensure(self) -> None:
        step = self.script[min(self.calls, len(self.script) - 1)]
        self.calls += 1
        if step == "fail":
            raise ValueError(f"disk 'full' \\ {self.calls} \udcff ünïcode")
        if step == "ignore":
            raise LookupError("nothing to do")
        if step == "hang":
            await anyio.sleep_forever()


@fake_clock()
@pytest.mark.anyio
async def test_status_json_is_the_snapshot_as_json(
    prom: CollectorRegistry, logger: logging.Logger
) -> None:
    """``status_json()`` parses to exactly ``status().to_dict()``, for handlers in every
    state (failing with awkward messages, ignored, inactive, hung, never due, in a pass),
    before, while and after the daemon runs."""
    registry = workit.Registry(
        "test",
        metrics=workit.metrics.Prometheus(prom),
        logger=logger,
        ignore=lambda error: isinstance(error, LookupError),
    )
    parallel = workit.ParallelWorker(
        [
            Varied("ok", ["ok"]),
            Varied("flaky", ["fail", "ok", "fail", "ignore"] * 8),
            Varied('quiet "name" <é>', ["ok"], active=False),
            Varied("hung", ["hang"]),
            Varied("never again", ["ok"], cooler=float("inf")),
        ],
        registry=registry,
        backoff=workit.Backoff(initial=1, maximum=4),
    )
    sequence = workit.SequenceWorker(
        [[Varied("step", ["ok", "fail"])], [Varied("after", ["ok"])]],
        cooler=2,
        registry=registry,
    )
    worker = workit.CombinedWorker(parallel, sequence)
    assert json.loads(await worker.status_json()) == worker.status().to_dict()
    with anyio.fail_after(3600):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            for _ in range(30):
                await anyio.sleep(0.7)
                assert json.loads(await worker.status_json()) == worker.status().to_dict()
            worker.stop()
    assert json.loads(await worker.status_json()) == worker.status().to_dict()


@pytest.mark.parametrize(
    "seconds",
    [0.0, 1.5, 1764641000.0, 1764641000.000001, 1764641000.9999996, 1764641000.1234565, 2.5e9],
)
def test_iso_json_is_isoformat_of_the_timestamp(seconds: float) -> None:
    """The fast ISO-8601 writer gives what datetime's isoformat() gives, rounding included."""
    from workit.status import iso_json, timestamp

    moment = timestamp(seconds)
    assert moment is not None
    assert iso_json(seconds) == json.dumps(moment.isoformat())


@hypothesis.given(hypothesis.strategies.floats(min_value=0, max_value=2**35, allow_nan=False))
def test_iso_json_matches_isoformat_for_any_time(seconds: float) -> None:
    """For any time from 1970 to the year 3058, the fast writer agrees with datetime."""
    from workit.status import iso_json, timestamp

    moment = timestamp(seconds)
    assert moment is not None
    assert iso_json(seconds) == json.dumps(moment.isoformat())
