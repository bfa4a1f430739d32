"""``Proxy``: one uniform face for any handler object."""

from __future__ import annotations

import functools
import inspect
import threading
from typing import TYPE_CHECKING, Any

import anyio
import anyio.to_thread

from workit._duration import seconds
from workit.errors import HandlerTimeout
from workit.handler._name import name as handler_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Proxy"]


def _is_async(function: Callable[..., object]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004  # objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _run_and_flag(function: Callable[[], object], finished: threading.Event, name: str) -> None:
    """Run a sync ``ensure`` in its worker thread; flag when the thread is done."""
    try:
        result = function()
        if inspect.isawaitable(result):
            if inspect.iscoroutine(result):
                result.close()  # never awaited: close it to avoid a RuntimeWarning
            raise TypeError(
                f"handler {name!r}: ensure() returned an awaitable from a plain "
                "function; declare it `async def` so it runs on the event loop"
            )
    finally:
        finished.set()


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {value!r}")
    return value


_OPTIONAL = ("active", "cooler", "timeout")


class Proxy:
    """Normalises any handler: the optional parts get their defaults.

    ``active()`` defaults to ``True``, ``cooler()`` to ``0.0``, ``timeout()``
    to ``None``; each may be declared on the handler as an attribute or as a
    method, in seconds or as a ``timedelta``. ``ensure()`` is always a
    coroutine: a sync ``ensure`` runs in a worker thread of its own, so a
    blocked handler never holds up the event loop or another handler.

    Declared attribute values are checked here, once, so a bad value fails at
    construction; values returned by methods are checked on every call.
    """

    __slots__ = (
        "_active",
        "_cooler",
        "_cooler_given",
        "_cooler_seconds",
        "_ensure",
        "_handler",
        "_is_async",
        "_labels",
        "_limiter",
        "_straggler",
        "_timeout",
        "name",
    )

    def __init__(self, handler: object) -> None:
        if handler is None:
            raise TypeError("handler is None")
        ensure = getattr(handler, "ensure", None)
        if not callable(ensure):
            raise TypeError(f"{handler!r} is not a handler: it has no ensure() method")
        self._handler = handler
        self.name = handler_name(handler)
        # What error messages call the optional parts, made once, off the hot path.
        self._labels = tuple(f"handler {self.name!r}: {part}" for part in _OPTIONAL)
        self._ensure: Callable[[], Any] = ensure
        self._is_async = _is_async(ensure)
        self._active = self._getter("active", _check_bool)
        self._cooler = self._getter("cooler", seconds)
        self._cooler_given: object = None
        self._cooler_seconds = 0.0
        self._timeout = self._getter("timeout", seconds)
        self._limiter: anyio.CapacityLimiter | None = None
        # Set while a sync execution's thread may still be running; the next
        # execution waits for it, so a handler never runs twice at once.
        self._straggler: threading.Event | None = None

    def _getter(
        self, attribute: str, check: Callable[[object, str], object]
    ) -> Callable[[], Any] | None:
        value = getattr(self._handler, attribute, None)
        if value is None:
            return None
        if callable(value):
            return value  # type: ignore[no-any-return]  # a method, asked on every call
        check(value, f"handler {self.name!r}: {attribute}")
        # An attribute is read again on every call, so it may be changed at run time.
        return functools.partial(getattr, self._handler, attribute)

    @property
    def has_cooler(self) -> bool:
        """Whether the handler declares a ``cooler``."""
        return self._cooler is not None

    @property
    def is_async(self) -> bool:
        """Whether ``ensure`` runs on the event loop (else in a worker thread)."""
        return self._is_async

    def unwrap(self) -> object:
        """The innermost handler: follows ``unwrap()`` of wrapped handlers."""
        handler = self._handler
        seen = {id(self)}
        while id(handler) not in seen:
            unwrap = getattr(handler, "unwrap", None)
            if not callable(unwrap):
                break
            seen.add(id(handler))
            handler = unwrap()
        return handler

    def active(self) -> bool:
        """Whether the next execution should run."""
        get = self._active
        if get is None:
            return True
        value = get()
        if value is True or value is False:
            return value
        return _check_bool(value, self._labels[0])

    def cooler(self) -> float:
        """Seconds to sleep after an execution ends, before the next one."""
        get = self._cooler
        if get is None:
            return 0.0
        value = get()
        if value is not self._cooler_given:  # the same object as last time needs no check
            self._cooler_seconds = seconds(value, self._labels[1])
            self._cooler_given = value
        return self._cooler_seconds

    def timeout(self) -> float | None:
        """The most seconds one execution may take, or ``None`` for no limit."""
        get = self._timeout
        if get is None:
            return None
        value = get()
        return None if value is None else seconds(value, self._labels[2])

    @property
    def run(self) -> Callable[[], Awaitable[object]]:
        """The cheapest way to run ``ensure()`` once: the handler's own coroutine
        function when nothing needs wrapping, else ``Proxy.ensure``."""
        if self._is_async and self._timeout is None:
            return self._ensure
        return self.ensure

    async def ensure(self) -> None:
        """Run the handler once; ``HandlerTimeout`` past its ``timeout``."""
        if not self._is_async:
            await self._ensure_in_thread()
            return
        timeout = None if self._timeout is None else self.timeout()
        if timeout is None:
            await self._ensure()
            return
        with anyio.move_on_after(timeout) as scope:
            await self._ensure()
        if scope.cancelled_caught:
            raise HandlerTimeout(self.name, timeout)

    async def _ensure_in_thread(self) -> None:
        if self._limiter is None:
            # One token per handler: no shared pool that hung handlers could exhaust.
            self._limiter = anyio.CapacityLimiter(1)
        straggler = self._straggler
        if straggler is not None and not straggler.is_set():
            await anyio.to_thread.run_sync(
                straggler.wait, abandon_on_cancel=True, limiter=self._limiter
            )
        timeout = self.timeout()
        finished = threading.Event()
        self._straggler = finished
        with anyio.move_on_after(timeout) as scope:
            await anyio.to_thread.run_sync(
                _run_and_flag,
                self._ensure,
                finished,
                self.name,
                abandon_on_cancel=True,
                limiter=self._limiter,
            )
        if scope.cancelled_caught:
            raise HandlerTimeout(self.name, timeout)

    def __repr__(self) -> str:
        return f"Proxy({self._handler!r})"
