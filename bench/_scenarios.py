"""The scenarios, written once against the ``System`` protocol.

Each runs inside a child process, on the asyncio loop of ``asyncio.run``,
against one system, and returns the records (measurement name to value)
that the child prints. Windows are measured after a warm-up; CPU is this
process's user + system time over the window (all threads), so the loop,
the system's bookkeeping and the jobs' own instrumentation are all in it.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import socket
import statistics
import threading
import time
from typing import TYPE_CHECKING, Any

from bench._dag import random_dag
from bench._measure import (
    Blocker,
    GcPauses,
    LoopLag,
    Poller,
    Probe,
    Stopwatch,
    Window,
    executions,
    percentile,
    rss_bytes,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Mapping

    from bench._systems import System

__all__ = ["RUNNERS", "Params", "Record"]

Params = dict[str, float]
"""A scenario's settings, as the parent passes them (JSON numbers)."""

Record = dict[str, object]
"""One measurement's results, printed by the child as one JSON line."""

_STOP_TIMEOUT = 120.0


async def _measure(window: Window, seconds: float) -> tuple[float, float]:
    """Open ``window`` for ``seconds``; the wall and CPU seconds it was open."""
    stopwatch = Stopwatch()
    window.begin()
    await asyncio.sleep(seconds)
    window.end()
    return stopwatch.elapsed()


async def _stop(system: System) -> None:
    """Stop ``system``, giving up (with ``TimeoutError``) after a bounded time."""
    async with asyncio.timeout(_STOP_TIMEOUT):
        await system.stop()


async def overhead(make: Callable[[], System], params: Params) -> list[Record]:
    """No-op async jobs at cooler 0: executions per second and CPU per execution.

    Measures the fixed cost a system adds around each execution: with nothing
    to do and no pause, the loop is CPU bound, so CPU microseconds per
    execution is the system's per-execution overhead (plus the probe's own,
    the same for all).
    """
    handlers = int(params["handlers"])
    window = Window(track_lateness=False)
    probes = [Probe(window, 0.0) for _ in range(handlers)]
    system = make()
    await system.start([probe.run for probe in probes], cooler=0.0, sync=False)
    await asyncio.sleep(params["warmup"])
    wall, cpu = await _measure(window, params["window"])
    await _stop(system)
    count = executions(probes)
    return [
        {
            "handlers": handlers,
            "window_s": wall,
            "executions": count,
            "executions_per_s": count / wall,
            "cpu_us_per_execution": cpu / count * 1e6 if count else None,
            **system.notes(),
        }
    ]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _ms(values: list[float], fraction: float) -> float:
    return percentile(values, fraction) * 1e3


class _StatusPolling:
    """``/status`` served by the system and polled from a thread while the window is open.

    The results: response times, the loop thread's CPU per request beyond
    its usual rate, the loop-lag samples taken during requests and outside
    them, the body's size, and the time to build the body (measured apart,
    after the window, with the same code the endpoint runs).
    """

    def __init__(self, system: System, every: float, lag: LoopLag) -> None:
        from bench._workit import Workit

        if not isinstance(system, Workit):
            raise NotImplementedError("/status is workit's: not applicable")
        self.system = system
        self.every = every
        self.lag = lag
        self.port = _free_port()
        self.poller: Poller | None = None

    @contextlib.asynccontextmanager
    async def serving(self) -> AsyncIterator[None]:
        async with self.system.serve_status("127.0.0.1", self.port):
            yield

    def begin(self) -> None:
        clock = time.pthread_getcpuclockid(threading.get_ident())
        self.poller = Poller(f"http://127.0.0.1:{self.port}/status", self.every, clock)
        self.poller.start()

    def results(self) -> Record:
        assert self.poller is not None
        requests = self.poller.requests
        walls = [end - start for start, end, _, _ in requests]
        during: list[float] = []
        outside: list[float] = []
        for woke, late in self.lag.samples:
            busy = any(start <= woke <= end + 0.001 for start, end, _, _ in requests)
            (during if busy else outside).append(late)
        builds = []
        body = b""
        for _ in range(3):
            stopwatch = Stopwatch()
            body = self.system.build_status()
            builds.append(stopwatch.elapsed()[0])
        return {
            "status_requests": len(requests),
            "status_errors": len(self.poller.errors),
            "status_response_p50_ms": _ms(walls, 0.5),
            "status_response_max_ms": max(walls, default=float("nan")) * 1e3,
            "status_loop_cpu_in_requests_ms": sum(cpu for _, _, cpu, _ in requests) * 1e3,
            "loop_lag_during_requests_p99_ms": _ms(during, 0.99),
            "loop_lag_during_requests_max_ms": max(during, default=float("nan")) * 1e3,
            "loop_lag_outside_requests_p99_ms": _ms(outside, 0.99),
            "status_body_kib": (requests[-1][3] if requests else len(body)) / 1024,
            "status_build_ms": statistics.median(builds) * 1e3,
        }


