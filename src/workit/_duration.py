"""Durations: seconds as ``int``/``float`` or a ``timedelta``, floats inside."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import TypeAlias

__all__ = ["Duration", "seconds"]

Duration: TypeAlias = "float | timedelta"
"""A duration given by a user: seconds (``int`` or ``float``) or a ``timedelta``."""


def seconds(value: object, what: str) -> float:
    """``value`` as a float number of seconds, or an error naming ``what``.

    Infinity is allowed (it means "never"); negative numbers, NaN, ``bool``
    and anything that is not a number or ``timedelta`` are not.
    """
    kind = type(value)
    if kind is float or kind is int:
        result = float(value)  # type: ignore[arg-type]  # narrowed by the type check above
    elif isinstance(value, timedelta):
        result = value.total_seconds()
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = float(value)
    else:
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, got {value!r}")
    if result >= 0:
        return result
    if math.isnan(result):
        raise ValueError(f"{what} must be a number of seconds, got NaN")
    raise ValueError(f"{what} must not be negative, got {value!r}")
