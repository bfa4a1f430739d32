"""The soak's 2,000 handlers: every behaviour workit must survive, each counting itself.

Every handler records what workit should count for it: ``started`` (its
``ensure()`` calls, counted first thing in ``ensure()``) and
``hook_failures`` (calls of its ``active()``, ``cooler()`` or ``timeout()``
that raised or returned a value workit must reject: each is one failed
execution for workit, with no ``ensure()`` call). So for every handler
``started + hook_failures`` must equal ``worker_handler_execution_total``
summed over ``success``, but for an execution in flight at the sampling
instant.

A handler's behaviour is its ``plan``: a function of the execution number
(0, 1, ...) that says what that execution does: return (``None``), sleep
(a float, in seconds), raise (an exception) or hang forever (``HANG``).

The groups, as the soak reports them:

- ``healthy``: async and sync handlers that always succeed, cooler 1-2 s;
  their rate is measured against 1 / (cooler + execution time);
- ``ensure``: faults inside ``ensure()``: every kind of exception, including
  ``BaseException`` subclasses, exceptions whose ``__str__`` is broken,
  exception groups, the registry's ignored ``Skip``; hanging forever (sync,
  on a ``threading.Event`` released at the end, and async, in
  ``anyio.sleep_forever()``), with and without a timeout; slower than their
  timeout; sync ``ensure()`` returning a coroutine or an awaitable;
- ``hooks``: ``ensure()`` always succeeds, but ``active()`` flips or raises or
  answers a non-bool, ``cooler()`` raises or answers negative, NaN, ``None``,
  strings or bools, ``timeout()`` raises or answers invalid values;
- ``backoff``: handlers that always or mostly fail, cooler 0 or 0.1 s, in a
  ``ParallelWorker`` with a ``workit.Backoff``;
- ``sequence``: the nodes of two ``SequenceWorker``s (steps and a DAG, cooler
  1 s) with nodes that fail, are ignored, time out, raise from ``active()``.
"""

from __future__ import annotations

import asyncio
import errno
import math
import threading
import time
from dataclasses import dataclass, field
from datetime import timedelta
from time import perf_counter
from typing import TYPE_CHECKING, Final, TypeAlias

import anyio

import workit

if TYPE_CHECKING:
    from collections.abc import Callable, Generator, Sequence

__all__ = [
    "GROUPS",
    "HANDLERS",
    "Hangs",
    "Skip",
    "Soaker",
    "Zoo",
    "build",
]

HANDLERS: Final = 2000
"""How many handlers the soak runs, sequence nodes included."""

GROUPS: Final = ("healthy", "ensure", "hooks", "backoff", "sequence")
"""The groups the soak reports separately, in order."""


class Skip(Exception):
    """Control flow: the soak registry's ``ignore`` filter matches it."""


class _Hang:
    """The plan step that hangs forever."""

    def __repr__(self) -> str:
        return "HANG"


HANG: Final = _Hang()

Step: TypeAlias = "BaseException | float | _Hang | None"
"""What one execution does: raise, sleep (seconds), hang, or return (``None``)."""
Factory: TypeAlias = "Callable[[], BaseException]"


class Hangs:
    """What the sync hangers block on, and how many are blocked right now."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.blocked = 0
        self._lock = threading.Lock()

    def block(self) -> None:
        """Block the calling thread until ``release`` is set."""
        with self._lock:
            self.blocked += 1
        try:
            self.release.wait()
        finally:
            with self._lock:
                self.blocked -= 1


# --- the exceptions -------------------------------------------------------


class _Custom(Exception):
    """An exception with keyword-only state, which ``copy``/``pickle`` cannot rebuild."""

    def __init__(self, *, code: int) -> None:
        super().__init__(f"custom failure {code}")
        self.code = code


class _Unhashable(Exception):
    __hash__ = None  # type: ignore[assignment]

    def __eq__(self, other: object) -> bool:
        raise RuntimeError("no comparing this exception")


class _Payload(Exception):
    """Carries 256 KiB: if workit kept failed exceptions, RSS would show it."""

    def __init__(self) -> None:
        super().__init__("failure with a payload")
        self.payload = bytes(256 * 1024)


class _CustomBase(BaseException):
    """A ``BaseException`` subclass of the user's own."""


class _StrRaises(Exception):
    def __str__(self) -> str:
        raise ValueError("__str__ is broken")


