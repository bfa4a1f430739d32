"""``Proxy``: one uniform face for any handler object."""

from __future__ import annotations

import inspect
import math
import threading
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import anyio.lowlevel
import anyio.to_thread

from workit import _threads
from workit._duration import seconds
from workit.errors import HandlerTimeout
from workit.handler._name import UNWRAP_DEPTH, read
from workit.handler._name import name as handler_name

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

__all__ = ["Proxy", "check_fraction", "never_runs", "not_plain"]


def _is_async(function: Callable[..., object]) -> bool:
    if inspect.iscoroutinefunction(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004  # objects with an async __call__
    return call is not None and inspect.iscoroutinefunction(call)


def _has(test: Callable[[object], bool], function: object) -> bool:
    """``test(function)``, or of its ``__call__`` for a callable object."""
    if test(function):
        return True
    call = getattr(function, "__call__", None)  # noqa: B004  # callable objects
    return call is not None and test(call)


def _required(function: Callable[..., object]) -> list[str]:
    """The parameters ``function`` cannot be called without; none when its
    signature cannot be read (some builtins), since then nothing is known."""
    try:
        parameters = inspect.signature(function).parameters.values()
    except Exception:
        return []
    return [
        parameter.name
        for parameter in parameters
        if parameter.default is parameter.empty
        and parameter.kind not in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD)
    ]


def never_runs(ensure: Callable[..., object]) -> str | None:
    """Why calling ``ensure()`` once per execution could not run it, or ``None``."""
    if _has(inspect.isasyncgenfunction, ensure):
        return (
            "ensure() is an async generator function (it contains `yield`), so calling it "
            "never runs its body; remove the `yield`"
        )
    if _has(inspect.isgeneratorfunction, ensure):
        return (
            "ensure() is a generator function (it contains `yield`), so calling it never runs "
            "its body; remove the `yield`"
        )
    required = _required(ensure)
    if required:
        return (
            f"ensure() cannot be called without arguments: it needs "
            f"{', '.join(map(repr, required))}; give "
            f"{'it a default' if len(required) == 1 else 'them defaults'} "
            "or bind them with functools.partial"
        )
    return None


def not_plain(part: str, method: Callable[..., object]) -> str | None:
    """Why ``method`` cannot be a handler's ``part`` (``active``, ``cooler``, ...), or ``None``.

    These are asked synchronously, before or after every execution: a
    coroutine function would answer with a coroutine, never awaited.
    """
    if _is_async(method) or _has(inspect.isasyncgenfunction, method):
        return (
            f"{part}() is a coroutine function, but {part} is asked synchronously; "
            f"make it a plain `def` (it runs on the event loop: keep it quick) or an attribute"
        )
    required = _required(method)
    if required:
        return (
            f"{part}() cannot be called without arguments: it needs "
            f"{', '.join(map(repr, required))}"
        )
    return None


