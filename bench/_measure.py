"""What every child measures with: CPU time, resident memory, percentiles, probes.

The probes are the jobs every system runs, so the work done per execution,
counting included, is the same code whatever system schedules it.
"""

from __future__ import annotations

import asyncio
import gc
import math
import resource
import threading
import time
import urllib.request
from time import monotonic, perf_counter
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from collections.abc import Sequence

__all__ = [
    "Blocker",
    "GcPauses",
    "LoopLag",
    "Planned",
    "Poller",
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

    __slots__ = (
        "_closed_at",
        "_opened_at",
        "_planned_closed_at",
        "_planned_opened_at",
        "open",
        "planned_samples",
        "samples",
    )

    def __init__(self, *, track_lateness: bool) -> None:
        self.open = False
        self.samples: list[float] | None = [] if track_lateness else None
        self.planned_samples: list[float] = []
        """Lateness against the wait the system planned (probes with ``planned`` only)."""
        self._opened_at = self._closed_at = 0
        self._planned_opened_at = self._planned_closed_at = 0

    def discard(self) -> None:
        """Drop the samples taken so far (before the window opens)."""
        if self.samples is not None:
            self.samples.clear()
        self.planned_samples.clear()

    def begin(self) -> None:
        """Open the window."""
        self.open = True
        self._opened_at = len(self.samples or ())
        self._planned_opened_at = len(self.planned_samples)

    def end(self) -> None:
        """Close the window."""
        self.open = False
        self._closed_at = len(self.samples or ())
        self._planned_closed_at = len(self.planned_samples)

    @property
    def lateness(self) -> list[float]:
        """The lateness samples taken while the window was open."""
        return (self.samples or [])[self._opened_at : self._closed_at]

    @property
    def planned_lateness(self) -> list[float]:
        """The lateness samples against the planned wait taken while the window was open."""
        return self.planned_samples[self._planned_opened_at : self._planned_closed_at]


class Planned(Protocol):
    """What a system's handler says of its next execution: when it is due (``time.time()``)."""

    @property
    def next_run(self) -> float | None: ...


class Probe:
    """One job: it counts its own executions and measures its own lateness.

    Lateness of execution *k* is its start minus (the end of execution *k-1*
    plus ``cooler``), both read with ``time.monotonic()`` inside the job, so
    it is what a user of the system would observe from inside a handler.
    ``run`` is the async job, ``run_sync`` the plain-function one; both do
    exactly the same work.

    A system that varies each wait (workit's ``jitter``) sets ``planned`` to
    its record of the handler: the probe then also takes, into the window's
    ``planned_samples``, its start (``time.time()``) minus the time the
    system planned it for (``planned.next_run``, set when the previous
    execution ended). That is the lateness a varied wait does not hide.
    """

    __slots__ = ("cooler", "executions", "last_end", "planned", "window")

    def __init__(self, window: Window, cooler: float) -> None:
        self.window = window
        self.cooler = cooler
        self.executions = 0
        self.last_end: float | None = None
        self.planned: Planned | None = None

    def tick(self) -> None:
        """Record one execution."""
        start = monotonic()
        window = self.window
        if window.open:
            self.executions += 1
        samples = window.samples
        if samples is not None and self.last_end is not None:
            samples.append(start - self.last_end - self.cooler)
        planned = self.planned
        if planned is not None:
            due = planned.next_run
            if due is not None:
                window.planned_samples.append(time.time() - due)
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


class LoopLag:
    """A task that sleeps 1 ms again and again and records how late it wakes.

    Each sample is (wake time, lateness), both ``perf_counter()`` seconds,
    taken while ``window`` is open: a sample of L seconds means the loop
    could not run this task for L seconds past its due time (other
    callbacks ran, or the loop's thread waited for the GIL).
    """

    __slots__ = ("samples", "window")

    PERIOD = 0.001

    def __init__(self, window: Window) -> None:
        self.window = window
        self.samples: list[tuple[float, float]] = []

    async def run(self) -> None:
        """Sample until cancelled."""
        period = self.PERIOD
        window = self.window
        samples = self.samples
        while True:
            before = perf_counter()
            await asyncio.sleep(period)
            now = perf_counter()
            if window.open:
                samples.append((now, now - before - period))


class Poller(threading.Thread):
    """A client thread that GETs ``url`` every ``every`` seconds until ``stop()``.

    Per request it keeps (start, end, CPU seconds the loop's thread used
    meanwhile, body bytes): ``loop_clock`` is that thread's CPU clock
    (``time.pthread_getcpuclockid`` of the loop's thread), which another
    thread can read. Requests start at a fixed rate; a slow one delays the
    next rather than overlapping it.
    """

    def __init__(self, url: str, every: float, loop_clock: int) -> None:
        super().__init__(name="status poller", daemon=True)
        self.url = url
        self.every = every
        self.loop_clock = loop_clock
        self.requests: list[tuple[float, float, float, int]] = []
        self.errors: list[str] = []
        self._stopping = threading.Event()
        # No proxy from the environment: the server is on this machine.
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def run(self) -> None:
        due = perf_counter()
        while not self._stopping.is_set():
            started = perf_counter()
            cpu = time.clock_gettime(self.loop_clock)
            try:
                with self._opener.open(self.url, timeout=30) as response:
                    size = len(response.read())
            except OSError as error:
                self.errors.append(f"{type(error).__name__}: {error}")
                size = -1
            ended = perf_counter()
            cpu = time.clock_gettime(self.loop_clock) - cpu
            if size >= 0:
                self.requests.append((started, ended, cpu, size))
            due += self.every
            self._stopping.wait(max(0.0, due - perf_counter()))

    def stop(self) -> None:
        """Ask the thread to end after its current request, and wait for it."""
        self._stopping.set()
        self.join()
