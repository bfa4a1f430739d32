"""``Instrumented``: the wrapper that times, counts and logs every execution."""

from __future__ import annotations

import logging
from time import perf_counter
from typing import TYPE_CHECKING

import anyio

if TYPE_CHECKING:
    from collections.abc import Callable

    from workit.handler._proxy import Proxy

__all__ = ["Instrumented"]

_DEBUG = logging.DEBUG


class Instrumented:
    """A handler whose every execution is timed, counted and logged.

    Built by ``Registry.wrap()``. ``execute()`` runs the handler once and
    returns the exception it raised (``None`` on success) instead of raising
    it, which is what the engines use; ``ensure()`` raises it, so the wrapper
    is itself a handler. An exception the ``ignores`` filter matches counts as
    a success and is not logged as an error.
    """

    __slots__ = ("_ignores", "_logger", "_record", "_warned", "name", "proxy")

    def __init__(
        self,
        proxy: Proxy,
        *,
        record: Callable[[float, bool], None],
        ignores: Callable[[BaseException], bool],
        logger: logging.Logger,
    ) -> None:
        self.proxy = proxy
        self.name = proxy.name
        self._record = record
        self._ignores = ignores
        self._logger = logger
        self._warned = False

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
        start = perf_counter()
        try:
            await self.proxy.ensure()
        except BaseException as error:
            if isinstance(error, anyio.get_cancelled_exc_class()):
                raise
            self.report(error, perf_counter() - start)
            return error
        self._finish(perf_counter() - start, True)
        return None

    def report(self, error: BaseException, latency: float = 0.0) -> None:
        """Count and log ``error`` as a failed execution of this handler."""
        success = self._ignores(error)
        if not success:
            self._logger.error(
                "worker execution failed", exc_info=error, extra={"handler": self.name}
            )
        self._finish(latency, success)

    def _finish(self, latency: float, success: bool) -> None:
        try:
            self._record(latency, success)
        except Exception:
            # A broken metrics backend must not break the handler: say so once.
            if not self._warned:
                self._warned = True
                self._logger.exception(
                    "worker metrics recording failed", extra={"handler": self.name}
                )
        if self._logger.isEnabledFor(_DEBUG):
            self._logger.debug(
                "instrumented worker handler",
                extra={"handler": self.name, "latency": latency, "success": success},
            )

    def __repr__(self) -> str:
        return f"Instrumented({self.proxy.unwrap()!r})"
