"""``Backoff``: waiting longer after each consecutive failure."""

from __future__ import annotations

import random as _random
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from workit._duration import seconds

if TYPE_CHECKING:
    from collections.abc import Callable

    from workit._duration import Duration

__all__ = ["Backoff"]


@dataclass(frozen=True, slots=True, init=False)
class Backoff:
    """Exponential backoff with jitter after consecutive failures.

    After the *n*-th failure in a row a handler waits
    ``min(maximum, initial * multiplier ** (n - 1))`` seconds, less up to
    ``jitter`` of it at random (so that handlers failing together spread out),
    or its cooler if that is longer. A success, or an exception the registry
    ignores, resets the count. ``random`` is the source of jitter, for tests.
    """

    initial: float
    """Seconds to wait after the first failure."""
    maximum: float
    """The longest wait, in seconds."""
    multiplier: float
    """How much longer each wait is than the one before."""
    jitter: float
    """The largest share of a wait, from 0 to 1, taken off it at random."""
    random: Callable[[], float] = field(repr=False, compare=False)
    """The source of jitter: a function returning a float in [0, 1)."""

    def __init__(
        self,
        *,
        initial: Duration = 1.0,
        maximum: Duration = 300.0,
        multiplier: float = 2.0,
        jitter: float = 0.1,
        random: Callable[[], float] = _random.random,
    ) -> None:
        first = seconds(initial, "Backoff initial")
        longest = seconds(maximum, "Backoff maximum")
        if first <= 0:
            raise ValueError(f"Backoff initial must be positive, got {initial!r}")
        if longest < first:
            raise ValueError(f"Backoff maximum {maximum!r} is less than initial {initial!r}")
        if isinstance(multiplier, bool) or not multiplier >= 1:
            raise ValueError(f"Backoff multiplier must be a number >= 1, got {multiplier!r}")
        if isinstance(jitter, bool) or not 0 <= jitter <= 1:
            raise ValueError(f"Backoff jitter must be between 0 and 1, got {jitter!r}")
        if not callable(random):
            raise TypeError(f"Backoff random must be a function, got {random!r}")
        for name, value in (
            ("initial", first),
            ("maximum", longest),
            ("multiplier", float(multiplier)),
            ("jitter", float(jitter)),
            ("random", random),
        ):
            object.__setattr__(self, name, value)

    def delay(self, failures: int) -> float:
        """Seconds to wait after ``failures`` consecutive failures (0: none)."""
        if failures <= 0:
            return 0.0
        base = self.maximum
        # Past 64 doublings the maximum has long been reached; skip the huge power.
        if failures <= 64:
            base = min(base, self.initial * self.multiplier ** (failures - 1))
        return base * (1.0 - self.jitter * self.random())
