"""The soak itself, in a process of its own: ``python -m bench._soak_child PARAMS``.

``PARAMS`` is a JSON object: ``minutes``, ``interval`` (seconds between
samples) and ``grace`` (the workers' grace period). Prints
one JSON line per sample (``kind`` ``sample``, the first at minute 0 right
after the worker is ready), one for the shutdown and a final ``summary``,
then leaves with ``os._exit``.

Each sample is taken synchronously on the event loop, so workit's
counters (metrics, status) cannot move while it is read; only the
``started`` counters of sync handlers can, in threads workit has already
marked running. Per handler, ``d = started + hook_failures - executions
counted by the metrics`` must then be 0, or 1 while workit reports the
handler running (an execution in flight). A sync run that workit gave up
on at its timeout before a thread started it is counted (a timeout) with
no ``ensure()`` call: ``d = -1`` on a sync handler with a timeout, reported
apart as ``given_up``. Anything else is ``unexplained``.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import math
import os
import sys
import threading
import traceback
from collections import Counter
from time import perf_counter
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

import workit
from bench._measure import cpu_seconds, rss_bytes
from bench._soak_zoo import GROUPS, Hangs, Skip, Soaker, SyncSoaker, Zoo, build
from workit.metrics import Prometheus

if TYPE_CHECKING:
    from collections.abc import Callable

    from workit.status import HandlerStatus

__all__ = ["main"]

Record = dict[str, object]

TOTAL = "worker_handler_execution_total"
MIB = 1024 * 1024
_JOIN_WAIT = 10.0  # seconds for released threads to end


class LogCounter(logging.Handler):
    """Counts every record; formats a sample of them, tracebacks included.

    Formatting the traceback of every failure would cost the soak more CPU
    than workit itself, so each handler's first ``FULL`` records and one in
    ``EVERY`` after are formatted (what would fail on an exception that
    cannot be printed); every record's message is built. The text is dropped.
    """

    FULL = 3
    EVERY = 20

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.setFormatter(logging.Formatter("%(levelname)s %(name)s %(message)s"))
        self.counts: Counter[str] = Counter()
        self.by_handler: Counter[str] = Counter()
        self.formatted = 0
        self.format_failures = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.counts[f"{record.levelname.lower()}: {record.msg}"] += 1
        handler = str(getattr(record, "handler", ""))
        seen = self.by_handler[handler]
        self.by_handler[handler] = seen + 1
        try:
            if seen < self.FULL or seen % self.EVERY == 0:
                self.format(record)
                self.formatted += 1
            else:
                record.getMessage()
        except Exception:
            self.format_failures += 1


def _ignore(error: BaseException) -> bool:
    return isinstance(error, Skip)


def _metric_counts(collector: CollectorRegistry) -> dict[str, list[float]]:
    """Per handler name, ``[failures, successes]`` from ``worker_handler_execution_total``."""
    counts: dict[str, list[float]] = {}
    for family in collector.collect():
        for sample in family.samples:
            if sample.name == TOTAL:
                pair = counts.setdefault(sample.labels["handler"], [0.0, 0.0])
                pair[sample.labels["success"] == "true"] += sample.value
    return counts


def _thread_census(handler_file: str) -> Counter[str]:
    """Every thread but the main one, by what its stack shows it doing.

    ``hung``: in a hanger's ``ensure()``; ``in_handler``: in another soak
    handler's ``ensure()``; ``idle``: a pool thread waiting for work
    (``Queue.get``); ``waiting_event``: a pool thread in ``Event.wait`` with
    no handler frame (workit waiting for an earlier execution's thread);
    ``other``: anything else.
    """
    frames = sys._current_frames()
    census: Counter[str] = Counter()
    for thread in threading.enumerate():
        if thread is threading.main_thread():
            continue
        frame = frames.get(thread.ident or -1)
        names: list[tuple[str, str]] = []
        while frame is not None:
            names.append((frame.f_code.co_filename, frame.f_code.co_name))
            frame = frame.f_back
        if (handler_file, "block") in names:
            census["hung"] += 1
        elif any(filename == handler_file for filename, _ in names):
            census["in_handler"] += 1
        elif any(filename.endswith("queue.py") and name == "get" for filename, name in names):
            census["idle"] += 1
        elif any(filename.endswith("threading.py") and name == "wait" for filename, name in names):
            census["waiting_event"] += 1
        else:
            census["other"] += 1
    return census


class Sampler:
    """Takes the per-interval samples; keeps what the next one needs."""

    def __init__(
        self,
        zoo: Zoo,
        worker: workit.CombinedWorker,
        collector: CollectorRegistry,
        logs: LogCounter,
    ) -> None:
        self.zoo = zoo
        self.worker = worker
        self.collector = collector
        self.logs = logs
        self.handlers = zoo.handlers
        self.healthy = [handler for handler in self.handlers if handler.group == "healthy"]
        self.timed_hangers = [
            handler
            for handler in self.handlers
            if handler.family == "hang-timeout-sync" and isinstance(handler, SyncSoaker)
        ]
        self.handler_file = sys.modules[Soaker.__module__].__file__ or ""
        self._wall = perf_counter()
        self._cpu = cpu_seconds()
        self._healthy: list[tuple[int, float]] = [(h.started, h.busy) for h in self.healthy]

    def sample(self, index: int, interval: float, stopped: frozenset[str] = frozenset()) -> Record:
        """One sample: read everything workit counts, then the process's vital signs.

        ``stopped`` names the handlers whose execution the last stop cancelled
        or abandoned (the metrics do not count those).
        """
        wall, cpu = perf_counter(), cpu_seconds()
        tasks = len(asyncio.all_tasks())
        census = _thread_census(self.handler_file)
        threads = threading.active_count()
        hung = self.zoo.hangs.blocked
        metrics = _metric_counts(self.collector)
        statuses = {status.name: status for status in self.worker.status().handlers}
        groups = {group: Counter[str]() for group in GROUPS}
        mismatches: list[Record] = []
        for handler in self.handlers:
            _account(
                handler,
                statuses[handler.name],
                metrics,
                groups[handler.group],
                mismatches,
                stopped=handler.name in stopped,
            )
        waiting_for_hung = sum(
            1
            for handler in self.timed_hangers
            if statuses[handler.name].running
            and handler.started == sum(metrics.get(handler.name, (0.0, 0.0)))
            and handler.started > 0
        )
        totals: Counter[str] = Counter()
        for counts in groups.values():
            totals.update(counts)
        rate = self._healthy_rate(wall, first=index == 0)
        elapsed = wall - self._wall
        cpu_share = (cpu - self._cpu) / elapsed if elapsed > 0 else math.nan
        self._wall, self._cpu = wall, cpu
        status_executions = sum(status.executions for status in statuses.values())
        status_failures = sum(status.failures for status in statuses.values())
        error_logs = self.logs.counts["error: worker execution failed"]
        objects = len(gc.get_objects())
        rss = rss_bytes()  # last: it runs a full garbage collection first
        sample_ms = (perf_counter() - wall) * 1e3  # the loop was blocked this long
        return {
            "kind": "sample",
            "index": index,
            "minute": round(index * interval / 60, 3),
            "tasks": tasks,
            "threads": threads,
            "threads_hung": hung,
            "threads_waiting_for_hung": waiting_for_hung,
            "threads_beyond_hung": threads - hung - waiting_for_hung,
            "thread_census": dict(census),
            "rss_mib": rss / MIB,
            "cpu_share": cpu_share if index else None,
            "gc_objects": objects,
            "sample_ms": sample_ms,
            "recorded": totals["recorded"],
            "counted": totals["counted"],
            "difference": totals["recorded"] - totals["counted"],
            "in_flight": totals["in_flight"],
            "given_up": totals["given_up"],
            "stopped": totals["stopped"],
            "unexplained": totals["unexplained"],
            "given_up_handlers": [m for m in mismatches if "given_up" in m][:20],
            "mismatches": [m for m in mismatches if "given_up" not in m][:20],
            "groups": {group: dict(counts) for group, counts in groups.items()},
            "status_executions": status_executions,
            "status_failures": status_failures,
            "metric_failures": totals["counted_failures"],
            "error_logs": error_logs,
            "logs_formatted": self.logs.formatted,
            "log_format_failures": self.logs.format_failures,
            **rate,
        }

    def _healthy_rate(self, wall: float, *, first: bool) -> Record:
        """The healthy handlers' executions since the last sample ÷ what their coolers allow.

        A handler's expected count over the interval is the interval divided
        by (its cooler + its mean execution time over the interval).
        """
        elapsed = wall - self._wall
        done = expected = 0.0
        ratios: dict[str, list[float]] = {"async": [], "sync": []}
        sums: dict[str, list[float]] = {"async": [0.0, 0.0], "sync": [0.0, 0.0]}
        now: list[tuple[int, float]] = []
        for handler, (started, busy) in zip(self.healthy, self._healthy, strict=True):
            count, spent = handler.started - started, handler.busy - busy
            now.append((handler.started, handler.busy))
            duration = spent / count if count else 0.0
            due = elapsed / (handler.nominal_cooler + duration)
            kind = "async" if handler.is_async else "sync"
            ratios[kind].append(count / due)
            sums[kind][0] += count
            sums[kind][1] += due
            done += count
            expected += due
        self._healthy = now
        if first or elapsed <= 0 or not expected:
            return {"healthy_rate": None}
        every = ratios["async"] + ratios["sync"]
        return {
            "healthy_executions": int(done),
            "healthy_expected": expected,
            "healthy_rate": done / expected,
            "healthy_rate_async": sums["async"][0] / sums["async"][1],
            "healthy_rate_sync": sums["sync"][0] / sums["sync"][1],
            "healthy_rate_slowest_handler": min(every),
            "healthy_executions_per_s": done / elapsed,
        }


def _account(
    handler: Soaker,
    status: HandlerStatus,
    metrics: dict[str, list[float]],
    counts: Counter[str],
    mismatches: list[Record],
    *,
    stopped: bool,
) -> None:
    """Add one handler's counts to its group's, classifying any difference.

    ``stopped``: the last stop cancelled or abandoned this handler's
    execution, which is then counted neither as a success nor as a failure.
    """
    failures, successes = metrics.get(handler.name, [0.0, 0.0])
    recorded = handler.started + handler.hook_failures
    counted = int(failures + successes)
    difference = recorded - counted
    counts["handlers"] += 1
    counts["started"] += handler.started
    counts["hook_failures"] += handler.hook_failures
    counts["recorded"] += recorded
    counts["counted"] += counted
    counts["counted_failures"] += int(failures)
    counts["running"] += status.running
    if difference == 0:
        return
    if difference == 1 and status.running:
        counts["in_flight"] += 1
    elif difference == 1 and stopped:
        counts["stopped"] += 1
    elif difference < 0 and isinstance(handler, SyncSoaker) and handler.timeout is not None:
        counts["given_up"] += -difference
        mismatches.append({"handler": handler.name, "given_up": -difference})
    else:
        counts["unexplained"] += abs(difference)
        mismatches.append(
            {
                "handler": handler.name,
                "started": handler.started,
                "hook_failures": handler.hook_failures,
                "counted": counted,
                "running": status.running,
            }
        )


def _workers(
    zoo: Zoo, registry: workit.Registry, grace: float
) -> tuple[workit.CombinedWorker, dict[str, int]]:
    plain = workit.ParallelWorker(zoo.plain, registry=registry, grace=grace)
    backed = workit.ParallelWorker(
        zoo.backoff,
        registry=registry,
        grace=grace,
        backoff=workit.Backoff(initial=0.2, maximum=5.0),
    )
    steps = workit.SequenceWorker(zoo.steps, cooler=1.0, registry=registry, grace=grace)
    graph = workit.SequenceWorker(
        zoo.graph,
        cooler=1.0,
        registry=registry,
        grace=grace,
        backoff=workit.Backoff(initial=1.0, maximum=4.0),
    )
    sizes = {
        "parallel": len(zoo.plain),
        "parallel_backoff": len(zoo.backoff),
        "sequence_steps": sum(len(step) for step in zoo.steps),
        "sequence_graph": len(zoo.graph),
    }
    return workit.CombinedWorker(plain, backed, steps, graph), sizes


async def _soak(params: dict[str, float], zoo: Zoo, emit: Callable[[Record], None]) -> Record:
    """Run the worker for ``minutes``, sampling every ``interval``; stop it; report."""
    interval, grace = params["interval"], params["grace"]
    samples = max(1, round(params["minutes"] * 60 / interval))
    logs = LogCounter()
    logger = logging.getLogger("bench.soak.workit")
    logger.propagate = False
    logger.setLevel(logging.INFO)
    logger.addHandler(logs)
    collector = CollectorRegistry()
    registry = workit.Registry("soak", ignore=_ignore, logger=logger, metrics=Prometheus(collector))
    worker, sizes = _workers(zoo, registry, grace)
    emit(
        {
            "kind": "setup",
            "handlers": len(zoo.handlers),
            "workers": sizes,
            "families": zoo.families(),
            "interval_s": interval,
            "samples": samples,
            "grace_s": grace,
            "threads_before": threading.active_count(),
            "rss_mib_before": rss_bytes() / MIB,
        }
    )
    daemon = asyncio.create_task(worker.daemon(), name="soak daemon")
    await worker.wait_ready()
    sampler = Sampler(zoo, worker, collector, logs)
    loop = asyncio.get_running_loop()
    start = loop.time()
    emit(sampler.sample(0, interval))
    for index in range(1, samples + 1):
        await asyncio.sleep(max(0.0, start + index * interval - loop.time()))
        if daemon.done():
            break
        emit(sampler.sample(index, interval))
    if daemon.done():  # it must run until stopped: report how it ended
        error = daemon.exception() if not daemon.cancelled() else None
        raise RuntimeError(f"the worker's daemon() ended before stop(): {error!r}")
    # Stop: time to return, what was cancelled or abandoned, what is left.
    stopwatch = perf_counter()
    worker.stop()
    await asyncio.wait_for(daemon, timeout=grace + 60.0)
    stop_s = perf_counter() - stopwatch
    report = worker.last_stop
    families = Counter(name.rsplit("-", 1)[0] for name in report.handlers)
    statuses = worker.status().handlers
    final = sampler.sample(samples + 1, interval, frozenset(report.handlers))
    return {
        "kind": "shutdown",
        "stop_s": stop_s,
        "cancelled": report.cancelled,
        "abandoned": report.abandoned,
        "stopped_handlers_by_family": dict(families),
        "tasks_after_stop": len(asyncio.all_tasks()),
        "running_after_stop": sum(status.running for status in statuses),
        "threads_after_stop": threading.active_count(),
        "threads_hung": zoo.hangs.blocked,
        "thread_census_after_stop": dict(_thread_census(sampler.handler_file)),
        "final_counts": {
            key: final[key]
            for key in (
                "recorded",
                "counted",
                "difference",
                "in_flight",
                "given_up",
                "stopped",
                "unexplained",
            )
        },
        "final_groups": final["groups"],
        "log_counts": dict(logs.counts),
        "started_by_family": _by_family(zoo, "started"),
        "hook_failures_by_family": _by_family(zoo, "hook_failures"),
    }


def _by_family(zoo: Zoo, counter: str) -> dict[str, int]:
    totals: Counter[str] = Counter()
    for handler in zoo.handlers:
        totals[handler.family] += getattr(handler, counter)
    return dict(totals)


def _after_loop(zoo: Zoo, handler_file: str) -> Record:
    """Once the loop is closed: only hung threads may be left; release them; none may be left."""
    hangs: Hangs = zoo.hangs
    deadline = perf_counter() + 5.0
    census = _thread_census(handler_file)
    while sum(census.values()) > census["hung"] + census["waiting_event"]:
        if perf_counter() > deadline:
            break
        threading.Event().wait(0.05)  # idle pool threads end once the loop's root task is done
        census = _thread_census(handler_file)
    before = dict(census)
    hangs.release.set()
    for thread in threading.enumerate():
        if thread is not threading.main_thread():
            thread.join(_JOIN_WAIT)
    left = [
        thread.name for thread in threading.enumerate() if thread is not threading.main_thread()
    ]
    return {"threads_after_loop": before, "threads_after_release": left}


def main(argv: list[str]) -> int:
    """Run the soak; print its records as JSON lines."""
    params = {key: float(value) for key, value in json.loads(argv[0]).items()}

    def emit(record: Record) -> None:
        print(json.dumps(_finite({"scenario": "soak", **record})), flush=True)

    zoo = build()
    handler_file = sys.modules[Soaker.__module__].__file__ or ""
    try:
        shutdown = asyncio.run(_soak(params, zoo, emit))
    except BaseException as error:
        traceback.print_exc()
        zoo.hangs.release.set()
        emit({"kind": "error", "reason": f"{type(error).__name__}: {_describe(error)}"})
        return 1
    emit({**shutdown, **_after_loop(zoo, handler_file)})
    return 0


def _describe(error: BaseException) -> str:
    with contextlib.suppress(Exception):
        return str(error)
    return "<unprintable>"


def _finite(value: object) -> object:
    """``value`` with NaN and infinities as ``None``, which JSON can hold."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_finite(item) for item in value]
    return value


if __name__ == "__main__":
    code = main(sys.argv[1:])
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
