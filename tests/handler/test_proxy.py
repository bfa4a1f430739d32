"""``workit.handler.Proxy``: defaults, declared settings, execution, timeouts."""

from __future__ import annotations

import functools
import gc
import inspect
import math
import threading
import time
import warnings
from datetime import timedelta
from typing import TYPE_CHECKING, Any
from unittest.mock import MagicMock

import anyio
import anyio.lowlevel
import anyio.to_thread
import pytest

import workit
from tests.support import fake_clock
from workit import HandlerTimeout
from workit.handler import Proxy

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Coroutine, Iterator

NAME = "misconfigured_job"


def _ensure_nothing(self: object) -> None:
    """An ``ensure`` for handler classes built with ``type()``."""


def declaring(attribute: str, value: object, *, as_method: bool = False) -> object:
    """A handler named ``NAME`` declaring ``attribute`` as ``value`` (or a method returning it)."""

    def method(self: object) -> object:
        return value

    namespace = {"name": NAME, "ensure": _ensure_nothing, attribute: method if as_method else value}
    handler: object = type("Declaring", (), namespace)()
    return handler


async def wait_set(event: threading.Event) -> None:
    """Wait in a thread of its own until ``event`` is set; the caller bounds the wait."""
    await anyio.to_thread.run_sync(event.wait, abandon_on_cancel=True)


class Bare:
    """A handler with nothing but ``ensure``."""

    def ensure(self) -> None:
        """Do nothing."""


class Settable:
    """A handler whose settings are instance attributes, changed by the test."""

    def __init__(self) -> None:
        self.cooler: object = 1
        self.timeout: object = 1
        self.active: object = True

    def ensure(self) -> None:
        """Do nothing."""


class Wrapper:
    """A wrapper: a handler with ``unwrap()``."""

    def __init__(self, inner: object) -> None:
        self.inner = inner

    def unwrap(self) -> object:
        """The wrapped handler."""
        return self.inner

    def ensure(self) -> None:
        """Do nothing."""


class ThreadRecorder:
    """A sync handler recording the thread its ``ensure`` ran in."""

    def __init__(self) -> None:
        self.thread: int | None = None

    def ensure(self) -> None:
        """Record the current thread."""
        self.thread = threading.get_ident()


class AsyncThreadRecorder:
    """An async handler recording the thread its ``ensure`` ran in."""

    def __init__(self) -> None:
        self.thread: int | None = None

    async def ensure(self) -> None:
        """Record the current thread."""
        self.thread = threading.get_ident()


class Blocking:
    """A sync handler whose ``ensure`` blocks until ``release`` is set (5 s at most)."""

    name = "blocking"

    def __init__(self, timeout: float | None = None) -> None:
        self.timeout = timeout
        self.started = threading.Event()
        self.release = threading.Event()
        self.returned = threading.Event()
        self.released: bool | None = None

    def ensure(self) -> None:
        """Block until released."""
        self.started.set()
        try:
            self.released = self.release.wait(5)
        finally:
            self.returned.set()


class Straggler:
    """A sync handler whose first execution blocks until ``release``; counts executions."""

    name = "straggler"
    timeout = 0.02

    def __init__(self) -> None:
        self.release = threading.Event()
        self.first_returned = threading.Event()
        self.started = 0
        self.finished = 0
        self.running = 0
        self.most_running = 0
        self._lock = threading.Lock()

    def ensure(self) -> None:
        """Count this execution; block if it is the first."""
        with self._lock:
            self.started += 1
            first = self.started == 1
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            if first:
                self.release.wait(5)
        finally:
            with self._lock:
                self.running -= 1
                self.finished += 1
            if first:
                self.first_returned.set()


class Sleeper:
    """An async handler sleeping ``duration`` seconds, noting whether it was cancelled."""

    name = "sleeper"

    def __init__(self, duration: float, timeout: object = 10) -> None:
        self.duration = duration
        self.timeout = timeout
        self.cancelled = False
        self.completed = False

    async def ensure(self) -> None:
        """Sleep, noting cancellation."""
        try:
            await anyio.sleep(self.duration)
        except anyio.get_cancelled_exc_class():
            self.cancelled = True
            raise
        self.completed = True


def test_active_defaults_to_true() -> None:
    """A handler without ``active`` is active."""
    assert Proxy(Bare()).active() is True