class _StrNotStr(Exception):
    def __str__(self) -> str:
        return 42  # type: ignore[return-value]  # deliberately broken


class _StrAndReprRaise(Exception):
    def __str__(self) -> str:
        raise RuntimeError("__str__ is broken")

    def __repr__(self) -> str:
        raise RuntimeError("__repr__ is broken")


class _StrRecursion(Exception):
    def __str__(self) -> str:
        raise RecursionError("maximum recursion depth exceeded in __str__")


class _BadArgument:
    def __str__(self) -> str:
        raise ValueError("argument __str__ is broken")

    def __repr__(self) -> str:
        raise ValueError("argument __repr__ is broken")


class _StrSystemExit(Exception):
    def __str__(self) -> str:
        raise SystemExit("raised by __str__")


class _StrKeyboardInterrupt(Exception):
    def __str__(self) -> str:
        raise KeyboardInterrupt


def _chained() -> BaseException:
    try:
        raise KeyError("inner")
    except KeyError as inner:
        error = RuntimeError("outer")
        error.__cause__ = inner
        return error


def _cyclic() -> BaseException:
    first, second = ValueError("first"), LookupError("second")
    first.__context__, second.__context__ = second, first
    return first


EXCEPTIONS: Final[tuple[Factory, ...]] = (
    lambda: ValueError("bad value"),
    lambda: RuntimeError("broken"),
    lambda: KeyError("missing"),
    lambda: ConnectionRefusedError(errno.ECONNREFUSED, "connection refused"),
    lambda: TimeoutError("upstream timed out"),
    lambda: ZeroDivisionError("division by zero"),
    AssertionError,
    lambda: NotImplementedError("later"),
    lambda: RecursionError("too deep"),
    MemoryError,
    lambda: UnicodeDecodeError("utf-8", b"\xff", 0, 1, "invalid start byte"),
    StopIteration,  # a RuntimeError once it leaves a coroutine or anyio's thread
    StopAsyncIteration,
    lambda: _Custom(code=7),
    _chained,
    _cyclic,
    lambda: _Unhashable("unhashable"),
    _Payload,
    lambda: ValueError("x" * 20_000),
    lambda: workit.HandlerError("another handler"),
    lambda: workit.HandlerTimeout("another handler", 1.0),
)
"""``Exception`` subclasses of every shape."""

BASE_EXCEPTIONS: Final[tuple[Factory, ...]] = (
    KeyboardInterrupt,
    lambda: SystemExit(3),
    GeneratorExit,
    lambda: _CustomBase("user's BaseException"),
    lambda: asyncio.CancelledError("raised by the handler, not a cancellation"),
)
"""``BaseException`` subclasses that are not ``Exception``s."""

BROKEN_STR: Final[tuple[Factory, ...]] = (
    _StrRaises,
    _StrNotStr,
    _StrAndReprRaise,
    _StrRecursion,
    lambda: ValueError(_BadArgument()),
    _StrSystemExit,
    _StrKeyboardInterrupt,
)
"""Exceptions whose ``str()`` (and sometimes ``repr()``) raises, an ``Exception`` or not.

Before commit 5a8d104 the first one whose ``__str__`` raised ``SystemExit``
or ``KeyboardInterrupt`` ended the process: ``workit.errors.message_of``
caught ``Exception`` only.
"""

GROUP_EXCEPTIONS: Final[tuple[Factory, ...]] = (
    lambda: ExceptionGroup("two failures", [ValueError("a"), KeyError("b")]),
    lambda: ExceptionGroup(
        "nested", [ExceptionGroup("inner", [OSError("disk")]), RuntimeError("outer")]
    ),
    lambda: BaseExceptionGroup("with a BaseException", [KeyboardInterrupt(), ValueError("c")]),
    lambda: ExceptionGroup("holding the ignored exception", [Skip("not ignored in a group")]),
    lambda: BaseExceptionGroup("holding a CancelledError", [asyncio.CancelledError()]),
    lambda: ExceptionGroup("broken members", [_StrRaises(), _StrAndReprRaise()]),
    lambda: ExceptionGroup("many", [ValueError(str(index)) for index in range(100)]),
)
"""Exception groups: nested, mixed, holding ``BaseException``s and broken members."""


def _ignored(number: int) -> BaseException | None:
    kind = number % 4
    if kind == 0:
        return Skip("control flow")
    if kind == 1:
        error = Skip("control flow, chained")
        error.__cause__ = ValueError("why")
        return error
    return None


