"""``Instrumented``: the wrapper that times, counts and logs every execution."""

from __future__ import annotations

import asyncio
import logging
import sys
import traceback
from time import perf_counter, time
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from workit.status import ErrorInfo

if TYPE_CHECKING:
    from collections.abc import Callable

    from workit.handler._proxy import Proxy
    from workit.status import Outcome

__all__ = ["HandlerState", "Instrumented", "is_cancellation", "log"]

_DEBUG = logging.DEBUG


def is_cancellation(error: BaseException) -> bool:
    """Whether ``error`` cancels the running task (not one a handler raised itself).

    On asyncio a handler can raise ``CancelledError`` without being cancelled,
    say one that leaked from a task of its own: that is a failure, not a
    reason to end the handler's loop.
    """
    if isinstance(error, Exception):
        return False  # the cancellation exceptions of both backends are BaseExceptions
    try:
        cancelled = anyio.get_cancelled_exc_class()
    except RuntimeError:  # no event loop running: nothing to cancel
        return False
    if not isinstance(error, cancelled):
        return False
    if isinstance(error, asyncio.CancelledError):
        task = asyncio.current_task()
        return task is None or task.cancelling() > 0
    return True


_logging_failed = False


def log(logger: logging.Logger, level: int, message: str, *args: object, **kwargs: Any) -> None:
    """``logger.log()``, except that a broken logging set-up never breaks a worker.

    Whatever a handler, filter or formatter raises (cancellation aside) is
    contained; the first failure is written to stderr, once per process, and
    later ones are dropped (the metrics still count every execution).
    """
    global _logging_failed
    try:
        logger.log(level, message, *args, **kwargs)
    except BaseException as error:
        if is_cancellation(error):
            raise
        if not _logging_failed:
            _logging_failed = True
            sys.stderr.write("workit: logging failed, later failures are not reported:\n")
            traceback.print_exc()


class Filters(Protocol):
    """What decides about failures: the ``Registry`` an ``Instrumented`` reports to."""

    def ignores(self, error: BaseException) -> bool:
        """Whether ``error`` is control flow rather than a failure."""
        ...

    def metrics_failed(self, handler: str, error: BaseException) -> None:
        """Report that recording an execution of ``handler`` raised ``error``."""
        ...


class HandlerState:
    """What one handler is doing and has done; read by status snapshots.

    Times are ``time.time()`` values. Engines set ``active`` (the last answer
    of ``active()``) and ``next_run``; ``Instrumented`` sets the rest.
    """

    __slots__ = (
        "active",
        "cancelled",
        "consecutive_failures",
        "executions",
        "failures",
        "last_duration",
        "last_error",
        "last_finished",
        "last_outcome",
        "last_started",
        "last_success",
        "next_run",
        "running",
    )

    def __init__(self) -> None:
        self.active: bool | None = None
        self.running = False
        self.cancelled = False  # an execution was cancelled since the daemon started
        self.executions = 0
        self.failures = 0
        self.consecutive_failures = 0
        self.last_started: float | None = None
        self.last_finished: float | None = None
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self.last_outcome: Outcome | None = None
        self.last_error: ErrorInfo | None = None
        self.next_run: float | None = None


class Instrumented:
    """A handler whose every execution is timed, counted and logged.

    Built by ``Registry.wrap()``. ``execute()`` runs the handler once and
    returns the exception it raised (``None`` on success) instead of raising
    it, which is what the engines use; ``ensure()`` raises it, so the wrapper
    is itself a handler. An exception the registry's filter ignores counts as
    a success and is not logged as an error.
    """

    __slots__ = (
        "_filters",
        "_logger",
        "_record",
        "_run",
        "name",
        "proxy",
        "state",
    )

    def __init__(
        self,
        proxy: Proxy,
        *,
        record: Callable[[float, bool], None],
        filters: Filters,
        logger: logging.Logger,
    ) -> None:
        self.proxy = proxy
        self.name = proxy.name
        self._run = proxy.run
        self._record = record
        self._filters = filters
        self._logger = logger
        self.state = HandlerState()

    def unwrap(self) -> object:
        """The innermost handler."""
        return self.proxy.unwrap()

    def active(self) -> bool:
        """The handler's ``active()``."""
        return self.proxy.active()

    def cooler(self) -> float:
        """The handler's ``cooler()`` in seconds."""
        return self.proxy.cooler()

    def timeout(self) -> float | None:
        """The handler's ``timeout()`` in seconds."""
        return self.proxy.timeout()

    async def ensure(self) -> None:
        """Run the handler once, instrumented; raise what it raised."""
        error = await self.execute()
        if error is not None:
            raise error

    async def execute(self) -> BaseException | None:
        """Run the handler once, instrumented; return what it raised."""
        state = self.state
        state.running = True
        state.last_started = time()
        # perf_counter, not the event loop's clock: latency is the real
        # duration, and it is the cheapest clock on this hot path.
        start = perf_counter()
        try:
            await self._run()
        except BaseException as error:
            if is_cancellation(error):
                state.running = False
                state.cancelled = True
                raise
            self.report(error, perf_counter() - start)
            return error
        self.state.last_outcome = "success"
        self._finish(perf_counter() - start, True)
        return None

    def report(self, error: BaseException, latency: float | None = None) -> None:
        """Count and log ``error`` as a failed execution of this handler.

        Without ``latency`` the failure happened outside ``ensure()`` (in
        ``active()`` or ``cooler()``, say) and is recorded as taking no time.
        """
        if latency is None:
            self.state.last_started = time()
            latency = 0.0
        ignored = self._filters.ignores(error)
        if ignored:
            self.state.last_outcome = "ignored"
        else:
            log(
                self._logger,
                logging.ERROR,
                "worker execution failed",
                exc_info=error,
                extra={"handler": self.name},
            )
            state = self.state
            state.last_outcome = "failure"
            state.last_error = ErrorInfo.of(error)
            state.failures += 1
            state.consecutive_failures += 1
        self._finish(latency, ignored)

    def _finish(self, latency: float, success: bool) -> None:
        state = self.state
        state.running = False
        state.executions += 1
        state.last_finished = finished = time()
        state.last_duration = latency
        if success:
            state.consecutive_failures = 0
            state.last_success = finished
        try:
            self._record(latency, success)
        except BaseException as error:
            if is_cancellation(error):
                raise
            # A broken metrics backend must not break the handler.
            self._filters.metrics_failed(self.name, error)
        if self._logger.isEnabledFor(_DEBUG):
            log(
                self._logger,
                _DEBUG,
                "instrumented worker handler",
                extra={"handler": self.name, "latency": latency, "success": success},
            )

    def __repr__(self) -> str:
        return f"Instrumented({self.proxy.unwrap()!r})"