def test_cooler_defaults_to_zero() -> None:
    """A handler without ``cooler`` has a cooler of 0.0 seconds."""
    cooler = Proxy(Bare()).cooler()
    assert cooler == 0.0
    assert type(cooler) is float


def test_timeout_defaults_to_none() -> None:
    """A handler without ``timeout`` has no timeout."""
    assert Proxy(Bare()).timeout() is None


DURATIONS = [
    pytest.param(5, 5.0, id="int"),
    pytest.param(0, 0.0, id="zero"),
    pytest.param(0.25, 0.25, id="float"),
    pytest.param(timedelta(minutes=2), 120.0, id="timedelta"),
    pytest.param(timedelta(milliseconds=1500), 1.5, id="timedelta-fraction"),
]
FORMS = [pytest.param(False, id="attribute"), pytest.param(True, id="method")]


@pytest.mark.parametrize("as_method", FORMS)
@pytest.mark.parametrize(("declared", "expected"), DURATIONS)
def test_cooler_is_float_seconds(declared: object, expected: float, as_method: bool) -> None:
    """A declared ``cooler`` (attribute or method) is read as float seconds."""
    cooler = Proxy(declaring("cooler", declared, as_method=as_method)).cooler()
    assert cooler == expected
    assert type(cooler) is float


@pytest.mark.parametrize("as_method", FORMS)
@pytest.mark.parametrize(("declared", "expected"), DURATIONS)
def test_timeout_is_float_seconds(declared: object, expected: float, as_method: bool) -> None:
    """A declared ``timeout`` (attribute or method) is read as float seconds."""
    timeout = Proxy(declaring("timeout", declared, as_method=as_method)).timeout()
    assert timeout == expected
    assert type(timeout) is float


def test_timeout_method_returning_none_means_no_limit() -> None:
    """A ``timeout()`` method may return ``None`` for no limit."""
    assert Proxy(declaring("timeout", None, as_method=True)).timeout() is None


@pytest.mark.parametrize("as_method", FORMS)
@pytest.mark.parametrize("declared", [True, False])
def test_active_is_read(declared: bool, as_method: bool) -> None:
    """A declared ``active`` (attribute or method) is what ``active()`` returns."""
    assert Proxy(declaring("active", declared, as_method=as_method)).active() is declared


def test_active_method_is_asked_every_time() -> None:
    """An ``active()`` method is called on every ``active()`` of the proxy."""
    answers = iter([True, False, True])

    class Flapping:
        def active(self) -> bool:
            return next(answers)

        def ensure(self) -> None:
            """Do nothing."""

    proxy = Proxy(Flapping())
    assert [proxy.active(), proxy.active(), proxy.active()] == [True, False, True]


def test_cooler_attribute_changed_at_run_time_is_seen() -> None:
    """A ``cooler`` attribute changed after construction is read anew."""
    handler = Settable()
    proxy = Proxy(handler)
    handler.cooler = timedelta(seconds=7)
    assert proxy.cooler() == 7.0


def test_timeout_attribute_changed_at_run_time_is_seen() -> None:
    """A ``timeout`` attribute changed after construction is read anew."""
    handler = Settable()
    proxy = Proxy(handler)
    handler.timeout = 2.5
    assert proxy.timeout() == 2.5


def test_active_attribute_changed_at_run_time_is_seen() -> None:
    """An ``active`` attribute changed after construction is read anew."""
    handler = Settable()
    proxy = Proxy(handler)
    handler.active = False
    assert proxy.active() is False


def test_attribute_changed_to_bad_value_raises_when_read() -> None:
    """A ``cooler`` attribute changed to a bad value raises when it is read."""
    handler = Settable()
    proxy = Proxy(handler)
    handler.cooler = -1
    with pytest.raises(ValueError):
        proxy.cooler()


BAD_DURATIONS = [
    pytest.param(-1, ValueError, id="negative-int"),
    pytest.param(-0.5, ValueError, id="negative-float"),
    pytest.param(timedelta(seconds=-1), ValueError, id="negative-timedelta"),
    pytest.param(math.nan, ValueError, id="nan"),
    pytest.param(True, TypeError, id="bool"),
    pytest.param("5", TypeError, id="str"),
    pytest.param([5], TypeError, id="list"),
]
BAD_ACTIVE = [
    pytest.param(1, TypeError, id="int"),
    pytest.param("yes", TypeError, id="str"),
]