# --- hooks ----------------------------------------------------------------


class Raise:
    """A hook answer that raises a fresh exception from ``factory``."""

    __slots__ = ("factory",)

    def __init__(self, factory: Factory) -> None:
        self.factory = factory


Answer = tuple[object, bool]
"""A hook's answer (a value, or ``Raise``) and whether workit must count it as a failure."""

ACTIVE_ANSWERS: Final[tuple[Answer, ...]] = (
    (True, False),
    (Raise(lambda: ValueError("active() failed")), True),
    (True, False),
    (False, False),
    ("yes", True),
    (True, False),
    (Raise(KeyboardInterrupt), True),
    (None, True),
    (Raise(lambda: asyncio.CancelledError("raised by active()")), True),
    (1, True),
)
COOLER_ANSWERS: Final[tuple[Answer, ...]] = (
    (0.5, False),
    (-1.0, True),
    (0.4, False),
    (math.nan, True),
    ("soon", True),
    (timedelta(seconds=0.6), False),
    (None, True),
    (Raise(lambda: RuntimeError("cooler() failed")), True),
    (True, True),
    (Raise(lambda: SystemExit("raised by cooler()")), True),
    (timedelta(seconds=-1), True),
)
TIMEOUT_ANSWERS: Final[tuple[Answer, ...]] = (
    (1.0, False),
    (Raise(lambda: ValueError("timeout() failed")), True),
    (None, False),
    (-1, True),
    (math.nan, True),
    ("x", True),
    (timedelta(seconds=1), False),
    (Raise(KeyboardInterrupt), True),
)


class Hook:
    """An ``active``, ``cooler`` or ``timeout`` method: answers from a cycle.

    Every answer workit must reject (raised, or an invalid value) is added
    to the owner's ``hook_failures``.
    """

    __slots__ = ("_answers", "_calls", "_owner")

    def __init__(self, owner: Soaker, answers: Sequence[Answer], *, offset: int = 0) -> None:
        self._owner = owner
        self._answers = answers
        self._calls = offset

    def __call__(self) -> object:
        value, fails = self._answers[self._calls % len(self._answers)]
        self._calls += 1
        if fails:
            self._owner.hook_failures += 1
        if isinstance(value, Raise):
            raise value.factory()
        return value


class Flip:
    """A ``cooler`` method that answers ``cooler`` and flips its owner's ``active`` attribute.

    ``cooler()`` is asked after every execution, skipped ones included, so
    ``active`` (a plain attribute, read by workit before each execution)
    alternates between ``True`` and ``False``.
    """

    __slots__ = ("_cooler", "_owner")

    def __init__(self, owner: Soaker, cooler: float) -> None:
        self._owner = owner
        self._cooler = cooler

    def __call__(self) -> float:
        self._owner.active = not self._owner.active
        return self._cooler


# --- handlers -------------------------------------------------------------


def _work() -> int:
    """A few microseconds of work: what a healthy sync handler does."""
    return sum(range(200))


class Soaker:
    """A soak handler: ``plan`` says what each execution does; it counts itself.

    ``cooler``, ``active`` and ``timeout`` are plain attributes or ``Hook``s
    (callables, which workit calls as methods); a ``None`` cooler or timeout
    means the handler declares none.
    """

    ensure: Callable[[], object]  # each kind of soaker defines it

    def __init__(
        self,
        name: str,
        *,
        group: str,
        family: str,
        plan: Callable[[int], Step],
        cooler: float | None,
        timeout: float | None = None,
    ) -> None:
        self.name = name
        self.group = group
        self.family = family
        self.plan = plan
        self.cooler: object = cooler
        self.timeout: object = timeout
        self.active: object = True
        self.started = 0
        self.hook_failures = 0
        self.busy = 0.0  # seconds spent inside ensure(), for the expected rate

    @property
    def is_async(self) -> bool:
        """Whether ``ensure`` is a coroutine function."""
        return False

    @property
    def nominal_cooler(self) -> float:
        """The cooler as a number (for the expected rate of healthy handlers)."""
        return self.cooler if isinstance(self.cooler, float) else math.nan

    def _begin(self) -> Step:
        number = self.started
        self.started = number + 1
        return self.plan(number)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"


