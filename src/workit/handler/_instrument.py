"""``Instrumented``: one handler's life in an engine; where one execution happens.

An engine holds one ``Instrumented`` per handler and goes through it for
everything: ``decide()`` asks ``active()``, ``execute()`` runs the handler
once (timed, counted, logged, cancellable on its own, in an execution
context), ``plan()`` works out the wait before the next execution (cooler,
backoff), ``status()`` is the handler's record in a status snapshot.
"""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime
from random import random
from time import perf_counter, time
from typing import TYPE_CHECKING, Any, Protocol

import anyio

from workit._backend import current_task, is_cancellation, uncancel, withdraw
from workit._policy import contain, log
from workit.errors import LeaseLost
from workit.handler._execution import Execution, _executing
from workit.status import ErrorInfo, HandlerStatus, iso_json, timestamp

if TYPE_CHECKING:
    import asyncio
    from collections.abc import Callable

    from workit.backoff import Backoff
    from workit.handler._proxy import Proxy
    from workit.status import Outcome

__all__ = ["Instrumented"]

_DEBUG = logging.DEBUG
_ERROR = logging.ERROR
_WARNING = logging.WARNING

# How many outcomes ``recent`` keeps. Only the executions that were not a
# success are noted (with their number): a success costs nothing.
RECENT = 20
_CODES: tuple[Outcome, ...] = ("success", "ignored", "failure")
_SUCCESS, _IGNORED, _FAILURE = 1, 2, 3

# The wait after a cooler() that raised, when no earlier cooler() worked.
_FALLBACK_COOLER = 1.0


class Filters(Protocol):
    """What decides about failures: the ``Registry`` an ``Instrumented`` reports to."""

    def ignores(self, error: BaseException) -> bool:
        """Whether ``error`` is control flow rather than a failure."""
        ...

    def metrics_failed(self, handler: str, error: BaseException) -> None:
        """Report that recording an execution of ``handler`` raised ``error``."""
        ...


