"""The fleet benchmarks' plot, ``bench/results-fleet.png``: the fault runs' failover,
handoff and spread against their bounds, and the steady fleets' round trips and CPU
per execution against theirs.

Drawn from the committed records (``results-fleet-steady.jsonl``,
``results-fleet-faults.jsonl``), or from a run's own records for its half, by
``python -m bench fleet --report`` (needs the ``bench`` extra's matplotlib).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from bench._report import load

if TYPE_CHECKING:
    from pathlib import Path

    from bench._scenarios import Record

__all__ = ["FAULTS", "PLOT", "STEADY", "plot", "write"]

STEADY = "results-fleet-steady.jsonl"
FAULTS = "results-fleet-faults.jsonl"
PLOT = "results-fleet.png"

_COLORS = {"redis": "tab:red", "postgres": "tab:blue"}


def write(
    directory: Path,
    *,
    steady: list[Record] | None = None,
    faults: list[Record] | None = None,
) -> Path:
    """Draw the plot into ``directory``; a half not given is read from its records there."""
    if steady is None:
        steady = load(directory / STEADY) if (directory / STEADY).exists() else []
    if faults is None:
        faults = load(directory / FAULTS) if (directory / FAULTS).exists() else []
    path = directory / PLOT
    plot(steady, faults, path)
    return path


def plot(steady: list[Record], faults: list[Record], path: Path) -> None:
    """Four panels: failover and handoff, spread, round trips, CPU per execution."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(2, 2, figsize=(14, 10))
    (failover, handoff), (spread, cost) = axes
    labels = [
        f"{r['backend']}\n{r['replicas']} x {cast('int', r['handlers']):,}\n{r['run']}"
        for r in faults
    ]
    colors = [_COLORS.get(str(r["backend"]), "grey") for r in faults]
    where = list(range(len(faults)))

    _bars(failover, where, [r["failover_max_s"] for r in faults], colors, labels)
    failover.scatter(
        where,
        [r["failover_bound_s"] for r in faults],
        marker="_",
        s=900,
        color="black",
        label="bound: ttl + renew + max(1 s, cooler)",
    )
    failover.set_title("failover after kill -9: slowest handler (s)")
    _headroom(failover)
    failover.legend(loc="upper left", fontsize=8)

    _bars(handoff, where, [r["handoff_p99_s"] for r in faults], colors, labels)
    handoff.axhline(1.0, color="black", linestyle="--", label="target p99: 1 s")
    handoff.set_title("handoff after SIGTERM: p99 (s)")
    _headroom(handoff)
    handoff.legend(loc="upper left", fontsize=8)

    _bars(spread, where, [r["settle_max_s"] for r in faults], colors, labels)
    spread.set_title("spread fair again after a change of membership: slowest (s)")
    _headroom(spread)

    leased = [r for r in steady if r["backend"] != "none"]
    baselines = {
        (r["replicas"], r["cooler_s"], bool(r.get("spread"))): r["cpu_us_per_execution"]
        for r in steady
        if r["backend"] == "none" and r["replicas"] != 1
    }
    compared = [r for r in leased if (r["replicas"], r["cooler_s"], False) in baselines]
    names = [f"{r['backend']}\n{r['replicas']} x {cast('int', r['handlers']):,}" for r in compared]
    width = 0.38
    for offset, spread_out, label in ((-width / 2, False, "in step"), (width / 2, True, "spread")):
        ratios = []
        for r in compared:
            baseline = baselines.get((r["replicas"], r["cooler_s"], spread_out))
            cpu = cast("float", r["cpu_us_per_execution"])
            ratios.append(cpu / cast("float", baseline) if baseline else 0.0)
        cost.bar(
            [index + offset for index in range(len(compared))],
            ratios,
            width,
            label=f"vs processes without leases, handlers {label}",
        )
    cost.axhline(1.5, color="black", linestyle="--", label="target: 1.5x")
    cost.set_xticks(range(len(compared)), names)
    cost.set_title("CPU per execution with leases, cooler 1 s (ratio)")
    _headroom(cost)
    cost.legend(loc="upper left", fontsize=8)
    trips = ", ".join(
        f"{r['backend']} {r['replicas']} x {cast('int', r['handlers']):,}: "
        f"{cast('float', r['round_trips_per_renew']):.2f}"
        for r in leased
        if r["cooler_s"] == 60.0
    )
    if trips:
        cost.text(
            0.01,
            -0.22,
            f"round trips per replica per renew at cooler 60 s (target 1): {trips}",
            transform=cost.transAxes,
            fontsize=8,
            wrap=True,
        )
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    plt.close(figure)


def _bars(
    axis: Any, where: list[int], values: list[Any], colors: list[str], labels: list[str]
) -> None:
    """Bars of ``values`` (``n/a`` where none was assessed), labelled below."""
    axis.bar(where, [0.0 if value is None else float(value) for value in values], color=colors)
    for index, value in zip(where, values, strict=True):
        if value is None:
            axis.text(index, 0.05, "n/a", ha="center", fontsize=8)
    axis.set_xticks(where, labels, fontsize=7)


def _headroom(axis: Any) -> None:
    """A third more height than the tallest bar or line, room for the legend."""
    bottom, top = axis.get_ylim()
    axis.set_ylim(bottom, top * 1.35)
