"""APScheduler 3.11 as a benchmarked system: ``AsyncIOScheduler`` with interval jobs.

Every job is ``IntervalTrigger(seconds=cooler)`` with ``max_instances=1`` and
``coalesce=True``, other settings at their defaults (so ``misfire_grace_time``
is 1 s). An interval of 0 is 1 s for APScheduler, so cooler 0 becomes its
smallest usable interval, 1 ms. Note that an interval is a fixed rate, not a
pause after each execution as workit's cooler is; for the no-op jobs measured
here the two differ by the job's duration only.

APScheduler's own warnings and errors (a run skipped because the previous one
is still running, a run missed by more than the grace time, a job future that
failed or was cancelled at shutdown) are counted instead of printed, and
reported with the results.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import TYPE_CHECKING

# APScheduler 3 ships no type information (no py.typed, no stubs): see the
# mypy overrides in pyproject.toml.
from apscheduler.events import EVENT_SCHEDULER_SHUTDOWN
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.interval import IntervalTrigger

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from bench._dag import Dag

__all__ = ["APScheduler"]

SMALLEST_INTERVAL = 0.001
"""APScheduler turns an interval of 0 into 1 s; 1 ms is the smallest that works."""


class _WarningCounter(logging.Handler):
    """Counts APScheduler's warnings by kind instead of printing them."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.counts: Counter[str] = Counter()

    def emit(self, record: logging.LogRecord) -> None:
        message = str(record.msg)
        if "maximum number of running instances" in message:
            self.counts["runs_skipped_max_instances"] += 1
        elif "was missed by" in message:
            self.counts["runs_missed"] += 1
        elif message.startswith("Error running job"):
            # The executor's callback on a job future that failed or, at
            # shutdown, that the executor cancelled while the job still ran.
            self.counts["job_errors"] += 1
        else:
            self.counts["other_warnings"] += 1


class APScheduler:
    """Jobs added to one ``AsyncIOScheduler`` before ``start()``.

    ``stop()`` is ``scheduler.shutdown(wait=True)`` and then waiting for the
    scheduler's shutdown event: ``AsyncIOScheduler.shutdown()`` only schedules
    the shutdown on the loop and returns at once.
    """

    def __init__(self) -> None:
        self._scheduler: AsyncIOScheduler | None = None
        self._warnings = _WarningCounter()
        logger = logging.getLogger("apscheduler")
        logger.addHandler(self._warnings)
        logger.propagate = False

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
        # `sync` needs nothing here: the default AsyncIOExecutor runs a plain
        # function in the loop's default executor (a thread pool).
        scheduler = self._scheduler = AsyncIOScheduler()
        interval = max(cooler, SMALLEST_INTERVAL)
        for job in jobs:
            scheduler.add_job(
                job, IntervalTrigger(seconds=interval), max_instances=1, coalesce=True
            )
        scheduler.start()

    async def stop(self) -> None:
        assert self._scheduler is not None, "start() first"
        stopped = asyncio.get_running_loop().create_future()

        def on_shutdown(event: object) -> None:
            if not stopped.done():
                stopped.set_result(None)

        self._scheduler.add_listener(on_shutdown, EVENT_SCHEDULER_SHUTDOWN)
        self._scheduler.shutdown(wait=True)
        await stopped

    def dag_pass(self, dag: Dag) -> Callable[[], Awaitable[None]]:
        raise NotImplementedError("APScheduler has no DAG or dependency engine")

    def notes(self) -> dict[str, int]:
        """How many runs APScheduler skipped or missed, by its own warnings."""
        return dict(self._warnings.counts)
