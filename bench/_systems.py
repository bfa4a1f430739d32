"""The systems under comparison: what each must do, and how to get one.

Each system lives in a module of its own, imported only in the child that
runs it, so a child measures one system and nothing else is loaded.
"""

from __future__ import annotations

import importlib.util
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Sequence

    from bench._dag import Dag

__all__ = ["LABELS", "SYSTEMS", "System", "make", "unavailable"]

SYSTEMS = ("workit", "bare", "apscheduler")
"""Every system, in the order of the results table."""

LABELS = {"workit": "workit", "bare": "bare asyncio", "apscheduler": "APScheduler 3.11"}
"""The column heading of each system."""


class System(Protocol):
    """Runs jobs periodically on the running asyncio loop; one instance per run."""

    async def start(
        self,
        jobs: Sequence[Callable[[], object]],
        *,
        cooler: float,
        sync: bool,
        jitter: float = 0.0,
    ) -> None:
        """Run each job repeatedly, ``cooler`` seconds apart, until ``stop()``.

        ``sync`` says the jobs are plain functions (to run off the loop), else
        coroutine functions. ``jitter`` (workit only; the runner skips the
        others) varies each cooler by up to that share either way. Returns
        once every job is scheduled.
        """
        ...

    async def stop(self) -> None:
        """Stop every job and return once the system has shut down."""
        ...

    def dag_pass(self, dag: Dag) -> Callable[[], Awaitable[None]]:
        """A function that runs one pass over ``dag``; ``NotImplementedError`` if unsupported."""
        ...

    def notes(self) -> dict[str, int]:
        """Counts worth reporting beside the measurements (runs the system skipped, say)."""
        ...


def unavailable(name: str) -> str | None:
    """Why system ``name`` cannot run in this environment, or ``None`` when it can."""
    if name == "apscheduler" and importlib.util.find_spec("apscheduler") is None:
        return "apscheduler is not installed (pip install 'workit-jobs[bench]')"
    return None


def make(name: str) -> System:
    """A fresh instance of system ``name``."""
    if name == "workit":
        from bench._workit import Workit

        return Workit()
    if name == "bare":
        from bench._bare import Bare

        return Bare()
    if name == "apscheduler":
        from bench._apscheduler import APScheduler

        return APScheduler()
    raise ValueError(f"unknown system {name!r}; choose from {', '.join(SYSTEMS)}")
