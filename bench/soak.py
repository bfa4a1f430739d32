"""The soak: 2,000 misbehaving handlers for N minutes, ``python -m bench soak --minutes N``.

``run()`` starts one child process (``bench._soak_child``, importing the
copy of ``src/workit`` taken when the run starts) and passes on its JSON
lines as they come: the machine (``meta``), the set-up, one ``sample`` per
minute (every 5 s when the soak is shorter than a minute), the shutdown;
then the ``summary`` made here, which says whether each "done when"
condition holds. ``write()`` puts the table into bench/README.md between
the soak markers.

The verdicts (the warm-up, the first ``WARMUP_S`` seconds, is left out of
the flatness ones):

- tasks flat: the task count varies by at most ``TASKS_SPREAD``;
- threads flat: the threads beyond the hung ones do not grow: the mean of the
  second half of the samples is at most ``THREADS_GROWTH`` above the first
  half's (anyio keeps an idle pool thread 10 s, so the count moves with the
  bursts of sync executions; a leak grows);
- RSS flat: the same with ``RSS_GROWTH``;
- counts: in every sample, every difference between what the handlers
  recorded and what the metrics counted is an execution in flight (or a sync
  run given up on at its timeout before a thread started it); none is
  unexplained;
- healthy rate: in every interval, the healthy handlers ran at least
  ``HEALTHY_RATE`` of what their coolers allow;
- CPU: below ``CPU_LIMIT`` of one core on average.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import threading
from typing import IO, TYPE_CHECKING

from bench._report import put_section
from bench._runner import ROOT, _snapshot, machine

if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from pathlib import Path

    from bench._scenarios import Record

__all__ = ["BEGIN", "END", "is_soak", "markdown", "run", "summarize", "write"]

BEGIN = "<!-- soak:begin (written by python -m bench soak --report) -->"
END = "<!-- soak:end -->"

GRACE_S = 2.0
"""The workers' grace period: the hung executions are cancelled or abandoned after it."""
WARMUP_S = 15.0
TASKS_SPREAD = 20
THREADS_GROWTH = (0.10, 10.0)
"""Allowed growth of the threads beyond the hung ones: 10 % of the first half's mean + 10."""
RSS_GROWTH = (0.05, 2.0)
"""Allowed growth of RSS: 5 % of the first half's mean + 2 MiB."""
HEALTHY_RATE = 0.98
CPU_LIMIT = 0.60


def interval_for(minutes: float) -> float:
    """Seconds between samples: a minute, or 5 s for soaks shorter than a minute."""
    return 60.0 if minutes >= 1 else 5.0


def run(minutes: float, *, emit: Callable[[Record], None] | None = None) -> list[Record]:
    """Run the soak in a child process; return (and ``emit``) its records, then the summary."""
    records: list[Record] = []

    def report(record: Record) -> None:
        records.append(record)
        if emit is not None:
            emit(record)

    params = {
        "minutes": minutes,
        "interval": interval_for(minutes),
        "grace": GRACE_S,
    }
    with _snapshot() as env:
        meta = machine(smoke=False)
        meta["command"] = f".venv/bin/python -m bench soak --minutes {minutes:g}"
        report(meta)
        command = [sys.executable, "-m", "bench._soak_child", json.dumps(params)]
        child = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, text=True)
        timeout = minutes * 60 + GRACE_S + 300.0
        timer = threading.Timer(timeout, child.kill)
        timer.start()
        try:
            _relay(child.stdout, report)
            code = child.wait()
        finally:
            timer.cancel()
        if code != 0 and not any(record.get("kind") == "error" for record in records):
            reason = f"the soak's child exited with status {code}"
            report({"scenario": "soak", "kind": "error", "reason": reason})
    report(summarize(records))
    return records


def _relay(stream: IO[str] | None, report: Callable[[Record], None]) -> None:
    assert stream is not None
    for line in stream:
        if line.startswith("{"):
            report(json.loads(line))


def is_soak(records: Sequence[Record]) -> bool:
    """Whether ``records`` are a soak's (for ``python -m bench report FILE``)."""
    return any(record.get("scenario") == "soak" for record in records)


def _samples(records: Sequence[Record]) -> list[Record]:
    return [record for record in records if record.get("kind") == "sample"]


def _number(record: Record, key: str) -> float:
    value = record.get(key)
    return float(value) if isinstance(value, (int, float)) else float("nan")


def _growth(values: Sequence[float]) -> tuple[float, float]:
    """(mean of the second half - mean of the first half, mean of the first half)."""
    if len(values) < 2:
        return 0.0, values[0] if values else 0.0
    half = len(values) // 2
    first, second = values[:half], values[len(values) - half :]
    return statistics.fmean(second) - statistics.fmean(first), statistics.fmean(first)


