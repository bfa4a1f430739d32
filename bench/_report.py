"""Results table (markdown) and plot (PNG) from the records of a run.

The table puts the systems side by side, one row per scenario, size and
metric, with workit's target and whether it is met. ``write()`` puts the
table between the results markers of bench/README.md and the plot into
bench/results.png.
"""

from __future__ import annotations

import dataclasses
import json
import math
import statistics
from dataclasses import dataclass
from typing import TYPE_CHECKING

from bench._plan import SCENARIOS, baseline
from bench._systems import LABELS, SYSTEMS

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from pathlib import Path

    from bench._scenarios import Record

__all__ = [
    "BEFORE_AFTER_BEGIN",
    "BEFORE_AFTER_END",
    "BEGIN",
    "END",
    "GROUNDWORK_BEGIN",
    "GROUNDWORK_END",
    "before_after",
    "load",
    "markdown",
    "plot",
    "put_section",
    "section_of",
    "write",
]

BEGIN = "<!-- results:begin (written by python -m bench report) -->"
END = "<!-- results:end -->"
GROUNDWORK_BEGIN = "<!-- groundwork:begin (written by python -m bench report) -->"
GROUNDWORK_END = "<!-- groundwork:end -->"
BEFORE_AFTER_BEGIN = "<!-- before-after:begin (written by python -m bench report) -->"
BEFORE_AFTER_END = "<!-- before-after:end -->"


@dataclass(frozen=True, slots=True, kw_only=True)
class Target:
    """A bound on workit's value: absolute, or relative to bare asyncio's."""

    kind: str  # "at_most", "at_least", "times_bare", "plus_bare" or "plus_without"
    bound: float
    text: str

    def met(self, workit: float, bare: float | None, without: float | None = None) -> bool | None:
        """Whether ``workit`` meets the target; ``None`` when the value it needs is missing.

        ``without`` is workit's own value in the case without the option
        (jitter, ``/status``) that this case adds, for ``plus_without``.
        """
        if self.kind == "at_most":
            return workit <= self.bound
        if self.kind == "at_least":
            return workit >= self.bound
        if self.kind == "plus_without":
            return None if without is None else workit <= without + self.bound
        if bare is None:
            return None
        if self.kind == "times_bare":
            return workit <= self.bound * bare
        return workit <= bare + self.bound


@dataclass(frozen=True, slots=True, kw_only=True)
class Metric:
    """One row per case: which measurement, how it is written, its target."""

    scenario: str
    key: str
    label: str
    format: str
    target: Target | None = None
    when: str | None = None
    """A row for the cases whose records have this key only (a measurement some cases make)."""