@pytest.mark.parametrize("attribute", ["cooler", "timeout"])
@pytest.mark.parametrize(("declared", "error"), BAD_DURATIONS)
def test_bad_duration_attribute_raises_at_construction(
    attribute: str, declared: object, error: type[Exception]
) -> None:
    """A bad ``cooler``/``timeout`` attribute raises when the proxy is built, naming the handler."""
    handler = declaring(attribute, declared)
    with pytest.raises(error, match=NAME):
        Proxy(handler)


@pytest.mark.parametrize(("declared", "error"), BAD_ACTIVE)
def test_non_bool_active_attribute_raises_at_construction(
    declared: object, error: type[Exception]
) -> None:
    """A non-bool ``active`` attribute raises ``TypeError`` at construction, naming the handler."""
    handler = declaring("active", declared)
    with pytest.raises(error, match=NAME):
        Proxy(handler)


@pytest.mark.parametrize("attribute", ["cooler", "timeout"])
@pytest.mark.parametrize(("declared", "error"), BAD_DURATIONS)
def test_bad_duration_from_method_raises_when_called(
    attribute: str, declared: object, error: type[Exception]
) -> None:
    """A ``cooler()``/``timeout()`` method returning a bad value raises when called."""
    proxy = Proxy(declaring(attribute, declared, as_method=True))
    read: Callable[[], object] = getattr(proxy, attribute)
    with pytest.raises(error, match=NAME):
        read()


@pytest.mark.parametrize(("declared", "error"), BAD_ACTIVE)
def test_non_bool_from_active_method_raises_when_called(
    declared: object, error: type[Exception]
) -> None:
    """An ``active()`` method returning a non-bool raises ``TypeError`` when called."""
    proxy = Proxy(declaring("active", declared, as_method=True))
    with pytest.raises(error, match=NAME):
        proxy.active()


def test_none_is_not_a_handler() -> None:
    """``Proxy(None)`` raises ``TypeError``."""
    with pytest.raises(TypeError):
        Proxy(None)


def test_object_without_ensure_is_not_a_handler() -> None:
    """An object without ``ensure`` raises ``TypeError``."""
    with pytest.raises(TypeError):
        Proxy(object())


def test_non_callable_ensure_is_not_a_handler() -> None:
    """An object whose ``ensure`` is not callable raises ``TypeError``."""
    with pytest.raises(TypeError):
        Proxy(declaring("ensure", 42))


def test_unwrap_gives_the_handler() -> None:
    """``unwrap()`` of a proxy of a plain handler is that handler."""
    handler = Bare()
    assert Proxy(handler).unwrap() is handler


def test_unwrap_follows_nested_wrappers() -> None:
    """``unwrap()`` follows ``unwrap()`` of wrappers down to the innermost handler."""
    handler = Bare()
    assert Proxy(Wrapper(Wrapper(handler))).unwrap() is handler


def test_unwrap_follows_nested_proxies() -> None:
    """``unwrap()`` of a proxy of a proxy is the innermost handler."""
    handler = Bare()
    assert Proxy(Proxy(handler)).unwrap() is handler


def test_unwrap_follows_registry_wrap(registry: workit.Registry) -> None:
    """``unwrap()`` of a proxy of ``registry.wrap(h)`` is ``h``."""
    handler = Bare()
    assert Proxy(registry.wrap(handler)).unwrap() is handler


@pytest.mark.anyio
async def test_async_ensure_runs_on_the_event_loop_thread() -> None:
    """An ``async`` ensure runs in the event loop's thread."""
    handler = AsyncThreadRecorder()
    with anyio.fail_after(5):
        await Proxy(handler).ensure()
    assert handler.thread == threading.get_ident()


@pytest.mark.anyio
async def test_sync_ensure_runs_in_a_worker_thread() -> None:
    """A plain ``def`` ensure runs in a thread other than the event loop's."""
    handler = ThreadRecorder()
    with anyio.fail_after(5):
        await Proxy(handler).ensure()
    assert handler.thread is not None
    assert handler.thread != threading.get_ident()


