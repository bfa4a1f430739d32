"""Running a worker until a signal: the first stops it, a second cancels it."""

from __future__ import annotations

import contextlib
import logging
import signal
from typing import TYPE_CHECKING, Any

import anyio

from workit._policy import log

if TYPE_CHECKING:
    from contextlib import AbstractAsyncContextManager

    from anyio import CancelScope

    from workit.worker._lifecycle import Worker

__all__ = ["run_until_signalled"]

SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)
"""What stops a worker: SIGHUP too (a closed terminal, a supervisor's stop), where there is one."""


async def run_until_signalled(
    worker: Worker, serving: AbstractAsyncContextManager[object] | None = None
) -> None:
    """Run ``worker.daemon()`` inside ``serving``; the first signal stops it, a second
    cancels it. The signals are caught from before ``serving`` starts until after it
    ended, so a signal while it shuts down never kills the process."""
    failed: Exception | None = None  # raised past the task group, not in a group
    with anyio.open_signal_receiver(*SIGNALS) as signals:
        async with anyio.create_task_group() as tasks:
            daemon = anyio.CancelScope()
            tasks.start_soon(_on_signals, worker, signals, daemon)
            try:
                async with serving if serving is not None else contextlib.nullcontext():
                    with daemon:
                        await worker.daemon()
            except Exception as error:
                failed = error
            tasks.cancel_scope.cancel()
    if failed is not None:
        raise failed


async def _on_signals(worker: Worker, signals: Any, daemon: CancelScope) -> None:
    logger = worker._signal_logger()
    received = 0
    async for signum in signals:
        received += 1
        signame = signal.Signals(signum).name
        if received == 1:
            log(logger, logging.INFO, "worker received %s, stopping gracefully", signame)
            worker.stop()
        elif received == 2:
            log(logger, logging.WARNING, "worker received %s again, cancelling executions", signame)
            daemon.cancel()
        else:
            log(logger, logging.WARNING, "worker received %s while exiting; exiting", signame)