METRICS = (
    Metric(scenario="overhead", key="executions_per_s", label="executions/s", format="{:,.0f}"),
    Metric(
        scenario="overhead",
        key="cpu_us_per_execution",
        label="CPU µs per execution",
        format="{:.2f}",
        target=Target(kind="times_bare", bound=3.0, text="≤ 3x bare"),
    ),
    Metric(
        scenario="scale",
        key="executions_share",
        label="executions ÷ expected",
        format="{:.1%}",
    ),
    Metric(
        scenario="scale",
        key="cpu_cores",
        label="CPU cores used",
        format="{:.3f}",
        target=Target(kind="times_bare", bound=1.5, text="≤ 1.5x bare"),
    ),
    Metric(
        scenario="scale",
        key="rss_kib_per_handler",
        label="RSS KiB per handler",
        format="{:.2f}",
        target=Target(kind="at_most", bound=4.0, text="≤ 4 KiB"),
    ),
    Metric(scenario="scale", key="lateness_p50_ms", label="lateness p50 ms", format="{:.2f}"),
    Metric(
        scenario="scale",
        key="lateness_p99_ms",
        label="lateness p99 ms",
        format="{:.2f}",
        target=Target(kind="plus_bare", bound=10.0, text="≤ bare + 10 ms"),
    ),
    Metric(scenario="scale", key="lateness_max_ms", label="lateness max ms", format="{:.1f}"),
    Metric(
        scenario="scale",
        key="lateness_vs_cooler_p1_ms",
        label="start - (previous end + plain cooler), p1 ms (jitter spreads it)",
        format="{:.1f}",
        when="lateness_vs_cooler_p1_ms",
    ),
    Metric(
        scenario="scale",
        key="lateness_vs_cooler_p99_ms",
        label="start - (previous end + plain cooler), p99 ms",
        format="{:.1f}",
        when="lateness_vs_cooler_p99_ms",
    ),
    Metric(
        scenario="scale",
        key="lateness_p99_ms",
        label="lateness p99 ms, against the same without /status",
        format="{:.2f}",
        target=Target(kind="plus_without", bound=5.0, text="≤ without /status + 5 ms"),
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="loop_lag_p99_ms",
        label="loop lag p99 ms (1 ms sleeps, whole window)",
        format="{:.2f}",
        when="loop_lag_samples",
    ),
    Metric(
        scenario="scale",
        key="loop_lag_max_ms",
        label="loop lag max ms",
        format="{:.1f}",
        when="loop_lag_samples",
    ),
    Metric(
        scenario="scale",
        key="status_requests",
        label="/status requests in window",
        format="{:.0f}",
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="status_response_p50_ms",
        label="/status response p50 ms",
        format="{:.1f}",
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="status_response_max_ms",
        label="/status response max ms",
        format="{:.1f}",
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="status_loop_cpu_ms_per_request",
        label="event-loop thread CPU ms per /status request, beyond the run without",
        format="{:.1f}",
        target=Target(kind="at_most", bound=5.0, text="≤ 5 ms"),
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="status_loop_lag_ms_per_request",
        label="loop lag ms per /status request (summed lag beyond the run without)",
        format="{:.1f}",
        target=Target(kind="at_most", bound=5.0, text="≤ 5 ms"),
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="loop_lag_during_requests_p99_ms",
        label="loop lag p99 ms during /status requests",
        format="{:.2f}",
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="loop_lag_outside_requests_p99_ms",
        label="loop lag p99 ms outside /status requests",
        format="{:.2f}",
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="loop_lag_during_requests_max_ms",
        label="loop lag max ms during /status requests",
        format="{:.1f}",
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="status_body_kib",
        label="/status body KiB",
        format="{:,.0f}",
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="status_build_ms",
        label="/status body build ms (apart, after the window)",
        format="{:.1f}",
        when="status_requests",
    ),
    Metric(
        scenario="scale",
        key="gc_full_collections",
        label="full GC collections in window",
        format="{:.0f}",
    ),
    Metric(
        scenario="scale", key="gc_longest_pause_ms", label="longest GC pause ms", format="{:.1f}"
    ),
    Metric(
        scenario="scale",
        key="gc_pauses_ms_per_s",
        label="GC pauses, ms per second",
        format="{:.1f}",
    ),
    Metric(
        scenario="blocking",
        key="rate_alone_per_s",
        label="quick executions/s, alone",
        format="{:.1f}",
    ),
    Metric(
        scenario="blocking",
        key="rate_beside_blockers_per_s",
        label="quick executions/s, beside blocked",
        format="{:.1f}",
    ),
    Metric(
        scenario="blocking",
        key="rate_ratio",
        label="share of the rate kept",
        format="{:.1%}",
        target=Target(kind="at_least", bound=0.95, text="≥ 95 %"),
    ),
    Metric(scenario="dag", key="critical_path_ms", label="critical path ms", format="{:.1f}"),
    Metric(scenario="dag", key="wall_ms", label="wall ms (median pass)", format="{:.1f}"),
    Metric(
        scenario="dag",
        key="wall_over_critical",
        label="wall / critical path",
        format="{:.3f}",
        target=Target(kind="at_most", bound=1.05, text="≤ 1.05"),
    ),
    Metric(
        scenario="dag",
        key="wall_over_measured_critical",
        label="wall / critical path of the nodes' measured times",
        format="{:.3f}",
        target=Target(kind="at_most", bound=1.05, text="≤ 1.05"),
    ),
    Metric(
        scenario="dag",
        key="dispatch_delay_p50_us",
        label="dispatch delay p50 µs (dependency end to node start)",
        format="{:.0f}",
    ),
    Metric(
        scenario="dag",
        key="dispatch_delay_p99_us",
        label="dispatch delay p99 µs",
        format="{:.0f}",
    ),
    Metric(
        scenario="dag",
        key="scheduling_us_per_node",
        label="CPU µs per node",
        format="{:.1f}",
        target=Target(kind="at_most", bound=50.0, text="≤ 50 µs"),
    ),
    Metric(
        scenario="shutdown",
        key="shutdown_ms",
        label="stop() to stopped, ms",
        format="{:.1f}",
        target=Target(kind="at_most", bound=100.0, text="≤ 100 ms"),
    ),
)

