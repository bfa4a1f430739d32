"""The handler protocol and everything that wraps a handler.

A handler is any object with an ``ensure()`` method; ``cooler``, ``active``,
``timeout`` and ``name`` are optional (see ``Proxy`` for their defaults).
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from workit.handler._execution import Execution, current
from workit.handler._function import Handler
from workit.handler._instrument import Instrumented
from workit.handler._name import name, names
from workit.handler._proxy import Proxy

__all__ = [
    "Execution",
    "Handler",
    "Instrumented",
    "Proxy",
    "SupportsEnsure",
    "current",
    "name",
    "names",
]


@runtime_checkable
class SupportsEnsure(Protocol):
    """What every handler has: ``ensure()``, sync or ``async``.

    A coroutine function runs on the event loop; a plain function runs in a
    worker thread. The return value is ignored; raising is a failure.
    """

    def ensure(self) -> object:
        """Run the business logic once."""
        ...
