"""The execution context: which handler execution the running code belongs to."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import datetime  # noqa: TC003  # a dataclass field's type
from typing import Any, Protocol

__all__ = ["Execution", "current"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Execution:
    """The handler execution that the calling code runs in.

    ``handler`` is the handler's name; ``attempt`` counts the executions in a
    row that this one is, 1 after a success (3: the two before it failed);
    ``started`` is when it started (UTC); ``claim`` is the fleet's claim on
    the handler when its engine runs under leases, else ``None``.
    """

    handler: str
    attempt: int
    started: datetime
    claim: object | None = None
    _source: object = field(default=None, repr=False, compare=False)

    def is_of(self, handler: object) -> bool:
        """Whether this is an execution of ``handler`` (an engine's wrapped handler)."""
        return self._source is handler


class _Executing(Protocol):
    """What the context variable holds: the handler's object in the engine."""

    def execution(self) -> Execution | None: ...


# Set once per task that runs executions (a parallel loop, a node of a pass)
# to the handler's object in the engine, which knows whether it is executing
# now, and to the task (asyncio's, else None): nothing is made, and no
# variable set, per execution.
_executing: ContextVar[tuple[_Executing, Any] | None] = ContextVar("workit_execution", default=None)


def current() -> Execution | None:
    """The execution the calling code runs in, or ``None`` outside one.

    Works in async handlers, in sync handlers (their worker thread gets the
    context) and in tasks an execution started, while it lasts.
    """
    binding = _executing.get()
    return None if binding is None else binding[0].execution()