def check_fraction(value: object, what: str) -> float:
    """``value`` as a float from 0 to 1, or an error naming ``what``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{what} must be a fraction from 0 to 1 (int or float), got {value!r}")
    try:
        result = float(value)
    except OverflowError:  # an int too large for a float
        result = math.inf
    if 0.0 <= result <= 1.0:  # NaN is neither
        return result
    raise ValueError(f"{what} must be a fraction from 0 to 1, got {result!r}")


def _shown(handler: object) -> str:
    """``repr(handler)``, or a stand-in when its ``__repr__`` is broken."""
    try:
        return repr(handler)
    except Exception:
        return f"<{type(handler).__qualname__} object>"


class _ThreadRun:
    """One execution of a sync ``ensure`` in a worker thread.

    The loop may give up on it (at a timeout, or when cancelled) before the
    thread has even started it: ``abandon()`` then makes sure it never
    starts, and tells whether a thread is still running it, which the next
    execution must wait for.
    """

    __slots__ = ("_abandoned", "_function", "_lock", "_name", "_thread", "finished")

    def __init__(self, function: Callable[[], object], name: str) -> None:
        self._function = function
        self._name = name
        self._lock = threading.Lock()
        self._abandoned = False
        self._thread: threading.Thread | None = None
        self.finished = threading.Event()

    def __call__(self) -> BaseException | None:
        """Run the function, in the worker thread; return what it raised that
        is not an ``Exception``, which the loop raises itself."""
        with self._lock:
            if self._abandoned:
                return None
            self._thread = threading.current_thread()
        try:
            result = self._function()
            if inspect.isawaitable(result):
                if inspect.iscoroutine(result):
                    result.close()  # never awaited: close it to avoid a RuntimeWarning
                raise TypeError(
                    f"handler {self._name!r}: ensure() returned an awaitable from a plain "
                    "function; declare it `async def` so it runs on the event loop"
                )
        except Exception:
            raise
        except BaseException as error:
            # asyncio would throw it into the awaiting coroutine, and a thrown
            # GeneratorExit closes the whole chain instead of arriving as an error.
            return error
        finally:
            with self._lock:
                self.finished.set()
                if self._abandoned:
                    _threads.returned(threading.current_thread())
        return None

    def abandon(self) -> bool:
        """Give up on the run; whether its thread is still running the function."""
        with self._lock:
            self._abandoned = True
            if self._thread is None or self.finished.is_set():
                return False
            _threads.abandoned(self._thread)
            return True


def _text(name: str) -> str:
    """``name``, with any character UTF-8 cannot encode (a lone surrogate from a file
    name, say) as a backslash escape: it labels metrics and is served as JSON."""
    if name.isascii():
        return name
    return name.encode("utf-8", "backslashreplace").decode("utf-8")


def _check_bool(value: object, what: str) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be a bool, got {value!r}")
    return value


# How a handler declares an optional part (small ints: no object per handler).
_ABSENT, _ATTRIBUTE, _METHOD = 0, 1, 2
_T = TypeVar("_T")
_UNSET = object()


class Proxy:
    """Normalises any handler: the optional parts get their defaults.

    ``active()`` defaults to ``True``, ``cooler()`` to ``0.0``, ``timeout()``
    to ``None``, ``jitter()`` to ``0.0``; each may be declared on the handler
    as an attribute or as a plain method, durations in seconds or as a
    ``timedelta``. ``ensure()`` is always a coroutine: a sync ``ensure`` runs
    in a worker thread of its own, so a blocked handler never holds up the
    event loop or another handler.

    Declared attribute values are checked here, once, so a bad value fails at
    construction; values returned by methods are checked on every call. What
    can never work is refused here too, with a ``TypeError`` naming the
    handler and the fix: a class instead of an instance, an ``ensure`` that
    is not callable, needs arguments or is a generator function, an
    optional part that is a coroutine function or that raises when read.
    """

    __slots__ = (
        "_active",
        "_cooler",
        "_cooler_given",
        "_cooler_seconds",
        "_ensure",
        "_handler",
        "_is_async",
        "_jitter",
        "_limiter",
        "_limiter_loop",
        "_straggler",
        "_timeout",
        "name",
    )

    def __init__(self, handler: object) -> None:
        if handler is None:
            raise TypeError("handler is None")
        ensure = read(handler, "ensure", f"{type(handler).__qualname__} handler")
        if ensure is None:
            raise TypeError(f"{_shown(handler)} is not a handler: it has no ensure() method")
        if isinstance(handler, type) and callable(ensure) and _required(ensure):
            raise TypeError(
                f"{handler.__qualname__} is a class; pass an instance: {handler.__name__}()"
            )
        self._handler = handler
        self.name: str = _text(handler_name(handler))
        if not callable(ensure):
            raise TypeError(
                f"handler {self.name!r}: ensure is not callable: {type(ensure).__name__}; "
                "a handler needs an ensure() method"
            )
        problem = never_runs(ensure)
        if problem is not None:
            raise TypeError(f"handler {self.name!r}: {problem}")
        self._ensure: Callable[[], Any] = ensure
        self._is_async = _is_async(ensure)
        self._active = self._declared("active", _check_bool)
        self._cooler = self._declared("cooler", seconds)
        self._cooler_given: object = _UNSET
        self._cooler_seconds = 0.0
        self._timeout = self._declared("timeout", seconds)
        self._jitter = self._declared("jitter", check_fraction)
        self._limiter: anyio.CapacityLimiter | None = None
        self._limiter_loop: object = None
        # A sync execution given up on while its thread still runs; the next
        # execution waits for it, so a handler never runs twice at once.
        self._straggler: _ThreadRun | None = None

    def _declared(self, part: str, check: Callable[[object, str], object]) -> int:
        """How the handler declares ``part``: _ABSENT, _ATTRIBUTE or _METHOD.

        An attribute's value is checked now, so a bad one fails at
        construction; it is read again on every call, so it may change. A
        method is checked for what can be known without calling it.
        """
        value = read(self._handler, part, f"handler {self.name!r}")
        if value is None:
            return _ABSENT
        if callable(value):
            problem = not_plain(part, value)
            if problem is not None:
                raise TypeError(f"handler {self.name!r}: {problem}")
            return _METHOD
        self._check(check, value, part)
        return _ATTRIBUTE

    def _get(self, part: str, how: int) -> object:
        value = getattr(self._handler, part)
        return value() if how == _METHOD else value

    def _check(self, check: Callable[[object, str], _T], value: object, part: str) -> _T:
        try:
            return check(value, part)
        except (TypeError, ValueError) as error:
            raise type(error)(f"handler {self.name!r}: {error}") from None
        except OverflowError:  # a duration in an int too large for a float
            raise ValueError(
                f"handler {self.name!r}: {part} is too large a number; "
                "use math.inf for a duration without end"
            ) from None

    @property
    def has_cooler(self) -> bool:
        """Whether the handler declares a ``cooler``."""
        return self._cooler != _ABSENT

    @property
    def has_jitter(self) -> bool:
        """Whether the handler declares ``jitter`` (else its coolers never vary)."""
        return self._jitter != _ABSENT

    @property
    def has_active(self) -> bool:
        """Whether the handler declares ``active`` (else it is always active)."""
        return self._active != _ABSENT

    @property
    def overdue(self) -> bool:
        """Whether a sync execution given up on at its timeout still runs in its thread."""
        straggler = self._straggler
        return straggler is not None and not straggler.finished.is_set()

    @property
    def is_async(self) -> bool:
        """Whether ``ensure`` runs on the event loop (else in a worker thread)."""
        return self._is_async

    def unwrap(self) -> object:
        """The innermost handler: follows ``unwrap()`` of wrapped handlers.

        A chain of more than ``UNWRAP_DEPTH`` wrappers is taken for an object
        whose ``unwrap()`` makes new objects without end (a mock): its
        innermost handler is the handler itself.
        """
        handler = self._handler
        seen = {id(self)}
        chain = []  # alive while walked, so that no id in ``seen`` is reused meanwhile
        for _ in range(UNWRAP_DEPTH):
            if id(handler) in seen:
                return handler
            unwrap = getattr(handler, "unwrap", None)
            if not callable(unwrap):
                return handler
            seen.add(id(handler))
            chain.append(handler)
            handler = unwrap()
        return self._handler

    def active(self) -> bool:
        """Whether the next execution should run."""
        if self._active == _ABSENT:
            return True
        value = self._get("active", self._active)
        if value is True or value is False:
            return value
        return self._check(_check_bool, value, "active")

    def cooler(self) -> float:
        """Seconds to sleep after an execution ends, before the next one."""
        how = self._cooler
        if how == _ABSENT:
            return 0.0
        value = getattr(self._handler, "cooler")  # noqa: B009  # named like the other parts
        if how == _METHOD:
            value = value()
        if value is not self._cooler_given:  # the same object as last time needs no check
            self._cooler_seconds = self._check(seconds, value, "cooler")
            self._cooler_given = value
        return self._cooler_seconds

    def timeout(self) -> float | None:
        """The most seconds one execution may take, or ``None`` for no limit."""
        if self._timeout == _ABSENT:
            return None
        value = self._get("timeout", self._timeout)
        return None if value is None else self._check(seconds, value, "timeout")

    def jitter(self) -> float:
        """The share of each cooler, from 0 to 1, by which it may vary at random.

        The parallel engine shortens or lengthens each cooler by a random
        share of up to ``jitter`` (with 0.2 it waits between 80 % and 120 %
        of it), so that handlers started together drift apart instead of
        waking in lock-step. Default 0.0.
        """
        if self._jitter == _ABSENT:
            return 0.0
        value = self._get("jitter", self._jitter)
        if type(value) is float and 0.0 <= value <= 1.0:
            return value
        return self._check(check_fraction, value, "jitter")

    @property
    def run(self) -> Callable[[], Awaitable[object]]:
        """The cheapest way to run ``ensure()`` once: the handler's own coroutine
        function when nothing needs wrapping, else ``Proxy.ensure``."""
        if self._is_async and self._timeout == _ABSENT:
            return self._ensure
        return self.ensure

    async def ensure(self) -> None:
        """Run the handler once; ``HandlerTimeout`` past its ``timeout``."""
        if not self._is_async:
            await self._ensure_in_thread()
            return
        timeout = None if self._timeout == _ABSENT else self.timeout()
        if timeout is None:
            await self._ensure()
            return
        with anyio.move_on_after(timeout) as scope:
            await self._ensure()
        if scope.cancelled_caught:
            raise HandlerTimeout(self.name, timeout)

    async def _ensure_in_thread(self) -> None:
        loop = anyio.lowlevel.current_token().native_token
        if self._limiter is None or self._limiter_loop is not loop:
            # One token per handler: no shared pool that hung handlers could exhaust.
            # A limiter serves one event loop: a worker run under asyncio, then
            # under trio (tests over both backends), needs a new one.
            self._limiter, self._limiter_loop = anyio.CapacityLimiter(1), loop
        straggler = self._straggler
        if straggler is not None:
            if not straggler.finished.is_set():
                await anyio.to_thread.run_sync(
                    straggler.finished.wait, abandon_on_cancel=True, limiter=self._limiter
                )
            self._straggler = None
        timeout = self.timeout()
        run = _ThreadRun(self._ensure, self.name)
        raised = None
        try:
            with anyio.move_on_after(timeout) as scope:
                raised = await anyio.to_thread.run_sync(
                    run, abandon_on_cancel=True, limiter=self._limiter
                )
        finally:
            if not run.finished.is_set() and run.abandon():
                self._straggler = run  # the next execution waits for its thread
        if scope.cancelled_caught:
            raise HandlerTimeout(self.name, timeout)
        if raised is not None:
            raise raised

    def __repr__(self) -> str:
        return f"Proxy({self._handler!r})"
