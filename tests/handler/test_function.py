"""``workit.Handler``: a handler made from a function or coroutine function."""

from __future__ import annotations

import functools
import math
import threading
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import anyio
import anyio.lowlevel
import pytest

import workit
from tests.support import fake_clock
from workit.handler import Proxy, SupportsEnsure

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable, Iterator


def nothing() -> None:
    """A plain function that does nothing."""


def test_handler_has_ensure() -> None:
    """A ``workit.Handler`` is a handler: it has ``ensure``."""
    assert isinstance(workit.Handler(nothing), SupportsEnsure)


def test_handler_calls_the_sync_function() -> None:
    """``ensure()`` of a ``workit.Handler`` calls the function."""
    calls: list[int] = []
    workit.Handler(lambda: calls.append(1)).ensure()
    assert calls == [1]


@pytest.mark.anyio
async def test_sync_function_runs_in_a_worker_thread() -> None:
    """A plain function runs in a thread other than the event loop's."""
    threads: list[int] = []
    handler = workit.Handler(lambda: threads.append(threading.get_ident()))
    with anyio.fail_after(5):
        await Proxy(handler).ensure()
    assert len(threads) == 1
    assert threads[0] != threading.get_ident()


@pytest.mark.anyio
async def test_async_function_runs_on_the_event_loop_thread() -> None:
    """A coroutine function runs, awaited, in the event loop's thread."""
    threads: list[int] = []

    async def job() -> None:
        await anyio.lowlevel.checkpoint()
        threads.append(threading.get_ident())

    with anyio.fail_after(5):
        await Proxy(workit.Handler(job)).ensure()
    assert threads == [threading.get_ident()]


@pytest.mark.anyio
async def test_partial_of_sync_function_runs_with_its_arguments() -> None:
    """A ``functools.partial`` of a plain function runs with its bound arguments."""
    seen: list[int] = []
    with anyio.fail_after(5):
        await Proxy(workit.Handler(functools.partial(seen.append, 7))).ensure()
    assert seen == [7]


@pytest.mark.anyio
async def test_partial_of_async_function_runs_on_the_event_loop_thread() -> None:
    """A ``functools.partial`` of a coroutine function is awaited on the event loop."""
    seen: list[tuple[int, int]] = []

    async def job(value: int) -> None:
        seen.append((value, threading.get_ident()))

    with anyio.fail_after(5):
        await Proxy(workit.Handler(functools.partial(job, 7))).ensure()
    assert seen == [(7, threading.get_ident())]


@pytest.mark.anyio
async def test_object_with_async_call_runs_on_the_event_loop_thread() -> None:
    """A callable object with an ``async __call__`` is awaited on the event loop."""
    threads: list[int] = []

    class Job:
        async def __call__(self) -> None:
            threads.append(threading.get_ident())

    with anyio.fail_after(5):
        await Proxy(workit.Handler(Job())).ensure()
    assert threads == [threading.get_ident()]


@pytest.mark.anyio
@pytest.mark.parametrize("kind", ["sync", "async"])
async def test_exception_from_function_propagates(kind: str) -> None:
    """An exception raised by the function is raised by the execution."""

    def failing() -> None:
        raise LookupError("boom")

    async def async_failing() -> None:
        raise LookupError("boom")

    function: Callable[[], object] = failing if kind == "sync" else async_failing
    with anyio.fail_after(5), pytest.raises(LookupError, match="boom"):
        await Proxy(workit.Handler(function)).ensure()


def test_defaults_through_proxy() -> None:
    """Without options a ``workit.Handler`` is active, with cooler 0.0 and no timeout."""
    proxy = Proxy(workit.Handler(nothing))
    assert (proxy.active(), proxy.cooler(), proxy.timeout()) == (True, 0.0, None)