def summarize(records: Sequence[Record]) -> Record:
    """The verdict on each "done when" condition, from the samples and the shutdown record."""
    samples = _samples(records)
    settled = [sample for sample in samples if _number(sample, "minute") * 60 >= WARMUP_S]
    shutdown = next((record for record in records if record.get("kind") == "shutdown"), None)
    errors = [str(record.get("reason")) for record in records if record.get("kind") == "error"]
    tasks = [_number(sample, "tasks") for sample in settled]
    threads = [_number(sample, "threads_beyond_hung") for sample in settled]
    rss = [_number(sample, "rss_mib") for sample in settled]
    rates = [_number(s, "healthy_rate") for s in samples if s.get("healthy_rate") is not None]
    cpus = [_number(s, "cpu_share") for s in samples if s.get("cpu_share") is not None]
    thread_growth, thread_base = _growth(threads)
    rss_growth, rss_base = _growth(rss)
    checks = {
        "ran": bool(samples) and not errors and shutdown is not None,
        "tasks_flat": bool(tasks) and max(tasks) - min(tasks) <= TASKS_SPREAD,
        "threads_flat": bool(threads)
        and thread_growth <= THREADS_GROWTH[0] * thread_base + THREADS_GROWTH[1],
        "rss_flat": bool(rss) and rss_growth <= RSS_GROWTH[0] * rss_base + RSS_GROWTH[1],
        "executions_match_metrics": bool(samples)
        and all(_number(sample, "unexplained") == 0 for sample in samples),
        "healthy_rate": bool(rates) and min(rates) >= HEALTHY_RATE,
        "cpu_below_limit": bool(cpus) and statistics.fmean(cpus) < CPU_LIMIT,
    }
    summary: Record = {
        "scenario": "soak",
        "kind": "summary",
        "status": "ok" if all(checks.values()) else "failed",
        "checks": checks,
        "samples": len(samples),
        "tasks_range": [min(tasks), max(tasks)] if tasks else None,
        "threads_beyond_hung_range": [min(threads), max(threads)] if threads else None,
        "threads_growth": thread_growth,
        "rss_mib_range": [min(rss), max(rss)] if rss else None,
        "rss_growth_mib": rss_growth,
        "healthy_rate_min": min(rates) if rates else None,
        "cpu_share_mean": statistics.fmean(cpus) if cpus else None,
        "cpu_share_max": max(cpus) if cpus else None,
        "unexplained_max": max((_number(s, "unexplained") for s in samples), default=None),
        "errors": errors,
    }
    if shutdown is not None:
        census = shutdown.get("threads_after_loop")
        summary["shutdown"] = {
            "stop_s": shutdown.get("stop_s"),
            "cancelled": shutdown.get("cancelled"),
            "abandoned": shutdown.get("abandoned"),
            "threads_after_loop": census,
            "threads_after_release": shutdown.get("threads_after_release"),
            "only_hung_left": isinstance(census, dict) and set(census) <= {"hung", "waiting_event"},
        }
    return summary


def _meta(records: Sequence[Record]) -> Record:
    return next((record for record in records if record.get("scenario") == "meta"), {})


def _machine(meta: Record) -> str:
    git = meta.get("git")
    source = ""
    if isinstance(git, dict):
        changed = git.get("src_changed_files")
        dirty = f" with {changed} uncommitted file(s) under src/" if changed else ""
        source = f" at commit {git.get('commit')}{dirty}"
    versions = meta.get("versions")
    names = versions if isinstance(versions, dict) else {}
    installed = ", ".join(
        f"{name} {version}" for name, version in names.items() if version and name != "apscheduler"
    )
    return (
        f"Measured {meta.get('date')} on {meta.get('nproc')} x {meta.get('cpu')}, "
        f"Python {meta.get('python')}, {meta.get('platform')}; {installed}; "
        f"workit{source}. Command: `{meta.get('command')}`."
    )


def _percent(value: object) -> str:
    return f"{value:.1%}" if isinstance(value, (int, float)) else "-"


def _yes(value: object) -> str:
    return "**yes**" if value else "**NO**"


