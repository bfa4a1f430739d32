"""workit.handler.current(): the execution the calling code runs in."""

from __future__ import annotations

import contextlib
import threading
from datetime import UTC, timedelta

import anyio
import pytest

import workit
from workit.handler import Execution, current


class Recording:
    """A handler that notes ``current()`` in each execution and fails while ``failing``.

    Sync (run in a worker thread) when ``sync``; it notes ``current()`` in
    ``active()`` and ``cooler()`` too, which run outside any execution.
    """

    def __init__(self, name: str, *, sync: bool = False) -> None:
        self.name = name
        self.sync = sync
        self.failing = False
        self.seen: list[Execution | None] = []
        self.outside: list[Execution | None] = []
        self.threads: list[int] = []

    def active(self) -> bool:
        self.outside.append(current())
        return True

    def cooler(self) -> float:
        self.outside.append(current())
        return 3600

    def _note(self) -> None:
        self.seen.append(current())
        self.threads.append(threading.get_ident())
        if self.failing:
            raise LookupError(f"{self.name} failed")


class AsyncRecording(Recording):
    async def ensure(self) -> None:
        self._note()


class SyncRecording(Recording):
    def ensure(self) -> None:
        self._note()


def recording(name: str, sync: bool) -> AsyncRecording | SyncRecording:
    return SyncRecording(name) if sync else AsyncRecording(name)


async def ensure_quietly(worker: workit.Worker) -> None:
    """``worker.ensure()``, a failure of its handler aside."""
    with anyio.fail_after(5), contextlib.suppress(workit.HandlerError):
        await worker.ensure()


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.anyio
async def test_current_names_the_handler_and_counts_the_attempt(
    registry: workit.Registry, sync: bool
) -> None:
    """In an execution, current() gives the handler's name and its attempt: 1 after a
    success, then 1, 2, 3 over three failures in a row, and 4 for the one after them."""
    handler = recording("job", sync)
    worker = workit.ParallelWorker([handler], registry=registry)
    plan = [False, False, True, True, True, False, False]
    for failing in plan:
        handler.failing = failing
        await ensure_quietly(worker)
    assert all(isinstance(seen, Execution) for seen in handler.seen)
    assert [seen.handler for seen in handler.seen if seen] == ["job"] * len(plan)
    assert [seen.attempt for seen in handler.seen if seen] == [1, 1, 1, 2, 3, 4, 1]


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.anyio
async def test_current_started_is_the_executions_start_in_utc(
    registry: workit.Registry, sync: bool
) -> None:
    """current().started is an aware UTC datetime, the start that status() shows."""
    handler = recording("job", sync)
    worker = workit.ParallelWorker([handler], registry=registry)
    await ensure_quietly(worker)
    [seen] = handler.seen
    assert seen is not None
    assert seen.started.utcoffset() == timedelta(0)
    assert seen.started.tzinfo is UTC
    last_started = worker.status().handlers[0].last_started
    assert last_started is not None
    assert abs(seen.started - last_started) < timedelta(seconds=1)
    assert seen.claim is None


@pytest.mark.anyio
async def test_a_sync_handler_sees_current_in_its_worker_thread(
    registry: workit.Registry,
) -> None:
    """A sync handler runs in a thread of its own, and current() works there too."""
    handler = SyncRecording("threaded")
    worker = workit.SequenceWorker([[handler]], registry=registry)
    await ensure_quietly(worker)
    assert handler.threads != [threading.get_ident()]
    [seen] = handler.seen
    assert seen is not None
    assert seen.handler == "threaded"


@pytest.mark.anyio
async def test_current_in_a_sequence_pass_names_each_handler(registry: workit.Registry) -> None:
    """In a pass, each handler's execution sees its own name."""
    first, second = AsyncRecording("first"), SyncRecording("second")
    worker = workit.SequenceWorker([[first], [second]], registry=registry)
    await ensure_quietly(worker)
    assert [seen.handler for seen in first.seen + second.seen if seen] == ["first", "second"]


@pytest.mark.parametrize("sync", [False, True], ids=["async", "sync"])
@pytest.mark.anyio
async def test_current_is_none_outside_executions(registry: workit.Registry, sync: bool) -> None:
    """current() is None in active() and cooler() (in the task that runs the executions,
    between them) and in the caller, before and after executions."""
    handler = recording("job", sync)
    worker = workit.ParallelWorker([handler], registry=registry)
    assert current() is None
    await ensure_quietly(worker)
    assert current() is None
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(worker.daemon)
            await worker.wait_ready()
            # Wait until the daemon's execution is over and its loop has asked cooler().
            while len(handler.outside) < 3:  # noqa: ASYNC110  # no event to wait on
                await anyio.sleep(0.001)
            assert current() is None
            worker.stop()
    assert len(handler.seen) == 2
    assert all(seen is not None for seen in handler.seen)
    assert handler.outside == [None] * len(handler.outside)


@pytest.mark.anyio
async def test_a_task_started_by_the_execution_sees_it_while_it_lasts(
    registry: workit.Registry,
) -> None:
    """A task an execution starts sees current() as its execution's, until the execution ends;
    after that, a task that outlives it sees None."""
    seen: list[tuple[str, Execution | None]] = []
    finished = anyio.Event()

    async def outliving() -> None:
        seen.append(("during", current()))
        await finished.wait()
        seen.append(("after", current()))

    async def child() -> None:
        seen.append(("child", current()))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as outer:

            async def spawning() -> None:
                async with anyio.create_task_group() as inner:
                    inner.start_soon(child)
                outer.start_soon(outliving)
                await anyio.wait_all_tasks_blocked()

            worker = workit.ParallelWorker(
                [workit.Handler(spawning, cooler=3600)], registry=registry
            )
            await worker.ensure()
            finished.set()
    assert [where for where, _ in seen] == ["child", "during", "after"]
    child_seen, during, after = (execution for _, execution in seen)
    assert child_seen is not None
    assert child_seen.handler == "spawning"
    assert during == child_seen
    assert after is None