@pytest.mark.anyio
async def test_sync_ensure_does_not_block_the_event_loop() -> None:
    """While a sync ensure blocks, tasks on the event loop keep running."""
    handler = Blocking()

    async def release_once_started() -> None:
        await wait_set(handler.started)
        handler.release.set()

    try:
        with anyio.fail_after(5):
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(release_once_started)
                await Proxy(handler).ensure()
    finally:
        handler.release.set()
    # Released by the event loop while blocked, not by the 5 s timeout of wait().
    assert handler.released is True


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
@pytest.mark.parametrize("returned", [42, False, ValueError("returned, not raised")], ids=repr)
async def test_return_value_is_ignored(kind: str, returned: object) -> None:
    """Whatever ``ensure`` returns, the execution succeeds."""
    calls: list[str] = []

    class Returning:
        def ensure(self) -> object:
            calls.append("sync")
            return returned

    class AsyncReturning:
        async def ensure(self) -> object:
            calls.append("async")
            return returned

    handler = Returning() if kind == "sync" else AsyncReturning()
    with anyio.fail_after(5):
        await Proxy(handler).ensure()
    assert calls == [kind]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_exception_from_ensure_propagates(kind: str) -> None:
    """An exception raised by ``ensure`` is raised by the proxy's ``ensure``."""

    class Failing:
        def ensure(self) -> None:
            raise LookupError("boom")

    class AsyncFailing:
        async def ensure(self) -> None:
            raise LookupError("boom")

    handler = Failing() if kind == "sync" else AsyncFailing()
    with anyio.fail_after(5), pytest.raises(LookupError, match="boom"):
        await Proxy(handler).ensure()


@pytest.mark.anyio
async def test_sync_ensure_returning_coroutine_raises_type_error() -> None:
    """A plain ``def`` ensure returning a coroutine raises ``TypeError``."""

    class ReturnsCoroutine:
        async def _work(self) -> None:
            """Never run."""

        def ensure(self) -> Coroutine[Any, Any, None]:
            return self._work()

    with anyio.fail_after(5), pytest.raises(TypeError):
        await Proxy(ReturnsCoroutine()).ensure()


@pytest.mark.anyio
async def test_sync_ensure_returning_coroutine_error_names_the_handler() -> None:
    """The ``TypeError`` for a plain ``def`` ensure returning a coroutine names the handler."""

    class ReturnsCoroutine:
        name = "half_async"

        async def _work(self) -> None:
            """Never run."""

        def ensure(self) -> Coroutine[Any, Any, None]:
            return self._work()

    with anyio.fail_after(5), pytest.raises(TypeError, match="half_async"):
        await Proxy(ReturnsCoroutine()).ensure()


@pytest.mark.anyio
async def test_sync_ensure_returning_coroutine_leaves_no_unawaited_warning() -> None:
    """The coroutine returned by a plain ``def`` ensure is closed: no "never awaited" warning."""
    coroutines: list[Coroutine[Any, Any, None]] = []

    class ReturnsCoroutine:
        async def _work(self) -> None:
            """Never run."""

        def ensure(self) -> Coroutine[Any, Any, None]:
            coroutine = self._work()
            coroutines.append(coroutine)
            return coroutine

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        with anyio.fail_after(5), pytest.raises(TypeError):
            await Proxy(ReturnsCoroutine()).ensure()
        [coroutine] = coroutines
        assert inspect.getcoroutinestate(coroutine) == inspect.CORO_CLOSED
        del coroutine
        coroutines.clear()
        gc.collect()
    assert [str(warning.message) for warning in caught] == []


@fake_clock()
@pytest.mark.anyio
async def test_async_timeout_raises_handler_timeout() -> None:
    """An async execution over its ``timeout`` raises ``HandlerTimeout`` naming the handler."""
    with anyio.fail_after(3600), pytest.raises(HandlerTimeout) as caught:
        await Proxy(Sleeper(3600)).ensure()
    assert caught.value.handler == "sleeper"


@fake_clock()
@pytest.mark.anyio
async def test_async_timeout_cancels_the_execution_at_the_deadline() -> None:
    """An async execution over its ``timeout`` is cancelled when the timeout ends."""
    handler = Sleeper(3600, timeout=10)
    start = anyio.current_time()
    with anyio.fail_after(3600), pytest.raises(HandlerTimeout):
        await Proxy(handler).ensure()
    assert handler.cancelled
    assert not handler.completed
    assert anyio.current_time() - start == pytest.approx(10, abs=0.5)