@pytest.mark.parametrize(
    ("cooler", "expected"),
    [(5, 5.0), (0.5, 0.5), (timedelta(minutes=1), 60.0), (0, 0.0)],
    ids=repr,
)
def test_cooler_is_float_seconds(cooler: float | timedelta, expected: float) -> None:
    """``cooler=`` as a number or ``timedelta`` is read as float seconds."""
    value = Proxy(workit.Handler(nothing, cooler=cooler)).cooler()
    assert value == expected
    assert type(value) is float


@pytest.mark.parametrize(
    ("timeout", "expected"),
    [(30, 30.0), (0.5, 0.5), (timedelta(seconds=90), 90.0)],
    ids=repr,
)
def test_timeout_is_float_seconds(timeout: float | timedelta, expected: float) -> None:
    """``timeout=`` as a number or ``timedelta`` is read as float seconds."""
    value = Proxy(workit.Handler(nothing, timeout=timeout)).timeout()
    assert value == expected
    assert type(value) is float


@pytest.mark.parametrize("active", [True, False])
def test_active_bool(active: bool) -> None:
    """``active=`` as a bool is what ``active()`` returns."""
    assert Proxy(workit.Handler(nothing, active=active)).active() is active


def test_active_function_is_asked_every_time() -> None:
    """``active=`` as a function is called on every ``active()``."""
    answers = iter([False, True, False])
    proxy = Proxy(workit.Handler(nothing, active=lambda: next(answers)))
    assert [proxy.active(), proxy.active(), proxy.active()] == [False, True, False]


def test_active_function_returning_non_bool_raises_when_asked() -> None:
    """An ``active`` function returning a non-bool raises ``TypeError`` when asked."""
    not_a_bool: Any = "yes"
    proxy = Proxy(workit.Handler(nothing, active=lambda: not_a_bool))
    with pytest.raises(TypeError):
        proxy.active()


def test_name_option() -> None:
    """``name=`` names the handler."""
    assert workit.handler.name(workit.Handler(nothing, name="custom")) == "custom"


@fake_clock()
@pytest.mark.anyio
async def test_async_timeout_raises_handler_timeout() -> None:
    """An async function running past ``timeout=`` raises ``HandlerTimeout`` naming it."""

    async def slow_job() -> None:
        await anyio.sleep(3600)

    start = anyio.current_time()
    with anyio.fail_after(3600), pytest.raises(workit.HandlerTimeout) as caught:
        await Proxy(workit.Handler(slow_job, timeout=10)).ensure()
    assert caught.value.handler == "slow_job"
    assert anyio.current_time() - start == pytest.approx(10, abs=0.5)


@pytest.mark.anyio
async def test_sync_timeout_raises_handler_timeout() -> None:
    """A plain function running past ``timeout=`` raises ``HandlerTimeout`` naming it."""
    release = threading.Event()

    def blocked_job() -> None:
        release.wait(5)

    try:
        with anyio.fail_after(5), pytest.raises(workit.HandlerTimeout) as caught:
            await Proxy(workit.Handler(blocked_job, timeout=0.02)).ensure()
        assert caught.value.handler == "blocked_job"
    finally:
        release.set()


def test_non_callable_is_rejected() -> None:
    """A non-callable ``ensure`` raises ``TypeError``."""
    with pytest.raises(TypeError):
        workit.Handler(42)  # type: ignore[arg-type]  # the wrong type is what is tested


@pytest.mark.parametrize(
    "cooler", [-1, -0.1, timedelta(seconds=-1), math.nan], ids=["-1", "-0.1", "-1s", "nan"]
)
def test_bad_cooler_value_is_rejected(cooler: float | timedelta) -> None:
    """A negative or NaN ``cooler=`` raises ``ValueError`` naming the handler."""
    with pytest.raises(ValueError, match="nothing"):
        workit.Handler(nothing, cooler=cooler)


@pytest.mark.parametrize("cooler", [True, "5"], ids=repr)
def test_cooler_of_wrong_type_is_rejected(cooler: Any) -> None:
    """A ``cooler=`` that is neither a number nor a ``timedelta`` raises ``TypeError``."""
    with pytest.raises(TypeError, match="nothing"):
        workit.Handler(nothing, cooler=cooler)