def _lag_results(lag: LoopLag | None, wall: float, loop_cpu: float) -> Record:
    if lag is None:
        return {}
    values = [late for _, late in lag.samples]
    return {
        "loop_lag_samples": len(values),
        "loop_lag_p99_ms": _ms(values, 0.99),
        "loop_lag_max_ms": max(values, default=float("nan")) * 1e3,
        "loop_lag_total_ms_per_s": sum(values) * 1e3 / wall,
        "loop_thread_cpu_cores": loop_cpu / wall,
    }


async def scale(make: Callable[[], System], params: Params) -> list[Record]:
    """Many idle-ish handlers: CPU cores used, memory per handler, lateness.

    CPU cores = CPU seconds / wall seconds over the window. Memory per
    handler = (VmRSS after start and warm-up - VmRSS before start) / N; the
    probes exist before the first reading, so only the system's own
    per-handler cost is counted. With ``gc_freeze``, every object alive once
    the system has started is frozen out of garbage collection. Lateness percentiles are over every
    execution in the window (see ``Probe``); the garbage collector's pauses
    in the window are reported beside them, since a full collection delays
    every execution due while it runs.

    ``jitter`` (workit only) varies each cooler by up to that share either
    way; lateness is then measured against the wait workit drew (see
    ``Probe.planned``), and the lateness against the plain cooler is kept
    as ``lateness_vs_cooler_*``. ``loop_lag`` runs a ``LoopLag`` task
    beside the handlers; ``poll_status`` (seconds, workit only) serves
    ``/status`` with ``workit.http.serve`` and polls it from a thread that
    often during the window (and runs the ``LoopLag`` task). With
    ``loop_lag``, the CPU time of the loop's own thread over the window is
    kept too (``loop_thread_cpu_cores``): the report compares it, and the
    summed loop lag, with the same case without ``/status``.

    ``settle`` seconds pass between the memory reading (whose full
    collection holds the loop) and the window.
    """
    handlers = int(params["handlers"])
    cooler = params["cooler"]
    jitter = params.get("jitter", 0.0)
    every = params.get("poll_status", 0.0)
    window = Window(track_lateness=True)
    probes = [Probe(window, cooler) for _ in range(handlers)]
    lag = LoopLag(window) if params.get("loop_lag") or every else None
    system = make()
    polling = _StatusPolling(system, every, lag) if every and lag is not None else None
    before = rss_bytes()
    setup = Stopwatch()
    await system.start([probe.run for probe in probes], cooler=cooler, sync=False, jitter=jitter)
    setup_s, _ = setup.elapsed()
    if params.get("gc_freeze"):  # as `workit run` does once its worker is ready
        gc.collect()
        gc.freeze()
    async with contextlib.AsyncExitStack() as stack:
        if polling is not None:
            await stack.enter_async_context(polling.serving())
        lag_task = asyncio.create_task(lag.run()) if lag is not None else None
        await asyncio.sleep(params["warmup"])
        window.discard()  # the warm-up's lateness samples are not the system's memory
        after = rss_bytes()
        # The full collection of rss_bytes() holds the loop (~0.1 s at 10,000
        # handlers): the executions it delays run before the window opens.
        await asyncio.sleep(params.get("settle", 0.0))
        if polling is not None:
            polling.begin()
        loop_cpu = time.thread_time()
        with GcPauses() as pauses:
            wall, cpu = await _measure(window, params["window"])
        loop_cpu = time.thread_time() - loop_cpu
        if polling is not None:
            assert polling.poller is not None
            await asyncio.to_thread(polling.poller.stop)
        if lag_task is not None:
            lag_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await lag_task
        extra = polling.results() if polling is not None else {}
    plain = window.lateness
    lateness = window.planned_lateness if jitter else plain
    await _stop(system)
    count = executions(probes)
    record: Record = {
        "handlers": handlers,
        "cooler_s": cooler,
        "window_s": wall,
        "setup_s": setup_s,
        "executions": count,
        "expected_executions": handlers * wall / cooler,
        "executions_share": count / (handlers * wall / cooler),
        "cpu_cores": cpu / wall,
        "rss_bytes_per_handler": (after - before) / handlers,
        "rss_kib_per_handler": (after - before) / handlers / 1024,
        "lateness_p50_ms": _ms(lateness, 0.5),
        "lateness_p99_ms": _ms(lateness, 0.99),
        "lateness_max_ms": max(lateness, default=float("nan")) * 1e3,
        "gc_full_collections": pauses.full_collections,
        "gc_longest_pause_ms": pauses.longest * 1e3,
        "gc_pauses_ms_per_s": pauses.total * 1e3 / wall,
        **_lag_results(lag, wall, loop_cpu),
        **extra,
        **system.notes(),
    }
    if jitter:
        record |= {
            "jitter": jitter,
            "lateness_reference": "planned wait",
            "lateness_vs_cooler_p1_ms": _ms(plain, 0.01),
            "lateness_vs_cooler_p99_ms": _ms(plain, 0.99),
        }
    return [record]