@fake_clock()
@pytest.mark.anyio
@pytest.mark.parametrize("as_method", FORMS)
@pytest.mark.parametrize("limit", [10, 10.0, timedelta(seconds=10)], ids=repr)
async def test_async_timeout_in_any_form_is_enforced(limit: object, as_method: bool) -> None:
    """A ``timeout`` given as int, float or timedelta, attribute or method, is enforced."""
    handler = Sleeper(3600, timeout=(lambda: limit) if as_method else limit)
    start = anyio.current_time()
    with anyio.fail_after(3600), pytest.raises(HandlerTimeout):
        await Proxy(handler).ensure()
    assert anyio.current_time() - start == pytest.approx(10, abs=0.5)


class Steps:
    """Notes the steps its ``ensure`` got through, an await between them."""

    def __init__(self, timeout: object) -> None:
        self.timeout = timeout
        self.steps: list[str] = []

    async def ensure(self) -> None:
        self.steps.append("started")
        await anyio.lowlevel.checkpoint()
        self.steps.append("awaited")


@pytest.mark.anyio
@pytest.mark.parametrize("zero", [0, 0.0, timedelta(0)], ids=repr)
async def test_a_timeout_of_zero_times_every_execution_out_at_once(zero: object) -> None:
    """``timeout = 0`` is a deadline already passed, not "no limit": an async execution is
    a HandlerTimeout at its first await (a sync one never starts: test_faults.py)."""
    handler = Steps(zero)
    proxy = Proxy(handler)
    assert proxy.timeout() == 0.0
    for _ in range(2):
        with anyio.fail_after(5), pytest.raises(HandlerTimeout, match="after 0 s"):
            await proxy.ensure()
    assert handler.steps == ["started", "started"]


@fake_clock()
@pytest.mark.anyio
async def test_async_execution_within_timeout_completes() -> None:
    """An async execution shorter than its ``timeout`` completes normally."""
    handler = Sleeper(5, timeout=10)
    with anyio.fail_after(3600):
        await Proxy(handler).ensure()
    assert handler.completed
    assert not handler.cancelled


@fake_clock()
@pytest.mark.anyio
async def test_outer_cancellation_of_async_execution_is_not_a_timeout() -> None:
    """Cancelling an async execution from outside propagates as cancellation, not a timeout."""
    handler = Sleeper(3600, timeout=10)
    with anyio.fail_after(3600), anyio.move_on_after(1) as scope:
        await Proxy(handler).ensure()
    assert scope.cancelled_caught
    assert handler.cancelled


@pytest.mark.anyio
async def test_sync_timeout_raises_handler_timeout() -> None:
    """A sync execution over its ``timeout`` raises ``HandlerTimeout`` naming the handler."""
    handler = Blocking(timeout=0.02)
    try:
        with anyio.fail_after(5), pytest.raises(HandlerTimeout) as caught:
            await Proxy(handler).ensure()
        assert caught.value.handler == "blocking"
    finally:
        handler.release.set()
    with anyio.fail_after(5):
        await wait_set(handler.returned)


@pytest.mark.anyio
async def test_sync_timeout_is_reported_while_the_thread_still_blocks() -> None:
    """A sync timeout is reported at the deadline, without waiting for the thread to return."""
    handler = Blocking(timeout=0.02)
    try:
        with anyio.fail_after(5), pytest.raises(HandlerTimeout):
            await Proxy(handler).ensure()
        assert handler.started.is_set()
        assert not handler.returned.is_set()
    finally:
        handler.release.set()
    with anyio.fail_after(5):
        await wait_set(handler.returned)


@pytest.mark.anyio
async def test_sync_execution_within_timeout_completes() -> None:
    """A sync execution shorter than its ``timeout`` completes normally."""
    handler = Blocking(timeout=5)
    handler.release.set()
    with anyio.fail_after(5):
        await Proxy(handler).ensure()
    assert handler.released is True


@pytest.mark.anyio
async def test_outer_cancellation_of_sync_execution_is_not_a_timeout() -> None:
    """Cancelling a sync execution from outside is cancellation, not ``HandlerTimeout``."""
    handler = Blocking(timeout=5)
    try:
        with anyio.fail_after(5), anyio.move_on_after(0.02) as scope:
            await Proxy(handler).ensure()
        assert scope.cancelled_caught
    finally:
        handler.release.set()
    with anyio.fail_after(5):
        await wait_set(handler.returned)