class AsyncSoaker(Soaker):
    """A soak handler with ``async def ensure``."""

    @property
    def is_async(self) -> bool:
        return True

    async def ensure(self) -> None:
        step = self._begin()
        start = perf_counter()
        try:
            if step is None:
                await asyncio.sleep(0)
            elif isinstance(step, _Hang):
                await anyio.sleep_forever()
            elif isinstance(step, BaseException):
                raise step
            else:
                await asyncio.sleep(step)
        finally:
            self.busy += perf_counter() - start


class SyncSoaker(Soaker):
    """A soak handler with a plain ``def ensure``, which workit runs in a thread."""

    def __init__(
        self,
        name: str,
        *,
        group: str,
        family: str,
        plan: Callable[[int], Step],
        cooler: float | None,
        timeout: float | None = None,
        hangs: Hangs,
    ) -> None:
        super().__init__(
            name, group=group, family=family, plan=plan, cooler=cooler, timeout=timeout
        )
        self.hangs = hangs

    def ensure(self) -> None:
        step = self._begin()
        start = perf_counter()
        try:
            if step is None:
                _work()
            elif isinstance(step, _Hang):
                self.hangs.block()
            elif isinstance(step, BaseException):
                raise step
            else:
                time.sleep(step)
        finally:
            self.busy += perf_counter() - start


class _Awaitable:
    """Not a coroutine, yet awaitable: what a sync ``ensure()`` must not return either."""

    def __await__(self) -> Generator[None, None, None]:
        yield


async def _forgotten() -> None:
    """The coroutine a sync ``ensure()`` returns by mistake (workit closes it)."""


class MistakeSync(Soaker):
    """A plain ``def ensure`` that returns a coroutine or an awaitable, as if forgetting ``async``.

    One execution in three returns a coroutine, one an awaitable object, one
    ``None``; workit must fail the first two with a ``TypeError``.
    """

    def ensure(self) -> object:
        number = self.started
        self.started = number + 1
        kind = number % 3
        if kind == 0:
            return _forgotten()
        if kind == 1:
            return _Awaitable()
        return None


# --- the catalogue --------------------------------------------------------


def _cycle(factories: Sequence[Factory], offset: int) -> Callable[[int], Step]:
    def plan(number: int) -> Step:
        return factories[(number + offset) % len(factories)]()

    return plan


def _constant(step: Step) -> Callable[[int], Step]:
    def plan(number: int) -> Step:
        return step

    return plan


def _alternate(first: Step, second: Step) -> Callable[[int], Step]:
    def plan(number: int) -> Step:
        return first if number % 2 == 0 else second

    return plan


def _every(period: int, factory: Factory, offset: int = 0) -> Callable[[int], Step]:
    """A plan that raises one execution in ``period`` and succeeds otherwise."""

    def plan(number: int) -> Step:
        return factory() if (number + offset) % period == period - 1 else None

    return plan


def _spread(index: int, count: int, low: float, high: float) -> float:
    """``count`` values from ``low`` to ``high``, evenly spaced; the ``index``-th."""
    return low if count <= 1 else low + (high - low) * index / (count - 1)


@dataclass(slots=True)
class Zoo:
    """The soak's handlers, by the worker that runs them."""

    hangs: Hangs
    plain: list[Soaker] = field(default_factory=list)
    """For a ``ParallelWorker`` without backoff."""
    backoff: list[Soaker] = field(default_factory=list)
    """For a ``ParallelWorker`` with a ``workit.Backoff``."""
    steps: list[list[Soaker]] = field(default_factory=list)
    """For a ``SequenceWorker`` of steps."""
    # Keys typed ``object``: Mapping keys are invariant (SequenceWorker takes Mapping[object, ...]).
    graph: dict[object, list[Soaker]] = field(default_factory=dict)
    """For a ``SequenceWorker`` of a DAG."""

    @property
    def handlers(self) -> list[Soaker]:
        """Every handler, sequence nodes included."""
        nodes = [node for step in self.steps for node in step]
        return [
            *self.plain,
            *self.backoff,
            *nodes,
            *(n for n in self.graph if isinstance(n, Soaker)),
        ]

    def families(self) -> dict[str, int]:
        """How many handlers each family has."""
        counts: dict[str, int] = {}
        for handler in self.handlers:
            counts[handler.family] = counts.get(handler.family, 0) + 1
        return counts


