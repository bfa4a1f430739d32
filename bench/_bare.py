"""The bare asyncio loop: the floor any scheduler on asyncio is compared with.

No metrics, no logging, no bookkeeping: one task per job doing
``await job(); await asyncio.sleep(cooler)`` forever. Plain-function jobs go
through ``loop.run_in_executor(None, job)``, the loop's default executor.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from bench._dag import Dag

__all__ = ["Bare"]


async def _loop(job: Callable[[], Awaitable[object]], cooler: float) -> None:
    while True:
        await job()
        await asyncio.sleep(cooler)


async def _sync_loop(job: Callable[[], object], cooler: float) -> None:
    loop = asyncio.get_running_loop()
    while True:
        await loop.run_in_executor(None, job)
        await asyncio.sleep(cooler)


class Bare:
    """One task per job; ``stop()`` cancels every task and awaits them all.

    A DAG pass is a hand-written runner: one task per node that awaits its
    dependencies' ``asyncio.Event``s, sleeps, then sets its own event.
    """

    def __init__(self) -> None:
        self._tasks: list[asyncio.Task[None]] = []

    async def start(
        self,
        jobs: Sequence[Callable[[], object]],
        *,
        cooler: float,
        sync: bool,
        jitter: float = 0.0,
    ) -> None:
        if jitter:
            raise NotImplementedError("jitter is workit's: not applicable")
        if sync:
            self._tasks = [asyncio.create_task(_sync_loop(job, cooler)) for job in jobs]
        else:
            coroutines = cast("Sequence[Callable[[], Awaitable[object]]]", jobs)
            self._tasks = [asyncio.create_task(_loop(job, cooler)) for job in coroutines]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []

    def dag_pass(self, dag: Dag) -> Callable[[], Awaitable[None]]:
        durations, dependencies = dag.durations, dag.dependencies
        run_node = dag.run_node

        async def one_pass() -> None:
            done = [asyncio.Event() for _ in durations]

            async def node(index: int) -> None:
                for dependency in dependencies[index]:
                    await done[dependency].wait()
                await run_node(index)
                done[index].set()

            async with asyncio.TaskGroup() as tasks:
                for index in range(len(durations)):
                    tasks.create_task(node(index))

        return one_pass

    def notes(self) -> dict[str, int]:
        return {}