class Instrumented:
    """A handler whose every execution is timed, counted and logged.

    Built by ``Registry.wrap()``; an engine keeps one per handler for the
    handler's whole life in it. ``execute()`` runs the handler once and
    returns the exception it raised (``None`` on success) instead of raising
    it; ``ensure()`` raises it, so the wrapper is itself a handler. An
    exception the registry's filter ignores counts as a success and is not
    logged as an error. Executions never overlap: one that is asked for while
    another runs waits for it.

    The attributes after ``name`` are the handler's record, read by status
    snapshots and metrics; times are ``time.time()`` values.
    """

    __slots__ = (
        "_always_active",
        "_backoff",
        "_backoff_failed",
        "_backoff_wait",
        "_cancel_reason",
        "_cooler",
        "_error_json",
        "_filters",
        "_handle",
        "_idle",
        "_jitters",
        "_logger",
        "_misses",
        "_name_json",
        "_record",
        "_run",
        "_running",
        "cancelled",
        "claim",
        "consecutive_failures",
        "executions",
        "failures",
        "last_active",
        "last_duration",
        "last_error",
        "last_finished",
        "last_outcome",
        "last_started",
        "last_success",
        "name",
        "next_run",
        "owned",
        "proxy",
    )

    def __init__(
        self,
        proxy: Proxy,
        *,
        record: Callable[[float, bool], None],
        filters: Filters,
        logger: logging.Logger,
        backoff: Backoff | None = None,
    ) -> None:
        self.proxy: Proxy = proxy
        self.name: str = proxy.name
        self._run = proxy.run
        self._always_active = not proxy.has_active  # no active() to ask
        self._jitters = proxy.has_jitter
        self._record = record
        self._filters = filters
        self._logger = logger
        self._backoff = backoff
        self._backoff_wait = 0.0  # the backoff's wait after the last failure
        self._backoff_failed = False
        self._cooler: float | None = None  # the last cooler() that worked
        self._running = False
        self._idle: anyio.Event | None = None  # set when the running execution ends
        self._handle: asyncio.Task[Any] | anyio.CancelScope | None = None
        self._cancel_reason: BaseException | None = None
        self._misses: list[tuple[int, int]] | None = None  # (execution number, outcome)
        self._name_json = json.dumps(self.name)
        self._error_json: tuple[ErrorInfo, str] | None = None  # last_error, as JSON
        self.last_active: bool | None = None  # the last answer of active()
        self.cancelled: bool = False  # an execution was cancelled since the daemon started
        self.claim: object | None = None  # the fleet's claim, under leases
        # Whether this replica owns the handler, kept by the engine from the fleet's
        # events (None: never run under leases); read by the worker_lease_owned gauge.
        self.owned: bool | None = None
        self.executions: int = 0
        self.failures: int = 0
        self.consecutive_failures: int = 0
        self.last_started: float | None = None
        self.last_finished: float | None = None
        self.last_success: float | None = None
        self.last_duration: float | None = None
        self.last_outcome: Outcome | None = None
        self.last_error: ErrorInfo | None = None
        self.next_run: float | None = None

    # The handler protocol, so that the wrapper is itself a handler.

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

    # One round of an engine: decide, execute, plan.

    def decide(self) -> bool | BaseException:
        """Ask ``active()``: ``True`` or ``False``, or the exception when it could not answer.

        Both engines go by this one policy: a handler whose ``active()``
        raises, or answers something else than a bool, has failed this round
        (the failure is reported) and does not run; its status shows
        ``active: false``. The parallel engine asks again after the cooler;
        a pass of the sequence engine stops, as for any failure.
        """
        if self._always_active:
            self.last_active = True
            return True
        try:
            answer = self.proxy.active()
        except BaseException as error:
            contain(error)
            self.last_active = False
            self.report(error)
            return error
        self.last_active = answer
        return answer

    @property
    def running(self) -> bool:
        """Whether an execution is running, or a sync one's thread is past its timeout."""
        return self._running or self.proxy.overdue

    @property
    def overdue(self) -> bool:
        """Whether a sync execution reported at its timeout still runs in its thread."""
        return self.proxy.overdue

    async def execute(self) -> BaseException | None:
        """Run the handler once, instrumented; return what it raised.

        Only the engine's cancellation is raised (``_policy``). An execution
        cancelled by ``cancel()`` fails with the reason given there.
        """
        if self._running:
            await self._until_idle()
        binding = _executing.get()
        if binding is None or binding[0] is not self:
            # Once per task that runs executions of this handler (a parallel
            # loop runs them all in one): asyncio's current task is looked up
            # once, not per execution.
            binding = (self, current_task())
            _executing.set(binding)
        task = binding[1]
        if task is None:  # not on asyncio
            if self._handle is None:
                return await self._execute_in_scope()
        else:
            self._handle = task
        self._running = True
        self.last_started = time()
        # perf_counter, not the event loop's clock: latency is the real
        # duration, and it is the cheapest clock on this hot path.
        start = perf_counter()
        try:
            await self._run()
        except BaseException as error:
            reason = self._cancel_reason
            if reason is not None:
                if task is None and is_cancellation(error):
                    raise  # to the execution's own cancel scope, in _execute_in_scope()
                self._cancel_reason = None
                withdraw(task)
                if not is_cancellation(error):
                    error = reason  # cancel() cancelled the execution's task
            if is_cancellation(error):
                self._ended()
                self.cancelled = True
                raise
            uncancel(task)  # a cancellation the handler caused: a failure like others
            self.report(error, perf_counter() - start)
            return error
        if self._cancel_reason is not None:  # the handler swallowed cancel()'s cancellation
            self._cancel_reason = None
            withdraw(task)
        self.last_outcome = "success"
        self._finish(perf_counter() - start, True)
        return None

    async def _until_idle(self) -> None:
        while self._running:
            if self._idle is None:
                self._idle = anyio.Event()
            await self._idle.wait()

    async def _execute_in_scope(self) -> BaseException | None:
        """Off asyncio: the execution in a cancel scope, which ``cancel()`` cancels."""
        start = perf_counter()
        try:
            with anyio.CancelScope() as scope:
                self._handle = scope
                return await self.execute()
        except BaseException:
            if self._running:  # cancelled from outside while cancel() was under way
                self._ended()
                self.cancelled = True
            raise
        finally:
            self._handle = None
        # Only cancel() cancels this scope, and it has left a reason.
        reason = self._cancel_reason or RuntimeError("execution cancelled")
        self._cancel_reason = None
        self.report(reason, perf_counter() - start)
        return reason

    def cancel(self, reason: BaseException) -> bool:
        """Cancel the running execution, if any: it fails with ``reason``.

        Whether an execution was running. Nothing else is cancelled: not the
        engine, not the handler's loop, not another handler.
        """
        handle = self._handle
        if not self._running or handle is None:
            return False
        self._cancel_reason = reason
        handle.cancel()
        return True

    def plan(self) -> float:
        """Seconds to wait before the next execution: the cooler, or the backoff's wait.

        The cooler varies by up to the handler's ``jitter`` either way. An
        exception from ``cooler()`` or ``jitter()``, or a bad value, is
        reported as a failed execution; the last cooler that worked applies
        then (1 s if none did). Sets ``next_run``.
        """
        try:
            self._cooler = cooler = self.proxy.cooler()
            if self._jitters:
                cooler *= 1.0 + self.proxy.jitter() * (2.0 * random() - 1.0)
        except BaseException as error:
            contain(error)
            self.report(error)
            cooler = _FALLBACK_COOLER if self._cooler is None else self._cooler
        pause = cooler
        if self._backoff is not None and self.consecutive_failures:
            pause = max(cooler, self._backoff_wait)
        self.next_run = time() + pause
        return pause

    # Accounting.

    def report(self, error: BaseException, latency: float | None = None) -> None:
        """Count and log ``error`` as a failed execution of this handler.

        Without ``latency`` the failure happened outside ``ensure()`` (in
        ``active()`` or ``cooler()``, say) and is recorded as taking no time.
        """
        if latency is None:
            self.last_started = time()
            latency = 0.0
        if self._filters.ignores(error):
            self.last_outcome = "ignored"
            self._finish(latency, True)
            self._missed(_IGNORED)
            return
        self.last_outcome = "failure"
        self.last_error = ErrorInfo.of(error)
        self.failures += 1
        self.consecutive_failures += 1
        self._log_failure(error)
        self._finish(latency, False)
        self._missed(_FAILURE)

    def _log_failure(self, error: BaseException) -> None:
        # An execution cut short by a lost lease is a warning without a traceback: the
        # fleet logs the outage behind it once, as an error (not one per handler).
        level, cause = (_WARNING, None) if isinstance(error, LeaseLost) else (_ERROR, error)
        wait = self._backoff_delay()
        if wait is None:
            log(
                self._logger,
                level,
                "worker execution failed: handler %r",
                self.name,
                exc_info=cause,
                extra={"handler": self.name},
            )
            return
        log(
            self._logger,
            level,
            "worker execution failed: handler %r, %s in a row; backing off %.3g s",
            self.name,
            "1 failure"
            if self.consecutive_failures == 1
            else f"{self.consecutive_failures} failures",
            wait,
            exc_info=cause,
            extra={
                "handler": self.name,
                "consecutive_failures": self.consecutive_failures,
                "backoff": wait,
            },
        )

    def _backoff_delay(self) -> float | None:
        """The backoff's wait after this failure, when it is longer than the cooler."""
        backoff = self._backoff
        if backoff is None:
            return None
        try:
            wait = self._backoff_wait = backoff.delay(self.consecutive_failures)
        except BaseException as error:  # a random source that raises, say
            contain(error)
            wait = self._backoff_wait = backoff.maximum
            if not self._backoff_failed:
                self._backoff_failed = True  # reported once per handler
                log(
                    self._logger,
                    _ERROR,
                    "worker backoff failed: handler %r waits the maximum, %.3g s",
                    self.name,
                    wait,
                    exc_info=error,
                    extra={"handler": self.name},
                )
        return wait if wait > self.known_cooler() else None

    def known_cooler(self) -> float:
        """The last cooler that worked, or the handler's cooler now when none was read yet."""
        if self._cooler is None:
            try:
                self._cooler = self.proxy.cooler()
            except BaseException as error:
                contain(error)
                return 0.0  # plan() reports it
        return self._cooler

    def _finish(self, latency: float, success: bool) -> None:
        self._running = False
        if self._idle is not None:
            self._wake_waiting()
        self.executions += 1
        self.last_duration = latency
        # The start on the wall clock plus the real duration: one clock read less.
        self.last_finished = finished = self.last_started + latency  # type: ignore[operator]  # set at start
        if success:
            self.consecutive_failures = 0
            self.last_success = finished
        try:
            self._record(latency, success)
        except BaseException as error:
            contain(error)
            # A broken metrics backend must not break the handler.
            self._filters.metrics_failed(self.name, error)
        if self._logger.isEnabledFor(_DEBUG):
            log(
                self._logger,
                _DEBUG,
                "instrumented worker handler",
                extra={"handler": self.name, "latency": latency, "success": success},
            )

    def _missed(self, outcome: int) -> None:
        """Note the execution just finished as not a success, for ``recent``."""
        misses = self._misses
        if misses is None:
            misses = self._misses = []
        misses.append((self.executions, outcome))
        if len(misses) > RECENT:
            del misses[0]

    def _ended(self) -> None:
        self._running = False
        if self._idle is not None:
            self._wake_waiting()

    def _wake_waiting(self) -> None:
        """Let the executions waiting for this one's end go on."""
        idle = self._idle
        if idle is not None:
            self._idle = None
            idle.set()

    # What is read about the handler.

    def execution(self) -> Execution | None:
        """The running execution, for ``workit.handler.current()``; ``None`` between them."""
        if not self._running or self.last_started is None:
            return None
        return Execution(
            handler=self.name,
            attempt=self.consecutive_failures + 1,
            started=datetime.fromtimestamp(self.last_started, UTC),
            claim=self.claim,
            _source=self,
        )

    @property
    def recent(self) -> tuple[Outcome, ...]:
        """The outcomes of the last executions (up to ``RECENT``), oldest first."""
        misses = dict(self._misses or ())
        numbers = range(max(1, self.executions - RECENT + 1), self.executions + 1)
        return tuple(_CODES[misses.get(number, _SUCCESS) - 1] for number in numbers)

    def status(
        self, engine: str, next_run: float | None, *, owner: str | None = None, owned: bool = False
    ) -> HandlerStatus:
        """The handler's record in a status snapshot of ``engine``; under leases, the
        handler's ``owner`` as last seen and whether this replica ``owned`` it."""
        return HandlerStatus(
            name=self.name,
            engine=engine,  # type: ignore[arg-type]  # the engines' kinds
            active=self.last_active,
            running=self.running,
            overdue=self.overdue,
            executions=self.executions,
            failures=self.failures,
            consecutive_failures=self.consecutive_failures,
            last_started=timestamp(self.last_started),
            last_finished=timestamp(self.last_finished),
            last_success=timestamp(self.last_success),
            last_duration=self.last_duration,
            last_outcome=self.last_outcome,
            last_error=self.last_error,
            next_run=timestamp(next_run),
            recent=self.recent,
            owner=owner,
            owned=owned,
        )

    def status_json(
        self, engine: str, next_run: float | None, *, owner: str | None = None, owned: bool = False
    ) -> str:
        """``status(...).to_dict()`` as JSON text, written directly from the record.

        Equal, once parsed, to ``json.dumps()`` of the dict, at a fraction of
        the cost (no snapshot objects, no datetimes, no dict): with 10,000
        handlers a ``/status`` request would otherwise hold the event loop
        for a quarter of a second.
        """
        error = self.last_error
        if error is None:
            error_json = "null"
        elif self._error_json is not None and self._error_json[0] is error:
            error_json = self._error_json[1]
        else:
            error_json = json.dumps(error.to_dict(), separators=(",", ":"))
            self._error_json = (error, error_json)
        if self._misses is None:
            recent = _SUCCESSES[min(self.executions, RECENT)]
        else:
            recent = "[" + ",".join(f'"{outcome}"' for outcome in self.recent) + "]"
        duration = "null" if self.last_duration is None else repr(self.last_duration)
        outcome = "null" if self.last_outcome is None else f'"{self.last_outcome}"'
        owner_json = "null" if owner is None else json.dumps(owner)
        return (
            f'{{"name":{self._name_json},"engine":"{engine}",'
            f'"active":{_JSON[self.last_active]},"running":{_JSON[self.running]},'
            f'"overdue":{_JSON[self.overdue]},"executions":{self.executions},'
            f'"failures":{self.failures},"consecutive_failures":{self.consecutive_failures},'
            f'"last_started":{iso_json(self.last_started)},'
            f'"last_finished":{iso_json(self.last_finished)},'
            f'"last_success":{iso_json(self.last_success)},'
            f'"last_duration":{duration},"last_outcome":{outcome},'
            f'"last_error":{error_json},"next_run":{iso_json(next_run)},"recent":{recent},'
            f'"owner":{owner_json},"owned":{_JSON[owned]}}}'
        )

    def __repr__(self) -> str:
        return f"Instrumented({self.proxy.unwrap()!r})"


_JSON = {True: "true", False: "false", None: "null"}
# The recent outcomes of a handler that never failed: n successes.
_SUCCESSES = ["[" + ",".join(['"success"'] * count) + "]" for count in range(RECENT + 1)]