async def _abandon_first_execution(proxy: Proxy, how: str) -> None:
    """Leave the first execution of ``proxy`` blocked in its thread, by timeout or cancellation."""
    if how == "timeout":
        with pytest.raises(HandlerTimeout):
            await proxy.ensure()
    else:
        with anyio.move_on_after(0.01) as scope:
            await proxy.ensure()
        assert scope.cancelled_caught


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_next_sync_execution_waits_for_abandoned_thread(how: str) -> None:
    """After a sync execution is abandoned, the next one does not start while its thread runs."""
    handler = Straggler()
    proxy = Proxy(handler)
    try:
        with anyio.fail_after(5):
            await _abandon_first_execution(proxy, how)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(proxy.ensure)
                await anyio.sleep(0.03)
                assert (handler.started, handler.finished) == (1, 0)
                tasks.cancel_scope.cancel()
    finally:
        handler.release.set()
    with anyio.fail_after(5):
        await wait_set(handler.first_returned)
    assert (handler.started, handler.finished) == (1, 1)


@pytest.mark.anyio
@pytest.mark.parametrize("how", ["timeout", "cancel"])
async def test_next_sync_execution_runs_once_abandoned_thread_returns(how: str) -> None:
    """The execution waiting for an abandoned thread runs once that thread has returned."""
    handler = Straggler()
    proxy = Proxy(handler)
    try:
        with anyio.fail_after(5):
            await _abandon_first_execution(proxy, how)
            async with anyio.create_task_group() as tasks:
                tasks.start_soon(proxy.ensure)
                await anyio.sleep(0.01)
                handler.release.set()
            assert (handler.started, handler.finished) == (2, 2)
    finally:
        handler.release.set()
    assert handler.most_running == 1


# What can never work is refused at construction


class NeedsArgument:
    """A handler whose ``ensure`` needs an argument no engine gives."""

    name = NAME

    def ensure(self, since: float) -> None:
        """Never callable as ensure()."""


class Endless:
    """An object whose ``unwrap()`` makes a new one every time, as a mock does."""

    def unwrap(self) -> Endless:
        """A new object, again and again."""
        return Endless()

    def ensure(self) -> None:
        """Do nothing."""


def raising_property(error: Exception) -> property:
    def get(self: object) -> object:
        raise error

    return property(get)


def test_class_instead_of_instance_is_refused() -> None:
    """A handler class given instead of an instance says to pass an instance."""
    with pytest.raises(TypeError, match=r"^Bare is a class; pass an instance: Bare\(\)$"):
        Proxy(Bare)


def test_class_with_a_static_ensure_is_a_handler() -> None:
    """A class whose ``ensure`` needs no instance (a staticmethod) is a handler as it is."""

    class Namespace:
        cooler = 5

        @staticmethod
        def ensure() -> None:
            """Do nothing."""

    assert Proxy(Namespace).cooler() == 5.0


def test_ensure_needing_an_argument_is_refused() -> None:
    """An ``ensure`` with a required parameter is refused, naming the handler and the parameter."""
    with pytest.raises(TypeError, match=rf"'{NAME}'.*without arguments.*'since'.*default"):
        Proxy(NeedsArgument())


@pytest.mark.parametrize(
    "ensure",
    [
        pytest.param(lambda since=0: None, id="default"),
        pytest.param(lambda *args, **kwargs: None, id="variadic"),
        pytest.param(functools.partial(lambda since: None, 0), id="partial"),
        pytest.param(time.monotonic, id="builtin"),
    ],
)
def test_ensure_callable_without_arguments_is_accepted(ensure: object) -> None:
    """Defaults, variadics, partials binding every argument and builtins are all fine."""
    Proxy(declaring("ensure", staticmethod(ensure) if callable(ensure) else ensure))


def test_callable_object_needing_an_argument_is_refused() -> None:
    """An ``ensure`` that is an object whose ``__call__`` needs an argument is refused."""

    class Job:
        def __call__(self, since: float) -> None:
            """Never callable as ensure()."""

    with pytest.raises(TypeError, match="'since'"):
        Proxy(declaring("ensure", Job()))