class _Builder:
    def __init__(self, zoo: Zoo) -> None:
        self.zoo = zoo

    def family(
        self,
        family: str,
        count: int,
        *,
        group: str,
        sync: bool,
        plan: Callable[[int], Callable[[int], Step]],
        coolers: tuple[float, float],
        timeouts: tuple[float, float] | None = None,
        into: list[Soaker] | None = None,
    ) -> list[Soaker]:
        """``count`` handlers ``family-0`` ...; ``plan(index)`` is the plan of the index-th."""
        made: list[Soaker] = []
        for index in range(count):
            cooler = round(_spread(index, count, *coolers), 4)
            timeout = None if timeouts is None else round(_spread(index, count, *timeouts), 4)
            name = f"{family}-{index}"
            handler: Soaker
            if sync:
                handler = SyncSoaker(
                    name,
                    group=group,
                    family=family,
                    plan=plan(index),
                    cooler=cooler,
                    timeout=timeout,
                    hangs=self.zoo.hangs,
                )
            else:
                handler = AsyncSoaker(
                    name,
                    group=group,
                    family=family,
                    plan=plan(index),
                    cooler=cooler,
                    timeout=timeout,
                )
            made.append(handler)
        (self.zoo.plain if into is None else into).extend(made)
        return made


FAULT_COOLERS: Final = (0.1, 1.0)
HEALTHY_COOLERS: Final = (1.0, 2.0)
SHORT_TIMEOUTS: Final = (0.05, 0.2)
SLOW: Final = 0.3
"""How long the slow handlers take, longer than any of their timeouts."""


def build() -> Zoo:
    """The 2,000 handlers."""
    zoo = Zoo(hangs=Hangs())
    add = _Builder(zoo).family

    # Faults in ensure(), both flavours.
    for sync in (False, True):
        kind = "sync" if sync else "async"
        add(
            f"raise-{kind}",
            40,
            group="ensure",
            sync=sync,
            plan=lambda i: _cycle(EXCEPTIONS, i),
            coolers=FAULT_COOLERS,
        )
        add(
            f"base-{kind}",
            20,
            group="ensure",
            sync=sync,
            plan=lambda i: _cycle(BASE_EXCEPTIONS, i),
            coolers=FAULT_COOLERS,
        )
        add(
            f"broken-str-{kind}",
            20,
            group="ensure",
            sync=sync,
            plan=lambda i: _cycle(BROKEN_STR, i),
            coolers=FAULT_COOLERS,
        )
        add(
            f"group-{kind}",
            20,
            group="ensure",
            sync=sync,
            plan=lambda i: _cycle(GROUP_EXCEPTIONS, i),
            coolers=FAULT_COOLERS,
        )
        add(
            f"ignored-{kind}",
            20,
            group="ensure",
            sync=sync,
            plan=lambda i: _ignored,
            coolers=FAULT_COOLERS,
        )
        # Hanging forever: 10 with no timeout (in flight to the end), 10 timed out.
        add(
            f"hang-{kind}",
            10,
            group="ensure",
            sync=sync,
            plan=lambda i: _constant(HANG),
            coolers=(0.5, 0.5),
        )
        add(
            f"hang-timeout-{kind}",
            10,
            group="ensure",
            sync=sync,
            plan=lambda i: _constant(HANG),
            coolers=(0.5, 0.5),
            timeouts=SHORT_TIMEOUTS,
        )
        # Slower than their timeout: always, or one execution in two.
        add(
            f"slow-{kind}",
            25,
            group="ensure",
            sync=sync,
            plan=lambda i: _constant(SLOW),
            coolers=FAULT_COOLERS,
            timeouts=SHORT_TIMEOUTS,
        )
        add(
            f"sometimes-slow-{kind}",
            25,
            group="ensure",
            sync=sync,
            plan=lambda i: _alternate(SLOW, 0.01),
            coolers=FAULT_COOLERS,
            timeouts=SHORT_TIMEOUTS,
        )
    for index in range(20):
        zoo.plain.append(
            MistakeSync(
                f"mistake-sync-{index}",
                group="ensure",
                family="mistake-sync",
                plan=_constant(None),
                cooler=round(_spread(index, 20, *FAULT_COOLERS), 4),
            )
        )

    # Faults in the hooks; ensure() always succeeds.
    for sync in (False, True):
        kind = "sync" if sync else "async"
        for handler in add(
            f"flip-active-{kind}",
            30,
            group="hooks",
            sync=sync,
            plan=lambda i: _constant(None),
            coolers=FAULT_COOLERS,
        ):
            if sync:  # an attribute flipped by cooler()
                handler.cooler = Flip(handler, handler.nominal_cooler)
            else:  # a method answering True and False in turn
                handler.active = Hook(handler, ((True, False), (False, False)))
        for index, handler in enumerate(
            add(
                f"active-hook-{kind}",
                20,
                group="hooks",
                sync=sync,
                plan=lambda i: _constant(None),
                coolers=FAULT_COOLERS,
            )
        ):
            handler.active = Hook(handler, ACTIVE_ANSWERS, offset=index)
        for index, handler in enumerate(
            add(
                f"cooler-hook-{kind}",
                30,
                group="hooks",
                sync=sync,
                plan=lambda i: _constant(None),
                coolers=FAULT_COOLERS,
            )
        ):
            handler.cooler = Hook(handler, COOLER_ANSWERS, offset=index)
        for index, handler in enumerate(
            add(
                f"timeout-hook-{kind}",
                20,
                group="hooks",
                sync=sync,
                plan=lambda i: _constant(None),
                coolers=FAULT_COOLERS,
            )
        ):
            handler.timeout = Hook(handler, TIMEOUT_ANSWERS, offset=index)

    # Failing again and again, in the worker with a backoff.
    def refused() -> BaseException:
        return ConnectionRefusedError(errno.ECONNREFUSED, "connection refused")

    add(
        "backoff-always-async",
        40,
        group="backoff",
        sync=False,
        plan=lambda i: _every(1, refused),
        coolers=(0.0, 0.0),
        into=zoo.backoff,
    )
    add(
        "backoff-always-sync",
        30,
        group="backoff",
        sync=True,
        plan=lambda i: _every(1, refused),
        coolers=(0.0, 0.0),
        into=zoo.backoff,
    )
    add(
        "backoff-flapping-async",
        30,
        group="backoff",
        sync=False,
        plan=lambda i: _flapping(i),
        coolers=(0.1, 0.1),
        into=zoo.backoff,
    )

    _sequences(zoo)

    # The rest: healthy handlers, an eighth of them sync.
    healthy = HANDLERS - len(zoo.handlers)
    add(
        "healthy-sync",
        healthy // 8,
        group="healthy",
        sync=True,
        plan=lambda i: _constant(None),
        coolers=HEALTHY_COOLERS,
    )
    add(
        "healthy-async",
        healthy - healthy // 8,
        group="healthy",
        sync=False,
        plan=lambda i: _constant(None),
        coolers=HEALTHY_COOLERS,
    )
    assert len(zoo.handlers) == HANDLERS, len(zoo.handlers)
    return zoo


