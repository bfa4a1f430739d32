"""``workit.Handler``: a handler made from a plain function."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workit._duration import seconds
from workit.handler._name import function_name
from workit.handler._proxy import check_fraction, never_runs, not_plain

if TYPE_CHECKING:
    from collections.abc import Callable

    from workit._duration import Duration

__all__ = ["Handler"]


class Handler:
    """A handler made from a function or coroutine function.

    ``ensure`` is called once per execution, without arguments: a coroutine
    function runs on the event loop, a plain function in a worker thread.
    ``cooler``, ``active`` and ``timeout`` take the values a handler class
    would declare (``active`` may also be a plain function returning
    ``bool``); ``name`` defaults to the function's ``__name__``. ``jitter``
    (from 0 to 1, default 0) is the share by which the parallel engine varies
    each cooler at random, either way, so that handlers started together drift
    apart. A parallel
    worker needs ``cooler``. What could never run (a generator function, a
    function needing arguments, an ``async`` ``active``) is refused here.
    """

    __slots__ = ("active", "cooler", "ensure", "jitter", "name", "timeout")

    ensure: Callable[[], object]
    cooler: float | None
    timeout: float | None
    active: bool | Callable[[], bool]
    jitter: float | None
    name: str

    def __init__(
        self,
        ensure: Callable[[], object],
        *,
        cooler: Duration | None = None,
        active: bool | Callable[[], bool] = True,
        name: str | None = None,
        timeout: Duration | None = None,
        jitter: float = 0,
    ) -> None:
        if not callable(ensure):
            raise TypeError(f"Handler needs a function to call, got {ensure!r}")
        if not (isinstance(active, bool) or callable(active)):
            raise TypeError(f"Handler active must be a bool or a function, got {active!r}")
        if name is not None and not (isinstance(name, str) and name):
            raise ValueError(f"Handler name must be a non-empty string, got {name!r}")
        self.name = name if name is not None else function_name(ensure)
        problem = never_runs(ensure)
        if problem is None and not isinstance(active, bool):
            problem = not_plain("active", active)
        if problem is not None:
            raise TypeError(f"Handler {self.name!r}: {problem}")
        self.ensure = ensure
        self.cooler = _seconds(cooler, f"{self.name}: cooler")
        self.timeout = _seconds(timeout, f"{self.name}: timeout")
        self.active = active
        # 0 is "no jitter": declared as absent, so the engine draws nothing per cooler.
        self.jitter = check_fraction(jitter, f"{self.name}: jitter") or None

    def __repr__(self) -> str:
        return f"Handler({self.name!r}, cooler={self.cooler!r})"


def _seconds(value: object, what: str) -> float | None:
    if value is None:
        return None
    try:
        return seconds(value, what)
    except OverflowError:  # an int too large for a float
        raise ValueError(
            f"{what} is too large a number; use math.inf for a duration without end"
        ) from None