def markdown(records: Sequence[Record]) -> str:
    """The soak section: machine and command, the per-minute table, the verdicts."""
    samples = _samples(records)
    summary = next((r for r in records if r.get("kind") == "summary"), None) or summarize(records)
    shutdown = next((r for r in records if r.get("kind") == "shutdown"), {})
    setup = next((r for r in records if r.get("kind") == "setup"), {})
    unit = "minute" if samples and _number(samples[-1], "minute") >= 1 else "second"
    lines = [
        _machine(_meta(records)),
        "",
        f"| {unit} | tasks | threads beyond hung (hung + waiting for them) | RSS MiB "
        "| CPU % of a core | executions recorded by handlers | counted by metrics "
        "| difference | in flight | given up before a thread started | unexplained "
        "| healthy rate % of expected (async / sync) |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for sample in samples:
        minute = _number(sample, "minute")
        when = f"{minute:g}" if unit == "minute" else f"{minute * 60:g}"
        hung = int(_number(sample, "threads_hung"))
        waiting = int(_number(sample, "threads_waiting_for_hung"))
        rate = sample.get("healthy_rate")
        rates = (
            f"{_percent(rate)} ({_percent(sample.get('healthy_rate_async'))} / "
            f"{_percent(sample.get('healthy_rate_sync'))})"
            if rate is not None
            else "-"
        )
        cpu = sample.get("cpu_share")
        lines.append(
            f"| {when} | {int(_number(sample, 'tasks')):,} "
            f"| {int(_number(sample, 'threads_beyond_hung')):,} ({hung} + {waiting}) "
            f"| {_number(sample, 'rss_mib'):.1f} "
            f"| {_percent(cpu) if cpu is not None else '-'} "
            f"| {int(_number(sample, 'recorded')):,} | {int(_number(sample, 'counted')):,} "
            f"| {int(_number(sample, 'difference')):,} | {int(_number(sample, 'in_flight')):,} "
            f"| {int(_number(sample, 'given_up')):,} "
            f"| {int(_number(sample, 'unexplained')):,} | {rates} |"
        )
    checks = summary.get("checks")
    verdict = checks if isinstance(checks, dict) else {}
    families = setup.get("families")
    lines += [
        "",
        f"{_count(setup.get('handlers'))} handlers in "
        f"{len(families) if isinstance(families, dict) else '?'} families "
        f"(see `bench/_soak_zoo.py`). Verdicts ({summary.get('status')}):",
        "",
        f"- tasks flat (spread ≤ {TASKS_SPREAD} after the first {WARMUP_S:g} s): "
        f"{_yes(verdict.get('tasks_flat'))}, {_range(summary.get('tasks_range'))};",
        f"- threads beyond the hung ones flat (second half's mean ≤ first half's "
        f"+ {THREADS_GROWTH[0]:.0%} + {THREADS_GROWTH[1]:g}): "
        f"{_yes(verdict.get('threads_flat'))}, "
        f"{_range(summary.get('threads_beyond_hung_range'))}, "
        f"growth {_number(summary, 'threads_growth'):+.1f};",
        f"- RSS flat (growth ≤ {RSS_GROWTH[0]:.0%} + {RSS_GROWTH[1]:g} MiB): "
        f"{_yes(verdict.get('rss_flat'))}, {_range(summary.get('rss_mib_range'), '.1f')} MiB, "
        f"growth {_number(summary, 'rss_growth_mib'):+.2f} MiB;",
        f"- executions recorded by the handlers = counted by the metrics, but for those in "
        f"flight: {_yes(verdict.get('executions_match_metrics'))} "
        f"(unexplained at most {_count(summary.get('unexplained_max'))});",
        f"- healthy handlers at ≥ {HEALTHY_RATE:.0%} of their expected rate in every interval: "
        f"{_yes(verdict.get('healthy_rate'))} "
        f"(lowest {_percent(summary.get('healthy_rate_min'))});",
        f"- CPU below {CPU_LIMIT:.0%} of a core: {_yes(verdict.get('cpu_below_limit'))} "
        f"(mean {_percent(summary.get('cpu_share_mean'))}, "
        f"highest {_percent(summary.get('cpu_share_max'))}).",
    ]
    if shutdown:
        stop = summary.get("shutdown")
        stopped = stop if isinstance(stop, dict) else {}
        lines += [
            "",
            f"Shutdown: `stop()` to `daemon()` returned in {_number(shutdown, 'stop_s'):.2f} s "
            f"(grace {GRACE_S:g} s); `last_stop`: {shutdown.get('cancelled')} cancelled, "
            f"{shutdown.get('abandoned')} abandoned "
            f"({_families(shutdown.get('stopped_handlers_by_family'))}); "
            f"{shutdown.get('tasks_after_stop')} task left (the soak's own); "
            f"threads once the loop closed: {stopped.get('threads_after_loop')} "
            f"(only hung ones: {_yes(stopped.get('only_hung_left'))}); "
            f"after releasing them: {len(stopped.get('threads_after_release') or [])} left.",
        ]
    errors = summary.get("errors")
    if errors:
        lines += ["", f"Errors: {errors}"]
    return "\n".join(lines) + "\n"


def _count(value: object) -> str:
    return f"{value:,.0f}" if isinstance(value, (int, float)) else "?"


def _range(bounds: object, spec: str = ",.0f") -> str:
    if isinstance(bounds, list) and len(bounds) == 2:
        return f"{bounds[0]:{spec}} to {bounds[1]:{spec}}"
    return "-"


def _families(counts: object) -> str:
    if not isinstance(counts, dict):
        return "-"
    return ", ".join(f"{count} {family}" for family, count in counts.items())


def write(records: Sequence[Record], *, readme: Path) -> str:
    """Put the soak section between the soak markers of ``readme``; return it.

    A README without the markers gets a "Soak" section appended.
    """
    section = markdown(records)
    put_section(readme, section, begin=BEGIN, end=END, heading="Soak")
    return section
