"""Helpers the tests share: series names, the fake clock marker, counter reads, handlers,
a handler state."""

from __future__ import annotations

import dataclasses
import threading
from typing import TYPE_CHECKING

import looptime
import pytest
from trio.testing import MockClock

if TYPE_CHECKING:
    import asyncio

    from prometheus_client import CollectorRegistry

    from workit.status import ErrorInfo, Outcome

TOTAL = "worker_handler_execution_total"
DURATION = "worker_handler_execution_duration_seconds"


def _virtual_time_loop() -> asyncio.AbstractEventLoop:
    return looptime.new_event_loop(start=0)


def fake_clock() -> pytest.MarkDecorator:
    """Run the test on a clock that jumps ahead whenever all tasks wait, on both backends:
    asyncio (the production path) with a virtual-time event loop, and trio's MockClock."""
    return pytest.mark.parametrize(
        "anyio_backend",
        [
            pytest.param(("asyncio", {"loop_factory": _virtual_time_loop}), id="asyncio-looptime"),
            pytest.param(("trio", {"clock": MockClock(autojump_threshold=0)}), id="trio-mockclock"),
        ],
    )


def executions(prom: CollectorRegistry, handler: str, success: bool, env: str = "test") -> float:
    """The execution counter of ``handler`` (0 when never recorded)."""
    labels = {"env": env, "handler": handler, "success": "true" if success else "false"}
    return prom.get_sample_value(TOTAL, labels) or 0.0


class BlocksFirst:
    """A sync handler whose first execution blocks its thread until ``gate`` is set
    (for ``limit`` seconds at most, when given); it notes the most executions at once."""

    def __init__(
        self, name: str, *, cooler: float, timeout: float | None = None, limit: float | None = None
    ) -> None:
        self.name = name
        self.cooler = cooler
        self.timeout = timeout
        self.limit = limit
        self.gate = threading.Event()
        self.calls = 0
        self.running = 0
        self.most = 0
        self._lock = threading.Lock()

    def ensure(self) -> None:
        with self._lock:
            self.calls += 1
            self.running += 1
            self.most = max(self.most, self.running)
            first = self.calls == 1
        try:
            if first:
                self.gate.wait(self.limit)
        finally:
            with self._lock:
                self.running -= 1


@dataclasses.dataclass(slots=True)
class FakeState:
    """A handler's live state as a metrics backend observes it, set by the test."""

    running: bool = False
    last_success: float | None = None
    consecutive_failures: int = 0
    last_outcome: Outcome | None = None
    last_error: ErrorInfo | None = None
    owned: bool | None = None
