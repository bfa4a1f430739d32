"""How a handler is named: in logs, metric labels and error messages."""

from __future__ import annotations

import functools
import re
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["name", "names", "snake_case"]

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(text: str) -> str:
    """``ArtefactHandler`` -> ``artefact_handler``, ``HTTPSync`` -> ``http_sync``."""
    return _WORD_BOUNDARY.sub("_", text).lower()


def name(handler: object) -> str:
    """The name of ``handler``, as used in logs, metrics and errors.

    In order: the handler's ``name`` attribute when it is a non-empty string;
    for a wrapper (an object with ``unwrap()``), the name of what it wraps;
    otherwise the class name in snake_case. A ``workit.Handler`` made without
    ``name`` has its function's ``__name__`` as its ``name``.
    """
    seen: set[int] = set()
    while True:
        value = getattr(handler, "name", None)
        if isinstance(value, str) and value:
            return value
        unwrap = getattr(handler, "unwrap", None)
        if not callable(unwrap) or id(handler) in seen:
            break
        seen.add(id(handler))
        inner = unwrap()
        if inner is handler:
            break
        handler = inner
    return snake_case(type(handler).__name__)


def function_name(function: object) -> str:
    """The ``__name__`` of a function, looking through ``functools.partial``."""
    while isinstance(function, functools.partial):
        function = function.func
    value = getattr(function, "__name__", None)
    if isinstance(value, str) and value:
        return value
    return snake_case(type(function).__name__)


def names(handlers: Iterable[object]) -> list[str]:
    """The names of ``handlers``, in order."""
    return [name(handler) for handler in handlers]