@pytest.mark.parametrize("kind", ["generator", "async generator"])
def test_generator_ensure_is_refused(kind: str) -> None:
    """An ``ensure`` with a stray ``yield`` is refused: calling it would never run its body."""

    def generator(self: object) -> Iterator[None]:
        yield

    async def async_generator(self: object) -> AsyncIterator[None]:
        yield

    ensure = generator if kind == "generator" else async_generator
    with pytest.raises(TypeError, match=rf"'{NAME}'.*ensure\(\) is an? {kind} function.*`yield`"):
        Proxy(declaring("ensure", ensure))


def test_non_callable_ensure_names_its_type() -> None:
    """An ``ensure`` that is not callable is named as such, with its type."""
    with pytest.raises(TypeError, match=rf"'{NAME}': ensure is not callable: int"):
        Proxy(declaring("ensure", 42))


PARTS = ["active", "cooler", "timeout", "jitter"]


@pytest.mark.parametrize("part", PARTS)
def test_coroutine_function_part_is_refused(part: str) -> None:
    """An ``async def`` active, cooler, timeout or jitter is refused: it is asked synchronously."""

    async def method(self: object) -> object:
        return 1

    with pytest.raises(TypeError, match=rf"'{NAME}': {part}\(\) is a coroutine function.*`def`"):
        Proxy(declaring(part, method))


@pytest.mark.parametrize("part", PARTS)
def test_part_method_needing_an_argument_is_refused(part: str) -> None:
    """A part method with a required parameter is refused, naming the part and the parameter."""

    def method(self: object, value: object) -> object:
        return value

    with pytest.raises(TypeError, match=rf"'{NAME}': {part}\(\) cannot be called.*'value'"):
        Proxy(declaring(part, method))


@pytest.mark.parametrize("part", PARTS)
@pytest.mark.parametrize(
    "error",
    [RuntimeError("settings not loaded"), AttributeError("no attribute 'settings'")],
    ids=["RuntimeError", "AttributeError"],
)
def test_part_property_that_raises_is_refused(part: str, error: Exception) -> None:
    """A part whose property raises (an ``AttributeError`` too) is a ``TypeError`` naming it."""
    kind = type(error).__name__
    with pytest.raises(TypeError, match=rf"'{NAME}': reading its {part} raised {kind}") as caught:
        Proxy(declaring(part, raising_property(error)))
    assert caught.value.__cause__ is error


def test_ensure_property_that_raises_is_refused() -> None:
    """An ``ensure`` property that raises is a ``TypeError`` naming the class and ensure."""
    with pytest.raises(TypeError, match=r"Declaring handler: reading its ensure raised KeyError"):
        Proxy(declaring("ensure", raising_property(KeyError("ensure"))))


def test_empty_slot_is_an_absent_part() -> None:
    """A part declared as a slot but never set is absent, not an error."""

    class Slotted:
        __slots__ = ("cooler",)

        def ensure(self) -> None:
            """Do nothing."""

    assert Proxy(Slotted()).cooler() == 0.0


@pytest.mark.parametrize("attribute", ["cooler", "timeout"])
def test_huge_int_attribute_is_a_value_error(attribute: str) -> None:
    """A duration too large for a float is a ``ValueError`` naming the handler and the part."""
    with pytest.raises(ValueError, match=rf"'{NAME}': {attribute} is too large.*math.inf"):
        Proxy(declaring(attribute, 10**400))


def test_huge_int_from_a_method_is_a_value_error_when_read() -> None:
    """A ``cooler()`` answering a too large int is a ``ValueError`` naming the handler."""
    proxy = Proxy(declaring("cooler", 10**400, as_method=True))
    with pytest.raises(ValueError, match=rf"'{NAME}': cooler is too large"):
        proxy.cooler()


def test_mock_handler_is_built_at_once() -> None:
    """A ``MagicMock`` handler, whose ``unwrap()`` chain never ends, is named after its class."""
    handler = MagicMock(cooler=1)
    proxy = Proxy(handler)
    assert proxy.name == "magic_mock"
    assert proxy.unwrap() is handler


def test_unwrap_chain_without_end_is_the_handler_itself() -> None:
    """``unwrap()`` gives up on a chain longer than ``UNWRAP_DEPTH``: the handler is innermost."""
    handler = Endless()
    assert Proxy(handler).unwrap() is handler


