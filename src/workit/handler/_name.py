"""How a handler is named: in logs, metric labels and error messages."""

from __future__ import annotations

import functools
import inspect
import re
import types
from typing import TYPE_CHECKING

from workit.errors import describe

if TYPE_CHECKING:
    from collections.abc import Iterable

__all__ = ["UNWRAP_DEPTH", "name", "names", "read", "snake_case"]

UNWRAP_DEPTH = 100
"""How many ``unwrap()`` calls make a chain of wrappers at most. An object
whose ``unwrap()`` goes on making new objects (a ``unittest.mock.Mock`` does)
is not a wrapper: past this depth it is taken as the handler itself."""

_MISSING = object()

_WORD_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def snake_case(text: str) -> str:
    """``ArtefactHandler`` -> ``artefact_handler``, ``HTTPSync`` -> ``http_sync``."""
    return _WORD_BOUNDARY.sub("_", text).lower()


def read(handler: object, part: str, who: str) -> object:
    """``handler.part``, or ``None`` when the handler has no such attribute.

    A property that raises is a ``TypeError`` naming ``who`` and ``part``
    (with the property's error as its cause): its error would say nothing
    of which handler it came from, and ``getattr(handler, part, None)``
    would even take an ``AttributeError`` raised inside it for "no such part".
    """
    try:
        return getattr(handler, part)
    except AttributeError as error:
        if not _defined(handler, part):
            return None
        raise TypeError(f"{who}: reading its {part} raised {describe(error)}") from error
    except Exception as error:
        raise TypeError(f"{who}: reading its {part} raised {describe(error)}") from error


def _defined(handler: object, part: str) -> bool:
    """Whether ``part`` is defined on ``handler`` or its class, without running any code
    (an empty slot does not count: it is an attribute never set)."""
    try:
        static = inspect.getattr_static(handler, part, _MISSING)
    except Exception:
        return False
    return static is not _MISSING and not isinstance(static, types.MemberDescriptorType)


def name(handler: object) -> str:
    """The name of ``handler``, as used in logs, metrics and errors.

    In order: the handler's ``name`` attribute when it is a non-empty string;
    for a wrapper (an object with ``unwrap()``), the name of what it wraps;
    otherwise the class name in snake_case. A ``workit.Handler`` made without
    ``name`` has its function's ``__name__`` as its ``name``. A ``name``
    property or an ``unwrap()`` that raises is a ``TypeError`` naming the
    handler's class.
    """
    current = handler
    seen: set[int] = set()
    chain = []  # alive while walked, so that no id in ``seen`` is reused meanwhile
    for _ in range(UNWRAP_DEPTH):
        who = f"{type(current).__qualname__} handler"
        value = read(current, "name", who)
        if isinstance(value, str) and value:
            return value
        unwrap = read(current, "unwrap", who)
        if not callable(unwrap) or id(current) in seen:
            break
        seen.add(id(current))
        chain.append(current)
        try:
            inner = unwrap()
        except Exception as error:
            raise TypeError(f"{who}: its unwrap() raised {describe(error)}") from error
        if inner is current:
            break
        current = inner
    else:
        current = handler  # no end to the chain: not a wrapper
    return snake_case(type(current).__name__)


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