_STATUS_CELL = {"skipped": "n/a", "unavailable": "not installed", "error": "error"}
_NOTES = {
    "runs_skipped_max_instances": "runs skipped (previous run still running)",
    "runs_missed": "runs missed (over the 1 s misfire grace time)",
    "job_errors": "job futures failed or cancelled at shutdown",
    "other_warnings": "other warnings",
}


def load(path: Path) -> list[Record]:
    """The records of a JSON lines file (blank lines and non-JSON lines skipped)."""
    records: list[Record] = []
    with path.open(encoding="utf-8") as lines:
        for line in lines:
            if line.startswith("{"):
                records.append(json.loads(line))
    return records


def _number(value: object) -> float | None:
    if isinstance(value, (int, float)) and math.isfinite(value):
        return float(value)
    return None


class _Results:
    """Records indexed by (scenario, case, system), every round of each.

    A value is the median over the rounds that measured it; a cell with a
    target shows the range of the rounds beside it.
    """

    def __init__(self, records: Iterable[Record]) -> None:
        self.meta: Record | None = None
        self.cases: dict[str, list[str]] = {scenario: [] for scenario in SCENARIOS}
        self.by_key: dict[tuple[str, str, str], list[Record]] = {}
        for record in records:
            scenario = str(record.get("scenario"))
            if scenario == "meta":
                self.meta = record
                continue
            case = str(record.get("case"))
            cases = self.cases.setdefault(scenario, [])
            if case not in cases:
                cases.append(case)
            system = str(record.get("system"))
            if record.get("source"):  # a before/after run: workit@before, workit@after
                system = f"{system}@{record.get('source')}"
            self.by_key.setdefault((scenario, case, system), []).append(record)
        self._per_request()

    def _per_request(self) -> None:
        """Per ``/status`` request, the loop's CPU and lag beyond the same case without polling.

        From the medians of the case without ``/status`` (``loop_thread_cpu_cores``,
        ``loop_lag_total_ms_per_s``): (polled - without) x window / requests.
        """
        for (scenario, case, system), records in self.by_key.items():
            without = baseline(case)
            if without is None:
                continue
            cpu = self.value(scenario, without, system, "loop_thread_cpu_cores")
            lag = self.value(scenario, without, system, "loop_lag_total_ms_per_s")
            for record in records:
                requests = _number(record.get("status_requests"))
                wall = _number(record.get("window_s"))
                if not requests or wall is None:
                    continue
                polled_cpu = _number(record.get("loop_thread_cpu_cores"))
                if cpu is not None and polled_cpu is not None:
                    extra = (polled_cpu - cpu) * wall / requests * 1e3
                    record["status_loop_cpu_ms_per_request"] = extra
                polled_lag = _number(record.get("loop_lag_total_ms_per_s"))
                if lag is not None and polled_lag is not None:
                    record["status_loop_lag_ms_per_request"] = (polled_lag - lag) * wall / requests

    def has(self, scenario: str, case: str, key: str) -> bool:
        """Whether any record of the case has ``key``."""
        return any(
            key in record
            for (name, label, _), records in self.by_key.items()
            if name == scenario and label == case
            for record in records
        )

    def values(self, scenario: str, case: str, system: str, key: str) -> list[float]:
        """The measurement of every round that made it (none taken over too few executions)."""
        found = []
        for record in self.by_key.get((scenario, case, system), []):
            value = _number(record.get(key))
            if record.get("status") == "ok" and value is not None and not _too_few(record, key):
                found.append(value)
        return found

    def value(self, scenario: str, case: str, system: str, key: str) -> float | None:
        """The median measurement over the rounds, or ``None`` when there is none."""
        found = self.values(scenario, case, system, key)
        return statistics.median(found) if found else None

    def cell(self, metric: Metric, case: str, system: str) -> str:
        records = self.by_key.get((metric.scenario, case, system), [])
        if not records:
            return ""
        ok = [record for record in records if record.get("status") == "ok"]
        if not ok:
            status = str(records[-1].get("status"))
            return _STATUS_CELL.get(status, status)
        found = [value for record in ok if (value := _number(record.get(metric.key))) is not None]
        if not found:
            return "-"
        text = metric.format.format(statistics.median(found))
        if metric.target is not None and len(found) > 1:
            low, high = metric.format.format(min(found)), metric.format.format(max(found))
            text += f" ({low} to {high})"
        if len(ok) < len(records):
            text += f" ({len(records) - len(ok)} failed)"
        return f"{text} (†)" if any(_too_few(record, metric.key) for record in ok) else text