class Partner:
    """A wrapper whose ``unwrap()`` returns its partner, set after both are made."""

    def __init__(self) -> None:
        self.partner: object = None
        self.unwrapped = 0

    def unwrap(self) -> object:
        """The partner, which may unwrap back to this one."""
        self.unwrapped += 1
        return self.partner

    def ensure(self) -> None:
        """Do nothing."""


class OtherPartner(Partner):
    """The other half of a two-object ``unwrap()`` cycle."""


def test_unwrap_cycle_of_two_wrappers_ends_at_the_handler() -> None:
    """A cycle of two wrappers (a -> b -> a) ends: the proxy unwraps and names it after a."""
    first, second = Partner(), OtherPartner()
    first.partner, second.partner = second, first
    proxy = Proxy(first)
    assert proxy.name == "partner"
    before = (first.unwrapped, second.unwrapped)
    assert proxy.unwrap() is first
    unwrapped = (first.unwrapped - before[0], second.unwrapped - before[1])
    assert unwrapped == (1, 1)  # stopped at the cycle, not the depth


def test_unwrap_follows_a_long_chain_within_the_limit() -> None:
    """Fifty wrappers deep is still a chain of wrappers: ``unwrap()`` reaches the innermost."""
    handler: object = Bare()
    inner = handler
    for _ in range(50):
        handler = Wrapper(handler)
    assert Proxy(handler).unwrap() is inner


def test_broken_repr_of_a_non_handler_is_not_raised() -> None:
    """An object without ``ensure`` whose ``__repr__`` raises is still refused with a TypeError."""

    class Opaque:
        def __repr__(self) -> str:
            raise RuntimeError("no repr")

    with pytest.raises(TypeError, match=r"<.*Opaque object> is not a handler"):
        Proxy(Opaque())


# jitter


def test_jitter_defaults_to_zero() -> None:
    """A handler without ``jitter`` has a jitter of 0.0."""
    jitter = Proxy(Bare()).jitter()
    assert jitter == 0.0
    assert type(jitter) is float


@pytest.mark.parametrize("as_method", FORMS)
@pytest.mark.parametrize(("declared", "expected"), [(0, 0.0), (0.25, 0.25), (1, 1.0)])
def test_jitter_is_a_float_fraction(declared: float, expected: float, as_method: bool) -> None:
    """A declared ``jitter`` (attribute or method) from 0 to 1 is read as a float."""
    jitter = Proxy(declaring("jitter", declared, as_method=as_method)).jitter()
    assert jitter == expected
    assert type(jitter) is float


BAD_JITTER = [
    pytest.param(-0.1, ValueError, id="negative"),
    pytest.param(1.5, ValueError, id="above-one"),
    pytest.param(math.nan, ValueError, id="nan"),
    pytest.param(10**400, ValueError, id="huge-int"),
    pytest.param(True, TypeError, id="bool"),
    pytest.param("0.1", TypeError, id="str"),
    pytest.param(timedelta(seconds=1), TypeError, id="timedelta"),
]


@pytest.mark.parametrize(("declared", "error"), BAD_JITTER)
def test_bad_jitter_attribute_raises_at_construction(
    declared: object, error: type[Exception]
) -> None:
    """A bad ``jitter`` attribute raises when the proxy is built, naming the handler and jitter."""
    with pytest.raises(error, match=rf"'{NAME}': jitter"):
        Proxy(declaring("jitter", declared))


@pytest.mark.parametrize(("declared", "error"), BAD_JITTER)
def test_bad_jitter_from_method_raises_when_called(
    declared: object, error: type[Exception]
) -> None:
    """A ``jitter()`` method returning a bad value raises when called, naming the handler."""
    proxy = Proxy(declaring("jitter", declared, as_method=True))
    with pytest.raises(error, match=rf"'{NAME}': jitter"):
        proxy.jitter()


def test_jitter_attribute_changed_at_run_time_is_seen() -> None:
    """A ``jitter`` attribute changed after construction is read anew."""
    handler = declaring("jitter", 0.1)
    proxy = Proxy(handler)
    handler.jitter = 0.5  # type: ignore[attr-defined]  # set on the fly, as users may
    assert proxy.jitter() == 0.5
