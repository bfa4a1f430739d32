"""What every child measures with: CPU time, resident memory, percentiles, probes.

The probes are the jobs every system runs, so the work done per execution,
counting included, is the same code whatever system schedules it.
"""

from __future__ import annotations

import gc
import math
import resource
from time import monotonic, perf_counter
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import threading
    from collections.abc import Sequence

__all__ = [
    "Blocker",
    "GcPauses",
    "Probe",
    "Stopwatch",
    "Window",
    "cpu_seconds",
    "executions",
    "percentile",
    "rss_bytes",
]


def cpu_seconds() -> float:
    """CPU time (user + system) this process has used so far, all threads included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def rss_bytes() -> int:
    """Resident set size (``VmRSS`` of ``/proc/self/status``) after a full collection."""
    gc.collect()
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS line in /proc/self/status")


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile of ``values`` (``fraction`` in [0, 1]); NaN when empty."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


class Stopwatch:
    """Wall and CPU seconds since it was made (or last ``restart()``)."""

    __slots__ = ("_cpu", "_wall")

    def __init__(self) -> None:
        self._wall = perf_counter()
        self._cpu = cpu_seconds()

    def restart(self) -> None:
        """Measure from now on."""
        self._wall = perf_counter()
        self._cpu = cpu_seconds()

    def elapsed(self) -> tuple[float, float]:
        """Wall seconds and CPU seconds elapsed."""
        return perf_counter() - self._wall, cpu_seconds() - self._cpu


class GcPauses:
    """Garbage-collector pauses while in its ``with`` block: full collections, longest and total.

    A full (generation 2) collection walks every tracked object, so its pause
    grows with the number of objects each handler keeps; every execution due
    during it starts late.
    """

    __slots__ = ("_started", "full_collections", "longest", "total")

    def __init__(self) -> None:
        self.full_collections = 0
        self.longest = 0.0
        self.total = 0.0
        self._started = 0.0

    def __enter__(self) -> GcPauses:
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc_info: object) -> None:
        gc.callbacks.remove(self._callback)

    def _callback(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._started = perf_counter()
            return
        pause = perf_counter() - self._started
        self.total += pause
        self.longest = max(self.longest, pause)
        if info["generation"] == 2:
            self.full_collections += 1


class Window:
    """The measured window: probes count executions only while it is open.

    With ``track_lateness``, probes append each execution's lateness
    (seconds) to ``samples`` all the time, in the window or not, so that an
    execution costs the same before, in and after the window; ``lateness``
    is the part taken while the window was open. (Were the samples taken in
    the window only, the first executions in it would each cost a little
    more than their predecessors: with 10,000 handlers running back to back,
    that adds up to milliseconds of lateness at the tail of the first cycle.)
    """

    __slots__ = ("_closed_at", "_opened_at", "open", "samples")

    def __init__(self, *, track_lateness: bool) -> None:
        self.open = False
        self.samples: list[float] | None = [] if track_lateness else None
        self._opened_at = self._closed_at = 0

    def discard(self) -> None:
        """Drop the samples taken so far (before the window opens)."""
        if self.samples is not None:
            self.samples.clear()

    def begin(self) -> None:
        """Open the window."""
        self.open = True
        self._opened_at = len(self.samples or ())

    def end(self) -> None:
        """Close the window."""
        self.open = False
        self._closed_at = len(self.samples or ())

    @property
    def lateness(self) -> list[float]:
        """The lateness samples taken while the window was open."""
        return (self.samples or [])[self._opened_at : self._closed_at]


class Probe:
    """One job: it counts its own executions and measures its own lateness.

    Lateness of execution *k* is its start minus (the end of execution *k-1*
    plus ``cooler``), both read with ``time.monotonic()`` inside the job, so
    it is what a user of the system would observe from inside a handler.
    ``run`` is the async job, ``run_sync`` the plain-function one; both do
    exactly the same work.
    """

    __slots__ = ("cooler", "executions", "last_end", "window")

    def __init__(self, window: Window, cooler: float) -> None:
        self.window = window
        self.cooler = cooler
        self.executions = 0
        self.last_end: float | None = None

    def tick(self) -> None:
        """Record one execution."""
        start = monotonic()
        window = self.window
        if window.open:
            self.executions += 1
        samples = window.samples
        if samples is not None and self.last_end is not None:
            samples.append(start - self.last_end - self.cooler)
        self.last_end = monotonic()

    async def run(self) -> None:
        """The async job: one no-op execution, recorded."""
        self.tick()

    def run_sync(self) -> None:
        """The plain-function job: one no-op execution, recorded."""
        self.tick()


class Blocker:
    """A plain-function job that blocks its thread until ``release`` is set."""

    __slots__ = ("release",)

    def __init__(self, release: threading.Event) -> None:
        self.release = release

    def run_sync(self) -> None:
        """Block until released."""
        self.release.wait()


def executions(probes: Sequence[Probe]) -> int:
    """How many executions ``probes`` recorded inside the window."""
    return sum(probe.executions for probe in probes)
