"""The threads of sync executions given up on (at a timeout or a stop) that still run.

The interpreter waits at exit for every thread that is not a daemon, and such a
thread may never return: ``workit run`` leaves these behind, and only these.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading

__all__ = ["abandoned", "returned", "still_running"]

_threads: set[threading.Thread] = set()


def abandoned(thread: threading.Thread) -> None:
    """``thread`` runs an execution the engine gave up on."""
    _threads.add(thread)


def returned(thread: threading.Thread) -> None:
    """``thread`` is done with the execution it was running."""
    _threads.discard(thread)


def still_running() -> list[threading.Thread]:
    """The threads that would hold the exit: alive, not daemons, running an abandoned execution."""
    return [thread for thread in tuple(_threads) if thread.is_alive() and not thread.daemon]
