"""``workit.Handler``: a handler made from a plain function."""

from __future__ import annotations

from typing import TYPE_CHECKING

from workit._duration import seconds
from workit.handler._name import function_name

if TYPE_CHECKING:
    from collections.abc import Callable

    from workit._duration import Duration

__all__ = ["Handler"]


class Handler:
    """A handler made from a function or coroutine function.

    ``ensure`` is called once per execution: a coroutine function runs on the
    event loop, a plain function in a worker thread. ``cooler``, ``active`` and
    ``timeout`` take the values a handler class would declare (``active`` may
    also be a function returning ``bool``); ``name`` defaults to the function's
    ``__name__``. A parallel worker needs ``cooler``.
    """

    __slots__ = ("active", "cooler", "ensure", "name", "timeout")

    ensure: Callable[[], object]
    cooler: float | None
    timeout: float | None
    active: bool | Callable[[], bool]
    name: str

    def __init__(
        self,
        ensure: Callable[[], object],
        *,
        cooler: Duration | None = None,
        active: bool | Callable[[], bool] = True,
        name: str | None = None,
        timeout: Duration | None = None,
    ) -> None:
        if not callable(ensure):
            raise TypeError(f"Handler needs a function to call, got {ensure!r}")
        if not (isinstance(active, bool) or callable(active)):
            raise TypeError(f"Handler active must be a bool or a function, got {active!r}")
        if name is not None and not (isinstance(name, str) and name):
            raise ValueError(f"Handler name must be a non-empty string, got {name!r}")
        self.name = name if name is not None else function_name(ensure)
        self.ensure = ensure
        self.cooler = None if cooler is None else seconds(cooler, f"{self.name}: cooler")
        self.timeout = None if timeout is None else seconds(timeout, f"{self.name}: timeout")
        self.active = active

    def __repr__(self) -> str:
        return f"Handler({self.name!r}, cooler={self.cooler!r})"