async def _quick_rate(
    make: Callable[[], System], params: Params, *, blockers: int
) -> tuple[float, dict[str, int]]:
    """Executions per second of the quick sync jobs, beside ``blockers`` blocked ones."""
    cooler = params["cooler"]
    window = Window(track_lateness=False)
    probes = [Probe(window, cooler) for _ in range(int(params["quick"]))]
    release = threading.Event()
    jobs = [Blocker(release).run_sync for _ in range(blockers)]
    jobs += [probe.run_sync for probe in probes]
    system = make()
    await system.start(jobs, cooler=cooler, sync=True)
    try:
        await asyncio.sleep(params["warmup"])
        wall, _ = await _measure(window, params["window"])
    finally:
        release.set()  # so the blocked threads end and the process can exit
    await _stop(system)
    return executions(probes) / wall, system.notes()


async def blocking(make: Callable[[], System], params: Params) -> list[Record]:
    """Quick sync jobs beside sync jobs blocked forever: the rate the quick ones keep.

    The quick jobs' executions per second are measured alone, then with the
    blocked jobs started beside them (blocked first); the ratio is the share
    of their rate they keep. A ratio near 0 means the blocked jobs took every
    thread the quick ones needed.
    """
    alone, _ = await _quick_rate(make, params, blockers=0)
    beside, notes = await _quick_rate(make, params, blockers=int(params["blockers"]))
    return [
        {
            "quick": int(params["quick"]),
            "blockers": int(params["blockers"]),
            "cooler_s": params["cooler"],
            "rate_alone_per_s": alone,
            "rate_beside_blockers_per_s": beside,
            "rate_ratio": beside / alone if alone else None,
            **notes,
        }
    ]


async def dag(make: Callable[[], System], params: Params) -> list[Record]:
    """One pass over a seeded random DAG of sleeping nodes: wall / critical path, CPU per node.

    One warm-up pass, then ``passes`` measured ones; the medians are
    reported. The critical path is the longest sum of sleeps along a
    dependency path, the wall time a perfect scheduler would take with sleeps
    that never overrun. Beside it, the same longest path over the times the
    nodes really took in that pass: what is left of the wall time above it
    is the scheduler's own, and so is each node's dispatch delay (its start
    minus its last dependency's end).
    """
    nodes = int(params["nodes"])
    graph = random_dag(nodes, seed=int(params["seed"]))
    run_pass: Callable[[], Awaitable[None]] = make().dag_pass(graph)
    await run_pass()
    walls: list[float] = []
    cpus: list[float] = []
    measured: list[float] = []
    delays: list[float] = []
    for _ in range(int(params["passes"])):
        stopwatch = Stopwatch()
        await run_pass()
        wall, cpu = stopwatch.elapsed()
        walls.append(wall)
        cpus.append(cpu)
        measured.append(wall / graph.measured_critical_path)
        delays += graph.dispatch_delays
    critical = graph.critical_path
    return [
        {
            "nodes": nodes,
            "depth": graph.depth,
            "passes": len(walls),
            "critical_path_ms": critical * 1e3,
            "wall_ms": statistics.median(walls) * 1e3,
            "wall_over_critical": statistics.median(walls) / critical,
            "wall_over_critical_worst": max(walls) / critical,
            "wall_over_measured_critical": statistics.median(measured),
            "dispatch_delay_p50_us": percentile(delays, 0.5) * 1e6,
            "dispatch_delay_p99_us": percentile(delays, 0.99) * 1e6,
            "scheduling_us_per_node": statistics.median(cpus) / nodes * 1e6,
        }
    ]


async def shutdown(make: Callable[[], System], params: Params) -> list[Record]:
    """Idle handlers (all sleeping their cooler): time from stop to fully stopped.

    After a warm-up in which every handler has run once (workit, bare) or is
    waiting for its first run (APScheduler), the time and CPU of ``stop()``.
    """
    handlers = int(params["handlers"])
    window = Window(track_lateness=False)
    probes = [Probe(window, params["cooler"]) for _ in range(handlers)]
    system = make()
    await system.start([probe.run for probe in probes], cooler=params["cooler"], sync=False)
    await asyncio.sleep(params["warmup"])
    stopwatch = Stopwatch()
    await _stop(system)
    wall, cpu = stopwatch.elapsed()
    return [
        {
            "handlers": handlers,
            "cooler_s": params["cooler"],
            "shutdown_ms": wall * 1e3,
            "shutdown_cpu_ms": cpu * 1e3,
            **system.notes(),
        }
    ]


RUNNERS: Mapping[
    str, Callable[[Callable[[], System], Params], Coroutine[Any, Any, list[Record]]]
] = {
    "overhead": overhead,
    "scale": scale,
    "blocking": blocking,
    "dag": dag,
    "shutdown": shutdown,
}
"""Every scenario by name, in the order ``all`` runs them."""
