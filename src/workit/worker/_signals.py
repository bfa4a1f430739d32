"""Running a worker until SIGINT or SIGTERM: the first stops it, a second cancels it."""

from __future__ import annotations

import logging
import signal
from typing import TYPE_CHECKING, Any

import anyio

from workit._policy import log

if TYPE_CHECKING:
    from anyio import CancelScope

    from workit.worker._lifecycle import Worker

__all__ = ["run_until_signalled"]


async def run_until_signalled(worker: Worker) -> None:
    """Run ``worker.daemon()``; SIGINT/SIGTERM stops it, a second one cancels it."""
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with anyio.create_task_group() as tasks:
            tasks.start_soon(_stop_on_signals, worker, signals, tasks.cancel_scope)
            await worker.daemon()
            tasks.cancel_scope.cancel()


async def _stop_on_signals(worker: Worker, signals: Any, scope: CancelScope) -> None:
    logger = worker._signal_logger()
    stopping = False
    async for signum in signals:
        signame = signal.Signals(signum).name
        if stopping:
            log(logger, logging.WARNING, "worker received %s again, cancelling executions", signame)
            scope.cancel()
            return
        stopping = True
        log(logger, logging.INFO, "worker received %s, stopping gracefully", signame)
        worker.stop()