_ENOUGH = 0.9
"""Below this share of the expected executions, lateness describes only the few that ran."""


def _too_few(record: Record, key: str) -> bool:
    share = _number(record.get("executions_share"))
    return key.startswith("lateness") and share is not None and share < _ENOUGH


def _machine(meta: Record | None) -> str:
    if meta is None:
        return "Machine and date unknown (no meta record)."
    versions = meta.get("versions")
    names = versions if isinstance(versions, dict) else {}
    installed = ", ".join(f"{name} {version}" for name, version in names.items() if version)
    smoke = " **Smoke run: tiny sizes, not meaningful.**" if meta.get("smoke") else ""
    git = meta.get("git")
    source = ""
    if isinstance(git, dict):
        changed = git.get("src_changed_files")
        dirty = f" with {changed} uncommitted file(s) under src/" if changed else ""
        source = f" at commit {git.get('commit')}{dirty}"
    return (
        f"Measured {meta.get('date')} on {meta.get('nproc')} x {meta.get('cpu')} "
        f"(`nproc` {meta.get('nproc')}), Python {meta.get('python')}, "
        f"{meta.get('platform')}; {installed}{source}.{smoke}"
    )


def _bare(metric: Metric, results: _Results, case: str, system: str = "bare") -> float | None:
    """Bare's value in ``case``; for a workit-only case (jitter, /status), in the case without."""
    value = results.value(metric.scenario, case, system, metric.key)
    without = baseline(case)
    if value is None and without is not None:
        value = results.value(metric.scenario, without, system, metric.key)
    return value


def _verdict(metric: Metric, results: _Results, case: str, workit: str = "workit") -> str:
    if metric.target is None:
        return ""
    value = results.value(metric.scenario, case, workit, metric.key)
    if value is None:
        return "?"
    without = baseline(case)
    met = metric.target.met(
        value,
        _bare(metric, results, case),
        results.value(metric.scenario, without, workit, metric.key) if without else None,
    )
    if met is None:
        return "?"
    return "met" if met else "**missed**"


def _ratio(metric: Metric, results: _Results, case: str, workit: str = "workit") -> str:
    value = results.value(metric.scenario, case, workit, metric.key)
    bare = _bare(metric, results, case)
    if value is None or bare is None or bare <= 0 or value < 0:
        return ""
    return f"{value / bare:.2f}x"


def _notes(results: _Results) -> list[str]:
    notes = []
    for (scenario, case, system), runs in results.by_key.items():
        record = runs[-1]
        counts = [
            f"{record[key]:,} {text}"
            for key, text in _NOTES.items()
            if isinstance(record.get(key), int) and record[key]
        ]
        if counts:
            notes.append(
                f"- {LABELS.get(system, system)}, {scenario} ({case}): {'; '.join(counts)}."
            )
        if record.get("status") in ("error", "unavailable", "skipped"):
            notes.append(
                f"- {LABELS.get(system, system)}, {scenario} ({case}): "
                f"{record.get('status')}: {record.get('reason')}."
            )
    return notes