def _flapping(index: int) -> Callable[[int], Step]:
    """Three failures, then a success, which resets the backoff."""

    def plan(number: int) -> Step:
        if (number + index) % 4 == 3:
            return None
        return ConnectionResetError(errno.ECONNRESET, "connection reset")

    return plan


def _sequences(zoo: Zoo) -> None:
    """Two pipelines: steps (cooler 1 s) and a DAG (cooler 1 s, with a backoff)."""
    hangs = zoo.hangs

    def node(name: str, plan: Callable[[int], Step], *, sync: bool = False) -> Soaker:
        if sync:
            return SyncSoaker(
                name, group="sequence", family="sequence", plan=plan, cooler=None, hangs=hangs
            )
        return AsyncSoaker(name, group="sequence", family="sequence", plan=plan, cooler=None)

    fetch = node("steps-fetch", _constant(None))
    parse = node("steps-parse", _every(4, lambda: ValueError("unparsable")), sync=True)
    skip = node("steps-filter", _every(3, lambda: Skip("nothing new")))
    store = node("steps-store", _constant(None))
    report = node("steps-report", _constant(None), sync=True)
    zoo.steps = [[fetch], [parse, skip], [store], [report]]

    root = node("dag-root", _constant(None))
    gate = node("dag-gate", _constant(None))
    gate.active = Hook(gate, ACTIVE_ANSWERS)
    slow = node("dag-slow", lambda number: SLOW if number % 3 == 2 else 0.01)
    slow.timeout = 0.15
    base = node("dag-base", _every(4, lambda: _CustomBase("from a DAG node")))
    broken = node("dag-broken", _every(5, _StrAndReprRaise))
    mistake = MistakeSync(
        "dag-mistake", group="sequence", family="sequence", plan=_constant(None), cooler=None
    )
    zoo.graph = {
        root: [],
        gate: [root],
        slow: [root],
        base: [gate, slow],
        mistake: [base],
        broken: [root],
    }