@pytest.mark.parametrize("timeout", [-1, math.nan], ids=["-1", "nan"])
def test_bad_timeout_value_is_rejected(timeout: float) -> None:
    """A negative or NaN ``timeout=`` raises ``ValueError`` naming the handler."""
    with pytest.raises(ValueError, match="nothing"):
        workit.Handler(nothing, timeout=timeout)


def test_empty_name_is_rejected() -> None:
    """``name=""`` raises ``ValueError``."""
    with pytest.raises(ValueError):
        workit.Handler(nothing, name="")


@pytest.mark.parametrize("active", ["yes", 1, None], ids=repr)
def test_active_of_wrong_type_is_rejected(active: Any) -> None:
    """An ``active=`` that is neither a bool nor a function raises ``TypeError``."""
    with pytest.raises(TypeError):
        workit.Handler(nothing, active=active)


def generator_job() -> Iterator[None]:
    """A function with a stray ``yield``: calling it never runs its body."""
    yield


async def async_generator_job() -> AsyncIterator[None]:
    """An async function with a stray ``yield``."""
    yield


@pytest.mark.parametrize(
    ("function", "kind"),
    [(generator_job, "a generator"), (async_generator_job, "an async generator")],
    ids=["generator", "async-generator"],
)
def test_generator_function_is_rejected(function: Callable[[], object], kind: str) -> None:
    """A generator function is refused, naming the handler: its body would never run."""
    with pytest.raises(TypeError, match=rf"'{function.__name__}'.*is {kind} function.*`yield`"):
        workit.Handler(function)


def test_function_needing_an_argument_is_rejected() -> None:
    """A function with a required parameter is refused, naming it and suggesting partial."""

    def sync_since(since: float) -> None:
        """Needs an argument."""

    with pytest.raises(TypeError, match=r"'sync_since'.*'since'.*functools.partial"):
        workit.Handler(sync_since)  # type: ignore[arg-type]  # the wrong signature is what is tested


def test_async_active_function_is_rejected() -> None:
    """An ``async`` active function is refused: active is asked synchronously."""

    async def ready() -> bool:
        return True

    with pytest.raises(TypeError, match=r"'nothing'.*active\(\) is a coroutine function"):
        workit.Handler(nothing, active=ready)  # type: ignore[arg-type]  # what is tested


@pytest.mark.parametrize("option", ["cooler", "timeout"])
def test_huge_int_duration_is_a_value_error(option: str) -> None:
    """A duration too large for a float is a ``ValueError`` naming the handler and the option."""
    with pytest.raises(ValueError, match=rf"nothing: {option} is too large"):
        workit.Handler(nothing, **{option: 10**400})  # type: ignore[arg-type]  # cooler or timeout


@pytest.mark.parametrize(("jitter", "expected"), [(0, 0.0), (0.1, 0.1), (1, 1.0)])
def test_jitter_is_read_through_proxy(jitter: float, expected: float) -> None:
    """``jitter=`` is what the proxy's ``jitter()`` returns, as a float."""
    value = Proxy(workit.Handler(nothing, jitter=jitter)).jitter()
    assert value == expected
    assert type(value) is float


def test_jitter_defaults_to_zero() -> None:
    """Without ``jitter=`` a function handler has no jitter."""
    assert Proxy(workit.Handler(nothing)).jitter() == 0.0


@pytest.mark.parametrize(
    ("jitter", "error"),
    [
        (-0.5, ValueError),
        (2, ValueError),
        (math.nan, ValueError),
        (10**400, ValueError),
        (True, TypeError),
        ("0.1", TypeError),
    ],
    ids=["negative", "above-one", "nan", "huge", "bool", "str"],
)
def test_bad_jitter_is_rejected(jitter: Any, error: type[Exception]) -> None:
    """A ``jitter=`` that is not a number from 0 to 1 raises, naming the handler and jitter."""
    with pytest.raises(error, match="nothing: jitter"):
        workit.Handler(nothing, jitter=jitter)