def markdown(records: Iterable[Record]) -> str:
    """The results section: machine line, table, notes."""
    results = _Results(records)
    systems = [
        system for system in SYSTEMS if any(key[2] == system for key in results.by_key)
    ] or list(SYSTEMS)
    header = ["scenario", "case", "metric", *(LABELS[system] for system in systems)]
    header += ["workit ÷ bare", "target (workit)", "workit"]
    rounds = results.meta.get("rounds") if results.meta else None
    lines = [_machine(results.meta), ""]
    if isinstance(rounds, int) and rounds > 1:
        lines += [
            f"Each value is the median of {rounds} rounds, the systems taking turns in each; "
            "rows with a target show the range of the rounds in parentheses.",
            "",
        ]
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 3 + "---:|" * (len(systems) + 1) + "---|---|",
    ]
    for scenario in results.cases:
        for case in results.cases[scenario]:
            for metric in METRICS:
                if metric.scenario != scenario:
                    continue
                if metric.when is not None and not results.has(scenario, case, metric.when):
                    continue
                cells = [scenario, case, metric.label]
                cells += [results.cell(metric, case, system) for system in systems]
                cells += [
                    _ratio(metric, results, case),
                    metric.target.text if metric.target else "",
                    _verdict(metric, results, case),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    notes = _notes(results)
    if any(baseline(case) for cases in results.cases.values() for case in cases):
        notes.append(
            "- Cases with jitter or /status are workit's alone; their ratio and targets "
            "use bare asyncio's value in the same case without that option. With jitter, "
            "lateness is an execution's start minus the time workit planned it for (its "
            "`next_run`, the end of the previous execution plus the cooler as jittered)."
        )
    if any(_too_few(record, "lateness") for runs in results.by_key.values() for record in runs):
        notes.append(
            f"- (†) fewer than {_ENOUGH:.0%} of the expected executions ran: the lateness "
            "shown is that of the few that did (left out of the plot)."
        )
    if notes:
        lines += ["", "Notes from the run:", "", *notes]
    return "\n".join(lines) + "\n"


_COLORS = {"workit": "tab:blue", "bare": "tab:orange", "apscheduler": "tab:green"}
_PANELS = (
    ("overhead", "cpu_us_per_execution", "overhead: CPU µs per execution", True),
    ("overhead", "executions_per_s", "overhead: executions/s", True),
    ("scale", "cpu_cores", "scale: CPU cores used", False),
    ("scale", "lateness_p99_ms", "scale: lateness p99 (ms)", True),
    ("scale", "rss_kib_per_handler", "scale: RSS KiB per handler", False),
    ("blocking", "rate_ratio", "blocking: share of quick rate kept", False),
    ("dag", "wall_over_critical", "dag: wall / critical path", False),
    ("dag", "scheduling_us_per_node", "dag: CPU µs per node", False),
    ("shutdown", "shutdown_ms", "shutdown: stop() to stopped (ms)", True),
)


def plot(records: Iterable[Record], path: Path) -> None:
    """Bar charts of the main metrics, systems side by side, targets as dashed lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = _Results(records)
    targets = {(metric.scenario, metric.key): metric.target for metric in METRICS}
    figure, axes = plt.subplots(3, 3, figsize=(15, 12))
    width = 0.8 / len(SYSTEMS)
    for ax, (scenario, key, title, logarithmic) in zip(axes.flat, _PANELS, strict=True):
        cases = results.cases.get(scenario, [])
        for offset, system in enumerate(SYSTEMS):
            heights = [results.value(scenario, case, system, key) for case in cases]
            positions = [index + (offset - 1) * width for index in range(len(cases))]
            shown = [(x, h) for x, h in zip(positions, heights, strict=True) if h is not None]
            if shown:
                bars = ax.bar(
                    [x for x, _ in shown],
                    [h for _, h in shown],
                    width,
                    label=LABELS[system],
                    color=_COLORS[system],
                )
                ax.bar_label(bars, fmt="{:.3g}", fontsize=7)
        target = targets.get((scenario, key))
        if target is not None and target.kind in ("at_most", "at_least"):
            ax.axhline(target.bound, color="black", linestyle="--", linewidth=1, label="target")
        if logarithmic:
            ax.set_yscale("log")
        ax.set_xlim(-0.6, max(len(cases), 1) - 0.4)
        ax.set_xticks(range(len(cases)), [case.replace(", ", "\n") for case in cases], fontsize=8)
        ax.set_title(title, fontsize=10)
    axes.flat[0].legend(fontsize=8)
    figure.suptitle(_machine(results.meta).split(";")[0].replace("`", ""), fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


BEFORE_AFTER_METRICS = (
    Metric(scenario="overhead", key="executions_per_s", label="executions/s", format="{:,.0f}"),
    Metric(
        scenario="overhead",
        key="cpu_us_per_execution",
        label="CPU µs per execution",
        format="{:.2f}",
        target=Target(kind="times_bare", bound=2.0, text="≤ 2.0x bare"),
    ),
    Metric(
        scenario="scale",
        key="cpu_cores",
        label="CPU cores used",
        format="{:.3f}",
        target=Target(kind="times_bare", bound=1.3, text="≤ 1.3x bare"),
    ),
    Metric(
        scenario="scale",
        key="rss_kib_per_handler",
        label="RSS KiB per handler",
        format="{:.2f}",
        target=Target(kind="at_most", bound=3.0, text="≤ 3 KiB"),
    ),
    Metric(scenario="scale", key="lateness_p50_ms", label="lateness p50 ms", format="{:.2f}"),
    Metric(
        scenario="scale",
        key="lateness_p99_ms",
        label="lateness p99 ms",
        format="{:.2f}",
        target=Target(kind="plus_bare", bound=10.0, text="≤ bare + 10 ms"),
    ),
    Metric(
        scenario="shutdown",
        key="shutdown_ms",
        label="stop() to stopped, ms",
        format="{:.1f}",
        target=Target(kind="times_bare", bound=1.5, text="≤ 1.5x bare"),
    ),
)
"""The before/after table's rows, with the targets of the engine restructure."""


def _source_label(meta: Record | None, source: str) -> str:
    sources = meta.get("sources") if meta else None
    found = sources.get(source) if isinstance(sources, dict) else None
    git = found.get("git") if isinstance(found, dict) else None
    commit = git.get("commit") if isinstance(git, dict) else None
    return f"{source} ({commit})" if commit else source


def before_after(records: Iterable[Record]) -> str:
    """The before/after section: workit from two checkouts beside bare asyncio, same bench code."""
    results = _Results(records)
    before, after = "workit@before", "workit@after"
    labels = [_source_label(results.meta, "before"), _source_label(results.meta, "after")]
    header = ["scenario", "case", "metric", *(f"workit {label}" for label in labels)]
    header += ["bare asyncio", "before ÷ bare", "after ÷ bare", "target", "before", "after"]
    rounds = results.meta.get("rounds") if results.meta else None
    lines = [_machine(results.meta), ""]
    if isinstance(rounds, int) and rounds > 1:
        lines += [
            f"Each value is the median of {rounds} rounds, the three taking turns in an order "
            "that shifts by one each round; the range of the rounds is in parentheses.",
            "",
        ]
    lines += [
        "| " + " | ".join(header) + " |",
        "|" + "---|" * 3 + "---:|" * 5 + "---|---|---|",
    ]
    for scenario in results.cases:
        for case in results.cases[scenario]:
            for metric in BEFORE_AFTER_METRICS:
                if metric.scenario != scenario:
                    continue
                ranged = dataclasses.replace(metric, target=metric.target or _ANY)
                cells = [scenario, case, metric.label]
                cells += [results.cell(ranged, case, system) for system in (before, after, "bare")]
                cells += [
                    _ratio(metric, results, case, before),
                    _ratio(metric, results, case, after),
                    metric.target.text if metric.target else "",
                    _verdict(metric, results, case, before),
                    _verdict(metric, results, case, after),
                ]
                lines.append("| " + " | ".join(cells) + " |")
    notes = _notes(results)
    if notes:
        lines += ["", "Notes from the run:", "", *notes]
    return "\n".join(lines) + "\n"


_ANY = Target(kind="at_least", bound=-math.inf, text="")
"""A target that is always met: makes a cell show the range of its rounds."""


def section_of(records: Sequence[Record]) -> str:
    """The README section for the records: ``results``, ``groundwork`` or ``before-after``."""
    meta = next((record for record in records if record.get("scenario") == "meta"), None)
    if meta is not None and meta.get("sources"):
        return "before-after"
    if meta is not None and meta.get("plan") == "groundwork":
        return "groundwork"
    return "results"


def write(records: Sequence[Record], *, readme: Path, image: Path) -> str:
    """Put the records' section into ``readme`` (between its markers); returns the section.

    The results of ``all`` (or one scenario) go between the results
    markers, with the plot written into ``image``; those of ``groundwork``
    and of ``before-after`` into sections of their own, without a plot. A
    README without the markers gets the section appended.
    """
    kind = section_of(records)
    if kind == "before-after":
        section = before_after(records)
        put_section(
            readme,
            section,
            begin=BEFORE_AFTER_BEGIN,
            end=BEFORE_AFTER_END,
            heading="Before and after the engine restructure",
        )
        return section
    if kind == "groundwork":
        section = markdown(records)
        put_section(
            readme,
            section,
            begin=GROUNDWORK_BEGIN,
            end=GROUNDWORK_END,
            heading="Jitter and /status polling",
        )
        return section
    section = markdown(records) + f"\n![results]({image.name})\n"
    plot(records, image)
    put_section(readme, section, begin=BEGIN, end=END, heading="Results")
    return section


def put_section(readme: Path, section: str, *, begin: str, end: str, heading: str) -> None:
    """Write ``section`` between the markers ``begin`` and ``end`` of ``readme``.

    A README without the markers gets them appended, under ``## heading``.
    """
    text = readme.read_text(encoding="utf-8") if readme.exists() else ""
    if begin in text and end in text:
        before, rest = text.split(begin, 1)
        after = rest.split(end, 1)[1]
        text = f"{before}{begin}\n{section}{end}{after}"
    else:
        text = f"{text.rstrip()}\n\n## {heading}\n\n{begin}\n{section}{end}\n".lstrip()
    readme.write_text(text, encoding="utf-8")
